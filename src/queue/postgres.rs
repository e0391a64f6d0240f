//! The PostgreSQL queue store: many processes on many machines share one queue.
//!
//! - **Claims** take rows with `FOR UPDATE SKIP LOCKED`, so concurrent runners never take
//!   the same job and never wait on each other's locks.
//! - **Enqueue** stores the signal and the job in one transaction and sends
//!   `NOTIFY signal_bus_jobs, '<queue>'`; [`JobStore::wait_for_jobs`] listens on that channel
//!   and wakes up as soon as the transaction commits. Many jobs go in with one multi-row
//!   `INSERT ... SELECT FROM unnest(...)` (group commit).
//! - **Transactional outbox**: [`PostgresStore::enqueue_in`] inserts inside the caller's own
//!   transaction, so the job commits or rolls back with the caller's writes.
//! - **Unique keys** are race-free: the enqueuing transaction takes a transaction-scoped
//!   advisory lock on the key's hash before it looks for a live job with that key.
//! - **Migrations** are versioned (`signal_bus_migrations`) and run under an advisory lock, so
//!   many processes starting at once migrate once.
//!
//! Times are stored as `BIGINT` Unix milliseconds, like the SQLite backend; the table and
//! index names are the same in both.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use sqlx::{
    postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow},
    Connection as _, PgConnection, PgPool, Postgres, Row, Transaction,
};
use tokio::sync::{Mutex, Notify};

use super::{from_ms, to_ms, Job, JobState, JobStore, NewJob, QueueError};
use crate::Signal;

/// The backend name in errors.
const BACKEND: &str = "postgres";

/// The `LISTEN`/`NOTIFY` channel; the payload is the queue name.
const CHANNEL: &str = "signal_bus_jobs";

/// Default pool size.
const DEFAULT_MAX_CONNECTIONS: u32 = 8;

/// Default time to wait for a pooled connection (and for the first connection at startup).
const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The advisory lock key migrations run under (`b"signal_b"` as an integer).
const MIGRATION_LOCK: i64 = 0x7369_676e_616c_5f62;

/// The first key of the two-key advisory locks on unique keys (`b"SB"`); the second key is
/// `hashtext(unique_key)`. The two-key form keeps these apart from one-key locks.
const UNIQUE_LOCK_CLASS: i32 = 0x5342;

/// The columns of a job, as [`job_from_row`] reads them (`args` as text: JSON without
/// needing sqlx's `json` feature).
const JOB_COLUMNS: &str = "id, queue, worker, args::text AS args, state, attempt, max_attempts, \
     priority, inserted_at, scheduled_at, attempted_at, finished_at, unique_key, last_error";

/// Versioned migrations: each version's statements run in one transaction.
const MIGRATIONS: &[(i32, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE signal_bus_signals (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            body BYTEA NOT NULL,
            stored_at BIGINT NOT NULL
        )",
            "CREATE TABLE signal_bus_jobs (
            id BIGSERIAL PRIMARY KEY,
            queue TEXT NOT NULL,
            worker TEXT NOT NULL,
            args JSONB NOT NULL,
            state TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            priority SMALLINT NOT NULL DEFAULT 0,
            inserted_at BIGINT NOT NULL,
            scheduled_at BIGINT NOT NULL,
            attempted_at BIGINT,
            finished_at BIGINT,
            lease_until BIGINT,
            owner TEXT,
            unique_key TEXT,
            unique_until BIGINT,
            last_error TEXT
        )",
            "CREATE INDEX signal_bus_jobs_fetch
            ON signal_bus_jobs (queue, state, priority, scheduled_at, id)",
            "CREATE INDEX signal_bus_jobs_unique
            ON signal_bus_jobs (unique_key) WHERE unique_key IS NOT NULL",
            "CREATE INDEX signal_bus_jobs_lease ON signal_bus_jobs (state, lease_until)",
        ],
    ),
    (
        2,
        &[
            // Claims walk this index in order and stop at LIMIT: no scan, no sort.
            "CREATE INDEX signal_bus_jobs_runnable
            ON signal_bus_jobs (queue, priority, scheduled_at, id)
            WHERE state IN ('available', 'scheduled', 'retryable')",
        ],
    ),
];

