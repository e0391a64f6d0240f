//! The queue's `tracing` events: `signal_bus::queue` (a job ended an attempt, or the
//! runner's housekeeping or a store operation did something worth knowing) and a durable
//! forwarder's `signal_bus::deliver` and `signal_bus::endpoint_disabled` events. The table
//! of every event is in [`telemetry`](crate::telemetry).

use std::time::Duration;

use tracing::Level;

use super::{Job, PruneReport, QueueError, WorkOutcome, FORWARDER_WORKER};
use crate::{DeliveryError, Signal};

// The checks of whether `signal_bus::deliver` events are recorded live here, the lowest
// module that emits them; `telemetry` re-exports them for the bus's deliveries.

/// Whether successful deliveries are traced (then the signal is needed after delivery and
/// each delivery is timed).
#[inline]
pub(crate) fn deliver_ok_enabled() -> bool {
    tracing::enabled!(target: "signal_bus::deliver", Level::TRACE)
}

/// Whether failed deliveries are logged (then deliveries are timed).
#[inline]
pub(crate) fn deliver_failed_enabled() -> bool {
    tracing::enabled!(target: "signal_bus::deliver", Level::WARN)
}

/// Whether the `signal_bus::deliver` event of this outcome would be recorded.
#[inline]
pub(crate) fn deliver_enabled<T, E>(result: &Result<T, E>) -> bool {
    if result.is_ok() {
        deliver_ok_enabled()
    } else {
        deliver_failed_enabled()
    }
}

/// A durable forwarder's job delivered (or failed to deliver) its signal: `mode` is
/// `forwarder`, with the job's id and attempt.
pub(crate) fn forwarder_delivered(
    job: &Job,
    forwarder: &str,
    adapter: &str,
    signal: &Signal,
    duration: Duration,
    result: Result<(), &DeliveryError>,
) {
    let duration_us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    let target = format_args!("forwarder:{forwarder}");
    match result {
        Ok(()) => tracing::trace!(
            name: "signal_bus::deliver",
            target: "signal_bus::deliver",
            target_name = %target,
            adapter,
            mode = "forwarder",
            signal_type = signal.ty(),
            signal_id = signal.id(),
            job_id = job.id,
            attempt = job.attempt,
            duration_us,
            outcome = "ok",
        ),
        Err(e) => tracing::warn!(
            name: "signal_bus::deliver",
            target: "signal_bus::deliver",
            message = "Delivery failed.",
            target_name = %target,
            adapter,
            mode = "forwarder",
            signal_type = signal.ty(),
            signal_id = signal.id(),
            job_id = job.id,
            attempt = job.attempt,
            duration_us,
            outcome = "failed",
            error_kind = %e.kind(),
            error = %e,
        ),
    }
}

/// A job run ended (`signal_bus::queue`, kind = completed / retryable / discarded /
/// cancelled / snoozed).
pub(crate) fn queue_job(job: &Job, kind: &'static str, outcome: &WorkOutcome, took: Duration) {
    use super::CancelReason;
    let (detail, cancel_reason) = match outcome {
        WorkOutcome::Error(r) => (r.as_str(), None),
        WorkOutcome::Cancel(r) => (r.as_str(), Some(CancelReason::Worker.as_str())),
        WorkOutcome::CancelFor(reason, r) => (r.as_str(), Some(reason.as_str())),
        _ => ("", None),
    };
    let forwarder = job.forwarder();
    if matches!(kind, "completed" | "snoozed") {
        tracing::debug!(
            name: "signal_bus::queue",
            target: "signal_bus::queue",
            kind,
            queue = %job.queue,
            worker = %job.worker,
            forwarder,
            job_id = job.id,
            attempt = job.attempt,
            duration_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        );
    } else {
        tracing::warn!(
            name: "signal_bus::queue",
            target: "signal_bus::queue",
            message = "Job did not complete.",
            kind,
            queue = %job.queue,
            worker = %job.worker,
            forwarder,
            job_id = job.id,
            attempt = job.attempt,
            max_attempts = job.max_attempts,
            cancel_reason,
            error = detail,
        );
    }
}

