//! [`Queue`]: a store plus the workers and forwarders registered on it, and the [`Runner`]
//! that claims and runs its jobs.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use chrono::Utc;
use futures_util::FutureExt as _;
use tokio::{sync::Notify, task::JoinSet};

use super::{
    forwarder::ForwarderJob,
    store::SignalKey,
    worker::{tenant_scope, WorkOutcome, Worker},
    CancelReason, Job, JobState, JobStore, LeaseToken, NewJob, PruneReport, QueueError, Retention,
};
use crate::{policy::RetryPolicy, DeliveryError};

/// How long a claimed job is leased before another runner may rescue it. Default: 60 s.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// How often an idle runner polls the store (it is also woken by local enqueues and, on
/// PostgreSQL, by `NOTIFY`). Default: 1 s.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Jobs run at once per queue. Default: 10.
pub const DEFAULT_CONCURRENCY: usize = 10;

/// How long to wait before retrying a failed job, by attempt number (1-based).
#[derive(Clone)]
#[non_exhaustive]
pub enum JobBackoff {
    /// `attempt^4 + 15 + rand(1..=10) * attempt` seconds (Oban's and Sigra's curve).
    Sigra,
    /// A retry policy's delays (its attempt count is ignored: jobs have `max_attempts`).
    Policy(RetryPolicy),
}

impl fmt::Debug for JobBackoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobBackoff::Sigra => f.write_str("Sigra"),
            JobBackoff::Policy(p) => f.debug_tuple("Policy").field(p).finish(),
        }
    }
}

impl JobBackoff {
    /// The delay after failed attempt `attempt`.
    pub fn delay(&self, attempt: u32) -> Duration {
        match self {
            JobBackoff::Sigra => {
                let r = 1 + (rand_u64() % 10) as u32;
                RetryPolicy::sigra_backoff(attempt, r)
            }
            JobBackoff::Policy(p) => {
                let mut b = p
                    .clone()
                    .max_attempts(attempt.saturating_add(1).max(2))
                    .backoff();
                let mut d = Duration::ZERO;
                for _ in 0..attempt.max(1) {
                    match b.next() {
                        Some(x) => d = x,
                        None => break,
                    }
                }
                d
            }
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish()
}

/// How long jobs may wait for a worker or forwarder name that no process registers before
/// they are cancelled (`unknown_forwarder` / `unknown_worker`). Default: 1 hour.
pub const DEFAULT_UNKNOWN_AFTER: Duration = Duration::from_secs(3600);
/// How often a runner deletes what [`Retention`] lets go. Default: 1 minute.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Most jobs (or signals) one prune round deletes per state: keeps each write short.
const PRUNE_LIMIT: usize = 10_000;
/// How often a runner tells the store which names it runs, at most.
const MAX_REGISTRY_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Settings {
    queues: Vec<(String, usize)>,
    lease: Duration,
    poll_interval: Duration,
    backoff: JobBackoff,
    unknown_after: Duration,
    retention: Retention,
    prune_interval: Duration,
}

impl Settings {
    /// How often the runner refreshes its names in the store's registry: well inside the
    /// grace period, so a live process is never mistaken for a missing one.
    fn registry_interval(&self) -> Duration {
        (self.unknown_after / 4)
            .min(MAX_REGISTRY_INTERVAL)
            .max(Duration::from_millis(10))
    }
    /// A name registered within this window counts as registered now.
    fn registered_window(&self) -> Duration {
        (self.registry_interval() * 3).min(self.unknown_after)
    }
}

/// One enqueue waiting for the group committer.
struct Pending {
    signal: Option<Arc<crate::Signal>>,
    job: NewJob,
    reply: tokio::sync::oneshot::Sender<Result<Option<i64>, QueueError>>,
}

/// Most enqueues committed in one transaction.
const MAX_GROUP: usize = 1024;

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn JobStore>,
    /// Group commit: concurrent enqueues wait here and share one transaction.
    committer: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Pending>>,
    settings: Settings,
    workers: RwLock<HashMap<String, Arc<dyn Worker>>>,
    pub(crate) forwarders: RwLock<HashMap<String, Arc<ForwarderJob>>>,
    /// Bumped whenever a worker or forwarder is registered, removed, paused or resumed:
    /// runners rebuild their claim filter when it changes.
    pub(crate) generation: AtomicU64,
    running: AtomicUsize,
    pub(crate) wake: Notify,
    /// The last job counts per state, refreshed by runners (about every second) and by
    /// `counts()`; read by `Bus::metrics`.
    last_counts: Mutex<Option<BTreeMap<JobState, u64>>>,
    /// The last look at jobs waiting for a name no process registered.
    last_unregistered: Mutex<Option<BTreeMap<(String, String), u64>>>,
}

/// A durable job queue: a [`JobStore`] plus the workers and forwarders that run its jobs.
/// Cheap to clone.
///
/// A runner claims only the jobs whose worker or forwarder is registered in its own
/// process; the others wait for a process that has it. So [`start`](Queue::start) and
/// `bus.subscribe(.., Forwarder::new(..))` may come in either order, and services with
/// different forwarders can share one queue. Jobs for a name that no process registers for
/// [`unknown_after`](QueueBuilder::unknown_after) (default 1 h) are cancelled as
/// `unknown_forwarder` or `unknown_worker`, with a warning naming it.
///
/// A generic job: a [`Worker`] registered under a name, and a job for it. (A `Forwarder`
/// subscribed on a bus built with `.queue(queue.clone())` enqueues its own jobs.)
///
/// ```
/// use serde_json::json;
/// use signal_bus::queue::{Job, NewJob, Queue, SqliteStore, WorkOutcome, Worker};
/// use tokio::sync::mpsc;
///
/// struct WelcomeEmail(mpsc::UnboundedSender<String>);
///
/// #[async_trait::async_trait]
/// impl Worker for WelcomeEmail {
///     async fn perform(&self, job: &Job) -> WorkOutcome {
///         match job.args["to"].as_str() {
///             Some(to) => {
///                 let _ = self.0.send(to.to_owned()); // send the email here
///                 WorkOutcome::Ok
///             }
///             None => WorkOutcome::Cancel(format!("job {} has no `to`", job.id)),
///         }
///     }
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     // `SqliteStore::open("jobs.db")` for a file that outlives the process.
///     let queue = Queue::new(SqliteStore::in_memory().await?);
///     let (sent, mut outbox) = mpsc::unbounded_channel();
///     queue.register_worker("welcome_email", WelcomeEmail(sent));
///     let runner = queue.start()?; // claims and runs jobs
///     queue
///         .enqueue(NewJob::new("welcome_email", json!({ "to": "ada@example.com" })))
///         .await?;
///     assert_eq!(outbox.recv().await.as_deref(), Some("ada@example.com"));
///     runner.shutdown().await; // stops claiming, finishes or releases what it holds
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Queue {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("backend", &self.inner.store.backend())
            .field("settings", &self.inner.settings)
            .field("running", &self.is_running())
            .finish()
    }
}

