//! The [`Bus`]: subscriptions, the publish pipeline, named receivers and topics.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use signal_bus::{adapter::Channel, Bus, Signal};
//!
//! let bus = Bus::builder().name("app").build()?;
//! let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<Signal>>(1024);
//! let sub = bus.subscribe("user.*", Channel::new(tx))?;
//! let report = bus.publish(Signal::builder("user.created", "/accounts").build()?).await?;
//! assert!(report.is_ok() && report.len() == 1);
//! assert_eq!(rx.recv().await.unwrap().ty(), "user.created");
//! bus.unsubscribe(sub)?;
//! # Ok(()) }
//! ```

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use tokio::sync::{broadcast, mpsc};

use crate::{
    context::{BusLink, WeakBus},
    dispatch::{
        deliver_all,
        middleware::{self, Middleware},
        validate_targets, IntoTargets, Matched, Planned, PublishReport, Target,
    },
    router::{RouteId, Router},
    telemetry::{Metrics, TargetHealth, TargetMetrics},
    BusError, ConfigError, Pattern, Signal,
};

/// The type of the signal the bus publishes when a target is disabled after a 410 Gone.
pub const ENDPOINT_DISABLED_TYPE: &str = "signal_bus.endpoint.disabled";

use crate::context::validate_name;
pub use crate::context::{BusContext, Registry, SubscriptionId, Topics};

/// One subscription as the bus holds it.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) id: SubscriptionId,
    pub(crate) priority: i32,
    pub(crate) targets: Box<[Target]>,
}

/// A subscription as [`Bus::subscriptions`] lists it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SubscriptionInfo {
    /// Its id.
    pub id: SubscriptionId,
    /// Its pattern.
    pub pattern: Pattern,
    /// Its priority.
    pub priority: i32,
    /// The names of its targets.
    pub targets: Vec<String>,
}

/// What [`Bus::shutdown`] managed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Queued signals delivered (or failed for good) during the shutdown.
    pub drained: usize,
    /// Targets with signals still queued at the deadline, and how many.
    pub left: Vec<(String, usize)>,
}

impl ShutdownReport {
    /// Whether every queue was drained.
    pub fn is_complete(&self) -> bool {
        self.left.is_empty()
    }
}

fn close_queues(targets: &[Target]) {
    for t in targets {
        if let Some(q) = &t.runtime.queue {
            q.close();
        }
        close_queues(t.dead_letters());
    }
}

/// The error for a type with more segments than the bus routes, naming at most 128 bytes of
/// the type.
#[cold]
fn type_too_long(ty: &str, segments: usize, max: usize) -> BusError {
    BusError::TypeTooLong {
        ty: crate::signal::shown_type(ty),
        segments,
        max,
    }
}

impl BusLink for Inner {
    fn endpoint_disabled(self: Arc<Self>, target: &str, error: &crate::DeliveryError) {
        let signal = Signal::builder(ENDPOINT_DISABLED_TYPE, format!("/signal-bus/{}", self.name))
            .subject(target)
            .data(serde_json::json!({
                "target": target,
                "error": error.to_string(),
            }))
            .build();
        if let (Ok(signal), Ok(handle)) = (signal, tokio::runtime::Handle::try_current()) {
            let bus = Bus { inner: self };
            handle.spawn(async move {
                let _ = bus.publish(signal).await;
            });
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Workers hold their target, not the bus: tell them to finish and stop.
        let router = self.router.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, sub) in router.iter() {
            close_queues(&sub.targets);
        }
    }
}

#[derive(Debug, Default)]
struct MatchCache {
    /// Type -> (generation it was computed at, matches). Entries of older generations are
    /// misses, so subscribing never walks the map.
    map: HashMap<Box<str>, (u64, Arc<Matched>), foldhash::fast::RandomState>,
}

/// Gives every bus a process-unique id, the key of its entries in the threads' match caches
/// (an address could be reused by a later bus).
static NEXT_BUS_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct Inner {
    /// Read on every publish and written only by `close` and by (un)subscribing: kept
    /// together, apart from the locks.
    closed: AtomicBool,
    /// Bumped by every subscribe and unsubscribe: match lists of older generations are stale.
    generation: AtomicU64,
    id: u64,
    cache_capacity: usize,
    max_type_segments: usize,
    name: Arc<str>,
    context: BusContext,
    /// The journal, if the bus has one: publish appends to it before delivering.
    journal: Option<Arc<crate::journal::JournalRuntime>>,
    /// The persistent subscriptions running on this bus.
    persistent: Arc<crate::journal::PersistentSet>,
    router: RwLock<Router<Arc<Subscription>>>,
    routes: RwLock<HashMap<SubscriptionId, RouteId>>,
    cache: RwLock<MatchCache>,
    next_id: AtomicU64,
    /// The middleware, in registration order; `None` when there is none.
    middleware: Option<middleware::Chain>,
}

/// The first level of the match cache: a few entries per thread, read without a lock or a
/// shared write, in front of the bus's shared cache.
///
/// An entry holds a `Weak` reference to its match list (the shared cache holds the strong
/// one), so a thread's cache never keeps an unsubscribed target alive, and entries of a
/// dropped bus or of an older generation are misses.
mod local_cache {
    use std::{
        cell::RefCell,
        hash::BuildHasher,
        sync::{Arc, Weak},
    };

