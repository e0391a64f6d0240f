//! The PostgreSQL queue store: many processes on many machines share one queue.
//!
//! - **Claims** take rows with `FOR UPDATE SKIP LOCKED`, so concurrent runners never take
//!   the same job and never wait on each other's locks. Each claim writes a new token on the
//!   job (`token = token + 1`); every later state change presents it
//!   ([`LeaseToken`]) and changes nothing when the job was rescued, released, cancelled or
//!   claimed again since ([`QueueError::LeaseLost`]).
//! - **Enqueue** stores the signal (once per `(source, id)`) and the job in one transaction
//!   and sends `NOTIFY signal_bus_jobs, '<queue>'`; [`JobStore::wait_for_jobs`] listens on
//!   that channel and wakes up as soon as the transaction commits. Many jobs go in with one
//!   multi-row `INSERT ... SELECT FROM unnest(...)` (group commit).
//! - **Transactional outbox**: [`PostgresStore::enqueue_in`] inserts inside the caller's own
//!   transaction, so the job commits or rolls back with the caller's writes.
//! - **Unique keys** are race-free: the enqueuing transaction takes a transaction-scoped
//!   advisory lock on the key's hash before it looks for a live job with that key.
//! - **Retention**: a job refers to its stored signal (`signal_source`, `signal_id`); a
//!   signal is pruned only when no job refers to it. Storing a signal again renews its
//!   `stored_at` under the row lock, and the queue prunes only signals stored before now
//!   minus [`Retention::signal_margin`](super::Retention::signal_margin) (5 minutes), so an
//!   enqueue that points a new job at an old signal keeps it, even one that commits after
//!   the prune's snapshot (which cannot see its job).
//! - **Worker registry** (`signal_bus_workers`): each process records the workers it runs
//!   per queue, which tells a job waiting for another process from a job nobody runs.
//! - **Migrations** are versioned (`signal_bus_migrations`) and run under an advisory lock, so
//!   many processes starting at once migrate once.
//!
//! Times are stored as `BIGINT` Unix milliseconds, like the SQLite backend; the table, column
//! and index names are the same in both (PostgreSQL has two more indexes, for pruning).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use sqlx::{
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
    Connection as _, PgConnection, PgPool, Postgres, Transaction,
};
use tokio::sync::{Mutex, Notify};

use super::{
    sql::{self, migration, sql_limit, Placement, JOB_COLUMNS},
    store::{RescueBackoff, SignalKey},
    to_ms, CancelReason, Job, JobState, JobStore, LeaseToken, NewJob, QueueError,
};
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

/// The states a job can be claimed from (when its time has come).
const RUNNABLE: &str = "('available', 'scheduled', 'retryable')";

