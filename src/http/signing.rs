//! Webhook signing schemes: pure signers and verifiers, usable by senders and receivers.
//!
//! CONTRACT (filled in by the signing work): every scheme implements [`SigningScheme`].

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

/// What a signature covers for one request.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SignInput<'a> {
    /// The message id (the signal id unless mapped); never contains `.`.
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A required header is absent.
    #[error("header `{name}` is missing")]
    MissingHeader {
        /// The header name.
        name: &'static str,
    },
}
