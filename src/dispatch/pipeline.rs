//! One delivery to one target with its policies: circuit breaker, timeout, retries with
//! backoff, disabling a gone endpoint, and dead letters once it has failed for good.

use std::{
    panic::{self, AssertUnwindSafe},
    sync::{atomic::Ordering, Arc},
};

use futures_util::{future::BoxFuture, FutureExt as _};
use tokio::time::Instant;

use super::{noting_enqueue, runtime::LATENCY_SAMPLE, DropReason, QueuedIn, Target};
use crate::{
    context::SubscriptionId,
    policy::{CircuitState, NextStep, Overflow, Transition},
    telemetry::{self, Via},
    DeliveryError, ErrorKind, Signal,
};

/// The result of trying a target without waiting.
pub(crate) enum Fast {
    /// Finished: the outcome (`Ok`: the target's usual success, delivered or queued).
    Done(Result<(), DeliveryError>),
    /// An async target's full queue dropped the signal (overflow `DropNewest`).
    Dropped(DropReason),
    /// Must wait: the slow pipeline takes over (with the first attempt's failure, if one
    /// was made).
    Slow(Option<DeliveryError>),
    /// An async target whose full queue makes the publisher wait.
    Enqueue,
}

/// Tries a target on the publishing task: an async queue offer, or the adapter's
/// `try_deliver` when the breaker (if any) is closed. No allocation, no clock read unless
/// this delivery is sampled for latency. `thread` is the caller's
/// [`thread_token`](super::runtime::thread_token).
///
/// The common case (a synchronous target without a breaker, enabled, not sampled this
/// time) is inlined into the publish loop: one `try_deliver` call and one count, a plain
/// load and store on a counter this thread owns.
#[inline]
pub(crate) fn try_fast(target: &Target, signal: &Arc<Signal>, thread: u64) -> Fast {
    let rt = &*target.runtime;
    if rt.plain && !rt.disabled.load(Ordering::Relaxed) {
        let count = rt.delivered_count(thread);
        if !count.get().is_multiple_of(LATENCY_SAMPLE) {
            let attempt =
                panic::catch_unwind(AssertUnwindSafe(|| target.adapter.try_deliver(signal)));
            return match attempt {
                Ok(Some(Ok(()))) => {
                    count.add_one();
                    Fast::Done(Ok(()))
                }
                Ok(Some(Err(e))) => Fast::Slow(Some(e)),
                Ok(None) => Fast::Slow(None),
                Err(p) => Fast::Slow(Some(DeliveryError::from_panic(&*p))),
            };
        }
    }
    try_fast_general(target, signal, thread)
}

/// [`try_fast`] handing the adapter the caller's own reference to the signal
/// ([`Adapter::try_deliver_owned`](crate::Adapter::try_deliver_owned)): `None` when it was not
/// attempted or not taken (the signal is still in `signal`: go on with [`try_fast`]).
#[inline]
pub(crate) fn try_hand_off(
    target: &Target,
    signal: &mut Option<Arc<Signal>>,
    thread: u64,
) -> Option<Fast> {
    let rt = &*target.runtime;
    if !rt.plain || rt.disabled.load(Ordering::Relaxed) {
        return None;
    }
    let count = rt.delivered_count(thread);
    if count.get().is_multiple_of(LATENCY_SAMPLE) {
        return None;
    }
    match panic::catch_unwind(AssertUnwindSafe(|| {
        target.adapter.try_deliver_owned(signal)
    })) {
        Ok(()) if signal.is_none() => {
            count.add_one();
            Some(Fast::Done(Ok(())))
        }
        Ok(()) => None,
        Err(p) => Some(hand_off_panicked(target, signal, &*p)),
    }
}