/// Builds a [`Queue`].
#[derive(Debug)]
#[must_use = "a builder does nothing until build() is called"]
pub struct QueueBuilder {
    store: Arc<dyn JobStore>,
    settings: Settings,
}

impl fmt::Debug for dyn JobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobStore({})", self.backend())
    }
}

impl QueueBuilder {
    /// Runs queue `name` with `concurrency` jobs at once (call again for more queues).
    /// Default: queue `default` with 10.
    pub fn queue(mut self, name: impl Into<String>, concurrency: usize) -> Self {
        let name = name.into();
        self.settings.queues.retain(|(n, _)| *n != name);
        self.settings.queues.push((name, concurrency.max(1)));
        self
    }
    /// How long a claimed job is leased (renewed while it runs). Default: 60 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease.max(Duration::from_millis(100));
        self
    }
    /// How often an idle runner polls. Default: 1 s.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.settings.poll_interval = interval.max(Duration::from_millis(1));
        self
    }
    /// How long to wait before retrying failed jobs. Default: [`JobBackoff::Sigra`].
    pub fn backoff(mut self, backoff: JobBackoff) -> Self {
        self.settings.backoff = backoff;
        self
    }
    /// How long jobs wait for a worker or forwarder name that no process registers before
    /// they are cancelled (`unknown_forwarder`, `unknown_worker`). Runners refresh their
    /// names in the store every quarter of this (at most every 30 s). Default: 1 hour.
    pub fn unknown_after(mut self, grace: Duration) -> Self {
        self.settings.unknown_after = grace.max(Duration::from_millis(40));
        self
    }
    /// What the runner's pruner keeps. Default: [`Retention::default`] (completed jobs
    /// 1 day, cancelled and discarded 30 days; signals while a job refers to them).
    /// [`Retention::keep_forever`] turns the pruner off.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.settings.retention = retention;
        self
    }
    /// How often the runner prunes. Default: 1 minute.
    pub fn prune_interval(mut self, interval: Duration) -> Self {
        self.settings.prune_interval = interval.max(Duration::from_millis(10));
        self
    }
    /// The queue.
    pub fn build(self) -> Queue {
        Queue {
            inner: Arc::new(Inner {
                store: self.store,
                settings: self.settings,
                workers: RwLock::default(),
                forwarders: RwLock::default(),
                generation: AtomicU64::new(0),
                running: AtomicUsize::new(0),
                wake: Notify::new(),
                last_counts: Mutex::new(None),
                last_unregistered: Mutex::new(None),
                committer: std::sync::OnceLock::new(),
            }),
        }
    }
}

