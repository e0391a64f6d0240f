use std::sync::Arc;

use async_trait::async_trait;

use super::AttachSlot;
use crate::{
    bus::{validate_name, BusContext, Topics},
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

    /// The NATS form: publishes each signal to NATS subject `<prefix>.<type>` (core NATS, or
    /// JetStream with acknowledgements), so other processes and machines receive it through
    /// a [`NatsBridge`](crate::cluster::NatsBridge). Feature `nats`; see
    /// [`NatsPubSub`](crate::cluster::NatsPubSub) for the options.
    #[cfg(feature = "nats")]
    pub fn nats(client: async_nats::Client) -> crate::cluster::NatsPubSub {
        crate::cluster::NatsPubSub::new(client)
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

    fn attach(&self, bus: &BusContext) {
        self.attached.set(bus);
    }
}
