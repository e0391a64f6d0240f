//! Telemetry: `tracing` events with stable names.
//!
//! | event (name and target) | level | when | fields |
//! |---|---|---|---|
//! | `signal_bus::publish` | debug | a signal was published | `bus`, `signal_type`, `signal_id`, `targets`, `failed`, `duration_us` |
//! | `signal_bus::deliver` | trace (ok), warn (failed) | one target got, or failed to get, a signal | `target`, `subscription`, `signal_type`, `signal_id`, `outcome`, `error` |
//!
//! Filter them like any `tracing` target, e.g. `RUST_LOG=signal_bus::deliver=warn`.

use crate::{dispatch::Outcome, Signal};

pub(crate) fn delivered(signal: &Signal, outcome: &Outcome) {
    match &outcome.result {
        Ok(()) => tracing::trace!(
            name: "signal_bus::deliver",
            target: "signal_bus::deliver",
            target_name = &*outcome.target,
            subscription = outcome.subscription.map(|s| s.get()),
            signal_type = signal.ty(),
            signal_id = signal.id(),
            outcome = "ok",
        ),
        Err(e) => tracing::warn!(
            name: "signal_bus::deliver",
            target: "signal_bus::deliver",
            message = "Delivery failed.",
            target_name = &*outcome.target,
            subscription = outcome.subscription.map(|s| s.get()),
            signal_type = signal.ty(),
            signal_id = signal.id(),
            outcome = "failed",
            error_kind = %e.kind(),
            error = %e,
        ),
    }
}

pub(crate) fn published(bus: &str, signal: &Signal, targets: usize, failed: usize, micros: u64) {
    tracing::debug!(
        name: "signal_bus::publish",
        target: "signal_bus::publish",
        bus,
        signal_type = signal.ty(),
        signal_id = signal.id(),
        targets,
        failed,
        duration_us = micros,
    );
}
