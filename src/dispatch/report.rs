use std::{fmt, sync::Arc, time::Duration};

use crate::{bus::SubscriptionId, DeliveryError};

/// What happened to one target of one delivery.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Outcome {
    /// The subscription the target belongs to (`None` for [`dispatch`](crate::dispatch())).
    pub subscription: Option<SubscriptionId>,
    /// The target's name.
    pub target: Arc<str>,
    /// Delivered, or why not.
    pub result: Result<(), DeliveryError>,
}

impl Outcome {
    /// Whether the target got the signal.
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// The outcome of every target a signal (or batch) was delivered to, in delivery order:
/// more specific subscriptions first, then higher priority, then older.
#[derive(Debug, Clone, Default)]
pub struct PublishReport {
    pub(crate) outcomes: Vec<Outcome>,
    pub(crate) elapsed: Duration,
}

impl PublishReport {
    pub(crate) fn with_capacity(n: usize) -> Self {
        PublishReport {
            outcomes: Vec::with_capacity(n),
            elapsed: Duration::ZERO,
        }
    }

    /// Whether every target got the signal (also true when nothing matched).
    pub fn is_ok(&self) -> bool {
        self.outcomes.iter().all(Outcome::is_ok)
    }

    /// Every outcome.
    pub fn outcomes(&self) -> &[Outcome] {
        &self.outcomes
    }

    /// The failed outcomes.
    pub fn failures(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(|o| !o.is_ok())
    }

    /// How many targets got the signal.
    pub fn delivered(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_ok()).count()
    }

    /// How many targets failed.
    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.delivered()
    }

    /// How many targets there were.
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    /// Whether no target matched.
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    /// How long the whole delivery took.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

impl fmt::Display for PublishReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} targets: {} delivered, {} failed",
            self.len(),
            self.delivered(),
            self.failed()
        )?;
        for o in self.failures() {
            if let Err(e) = &o.result {
                write!(f, "; {}: {e}", o.target)?;
            }
        }
        Ok(())
    }
}
