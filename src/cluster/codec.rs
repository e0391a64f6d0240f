//! Signals as NATS messages (the CloudEvents NATS binding) and back.
//!
//! Structured mode: the payload is the signal's CloudEvents JSON, no headers. Binary mode:
//! attributes in `ce-*` headers (percent-encoded like the HTTP binding), `content-type` from
//! `datacontenttype`, the data as payload. Either way the sending node's id travels as the
//! [`ORIGIN_EXTENSION`] extension attribute: first member of the JSON, or the
//! `ce-signalorigin` header.

use async_nats::{HeaderMap, HeaderName};
use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    binding::{binary_body, binary_content_type, encode_value, signal_from_headers, BinaryError},
    ContentMode, Signal,
};

/// The extension attribute carrying the id of the node that published a signal to NATS.
/// Every signal a bridge republishes into its bus has it (`external` when the sender was not
/// a signal-bus node), and the NATS publisher never sends a signal carrying it back out, so
/// bridged signals do not loop.
pub const ORIGIN_EXTENSION: &str = "signalorigin";

/// The origin of signals that came without an [`ORIGIN_EXTENSION`].
pub const EXTERNAL_ORIGIN: &str = "external";

const CONTENT_TYPE: HeaderName = HeaderName::from_static("content-type");
/// How every structured message this crate sends begins, before the origin's JSON string.
const ORIGIN_MEMBER: &[u8] = b"{\"signalorigin\":";

/// Writes `s` as a JSON string.
fn put_json_str(out: &mut BytesMut, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.put_u8(b'"');
        out.put_slice(s.as_bytes());
        out.put_u8(b'"');
    } else {
        // Serializing a string cannot fail.
        out.put_slice(&serde_json::to_vec(s).unwrap_or_default());
    }
}

