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

/// What happened to one target: the kind of an [`Outcome`].
///
/// | kind | when | [`is_ok`](Outcome::is_ok) | [`is_accepted`](Outcome::is_accepted) |
/// |---|---|---|---|
/// | `Delivered` | the adapter took the signal before `publish` returned | yes | yes |
/// | `Queued` | the signal waits for a later delivery: in the target's async queue, or as a durable job | yes | yes |
/// | `Dropped` | the target's own overflow policy dropped it: nothing will deliver it | yes | no |
/// | `Failed` | the delivery failed (after the target's retries) | no | no |
///
/// New kinds may be added: match with a wildcard arm.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum OutcomeKind<'a> {
    /// The adapter took the signal before `publish` (or `dispatch`) returned: a channel
    /// with room, a named receiver, a topic, a log line, an HTTP endpoint that answered
    /// 2xx, a forwarder delivering inline.
    Delivered,
    /// Accepted for a later delivery, which this report does not see: where the signal
    /// waits says how to follow it.
    Queued(QueuedIn),
    /// Dropped by the target's own choice, so nothing will deliver it; not a failure (it is
    /// what the target was configured to do), but the target will not get the signal.
    Dropped(DropReason),
    /// The delivery failed, after the target's retries: the error says why.
    Failed(&'a DeliveryError),
}

/// Where a [`Queued`](OutcomeKind::Queued) signal waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QueuedIn {
    /// The target's in-memory queue ([`Mode::Async`](crate::policy::Mode::Async), or
    /// [`Target::batch`]): its worker delivers later, with the target's retries and
    /// breaker. Lost if the process dies. The delivery's own outcome shows in
    /// [`Bus::metrics`](crate::Bus::metrics) (delivered, failed, dropped by
    /// [`Overflow::DropOldest`](crate::policy::Overflow::DropOldest)), in a
    /// `signal_bus::deliver` event with `mode=async` or `batch`, and at the target's
    /// dead-letter targets.
    Memory,
    /// A durable queue job: a [`Forwarder`](crate::queue::Forwarder) committed the signal
    /// and its job before `publish` returned; a runner delivers it later, with retries.
    /// Follow it with `queue.store().get(job)`, [`Queue::list`](crate::queue::Queue::list)
    /// (a job that failed for good is `discarded`, with its last error) and the
    /// `signal_bus::deliver` event with `mode=forwarder` and this `job_id`.
    #[non_exhaustive]
    Durable {
        /// The job's id; `None` when one delivery enqueued several jobs (a forwarder
        /// given a batch by [`dispatch_batch`](crate::dispatch_batch)), or the store kept
        /// an existing job instead (a unique key).
        job: Option<i64>,
    },
}

/// Why a [`Dropped`](OutcomeKind::Dropped) signal was dropped.
///
/// Only the target's own policy drops a signal; everything else that keeps a signal from
/// a target is a [`Failed`](OutcomeKind::Failed) outcome with its error: an open circuit
/// breaker (`CircuitOpen`), a disabled endpoint (`Gone`), a full channel of
/// [`Channel::no_wait`](crate::adapter::Channel::no_wait) (`ChannelFull`), a receiver
/// that is gone or not registered, a full queue with [`Overflow::Block`] (after the
/// timeout) or [`Overflow::Error`] (`QueueFull`). A topic with no receivers is delivered:
/// [`PubSub`](crate::adapter::PubSub) is fire and forget.
///
/// [`Overflow::Block`]: crate::policy::Overflow::Block
/// [`Overflow::Error`]: crate::policy::Overflow::Error
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The target's async queue was full and its overflow policy is
    /// [`Overflow::DropNewest`](crate::policy::Overflow::DropNewest): this signal was
    /// dropped (counted in the target's `dropped` metric, with a `signal_bus::drop`
    /// event). With `DropOldest` the new signal is queued and an older one, reported
    /// `Queued` by its own publish, is dropped instead.
    #[non_exhaustive]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::QueueFull { capacity } => write!(
                f,
                "dropped: the queue was full (capacity {capacity}, overflow drop-newest)"
            ),
        }
    }
}

impl fmt::Display for QueuedIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueuedIn::Memory => f.write_str("queued in memory"),
            QueuedIn::Durable { job: Some(id) } => write!(f, "queued as durable job {id}"),
            QueuedIn::Durable { job: None } => f.write_str("queued as durable jobs"),
        }
    }
}