/// A durable job store on PostgreSQL (feature `postgres`).
///
/// Cheap to clone: clones share the connection pool and the notification listener.
/// `Debug` shows the user, host, port and database, never the password.
///
/// # Example
///
/// ```no_run
/// use signal_bus::queue::{JobStore, NewJob, PostgresStore};
/// use signal_bus::Signal;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/app").await?;
/// let signal = Signal::new("user.created", "/accounts", serde_json::json!({ "id": 42 }))?;
/// let job = NewJob::new("audit", serde_json::json!({ "signal_id": signal.id() }));
/// let id = store.enqueue(Some(&signal), &job).await?;
/// assert!(id.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Where the listener connects (its own connection, outside the pool).
    options: PgConnectOptions,
    /// The `LISTEN signal_bus_jobs` connection, created on first wait.
    listener: Arc<Mutex<Option<PgListener>>>,
    /// Wakes the other waiters of this process when the listener's holder gets a
    /// notification.
    wake: Arc<Notify>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &Redacted(&self.options))
            .field("connections", &self.pool.size())
            .field(
                "max_connections",
                &self.pool.options().get_max_connections(),
            )
            .finish_non_exhaustive()
    }
}

/// Connect options shown as `postgres://user@host:port/database`, without the password.
struct Redacted<'a>(&'a PgConnectOptions);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "postgres://{}@{}:{}/{}",
            o.get_username(),
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("")
        )
    }
}

/// Configures a [`PostgresStore`]: the pool size and how long to wait for a connection.
///
/// Created by [`PostgresStore::builder`]; never fails mid-chain, [`connect`](Self::connect)
/// reports a bad URL or an unreachable server.
#[derive(Clone)]
pub struct PostgresStoreBuilder {
    url: String,
    max_connections: u32,
    acquire_timeout: Duration,
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match self.url.parse::<PgConnectOptions>() {
            Ok(options) => format!("{:?}", Redacted(&options)),
            Err(_) => "<invalid url>".to_owned(),
        };
        f.debug_struct("PostgresStoreBuilder")
            .field("target", &target)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl PostgresStoreBuilder {
    /// The most pooled connections (at least 1). Default: 8. The notification listener
    /// uses one more connection of its own.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long to wait for a pooled connection, and for the first connection at startup,
    /// before failing with [`QueueError::Store`]. Default: 10 seconds.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Connects and runs the migrations (under an advisory lock, so many processes starting
    /// at once migrate once).
    ///
    /// # Errors
    /// [`QueueError::Store`] when the URL does not parse, the server cannot be reached
    /// within the acquire timeout, or a migration fails.
    pub async fn connect(self) -> Result<PostgresStore, QueueError> {
        let options: PgConnectOptions = self.url.parse().map_err(store_error)?;
        // One direct connection first: it fails at once when the server refuses (the pool
        // would retry until its acquire timeout), and runs the migrations.
        let target = format!("{:?}", Redacted(&options));
        let mut conn =
            tokio::time::timeout(self.acquire_timeout, PgConnection::connect_with(&options))
                .await
                .map_err(|_| {
                    store_error(format!(
                        "cannot connect to {target}: timed out after {:?}",
                        self.acquire_timeout
                    ))
                })?
                .map_err(|e| store_error(format!("cannot connect to {target}: {e}")))?;
        migrate(&mut conn)
            .await
            .map_err(|e| store_error(format!("migrating {target} failed: {e}")))?;
        // Best effort: the migrations are committed either way.
        let _ = conn.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_lazy_with(options.clone());
        Ok(PostgresStore {
            pool,
            options,
            listener: Arc::new(Mutex::new(None)),
            wake: Arc::new(Notify::new()),
        })
    }
}

impl PostgresStore {
    /// Connects with the defaults (a pool of 8 connections, a 10-second acquire timeout)
    /// and runs the migrations under a PostgreSQL advisory lock (so many processes starting
    /// at once migrate once).
    ///
    /// The URL is a libpq-style URL, e.g. `postgres://user:password@host:5432/database`;
    /// `?options=-c%20search_path%3Dmy_schema` puts the tables in another schema.
    ///
    /// # Errors
    /// [`QueueError::Store`] when the URL does not parse, the server cannot be reached or a
    /// migration fails.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use signal_bus::queue::PostgresStore;
    ///
    /// # async fn demo() -> Result<(), signal_bus::queue::QueueError> {
    /// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/app").await?;
    /// // Or with a bigger pool:
    /// let store = PostgresStore::builder("postgres://postgres@127.0.0.1:5432/app")
    ///     .max_connections(16)
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<PostgresStore, QueueError> {
        Self::builder(url).connect().await
    }

