//! Delivering one signal to many targets: [`Target`], [`dispatch`], [`dispatch_batch`] and
//! the [`PublishReport`] that says what happened to each.
//!
//! The bus uses the same machinery for `publish`; these functions serve code that has
//! targets but no bus.
//!
//! Delivery runs every target, in order, on the caller's task: an adapter that can deliver
//! without waiting (a channel with room, a log line) does so inline with no allocation; the
//! others are polled once and, if they must wait, awaited together. One target failing
//! never stops the others.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use futures_util::future::{join_all, BoxFuture};
use tokio::time::{Duration, Instant};

use crate::{context::SubscriptionId, telemetry, BusError, DeliveryError, Signal};

pub mod middleware;
mod pipeline;
mod queue;
mod report;
mod runtime;
mod target;

pub(crate) use report::{noting_enqueue, Matched, Noted, Planned};
pub use report::{DropReason, Outcome, OutcomeKind, Outcomes, PublishReport, QueuedIn};
pub(crate) use runtime::Counters;
pub use target::{
    IntoTargets, Target, DEFAULT_BATCH_QUEUE_CAPACITY, DEFAULT_TIMEOUT, MAX_BATCH_SIZE, MAX_TIMEOUT,
};

/// Delivers one signal to `targets` without a bus, waiting for every synchronous target.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use signal_bus::{adapter::{Logger, Noop}, dispatch, Signal, Target};
///
/// let signal = Signal::builder("user.created", "/accounts").build()?;
/// let report = dispatch(signal, vec![Target::new(Logger::info()), Target::new(Noop)]).await?;
/// assert_eq!(report.delivered(), 2);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`BusError::InvalidTarget`] when a target fails validation; nothing is delivered then.
pub async fn dispatch(
    signal: impl Into<Arc<Signal>>,
    targets: impl IntoTargets,
) -> Result<PublishReport, BusError> {
    let signal = signal.into();
    let targets = activate(targets)?;
    let mut report = PublishReport::new(Planned::Targets(Arc::clone(&targets)));
    deliver_all(signal, &mut report, false).await;
    close_queues(&targets);
    Ok(report)
}

/// Like [`dispatch`], on a task of its own on the current tokio runtime: returns at once
/// with a handle to await.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use signal_bus::{adapter::Noop, dispatch_async, Signal};
///
/// let handle = dispatch_async(Signal::builder("a.b", "/s").build()?, Noop)?;
/// let report = handle.await??;
/// assert!(report.is_ok());
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`BusError::NoRuntime`] when called outside a tokio runtime (nothing is delivered).
pub fn dispatch_async(
    signal: impl Into<Arc<Signal>>,
    targets: impl IntoTargets,
) -> Result<tokio::task::JoinHandle<Result<PublishReport, BusError>>, BusError> {
    let handle = crate::error::runtime_for("dispatch_async")?;
    let signal = signal.into();
    let targets = targets.into_targets();
    Ok(handle.spawn(dispatch(signal, targets)))
}

/// Validates and activates targets for one dispatch (fresh breakers and queues).
fn activate(targets: impl IntoTargets) -> Result<Arc<[Target]>, BusError> {
    let targets = targets.into_targets();
    validate_targets(&targets)?;
    Ok(targets.iter().map(|t| t.activate(None, None)).collect())
}

/// Lets the queue workers of one-off targets finish what they hold, then exit.
fn close_queues(targets: &[Target]) {
    for t in targets {
        if let Some(q) = &t.runtime.queue {
            q.close();
        }
        close_queues(t.dead_letters());
    }
}

/// Delivers several signals to each target with one [`Adapter::deliver_batch`]
/// call per target (HTTP targets send one batch request). One outcome per target.
///
/// [`Adapter::deliver_batch`]: crate::Adapter::deliver_batch
///
/// # Errors
/// [`BusError::InvalidTarget`] when a target fails validation.
pub async fn dispatch_batch<S>(
    signals: impl IntoIterator<Item = S>,
    targets: impl IntoTargets,
) -> Result<PublishReport, BusError>
where
    S: Into<Arc<Signal>>,
{
    let signals: Vec<Arc<Signal>> = signals.into_iter().map(Into::into).collect();
    let targets = activate(targets)?;
    let signals = &signals;
    let results = join_all(
        targets
            .iter()
            .map(|t| async move { pipeline::deliver_batch(t, signals).await }),
    )
    .await;
    close_queues(&targets);
    // The targets got the batch directly, not through their queues: a success is a delivery.
    let mut report = PublishReport::new(Planned::Direct(Arc::clone(&targets)));
    report.noted = results
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Ok(None) => None,
            Ok(Some(queued)) => Some((i, Noted::Queued(queued))),
            Err(e) => Some((i, Noted::Failed(e))),
        })
        .collect();
    Ok(report)
}

