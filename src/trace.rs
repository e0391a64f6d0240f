//! Trace context: signals carry the W3C `traceparent` and `tracestate` as the CloudEvents
//! distributed-tracing extension, so one trace spans every hop a signal makes.
//!
//! **Carrying.** [`Signal::traceparent`], [`Signal::tracestate`] and
//! [`Signal::trace_context`] read them; [`SignalBuilder::traceparent`],
//! [`SignalBuilder::trace_context`] and [`SignalBuilder::tracestate`] set them, checked by the
//! W3C rules ([`TraceContext`], [`validate_tracestate`]). Every transport passes them on
//! untouched: HTTP (structured: JSON members; binary: `ce-traceparent`/`ce-tracestate`
//! headers), NATS, the durable queue, the journal. A signal read from outside with an invalid
//! `traceparent` keeps it as an ordinary extension, passed on untouched, but
//! [`Signal::trace_context`] is `None` and no span takes it as its parent.
//!
//! **Spans.** Where a signal arrives, the crate enters a span whose parent (with the
//! `opentelemetry` feature) is the signal's trace context:
//!
//! | span (target `signal_bus::trace`, level info) | where | fields |
//! |---|---|---|
//! | `signal_bus.receive` | a NATS bridge, per received signal (`kind = "nats"`), around its publish into the local bus; yours, with [`receive_span`] (e.g. `kind = "http"` after [`read_signals`](crate::http::read_signals) or an axum extractor) | `kind`, `signal_type`, `signal_id`, `trace_id` (when the signal has a valid trace context) |
//! | `signal_bus.deliver` | a durable queue's runner, per forwarder job execution, around the adapter's delivery | `forwarder` (its name), `job_id`, `attempt`, `signal_type`, `signal_id`, `trace_id` |
//!
//! Their tracing parent is the span current where they start, as for any span; with the
//! `opentelemetry` feature their OpenTelemetry parent is the signal's trace context instead
//! (when it has a valid one), so the exported trace links the receiver to the publisher
//! across processes.
//!
//! **Publishing** (feature `opentelemetry`). [`Bus::publish`](crate::Bus::publish) of a
//! signal that carries neither `traceparent` nor `tracestate`, inside a span with a valid
//! OpenTelemetry span context (a `tracing-opentelemetry` layer is installed and the span is
//! recorded by it), publishes a copy carrying that span's context. Without the feature this
//! costs nothing; with it and no context, one look at the current span.
//!
//! ```
//! use signal_bus::{trace::receive_span, Signal};
//!
//! // A handler that read a signal (from `read_signals`, an axum extractor, ...) handles it
//! // inside a span whose parent is the signal's trace context:
//! let signal = Signal::builder("order.placed", "/shop")
//!     .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
//!     .build()?;
//! let _entered = receive_span(&signal, "http").entered();
//! // ... handle the signal: spans and events here belong to the publisher's trace.
//! # Ok::<(), signal_bus::SignalError>(())
//! ```
//!
//! [`SignalBuilder::traceparent`]: crate::SignalBuilder::traceparent
//! [`SignalBuilder::trace_context`]: crate::SignalBuilder::trace_context
//! [`SignalBuilder::tracestate`]: crate::SignalBuilder::tracestate

use tracing::Span;

pub use crate::signal::{validate_tracestate, TraceContext, TRACEPARENT, TRACESTATE};
use crate::Signal;

/// The name of the span a received signal is handled in ([`receive_span`]).
pub const RECEIVE_SPAN: &str = "signal_bus.receive";
/// The name of the span a durable queue's runner delivers a forwarder job's signal in.
pub const DELIVER_SPAN: &str = "signal_bus.deliver";

/// A `signal_bus.receive` span (target `signal_bus::trace`, level info) for handling a
/// received signal: fields `kind` (how it arrived: `http`, `nats`, `journal`, any word of
/// yours), `signal_type`, `signal_id` and, when the signal has a valid trace context,
/// `trace_id`. With the `opentelemetry` feature its OpenTelemetry parent is the signal's
/// trace context (`set_span_parent`); without it, or for a signal without a valid one, it is
/// a plain span (its parent the current span, as usual).
///
/// Enter it (`.entered()`) or instrument the handling future with it
/// (`tracing::Instrument::instrument`).
pub fn receive_span(signal: &Signal, kind: &'static str) -> Span {
    let span = tracing::info_span!(
        target: "signal_bus::trace",
        "signal_bus.receive",
        kind,
        signal_type = signal.ty(),
        signal_id = signal.id(),
        trace_id = tracing::field::Empty,
    );
    link(&span, signal);
    span
}

/// A `signal_bus.deliver` span for one execution of a durable forwarder job.
pub(crate) fn deliver_span(signal: &Signal, forwarder: &str, job_id: i64, attempt: u32) -> Span {
    let span = tracing::info_span!(
        target: "signal_bus::trace",
        "signal_bus.deliver",
        forwarder,
        job_id,
        attempt,
        signal_type = signal.ty(),
        signal_id = signal.id(),
        trace_id = tracing::field::Empty,
    );
    link(&span, signal);
    span
}

