use std::{collections::HashMap, fmt, sync::Arc};

use async_trait::async_trait;
use futures_util::future::join_all;
use http::{HeaderMap, Method};

use super::{
    binding,
    endpoint::Endpoint,
    request::{request_options, RequestConfig},
    signing::{SignInput, SigningScheme},
};
use crate::{
    adapter::{
        hooks::{BusHooks, Sealed},
        Health, HealthStatus,
    },
    Adapter, ConfigError, DeliveryError, EndpointError, ErrorKind, Signal,
};

/// Longest list of URLs one webhook target may have.
pub const MAX_WEBHOOK_URLS: usize = 100;

/// Delivers signals as signed webhooks to one or several URLs (Jido's `webhook` adapter).
///
/// Everything [`Http`](super::Http) does, plus:
/// - **signing** with a [`SigningScheme`] ([`StandardWebhooks`](super::signing::StandardWebhooks)
///   is the usual choice): the signature covers the exact body, is computed once per
///   delivery and shared by every URL, and its headers always win over caller headers of
///   the same name (compared case-insensitively);
/// - **several URLs**, one after the other or, with [`parallel`](Webhook::parallel), at once;
///   the outcome fails when any URL fails and names each failed URL;
/// - an **event type map** for the event name some schemes send (`x-webhook-event`);
/// - the **egress guard**: private, loopback, link-local and unspecified addresses are
///   refused (a literal IP at `subscribe`, a resolved one at connect time) unless
///   [`allow_private_networks(true)`](Webhook::allow_private_networks).
///
/// # Message ids
/// Every request carries a `webhook-id` header (signed or not, whatever the scheme; with
/// [`StandardWebhooks`](super::signing::StandardWebhooks) it is also the signed message id):
/// [`Webhook::message_id`] of the signal's source and id, `msg_` and 32 hex characters.
/// CloudEvents makes `(source, id)` unique, so two sources that both use id `1` get two
/// ids, while every retry of the same signal (by the target's retry policy, or by a durable
/// [`Forwarder`](crate::queue::Forwarder) after a restart) sends the same one: receivers
/// deduplicate on it. A batch gets the id of its signals' keys in order.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use signal_bus::{http::{signing::StandardWebhooks, Webhook}, Bus};
///
/// let bus = Bus::builder().build()?;
/// let hook = Webhook::new("https://merchant.example.com/hook")?
///     .signing(StandardWebhooks::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?);
/// bus.subscribe("order.**", hook)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Webhook {
    endpoints: Vec<Endpoint>,
    pub(crate) request: RequestConfig,
    signing: Option<Arc<dyn SigningScheme>>,
    event_types: HashMap<String, String>,
    parallel: bool,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("urls", &self.endpoints)
            .field("signing", &self.signing)
            .field("parallel", &self.parallel)
            .field("allow_private_networks", &!self.request.client.egress_guard)
            .field("request", &self.request)
            .finish()
    }
}

impl Webhook {
    /// POSTs signed signals to `url`.
    ///
    /// # Errors
    /// A URL that is not http(s), has no host, has user info or whitespace.
    pub fn new(url: &str) -> Result<Webhook, ConfigError> {
        Webhook::urls([url])
    }

