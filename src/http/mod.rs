//! HTTP delivery: the [`Http`] and [`Webhook`] adapters, and webhook [`signing`]; and
//! receiving: [`read_signals`] reads the CloudEvents of a request (with the `axum` feature,
//! the `axum` module's extractors read and verify them in a handler).
//!
//! Both speak the CloudEvents HTTP binding ([`ContentMode`]), classify every response for
//! the retry layer (2xx delivered; 408, 5xx, timeouts and connect errors retryable; 429 and
//! 503 with `Retry-After` throttled; 410 gone; other 4xx and 3xx permanent; redirects are
//! not followed), and share one pooled `reqwest` client per distinct connection setting,
//! unless they are given a named [`HttpPool`] (a cap on connections per host, or a
//! `reqwest::Client` of your own). TLS is rustls with the `ring` provider given to each
//! client's `ClientConfig` explicitly: nothing is installed process-wide, so an application
//! may use another provider elsewhere.

mod adapter;
#[cfg(feature = "axum")]
pub mod axum;
pub(crate) mod binding;
mod client;
mod egress;
mod endpoint;
mod pool;
mod read;
mod request;
mod response;
pub mod signing;
mod webhook;

pub use adapter::Http;
pub use binding::{ContentMode, BATCH_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE};
pub use client::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_POOL_MAX_IDLE_PER_HOST,
};
pub use pool::{
    HttpPool, DEFAULT_POOL_MAX_CONNECTIONS, DEFAULT_POOL_TIMEOUT, MAX_POOL_CONNECTIONS,
};
pub use read::{read_signals, ReadError, MAX_BATCH_LEN, MAX_BODY_LEN};
pub use request::MAX_REQUEST_TIMEOUT;
pub use response::MAX_BODY_EXCERPT;
pub use webhook::{Webhook, MAX_WEBHOOK_URLS};
