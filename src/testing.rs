//! Helpers for tests of code that publishes on a [`Bus`] (feature `testing`).
//!
//! A [`Spy`] subscribes to a pattern and records every signal it receives; a test then waits
//! for the signal it expects, with a timeout, instead of wiring a channel and a receive loop
//! of its own. A spy receives like any synchronous target: inline, in `publish`, so a signal
//! published before a wait is already there when the wait starts.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use signal_bus::{testing::Spy, Bus, Signal};
//!
//! let bus = Bus::builder().build()?;
//! let spy = Spy::attach(&bus, "order.**")?;
//! bus.publish(Signal::builder("order.placed", "/shop").build()?).await?;
//! bus.publish(Signal::builder("user.created", "/accounts").build()?).await?;
//!
//! let placed = spy.wait_for_type("order.placed", Duration::from_secs(1)).await?;
//! assert_eq!(placed.source(), "/shop");
//! assert_eq!(spy.received().len(), 1); // user.created does not match `order.**`
//!
//! // What a wait that times out says.
//! let err = spy.wait_for_type("order.paid", Duration::from_millis(10)).await.unwrap_err();
//! assert_eq!(err.to_string(), "spy on `order.**` waited 10ms for a signal of type `order.paid`; \
//!     it received 1 signal: order.placed");
//! # Ok(()) }
//! ```

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use tokio::{sync::Notify, time::Instant};

use crate::{bus::SubscriptionId, Adapter, Bus, BusError, DeliveryError, Signal, Target};

/// How many received types a [`SpyTimeout`] lists (the count is always exact).
const SHOWN_TYPES: usize = 20;

/// What a spy shares with its adapter.
#[derive(Debug, Default)]
struct Record {
    received: Mutex<Vec<Arc<Signal>>>,
    /// Woken on every signal received.
    arrived: Notify,
}

impl Record {
    fn received(&self) -> MutexGuard<'_, Vec<Arc<Signal>>> {
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, signal: Arc<Signal>) {
        self.received().push(signal);
        self.arrived.notify_waiters();
    }
}

/// The adapter of a spy's subscription: records, never fails, never waits.
struct SpyAdapter {
    record: Arc<Record>,
}

#[async_trait]
impl Adapter for SpyAdapter {
    fn name(&self) -> &str {
        "spy"
    }

    async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
        self.record.push(Arc::new(signal.clone()));
        Ok(())
    }

    async fn deliver_shared(&self, signal: Arc<Signal>) -> Result<(), DeliveryError> {
        self.record.push(signal);
        Ok(())
    }

    fn try_deliver(&self, signal: &Arc<Signal>) -> Option<Result<(), DeliveryError>> {
        self.record.push(Arc::clone(signal));
        Some(Ok(()))
    }
}

/// Records what a pattern receives on a bus, and waits for expected signals (Jido's
/// `BusSpy`). Detaches (unsubscribes) when dropped, or with [`detach`](Spy::detach).
///
/// The spy's subscription is a synchronous target labelled `spy <pattern>`, with priority
/// 0; it sees signals as the bus's [middleware](crate::middleware) left them for it.
pub struct Spy {
    bus: Bus,
    id: Option<SubscriptionId>,
    pattern: String,
    record: Arc<Record>,
}

impl fmt::Debug for Spy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spy")
            .field("pattern", &self.pattern)
            .field("subscription", &self.id)
            .field("received", &self.record.received().len())
            .finish()
    }
}

impl Spy {
    /// Subscribes a spy to `pattern` on `bus`.
    ///
    /// # Errors
    /// As [`Bus::subscribe`]: a pattern that does not parse.
    pub fn attach(bus: &Bus, pattern: &str) -> Result<Spy, BusError> {
        let record = Arc::new(Record::default());
        let target = Target::new(SpyAdapter {
            record: Arc::clone(&record),
        })
        .label(format!("spy {pattern}"));
        let id = bus.subscribe(pattern, target)?;
        Ok(Spy {
            bus: bus.clone(),
            id: Some(id),
            pattern: pattern.to_owned(),
            record,
        })
    }

    /// The pattern the spy listens to.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The spy's subscription.
    pub fn subscription(&self) -> Option<SubscriptionId> {
        self.id
    }