impl fmt::Display for OutcomeKind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutcomeKind::Delivered => f.write_str("delivered"),
            OutcomeKind::Queued(q) => q.fmt(f),
            OutcomeKind::Dropped(d) => d.fmt(f),
            OutcomeKind::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

/// What happened to one target of one delivery: a view into a [`PublishReport`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Outcome<'a> {
    /// The subscription the target belongs to (`None` for [`dispatch`](crate::dispatch())).
    pub subscription: Option<SubscriptionId>,
    /// The target's name.
    pub target: &'a str,
    /// What happened.
    pub kind: OutcomeKind<'a>,
    /// Why the delivery failed: `Some` exactly when [`kind`](Outcome::kind) is
    /// [`Failed`](OutcomeKind::Failed).
    pub error: Option<&'a DeliveryError>,
}

impl<'a> Outcome<'a> {
    /// Whether the delivery did not fail: delivered, queued or dropped by the target's own
    /// overflow policy (see [`is_accepted`](Outcome::is_accepted) for "the target has or will
    /// get the signal").
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// Whether the target got the signal or holds it for a later delivery: delivered or
    /// queued (not dropped, not failed).
    pub fn is_accepted(&self) -> bool {
        matches!(self.kind, OutcomeKind::Delivered | OutcomeKind::Queued(_))
    }

    /// Whether the adapter took the signal before the report was made.
    pub fn is_delivered(&self) -> bool {
        matches!(self.kind, OutcomeKind::Delivered)
    }

    /// Whether the signal waits for a later delivery (an async target's queue, a durable
    /// job).
    pub fn is_queued(&self) -> bool {
        matches!(self.kind, OutcomeKind::Queued(_))
    }

    /// Whether the target's own overflow policy dropped the signal.
    pub fn is_dropped(&self) -> bool {
        matches!(self.kind, OutcomeKind::Dropped(_))
    }

    /// Whether the delivery failed.
    pub fn is_failed(&self) -> bool {
        matches!(self.kind, OutcomeKind::Failed(_))
    }

    /// The durable job that holds the signal, when a forwarder enqueued one.
    pub fn job_id(&self) -> Option<i64> {
        match self.kind {
            OutcomeKind::Queued(QueuedIn::Durable { job }) => job,
            _ => None,
        }
    }

    /// When the receiver may be tried again, for a delivery that stopped because the
    /// receiver asked to wait longer than the retry policy allows (see
    /// [`DeliveryError::not_before`]).
    pub fn not_before(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.error.and_then(DeliveryError::not_before)
    }

    /// The outcome as a `Result`: `Err` for a failed delivery, `Ok` for every other kind
    /// (a dropped one included, as for [`is_ok`](Outcome::is_ok)).
    ///
    /// # Errors
    /// The delivery error when the delivery failed.
    pub fn result(&self) -> Result<(), &'a DeliveryError> {
        match self.error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// An outcome that is not the target's usual success, kept by the report.
#[derive(Debug, Clone)]
pub(crate) enum Noted {
    Failed(DeliveryError),
    Dropped(DropReason),
    Queued(QueuedIn),
}

impl Noted {
    fn kind(&self) -> OutcomeKind<'_> {
        match self {
            Noted::Failed(e) => OutcomeKind::Failed(e),
            Noted::Dropped(d) => OutcomeKind::Dropped(*d),
            Noted::Queued(q) => OutcomeKind::Queued(*q),
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
    /// Targets given their signals directly, never through their queues
    /// ([`dispatch_batch`](crate::dispatch_batch)): a success is a delivery, whatever the
    /// target's mode.
    Direct(Arc<[Target]>),
}

impl Planned {
    pub(crate) fn plan(&self) -> Plan<'_> {
        match self {
            Planned::Nothing => Plan::Targets(&[]),
            Planned::Subscriptions(m) => Plan::Subscriptions(&m.targets),
            Planned::Targets(t) | Planned::Direct(t) => Plan::Targets(t),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Planned::Nothing => 0,
            Planned::Subscriptions(m) => m.targets.len(),
            Planned::Targets(t) | Planned::Direct(t) => t.len(),
        }
    }

