//! Helpers shared by the schemes: the keyed HMAC state, hex, timestamps, header access.

use std::{fmt, time::Duration};

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::VerifyError;
use crate::ConfigError;

type HmacSha256 = Hmac<Sha256>;

/// The default tolerance window of the timestamped schemes: 5 minutes, past and future.
pub(super) const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The length of an HMAC-SHA256 tag.
pub(super) const TAG_LEN: usize = 32;

/// An HMAC-SHA256 state already keyed with a secret: cloned for every signature, so the key
/// schedule runs once. Its `Debug` never shows the key.
#[derive(Clone)]
pub(super) struct Key {
    mac: HmacSha256,
}

impl Key {
    /// Keys an HMAC-SHA256 state with `secret` (any length is valid for HMAC).
    pub(super) fn new(secret: &[u8]) -> Self {
        let mac = match HmacSha256::new_from_slice(secret) {
            Ok(mac) => mac,
            // HMAC hashes long keys and pads short ones: every length is accepted.
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        Key { mac }
    }

    /// The HMAC-SHA256 tag of the concatenation of `parts`.
    pub(super) fn tag(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        let bytes = mac.finalize().into_bytes();
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&bytes);
        out
    }

    /// `"{timestamp}.{body}"`, the content signed by the Stripe-style and Jido schemes.
    pub(super) fn tag_timestamped(&self, timestamp: i64, body: &[u8]) -> [u8; TAG_LEN] {
        let ts = timestamp.to_string();
        self.tag(&[ts.as_bytes(), b".", body])
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Prints `[redacted; n]` for a list of `n` keys.
pub(super) struct RedactedList(pub(super) usize);

impl fmt::Debug for RedactedList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted; {}]", self.0)
    }
}

/// Whether a received tag equals the expected one, in constant time (for equal lengths).
pub(super) fn tags_equal(expected: &[u8; TAG_LEN], received: &[u8]) -> bool {
    expected.as_slice().ct_eq(received).into()
}

/// Lower-case hex of `bytes`.
pub(super) fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes hex (either case); `None` on an odd length or a non-hex digit.
pub(super) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

/// The current time in unix seconds.
pub(super) fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Parses a unix timestamp: optional `-`, then 1 to 19 ASCII digits (no `+`, no spaces).
pub(super) fn parse_timestamp(header: &str, raw: &str) -> Result<i64, VerifyError> {
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    let valid =
        !digits.is_empty() && digits.len() <= 19 && digits.bytes().all(|b| b.is_ascii_digit());
    match raw.parse::<i64>() {
        Ok(ts) if valid => Ok(ts),
        _ => Err(VerifyError::InvalidTimestamp {
            name: header.to_owned(),
            value: shorten(raw, 32),
        }),
    }
}

/// Checks that `timestamp` is within `tolerance` of `now`, both ways.
pub(super) fn check_timestamp(
    timestamp: i64,
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let diff = i128::from(now) - i128::from(timestamp);
    let secs = |d: i128| Duration::from_secs(u64::try_from(d.unsigned_abs()).unwrap_or(u64::MAX));
    if diff >= 0 {
        let age = secs(diff);
        if age > tolerance {
            return Err(VerifyError::TooOld { age, tolerance });
        }
    } else {
        let ahead = secs(diff);
        if ahead > tolerance {
            return Err(VerifyError::TooNew { ahead, tolerance });
        }
    }
    Ok(())
}

/// A received timestamped signature, as the Standard Webhooks, Stripe-style and Jido schemes
/// read it: the signed content is `"{msg_id}.{ts}.{body}"` (Standard Webhooks) or
/// `"{ts}.{body}"` (the others), with `ts` the timestamp text as received.
pub(super) struct Timestamped<'a> {
    /// The message id signed before the timestamp, if the scheme signs one.
    pub(super) msg_id: Option<&'a str>,
    /// The timestamp as received (it is signed as sent) and already parsed.
    pub(super) raw_ts: &'a str,
    /// `raw_ts` parsed with [`parse_timestamp`].
    pub(super) timestamp: i64,
    /// The request body.
    pub(super) body: &'a [u8],
    /// The header named by a [`VerifyError::NoMatchingSignature`].
    pub(super) signature_header: &'a str,
}

impl Timestamped<'_> {
    /// The verification core of the timestamped schemes: checks the timestamp against
    /// `now` and `tolerance`, then reads the candidate signatures (after the window check,
    /// so a stale request is reported as stale) and accepts when any candidate equals the
    /// tag of any key, each comparison in constant time.
    pub(super) fn verify(
        &self,
        keys: &[Key],
        now: i64,
        tolerance: Duration,
        candidates: impl FnOnce() -> Result<Vec<Vec<u8>>, VerifyError>,
    ) -> Result<(), VerifyError> {
        check_timestamp(self.timestamp, now, tolerance)?;
        let received = candidates()?;
        let ts = self.raw_ts.as_bytes();
        let matched = keys.iter().any(|key| {
            let expected = match self.msg_id {
                Some(id) => key.tag(&[id.as_bytes(), b".", ts, b".", self.body]),
                None => key.tag(&[ts, b".", self.body]),
            };
            received.iter().any(|sig| tags_equal(&expected, sig))
        });
        if matched {
            Ok(())
        } else {
            Err(VerifyError::NoMatchingSignature {
                name: self.signature_header.to_owned(),
            })
        }
    }
}