/// Recording a job's outcome failed (`action`: complete, retry, snooze, cancel, discard).
pub(crate) fn queue_store_error(job: &Job, action: &'static str, error: &QueueError) {
    tracing::error!(
        name: "signal_bus::queue",
        target: "signal_bus::queue",
        message = "Could not record a job's outcome; its lease will expire and it will run again.",
        kind = "store_error",
        action,
        queue = %job.queue,
        worker = %job.worker,
        forwarder = job.forwarder(),
        job_id = job.id,
        attempt = job.attempt,
        error = %error,
    );
}

/// A runner's update of a job it ran was refused: the job is no longer held under its lease.
pub(crate) fn queue_lease_lost(job: &Job, action: &'static str) {
    tracing::warn!(
        name: "signal_bus::queue",
        target: "signal_bus::queue",
        message = "A job's lease was taken over (rescued, released, cancelled or claimed again); \
                   this runner's outcome was not recorded.",
        kind = "lease_lost",
        action,
        queue = %job.queue,
        worker = %job.worker,
        forwarder = job.forwarder(),
        job_id = job.id,
        attempt = job.attempt,
    );
}

/// As [`queue_lease_lost`], when only the job id is at hand (batched completions,
/// heartbeats).
pub(crate) fn queue_lease_lost_id(queue: &str, job_id: i64, action: &'static str) {
    tracing::warn!(
        name: "signal_bus::queue",
        target: "signal_bus::queue",
        message = "A job's lease was taken over (rescued, released, cancelled or claimed again); \
                   this runner's outcome was not recorded.",
        kind = "lease_lost",
        action,
        queue,
        job_id,
    );
}

/// A runner's write or read failed; `action` says which (`claim`, `complete`, `rescue`,
/// `register`, `prune`, ...).
pub(crate) fn queue_store_failure(queue: &str, action: &'static str, error: &QueueError) {
    tracing::error!(
        name: "signal_bus::queue",
        target: "signal_bus::queue",
        message = "A queue store operation failed; it is tried again on the next round.",
        kind = "store_error",
        action,
        queue,
        error = %error,
    );
}

/// A claimed job's row could not be read: it was cancelled as `schema_mismatch`.
#[allow(dead_code)]
pub(crate) fn queue_corrupt_job(backend: &str, job_id: i64, error: &QueueError) {
    tracing::error!(
        name: "signal_bus::queue",
        target: "signal_bus::queue",
        message = "A claimed job's row does not hold a valid job: it is cancelled as \
                   schema_mismatch; the rest of its batch runs.",
        kind = "corrupt_job",
        backend,
        job_id,
        error = %error,
    );
}

pub(crate) fn queue_rescued(count: u64) {
    tracing::warn!(
        name: "signal_bus::queue",
        target: "signal_bus::queue",
        message = "Rescued jobs whose runner stopped renewing their lease; each counts as a \
                   failed attempt and is retried with backoff.",
        kind = "rescued",
        count,
    );
}

/// Jobs for a name no process registered within the grace period were cancelled.
pub(crate) fn queue_unknown_cancelled(queue: &str, worker: &str, count: u64) {
    let (reason, _) = super::unregistered_reason(worker);
    tracing::warn!(
        name: "signal_bus::queue",
        target: "signal_bus::queue",
        message = "Cancelled jobs whose worker or forwarder no process registered within the \
                   grace period.",
        kind = reason.as_str(),
        queue,
        worker,
        forwarder = worker
            .strip_prefix(FORWARDER_WORKER)
            .and_then(|r| r.strip_prefix(':')),
        count,
    );
}

pub(crate) fn queue_pruned(report: &PruneReport) {
    if *report == PruneReport::default() {
        return;
    }
    tracing::debug!(
        name: "signal_bus::queue",
        target: "signal_bus::queue",
        kind = "pruned",
        completed = report.completed,
        cancelled = report.cancelled,
        discarded = report.discarded,
        signals = report.signals,
    );
}

/// A durable forwarder's endpoint answered 410 Gone: the forwarder is paused.
pub(crate) fn forwarder_paused(forwarder: &str, error: &DeliveryError) {
    tracing::error!(
        name: "signal_bus::endpoint_disabled",
        target: "signal_bus::endpoint_disabled",
        message = "A durable forwarder's endpoint answered 410 Gone: the forwarder is paused in \
                   this process and its jobs wait (no attempt spent) until \
                   Queue::resume_forwarder.",
        target_name = forwarder,
        forwarder,
        error = %error,
    );
}