    /// A builder for a store at `url`, to set the pool size before connecting.
    pub fn builder(url: &str) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.to_owned(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }

    /// The connection pool, for the application's own queries (and transactions to pass to
    /// [`enqueue_in`](Self::enqueue_in)).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Transactional outbox: stores `signal` and inserts `job` inside the caller's own
    /// transaction, so they commit or roll back with the caller's writes. The wake-up
    /// notification is sent when (and only if) the transaction commits.
    ///
    /// Returns the job id, or `None` when a live job with the same unique key exists within
    /// its period. Unique keys are checked under READ COMMITTED (PostgreSQL's default); the
    /// key's advisory lock is held until the caller's transaction ends.
    ///
    /// # Errors
    /// [`QueueError::Invalid`] for an invalid job (nothing is written), [`QueueError::Store`]
    /// when a statement fails (the caller's transaction is then aborted, as with any failed
    /// statement).
    ///
    /// # Example
    ///
    /// ```no_run
    /// use signal_bus::queue::{NewJob, PostgresStore};
    /// use signal_bus::Signal;
    ///
    /// # async fn demo(store: PostgresStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = store.pool().begin().await?;
    /// sqlx::query("UPDATE accounts SET active = true WHERE id = $1")
    ///     .bind(42_i64)
    ///     .execute(&mut *tx)
    ///     .await?;
    /// let signal = Signal::new("account.activated", "/accounts", serde_json::json!({ "id": 42 }))?;
    /// let job = NewJob::new("audit", serde_json::json!({ "signal_id": signal.id() }));
    /// store.enqueue_in(&mut tx, Some(&signal), &job).await?;
    /// tx.commit().await?; // the account update, the signal and the job, together
    /// # Ok(())
    /// # }
    /// ```
    pub async fn enqueue_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        signal: Option<&Signal>,
        job: &NewJob,
    ) -> Result<Option<i64>, QueueError> {
        super::validate_new_job(job)?;
        let ids = insert_jobs(tx, &[(signal, job)], Utc::now())
            .await
            .map_err(store_error)?;
        Ok(ids.into_iter().next().flatten())
    }

    /// A new listener on its own connection, listening on [`CHANNEL`].
    async fn new_listener(&self) -> Result<PgListener, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(DEFAULT_ACQUIRE_TIMEOUT)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(self.options.clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await?;
        Ok(listener)
    }

