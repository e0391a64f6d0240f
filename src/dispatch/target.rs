use std::{
    fmt,
    sync::{Arc, OnceLock},
    time::Duration,
};

use super::{
    middleware::Chain,
    queue::{AsyncQueue, BatchConfig},
    runtime::TargetRuntime,
};
use crate::{
    context::BusContext,
    policy::{CircuitBreaker, Mode, Overflow, RetryPolicy, MAX_QUEUE_CAPACITY},
    Adapter, ConfigError,
};

/// Default delivery timeout of a target.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest delivery timeout a target accepts.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// Queue capacity of a batching target that sets no async mode of its own.
pub const DEFAULT_BATCH_QUEUE_CAPACITY: usize = 10_000;
/// Largest batch a target may ask for.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// An adapter plus how to deliver to it: timeout, retry policy, circuit breaker, delivery
/// mode, batching and dead-letter targets.
///
/// Building a target never fails; `subscribe` (or [`Target::validate`]) reports every
/// problem at once. Each subscription gets its own breaker, queue and counters, even when
/// the same `Target` value is subscribed twice.
///
/// ```
/// use std::time::Duration;
/// use signal_bus::{adapter::{Logger, Noop}, policy::{CircuitBreaker, Jitter, Mode, Overflow, RetryPolicy}, Target};
///
/// let target = Target::new(Noop)
///     .timeout(Duration::from_secs(10))
///     .retry(RetryPolicy::exponential(Duration::from_millis(100))
///         .max_attempts(4).max_delay(Duration::from_secs(5)).jitter(Jitter::Full))
///     .circuit_breaker(CircuitBreaker::new()
///         .failure_threshold(5).recovery_timeout(Duration::from_secs(60)).half_open_max_calls(3))
///     .on_failure(Logger::error())
///     .mode(Mode::Async { capacity: 10_000, overflow: Overflow::Block })
///     .batch(100, Duration::from_secs(5))
///     .label("payments");
/// assert!(target.validate().is_ok());
/// ```
#[derive(Clone)]
pub struct Target {
    pub(crate) adapter: Arc<dyn Adapter>,
    /// How to deliver: shared by every copy of the target and, for targets built with the
    /// defaults, by every target (one static value), so a subscription allocates none.
    pub(crate) config: Arc<Config>,
    /// Live state: fresh for each activation (subscribe or dispatch).
    pub(crate) runtime: Arc<TargetRuntime>,
}

/// A target's delivery options.
#[derive(Clone)]
pub(crate) struct Config {
    /// The label; `None`: the adapter's name.
    pub(crate) name: Option<Arc<str>>,
    /// The delivery timeout in force: the explicit one, or the default raised to the
    /// adapter's own request timeout.
    pub(crate) timeout: Duration,
    /// Whether `timeout` was set with [`Target::timeout`].
    pub(crate) explicit_timeout: bool,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) on_failure: Arc<[Target]>,
    pub(crate) mode: Mode,
    pub(crate) batch: Option<BatchConfig>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.config;
        f.debug_struct("Target")
            .field("name", &self.name())
            .field("adapter", &self.adapter.name())
            .field("timeout", &c.timeout)
            .field("retry", &c.retry)
            .field("circuit_breaker", &c.breaker)
            .field("mode", &c.mode)
            .field("batch", &c.batch)
            .field("on_failure", &c.on_failure)
            .finish()
    }
}

fn inert_runtime() -> Arc<TargetRuntime> {
    static INERT: OnceLock<Arc<TargetRuntime>> = OnceLock::new();
    Arc::clone(INERT.get_or_init(Arc::default))
}

fn default_config() -> Arc<Config> {
    static DEFAULT: OnceLock<Arc<Config>> = OnceLock::new();
    Arc::clone(DEFAULT.get_or_init(|| {
        Arc::new(Config {
            name: None,
            timeout: DEFAULT_TIMEOUT,
            explicit_timeout: false,
            retry: None,
            breaker: None,
            on_failure: Arc::new([]),
            mode: Mode::Sync,
            batch: None,
        })
    }))
}

/// A fixed instant given to a closed breaker without a failure-rate window, which never
/// reads it (no clock read on the fast path).
pub(crate) fn epoch() -> tokio::time::Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    tokio::time::Instant::from_std(*EPOCH.get_or_init(std::time::Instant::now))
}

impl Target {
    /// A target delivering to `adapter` with the defaults: synchronous, 5 s timeout (or the
    /// adapter's own request timeout, an `Http` or `Webhook` `.timeout(d)`, when that is
    /// longer), no retries, no breaker, no batching, no dead letters.
    pub fn new(adapter: impl Adapter) -> Self {
        Target::from_arc(Arc::new(adapter))
    }

