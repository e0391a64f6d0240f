//! [`Forwarder`]: a target that delivers through the durable queue (Sigra's audit forwarder
//! dispatcher and its queued worker).

use std::{
    fmt,
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use async_trait::async_trait;
use futures_util::FutureExt as _;
use serde_json::json;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::{worker::WorkOutcome, CancelReason, Job, NewJob, Queue, DEFAULT_MAX_ATTEMPTS};
use crate::{
    adapter::{
        hooks::{BusHooks, Sealed},
        Health,
    },
    context::{validate_name, BusContext},
    policy::{Breaker, CircuitBreaker},
    Adapter, ConfigError, DeliveryError, ErrorKind, Signal,
};

/// The prefix of forwarder jobs' worker names: the jobs of forwarder `siem` run as worker
/// `signal_bus.forwarder:siem` ([`forwarder_worker`](super::forwarder_worker)), so a runner
/// claims only the forwarders its process has.
pub const FORWARDER_WORKER: &str = "signal_bus.forwarder";

/// Longest a throttled job is rescheduled for.
const MAX_THROTTLED_SNOOZE: Duration = Duration::from_secs(24 * 60 * 60);

/// Default time one queued delivery may take.
const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(30);

/// When a [`Forwarder`] delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum DispatchMode {
    /// Through the queue when a runner of the bus's queue is running in this process,
    /// inline otherwise. The default.
    #[default]
    Auto,
    /// Enqueue: `publish` returns once the signal and its job are durably committed; a
    /// runner delivers later, with retries. A bus without a queue refuses such a forwarder
    /// at `subscribe`.
    Async,
    /// Deliver inline, like any target.
    Sync,
}

/// What a queued forwarder job needs at run time, registered on the queue by name.
pub(crate) struct ForwarderJob {
    adapter: Arc<dyn Adapter>,
    timeout: Duration,
    breaker: Option<Breaker>,
    /// The queue its jobs run in.
    pub(crate) queue: String,
    /// Set when the endpoint answered 410 Gone: the runner stops claiming its jobs (they
    /// wait, nothing is spent) until [`Queue::resume_forwarder`].
    paused: AtomicBool,
}

impl ForwarderJob {
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }
    /// Returns whether it was paused.
    pub(crate) fn resume(&self) -> bool {
        self.paused.swap(false, Ordering::AcqRel)
    }
    /// Returns whether it was running.
    fn pause(&self) -> bool {
        !self.paused.swap(true, Ordering::AcqRel)
    }
}

/// A target that forwards signals through the durable queue: the signal is stored once
/// per `(source, id)`, a job carrying only a thin reference (signal source and id,
/// occurred-at) is enqueued for worker `signal_bus.forwarder:<name>`, and a runner of a
/// process where this forwarder is subscribed reloads the signal and delivers it to the
/// wrapped adapter, with retries and backoff.
///
/// How a job ends:
/// - **completed**: the adapter took the signal.
/// - **retried** with the job backoff after any failure (timeouts, 5xx, 401, 403, 404 and
///   every other permanent error alike: an expired key or a moved endpoint gets fixed), then
///   **discarded** with the last error after `max_attempts` (default 5). Discarded jobs
///   can be listed and redriven.
/// - **cancelled** only for Sigra's named reasons: `signal_not_found` (the stored signal
///   was deleted), `unknown_forwarder` (no process subscribed a forwarder of that name on
///   this queue for the grace period, [`QueueBuilder::unknown_after`](super::QueueBuilder::unknown_after)),
///   `schema_mismatch` (the stored signal no longer parses, or the adapter returned
///   [`DeliveryError::schema_mismatch`]).
/// - **paused** on 410 Gone: the endpoint says it is gone for good, which is about the
///   endpoint, not this signal. The forwarder stops claiming in this process, the job goes
///   back without spending an attempt, and every job waits until
///   [`Queue::resume_forwarder`] (an `error` event `signal_bus::endpoint_disabled` says so).
///   The pause lives in this process's memory ([`Queue::paused_forwarders`],
///   `bus.metrics().queue_paused`): other processes subscribing the same forwarder on a
///   shared queue keep claiming its jobs until they get a 410 themselves, and a restart
///   forgets it (the next job tries the endpoint again).
/// - **snoozed** without spending an attempt while its circuit breaker is open, and when the
///   receiver asks to wait (a throttled failure with a `Retry-After`, e.g. HTTP 429 or 503):
///   the job runs again at the time asked for (at least 1 s, at most a day later). A
///   receiver that keeps answering so keeps the job waiting; its attempts are not spent.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use signal_bus::{http::Webhook, queue::{DispatchMode, Forwarder, Queue, SqliteStore}, Bus};
///
/// let queue = Queue::new(SqliteStore::open("signals.db").await?);
/// let _runner = queue.start()?;
/// let bus = Bus::builder().queue(queue.clone()).build()?;
/// bus.subscribe("audit.**", Forwarder::new("siem", Webhook::new("https://siem.example.com")?)
///     .dispatch(DispatchMode::Auto))?;
/// # Ok(()) }
/// ```
pub struct Forwarder {
    /// The name jobs carry.
    key: String,
    label: String,
    job: Arc<ForwarderJob>,
    mode: DispatchMode,
    queue_name: String,
    max_attempts: u32,
    priority: i16,
    /// Whether `job_timeout` was set explicitly.
    explicit_job_timeout: bool,
    queue: OnceLock<Queue>,
}

