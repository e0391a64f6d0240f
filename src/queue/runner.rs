//! [`Queue`]: a store plus the workers and forwarders registered on it, and the [`Runner`]
//! that claims and runs its jobs.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use chrono::Utc;
use futures_util::FutureExt as _;
use tokio::{sync::Notify, task::JoinSet};

use super::{
    forwarder::ForwarderJob,
    worker::{tenant_scope, WorkOutcome, Worker},
    Job, JobState, JobStore, NewJob, QueueError,
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

#[derive(Debug)]
struct Settings {
    queues: Vec<(String, usize)>,
    lease: Duration,
    poll_interval: Duration,
    backoff: JobBackoff,
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
    running: AtomicUsize,
    wake: Notify,
    /// The last job counts per state, refreshed by runners (about every second) and by
    /// `counts()`; read by `Bus::metrics`.
    last_counts: Mutex<Option<BTreeMap<JobState, u64>>>,
}

/// A durable job queue: a [`JobStore`] plus the workers and forwarders that run its jobs.
/// Cheap to clone.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use signal_bus::queue::{Queue, SqliteStore};
///
/// let queue = Queue::new(SqliteStore::open("signals.db").await?);
/// let runner = queue.start();       // claims and runs jobs
/// // ...
/// runner.shutdown().await;          // stops claiming, finishes or releases what it holds
/// # Ok(()) }
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
    /// The queue.
    pub fn build(self) -> Queue {
        Queue {
            inner: Arc::new(Inner {
                store: self.store,
                settings: self.settings,
                workers: RwLock::default(),
                forwarders: RwLock::default(),
                running: AtomicUsize::new(0),
                wake: Notify::new(),
                last_counts: Mutex::new(None),
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

    /// Registers the worker for jobs named `name`.
    pub fn register_worker(&self, name: impl Into<String>, worker: impl Worker) {
        let mut w = self
            .inner
            .workers
            .write()
            .unwrap_or_else(|e| e.into_inner());
        w.insert(name.into(), Arc::new(worker));
    }

    /// Enqueues a generic job; wakes local runners.
    ///
    /// # Errors
    /// An invalid job or a store failure.
    pub async fn enqueue(&self, job: NewJob) -> Result<Option<i64>, QueueError> {
        let id = self.inner.store.enqueue(None, &job).await?;
        self.inner.wake.notify_waiters();
        Ok(id)
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
        super::validate_new_job(&job)?;
        let (reply, done) = tokio::sync::oneshot::channel();
        let pending = Pending {
            signal: Some(signal),
            job,
            reply,
        };
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

    /// Deletes completed jobs older than `retention`.
    ///
    /// # Errors
    /// A store failure.
    pub async fn prune(&self, retention: Duration) -> Result<u64, QueueError> {
        let before = Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
        self.inner.store.prune(before).await
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

    /// The job counts per state as last seen (refreshed about every second while a runner
    /// runs, and by [`counts`](Queue::counts)); `None` before the first look.
    pub fn cached_counts(&self) -> Option<BTreeMap<JobState, u64>> {
        self.inner
            .last_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts a runner: for each queue, a loop claiming up to its concurrency and running
    /// jobs; a heartbeat renewing leases; and a rescuer returning jobs of crashed runners.
    /// Must be called inside a tokio runtime.
    pub fn start(&self) -> Runner {
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
        Runner {
            queue: self.clone(),
            owner,
            stop,
            abort,
            tasks: Mutex::new(Some(tasks)),
        }
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
        let outcome = if job.worker == super::forwarder::FORWARDER_WORKER {
            super::forwarder::perform(self, &job, signal).await
        } else {
            match self.worker(&job.worker) {
                None => WorkOutcome::Cancel(format!("unknown worker `{}`", job.worker)),
                Some(w) => AssertUnwindSafe(w.perform(&job))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|p| {
                        WorkOutcome::Error(DeliveryError::from_panic(&*p).to_string())
                    }),
            }
        };
        let now = Utc::now();
        let kind = match &outcome {
            WorkOutcome::Ok => "completed",
            WorkOutcome::Cancel(_) => "cancelled",
            WorkOutcome::Snooze(_) => "snoozed",
            WorkOutcome::Error(_) if job.attempt >= job.max_attempts => "discarded",
            WorkOutcome::Error(_) => "retryable",
        };
        let result = match &outcome {
            WorkOutcome::Ok => Ok(()),
            WorkOutcome::Cancel(reason) => store.cancel(job.id, reason, now).await,
            WorkOutcome::Snooze(d) => {
                store
                    .snooze(
                        job.id,
                        now + chrono::Duration::from_std(*d).unwrap_or_default(),
                    )
                    .await
            }
            WorkOutcome::Error(e) if job.attempt >= job.max_attempts => {
                store.discard(job.id, e, now).await
            }
            WorkOutcome::Error(e) => {
                let delay = self.inner.settings.backoff.delay(job.attempt);
                store
                    .retry(
                        job.id,
                        now + chrono::Duration::from_std(delay).unwrap_or_default(),
                        e,
                    )
                    .await
            }
        };
        crate::telemetry::queue_job(&job, kind, &outcome, started.elapsed());
        if let Err(e) = result {
            // The lease runs out and another runner (or this one) rescues the job.
            crate::telemetry::queue_store_error(&job, &e);
        }
        outcome == WorkOutcome::Ok
    }
}

/// The signals of a claimed batch's forwarder jobs, in one read; `None` when the read failed
/// (each job then loads its own).
async fn prefetch_signals(
    store: &dyn JobStore,
    jobs: &[Job],
) -> Option<HashMap<String, Result<crate::Signal, QueueError>>> {
    let ids: Vec<&str> = jobs
        .iter()
        .filter(|j| j.worker == super::forwarder::FORWARDER_WORKER)
        .filter_map(super::forwarder::signal_id)
        .collect();
    if ids.is_empty() {
        return Some(HashMap::new());
    }
    store
        .load_signals(&ids)
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
                        "the store answered {} ids for {} enqueued jobs",
                        ids.len(),
                        batch.len()
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
    let mut running: JoinSet<(i64, bool)> = JoinSet::new();
    // Task -> job, so a task that failed (panicked outside the worker) is known.
    let mut tasks: HashMap<tokio::task::Id, i64> = HashMap::new();
    let mut completed: Vec<i64> = Vec::new();
    let mut broken: Vec<i64> = Vec::new();
    let mut last_rescue: Option<std::time::Instant> = None;
    let mut last_counts: Option<std::time::Instant> = None;
    let mut heartbeat = tokio::time::interval(lease / 3);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Claim again once this many slots are free (claims are writes: batch them).
    let refill = (concurrency / 4).max(1);
    let finish = |done: Result<(tokio::task::Id, (i64, bool)), tokio::task::JoinError>,
                  tasks: &mut HashMap<tokio::task::Id, i64>,
                  completed: &mut Vec<i64>,
                  broken: &mut Vec<i64>| match done {
        Ok((task, (id, ok))) => {
            tasks.remove(&task);
            if ok {
                completed.push(id);
            }
        }
        Err(e) => {
            if let Some(id) = tasks.remove(&e.id()) {
                // Cancelled tasks are released by the runner; a panic is retried.
                if e.is_panic() {
                    broken.push(id);
                }
            }
        }
    };
    let record = |completed: &mut Vec<i64>, broken: &mut Vec<i64>| {
        let store = Arc::clone(&inner.store);
        let done = std::mem::take(completed);
        let failed = std::mem::take(broken);
        let name = name.clone();
        async move {
            let mut keep = Vec::new();
            if !done.is_empty() {
                if let Err(e) = store.complete_many(&done, Utc::now()).await {
                    // Kept for the next round; if the store stays down the leases expire
                    // and the jobs run again (at least once).
                    crate::telemetry::queue_store_failure(&name, "complete", &e);
                    keep = done;
                }
            }
            for id in failed {
                let at = after(Utc::now(), Duration::from_secs(1));
                let _ = store
                    .retry(id, at, "the job's task failed outside its worker")
                    .await;
            }
            keep
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
        let free = concurrency.saturating_sub(running.len());
        let mut claimed = 0;
        if free >= refill || running.is_empty() {
            let now = Utc::now();
            match inner
                .store
                .claim(&name, free, &owner, now, now + lease_chrono)
                .await
            {
                Ok(jobs) => {
                    claimed = jobs.len();
                    let mut prefetched = prefetch_signals(inner.store.as_ref(), &jobs).await;
                    for job in jobs {
                        let id = job.id;
                        let q = queue.clone();
                        let signal = prefetched.as_mut().map(|found| {
                            super::forwarder::signal_id(&job)
                                .and_then(|sid| found.get(sid).cloned())
                                .transpose()
                        });
                        let handle =
                            running.spawn(async move { (id, q.execute(job, signal).await) });
                        tasks.insert(handle.id(), id);
                    }
                }
                Err(e) => crate::telemetry::queue_store_failure(&name, "claim", &e),
            }
            if last_counts.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                last_counts = Some(std::time::Instant::now());
                let _ = queue.counts().await;
            }
            // Jobs of crashed runners: checked every half lease, not on every poll.
            if last_rescue.is_none_or(|t| t.elapsed() >= lease / 2) {
                last_rescue = Some(std::time::Instant::now());
                if let Ok(n) = inner.store.rescue(now).await {
                    if n > 0 {
                        crate::telemetry::queue_rescued(&name, n);
                    }
                }
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
            _ = heartbeat.tick() => {
                let ids: Vec<i64> = tasks.values().copied().collect();
                let _ = inner.store.heartbeat(&ids, &owner, Utc::now() + lease_chrono).await;
            }
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
            _ = heartbeat.tick() => {
                let ids: Vec<i64> = tasks.values().copied().collect();
                let _ = inner.store.heartbeat(&ids, &owner, Utc::now() + lease_chrono).await;
            }
            _ = abort.changed() => aborting = true,
        }
    }
    let _ = record(&mut completed, &mut broken).await;
}

/// `now + d`, saturating instead of overflowing.
fn after(now: chrono::DateTime<Utc>, d: Duration) -> chrono::DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC)
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