    use super::Matched;

    const SLOTS: usize = 16;

    struct Entry {
        bus: u64,
        generation: u64,
        ty: Box<str>,
        matched: Weak<Matched>,
    }

    thread_local! {
        static CACHE: RefCell<[Option<Entry>; SLOTS]> =
            const { RefCell::new([const { None }; SLOTS]) };
    }

    /// The slot of a type: foldhash with a fixed seed (no attacker gains anything from
    /// colliding types here: the worst is a miss, served by the shared cache).
    #[inline]
    fn slot(ty: &str) -> usize {
        const HASHER: foldhash::fast::FixedState =
            foldhash::fast::FixedState::with_seed(0x5167_6e61_6c42_7573);
        (HASHER.hash_one(ty) >> 32) as usize % SLOTS
    }

    /// The match list this thread cached for `ty` on bus `bus` at `generation`, if any.
    #[inline]
    pub(super) fn get(bus: u64, generation: u64, ty: &str) -> Option<Arc<Matched>> {
        let i = slot(ty);
        CACHE
            .try_with(|cache| {
                let cache = cache.try_borrow().ok()?;
                let entry = cache[i].as_ref()?;
                if entry.bus == bus && entry.generation == generation && *entry.ty == *ty {
                    entry.matched.upgrade()
                } else {
                    None
                }
            })
            .ok()
            .flatten()
    }

    /// Remembers `matched` as this thread's entry for `ty` on bus `bus` at `generation`.
    pub(super) fn put(bus: u64, generation: u64, ty: &str, matched: &Arc<Matched>) {
        let i = slot(ty);
        let _ = CACHE.try_with(|cache| {
            if let Ok(mut cache) = cache.try_borrow_mut() {
                let entry = &mut cache[i];
                match entry {
                    Some(e) if *e.ty == *ty => {
                        e.bus = bus;
                        e.generation = generation;
                        e.matched = Arc::downgrade(matched);
                    }
                    _ => {
                        *entry = Some(Entry {
                            bus,
                            generation,
                            ty: Box::from(ty),
                            matched: Arc::downgrade(matched),
                        });
                    }
                }
            }
        });
    }
}

/// Builds a [`Bus`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct BusBuilder {
    queue: Option<crate::queue::Queue>,
    journal: Option<crate::journal::Journal>,
    name: String,
    node_id: Option<String>,
    pubsub_capacity: usize,
    cache_capacity: usize,
    max_type_segments: usize,
    middleware: Vec<Arc<dyn Middleware>>,
}

impl Default for BusBuilder {
    fn default() -> Self {
        BusBuilder {
            queue: None,
            journal: None,
            name: "default".to_owned(),
            node_id: None,
            pubsub_capacity: 1024,
            cache_capacity: 4096,
            max_type_segments: crate::signal::DEFAULT_MAX_TYPE_SEGMENTS,
            middleware: Vec::new(),
        }
    }
}

