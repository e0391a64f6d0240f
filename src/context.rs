//! What a bus lends the adapters attached to it (its name, registry of named receivers and
//! in-process topics) and the ids of its subscriptions: the layer below adapters, which
//! knows nothing of the bus itself. The bus is reached through [`BusLink`], held weakly;
//! the durable queue is held type-erased and read back by the `queue` module.

use std::{
    any::Any,
    collections::HashMap,
    fmt,
    sync::{Arc, RwLock, Weak},
};

use tokio::sync::{broadcast, mpsc};

use crate::{BusError, DeliveryError, Signal};

/// Identifies a subscription on its bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub(crate) u64);

impl SubscriptionId {
    /// The number behind the id.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the layers below the bus ask of it, implemented by the bus: they hold it weakly
/// (a target never keeps its bus alive) and never name the bus's type.
pub(crate) trait BusLink: Send + Sync {
    /// Publishes `signal_bus.endpoint.disabled` for `target` (from a task of its own, so a
    /// delivery never waits on its own bus).
    fn endpoint_disabled(self: Arc<Self>, target: &str, error: &DeliveryError);
}

/// A weak link to a bus; the default links to none (targets of
/// [`dispatch`](crate::dispatch())).
#[derive(Clone)]
pub(crate) struct WeakBus(pub(crate) Weak<dyn BusLink>);

/// What the default [`WeakBus`] points at: never upgrades.
struct NoBus;

impl BusLink for NoBus {
    fn endpoint_disabled(self: Arc<Self>, _: &str, _: &DeliveryError) {}
}

impl Default for WeakBus {
    fn default() -> Self {
        WeakBus(Weak::<NoBus>::new())
    }
}

impl fmt::Debug for WeakBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeakBus")
    }
}

impl WeakBus {
    /// Publishes `signal_bus.endpoint.disabled` on the bus, if it is still alive.
    pub(crate) fn emit_endpoint_disabled(&self, target: &str, error: &DeliveryError) {
        if let Some(bus) = self.0.upgrade() {
            bus.endpoint_disabled(target, error);
        }
    }
}

/// What a bus lends the adapters attached to it: its name, its registry of named receivers
/// and its in-process topics. Cheap to clone.
#[derive(Clone)]
pub struct BusContext {
    pub(crate) name: Arc<str>,
    pub(crate) node_id: Arc<str>,
    pub(crate) registry: Registry,
    pub(crate) topics: Topics,
    /// The bus itself, for the signals it emits about its own targets.
    pub(crate) bus: WeakBus,
    /// The durable queue the bus was built with (a `queue::Queue`, which sits above this
    /// layer; `BusContext::queue` reads it back).
    pub(crate) queue: Option<Arc<dyn Any + Send + Sync>>,
}

impl fmt::Debug for BusContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusContext")
            .field("name", &self.name)
            .field("node_id", &self.node_id)
            .field("registry", &self.registry)
            .field("topics", &self.topics)
            .finish()
    }
}

impl BusContext {
    /// The bus name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The id of the bus among the nodes of a cluster.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }
    /// The bus's registry of named receivers.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
    /// The bus's in-process topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }
}

