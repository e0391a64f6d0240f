//! An in-memory [`JobStore`]: the reference semantics, for tests. Nothing survives the
//! process.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{
    store::{RescueBackoff, SignalKey},
    validate_new_job, CancelReason, Job, JobState, JobStore, LeaseToken, NewJob, QueueError,
};
use crate::Signal;

#[derive(Debug, Clone)]
struct Row {
    job: Job,
    lease_until: Option<DateTime<Utc>>,
    owner: Option<String>,
    unique_until: Option<DateTime<Utc>>,
    /// The stored signal this job refers to.
    signal: Option<SignalKey>,
}

impl Row {
    fn is_runnable(&self, now: DateTime<Utc>) -> bool {
        self.job.state == JobState::Available
            || (matches!(self.job.state, JobState::Scheduled | JobState::Retryable)
                && self.job.scheduled_at <= now)
    }

    fn holds(&self, lease: LeaseToken) -> bool {
        self.job.state == JobState::Executing && self.job.token == lease.token
    }

    fn finish(&mut self, state: JobState, now: DateTime<Utc>, error: Option<&str>) {
        self.job.state = state;
        self.job.finished_at = Some(now);
        if let Some(e) = error {
            self.job.last_error = Some(e.to_owned());
        }
        self.owner = None;
        self.lease_until = None;
    }
}

#[derive(Debug, Default)]
struct State {
    /// Signal bodies and when they were last stored.
    signals: HashMap<SignalKey, (Bytes, DateTime<Utc>)>,
    jobs: BTreeMap<i64, Row>,
    /// `(queue, worker)` -> when a process last said it runs them.
    registry: HashMap<(String, String), DateTime<Utc>>,
    next_id: i64,
}

