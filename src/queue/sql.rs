//! What the two SQL stores ([`SqliteStore`](super::SqliteStore) and `PostgresStore`) share.
//!
//! - **Statements both dialects read alike**, and the code that runs them: the token-checked
//!   state changes of one job, cancelling a job, releasing an owner's jobs, reading jobs,
//!   counts and signals. They are written once, with `$1`, `$2`, ... placeholders (sqlx's
//!   SQLite driver reads them as PostgreSQL does) and portable SQL (`CASE` where PostgreSQL
//!   says `GREATEST` and SQLite `MAX`), and run through [`Backend`], which each store's sqlx
//!   database implements from one macro.
//! - **Migration statements both stores ran word for word**, as constants both migration
//!   lists use (released migrations never change: `tests::migrations_are_unchanged`).
//! - The row decoding and validation, the placement of a new job, the claimed-batch
//!   handling and the small conversions.
//!
//! What stays in each store is its dialect proper: claims (`FOR UPDATE SKIP LOCKED` against
//! SQLite's single writer), batch statements (`unnest` arrays against `json_each`), the
//! insert paths, locking, notifications and the migrations' DDL.

use std::{collections::BTreeMap, str::FromStr};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Pool, Row, Type};

use super::{
    from_ms,
    store::{RescueBackoff, SignalKey},
    to_ms, CancelReason, Job, JobState, JobStore, LeaseToken, NewJob, QueueError,
};
use crate::Signal;

