//! The SQLite backend of the durable queue: one file, WAL, embedded.
//!
//! # Connections
//!
//! SQLite allows one writer at a time. The store keeps two pools on the same file:
//!
//! - a **writer pool of exactly one connection**. Every write (single statements and
//!   transactions) goes through it, so writers of this process queue fairly in the pool
//!   instead of spinning in SQLite's busy handler, and a transaction never has to upgrade a
//!   read lock held by a sibling connection. Multi-statement writes still begin with
//!   `BEGIN IMMEDIATE`, so another *process* sharing the file makes us wait (up to the
//!   5 s `busy_timeout`) at `BEGIN` rather than fail half-way with `SQLITE_BUSY`.
//! - a **reader pool** (4 connections by default) for `get`, `list`, `counts` and
//!   `load_signal`; in WAL mode readers never block the writer nor each other.
//!
//! # Durability
//!
//! [`SqliteStore::open`] uses `synchronous = FULL`: the WAL is synced on every commit, so an
//! acknowledged enqueue survives a power loss (about 8k single-job commits per second on the
//! reference machine; [`JobStore::enqueue_many`] groups many jobs in one commit and reaches
//! about 260k jobs per second). [`SqliteStoreBuilder::synchronous_normal`] trades that for
//! speed: NORMAL survives a crash of the process, but the last commits may be lost on power
//! loss.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
        SqliteSynchronous,
    },
    Row, SqliteConnection,
};

use super::{
    sql::{self, migration, sql_limit, Placement, JOB_COLUMNS},
    store::{RescueBackoff, SignalKey},
    to_ms, CancelReason, Job, JobState, JobStore, LeaseToken, NewJob, QueueError,
};
use crate::{ConfigError, Signal};

const BACKEND: &str = "sqlite";

/// How long a connection waits for another one (of any process) holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Reader connections by default.
const DEFAULT_MAX_CONNECTIONS: u32 = 4;

