//! Telemetry: `tracing` events with stable names.
//!
//! | event (name and target) | level | when | fields |
//! |---|---|---|---|
//! | `signal_bus::publish` | debug | a signal was published | `bus`, `signal_type`, `signal_id`, `targets`, `delivered`, `queued`, `dropped`, `failed` (the report's counts), `duration_us` |
//! | `signal_bus::deliver` | trace (ok, queued), warn (failed) | one delivery ended: by `publish`/`dispatch` (`mode` sync), an async target's worker (async), a batching worker or `dispatch_batch` (batch), a durable forwarder's job (forwarder, once per attempt) | `target_name`, `adapter`, `mode`, `duration_us`, `outcome`, and where they apply `subscription`, `signal_type`, `signal_id`, `batch_size`, `job_id`, `attempt`, `error_kind`, `error` |
//! | `signal_bus::retry` | info | a failed attempt will be retried | `target_name`, `signal_type`, `signal_id`, `attempt`, `delay_ms`, `error_kind`, `error` |
//! | `signal_bus::circuit` | warn (opened), info (other transitions) | a breaker changed state | `target_name`, `from`, `to` |
//! | `signal_bus::dead_letter` | warn | a signal failed for good and goes to dead-letter targets | `target_name`, `signal_type`, `signal_id`, `attempts`, `error` |
//! | `signal_bus::drop` | warn | a full async queue dropped a signal | `target_name`, `signal_type`, `signal_id`, `overflow` |
//! | `signal_bus::endpoint_disabled` | error | an endpoint answered 410 Gone and was disabled (a durable forwarder: paused) | `target_name`, `error` (and `forwarder`) |
//! | `signal_bus::queue` | debug (completed, snoozed, pruned), warn (retryable, discarded, cancelled, rescued, lease_lost, unknown_forwarder, unknown_worker), error (store_error) | a durable job ended an attempt, or the runner's housekeeping or a store operation did something worth knowing | `kind`, and per kind `queue`, `worker`, `forwarder`, `job_id`, `attempt`, `max_attempts`, `cancel_reason`, `action`, `count`, `error` |
//! | `signal_bus::cluster` | info, warn | a NATS bridge started or stopped, lost or regained its connection, skipped a malformed message, saw a local target fail, or hit a JetStream stream error (feature `nats`) | `kind`, `bus`, and per kind `subjects`, `subject`, `signal_type`, `signal_id`, `stream`, `consumer`, `error` |
//!
//! Besides events, [`Bus::metrics`](crate::Bus::metrics) returns counters and latency per
//! target, and [`Bus::health`](crate::Bus::health) runs every adapter's health check.
//! Filter them like any `tracing` target, e.g. `RUST_LOG=signal_bus::deliver=warn`.

use std::time::{Duration, SystemTime};

use tracing::Level;

use crate::{
    adapter::HealthStatus,
    context::SubscriptionId,
    policy::{CircuitState, Overflow},
    DeliveryError, Signal,
};

/// How a delivery was made, for the `mode` field of `signal_bus::deliver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// By `publish` (or `dispatch`), on the publishing task.
    Sync,
    /// By an async target's queue worker.
    Async,
    /// By an async target's queue worker, several signals in one `deliver_batch` call (or by
    /// `dispatch_batch`).
    Batch,
}

impl Via {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Via::Sync => "sync",
            Via::Async => "async",
            Via::Batch => "batch",
        }
    }
}

/// How a delivery ended, for the `outcome` field of `signal_bus::deliver`: the same words
/// as the publish report's outcome kinds (`ok` is a delivered outcome).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Delivery<'a> {
    /// The target got the signal(s): `outcome=ok`.
    Ok,
    /// The adapter enqueued the signal as a durable job instead (a forwarder in async
    /// mode): `outcome=queued`, with the job's id when there is one.
    Queued { job: Option<i64> },
    /// `outcome=failed`.
    Failed(&'a DeliveryError),
}

/// One `signal_bus::deliver` event: trace when the target got (or queued) the signal(s),
/// warn when not. `signal` when one signal was delivered (its type and id), `batch_size`
/// for a batch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn deliver(
    mode: &'static str,
    target: &str,
    adapter: &str,
    subscription: Option<SubscriptionId>,
    signal: Option<&Signal>,
    batch_size: Option<usize>,
    duration: Duration,
    outcome: Delivery<'_>,
) {
    let duration_us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    match outcome {
        Delivery::Queued { job } => tracing::trace!(
            name: "signal_bus::deliver",
            target: "signal_bus::deliver",
            target_name = target,
            adapter,
            mode,
            subscription = subscription.map(SubscriptionId::get),
            signal_type = signal.map(Signal::ty),
            signal_id = signal.map(Signal::id),
            batch_size,
            duration_us,
            outcome = "queued",
            job_id = job,
        ),
        Delivery::Ok => tracing::trace!(
            name: "signal_bus::deliver",
            target: "signal_bus::deliver",
            target_name = target,
            adapter,
            mode,
            subscription = subscription.map(SubscriptionId::get),
            signal_type = signal.map(Signal::ty),
            signal_id = signal.map(Signal::id),
            batch_size,
            duration_us,
            outcome = "ok",
        ),
        Delivery::Failed(e) => tracing::warn!(
            name: "signal_bus::deliver",
            target: "signal_bus::deliver",
            message = "Delivery failed.",
            target_name = target,
            adapter,
            mode,
            subscription = subscription.map(SubscriptionId::get),
            signal_type = signal.map(Signal::ty),
            signal_id = signal.map(Signal::id),
            batch_size,
            duration_us,
            outcome = "failed",
            error_kind = %e.kind(),
            error = %e,
        ),
    }
}