    /// Every signal received so far (since the last [`clear`](Spy::clear)), oldest first.
    pub fn received(&self) -> Vec<Arc<Signal>> {
        self.record.received().clone()
    }

    /// The types of the signals received so far, oldest first.
    pub fn received_types(&self) -> Vec<String> {
        self.record
            .received()
            .iter()
            .map(|s| s.ty().to_owned())
            .collect()
    }

    /// Forgets what was received so far.
    pub fn clear(&self) {
        self.record.received().clear();
    }

    /// Waits until a received signal satisfies `predicate` (those received before the
    /// call count: the first such signal is returned), for at most `timeout`.
    ///
    /// # Errors
    /// [`SpyTimeout`] when none did in time; it lists the types the spy received.
    pub async fn wait_for(
        &self,
        predicate: impl Fn(&Signal) -> bool,
        timeout: Duration,
    ) -> Result<Arc<Signal>, SpyTimeout> {
        self.wait(
            "a signal matching the predicate".to_owned(),
            timeout,
            |seen| seen.iter().find(|s| predicate(s)).cloned(),
        )
        .await
    }

    /// Waits until a signal of type `ty` was received, for at most `timeout`.
    ///
    /// # Errors
    /// [`SpyTimeout`] when none was in time.
    pub async fn wait_for_type(
        &self,
        ty: &str,
        timeout: Duration,
    ) -> Result<Arc<Signal>, SpyTimeout> {
        self.wait(format!("a signal of type `{ty}`"), timeout, |seen| {
            seen.iter().find(|s| s.ty() == ty).cloned()
        })
        .await
    }

    /// Waits until at least `n` signals were received, for at most `timeout`; returns every
    /// signal received by then.
    ///
    /// # Errors
    /// [`SpyTimeout`] when fewer arrived in time.
    pub async fn wait_for_count(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Arc<Signal>>, SpyTimeout> {
        let what = format!("{} {}", n, if n == 1 { "signal" } else { "signals" });
        self.wait(what, timeout, |seen| {
            (seen.len() >= n).then(|| seen.to_vec())
        })
        .await
    }

    async fn wait<T>(
        &self,
        waited_for: String,
        timeout: Duration,
        found: impl Fn(&[Arc<Signal>]) -> Option<T>,
    ) -> Result<T, SpyTimeout> {
        let deadline = Instant::now() + timeout;
        loop {
            // Registered before looking, so a signal arriving in between wakes this wait.
            let arrived = self.record.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(t) = found(&self.record.received()) {
                return Ok(t);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let seen = self.record.received();
                if let Some(t) = found(&seen) {
                    return Ok(t);
                }
                return Err(SpyTimeout {
                    pattern: self.pattern.clone(),
                    waited_for,
                    after: timeout,
                    received: seen.len(),
                    types: seen
                        .iter()
                        .take(SHOWN_TYPES)
                        .map(|s| s.ty().to_owned())
                        .collect(),
                });
            }
        }
    }

    /// Unsubscribes the spy now (dropping it does the same, ignoring errors).
    ///
    /// # Errors
    /// [`BusError::UnknownSubscription`] when the subscription was already removed.
    pub fn detach(mut self) -> Result<(), BusError> {
        match self.id.take() {
            Some(id) => self.bus.unsubscribe(id),
            None => Ok(()),
        }
    }
}

impl Drop for Spy {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let _ = self.bus.unsubscribe(id);
        }
    }
}

/// A [`Spy`] wait that ran out of time: what it waited for and what the spy had received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "spy on `{pattern}` waited {after:?} for {waited_for}; it received {}",
    received_list(*received, types)
)]
#[non_exhaustive]
pub struct SpyTimeout {
    /// The spy's pattern.
    pub pattern: String,
    /// What the wait was for, e.g. "a signal of type `order.paid`".
    pub waited_for: String,
    /// The timeout.
    pub after: Duration,
    /// How many signals the spy had received.
    pub received: usize,
    /// Their types, oldest first (the first 20).
    pub types: Vec<String>,
}

fn received_list(received: usize, types: &[String]) -> String {
    match received {
        0 => "nothing".to_owned(),
        n => {
            let more = if n > types.len() {
                format!(", and {} more", n - types.len())
            } else {
                String::new()
            };
            let noun = if n == 1 { "signal" } else { "signals" };
            format!("{n} {noun}: {}{more}", types.join(", "))
        }
    }
}