    /// POSTs signed signals to each of `urls` (1 to 100).
    ///
    /// # Errors
    /// No URL, too many, or any bad URL.
    pub fn urls<S: AsRef<str>>(urls: impl IntoIterator<Item = S>) -> Result<Webhook, ConfigError> {
        let endpoints = urls
            .into_iter()
            .map(|u| Endpoint::parse(u.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(ConfigError::invalid(
                "urls",
                "[]",
                "must list at least one URL",
            ));
        }
        if endpoints.len() > MAX_WEBHOOK_URLS {
            return Err(ConfigError::invalid(
                "urls",
                format!("{} URLs", endpoints.len()),
                format!("must list at most {MAX_WEBHOOK_URLS}"),
            ));
        }
        let mut request = RequestConfig::new(Method::POST);
        request.client.egress_guard = true;
        Ok(Webhook {
            endpoints,
            request,
            signing: None,
            event_types: HashMap::new(),
            parallel: false,
        })
    }

    /// Signs every request with `scheme`. Default: unsigned.
    pub fn signing(mut self, scheme: impl SigningScheme) -> Self {
        self.signing = Some(Arc::new(scheme));
        self
    }

    /// Sends to all URLs at once instead of one after the other. Default: `false`.
    pub fn parallel(mut self, parallel: bool) -> Self {
        self.parallel = parallel;
        self
    }

    /// Maps signal types to the event names sent (e.g. `order.placed` -> `OrderPlaced`);
    /// unmapped types are sent as they are.
    pub fn event_type_map<K: Into<String>, V: Into<String>>(
        mut self,
        map: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.event_types
            .extend(map.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Allows private, loopback, link-local and unspecified addresses. Default: `false`
    /// (refused), so a webhook URL cannot reach internal services.
    pub fn allow_private_networks(mut self, allow: bool) -> Self {
        self.request.client.egress_guard = !allow;
        self
    }

    /// Sends with PUT or PATCH instead of POST.
    pub fn method(mut self, method: Method) -> Self {
        self.request.method = method;
        self
    }

    request_options!();

    async fn send_all(
        &self,
        body: bytes::Bytes,
        headers: &[&HeaderMap],
    ) -> Result<(), DeliveryError> {
        // Literal addresses never reach the guard's resolver: check them here too, so calling
        // `deliver` directly (without `subscribe`'s validation) cannot skip the guard.
        if self.request.client.egress_guard {
            for e in &self.endpoints {
                e.check_literal_ip().map_err(DeliveryError::permanent)?;
            }
        }
        let results: Vec<Result<(), DeliveryError>> = if self.parallel && self.endpoints.len() > 1 {
            join_all(
                self.endpoints
                    .iter()
                    .map(|e| self.request.send(e, body.clone(), headers)),
            )
            .await
        } else {
            let mut results = Vec::with_capacity(self.endpoints.len());
            for e in &self.endpoints {
                results.push(self.request.send(e, body.clone(), headers).await);
            }
            results
        };
        if self.endpoints.len() == 1 {
            return results.into_iter().next().unwrap_or(Ok(()));
        }
        let failures: Vec<EndpointError> = self
            .endpoints
            .iter()
            .zip(results)
            .filter_map(|(e, r)| r.err().map(|err| EndpointError::new(e.to_string(), err)))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(DeliveryError::Endpoints {
                total: self.endpoints.len(),
                failures,
            })
        }
    }

    /// The message id of the signal `(source, id)`: `msg_` and the first 32 hex characters
    /// (128 bits) of SHA-256 over the source and the id, each preceded by its length in
    /// bytes as a big-endian `u64`, so `("a", "bc")` and `("ab", "c")` differ. Deterministic:
    /// every process, every attempt and every URL compute the same id for the same signal,
    /// and a receiver can compute it too. Only `[a-z0-9_]`: valid for Standard Webhooks
    /// (which forbids `.`) and in any header.
    ///
    /// ```
    /// use signal_bus::http::Webhook;
    ///
    /// let a = Webhook::message_id("/service-a", "1");
    /// assert!(a.starts_with("msg_") && a.len() == 36);
    /// assert_ne!(a, Webhook::message_id("/service-b", "1"));
    /// assert_eq!(a, Webhook::message_id("/service-a", "1"));
    /// ```
    pub fn message_id(source: &str, id: &str) -> String {
        message_id_of([(source, id)])
    }

    fn sign(&self, msg_id: &str, body: &[u8], ty: &str) -> Result<HeaderMap, DeliveryError> {
        let mut headers = HeaderMap::new();
        // Derived ids are `msg_` and hex only; this guards the invariant the schemes rely on.
        if msg_id.contains('.') || msg_id.is_empty() {
            return Err(DeliveryError::Other {
                kind: ErrorKind::Permanent,
                message: format!(
                    "webhook message id `{msg_id}` must be non-empty and must not contain `.`"
                ),
                retry_after: None,
            });
        }
        let id = http::HeaderValue::from_str(msg_id).map_err(|_| DeliveryError::Other {
            kind: ErrorKind::Permanent,
            message: format!("webhook message id `{msg_id}` is not a valid header value"),
            retry_after: None,
        })?;
        // Sent signed or not, whatever the scheme: receivers deduplicate on it.
        headers.insert(http::header::HeaderName::from_static(MESSAGE_ID_HEADER), id);
        let Some(scheme) = &self.signing else {
            return Ok(headers);
        };
        let event_type = self.event_types.get(ty).map_or(ty, String::as_str);
        let input = SignInput::new(msg_id, chrono::Utc::now().timestamp(), body, event_type);
        for (name, value) in scheme.sign_headers(&input) {
            headers.insert(name, value);
        }
        Ok(headers)
    }
}

/// The header every webhook request carries its message id in.
const MESSAGE_ID_HEADER: &str = "webhook-id";

/// `msg_` + 32 hex characters of SHA-256 over the length-prefixed sources and ids.
fn message_id_of<'a>(keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    use sha2::{Digest as _, Sha256};
    let mut hash = Sha256::new();
    for (source, id) in keys {
        for part in [source, id] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
    }
    let digest = hash.finalize();
    let mut out = String::with_capacity(4 + 32);
    out.push_str("msg_");
    for b in &digest[..16] {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[async_trait]
impl Adapter for Webhook {
    fn name(&self) -> &str {
        "webhook"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.request.validate(&mut problems);
        if self.request.client.egress_guard {
            // What the guard would refuse at connect time and the URL already shows (a
            // literal address, `localhost`) is refused here, at `subscribe`, not at the first
            // publish. (A user-built client resolves names itself: for it, this is the only
            // check names get.)
            for e in &self.endpoints {
                if let Err(p) = e.check_literal_ip() {
                    problems.push(p);
                }
                if let Err(p) = e.check_local_name() {
                    problems.push(p);
                }
            }
        }
        ConfigError::from_problems(problems)
    }

    async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
        // Serialized (cached on the signal) and signed once, whatever the number of URLs.
        let encoded = binding::encode(signal, self.request.mode);
        let msg_id = Webhook::message_id(signal.source(), signal.id());
        let signed = self.sign(&msg_id, &encoded.body, signal.ty())?;
        self.send_all(encoded.body, &[&encoded.headers, &signed])
            .await
    }

    async fn deliver_shared(&self, signal: Arc<Signal>) -> Result<(), DeliveryError> {
        self.deliver(&signal).await
    }

    async fn deliver_batch(&self, signals: &[Arc<Signal>]) -> Result<(), DeliveryError> {
        let Some(first) = signals.first() else {
            return Ok(());
        };
        let encoded = binding::encode_batch(signals);
        // A batch is signed as one message, identified by all of its signals' keys in order
        // (a batch of one has its signal's id).
        let msg_id = message_id_of(signals.iter().map(|s| (s.source(), s.id())));
        let signed = self.sign(&msg_id, &encoded.body, first.ty())?;
        self.send_all(encoded.body, &[&encoded.headers, &signed])
            .await
    }

    fn bus_hooks(&self, _: Sealed) -> Option<&dyn BusHooks> {
        Some(self)
    }

    async fn health_check(&self) -> Health {
        let checks = join_all(self.endpoints.iter().map(|e| self.request.health(e))).await;
        let failed: Vec<String> = checks
            .iter()
            .filter(|h| !h.is_healthy())
            .filter_map(|h| h.message.clone())
            .collect();
        let latency = checks.iter().filter_map(|h| h.latency).max();
        let mut health = if failed.is_empty() {
            Health::healthy()
        } else if failed.len() == checks.len() {
            Health::unhealthy(failed.join("; "))
        } else {
            Health::degraded(failed.join("; "))
        };
        if let Some(l) = latency {
            health = health.with_latency(l);
        }
        debug_assert!(health.status != HealthStatus::Degraded || checks.len() > 1);
        health
    }
}

impl BusHooks for Webhook {
    fn request_timeout(&self) -> Option<std::time::Duration> {
        self.request.timeout
    }

    fn split_endpoints(&self) -> Vec<(String, Arc<dyn Adapter>)> {
        if self.endpoints.len() < 2 {
            return Vec::new();
        }
        self.endpoints
            .iter()
            .map(|e| {
                let one = Webhook {
                    endpoints: vec![e.clone()],
                    ..self.clone()
                };
                (e.to_string(), Arc::new(one) as Arc<dyn Adapter>)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_derived_from_source_and_id() {
        let id = Webhook::message_id("/service-a", "1");
        assert_eq!(id.len(), 36, "{id}");
        assert!(id.starts_with("msg_"), "{id}");
        assert!(id[4..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(id, Webhook::message_id("/service-a", "1"), "deterministic");
        assert_ne!(
            id,
            Webhook::message_id("/service-b", "1"),
            "the source counts"
        );
        assert_ne!(id, Webhook::message_id("/service-a", "2"), "the id counts");
        // Length prefixes: moving a byte from the source to the id changes the id.
        assert_ne!(
            Webhook::message_id("ab", "c"),
            Webhook::message_id("a", "bc")
        );
        // Dots in the signal id never reach the message id.
        assert!(!Webhook::message_id("/a.b", "x.y").contains('.'));
        // A batch of one is its signal's id; a batch of two is its own.
        assert_eq!(message_id_of([("/service-a", "1")]), id);
        assert_ne!(
            message_id_of([("/service-a", "1"), ("/service-b", "1")]),
            id
        );
        // Pinned: receivers may compute it themselves, so it must never change.
        assert_eq!(
            Webhook::message_id("/shop", "1"),
            "msg_5256bedc5077cf8a1b0236c9573b0aca"
        );
    }
}
