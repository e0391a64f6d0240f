//! [`Middleware`]: hooks a bus runs around every publish and around each target's delivery.
//!
//! Install middleware with [`BusBuilder::middleware`](crate::BusBuilder::middleware); it runs
//! in registration order, each hook seeing what the previous middleware made of the signal.
//! A bus without middleware runs none of this: its publish path is the one it always had.
//!
//! | hook | runs | may |
//! |---|---|---|
//! | [`before_publish`](Middleware::before_publish) | once per `publish`, before anything is delivered | enrich or rewrite the signal, or refuse it ([`BusError::Refused`]) |
//! | [`before_deliver`](Middleware::before_deliver) | per target, where the target delivers | pass the signal, rewrite it for this target only, or skip this target |
//! | [`after_deliver`](Middleware::after_deliver) | per target, after its delivery (and retries) | look at the result and how long it took |
//! | [`after_publish`](Middleware::after_publish) | once per `publish`, after delivery | look at the report |
//!
//! Where the per-target hooks run:
//!
//! - a synchronous target: on the publishing task, around the delivery with its retries;
//! - an async target ([`Mode::Async`](crate::policy::Mode::Async)): in the target's worker,
//!   when it takes the signal from its queue (the report says `Queued`; a skip shows in the
//!   target's `failed` metric and last error);
//! - a batching target ([`Target::batch`](crate::Target::batch)): in its worker, for each
//!   signal of a batch (a skipped signal leaves the batch; `after_deliver` sees the batch's
//!   result for each signal in it);
//! - a [`Forwarder`](crate::queue::Forwarder) is a target like any other: the hooks run
//!   around its inline delivery, or around the enqueueing of its durable job. A durable job
//!   that a queue runner delivers later runs no middleware: the job holds the signal as the
//!   hooks left it;
//! - dead-letter targets of a bus's targets run the hooks too; [`dispatch`](crate::dispatch())
//!   and [`dispatch_batch`](crate::dispatch_batch) (no bus) run none.
//!
//! A skipped target is a [`Failed`](crate::OutcomeKind::Failed) outcome whose error is
//! [`DeliveryError::Skipped`], naming the middleware and its reason: the adapter is not
//! called, nothing is retried or dead-lettered, the target's `failed` metric counts it, and
//! `after_deliver` is not called for it (nothing was delivered).
//!
//! A hook that panics does not take the publisher or a worker down: the panic is caught.
//! In `before_publish` it refuses the signal (`BusError::Refused`, the reason is the panic
//! message); in `before_deliver` it skips the target (`DeliveryError::Skipped`); in the
//! `after_*` hooks it is logged (a `signal_bus::middleware` warning) and ignored.
//!
//! # Examples
//!
//! Add a tenant extension to every signal, refuse signals that still have none, and redact
//! the `email` field of the data for the `analytics` target only:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use serde_json::json;
//! use signal_bus::{
//!     adapter::Channel,
//!     middleware::{Deliver, Middleware, Refusal},
//!     Bus, BusError, Signal, Target,
//! };
//!
//! /// Adds `tenant=acme` to signals from `/acme/...` sources.
//! struct TenantFromSource;
//!
//! #[signal_bus::async_trait]
//! impl Middleware for TenantFromSource {
//!     fn name(&self) -> &str { "tenant-from-source" }
//!     async fn before_publish(&self, signal: Arc<Signal>) -> Result<Arc<Signal>, Refusal> {
//!         if signal.extension("tenant").is_some() || !signal.source().starts_with("/acme/") {
//!             return Ok(signal);
//!         }
//!         let enriched = signal
//!             .with_extension("tenant", "acme")
//!             .map_err(|e| Refusal::new(e.to_string()))?;
//!         Ok(Arc::new(enriched))
//!     }
//! }
//!
//! /// Refuses signals without a `tenant` extension.
//! struct RequireTenant;
//!
//! #[signal_bus::async_trait]
//! impl Middleware for RequireTenant {
//!     fn name(&self) -> &str { "require-tenant" }
//!     async fn before_publish(&self, signal: Arc<Signal>) -> Result<Arc<Signal>, Refusal> {
//!         match signal.extension("tenant") {
//!             Some(_) => Ok(signal),
//!             None => Err(Refusal::new(format!("signal `{}` has no `tenant` extension", signal.ty()))),
//!         }
//!     }
//! }
//!
//! /// Removes `email` from the data delivered to the `analytics` target.
//! struct RedactEmail;
//!
//! impl Middleware for RedactEmail {
//!     fn name(&self) -> &str { "redact-email" }
//!     fn before_deliver(&self, target: &Target, signal: &Arc<Signal>) -> Deliver {
//!         let Some(serde_json::Value::Object(data)) = signal.data() else { return Deliver::Continue };
//!         if target.name() != "analytics" || !data.contains_key("email") {
//!             return Deliver::Continue;
//!         }
//!         let mut redacted = data.clone();
//!         redacted.remove("email");
//!         match signal.with_data(redacted.into()) {
//!             Ok(s) => Deliver::rewrite(s),
//!             Err(e) => Deliver::skip(e.to_string()),
//!         }
//!     }
//! }
//!
//! let bus = Bus::builder()
//!     .middleware(TenantFromSource)
//!     .middleware(RequireTenant)
//!     .middleware(RedactEmail)
//!     .build()?;
//! let (crm_tx, mut crm) = tokio::sync::mpsc::channel::<Arc<Signal>>(8);
//! let (analytics_tx, mut analytics) = tokio::sync::mpsc::channel::<Arc<Signal>>(8);
//! bus.subscribe("user.*", vec![
//!     Target::new(Channel::new(crm_tx)).label("crm"),
//!     Target::new(Channel::new(analytics_tx)).label("analytics"),
//! ])?;
//!
//! let user = json!({"id": 7, "email": "ada@example.com"});
//! bus.publish(Signal::new("user.created", "/acme/accounts", user.clone())?).await?;
//! let (to_crm, to_analytics) = (crm.recv().await.unwrap(), analytics.recv().await.unwrap());
//! assert_eq!(to_crm.extension("tenant").and_then(|t| t.as_str()), Some("acme"));
//! assert_eq!(to_crm.data(), Some(&user));
//! assert_eq!(to_analytics.data(), Some(&json!({"id": 7})));
//!
//! // No tenant: refused, delivered to nobody.
//! let refused = bus.publish(Signal::new("user.created", "/other", user)?).await;
//! assert!(matches!(refused, Err(BusError::Refused { ref middleware, .. }) if middleware == "require-tenant"));
//! assert!(crm.try_recv().is_err());
//! # Ok(()) }
//! ```