impl Queue {
    /// A queue over `store` with the defaults.
    pub fn new(store: impl JobStore) -> Queue {
        Queue::builder(store).build()
    }

    /// Starts building a queue over `store`.
    pub fn builder(store: impl JobStore) -> QueueBuilder {
        QueueBuilder {
            store: Arc::new(store),
            settings: Settings {
                queues: vec![("default".to_owned(), DEFAULT_CONCURRENCY)],
                lease: DEFAULT_LEASE,
                poll_interval: DEFAULT_POLL_INTERVAL,
                backoff: JobBackoff::Sigra,
                unknown_after: DEFAULT_UNKNOWN_AFTER,
                retention: Retention::default(),
                prune_interval: DEFAULT_PRUNE_INTERVAL,
            },
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.inner.store
    }

    /// Whether a runner of this queue is running in this process.
    pub fn is_running(&self) -> bool {
        self.inner.running.load(Ordering::Acquire) > 0
    }

    /// Registers the worker for jobs named `name`; runners of this process start claiming
    /// them at once.
    pub fn register_worker(&self, name: impl Into<String>, worker: impl Worker) {
        let mut w = self
            .inner
            .workers
            .write()
            .unwrap_or_else(|e| e.into_inner());
        w.insert(name.into(), Arc::new(worker));
        drop(w);
        self.registry_changed();
    }

    /// Whether a runner started from this queue claims from queue `name`.
    pub(crate) fn runs_queue(&self, name: &str) -> bool {
        self.inner.settings.queues.iter().any(|(n, _)| n == name)
    }

    /// Something a claim filter depends on changed: runners rebuild it and look again.
    pub(crate) fn registry_changed(&self) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        self.inner.wake.notify_waiters();
    }

