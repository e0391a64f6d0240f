//! Standard Webhooks (<https://www.standardwebhooks.com>), the default scheme.

use std::{fmt, time::Duration};

use base64::{
    alphabet,
    engine::{general_purpose::STANDARD, DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine as _,
};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{
    ascii_value,
    util::{self, Key, Name, RedactedList, Timestamped, DEFAULT_TOLERANCE, TAG_LEN},
    SignInput, SigningScheme, VerifyError,
};
use crate::ConfigError;

const ID: &str = "webhook-id";
const TIMESTAMP: &str = "webhook-timestamp";
const SIGNATURE: &str = "webhook-signature";
/// The header sets [`StandardWebhooks::verify`] reads: the standard's, then Svix's (the
/// same scheme under the names Svix sends).
const HEADER_SETS: [[&str; 3]; 2] = [
    [ID, TIMESTAMP, SIGNATURE],
    ["svix-id", "svix-timestamp", "svix-signature"],
];
const PREFIX: &str = "whsec_";
const MIN_KEY: usize = 24;
const MAX_KEY: usize = 64;

/// Decodes standard base64 with or without padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The [Standard Webhooks](https://www.standardwebhooks.com) scheme, the crate's default.
///
/// Sets three headers (and verifies them, or Svix's `svix-id`, `svix-timestamp` and
/// `svix-signature`, the same scheme under other names):
/// - `webhook-id`: the message id (never contains `.`; see
///   [`validate_msg_id`](Self::validate_msg_id));
/// - `webhook-timestamp`: unix seconds;
/// - `webhook-signature`: `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, one
///   space-separated entry per active secret.
///
/// Secrets look like `whsec_<base64>`; the HMAC key is the decoded part (24 to 64 bytes).
/// Several secrets may be active at once for rotation: signing emits one signature per secret
/// and verification accepts a match against any of them.
///
/// # Default
/// Tolerance window: 5 minutes in the past and in the future ([`tolerance`](Self::tolerance)).
///
/// # Example
/// A receiver checking a request:
/// ```
/// use http::HeaderMap;
/// use signal_bus::http::signing::StandardWebhooks;
///
/// let receiver = StandardWebhooks::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// let body = br#"{"test": 2432232314}"#;
/// let mut headers = HeaderMap::new();
/// headers.insert("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".parse()?);
/// headers.insert("webhook-timestamp", "1614265330".parse()?);
/// headers.insert(
///     "webhook-signature",
///     "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".parse()?,
/// );
/// // `verify` checks against the current time; `verify_at` takes it explicitly.
/// assert!(receiver.verify_at(&headers, body, 1_614_265_330).is_ok());
/// assert!(receiver.verify(&headers, body).is_err()); // sent in 2021: too old now
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct StandardWebhooks {
    keys: Vec<Key>,
    tolerance: Duration,
}

impl fmt::Debug for StandardWebhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandardWebhooks")
            .field("secrets", &RedactedList(self.keys.len()))
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// How a secret is shown in errors: at most its prefix.
fn redacted(secret: &str) -> &'static str {
    if secret.starts_with(PREFIX) {
        "whsec_… (redacted)"
    } else {
        "… (redacted)"
    }
}

/// Decodes one secret into its key.
fn parse_secret(secret: &str) -> Result<Key, ConfigError> {
    if secret.is_empty() {
        return Err(ConfigError::invalid(
            "secret",
            "<empty>",
            "must not be empty",
        ));
    }
    let shown = redacted(secret);
    let encoded = secret.strip_prefix(PREFIX).unwrap_or(secret);
    if encoded.is_empty() {
        return Err(ConfigError::invalid(
            "secret",
            shown,
            "has nothing after the `whsec_` prefix",
        ));
    }
    let key = LENIENT.decode(encoded).map_err(|_| {
        ConfigError::invalid(
            "secret",
            shown,
            "must be standard base64, optionally after a `whsec_` prefix",
        )
    })?;
    if !(MIN_KEY..=MAX_KEY).contains(&key.len()) {
        return Err(ConfigError::invalid(
            "secret",
            shown,
            format!(
                "the decoded key is {}; it must be {MIN_KEY} to {MAX_KEY} bytes",
                crate::error::count(key.len(), "byte", "bytes")
            ),
        ));
    }
    Ok(Key::new(&key))
}

impl StandardWebhooks {
    /// A signer and verifier with one secret, `whsec_<base64>` or bare base64.
    ///
    /// # Errors
    /// A [`ConfigError`] (which never shows the secret) when the secret is empty, is not
    /// base64 after the optional `whsec_` prefix, or decodes to fewer than 24 or more than 64
    /// bytes.
    pub fn new(secret: impl AsRef<str>) -> Result<Self, ConfigError> {
        Ok(StandardWebhooks {
            keys: vec![parse_secret(secret.as_ref())?],
            tolerance: DEFAULT_TOLERANCE,
        })
    }

