//! Signals as NATS messages (the CloudEvents NATS binding) and back.
//!
//! Structured mode: the payload is the signal's CloudEvents JSON. Binary mode: attributes in
//! `ce-*` headers (percent-encoded like the HTTP binding), `content-type` from
//! `datacontenttype`, the data as payload. Either way the sending node's id travels in the
//! [`ORIGIN_HEADER`] header, outside the event, so other CloudEvents consumers see it
//! unchanged.

use async_nats::{HeaderMap, HeaderName};
use bytes::Bytes;

use crate::{
    binding::{binary_body, encode_value, signal_from_binary, BinaryError},
    ContentMode, Signal,
};

/// The header carrying the id of the node that published a signal to NATS.
pub const ORIGIN_HEADER: &str = "signal-bus-origin";

/// The extension a bridge adds to every signal it republishes into its bus: the id of the
/// node that sent it to NATS (`external` when the sender was not a signal-bus node). The
/// NATS publisher never sends a signal carrying it back out, so bridged signals do not loop.
pub const ORIGIN_EXTENSION: &str = "signalorigin";

/// The origin of signals that came without an [`ORIGIN_HEADER`].
pub const EXTERNAL_ORIGIN: &str = "external";

const CONTENT_TYPE: HeaderName = HeaderName::from_static("content-type");
const ORIGIN: HeaderName = HeaderName::from_static(ORIGIN_HEADER);

/// The headers and payload of the message for `signal`.
pub(crate) fn encode(signal: &Signal, mode: ContentMode, origin: &str) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(ORIGIN, origin);
    let payload = match mode {
        ContentMode::Binary => {
            let mut put = |name: &'static str, value: &str| {
                headers.insert(HeaderName::from_static(name), encode_value(value).as_ref());
            };
            put("ce-specversion", signal.specversion());
            put("ce-id", signal.id());
            put("ce-source", signal.source());
            put("ce-type", signal.ty());
            if let Some(s) = signal.subject() {
                put("ce-subject", s);
            }
            put("ce-time", &signal.time_rfc3339());
            if let Some(s) = signal.dataschema() {
                put("ce-dataschema", s);
            }
            for (name, value) in signal.extensions() {
                headers.insert(
                    format!("ce-{name}"),
                    encode_value(&value.to_string()).as_ref(),
                );
            }
            if let Some(ct) = signal.datacontenttype() {
                headers.insert(CONTENT_TYPE, ct);
            }
            binary_body(signal)
        }
        // `Structured` and any later mode.
        _ => signal.to_json_bytes(),
    };
    (headers, payload)
}

/// What a message on the bridge's subjects turned out to be.
// Built once per message and moved straight into `publish`: boxing would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A signal this node published itself.
    Echo,
    /// A signal from another node (or another publisher), with [`ORIGIN_EXTENSION`] set.
    Signal(Signal),
}

/// Why a message is not a signal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedMessage {
    /// The payload is not CloudEvents JSON.
    #[error("payload is not a CloudEvents JSON object: {0}")]
    Json(String),
    /// Binary-mode headers or data that do not make a signal.
    #[error("binary-mode message is not a signal: {0}")]
    Binary(String),
    /// The structured form is JSON but not a valid signal.
    #[error("payload is not a valid signal: {0}")]
    Signal(crate::SignalError),
    /// The subject is not `<prefix>.<type>` for the signal's type.
    #[error("subject `{subject}` does not match the signal type `{ty}` (expected `{expected}`)")]
    Subject {
        /// The message subject.
        subject: String,
        /// The signal's type.
        ty: String,
        /// The subject the type belongs on.
        expected: String,
    },
}