    /// The worker names this process can run now in `queue` (forwarders of that queue that
    /// are not paused, and every registered worker). With `paused`, paused forwarders too:
    /// they are registered (their jobs wait for them), they just do not claim.
    fn names(&self, queue: &str, paused: bool) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .workers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        let forwarders = self
            .inner
            .forwarders
            .read()
            .unwrap_or_else(|e| e.into_inner());
        for (name, fj) in forwarders.iter() {
            if fj.queue == queue && (paused || !fj.is_paused()) {
                names.push(super::forwarder_worker(name));
            }
        }
        names.sort_unstable();
        names
    }

    /// Resumes a forwarder paused after its endpoint answered 410 Gone: its waiting jobs are
    /// claimed again. Returns whether it was paused. Pauses are held per process, in memory:
    /// resume in every process that paused (a restarted process starts unpaused).
    pub fn resume_forwarder(&self, name: &str) -> bool {
        let fj = self
            .inner
            .forwarders
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        let resumed = fj.is_some_and(|fj| fj.resume());
        if resumed {
            self.registry_changed();
        }
        resumed
    }

    /// The forwarders of this process paused after a 410 Gone, sorted (also in
    /// `bus.metrics().queue_paused`). In memory only: other processes and a restart do not
    /// see it.
    pub fn paused_forwarders(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .forwarders
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, fj)| fj.is_paused())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort_unstable();
        names
    }

    /// Enqueues a generic job; wakes local runners. Concurrent calls share one transaction
    /// (group commit), as [`enqueue_signal`](Queue::enqueue_signal) does.
    ///
    /// # Errors
    /// An invalid job or a store failure.
    pub async fn enqueue(&self, job: NewJob) -> Result<Option<i64>, QueueError> {
        self.commit(None, job).await
    }

    /// Enqueues a tenant job: its args must contain `organization_id` and `actor_id`
    /// (null allowed).
    ///
    /// # Errors
    /// [`QueueError::MissingArg`] naming the absent key; nothing is stored then.
    pub async fn enqueue_tenant(&self, job: NewJob) -> Result<Option<i64>, QueueError> {
        tenant_scope(&job.args)?;
        self.enqueue(job).await
    }

    /// Stores a signal and its job durably; returns once they are committed. Concurrent
    /// calls are grouped into one transaction (group commit): one durable write serves many
    /// publishers.
    ///
    /// # Errors
    /// An invalid job or a store failure; nothing of this call is stored then.
    pub async fn enqueue_signal(
        &self,
        signal: Arc<crate::Signal>,
        job: NewJob,
    ) -> Result<Option<i64>, QueueError> {
        self.commit(Some(signal), job).await
    }

    /// One enqueue through the group committer.
    async fn commit(
        &self,
        signal: Option<Arc<crate::Signal>>,
        job: NewJob,
    ) -> Result<Option<i64>, QueueError> {
        super::validate_new_job(&job)?;
        let (reply, done) = tokio::sync::oneshot::channel();
        let pending = Pending { signal, job, reply };
        let sender = self.inner.committer.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(group_commit(Arc::clone(&self.inner.store), rx));
            tx
        });
        if let Err(e) = sender.send(pending) {
            // The committer is gone (its runtime shut down): commit on our own.
            let p = e.0;
            let id = self
                .inner
                .store
                .enqueue(p.signal.as_deref(), &p.job)
                .await?;
            self.inner.wake.notify_waiters();
            return Ok(id);
        }
        let id = done.await.map_err(|_| QueueError::Store {
            backend: self.inner.store.backend(),
            message: "the group committer stopped before answering".to_owned(),
            source: None,
        })??;
        self.inner.wake.notify_waiters();
        Ok(id)
    }

    /// Jobs in `state` (e.g. discarded ones to inspect).
    ///
    /// # Errors
    /// A store failure.
    pub async fn list(&self, state: JobState, limit: usize) -> Result<Vec<Job>, QueueError> {
        self.inner.store.list(state, limit).await
    }

    /// Makes cancelled or discarded jobs run again.
    ///
    /// # Errors
    /// A store failure.
    pub async fn redrive(&self, ids: &[i64]) -> Result<u64, QueueError> {
        let n = self.inner.store.redrive(ids, Utc::now()).await?;
        self.inner.wake.notify_waiters();
        Ok(n)
    }

    /// Cancels a job that has not finished (by hand, [`CancelReason::Manual`]). A runner
    /// executing it finds its lease lost and records nothing. Returns whether it was
    /// cancelled.
    ///
    /// # Errors
    /// A store failure.
    pub async fn cancel(&self, id: i64) -> Result<bool, QueueError> {
        self.inner
            .store
            .cancel_job(
                id,
                CancelReason::Manual,
                "manual: cancelled by hand",
                Utc::now(),
            )
            .await
    }

    /// Deletes what `retention` lets go: finished jobs older than their state's age, then
    /// stored signals no job refers to any more. Runs until nothing is left to delete, in
    /// rounds of at most 10,000 rows per state. The runner does this by itself every
    /// [`prune_interval`](QueueBuilder::prune_interval) with the queue's own retention.
    ///
    /// # Errors
    /// A store failure (what was deleted before it stays deleted).
    pub async fn prune(&self, retention: Retention) -> Result<PruneReport, QueueError> {
        prune_all(self.inner.store.as_ref(), &retention, usize::MAX).await
    }

    /// How many jobs are in each state.
    ///
    /// # Errors
    /// A store failure.
    pub async fn counts(&self) -> Result<BTreeMap<JobState, u64>, QueueError> {
        let counts = self.inner.store.counts().await?;
        *self
            .inner
            .last_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(counts.clone());
        Ok(counts)
    }

    /// Runnable jobs waiting for a worker or forwarder name that no process (this one
    /// included) has registered lately, per `(queue, worker)`; forwarder jobs show as
    /// `signal_bus.forwarder:<name>`. They are cancelled once the grace period
    /// ([`unknown_after`](QueueBuilder::unknown_after)) passes without one.
    ///
    /// # Errors
    /// A store failure.
    pub async fn unregistered(&self) -> Result<BTreeMap<(String, String), u64>, QueueError> {
        let now = Utc::now();
        let window =
            chrono::Duration::from_std(self.inner.settings.registered_window()).unwrap_or_default();
        let found = self.inner.store.unregistered(now - window, now).await?;
        *self
            .inner
            .last_unregistered
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(found.clone());
        Ok(found)
    }

    /// The job counts per state as last seen (refreshed about every second while a runner
    /// runs, and by [`counts`](Queue::counts)); `None` before the first look.
    pub fn cached_counts(&self) -> Option<BTreeMap<JobState, u64>> {
        self.inner
            .last_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The jobs waiting for an unregistered name as last seen (refreshed with the counts
    /// while a runner runs, and by [`unregistered`](Queue::unregistered)).
    pub fn cached_unregistered(&self) -> Option<BTreeMap<(String, String), u64>> {
        self.inner
            .last_unregistered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts a runner: for each queue, a loop claiming up to its concurrency and running
    /// jobs of the names registered in this process; and one maintenance loop that renews
    /// leases' owners in the registry, rescues jobs of crashed runners, cancels jobs nobody
    /// registers for, prunes, and refreshes the counts, all on the current tokio runtime.
    /// Workers and forwarders may be registered before or after.
    ///
    /// # Errors
    /// [`QueueError::NoRuntime`] when called outside a tokio runtime (nothing is started).
    pub fn start(&self) -> Result<Runner, QueueError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(QueueError::NoRuntime {
                call: "Queue::start",
            });
        }
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (abort, aborted) = tokio::sync::watch::channel(false);
        self.inner.running.fetch_add(1, Ordering::AcqRel);
        let mut tasks = JoinSet::new();
        for (queue, concurrency) in self.inner.settings.queues.clone() {
            tasks.spawn(run_queue(
                self.clone(),
                queue,
                concurrency,
                owner.clone(),
                stopped.clone(),
                aborted.clone(),
            ));
        }
        tasks.spawn(maintain(self.clone(), stopped.clone()));
        Ok(Runner {
            queue: self.clone(),
            owner,
            stop,
            abort,
            tasks: Mutex::new(Some(tasks)),
        })
    }

    fn worker(&self, name: &str) -> Option<Arc<dyn Worker>> {
        self.inner
            .workers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Runs one job to an outcome, never panicking out. Returns `true` when it completed:
    /// the caller records completions in batches (one write for many jobs). `signal` is the
    /// job's signal when the runner already loaded it with its batch.
    async fn execute(
        &self,
        job: Job,
        signal: Option<Result<Option<crate::Signal>, QueueError>>,
    ) -> bool {
        let store = &self.inner.store;
        let started = std::time::Instant::now();
        let outcome = if job.forwarder().is_some() {
            super::forwarder::perform(self, &job, signal).await
        } else {
            match self.worker(&job.worker) {
                // Unregistered since the claim: leave it for a process that has it.
                None => WorkOutcome::Snooze(Duration::ZERO),
                Some(w) => AssertUnwindSafe(w.perform(&job))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|p| {
                        WorkOutcome::Error(DeliveryError::from_panic(&*p).to_string())
                    }),
            }
        };
        let now = Utc::now();
        let lease = job.lease();
        let out_of_attempts = job.attempt >= job.max_attempts;
        let kind = match &outcome {
            WorkOutcome::Ok => "completed",
            WorkOutcome::Cancel(_) | WorkOutcome::CancelFor(..) => "cancelled",
            WorkOutcome::Snooze(_) => "snoozed",
            WorkOutcome::Error(_) if out_of_attempts => "discarded",
            WorkOutcome::Error(_) => "retryable",
        };
        let (result, action) = match &outcome {
            WorkOutcome::Ok => (Ok(()), "complete"),
            WorkOutcome::Cancel(detail) => (
                store.cancel(lease, CancelReason::Worker, detail, now).await,
                "cancel",
            ),
            WorkOutcome::CancelFor(reason, detail) => {
                (store.cancel(lease, *reason, detail, now).await, "cancel")
            }
            WorkOutcome::Snooze(d) => (store.snooze(lease, super::after(now, *d)).await, "snooze"),
            WorkOutcome::Error(e) if out_of_attempts => {
                (store.discard(lease, e, now).await, "discard")
            }
            WorkOutcome::Error(e) => {
                let delay = self.inner.settings.backoff.delay(job.attempt);
                (
                    store.retry(lease, super::after(now, delay), e).await,
                    "retry",
                )
            }
        };
        super::events::queue_job(&job, kind, &outcome, started.elapsed());
        match result {
            Ok(()) => {}
            Err(QueueError::LeaseLost { .. }) => super::events::queue_lease_lost(&job, action),
            // The lease runs out and another runner (or this one) rescues the job.
            Err(e) => super::events::queue_store_error(&job, action, &e),
        }
        outcome == WorkOutcome::Ok
    }
}