    /// Whether a queued target's success is a delivery (not a queued signal).
    fn direct(&self) -> bool {
        matches!(self, Planned::Direct(_))
    }
}

/// The outcome of every target a signal (or batch) was delivered to, in delivery order:
/// more specific subscriptions first, then higher priority, then older.
///
/// Each outcome has a [kind](OutcomeKind): **delivered** (the adapter took the signal),
/// **queued** (an async target's queue holds it, or a [`Forwarder`](crate::queue::Forwarder)
/// committed a durable job, whose id the outcome carries), **dropped** (the target's
/// [`Overflow::DropNewest`](crate::policy::Overflow::DropNewest) queue was full) or
/// **failed** (with the error). The four counts add up to [`len`](PublishReport::len).
///
/// [`is_ok`](PublishReport::is_ok) means no target failed: a signal dropped by the
/// target's own overflow policy is not a failure. [`all_accepted`](PublishReport::all_accepted)
/// means every target was delivered or queued the signal: nothing failed, nothing dropped.
/// A queued outcome says nothing of the later delivery: see [`QueuedIn`] for where that
/// shows.
///
/// Building a report costs nothing when every target gets the signal as usual (delivered
/// for synchronous targets, queued for async ones): it keeps the matched targets (shared)
/// and the other outcomes only.
///
/// ```
/// use std::sync::Arc;
/// use serde_json::json;
/// use signal_bus::{
///     adapter::{Handler, Noop},
///     dispatch::OutcomeKind,
///     policy::{Mode, Overflow},
///     Bus, DeliveryError, Signal, Target,
/// };
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let bus = Bus::builder().build()?;
///     // A stuck audit log in async mode: its queue holds one signal, then drops new ones.
///     let (taken, mut audit_busy) = tokio::sync::mpsc::unbounded_channel();
///     let slow = Handler::new(move |_s: Arc<Signal>| {
///         let _ = taken.send(()); // the worker took a signal
///         std::future::pending::<Result<(), DeliveryError>>()
///     });
///     bus.subscribe(
///         "invoice.*",
///         vec![
///             Target::new(Noop).label("archive"),
///             Target::new(slow)
///                 .mode(Mode::Async { capacity: 1, overflow: Overflow::DropNewest })
///                 .label("audit"),
///             Target::new(Handler::new(|_s: Arc<Signal>| async {
///                 Err(DeliveryError::permanent("mailbox full"))
///             }))
///             .label("mailer"),
///         ],
///     )?;
///
///     let invoice = || Signal::new("invoice.sent", "/billing", json!({}));
///     let first = bus.publish(invoice()?).await?;
///     assert_eq!(
///         (first.delivered(), first.queued(), first.dropped(), first.failed()),
///         (1, 1, 0, 1)
///     );
///     assert!(!first.is_ok());
///     let failed: Vec<&str> = first.failures().map(|o| o.target).collect();
///     assert_eq!(failed, ["mailer"]);
///
///     // The audit worker holds the first signal, the second fills the queue, the third
///     // is dropped: not a failure, but not accepted either.
///     audit_busy.recv().await;
///     bus.publish(invoice()?).await?;
///     let third = bus.publish(invoice()?).await?;
///     for outcome in third.outcomes() {
///         match outcome.kind {
///             OutcomeKind::Delivered => println!("{}: delivered", outcome.target),
///             OutcomeKind::Queued(queue) => println!("{}: {queue}", outcome.target),
///             OutcomeKind::Dropped(why) => println!("{}: {why}", outcome.target),
///             OutcomeKind::Failed(error) => println!("{}: failed: {error}", outcome.target),
///             _ => println!("{}: {}", outcome.target, outcome.kind),
///         }
///     }
///     assert!(third.get(1).is_some_and(|o| o.is_dropped()));
///     assert_eq!(third.to_string(), "3 targets: 1 delivered, 1 dropped, 1 failed; \
///         audit: dropped: the queue was full (capacity 1, overflow drop-newest); \
///         mailer: mailbox full");
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Default)]
pub struct PublishReport {
    pub(crate) planned: Planned,
    /// (position in delivery order, outcome) for the outcomes that are not the target's
    /// usual success, sorted by position.
    pub(crate) noted: Vec<(usize, Noted)>,
    /// The signal's sequence number in the bus's journal, when it has one.
    pub(crate) journal_seq: Option<u64>,
}

impl PublishReport {
    pub(crate) fn new(planned: Planned) -> Self {
        PublishReport {
            planned,
            noted: Vec::new(),
            journal_seq: None,
        }
    }

    /// The signal's sequence number in the bus's journal (`None` without a journal): the
    /// signal was durably appended before it was delivered.
    pub fn journal_seq(&self) -> Option<u64> {
        self.journal_seq
    }

    /// Whether no target failed (also true when nothing matched): every target was
    /// delivered, queued, or dropped by its own overflow policy. See
    /// [`all_accepted`](PublishReport::all_accepted) to rule out drops too.
    pub fn is_ok(&self) -> bool {
        !self
            .noted
            .iter()
            .any(|(_, n)| matches!(n, Noted::Failed(_)))
    }

