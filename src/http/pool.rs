//! [`HttpPool`]: a named client configuration shared on purpose by several HTTP adapters,
//! with a real cap on connections per host.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    client::{self, ClientOptions},
    endpoint::Endpoint,
};
use crate::{context::validate_name, ConfigError, DeliveryError};

/// Default cap of an [`HttpPool`] on connections to one host.
pub const DEFAULT_POOL_MAX_CONNECTIONS: usize = 50;
/// Default time a request waits for a free connection of an [`HttpPool`].
pub const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `max_connections` an [`HttpPool`] accepts.
pub const MAX_POOL_CONNECTIONS: usize = 10_000;

/// A named HTTP client configuration that several [`Http`](super::Http) and
/// [`Webhook`](super::Webhook) adapters share on purpose (give each the same pool with
/// `.pool(&pool)`): one set of connections, and a real cap on how many of them are open to
/// each host at once.
///
/// **The cap.** At most [`max_connections`](HttpPool::max_connections) requests of the pool
/// are in flight to one host (scheme, host and port) at a time, across every adapter using
/// the pool, so at most that many connections to it are open for them. A request that finds
/// every slot taken waits for one up to [`pool_timeout`](HttpPool::pool_timeout), then fails
/// with [`DeliveryError::PoolTimeout`], which is retryable and names the pool, the host and
/// the wait. The wait counts toward the target's timeout (a shorter target timeout ends it
/// first, as a `Timeout`).
///
/// **Built or brought.** [`HttpPool::new`] builds its client with the crate's settings (no
/// redirects, rustls on `ring` with the platform's roots, the egress guard for webhooks that
/// keep it). [`HttpPool::from_client`] uses a `reqwest::Client` you built (proxies, custom
/// roots, client certificates); the cap still applies, the idle and connect settings are the
/// client's own. Such a client resolves names (or hands them to its proxy) itself, so the
/// egress guard cannot check what a name resolves to: it can only check literal addresses
/// and the URL's host. A webhook that keeps its guard (`allow_private_networks(false)`, the
/// default) is therefore refused at `subscribe` on a `from_client` pool unless the pool
/// says [`guard_literals_only(true)`](HttpPool::guard_literals_only), accepting that.
///
/// Adapters without a pool keep sharing one client per distinct connection setting. Each
/// pool has its own connections: two pools never share one (and a pool used by both guarded
/// webhooks and other adapters keeps one client for each, under the same cap).
///
/// Setters never fail: [`validate`](HttpPool::validate) reports every problem, and so does
/// `subscribe` for each adapter using the pool.
///
/// # Default
///
/// `max_connections` 50 per host, `pool_timeout` 5 s, `idle_timeout` 90 s,
/// `max_idle_per_host` = `max_connections`, `connect_timeout` 5 s.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use signal_bus::{http::{Http, HttpPool, Webhook}, Bus};
///
/// let payments = HttpPool::new("payments")
///     .max_connections(8)
///     .pool_timeout(Duration::from_millis(500));
/// let bus = Bus::builder().build()?;
/// bus.subscribe("order.**", Http::post("https://ledger.example.com/events")?.pool(&payments))?;
/// bus.subscribe("refund.**", Webhook::new("https://psp.example.com/hook")?.pool(&payments))?;
///
/// // A client of your own: a proxy, custom roots, a client certificate... reqwest is built
/// // without a bundled crypto provider and this crate installs none process-wide, so give
/// // the client a rustls config with a provider (or install one in your application).
/// let mut roots = rustls::RootCertStore::empty();
/// # let corporate_ca = rustls::pki_types::CertificateDer::from(Vec::new());
/// roots.add(corporate_ca)?;
/// let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
///     rustls::crypto::ring::default_provider(),
/// ))
/// .with_safe_default_protocol_versions()?
/// .with_root_certificates(roots)
/// .with_no_client_auth();
/// let client = reqwest::Client::builder()
///     .tls_backend_preconfigured(tls)
///     .proxy(reqwest::Proxy::all("http://proxy.corp.example:3128")?)
///     .build()?;
/// let mine = HttpPool::from_client("corporate", client).max_connections(4);
/// bus.subscribe("audit.**", Http::post("https://siem.example.com/in")?.pool(&mine))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpPool {
    settings: Arc<Settings>,
    state: Arc<State>,
}