/// Versioned migrations: each version runs in one transaction and is recorded in
/// `signal_bus_migrations`. Never edit a published version; append a new one.
pub(super) const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE signal_bus_signals (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            body BLOB NOT NULL,
            stored_at INTEGER NOT NULL)",
            "CREATE TABLE signal_bus_jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            queue TEXT NOT NULL,
            worker TEXT NOT NULL,
            args TEXT NOT NULL,
            state TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            inserted_at INTEGER NOT NULL,
            scheduled_at INTEGER NOT NULL,
            attempted_at INTEGER,
            finished_at INTEGER,
            lease_until INTEGER,
            owner TEXT,
            unique_key TEXT,
            unique_until INTEGER,
            last_error TEXT)",
            migration::JOBS_FETCH_INDEX,
            migration::JOBS_UNIQUE_INDEX,
            migration::JOBS_LEASE_INDEX,
        ],
    ),
    (2, migration::V2),
    (
        3,
        &[
            // Jobs refer to their signal (retention keeps it while any job does), carry a
            // claim token and a cancel reason. A job row whose args are not valid JSON is
            // left as it is (and reported corrupt when read), never an error here: CASE
            // keeps the JSON functions away from it.
            "ALTER TABLE signal_bus_jobs ADD COLUMN signal_source TEXT",
            "ALTER TABLE signal_bus_jobs ADD COLUMN signal_id TEXT",
            "ALTER TABLE signal_bus_jobs ADD COLUMN cancel_reason TEXT",
            "ALTER TABLE signal_bus_jobs ADD COLUMN token INTEGER NOT NULL DEFAULT 0",
            "UPDATE signal_bus_jobs SET signal_id = json_extract(args, '$.signal_id')
            WHERE CASE WHEN json_valid(args) THEN json_type(args, '$.signal_id') END = 'text'",
            // The source was only inside the stored body. Old signal ids were unique, and
            // the old primary key on `id` makes each lookup one index probe.
            "UPDATE signal_bus_jobs SET signal_source = (
                SELECT COALESCE(CASE WHEN json_valid(CAST(s.body AS TEXT))
                                     THEN json_extract(CAST(s.body AS TEXT), '$.source') END, '')
                FROM signal_bus_signals s WHERE s.id = signal_bus_jobs.signal_id)
            WHERE signal_id IS NOT NULL",
            // A job whose signal was already gone refers to nothing (a forwarder job then
            // has no `signal_source` and is cancelled `signal_not_found`, as before).
            "UPDATE signal_bus_jobs SET signal_id = NULL WHERE signal_source IS NULL",
            // Forwarder jobs read the source from their args; other jobs' args are theirs.
            "UPDATE signal_bus_jobs SET args = json_set(args, '$.signal_source', signal_source)
            WHERE worker = 'signal_bus.forwarder' AND signal_source IS NOT NULL
              AND CASE WHEN json_valid(args) THEN json_type(args, '$.signal_source') END IS NULL",
            // Forwarder jobs name their forwarder in `worker`, so claims can filter on it.
            "UPDATE signal_bus_jobs
            SET worker = 'signal_bus.forwarder:' || json_extract(args, '$.forwarder')
            WHERE worker = 'signal_bus.forwarder'
              AND CASE WHEN json_valid(args) THEN json_type(args, '$.forwarder') END = 'text'",
            migration::CANCEL_REASONS,
            // Signals are keyed by (source, id), as CloudEvents makes them unique. A body
            // that does not parse keeps its row under the source '' (never a valid source),
            // where loading it reports it corrupt.
            "CREATE TABLE signal_bus_signals_v3 (
            source TEXT NOT NULL,
            id TEXT NOT NULL,
            type TEXT NOT NULL,
            body BLOB NOT NULL,
            stored_at INTEGER NOT NULL,
            PRIMARY KEY (source, id))",
            "INSERT INTO signal_bus_signals_v3 (source, id, type, body, stored_at)
            SELECT COALESCE(CASE WHEN json_valid(CAST(body AS TEXT))
                                 THEN json_extract(CAST(body AS TEXT), '$.source') END, ''),
                   id, type, body, stored_at
            FROM signal_bus_signals",
            "DROP TABLE signal_bus_signals",
            "ALTER TABLE signal_bus_signals_v3 RENAME TO signal_bus_signals",
            migration::DROP_JOBS_FETCH_INDEX,
            migration::JOBS_SIGNAL_INDEX,
            // Which process runs which workers, for how long: tells a job waiting for another
            // process from a job nobody runs.
            "CREATE TABLE signal_bus_workers (
            queue TEXT NOT NULL,
            worker TEXT NOT NULL,
            seen_at INTEGER NOT NULL,
            PRIMARY KEY (queue, worker))",
        ],
    ),
    (
        4,
        &[
            // The journal (`signal_bus::journal`): entries clustered by (journal, seq), so a
            // replay reads pages in key order; `size` is the body's length (retention by
            // bytes).
            "CREATE TABLE signal_bus_journal (
            journal TEXT NOT NULL,
            seq INTEGER NOT NULL,
            appended_at INTEGER NOT NULL,
            type TEXT NOT NULL,
            body BLOB NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (journal, seq)) WITHOUT ROWID",
            // Replays "since a time" and retention by age.
            "CREATE INDEX signal_bus_journal_time ON signal_bus_journal (journal, appended_at)",
            // The highest sequence number each journal gave (kept when entries are pruned).
            "CREATE TABLE signal_bus_journal_heads (
            journal TEXT PRIMARY KEY,
            last_seq INTEGER NOT NULL)",
            // Persistent subscriptions: a checkpoint (NULL until created) and a lease.
            "CREATE TABLE signal_bus_journal_subs (
            journal TEXT NOT NULL,
            name TEXT NOT NULL,
            checkpoint INTEGER,
            lease_owner TEXT,
            lease_until INTEGER,
            PRIMARY KEY (journal, name))",
            "CREATE TABLE signal_bus_journal_dead (
            journal TEXT NOT NULL,
            name TEXT NOT NULL,
            seq INTEGER NOT NULL,
            body BLOB NOT NULL,
            error TEXT NOT NULL,
            failed_at INTEGER NOT NULL,
            PRIMARY KEY (journal, name, seq))",
        ],
    ),
];

