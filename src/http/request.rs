//! Request settings shared by [`Http`](super::Http) and [`Webhook`](super::Webhook).

use std::{sync::OnceLock, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{
    binding::ContentMode,
    client::{self, ClientOptions},
    endpoint::Endpoint,
    pool::HttpPool,
    response,
};
use crate::{adapter::Health, ConfigError, DeliveryError};

/// Longest request timeout an HTTP adapter accepts.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Headers a caller may not set: the transport owns them.
const RESERVED: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

#[derive(Clone, Default)]
pub(crate) struct RequestConfig {
    pub(crate) method: Method,
    pub(crate) headers: HeaderMap,
    /// Per-request timeout; `None` leaves it to the target's timeout.
    pub(crate) timeout: Option<Duration>,
    pub(crate) mode: ContentMode,
    pub(crate) client: ClientOptions,
    /// A shared, named pool: its client and its cap on connections per host.
    pub(crate) pool: Option<HttpPool>,
    /// Problems found while chaining options, reported by `validate`.
    pub(crate) problems: Vec<ConfigError>,
    shared: OnceLock<reqwest::Client>,
}

impl std::fmt::Debug for RequestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may be credentials: only names are shown.
        let names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .field("mode", &self.mode)
            .field("client", &self.client)
            .field("pool", &self.pool.as_ref().map(HttpPool::name))
            .finish()
    }
}

fn is_sensitive(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(n, "authorization" | "proxy-authorization" | "cookie")
        || ["token", "secret", "key", "auth", "signature", "password"]
            .iter()
            .any(|w| n.contains(w))
}

impl RequestConfig {
    pub(crate) fn new(method: Method) -> Self {
        RequestConfig {
            method,
            ..RequestConfig::default()
        }
    }