    /// A signer and verifier with several active secrets, for rotation: signing emits one
    /// signature per secret, in this order, and verification accepts any of them.
    ///
    /// # Errors
    /// A [`ConfigError`] when the list is empty or a secret is invalid (as in
    /// [`new`](Self::new)); every invalid secret is reported.
    pub fn with_secrets<I, S>(secrets: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut keys = Vec::new();
        let mut errors = Vec::new();
        for secret in secrets {
            match parse_secret(secret.as_ref()) {
                Ok(key) => keys.push(key),
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            0 if keys.is_empty() => Err(ConfigError::invalid(
                "secrets",
                "[]",
                "at least one secret is needed",
            )),
            0 => Ok(StandardWebhooks {
                keys,
                tolerance: DEFAULT_TOLERANCE,
            }),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Many(errors)),
        }
    }

    /// Adds another active secret (rotation), signed with after the existing ones.
    ///
    /// # Errors
    /// A [`ConfigError`] when the secret is invalid, as in [`new`](Self::new).
    pub fn add_secret(mut self, secret: impl AsRef<str>) -> Result<Self, ConfigError> {
        self.keys.push(parse_secret(secret.as_ref())?);
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

    /// The number of active secrets.
    pub fn secret_count(&self) -> usize {
        self.keys.len()
    }

    /// Checks that `id` can be a message id: not empty, visible ASCII only (no spaces or
    /// control characters), and no `.` (the separator of the signed content). The signing
    /// methods are infallible, so callers choosing ids check them here first.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the id and the rule it breaks.
    pub fn validate_msg_id(id: &str) -> Result<(), ConfigError> {
        let shown = || util::shorten(id, 64).escape_debug().to_string();
        if id.is_empty() {
            return Err(ConfigError::invalid("message id", "", "must not be empty"));
        }
        if id.contains('.') {
            return Err(ConfigError::invalid(
                "message id",
                shown(),
                "must not contain `.`",
            ));
        }
        if !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::invalid(
                "message id",
                shown(),
                "must be visible ASCII, without spaces or control characters",
            ));
        }
        Ok(())
    }

    fn tags(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<[u8; TAG_LEN]> {
        let ts = timestamp.to_string();
        let parts: [&[u8]; 5] = [msg_id.as_bytes(), b".", ts.as_bytes(), b".", body];
        self.keys.iter().map(|k| k.tag(&parts)).collect()
    }

    /// The `webhook-signature` value for a message: `v1,<base64>`, one space-separated entry
    /// per active secret.
    ///
    /// `msg_id` should pass [`validate_msg_id`](Self::validate_msg_id); `timestamp` is unix
    /// seconds.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut out = String::with_capacity(self.keys.len() * 48);
        for tag in self.tags(msg_id, timestamp, body) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("v1,");
            STANDARD.encode_string(tag, &mut out);
        }
        out
    }

    /// Verifies a received request against the current time.
    ///
    /// # Errors
    /// A [`VerifyError`]: a missing header (named), a timestamp that is not an integer or is
    /// outside the tolerance window, a signature header with no usable `v1` entry, or no
    /// entry matching any secret.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        self.verify_at(headers, body, util::now_unix())
    }

    /// Verifies a received request as if the time were `now_unix` (unix seconds).
    ///
    /// Reads `webhook-id`, `webhook-timestamp` and `webhook-signature`, or, when none of
    /// those is there, Svix's `svix-id`, `svix-timestamp` and `svix-signature` (the same
    /// scheme under other names); a request with neither set is refused with
    /// [`VerifyError::MissingHeaders`], naming both. The signature header may hold several
    /// space-separated entries, of which only `v1,` ones are considered.
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    pub fn verify_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), VerifyError> {
        // The first set with any of its headers present is the one read: a request with
        // `webhook-id` but no `webhook-signature` is missing that header, whatever else.
        let [id_name, ts_name, sig_name] = HEADER_SETS
            .into_iter()
            .find(|set| set.iter().any(|name| headers.contains_key(*name)))
            .ok_or(VerifyError::MissingHeaders {
                looked_for: "`webhook-id`, `webhook-timestamp` and `webhook-signature` \
                             (Standard Webhooks), or `svix-id`, `svix-timestamp` and \
                             `svix-signature` (Svix)",
            })?;
        let id = util::header_str(headers, Name::Static(id_name))?;
        let raw_ts = util::header_str(headers, Name::Static(ts_name))?;
        let signatures = util::header_str(headers, Name::Static(sig_name))?;
        // `raw_ts` is used as received: it parsed as an integer, and the sender signed the
        // text it sent.
        let signed = Timestamped {
            msg_id: Some(id),
            raw_ts,
            timestamp: util::parse_timestamp(ts_name, raw_ts)?,
            body,
            signature_header: sig_name,
        };
        signed.verify(&self.keys, now_unix, self.tolerance, || {
            let received: Vec<Vec<u8>> = signatures
                .split(' ')
                .filter_map(|entry| entry.strip_prefix("v1,"))
                .filter_map(|sig| LENIENT.decode(sig).ok())
                .filter(|sig| !sig.is_empty())
                .collect();
            if received.is_empty() {
                return Err(VerifyError::InvalidHeader {
                    name: sig_name.to_owned(),
                    reason: "it has no `v1,<base64>` signature",
                });
            }
            Ok(received)
        })
    }
}