/// [`deliver`] for one target of a [`Target`](crate::Target) delivery: the target's name and
/// its adapter's.
#[allow(clippy::too_many_arguments)]
pub(crate) fn target_delivered(
    via: Via,
    target: &str,
    adapter: &str,
    subscription: Option<SubscriptionId>,
    signals: &[std::sync::Arc<Signal>],
    duration: Duration,
    outcome: Delivery<'_>,
) {
    let (signal, batch_size) = match (via, signals) {
        (Via::Batch, _) => (None, Some(signals.len())),
        (_, [one]) => (Some(&**one), None),
        _ => (None, Some(signals.len())),
    };
    deliver(
        via.as_str(),
        target,
        adapter,
        subscription,
        signal,
        batch_size,
        duration,
        outcome,
    );
}

pub(crate) use crate::queue::events::{
    deliver_enabled, deliver_failed_enabled, deliver_ok_enabled,
};

#[inline]
pub(crate) fn publish_enabled() -> bool {
    tracing::enabled!(target: "signal_bus::publish", Level::DEBUG)
}

/// The counts of a publish report, for the `signal_bus::publish` event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublishCounts {
    pub(crate) targets: usize,
    pub(crate) delivered: usize,
    pub(crate) queued: usize,
    pub(crate) dropped: usize,
    pub(crate) failed: usize,
}

/// A `signal_bus::publish` event: `signal` went to `counts.targets` targets, with the
/// report's outcome counts.
pub(crate) fn published(bus: &str, signal: &Signal, counts: PublishCounts, micros: u64) {
    tracing::debug!(
        name: "signal_bus::publish",
        target: "signal_bus::publish",
        bus,
        signal_type = signal.ty(),
        signal_id = signal.id(),
        targets = counts.targets,
        delivered = counts.delivered,
        queued = counts.queued,
        dropped = counts.dropped,
        failed = counts.failed,
        duration_us = micros,
    );
}

pub(crate) fn retry(
    target: &str,
    signal: &Signal,
    attempt: u32,
    delay: Duration,
    error: &DeliveryError,
) {
    tracing::info!(
        name: "signal_bus::retry",
        target: "signal_bus::retry",
        message = "Retrying after error.",
        target_name = target,
        signal_type = signal.ty(),
        signal_id = signal.id(),
        attempt,
        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        error_kind = %error.kind(),
        error = %error,
    );
}

pub(crate) fn circuit(target: &str, from: CircuitState, to: CircuitState) {
    if to == CircuitState::Open {
        tracing::warn!(
            name: "signal_bus::circuit",
            target: "signal_bus::circuit",
            message = "Circuit breaker opened.",
            target_name = target,
            from = %from,
            to = %to,
        );
    } else {
        tracing::info!(
            name: "signal_bus::circuit",
            target: "signal_bus::circuit",
            message = "Circuit breaker changed state.",
            target_name = target,
            from = %from,
            to = %to,
        );
    }
}

pub(crate) fn dead_letter(target: &str, signal: &Signal, attempts: u32, error: &DeliveryError) {
    tracing::warn!(
        name: "signal_bus::dead_letter",
        target: "signal_bus::dead_letter",
        message = "Delivery failed for good; sending to dead-letter targets.",
        target_name = target,
        signal_type = signal.ty(),
        signal_id = signal.id(),
        attempts,
        error = %error,
    );
}

pub(crate) fn dropped(target: &str, signal: &Signal, overflow: Overflow) {
    tracing::warn!(
        name: "signal_bus::drop",
        target: "signal_bus::drop",
        message = "Queue full; signal dropped.",
        target_name = target,
        signal_type = signal.ty(),
        signal_id = signal.id(),
        overflow = %overflow,
    );
}

pub(crate) fn endpoint_disabled(target: &str, error: &DeliveryError) {
    tracing::error!(
        name: "signal_bus::endpoint_disabled",
        target: "signal_bus::endpoint_disabled",
        message = "Endpoint is gone; target disabled.",
        target_name = target,
        error = %error,
    );
}

