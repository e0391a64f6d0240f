//! Delivery adapters: where a signal goes once a subscription matches it.
//!
//! | adapter | delivers to | use it for |
//! |---|---|---|
//! | [`Handler`] | an async closure | the simplest way to run code for a pattern |
//! | [`Channel`] | a `tokio::sync::mpsc::Sender<Arc<Signal>>` | a task that consumes signals (Jido's `pid`) |
//! | [`Named`] | a receiver registered on the bus by name | decoupling publishers from consumers |
//! | [`PubSub`] | an in-process topic (`bus.pubsub_subscribe(topic)`) | many listeners, each with its own copy |
//! | [`Logger`] | `tracing` events | audit trails, debugging |
//! | [`Console`] | stdout, stderr or any writer | development |
//! | [`Noop`] | nowhere | tests, conditional routing |
//!
//! Anything else implements [`Adapter`]: a name, a pure [`validate`](Adapter::validate) and
//! an async [`deliver`](Adapter::deliver).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::{context::BusContext, ConfigError, DeliveryError, Signal};

mod channel;
mod console;
mod handler;
mod logger;
mod named;
mod noop;
mod pubsub;

pub use channel::Channel;
pub use console::{Console, ConsoleFormat};
pub use handler::Handler;
pub use logger::{LogFormat, LogLevel, Logger};
pub use named::Named;
pub use noop::Noop;
pub use pubsub::PubSub;

