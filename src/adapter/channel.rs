use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::{Adapter, DeliveryError, Signal};

/// Sends each signal into a tokio mpsc channel (Jido's `pid` adapter): a task owns the
/// receiver and consumes signals at its own pace.
///
/// By default delivery waits for room in the channel, up to the target's timeout (5 s by
/// default); [`no_wait`](Channel::no_wait) makes it fail at once with
/// [`DeliveryError::ChannelFull`] instead (Jido's `async: true`). A dropped receiver gives
/// [`DeliveryError::ChannelClosed`]. Either way the signal is shared, never copied.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use signal_bus::{adapter::Channel, Bus, Signal};
///
/// let bus = Bus::builder().build()?;
/// let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<Signal>>(1024);
/// bus.subscribe("user.*", Channel::new(tx))?;
/// bus.publish(Signal::builder("user.created", "/accounts").build()?).await?;
/// assert_eq!(rx.recv().await.unwrap().ty(), "user.created");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Channel {
    tx: mpsc::Sender<Arc<Signal>>,
    no_wait: bool,
}

impl Channel {
    /// Delivers into `tx`, waiting for room.
    pub fn new(tx: mpsc::Sender<Arc<Signal>>) -> Self {
        Channel { tx, no_wait: false }
    }

    /// When `true`, a full channel fails the delivery at once instead of waiting.
    /// Default: `false`.
    pub fn no_wait(mut self, no_wait: bool) -> Self {
        self.no_wait = no_wait;
        self
    }
}

#[async_trait]
impl Adapter for Channel {
    fn name(&self) -> &str {
        "channel"
    }

    async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
        self.deliver_shared(Arc::new(signal.clone())).await
    }

    async fn deliver_shared(&self, signal: Arc<Signal>) -> Result<(), DeliveryError> {
        if let Some(done) = self.try_deliver(&signal) {
            return done;
        }
        self.tx
            .send(signal)
            .await
            .map_err(|_| DeliveryError::ChannelClosed)
    }

    fn try_deliver(&self, signal: &Arc<Signal>) -> Option<Result<(), DeliveryError>> {
        match self.tx.try_send(Arc::clone(signal)) {
            Ok(()) => Some(Ok(())),
            Err(TrySendError::Full(_)) if self.no_wait => Some(Err(DeliveryError::ChannelFull {
                capacity: self.tx.max_capacity(),
            })),
            Err(TrySendError::Full(_)) => None,
            Err(TrySendError::Closed(_)) => Some(Err(DeliveryError::ChannelClosed)),
        }
    }

    fn try_deliver_owned(&self, signal: &mut Option<Arc<Signal>>) {
        let Some(owned) = signal.take() else { return };
        match self.tx.try_send(owned) {
            Ok(()) => {}
            // Not delivered: the signal goes back, and `try_deliver` reports why.
            Err(TrySendError::Full(back) | TrySendError::Closed(back)) => *signal = Some(back),
        }
    }

    async fn health_check(&self) -> crate::adapter::Health {
        if self.tx.is_closed() {
            crate::adapter::Health::unhealthy("channel receiver was dropped")
        } else if self.tx.capacity() == 0 {
            crate::adapter::Health::degraded("channel is full")
        } else {
            crate::adapter::Health::healthy()
        }
    }
}
