//! Persistent subscriptions: named, durable cursors over a bus's journal.
//!
//! A persistent subscription delivers the journal's matching signals in journal order to
//! its targets (or to a channel whose consumer acknowledges by hand), keeps at most
//! `max_in_flight` outstanding, and stores a checkpoint (the sequence number up to which
//! every signal was acknowledged) in the journal's store after each acknowledgement. Started
//! again with the same name on the same store, it resumes after the checkpoint: nothing
//! acknowledged is lost, nothing is skipped, and only the signals in flight at a crash are
//! delivered twice. One process at a time holds a subscription's lease; the others wait
//! and take over when the holder stops renewing it.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures_util::{future::BoxFuture, stream::FuturesUnordered, FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::{replay::PAGE, JournalDeadLetter, JournalEntry, JournalError, JournalRuntime};
use crate::{
    context::BusContext,
    dispatch::{deliver_all, validate_targets, IntoTargets, Planned, PublishReport, Target},
    BusError, ConfigError, Pattern, Signal,
};

/// How long a lease lasts without renewal by default: 30 s. A process that dies holding a
/// subscription is replaced within about this long.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How often a caught-up subscription looks for entries other processes appended, by
/// default (local appends wake it at once): 100 ms.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The most signals a subscription may have outstanding.
const MAX_IN_FLIGHT: usize = 10_000;

/// Where a persistent subscription of a new name starts (an existing name resumes after
/// its checkpoint, whatever this says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartAt {
    /// After the last entry the journal holds when the subscription is created: only
    /// signals published from now on (the default).
    #[default]
    Now,
    /// The journal's first entry.
    Beginning,
    /// The first entry (lowest sequence number) appended at or after this time, and every
    /// entry after it: when appenders' clocks disagree, none appended at or after the time is
    /// left out.
    Time(DateTime<Utc>),
    /// The entry after this sequence number.
    After(u64),
}

/// The running persistent subscriptions of one bus, by name.
#[derive(Debug, Default)]
pub(crate) struct PersistentSet {
    running: Mutex<HashMap<String, Arc<Shared>>>,
}