use std::{
    fmt,
    panic::{self, AssertUnwindSafe},
    sync::{atomic::Ordering, Arc},
};

use async_trait::async_trait;
use futures_util::FutureExt as _;
use tokio::time::{Duration, Instant};

use super::{pipeline, Noted, PublishReport, QueuedIn, SlowOutcome, Target};
use crate::{context::SubscriptionId, telemetry::Via, BusError, DeliveryError, Signal};

/// Hooks around publish and delivery. Every hook has a default that does nothing, so a
/// middleware implements only the hooks it needs, plus its [`name`](Middleware::name).
///
/// `before_publish` is async (it may look something up); the per-target hooks are plain
/// functions, called on the delivery path: keep them quick and never block in them.
/// See [the module](self) for where each hook runs and what a panic in one means.
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// The middleware's name, in refusals ([`BusError::Refused`]), skips
    /// ([`DeliveryError::Skipped`]) and logs. Must not be empty
    /// ([`BusBuilder::build`](crate::BusBuilder::build) checks).
    fn name(&self) -> &str;

    /// Before anything is delivered: returns the signal to publish (this one, or a rewritten
    /// one), or refuses it with a [`Refusal`]; `publish` then returns
    /// [`BusError::Refused`] naming this middleware and the reason, and delivers nothing.
    /// Runs after the bus's own checks (closed, type length).
    async fn before_publish(&self, signal: Arc<Signal>) -> Result<Arc<Signal>, Refusal> {
        Ok(signal)
    }

    /// After every target of the publish had its outcome: the signal as published (after
    /// every `before_publish`) and the report `publish` returns.
    fn after_publish(&self, signal: &Signal, report: &PublishReport) {
        let _ = (signal, report);
    }

    /// Before `target` gets `signal`: [`Deliver::Continue`], a signal rewritten for this
    /// target only ([`Deliver::rewrite`]), or a skip ([`Deliver::skip`]). Later middleware
    /// see the rewritten signal.
    fn before_deliver(&self, target: &Target, signal: &Arc<Signal>) -> Deliver {
        let _ = (target, signal);
        Deliver::Continue
    }

    /// After `target`'s delivery of `signal` (as this target got it) finished, retries
    /// included: `Ok` when the adapter took it (a forwarder that enqueued a durable job
    /// included), the error otherwise, and how long the delivery took.
    fn after_deliver(
        &self,
        target: &Target,
        signal: &Signal,
        result: Result<(), &DeliveryError>,
        took: Duration,
    ) {
        let _ = (target, signal, result, took);
    }
}