/// A [`JobStore`] in a SQLite file (WAL mode): the embedded default.
///
/// Cheap to clone: clones share the same connection pools. See the
/// module docs (`signal_bus::queue`) for how connections and durability are set up.
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// The file, or `None` for an in-memory database.
    path: Option<Arc<Path>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SqliteStore");
        match &self.path {
            Some(path) => d.field("path", &path.display()),
            None => d.field("path", &":memory:"),
        };
        d.finish_non_exhaustive()
    }
}

/// Options for [`SqliteStore`]; from [`SqliteStore::builder`].
///
/// # Default
/// `synchronous = FULL` (every acknowledged commit survives power loss) and 4 reader
/// connections (plus the one writer connection).
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    synchronous: SqliteSynchronous,
    max_connections: u32,
}

impl SqliteStoreBuilder {
    /// Uses `synchronous = NORMAL`: faster single commits (about 6 times on the reference
    /// machine); survives a crash of the process, but the last commits may be lost on power
    /// loss or an OS crash.
    pub fn synchronous_normal(mut self) -> Self {
        self.synchronous = SqliteSynchronous::Normal;
        self
    }

    /// At most `n` reader connections (default 4; must be at least 1). Writes always use one
    /// connection, since SQLite has one writer at a time.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Opens (creating if needed) the database file and applies missing migrations.
    ///
    /// # Errors
    /// [`QueueError::Invalid`] for `max_connections(0)`; [`QueueError::Store`] naming the
    /// file when it cannot be created, opened or written (missing directory, read-only
    /// file, not a database) or a migration fails.
    pub async fn open(self) -> Result<SqliteStore, QueueError> {
        if self.max_connections == 0 {
            return Err(QueueError::Invalid(ConfigError::invalid(
                "max_connections",
                0,
                "must be at least 1",
            )));
        }
        let path = self.path;
        let fail = |e: sqlx::Error| {
            QueueError::store_caused(BACKEND, format!("cannot open `{}`: {e}", path.display()), e)
        };
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(self.synchronous)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // The writer creates the file and switches it to WAL (a persistent setting).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone().create_if_missing(true))
            .await
            .map_err(fail)?;
        migrate(&writer).await.map_err(fail)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(self.max_connections)
            .connect_with(options)
            .await
            .map_err(fail)?;
        Ok(SqliteStore {
            writer,
            reader,
            path: Some(Arc::from(path)),
        })
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies the migrations it
    /// misses.
    ///
    /// The file is in WAL mode with `synchronous = FULL`: every acknowledged enqueue
    /// survives a power loss. Connections wait up to 5 s for a lock held by another
    /// connection (`busy_timeout`) and enforce foreign keys. Use [`SqliteStore::builder`]
    /// for `synchronous = NORMAL` or more reader connections.
    ///
    /// ```no_run
    /// use signal_bus::queue::{JobStore, NewJob, SqliteStore};
    ///
    /// # async fn run() -> Result<(), signal_bus::queue::QueueError> {
    /// let store = SqliteStore::open("signal-bus.db").await?;
    /// let id = store
    ///     .enqueue(None, &NewJob::new("audit", serde_json::json!({ "signal_id": "s1" })))
    ///     .await?;
    /// assert!(id.is_some());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`QueueError::Store`] naming the file when it cannot be created, opened or written
    /// (missing directory, read-only file, not a database) or a migration fails.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, QueueError> {
        Self::builder(path).open().await
    }