/// Delivers signals somewhere. Object safe: targets hold an `Arc<dyn Adapter>`.
///
/// Only [`name`](Adapter::name) and [`deliver`](Adapter::deliver) are required. Implement it
/// under [`#[signal_bus::async_trait]`](crate::async_trait) (re-exported, so no dependency of
/// your own). Your adapter gets everything a target offers: retries, circuit breakers, async
/// queues, batching (through [`deliver_batch`](Adapter::deliver_batch)), dead letters.
///
/// ```
/// use signal_bus::{Adapter, ConfigError, DeliveryError, Signal};
///
/// struct Slack { channel: String }
///
/// #[signal_bus::async_trait]
/// impl Adapter for Slack {
///     fn name(&self) -> &str { "slack" }
///     fn validate(&self) -> Result<(), ConfigError> {
///         if self.channel.starts_with('#') { Ok(()) }
///         else { Err(ConfigError::invalid("channel", &self.channel, "must start with #")) }
///     }
///     async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
///         println!("{} -> {}", signal.ty(), self.channel);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// A short name for reports, metrics and logs, e.g. `"http"`.
    fn name(&self) -> &str;

    /// Checks the configuration. Pure: no I/O, no spawning. Called by `subscribe`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the bad option, its value and the rule.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Delivers one signal.
    ///
    /// # Errors
    /// A [`DeliveryError`] whose [`kind`](DeliveryError::kind) tells the retry layer what to do.
    async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError>;

    /// Delivers one shared signal. The bus calls this; override it when the adapter keeps the
    /// signal (a channel, a queue) so it can keep the `Arc` instead of copying the signal.
    ///
    /// # Errors
    /// As [`deliver`](Adapter::deliver).
    async fn deliver_shared(&self, signal: Arc<Signal>) -> Result<(), DeliveryError> {
        self.deliver(&signal).await
    }

    /// Delivers several signals at once. Default: one by one, stopping at the first failure.
    ///
    /// # Errors
    /// The first failure.
    async fn deliver_batch(&self, signals: &[Arc<Signal>]) -> Result<(), DeliveryError> {
        for signal in signals {
            self.deliver_shared(Arc::clone(signal)).await?;
        }
        Ok(())
    }

    /// Delivers without waiting, when the adapter can (a channel with room, a log line).
    ///
    /// Returns `None` when delivery must wait; the bus then calls
    /// [`deliver_shared`](Adapter::deliver_shared). This is the allocation-free fast path of
    /// `publish`; the default is `None`.
    fn try_deliver(&self, signal: &Arc<Signal>) -> Option<Result<(), DeliveryError>> {
        let _ = signal;
        None
    }

    /// Delivers without waiting, taking the caller's own reference to the signal: an
    /// adapter that keeps the signal (a channel) `take`s it out of `signal` when it delivers
    /// it, and leaves it there otherwise (delivery must wait, or failed); the bus then goes
    /// on as usual with [`try_deliver`](Adapter::try_deliver).
    ///
    /// `publish` offers the last target of a signal its own reference this way when nothing
    /// else needs the signal afterwards, which spares one clone of the `Arc` and one drop:
    /// two atomic operations on a counter the consumers write too. Take the signal only
    /// once it is delivered. Default: leaves it.
    fn try_deliver_owned(&self, signal: &mut Option<Arc<Signal>>) {
        let _ = signal;
    }

    /// Checks that the destination is reachable. Default: healthy.
    async fn health_check(&self) -> Health {
        Health::healthy()
    }

    /// The adapter this one wraps, for an adapter that delegates delivery to another (a
    /// metrics or logging layer around an `Http`, a `Forwarder` or a `Named`). Return it, and
    /// the bus reaches the wrapped adapter's own needs through the wrapper: a `Forwarder`
    /// registers its jobs on the bus's queue (and `subscribe` refuses an async one on a bus
    /// without a queue), a `Named` or `PubSub` adapter finds its bus, an `Http` adapter's
    /// request timeout sets the target's, and `subscribe` validates the adapters inside
    /// (each problem named once). A wrapper that returns `None` hides them: a `Named` or
    /// `PubSub` inside fails at delivery as not attached to a bus, an async `Forwarder`
    /// fails as attached to no queue, a default (`Auto`) one delivers inline with no durable
    /// job, an `Http` gets the default 5 s timeout. A wrapper is never split per endpoint: a
    /// webhook with several URLs inside one is one target, with one retry policy and breaker,
    /// so a retry sends again to the URLs that had succeeded (receivers deduplicate on
    /// `webhook-id`). The bus calls the wrapper's own `health_check` and `deliver_batch`:
    /// forward those too when the adapter inside has its own (a webhook's batches are one
    /// request each). Default: `None`.
    ///
    /// ```
    /// use std::sync::{atomic::{AtomicU64, Ordering}, Arc};
    /// use signal_bus::{adapter::Health, Adapter, DeliveryError, Signal};
    ///
    /// /// Counts what the adapter inside delivers.
    /// struct Counted<A> { inner: A, delivered: AtomicU64 }
    ///
    /// #[signal_bus::async_trait]
    /// impl<A: Adapter> Adapter for Counted<A> {
    ///     fn name(&self) -> &str { self.inner.name() }
    ///     async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
    ///         self.inner.deliver(signal).await?;
    ///         self.delivered.fetch_add(1, Ordering::Relaxed);
    ///         Ok(())
    ///     }
    ///     async fn deliver_batch(&self, signals: &[Arc<Signal>]) -> Result<(), DeliveryError> {
    ///         self.inner.deliver_batch(signals).await?;
    ///         self.delivered.fetch_add(signals.len() as u64, Ordering::Relaxed);
    ///         Ok(())
    ///     }
    ///     async fn health_check(&self) -> Health { self.inner.health_check().await }
    ///     fn wrapped(&self) -> Option<&dyn Adapter> { Some(&self.inner) }
    /// }
    /// ```
    fn wrapped(&self) -> Option<&dyn Adapter> {
        None
    }

    /// The bus's hooks into this crate's own adapters (see [`hooks::BusHooks`]). Hidden and
    /// sealed: its argument cannot be named outside the crate, so other adapters keep the
    /// default, `None`.
    ///
    /// Other crates can neither override it nor implement the hooks as `Adapter` methods:
    ///
    /// ```compile_fail,E0603
    /// use signal_bus::{adapter::Health, Adapter, DeliveryError, Signal};
    /// struct Mine;
    /// #[signal_bus::async_trait]
    /// impl Adapter for Mine {
    ///     fn name(&self) -> &str { "mine" }
    ///     async fn deliver(&self, _: &Signal) -> Result<(), DeliveryError> { Ok(()) }
    ///     fn bus_hooks(&self, _: signal_bus::adapter::hooks::Sealed) -> Option<&dyn signal_bus::adapter::hooks::BusHooks> { None }
    /// }
    /// ```
    ///
    /// ```compile_fail,E0407
    /// use signal_bus::{bus::BusContext, Adapter, DeliveryError, Signal};
    /// struct Mine;
    /// #[signal_bus::async_trait]
    /// impl Adapter for Mine {
    ///     fn name(&self) -> &str { "mine" }
    ///     async fn deliver(&self, _: &Signal) -> Result<(), DeliveryError> { Ok(()) }
    ///     fn attach(&self, _: &BusContext) {}
    /// }
    /// ```
    #[doc(hidden)]
    fn bus_hooks(&self, _: hooks::Sealed) -> Option<&dyn hooks::BusHooks> {
        None
    }
}