/// Records the signal's trace id on an enabled span and, with the feature, sets its parent.
fn link(span: &Span, signal: &Signal) {
    if span.is_disabled() {
        return;
    }
    if let Some(tc) = signal.trace_context() {
        span.record("trace_id", tc.trace_id_hex());
        #[cfg(feature = "opentelemetry")]
        let _ = otel::set_parent(span, &tc, signal);
    }
}

#[cfg(feature = "opentelemetry")]
pub(crate) use otel::inject;
#[cfg(feature = "opentelemetry")]
pub use otel::{parent_context, set_span_parent, span_trace_context};

#[cfg(feature = "opentelemetry")]
mod otel {
    use std::{str::FromStr, sync::Arc};

    use opentelemetry::{
        trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
        Context,
    };
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{validate_tracestate, TraceContext, TRACEPARENT, TRACESTATE};
    use crate::signal::ExtensionValue;
    use crate::Signal;

    impl From<TraceContext> for SpanContext {
        /// A remote span context (the signal came from elsewhere) with an empty trace state.
        fn from(tc: TraceContext) -> SpanContext {
            SpanContext::new(
                TraceId::from_bytes(tc.trace_id()),
                SpanId::from_bytes(tc.parent_id()),
                TraceFlags::new(tc.flags()),
                true,
                TraceState::default(),
            )
        }
    }

    impl TryFrom<&SpanContext> for TraceContext {
        type Error = crate::SignalError;
        /// A version `00` trace context from a span context's ids and flags.
        fn try_from(sc: &SpanContext) -> Result<TraceContext, Self::Error> {
            TraceContext::new(
                sc.trace_id().to_bytes(),
                sc.span_id().to_bytes(),
                sc.trace_flags().to_u8(),
            )
        }
    }

    /// The OpenTelemetry context of a signal's trace: the current context with the signal's
    /// `traceparent` (and its `tracestate`, when that is valid) as the remote parent span.
    /// `None` when the signal has no valid `traceparent`.
    ///
    /// Use it to parent spans of your own, e.g. with `tracer.start_with_context(name, &cx)`,
    /// or a `tracing` span with [`set_span_parent`].
    pub fn parent_context(signal: &Signal) -> Option<Context> {
        let tc = signal.trace_context()?;
        Some(context_of(&tc, signal))
    }

    fn context_of(tc: &TraceContext, signal: &Signal) -> Context {
        let state = signal
            .tracestate()
            .filter(|s| !s.is_empty() && validate_tracestate(s).is_ok())
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default();
        let sc = SpanContext::new(
            TraceId::from_bytes(tc.trace_id()),
            SpanId::from_bytes(tc.parent_id()),
            TraceFlags::new(tc.flags()),
            true,
            state,
        );
        Context::current().with_remote_span_context(sc)
    }

    /// Makes the signal's trace context the OpenTelemetry parent of `span`. Call it before
    /// the span is first entered. Returns whether it did: `false` when the signal has no valid
    /// `traceparent`, the span is disabled, no `tracing-opentelemetry` layer records it, or
    /// it has started already.
    pub fn set_span_parent(span: &Span, signal: &Signal) -> bool {
        match signal.trace_context() {
            Some(tc) => set_parent(span, &tc, signal),
            None => false,
        }
    }

    pub(super) fn set_parent(span: &Span, tc: &TraceContext, signal: &Signal) -> bool {
        span.set_parent(context_of(tc, signal)).is_ok()
    }

    /// The trace context of a `tracing` span as recorded by a `tracing-opentelemetry` layer,
    /// with its `tracestate` (`None` when empty): what [`Bus::publish`](crate::Bus::publish)
    /// stamps a signal with. `None` when the span has no valid OpenTelemetry span context.
    pub fn span_trace_context(span: &Span) -> Option<(TraceContext, Option<String>)> {
        if span.is_none() {
            return None;
        }
        let cx = span.context();
        let otel = cx.span();
        let sc = otel.span_context();
        if !sc.is_valid() {
            return None;
        }
        let tc = TraceContext::try_from(sc).ok()?;
        let state = sc.trace_state().header();
        let state = (!state.is_empty() && validate_tracestate(&state).is_ok()).then_some(state);
        Some((tc, state))
    }

    /// The signal to publish: the same one when it carries a trace context (valid or not) or
    /// the current span has none; else a copy carrying the current span's.
    pub(crate) fn inject(signal: Arc<Signal>) -> Arc<Signal> {
        if signal.extension(TRACEPARENT).is_some() || signal.extension(TRACESTATE).is_some() {
            return signal;
        }
        let Some((tc, state)) = span_trace_context(&Span::current()) else {
            return signal;
        };
        let mut extensions = vec![(TRACEPARENT, ExtensionValue::String(tc.to_string()))];
        if let Some(state) = state {
            extensions.push((TRACESTATE, ExtensionValue::String(state)));
        }
        match signal.with_extensions(extensions) {
            Ok(stamped) => Arc::new(stamped),
            Err(_) => signal,
        }
    }
}