/// Where a required header's name comes from, so a missing one is reported with the right
/// variant.
#[derive(Clone, Copy)]
pub(super) enum Name<'n> {
    /// A fixed name.
    Static(&'static str),
    /// A name configured by the caller.
    Configured(&'n HeaderName),
}

impl Name<'_> {
    fn as_str(&self) -> &str {
        match self {
            Name::Static(s) => s,
            Name::Configured(h) => h.as_str(),
        }
    }
}

/// The value of a required header as text: the first one if repeated.
pub(super) fn header_str<'h>(
    headers: &'h HeaderMap,
    name: Name<'_>,
) -> Result<&'h str, VerifyError> {
    let value = headers.get(name.as_str()).ok_or_else(|| match name {
        Name::Static(name) => VerifyError::MissingHeader { name },
        Name::Configured(h) => VerifyError::MissingCustomHeader {
            name: h.as_str().to_owned(),
        },
    })?;
    value.to_str().map_err(|_| VerifyError::InvalidHeader {
        name: name.as_str().to_owned(),
        reason: "its value is not visible ASCII",
    })
}

/// Rejects an empty secret (used as bytes by GitHub, Stripe-style and Jido).
pub(super) fn non_empty_secret(secret: &[u8]) -> Result<(), ConfigError> {
    if secret.is_empty() {
        Err(ConfigError::invalid(
            "secret",
            "<empty>",
            "must not be empty",
        ))
    } else {
        Ok(())
    }
}

/// Parses a header name chosen by the caller (normalised to lower case).
pub(super) fn configured_header(
    option: &'static str,
    name: &str,
) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        ConfigError::invalid(
            option,
            shorten(name, 64).escape_debug(),
            "must be a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~, not empty)",
        )
    })
}

/// At most `max` characters of `text`, with `…` when cut.
pub(super) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip_and_rejects() {
        let all: Vec<u8> = (0..=255).collect();
        let hex = encode_hex(&all);
        assert_eq!(&hex[..8], "00010203");
        assert_eq!(&hex[hex.len() - 4..], "feff");
        assert_eq!(decode_hex(&hex).unwrap(), all);
        assert_eq!(decode_hex("ABcd").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(decode_hex("").unwrap(), Vec::<u8>::new());
        assert!(decode_hex("abc").is_none());
        assert!(decode_hex("zz").is_none());
        assert!(decode_hex("+1").is_none());
    }

    #[test]
    fn timestamps_parse_strictly() {
        assert_eq!(parse_timestamp("t", "1614265330"), Ok(1_614_265_330));
        assert_eq!(parse_timestamp("t", "-5"), Ok(-5));
        for bad in [
            "",
            "-",
            "+5",
            " 5",
            "5 ",
            "1.5",
            "abc",
            "99999999999999999999",
            "0x10",
        ] {
            assert!(
                matches!(
                    parse_timestamp("t", bad),
                    Err(VerifyError::InvalidTimestamp { .. })
                ),
                "{bad:?} parsed"
            );
        }
    }

    #[test]
    fn tolerance_is_inclusive_and_overflow_free() {
        let tol = DEFAULT_TOLERANCE;
        assert!(check_timestamp(1000, 1300, tol).is_ok());
        assert!(check_timestamp(1300, 1000, tol).is_ok());
        assert!(matches!(
            check_timestamp(1000, 1301, tol),
            Err(VerifyError::TooOld { .. })
        ));
        assert!(matches!(
            check_timestamp(1301, 1000, tol),
            Err(VerifyError::TooNew { .. })
        ));
        assert!(matches!(
            check_timestamp(i64::MIN, i64::MAX, tol),
            Err(VerifyError::TooOld { .. })
        ));
        assert!(matches!(
            check_timestamp(i64::MAX, i64::MIN, tol),
            Err(VerifyError::TooNew { .. })
        ));
        assert!(check_timestamp(5, 5, Duration::ZERO).is_ok());
    }

    #[test]
    fn keyed_state_is_reused_consistently() {
        let key = Key::new(b"k");
        assert_eq!(key.tag(&[b"ab", b"c"]), key.tag(&[b"abc"]));
        assert_ne!(key.tag(&[b"abc"]), Key::new(b"j").tag(&[b"abc"]));
        assert_eq!(format!("{key:?}"), "[redacted]");
    }

    #[test]
    fn shorten_cuts_on_char_boundaries() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("ééé", 2), "éé…");
    }
}