/// Reads a message published under `prefix`. Signals whose origin is `own_origin` are
/// echoes, recognised before the payload is parsed.
pub(crate) fn decode(
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    prefix: &str,
    own_origin: &str,
) -> Result<Decoded, MalformedMessage> {
    let origin = headers
        .and_then(|h| h.get(ORIGIN_HEADER))
        .map(|v| v.as_str());
    if origin == Some(own_origin) {
        return Ok(Decoded::Echo);
    }
    let origin = origin.unwrap_or(EXTERNAL_ORIGIN);
    let binary = headers.filter(|h| {
        h.iter()
            .any(|(name, _)| AsRef::<str>::as_ref(name).eq_ignore_ascii_case("ce-specversion"))
    });
    let signal = match binary {
        Some(headers) => {
            let lower: Vec<(String, &str)> = headers
                .iter()
                .filter_map(|(name, values)| {
                    let name: &str = name.as_ref();
                    let value = values.first()?.as_str();
                    Some((name.to_ascii_lowercase(), value))
                })
                .collect();
            let content_type = lower
                .iter()
                .find(|(n, _)| n == "content-type")
                .map(|(_, v)| *v);
            let attributes = lower
                .iter()
                .filter_map(|(n, v)| Some((n.strip_prefix("ce-")?, *v)));
            signal_from_binary(
                attributes,
                content_type,
                payload,
                Some((ORIGIN_EXTENSION, origin)),
            )
            .map_err(|e| match e {
                BinaryError::Signal(e) => MalformedMessage::Signal(e),
                other => MalformedMessage::Binary(other.to_string()),
            })?
        }
        None => {
            let mut value: serde_json::Value = serde_json::from_slice(payload)
                .map_err(|e| MalformedMessage::Json(e.to_string()))?;
            let Some(map) = value.as_object_mut() else {
                return Err(MalformedMessage::Json("not a JSON object".to_owned()));
            };
            map.insert(ORIGIN_EXTENSION.to_owned(), origin.into());
            Signal::from_json_value(value).map_err(MalformedMessage::Signal)?
        }
    };
    let expected_len = prefix.len() + 1 + signal.ty().len();
    let matches = subject.len() == expected_len
        && subject.starts_with(prefix)
        && subject.as_bytes()[prefix.len()] == b'.'
        && subject.ends_with(signal.ty());
    if !matches {
        return Err(MalformedMessage::Subject {
            subject: subject.to_owned(),
            ty: signal.ty().to_owned(),
            expected: super::subject_for(prefix, signal.ty()),
        });
    }
    Ok(Decoded::Signal(signal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Signal {
        Signal::builder("user.created", "/a b")
            .id("1")
            .subject("ü")
            .time_str("2024-01-01T00:00:00Z")
            .data(json!({"k": 1}))
            .extension("tenant", "acme")
            .build()
            .unwrap()
    }

    fn round_trip(mode: ContentMode) -> Signal {
        let (headers, payload) = encode(&sample(), mode, "node-a");
        match decode(
            "signals.user.created",
            Some(&headers),
            &payload,
            "signals",
            "node-b",
        )
        .unwrap()
        {
            Decoded::Signal(s) => s,
            Decoded::Echo => panic!("not an echo"),
        }
    }

    #[test]
    fn structured_round_trip_keeps_everything_and_adds_the_origin() {
        let back = round_trip(ContentMode::Structured);
        let expected = sample().with_extension(ORIGIN_EXTENSION, "node-a").unwrap();
        assert_eq!(back, expected);
    }

    #[test]
    fn binary_round_trip() {
        let (headers, payload) = encode(&sample(), ContentMode::Binary, "node-a");
        assert_eq!(headers.get("ce-source").unwrap().as_str(), "/a%20b");
        assert_eq!(
            headers.get("content-type").unwrap().as_str(),
            "application/json"
        );
        assert_eq!(&payload[..], br#"{"k":1}"#);
        let back = round_trip(ContentMode::Binary);
        let expected = sample().with_extension(ORIGIN_EXTENSION, "node-a").unwrap();
        assert_eq!(back, expected);
    }

    #[test]
    fn own_signals_are_echoes_and_foreign_ones_are_external() {
        let (headers, payload) = encode(&sample(), ContentMode::Structured, "node-a");
        let d = decode(
            "signals.user.created",
            Some(&headers),
            &payload,
            "signals",
            "node-a",
        );
        assert!(matches!(d, Ok(Decoded::Echo)));
        let d = decode("signals.user.created", None, &payload, "signals", "node-a").unwrap();
        let Decoded::Signal(s) = d else {
            panic!("a signal")
        };
        assert_eq!(
            s.extension(ORIGIN_EXTENSION).unwrap().as_str(),
            Some(EXTERNAL_ORIGIN)
        );
    }

    #[test]
    fn malformed_messages_say_why() {
        let payload = sample().to_json_bytes();
        let cases: Vec<(&str, &[u8], &str)> = vec![
            (
                "signals.x",
                b"not json",
                "payload is not a CloudEvents JSON object",
            ),
            ("signals.x", b"[1]", "not a JSON object"),
            (
                "signals.x",
                br#"{"specversion":"1.0","id":"1","source":"/s"}"#,
                "`type` is required",
            ),
            (
                "signals.user.deleted",
                &payload,
                "does not match the signal type `user.created`",
            ),
            ("other.user.created", &payload, "does not match"),
        ];
        for (subject, body, why) in cases {
            let e = decode(subject, None, body, "signals", "me").unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("ce-specversion", "1.0");
        let e = decode("signals.x", Some(&headers), b"", "signals", "me").unwrap_err();
        assert!(e.to_string().contains("`type` is required"), "{e}");
    }
}