/// The adapter panicked in `try_deliver_owned`. With the signal still there, the failure
/// goes the usual way; taken and lost, it fails for good here (a panic is permanent, so
/// there is nothing to retry; there is no signal left for dead-letter targets).
#[cold]
fn hand_off_panicked(
    target: &Target,
    signal: &Option<Arc<Signal>>,
    payload: &(dyn std::any::Any + Send),
) -> Fast {
    let e = DeliveryError::from_panic(payload);
    if signal.is_some() {
        return Fast::Slow(Some(e));
    }
    let rt = &*target.runtime;
    rt.stats().counters.failed.fetch_add(1, Ordering::Relaxed);
    rt.record_error(&e);
    Fast::Done(Err(e))
}

/// [`try_fast`] for every target: queued, with a breaker, disabled, or sampled.
#[inline(never)]
fn try_fast_general(target: &Target, signal: &Arc<Signal>, thread: u64) -> Fast {
    let rt = &*target.runtime;
    if let Some(queue) = &rt.queue {
        return match queue.offer(target, signal) {
            super::queue::Offer::Done(Err(e)) => {
                rt.stats().counters.failed.fetch_add(1, Ordering::Relaxed);
                rt.record_error(&e);
                Fast::Done(Err(e))
            }
            super::queue::Offer::Done(Ok(())) => Fast::Done(Ok(())),
            super::queue::Offer::Dropped(why) => Fast::Dropped(why),
            super::queue::Offer::MustWait => Fast::Enqueue,
        };
    }
    if rt.disabled.load(Ordering::Relaxed) {
        return Fast::Slow(None);
    }
    // A closed breaker without a rate window never reads the clock: give it a fixed instant.
    // With a rate window, successes are recorded in time buckets: give it the real time.
    let (permit, breaker_now) = match &rt.breaker {
        None => (None, None),
        Some(b) if b.state() == CircuitState::Closed => {
            let now = if b.config().has_failure_rate() {
                Instant::now()
            } else {
                super::target::epoch()
            };
            match b.try_acquire(now) {
                Ok(p) => (Some(p), Some(now)),
                Err(_) => return Fast::Slow(None),
            }
        }
        Some(_) => return Fast::Slow(None),
    };
    let count = rt.delivered_count(thread);
    let sampled = count.get().is_multiple_of(LATENCY_SAMPLE);
    let started = sampled.then(std::time::Instant::now);
    let attempt = panic::catch_unwind(AssertUnwindSafe(|| target.adapter.try_deliver(signal)))
        .unwrap_or_else(|p| Some(Err(DeliveryError::from_panic(&*p))));
    match attempt {
        None => Fast::Slow(None),
        Some(Ok(())) => {
            if let (Some(b), Some(p), Some(now)) = (&rt.breaker, permit, breaker_now) {
                let _ = b.on_success(p, now);
            }
            rt.record_success(count, started.map(|s| s.elapsed()));
            Fast::Done(Ok(()))
        }
        Some(Err(e)) => {
            if let (Some(b), Some(p)) = (&rt.breaker, permit) {
                let t = b.on_failure(p, Instant::now());
                circuit(target, t);
            }
            Fast::Slow(Some(e))
        }
    }
}

async fn attempt_once(target: &Target, signal: &Arc<Signal>) -> Result<(), DeliveryError> {
    let delivery =
        AssertUnwindSafe(target.adapter.deliver_shared(Arc::clone(signal))).catch_unwind();
    let timeout = target.config.timeout;
    match tokio::time::timeout(timeout, delivery).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(DeliveryError::from_panic(&*panic)),
        Err(_) => Err(DeliveryError::Timeout { after: timeout }),
    }
}

async fn attempt_batch(target: &Target, signals: &[Arc<Signal>]) -> Result<(), DeliveryError> {
    let delivery = AssertUnwindSafe(target.adapter.deliver_batch(signals)).catch_unwind();
    let timeout = target.config.timeout;
    match tokio::time::timeout(timeout, delivery).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(DeliveryError::from_panic(&*panic)),
        Err(_) => Err(DeliveryError::Timeout { after: timeout }),
    }
}