impl SigningScheme for StandardWebhooks {
    fn name(&self) -> &'static str {
        "standard-webhooks"
    }

    /// `webhook-id`, `webhook-timestamp` and `webhook-signature`. An id that is not a valid
    /// header value (control characters: see [`StandardWebhooks::validate_msg_id`]) leaves
    /// `webhook-id` out, so receivers reject the request.
    fn sign_headers(&self, input: &SignInput<'_>) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = Vec::with_capacity(3);
        if let Ok(id) = HeaderValue::from_str(input.msg_id) {
            headers.push((HeaderName::from_static(ID), id));
        }
        headers.push((
            HeaderName::from_static(TIMESTAMP),
            HeaderValue::from(input.timestamp),
        ));
        headers.push((
            HeaderName::from_static(SIGNATURE),
            ascii_value(&self.sign(input.msg_id, input.timestamp, input.body)),
        ));
        headers
    }

    fn header_names(&self) -> Vec<HeaderName> {
        [ID, TIMESTAMP, SIGNATURE]
            .into_iter()
            .map(HeaderName::from_static)
            .collect()
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        self.verify_at(headers, body, util::now_unix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn published_vector() {
        let s = StandardWebhooks::new(SECRET).unwrap();
        assert_eq!(
            s.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // The same key without the prefix, and without padding-insensitive trouble.
        let bare = StandardWebhooks::new(&SECRET[PREFIX.len()..]).unwrap();
        assert_eq!(
            bare.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn msg_id_rules() {
        assert!(StandardWebhooks::validate_msg_id("msg_1").is_ok());
        assert!(StandardWebhooks::validate_msg_id("0198c3a2-7b1e-7c3d-9a4f-1b2c3d4e5f60").is_ok());
        let e = StandardWebhooks::validate_msg_id("a.b")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "invalid message id `a.b`: must not contain `.`");
        assert!(StandardWebhooks::validate_msg_id("").is_err());
        assert!(StandardWebhooks::validate_msg_id("a b").is_err());
        assert!(StandardWebhooks::validate_msg_id("a\nb").is_err());
        assert!(StandardWebhooks::validate_msg_id("é").is_err());
    }

    #[test]
    fn invalid_id_drops_the_id_header() {
        let s = StandardWebhooks::new(SECRET).unwrap();
        let headers = s.sign_headers(&SignInput::new("a\nb", 1, b"", "t"));
        assert!(headers.iter().all(|(n, _)| n != ID));
        let map: HeaderMap = headers.into_iter().collect();
        assert_eq!(
            s.verify_at(&map, b"", 1),
            Err(VerifyError::MissingHeader { name: ID })
        );
    }

    #[test]
    fn svix_header_names_verify_too() {
        let s = StandardWebhooks::new(SECRET).unwrap();
        let body = br#"{"test": 2432232314}"#;
        let svix: HeaderMap = [
            ("svix-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("svix-timestamp", "1614265330"),
            (
                "svix-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]
        .into_iter()
        .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
        .collect();
        assert_eq!(s.verify_at(&svix, body, 1_614_265_330), Ok(()));
        assert_eq!(
            s.verify_at(&svix, b"{}", 1_614_265_330),
            Err(VerifyError::NoMatchingSignature {
                name: "svix-signature".to_owned()
            })
        );
        let mut partial = svix.clone();
        partial.remove("svix-timestamp");
        assert_eq!(
            s.verify_at(&partial, body, 1_614_265_330),
            Err(VerifyError::MissingHeader {
                name: "svix-timestamp"
            })
        );
        let e = s.verify_at(&HeaderMap::new(), body, 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no signature headers: looked for `webhook-id`, `webhook-timestamp` and \
             `webhook-signature` (Standard Webhooks), or `svix-id`, `svix-timestamp` and \
             `svix-signature` (Svix)"
        );
    }

    #[test]
    fn debug_is_redacted() {
        let s = StandardWebhooks::with_secrets([SECRET, SECRET]).unwrap();
        assert_eq!(
            format!("{s:?}"),
            "StandardWebhooks { secrets: [redacted; 2], tolerance: 300s }"
        );
    }
}
