use std::sync::Arc;

use async_trait::async_trait;

use super::{
    hooks::{BusHooks, Sealed},
    AttachSlot,
};
use crate::{
    context::{validate_name, BusContext, Topics},
    Adapter, ConfigError, DeliveryError, Signal,
};

/// Publishes each signal to an in-process topic: every receiver from
/// `bus.pubsub_subscribe(topic)` gets its own copy of the `Arc` (Jido's `pubsub` adapter).
///
/// Publishing to a topic with no receivers succeeds (fire and forget). Outside a bus, give
/// it topics with [`with_topics`](PubSub::with_topics).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use signal_bus::{adapter::PubSub, Bus, Signal};
///
/// let bus = Bus::builder().build()?;
/// let mut rx = bus.pubsub_subscribe("user_events");
/// bus.subscribe("user.*", PubSub::new("user_events"))?;
/// bus.publish(Signal::builder("user.created", "/accounts").build()?).await?;
/// assert_eq!(rx.recv().await?.ty(), "user.created");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PubSub {
    topic: String,
    topics: Option<Topics>,
    attached: AttachSlot,
}

impl PubSub {
    /// Publishes to `topic` on the bus this target is subscribed on.
    pub fn new(topic: impl Into<String>) -> Self {
        PubSub {
            topic: topic.into(),
            topics: None,
            attached: AttachSlot::default(),
        }
    }

    /// Publishes to these topics instead of the bus's own.
    pub fn with_topics(mut self, topics: Topics) -> Self {
        self.topics = Some(topics);
        self
    }

    fn send(&self, signal: &Arc<Signal>) -> Result<(), DeliveryError> {
        let topics = match (&self.topics, self.attached.get()) {
            (Some(t), _) => t,
            (None, Some(ctx)) => ctx.topics(),
            (None, None) => {
                return Err(DeliveryError::Detached {
                    adapter: format!("pubsub:{}", self.topic),
                })
            }
        };
        topics.publish(&self.topic, signal);
        Ok(())
    }
}

#[async_trait]
impl Adapter for PubSub {
    fn name(&self) -> &str {
        "pubsub"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_name("topic", &self.topic)
            .map_err(|rule| ConfigError::invalid("topic", &self.topic, rule))
    }

    async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
        self.send(&Arc::new(signal.clone()))
    }

    async fn deliver_shared(&self, signal: Arc<Signal>) -> Result<(), DeliveryError> {
        self.send(&signal)
    }

    fn try_deliver(&self, signal: &Arc<Signal>) -> Option<Result<(), DeliveryError>> {
        Some(self.send(signal))
    }

    fn bus_hooks(&self, _: Sealed) -> Option<&dyn BusHooks> {
        Some(self)
    }
}

impl BusHooks for PubSub {
    fn attach(&self, bus: &BusContext) {
        self.attached.set(bus);
    }
}