pub(crate) fn validate_name(kind: &'static str, name: &str) -> Result<(), &'static str> {
    let _ = kind;
    if name.is_empty() {
        Err("it must not be empty")
    } else if name.len() > 255 {
        Err("it must be at most 255 bytes")
    } else if name.chars().any(char::is_control) {
        Err("it must not contain control characters")
    } else {
        Ok(())
    }
}

type Senders = HashMap<String, mpsc::Sender<Arc<Signal>>, foldhash::fast::RandomState>;

/// Receivers registered by name (the [`Named`](crate::adapter::Named) adapter delivers to
/// them). Each bus has one; a standalone registry serves [`dispatch`](crate::dispatch()).
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<RwLock<Senders>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("names", &self.names())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `sender` under `name`. A name whose receiver was dropped can be registered
    /// again.
    ///
    /// # Errors
    /// [`BusError::InvalidName`] for an empty, over-long or control-character name;
    /// [`BusError::NameTaken`] when a live receiver already has the name.
    pub fn register(
        &self,
        name: impl Into<String>,
        sender: mpsc::Sender<Arc<Signal>>,
    ) -> Result<(), BusError> {
        let name = name.into();
        if let Err(rule) = validate_name("name", &name) {
            return Err(BusError::InvalidName { name, rule });
        }
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = map.get(&name) {
            if !existing.is_closed() {
                return Err(BusError::NameTaken { name });
            }
        }
        map.insert(name, sender);
        Ok(())
    }

    /// Removes a name; returns whether it was registered.
    pub fn unregister(&self, name: &str) -> bool {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.remove(name).is_some()
    }

    /// Whether a live receiver has this name.
    pub fn contains(&self, name: &str) -> bool {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(name).is_some_and(|s| !s.is_closed())
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = map.keys().cloned().collect();
        names.sort();
        names
    }

    /// The sender registered under `name`.
    ///
    /// # Errors
    /// [`DeliveryError::UnknownName`] or [`DeliveryError::ReceiverGone`].
    pub fn sender(&self, name: &str) -> Result<mpsc::Sender<Arc<Signal>>, DeliveryError> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        match map.get(name) {
            None => Err(DeliveryError::UnknownName {
                name: name.to_owned(),
            }),
            Some(s) if s.is_closed() => Err(DeliveryError::ReceiverGone {
                name: name.to_owned(),
            }),
            Some(s) => Ok(s.clone()),
        }
    }

    /// Sends without waiting: `Ok(Ok)` sent, `Ok(Err(signal))` full, `Err` unknown or gone.
    pub(crate) fn try_send(
        &self,
        name: &str,
        signal: &Arc<Signal>,
    ) -> Result<Result<(), usize>, DeliveryError> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = map.get(name) else {
            return Err(DeliveryError::UnknownName {
                name: name.to_owned(),
            });
        };
        match tx.try_send(Arc::clone(signal)) {
            Ok(()) => Ok(Ok(())),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(Err(tx.max_capacity())),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(DeliveryError::ReceiverGone {
                name: name.to_owned(),
            }),
        }
    }
}

type TopicMap = HashMap<String, broadcast::Sender<Arc<Signal>>, foldhash::fast::RandomState>;

/// In-process publish/subscribe topics: every receiver of a topic gets each signal
/// published to it (the [`PubSub`](crate::adapter::PubSub) adapter publishes).
///
/// A receiver that falls more than the capacity behind loses the oldest signals and is told
/// how many with `RecvError::Lagged`.
#[derive(Clone)]
pub struct Topics {
    inner: Arc<RwLock<TopicMap>>,
    capacity: usize,
}

impl fmt::Debug for Topics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Topics")
            .field("topics", &map.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for Topics {
    fn default() -> Self {
        Topics::new(1024)
    }
}

impl Topics {
    /// Topics whose receivers each buffer up to `capacity` signals (at least 1).
    pub fn new(capacity: usize) -> Self {
        Topics {
            inner: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// A new receiver of `topic`.
    pub fn subscribe(&self, topic: &str) -> broadcast::Receiver<Arc<Signal>> {
        if let Some(tx) = self
            .inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
        {
            return tx.subscribe();
        }
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    /// Publishes to every current receiver of `topic`; returns how many there were.
    pub fn publish(&self, topic: &str, signal: &Arc<Signal>) -> usize {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        match map.get(topic) {
            Some(tx) => tx.send(Arc::clone(signal)).unwrap_or(0),
            None => 0,
        }
    }

    /// How many receivers `topic` has now.
    pub fn receiver_count(&self, topic: &str) -> usize {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(topic).map_or(0, |tx| tx.receiver_count())
    }
}