/// Prunes every state of `retention`, then unreferenced signals, `limit` rows per state at a
/// time, until a round deletes less than a full batch.
async fn prune_all(
    store: &dyn JobStore,
    retention: &Retention,
    rounds: usize,
) -> Result<PruneReport, QueueError> {
    let now = Utc::now();
    let mut report = PruneReport::default();
    let mut oldest_kept = None;
    for (state, age) in retention.per_state() {
        let Some(age) = age else { continue };
        let before = now - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        oldest_kept = Some(oldest_kept.map_or(before, |o: chrono::DateTime<Utc>| o.min(before)));
        let mut deleted = 0;
        for _ in 0..rounds {
            let n = store.prune(state, before, PRUNE_LIMIT).await?;
            deleted += n;
            if n < PRUNE_LIMIT as u64 {
                break;
            }
        }
        match state {
            JobState::Completed => report.completed = deleted,
            JobState::Cancelled => report.cancelled = deleted,
            _ => report.discarded = deleted,
        }
    }
    if oldest_kept.is_some() {
        // A signal is deleted once no job refers to it, and only when it was last stored
        // more than the margin ago: an enqueue storing it again renews `stored_at` to its own
        // time, so even one that commits after the prune's snapshot (PostgreSQL, READ
        // COMMITTED), or on a machine whose clock is a little behind, keeps its signal.
        let signals_before = now
            - chrono::Duration::from_std(retention.signal_margin).unwrap_or(chrono::Duration::MAX);
        for _ in 0..rounds {
            let n = store.prune_signals(signals_before, PRUNE_LIMIT).await?;
            report.signals += n;
            if n < PRUNE_LIMIT as u64 {
                break;
            }
        }
    }
    Ok(report)
}

