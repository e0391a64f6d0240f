//! Telemetry: `tracing` events with stable names.
//!
//! | event (name and target) | level | when | fields |
//! |---|---|---|---|
//! | `signal_bus::publish` | debug | a signal was published | `bus`, `signal_type`, `signal_id`, `targets`, `failed`, `duration_us` |
//! | `signal_bus::deliver` | trace (ok), warn (failed) | one target got, or failed to get, a signal | `target`, `subscription`, `signal_type`, `signal_id`, `outcome`, `error` |
//!
//! Filter them like any `tracing` target, e.g. `RUST_LOG=signal_bus::deliver=warn`.

use tracing::Level;

use crate::{PublishReport, Signal};

pub(crate) fn delivered(signal: &Signal, report: &PublishReport) {
    let trace_ok = tracing::enabled!(target: "signal_bus::deliver", Level::TRACE);
    if !trace_ok && report.is_ok() {
        return;
    }
    for outcome in report.outcomes() {
        match outcome.error {
            None => tracing::trace!(
                name: "signal_bus::deliver",
                target: "signal_bus::deliver",
                target_name = outcome.target,
                subscription = outcome.subscription.map(|s| s.get()),
                signal_type = signal.ty(),
                signal_id = signal.id(),
                outcome = "ok",
            ),
            Some(e) => tracing::warn!(
                name: "signal_bus::deliver",
                target: "signal_bus::deliver",
                message = "Delivery failed.",
                target_name = outcome.target,
                subscription = outcome.subscription.map(|s| s.get()),
                signal_type = signal.ty(),
                signal_id = signal.id(),
                outcome = "failed",
                error_kind = %e.kind(),
                error = %e,
            ),
        }
    }
}

pub(crate) fn publish_enabled() -> bool {
    tracing::enabled!(target: "signal_bus::publish", Level::DEBUG)
}

pub(crate) fn published(bus: &str, signal: &Signal, report: &PublishReport, micros: u64) {
    tracing::debug!(
        name: "signal_bus::publish",
        target: "signal_bus::publish",
        bus,
        signal_type = signal.ty(),
        signal_id = signal.id(),
        targets = report.len(),
        failed = report.failed(),
        duration_us = micros,
    );
}