impl fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarder")
            .field("name", &self.key)
            .field("adapter", &self.job.adapter.name())
            .field("mode", &self.mode)
            .field("queue", &self.queue_name)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl Forwarder {
    /// Forwards to `adapter` under `name` (the name jobs carry: keep it stable across
    /// deployments).
    pub fn new(name: impl Into<String>, adapter: impl Adapter) -> Self {
        let name = name.into();
        let adapter: Arc<dyn Adapter> = Arc::new(adapter);
        let timeout = adapter
            .request_timeout()
            .map_or(DEFAULT_JOB_TIMEOUT, |own| own.max(DEFAULT_JOB_TIMEOUT));
        Forwarder {
            label: format!("forwarder:{name}"),
            key: name,
            job: Arc::new(ForwarderJob {
                adapter,
                timeout,
                breaker: None,
                queue: "default".to_owned(),
                paused: AtomicBool::new(false),
            }),
            mode: DispatchMode::Auto,
            queue_name: "default".to_owned(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            priority: 0,
            explicit_job_timeout: false,
            queue: OnceLock::new(),
        }
    }

    /// Sync, async or auto. Default: [`DispatchMode::Auto`].
    pub fn dispatch(mut self, mode: DispatchMode) -> Self {
        self.mode = mode;
        self
    }

    /// The queue its jobs run in. Default: `default`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue_name = queue.into();
        job_mut(&mut self.job).queue = self.queue_name.clone();
        self
    }

    /// Attempts before a job is discarded. Default: 5.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Job priority, 0 (first) to 9. Default: 0.
    pub fn priority(mut self, p: i16) -> Self {
        self.priority = p;
        self
    }

    /// How long one queued delivery may take. Default: 30 s, or the adapter's own request
    /// timeout (an `Http` or `Webhook` `.timeout(d)`) when that is longer; not shorter than
    /// the adapter's own timeout (`subscribe` refuses that, naming both).
    pub fn job_timeout(mut self, timeout: Duration) -> Self {
        job_mut(&mut self.job).timeout = timeout;
        self.explicit_job_timeout = true;
        self
    }

    /// A breaker for queued deliveries: while open, jobs are snoozed (no attempt spent).
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        job_mut(&mut self.job).breaker = Some(breaker.build());
        self
    }

    /// The forwarder's name.
    pub fn forwarder_name(&self) -> &str {
        &self.key
    }

    fn resolved_mode(&self) -> DispatchMode {
        match (self.mode, self.queue.get()) {
            (DispatchMode::Auto, Some(q)) if q.is_running() => DispatchMode::Async,
            (DispatchMode::Auto, _) => DispatchMode::Sync,
            (mode, _) => mode,
        }
    }

    fn job_for(&self, signal: &Signal) -> NewJob {
        NewJob::new(
            super::forwarder_worker(&self.key),
            json!({
                "forwarder": self.key,
                "signal_source": signal.source(),
                "signal_id": signal.id(),
                "occurred_at": signal.time_rfc3339(),
            }),
        )
        .queue(self.queue_name.clone())
        .max_attempts(self.max_attempts)
        .priority(self.priority)
    }
}

/// The job settings, copied first if they are already shared.
fn job_mut(job: &mut Arc<ForwarderJob>) -> &mut ForwarderJob {
    if Arc::get_mut(job).is_none() {
        *job = Arc::new(ForwarderJob {
            adapter: Arc::clone(&job.adapter),
            timeout: job.timeout,
            breaker: job.breaker.as_ref().map(|b| b.config().build()),
            queue: job.queue.clone(),
            paused: AtomicBool::new(job.is_paused()),
        });
    }
    Arc::get_mut(job).unwrap_or_else(|| unreachable!("just made unique"))
}

