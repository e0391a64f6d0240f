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

use super::{from_ms, to_ms, Job, JobState, JobStore, NewJob, QueueError};
use crate::{ConfigError, Signal};

const BACKEND: &str = "sqlite";

/// How long a connection waits for another one (of any process) holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Reader connections by default.
const DEFAULT_MAX_CONNECTIONS: u32 = 4;

/// Versioned migrations: each version runs in one transaction and is recorded in
/// `signal_bus_migrations`. Never edit a published version; append a new one.
const MIGRATIONS: &[(i64, &[&str])] = &[
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
            QueueError::store(
                BACKEND,
                format_args!("cannot open `{}`: {e}", path.display()),
            )
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
        let fail = |e: sqlx::Error| QueueError::store(BACKEND, e);
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
    QueueError::store(BACKEND, e)
}

/// `usize` limit to SQL.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Ids as a JSON array, for `id IN (SELECT value FROM json_each(?))`: one bind for any
/// number of ids.
fn json_ids(ids: &[i64]) -> String {
    serde_json::Value::from(ids).to_string()
}

/// An `(id, body)` row as a parsed signal (a body that does not parse is `Corrupt`).
fn parse_signal_row(row: &SqliteRow) -> Result<(String, Result<Signal, QueueError>), QueueError> {
    let id: String = row.try_get("id").map_err(store_error)?;
    let body: Vec<u8> = row.try_get("body").map_err(store_error)?;
    let parsed = Signal::from_json_slice(&body).map_err(|e| QueueError::Corrupt {
        what: format!("signal `{id}` does not hold a valid signal: {e}"),
    });
    Ok((id, parsed))
}

/// Rows per multi-row INSERT (16 columns each, well under SQLite's parameter limit).
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
            "INSERT INTO signal_bus_signals (id, type, body, stored_at) ",
        );
        q.push_values(chunk, |mut b, s| {
            b.push_bind(s.id())
                .push_bind(s.ty())
                .push_bind(s.to_json_bytes().to_vec())
                .push_bind(now_ms);
        });
        q.push(" ON CONFLICT(id) DO NOTHING");
        q.build().execute(&mut *conn).await?;
    }
    let mut ids = Vec::with_capacity(items.len());
    for chunk in items.chunks(BULK_ROWS) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO signal_bus_jobs (queue, worker, args, state, attempt, max_attempts, \
             priority, inserted_at, scheduled_at) ",
        );
        q.push_values(chunk, |mut b, (_, job)| {
            let scheduled_at = job.scheduled_at.unwrap_or(now);
            let state = if scheduled_at > now {
                JobState::Scheduled
            } else {
                JobState::Available
            };
            b.push_bind(job.queue.clone())
                .push_bind(job.worker.clone())
                .push_bind(job.args.to_string())
                .push_bind(state.as_str())
                .push_bind(0_i64)
                .push_bind(i64::from(job.max_attempts))
                .push_bind(i64::from(job.priority))
                .push_bind(now_ms)
                .push_bind(to_ms(scheduled_at));
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
    let unique_until = match &job.unique_key {
        Some(key) => {
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
            let period = i64::try_from(job.unique_for.as_millis()).unwrap_or(i64::MAX);
            Some(now_ms.saturating_add(period))
        }
        None => None,
    };
    if let Some(signal) = signal {
        let body = signal.to_json_bytes();
        sqlx::query(
            "INSERT INTO signal_bus_signals (id, type, body, stored_at) VALUES (?, ?, ?, ?)
             ON CONFLICT(id) DO NOTHING",
        )
        .bind(signal.id())
        .bind(signal.ty())
        .bind(&body[..])
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    let scheduled_at = job.scheduled_at.unwrap_or(now);
    let state = if scheduled_at > now {
        JobState::Scheduled
    } else {
        JobState::Available
    };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO signal_bus_jobs
            (queue, worker, args, state, attempt, max_attempts, priority, inserted_at,
             scheduled_at, unique_key, unique_until)
         VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)
         RETURNING id",
    )
    .bind(&job.queue)
    .bind(&job.worker)
    .bind(job.args.to_string())
    .bind(state.as_str())
    .bind(i64::from(job.max_attempts))
    .bind(i64::from(job.priority))
    .bind(now_ms)
    .bind(to_ms(scheduled_at))
    .bind(&job.unique_key)
    .bind(unique_until)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some(id))
}