/// The headers (binary mode only) and payload of the message for `signal`.
pub(crate) fn encode(
    signal: &Signal,
    mode: ContentMode,
    origin: &str,
) -> (Option<HeaderMap>, Bytes) {
    match mode {
        ContentMode::Binary => {
            let mut headers = HeaderMap::new();
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
            put("ce-signalorigin", origin);
            for (name, value) in signal.extensions() {
                headers.insert(
                    format!("ce-{name}"),
                    encode_value(&value.to_string()).as_ref(),
                );
            }
            if let Some(ct) = binary_content_type(signal) {
                headers.insert(CONTENT_TYPE, ct);
            }
            (Some(headers), binary_body(signal))
        }
        // `Structured` and any later mode: the signal's JSON (serialized once and cached, so
        // retries and other targets reuse it) with the origin spliced in as its first member.
        _ => {
            let json = signal.to_json_bytes();
            let mut out =
                BytesMut::with_capacity(json.len() + ORIGIN_MEMBER.len() + origin.len() + 3);
            out.put_slice(ORIGIN_MEMBER);
            put_json_str(&mut out, origin);
            out.put_u8(b',');
            out.put_slice(json.get(1..).unwrap_or_default());
            (None, out.freeze())
        }
    }
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
    /// The payload is not a signal in CloudEvents JSON (not JSON, or not a valid signal):
    /// the JSON error, also returned by [`source()`](std::error::Error::source).
    #[error("payload is not a CloudEvents JSON signal: {0}")]
    Json(#[source] serde_json::Error),
    /// Binary-mode headers or data that do not make a signal.
    #[error("binary-mode message is not a signal: {0}")]
    Binary(String),
    /// The binary-mode attributes do not make a valid signal.
    #[error("message is not a valid signal: {0}")]
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

/// This node's id, and how its structured messages begin (to spot echoes unparsed).
#[derive(Debug, Clone)]
pub(crate) struct OwnOrigin {
    id: String,
    head: Bytes,
}

impl OwnOrigin {
    pub(crate) fn new(id: &str) -> OwnOrigin {
        let mut head = BytesMut::with_capacity(ORIGIN_MEMBER.len() + id.len() + 2);
        head.put_slice(ORIGIN_MEMBER);
        put_json_str(&mut head, id);
        OwnOrigin {
            id: id.to_owned(),
            head: head.freeze(),
        }
    }

    /// Whether a structured payload begins with this node's origin, as this crate writes it.
    fn starts(&self, payload: &[u8]) -> bool {
        payload.starts_with(&self.head) && matches!(payload.get(self.head.len()), Some(b',' | b'}'))
    }
}

/// Reads a message published under `prefix`. This node's own signals are echoes,
/// recognised before the payload is parsed.
pub(crate) fn decode(
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    prefix: &str,
    own: &OwnOrigin,
) -> Result<Decoded, MalformedMessage> {
    let own_origin = own.id.as_str();
    let binary = headers.filter(|h| {
        h.iter()
            .any(|(name, _)| AsRef::<str>::as_ref(name).eq_ignore_ascii_case("ce-specversion"))
    });
    let mut signal = match binary {
        Some(headers) => {
            let origin = headers
                .iter()
                .find(|(name, _)| {
                    AsRef::<str>::as_ref(*name).eq_ignore_ascii_case("ce-signalorigin")
                })
                .and_then(|(_, values)| values.first());
            if origin.is_some_and(|v| v.as_str() == own_origin) {
                return Ok(Decoded::Echo);
            }
            let pairs = headers.iter().flat_map(|(name, values)| {
                let name: &str = name.as_ref();
                values.iter().map(move |value| (name, value.as_str()))
            });
            signal_from_headers(pairs, payload).map_err(|e| match e {
                BinaryError::Signal(e) => MalformedMessage::Signal(e),
                other => MalformedMessage::Binary(other.to_string()),
            })?
        }
        None => {
            if own.starts(payload) {
                return Ok(Decoded::Echo);
            }
            Signal::from_json_slice(payload).map_err(MalformedMessage::Json)?
        }
    };
    match signal.extension(ORIGIN_EXTENSION).map(|v| v.to_string()) {
        Some(origin) if origin == own_origin => return Ok(Decoded::Echo),
        Some(_) => {}
        None => signal.set_extension(ORIGIN_EXTENSION, EXTERNAL_ORIGIN),
    }
    if !super::subject::is_subject_for(subject, prefix, signal.ty()) {
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
            headers.as_ref(),
            &payload,
            "signals",
            &OwnOrigin::new("node-b"),
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
    fn structured_payload_is_the_cached_json_with_the_origin_first() {
        let s = sample();
        let (headers, payload) = encode(&s, ContentMode::Structured, "n\"1");
        assert!(headers.is_none());
        let json = s.to_json_bytes();
        let expected = [br#"{"signalorigin":"n\"1","#.as_slice(), &json[1..]].concat();
        assert_eq!(&payload[..], &expected[..]);
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["signalorigin"], "n\"1");
    }

    #[test]
    fn binary_round_trips_a_content_type_without_data() {
        let s = Signal::builder("a.b", "/s")
            .id("1")
            .time_str("2024-01-01T00:00:00Z")
            .datacontenttype("application/json")
            .build()
            .unwrap();
        let (headers, payload) = encode(&s, ContentMode::Binary, "n");
        assert!(payload.is_empty());
        let d = decode(
            "signals.a.b",
            headers.as_ref(),
            &payload,
            "signals",
            &OwnOrigin::new("m"),
        );
        let Ok(Decoded::Signal(back)) = d else {
            panic!("{d:?}")
        };
        assert_eq!(back, s.with_extension(ORIGIN_EXTENSION, "n").unwrap());
    }

    #[test]
    fn binary_round_trip() {
        let (headers, payload) = encode(&sample(), ContentMode::Binary, "node-a");
        let headers = headers.unwrap();
        assert_eq!(headers.get("ce-signalorigin").unwrap().as_str(), "node-a");
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
        for mode in [ContentMode::Structured, ContentMode::Binary] {
            let (headers, payload) = encode(&sample(), mode, "node-a");
            let d = decode(
                "signals.user.created",
                headers.as_ref(),
                &payload,
                "signals",
                &OwnOrigin::new("node-a"),
            );
            assert!(matches!(d, Ok(Decoded::Echo)), "{mode:?}");
        }
        let (_, payload) = encode(&sample(), ContentMode::Structured, "node-a\"1");
        assert!(payload.starts_with(br#"{"signalorigin":"node-a\"1","specversion""#));
        let d = decode(
            "signals.user.created",
            None,
            &payload,
            "signals",
            &OwnOrigin::new("node-a\"1"),
        );
        assert!(
            matches!(d, Ok(Decoded::Echo)),
            "escaped origins are echoes too"
        );
        // A prefix of another node's id is not this node.
        let (_, payload) = encode(&sample(), ContentMode::Structured, "node-ab");
        let d = decode(
            "signals.user.created",
            None,
            &payload,
            "signals",
            &OwnOrigin::new("node-a"),
        );
        assert!(matches!(d, Ok(Decoded::Signal(_))));
        // A plain CloudEvent, from another publisher: external.
        let payload = sample().to_json_bytes();
        let d = decode(
            "signals.user.created",
            None,
            &payload,
            "signals",
            &OwnOrigin::new("node-a"),
        )
        .unwrap();
        let Decoded::Signal(s) = d else {
            panic!("a signal")
        };
        assert_eq!(
            s.extension(ORIGIN_EXTENSION).unwrap().as_str(),
            Some(EXTERNAL_ORIGIN)
        );
    }

    #[test]
    fn types_with_any_character_decode_on_their_escaped_subject() {
        for ty in [
            "com.example/orders:created",
            "a.*.>",
            "100%.caf\u{e9}",
            "x+y@z~w.#",
        ] {
            let s = Signal::builder(ty, "/s")
                .id("1")
                .time_str("2024-01-01T00:00:00Z")
                .build()
                .unwrap();
            let subject = crate::cluster::subject_for("signals", ty);
            for mode in [ContentMode::Structured, ContentMode::Binary] {
                let (headers, payload) = encode(&s, mode, "n");
                let d = decode(
                    &subject,
                    headers.as_ref(),
                    &payload,
                    "signals",
                    &OwnOrigin::new("m"),
                );
                let Ok(Decoded::Signal(back)) = d else {
                    panic!("{ty} {mode:?}: {d:?}")
                };
                assert_eq!(back.ty(), ty);
            }
        }
        // The unescaped subject is not the type's: `signals.a.*` is a wildcard to NATS.
        let s = Signal::builder("a.*", "/s").build().unwrap();
        let e = decode(
            "signals.a.*",
            None,
            &s.to_json_bytes(),
            "signals",
            &OwnOrigin::new("m"),
        )
        .unwrap_err();
        assert!(e.to_string().ends_with("(expected `signals.a.%2A`)"), "{e}");
    }

    #[test]
    fn malformed_messages_say_why() {
        let payload = sample().to_json_bytes();
        let cases: Vec<(&str, &[u8], &str)> = vec![
            (
                "signals.x",
                b"not json",
                "payload is not a CloudEvents JSON signal",
            ),
            (
                "signals.x",
                b"[1]",
                "a signal must be a JSON object, got an array",
            ),
            (
                "signals.x",
                br#"{"specversion":"1.0","id":"1","source":"/s"}"#,
                "`type` is required",
            ),
            // One reading of the JSON: a member named twice is refused, not resolved.
            (
                "signals.c.d",
                br#"{"specversion":"1.0","id":"1","source":"/s","type":"a.b","type":"c.d"}"#,
                "duplicate member `type`",
            ),
            (
                "signals.user.deleted",
                &payload,
                "does not match the signal type `user.created`",
            ),
            ("other.user.created", &payload, "does not match"),
        ];
        for (subject, body, why) in cases {
            let e = decode(subject, None, body, "signals", &OwnOrigin::new("me")).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("ce-specversion", "1.0");
        let e = decode(
            "signals.x",
            Some(&headers),
            b"",
            "signals",
            &OwnOrigin::new("me"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("`type` is required"), "{e}");
        // The one binary reader of the HTTP binding: an attribute sent twice, in any case of
        // its name, is refused rather than resolved.
        for name in ["ce-type", "CE-Type"] {
            let mut headers = HeaderMap::new();
            for (n, v) in [
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "a"),
            ] {
                headers.insert(n, v);
            }
            headers.append(name, "b");
            let e = decode(
                "signals.a",
                Some(&headers),
                b"",
                "signals",
                &OwnOrigin::new("me"),
            )
            .unwrap_err();
            assert!(
                e.to_string()
                    .contains("header `ce-type` appears more than once"),
                "{e}"
            );
        }
    }
}