/// Jobs and signals in memory (for tests). Cheap to clone; clones share the data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    /// The journal's state (`crate::journal`), created on first use; shared by clones.
    journal: Arc<std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The journal's state in this store: `T::default()` on first use.
    pub(crate) fn journal_state<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let any = Arc::clone(
            self.journal
                .get_or_init(|| Arc::new(T::default()) as Arc<dyn std::any::Any + Send + Sync>),
        );
        any.downcast::<T>()
            .unwrap_or_else(|_| unreachable!("one journal state type per store"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces a stored signal's bytes (for tests of corrupt data).
    pub fn corrupt_signal(&self, source: &str, id: &str, bytes: &[u8]) {
        self.lock().signals.insert(
            (source.to_owned(), id.to_owned()),
            (Bytes::copy_from_slice(bytes), Utc::now()),
        );
    }

    /// Applies `f` to the job when `lease` still holds it.
    fn with_lease(&self, lease: LeaseToken, f: impl FnOnce(&mut Row)) -> Result<(), QueueError> {
        let mut state = self.lock();
        match state.jobs.get_mut(&lease.job) {
            Some(row) if row.holds(lease) => {
                f(row);
                Ok(())
            }
            _ => Err(QueueError::LeaseLost { job: lease.job }),
        }
    }
}

fn insert(
    state: &mut State,
    signal: Option<&Signal>,
    job: &NewJob,
    now: DateTime<Utc>,
) -> Option<i64> {
    if let Some(unique) = &job.unique_key {
        let live = state.jobs.values().any(|r| {
            r.job.unique_key.as_ref() == Some(unique)
                && r.unique_until.is_some_and(|u| u > now)
                && !matches!(r.job.state, JobState::Cancelled | JobState::Discarded)
        });
        if live {
            // Nothing is stored for a job that is not inserted.
            return None;
        }
    }
    let key = signal.map(|s| (s.source().to_owned(), s.id().to_owned()));
    if let (Some(s), Some(key)) = (signal, &key) {
        // Stored once; storing it again keeps the first body and renews its age.
        state
            .signals
            .entry(key.clone())
            .and_modify(|(_, at)| *at = now)
            .or_insert_with(|| (s.to_json_bytes(), now));
    }
    state.next_id += 1;
    let id = state.next_id;
    let scheduled_at = job.scheduled_at.unwrap_or(now);
    let unique_for = chrono::Duration::from_std(job.unique_for).unwrap_or_default();
    state.jobs.insert(
        id,
        Row {
            job: Job {
                id,
                queue: job.queue.clone(),
                worker: job.worker.clone(),
                args: job.args.clone(),
                state: if scheduled_at > now {
                    JobState::Scheduled
                } else {
                    JobState::Available
                },
                attempt: 0,
                max_attempts: job.max_attempts,
                priority: job.priority,
                inserted_at: now,
                scheduled_at,
                attempted_at: None,
                finished_at: None,
                unique_key: job.unique_key.clone(),
                last_error: None,
                cancel_reason: None,
                token: 0,
            },
            lease_until: None,
            owner: None,
            unique_until: job.unique_key.as_ref().map(|_| now + unique_for),
            signal: key,
        },
    );
    Some(id)
}

/// Runnable jobs whose `(queue, worker)` was not registered since `seen_since`.
fn unregistered_rows(state: &State, seen_since: DateTime<Utc>, due_by: DateTime<Utc>) -> Vec<i64> {
    state
        .jobs
        .values()
        .filter(|r| r.is_runnable(due_by) && r.job.scheduled_at <= due_by)
        .filter(|r| {
            state
                .registry
                .get(&(r.job.queue.clone(), r.job.worker.clone()))
                .is_none_or(|at| *at < seen_since)
        })
        .map(|r| r.job.id)
        .collect()
}

#[async_trait]
impl JobStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn enqueue(
        &self,
        signal: Option<&Signal>,
        job: &NewJob,
    ) -> Result<Option<i64>, QueueError> {
        validate_new_job(job)?;
        Ok(insert(&mut self.lock(), signal, job, Utc::now()))
    }

    async fn enqueue_many(
        &self,
        items: &[(Option<Arc<Signal>>, NewJob)],
    ) -> Result<Vec<Option<i64>>, QueueError> {
        for (_, job) in items {
            validate_new_job(job)?;
        }
        let now = Utc::now();
        let mut state = self.lock();
        Ok(items
            .iter()
            .map(|(s, j)| insert(&mut state, s.as_deref(), j, now))
            .collect())
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
        let mut state = self.lock();
        let mut runnable: Vec<&mut Row> = state
            .jobs
            .values_mut()
            .filter(|r| r.job.queue == queue && r.is_runnable(now))
            .filter(|r| workers.contains(&r.job.worker))
            .collect();
        runnable.sort_by_key(|r| (r.job.priority, r.job.scheduled_at, r.job.id));
        Ok(runnable
            .into_iter()
            .take(limit)
            .map(|r| {
                r.job.state = JobState::Executing;
                r.job.attempt += 1;
                r.job.token += 1;
                r.job.attempted_at = Some(now);
                r.lease_until = Some(lease_until);
                r.owner = Some(owner.to_owned());
                r.job.clone()
            })
            .collect())
    }

    async fn heartbeat(
        &self,
        leases: &[LeaseToken],
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<i64>, QueueError> {
        let mut state = self.lock();
        let mut lost = Vec::new();
        for lease in leases {
            match state.jobs.get_mut(&lease.job) {
                Some(r) if r.holds(*lease) => r.lease_until = Some(lease_until),
                _ => lost.push(lease.job),
            }
        }
        Ok(lost)
    }

    async fn complete(&self, lease: LeaseToken, now: DateTime<Utc>) -> Result<(), QueueError> {
        self.with_lease(lease, |r| r.finish(JobState::Completed, now, None))
    }

    async fn retry(
        &self,
        lease: LeaseToken,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), QueueError> {
        self.with_lease(lease, |r| {
            r.job.state = JobState::Retryable;
            r.job.scheduled_at = at;
            r.job.last_error = Some(error.to_owned());
            r.owner = None;
            r.lease_until = None;
        })
    }

    async fn snooze(&self, lease: LeaseToken, at: DateTime<Utc>) -> Result<(), QueueError> {
        self.with_lease(lease, |r| {
            r.job.state = JobState::Scheduled;
            r.job.scheduled_at = at;
            r.job.attempt = r.job.attempt.saturating_sub(1);
            r.owner = None;
            r.lease_until = None;
        })
    }

    async fn cancel(
        &self,
        lease: LeaseToken,
        reason: CancelReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        self.with_lease(lease, |r| {
            r.finish(JobState::Cancelled, now, Some(detail));
            r.job.cancel_reason = Some(reason);
        })
    }

    async fn cancel_job(
        &self,
        id: i64,
        reason: CancelReason,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, QueueError> {
        let mut state = self.lock();
        match state.jobs.get_mut(&id) {
            Some(r) if !r.job.state.is_final() => {
                r.finish(JobState::Cancelled, now, Some(detail));
                r.job.cancel_reason = Some(reason);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn discard(
        &self,
        lease: LeaseToken,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        self.with_lease(lease, |r| r.finish(JobState::Discarded, now, Some(error)))
    }

    async fn rescue(
        &self,
        now: DateTime<Utc>,
        backoff: RescueBackoff<'_>,
    ) -> Result<u64, QueueError> {
        let mut state = self.lock();
        let mut n = 0;
        for r in state.jobs.values_mut() {
            if r.job.state == JobState::Executing && r.lease_until.is_some_and(|l| l < now) {
                let error = super::rescue_error(r.job.attempt, r.job.max_attempts);
                if r.job.attempt >= r.job.max_attempts {
                    r.finish(JobState::Discarded, now, Some(&error));
                } else {
                    r.job.state = JobState::Retryable;
                    r.job.scheduled_at = super::after(now, backoff(r.job.attempt));
                    r.job.last_error = Some(error);
                    r.owner = None;
                    r.lease_until = None;
                }
                n += 1;
            }
        }
        Ok(n)
    }

    async fn release(&self, owner: &str, _now: DateTime<Utc>) -> Result<u64, QueueError> {
        let mut state = self.lock();
        let mut n = 0;
        for r in state.jobs.values_mut() {
            if r.job.state == JobState::Executing && r.owner.as_deref() == Some(owner) {
                r.job.state = JobState::Available;
                r.job.attempt = r.job.attempt.saturating_sub(1);
                r.owner = None;
                r.lease_until = None;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn register_workers(
        &self,
        queue: &str,
        workers: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        for w in workers {
            let at = state
                .registry
                .entry((queue.to_owned(), w.clone()))
                .or_insert(now);
            *at = (*at).max(now);
        }
        Ok(())
    }

    async fn unregistered(
        &self,
        seen_since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<(String, String), u64>, QueueError> {
        let state = self.lock();
        let mut out = BTreeMap::new();
        for id in unregistered_rows(&state, seen_since, now) {
            let job = &state.jobs[&id].job;
            *out.entry((job.queue.clone(), job.worker.clone()))
                .or_default() += 1;
        }
        Ok(out)
    }

    async fn cancel_unregistered(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<(String, String), u64>, QueueError> {
        let mut state = self.lock();
        let mut out = BTreeMap::new();
        for id in unregistered_rows(&state, cutoff, cutoff) {
            let Some(r) = state.jobs.get_mut(&id) else {
                continue;
            };
            let (reason, detail) = super::unregistered_reason(&r.job.worker);
            r.finish(JobState::Cancelled, now, Some(&detail));
            r.job.cancel_reason = Some(reason);
            *out.entry((r.job.queue.clone(), r.job.worker.clone()))
                .or_default() += 1;
        }
        Ok(out)
    }

    async fn load_signal(&self, source: &str, id: &str) -> Result<Option<Signal>, QueueError> {
        let bytes = self
            .lock()
            .signals
            .get(&(source.to_owned(), id.to_owned()))
            .map(|(b, _)| b.clone());
        match bytes {
            None => Ok(None),
            Some(b) => Signal::from_json_slice(&b)
                .map(Some)
                .map_err(|e| super::corrupt_signal(source, id, e)),
        }
    }

    async fn delete_signal(&self, source: &str, id: &str) -> Result<bool, QueueError> {
        Ok(self
            .lock()
            .signals
            .remove(&(source.to_owned(), id.to_owned()))
            .is_some())
    }

    async fn get(&self, id: i64) -> Result<Option<Job>, QueueError> {
        Ok(self.lock().jobs.get(&id).map(|r| r.job.clone()))
    }

    async fn list(&self, state: JobState, limit: usize) -> Result<Vec<Job>, QueueError> {
        Ok(self
            .lock()
            .jobs
            .values()
            .filter(|r| r.job.state == state)
            .take(limit)
            .map(|r| r.job.clone())
            .collect())
    }

    async fn redrive(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64, QueueError> {
        let mut n = 0;
        let mut state = self.lock();
        for id in ids {
            if let Some(r) = state.jobs.get_mut(id) {
                if matches!(r.job.state, JobState::Cancelled | JobState::Discarded) {
                    r.job.state = JobState::Available;
                    r.job.attempt = 0;
                    r.job.scheduled_at = now;
                    r.job.finished_at = None;
                    r.job.cancel_reason = None;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    async fn prune(
        &self,
        job_state: JobState,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, QueueError> {
        if !job_state.is_final() {
            return Ok(0);
        }
        let mut state = self.lock();
        let old: Vec<i64> = state
            .jobs
            .values()
            .filter(|r| r.job.state == job_state && r.job.finished_at.is_some_and(|f| f < before))
            .map(|r| r.job.id)
            .take(limit)
            .collect();
        for id in &old {
            state.jobs.remove(id);
        }
        Ok(old.len() as u64)
    }

    async fn prune_signals(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, QueueError> {
        let mut state = self.lock();
        let referenced: std::collections::HashSet<&SignalKey> = state
            .jobs
            .values()
            .filter_map(|r| r.signal.as_ref())
            .collect();
        let old: Vec<SignalKey> = state
            .signals
            .iter()
            .filter(|(k, (_, at))| *at < before && !referenced.contains(k))
            .map(|(k, _)| k.clone())
            .take(limit)
            .collect();
        for k in &old {
            state.signals.remove(k);
        }
        Ok(old.len() as u64)
    }

    async fn counts(&self) -> Result<BTreeMap<JobState, u64>, QueueError> {
        let mut counts: BTreeMap<JobState, u64> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        for r in self.lock().jobs.values() {
            *counts.entry(r.job.state).or_default() += 1;
        }
        Ok(counts)
    }
}