    /// A target delivering to a shared adapter.
    pub fn from_arc(adapter: Arc<dyn Adapter>) -> Self {
        let mut target = Target {
            adapter,
            config: default_config(),
            runtime: inert_runtime(),
        };
        if let Some(own) = target.adapter.request_timeout() {
            if own > DEFAULT_TIMEOUT {
                target.config_mut().timeout = own;
            }
        }
        target
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// How long one delivery attempt may take. Default: 5 s, or the adapter's own request
    /// timeout when that is longer (an `Http::timeout(10s)` gets 10 s); allowed: 1 ms to 24 h, and not shorter than the
    /// adapter's own timeout (`subscribe` refuses that, naming both).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        let c = self.config_mut();
        c.timeout = timeout;
        c.explicit_timeout = true;
        self
    }

    /// Retries retryable and throttled failures with this policy. Default: no retries.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.config_mut().retry = Some(policy);
        self
    }

    /// Guards the endpoint with a circuit breaker: after enough failures, deliveries fail
    /// fast with `CircuitOpen` without touching it, until probes succeed. Default: none.
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.config_mut().breaker = Some(breaker);
        self
    }

    /// Dead-letter targets: they receive every signal whose delivery to this target failed
    /// for good, with extensions `deadlettertarget`, `deadletterattempts`, `deadletterkind`
    /// and `deadlettererror`, plus `deadletternotbefore` (RFC 3339) when the receiver asked
    /// to wait longer than the retry policy allows ([`DeliveryError::RetryLater`]). May be
    /// called several times; targets add up.
    ///
    /// [`DeliveryError::RetryLater`]: crate::DeliveryError::RetryLater
    pub fn on_failure(mut self, targets: impl super::IntoTargets) -> Self {
        let mut all: Vec<Target> = self.config.on_failure.iter().cloned().collect();
        all.extend(targets.into_targets());
        self.config_mut().on_failure = all.into();
        self
    }

    /// Synchronous (the default: publish waits) or async (a bounded queue and a worker).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config_mut().mode = mode;
        self
    }

    /// Groups signals: up to `size` per `deliver_batch` call, flushed at the latest
    /// `flush_interval` after the first signal of a batch. Implies an async queue (the
    /// target's own [`Mode::Async`], or 10,000 signals with [`Overflow::Block`]).
    pub fn batch(mut self, size: usize, flush_interval: Duration) -> Self {
        self.config_mut().batch = Some(BatchConfig {
            size,
            flush_interval,
        });
        self
    }

    /// The name this target has in reports, metrics and logs. Default: the adapter's name.
    pub fn label(mut self, name: impl AsRef<str>) -> Self {
        self.config_mut().name = Some(Arc::from(name.as_ref()));
        self
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        match &self.config.name {
            Some(name) => name,
            None => self.adapter.name(),
        }
    }

    /// The adapter.
    pub fn adapter(&self) -> &Arc<dyn Adapter> {
        &self.adapter
    }

    /// The delivery timeout in force (see [`timeout`](Target::timeout)).
    pub fn get_timeout(&self) -> Duration {
        self.config.timeout
    }

    /// The delivery mode.
    pub fn get_mode(&self) -> Mode {
        self.config.mode
    }

    /// Whether `publish` hands signals to a queue instead of waiting for them.
    pub fn is_queued(&self) -> bool {
        matches!(self.config.mode, Mode::Async { .. }) || self.config.batch.is_some()
    }

    /// Checks the adapter and every policy. Pure: no I/O.
    ///
    /// # Errors
    /// Every problem found, as one [`ConfigError`] (a [`ConfigError::Many`] when several).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                match e {
                    ConfigError::Many(v) => problems.extend(v),
                    e => problems.push(e),
                }
            }
        };
        // The adapter, and those inside a wrapper (`Adapter::wrapped`) whether or not it
        // forwards `validate`: a problem found twice is named once (below).
        for adapter in self.adapter.layers() {
            check(adapter.validate());
        }
        let c = &*self.config;
        if c.timeout < Duration::from_millis(1) || c.timeout > MAX_TIMEOUT {
            check(Err(ConfigError::invalid(
                "timeout",
                format!("{:?}", c.timeout),
                "must be between 1ms and 24h",
            )));
        }
        if let Some(own) = self.adapter.request_timeout() {
            if c.explicit_timeout && own > c.timeout {
                check(Err(ConfigError::invalid(
                    "timeout",
                    format!("{:?}", c.timeout),
                    format!(
                        "is shorter than the adapter's own timeout {own:?} and would cut its \
                         requests short: give the target at least {own:?}, or the adapter less"
                    ),
                )));
            }
        }
        if self.name().is_empty() {
            check(Err(if self.config.name.is_some() {
                ConfigError::invalid("label", "", "must not be empty (set with Target::label)")
            } else {
                ConfigError::invalid(
                    "adapter name",
                    "",
                    "must not be empty: return a name from the adapter's name(), or give the \
                     target one with Target::label",
                )
            }));
        }
        if let Some(r) = &c.retry {
            check(r.validate());
        }
        if let Some(b) = &c.breaker {
            check(b.validate());
        }
        if let Mode::Async { capacity, .. } = c.mode {
            if capacity == 0 || capacity > MAX_QUEUE_CAPACITY {
                check(Err(ConfigError::invalid(
                    "capacity",
                    capacity,
                    "must be between 1 and 10,000,000",
                )));
            }
        }
        if let Some(b) = c.batch {
            if b.size == 0 || b.size > MAX_BATCH_SIZE {
                check(Err(ConfigError::invalid(
                    "batch size",
                    b.size,
                    "must be between 1 and 10,000",
                )));
            }
            if b.flush_interval < Duration::from_millis(1)
                || b.flush_interval > Duration::from_secs(3600)
            {
                check(Err(ConfigError::invalid(
                    "flush_interval",
                    format!("{:?}", b.flush_interval),
                    "must be between 1ms and 1h",
                )));
            }
        }
        for t in c.on_failure.iter() {
            if let Err(e) = t.validate() {
                check(Err(ConfigError::invalid(
                    "on_failure",
                    t.name(),
                    e.to_string(),
                )));
            }
        }
        let mut seen = std::collections::HashSet::new();
        problems.retain(|p| seen.insert(p.to_string()));
        ConfigError::from_problems(problems)
    }

    /// The live targets a subscription gets: one, or one per endpoint when the target has a
    /// retry policy or a breaker and its adapter has several endpoints (a webhook with
    /// several URLs), so each endpoint gets its own breaker, retries and counters.
    ///
    /// `middleware`: the bus's, run around each delivery to these targets (and their
    /// dead-letter targets).
    pub(crate) fn activate_all(&self, bus: &BusContext, middleware: Option<&Chain>) -> Vec<Target> {
        if self.config.retry.is_some() || self.config.breaker.is_some() {
            let parts = self.adapter.split_endpoints();
            if parts.len() > 1 {
                return parts
                    .into_iter()
                    .map(|(endpoint, adapter)| {
                        let mut config = (*self.config).clone();
                        config.name = Some(Arc::from(format!("{} {endpoint}", self.name())));
                        Target {
                            adapter,
                            config: Arc::new(config),
                            runtime: inert_runtime(),
                        }
                        .activate(Some(bus), middleware)
                    })
                    .collect();
            }
        }
        vec![self.activate(Some(bus), middleware)]
    }

    /// A copy with fresh live state (breaker, queue, counters), attached to `bus`. The
    /// options stay shared unless the target has dead-letter targets (they get fresh live
    /// state too), with the bus's `middleware` if any.
    pub(crate) fn activate(&self, bus: Option<&BusContext>, middleware: Option<&Chain>) -> Target {
        let c = &*self.config;
        let queue = match (c.mode, c.batch) {
            (Mode::Async { capacity, overflow }, batch) => {
                Some(AsyncQueue::new(capacity, overflow, batch))
            }
            (Mode::Sync, Some(batch)) => Some(AsyncQueue::new(
                DEFAULT_BATCH_QUEUE_CAPACITY,
                Overflow::Block,
                Some(batch),
            )),
            (Mode::Sync, None) => None,
        };
        let runtime = TargetRuntime::new(
            c.breaker.as_ref().map(CircuitBreaker::build),
            queue,
            bus,
            middleware,
        );
        if let Some(bus) = bus {
            self.adapter.attach(bus);
        }
        let config = if c.on_failure.is_empty() {
            Arc::clone(&self.config)
        } else {
            let mut config = c.clone();
            config.on_failure = c
                .on_failure
                .iter()
                .map(|t| t.activate(bus, middleware))
                .collect();
            Arc::new(config)
        };
        Target {
            adapter: Arc::clone(&self.adapter),
            config,
            runtime: Arc::new(runtime),
        }
    }

    /// The dead-letter targets.
    pub(crate) fn dead_letters(&self) -> &Arc<[Target]> {
        &self.config.on_failure
    }

    /// Undoes what [`activate`](Target::activate) attached to `bus`: this target's adapter
    /// and, recursively, its dead-letter targets' (a forwarder used as a dead-letter target
    /// stays registered on the queue otherwise, and keeps running its jobs).
    pub(crate) fn detach(&self, bus: &BusContext) {
        self.adapter.detach(bus);
        for t in self.dead_letters().iter() {
            t.detach(bus);
        }
    }
}

/// What `subscribe`, `dispatch` and `on_failure` take: one adapter, a [`Target`], or several
/// targets.
pub trait IntoTargets {
    /// The targets.
    fn into_targets(self) -> Vec<Target>;
}

impl<A: Adapter> IntoTargets for A {
    fn into_targets(self) -> Vec<Target> {
        vec![Target::new(self)]
    }
}

impl IntoTargets for Target {
    fn into_targets(self) -> Vec<Target> {
        vec![self]
    }
}

impl IntoTargets for Vec<Target> {
    fn into_targets(self) -> Vec<Target> {
        self
    }
}

impl<const N: usize> IntoTargets for [Target; N] {
    fn into_targets(self) -> Vec<Target> {
        self.into()
    }
}

impl IntoTargets for &[Target] {
    fn into_targets(self) -> Vec<Target> {
        self.to_vec()
    }
}
