//! signal-bus (work in progress).
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

pub mod pattern;
pub mod router;

pub use pattern::{Pattern, PatternError};
pub use router::{RouteError, RouteId, Router};