    pub(crate) fn header(&mut self, name: &str, value: &str) {
        let name = match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                self.problems.push(ConfigError::invalid(
                    "header",
                    name,
                    "is not a valid header name (an HTTP token: letters, digits, !#$%&'*+-.^_`|~)",
                ));
                return;
            }
        };
        if RESERVED.contains(&name.as_str()) {
            self.problems.push(ConfigError::invalid(
                "header",
                name.as_str(),
                "is set by the HTTP client and cannot be given",
            ));
            return;
        }
        let sensitive = is_sensitive(&name);
        match HeaderValue::from_str(value) {
            Ok(mut v) => {
                v.set_sensitive(sensitive);
                self.headers.append(name, v);
            }
            Err(_) => self.problems.push(ConfigError::invalid(
                "header",
                name.as_str(),
                if sensitive {
                    "has a value with CR, LF or other control characters (value redacted)"
                } else {
                    "has a value with CR, LF or other control characters"
                },
            )),
        }
    }

    pub(crate) fn validate(&self, problems: &mut Vec<ConfigError>) {
        problems.extend(self.problems.iter().cloned());
        if !matches!(self.method, Method::POST | Method::PUT | Method::PATCH) {
            problems.push(ConfigError::invalid(
                "method",
                &self.method,
                "must be POST, PUT or PATCH",
            ));
        }
        if let Some(t) = self.timeout {
            if t.is_zero() || t > MAX_REQUEST_TIMEOUT {
                problems.push(ConfigError::invalid(
                    "timeout",
                    format!("{t:?}"),
                    "must be between 1ns and 60s",
                ));
            }
        }
        self.client.validate(problems);
        if let Some(pool) = &self.pool {
            pool.check(problems);
            let own = ClientOptions {
                egress_guard: self.client.egress_guard,
                ..ClientOptions::default()
            };
            if self.client != own {
                problems.push(ConfigError::invalid(
                    "pool",
                    pool.name(),
                    "sets the connections of this adapter: set pool_max_idle_per_host, \
                     pool_idle_timeout and connect_timeout on the pool, not on the adapter",
                ));
            }
            if self.client.egress_guard {
                pool.check_guard(problems);
            }
        }
    }

    /// The shared pooled client for these settings, resolved on first use.
    pub(crate) fn client(&self) -> Result<&reqwest::Client, DeliveryError> {
        if let Some(pool) = &self.pool {
            return pool.client(self.client.egress_guard);
        }
        if let Some(c) = self.shared.get() {
            return Ok(c);
        }
        let c = client::shared(self.client)?;
        Ok(self.shared.get_or_init(|| c))
    }

    /// Sends one request: the caller's headers, then `extra` header sets in order (later
    /// ones win, so signing headers given last always win).
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        body: Bytes,
        extra: &[&HeaderMap],
    ) -> Result<(), DeliveryError> {
        let client = self.client()?;
        // Held until the response is read: the pool's cap counts requests in flight.
        let _slot = match &self.pool {
            Some(pool) => Some(pool.acquire(endpoint).await?),
            None => None,
        };
        let mut headers = self.headers.clone();
        for set in extra {
            for (name, value) in set.iter() {
                headers.insert(name.clone(), value.clone());
            }
        }
        if body.is_empty() {
            // hyper leaves the length out of a request without a body; a POST, PUT or PATCH
            // says it has none (RFC 9110 8.6), and some servers wait or refuse without it.
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        let mut request = client
            .request(self.method.clone(), endpoint.url().clone())
            .headers(headers)
            .body(body);
        if let Some(t) = self.timeout {
            request = request.timeout(t);
        }
        match request.send().await {
            Ok(resp) => response::check(resp).await,
            Err(e) => Err(response::transport(
                e,
                self.timeout.unwrap_or(self.client.connect_timeout),
                endpoint,
            )),
        }
    }

    /// Connects to the endpoint (through the egress guard when on) and reports latency.
    pub(crate) async fn health(&self, endpoint: &Endpoint) -> Health {
        let (host, port) = endpoint.host_port();
        let started = std::time::Instant::now();
        let connect = async {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            let addrs = if self.client.egress_guard {
                super::egress::allowed_addrs(&host, &addrs)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?
            } else {
                addrs
            };
            let mut last = None;
            for addr in addrs {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
        };
        match tokio::time::timeout(self.client.connect_timeout, connect).await {
            Ok(Ok(())) => Health::healthy().with_latency(started.elapsed()),
            Ok(Err(e)) => Health::unhealthy(format!("cannot connect to {endpoint}: {e}"))
                .with_latency(started.elapsed()),
            Err(_) => Health::unhealthy(format!(
                "cannot connect to {endpoint}: timed out after {:?}",
                self.client.connect_timeout
            ))
            .with_latency(started.elapsed()),
        }
    }
}

/// The request options of [`Http`](super::Http) and [`Webhook`](super::Webhook), written
/// once. Each stores problems for `validate()`: builders never fail mid-chain.
macro_rules! request_options {
    () => {
        /// Adds a header to every request. Invalid names or values (CR, LF, control
        /// characters), and headers the transport owns (`Host`, `Content-Length`,
        /// `Transfer-Encoding`, ...), are reported by `validate` (so by `subscribe`).
        /// Values of credential-like headers are kept out of `Debug` output and errors.
        pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
            self.request.header(name.as_ref(), value.as_ref());
            self
        }

        /// Adds several headers (see [`header`](Self::header)).
        pub fn headers<K: AsRef<str>, V: AsRef<str>>(
            mut self,
            headers: impl IntoIterator<Item = (K, V)>,
        ) -> Self {
            for (k, v) in headers {
                self.request.header(k.as_ref(), v.as_ref());
            }
            self
        }

        /// Sends `Authorization: Bearer <token>` (never shown in `Debug` output).
        pub fn bearer_auth(self, token: impl AsRef<str>) -> Self {
            let value = format!("Bearer {}", token.as_ref());
            self.header("authorization", value)
        }

        /// The timeout of one request, at most 60 s. Default: none of its own; the target's
        /// timeout (5 s by default) bounds the whole delivery.
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.request.timeout = Some(timeout);
            self
        }

        /// Structured (the default) or binary CloudEvents mode.
        pub fn content_mode(mut self, mode: $crate::http::ContentMode) -> Self {
            self.request.mode = mode;
            self
        }

        /// Sends through a shared, named [`HttpPool`]($crate::http::HttpPool): its client
        /// and its cap on connections per host. The pool's connection settings then apply
        /// (setting `pool_max_idle_per_host`, `pool_idle_timeout` or `connect_timeout` here
        /// too is refused by `validate`). Default: no pool; adapters with equal settings
        /// share one client.
        pub fn pool(mut self, pool: &$crate::http::HttpPool) -> Self {
            self.request.pool = Some(pool.clone());
            self
        }

        /// Idle connections kept per host. Default: 64.
        pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
            self.request.client.pool_max_idle_per_host = max;
            self
        }

        /// How long an idle connection is kept, at most 1 h. Default: 90 s.
        pub fn pool_idle_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.request.client.pool_idle_timeout = timeout;
            self
        }

        /// How long connecting may take, at most 60 s. Default: 5 s.
        pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.request.client.connect_timeout = timeout;
            self
        }
    };
}

pub(crate) use request_options;
