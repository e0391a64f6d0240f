//! A [`MemoryStore`] behind a [`Hook`] that sees every call first: the tests' stores that
//! count, hold or fail calls write only what they do differently.
//!
//! `#[path = "support/hooked_store.rs"] mod hooked_store;` in a test file.

#![allow(dead_code)]

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use signal_bus::{
    queue::{
        CancelReason, Job, JobState, JobStore, LeaseToken, MemoryStore, NewJob, QueueError,
        RescueBackoff, SignalKey,
    },
    Signal,
};

/// What a [`Hooked`] store does before each call reaches its [`MemoryStore`].
#[async_trait]
pub trait Hook: Send + Sync + 'static {
    /// The store's backend name.
    fn backend(&self) -> &'static str;

    /// Runs before `call` (the [`JobStore`] method's name), which carries `jobs` new jobs
    /// (`enqueue`: 1, `enqueue_many`: its items, other calls: 0); an error is returned
    /// instead of calling the store.
    async fn before(&self, call: &'static str, jobs: usize) -> Result<(), QueueError>;
}

/// A [`MemoryStore`] whose calls go through `hook` first.
#[derive(Clone, Default)]
pub struct Hooked<H> {
    pub inner: MemoryStore,
    pub hook: H,
}

impl<H> Hooked<H> {
    pub fn new(hook: H) -> Self {
        Hooked {
            inner: MemoryStore::new(),
            hook,
        }
    }
}

#[async_trait]
impl<H: Hook> JobStore for Hooked<H> {
    fn backend(&self) -> &'static str {
        self.hook.backend()
    }
    async fn enqueue(&self, s: Option<&Signal>, j: &NewJob) -> Result<Option<i64>, QueueError> {
        self.hook.before("enqueue", 1).await?;
        self.inner.enqueue(s, j).await
    }
    async fn enqueue_many(
        &self,
        items: &[(Option<Arc<Signal>>, NewJob)],
    ) -> Result<Vec<Option<i64>>, QueueError> {
        self.hook.before("enqueue_many", items.len()).await?;
        self.inner.enqueue_many(items).await
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
        self.hook.before("claim", 0).await?;
        self.inner
            .claim(queue, workers, limit, owner, now, lease_until)
            .await
    }
    async fn heartbeat(
        &self,
        leases: &[LeaseToken],
        until: DateTime<Utc>,
    ) -> Result<Vec<i64>, QueueError> {
        self.hook.before("heartbeat", 0).await?;
        self.inner.heartbeat(leases, until).await
    }
    async fn complete(&self, lease: LeaseToken, now: DateTime<Utc>) -> Result<(), QueueError> {
        self.hook.before("complete", 0).await?;
        self.inner.complete(lease, now).await
    }
    async fn retry(&self, l: LeaseToken, at: DateTime<Utc>, e: &str) -> Result<(), QueueError> {
        self.hook.before("retry", 0).await?;
        self.inner.retry(l, at, e).await
    }
    async fn snooze(&self, l: LeaseToken, at: DateTime<Utc>) -> Result<(), QueueError> {
        self.hook.before("snooze", 0).await?;
        self.inner.snooze(l, at).await
    }
    async fn cancel(
        &self,
        l: LeaseToken,
        r: CancelReason,
        d: &str,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        self.hook.before("cancel", 0).await?;
        self.inner.cancel(l, r, d, now).await
    }
    async fn cancel_job(
        &self,
        id: i64,
        r: CancelReason,
        d: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, QueueError> {
        self.hook.before("cancel_job", 0).await?;
        self.inner.cancel_job(id, r, d, now).await
    }
    async fn discard(&self, l: LeaseToken, e: &str, now: DateTime<Utc>) -> Result<(), QueueError> {
        self.hook.before("discard", 0).await?;
        self.inner.discard(l, e, now).await
    }
    async fn rescue(&self, now: DateTime<Utc>, b: RescueBackoff<'_>) -> Result<u64, QueueError> {
        self.hook.before("rescue", 0).await?;
        self.inner.rescue(now, b).await
    }
    async fn release(&self, owner: &str, now: DateTime<Utc>) -> Result<u64, QueueError> {
        self.hook.before("release", 0).await?;
        self.inner.release(owner, now).await
    }
    async fn register_workers(
        &self,
        q: &str,
        w: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        self.hook.before("register_workers", 0).await?;
        self.inner.register_workers(q, w, now).await
    }
    async fn unregistered(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<(String, String), u64>, QueueError> {
        self.hook.before("unregistered", 0).await?;
        self.inner.unregistered(since, now).await
    }
    async fn cancel_unregistered(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<(String, String), u64>, QueueError> {
        self.hook.before("cancel_unregistered", 0).await?;
        self.inner.cancel_unregistered(cutoff, now).await
    }
    async fn load_signal(&self, source: &str, id: &str) -> Result<Option<Signal>, QueueError> {
        self.hook.before("load_signal", 0).await?;
        self.inner.load_signal(source, id).await
    }
    async fn load_signals(
        &self,
        keys: &[(&str, &str)],
    ) -> Result<Vec<(SignalKey, Result<Signal, QueueError>)>, QueueError> {
        self.hook.before("load_signals", 0).await?;
        self.inner.load_signals(keys).await
    }
    async fn delete_signal(&self, source: &str, id: &str) -> Result<bool, QueueError> {
        self.hook.before("delete_signal", 0).await?;
        self.inner.delete_signal(source, id).await
    }
    async fn get(&self, id: i64) -> Result<Option<Job>, QueueError> {
        self.hook.before("get", 0).await?;
        self.inner.get(id).await
    }
    async fn list(&self, state: JobState, limit: usize) -> Result<Vec<Job>, QueueError> {
        self.hook.before("list", 0).await?;
        self.inner.list(state, limit).await
    }
    async fn redrive(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64, QueueError> {
        self.hook.before("redrive", 0).await?;
        self.inner.redrive(ids, now).await
    }
    async fn prune(
        &self,
        state: JobState,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, QueueError> {
        self.hook.before("prune", 0).await?;
        self.inner.prune(state, before, limit).await
    }
    async fn prune_signals(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, QueueError> {
        self.hook.before("prune_signals", 0).await?;
        self.inner.prune_signals(before, limit).await
    }
    async fn counts(&self) -> Result<BTreeMap<JobState, u64>, QueueError> {
        self.hook.before("counts", 0).await?;
        self.inner.counts().await
    }
}