    /// Runs one statement that needs nothing back but the number of rows changed.
    async fn write(
        &self,
        query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<u64, QueueError> {
        let done = query.execute(&self.pool).await.map_err(store_error)?;
        Ok(done.rows_affected())
    }
}

/// A database error as a queue error.
fn store_error(e: impl fmt::Display) -> QueueError {
    QueueError::store(BACKEND, e)
}

/// A `usize` limit to SQL.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Runs the missing migrations, in one transaction under an advisory lock.
async fn migrate(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS signal_bus_migrations (
            version INTEGER PRIMARY KEY,
            applied_at BIGINT NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await?;
    let applied: Vec<i32> = sqlx::query_scalar("SELECT version FROM signal_bus_migrations")
        .fetch_all(&mut *tx)
        .await?;
    for (version, statements) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        for statement in *statements {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO signal_bus_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(to_ms(Utc::now()))
            .execute(&mut *tx)
            .await?;
        tracing::info!(
            message = "Applied queue migration.",
            backend = BACKEND,
            version
        );
    }
    tx.commit().await
}

/// A job ready to insert: the validated fields as stored.
struct Prepared<'a> {
    signal: Option<&'a Signal>,
    job: &'a NewJob,
    state: JobState,
    scheduled_at: i64,
    unique_until: Option<i64>,
}

impl<'a> Prepared<'a> {
    fn new(signal: Option<&'a Signal>, job: &'a NewJob, now: DateTime<Utc>) -> Self {
        let scheduled_at = job.scheduled_at.unwrap_or(now);
        let state = if scheduled_at > now {
            JobState::Scheduled
        } else {
            JobState::Available
        };
        let unique_until = job.unique_key.as_ref().map(|_| {
            let period = i64::try_from(job.unique_for.as_millis()).unwrap_or(i64::MAX);
            to_ms(now).saturating_add(period)
        });
        Prepared {
            signal,
            job,
            state,
            scheduled_at: to_ms(scheduled_at),
            unique_until,
        }
    }

    fn max_attempts(&self) -> i32 {
        // Validated to fit.
        i32::try_from(self.job.max_attempts).unwrap_or(i32::MAX)
    }
}

/// Inserts validated jobs (and their signals) on `conn`, which is inside a transaction,
/// and notifies their queues. Returns one id per item, `None` for a job skipped because
/// of a live unique key (earlier items of the same batch count).
async fn insert_jobs(
    conn: &mut PgConnection,
    items: &[(Option<&Signal>, &NewJob)],
    now: DateTime<Utc>,
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    let now_ms = to_ms(now);

    // Unique keys: lock each key (in a fixed order, so concurrent batches cannot deadlock),
    // then, in a new statement (a new snapshot under READ COMMITTED), find the live ones.
    let mut keys: Vec<&str> = items
        .iter()
        .filter_map(|(_, job)| job.unique_key.as_deref())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut live: HashSet<String> = HashSet::new();
    if !keys.is_empty() {
        sqlx::query(
            "SELECT pg_advisory_xact_lock($1, h)
             FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest($2::text[]) AS k ORDER BY h) AS x",
        )
        .bind(UNIQUE_LOCK_CLASS)
        .bind(&keys)
        .execute(&mut *conn)
        .await?;
        live = sqlx::query_scalar(
            "SELECT DISTINCT unique_key FROM signal_bus_jobs
             WHERE unique_key = ANY($1) AND unique_until > $2
               AND state NOT IN ('cancelled', 'discarded')",
        )
        .bind(&keys)
        .bind(now_ms)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    }

    let mut results = vec![None; items.len()];
    let mut kept: Vec<(usize, Prepared<'_>)> = Vec::with_capacity(items.len());
    for (i, (signal, job)) in items.iter().enumerate() {
        if let Some(key) = &job.unique_key {
            if !live.insert(key.clone()) {
                continue;
            }
        }
        kept.push((i, Prepared::new(*signal, job, now)));
    }
    if kept.is_empty() {
        return Ok(results);
    }

    if let [(i, p)] = kept.as_slice() {
        // One job: one statement stores the signal and the job.
        let body = p.signal.map(|s| s.to_json_bytes());
        let id: i64 = sqlx::query_scalar(
            "WITH s AS (
                INSERT INTO signal_bus_signals (id, type, body, stored_at)
                SELECT $1, $2, $3, $4 WHERE $1::text IS NOT NULL
                ON CONFLICT (id) DO NOTHING
             )
             INSERT INTO signal_bus_jobs
                (queue, worker, args, state, attempt, max_attempts, priority, inserted_at,
                 scheduled_at, unique_key, unique_until)
             VALUES ($5, $6, $7::jsonb, $8, 0, $9, $10, $4, $11, $12, $13)
             RETURNING id",
        )
        .bind(p.signal.map(Signal::id))
        .bind(p.signal.map(Signal::ty))
        .bind(body.as_deref())
        .bind(now_ms)
        .bind(&p.job.queue)
        .bind(&p.job.worker)
        .bind(p.job.args.to_string())
        .bind(p.state.as_str())
        .bind(p.max_attempts())
        .bind(p.job.priority)
        .bind(p.scheduled_at)
        .bind(p.job.unique_key.as_deref())
        .bind(p.unique_until)
        .fetch_one(&mut *conn)
        .await?;
        results[*i] = Some(id);
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(&p.job.queue)
            .execute(&mut *conn)
            .await?;
        return Ok(results);
    }