impl PersistentSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Shared>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running subscription `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Shared>> {
        self.lock().get(name).cloned()
    }

    /// Stops every running subscription and waits for them, until `until`.
    pub(crate) async fn stop_all(&self, until: tokio::time::Instant) {
        let all: Vec<Arc<Shared>> = self.lock().values().cloned().collect();
        let stops = all.iter().map(|s| s.stop_and_wait());
        let _ = tokio::time::timeout_at(until, futures_util::future::join_all(stops)).await;
    }
}

impl Drop for PersistentSet {
    fn drop(&mut self) {
        for shared in self.lock().values() {
            shared.stop.send_replace(true);
        }
    }
}

/// Where a subscription's signals go.
#[derive(Clone)]
enum Sink {
    Targets(Arc<[Target]>),
    Manual(mpsc::Sender<Delivery>),
}

/// What became of one delivery.
enum Outcome {
    Acked,
    Failed(String),
    /// Not acknowledged (a manual delivery dropped without an answer): deliver it again.
    Again,
    /// The manual receiver is gone: the subscription stops.
    Closed,
}

/// The state a subscription's task and its handle share.
pub(crate) struct Shared {
    name: String,
    owner: String,
    journal: Arc<JournalRuntime>,
    pattern: Pattern,
    sink: Sink,
    max_in_flight: usize,
    lease: Duration,
    poll_interval: Duration,
    stop: watch::Sender<bool>,
    /// The last checkpoint saved.
    checkpoint: watch::Sender<u64>,
    /// Set once the task has ended.
    done: watch::Sender<bool>,
    active: AtomicBool,
    delivered: AtomicU64,
    dead_lettered: AtomicU64,
    set: std::sync::Weak<PersistentSet>,
    /// The bus's context, to detach the targets when the subscription ends.
    context: BusContext,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentSubscription")
            .field("name", &self.name)
            .field("journal", &self.journal.name)
            .field("pattern", &self.pattern.as_str())
            .field("active", &self.active.load(Ordering::Relaxed))
            .field("checkpoint", &*self.checkpoint.borrow())
            .finish_non_exhaustive()
    }
}

impl Shared {
    async fn stop_and_wait(&self) {
        self.stop.send_replace(true);
        let mut done = self.done.subscribe();
        let _ = done.wait_for(|d| *d).map(|_| ()).await;
    }

    fn store(&self) -> &dyn super::JournalStore {
        &*self.journal.store
    }

    /// Delivers one signal through the sink.
    fn deliver(&self, seq: u64, signal: Arc<Signal>) -> BoxFuture<'static, Outcome> {
        match &self.sink {
            Sink::Targets(targets) => {
                let targets = Arc::clone(targets);
                // A span whose parent is the signal's trace context (feature `opentelemetry`).
                let span = crate::trace::receive_span(&signal, "journal");
                tracing::Instrument::instrument(deliver_to_targets(targets, signal), span).boxed()
            }
            Sink::Manual(tx) => {
                let tx = tx.clone();
                async move {
                    let (ack, answer) = oneshot::channel();
                    let delivery = Delivery {
                        seq,
                        signal,
                        ack: Some(ack),
                    };
                    if tx.send(delivery).await.is_err() {
                        return Outcome::Closed;
                    }
                    match answer.await {
                        Ok(Ok(())) => Outcome::Acked,
                        Ok(Err(error)) => Outcome::Failed(error),
                        Err(_) => Outcome::Again,
                    }
                }
                .boxed()
            }
        }
    }

    async fn redrive(&self, seqs: Option<&[u64]>) -> Result<Redriven, JournalError> {
        let journal = &*self.journal.name;
        let letters = self
            .store()
            .take_dead_letters(journal, &self.name, seqs)
            .await?;
        let mut redriven = Redriven::default();
        for letter in letters {
            match self.deliver(letter.seq, Arc::clone(&letter.signal)).await {
                Outcome::Acked => redriven.delivered += 1,
                Outcome::Failed(error) => {
                    redriven.failed += 1;
                    self.store()
                        .add_dead_letter(
                            journal,
                            &self.name,
                            letter.seq,
                            &letter.signal,
                            &error,
                            Utc::now(),
                        )
                        .await?;
                }
                Outcome::Again | Outcome::Closed => {
                    redriven.failed += 1;
                    self.store()
                        .add_dead_letter(
                            journal,
                            &self.name,
                            letter.seq,
                            &letter.signal,
                            &letter.error,
                            letter.failed_at,
                        )
                        .await?;
                }
            }
        }
        Ok(redriven)
    }
}

/// What [`Bus::redrive`](crate::Bus::redrive) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Redriven {
    /// Dead letters delivered and removed.
    pub delivered: usize,
    /// Dead letters that failed again (they stay, with the new error).
    pub failed: usize,
}

async fn deliver_to_targets(targets: Arc<[Target]>, signal: Arc<Signal>) -> Outcome {
    let mut report = PublishReport::new(Planned::Targets(targets));
    deliver_all(signal, &mut report, false).await;
    if report.is_ok() {
        return Outcome::Acked;
    }
    let error = report
        .failures()
        .map(|o| match o.kind {
            crate::OutcomeKind::Failed(e) => format!("{}: {e}", o.target),
            other => format!("{}: {other}", o.target),
        })
        .collect::<Vec<_>>()
        .join("; ");
    Outcome::Failed(error)
}

/// One signal handed to a manual persistent subscription's consumer: acknowledge it with
/// [`ack`](Delivery::ack), or give up on it with [`fail`](Delivery::fail) (it goes to the
/// dead letters). Dropped without either, it is delivered again.
#[must_use = "a delivery that is dropped unanswered is delivered again"]
pub struct Delivery {
    seq: u64,
    signal: Arc<Signal>,
    ack: Option<oneshot::Sender<Result<(), String>>>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("seq", &self.seq)
            .field("type", &self.signal.ty())
            .field("id", &self.signal.id())
            .finish()
    }
}

impl Delivery {
    /// The signal's journal sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// The signal.
    pub fn signal(&self) -> &Arc<Signal> {
        &self.signal
    }
    /// Acknowledges the signal: the checkpoint may move past it.
    pub fn ack(mut self) {
        if let Some(ack) = self.ack.take() {
            let _ = ack.send(Ok(()));
        }
    }
    /// Gives up on the signal: it goes to the subscription's dead letters with `error`, and
    /// the checkpoint may move past it.
    pub fn fail(mut self, error: impl Into<String>) {
        if let Some(ack) = self.ack.take() {
            let _ = ack.send(Err(error.into()));
        }
    }
}

/// Options for a persistent subscription; from [`Bus::persistent`](crate::Bus::persistent).
pub struct PersistentBuilder {
    pub(crate) name: String,
    pub(crate) pattern: String,
    pub(crate) targets: Vec<Target>,
    pub(crate) start: StartAt,
    pub(crate) max_in_flight: usize,
    pub(crate) lease: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) journal: Option<Arc<JournalRuntime>>,
    pub(crate) context: BusContext,
    pub(crate) set: Arc<PersistentSet>,
    pub(crate) has_queue: bool,
    /// The bus's middleware: per-target hooks run around each delivery.
    pub(crate) middleware: Option<crate::dispatch::middleware::Chain>,
}

impl fmt::Debug for PersistentBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentBuilder")
            .field("name", &self.name)
            .field("pattern", &self.pattern)
            .field("targets", &self.targets.len())
            .field("start", &self.start)
            .field("max_in_flight", &self.max_in_flight)
            .field("lease", &self.lease)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

impl PersistentBuilder {
    /// The targets each signal is delivered to (one adapter, a [`Target`], or a
    /// `Vec<Target>`). A signal is acknowledged when every target succeeded (after its
    /// retry policy); when one fails for good, it goes to the dead letters. Targets must
    /// deliver before they answer: an async-mode or batching target (which would
    /// acknowledge on enqueue) is refused; a `Forwarder` acknowledges once its durable job
    /// is committed.
    pub fn targets(mut self, targets: impl IntoTargets) -> Self {
        self.targets = targets.into_targets();
        self
    }

    /// Where a new name starts (default [`StartAt::Now`]); an existing name resumes after
    /// its checkpoint.
    pub fn start_at(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    /// At most `n` signals outstanding at once (1 to 10,000; default 1, which keeps
    /// deliveries strictly in journal order). With more, deliveries overlap and may finish
    /// out of order; the checkpoint still only moves past a signal once it and every
    /// earlier one were acknowledged.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// How long the lease lasts unrenewed (default 30 s, at least 100 ms). It is renewed
    /// every third of it; another process takes over within about this long after the
    /// holder dies.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often a caught-up subscription polls the store for entries other processes
    /// appended (default 100 ms, at least 1 ms). Appends of this process wake it at once.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    fn validate(&self) -> Result<Pattern, BusError> {
        let pattern = Pattern::parse(&self.pattern)?;
        let mut problems = Vec::new();
        if let Err(rule) = crate::context::validate_name("subscription name", &self.name) {
            problems.push(ConfigError::invalid("subscription name", &self.name, rule));
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.max_in_flight) {
            problems.push(ConfigError::invalid(
                "max_in_flight",
                self.max_in_flight,
                format!("must be between 1 and {MAX_IN_FLIGHT}"),
            ));
        }
        if self.lease < Duration::from_millis(100) {
            problems.push(ConfigError::invalid(
                "lease",
                format!("{:?}", self.lease),
                "must be at least 100ms",
            ));
        }
        if self.poll_interval < Duration::from_millis(1) {
            problems.push(ConfigError::invalid(
                "poll_interval",
                format!("{:?}", self.poll_interval),
                "must be at least 1ms",
            ));
        }
        ConfigError::from_problems(problems).map_err(|source| BusError::InvalidTarget {
            target: format!("persistent subscription `{}`", self.name),
            source,
        })?;
        Ok(pattern)
    }

    /// Starts delivering to the targets given with [`targets`](PersistentBuilder::targets).
    ///
    /// # Errors
    /// A bad pattern or option, no targets, an invalid or async-mode target,
    /// [`BusError::NoJournal`], [`BusError::PersistentTaken`] when this bus already runs
    /// the name, or [`BusError::Journal`] when the store cannot be reached.
    pub async fn start(mut self) -> Result<PersistentSubscription, BusError> {
        let targets = std::mem::take(&mut self.targets);
        if targets.is_empty() {
            return Err(BusError::NoTargets {
                pattern: self.pattern.clone(),
            });
        }
        validate_targets(&targets)?;
        if let Some(t) = targets.iter().find(|t| t.is_queued()) {
            return Err(BusError::InvalidTarget {
                target: t.name().to_owned(),
                source: ConfigError::invalid(
                    "mode",
                    "async or batching",
                    "a persistent subscription acknowledges a signal once its targets \
                     delivered it; an async-mode or batching target would acknowledge on \
                     enqueue and could lose it: use a synchronous target (or a Forwarder \
                     for a durable hand-off)",
                ),
            });
        }
        if !self.has_queue {
            if let Some(t) = targets.iter().find(|t| t.adapter().requires_queue()) {
                return Err(BusError::InvalidTarget {
                    target: t.name().to_owned(),
                    source: ConfigError::invalid(
                        "dispatch",
                        "async",
                        "needs a durable queue, and this bus has none: build it with \
                         Bus::builder().queue(queue)",
                    ),
                });
            }
        }
        let context = self.context.clone();
        let targets: Arc<[Target]> = targets
            .iter()
            .flat_map(|t| t.activate_all(&context, self.middleware.as_ref()))
            .collect();
        self.spawn(Sink::Targets(targets)).await
    }

    /// Starts delivering to a channel of `capacity` instead of targets: the consumer
    /// acknowledges each [`Delivery`] by hand (Jido's `ack`). Up to `max_in_flight`
    /// deliveries are outstanding; dropping the receiver stops the subscription.
    ///
    /// # Errors
    /// As [`start`](PersistentBuilder::start), and a zero `capacity`.
    pub async fn manual(
        self,
        capacity: usize,
    ) -> Result<(PersistentSubscription, mpsc::Receiver<Delivery>), BusError> {
        if capacity == 0 {
            return Err(BusError::InvalidTarget {
                target: format!("persistent subscription `{}`", self.name),
                source: ConfigError::invalid("capacity", 0, "must be at least 1"),
            });
        }
        let (tx, rx) = mpsc::channel(capacity);
        let sub = self.spawn(Sink::Manual(tx)).await?;
        Ok((sub, rx))
    }

    async fn spawn(self, sink: Sink) -> Result<PersistentSubscription, BusError> {
        let pattern = self.validate()?;
        let journal = self.journal.clone().ok_or_else(|| BusError::NoJournal {
            call: "Bus::subscribe_persistent",
            bus: self.context.name().to_owned(),
        })?;
        let handle = crate::error::runtime_for("Bus::subscribe_persistent")?;
        let failed = |source: JournalError| BusError::Journal {
            journal: journal.name.to_string(),
            source,
        };
        // Claim the name in this bus before touching the store.
        let (stop, _) = watch::channel(false);
        let (checkpoint_tx, _) = watch::channel(0);
        let (done, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            owner: format!("{}/{}", self.context.node_id(), self.name),
            journal: Arc::clone(&journal),
            pattern,
            sink,
            max_in_flight: self.max_in_flight,
            lease: self.lease,
            poll_interval: self.poll_interval,
            stop,
            checkpoint: checkpoint_tx,
            done,
            active: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            set: Arc::downgrade(&self.set),
            context: self.context.clone(),
        });
        {
            let mut running = self.set.lock();
            if running.contains_key(&self.name) {
                return Err(BusError::PersistentTaken { name: self.name });
            }
            running.insert(self.name.clone(), Arc::clone(&shared));
        }
        let release = |e| {
            self.set.lock().remove(&self.name);
            e
        };
        let store = &*journal.store;
        let start = match self.start {
            StartAt::Now => store.head(&journal.name).await,
            StartAt::Beginning => Ok(0),
            StartAt::Time(t) => store.seq_before(&journal.name, t).await,
            StartAt::After(seq) => Ok(seq),
        }
        .map_err(failed)
        .map_err(release)?;
        let checkpoint = store
            .create_checkpoint(&journal.name, &self.name, start)
            .await
            .map_err(failed)
            .map_err(release)?;
        shared.checkpoint.send_replace(checkpoint);
        handle.spawn(run(Arc::clone(&shared)));
        Ok(PersistentSubscription { shared })
    }
}

/// A running persistent subscription; from [`Bus::subscribe_persistent`](crate::Bus::subscribe_persistent)
/// or [`PersistentBuilder`]. Dropping the handle leaves it running (until
/// [`stop`](PersistentSubscription::stop), `Bus::shutdown` or the bus is dropped).
pub struct PersistentSubscription {
    shared: Arc<Shared>,
}

impl fmt::Debug for PersistentSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl PersistentSubscription {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The checkpoint as last saved: every matching signal up to this sequence number was
    /// acknowledged.
    pub fn checkpoint(&self) -> u64 {
        *self.shared.checkpoint.borrow()
    }

    /// Waits until the checkpoint reaches `seq` (e.g. a `PublishReport::journal_seq`).
    /// Returns `false` if the subscription stopped first.
    pub async fn wait_for_checkpoint(&self, seq: u64) -> bool {
        let mut checkpoint = self.shared.checkpoint.subscribe();
        let mut done = self.shared.done.subscribe();
        tokio::select! {
            r = checkpoint.wait_for(|c| *c >= seq).map(|r| r.is_ok()) => r,
            _ = done.wait_for(|d| *d).map(|_| ()) => *self.shared.checkpoint.borrow() >= seq,
        }
    }

    /// Whether this process holds the subscription's lease now (and so delivers).
    pub fn is_active(&self) -> bool {
        self.shared.active.load(Ordering::Acquire)
    }

    /// Signals acknowledged by this process so far.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::Relaxed)
    }

    /// Signals this process dead-lettered so far.
    pub fn dead_lettered(&self) -> u64 {
        self.shared.dead_lettered.load(Ordering::Relaxed)
    }

    /// Stops delivering: lets the signals in flight finish, saves the checkpoint, gives up
    /// the lease, and frees the name on this bus.
    pub async fn stop(self) {
        self.shared.stop_and_wait().await;
    }
}

/// Dead letters of subscription `name` (for `Bus::dead_letters`).
pub(crate) async fn dead_letters(
    journal: &JournalRuntime,
    name: &str,
    limit: usize,
) -> Result<Vec<JournalDeadLetter>, JournalError> {
    journal.store.dead_letters(&journal.name, name, limit).await
}

/// Redrives dead letters through the running subscription `name` of this bus.
pub(crate) async fn redrive(
    set: &PersistentSet,
    name: &str,
    seqs: Option<&[u64]>,
) -> Option<Result<Redriven, JournalError>> {
    let shared = set.get(name)?;
    Some(shared.redrive(seqs).await)
}

/// Why a consuming round ended.
enum Exit {
    Stop,
    LeaseLost,
    Store(JournalError),
}

/// The subscription's task: takes the lease, consumes, and starts over when it loses the
/// lease or the store fails, until stopped.
async fn run(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut backoff = Duration::from_millis(100);
    let journal = Arc::clone(&shared.journal);
    loop {
        if *stop.borrow() {
            break;
        }
        let now = Utc::now();
        let until =
            now + chrono::Duration::from_std(shared.lease).unwrap_or(chrono::TimeDelta::MAX);
        match journal
            .store
            .acquire_lease(&journal.name, &shared.name, &shared.owner, until, now)
            .await
        {
            Ok(true) => {
                backoff = Duration::from_millis(100);
                shared.active.store(true, Ordering::Release);
                tracing::debug!(target: "signal_bus::journal", subscription = %shared.name, "persistent subscription active");
                let exit = consume(&shared, &mut stop).await;
                shared.active.store(false, Ordering::Release);
                match exit {
                    Exit::Stop => break,
                    Exit::LeaseLost => tracing::warn!(
                        target: "signal_bus::journal",
                        subscription = %shared.name,
                        journal = %journal.name,
                        "persistent subscription lost its lease to another process; waiting to take it back"
                    ),
                    Exit::Store(e) => {
                        tracing::warn!(
                            target: "signal_bus::journal",
                            subscription = %shared.name,
                            journal = %journal.name,
                            error = %e,
                            "persistent subscription: the journal store failed; resuming from the checkpoint"
                        );
                        wait_or_stop(&mut stop, backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
            Ok(false) => wait_or_stop(&mut stop, shared.lease / 4).await,
            Err(e) => {
                tracing::warn!(
                    target: "signal_bus::journal",
                    subscription = %shared.name,
                    error = %e,
                    "persistent subscription could not take its lease"
                );
                wait_or_stop(&mut stop, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    let _ = journal
        .store
        .release_lease(&journal.name, &shared.name, &shared.owner)
        .await;
    if let Some(set) = shared.set.upgrade() {
        let mut running = set.lock();
        if running
            .get(&shared.name)
            .is_some_and(|s| Arc::ptr_eq(s, &shared))
        {
            running.remove(&shared.name);
        }
    }
    if let Sink::Targets(targets) = &shared.sink {
        for t in targets.iter() {
            t.detach(&shared.context);
        }
    }
    shared.done.send_replace(true);
}

async fn wait_or_stop(stop: &mut watch::Receiver<bool>, wait: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = stop.wait_for(|s| *s).map(|_| ()) => {}
    }
}

type InFlight = FuturesUnordered<BoxFuture<'static, (u64, Arc<Signal>, Outcome)>>;

/// Consumes while holding the lease.
async fn consume(shared: &Arc<Shared>, stop: &mut watch::Receiver<bool>) -> Exit {
    let journal = &*shared.journal;
    let store = &*journal.store;
    let mut saved = match store.checkpoint(&journal.name, &shared.name).await {
        Ok(Some(c)) => c,
        Ok(None) => 0,
        Err(e) => return Exit::Store(e),
    };
    shared.checkpoint.send_replace(saved);
    let mut scanned = saved;
    let mut buffer: VecDeque<JournalEntry> = VecDeque::new();
    let mut pending: BTreeSet<u64> = BTreeSet::new();
    let mut in_flight: InFlight = FuturesUnordered::new();
    let mut head = journal.head.subscribe();
    let mut caught_up = false;
    let mut stopping = false;
    let renew_every = shared.lease / 3;
    let mut renew_at = tokio::time::Instant::now() + renew_every;
    let filter = |ty: &str| shared.pattern.matches(ty);
    loop {
        // Fill the window, in journal order.
        while !stopping && pending.len() < shared.max_in_flight {
            let Some(entry) = buffer.pop_front() else {
                break;
            };
            pending.insert(entry.seq);
            let signal = entry.signal;
            let seq = entry.seq;
            let delivery = shared.deliver(seq, Arc::clone(&signal));
            in_flight.push(async move { (seq, signal, delivery.await) }.boxed());
        }
        // Everything below the first outstanding signal is acknowledged.
        let safe = match (pending.first(), buffer.front()) {
            (Some(p), _) => p - 1,
            (None, Some(b)) => b.seq - 1,
            (None, None) => scanned,
        };
        if safe > saved {
            match store
                .save_checkpoint(&journal.name, &shared.name, &shared.owner, safe)
                .await
            {
                Ok(true) => {
                    saved = safe;
                    shared.checkpoint.send_replace(saved);
                }
                Ok(false) => return Exit::LeaseLost,
                Err(e) => return Exit::Store(e),
            }
        }
        // Stopped: targets finish what they hold (their own timeouts bound it); a manual
        // consumer's unanswered deliveries stay unacknowledged, delivered again later.
        if stopping && (in_flight.is_empty() || matches!(shared.sink, Sink::Manual(_))) {
            return Exit::Stop;
        }
        // Read on when the window has room and nothing is buffered.
        if !stopping && !caught_up && buffer.is_empty() && pending.len() < shared.max_in_flight {
            head.mark_unchanged();
            match store
                .read(&journal.name, scanned, PAGE, Some(&filter))
                .await
            {
                Ok(page) if page.scanned_to > scanned => {
                    scanned = page.scanned_to;
                    buffer.extend(page.entries);
                    continue;
                }
                Ok(_) => caught_up = true,
                Err(e) => return Exit::Store(e),
            }
        }
        let renew = tokio::time::sleep_until(renew_at);
        tokio::select! {
            biased;
            Some(first) = in_flight.next(), if !in_flight.is_empty() => {
                // Every delivery that is already done, then one checkpoint for them all.
                let mut next = Some(first);
                while let Some((seq, signal, outcome)) = next.take() {
                    match outcome {
                        Outcome::Acked => {
                            pending.remove(&seq);
                            shared.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        Outcome::Failed(error) => {
                            tracing::warn!(
                                target: "signal_bus::journal",
                                subscription = %shared.name,
                                seq,
                                signal_type = %signal.ty(),
                                signal_id = %signal.id(),
                                error = %error,
                                "persistent subscription dead-lettered a signal"
                            );
                            if let Err(e) = store
                                .add_dead_letter(&journal.name, &shared.name, seq, &signal, &error, Utc::now())
                                .await
                            {
                                return Exit::Store(e);
                            }
                            pending.remove(&seq);
                            shared.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        }
                        Outcome::Again => {
                            // Deliver it again, in its place among what is not yet sent.
                            pending.remove(&seq);
                            let at = buffer.partition_point(|e| e.seq < seq);
                            buffer.insert(at, JournalEntry::new(seq, Utc::now(), signal));
                        }
                        Outcome::Closed => {
                            // The consumer is gone: nothing more can be answered, and this
                            // signal and everything after it stay unacknowledged.
                            let _ = signal;
                            return Exit::Stop;
                        }
                    }
                    next = in_flight.next().now_or_never().flatten();
                }
            }
            // Stopping sends nothing new; what is buffered stays unacknowledged.
            _ = stop.wait_for(|s| *s).map(|_| ()), if !stopping => stopping = true,
            r = head.changed(), if caught_up => {
                if r.is_ok() {
                    caught_up = false;
                }
            }
            _ = tokio::time::sleep(shared.poll_interval), if caught_up => caught_up = false,
            _ = renew => {
                let now = Utc::now();
                let until = now + chrono::Duration::from_std(shared.lease).unwrap_or(chrono::TimeDelta::MAX);
                match store.acquire_lease(&journal.name, &shared.name, &shared.owner, until, now).await {
                    Ok(true) => renew_at = tokio::time::Instant::now() + renew_every,
                    Ok(false) => return Exit::LeaseLost,
                    Err(e) => return Exit::Store(e),
                }
            }
        }
    }
}