    /// Options for a store on the file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_owned(),
            synchronous: SqliteSynchronous::Full,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// A fresh in-memory database (for tests), gone when the last clone of the store is
    /// dropped. It uses SQLite's shared cache, so connections of this store see the same
    /// data; reads and writes share one connection since shared-cache table locks do not
    /// wait like file locks do.
    ///
    /// # Errors
    /// [`QueueError::Store`] when SQLite cannot allocate it.
    pub async fn in_memory() -> Result<SqliteStore, QueueError> {
        let fail = |e: sqlx::Error| QueueError::sql(BACKEND, e);
        // `:memory:` gives a uniquely named shared-cache database per call.
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(fail)?
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(fail)?;
        migrate(&pool).await.map_err(fail)?;
        Ok(SqliteStore {
            writer: pool.clone(),
            reader: pool,
            path: None,
        })
    }

    /// The pool of the one writer connection (every write goes through it).
    pub(crate) fn writer_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// The pool of reader connections (the writer's, for an in-memory database).
    pub(crate) fn reader_pool(&self) -> &SqlitePool {
        &self.reader
    }

    /// Runs one write statement that needs nothing back but the number of rows changed.
    async fn write(&self, query: Query<'_>) -> Result<u64, QueueError> {
        query
            .execute(&self.writer)
            .await
            .map(|r| r.rows_affected())
            .map_err(store_error)
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Creates the migrations table and applies every missing version, each in one
/// `BEGIN IMMEDIATE` transaction (so two processes opening the same new file do not both
/// apply a version), then checks that the file can be written.
async fn migrate(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS signal_bus_migrations (
            version INTEGER PRIMARY KEY,
            applied_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    for (version, statements) in MIGRATIONS {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let applied = sqlx::query("SELECT 1 FROM signal_bus_migrations WHERE version = ?")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if applied {
            tx.rollback().await?;
            continue;
        }
        for statement in *statements {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO signal_bus_migrations (version, applied_at) VALUES (?, ?)")
            .bind(version)
            .bind(to_ms(Utc::now()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    // SQLite opens a file it may not write read-only without a word, and lets even
    // `BEGIN IMMEDIATE` through; a write that is rolled back makes a read-only file fail
    // here, at open, rather than at the first enqueue.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("INSERT INTO signal_bus_migrations (version, applied_at) VALUES (-1, 0)")
        .execute(&mut *tx)
        .await?;
    tx.rollback().await?;
    Ok(())
}

fn store_error(e: sqlx::Error) -> QueueError {
    QueueError::sql(BACKEND, e)
}

/// Ids as a JSON array, for `id IN (SELECT value FROM json_each(?))`: one bind for any
/// number of ids.
fn json_ids(ids: &[i64]) -> String {
    serde_json::Value::from(ids).to_string()
}

/// Leases as a JSON array of `[id, token]` pairs, for
/// `(id, token) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?))`.
fn json_leases(leases: &[LeaseToken]) -> String {
    let pairs: Vec<[i64; 2]> = leases.iter().map(|l| [l.job, l.token]).collect();
    serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_owned())
}

/// The ids of `leases` that are not in `kept`.
fn lost_ids(leases: &[LeaseToken], kept: &[i64]) -> Vec<i64> {
    let kept: std::collections::HashSet<i64> = kept.iter().copied().collect();
    leases
        .iter()
        .map(|l| l.job)
        .filter(|id| !kept.contains(id))
        .collect()
}

/// A `(source, id, body)` row as a parsed signal (a body that does not parse is `Corrupt`).
fn parse_signal_row(
    row: &SqliteRow,
) -> Result<(SignalKey, Result<Signal, QueueError>), QueueError> {
    let source: String = row.try_get("source").map_err(store_error)?;
    let id: String = row.try_get("id").map_err(store_error)?;
    let body: Vec<u8> = row.try_get("body").map_err(store_error)?;
    Ok(sql::keyed_signal(source, id, &body))
}

/// Storing a signal again keeps its first body and renews its age (retention counts from
/// the last time a job was enqueued for it).
const UPSERT_SIGNAL: &str = " ON CONFLICT(source, id) DO UPDATE SET stored_at = excluded.stored_at";

/// Rows per multi-row INSERT (13 columns each, well under SQLite's parameter limit).
const BULK_ROWS: usize = 500;

/// Inserts signals and jobs with multi-row statements (no unique keys among them).
async fn insert_bulk(
    conn: &mut SqliteConnection,
    items: &[(Option<Arc<Signal>>, NewJob)],
    now: DateTime<Utc>,
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    let now_ms = to_ms(now);
    let signals: Vec<&Signal> = items.iter().filter_map(|(s, _)| s.as_deref()).collect();
    for chunk in signals.chunks(BULK_ROWS) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO signal_bus_signals (source, id, type, body, stored_at) ",
        );
        q.push_values(chunk, |mut b, s| {
            b.push_bind(s.source())
                .push_bind(s.id())
                .push_bind(s.ty())
                .push_bind(s.to_json_bytes().to_vec())
                .push_bind(now_ms);
        });
        q.push(UPSERT_SIGNAL);
        q.build().execute(&mut *conn).await?;
    }
    let mut ids = Vec::with_capacity(items.len());
    for chunk in items.chunks(BULK_ROWS) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO signal_bus_jobs (queue, worker, args, state, attempt, max_attempts, \
             priority, inserted_at, scheduled_at, signal_source, signal_id) ",
        );
        q.push_values(chunk, |mut b, (signal, job)| {
            let placed = Placement::new(job, now);
            b.push_bind(job.queue.clone())
                .push_bind(job.worker.clone())
                .push_bind(job.args.to_string())
                .push_bind(placed.state.as_str())
                .push_bind(0_i64)
                .push_bind(i64::from(job.max_attempts))
                .push_bind(i64::from(job.priority))
                .push_bind(now_ms)
                .push_bind(placed.scheduled_at)
                .push_bind(signal.as_ref().map(|s| s.source().to_owned()))
                .push_bind(signal.as_ref().map(|s| s.id().to_owned()));
        });
        q.push(" RETURNING id");
        let mut chunk_ids: Vec<i64> = q
            .build()
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>("id"))
            .collect::<Result<_, _>>()?;
        // One statement in one write transaction: ids are assigned in VALUES order.
        chunk_ids.sort_unstable();
        ids.extend(chunk_ids.into_iter().map(Some));
    }
    Ok(ids)
}

/// Inserts one job (and its signal) inside the caller's transaction.
async fn insert_job(
    conn: &mut SqliteConnection,
    signal: Option<&Signal>,
    job: &NewJob,
    now: DateTime<Utc>,
) -> Result<Option<i64>, sqlx::Error> {
    let now_ms = to_ms(now);
    if let Some(key) = &job.unique_key {
        let live = sqlx::query(
            "SELECT 1 FROM signal_bus_jobs
             WHERE unique_key = ? AND unique_until > ?
               AND state NOT IN ('cancelled', 'discarded')
             LIMIT 1",
        )
        .bind(key)
        .bind(now_ms)
        .fetch_optional(&mut *conn)
        .await?;
        if live.is_some() {
            return Ok(None);
        }
    }
    if let Some(signal) = signal {
        let body = signal.to_json_bytes();
        sqlx::query(&format!(
            "INSERT INTO signal_bus_signals (source, id, type, body, stored_at)
             VALUES (?, ?, ?, ?, ?){UPSERT_SIGNAL}"
        ))
        .bind(signal.source())
        .bind(signal.id())
        .bind(signal.ty())
        .bind(&body[..])
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    let placed = Placement::new(job, now);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO signal_bus_jobs
            (queue, worker, args, state, attempt, max_attempts, priority, inserted_at,
             scheduled_at, unique_key, unique_until, signal_source, signal_id)
         VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?)
         RETURNING id",
    )
    .bind(&job.queue)
    .bind(&job.worker)
    .bind(job.args.to_string())
    .bind(placed.state.as_str())
    .bind(i64::from(job.max_attempts))
    .bind(i64::from(job.priority))
    .bind(now_ms)
    .bind(placed.scheduled_at)
    .bind(&job.unique_key)
    .bind(placed.unique_until)
    .bind(signal.map(Signal::source))
    .bind(signal.map(Signal::id))
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some(id))
}