/// Migration statements that both stores' migration lists hold word for word. Never edit
/// one: databases have applied them (a change is a new migration version).
pub(super) mod migration {
    /// Version 1: claims walked this index.
    pub(in crate::queue) const JOBS_FETCH_INDEX: &str = "CREATE INDEX signal_bus_jobs_fetch
            ON signal_bus_jobs (queue, state, priority, scheduled_at, id)";
    /// Version 1: unique-key lookups.
    pub(in crate::queue) const JOBS_UNIQUE_INDEX: &str = "CREATE INDEX signal_bus_jobs_unique
            ON signal_bus_jobs (unique_key) WHERE unique_key IS NOT NULL";
    /// Version 1: rescues of expired leases.
    pub(in crate::queue) const JOBS_LEASE_INDEX: &str =
        "CREATE INDEX signal_bus_jobs_lease ON signal_bus_jobs (state, lease_until)";
    /// Version 2, whole: claims walk this index in order and stop at LIMIT: no scan, no
    /// sort.
    pub(in crate::queue) const V2: &[&str] = &["CREATE INDEX signal_bus_jobs_runnable
            ON signal_bus_jobs (queue, priority, scheduled_at, id)
            WHERE state IN ('available', 'scheduled', 'retryable')"];
    /// Version 3: cancelled jobs get their reason from what the old release wrote.
    pub(in crate::queue) const CANCEL_REASONS: &str =
        "UPDATE signal_bus_jobs SET cancel_reason = CASE
                WHEN last_error LIKE 'signal_not_found%' THEN 'signal_not_found'
                WHEN last_error LIKE 'unknown_forwarder%' THEN 'unknown_forwarder'
                WHEN last_error LIKE 'unknown worker%' THEN 'unknown_worker'
                WHEN last_error LIKE 'schema_mismatch%' THEN 'schema_mismatch'
                ELSE 'worker' END
            WHERE state = 'cancelled'";
    /// Version 3: no query walks the first index any more (claims use the runnable index,
    /// the rest the lease index): one write less per state change pays for the new one.
    pub(in crate::queue) const DROP_JOBS_FETCH_INDEX: &str =
        "DROP INDEX IF EXISTS signal_bus_jobs_fetch";
    /// Version 3: which jobs refer to a signal (retention keeps it while any does).
    pub(in crate::queue) const JOBS_SIGNAL_INDEX: &str = "CREATE INDEX signal_bus_jobs_signal
            ON signal_bus_jobs (signal_source, signal_id) WHERE signal_id IS NOT NULL";
}

/// The columns of a job as [`job_from_row`] reads them: `args` as text (JSON without sqlx's
/// `json` feature) and the integers as 64-bit (PostgreSQL stores some narrower).
macro_rules! job_columns {
    () => {
        "id, queue, worker, CAST(args AS TEXT) AS args, state, \
         CAST(attempt AS BIGINT) AS attempt, CAST(max_attempts AS BIGINT) AS max_attempts, \
         CAST(priority AS BIGINT) AS priority, inserted_at, scheduled_at, attempted_at, \
         finished_at, unique_key, last_error, cancel_reason, token"
    };
}

/// The columns of a job, for statements of one store (a claim's `RETURNING`).
pub(super) const JOB_COLUMNS: &str = job_columns!();

/// The statements both stores run as written. The ones that change an executing job end in
/// `id = $n AND token = $n+1`, bound by [`leased`].
mod statement {
    pub(super) const COMPLETE: &str = "UPDATE signal_bus_jobs
         SET state = 'completed', finished_at = $1, owner = NULL, lease_until = NULL
         WHERE id = $2 AND state = 'executing' AND token = $3";
    pub(super) const RETRY: &str = "UPDATE signal_bus_jobs
         SET state = 'retryable', scheduled_at = $1, last_error = $2,
             owner = NULL, lease_until = NULL
         WHERE id = $3 AND state = 'executing' AND token = $4";
    /// A snooze gives its attempt back.
    pub(super) const SNOOZE: &str = "UPDATE signal_bus_jobs
         SET state = 'scheduled', scheduled_at = $1,
             attempt = CASE WHEN attempt > 0 THEN attempt - 1 ELSE 0 END,
             owner = NULL, lease_until = NULL
         WHERE id = $2 AND state = 'executing' AND token = $3";
    pub(super) const CANCEL: &str = "UPDATE signal_bus_jobs
         SET state = 'cancelled', finished_at = $1, cancel_reason = $2, last_error = $3,
             owner = NULL, lease_until = NULL
         WHERE id = $4 AND state = 'executing' AND token = $5";
    pub(super) const DISCARD: &str = "UPDATE signal_bus_jobs
         SET state = 'discarded', finished_at = $1, last_error = $2,
             owner = NULL, lease_until = NULL
         WHERE id = $3 AND state = 'executing' AND token = $4";
    /// Any job not finished yet, whoever holds it.
    pub(super) const CANCEL_JOB: &str = "UPDATE signal_bus_jobs
         SET state = 'cancelled', finished_at = $1, cancel_reason = $2, last_error = $3,
             owner = NULL, lease_until = NULL
         WHERE id = $4 AND state NOT IN ('completed', 'cancelled', 'discarded')";
    /// A stopping runner's jobs go back unspent.
    pub(super) const RELEASE: &str = "UPDATE signal_bus_jobs
         SET state = 'available', attempt = CASE WHEN attempt > 0 THEN attempt - 1 ELSE 0 END,
             owner = NULL, lease_until = NULL
         WHERE state = 'executing' AND owner = $1";
    pub(super) const GET: &str = concat!(
        "SELECT ",
        job_columns!(),
        " FROM signal_bus_jobs WHERE id = $1"
    );
    pub(super) const LIST: &str = concat!(
        "SELECT ",
        job_columns!(),
        " FROM signal_bus_jobs WHERE state = $1 ORDER BY id LIMIT $2"
    );
    pub(super) const COUNTS: &str =
        "SELECT state, COUNT(*) AS n FROM signal_bus_jobs GROUP BY state";
    pub(super) const LOAD_SIGNAL: &str =
        "SELECT body FROM signal_bus_signals WHERE source = $1 AND id = $2";
    pub(super) const DELETE_SIGNAL: &str =
        "DELETE FROM signal_bus_signals WHERE source = $1 AND id = $2";
}

/// A value bound to a [`Statement`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg<'a> {
    Int(i64),
    Text(&'a str),
}

/// A statement with its arguments, in placeholder order.
#[derive(Debug)]
pub(super) struct Statement<'a> {
    sql: &'static str,
    args: Vec<Arg<'a>>,
}

