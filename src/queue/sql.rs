//! What the two SQL stores ([`SqliteStore`](super::SqliteStore) and `PostgresStore`) share:
//! the pure parts around their SQL. Each store keeps its own dialect (statements, binds,
//! locking, notifications, migrations); the row decoding and validation, the placement of
//! a new job, the claimed-batch handling and the small conversions live here, once.

use std::{collections::BTreeMap, str::FromStr};

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{
    from_ms, store::SignalKey, to_ms, CancelReason, Job, JobState, JobStore, NewJob, QueueError,
};
use crate::Signal;

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

/// A stored row back to a job; a row that does not hold a valid job is
/// [`QueueError::Corrupt`], naming the job id. `int` reads the integer columns `attempt`,
/// `max_attempts` and `priority`, whose SQL types differ between the backends.
pub(super) fn job_from_row<R>(
    backend: &'static str,
    row: &R,
    int: impl Fn(&R, &str) -> Result<i64, sqlx::Error>,
) -> Result<Job, QueueError>
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
    let attempt = int(row, "attempt").map_err(get_err)?;
    let max_attempts = int(row, "max_attempts").map_err(get_err)?;
    let priority = int(row, "priority").map_err(get_err)?;
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

/// The jobs of a claimed batch (`rows` as `read` decodes them), in claim order (priority,
/// then `scheduled_at`, then id; `RETURNING` gives rows in no particular order).
///
/// One corrupt row must not strand the rest of the batch: it is cancelled
/// `schema_mismatch` through `store` (no worker can run what it cannot read) and
/// reported; the others run.
pub(super) async fn claimed_jobs<S, R>(
    store: &S,
    backend: &'static str,
    rows: &[R],
    now: DateTime<Utc>,
    read: impl Fn(&R) -> Result<Job, QueueError> + Send + Sync,
) -> Result<Vec<Job>, QueueError>
where
    S: JobStore,
    R: Row + Sync,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database>,
    i64: Type<R::Database>,
{
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        match read(row) {
            Ok(job) => jobs.push(job),
            Err(e) => {
                let id: i64 = row.try_get("id").map_err(|e| QueueError::sql(backend, e))?;
                let detail = format!("schema_mismatch: {e}");
                store
                    .cancel_job(id, CancelReason::SchemaMismatch, &detail, now)
                    .await?;
                crate::telemetry::queue_corrupt_job(backend, id, &e);
            }
        }
    }
    jobs.sort_by_key(|j| (j.priority, j.scheduled_at, j.id));
    Ok(jobs)
}