pub(crate) fn validate_targets(targets: &[Target]) -> Result<(), BusError> {
    for t in targets {
        t.validate().map_err(|source| BusError::InvalidTarget {
            target: t.name().to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// The targets of one delivery: bare targets, or the targets of matched subscriptions.
///
/// A concrete iterator (rather than closures) keeps `publish` futures `Send`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Plan<'a> {
    Targets(&'a [Target]),
    Subscriptions(&'a [(SubscriptionId, Target)]),
}

impl<'a> Plan<'a> {
    /// The target at `position` in delivery order.
    #[inline]
    fn target(self, position: usize) -> Option<&'a Target> {
        match self {
            Plan::Targets(targets) => targets.get(position),
            Plan::Subscriptions(targets) => targets.get(position).map(|(_, t)| t),
        }
    }

    /// The subscription of the target at `position` (none for bare targets).
    fn subscription(self, position: usize) -> Option<SubscriptionId> {
        match self {
            Plan::Targets(_) => None,
            Plan::Subscriptions(targets) => targets.get(position).map(|(id, _)| *id),
        }
    }

    pub(crate) fn iter(self) -> PlanIter<'a> {
        PlanIter {
            plan: self,
            next: 0,
        }
    }
}

#[derive(Debug)]
pub(crate) struct PlanIter<'a> {
    plan: Plan<'a>,
    next: usize,
}

impl<'a> Iterator for PlanIter<'a> {
    type Item = (Option<SubscriptionId>, &'a Target);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let item = match self.plan {
            Plan::Targets(targets) => (None, targets.get(self.next)?),
            Plan::Subscriptions(targets) => {
                let (id, t) = targets.get(self.next)?;
                (Some(*id), t)
            }
        };
        self.next += 1;
        Some(item)
    }
}

/// Delivers `signal` to every target the report plans, recording in it every outcome that
/// is not the target's usual success (failed, dropped, enqueued as a durable job), and
/// gives the signal back unless the last target took it.
///
/// Targets that can deliver without waiting do so inline; the others are polled once and,
/// if still pending, awaited together. Nothing is allocated unless a target must wait or
/// fails. When nothing needs the signal afterwards (`keep` false, no failure, no telemetry
/// that names it), the last target is offered this reference instead of a clone.
pub(crate) async fn deliver_all(
    signal: Arc<Signal>,
    report: &mut PublishReport,
    keep: bool,
) -> Option<Arc<Signal>> {
    // Traced successes name the signal and are timed.
    let traced = telemetry::deliver_ok_enabled();
    deliver_planned(
        signal,
        &report.planned,
        &mut report.noted,
        keep || traced,
        traced,
    )
    .await
}

/// The `signal_bus::deliver` event of an outcome decided on the publishing task (the slow
/// path emits its own): a synchronous success when traced, or a failure (a queue that
/// refused the signal, an adapter that took the signal and panicked).
#[cold]
#[inline(never)]
fn fast_outcome_event(
    target: &Target,
    subscription: Option<SubscriptionId>,
    signal: Option<&Arc<Signal>>,
    started: Option<Instant>,
    result: Result<(), &DeliveryError>,
) {
    if !telemetry::deliver_enabled(&result) {
        return;
    }
    let outcome = match result {
        Ok(()) => telemetry::Delivery::Ok,
        Err(e) => telemetry::Delivery::Failed(e),
    };
    let via = if target.is_queued() {
        telemetry::Via::Async
    } else {
        telemetry::Via::Sync
    };
    // Untimed (not traced) outcomes were decided without waiting: no time to speak of.
    let took = started.map_or(Duration::ZERO, |s| s.elapsed());
    telemetry::deliver(
        via.as_str(),
        target.name(),
        target.adapter().name(),
        subscription,
        signal.map(|s| &**s),
        None,
        took,
        outcome,
    );
}

/// What a slow delivery noted: `None` for the target's usual success.
type SlowOutcome = Option<Noted>;

fn slow_outcome(result: Result<Option<QueuedIn>, DeliveryError>) -> SlowOutcome {
    match result {
        Ok(queued) => queued.map(Noted::Queued),
        Err(e) => Some(Noted::Failed(e)),
    }
}

async fn deliver_planned(
    signal: Arc<Signal>,
    planned: &Planned,
    noted: &mut Vec<(usize, Noted)>,
    keep: bool,
    traced: bool,
) -> Option<Arc<Signal>> {
    let mut pending: Vec<(usize, BoxFuture<'_, SlowOutcome>)> = Vec::new();
    let thread = runtime::thread_token();
    let last = planned.len().wrapping_sub(1);
    let mut signal = Some(signal);
    let plan = planned.plan();
    // By position: the subscription is looked up only for an event.
    let mut position = 0;
    while let Some(target) = plan.target(position) {
        let at = position;
        position += 1;
        let subscription = || plan.subscription(at);
        let started = traced.then(Instant::now);
        // A bus's middleware wraps each delivery made here (a queued target's runs in its
        // worker); without middleware this is the one extra check. The signal is still
        // ours: only the last target's hand-off, below, takes it.
        if let (Some(chain), Some(current)) = (target.runtime.inline_middleware(), &signal) {
            let hooked =
                middleware::deliver_sync(chain, target, current, subscription(), thread, started);
            match hooked {
                middleware::Hooked::Done(None) => {}
                middleware::Hooked::Done(Some(n)) => noted.push((at, n)),
                middleware::Hooked::Slow(mut slow) => match poll_once(&mut slow) {
                    Poll::Ready(None) => {}
                    Poll::Ready(Some(n)) => noted.push((at, n)),
                    Poll::Pending => pending.push((at, slow)),
                },
            }
            continue;
        }
        let handed = if at == last && !keep && noted.is_empty() && pending.is_empty() {
            pipeline::try_hand_off(target, &mut signal, thread)
        } else {
            None
        };
        // Only a hand-off of the last target takes the signal: it delivered it (or lost it
        // in a panic, a failure), and nothing below needs it.
        let Some(current) = &signal else {
            if let Some(pipeline::Fast::Done(Err(e))) = handed {
                fast_outcome_event(target, subscription(), None, started, Err(&e));
                noted.push((at, Noted::Failed(e)));
            }
            break;
        };
        let fast = match handed {
            Some(fast) => fast,
            None => pipeline::try_fast(target, current, thread),
        };
        // Slow futures own a reference of their own, so the last target may take ours.
        let mut slow: BoxFuture<'_, SlowOutcome> = match fast {
            pipeline::Fast::Done(Ok(())) => {
                // A queued target's event comes from its worker, once delivered.
                if started.is_some() && !target.is_queued() {
                    fast_outcome_event(target, subscription(), Some(current), started, Ok(()));
                }
                continue;
            }
            pipeline::Fast::Done(Err(e)) => {
                fast_outcome_event(target, subscription(), Some(current), started, Err(&e));
                noted.push((at, Noted::Failed(e)));
                continue;
            }
            // The drop has its own event (`signal_bus::drop`).
            pipeline::Fast::Dropped(why) => {
                noted.push((at, Noted::Dropped(why)));
                continue;
            }
            pipeline::Fast::Slow(first) => {
                let (signal, subscription) = (Arc::clone(current), subscription());
                Box::pin(async move {
                    let via = telemetry::Via::Sync;
                    slow_outcome(pipeline::deliver(target, &signal, first, via, subscription).await)
                })
            }
            pipeline::Fast::Enqueue => {
                let (signal, subscription) = (Arc::clone(current), subscription());
                Box::pin(async move {
                    let result = match &target.runtime.queue {
                        Some(q) => q.offer_waiting(target, &signal).await,
                        None => Ok(None),
                    };
                    match result {
                        Ok(None) => None,
                        Ok(Some(why)) => Some(Noted::Dropped(why)),
                        Err(e) => {
                            fast_outcome_event(
                                target,
                                subscription,
                                Some(&signal),
                                started,
                                Err(&e),
                            );
                            Some(Noted::Failed(e))
                        }
                    }
                })
            }
        };
        match poll_once(&mut slow) {
            Poll::Ready(None) => {}
            Poll::Ready(Some(n)) => noted.push((at, n)),
            Poll::Pending => pending.push((at, slow)),
        }
    }
    if !pending.is_empty() {
        let done = join_all(
            pending
                .into_iter()
                .map(|(i, fut)| async move { (i, fut.await) }),
        )
        .await;
        noted.extend(done.into_iter().filter_map(|(i, n)| n.map(|n| (i, n))));
        noted.sort_by_key(|(i, _)| *i);
    }
    signal
}

fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(fut).poll(&mut cx)
}