#[async_trait]
impl Adapter for Forwarder {
    fn name(&self) -> &str {
        &self.label
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_name("forwarder", &self.key)
            .map_err(|rule| ConfigError::invalid("forwarder name", &self.key, rule))?;
        if self.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "max_attempts",
                0,
                "must be at least 1",
            ));
        }
        if !(0..=9).contains(&self.priority) {
            return Err(ConfigError::invalid(
                "priority",
                self.priority,
                "must be between 0 and 9",
            ));
        }
        if let Some(own) = self.job.adapter.request_timeout() {
            if self.explicit_job_timeout && own > self.job.timeout {
                return Err(ConfigError::invalid(
                    "job_timeout",
                    format!("{:?}", self.job.timeout),
                    format!(
                        "is shorter than the adapter's own timeout {own:?} and would cut its \
                         requests short: give the job at least {own:?}, or the adapter less"
                    ),
                ));
            }
        }
        self.job.adapter.validate()
    }

    async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
        self.deliver_shared(Arc::new(signal.clone())).await
    }

    async fn deliver_shared(&self, signal: Arc<Signal>) -> Result<(), DeliveryError> {
        match (self.resolved_mode(), self.queue.get()) {
            (DispatchMode::Async, Some(queue)) => {
                let job = self.job_for(&signal);
                match queue.enqueue_signal(signal, job).await {
                    Ok(id) => {
                        // Queued, not delivered: the publish report says so, with the job.
                        crate::context::note_enqueued(id);
                        Ok(())
                    }
                    Err(e) => Err(DeliveryError::retryable(format!(
                        "forwarder `{}` could not enqueue: {e}",
                        self.key
                    ))),
                }
            }
            (DispatchMode::Async, None) => Err(DeliveryError::permanent(format!(
                "forwarder `{}` dispatches async but is not attached to a bus with a queue",
                self.key
            ))),
            _ => self.job.adapter.deliver_shared(signal).await,
        }
    }

    async fn health_check(&self) -> Health {
        self.job.adapter.health_check().await
    }

    fn bus_hooks(&self, _: Sealed) -> Option<&dyn BusHooks> {
        Some(self)
    }
}

impl BusHooks for Forwarder {
    fn request_timeout(&self) -> Option<Duration> {
        // Async deliveries only enqueue: the job timeout bounds the adapter's request.
        match self.mode {
            DispatchMode::Async => None,
            _ => self.job.adapter.request_timeout(),
        }
    }

    fn requires_queue(&self) -> bool {
        self.mode == DispatchMode::Async
    }

    fn attach(&self, bus: &BusContext) {
        self.job.adapter.attach(bus);
        if let Some(queue) = bus.queue() {
            let previous = queue
                .inner
                .forwarders
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(self.key.clone(), Arc::clone(&self.job));
            if previous.is_some_and(|p| !Arc::ptr_eq(&p, &self.job)) {
                tracing::warn!(
                    message = "A forwarder of this name was already registered on the queue; \
                               its jobs now run through the newer one.",
                    forwarder = %self.key,
                );
            }
            if !queue.runs_queue(&self.queue_name) {
                tracing::warn!(
                    message = "This forwarder's jobs go to a queue that runners of this process \
                               do not claim from: another process must run it, or add it with \
                               QueueBuilder::queue.",
                    forwarder = %self.key,
                    queue = %self.queue_name,
                );
            }
            let _ = self.queue.set(queue.clone());
            queue.registry_changed();
        }
    }

    fn detach(&self, bus: &BusContext) {
        self.job.adapter.detach(bus);
        if let Some(queue) = bus.queue() {
            let mut forwarders = queue
                .inner
                .forwarders
                .write()
                .unwrap_or_else(|e| e.into_inner());
            // Only our own registration: a newer forwarder of the same name stays.
            if forwarders
                .get(&self.key)
                .is_some_and(|j| Arc::ptr_eq(j, &self.job))
            {
                forwarders.remove(&self.key);
            }
            drop(forwarders);
            queue.registry_changed();
        }
    }
}

impl BusContext {
    /// The durable queue the bus was built with, if any.
    pub fn queue(&self) -> Option<&Queue> {
        self.queue.as_deref()?.downcast_ref()
    }
}

