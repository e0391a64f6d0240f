//! The storage contract every queue backend implements.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{CancelReason, Job, JobState, LeaseToken, NewJob, QueueError};
use crate::Signal;

/// A stored signal's key: CloudEvents makes `(source, id)` unique, so the store does too.
pub type SignalKey = (String, String);

/// How a rescue schedules a job whose runner died: the delay after failed attempt `n`.
pub type RescueBackoff<'a> = &'a (dyn Fn(u32) -> Duration + Send + Sync);

/// Where a durable queue keeps signals and jobs. Implemented by
/// [`SqliteStore`](super::SqliteStore), `PostgresStore` (feature `postgres`) and
/// [`MemoryStore`](super::MemoryStore). The runner is written against this trait only, and
/// one conformance suite (`tests/support/queue_suite.rs`) holds every backend to it.
///
/// Every method is one atomic step: a job and its signal commit together, a claim either
/// takes a job or leaves it, and nothing acknowledged is ever lost.
///
/// # Leases
/// A claim writes a new token on each job it takes ([`Job::token`]). Every state change
/// after a claim presents the job's [`LeaseToken`] and is refused with
/// [`QueueError::LeaseLost`] when the job is no longer executing under that token (its
/// lease ran out and it was rescued, it was released, cancelled by hand or claimed again).
///
/// # Implementing it, and how it grows
/// The trait is open (not sealed): a backend of your own, or a wrapper around one of ours
/// (fault injection, metrics, tracing), is a supported use. It is a required core, the
/// methods without a body, plus default methods written against that core:
/// [`complete_many`](JobStore::complete_many) and
/// [`load_signals`](JobStore::load_signals) (one by one) and
/// [`wait_for_jobs`](JobStore::wait_for_jobs) (a sleep), which a backend overrides when it
/// can do better. A method added in a later release comes with a default built on the
/// core the same way, so an implementation outside this crate keeps compiling; the
/// required core only changes in a breaking release.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// The backend's name: `sqlite`, `postgres`, `memory`.
    fn backend(&self) -> &'static str;

    /// Stores `signal` (once per `(source, id)`: storing it again keeps the first body and
    /// renews its `stored_at`, which is what keeps [`prune_signals`](JobStore::prune_signals)
    /// from deleting a signal an enqueue is referring to again) and inserts `job`, in one
    /// transaction; the job refers to the signal, which retention keeps as long as any job
    /// does. Returns the job id, or `None` when a live job with the same
    /// unique key exists within its period.
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

    /// Takes up to `limit` runnable jobs of `queue` whose worker is one of `workers`
    /// (available, or scheduled/retryable whose time has come), lowest priority number
    /// first, then oldest `scheduled_at`, then id; marks them executing with `attempt + 1`
    /// and a new token, owned by `owner` until `lease_until`. Jobs of other workers are left
    /// for a process that runs them; an empty `workers` claims nothing.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn claim(
        &self,
        queue: &str,
        workers: &[String],
        limit: usize,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Job>, QueueError>;

    /// Extends the leases of executing jobs still held under these tokens. Returns the ids
    /// whose lease is no longer held (the runner should give up on them).
    ///
    /// # Errors
    /// The store is unreachable.
    async fn heartbeat(
        &self,
        leases: &[LeaseToken],
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<i64>, QueueError>;

    /// Marks an executing job completed.
    ///
    /// # Errors
    /// [`QueueError::LeaseLost`] when the lease is no longer held; the store is unreachable.
    async fn complete(&self, lease: LeaseToken, now: DateTime<Utc>) -> Result<(), QueueError>;

    /// Marks several executing jobs completed (one write for many). Returns the ids whose
    /// lease was no longer held (those were not changed). Default: one by one.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn complete_many(
        &self,
        leases: &[LeaseToken],
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, QueueError> {
        let mut lost = Vec::new();
        for lease in leases {
            match self.complete(*lease, now).await {
                Ok(()) => {}
                Err(QueueError::LeaseLost { job }) => lost.push(job),
                Err(e) => return Err(e),
            }
        }
        Ok(lost)
    }

    /// Marks an executing job retryable at `at`, recording `error`.
    ///
    /// # Errors
    /// [`QueueError::LeaseLost`]; the store is unreachable.
    async fn retry(
        &self,
        lease: LeaseToken,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), QueueError>;

    /// Reschedules an executing job at `at` without spending an attempt.
    ///
    /// # Errors
    /// [`QueueError::LeaseLost`]; the store is unreachable.
    async fn snooze(&self, lease: LeaseToken, at: DateTime<Utc>) -> Result<(), QueueError>;

    /// Marks an executing job cancelled for `reason`, recording `detail`.
    ///
    /// # Errors
    /// [`QueueError::LeaseLost`]; the store is unreachable.
    async fn cancel(
        &self,
        lease: LeaseToken,
        reason: CancelReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError>;

    /// Cancels a job that is not finished yet, whoever holds it (by hand: an executing job's
    /// runner then finds its lease lost). Returns whether it was cancelled.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn cancel_job(
        &self,
        id: i64,
        reason: CancelReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, QueueError>;

    /// Marks an executing job discarded (out of attempts) with `error`.
    ///
    /// # Errors
    /// [`QueueError::LeaseLost`]; the store is unreachable.
    async fn discard(
        &self,
        lease: LeaseToken,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError>;

    /// Takes back executing jobs whose lease ended before `now` (their runner died): each
    /// is treated as a failed attempt, retryable after `backoff(attempt)` (behind fresh
    /// work) with an error saying its runner stopped, or discarded when that was its last
    /// attempt. Returns how many.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn rescue(
        &self,
        now: DateTime<Utc>,
        backoff: RescueBackoff<'_>,
    ) -> Result<u64, QueueError>;

    /// Puts executing jobs owned by `owner` back to `available` and gives their attempt back
    /// (a runner shutting down releases what it did not finish). Returns how many.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn release(&self, owner: &str, now: DateTime<Utc>) -> Result<u64, QueueError>;

    /// Records that a process runs `workers` for `queue` now (the registry that tells a
    /// job waiting for another process from a job nobody can run).
    ///
    /// # Errors
    /// The store is unreachable.
    async fn register_workers(
        &self,
        queue: &str,
        workers: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), QueueError>;

    /// Runnable jobs (due by `now`) whose `(queue, worker)` no process registered since
    /// `seen_since`, counted per queue and worker.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn unregistered(
        &self,
        seen_since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<(String, String), u64>, QueueError>;

    /// Cancels runnable jobs that have been due since before `cutoff` and whose
    /// `(queue, worker)` no process registered since `cutoff`: `unknown_forwarder` for
    /// forwarder jobs, `unknown_worker` for others. Returns how many, per queue and worker.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn cancel_unregistered(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<(String, String), u64>, QueueError>;

    /// The stored signal with this `(source, id)`.
    ///
    /// # Errors
    /// The store is unreachable, or the row does not hold a valid signal
    /// ([`QueueError::Corrupt`]).
    async fn load_signal(&self, source: &str, id: &str) -> Result<Option<Signal>, QueueError>;

    /// Several stored signals in one read (the runner prefetches a claimed batch). Keys not
    /// stored are absent from the result; a row that does not parse is an `Err` for that
    /// key. Default: one by one.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn load_signals(
        &self,
        keys: &[(&str, &str)],
    ) -> Result<Vec<(SignalKey, Result<Signal, QueueError>)>, QueueError> {
        let mut out = Vec::with_capacity(keys.len());
        for (source, id) in keys {
            let key = ((*source).to_owned(), (*id).to_owned());
            match self.load_signal(source, id).await {
                Ok(Some(s)) => out.push((key, Ok(s))),
                Ok(None) => {}
                Err(e @ QueueError::Corrupt { .. }) => out.push((key, Err(e))),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Deletes a stored signal by hand; jobs that still point at it will be cancelled with
    /// `signal_not_found`. Returns whether it existed.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn delete_signal(&self, source: &str, id: &str) -> Result<bool, QueueError>;

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

    /// Deletes up to `limit` jobs in the final `state` (completed, cancelled or discarded)
    /// that finished before `before`. Returns how many. A state that is not final deletes
    /// nothing.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn prune(
        &self,
        state: JobState,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, QueueError>;

    /// Deletes up to `limit` stored signals that were stored (or stored again) before
    /// `before` and that no job refers to. Returns how many. `before` must leave a margin
    /// behind the running enqueues (the queue uses now minus
    /// [`Retention::signal_margin`](super::Retention::signal_margin)): an enqueue that stores
    /// a signal again may commit its job where a concurrent prune cannot see it.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn prune_signals(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, QueueError>;

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
