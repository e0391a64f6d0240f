use std::sync::Arc;

use async_trait::async_trait;
use http::Method;

use super::{
    binding::{self},
    endpoint::Endpoint,
    request::{request_options, RequestConfig},
};
use crate::{
    adapter::{
        hooks::{BusHooks, Sealed},
        Health,
    },
    Adapter, ConfigError, DeliveryError, Signal,
};

/// Delivers signals over HTTP to one URL (Jido's `http` adapter).
///
/// The body is the signal in CloudEvents structured mode by default
/// (`application/cloudevents+json`), binary mode with
/// [`content_mode`](Http::content_mode), and a CloudEvents batch
/// (`application/cloudevents-batch+json`) from `deliver_batch`. Every response other than 2xx
/// is a [`DeliveryError::Http`] carrying the status, a short body excerpt and `Retry-After`;
/// redirects are not followed. Targets with the same connection settings share one pooled
/// client.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use signal_bus::{http::Http, Bus, Target};
///
/// let bus = Bus::builder().build()?;
/// let crm = Http::post("https://crm.example.com/webhook")?
///     .bearer_auth("token-123")
///     .header("x-source", "signal-bus")
///     .timeout(Duration::from_secs(10));
/// bus.subscribe("user.**", Target::new(crm).timeout(Duration::from_secs(15)))?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Http {
    endpoint: Endpoint,
    pub(crate) request: RequestConfig,
}

impl Http {
    /// POSTs to `url`.
    ///
    /// # Errors
    /// A URL that is not http(s), has no host, has user info or whitespace.
    pub fn post(url: &str) -> Result<Http, ConfigError> {
        Http::new(Method::POST, url)
    }

    /// PUTs to `url`.
    ///
    /// # Errors
    /// As [`post`](Http::post).
    pub fn put(url: &str) -> Result<Http, ConfigError> {
        Http::new(Method::PUT, url)
    }

    /// PATCHes `url`.
    ///
    /// # Errors
    /// As [`post`](Http::post).
    pub fn patch(url: &str) -> Result<Http, ConfigError> {
        Http::new(Method::PATCH, url)
    }

    /// Sends with `method` (POST, PUT or PATCH) to `url`.
    ///
    /// # Errors
    /// A bad URL or another method.
    pub fn new(method: Method, url: &str) -> Result<Http, ConfigError> {
        let http = Http {
            endpoint: Endpoint::parse(url)?,
            request: RequestConfig::new(method),
        };
        let mut problems = Vec::new();
        http.request.validate(&mut problems);
        match problems.pop() {
            Some(p) => Err(p),
            None => Ok(http),
        }
    }

    request_options!();
}

#[async_trait]
impl Adapter for Http {
    fn name(&self) -> &str {
        "http"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.request.validate(&mut problems);
        ConfigError::from_problems(problems)
    }

    async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
        let encoded = binding::encode(signal, self.request.mode);
        self.request
            .send(&self.endpoint, encoded.body, &[&encoded.headers])
            .await
    }

    async fn deliver_shared(&self, signal: Arc<Signal>) -> Result<(), DeliveryError> {
        self.deliver(&signal).await
    }

    async fn deliver_batch(&self, signals: &[Arc<Signal>]) -> Result<(), DeliveryError> {
        if signals.is_empty() {
            return Ok(());
        }
        let encoded = binding::encode_batch(signals);
        self.request
            .send(&self.endpoint, encoded.body, &[&encoded.headers])
            .await
    }

    async fn health_check(&self) -> Health {
        self.request.health(&self.endpoint).await
    }

    fn bus_hooks(&self, _: Sealed) -> Option<&dyn BusHooks> {
        Some(self)
    }
}

impl BusHooks for Http {
    fn request_timeout(&self) -> Option<std::time::Duration> {
        self.request.timeout
    }
}
