//! GitHub-style signatures: `X-Hub-Signature-256: sha256=<hex>`.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{
    ascii_value,
    util::{self, Key, Name},
    SignInput, SigningScheme, VerifyError,
};
use crate::ConfigError;

const SIGNATURE: &str = "x-hub-signature-256";

/// GitHub's webhook signature: `X-Hub-Signature-256: sha256=<lower hex HMAC-SHA256(secret,
/// body)>`.
///
/// The secret is used as bytes. The signature covers only the body: there is no timestamp,
/// so this scheme cannot detect replays.
///
/// # Example
/// ```
/// use signal_bus::http::signing::GitHub;
///
/// let github = GitHub::new("It's a Secret to Everybody")?;
/// let value = github.sign(b"Hello, World!");
/// assert_eq!(
///     value,
///     "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
/// );
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-hub-signature-256", value.parse()?);
/// assert!(github.verify(&headers, b"Hello, World!").is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct GitHub {
    key: Key,
}

impl fmt::Debug for GitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHub").field("secret", &self.key).finish()
    }
}

impl GitHub {
    /// A signer and verifier with this secret, used as bytes.
    ///
    /// # Errors
    /// A [`ConfigError`] when the secret is empty.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let secret = secret.as_ref();
        util::non_empty_secret(secret)?;
        Ok(GitHub {
            key: Key::new(secret),
        })
    }

    /// The `X-Hub-Signature-256` value for a body: `sha256=<lower hex>`.
    pub fn sign(&self, body: &[u8]) -> String {
        format!("sha256={}", util::encode_hex(&self.key.tag(&[body])))
    }

    /// Verifies a received request: the `X-Hub-Signature-256` header must be `sha256=` and
    /// the hex HMAC of the body (either case), compared in constant time.
    ///
    /// # Errors
    /// A [`VerifyError`]: the header is missing, not in the `sha256=<hex>` form, or does not
    /// match.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        let value = util::header_str(headers, Name::Static(SIGNATURE))?;
        let received = value
            .strip_prefix("sha256=")
            .and_then(util::decode_hex)
            .ok_or_else(|| VerifyError::InvalidHeader {
                name: SIGNATURE.to_owned(),
                reason: "it is not `sha256=<hex>`",
            })?;
        if util::tags_equal(&self.key.tag(&[body]), &received) {
            Ok(())
        } else {
            Err(VerifyError::NoMatchingSignature {
                name: SIGNATURE.to_owned(),
            })
        }
    }
}

impl SigningScheme for GitHub {
    fn name(&self) -> &'static str {
        "github"
    }

    /// `x-hub-signature-256` only.
    fn sign_headers(&self, input: &SignInput<'_>) -> Vec<(HeaderName, HeaderValue)> {
        vec![(
            HeaderName::from_static(SIGNATURE),
            ascii_value(&self.sign(input.body)),
        )]
    }

    fn header_names(&self) -> Vec<HeaderName> {
        vec![HeaderName::from_static(SIGNATURE)]
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        GitHub::verify(self, headers, body)
    }
}