/// Versioned migrations: each version's statements run in one transaction. Released
/// versions are never edited: a change is a new version.
pub(super) const MIGRATIONS: &[(i32, &[&str])] = &[
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
            migration::JOBS_FETCH_INDEX,
            migration::JOBS_UNIQUE_INDEX,
            migration::JOBS_LEASE_INDEX,
        ],
    ),
    (2, migration::V2),
    (
        3,
        &[
            // Signals are keyed by (source, id), as CloudEvents makes them unique. Until now
            // the source was only inside the stored body: read it from there. A body that
            // does not parse keeps its row, under the source '' (never a valid source),
            // where loading it reports it corrupt. The fast path is one UPDATE; only when a
            // body breaks it does the slow path go row by row.
            "ALTER TABLE signal_bus_signals ADD COLUMN source TEXT",
            "DO $$
            BEGIN
                UPDATE signal_bus_signals
                SET source = COALESCE(convert_from(body, 'UTF8')::json ->> 'source', '');
            EXCEPTION WHEN OTHERS THEN
                DECLARE
                    r RECORD;
                BEGIN
                    FOR r IN SELECT id, body FROM signal_bus_signals LOOP
                        BEGIN
                            UPDATE signal_bus_signals
                            SET source =
                                COALESCE(convert_from(r.body, 'UTF8')::json ->> 'source', '')
                            WHERE id = r.id;
                        EXCEPTION WHEN OTHERS THEN
                            UPDATE signal_bus_signals SET source = '' WHERE id = r.id;
                        END;
                    END LOOP;
                END;
            END
            $$",
            "ALTER TABLE signal_bus_signals ALTER COLUMN source SET NOT NULL",
            "ALTER TABLE signal_bus_jobs
                ADD COLUMN signal_source TEXT,
                ADD COLUMN signal_id TEXT,
                ADD COLUMN cancel_reason TEXT,
                ADD COLUMN token BIGINT NOT NULL DEFAULT 0",
            // Every job whose args name a stored signal now refers to it (retention keeps
            // the signal while the job exists); forwarder jobs also get its source in their
            // args, where they read it (other jobs' args are their workers' own). Old signal ids were unique, so the id
            // finds the row (through the old primary key, still in place). A job whose
            // signal was already gone stays as it was: a forwarder job then has no
            // `signal_source` and is cancelled `signal_not_found`, as it would have been.
            "UPDATE signal_bus_jobs AS j
            SET signal_source = s.source,
                signal_id = s.id,
                args = CASE WHEN j.worker <> 'signal_bus.forwarder' OR j.args ? 'signal_source'
                            THEN j.args
                            ELSE j.args || jsonb_build_object('signal_source', s.source) END
            FROM signal_bus_signals AS s
            WHERE jsonb_typeof(j.args -> 'signal_id') = 'string'
              AND s.id = j.args ->> 'signal_id'",
            // Forwarder jobs name their forwarder in the worker (the registry counts workers).
            "UPDATE signal_bus_jobs
            SET worker = 'signal_bus.forwarder:' || (args ->> 'forwarder')
            WHERE worker = 'signal_bus.forwarder'
              AND jsonb_typeof(args -> 'forwarder') = 'string'",
            migration::CANCEL_REASONS,
            "ALTER TABLE signal_bus_signals
                DROP CONSTRAINT signal_bus_signals_pkey,
                ADD PRIMARY KEY (source, id)",
            // Signal pruning: old signals in age order, and whether any job refers to one.
            "CREATE INDEX signal_bus_signals_stored ON signal_bus_signals (stored_at)",
            migration::DROP_JOBS_FETCH_INDEX,
            migration::JOBS_SIGNAL_INDEX,
            // Job pruning: finished jobs of one state, oldest first.
            "CREATE INDEX signal_bus_jobs_finished
            ON signal_bus_jobs (state, finished_at) WHERE finished_at IS NOT NULL",
            // Claims keep walking `signal_bus_jobs_runnable` in claim order, filtering on
            // `worker = ANY(...)`, and stop at LIMIT. An index led by the worker would make
            // PostgreSQL sort every runnable job of those workers on each claim (an `= ANY`
            // scan returns no order), and one more index costs every state change a write.
            // The walk skips jobs of workers the claiming process does not run: few, since
            // jobs nobody runs are cancelled after the grace period; processes that run
            // different workers should use different queues.
            "CREATE TABLE signal_bus_workers (
                queue TEXT NOT NULL,
                worker TEXT NOT NULL,
                seen_at BIGINT NOT NULL,
                PRIMARY KEY (queue, worker)
            )",
        ],
    ),
    (
        4,
        &[
            // The journal (`signal_bus::journal`); `size` is the body's length (retention
            // by bytes).
            "CREATE TABLE signal_bus_journal (
                journal TEXT NOT NULL,
                seq BIGINT NOT NULL,
                appended_at BIGINT NOT NULL,
                type TEXT NOT NULL,
                body BYTEA NOT NULL,
                size BIGINT NOT NULL,
                PRIMARY KEY (journal, seq)
            )",
            // Replays "since a time" and retention by age.
            "CREATE INDEX signal_bus_journal_time ON signal_bus_journal (journal, appended_at)",
            // The highest sequence number each journal gave (kept when entries are pruned).
            // Appends update this row first: its row lock serializes the appenders of one
            // journal until they commit, so sequence numbers commit in order.
            "CREATE TABLE signal_bus_journal_heads (
                journal TEXT PRIMARY KEY,
                last_seq BIGINT NOT NULL
            )",
            // Persistent subscriptions: a checkpoint (NULL until created) and a lease.
            "CREATE TABLE signal_bus_journal_subs (
                journal TEXT NOT NULL,
                name TEXT NOT NULL,
                checkpoint BIGINT,
                lease_owner TEXT,
                lease_until BIGINT,
                PRIMARY KEY (journal, name)
            )",
            "CREATE TABLE signal_bus_journal_dead (
                journal TEXT NOT NULL,
                name TEXT NOT NULL,
                seq BIGINT NOT NULL,
                body BYTEA NOT NULL,
                error TEXT NOT NULL,
                failed_at BIGINT NOT NULL,
                PRIMARY KEY (journal, name, seq)
            )",
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
/// let job = NewJob::new(
///     "audit",
///     serde_json::json!({ "signal_source": signal.source(), "signal_id": signal.id() }),
/// );
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
                    QueueError::store(
                        BACKEND,
                        format!(
                            "cannot connect to {target}: timed out after {:?}",
                            self.acquire_timeout
                        ),
                    )
                })?
                .map_err(|e| {
                    QueueError::store_caused(BACKEND, format!("cannot connect to {target}: {e}"), e)
                })?;
        migrate(&mut conn).await.map_err(|e| {
            QueueError::store_caused(BACKEND, format!("migrating {target} failed: {e}"), e)
        })?;
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
    /// let job = NewJob::new(
    ///     "audit",
    ///     serde_json::json!({ "signal_source": signal.source(), "signal_id": signal.id() }),
    /// );
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