#[derive(Clone)]
struct Settings {
    name: String,
    max_connections: usize,
    pool_timeout: Duration,
    max_idle_per_host: Option<usize>,
    idle_timeout: Duration,
    connect_timeout: Duration,
    /// A client the user built.
    user_client: Option<reqwest::Client>,
    /// With a user client: a guarded webhook accepts that only literal addresses and the
    /// URL's host are checked.
    guard_literals_only: bool,
}

/// What the pool holds once in use: its clients and the per-host slots.
#[derive(Default)]
struct State {
    /// Built clients: `[unguarded, guarded]`.
    clients: [OnceLock<reqwest::Client>; 2],
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl fmt::Debug for HttpPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &*self.settings;
        // The user's client is not shown: its default headers may hold credentials.
        f.debug_struct("HttpPool")
            .field("name", &s.name)
            .field("max_connections", &s.max_connections)
            .field("pool_timeout", &s.pool_timeout)
            .field("max_idle_per_host", &self.idle_per_host())
            .field("idle_timeout", &s.idle_timeout)
            .field("connect_timeout", &s.connect_timeout)
            .field(
                "client",
                &if s.user_client.is_some() {
                    "user-built"
                } else {
                    "built by the pool"
                },
            )
            .field("guard_literals_only", &s.guard_literals_only)
            .finish()
    }
}

impl HttpPool {
    /// A pool named `name` (shown in errors, e.g. `payments`) that builds its own client.
    pub fn new(name: impl Into<String>) -> Self {
        HttpPool {
            settings: Arc::new(Settings {
                name: name.into(),
                max_connections: DEFAULT_POOL_MAX_CONNECTIONS,
                pool_timeout: DEFAULT_POOL_TIMEOUT,
                max_idle_per_host: None,
                idle_timeout: client::DEFAULT_POOL_IDLE_TIMEOUT,
                connect_timeout: client::DEFAULT_CONNECT_TIMEOUT,
                user_client: None,
                guard_literals_only: false,
            }),
            state: Arc::default(),
        }
    }

    /// A pool named `name` sending through `client`, a `reqwest::Client` you built (proxies,
    /// custom roots, client certificates, default headers). Its own redirect, idle, connect
    /// and TLS settings apply; the pool adds the connection cap. See the type's docs for
    /// what the egress guard can do then.
    pub fn from_client(name: impl Into<String>, client: reqwest::Client) -> Self {
        let mut pool = HttpPool::new(name);
        pool.settings_mut().user_client = Some(client);
        pool
    }

    fn settings_mut(&mut self) -> &mut Settings {
        // Settings change before the pool is in use: start with fresh state.
        self.state = Arc::default();
        Arc::make_mut(&mut self.settings)
    }