    // Many jobs: take their ids first (in order), then one multi-row insert of the
    // signals and the jobs.
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "SELECT nextval('signal_bus_jobs_id_seq') FROM generate_series(1, $1::bigint)",
    )
    .bind(i64::try_from(kept.len()).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    ids.sort_unstable();

    let mut seen_signals: HashSet<&str> = HashSet::new();
    let (mut sig_ids, mut sig_types, mut sig_bodies) = (Vec::new(), Vec::new(), Vec::new());
    for (_, p) in &kept {
        if let Some(signal) = p.signal {
            if seen_signals.insert(signal.id()) {
                sig_ids.push(signal.id());
                sig_types.push(signal.ty());
                sig_bodies.push(signal.to_json_vec());
            }
        }
    }
    let n = kept.len();
    let (mut queues, mut workers, mut args, mut states) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut max_attempts, mut priorities, mut scheduled, mut unique_keys, mut unique_until) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (_, p) in &kept {
        queues.push(p.job.queue.as_str());
        workers.push(p.job.worker.as_str());
        args.push(p.job.args.to_string());
        states.push(p.state.as_str());
        max_attempts.push(p.max_attempts());
        priorities.push(p.job.priority);
        scheduled.push(p.scheduled_at);
        unique_keys.push(p.job.unique_key.as_deref());
        unique_until.push(p.unique_until);
    }
    sqlx::query(
        "WITH s AS (
            INSERT INTO signal_bus_signals (id, type, body, stored_at)
            SELECT sid, sty, sbody, $1 FROM unnest($2::text[], $3::text[], $4::bytea[])
                AS x(sid, sty, sbody)
            ON CONFLICT (id) DO NOTHING
         )
         INSERT INTO signal_bus_jobs
            (id, queue, worker, args, state, attempt, max_attempts, priority, inserted_at,
             scheduled_at, unique_key, unique_until)
         SELECT jid, jqueue, jworker, jargs::jsonb, jstate, 0, jmax, jprio, $1, jsched, jkey,
                juntil
         FROM unnest($5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[],
                     $10::int4[], $11::int2[], $12::bigint[], $13::text[], $14::bigint[])
            AS y(jid, jqueue, jworker, jargs, jstate, jmax, jprio, jsched, jkey, juntil)",
    )
    .bind(now_ms)
    .bind(&sig_ids)
    .bind(&sig_types)
    .bind(&sig_bodies)
    .bind(&ids)
    .bind(&queues)
    .bind(&workers)
    .bind(&args)
    .bind(&states)
    .bind(&max_attempts)
    .bind(&priorities)
    .bind(&scheduled)
    .bind(&unique_keys)
    .bind(&unique_until)
    .execute(&mut *conn)
    .await?;
    for ((i, _), id) in kept.iter().zip(&ids) {
        results[*i] = Some(*id);
    }

    queues.sort_unstable();
    queues.dedup();
    sqlx::query("SELECT pg_notify($1, q) FROM unnest($2::text[]) AS q")
        .bind(CHANNEL)
        .bind(&queues)
        .execute(&mut *conn)
        .await?;
    Ok(results)
}