/// A database error as a queue error (kept as its source).
fn store_error(e: sqlx::Error) -> QueueError {
    QueueError::sql(BACKEND, e)
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
    placed: Placement,
}

impl<'a> Prepared<'a> {
    fn new(signal: Option<&'a Signal>, job: &'a NewJob, now: DateTime<Utc>) -> Self {
        Prepared {
            signal,
            job,
            placed: Placement::new(job, now),
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
///
/// A signal that is already stored keeps its first body; storing it again renews its
/// `stored_at` (never backwards) and so takes its row lock until the transaction ends,
/// which keeps a concurrent [`JobStore::prune_signals`] from deleting it under the new job.
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
                INSERT INTO signal_bus_signals (source, id, type, body, stored_at)
                SELECT $1, $2, $3, $4, $5 WHERE $2::text IS NOT NULL
                ON CONFLICT (source, id) DO UPDATE
                    SET stored_at = GREATEST(signal_bus_signals.stored_at, EXCLUDED.stored_at)
             )
             INSERT INTO signal_bus_jobs
                (queue, worker, args, state, attempt, max_attempts, priority, inserted_at,
                 scheduled_at, unique_key, unique_until, signal_source, signal_id)
             VALUES ($6, $7, $8::jsonb, $9, 0, $10, $11, $5, $12, $13, $14, $1, $2)
             RETURNING id",
        )
        .bind(p.signal.map(Signal::source))
        .bind(p.signal.map(Signal::id))
        .bind(p.signal.map(Signal::ty))
        .bind(body.as_deref())
        .bind(now_ms)
        .bind(&p.job.queue)
        .bind(&p.job.worker)
        .bind(p.job.args.to_string())
        .bind(p.placed.state.as_str())
        .bind(p.max_attempts())
        .bind(p.job.priority)
        .bind(p.placed.scheduled_at)
        .bind(p.job.unique_key.as_deref())
        .bind(p.placed.unique_until)
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