/// The signals of a claimed batch's forwarder jobs, in one read; `None` when the read failed
/// (each job then loads its own).
async fn prefetch_signals(
    store: &dyn JobStore,
    jobs: &[Job],
) -> Option<HashMap<SignalKey, Result<crate::Signal, QueueError>>> {
    let keys: Vec<(&str, &str)> = jobs
        .iter()
        .filter(|j| j.forwarder().is_some())
        .filter_map(Job::signal_ref)
        .collect();
    if keys.is_empty() {
        return Some(HashMap::new());
    }
    store
        .load_signals(&keys)
        .await
        .ok()
        .map(|v| v.into_iter().collect())
}

/// Commits whatever enqueues are waiting, up to [`MAX_GROUP`] per transaction.
async fn group_commit(
    store: Arc<dyn JobStore>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Pending>,
) {
    let mut batch: Vec<Pending> = Vec::new();
    while rx.recv_many(&mut batch, MAX_GROUP).await > 0 {
        // A caller that stopped waiting (its target's timeout struck, or its future was
        // dropped) has been told the enqueue failed: committing its job anyway would run it
        // behind that answer's back, and again when the caller retries.
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let items: Vec<(Option<Arc<crate::Signal>>, NewJob)> = batch
            .iter()
            .map(|p| (p.signal.clone(), p.job.clone()))
            .collect();
        match store.enqueue_many(&items).await {
            Ok(ids) if ids.len() == batch.len() => {
                for (p, id) in batch.drain(..).zip(ids) {
                    let _ = p.reply.send(Ok(id));
                }
            }
            Ok(ids) => {
                let e = QueueError::Corrupt {
                    what: format!(
                        "the store answered {} for {}",
                        crate::error::count(ids.len(), "id", "ids"),
                        crate::error::count(batch.len(), "enqueued job", "enqueued jobs")
                    ),
                };
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The runner's housekeeping: registry, rescue, unknown names, pruning and counts, each on
/// its own period, until the runner stops.
async fn maintain(queue: Queue, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let inner = Arc::clone(&queue.inner);
    let settings = &inner.settings;
    let store = inner.store.as_ref();
    let registry_every = settings.registry_interval();
    let rescue_every = settings.lease / 2;
    let sweep_every = registry_every;
    let counts_every = Duration::from_secs(1);
    let tick_every = registry_every
        .min(rescue_every)
        .min(counts_every)
        .min(settings.prune_interval);
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let due = |last: &mut Option<tokio::time::Instant>, every: Duration| {
        let now = tokio::time::Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= every) {
            *last = Some(now);
            true
        } else {
            false
        }
    };
    let (mut registered, mut rescued, mut swept, mut pruned, mut counted, mut looked) =
        (None, None, None, None, None, None);
    let mut generation = u64::MAX;
    let backoff = |attempt: u32| settings.backoff.delay(attempt);
    let grace = chrono::Duration::from_std(settings.unknown_after).unwrap_or_default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => {}
        }
        if *stopped.borrow() {
            break;
        }
        let now = Utc::now();
        // Names first: a sweep never cancels what this process runs.
        let current = inner.generation.load(Ordering::Acquire);
        let mut registry_ok = true;
        if current != generation || due(&mut registered, registry_every) {
            generation = current;
            for (name, _) in &settings.queues {
                if let Err(e) = store
                    .register_workers(name, &queue.names(name, true), now)
                    .await
                {
                    super::events::queue_store_failure(name, "register", &e);
                    registry_ok = false;
                    // Try again on the next tick.
                    generation = u64::MAX;
                }
            }
        }
        if due(&mut rescued, rescue_every) {
            match store.rescue(now, &backoff).await {
                Ok(n) if n > 0 => super::events::queue_rescued(n),
                Ok(_) => {}
                Err(e) => super::events::queue_store_failure("*", "rescue", &e),
            }
        }
        if registry_ok && due(&mut swept, sweep_every) {
            match store.cancel_unregistered(now - grace, now).await {
                Ok(cancelled) => {
                    for ((q, worker), n) in cancelled {
                        super::events::queue_unknown_cancelled(&q, &worker, n);
                    }
                }
                Err(e) => super::events::queue_store_failure("*", "cancel_unregistered", &e),
            }
        }
        if due(&mut pruned, settings.prune_interval) {
            match prune_all(store, &settings.retention, 1).await {
                Ok(report) => super::events::queue_pruned(&report),
                Err(e) => super::events::queue_store_failure("*", "prune", &e),
            }
        }
        if due(&mut counted, counts_every) {
            let _ = queue.counts().await;
        }
        // A scan of the waiting jobs: less often than the counts.
        if due(&mut looked, registry_every.max(counts_every)) {
            let _ = queue.unregistered().await;
        }
    }
}

async fn run_queue(
    queue: Queue,
    name: String,
    concurrency: usize,
    owner: String,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    mut abort: tokio::sync::watch::Receiver<bool>,
) {
    let inner = Arc::clone(&queue.inner);
    let lease = inner.settings.lease;
    let lease_chrono = chrono::Duration::from_std(lease).unwrap_or_default();
    let mut running: JoinSet<(LeaseToken, bool)> = JoinSet::new();
    // Task -> the job's lease, so a task that failed (panicked outside the worker) is known.
    let mut tasks: HashMap<tokio::task::Id, LeaseToken> = HashMap::new();
    let mut completed: Vec<LeaseToken> = Vec::new();
    let mut broken: Vec<LeaseToken> = Vec::new();
    // The names this process runs in this queue, rebuilt when the registry changes.
    let mut names: (u64, Vec<String>) = (u64::MAX, Vec::new());
    let mut heartbeat = tokio::time::interval(lease / 3);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Claim again once this many slots are free (claims are writes: batch them).
    let refill = (concurrency / 4).max(1);
    let finish = |done: Result<(tokio::task::Id, (LeaseToken, bool)), tokio::task::JoinError>,
                  tasks: &mut HashMap<tokio::task::Id, LeaseToken>,
                  completed: &mut Vec<LeaseToken>,
                  broken: &mut Vec<LeaseToken>| match done {
        Ok((task, (lease, ok))) => {
            tasks.remove(&task);
            if ok {
                completed.push(lease);
            }
        }
        Err(e) => {
            if let Some(lease) = tasks.remove(&e.id()) {
                // Cancelled tasks are released by the runner; a panic is retried.
                if e.is_panic() {
                    broken.push(lease);
                }
            }
        }
    };
    let record = |completed: &mut Vec<LeaseToken>, broken: &mut Vec<LeaseToken>| {
        let store = Arc::clone(&inner.store);
        let done = std::mem::take(completed);
        let failed = std::mem::take(broken);
        let name = name.clone();
        async move {
            let mut keep = Vec::new();
            if !done.is_empty() {
                match store.complete_many(&done, Utc::now()).await {
                    Ok(lost) => {
                        for id in lost {
                            super::events::queue_lease_lost_id(&name, id, "complete");
                        }
                    }
                    Err(e) => {
                        // Kept for the next round; if the store stays down the leases expire
                        // and the jobs run again (at least once).
                        super::events::queue_store_failure(&name, "complete", &e);
                        keep = done;
                    }
                }
            }
            for lease in failed {
                let at = super::after(Utc::now(), Duration::from_secs(1));
                match store
                    .retry(lease, at, "the job's task failed outside its worker")
                    .await
                {
                    Ok(()) => {}
                    Err(QueueError::LeaseLost { job }) => {
                        super::events::queue_lease_lost_id(&name, job, "retry");
                    }
                    Err(e) => super::events::queue_store_failure(&name, "retry", &e),
                }
            }
            keep
        }
    };
    let beat = |tasks: &HashMap<tokio::task::Id, LeaseToken>| {
        let store = Arc::clone(&inner.store);
        let leases: Vec<LeaseToken> = tasks.values().copied().collect();
        let name = name.clone();
        async move {
            match store.heartbeat(&leases, Utc::now() + lease_chrono).await {
                Ok(lost) => {
                    for id in lost {
                        super::events::queue_lease_lost_id(&name, id, "heartbeat");
                    }
                }
                Err(e) => super::events::queue_store_failure(&name, "heartbeat", &e),
            }
        }
    };
    loop {
        let woken = inner.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        while let Some(done) = running.try_join_next_with_id() {
            finish(done, &mut tasks, &mut completed, &mut broken);
        }
        completed = record(&mut completed, &mut broken).await;
        if *stopped.borrow() {
            break;
        }
        let generation = inner.generation.load(Ordering::Acquire);
        if names.0 != generation {
            names = (generation, queue.names(&name, false));
        }
        let free = concurrency.saturating_sub(running.len());
        let mut claimed = 0;
        if (free >= refill || running.is_empty()) && !names.1.is_empty() {
            let now = Utc::now();
            match inner
                .store
                .claim(&name, &names.1, free, &owner, now, now + lease_chrono)
                .await
            {
                Ok(jobs) => {
                    claimed = jobs.len();
                    let mut prefetched = prefetch_signals(inner.store.as_ref(), &jobs).await;
                    for job in jobs {
                        let lease = job.lease();
                        let q = queue.clone();
                        let signal = prefetched.as_mut().map(|found| {
                            job.signal_ref()
                                .and_then(|(s, i)| found.get(&(s.to_owned(), i.to_owned())))
                                .cloned()
                                .transpose()
                        });
                        let handle =
                            running.spawn(async move { (lease, q.execute(job, signal).await) });
                        tasks.insert(handle.id(), lease);
                    }
                }
                Err(e) => super::events::queue_store_failure(&name, "claim", &e),
            }
        }
        if claimed > 0 && running.len() < concurrency {
            continue;
        }
        let has_room = running.len() < concurrency;
        tokio::select! {
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                finish(done, &mut tasks, &mut completed, &mut broken);
            }
            _ = &mut woken, if has_room => {}
            _ = inner.store.wait_for_jobs(inner.settings.poll_interval), if has_room => {}
            _ = heartbeat.tick() => beat(&tasks).await,
            _ = stopped.changed() => {}
        }
    }
    // Stopping: let running jobs finish, renewing their leases and recording completions as
    // they come. Told to abort (the shutdown deadline passed), cancel what is left and wait
    // for it; the runner then releases those jobs.
    let mut aborting = *abort.borrow();
    while !running.is_empty() {
        if aborting {
            running.abort_all();
            while let Some(done) = running.join_next_with_id().await {
                finish(done, &mut tasks, &mut completed, &mut broken);
            }
            break;
        }
        tokio::select! {
            Some(done) = running.join_next_with_id() => {
                finish(done, &mut tasks, &mut completed, &mut broken);
                completed = record(&mut completed, &mut broken).await;
            }
            _ = heartbeat.tick() => beat(&tasks).await,
            _ = abort.changed() => aborting = true,
        }
    }
    let _ = record(&mut completed, &mut broken).await;
}