/// A stored row back to a job; a row that does not hold a valid job is
/// [`QueueError::Corrupt`], naming the job id.
fn job_from_row(row: &SqliteRow) -> Result<Job, QueueError> {
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
    let attempt: i64 = row.try_get("attempt").map_err(get_err)?;
    let max_attempts: i64 = row.try_get("max_attempts").map_err(get_err)?;
    let priority: i64 = row.try_get("priority").map_err(get_err)?;
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
        priority: i16::try_from(priority)
            .map_err(|_| corrupt(format!("priority {priority} is out of range")))?,
        inserted_at: from_ms(row.try_get("inserted_at").map_err(get_err)?),
        scheduled_at: from_ms(row.try_get("scheduled_at").map_err(get_err)?),
        attempted_at: opt_time("attempted_at")?,
        finished_at: opt_time("finished_at")?,
        unique_key: row.try_get("unique_key").map_err(get_err)?,
        last_error: row.try_get("last_error").map_err(get_err)?,
    })
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
        limit: usize,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Job>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now_ms = to_ms(now);
        // One statement: SQLite takes the write lock before it reads, so two claimers never
        // take the same job.
        let rows = sqlx::query(
            "UPDATE signal_bus_jobs
             SET state = 'executing', attempt = attempt + 1, attempted_at = ?,
                 lease_until = ?, owner = ?
             WHERE id IN (
                 SELECT id FROM signal_bus_jobs
                 WHERE queue = ?
                   AND state IN ('available', 'scheduled', 'retryable')
                   AND (state = 'available' OR scheduled_at <= ?)
                 ORDER BY priority, scheduled_at, id
                 LIMIT ?)
             RETURNING *",
        )
        .bind(now_ms)
        .bind(to_ms(lease_until))
        .bind(owner)
        .bind(queue)
        .bind(now_ms)
        .bind(sql_limit(limit))
        .fetch_all(&self.writer)
        .await
        .map_err(store_error)?;
        let mut jobs = rows
            .iter()
            .map(job_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        // RETURNING gives rows in no particular order.
        jobs.sort_by_key(|j| (j.priority, j.scheduled_at, j.id));
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
                "UPDATE signal_bus_jobs SET lease_until = ?
                 WHERE state = 'executing' AND owner = ?
                   AND id IN (SELECT value FROM json_each(?))",
            )
            .bind(to_ms(lease_until))
            .bind(owner)
            .bind(json_ids(ids)),
        )
        .await?;
        Ok(())
    }

    async fn complete(&self, id: i64, now: DateTime<Utc>) -> Result<(), QueueError> {
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'completed', finished_at = ?, owner = NULL, lease_until = NULL
                 WHERE id = ? AND state = 'executing'",
            )
            .bind(to_ms(now))
            .bind(id),
        )
        .await?;
        Ok(())
    }

    async fn complete_many(&self, ids: &[i64], now: DateTime<Utc>) -> Result<(), QueueError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'completed', finished_at = ?, owner = NULL, lease_until = NULL
                 WHERE state = 'executing' AND id IN (SELECT value FROM json_each(?))",
            )
            .bind(to_ms(now))
            .bind(json_ids(ids)),
        )
        .await?;
        Ok(())
    }

    async fn retry(&self, id: i64, at: DateTime<Utc>, error: &str) -> Result<(), QueueError> {
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'retryable', scheduled_at = ?, last_error = ?,
                     owner = NULL, lease_until = NULL
                 WHERE id = ? AND state = 'executing'",
            )
            .bind(to_ms(at))
            .bind(error)
            .bind(id),
        )
        .await?;
        Ok(())
    }

    async fn snooze(&self, id: i64, at: DateTime<Utc>) -> Result<(), QueueError> {
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'scheduled', scheduled_at = ?, attempt = MAX(attempt - 1, 0),
                     owner = NULL, lease_until = NULL
                 WHERE id = ? AND state = 'executing'",
            )
            .bind(to_ms(at))
            .bind(id),
        )
        .await?;
        Ok(())
    }

    async fn cancel(&self, id: i64, reason: &str, now: DateTime<Utc>) -> Result<(), QueueError> {
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'cancelled', finished_at = ?, last_error = ?,
                     owner = NULL, lease_until = NULL
                 WHERE id = ? AND state NOT IN ('completed', 'cancelled', 'discarded')",
            )
            .bind(to_ms(now))
            .bind(reason)
            .bind(id),
        )
        .await?;
        Ok(())
    }

    async fn discard(&self, id: i64, error: &str, now: DateTime<Utc>) -> Result<(), QueueError> {
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = 'discarded', finished_at = ?, last_error = ?,
                     owner = NULL, lease_until = NULL
                 WHERE id = ? AND state NOT IN ('completed', 'cancelled', 'discarded')",
            )
            .bind(to_ms(now))
            .bind(error)
            .bind(id),
        )
        .await?;
        Ok(())
    }

    async fn rescue(&self, now: DateTime<Utc>) -> Result<u64, QueueError> {
        self.write(
            sqlx::query(
                "UPDATE signal_bus_jobs
                 SET state = CASE WHEN attempt >= max_attempts THEN 'discarded' ELSE 'available' END,
                     finished_at = CASE WHEN attempt >= max_attempts THEN ? ELSE NULL END,
                     last_error = CASE WHEN attempt >= max_attempts
                         THEN 'discarded: its runner stopped during the last attempt'
                         ELSE last_error END,
                     owner = NULL, lease_until = NULL
                 WHERE state = 'executing' AND lease_until < ?",
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
                 SET state = 'available', attempt = MAX(attempt - 1, 0),
                     owner = NULL, lease_until = NULL
                 WHERE state = 'executing' AND owner = ?",
            )
            .bind(owner),
        )
        .await
    }

    async fn load_signal(&self, id: &str) -> Result<Option<Signal>, QueueError> {
        let body: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT body FROM signal_bus_signals WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.reader)
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
        let rows = sqlx::query(
            "SELECT id, body FROM signal_bus_signals WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(serde_json::Value::from(ids).to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        rows.iter().map(parse_signal_row).collect()
    }

    async fn delete_signal(&self, id: &str) -> Result<bool, QueueError> {
        let n = self
            .write(sqlx::query("DELETE FROM signal_bus_signals WHERE id = ?").bind(id))
            .await?;
        Ok(n > 0)
    }

    async fn get(&self, id: i64) -> Result<Option<Job>, QueueError> {
        let row = sqlx::query("SELECT * FROM signal_bus_jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(store_error)?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list(&self, state: JobState, limit: usize) -> Result<Vec<Job>, QueueError> {
        let rows = sqlx::query("SELECT * FROM signal_bus_jobs WHERE state = ? ORDER BY id LIMIT ?")
            .bind(state.as_str())
            .bind(sql_limit(limit))
            .fetch_all(&self.reader)
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
                 SET state = 'available', attempt = 0, scheduled_at = ?, finished_at = NULL,
                     owner = NULL, lease_until = NULL
                 WHERE state IN ('cancelled', 'discarded')
                   AND id IN (SELECT value FROM json_each(?))",
            )
            .bind(to_ms(now))
            .bind(json_ids(ids)),
        )
        .await
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, QueueError> {
        self.write(
            sqlx::query(
                "DELETE FROM signal_bus_jobs WHERE state = 'completed' AND finished_at < ?",
            )
            .bind(to_ms(before)),
        )
        .await
    }

    async fn counts(&self) -> Result<BTreeMap<JobState, u64>, QueueError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM signal_bus_jobs GROUP BY state")
            .fetch_all(&self.reader)
            .await
            .map_err(store_error)?;
        let mut counts: BTreeMap<JobState, u64> =
            JobState::ALL.into_iter().map(|s| (s, 0)).collect();
        for row in rows {
            let state: String = row.try_get("state").map_err(store_error)?;
            let n: i64 = row.try_get("n").map_err(store_error)?;
            let state = JobState::from_str(&state)?;
            counts.insert(state, u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }
}