/// Delivers one signal with the target's policies (the async worker, `via` Async, and the
/// slow path of `publish`, `via` Sync, both come here). `first` is a failure the fast path
/// already had. Emits the `signal_bus::deliver` event, timed from here.
///
/// `Ok(Some(_))`: the adapter did not deliver the signal but enqueued it as a durable job
/// (a forwarder in async mode).
pub(crate) async fn deliver(
    target: &Target,
    signal: &Arc<Signal>,
    first: Option<DeliveryError>,
    via: Via,
    subscription: Option<SubscriptionId>,
) -> Result<Option<QueuedIn>, DeliveryError> {
    let signals = std::slice::from_ref(signal);
    // No clock read unless the event is recorded (warn covers trace).
    let started = telemetry::deliver_failed_enabled().then(Instant::now);
    let result = run(target, signals, first, false).await;
    if let Some(started) = started.filter(|_| telemetry::deliver_enabled(&result)) {
        let took = started.elapsed();
        telemetry::target_delivered(
            via,
            target.name(),
            target.adapter.name(),
            subscription,
            signals,
            took,
            event(&result),
        );
    }
    result
}

/// Delivers a batch with one `deliver_batch` call per attempt, and emits its
/// `signal_bus::deliver` event (with the batch size).
pub(crate) async fn deliver_batch(
    target: &Target,
    signals: &[Arc<Signal>],
) -> Result<Option<QueuedIn>, DeliveryError> {
    let started = telemetry::deliver_failed_enabled().then(Instant::now);
    let result = run(target, signals, None, true).await;
    if let Some(started) = started.filter(|_| telemetry::deliver_enabled(&result)) {
        let took = started.elapsed();
        telemetry::target_delivered(
            Via::Batch,
            target.name(),
            target.adapter.name(),
            None,
            signals,
            took,
            event(&result),
        );
    }
    result
}

/// The `outcome` of a `signal_bus::deliver` event, as the report tells it.
fn event(result: &Result<Option<QueuedIn>, DeliveryError>) -> telemetry::Delivery<'_> {
    match result {
        Ok(None) => telemetry::Delivery::Ok,
        Ok(Some(QueuedIn::Durable { job })) => telemetry::Delivery::Queued { job: *job },
        Ok(Some(_)) => telemetry::Delivery::Queued { job: None },
        Err(e) => telemetry::Delivery::Failed(e),
    }
}