/// A stored row back to a job; a row that does not hold a valid job is
/// [`QueueError::Corrupt`], naming the job id.
fn job_from_row(row: &PgRow) -> Result<Job, QueueError> {
    let id: i64 = row.try_get("id").map_err(store_error)?;
    let corrupt = |what: String| QueueError::Corrupt {
        what: format!("job {id}: {what}"),
    };
    let get_err = |e: sqlx::Error| corrupt(e.to_string());
    let state: String = row.try_get("state").map_err(get_err)?;
    let state = JobState::from_str(&state).map_err(|e| corrupt(e.to_string()))?;
    let args: String = row.try_get("args").map_err(get_err)?;
    let args = serde_json::from_str(&args)
        .map_err(|e| corrupt(format!("args are not valid JSON: {e}")))?;
    let attempt: i32 = row.try_get("attempt").map_err(get_err)?;
    let max_attempts: i32 = row.try_get("max_attempts").map_err(get_err)?;
    let opt_time = |column: &str| -> Result<Option<DateTime<Utc>>, QueueError> {
        Ok(row
            .try_get::<Option<i64>, _>(column)
            .map_err(get_err)?
            .map(from_ms))
    };
    Ok(Job {
        id,
        queue: row.try_get("queue").map_err(get_err)?,
        worker: row.try_get("worker").map_err(get_err)?,
        args,
        state,
        attempt: u32::try_from(attempt)
            .map_err(|_| corrupt(format!("attempt {attempt} is out of range")))?,
        max_attempts: u32::try_from(max_attempts)
            .map_err(|_| corrupt(format!("max_attempts {max_attempts} is out of range")))?,
        priority: row.try_get("priority").map_err(get_err)?,
        inserted_at: from_ms(row.try_get("inserted_at").map_err(get_err)?),
        scheduled_at: from_ms(row.try_get("scheduled_at").map_err(get_err)?),
        attempted_at: opt_time("attempted_at")?,
        finished_at: opt_time("finished_at")?,
        unique_key: row.try_get("unique_key").map_err(get_err)?,
        last_error: row.try_get("last_error").map_err(get_err)?,
    })
}