impl<'a> Statement<'a> {
    pub(super) fn new(sql: &'static str) -> Self {
        Statement {
            sql,
            args: Vec::with_capacity(6),
        }
    }

    pub(super) fn int(mut self, value: i64) -> Self {
        self.args.push(Arg::Int(value));
        self
    }

    pub(super) fn text(mut self, value: &'a str) -> Self {
        self.args.push(Arg::Text(value));
        self
    }
}

/// An sqlx database a store runs [`Statement`]s on.
#[async_trait]
pub(super) trait Backend: sqlx::Database {
    /// The backend name in errors.
    const NAME: &'static str;

    /// Runs a statement; the number of rows it changed.
    async fn execute(pool: &Pool<Self>, statement: Statement<'_>) -> Result<u64, QueueError>;

    /// Runs a statement that returns jobs (its columns: [`JOB_COLUMNS`]).
    async fn fetch_jobs(
        pool: &Pool<Self>,
        statement: Statement<'_>,
    ) -> Result<Vec<Job>, QueueError>;

    /// Runs a statement that returns at most one `body`.
    async fn fetch_body(
        pool: &Pool<Self>,
        statement: Statement<'_>,
    ) -> Result<Option<Vec<u8>>, QueueError>;

    /// Runs a statement that returns `(state, n)` rows.
    async fn fetch_counts(
        pool: &Pool<Self>,
        statement: Statement<'_>,
    ) -> Result<Vec<(String, i64)>, QueueError>;
}

/// Implements [`Backend`] for an sqlx database: one text, typed for each.
macro_rules! backend {
    ($db:ty, $name:literal) => {
        impl Bind for $db {
            fn query<'q>(
                statement: &'q Statement<'q>,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>> {
                statement
                    .args
                    .iter()
                    .fold(sqlx::query(statement.sql), |query, arg| match *arg {
                        Arg::Int(value) => query.bind(value),
                        Arg::Text(value) => query.bind(value),
                    })
            }
        }

        #[async_trait]
        impl Backend for $db {
            const NAME: &'static str = $name;

            async fn execute(
                pool: &Pool<Self>,
                statement: Statement<'_>,
            ) -> Result<u64, QueueError> {
                let done = Self::query(&statement)
                    .execute(pool)
                    .await
                    .map_err(|e| QueueError::store(Self::NAME, e))?;
                Ok(done.rows_affected())
            }

            async fn fetch_jobs(
                pool: &Pool<Self>,
                statement: Statement<'_>,
            ) -> Result<Vec<Job>, QueueError> {
                let rows = Self::query(&statement)
                    .fetch_all(pool)
                    .await
                    .map_err(|e| QueueError::store(Self::NAME, e))?;
                rows.iter()
                    .map(|row| job_from_row(Self::NAME, row))
                    .collect()
            }

            async fn fetch_body(
                pool: &Pool<Self>,
                statement: Statement<'_>,
            ) -> Result<Option<Vec<u8>>, QueueError> {
                let row = Self::query(&statement)
                    .fetch_optional(pool)
                    .await
                    .map_err(|e| QueueError::store(Self::NAME, e))?;
                row.map(|row| row.try_get("body"))
                    .transpose()
                    .map_err(|e| QueueError::store(Self::NAME, e))
            }

            async fn fetch_counts(
                pool: &Pool<Self>,
                statement: Statement<'_>,
            ) -> Result<Vec<(String, i64)>, QueueError> {
                let rows = Self::query(&statement)
                    .fetch_all(pool)
                    .await
                    .map_err(|e| QueueError::store(Self::NAME, e))?;
                rows.iter()
                    .map(|row| Ok((row.try_get("state")?, row.try_get("n")?)))
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(|e| QueueError::store(Self::NAME, e))
            }
        }
    };
}

/// A [`Statement`] as an sqlx query of one database.
trait Bind: sqlx::Database {
    fn query<'q>(
        statement: &'q Statement<'q>,
    ) -> sqlx::query::Query<'q, Self, <Self as sqlx::Database>::Arguments<'q>>;
}