impl BusBuilder {
    /// The bus name, in telemetry and errors. Default: `"default"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The id of this bus among the nodes of a cluster. Signals this bus sends to NATS carry
    /// it, so its bridge recognises (and skips) its own signals when they come back. Give a
    /// stable id to a node whose bridge uses a durable consumer, so it also recognises what it
    /// published before a restart. Default: the bus name, a dash and a new UUIDv7.
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = Some(id.into());
        self
    }

    /// The durable queue forwarders on this bus enqueue into (and register on, so the
    /// queue's runners find them by name). Default: none.
    pub fn queue(mut self, queue: crate::queue::Queue) -> Self {
        self.queue = Some(queue);
        self
    }

    /// The journal every published signal is appended to, durably and with a sequence
    /// number, before it is delivered: what [`Bus::replay`] reads and persistent
    /// subscriptions ([`Bus::subscribe_persistent`]) follow. A store (a
    /// [`SqliteStore`](crate::queue::SqliteStore), `PostgresStore`,
    /// [`MemoryStore`](crate::queue::MemoryStore): the queue's store types) or a
    /// [`Journal`](crate::journal::Journal) with options. Default: none, and a bus without a
    /// journal pays nothing for it.
    pub fn journal(mut self, journal: impl Into<crate::journal::Journal>) -> Self {
        self.journal = Some(journal.into());
        self
    }

    /// How many signals each topic receiver may fall behind before it lags. Default: 1024.
    pub fn pubsub_capacity(mut self, capacity: usize) -> Self {
        self.pubsub_capacity = capacity;
        self
    }

    /// How many distinct signal types the match cache remembers. Default: 4096; 0 disables
    /// it.
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The most dot-separated segments a published signal's type may have. `publish` refuses
    /// a longer type with [`BusError::TypeTooLong`], which names the type, its segment count
    /// and this limit. Routing a new type costs at most (trie nodes) x (segments + 1) steps,
    /// so this bounds the worst case of an uncached lookup. Default:
    /// [`DEFAULT_MAX_TYPE_SEGMENTS`](crate::signal::DEFAULT_MAX_TYPE_SEGMENTS) (32); allowed:
    /// 1 to [`MAX_TYPE_SEGMENTS`](crate::signal::MAX_TYPE_SEGMENTS) (128, what a signal may
    /// have at all).
    pub fn max_type_segments(mut self, max: usize) -> Self {
        self.max_type_segments = max;
        self
    }

    /// Adds a [`Middleware`]: hooks around every publish and every target's delivery. Called
    /// several times, the middleware run in the order they were added. Default: none (and a
    /// bus without middleware runs no hook at all). See [`middleware`].
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Builds the bus.
    ///
    /// # Errors
    /// Every invalid option: an empty, over-long or control-character name or node id, a
    /// zero pubsub capacity, a zero `max_type_segments`, a middleware with an empty name.
    pub fn build(self) -> Result<Bus, ConfigError> {
        let mut problems = Vec::new();
        if let Err(rule) = validate_name("name", &self.name) {
            problems.push(ConfigError::invalid("bus name", &self.name, rule));
        }
        if let Some(id) = &self.node_id {
            if let Err(rule) = validate_name("node_id", id) {
                problems.push(ConfigError::invalid("node_id", id, rule));
            }
        }
        if self.pubsub_capacity == 0 {
            problems.push(ConfigError::invalid(
                "pubsub_capacity",
                0,
                "must be at least 1",
            ));
        }
        if !(1..=crate::signal::MAX_TYPE_SEGMENTS).contains(&self.max_type_segments) {
            problems.push(ConfigError::invalid(
                "max_type_segments",
                self.max_type_segments,
                format!("must be between 1 and {}", crate::signal::MAX_TYPE_SEGMENTS),
            ));
        }
        if let Some(journal) = &self.journal {
            journal.validate(&mut problems);
        }
        for (i, m) in self.middleware.iter().enumerate() {
            if m.name().is_empty() {
                problems.push(ConfigError::invalid(
                    "middleware name",
                    format!("\"\" (middleware #{}, counting from 1)", i + 1),
                    "must not be empty: return a name from Middleware::name",
                ));
            }
        }
        ConfigError::from_problems(problems)?;
        let middleware: Option<middleware::Chain> =
            (!self.middleware.is_empty()).then(|| self.middleware.into());
        let journal = self.journal.map(|j| j.start(&self.name));
        let node_id: Arc<str> = match self.node_id {
            Some(id) => Arc::from(id),
            None => Arc::from(format!("{}-{}", self.name, uuid::Uuid::now_v7().simple())),
        };
        let name: Arc<str> = Arc::from(self.name);
        Ok(Bus {
            inner: Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| Inner {
                context: BusContext {
                    name: Arc::clone(&name),
                    node_id,
                    registry: Registry::new(),
                    topics: Topics::new(self.pubsub_capacity),
                    bus: WeakBus(weak.clone()),
                    queue: self
                        .queue
                        .clone()
                        .map(|q| Arc::new(q) as Arc<dyn std::any::Any + Send + Sync>),
                },
                name,
                journal,
                persistent: Arc::default(),
                router: RwLock::new(Router::new()),
                routes: RwLock::default(),
                cache: RwLock::default(),
                cache_capacity: self.cache_capacity,
                max_type_segments: self.max_type_segments,
                next_id: AtomicU64::new(1),
                middleware,
                closed: AtomicBool::new(false),
                generation: AtomicU64::new(0),
                id: NEXT_BUS_ID.fetch_add(1, Ordering::Relaxed),
            }),
        })
    }
}

