//! Webhook signing schemes: pure signers and verifiers, usable by senders and receivers.
//!
//! Every scheme implements [`SigningScheme`], so a webhook can hold any of them as a
//! `Box<dyn SigningScheme>`; each also has inherent `sign` and `verify` methods for direct use,
//! for example by a receiver checking requests it gets.
//!
//! | Scheme | Headers | Signed content |
//! |---|---|---|
//! | [`StandardWebhooks`] (default) | `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>` (verifies Svix's `svix-*` names too) | `{id}.{timestamp}.{body}` |
//! | [`GitHub`] | `x-hub-signature-256: sha256=<hex>` | `{body}` |
//! | [`StripeStyle`] | `stripe-signature: t=<ts>,v1=<hex>` | `{ts}.{body}` |
//! | [`JidoCompat`] | `x-webhook-signature: <hex>`, `x-webhook-timestamp`, `x-webhook-event` | `{ts}.{body}` |
//!
//! All use HMAC-SHA256, compare signatures in constant time, and check timestamps (where the
//! scheme has one) against a tolerance window of 5 minutes in both directions by default.
//! Secrets never appear in `Debug` output or in errors.

use std::{fmt, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue};

mod github;
mod jido;
mod standard;
mod stripe;
mod util;

pub use github::GitHub;
pub use jido::JidoCompat;
pub use standard::StandardWebhooks;
pub use stripe::StripeStyle;

/// What a signature covers for one request.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SignInput<'a> {
    /// The message id; never contains `.`. A [`Webhook`](crate::http::Webhook) passes
    /// [`Webhook::message_id`](crate::http::Webhook::message_id) of the signal's source and id.
    pub msg_id: &'a str,
    /// Unix seconds of this attempt.
    pub timestamp: i64,
    /// The exact request body.
    pub body: &'a [u8],
    /// The event name (the signal type, or its mapped name).
    pub event_type: &'a str,
}

impl<'a> SignInput<'a> {
    /// Everything a signature may cover.
    pub fn new(msg_id: &'a str, timestamp: i64, body: &'a [u8], event_type: &'a str) -> Self {
        SignInput {
            msg_id,
            timestamp,
            body,
            event_type,
        }
    }
}

/// A webhook signing scheme. Object safe: a `Webhook` holds a `Box<dyn SigningScheme>`.
pub trait SigningScheme: fmt::Debug + Send + Sync + 'static {
    /// A short name: `standard-webhooks`, `github`, `stripe`, `jido`.
    fn name(&self) -> &'static str;

    /// The headers that sign one request. They always win over caller-supplied headers of
    /// the same name.
    fn sign_headers(&self, input: &SignInput<'_>) -> Vec<(HeaderName, HeaderValue)>;

    /// The names of the headers [`sign_headers`](SigningScheme::sign_headers) sets (lower
    /// case), so callers cannot override them.
    fn header_names(&self) -> Vec<HeaderName>;

    /// Verifies a received request against the current time.
    ///
    /// # Errors
    /// A [`VerifyError`] saying what is missing or wrong.
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError>;
}

/// Why a received webhook does not verify.
///
/// Messages are lower case, name the header or rule at fault, and never contain a secret or
/// the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A required header is absent.
    #[error("header `{name}` is missing")]
    MissingHeader {
        /// The header name.
        name: &'static str,
    },
    /// None of the header sets a scheme reads is present (for
    /// [`StandardWebhooks`]: neither `webhook-*` nor Svix's `svix-*`).
    #[error("no signature headers: looked for {looked_for}")]
    MissingHeaders {
        /// The headers looked for, in words.
        looked_for: &'static str,
    },
    /// A required header whose name was configured by the caller (for example
    /// [`StripeStyle::header`]) is absent.
    #[error("header `{name}` is missing")]
    MissingCustomHeader {
        /// The header name, in lower case.
        name: String,
    },
    /// A header is present but cannot be read: not visible ASCII, or not in the scheme's
    /// format (no usable signature entry, bad hex or base64, no `t=`).
    #[error("header `{name}` is invalid: {reason}")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The timestamp is not an integer number of unix seconds.
    #[error("header `{name}` has timestamp `{value}`, which is not an integer of unix seconds")]
    InvalidTimestamp {
        /// The header carrying the timestamp.
        name: String,
        /// The received value (at most 32 characters).
        value: String,
    },
    /// The timestamp is further in the past than the tolerance allows (a replay or a very
    /// late delivery).
    #[error(
        "timestamp is too old: {}s in the past, beyond the tolerance of {}s",
        .age.as_secs(),
        .tolerance.as_secs()
    )]
    TooOld {
        /// How far in the past the timestamp is.
        age: Duration,
        /// The tolerance window.
        tolerance: Duration,
    },
    /// The timestamp is further in the future than the tolerance allows.
    #[error(
        "timestamp is too new: {}s in the future, beyond the tolerance of {}s",
        .ahead.as_secs(),
        .tolerance.as_secs()
    )]
    TooNew {
        /// How far in the future the timestamp is.
        ahead: Duration,
        /// The tolerance window.
        tolerance: Duration,
    },
    /// The signature header is well formed but none of its signatures matches any secret:
    /// a wrong secret, or a tampered body, id or timestamp.
    #[error("no signature in header `{name}` matches")]
    NoMatchingSignature {
        /// The signature header.
        name: String,
    },
}

