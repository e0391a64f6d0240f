//! Turning an HTTP response or transport error into a delivery outcome.

use std::{error::Error as _, time::Duration};

use chrono::{DateTime, Utc};
use http::{header::RETRY_AFTER, HeaderMap};

use super::{egress::EgressRefused, endpoint::Endpoint};
use crate::{DeliveryError, ErrorKind};

/// Longest response-body excerpt kept in an error.
pub const MAX_BODY_EXCERPT: usize = 256;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// How much of a successful response is read so its connection can be reused.
const MAX_DRAIN: usize = 64 * 1024;

/// 2xx is delivered; anything else becomes [`DeliveryError::Http`] with the status, a short
/// body excerpt and a parsed `Retry-After`.
pub(crate) async fn check(mut response: reqwest::Response) -> Result<(), DeliveryError> {
    let status = response.status();
    if status.is_success() {
        let mut read = 0;
        while let Ok(Some(chunk)) = response.chunk().await {
            read += chunk.len();
            if read > MAX_DRAIN {
                break;
            }
        }
        return Ok(());
    }
    let retry_after = retry_after(response.headers(), Utc::now());
    let mut body = Vec::new();
    while body.len() < MAX_BODY_EXCERPT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    Err(DeliveryError::Http {
        status: status.as_u16(),
        body: excerpt(&body),
        retry_after,
    })
}

/// A printable, bounded excerpt of a response body.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_BODY_EXCERPT)]);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    out = out.trim().to_owned();
    if body.len() > MAX_BODY_EXCERPT {
        out.push('…');
    }
    out
}

/// `Retry-After` as delay seconds or an HTTP date, capped at a day.
pub(crate) fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = DateTime::parse_from_rfc2822(value)
            .ok()?
            .with_timezone(&Utc);
        (at - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// A transport failure: timeouts and connect errors are retryable; a refused address (the
/// egress guard) is permanent. The error keeps reqwest's error as its `source()`, stripped of
/// its URL (which would show the query and any credentials); the message names the endpoint
/// without them.
pub(crate) fn transport(
    error: reqwest::Error,
    timeout: Duration,
    endpoint: &Endpoint,
) -> DeliveryError {
    if error.is_timeout() {
        return DeliveryError::Timeout { after: timeout };
    }
    let error = error.without_url();
    let mut source = error.source();
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<EgressRefused>() {
            let message = refused.to_string();
            return DeliveryError::transport(ErrorKind::Permanent, message, error);
        }
        source = s.source();
    }
    let what = if error.is_connect() {
        "cannot connect to"
    } else {
        "request failed for"
    };
    // The innermost cause says most (e.g. "Connection refused (os error 111)").
    let message = match error.source() {
        Some(_) => format!("{what} {endpoint}: {}", crate::error::innermost(&error)),
        None => format!("{what} {endpoint}"),
    };
    DeliveryError::transport(ErrorKind::Retryable, message, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(120)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:30 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:00:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("9999999999"));
        assert_eq!(retry_after(&h, now), Some(MAX_RETRY_AFTER));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn excerpts_are_bounded_and_printable() {
        assert_eq!(excerpt(b"  bad\r\ninput "), "bad  input");
        let long = vec![b'x'; 1000];
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), MAX_BODY_EXCERPT + 1);
        assert!(e.ends_with('…'));
    }
}