#[cfg(feature = "sqlite")]
backend!(sqlx::Sqlite, "sqlite");
#[cfg(feature = "postgres")]
backend!(sqlx::Postgres, "postgres");

/// Runs a state change of an executing job, checked against its claim's token (bound last):
/// no row changed is [`QueueError::LeaseLost`].
async fn leased<D: Backend>(
    pool: &Pool<D>,
    lease: LeaseToken,
    statement: Statement<'_>,
) -> Result<(), QueueError> {
    match D::execute(pool, statement.int(lease.job).int(lease.token)).await? {
        0 => Err(QueueError::LeaseLost { job: lease.job }),
        _ => Ok(()),
    }
}

/// [`JobStore::complete`] on `pool`.
pub(super) async fn complete<D: Backend>(
    pool: &Pool<D>,
    lease: LeaseToken,
    now: DateTime<Utc>,
) -> Result<(), QueueError> {
    let statement = Statement::new(statement::COMPLETE).int(to_ms(now));
    leased(pool, lease, statement).await
}

/// [`JobStore::retry`] on `pool`.
pub(super) async fn retry<D: Backend>(
    pool: &Pool<D>,
    lease: LeaseToken,
    at: DateTime<Utc>,
    error: &str,
) -> Result<(), QueueError> {
    let statement = Statement::new(statement::RETRY).int(to_ms(at)).text(error);
    leased(pool, lease, statement).await
}

/// [`JobStore::snooze`] on `pool`.
pub(super) async fn snooze<D: Backend>(
    pool: &Pool<D>,
    lease: LeaseToken,
    at: DateTime<Utc>,
) -> Result<(), QueueError> {
    let statement = Statement::new(statement::SNOOZE).int(to_ms(at));
    leased(pool, lease, statement).await
}

/// [`JobStore::cancel`] on `pool`.
pub(super) async fn cancel<D: Backend>(
    pool: &Pool<D>,
    lease: LeaseToken,
    reason: CancelReason,
    detail: &str,
    now: DateTime<Utc>,
) -> Result<(), QueueError> {
    let statement = Statement::new(statement::CANCEL)
        .int(to_ms(now))
        .text(reason.as_str())
        .text(detail);
    leased(pool, lease, statement).await
}

/// [`JobStore::discard`] on `pool`.
pub(super) async fn discard<D: Backend>(
    pool: &Pool<D>,
    lease: LeaseToken,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), QueueError> {
    let statement = Statement::new(statement::DISCARD)
        .int(to_ms(now))
        .text(error);
    leased(pool, lease, statement).await
}

/// [`JobStore::cancel_job`] on `pool`.
pub(super) async fn cancel_job<D: Backend>(
    pool: &Pool<D>,
    id: i64,
    reason: CancelReason,
    detail: &str,
    now: DateTime<Utc>,
) -> Result<bool, QueueError> {
    let statement = Statement::new(statement::CANCEL_JOB)
        .int(to_ms(now))
        .text(reason.as_str())
        .text(detail)
        .int(id);
    Ok(D::execute(pool, statement).await? > 0)
}

/// [`JobStore::release`] on `pool`.
pub(super) async fn release<D: Backend>(pool: &Pool<D>, owner: &str) -> Result<u64, QueueError> {
    D::execute(pool, Statement::new(statement::RELEASE).text(owner)).await
}

/// [`JobStore::get`] on `pool`.
pub(super) async fn get<D: Backend>(pool: &Pool<D>, id: i64) -> Result<Option<Job>, QueueError> {
    let jobs = D::fetch_jobs(pool, Statement::new(statement::GET).int(id)).await?;
    Ok(jobs.into_iter().next())
}

/// [`JobStore::list`] on `pool`.
pub(super) async fn list<D: Backend>(
    pool: &Pool<D>,
    state: JobState,
    limit: usize,
) -> Result<Vec<Job>, QueueError> {
    let statement = Statement::new(statement::LIST)
        .text(state.as_str())
        .int(sql_limit(limit));
    D::fetch_jobs(pool, statement).await
}