async fn run(
    target: &Target,
    signals: &[Arc<Signal>],
    mut first: Option<DeliveryError>,
    batch: bool,
) -> Result<Option<QueuedIn>, DeliveryError> {
    let rt = &*target.runtime;
    let n = signals.len() as u64;
    let started = Instant::now();
    let mut backoff = None;
    let mut attempts: u32 = 1;
    let mut latency = None;
    let mut queued = None;
    let error = loop {
        if rt.disabled.load(Ordering::Relaxed) {
            break DeliveryError::Gone {
                message: format!(
                    "target `{}` was disabled after its endpoint answered 410 Gone; re-enable it \
                     with Bus::enable_target",
                    target.name()
                ),
            };
        }
        let result = match first.take() {
            Some(e) => Err(e),
            None => {
                let permit = match &rt.breaker {
                    None => None,
                    Some(b) => match b.try_acquire(Instant::now()) {
                        Ok(p) => {
                            circuit(target, p.transition());
                            Some(p)
                        }
                        Err(_) => {
                            break DeliveryError::CircuitOpen {
                                endpoint: target.name().to_owned(),
                            }
                        }
                    },
                };
                let t0 = Instant::now();
                let (result, enqueued) = if batch {
                    noting_enqueue(attempt_batch(target, signals)).await
                } else {
                    noting_enqueue(attempt_once(target, &signals[0])).await
                };
                queued = enqueued;
                if let (Some(b), Some(p)) = (&rt.breaker, permit) {
                    let t = if result.is_ok() {
                        b.on_success(p, Instant::now())
                    } else {
                        b.on_failure(p, Instant::now())
                    };
                    circuit(target, t);
                }
                if result.is_ok() {
                    latency = Some(t0.elapsed());
                }
                result
            }
        };
        let e = match result {
            Ok(()) => {
                match queued {
                    Some(_) => rt.record_queued(n),
                    None => rt.record_delivered(n, latency),
                }
                return Ok(queued);
            }
            Err(e) => e,
        };
        if e.kind() == ErrorKind::Gone {
            disable(target, &e);
            break e;
        }
        if !e.is_retryable() || matches!(e, DeliveryError::CircuitOpen { .. }) {
            break e;
        }
        let Some(policy) = &target.config.retry else {
            break e;
        };
        let step = backoff
            .get_or_insert_with(|| policy.backoff())
            .next_step(e.retry_after(), started.elapsed());
        let delay = match step {
            NextStep::Retry(delay) => delay,
            NextStep::Throttled { asked, allowed } => {
                break DeliveryError::retry_later(e, asked, allowed)
            }
            _ => break e,
        };
        rt.stats().counters.retried.fetch_add(1, Ordering::Relaxed);
        telemetry::retry(target.name(), &signals[0], attempts, delay, &e);
        tokio::time::sleep(delay).await;
        attempts += 1;
    };
    rt.stats().counters.failed.fetch_add(n, Ordering::Relaxed);
    rt.record_error(&error);
    if !target.dead_letters().is_empty() {
        for signal in signals {
            dead_letter(target, signal, attempts, &error).await;
        }
    }
    Err(error)
}

fn circuit(target: &Target, transition: Option<Transition>) {
    if let Some(t) = transition {
        telemetry::circuit(target.name(), t.from, t.to);
    }
}

/// A 410 Gone: stop delivering to this target and tell the bus.
fn disable(target: &Target, error: &DeliveryError) {
    let rt = &*target.runtime;
    if rt.disabled.swap(true, Ordering::AcqRel) {
        return;
    }
    telemetry::endpoint_disabled(target.name(), error);
    rt.bus.emit_endpoint_disabled(target.name(), error);
}

/// Sends a signal that failed for good to the target's dead-letter targets, marked with
/// what failed.
async fn dead_letter(target: &Target, signal: &Arc<Signal>, attempts: u32, error: &DeliveryError) {
    let not_before = error.not_before().map(|t| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into()
    });
    let marked = signal.with_extensions(
        [
            ("deadlettertarget", target.name().into()),
            ("deadletterattempts", i64::from(attempts).into()),
            ("deadletterkind", error.kind().to_string().into()),
            ("deadlettererror", error.to_string().into()),
        ]
        .into_iter()
        .chain(not_before.map(|t| ("deadletternotbefore", t))),
    );
    let Ok(marked) = marked else { return };
    target
        .runtime
        .stats()
        .counters
        .dead_lettered
        .fetch_add(1, Ordering::Relaxed);
    telemetry::dead_letter(target.name(), signal, attempts, error);
    let targets = Arc::clone(target.dead_letters());
    deliver_dead_letters(Arc::new(marked), targets).await;
}

/// Dead-letter targets may have dead-letter targets of their own: the recursion goes
/// through a boxed `Send` future, which keeps `publish` futures `Send`.
fn deliver_dead_letters(signal: Arc<Signal>, targets: Arc<[Target]>) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let mut report = super::PublishReport::new(super::Planned::Targets(targets));
        super::deliver_all(signal, &mut report, false).await;
    })
}

/// A signal dropped by a full queue's overflow policy.
pub(crate) fn dropped(target: &Target, signal: &Signal, overflow: Overflow) {
    target
        .runtime
        .stats()
        .counters
        .dropped
        .fetch_add(1, Ordering::Relaxed);
    telemetry::dropped(target.name(), signal, overflow);
}
