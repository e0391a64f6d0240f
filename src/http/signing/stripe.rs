//! Stripe-style signatures: `t=<ts>,v1=<hex>` in one header.

use std::{fmt, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{
    ascii_value,
    util::{self, Key, Name, Timestamped, DEFAULT_TOLERANCE},
    SignInput, SigningScheme, VerifyError,
};
use crate::ConfigError;

const DEFAULT_HEADER: &str = "stripe-signature";

/// Stripe-style signatures: one header (`stripe-signature` by default) holding
/// `t=<ts>,v1=<lower hex HMAC-SHA256(secret, "{ts}.{body}")>`.
///
/// The secret is used as bytes (no `whsec_` decoding). A received header may carry several
/// `v1=` entries (Stripe sends one per active secret); any match is accepted. Other schemes
/// (`v0=`) are ignored.
///
/// # Default
/// Header `stripe-signature` ([`header`](Self::header)); tolerance window 5 minutes in the
/// past and in the future ([`tolerance`](Self::tolerance)).
///
/// # Example
/// ```
/// use signal_bus::http::signing::StripeStyle;
///
/// let stripe = StripeStyle::new("sk_secret")?.header("X-Signature")?;
/// let value = stripe.sign(1_700_000_000, b"{}");
/// assert!(value.starts_with("t=1700000000,v1="));
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-signature", value.parse()?);
/// assert!(stripe.verify_at(&headers, b"{}", 1_700_000_060).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct StripeStyle {
    key: Key,
    header: HeaderName,
    tolerance: Duration,
}

impl fmt::Debug for StripeStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeStyle")
            .field("secret", &self.key)
            .field("header", &self.header.as_str())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl StripeStyle {
    /// A signer and verifier with this secret, used as bytes.
    ///
    /// # Errors
    /// A [`ConfigError`] when the secret is empty.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let secret = secret.as_ref();
        util::non_empty_secret(secret)?;
        Ok(StripeStyle {
            key: Key::new(secret),
            header: HeaderName::from_static(DEFAULT_HEADER),
            tolerance: DEFAULT_TOLERANCE,
        })
    }

    /// Sets the signature header (any case; stored in lower case).
    ///
    /// # Default
    /// `stripe-signature`.
    ///
    /// # Errors
    /// A [`ConfigError`] when `name` is not a valid HTTP header name.
    pub fn header(mut self, name: &str) -> Result<Self, ConfigError> {
        self.header = util::configured_header("signature header", name)?;
        Ok(self)
    }

    /// Sets how far a received timestamp may be from now, in the past or the future.
    ///
    /// # Default
    /// 5 minutes.
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The signature header value: `t=<timestamp>,v1=<lower hex>`.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        let tag = self.key.tag_timestamped(timestamp, body);
        format!("t={timestamp},v1={}", util::encode_hex(&tag))
    }

    /// Verifies a received request against the current time.
    ///
    /// # Errors
    /// A [`VerifyError`]: the header is missing, has no `t=` or no valid `v1=` entry, the
    /// timestamp is not an integer or is outside the tolerance window, or no `v1=` entry
    /// matches.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        self.verify_at(headers, body, util::now_unix())
    }

    /// Verifies a received request as if the time were `now_unix` (unix seconds).
    ///
    /// The header is a comma-separated list of `key=value` entries (spaces around entries
    /// are ignored): the first `t=` is the timestamp, every `v1=` a candidate signature.
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    pub fn verify_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), VerifyError> {
        let value = util::header_str(headers, Name::Configured(&self.header))?;
        let invalid = |reason| VerifyError::InvalidHeader {
            name: self.header.as_str().to_owned(),
            reason,
        };
        let mut raw_ts = None;
        let mut received = Vec::new();
        let mut saw_v1 = false;
        for entry in value.split(',') {
            match entry.trim().split_once('=') {
                Some(("t", ts)) if raw_ts.is_none() => raw_ts = Some(ts),
                Some(("v1", sig)) => {
                    saw_v1 = true;
                    if let Some(sig) = util::decode_hex(sig) {
                        received.push(sig);
                    }
                }
                _ => {}
            }
        }
        let raw_ts = raw_ts.ok_or_else(|| invalid("it has no `t=<timestamp>` entry"))?;
        let timestamp = util::parse_timestamp(self.header.as_str(), raw_ts)?;
        if !saw_v1 {
            return Err(invalid("it has no `v1=<hex>` entry"));
        }
        if received.is_empty() {
            return Err(invalid("no `v1=` entry is valid hex"));
        }
        let signed = Timestamped {
            msg_id: None,
            raw_ts,
            timestamp,
            body,
            signature_header: self.header.as_str(),
        };
        signed.verify(
            std::slice::from_ref(&self.key),
            now_unix,
            self.tolerance,
            || Ok(received),
        )
    }
}

impl SigningScheme for StripeStyle {
    fn name(&self) -> &'static str {
        "stripe"
    }

    /// The configured signature header only.
    fn sign_headers(&self, input: &SignInput<'_>) -> Vec<(HeaderName, HeaderValue)> {
        vec![(
            self.header.clone(),
            ascii_value(&self.sign(input.timestamp, input.body)),
        )]
    }

    fn header_names(&self) -> Vec<HeaderName> {
        vec![self.header.clone()]
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        self.verify_at(headers, body, util::now_unix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_header_not_secret() {
        let s = StripeStyle::new("topsecret").unwrap();
        assert_eq!(
            format!("{s:?}"),
            "StripeStyle { secret: [redacted], header: \"stripe-signature\", tolerance: 300s }"
        );
    }

    #[test]
    fn entries_in_any_order_with_spaces_and_other_schemes() {
        let s = StripeStyle::new("k").unwrap();
        let signed = s.sign(100, b"x");
        let v1 = signed.split_once(',').unwrap().1;
        let header = format!("v0=abcd, v1=00ff, {v1} , t=100");
        let mut headers = HeaderMap::new();
        headers.insert(DEFAULT_HEADER, header.parse().unwrap());
        assert_eq!(s.verify_at(&headers, b"x", 100), Ok(()));
    }
}