/// Counters and latency of one target, from [`Bus::metrics`](crate::Bus::metrics).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TargetMetrics {
    /// The subscription the target belongs to.
    pub subscription: SubscriptionId,
    /// The target's name.
    pub target: String,
    /// Signals delivered (by this target; an async target's worker counts its deliveries
    /// here too).
    pub delivered: u64,
    /// Signals enqueued as durable jobs instead of delivered (a
    /// [`Forwarder`](crate::queue::Forwarder) in async mode): their deliveries are the
    /// queue's, counted in [`Metrics::queue`].
    pub queued: u64,
    /// Signals that failed for good (after retries).
    pub failed: u64,
    /// Retries made.
    pub retried: u64,
    /// Signals dropped by a full queue.
    pub dropped: u64,
    /// Signals sent to dead-letter targets.
    pub dead_lettered: u64,
    /// Signals waiting in the target's async queue.
    pub queue_depth: usize,
    /// Median delivery latency (fast-path deliveries are sampled one in 64).
    pub latency_p50: Option<Duration>,
    /// 99th-percentile delivery latency.
    pub latency_p99: Option<Duration>,
    /// The circuit breaker's state, when the target has one.
    pub circuit: Option<CircuitState>,
    /// Whether the target was disabled after a 410 Gone.
    pub disabled: bool,
}

/// A snapshot of every target's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// One entry per target, in subscription order.
    pub targets: Vec<TargetMetrics>,
    /// Jobs of the bus's durable queue per state, as last seen by its runners (refreshed
    /// about every second); `None` without a queue or before the first look.
    pub queue: Option<std::collections::BTreeMap<crate::queue::JobState, u64>>,
    /// Runnable jobs of the bus's queue waiting for a worker or forwarder name that no
    /// process registered lately, per `(queue, worker)` (forwarder jobs show as
    /// `signal_bus.forwarder:<name>`), as last seen by its runners; `None` without a queue
    /// or before the first look. See [`Queue::unregistered`](crate::queue::Queue::unregistered).
    pub queue_unregistered: Option<std::collections::BTreeMap<(String, String), u64>>,
    /// The durable forwarders of this process paused after their endpoint answered 410 Gone
    /// (their jobs wait until [`Queue::resume_forwarder`](crate::queue::Queue::resume_forwarder)),
    /// sorted; empty without a queue. The pause lives in this process's memory only: other
    /// processes with the same forwarder keep delivering, and a restart resumes it.
    pub queue_paused: Vec<String>,
}

impl Metrics {
    /// The metrics of the first target named `name`.
    pub fn target(&self, name: &str) -> Option<&TargetMetrics> {
        self.targets.iter().find(|t| t.target == name)
    }
}

/// The health of one target, from [`Bus::health`](crate::Bus::health).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TargetHealth {
    /// The subscription the target belongs to.
    pub subscription: SubscriptionId,
    /// The target's name.
    pub target: String,
    /// The adapter's verdict (a disabled target or an open breaker is unhealthy).
    pub status: HealthStatus,
    /// How long the check took.
    pub latency: Option<Duration>,
    /// The adapter's message, if any.
    pub message: Option<String>,
    /// When the target last delivered (to within 64 fast-path deliveries).
    pub last_success: Option<SystemTime>,
    /// The last failure and when it happened.
    pub last_error: Option<(SystemTime, String)>,
}

/// Pushes a metrics snapshot through the `metrics` facade: counters as absolute values,
/// queue depth, latency and breaker state as gauges, labelled by bus, subscription and
/// target.
#[cfg(feature = "metrics")]
pub(crate) fn export(bus: &str, snapshot: &Metrics) {
    for t in &snapshot.targets {
        let labels = [
            ("bus", bus.to_owned()),
            ("subscription", t.subscription.to_string()),
            ("target", t.target.clone()),
        ];
        metrics::counter!("signal_bus_delivered_total", &labels).absolute(t.delivered);
        metrics::counter!("signal_bus_queued_total", &labels).absolute(t.queued);
        metrics::counter!("signal_bus_failed_total", &labels).absolute(t.failed);
        metrics::counter!("signal_bus_retried_total", &labels).absolute(t.retried);
        metrics::counter!("signal_bus_dropped_total", &labels).absolute(t.dropped);
        metrics::counter!("signal_bus_dead_lettered_total", &labels).absolute(t.dead_lettered);
        metrics::gauge!("signal_bus_queue_depth", &labels).set(t.queue_depth as f64);
        if let Some(p) = t.latency_p50 {
            metrics::gauge!("signal_bus_latency_p50_seconds", &labels).set(p.as_secs_f64());
        }
        if let Some(p) = t.latency_p99 {
            metrics::gauge!("signal_bus_latency_p99_seconds", &labels).set(p.as_secs_f64());
        }
        if let Some(state) = t.circuit {
            let v = match state {
                CircuitState::Closed => 0.0,
                CircuitState::HalfOpen => 1.0,
                CircuitState::Open => 2.0,
            };
            metrics::gauge!("signal_bus_circuit_state", &labels).set(v);
        }
    }
}
