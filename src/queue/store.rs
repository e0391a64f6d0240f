//! The storage contract every queue backend implements.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Job, JobState, NewJob, QueueError};
use crate::Signal;

/// Where a durable queue keeps signals and jobs. Implemented by
/// [`SqliteStore`](super::SqliteStore), `PostgresStore` (feature `postgres`) and
/// [`MemoryStore`](super::MemoryStore).
///
/// Every method is one atomic step: a job and its signal commit together, a claim either
/// takes a job or leaves it, and nothing acknowledged is ever lost.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// The backend's name: `sqlite`, `postgres`, `memory`.
    fn backend(&self) -> &'static str;

    /// Stores `signal` (once, by id; storing it again is a no-op) and inserts `job`, in one
    /// transaction. Returns the job id, or `None` when a live job with the same unique key
    /// exists within its period.
    ///
    /// # Errors
    /// The store is unreachable, read-only or the data is invalid; nothing is stored then.
    async fn enqueue(
        &self,
        signal: Option<&Signal>,
        job: &NewJob,
    ) -> Result<Option<i64>, QueueError>;

    /// Like [`enqueue`](JobStore::enqueue) for many, in one transaction (group commit).
    ///
    /// # Errors
    /// As `enqueue`; nothing is stored then.
    async fn enqueue_many(
        &self,
        items: &[(Option<Arc<Signal>>, NewJob)],
    ) -> Result<Vec<Option<i64>>, QueueError>;

    /// Takes up to `limit` runnable jobs of `queue` (available, or scheduled/retryable whose
    /// time has come), lowest priority number first, then oldest `scheduled_at`, then id;
    /// marks them executing with `attempt + 1`, owned by `owner` until `lease_until`.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn claim(
        &self,
        queue: &str,
        limit: usize,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Job>, QueueError>;

    /// Extends the lease of executing jobs owned by `owner`.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn heartbeat(
        &self,
        ids: &[i64],
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<(), QueueError>;

    /// Marks an executing job completed.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn complete(&self, id: i64, now: DateTime<Utc>) -> Result<(), QueueError>;

    /// Marks several executing jobs completed (one write for many). Default: one by one.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn complete_many(&self, ids: &[i64], now: DateTime<Utc>) -> Result<(), QueueError> {
        for id in ids {
            self.complete(*id, now).await?;
        }
        Ok(())
    }

    /// Marks an executing job retryable at `at`, recording `error`.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn retry(&self, id: i64, at: DateTime<Utc>, error: &str) -> Result<(), QueueError>;

    /// Reschedules an executing job at `at` without spending an attempt.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn snooze(&self, id: i64, at: DateTime<Utc>) -> Result<(), QueueError>;

    /// Marks a job cancelled with `reason`.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn cancel(&self, id: i64, reason: &str, now: DateTime<Utc>) -> Result<(), QueueError>;

    /// Marks a job discarded (out of attempts) with `error`.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn discard(&self, id: i64, error: &str, now: DateTime<Utc>) -> Result<(), QueueError>;

    /// Returns executing jobs whose lease ended before `now` (their runner died) to
    /// `available`, keeping their attempt count; a job that was on its last attempt is
    /// discarded instead, so a job that crashes its runner cannot loop forever. Returns how
    /// many.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn rescue(&self, now: DateTime<Utc>) -> Result<u64, QueueError>;

    /// Puts executing jobs owned by `owner` back to `available` and gives their attempt back
    /// (a runner shutting down releases what it did not finish). Returns how many.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn release(&self, owner: &str, now: DateTime<Utc>) -> Result<u64, QueueError>;

    /// The stored signal with this id.
    ///
    /// # Errors
    /// The store is unreachable, or the row does not hold a valid signal
    /// ([`QueueError::Corrupt`]).
    async fn load_signal(&self, id: &str) -> Result<Option<Signal>, QueueError>;

    /// Several stored signals in one read (the runner prefetches a claimed batch). Ids not
    /// stored are absent from the result; a row that does not parse is an `Err` for that id.
    /// Default: one by one.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn load_signals(
        &self,
        ids: &[&str],
    ) -> Result<Vec<(String, Result<Signal, QueueError>)>, QueueError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.load_signal(id).await {
                Ok(Some(s)) => out.push(((*id).to_owned(), Ok(s))),
                Ok(None) => {}
                Err(e @ QueueError::Corrupt { .. }) => out.push(((*id).to_owned(), Err(e))),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Deletes a stored signal (retention); jobs that still point at it will be cancelled
    /// with `SignalNotFound`. Returns whether it existed.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn delete_signal(&self, id: &str) -> Result<bool, QueueError>;

    /// One job.
    ///
    /// # Errors
    /// The store is unreachable or the row is corrupt.
    async fn get(&self, id: i64) -> Result<Option<Job>, QueueError>;

    /// Jobs in `state`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// The store is unreachable or a row is corrupt.
    async fn list(&self, state: JobState, limit: usize) -> Result<Vec<Job>, QueueError>;

    /// Makes cancelled or discarded jobs available again with a fresh attempt budget.
    /// Returns how many.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn redrive(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64, QueueError>;

    /// Deletes completed jobs finished before `before`. Returns how many.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, QueueError>;

    /// How many jobs are in each state.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn counts(&self) -> Result<BTreeMap<JobState, u64>, QueueError>;

    /// Waits until new jobs may be runnable, or `timeout` passes. Backends with
    /// notifications (PostgreSQL `LISTEN`) return early; the default just sleeps.
    async fn wait_for_jobs(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }
}