/// An async event bus: subscriptions match signal types by pattern, and `publish` delivers
/// each signal to every target of every matching subscription.
///
/// `Bus` is cheap to clone (an `Arc` inside) and `Send + Sync`: share it freely.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use serde_json::json;
/// use signal_bus::{adapter::{Channel, Handler}, Bus, DeliveryError, Signal};
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let bus = Bus::builder().name("shop").build()?;
///
///     // Every order signal goes to a channel; paid orders also to a handler that fails.
///     let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<Signal>>(16);
///     let orders = bus.subscribe("order.*", Channel::new(tx))?;
///     bus.subscribe(
///         "order.paid",
///         Handler::new(|_signal: Arc<Signal>| async {
///             Err(DeliveryError::permanent("the ledger is read-only"))
///         }),
///     )?;
///
///     let report = bus.publish(Signal::new("order.paid", "/shop", json!({"id": 7}))?).await?;
///     assert_eq!((report.delivered(), report.failed()), (1, 1));
///     assert_eq!(rx.recv().await.unwrap().ty(), "order.paid");
///
///     // Nothing matches any more: the report is empty, and that is not an error.
///     bus.unsubscribe(orders)?;
///     let report = bus.publish(Signal::new("order.placed", "/shop", json!({}))?).await?;
///     assert!(report.is_empty() && report.is_ok());
///
///     // Stop accepting signals and drain what async targets still hold.
///     assert!(bus.shutdown(Duration::from_secs(5)).await.is_complete());
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("name", &self.inner.name)
            .field("subscriptions", &self.len())
            .finish()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl Bus {
    /// Starts building a bus.
    pub fn builder() -> BusBuilder {
        BusBuilder::default()
    }

    /// The bus name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The id of this bus among the nodes of a cluster (see [`BusBuilder::node_id`]).
    pub fn node_id(&self) -> &str {
        &self.inner.context.node_id
    }

    /// What adapters attached to this bus see: its registry and topics.
    pub fn context(&self) -> &BusContext {
        &self.inner.context
    }

    /// Subscribes `targets` to signals whose type matches `pattern`, with priority 0.
    ///
    /// `targets` is one adapter, a [`Target`], or a `Vec<Target>`.
    ///
    /// # Errors
    /// A bad pattern, no targets, or a target that fails validation
    /// ([`BusError::InvalidTarget`] names it and the rule).
    pub fn subscribe(
        &self,
        pattern: &str,
        targets: impl IntoTargets,
    ) -> Result<SubscriptionId, BusError> {
        self.subscribe_with_priority(pattern, 0, targets)
    }

    /// Subscribes with a priority in -100..=100 (higher first among equally specific
    /// matches).
    ///
    /// # Errors
    /// As [`subscribe`](Bus::subscribe), plus [`BusError::Priority`].
    pub fn subscribe_with_priority(
        &self,
        pattern: &str,
        priority: i32,
        targets: impl IntoTargets,
    ) -> Result<SubscriptionId, BusError> {
        let pattern = Pattern::parse(pattern)?;
        if !(-100..=100).contains(&priority) {
            return Err(BusError::Priority { value: priority });
        }
        let targets = targets.into_targets();
        if targets.is_empty() {
            return Err(BusError::NoTargets {
                pattern: pattern.to_string(),
            });
        }
        validate_targets(&targets)?;
        if self.inner.context.queue.is_none() {
            if let Some(t) = targets.iter().find(|t| t.adapter.requires_queue()) {
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
        let targets: Box<[Target]> = targets
            .iter()
            .flat_map(|t| t.activate_all(&self.inner.context, self.inner.middleware.as_ref()))
            .collect();
        let id = SubscriptionId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let sub = Arc::new(Subscription {
            id,
            priority,
            targets,
        });
        {
            let mut router = write(&self.inner.router);
            let route = router.add_pattern(pattern, priority, sub)?;
            write(&self.inner.routes).insert(id, route);
        }
        self.invalidate();
        Ok(id)
    }

    /// Removes a subscription. Deliveries already under way finish.
    ///
    /// # Errors
    /// [`BusError::UnknownSubscription`] when it does not exist.
    pub fn unsubscribe(&self, id: SubscriptionId) -> Result<(), BusError> {
        let removed = {
            let mut router = write(&self.inner.router);
            let route = write(&self.inner.routes)
                .remove(&id)
                .ok_or(BusError::UnknownSubscription { id: id.0 })?;
            router.remove(route)
        };
        self.invalidate();
        // Queued signals are still delivered; then the workers stop.
        if let Some(sub) = removed {
            close_queues(&sub.targets);
            for t in sub.targets.iter() {
                t.detach(&self.inner.context);
            }
        }
        Ok(())
    }

    fn all_subscriptions(&self) -> Vec<Arc<Subscription>> {
        let router = read(&self.inner.router);
        let mut subs: Vec<Arc<Subscription>> = router.iter().map(|(_, s)| Arc::clone(s)).collect();
        subs.sort_by_key(|s| s.id);
        subs
    }

    /// Counters, queue depth, latency and breaker state of every target.
    pub fn metrics(&self) -> Metrics {
        let mut targets = Vec::new();
        for sub in self.all_subscriptions() {
            for t in sub.targets.iter() {
                let rt = &t.runtime;
                let stats = rt.stats_if_used();
                let count = |f: fn(&crate::dispatch::Counters) -> &AtomicU64| {
                    stats.map_or(0, |s| f(&s.counters).load(Ordering::Relaxed))
                };
                targets.push(TargetMetrics {
                    subscription: sub.id,
                    target: t.name().to_owned(),
                    delivered: rt.delivered(),
                    queued: count(|c| &c.queued),
                    failed: count(|c| &c.failed),
                    retried: count(|c| &c.retried),
                    dropped: count(|c| &c.dropped),
                    dead_lettered: count(|c| &c.dead_lettered),
                    queue_depth: rt.queue.as_ref().map_or(0, |q| q.depth()),
                    latency_p50: rt.latency_quantile(0.5),
                    latency_p99: rt.latency_quantile(0.99),
                    circuit: rt.breaker.as_ref().map(|b| b.state()),
                    disabled: rt.disabled.load(Ordering::Relaxed),
                });
            }
        }
        let durable = self.inner.context.queue();
        Metrics {
            targets,
            queue: durable.and_then(crate::queue::Queue::cached_counts),
            queue_unregistered: durable.and_then(crate::queue::Queue::cached_unregistered),
            queue_paused: durable.map_or_else(Vec::new, crate::queue::Queue::paused_forwarders),
        }
    }

    /// Pushes the current [`metrics`](Bus::metrics) through the `metrics` crate facade
    /// (feature `metrics`): `signal_bus_{delivered,queued,failed,retried,dropped,dead_lettered}_total`
    /// counters and `signal_bus_queue_depth`, `signal_bus_latency_p{50,99}_seconds` and
    /// `signal_bus_circuit_state` (0 closed, 1 half-open, 2 open) gauges, labelled `bus`,
    /// `subscription` and `target`. Nothing is recorded on the delivery path itself.
    #[cfg(feature = "metrics")]
    pub fn export_metrics(&self) {
        crate::telemetry::export(&self.inner.name, &self.metrics());
    }

    /// Calls [`export_metrics`](Bus::export_metrics) every `interval` until the bus is
    /// dropped (feature `metrics`), on a task of the current tokio runtime.
    ///
    /// # Errors
    /// [`BusError::NoRuntime`] when called outside a tokio runtime.
    #[cfg(feature = "metrics")]
    pub fn spawn_metrics_exporter(
        &self,
        interval: Duration,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
        let handle = crate::error::runtime_for("Bus::spawn_metrics_exporter")?;
        let weak = Arc::downgrade(&self.inner);
        Ok(handle.spawn(async move {
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(inner) => Bus { inner }.export_metrics(),
                    None => return,
                }
            }
        }))
    }

    /// Runs every target's health check, concurrently.
    pub async fn health(&self) -> Vec<TargetHealth> {
        let subs = self.all_subscriptions();
        let checks = subs.iter().flat_map(|sub| {
            sub.targets.iter().map(move |t| async move {
                let rt = &t.runtime;
                let mut health = t.adapter.health_check().await;
                if rt.disabled.load(Ordering::Relaxed) {
                    health = crate::adapter::Health::unhealthy("disabled after 410 Gone");
                } else if rt.breaker.as_ref().map(|b| b.state())
                    == Some(crate::policy::CircuitState::Open)
                {
                    health = crate::adapter::Health::unhealthy("circuit breaker is open");
                }
                TargetHealth {
                    subscription: sub.id,
                    target: t.name().to_owned(),
                    status: health.status,
                    latency: health.latency,
                    message: health.message,
                    last_success: rt.last_success(),
                    last_error: rt.last_error(),
                }
            })
        });
        futures_util::future::join_all(checks).await
    }

    /// Re-enables targets named `target` of a subscription after a 410 Gone disabled them;
    /// returns how many were disabled.
    ///
    /// # Errors
    /// [`BusError::UnknownSubscription`].
    pub fn enable_target(&self, id: SubscriptionId, target: &str) -> Result<usize, BusError> {
        let sub = self
            .all_subscriptions()
            .into_iter()
            .find(|s| s.id == id)
            .ok_or(BusError::UnknownSubscription { id: id.0 })?;
        Ok(sub
            .targets
            .iter()
            .filter(|t| t.name() == target)
            .filter(|t| t.runtime.disabled.swap(false, Ordering::AcqRel))
            .count())
    }

    /// Stops accepting signals, then lets every async queue deliver what it holds, until
    /// `deadline` from now. Reports what was delivered and what was left undelivered.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.close();
        let until = tokio::time::Instant::now() + deadline;
        // Persistent subscriptions finish what they have in flight and save their
        // checkpoints first: they deliver through targets the queues below drain.
        self.inner.persistent.stop_all(until).await;
        let mut report = ShutdownReport::default();
        let subs = self.all_subscriptions();
        // Every queued target, dead-letter targets included (they may get signals while
        // the others drain, so they are drained too).
        fn queued<'a>(targets: &'a [Target], out: &mut Vec<&'a Target>) {
            for t in targets {
                if t.runtime.queue.is_some() {
                    out.push(t);
                }
                queued(t.dead_letters(), out);
            }
        }
        let mut targets = Vec::new();
        for sub in &subs {
            queued(&sub.targets, &mut targets);
        }
        let drains = targets.into_iter().filter_map(|t| {
            let q = t.runtime.queue.as_ref()?;
            let queued = q.pending();
            Some(async move { (t.name().to_owned(), queued, q.drain(until).await) })
        });
        for (target, queued, left) in futures_util::future::join_all(drains).await {
            report.drained += queued.saturating_sub(left);
            if left > 0 {
                report.left.push((target, left));
            }
        }
        report
    }

    /// Makes every cached match list stale (a subscription was added or removed) and lets go
    /// of them: a list holds its targets, and with them what their adapters hold (a
    /// channel's sender), which must not outlive an unsubscribe. Entries are emptied after
    /// the generation moves on, under the cache's lock, so a publish that computed its list
    /// before cannot file it afterwards; they are dropped after the lock is released.
    fn invalidate(&self) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        let stale = std::mem::take(&mut write(&self.inner.cache).map);
        drop(stale);
    }

    /// The subscriptions, oldest first.
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        let router = read(&self.inner.router);
        let routes = read(&self.inner.routes);
        let mut list: Vec<SubscriptionInfo> = routes
            .iter()
            .filter_map(|(id, route)| {
                let sub = router.get(*route)?;
                let pattern = router.pattern(*route)?.clone();
                Some(SubscriptionInfo {
                    id: *id,
                    pattern,
                    priority: sub.priority,
                    targets: sub.targets.iter().map(|t| t.name().to_owned()).collect(),
                })
            })
            .collect();
        list.sort_by_key(|s| s.id);
        list
    }

    /// How many subscriptions the bus has.
    pub fn len(&self) -> usize {
        read(&self.inner.routes).len()
    }

    /// Whether the bus has no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The match list of `ty`: from this thread's cache (no lock, no shared write), else
    /// from the bus's shared cache, else from the router.
    #[inline]
    fn matched(&self, ty: &str) -> Arc<Matched> {
        let inner = &*self.inner;
        // Read before the lists are: a list computed after a subscribe that has not yet
        // bumped the generation is filed under the older one, and missed from then on.
        let generation = inner.generation.load(Ordering::Acquire);
        if inner.cache_capacity > 0 {
            if let Some(m) = local_cache::get(inner.id, generation, ty) {
                return m;
            }
        }
        self.matched_shared(ty, generation)
    }

    #[inline(never)]
    fn matched_shared(&self, ty: &str, generation: u64) -> Arc<Matched> {
        let inner = &*self.inner;
        if inner.cache_capacity == 0 {
            return Arc::new(self.compute_matched(ty));
        }
        let cached = match read(&inner.cache).map.get(ty) {
            Some((g, m)) if *g == generation => Some(Arc::clone(m)),
            _ => None,
        };
        let matched = match cached {
            Some(m) => m,
            None => {
                let matched = Arc::new(self.compute_matched(ty));
                let mut cache = write(&inner.cache);
                // Only cache what was computed from the current subscriptions.
                if inner.generation.load(Ordering::Acquire) != generation {
                    return matched;
                }
                if cache.map.len() >= inner.cache_capacity && !cache.map.contains_key(ty) {
                    cache.map.clear();
                }
                cache
                    .map
                    .insert(Box::from(ty), (generation, Arc::clone(&matched)));
                matched
            }
        };
        local_cache::put(inner.id, generation, ty, &matched);
        matched
    }

    fn compute_matched(&self, ty: &str) -> Matched {
        let router = read(&self.inner.router);
        let targets = router
            .route_ids(ty)
            .iter()
            .filter_map(|id| router.get(*id))
            .flat_map(|sub| sub.targets.iter().map(|t| (sub.id, t.clone())))
            .collect();
        Matched { targets }
    }

    /// Delivers `signal` to every target of every subscription whose pattern matches its
    /// type, and reports each target's outcome.
    ///
    /// Targets are served in order (more specific subscriptions first, then higher priority,
    /// then older); one failing never stops the others. Synchronous targets are awaited.
    ///
    /// # Errors
    /// Only when the bus cannot accept the signal: [`BusError::Closed`], a type with more
    /// segments than [`BusBuilder::max_type_segments`] ([`BusError::TypeTooLong`]), or a
    /// [middleware] that refused it ([`BusError::Refused`]); delivery
    /// failures are outcomes in the report.
    pub async fn publish(&self, signal: impl Into<Arc<Signal>>) -> Result<PublishReport, BusError> {
        let signal: Arc<Signal> = signal.into();
        // Stamps the current span's trace context on a signal without one (`crate::trace`).
        #[cfg(feature = "opentelemetry")]
        let signal = crate::trace::inject(signal);
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed {
                bus: self.inner.name.to_string(),
            });
        }
        // A type has at most one segment more than it has bytes: only long types are counted.
        if signal.ty().len() >= self.inner.max_type_segments {
            let segments = crate::signal::type_segments(signal.ty());
            if segments > self.inner.max_type_segments {
                return Err(type_too_long(
                    signal.ty(),
                    segments,
                    self.inner.max_type_segments,
                ));
            }
        }
        // One path for every bus: a separate, boxed path for buses with a journal or
        // middleware made the plain publish slower, not faster (its result was copied
        // through more temporaries: 96 against 126 ns per publish to one channel subscriber).
        let signal = match &self.inner.middleware {
            None => signal,
            Some(chain) => self.type_checked(middleware::before_publish(chain, signal).await?)?,
        };
        let started = crate::telemetry::publish_enabled().then(Instant::now);
        let seq = match &self.inner.journal {
            None => None,
            Some(journal) => Some(self.append(journal, &signal).await?),
        };
        let mut report = PublishReport::new(Planned::Subscriptions(self.matched(signal.ty())));
        report.journal_seq = seq;
        // The publish event and `after_publish` name the signal: keep it then; otherwise the
        // last target may take this reference.
        let keep = started.is_some() || self.inner.middleware.is_some();
        let kept = deliver_all(signal, &mut report, keep).await;
        if let (Some(chain), Some(signal)) = (&self.inner.middleware, &kept) {
            middleware::after_publish(chain, signal, &report);
        }
        if let (Some(started), Some(signal)) = (started, kept) {
            self.published(started, &signal, &report);
        }
        Ok(report)
    }

    /// The `signal_bus::publish` event.
    #[cold]
    fn published(&self, started: Instant, signal: &Signal, report: &PublishReport) {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        crate::telemetry::published(
            &self.inner.name,
            signal,
            crate::telemetry::PublishCounts {
                targets: report.len(),
                delivered: report.delivered(),
                queued: report.queued(),
                dropped: report.dropped(),
                failed: report.failed(),
            },
            micros,
        );
    }

    /// Appends `signal` to the journal (the cold part of `publish`).
    #[inline(never)]
    async fn append(
        &self,
        journal: &Arc<crate::journal::JournalRuntime>,
        signal: &Arc<Signal>,
    ) -> Result<u64, BusError> {
        journal
            .append(Arc::clone(signal))
            .await
            .map_err(|source| BusError::Journal {
                journal: journal.name.to_string(),
                source,
            })
    }

    /// The type-length check again, for a signal a middleware rewrote (only long types are
    /// counted, as in `publish`).
    fn type_checked(&self, signal: Arc<Signal>) -> Result<Arc<Signal>, BusError> {
        let max = self.inner.max_type_segments;
        if signal.ty().len() >= max {
            let segments = crate::signal::type_segments(signal.ty());
            if segments > max {
                return Err(type_too_long(signal.ty(), segments, max));
            }
        }
        Ok(signal)
    }

    /// Registers a named receiver for the [`Named`](crate::adapter::Named) adapter.
    ///
    /// # Errors
    /// An invalid name, or one a live receiver already has.
    pub fn register(
        &self,
        name: impl Into<String>,
        sender: mpsc::Sender<Arc<Signal>>,
    ) -> Result<(), BusError> {
        self.inner.context.registry.register(name, sender)
    }

    /// Removes a named receiver; returns whether it was registered.
    pub fn unregister(&self, name: &str) -> bool {
        self.inner.context.registry.unregister(name)
    }

    /// The registry of named receivers.
    pub fn registry(&self) -> &Registry {
        &self.inner.context.registry
    }

    /// A receiver of the in-process topic `topic` (fed by the
    /// [`PubSub`](crate::adapter::PubSub) adapter).
    pub fn pubsub_subscribe(&self, topic: &str) -> broadcast::Receiver<Arc<Signal>> {
        self.inner.context.topics.subscribe(topic)
    }

    /// The name of the bus's journal, if it has one.
    pub fn journal_name(&self) -> Option<&str> {
        self.inner.journal.as_ref().map(|j| &*j.name)
    }

    fn journal_for(
        &self,
        call: &'static str,
    ) -> Result<&Arc<crate::journal::JournalRuntime>, BusError> {
        self.inner
            .journal
            .as_ref()
            .ok_or_else(|| BusError::NoJournal {
                call,
                bus: self.inner.name.to_string(),
            })
    }

    fn journal_error(
        journal: &crate::journal::JournalRuntime,
    ) -> impl Fn(crate::journal::JournalError) -> BusError + '_ {
        move |source| BusError::Journal {
            journal: journal.name.to_string(),
            source,
        }
    }

    /// The journaled signals whose type matches `pattern`, in journal order, from `from`:
    /// a [`Stream`](futures_util::Stream) of `Result<Arc<Signal>, JournalError>` that reads
    /// the journal a page at a time (never all of it into memory) and ends once it has
    /// caught up with the journal.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use futures_util::StreamExt;
    /// use signal_bus::{journal::Replay, queue::MemoryStore, Bus, Signal};
    ///
    /// let bus = Bus::builder().journal(MemoryStore::new()).build()?;
    /// for ty in ["order.placed", "user.created", "order.paid"] {
    ///     bus.publish(Signal::builder(ty, "/shop").build()?).await?;
    /// }
    /// let mut replay = bus.replay("order.*", Replay::Beginning).await?;
    /// let mut types = Vec::new();
    /// while let Some(signal) = replay.next().await {
    ///     types.push(signal?.ty().to_owned());
    /// }
    /// assert_eq!(types, ["order.placed", "order.paid"]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A bad pattern, [`BusError::NoJournal`], or [`BusError::Journal`] when the start
    /// position cannot be read.
    pub async fn replay(
        &self,
        pattern: &str,
        from: crate::journal::Replay,
    ) -> Result<crate::journal::ReplayStream, BusError> {
        let pattern = Pattern::parse(pattern)?;
        let journal = self.journal_for("Bus::replay")?;
        let after = match from {
            crate::journal::Replay::Beginning => 0,
            crate::journal::Replay::After(seq) => seq,
            crate::journal::Replay::Since(time) => journal
                .store
                .seq_before(&journal.name, time)
                .await
                .map_err(Self::journal_error(journal))?,
        };
        Ok(crate::journal::ReplayStream::new(
            Arc::clone(&journal.store),
            Arc::clone(&journal.name),
            pattern,
            after,
        ))
    }

    /// Options for a persistent subscription named `name` over the journal's signals whose
    /// type matches `pattern`; finish with [`targets`](crate::journal::PersistentBuilder::targets)
    /// and [`start`](crate::journal::PersistentBuilder::start), or
    /// [`manual`](crate::journal::PersistentBuilder::manual) to acknowledge by hand.
    pub fn persistent(
        &self,
        name: impl Into<String>,
        pattern: &str,
    ) -> crate::journal::PersistentBuilder {
        crate::journal::PersistentBuilder {
            name: name.into(),
            pattern: pattern.to_owned(),
            targets: Vec::new(),
            start: crate::journal::StartAt::default(),
            max_in_flight: 1,
            lease: crate::journal::DEFAULT_LEASE,
            poll_interval: crate::journal::DEFAULT_POLL_INTERVAL,
            journal: self.inner.journal.clone(),
            context: self.inner.context.clone(),
            set: Arc::clone(&self.inner.persistent),
            has_queue: self.inner.context.queue.is_some(),
            middleware: self.inner.middleware.clone(),
        }
    }

    /// A persistent subscription with the defaults: a named, durable cursor over the
    /// journal that delivers the signals matching `pattern` to `targets` in journal order,
    /// one at a time, starting with signals published from now on. After a restart (same
    /// name, same store) it resumes after the last acknowledged signal. See
    /// [`persistent`](Bus::persistent) for the options.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use signal_bus::{adapter::Channel, queue::MemoryStore, Bus, Signal};
    ///
    /// let bus = Bus::builder().journal(MemoryStore::new()).build()?;
    /// let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<Signal>>(16);
    /// let billing = bus.subscribe_persistent("billing", "order.**", Channel::new(tx)).await?;
    /// let report = bus.publish(Signal::builder("order.paid", "/shop").build()?).await?;
    /// assert_eq!(rx.recv().await.unwrap().ty(), "order.paid");
    /// assert!(billing.wait_for_checkpoint(report.journal_seq().unwrap()).await);
    /// billing.stop().await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`PersistentBuilder::start`](crate::journal::PersistentBuilder::start).
    pub async fn subscribe_persistent(
        &self,
        name: impl Into<String>,
        pattern: &str,
        targets: impl IntoTargets,
    ) -> Result<crate::journal::PersistentSubscription, BusError> {
        self.persistent(name, pattern)
            .targets(targets)
            .start()
            .await
    }

    /// The dead letters of persistent subscription `name` (oldest first, at most `limit`):
    /// the signals its targets failed for good.
    ///
    /// # Errors
    /// [`BusError::NoJournal`], or [`BusError::Journal`] when the store cannot be read.
    pub async fn dead_letters(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<crate::journal::JournalDeadLetter>, BusError> {
        let journal = self.journal_for("Bus::dead_letters")?;
        crate::journal::persistent_dead_letters(journal, name, limit)
            .await
            .map_err(Self::journal_error(journal))
    }

    /// Delivers dead letters of persistent subscription `name` again, through its targets:
    /// those with the given sequence numbers, or all for `None`. Delivered ones leave the
    /// list; those that fail again stay with the new error. The subscription must run on
    /// this bus.
    ///
    /// # Errors
    /// [`BusError::NoJournal`], [`BusError::UnknownPersistent`] when the subscription does
    /// not run here, or [`BusError::Journal`].
    pub async fn redrive(
        &self,
        name: &str,
        seqs: Option<&[u64]>,
    ) -> Result<crate::journal::Redriven, BusError> {
        let journal = self.journal_for("Bus::redrive")?;
        match crate::journal::persistent_redrive(&self.inner.persistent, name, seqs).await {
            Some(result) => result.map_err(Self::journal_error(journal)),
            None => Err(BusError::UnknownPersistent {
                name: name.to_owned(),
            }),
        }
    }

    /// Deletes every dead letter of persistent subscription `name`; returns how many.
    ///
    /// # Errors
    /// [`BusError::NoJournal`], or [`BusError::Journal`].
    pub async fn clear_dead_letters(&self, name: &str) -> Result<usize, BusError> {
        let journal = self.journal_for("Bus::clear_dead_letters")?;
        journal
            .store
            .take_dead_letters(&journal.name, name, None)
            .await
            .map(|taken| taken.len())
            .map_err(Self::journal_error(journal))
    }

    /// Deletes persistent subscription `name` from the journal's store: its checkpoint,
    /// lease and dead letters (a later subscription of that name starts afresh). Returns
    /// whether it existed. It must not run on this bus.
    ///
    /// # Errors
    /// [`BusError::NoJournal`], [`BusError::PersistentTaken`] when it runs here, or
    /// [`BusError::Journal`].
    pub async fn delete_persistent(&self, name: &str) -> Result<bool, BusError> {
        let journal = self.journal_for("Bus::delete_persistent")?;
        if self.inner.persistent.get(name).is_some() {
            return Err(BusError::PersistentTaken {
                name: name.to_owned(),
            });
        }
        journal
            .store
            .delete_subscription(&journal.name, name)
            .await
            .map_err(Self::journal_error(journal))
    }

    /// Deletes what the journal's retention lets go now (the pruner does this every
    /// [`prune_interval`](crate::journal::Journal::prune_interval)); returns how many
    /// entries.
    ///
    /// # Errors
    /// [`BusError::NoJournal`], or [`BusError::Journal`].
    pub async fn prune_journal(&self) -> Result<u64, BusError> {
        let journal = self.journal_for("Bus::prune_journal")?;
        journal.prune().await.map_err(Self::journal_error(journal))
    }

    /// Stops accepting signals: later `publish` calls return [`BusError::Closed`].
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    /// Whether [`close`](Bus::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }
}
