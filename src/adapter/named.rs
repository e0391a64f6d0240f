use std::sync::Arc;

use async_trait::async_trait;

use super::{
    hooks::{BusHooks, Sealed},
    AttachSlot,
};
use crate::{
    adapter::Health,
    context::{validate_name, BusContext, Registry},
    Adapter, ConfigError, DeliveryError, Signal,
};

/// Delivers to the receiver registered under a name on the bus (`bus.register(name, tx)`),
/// so publishers and subscriptions need not hold the receiver's sender.
///
/// The name is looked up at each delivery: a receiver may register after the subscription,
/// and re-register after a restart. An unknown name gives [`DeliveryError::UnknownName`]; a
/// dropped receiver [`DeliveryError::ReceiverGone`]. Waiting and [`no_wait`](Named::no_wait)
/// behave as in [`Channel`](crate::adapter::Channel).
///
/// Outside a bus (with [`dispatch`](crate::dispatch())), give it a registry with
/// [`with_registry`](Named::with_registry).
#[derive(Debug)]
pub struct Named {
    name: String,
    no_wait: bool,
    registry: Option<Registry>,
    attached: AttachSlot,
}

impl Named {
    /// Delivers to the receiver registered as `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Named {
            name: name.into(),
            no_wait: false,
            registry: None,
            attached: AttachSlot::default(),
        }
    }

    /// Looks names up in `registry` instead of the bus's own.
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// When `true`, a full receiver fails the delivery at once. Default: `false`.
    pub fn no_wait(mut self, no_wait: bool) -> Self {
        self.no_wait = no_wait;
        self
    }

    fn registry(&self) -> Result<&Registry, DeliveryError> {
        if let Some(r) = &self.registry {
            return Ok(r);
        }
        self.attached
            .get()
            .map(BusContext::registry)
            .ok_or_else(|| DeliveryError::Detached {
                adapter: format!("named:{}", self.name),
            })
    }
}

#[async_trait]
impl Adapter for Named {
    fn name(&self) -> &str {
        "named"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_name("name", &self.name)
            .map_err(|rule| ConfigError::invalid("receiver name", &self.name, rule))
    }

    async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
        self.deliver_shared(Arc::new(signal.clone())).await
    }

    async fn deliver_shared(&self, signal: Arc<Signal>) -> Result<(), DeliveryError> {
        if let Some(done) = self.try_deliver(&signal) {
            return done;
        }
        let tx = self.registry()?.sender(&self.name)?;
        tx.send(signal)
            .await
            .map_err(|_| DeliveryError::ReceiverGone {
                name: self.name.clone(),
            })
    }

    fn try_deliver(&self, signal: &Arc<Signal>) -> Option<Result<(), DeliveryError>> {
        let registry = match self.registry() {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        match registry.try_send(&self.name, signal) {
            Ok(Ok(())) => Some(Ok(())),
            Ok(Err(capacity)) if self.no_wait => Some(Err(DeliveryError::ChannelFull { capacity })),
            Ok(Err(_)) => None,
            Err(e) => Some(Err(e)),
        }
    }

    async fn health_check(&self) -> Health {
        match self.registry() {
            Ok(r) if r.contains(&self.name) => Health::healthy(),
            Ok(_) => {
                Health::unhealthy(format!("no live receiver is registered as `{}`", self.name))
            }
            Err(e) => Health::unhealthy(e.to_string()),
        }
    }

    fn bus_hooks(&self, _: Sealed) -> Option<&dyn BusHooks> {
        Some(self)
    }
}

impl BusHooks for Named {
    fn attach(&self, bus: &BusContext) {
        self.attached.set(bus);
    }
}