/// Runs one forwarder job. `prefetched` is its signal when the runner loaded it with its
/// batch (`Ok(None)`: not stored).
pub(crate) async fn perform(
    queue: &Queue,
    job: &Job,
    prefetched: Option<Result<Option<Signal>, super::QueueError>>,
) -> WorkOutcome {
    let Some(name) = job.forwarder() else {
        return WorkOutcome::CancelFor(
            CancelReason::SchemaMismatch,
            format!("schema_mismatch: job {} is not a forwarder job", job.id),
        );
    };
    let Some((source, signal_id)) = job.signal_ref() else {
        return match job.args.get("signal_id").and_then(|v| v.as_str()) {
            // Stored before signals were keyed by source, and the signal was gone by the
            // upgrade, so its source could not be recovered.
            Some(id) => WorkOutcome::CancelFor(
                CancelReason::SignalNotFound,
                format!("signal_not_found: signal `{id}` was deleted"),
            ),
            None => WorkOutcome::CancelFor(
                CancelReason::SchemaMismatch,
                format!(
                    "schema_mismatch: job {} args lack `signal_source` or `signal_id`",
                    job.id
                ),
            ),
        };
    };
    let fj = queue
        .inner
        .forwarders
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned();
    let Some(fj) = fj.filter(|fj| !fj.is_paused()) else {
        // Unsubscribed or paused since the claim: put it back without spending an attempt,
        // for a process (or a later subscribe) that runs it.
        return WorkOutcome::Snooze(Duration::ZERO);
    };
    let loaded = match prefetched {
        Some(r) => r,
        None => queue.store().load_signal(source, signal_id).await,
    };
    let signal = match loaded {
        Ok(Some(s)) => Arc::new(s),
        Ok(None) => {
            return WorkOutcome::CancelFor(
                CancelReason::SignalNotFound,
                format!("signal_not_found: signal `{signal_id}` from `{source}` was deleted"),
            )
        }
        Err(super::QueueError::Corrupt { what }) => {
            return WorkOutcome::CancelFor(
                CancelReason::SchemaMismatch,
                format!("schema_mismatch: {what}"),
            )
        }
        Err(e) => return WorkOutcome::Error(e.to_string()),
    };
    let permit = match &fj.breaker {
        None => None,
        Some(b) => match b.try_acquire(Instant::now()) {
            Ok(p) => Some(p),
            Err(rejected) => {
                return WorkOutcome::Snooze(rejected.remaining().max(Duration::from_secs(1)))
            }
        },
    };
    // Kept for the deliver event only when one is recorded (warn covers trace).
    let traced =
        super::events::deliver_failed_enabled().then(|| (Arc::clone(&signal), Instant::now()));
    let span = crate::trace::deliver_span(&signal, name, job.id, job.attempt);
    let delivery =
        AssertUnwindSafe(fj.adapter.deliver_shared(signal).instrument(span)).catch_unwind();
    let result = match tokio::time::timeout(fj.timeout, delivery).await {
        Ok(Ok(r)) => r,
        Ok(Err(panic)) => Err(DeliveryError::from_panic(&*panic)),
        Err(_) => Err(DeliveryError::Timeout { after: fj.timeout }),
    };
    if let Some((signal, started)) = traced {
        if super::events::deliver_enabled(&result) {
            super::events::forwarder_delivered(
                job,
                name,
                fj.adapter.name(),
                &signal,
                started.elapsed(),
                result.as_ref().map(|_| ()),
            );
        }
    }
    if let (Some(b), Some(p)) = (&fj.breaker, permit) {
        let _ = if result.is_ok() {
            b.on_success(p, Instant::now())
        } else {
            b.on_failure(p, Instant::now())
        };
    }
    match result {
        Ok(()) => WorkOutcome::Ok,
        Err(e) if e.is_schema_mismatch() => WorkOutcome::CancelFor(
            CancelReason::SchemaMismatch,
            format!("schema_mismatch: {e}"),
        ),
        Err(e) if e.kind() == ErrorKind::Gone => {
            if fj.pause() {
                super::events::forwarder_paused(name, &e);
                queue.registry_changed();
            }
            WorkOutcome::Snooze(Duration::ZERO)
        }
        // The receiver asked for a wait: run again then, without spending an attempt (at
        // least a second later, so a `Retry-After: 0` cannot spin; at most a day, like an
        // HTTP `Retry-After`).
        Err(e) if e.kind() == ErrorKind::Throttled && e.retry_after().is_some() => {
            let after = e.retry_after().unwrap_or_default();
            WorkOutcome::Snooze(after.clamp(Duration::from_secs(1), MAX_THROTTLED_SNOOZE))
        }
        // Everything else, permanent failures included, is retried with the job backoff
        // until `max_attempts`, then discarded with the last error.
        Err(e) => WorkOutcome::Error(e.to_string()),
    }
}
