//! Entry points for the fuzz targets in `fuzz/` and their regression test
//! (`tests/fuzz_corpus.rs`): thin wrappers that take bytes and headers and reach the
//! crate-private readers and writers of the protocol bindings.
//!
//! **Not part of the API.** Hidden from the docs, outside semver, and free to change or go
//! away in any release. Applications use [`crate::http`] and [`crate::cluster`].

#[cfg(any(feature = "http", feature = "nats"))]
pub use binding::{decode_value, encode_value};

#[cfg(any(feature = "http", feature = "nats"))]
mod binding {
    /// Percent-decodes a `ce-*` header value (CloudEvents HTTP binding, 3.1.3.2).
    ///
    /// # Errors
    /// The rule the value breaks.
    pub fn decode_value(value: &str) -> Result<String, &'static str> {
        crate::binding::decode_value(value).map(|v| v.into_owned())
    }

    /// Percent-encodes what a header value cannot carry.
    pub fn encode_value(value: &str) -> String {
        crate::binding::encode_value(value).into_owned()
    }
}

/// The CloudEvents HTTP binding's writer (its reader is the public
/// [`crate::http::read_signals`]).
#[cfg(feature = "http")]
pub mod http {
    use bytes::Bytes;
    use http::HeaderMap;

    use crate::{ContentMode, Signal};

    /// The headers and body the HTTP adapters send for `signal` in `mode`.
    pub fn encode(signal: &Signal, mode: ContentMode) -> (HeaderMap, Bytes) {
        let encoded = crate::http::binding::encode(signal, mode);
        (encoded.headers, encoded.body)
    }
}

/// The CloudEvents NATS binding of the bridge.
#[cfg(feature = "nats")]
pub mod nats {
    use async_nats::{HeaderMap, HeaderName, HeaderValue};
    use bytes::Bytes;

    use crate::{
        cluster::codec::{self, Decoded, OwnOrigin},
        ContentMode, Signal,
    };

    /// Reads a message published under `prefix` as the bridge does, for a node whose id is
    /// `own_origin`: `Ok(None)` for this node's own echo. Header names and values that NATS
    /// cannot carry (a `:`, control characters, a line break) are left out.
    ///
    /// # Errors
    /// Why the message is not a signal.
    pub fn decode(
        subject: &str,
        headers: Option<&[(&str, &str)]>,
        payload: &[u8],
        prefix: &str,
        own_origin: &str,
    ) -> Result<Option<Signal>, String> {
        let headers = headers.map(|pairs| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                if let (Ok(name), Ok(value)) =
                    (name.parse::<HeaderName>(), value.parse::<HeaderValue>())
                {
                    map.append(name, value);
                }
            }
            map
        });
        match codec::decode(
            subject,
            headers.as_ref(),
            payload,
            prefix,
            &OwnOrigin::new(own_origin),
        ) {
            Ok(Decoded::Echo) => Ok(None),
            Ok(Decoded::Signal(signal)) => Ok(Some(signal)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The headers (binary mode only: name and first value) and payload the publisher sends
    /// for `signal` from the node `origin`.
    pub fn encode(
        signal: &Signal,
        mode: ContentMode,
        origin: &str,
    ) -> (Option<Vec<(String, String)>>, Bytes) {
        let (headers, payload) = codec::encode(signal, mode, origin);
        let headers = headers.map(|map| {
            map.iter()
                .filter_map(|(name, values)| {
                    let value = values.first()?;
                    Some((name.to_string(), value.as_str().to_owned()))
                })
                .collect()
        });
        (headers, payload)
    }
}
