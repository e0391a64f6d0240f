#![doc = include_str!("../README.md")]
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
pub mod dispatch;
mod error;
#[cfg(feature = "http")]
pub mod http;
pub mod pattern;
pub mod policy;
pub mod queue;
pub mod router;
pub mod signal;
pub mod telemetry;

pub use adapter::Adapter;
pub use binding::ContentMode;
pub use bus::{Bus, BusBuilder, ShutdownReport, SubscriptionId};
pub use dispatch::{
    dispatch, dispatch_async, dispatch_batch, IntoTargets, Outcome, PublishReport, Target,
};
pub use error::{
    classify_status, BusError, Cause, ConfigError, DeliveryError, EndpointError, ErrorKind,
};
pub use pattern::{Pattern, PatternError};
pub use router::{RouteError, RouteId, Router};
pub use signal::{Signal, SignalBuilder, SignalError};
