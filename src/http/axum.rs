//! Extractors for [axum](https://docs.rs/axum/0.8) 0.8 handlers (feature `axum`): read the
//! CloudEvents of a request with [`read_signals`], after checking its signature on the raw
//! body for [`VerifiedCloudEvents`].
//!
//! | Extractor | Yields | Rejects with |
//! |---|---|---|
//! | [`CloudEvents`] | the request's signals | 400 and the [`ReadError`] (413 past [`MAX_BODY_LEN`](super::MAX_BODY_LEN) or [`MAX_BATCH_LEN`](super::MAX_BATCH_LEN)) |
//! | [`VerifiedCloudEvents`] | the signals of a request whose signature verifies | 401 and the [`VerifyError`] before anything is parsed; then as [`CloudEvents`] |
//!
//! Both take the body, so each is the handler's last argument; a handler that wants a header
//! too (`webhook-id`, to deduplicate) takes a [`HeaderMap`](http::HeaderMap) before it. The
//! body is read under axum's body limit first (2 MB unless changed with
//! `axum::extract::DefaultBodyLimit`; past it axum's own 413). Rejection bodies are the
//! error's message as plain text.
//!
//! To continue each signal's trace in the handler, handle it in
//! [`receive_span(&signal, "http")`](crate::trace::receive_span): with the `opentelemetry`
//! feature that span's parent is the signal's `traceparent`.
//!
//! The verifier is the application's state, or part of it: [`VerifiedCloudEvents`] reads a
//! [`Verifier`] from the router's state through [`FromRef`], so either give the router a
//! `Verifier` as its state, or implement `FromRef<YourState> for Verifier`. Any
//! [`SigningScheme`] makes a verifier: the crate's ([`StandardWebhooks`], which also accepts
//! Svix's `svix-*` headers, [`GitHub`], [`StripeStyle`], [`JidoCompat`]) or one of your own.
//!
//! [`StandardWebhooks`]: super::signing::StandardWebhooks
//! [`GitHub`]: super::signing::GitHub
//! [`StripeStyle`]: super::signing::StripeStyle
//! [`JidoCompat`]: super::signing::JidoCompat
//!
//! # Example
//! ```
//! use axum::{routing::post, Router};
//! use signal_bus::http::{
//!     axum::{CloudEvents, VerifiedCloudEvents, Verifier},
//!     signing::StandardWebhooks,
//! };
//!
//! // Anyone may post CloudEvents here; the answer to a bad request is 400 and why.
//! async fn events(CloudEvents(signals): CloudEvents) -> String {
//!     format!("read {} signals", signals.len())
//! }
//!
//! // Only signed webhooks get through: 401 for a bad signature, checked before parsing.
//! async fn hook(VerifiedCloudEvents(signals): VerifiedCloudEvents) -> &'static str {
//!     for signal in &signals {
//!         println!("{} from {}", signal.ty(), signal.source());
//!     }
//!     "ok"
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::new(StandardWebhooks::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?);
//! let app: Router = Router::new()
//!     .route("/events", post(events))
//!     .route("/hook", post(hook))
//!     .with_state(verifier);
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! With an application state of its own, the verifier is one of its fields:
//! ```
//! use axum::extract::FromRef;
//! use signal_bus::http::axum::Verifier;
//!
//! #[derive(Clone)]
//! struct AppState {
//!     verifier: Verifier,
//!     // database pools, ...
//! }
//!
//! impl FromRef<AppState> for Verifier {
//!     fn from_ref(state: &AppState) -> Verifier {
//!         state.verifier.clone() // an `Arc` inside: cheap
//!     }
//! }
//! ```

use std::{fmt, sync::Arc};

use axum_core::{
    extract::{rejection::BytesRejection, FromRef, FromRequest, Request},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::StatusCode;

use super::{
    read_signals,
    signing::{SigningScheme, VerifyError},
    ReadError,
};
use crate::Signal;

/// The signals of a request, read with [`read_signals`]: structured, binary or batch.
///
/// Rejects a request that holds none with [`CloudEventsRejection`]: 400 and the reader's
/// message. See the [module](self) for an example.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvents(pub Vec<Signal>);

/// The signals of a request whose signature verifies, with the [`Verifier`] of the router's
/// state, on the exact body received; read as [`CloudEvents`] reads them once verified.
///
/// A signature that does not verify is rejected with 401 and the [`VerifyError`] (which
/// names the header at fault and never shows a secret), and the body is not parsed. See the
/// [module](self) for an example.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedCloudEvents(pub Vec<Signal>);

/// The signing scheme [`VerifiedCloudEvents`] checks requests with, found in the router's
/// state through [`FromRef`]. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Verifier(Arc<dyn SigningScheme>);

impl Verifier {
    /// A verifier checking requests with `scheme`.
    pub fn new(scheme: impl SigningScheme) -> Verifier {
        Verifier(Arc::new(scheme))
    }

    /// The scheme it checks with.
    pub fn scheme(&self) -> &dyn SigningScheme {
        &*self.0
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The schemes' own Debug output redacts their secrets.
        f.debug_tuple("Verifier").field(&self.0).finish()
    }
}

/// Why [`CloudEvents`] or [`VerifiedCloudEvents`] refused a request. As a response: the
/// status of [`status`](Self::status) and the message as plain text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloudEventsRejection {
    /// The body could not be read: axum's rejection, with its own status (413 past the body
    /// limit).
    #[error(transparent)]
    Body(#[from] BytesRejection),
    /// The signature does not verify: 401.
    #[error("signature does not verify: {0}")]
    Unverified(VerifyError),
    /// The request holds no valid signals: 400, or 413 for a body or batch beyond the
    /// reader's limits.
    #[error(transparent)]
    Unreadable(#[from] ReadError),
}

impl CloudEventsRejection {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        match self {
            CloudEventsRejection::Body(e) => e.status(),
            CloudEventsRejection::Unverified(_) => StatusCode::UNAUTHORIZED,
            CloudEventsRejection::Unreadable(
                ReadError::BodyTooLarge { .. } | ReadError::TooManySignals { .. },
            ) => StatusCode::PAYLOAD_TOO_LARGE,
            CloudEventsRejection::Unreadable(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for CloudEventsRejection {
    fn into_response(self) -> Response {
        (self.status(), self.to_string()).into_response()
    }
}

/// The headers and the body of a request, under axum's body limit.
async fn take<S: Send + Sync>(
    mut req: Request,
    state: &S,
) -> Result<(http::HeaderMap, Bytes), CloudEventsRejection> {
    // The body extractor reads the limit from the extensions, not the headers.
    let headers = std::mem::take(req.headers_mut());
    let body = Bytes::from_request(req, state).await?;
    Ok((headers, body))
}

impl<S: Send + Sync> FromRequest<S> for CloudEvents {
    type Rejection = CloudEventsRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (headers, body) = take(req, state).await?;
        Ok(CloudEvents(read_signals(&headers, &body)?))
    }
}

impl<S> FromRequest<S> for VerifiedCloudEvents
where
    S: Send + Sync,
    Verifier: FromRef<S>,
{
    type Rejection = CloudEventsRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Verifier::from_ref(state);
        let (headers, body) = take(req, state).await?;
        verifier
            .0
            .verify(&headers, &body)
            .map_err(CloudEventsRejection::Unverified)?;
        Ok(VerifiedCloudEvents(read_signals(&headers, &body)?))
    }
}