/// How many wrappers deep [`Adapter::wrapped`] is followed (a wrapper that returns itself
/// would otherwise loop).
const MAX_WRAPPERS: usize = 16;

/// Adapters behind an `Arc` are adapters too, so one adapter can serve several targets.
#[async_trait]
impl<A: Adapter + ?Sized> Adapter for Arc<A> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn validate(&self) -> Result<(), ConfigError> {
        (**self).validate()
    }
    async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
        (**self).deliver(signal).await
    }
    async fn deliver_shared(&self, signal: Arc<Signal>) -> Result<(), DeliveryError> {
        (**self).deliver_shared(signal).await
    }
    async fn deliver_batch(&self, signals: &[Arc<Signal>]) -> Result<(), DeliveryError> {
        (**self).deliver_batch(signals).await
    }
    fn try_deliver(&self, signal: &Arc<Signal>) -> Option<Result<(), DeliveryError>> {
        (**self).try_deliver(signal)
    }
    fn try_deliver_owned(&self, signal: &mut Option<Arc<Signal>>) {
        (**self).try_deliver_owned(signal)
    }
    async fn health_check(&self) -> Health {
        (**self).health_check().await
    }
    fn wrapped(&self) -> Option<&dyn Adapter> {
        (**self).wrapped()
    }
    fn bus_hooks(&self, sealed: hooks::Sealed) -> Option<&dyn hooks::BusHooks> {
        (**self).bus_hooks(sealed)
    }
}

/// What the bus needs from its own adapters besides delivery, kept out of [`Adapter`]:
/// adapters of other crates have no use for it (they cannot build a [`BusContext`]).
pub(crate) mod hooks {
    use std::{sync::Arc, time::Duration};

    use super::Adapter;
    use crate::context::BusContext;

    /// The argument of [`Adapter`]'s hidden `bus_hooks`: nameable only in this crate, so
    /// only this crate's adapters override it.
    #[derive(Debug, Clone, Copy)]
    pub struct Sealed;

    /// The bus's hooks into this crate's adapters, implemented by the built-in adapters that
    /// need one and reached through [`Adapter`]'s hidden `bus_hooks` (the bus calls them as
    /// methods of `dyn Adapter`). Every hook defaults to doing nothing.
    pub trait BusHooks: Send + Sync {
        /// Called when a target holding this adapter is subscribed on a bus, before any
        /// delivery. Adapters that deliver to the bus itself (named receivers, topics, a
        /// forwarder's queue) keep what they need.
        fn attach(&self, bus: &BusContext) {
            let _ = bus;
        }

        /// Called when the subscription holding this adapter is removed: undo what
        /// [`attach`](BusHooks::attach) registered.
        fn detach(&self, bus: &BusContext) {
            let _ = bus;
        }

        /// For an adapter with several endpoints (a webhook with several URLs): one adapter
        /// per endpoint, named by it. A target with a retry policy or a circuit breaker is
        /// split into one target per endpoint, so each endpoint has its own breaker and
        /// retries and a retry never resends to an endpoint that already succeeded.
        fn split_endpoints(&self) -> Vec<(String, Arc<dyn Adapter>)> {
            Vec::new()
        }