/// [`JobStore::counts`] on `pool`: every state, 0 where no job is in it.
pub(super) async fn counts<D: Backend>(
    pool: &Pool<D>,
) -> Result<BTreeMap<JobState, u64>, QueueError> {
    let rows = D::fetch_counts(pool, Statement::new(statement::COUNTS)).await?;
    let mut counts: BTreeMap<JobState, u64> = JobState::ALL.into_iter().map(|s| (s, 0)).collect();
    for (state, n) in rows {
        counts.insert(JobState::from_str(&state)?, u64::try_from(n).unwrap_or(0));
    }
    Ok(counts)
}

/// [`JobStore::load_signal`] on `pool`.
pub(super) async fn load_signal<D: Backend>(
    pool: &Pool<D>,
    source: &str,
    id: &str,
) -> Result<Option<Signal>, QueueError> {
    let statement = Statement::new(statement::LOAD_SIGNAL).text(source).text(id);
    D::fetch_body(pool, statement)
        .await?
        .map(|body| signal_from_body(source, id, &body))
        .transpose()
}

/// [`JobStore::delete_signal`] on `pool`.
pub(super) async fn delete_signal<D: Backend>(
    pool: &Pool<D>,
    source: &str,
    id: &str,
) -> Result<bool, QueueError> {
    let statement = Statement::new(statement::DELETE_SIGNAL)
        .text(source)
        .text(id);
    Ok(D::execute(pool, statement).await? > 0)
}

/// What a rescue writes on a job whose lease ran out during `attempt` of `max_attempts`:
/// discarded after the last attempt, otherwise retryable after `backoff(attempt)`. Counts
/// out of range (a corrupt row) discard the job rather than retry it forever.
pub(super) struct Rescued {
    pub(super) state: JobState,
    /// The new `scheduled_at` of a job that is retried (unix milliseconds).
    pub(super) scheduled_at: Option<i64>,
    /// The `finished_at` of a job that is discarded (unix milliseconds).
    pub(super) finished_at: Option<i64>,
    pub(super) error: String,
}

impl Rescued {
    pub(super) fn new(
        attempt: i64,
        max_attempts: i64,
        now: DateTime<Utc>,
        backoff: RescueBackoff<'_>,
    ) -> Self {
        let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
        let max_attempts = u32::try_from(max_attempts).unwrap_or(0);
        let error = super::rescue_error(attempt, max_attempts);
        if attempt >= max_attempts {
            Rescued {
                state: JobState::Discarded,
                scheduled_at: None,
                finished_at: Some(to_ms(now)),
                error,
            }
        } else {
            Rescued {
                state: JobState::Retryable,
                scheduled_at: Some(to_ms(super::after(now, backoff(attempt)))),
                finished_at: None,
                error,
            }
        }
    }
}

/// A `usize` limit to SQL.
pub(super) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Where a new job starts: its state (`scheduled` when due later than `now`, else
/// `available`), its `scheduled_at` and, for a job with a unique key, the end of its
/// uniqueness period (all in unix milliseconds).
pub(super) struct Placement {
    pub(super) state: JobState,
    pub(super) scheduled_at: i64,
    pub(super) unique_until: Option<i64>,
}

impl Placement {
    pub(super) fn new(job: &NewJob, now: DateTime<Utc>) -> Self {
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
        Placement {
            state,
            scheduled_at: to_ms(scheduled_at),
            unique_until,
        }
    }
}

/// A stored signal body back to a signal (a body that does not parse is `Corrupt`).
pub(super) fn signal_from_body(source: &str, id: &str, body: &[u8]) -> Result<Signal, QueueError> {
    Signal::from_json_slice(body).map_err(|e| super::corrupt_signal(source, id, e))
}

/// A `(source, id, body)` row as a keyed, parsed signal.
pub(super) fn keyed_signal(
    source: String,
    id: String,
    body: &[u8],
) -> (SignalKey, Result<Signal, QueueError>) {
    let parsed = signal_from_body(&source, &id, body);
    ((source, id), parsed)
}

/// Counts per `(queue, worker)` from query rows.
pub(super) fn per_worker(
    rows: impl IntoIterator<Item = (String, String, i64)>,
) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for (queue, worker, n) in rows {
        *out.entry((queue, worker)).or_default() += u64::try_from(n).unwrap_or(0);
    }
    out
}

