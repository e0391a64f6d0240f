// The README is the crate's front page; its code blocks are compiled as doctests by
// `ReadmeDoctests` below, where the features they need are on.
#![cfg_attr(not(doctest), doc = include_str!("../README.md"))]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]
// On docs.rs (`--cfg docsrs`, nightly) items behind a feature show which feature they need.
#![cfg_attr(docsrs, feature(doc_cfg))]

// Entry points for the fuzz targets (`fuzz/`) and their regression test: not part of the API.
#[doc(hidden)]
#[path = "__fuzz.rs"]
pub mod __fuzz;
pub mod adapter;
mod binding;
pub mod bus;
#[cfg(feature = "nats")]
pub mod cluster;
mod context;
pub mod dispatch;
mod error;
#[cfg(feature = "http")]
pub mod http;
pub mod journal;
pub mod pattern;
pub mod policy;
pub mod queue;
pub mod router;
pub mod signal;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;

pub use adapter::Adapter;
/// The attribute that implementations of [`Adapter`] (an async trait) carry:
/// `#[signal_bus::async_trait]`, so implementing it needs no dependency of your own.
pub use async_trait::async_trait;
pub use binding::ContentMode;
pub use bus::{Bus, BusBuilder, ShutdownReport, SubscriptionId};
/// Hooks around publish and delivery: [`Middleware`], installed with
/// [`BusBuilder::middleware`].
pub use dispatch::middleware;
pub use dispatch::middleware::{Deliver, Middleware, Refusal};
pub use dispatch::{
    dispatch, dispatch_async, dispatch_batch, IntoTargets, Outcome, OutcomeKind, PublishReport,
    Target,
};
pub use error::{
    classify_status, BusError, Cause, ConfigError, DeliveryError, EndpointError, ErrorKind,
};
pub use pattern::{Pattern, PatternError};
pub use router::{RouteError, RouteId, Router};
pub use signal::{Signal, SignalBuilder, SignalError};

/// The README's code blocks as doctests. Each block is a whole program, written as a reader
/// pastes it (no hidden lines), so blocks for the `axum` and `nats` features cannot compile
/// without them: the README is compiled where every feature its blocks use is on
/// (`cargo test --all-features --doc`, as `.ci/run` does).
#[cfg(all(
    doctest,
    feature = "http",
    feature = "sqlite",
    feature = "axum",
    feature = "nats"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
