//! Jido-compatible signatures: `x-webhook-signature`, `x-webhook-timestamp`, `x-webhook-event`.

use std::{fmt, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{
    ascii_value,
    util::{self, Key, Name, Timestamped, DEFAULT_TOLERANCE},
    SignInput, SigningScheme, VerifyError,
};
use crate::ConfigError;

const DEFAULT_SIGNATURE: &str = "x-webhook-signature";
const TIMESTAMP: &str = "x-webhook-timestamp";
const EVENT: &str = "x-webhook-event";

/// Jido-compatible signatures, three headers:
/// - `x-webhook-signature: <lower hex HMAC-SHA256(secret, "{ts}.{body}")>` (name
///   configurable with [`signature_header`](Self::signature_header));
/// - `x-webhook-timestamp: <ts>` (unix seconds);
/// - `x-webhook-event: <event type>` (informational: not covered by the signature, and not
///   required by [`verify`](Self::verify)). Sent as is when it is printable ASCII without
///   `%` (every type of ASCII characters, `com.example/orders:created` included); otherwise
///   percent-encoded as UTF-8 like a CloudEvents `ce-*` header (non-ASCII and control
///   characters, space, `"` and `%`), so that it is always a valid header value and a
///   receiver that percent-decodes it always gets the name back.
///
/// The secret is used as bytes.
///
/// # Default
/// Signature header `x-webhook-signature`; tolerance window 5 minutes in the past and in the
/// future ([`tolerance`](Self::tolerance)).
///
/// # Example
/// ```
/// use signal_bus::http::signing::{JidoCompat, SignInput, SigningScheme};
///
/// let jido = JidoCompat::new("shared-secret")?;
/// let input = SignInput::new("msg_1", 1_700_000_000, b"{}", "user.created");
/// let headers: http::HeaderMap = jido.sign_headers(&input).into_iter().collect();
/// assert_eq!(headers["x-webhook-event"], "user.created");
/// assert_eq!(headers["x-webhook-signature"], jido.sign(1_700_000_000, b"{}").as_str());
/// assert!(jido.verify_at(&headers, b"{}", 1_700_000_000).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct JidoCompat {
    key: Key,
    signature_header: HeaderName,
    tolerance: Duration,
}

impl fmt::Debug for JidoCompat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JidoCompat")
            .field("secret", &self.key)
            .field("signature_header", &self.signature_header.as_str())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl JidoCompat {
    /// A signer and verifier with this secret, used as bytes.
    ///
    /// # Errors
    /// A [`ConfigError`] when the secret is empty.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let secret = secret.as_ref();
        util::non_empty_secret(secret)?;
        Ok(JidoCompat {
            key: Key::new(secret),
            signature_header: HeaderName::from_static(DEFAULT_SIGNATURE),
            tolerance: DEFAULT_TOLERANCE,
        })
    }

    /// Sets the signature header (any case; stored in lower case).
    ///
    /// # Default
    /// `x-webhook-signature`.
    ///
    /// # Errors
    /// A [`ConfigError`] when `name` is not a valid HTTP header name, or is
    /// `x-webhook-timestamp` or `x-webhook-event` (already used by this scheme).
    pub fn signature_header(mut self, name: &str) -> Result<Self, ConfigError> {
        let header = util::configured_header("signature header", name)?;
        if header == TIMESTAMP || header == EVENT {
            return Err(ConfigError::invalid(
                "signature header",
                header.as_str(),
                "is already used by the jido scheme for the timestamp or the event",
            ));
        }
        self.signature_header = header;
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

    /// The signature header value: lower hex of HMAC-SHA256 over `"{timestamp}.{body}"`.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        util::encode_hex(&self.key.tag_timestamped(timestamp, body))
    }

    /// Verifies a received request against the current time.
    ///
    /// # Errors
    /// A [`VerifyError`]: a missing signature or timestamp header (named), a timestamp that
    /// is not an integer or is outside the tolerance window, a signature that is not hex, or
    /// one that does not match.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        self.verify_at(headers, body, util::now_unix())
    }

    /// Verifies a received request as if the time were `now_unix` (unix seconds).
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    pub fn verify_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), VerifyError> {
        let signature = util::header_str(headers, Name::Configured(&self.signature_header))?;
        let raw_ts = util::header_str(headers, Name::Static(TIMESTAMP))?;
        let received = Timestamped {
            msg_id: None,
            raw_ts,
            timestamp: util::parse_timestamp(TIMESTAMP, raw_ts)?,
            body,
            signature_header: self.signature_header.as_str(),
        };
        received.verify(
            std::slice::from_ref(&self.key),
            now_unix,
            self.tolerance,
            || {
                let sig = util::decode_hex(signature.trim()).ok_or_else(|| {
                    VerifyError::InvalidHeader {
                        name: self.signature_header.as_str().to_owned(),
                        reason: "it is not hex",
                    }
                })?;
                Ok(vec![sig])
            },
        )
    }
}