    /// At most this many requests (so connections) to one host at a time. Default: 50;
    /// allowed: 1 to 10,000.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.settings_mut().max_connections = n;
        self
    }

    /// How long a request waits for a free connection before failing with
    /// [`DeliveryError::PoolTimeout`]. Default: 5 s; allowed: 1 ms to 60 s.
    pub fn pool_timeout(mut self, timeout: Duration) -> Self {
        self.settings_mut().pool_timeout = timeout;
        self
    }

    /// Idle connections kept per host. Default: `max_connections`; at most
    /// `max_connections`. Not for a `from_client` pool (set it on your client).
    pub fn max_idle_per_host(mut self, n: usize) -> Self {
        self.settings_mut().max_idle_per_host = Some(n);
        self
    }

    /// How long an idle connection is kept. Default: 90 s; at most 1 h. Not for a
    /// `from_client` pool (set it on your client).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings_mut().idle_timeout = timeout;
        self
    }

    /// How long connecting may take. Default: 5 s; 1 ns to 60 s. Not for a `from_client`
    /// pool (set it on your client).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings_mut().connect_timeout = timeout;
        self
    }

    /// For a `from_client` pool: lets webhooks that keep the egress guard use it, accepting
    /// that the guard then checks only literal addresses and the URL's host, not what a
    /// name resolves to (your client resolves, or its proxy does). Default: `false` (such
    /// webhooks are refused at `subscribe`).
    pub fn guard_literals_only(mut self, accept: bool) -> Self {
        self.settings_mut().guard_literals_only = accept;
        self
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The cap on connections to one host.
    pub fn get_max_connections(&self) -> usize {
        self.settings.max_connections
    }

    /// Whether the pool sends through a client you built.
    pub fn is_user_client(&self) -> bool {
        self.settings.user_client.is_some()
    }

    fn idle_per_host(&self) -> usize {
        let s = &*self.settings;
        s.max_idle_per_host.unwrap_or(s.max_connections)
    }

    /// Checks every setting and reports every problem. Pure: no I/O.
    ///
    /// # Errors
    /// A name that is empty, longer than 255 bytes or with control characters;
    /// `max_connections` outside 1 to 10,000; `pool_timeout` outside 1 ms to 60 s;
    /// `max_idle_per_host` above `max_connections`; `idle_timeout` above 1 h;
    /// `connect_timeout` outside 1 ns to 60 s; idle or connect settings on a `from_client`
    /// pool.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.check(&mut problems);
        ConfigError::from_problems(problems)
    }

    pub(crate) fn check(&self, problems: &mut Vec<ConfigError>) {
        let s = &*self.settings;
        if let Err(rule) = validate_name("pool", &s.name) {
            problems.push(ConfigError::invalid("pool name", &s.name, rule));
        }
        if s.max_connections == 0 || s.max_connections > MAX_POOL_CONNECTIONS {
            problems.push(ConfigError::invalid(
                "max_connections",
                s.max_connections,
                format!("must be between 1 and {MAX_POOL_CONNECTIONS}"),
            ));
        }
        if s.pool_timeout < Duration::from_millis(1) || s.pool_timeout > Duration::from_secs(60) {
            problems.push(ConfigError::invalid(
                "pool_timeout",
                format!("{:?}", s.pool_timeout),
                "must be between 1ms and 60s",
            ));
        }
        if let Some(idle) = s.max_idle_per_host {
            if idle > s.max_connections {
                problems.push(ConfigError::invalid(
                    "max_idle_per_host",
                    idle,
                    format!("must be at most max_connections ({})", s.max_connections),
                ));
            }
        }
        let options = self.options(false);
        if s.user_client.is_some() {
            let defaults = ClientOptions::default();
            if s.max_idle_per_host.is_some()
                || options.pool_idle_timeout != defaults.pool_idle_timeout
                || options.connect_timeout != defaults.connect_timeout
            {
                problems.push(ConfigError::invalid(
                    "pool",
                    &s.name,
                    "uses a client built by you: set max_idle_per_host, idle_timeout and \
                     connect_timeout on that client",
                ));
            }
        } else {
            options.validate(problems);
        }
    }

    /// Refuses a guarded adapter on a `from_client` pool that did not accept
    /// literal-only checks.
    pub(crate) fn check_guard(&self, problems: &mut Vec<ConfigError>) {
        let s = &*self.settings;
        if s.user_client.is_some() && !s.guard_literals_only {
            problems.push(ConfigError::invalid(
                "pool",
                &s.name,
                "uses a client built by you, which resolves names itself, so the egress \
                 guard cannot check them: use allow_private_networks(true) on this webhook, \
                 or accept literal-only checks with HttpPool::guard_literals_only(true)",
            ));
        }
    }

    fn options(&self, egress_guard: bool) -> ClientOptions {
        let s = &*self.settings;
        ClientOptions {
            pool_max_idle_per_host: self.idle_per_host(),
            pool_idle_timeout: s.idle_timeout,
            connect_timeout: s.connect_timeout,
            egress_guard,
        }
    }

    /// The client for an adapter with (or without) the egress guard.
    pub(crate) fn client(&self, egress_guard: bool) -> Result<&reqwest::Client, DeliveryError> {
        if let Some(user) = &self.settings.user_client {
            if egress_guard && !self.settings.guard_literals_only {
                let mut problems = Vec::new();
                self.check_guard(&mut problems);
                let message = problems.pop().map(|p| p.to_string()).unwrap_or_default();
                return Err(DeliveryError::permanent(message));
            }
            return Ok(user);
        }
        let slot = &self.state.clients[usize::from(egress_guard)];
        if let Some(c) = slot.get() {
            return Ok(c);
        }
        let built = client::build(self.options(egress_guard))?;
        Ok(slot.get_or_init(|| built))
    }

    /// Waits for a free connection slot to the endpoint's host, up to the pool timeout.
    pub(crate) async fn acquire(
        &self,
        endpoint: &Endpoint,
    ) -> Result<OwnedSemaphorePermit, DeliveryError> {
        let (host, port) = endpoint.host_port();
        let host = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let key = format!("{}://{host}", endpoint.url().scheme());
        let slots = {
            let mut hosts = self.state.hosts.lock().unwrap_or_else(|e| e.into_inner());
            let cap = self.settings.max_connections.clamp(1, MAX_POOL_CONNECTIONS);
            Arc::clone(
                hosts
                    .entry(key)
                    .or_insert_with(|| Arc::new(Semaphore::new(cap))),
            )
        };
        let waited = self.settings.pool_timeout;
        match tokio::time::timeout(waited, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it like a full pool all the same.
            Ok(Err(_)) | Err(_) => Err(DeliveryError::PoolTimeout {
                pool: self.settings.name.clone(),
                host,
                waited,
                max_connections: self.settings.max_connections,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client of the test's own, for plain HTTP (no roots needed).
    fn user_client(builder: reqwest::ClientBuilder) -> reqwest::Client {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        builder.tls_backend_preconfigured(tls).build().unwrap()
    }

    #[test]
    fn validate_reports_every_problem() {
        let bad = HttpPool::new("")
            .max_connections(0)
            .pool_timeout(Duration::ZERO)
            .idle_timeout(Duration::from_secs(7200));
        match bad.validate().unwrap_err() {
            ConfigError::Many(v) => assert_eq!(v.len(), 4, "{v:?}"),
            e => panic!("{e}"),
        }
        assert_eq!(
            HttpPool::new("p")
                .max_connections(2)
                .max_idle_per_host(3)
                .validate()
                .unwrap_err()
                .to_string(),
            "invalid max_idle_per_host `3`: must be at most max_connections (2)"
        );
        let user = HttpPool::from_client("mine", user_client(reqwest::Client::builder()));
        user.validate().unwrap();
        assert_eq!(
            user.clone()
                .connect_timeout(Duration::from_secs(1))
                .validate()
                .unwrap_err()
                .to_string(),
            "invalid pool `mine`: uses a client built by you: set max_idle_per_host, \
             idle_timeout and connect_timeout on that client"
        );
        HttpPool::new("payments").validate().unwrap();
    }

    #[test]
    fn debug_hides_the_user_client() {
        let client = user_client(
            reqwest::Client::builder().default_headers(
                [(
                    http::header::AUTHORIZATION,
                    http::HeaderValue::from_static("Bearer s3cret"),
                )]
                .into_iter()
                .collect(),
            ),
        );
        let shown = format!("{:?}", HttpPool::from_client("mine", client));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("user-built"), "{shown}");
    }
}