impl VerifyError {
    /// The header this error is about, if it is about one header.
    pub fn header_name(&self) -> Option<&str> {
        match self {
            VerifyError::MissingHeader { name } => Some(name),
            VerifyError::MissingCustomHeader { name }
            | VerifyError::InvalidHeader { name, .. }
            | VerifyError::InvalidTimestamp { name, .. }
            | VerifyError::NoMatchingSignature { name } => Some(name),
            VerifyError::TooOld { .. }
            | VerifyError::TooNew { .. }
            | VerifyError::MissingHeaders { .. } => None,
        }
    }
}

/// A header value from text this crate produced (base64, hex, digits): always valid.
fn ascii_value(text: &str) -> HeaderValue {
    match HeaderValue::from_str(text) {
        Ok(v) => v,
        Err(_) => unreachable!("signatures are printable ASCII"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + Clone + fmt::Debug + SigningScheme>() {}

    #[test]
    fn schemes_are_send_sync_clone_and_object_safe() {
        assert_send_sync::<StandardWebhooks>();
        assert_send_sync::<GitHub>();
        assert_send_sync::<StripeStyle>();
        assert_send_sync::<JidoCompat>();
        let schemes: Vec<Box<dyn SigningScheme>> = vec![
            Box::new(StandardWebhooks::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()),
            Box::new(GitHub::new("s").unwrap()),
            Box::new(StripeStyle::new("s").unwrap()),
            Box::new(JidoCompat::new("s").unwrap()),
        ];
        let names: Vec<_> = schemes.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["standard-webhooks", "github", "stripe", "jido"]);
    }

    #[test]
    fn sign_headers_verify_through_the_trait() {
        let schemes: Vec<Box<dyn SigningScheme>> = vec![
            Box::new(StandardWebhooks::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()),
            Box::new(GitHub::new("s").unwrap()),
            Box::new(StripeStyle::new("s").unwrap()),
            Box::new(JidoCompat::new("s").unwrap()),
        ];
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"a":1}"#;
        for scheme in &schemes {
            let input = SignInput::new("msg_1", now, body, "user.created");
            let headers: HeaderMap = scheme.sign_headers(&input).into_iter().collect();
            let mut names: Vec<_> = headers.keys().cloned().collect();
            let mut declared = scheme.header_names();
            names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            declared.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            assert_eq!(names, declared, "{}", scheme.name());
            for name in &declared {
                assert_eq!(name.as_str(), name.as_str().to_ascii_lowercase());
            }
            assert_eq!(scheme.verify(&headers, body), Ok(()), "{}", scheme.name());
            assert!(scheme.verify(&headers, b"{}").is_err(), "{}", scheme.name());
        }
    }

    #[test]
    fn header_name_of_errors() {
        let e = VerifyError::MissingHeader { name: "webhook-id" };
        assert_eq!(e.header_name(), Some("webhook-id"));
        let e = VerifyError::TooOld {
            age: Duration::from_secs(301),
            tolerance: Duration::from_secs(300),
        };
        assert_eq!(e.header_name(), None);
        assert_eq!(
            e.to_string(),
            "timestamp is too old: 301s in the past, beyond the tolerance of 300s"
        );
    }
}