/// The `x-webhook-event` value: the name as is when it is printable ASCII without `%` (no
/// space at either end), else percent-encoded, which always makes a valid header value.
fn event_value(name: &str) -> HeaderValue {
    let plain = name
        .bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b'%')
        && !name.starts_with(' ')
        && !name.ends_with(' ');
    let text = if plain {
        std::borrow::Cow::Borrowed(name)
    } else {
        crate::binding::encode_value(name)
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl SigningScheme for JidoCompat {
    fn name(&self) -> &'static str {
        "jido"
    }

    /// The signature header, `x-webhook-timestamp` and `x-webhook-event` (the event type,
    /// percent-encoded unless it is printable ASCII without `%`; not part of the signature).
    fn sign_headers(&self, input: &SignInput<'_>) -> Vec<(HeaderName, HeaderValue)> {
        vec![
            (
                self.signature_header.clone(),
                ascii_value(&self.sign(input.timestamp, input.body)),
            ),
            (
                HeaderName::from_static(TIMESTAMP),
                HeaderValue::from(input.timestamp),
            ),
            (
                HeaderName::from_static(EVENT),
                event_value(input.event_type),
            ),
        ]
    }

    fn header_names(&self) -> Vec<HeaderName> {
        vec![
            self.signature_header.clone(),
            HeaderName::from_static(TIMESTAMP),
            HeaderName::from_static(EVENT),
        ]
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        self.verify_at(headers, body, util::now_unix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_header_is_the_type_or_its_percent_encoding() {
        let jido = JidoCompat::new("s").unwrap();
        let event = |ty: &str| {
            let input = SignInput::new("m", 1, b"{}", ty);
            let headers: HeaderMap = jido.sign_headers(&input).into_iter().collect();
            headers[EVENT].to_str().unwrap().to_owned()
        };
        for plain in [
            "com.example/orders:created",
            "a+b@c~d.#.*.{x}",
            "OrderPlaced",
            "Order Placed",
        ] {
            assert_eq!(event(plain), plain);
        }
        assert_eq!(event("caf\u{e9}.created"), "caf%C3%A9.created");
        assert_eq!(event("100%.done"), "100%25.done");
        assert_eq!(event("a\nb"), "a%0Ab");
        assert_eq!(event(" padded"), "%20padded");
        // Percent-decoding gives the name back.
        for name in ["caf\u{e9}.created", "100%.done", "a\nb", " padded"] {
            assert_eq!(crate::binding::decode_value(&event(name)).unwrap(), name);
        }
    }

    #[test]
    fn signature_header_cannot_shadow_the_others() {
        let e = JidoCompat::new("s")
            .unwrap()
            .signature_header("X-Webhook-Timestamp")
            .unwrap_err();
        assert!(e.to_string().contains("x-webhook-timestamp"), "{e}");
        let j = JidoCompat::new("s")
            .unwrap()
            .signature_header("X-Sig")
            .unwrap();
        assert_eq!(j.header_names()[0], "x-sig");
    }

    #[test]
    fn debug_is_redacted() {
        let j = JidoCompat::new("hunter2").unwrap();
        assert_eq!(
            format!("{j:?}"),
            "JidoCompat { secret: [redacted], signature_header: \"x-webhook-signature\", tolerance: 300s }"
        );
    }
}