    // Each signal once (PostgreSQL refuses to update one row twice in a statement), in key
    // order (concurrent batches lock shared signals in the same order: no deadlock).
    let mut signals: Vec<&Signal> = kept.iter().filter_map(|(_, p)| p.signal).collect();
    signals.sort_unstable_by(|a, b| (a.source(), a.id()).cmp(&(b.source(), b.id())));
    signals.dedup_by(|a, b| a.source() == b.source() && a.id() == b.id());
    let sig_sources: Vec<&str> = signals.iter().map(|s| s.source()).collect();
    let sig_ids: Vec<&str> = signals.iter().map(|s| s.id()).collect();
    let sig_types: Vec<&str> = signals.iter().map(|s| s.ty()).collect();
    let sig_bodies: Vec<Vec<u8>> = signals.iter().map(|s| s.to_json_vec()).collect();

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
    let (mut job_sources, mut job_signal_ids) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (_, p) in &kept {
        queues.push(p.job.queue.as_str());
        workers.push(p.job.worker.as_str());
        args.push(p.job.args.to_string());
        states.push(p.placed.state.as_str());
        max_attempts.push(p.max_attempts());
        priorities.push(p.job.priority);
        scheduled.push(p.placed.scheduled_at);
        unique_keys.push(p.job.unique_key.as_deref());
        unique_until.push(p.placed.unique_until);
        job_sources.push(p.signal.map(Signal::source));
        job_signal_ids.push(p.signal.map(Signal::id));
    }
    sqlx::query(
        "WITH s AS (
            INSERT INTO signal_bus_signals (source, id, type, body, stored_at)
            SELECT ssrc, sid, sty, sbody, $1
            FROM unnest($2::text[], $3::text[], $4::text[], $5::bytea[])
                AS x(ssrc, sid, sty, sbody)
            ON CONFLICT (source, id) DO UPDATE
                SET stored_at = GREATEST(signal_bus_signals.stored_at, EXCLUDED.stored_at)
         )
         INSERT INTO signal_bus_jobs
            (id, queue, worker, args, state, attempt, max_attempts, priority, inserted_at,
             scheduled_at, unique_key, unique_until, signal_source, signal_id)
         SELECT jid, jqueue, jworker, jargs::jsonb, jstate, 0, jmax, jprio, $1, jsched, jkey,
                juntil, jsrc, jsig
         FROM unnest($6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[],
                     $11::int4[], $12::int2[], $13::bigint[], $14::text[], $15::bigint[],
                     $16::text[], $17::text[])
            AS y(jid, jqueue, jworker, jargs, jstate, jmax, jprio, jsched, jkey, juntil,
                 jsrc, jsig)",
    )
    .bind(now_ms)
    .bind(&sig_sources)
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
    .bind(&job_sources)
    .bind(&job_signal_ids)
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

/// Leases as two arrays (ids, tokens), sorted by job id: statements that lock many jobs
/// take them in one order.
fn lease_arrays(leases: &[LeaseToken]) -> (Vec<i64>, Vec<i64>) {
    let mut sorted = leases.to_vec();
    sorted.sort_unstable_by_key(|l| (l.job, l.token));
    sorted.iter().map(|l| (l.job, l.token)).unzip()
}

