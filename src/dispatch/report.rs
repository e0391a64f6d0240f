use std::{fmt, sync::Arc};

use super::{Plan, PlanIter, Target};
use crate::{context::SubscriptionId, DeliveryError};

/// The targets of every subscription matching one type, flat and in delivery order (more
/// specific subscriptions first, then higher priority, then older), so that `publish` walks
/// one array instead of following each subscription to its targets.
#[derive(Debug, Default)]
pub(crate) struct Matched {
    pub(crate) targets: Box<[(SubscriptionId, Target)]>,
}

/// What happened to one target of one delivery: a view into a [`PublishReport`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Outcome<'a> {
    /// The subscription the target belongs to (`None` for [`dispatch`](crate::dispatch())).
    pub subscription: Option<SubscriptionId>,
    /// The target's name.
    pub target: &'a str,
    /// Why the delivery failed; `None` when the target got the signal.
    pub error: Option<&'a DeliveryError>,
}

impl<'a> Outcome<'a> {
    /// Whether the target got the signal.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// When the receiver may be tried again, for a delivery that stopped because the
    /// receiver asked to wait longer than the retry policy allows (see
    /// [`DeliveryError::not_before`]).
    pub fn not_before(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.error.and_then(DeliveryError::not_before)
    }

    /// The outcome as a `Result`.
    ///
    /// # Errors
    /// The delivery error when the target did not get the signal.
    pub fn result(&self) -> Result<(), &'a DeliveryError> {
        match self.error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// The targets a report speaks of, kept alive by the report (one `Arc`, no copy).
#[derive(Debug, Clone, Default)]
pub(crate) enum Planned {
    #[default]
    Nothing,
    Subscriptions(Arc<Matched>),
    Targets(Arc<[Target]>),
}

impl Planned {
    pub(crate) fn plan(&self) -> Plan<'_> {
        match self {
            Planned::Nothing => Plan::Targets(&[]),
            Planned::Subscriptions(m) => Plan::Subscriptions(&m.targets),
            Planned::Targets(t) => Plan::Targets(t),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Planned::Nothing => 0,
            Planned::Subscriptions(m) => m.targets.len(),
            Planned::Targets(t) => t.len(),
        }
    }
}

/// The outcome of every target a signal (or batch) was delivered to, in delivery order:
/// more specific subscriptions first, then higher priority, then older.
///
/// Building a report costs nothing when every target succeeds: it keeps the matched targets
/// (shared) and the failures only.
///
/// ```
/// use std::sync::Arc;
/// use serde_json::json;
/// use signal_bus::{adapter::{Handler, Noop}, Bus, DeliveryError, Signal, Target};
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let bus = Bus::builder().build()?;
///     bus.subscribe(
///         "invoice.*",
///         vec![
///             Target::new(Noop).label("archive"),
///             Target::new(Handler::new(|_s: Arc<Signal>| async {
///                 Err(DeliveryError::permanent("mailbox full"))
///             }))
///             .label("mailer"),
///         ],
///     )?;
///
///     let report = bus.publish(Signal::new("invoice.sent", "/billing", json!({}))?).await?;
///     assert!(!report.is_ok());
///     assert_eq!((report.len(), report.delivered(), report.failed()), (2, 1, 1));
///     for outcome in report.outcomes() {
///         match outcome.error {
///             None => println!("{}: delivered", outcome.target),
///             Some(error) => println!("{}: {error}", outcome.target),
///         }
///     }
///     let failed: Vec<&str> = report.failures().map(|o| o.target).collect();
///     assert_eq!(failed, ["mailer"]);
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Default)]
pub struct PublishReport {
    pub(crate) planned: Planned,
    /// (position in delivery order, error), sorted by position.
    pub(crate) failures: Vec<(usize, DeliveryError)>,
}

impl PublishReport {
    pub(crate) fn new(planned: Planned) -> Self {
        PublishReport {
            planned,
            failures: Vec::new(),
        }
    }

    /// Whether every target got the signal (also true when nothing matched).
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// Every outcome, in delivery order.
    pub fn outcomes(&self) -> Outcomes<'_> {
        Outcomes {
            targets: self.planned.plan().iter(),
            failures: &self.failures,
            position: 0,
        }
    }

    /// The outcome at `position` in delivery order.
    pub fn get(&self, position: usize) -> Option<Outcome<'_>> {
        self.outcomes().nth(position)
    }

    /// The failed outcomes, in delivery order.
    pub fn failures(&self) -> impl Iterator<Item = Outcome<'_>> {
        self.outcomes().filter(|o| !o.is_ok())
    }

    /// How many targets got the signal.
    pub fn delivered(&self) -> usize {
        self.len() - self.failures.len()
    }

    /// How many targets failed.
    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// How many targets there were.
    pub fn len(&self) -> usize {
        self.planned.len()
    }

    /// Whether no target matched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The outcomes of a [`PublishReport`], in delivery order.
#[derive(Debug)]
pub struct Outcomes<'a> {
    targets: PlanIter<'a>,
    failures: &'a [(usize, DeliveryError)],
    position: usize,
}

impl<'a> Iterator for Outcomes<'a> {
    type Item = Outcome<'a>;

    fn next(&mut self) -> Option<Outcome<'a>> {
        let (subscription, target) = self.targets.next()?;
        let error = match self.failures.first() {
            Some((p, e)) if *p == self.position => {
                self.failures = &self.failures[1..];
                Some(e)
            }
            _ => None,
        };
        self.position += 1;
        Some(Outcome {
            subscription,
            target: target.name(),
            error,
        })
    }
}

impl fmt::Display for PublishReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} delivered, {} failed",
            crate::error::count(self.len(), "target", "targets"),
            self.delivered(),
            self.failed()
        )?;
        for o in self.failures() {
            if let Some(e) = o.error {
                write!(f, "; {}: {e}", o.target)?;
            }
        }
        Ok(())
    }
}