        /// Whether this adapter only works on a bus built with a durable queue (an async
        /// forwarder). `subscribe` refuses it on a bus without one.
        fn requires_queue(&self) -> bool {
            false
        }

        /// The adapter's own timeout for one request (an HTTP adapter's `.timeout(d)`).
        /// Timeouts compose with the target's: a [`Target`](crate::Target) without an
        /// explicit [`timeout`](crate::Target::timeout) takes this one when it is longer than
        /// the target's default, and a target whose explicit timeout is shorter than this
        /// one is refused at `subscribe` (it would cut the adapter's requests short).
        fn request_timeout(&self) -> Option<Duration> {
            None
        }
    }

    use super::MAX_WRAPPERS;

    /// The hooks as methods of any adapter: those without hooks do nothing.
    impl dyn Adapter {
        /// This adapter, then each adapter it wraps (through [`Adapter::wrapped`]), at
        /// most [`MAX_WRAPPERS`] in all.
        pub(crate) fn layers(&self) -> impl Iterator<Item = &dyn Adapter> {
            std::iter::successors(Some(self), |a| a.wrapped()).take(MAX_WRAPPERS)
        }

        /// The hooks of this adapter, or of the first adapter inside it that has some.
        fn hooks(&self) -> Option<&dyn BusHooks> {
            self.layers().find_map(|a| a.bus_hooks(Sealed))
        }

        pub(crate) fn attach(&self, bus: &BusContext) {
            if let Some(h) = self.hooks() {
                h.attach(bus);
            }
        }

        pub(crate) fn detach(&self, bus: &BusContext) {
            if let Some(h) = self.hooks() {
                h.detach(bus);
            }
        }

        /// Only the adapter's own: splitting a wrapper's inner adapter would bypass the
        /// wrapper.
        pub(crate) fn split_endpoints(&self) -> Vec<(String, Arc<dyn Adapter>)> {
            self.bus_hooks(Sealed)
                .map_or_else(Vec::new, BusHooks::split_endpoints)
        }

        pub(crate) fn requires_queue(&self) -> bool {
            self.hooks().is_some_and(BusHooks::requires_queue)
        }

        pub(crate) fn request_timeout(&self) -> Option<Duration> {
            self.hooks().and_then(BusHooks::request_timeout)
        }
    }
}

/// Whether an adapter's destination works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HealthStatus {
    /// Working.
    Healthy,
    /// Working, with problems (slow, partly failing).
    Degraded,
    /// Not working.
    Unhealthy,
}

/// The result of a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The verdict.
    pub status: HealthStatus,
    /// How long the check took, when it did I/O.
    pub latency: Option<Duration>,
    /// Why it is not healthy, or a note.
    pub message: Option<String>,
}

impl Health {
    /// Healthy, with no latency measured.
    pub fn healthy() -> Self {
        Health {
            status: HealthStatus::Healthy,
            latency: None,
            message: None,
        }
    }
    /// Unhealthy, with a reason.
    pub fn unhealthy(message: impl Into<String>) -> Self {
        Health {
            status: HealthStatus::Unhealthy,
            latency: None,
            message: Some(message.into()),
        }
    }
    /// Degraded, with a reason.
    pub fn degraded(message: impl Into<String>) -> Self {
        Health {
            status: HealthStatus::Degraded,
            latency: None,
            message: Some(message.into()),
        }
    }
    /// The same health with a measured latency.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency);
        self
    }
    /// Whether the status is [`HealthStatus::Healthy`].
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
    }
}

/// A place an adapter keeps the bus it was attached to (first attachment wins; reads are
/// lock-free).
#[derive(Debug, Default)]
pub(crate) struct AttachSlot(std::sync::OnceLock<BusContext>);

impl AttachSlot {
    pub(crate) fn set(&self, ctx: &BusContext) {
        let _ = self.0.set(ctx.clone());
    }
    pub(crate) fn get(&self) -> Option<&BusContext> {
        self.0.get()
    }
}