/// A stored row ([`JOB_COLUMNS`]) back to a job; a row that does not hold
/// a valid job is [`QueueError::Corrupt`], naming the job id.
pub(super) fn job_from_row<R>(backend: &'static str, row: &R) -> Result<Job, QueueError>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database>,
    i64: Type<R::Database>,
    for<'r> String: Decode<'r, R::Database>,
    String: Type<R::Database>,
{
    let id: i64 = row.try_get("id").map_err(|e| QueueError::sql(backend, e))?;
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
    let cancel_reason = row
        .try_get::<Option<String>, _>("cancel_reason")
        .map_err(get_err)?
        .map(|r| CancelReason::from_str(&r))
        .transpose()
        .map_err(|e| corrupt(e.to_string()))?;
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
        cancel_reason,
        token: row.try_get("token").map_err(get_err)?,
    })
}

/// The jobs of a claimed batch (rows of [`JOB_COLUMNS`]), in claim order (priority, then
/// `scheduled_at`, then id; `RETURNING` gives rows in no particular order).
///
/// One corrupt row must not strand the rest of the batch: it is cancelled
/// `schema_mismatch` through `store` (no worker can run what it cannot read) and
/// reported; the others run.
pub(super) async fn claimed_jobs<S, R>(
    store: &S,
    backend: &'static str,
    rows: &[R],
    now: DateTime<Utc>,
) -> Result<Vec<Job>, QueueError>
where
    S: JobStore,
    R: Row + Sync,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database>,
    i64: Type<R::Database>,
    for<'r> String: Decode<'r, R::Database>,
    String: Type<R::Database>,
{
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        match job_from_row(backend, row) {
            Ok(job) => jobs.push(job),
            Err(e) => {
                let id: i64 = row.try_get("id").map_err(|e| QueueError::sql(backend, e))?;
                let detail = format!("schema_mismatch: {e}");
                store
                    .cancel_job(id, CancelReason::SchemaMismatch, &detail, now)
                    .await?;
                super::events::queue_corrupt_job(backend, id, &e);
            }
        }
    }
    jobs.sort_by_key(|j| (j.priority, j.scheduled_at, j.id));
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    /// FNV-1a over a migration's statements, each followed by a NUL byte.
    fn fingerprint(statements: &[&str]) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325_u64;
        for statement in statements {
            for byte in statement.bytes().chain([0]) {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash
    }

    /// Databases have applied these migrations: their text never changes (a change is a new
    /// version). The fingerprints are those of the released statements.
    #[test]
    fn migrations_are_unchanged() {
        #[cfg(feature = "sqlite")]
        {
            let sqlite: Vec<(i64, usize, u64)> = super::super::sqlite::MIGRATIONS
                .iter()
                .map(|(v, s)| (*v, s.len(), fingerprint(s)))
                .collect();
            assert_eq!(
                sqlite,
                [
                    (1, 5, 0xc04b_238f_9123_49f0),
                    (2, 1, 0x9bd6_42ae_fbab_5de4),
                    (3, 17, 0xb62f_f0f6_ad24_3cf1),
                    (4, 5, 0x3a9e_ca57_6dd5_e13c)
                ]
            );
        }
        #[cfg(feature = "postgres")]
        {
            let postgres: Vec<(i32, usize, u64)> = super::super::postgres::MIGRATIONS
                .iter()
                .map(|(v, s)| (*v, s.len(), fingerprint(s)))
                .collect();
            assert_eq!(
                postgres,
                [
                    (1, 5, 0xa35d_71a0_0efe_12dc),
                    (2, 1, 0x9bd6_42ae_fbab_5de4),
                    (3, 13, 0x3c82_5b68_f8d2_e427),
                    (4, 5, 0x31df_e363_ec8b_18d3)
                ]
            );
        }
    }
}