#[async_trait]
impl JobStore for PostgresStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn enqueue(
        &self,
        signal: Option<&Signal>,
        job: &NewJob,
    ) -> Result<Option<i64>, QueueError> {
        super::validate_new_job(job)?;
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let ids = insert_jobs(&mut tx, &[(signal, job)], Utc::now())
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(ids.into_iter().next().flatten())
    }

    async fn enqueue_many(
        &self,
        items: &[(Option<Arc<Signal>>, NewJob)],
    ) -> Result<Vec<Option<i64>>, QueueError> {
        for (_, job) in items {
            super::validate_new_job(job)?;
        }
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let refs: Vec<(Option<&Signal>, &NewJob)> = items
            .iter()
            .map(|(signal, job)| (signal.as_deref(), job))
            .collect();
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let ids = insert_jobs(&mut tx, &refs, Utc::now())
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(ids)
    }

    async fn claim(
        &self,
        queue: &str,
        limit: usize,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Job>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "WITH picked AS (
                SELECT id AS picked_id FROM signal_bus_jobs
                WHERE queue = $1
                  AND state IN ('available', 'scheduled', 'retryable')
                  AND (state = 'available' OR scheduled_at <= $2)
                ORDER BY priority, scheduled_at, id
                LIMIT $3
                FOR UPDATE SKIP LOCKED
             )
             UPDATE signal_bus_jobs
             SET state = 'executing', attempt = attempt + 1, attempted_at = $2,
                 lease_until = $4, owner = $5
             FROM picked
             WHERE id = picked_id
             RETURNING {JOB_COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(queue)
            .bind(to_ms(now))
            .bind(sql_limit(limit))
            .bind(to_ms(lease_until))
            .bind(owner)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let mut jobs = rows
            .iter()
            .map(job_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by(|a, b| {
            (a.priority, a.scheduled_at, a.id).cmp(&(b.priority, b.scheduled_at, b.id))
        });
        Ok(jobs)
    }

    async fn heartbeat(
        &self,
        ids: &[i64],
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs SET lease_until = $1
                 WHERE state = 'executing' AND owner = $2 AND id = ANY($3)",
            )
            .bind(to_ms(lease_until))
            .bind(owner)
            .bind(ids),
        )
        .await
        .map(drop)
    }

    async fn complete(&self, id: i64, now: DateTime<Utc>) -> Result<(), QueueError> {
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'completed', finished_at = $1, owner = NULL, lease_until = NULL
                 WHERE id = $2 AND state = 'executing'",
            )
            .bind(to_ms(now))
            .bind(id),
        )
        .await
        .map(drop)
    }

    async fn complete_many(&self, ids: &[i64], now: DateTime<Utc>) -> Result<(), QueueError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'completed', finished_at = $1, owner = NULL, lease_until = NULL
                 WHERE id = ANY($2) AND state = 'executing'",
            )
            .bind(to_ms(now))
            .bind(ids),
        )
        .await
        .map(drop)
    }

    async fn retry(&self, id: i64, at: DateTime<Utc>, error: &str) -> Result<(), QueueError> {
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'retryable', scheduled_at = $1, last_error = $2,
                     owner = NULL, lease_until = NULL
                 WHERE id = $3 AND state = 'executing'",
            )
            .bind(to_ms(at))
            .bind(error)
            .bind(id),
        )
        .await
        .map(drop)
    }

    async fn snooze(&self, id: i64, at: DateTime<Utc>) -> Result<(), QueueError> {
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'scheduled', scheduled_at = $1, attempt = GREATEST(attempt - 1, 0),
                     owner = NULL, lease_until = NULL
                 WHERE id = $2 AND state = 'executing'",
            )
            .bind(to_ms(at))
            .bind(id),
        )
        .await
        .map(drop)
    }

    async fn cancel(&self, id: i64, reason: &str, now: DateTime<Utc>) -> Result<(), QueueError> {
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'cancelled', finished_at = $1, last_error = $2,
                     owner = NULL, lease_until = NULL
                 WHERE id = $3 AND state NOT IN ('completed', 'cancelled', 'discarded')",
            )
            .bind(to_ms(now))
            .bind(reason)
            .bind(id),
        )
        .await
        .map(drop)
    }

    async fn discard(&self, id: i64, error: &str, now: DateTime<Utc>) -> Result<(), QueueError> {
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'discarded', finished_at = $1, last_error = $2,
                     owner = NULL, lease_until = NULL
                 WHERE id = $3 AND state NOT IN ('completed', 'cancelled', 'discarded')",
            )
            .bind(to_ms(now))
            .bind(error)
            .bind(id),
        )
        .await
        .map(drop)
    }

    async fn rescue(&self, now: DateTime<Utc>) -> Result<u64, QueueError> {
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = CASE WHEN attempt >= max_attempts THEN 'discarded' ELSE 'available' END,
                     finished_at = CASE WHEN attempt >= max_attempts THEN $1 ELSE NULL END,
                     last_error = CASE WHEN attempt >= max_attempts
                         THEN 'discarded: its runner stopped during the last attempt'
                         ELSE last_error END,
                     owner = NULL, lease_until = NULL
                 WHERE state = 'executing' AND lease_until < $2",
            )
            .bind(to_ms(now))
            .bind(to_ms(now)),
        )
        .await
    }

    async fn release(&self, owner: &str, _now: DateTime<Utc>) -> Result<u64, QueueError> {
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'available', attempt = GREATEST(attempt - 1, 0),
                     owner = NULL, lease_until = NULL
                 WHERE state = 'executing' AND owner = $1",
            )
            .bind(owner),
        )
        .await
    }

    async fn load_signal(&self, id: &str) -> Result<Option<Signal>, QueueError> {
        let body: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT body FROM signal_bus_signals WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
        body.map(|body| {
            Signal::from_json_slice(&body).map_err(|e| QueueError::Corrupt {
                what: format!("signal `{id}` does not hold a valid signal: {e}"),
            })
        })
        .transpose()
    }

    async fn load_signals(
        &self,
        ids: &[&str],
    ) -> Result<Vec<(String, Result<Signal, QueueError>)>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT id, body FROM signal_bus_signals WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(|(id, body)| {
                let parsed = Signal::from_json_slice(&body).map_err(|e| QueueError::Corrupt {
                    what: format!("signal `{id}` does not hold a valid signal: {e}"),
                });
                (id, parsed)
            })
            .collect())
    }

    async fn delete_signal(&self, id: &str) -> Result<bool, QueueError> {
        let n = self
            .write(sqlx::query("DELETE FROM signal_bus_signals WHERE id = $1").bind(id))
            .await?;
        Ok(n > 0)
    }

    async fn get(&self, id: i64) -> Result<Option<Job>, QueueError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM signal_bus_jobs WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list(&self, state: JobState, limit: usize) -> Result<Vec<Job>, QueueError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM signal_bus_jobs WHERE state = $1 ORDER BY id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(state.as_str())
            .bind(sql_limit(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter().map(job_from_row).collect()
    }

    async fn redrive(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64, QueueError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'available', attempt = 0, scheduled_at = $1, finished_at = NULL,
                     owner = NULL, lease_until = NULL
                 WHERE state IN ('cancelled', 'discarded') AND id = ANY($2)",
            )
            .bind(to_ms(now))
            .bind(ids),
        )
        .await
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, QueueError> {
        self.write(
            sqlx::query(
                "DELETE FROM signal_bus_jobs WHERE state = 'completed' AND finished_at < $1",
            )
            .bind(to_ms(before)),
        )
        .await
    }

    async fn counts(&self) -> Result<BTreeMap<JobState, u64>, QueueError> {
        let rows = sqlx::query("SELECT state, count(*) AS n FROM signal_bus_jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let mut counts: BTreeMap<JobState, u64> =
            JobState::ALL.into_iter().map(|s| (s, 0)).collect();
        for row in &rows {
            let state: String = row.try_get("state").map_err(store_error)?;
            let n: i64 = row.try_get("n").map_err(store_error)?;
            let state = JobState::from_str(&state)?;
            counts.insert(state, u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }

    /// Waits for a `NOTIFY signal_bus_jobs` (sent when an enqueue commits) or `timeout`.
    ///
    /// One listener connection per store (shared by clones), created on first use; while
    /// one waiter reads it, the other waiters of this process are woken with it. When the
    /// listener cannot connect or breaks, this sleeps out the timeout (polling) and
    /// reconnects on the next call.
    async fn wait_for_jobs(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let woken = self.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let mut guard = tokio::select! {
            biased;
            () = &mut woken => return,
            guard = self.listener.lock() => guard,
            () = tokio::time::sleep_until(deadline) => return,
        };
        // The previous holder may have been woken and handed the lock over in one go.
        if woken.as_mut().now_or_never().is_some() {
            return;
        }
        if guard.is_none() {
            match tokio::time::timeout_at(deadline, self.new_listener()).await {
                Ok(Ok(listener)) => *guard = Some(listener),
                Ok(Err(error)) => {
                    drop(guard);
                    tracing::warn!(
                        message = "Queue listener failed to connect; polling instead.",
                        backend = BACKEND,
                        error = %error
                    );
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
                Err(_) => return,
            }
        }
        let Some(listener) = guard.as_mut() else {
            return;
        };
        match tokio::time::timeout_at(deadline, listener.try_recv()).await {
            Ok(Ok(Some(_))) => {
                // Several commits may have notified at once: one wake-up is enough.
                while listener.next_buffered().is_some() {}
                // Wake the other waiters before they can take the lock and wait for a
                // notification this one already consumed.
                self.wake.notify_waiters();
                drop(guard);
            }
            Ok(Ok(None)) => {
                // The connection broke and the listener reconnected: notifications may have
                // been lost meanwhile, so wake up and let the caller look.
                tracing::debug!(message = "Queue listener reconnected.", backend = BACKEND);
            }
            Ok(Err(error)) => {
                // The connection broke for good: drop it, poll for now, reconnect next time.
                *guard = None;
                drop(guard);
                tracing::warn!(
                    message = "Queue listener connection lost; polling instead.",
                    backend = BACKEND,
                    error = %error
                );
                tokio::time::sleep_until(deadline).await;
            }
            Err(_) => {}
        }
    }
}