impl fmt::Debug for dyn Middleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Middleware").field(&self.name()).finish()
    }
}

/// Why a middleware refused a signal in [`before_publish`](Middleware::before_publish).
/// The bus adds the middleware's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    reason: String,
}

impl Refusal {
    /// A refusal for `reason` (say what is wrong with the signal and what is expected).
    pub fn new(reason: impl Into<String>) -> Self {
        Refusal {
            reason: reason.into(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// What [`before_deliver`](Middleware::before_deliver) decides for one target.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Deliver {
    /// Deliver the signal as it is.
    Continue,
    /// Deliver this signal instead, to this target only (a redacted copy, say).
    Rewrite(Arc<Signal>),
    /// Do not deliver to this target: a [`Failed`](crate::OutcomeKind::Failed) outcome with
    /// [`DeliveryError::Skipped`] naming the middleware and this reason.
    Skip(String),
}

impl Deliver {
    /// Delivers `signal` instead, to this target only.
    pub fn rewrite(signal: impl Into<Arc<Signal>>) -> Self {
        Deliver::Rewrite(signal.into())
    }

    /// Skips this target, for `reason`.
    pub fn skip(reason: impl Into<String>) -> Self {
        Deliver::Skip(reason.into())
    }
}

/// The middleware of a bus, in registration order.
pub(crate) type Chain = Arc<[Arc<dyn Middleware>]>;

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match DeliveryError::from_panic(payload) {
        DeliveryError::Panicked { message } => format!("panicked: {message}"),
        other => other.to_string(),
    }
}

#[cold]
fn hook_panicked(middleware: &dyn Middleware, hook: &str, payload: &(dyn std::any::Any + Send)) {
    tracing::warn!(
        target: "signal_bus::middleware",
        message = "Middleware hook panicked; the panic was ignored.",
        middleware = middleware.name(),
        hook,
        panic = %panic_message(payload),
    );
}

/// Runs every `before_publish` in order: the signal to deliver, or the refusal.
///
/// Boxed: `publish` holds a pointer to this future, not the future itself, so a bus
/// without middleware keeps a `publish` future as small (and as cheap to drop) as before.
pub(crate) fn before_publish(
    chain: &[Arc<dyn Middleware>],
    signal: Arc<Signal>,
) -> futures_util::future::BoxFuture<'_, Result<Arc<Signal>, BusError>> {
    Box::pin(run_before_publish(chain, signal))
}

async fn run_before_publish(
    chain: &[Arc<dyn Middleware>],
    mut signal: Arc<Signal>,
) -> Result<Arc<Signal>, BusError> {
    for m in chain {
        let refused = |reason| BusError::Refused {
            middleware: m.name().to_owned(),
            reason,
        };
        signal = match AssertUnwindSafe(m.before_publish(signal))
            .catch_unwind()
            .await
        {
            Ok(Ok(signal)) => signal,
            Ok(Err(refusal)) => return Err(refused(refusal.reason)),
            Err(panic) => return Err(refused(panic_message(&*panic))),
        };
    }
    Ok(signal)
}

/// Runs every `after_publish` in order.
pub(crate) fn after_publish(
    chain: &[Arc<dyn Middleware>],
    signal: &Signal,
    report: &PublishReport,
) {
    for m in chain {
        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| m.after_publish(signal, report))) {
            hook_panicked(&**m, "after_publish", &*p);
        }
    }
}

/// Runs every `before_deliver` in order: `Ok(None)` to deliver `signal` as it is,
/// `Ok(Some(_))` a rewritten signal, `Err` a skip.
pub(crate) fn before_deliver(
    chain: &[Arc<dyn Middleware>],
    target: &Target,
    signal: &Arc<Signal>,
) -> Result<Option<Arc<Signal>>, DeliveryError> {
    let mut rewritten: Option<Arc<Signal>> = None;
    for m in chain {
        let current = rewritten.as_ref().unwrap_or(signal);
        let skipped = |reason| DeliveryError::Skipped {
            middleware: m.name().to_owned(),
            reason,
        };
        match panic::catch_unwind(AssertUnwindSafe(|| m.before_deliver(target, current))) {
            Ok(Deliver::Continue) => {}
            Ok(Deliver::Rewrite(s)) => rewritten = Some(s),
            Ok(Deliver::Skip(reason)) => return Err(skipped(reason)),
            Err(p) => return Err(skipped(panic_message(&*p))),
        }
    }
    Ok(rewritten)
}