/// The leases that are not in `held` (as `(job, token)`), as job ids, in input order.
fn lost_leases(leases: &[LeaseToken], held: &[(i64, i64)]) -> Vec<i64> {
    let held: HashSet<(i64, i64)> = held.iter().copied().collect();
    leases
        .iter()
        .filter(|l| !held.contains(&(l.job, l.token)))
        .map(|l| l.job)
        .collect()
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
        workers: &[String],
        limit: usize,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Job>, QueueError> {
        if limit == 0 || workers.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "WITH picked AS (
                SELECT id AS picked_id FROM signal_bus_jobs
                WHERE queue = $1
                  AND state IN {RUNNABLE}
                  AND (state = 'available' OR scheduled_at <= $2)
                  AND worker = ANY($6)
                ORDER BY priority, scheduled_at, id
                LIMIT $3
                FOR UPDATE SKIP LOCKED
             )
             UPDATE signal_bus_jobs
             SET state = 'executing', attempt = attempt + 1, token = token + 1,
                 attempted_at = $2, lease_until = $4, owner = $5
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
            .bind(workers)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        sql::claimed_jobs(self, BACKEND, &rows, now).await
    }

    async fn heartbeat(
        &self,
        leases: &[LeaseToken],
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<i64>, QueueError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, tokens) = lease_arrays(leases);
        let held: Vec<(i64, i64)> = sqlx::query_as(
            "UPDATE signal_bus_jobs AS j SET lease_until = $1
             FROM unnest($2::bigint[], $3::bigint[]) AS l(id, token)
             WHERE j.id = ANY($2) AND j.id = l.id AND j.state = 'executing'
               AND j.token = l.token
             RETURNING j.id, j.token",
        )
        .bind(to_ms(lease_until))
        .bind(&ids)
        .bind(&tokens)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(lost_leases(leases, &held))
    }

    async fn complete(&self, lease: LeaseToken, now: DateTime<Utc>) -> Result<(), QueueError> {
        sql::complete(&self.pool, lease, now).await
    }

    async fn complete_many(
        &self,
        leases: &[LeaseToken],
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, QueueError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, tokens) = lease_arrays(leases);
        let done: Vec<(i64, i64)> = sqlx::query_as(
            "UPDATE signal_bus_jobs AS j
             SET state = 'completed', finished_at = $1, owner = NULL, lease_until = NULL
             FROM unnest($2::bigint[], $3::bigint[]) AS l(id, token)
             WHERE j.id = ANY($2) AND j.id = l.id AND j.state = 'executing'
               AND j.token = l.token
             RETURNING j.id, j.token",
        )
        .bind(to_ms(now))
        .bind(&ids)
        .bind(&tokens)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(lost_leases(leases, &done))
    }

    async fn retry(
        &self,
        lease: LeaseToken,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), QueueError> {
        sql::retry(&self.pool, lease, at, error).await
    }

    async fn snooze(&self, lease: LeaseToken, at: DateTime<Utc>) -> Result<(), QueueError> {
        sql::snooze(&self.pool, lease, at).await
    }

    async fn cancel(
        &self,
        lease: LeaseToken,
        reason: CancelReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        sql::cancel(&self.pool, lease, reason, detail, now).await
    }

    async fn cancel_job(
        &self,
        id: i64,
        reason: CancelReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, QueueError> {
        sql::cancel_job(&self.pool, id, reason, detail, now).await
    }

    async fn discard(
        &self,
        lease: LeaseToken,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        sql::discard(&self.pool, lease, error, now).await
    }

    /// Takes the expired jobs with `FOR UPDATE SKIP LOCKED` (a job whose late runner is
    /// finishing it right now is left to that runner), then writes each one's outcome, in
    /// one transaction.
    async fn rescue(
        &self,
        now: DateTime<Utc>,
        backoff: RescueBackoff<'_>,
    ) -> Result<u64, QueueError> {
        let now_ms = to_ms(now);
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let expired: Vec<(i64, i32, i32)> = sqlx::query_as(
            "SELECT id, attempt, max_attempts FROM signal_bus_jobs
             WHERE state = 'executing' AND lease_until < $1
             ORDER BY id
             FOR UPDATE SKIP LOCKED",
        )
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        if expired.is_empty() {
            tx.rollback().await.map_err(store_error)?;
            return Ok(0);
        }
        let n = expired.len();
        let (mut ids, mut states, mut scheduled, mut errors, mut finished) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (id, attempt, max_attempts) in expired {
            let rescued = sql::Rescued::new(attempt.into(), max_attempts.into(), now, backoff);
            ids.push(id);
            states.push(rescued.state.as_str());
            scheduled.push(rescued.scheduled_at);
            finished.push(rescued.finished_at);
            errors.push(rescued.error);
        }
        let done = sqlx::query(
            "UPDATE signal_bus_jobs AS j
             SET state = r.state,
                 scheduled_at = COALESCE(r.sched, j.scheduled_at),
                 finished_at = COALESCE(r.fin, j.finished_at),
                 last_error = r.err,
                 owner = NULL, lease_until = NULL
             FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bigint[])
                AS r(id, state, sched, err, fin)
             WHERE j.id = ANY($1) AND j.id = r.id",
        )
        .bind(&ids)
        .bind(&states)
        .bind(&scheduled)
        .bind(&errors)
        .bind(&finished)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(done.rows_affected())
    }

    async fn release(&self, owner: &str, _now: DateTime<Utc>) -> Result<u64, QueueError> {
        sql::release(&self.pool, owner).await
    }

    async fn register_workers(
        &self,
        queue: &str,
        workers: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        // Each row once (ON CONFLICT cannot update a row twice), in one order (processes
        // registering the same workers at once cannot deadlock).
        let mut workers: Vec<&str> = workers.iter().map(String::as_str).collect();
        workers.sort_unstable();
        workers.dedup();
        if workers.is_empty() {
            return Ok(());
        }
        self.write(
            sqlx::query(
                "INSERT INTO signal_bus_workers (queue, worker, seen_at)
                 SELECT $1, w, $2 FROM unnest($3::text[]) AS w
                 ON CONFLICT (queue, worker) DO UPDATE
                     SET seen_at = GREATEST(signal_bus_workers.seen_at, EXCLUDED.seen_at)",
            )
            .bind(queue)
            .bind(to_ms(now))
            .bind(&workers),
        )
        .await
        .map(drop)
    }

    async fn unregistered(
        &self,
        seen_since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<(String, String), u64>, QueueError> {
        let sql = format!(
            "SELECT j.queue, j.worker, count(*) FROM signal_bus_jobs AS j
             WHERE j.state IN {RUNNABLE} AND j.scheduled_at <= $2
               AND NOT EXISTS (
                   SELECT 1 FROM signal_bus_workers AS w
                   WHERE w.queue = j.queue AND w.worker = j.worker AND w.seen_at >= $1
               )
             GROUP BY j.queue, j.worker"
        );
        let rows: Vec<(String, String, i64)> = sqlx::query_as(&sql)
            .bind(to_ms(seen_since))
            .bind(to_ms(now))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(sql::per_worker(rows))
    }

    /// Takes the jobs with `FOR UPDATE SKIP LOCKED` (a job being claimed right now is left
    /// to its claim), then cancels them, in one transaction.
    async fn cancel_unregistered(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<(String, String), u64>, QueueError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let sql = format!(
            "SELECT j.id, j.queue, j.worker FROM signal_bus_jobs AS j
             WHERE j.state IN {RUNNABLE} AND j.scheduled_at <= $1
               AND NOT EXISTS (
                   SELECT 1 FROM signal_bus_workers AS w
                   WHERE w.queue = j.queue AND w.worker = j.worker AND w.seen_at >= $1
               )
             ORDER BY j.id
             FOR UPDATE OF j SKIP LOCKED"
        );
        let rows: Vec<(i64, String, String)> = sqlx::query_as(&sql)
            .bind(to_ms(cutoff))
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
        if rows.is_empty() {
            tx.rollback().await.map_err(store_error)?;
            return Ok(BTreeMap::new());
        }
        let mut reasons: HashMap<&str, (CancelReason, String)> = HashMap::new();
        let (mut ids, mut codes, mut details) = (
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
        );
        for (id, _, worker) in &rows {
            let (reason, detail) = reasons
                .entry(worker.as_str())
                .or_insert_with(|| super::unregistered_reason(worker));
            ids.push(*id);
            codes.push(reason.as_str());
            details.push(detail.clone());
        }
        let sql = format!(
            "UPDATE signal_bus_jobs AS j
             SET state = 'cancelled', finished_at = $1, cancel_reason = c.reason,
                 last_error = c.detail, owner = NULL, lease_until = NULL
             FROM unnest($2::bigint[], $3::text[], $4::text[]) AS c(id, reason, detail)
             WHERE j.id = ANY($2) AND j.id = c.id AND j.state IN {RUNNABLE}
             RETURNING j.queue, j.worker"
        );
        let cancelled: Vec<(String, String)> = sqlx::query_as(&sql)
            .bind(to_ms(now))
            .bind(&ids)
            .bind(&codes)
            .bind(&details)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(sql::per_worker(
            cancelled.into_iter().map(|(q, w)| (q, w, 1)),
        ))
    }

    async fn load_signal(&self, source: &str, id: &str) -> Result<Option<Signal>, QueueError> {
        sql::load_signal(&self.pool, source, id).await
    }

    async fn load_signals(
        &self,
        keys: &[(&str, &str)],
    ) -> Result<Vec<(SignalKey, Result<Signal, QueueError>)>, QueueError> {
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (sources, ids): (Vec<&str>, Vec<&str>) = keys.into_iter().unzip();
        let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT s.source, s.id, s.body
             FROM unnest($1::text[], $2::text[]) AS k(source, id)
             JOIN signal_bus_signals AS s ON s.source = k.source AND s.id = k.id",
        )
        .bind(&sources)
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(|(source, id, body)| sql::keyed_signal(source, id, &body))
            .collect())
    }

    async fn delete_signal(&self, source: &str, id: &str) -> Result<bool, QueueError> {
        sql::delete_signal(&self.pool, source, id).await
    }

    async fn get(&self, id: i64) -> Result<Option<Job>, QueueError> {
        sql::get(&self.pool, id).await
    }

    async fn list(&self, state: JobState, limit: usize) -> Result<Vec<Job>, QueueError> {
        sql::list(&self.pool, state, limit).await
    }

    async fn redrive(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64, QueueError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'available', attempt = 0, scheduled_at = $1, finished_at = NULL,
                     cancel_reason = NULL, owner = NULL, lease_until = NULL
                 WHERE state IN ('cancelled', 'discarded') AND id = ANY($2)",
            )
            .bind(to_ms(now))
            .bind(ids),
        )
        .await
    }

    /// Oldest first, through `signal_bus_jobs_finished`; rows another transaction holds
    /// (a redrive under way) are skipped, never waited for. The ids are collected first
    /// (`= ANY(ARRAY(...))`), so the delete looks each one up instead of scanning the table.
    async fn prune(
        &self,
        state: JobState,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, QueueError> {
        if !state.is_final() || limit == 0 {
            return Ok(0);
        }
        self.write(
            sqlx::query(
                "DELETE FROM signal_bus_jobs
                 WHERE id = ANY(ARRAY(
                     SELECT id FROM signal_bus_jobs
                     WHERE state = $1 AND finished_at < $2
                     ORDER BY finished_at
                     LIMIT $3
                     FOR UPDATE SKIP LOCKED
                 ))",
            )
            .bind(state.as_str())
            .bind(to_ms(before))
            .bind(sql_limit(limit)),
        )
        .await
    }

    /// Oldest first. A signal an enqueue is storing again right now is locked by that
    /// enqueue (which renews its `stored_at`): it is skipped. One whose enqueue commits
    /// after this statement's snapshot but before its lock is seen with the renewed
    /// `stored_at` (the lock rechecks the row), while its new job is not: only `before`
    /// keeps that signal, so callers pass a time well before any running enqueue's (the
    /// queue passes now minus [`Retention::signal_margin`](super::Retention::signal_margin)). The lock is taken with
    /// `SKIP LOCKED`, so a prune never waits for (or deadlocks with) an enqueue. The rows
    /// are deleted by `ctid`: they are locked by this statement, so their versions cannot
    /// move before the delete.
    async fn prune_signals(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, QueueError> {
        if limit == 0 {
            return Ok(0);
        }
        self.write(
            sqlx::query(
                "DELETE FROM signal_bus_signals
                 WHERE ctid = ANY(ARRAY(
                     SELECT s.ctid FROM signal_bus_signals AS s
                     WHERE s.stored_at < $1
                       AND NOT EXISTS (
                           SELECT 1 FROM signal_bus_jobs AS j
                           WHERE j.signal_source = s.source AND j.signal_id = s.id
                       )
                     ORDER BY s.stored_at
                     LIMIT $2
                     FOR UPDATE OF s SKIP LOCKED
                 ))",
            )
            .bind(to_ms(before))
            .bind(sql_limit(limit)),
        )
        .await
    }

    async fn counts(&self) -> Result<BTreeMap<JobState, u64>, QueueError> {
        sql::counts(&self.pool).await
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