    /// Whether every target was delivered or queued the signal: nothing failed and nothing
    /// was dropped (also true when nothing matched).
    pub fn all_accepted(&self) -> bool {
        self.noted
            .iter()
            .all(|(_, n)| matches!(n, Noted::Queued(_)))
    }

    /// Every outcome, in delivery order.
    pub fn outcomes(&self) -> Outcomes<'_> {
        Outcomes {
            targets: self.planned.plan().iter(),
            noted: &self.noted,
            direct: self.planned.direct(),
            position: 0,
        }
    }

    /// The outcome at `position` in delivery order.
    pub fn get(&self, position: usize) -> Option<Outcome<'_>> {
        self.outcomes().nth(position)
    }

    /// The failed outcomes, in delivery order.
    pub fn failures(&self) -> impl Iterator<Item = Outcome<'_>> {
        self.outcomes().filter(Outcome::is_failed)
    }

    /// How many targets got the signal before the report was made
    /// ([`Delivered`](OutcomeKind::Delivered)).
    ///
    /// Until 0.x this also counted queued and dropped outcomes; that count is now
    /// [`accepted`](PublishReport::accepted) plus [`dropped`](PublishReport::dropped).
    pub fn delivered(&self) -> usize {
        self.outcomes().filter(Outcome::is_delivered).count()
    }

    /// How many targets hold the signal for a later delivery
    /// ([`Queued`](OutcomeKind::Queued)): async targets' queues and durable jobs.
    pub fn queued(&self) -> usize {
        self.outcomes().filter(Outcome::is_queued).count()
    }

    /// How many targets dropped the signal by their own overflow policy
    /// ([`Dropped`](OutcomeKind::Dropped)).
    pub fn dropped(&self) -> usize {
        self.count(|n| matches!(n, Noted::Dropped(_)))
    }

    /// How many targets failed ([`Failed`](OutcomeKind::Failed)).
    pub fn failed(&self) -> usize {
        self.count(|n| matches!(n, Noted::Failed(_)))
    }

    /// How many targets were delivered or queued the signal:
    /// [`delivered`](PublishReport::delivered) plus [`queued`](PublishReport::queued).
    pub fn accepted(&self) -> usize {
        self.len() - self.count(|n| !matches!(n, Noted::Queued(_)))
    }

    fn count(&self, f: impl Fn(&Noted) -> bool) -> usize {
        self.noted.iter().filter(|(_, n)| f(n)).count()
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
    noted: &'a [(usize, Noted)],
    direct: bool,
    position: usize,
}

impl<'a> Iterator for Outcomes<'a> {
    type Item = Outcome<'a>;

    fn next(&mut self) -> Option<Outcome<'a>> {
        let (subscription, target) = self.targets.next()?;
        let kind = match self.noted.first() {
            Some((p, n)) if *p == self.position => {
                self.noted = &self.noted[1..];
                n.kind()
            }
            _ if !self.direct && target.is_queued() => OutcomeKind::Queued(QueuedIn::Memory),
            _ => OutcomeKind::Delivered,
        };
        self.position += 1;
        let error = match kind {
            OutcomeKind::Failed(e) => Some(e),
            _ => None,
        };
        Some(Outcome {
            subscription,
            target: target.name(),
            kind,
            error,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.targets.size_hint()
    }
}

impl fmt::Display for PublishReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.len();
        write!(
            f,
            "{}: {} delivered",
            crate::error::count(n, "target", "targets"),
            self.delivered()
        )?;
        for (count, what) in [(self.queued(), "queued"), (self.dropped(), "dropped")] {
            if count > 0 {
                write!(f, ", {count} {what}")?;
            }
        }
        write!(f, ", {} failed", self.failed())?;
        for o in self.outcomes() {
            match o.kind {
                OutcomeKind::Failed(e) => write!(f, "; {}: {e}", o.target)?,
                OutcomeKind::Dropped(why) => write!(f, "; {}: {why}", o.target)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Runs one delivery attempt, noting whether the adapter enqueued the signal as a durable
/// job instead of delivering it (a [`Forwarder`](crate::queue::Forwarder) in async mode):
/// the attempt's result and, on success, where the signal waits.
pub(crate) async fn noting_enqueue<F>(attempt: F) -> (F::Output, Option<QueuedIn>)
where
    F: std::future::Future,
{
    let (output, enqueued) = crate::context::noting_enqueue(attempt).await;
    (output, enqueued.map(|job| QueuedIn::Durable { job }))
}