/// Runs every `after_deliver` in order.
pub(crate) fn after_deliver(
    chain: &[Arc<dyn Middleware>],
    target: &Target,
    signal: &Signal,
    result: Result<(), &DeliveryError>,
    took: Duration,
) {
    for m in chain {
        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| {
            m.after_deliver(target, signal, result, took)
        })) {
            hook_panicked(&**m, "after_deliver", &*p);
        }
    }
}

/// A target skipped by middleware: counted as failed, remembered as its last error.
fn skipped(target: &Target, error: &DeliveryError) {
    let rt = &*target.runtime;
    rt.stats().counters.failed.fetch_add(1, Ordering::Relaxed);
    rt.record_error(error);
}

/// What a hooked delivery on the publishing task came to.
pub(super) enum Hooked<'a> {
    /// Decided without waiting (`None`: the target's usual success).
    Done(Option<Noted>),
    /// Must wait.
    Slow(futures_util::future::BoxFuture<'a, SlowOutcome>),
}

/// One synchronous target of a bus with middleware, on the publishing task: the
/// `before_deliver` hooks, the delivery (the fast path when it can, else the pipeline
/// with its retries), then the `after_deliver` hooks.
#[inline(never)]
pub(super) fn deliver_sync<'a>(
    chain: &'a Chain,
    target: &'a Target,
    signal: &Arc<Signal>,
    subscription: Option<SubscriptionId>,
    thread: u64,
    started: Option<Instant>,
) -> Hooked<'a> {
    let t0 = Instant::now();
    let signal = match before_deliver(chain, target, signal) {
        Ok(None) => Arc::clone(signal),
        Ok(Some(rewritten)) => rewritten,
        Err(e) => {
            skipped(target, &e);
            super::fast_outcome_event(target, subscription, Some(signal), started, Err(&e));
            return Hooked::Done(Some(Noted::Failed(e)));
        }
    };
    match pipeline::try_fast(target, &signal, thread) {
        pipeline::Fast::Done(Ok(())) => {
            if started.is_some() {
                super::fast_outcome_event(target, subscription, Some(&signal), started, Ok(()));
            }
            after_deliver(chain, target, &signal, Ok(()), t0.elapsed());
            Hooked::Done(None)
        }
        pipeline::Fast::Done(Err(e)) => {
            super::fast_outcome_event(target, subscription, Some(&signal), started, Err(&e));
            after_deliver(chain, target, &signal, Err(&e), t0.elapsed());
            Hooked::Done(Some(Noted::Failed(e)))
        }
        // Only queued targets drop or wait for room, and their hooks run in their worker.
        pipeline::Fast::Dropped(why) => Hooked::Done(Some(Noted::Dropped(why))),
        pipeline::Fast::Enqueue => Hooked::Done(None),
        pipeline::Fast::Slow(first) => Hooked::Slow(Box::pin(async move {
            let result = pipeline::deliver(target, &signal, first, Via::Sync, subscription).await;
            after_deliver(
                chain,
                target,
                &signal,
                result.as_ref().map(|_| ()),
                t0.elapsed(),
            );
            super::slow_outcome(result)
        })),
    }
}

/// One signal of an async target's worker, with the hooks around it.
pub(super) async fn deliver_queued(chain: &Chain, target: &Target, signal: &Arc<Signal>) {
    let t0 = Instant::now();
    let signal = match before_deliver(chain, target, signal) {
        Ok(None) => Arc::clone(signal),
        Ok(Some(rewritten)) => rewritten,
        Err(e) => return skipped(target, &e),
    };
    let result = pipeline::deliver(target, &signal, None, Via::Async, None).await;
    let took = t0.elapsed();
    after_deliver(chain, target, &signal, result.as_ref().map(|_| ()), took);
}

/// One batch of a batching target's worker, with the hooks around each of its signals.
pub(super) async fn deliver_batch(chain: &Chain, target: &Target, signals: &[Arc<Signal>]) {
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(signals.len());
    for signal in signals {
        match before_deliver(chain, target, signal) {
            Ok(None) => batch.push(Arc::clone(signal)),
            Ok(Some(rewritten)) => batch.push(rewritten),
            Err(e) => skipped(target, &e),
        }
    }
    if batch.is_empty() {
        return;
    }
    let result: Result<Option<QueuedIn>, DeliveryError> =
        pipeline::deliver_batch(target, &batch).await;
    let took = t0.elapsed();
    for signal in &batch {
        after_deliver(chain, target, signal, result.as_ref().map(|_| ()), took);
    }
}
