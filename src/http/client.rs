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

fn build(options: ClientOptions) -> Result<reqwest::Client, DeliveryError> {
    // reqwest is built without a bundled crypto provider: use ring unless the application
    // installed another one already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(options.pool_max_idle_per_host)
        .pool_idle_timeout(options.pool_idle_timeout)
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .user_agent(concat!("signal-bus/", env!("CARGO_PKG_VERSION")));
    if options.egress_guard {
        // No proxy, from the environment or otherwise: the guard must resolve the
        // destination itself and connect to the address it checked.
        builder = builder.no_proxy().dns_resolver(Arc::new(GuardedResolver));
    }
    builder
        .build()
        .map_err(|e| DeliveryError::permanent(format!("cannot build the HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

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
