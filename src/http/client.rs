//! One pooled `reqwest::Client` per distinct client configuration, shared by every target
//! that uses it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use super::egress::GuardedResolver;
use crate::{ConfigError, DeliveryError};

/// Connection settings. Targets with equal settings share one client and its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientOptions {
    pub(crate) pool_max_idle_per_host: usize,
    pub(crate) pool_idle_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// Refuse the special-purpose addresses of `egress` after DNS resolution. A guarded
    /// client ignores the proxy environment variables (`HTTP_PROXY`, `HTTPS_PROXY`,
    /// `ALL_PROXY`, lowercase forms included): through a proxy, the proxy would resolve the
    /// destination and the guard's resolver would never run. An unguarded client (`Http`, or
    /// a webhook with `allow_private_networks(true)`) uses the environment's proxies.
    pub(crate) egress_guard: bool,
}

/// Default idle connections kept per host.
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 64;
/// Default time an idle connection is kept.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            pool_max_idle_per_host: DEFAULT_POOL_MAX_IDLE_PER_HOST,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            egress_guard: false,
        }
    }
}

impl ClientOptions {
    pub(crate) fn validate(&self, problems: &mut Vec<ConfigError>) {
        if self.connect_timeout.is_zero() || self.connect_timeout > Duration::from_secs(60) {
            problems.push(ConfigError::invalid(
                "connect_timeout",
                format!("{:?}", self.connect_timeout),
                "must be between 1ns and 60s",
            ));
        }
        if self.pool_idle_timeout > Duration::from_secs(3600) {
            problems.push(ConfigError::invalid(
                "pool_idle_timeout",
                format!("{:?}", self.pool_idle_timeout),
                "must be at most 1h",
            ));
        }
    }
}

type Clients = Mutex<HashMap<ClientOptions, reqwest::Client>>;

fn clients() -> &'static Clients {
    static CLIENTS: OnceLock<Clients> = OnceLock::new();
    CLIENTS.get_or_init(Clients::default)
}

/// The shared client for these options, built on first use.
pub(crate) fn shared(options: ClientOptions) -> Result<reqwest::Client, DeliveryError> {
    let mut map = clients().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(client) = map.get(&options) {
        return Ok(client.clone());
    }
    let client = build(options)?;
    map.insert(options, client.clone());
    Ok(client)
}

/// How many distinct clients exist (for tests of the sharing rule).
#[cfg(test)]
pub(crate) fn count() -> usize {
    clients().lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// A client builder with the crate's settings for `options`: no redirects, the pool and
/// connect settings, TLS through [`tls_config`], and the egress guard when asked.
pub(crate) fn build(options: ClientOptions) -> Result<reqwest::Client, DeliveryError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(options.pool_max_idle_per_host)
        .pool_idle_timeout(options.pool_idle_timeout)
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .user_agent(concat!("signal-bus/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(tls_config()?);
    if options.egress_guard {
        // No proxy, from the environment or otherwise: the guard must resolve the
        // destination itself and connect to the address it checked.
        builder = builder.no_proxy().dns_resolver(Arc::new(GuardedResolver));
    }
    builder.build().map_err(|e| {
        let e = e.without_url();
        let message = format!(
            "cannot build the HTTP client: {}",
            crate::error::innermost(&e)
        );
        DeliveryError::transport(crate::ErrorKind::Permanent, message, e)
    })
}

/// The TLS settings of every client the crate builds: rustls with the `ring` provider given
/// explicitly (`ClientConfig::builder_with_provider`, nothing installed process-wide), the
/// platform's root certificates, HTTP/2 and HTTP/1.1 offered by ALPN. Built once.
pub(crate) fn tls_config() -> Result<rustls::ClientConfig, DeliveryError> {
    static CONFIG: OnceLock<Result<rustls::ClientConfig, String>> = OnceLock::new();
    let built = CONFIG.get_or_init(|| {
        use rustls_platform_verifier::BuilderVerifierExt as _;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_platform_verifier()
            .map_err(|e| e.to_string())?
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    });
    built
        .clone()
        .map_err(|e| DeliveryError::permanent(format!("cannot set up TLS: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_uses_ring_without_installing_a_process_default() {
        let config = tls_config().unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        // Not `shared`: another test counts the shared clients.
        build(ClientOptions::default()).unwrap();
        assert!(
            rustls::crypto::CryptoProvider::get_default().is_none(),
            "no process-wide provider is installed"
        );
        let ring = rustls::crypto::ring::default_provider();
        assert_eq!(
            config.crypto_provider().cipher_suites.len(),
            ring.cipher_suites.len()
        );
    }

    #[test]
    fn equal_settings_share_one_client() {
        let odd = ClientOptions {
            pool_max_idle_per_host: 7_777,
            ..ClientOptions::default()
        };
        let before = count();
        shared(odd).unwrap();
        assert_eq!(count(), before + 1);
        shared(odd).unwrap();
        assert_eq!(count(), before + 1, "same settings, same client");
        shared(ClientOptions {
            egress_guard: true,
            ..odd
        })
        .unwrap();
        assert_eq!(count(), before + 2, "different settings, another client");
    }
}