/// Runnable at `?` (bound once): available, or scheduled/retryable whose time has come.
const RUNNABLE: &str = "state IN ('available', 'scheduled', 'retryable') AND scheduled_at <= ?";

/// Not registered by any process since `?`.
const NOT_REGISTERED: &str = "NOT EXISTS (SELECT 1 FROM signal_bus_workers w
     WHERE w.queue = signal_bus_jobs.queue AND w.worker = signal_bus_jobs.worker
       AND w.seen_at >= ?)";

impl SqliteStore {
    /// Counts of unregistered runnable jobs per `(queue, worker)`.
    async fn unregistered_on(
        conn: &mut SqliteConnection,
        seen_since: DateTime<Utc>,
        due_by: DateTime<Utc>,
    ) -> Result<BTreeMap<(String, String), u64>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT queue, worker, COUNT(*) AS n FROM signal_bus_jobs
             WHERE {RUNNABLE} AND {NOT_REGISTERED}
             GROUP BY queue, worker"
        ))
        .bind(to_ms(due_by))
        .bind(to_ms(seen_since))
        .fetch_all(&mut *conn)
        .await?;
        let rows = rows
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("queue")?,
                    row.try_get("worker")?,
                    row.try_get("n")?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(sql::per_worker(rows))
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn enqueue(
        &self,
        signal: Option<&Signal>,
        job: &NewJob,
    ) -> Result<Option<i64>, QueueError> {
        super::validate_new_job(job)?;
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)?;
        let id = insert_job(&mut tx, signal, job, Utc::now())
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(id)
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
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)?;
        let now = Utc::now();
        let ids = if items.iter().any(|(_, j)| j.unique_key.is_some()) {
            let mut ids = Vec::with_capacity(items.len());
            for (signal, job) in items {
                let id = insert_job(&mut tx, signal.as_deref(), job, now)
                    .await
                    .map_err(store_error)?;
                ids.push(id);
            }
            ids
        } else {
            insert_bulk(&mut tx, items, now)
                .await
                .map_err(store_error)?
        };
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
        let now_ms = to_ms(now);
        // One statement: SQLite takes the write lock before it reads, so two claimers never
        // take the same job.
        let rows = sqlx::query(&format!(
            "UPDATE signal_bus_jobs
             SET state = 'executing', attempt = attempt + 1, token = token + 1,
                 attempted_at = ?, lease_until = ?, owner = ?
             WHERE id IN (
                 SELECT id FROM signal_bus_jobs
                 WHERE queue = ?
                   AND state IN ('available', 'scheduled', 'retryable')
                   AND (state = 'available' OR scheduled_at <= ?)
                   AND worker IN (SELECT value FROM json_each(?))
                 ORDER BY priority, scheduled_at, id
                 LIMIT ?)
             RETURNING {JOB_COLUMNS}"
        ))
        .bind(now_ms)
        .bind(to_ms(lease_until))
        .bind(owner)
        .bind(queue)
        .bind(now_ms)
        .bind(serde_json::Value::from(workers).to_string())
        .bind(sql_limit(limit))
        .fetch_all(&self.writer)
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
        let kept: Vec<i64> = sqlx::query_scalar(
            "UPDATE signal_bus_jobs SET lease_until = ?
             WHERE state = 'executing'
               AND (id, token) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?))
             RETURNING id",
        )
        .bind(to_ms(lease_until))
        .bind(json_leases(leases))
        .fetch_all(&self.writer)
        .await
        .map_err(store_error)?;
        Ok(lost_ids(leases, &kept))
    }

    async fn complete(&self, lease: LeaseToken, now: DateTime<Utc>) -> Result<(), QueueError> {
        sql::complete(&self.writer, lease, now).await
    }

    async fn complete_many(
        &self,
        leases: &[LeaseToken],
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, QueueError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let kept: Vec<i64> = sqlx::query_scalar(
            "UPDATE signal_bus_jobs
             SET state = 'completed', finished_at = ?, owner = NULL, lease_until = NULL
             WHERE state = 'executing'
               AND (id, token) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?))
             RETURNING id",
        )
        .bind(to_ms(now))
        .bind(json_leases(leases))
        .fetch_all(&self.writer)
        .await
        .map_err(store_error)?;
        Ok(lost_ids(leases, &kept))
    }

    async fn retry(
        &self,
        lease: LeaseToken,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), QueueError> {
        sql::retry(&self.writer, lease, at, error).await
    }

    async fn snooze(&self, lease: LeaseToken, at: DateTime<Utc>) -> Result<(), QueueError> {
        sql::snooze(&self.writer, lease, at).await
    }

    async fn cancel(
        &self,
        lease: LeaseToken,
        reason: CancelReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        sql::cancel(&self.writer, lease, reason, detail, now).await
    }

    async fn cancel_job(
        &self,
        id: i64,
        reason: CancelReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, QueueError> {
        sql::cancel_job(&self.writer, id, reason, detail, now).await
    }

    async fn discard(
        &self,
        lease: LeaseToken,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        sql::discard(&self.writer, lease, error, now).await
    }

    async fn rescue(
        &self,
        now: DateTime<Utc>,
        backoff: RescueBackoff<'_>,
    ) -> Result<u64, QueueError> {
        let now_ms = to_ms(now);
        // Cheap look first (a reader): most rounds find nothing to rescue.
        let any: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM signal_bus_jobs WHERE state = 'executing' AND lease_until < ? LIMIT 1",
        )
        .bind(now_ms)
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?;
        if any.is_none() {
            return Ok(0);
        }
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)?;
        let expired: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT id, attempt, max_attempts FROM signal_bus_jobs
             WHERE state = 'executing' AND lease_until < ?",
        )
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        for &(id, attempt, max_attempts) in &expired {
            let rescued = sql::Rescued::new(attempt, max_attempts, now, backoff);
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = ?, scheduled_at = ?, finished_at = ?, last_error = ?,
                     owner = NULL, lease_until = NULL
                 WHERE id = ? AND state = 'executing'",
            )
            .bind(rescued.state.as_str())
            .bind(rescued.scheduled_at.unwrap_or(now_ms))
            .bind(rescued.finished_at)
            .bind(rescued.error)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(expired.len() as u64)
    }

    async fn release(&self, owner: &str, _now: DateTime<Utc>) -> Result<u64, QueueError> {
        sql::release(&self.writer, owner).await
    }

    async fn register_workers(
        &self,
        queue: &str,
        workers: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        if workers.is_empty() {
            return Ok(());
        }
        self.write(
            sqlx::query(
                "INSERT INTO signal_bus_workers (queue, worker, seen_at)
                 SELECT ?, value, ? FROM json_each(?) WHERE true
                 ON CONFLICT(queue, worker) DO UPDATE
                 SET seen_at = MAX(seen_at, excluded.seen_at)",
            )
            .bind(queue)
            .bind(to_ms(now))
            .bind(serde_json::Value::from(workers).to_string()),
        )
        .await?;
        Ok(())
    }

    async fn unregistered(
        &self,
        seen_since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<(String, String), u64>, QueueError> {
        let mut conn = self.reader.acquire().await.map_err(store_error)?;
        Self::unregistered_on(&mut conn, seen_since, now)
            .await
            .map_err(store_error)
    }

    async fn cancel_unregistered(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<(String, String), u64>, QueueError> {
        // Look first without the write lock: almost always there is nothing to cancel.
        let found = self.unregistered(cutoff, cutoff).await?;
        if found.is_empty() {
            return Ok(found);
        }
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)?;
        let found = Self::unregistered_on(&mut tx, cutoff, cutoff)
            .await
            .map_err(store_error)?;
        let mut out = BTreeMap::new();
        for (queue, worker) in found.into_keys() {
            let (reason, detail) = super::unregistered_reason(&worker);
            let n = sqlx::query(&format!(
                "UPDATE signal_bus_jobs
                 SET state = 'cancelled', finished_at = ?, cancel_reason = ?, last_error = ?,
                     owner = NULL, lease_until = NULL
                 WHERE queue = ? AND worker = ? AND {RUNNABLE} AND {NOT_REGISTERED}"
            ))
            .bind(to_ms(now))
            .bind(reason.as_str())
            .bind(detail)
            .bind(&queue)
            .bind(&worker)
            .bind(to_ms(cutoff))
            .bind(to_ms(cutoff))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
            if n > 0 {
                out.insert((queue, worker), n);
            }
        }
        tx.commit().await.map_err(store_error)?;
        Ok(out)
    }

    async fn load_signal(&self, source: &str, id: &str) -> Result<Option<Signal>, QueueError> {
        sql::load_signal(&self.reader, source, id).await
    }

    async fn load_signals(
        &self,
        keys: &[(&str, &str)],
    ) -> Result<Vec<(SignalKey, Result<Signal, QueueError>)>, QueueError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let pairs: Vec<[&str; 2]> = keys.iter().map(|(s, i)| [*s, *i]).collect();
        let rows = sqlx::query(
            "SELECT source, id, body FROM signal_bus_signals
             WHERE (source, id) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?))",
        )
        .bind(serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_owned()))
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        rows.iter().map(parse_signal_row).collect()
    }

    async fn delete_signal(&self, source: &str, id: &str) -> Result<bool, QueueError> {
        sql::delete_signal(&self.writer, source, id).await
    }

    async fn get(&self, id: i64) -> Result<Option<Job>, QueueError> {
        sql::get(&self.reader, id).await
    }

    async fn list(&self, state: JobState, limit: usize) -> Result<Vec<Job>, QueueError> {
        sql::list(&self.reader, state, limit).await
    }

    async fn redrive(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64, QueueError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'available', attempt = 0, scheduled_at = ?, finished_at = NULL,
                     cancel_reason = NULL, owner = NULL, lease_until = NULL
                 WHERE state IN ('cancelled', 'discarded')
                   AND id IN (SELECT value FROM json_each(?))",
            )
            .bind(to_ms(now))
            .bind(json_ids(ids)),
        )
        .await
    }

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
                "DELETE FROM signal_bus_jobs WHERE id IN (
                     SELECT id FROM signal_bus_jobs
                     WHERE state = ? AND finished_at < ? LIMIT ?)",
            )
            .bind(state.as_str())
            .bind(to_ms(before))
            .bind(sql_limit(limit)),
        )
        .await
    }

    async fn prune_signals(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, QueueError> {
        if limit == 0 {
            return Ok(0);
        }
        self.write(
            sqlx::query(
                "DELETE FROM signal_bus_signals WHERE rowid IN (
                     SELECT s.rowid FROM signal_bus_signals s
                     WHERE s.stored_at < ?
                       AND NOT EXISTS (SELECT 1 FROM signal_bus_jobs j
                                       WHERE j.signal_source = s.source AND j.signal_id = s.id)
                     LIMIT ?)",
            )
            .bind(to_ms(before))
            .bind(sql_limit(limit)),
        )
        .await
    }

    async fn counts(&self) -> Result<BTreeMap<JobState, u64>, QueueError> {
        sql::counts(&self.reader).await
    }
}
