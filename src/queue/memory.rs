//! An in-memory [`JobStore`]: the reference semantics, for tests. Nothing survives the
//! process.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{validate_new_job, Job, JobState, JobStore, NewJob, QueueError};
use crate::Signal;

#[derive(Debug, Clone)]
struct Row {
    job: Job,
    lease_until: Option<DateTime<Utc>>,
    owner: Option<String>,
    unique_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct State {
    signals: HashMap<String, Bytes>,
    jobs: BTreeMap<i64, Row>,
    next_id: i64,
}

/// Jobs and signals in memory (for tests). Cheap to clone; clones share the data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces a stored signal's bytes (for tests of corrupt data).
    pub fn corrupt_signal(&self, id: &str, bytes: &[u8]) {
        self.lock()
            .signals
            .insert(id.to_owned(), Bytes::copy_from_slice(bytes));
    }
}

fn insert(
    state: &mut State,
    signal: Option<&Signal>,
    job: &NewJob,
    now: DateTime<Utc>,
) -> Option<i64> {
    if let Some(s) = signal {
        state
            .signals
            .entry(s.id().to_owned())
            .or_insert_with(|| s.to_json_bytes());
    }
    if let Some(key) = &job.unique_key {
        let live = state.jobs.values().any(|r| {
            r.job.unique_key.as_ref() == Some(key)
                && r.unique_until.is_some_and(|u| u > now)
                && !matches!(r.job.state, JobState::Cancelled | JobState::Discarded)
        });
        if live {
            return None;
        }
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
            },
            lease_until: None,
            owner: None,
            unique_until: job.unique_key.as_ref().map(|_| now + unique_for),
        },
    );
    Some(id)
}

impl MemoryStore {
    fn update(&self, id: i64, f: impl FnOnce(&mut Row)) -> Result<(), QueueError> {
        if let Some(row) = self.lock().jobs.get_mut(&id) {
            f(row);
        }
        Ok(())
    }
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
        limit: usize,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Job>, QueueError> {
        let mut state = self.lock();
        let mut runnable: Vec<&mut Row> = state
            .jobs
            .values_mut()
            .filter(|r| {
                r.job.queue == queue
                    && (r.job.state == JobState::Available
                        || (matches!(r.job.state, JobState::Scheduled | JobState::Retryable)
                            && r.job.scheduled_at <= now))
            })
            .collect();
        runnable.sort_by_key(|r| (r.job.priority, r.job.scheduled_at, r.job.id));
        Ok(runnable
            .into_iter()
            .take(limit)
            .map(|r| {
                r.job.state = JobState::Executing;
                r.job.attempt += 1;
                r.job.attempted_at = Some(now);
                r.lease_until = Some(lease_until);
                r.owner = Some(owner.to_owned());
                r.job.clone()
            })
            .collect())
    }

    async fn heartbeat(
        &self,
        ids: &[i64],
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        for id in ids {
            if let Some(r) = state.jobs.get_mut(id) {
                if r.job.state == JobState::Executing && r.owner.as_deref() == Some(owner) {
                    r.lease_until = Some(lease_until);
                }
            }
        }
        Ok(())
    }

    async fn complete(&self, id: i64, now: DateTime<Utc>) -> Result<(), QueueError> {
        self.update(id, |r| {
            r.job.state = JobState::Completed;
            r.job.finished_at = Some(now);
            r.owner = None;
            r.lease_until = None;
        })
    }

    async fn retry(&self, id: i64, at: DateTime<Utc>, error: &str) -> Result<(), QueueError> {
        self.update(id, |r| {
            r.job.state = JobState::Retryable;
            r.job.scheduled_at = at;
            r.job.last_error = Some(error.to_owned());
            r.owner = None;
            r.lease_until = None;
        })
    }

    async fn snooze(&self, id: i64, at: DateTime<Utc>) -> Result<(), QueueError> {
        self.update(id, |r| {
            r.job.state = JobState::Scheduled;
            r.job.scheduled_at = at;
            r.job.attempt = r.job.attempt.saturating_sub(1);
            r.owner = None;
            r.lease_until = None;
        })
    }

    async fn cancel(&self, id: i64, reason: &str, now: DateTime<Utc>) -> Result<(), QueueError> {
        self.update(id, |r| {
            r.job.state = JobState::Cancelled;
            r.job.finished_at = Some(now);
            r.job.last_error = Some(reason.to_owned());
            r.owner = None;
            r.lease_until = None;
        })
    }

    async fn discard(&self, id: i64, error: &str, now: DateTime<Utc>) -> Result<(), QueueError> {
        self.update(id, |r| {
            r.job.state = JobState::Discarded;
            r.job.finished_at = Some(now);
            r.job.last_error = Some(error.to_owned());
            r.owner = None;
            r.lease_until = None;
        })
    }

    async fn rescue(&self, now: DateTime<Utc>) -> Result<u64, QueueError> {
        let mut n = 0;
        for r in self.lock().jobs.values_mut() {
            if r.job.state == JobState::Executing && r.lease_until.is_some_and(|l| l < now) {
                if r.job.attempt >= r.job.max_attempts {
                    r.job.state = JobState::Discarded;
                    r.job.finished_at = Some(now);
                    r.job.last_error =
                        Some("discarded: its runner stopped during the last attempt".to_owned());
                } else {
                    r.job.state = JobState::Available;
                }
                r.owner = None;
                r.lease_until = None;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn release(&self, owner: &str, _now: DateTime<Utc>) -> Result<u64, QueueError> {
        let mut n = 0;
        for r in self.lock().jobs.values_mut() {
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

    async fn load_signal(&self, id: &str) -> Result<Option<Signal>, QueueError> {
        let bytes = self.lock().signals.get(id).cloned();
        match bytes {
            None => Ok(None),
            Some(b) => Signal::from_json_slice(&b)
                .map(Some)
                .map_err(|e| QueueError::Corrupt {
                    what: format!("signal `{id}` does not parse: {e}"),
                }),
        }
    }

    async fn delete_signal(&self, id: &str) -> Result<bool, QueueError> {
        Ok(self.lock().signals.remove(id).is_some())
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
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, QueueError> {
        let mut state = self.lock();
        let old: Vec<i64> = state
            .jobs
            .values()
            .filter(|r| {
                r.job.state == JobState::Completed && r.job.finished_at.is_some_and(|f| f < before)
            })
            .map(|r| r.job.id)
            .collect();
        for id in &old {
            state.jobs.remove(id);
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