/// A running set of queue loops. Dropping it without [`shutdown`](Runner::shutdown) stops
/// claiming at once; jobs it held are rescued when their lease ends.
pub struct Runner {
    queue: Queue,
    owner: String,
    stop: tokio::sync::watch::Sender<bool>,
    abort: tokio::sync::watch::Sender<bool>,
    tasks: Mutex<Option<JoinSet<()>>>,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("owner", &self.owner)
            .finish()
    }
}

/// What [`Runner::shutdown_within`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RunnerReport {
    /// Jobs still running at the deadline, put back to `available` for the next runner.
    pub released: u64,
}

impl Runner {
    /// This runner's owner id (what it writes on the jobs it claims).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Stops claiming and waits (up to 30 s) for running jobs; what is left is released.
    pub async fn shutdown(self) -> RunnerReport {
        self.shutdown_within(Duration::from_secs(30)).await
    }

    /// Stops claiming, waits up to `deadline` for running jobs, then releases what is left
    /// (back to `available`, attempt given back) so nothing is lost.
    pub async fn shutdown_within(self, deadline: Duration) -> RunnerReport {
        let _ = self.stop.send(true);
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut tasks) = tasks {
            let finished = tokio::time::timeout(deadline, async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            if finished.is_err() {
                // Past the deadline: the loops cancel their jobs, record what finished, and
                // exit; only then is anything released, so no job runs twice at once.
                let _ = self.abort.send(true);
                while tasks.join_next().await.is_some() {}
            }
        }
        let released = self
            .queue
            .inner
            .store
            .release(&self.owner, Utc::now())
            .await
            .unwrap_or(0);
        RunnerReport { released }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.queue.inner.running.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigra_backoff_stays_on_its_curve() {
        for attempt in 1..=8u32 {
            for _ in 0..50 {
                let d = JobBackoff::Sigra.delay(attempt).as_secs();
                let a = u64::from(attempt);
                let base = a.pow(4) + 15;
                assert!(
                    (base + a..=base + 10 * a).contains(&d),
                    "attempt {attempt}: {d}s outside {}..={}",
                    base + a,
                    base + 10 * a
                );
            }
        }
    }

    #[test]
    fn a_retry_policy_can_replace_the_curve() {
        let exp = JobBackoff::Policy(
            RetryPolicy::exponential(Duration::from_millis(100)).max_delay(Duration::from_secs(1)),
        );
        assert_eq!(exp.delay(1), Duration::from_millis(100));
        assert_eq!(exp.delay(2), Duration::from_millis(200));
        assert_eq!(exp.delay(3), Duration::from_millis(400));
        assert_eq!(exp.delay(10), Duration::from_secs(1), "capped");
    }
}
