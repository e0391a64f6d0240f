//! What the CloudEvents protocol bindings (HTTP, NATS) share: the content modes, the data of
//! a binary-mode message, the percent-encoding of `ce-*` attribute values, and reading a
//! binary-mode message back into a signal.

// The helpers serve the `http` and `nats` features; the core alone uses only `ContentMode`.
#![cfg_attr(not(any(feature = "http", feature = "nats")), allow(dead_code))]

use std::borrow::Cow;

use bytes::Bytes;

use crate::{
    signal::{Data, ExtensionValue},
    Signal, SignalError,
};

/// How a signal is put into a message (an HTTP request, a NATS message).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ContentMode {
    /// The whole signal as CloudEvents JSON (`application/cloudevents+json`). The default.
    #[default]
    Structured,
    /// Attributes in `ce-*` headers, the data as the body with `Content-Type` from
    /// `datacontenttype`.
    Binary,
}

/// Whether a media type is JSON (`application/json`, `text/json`, `*+json`; none counts as
/// JSON, as CloudEvents says).
pub(crate) fn is_json(content_type: Option<&str>) -> bool {
    match content_type {
        None => true,
        Some(ct) => {
            let essence = ct.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence.eq_ignore_ascii_case("text/json")
                || essence.to_ascii_lowercase().ends_with("+json")
        }
    }
}

/// The body of a binary-mode message: the data alone (a JSON string with a non-JSON content
/// type goes as its text).
pub(crate) fn binary_body(signal: &Signal) -> Bytes {
    match signal.payload() {
        None => Bytes::new(),
        Some(Data::Binary(b)) => Bytes::copy_from_slice(b),
        Some(Data::Json(serde_json::Value::String(s))) if !is_json(signal.datacontenttype()) => {
            Bytes::copy_from_slice(s.as_bytes())
        }
        Some(Data::Json(v)) => Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
        #[allow(unreachable_patterns)]
        Some(_) => Bytes::new(),
    }
}

/// The `Content-Type` of a binary-mode message: `datacontenttype`, or, for bytes data
/// without one, `application/octet-stream` (no content type means JSON to a reader, and bytes
/// are not JSON).
pub(crate) fn binary_content_type(signal: &Signal) -> Option<&str> {
    match (signal.datacontenttype(), signal.payload()) {
        (Some(ct), _) => Some(ct),
        (None, Some(Data::Binary(_))) => Some("application/octet-stream"),
        (None, _) => None,
    }
}

fn is_plain(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%'
}

/// Percent-encodes what a header cannot carry (CloudEvents HTTP binding, 3.1.3.2): bytes
/// outside printable ASCII, space, `"` and `%`.
pub(crate) fn encode_value(value: &str) -> Cow<'_, str> {
    if value.bytes().all(is_plain) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if is_plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

/// Reverses [`encode_value`].
///
/// # Errors
/// A rule naming the problem: a `%` not followed by two hex digits, or bytes that are not
/// UTF-8 once decoded.
pub(crate) fn decode_value(value: &str) -> Result<Cow<'_, str>, &'static str> {
    if !value.contains('%') {
        return Ok(Cow::Borrowed(value));
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a `%` not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| "is not UTF-8 once percent-decoded")
}

/// Why a binary-mode message is not a signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BinaryError {
    /// An attribute header does not decode.
    #[error("header `{header}` {rule}")]
    Header { header: String, rule: &'static str },
    /// The body is not what the content type says.
    #[error("body is not valid {expected}: {reason}")]
    Body {
        expected: &'static str,
        reason: String,
    },
    /// The attributes do not make a valid signal.
    #[error(transparent)]
    Signal(#[from] SignalError),
}

/// Reads a binary-mode message from its headers (`(name, value)` pairs, every value of a
/// repeated header as its own pair, names in any case) and body: the `ce-*` headers are the
/// attributes, `content-type` is `datacontenttype`, other headers are ignored. A `ce-*`
/// header or `content-type` given twice is refused (an attribute has one value: no reading
/// picks one). The one reader of binary mode, shared by the HTTP reader
/// ([`crate::http::read_signals`]) and the NATS codec.
pub(crate) fn signal_from_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    body: &[u8],
) -> Result<Signal, BinaryError> {
    let mut content_type = None;
    let mut attributes: Vec<(Cow<'a, str>, &'a str)> = Vec::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-type") {
            if content_type.replace(value).is_some() {
                return Err(BinaryError::Header {
                    header: "content-type".to_owned(),
                    rule: REPEATED,
                });
            }
        } else if name.len() >= 3 && name.as_bytes()[..3].eq_ignore_ascii_case(b"ce-") {
            // The first three bytes are ASCII: index 3 is a character boundary.
            let attribute = &name[3..];
            let attribute = if attribute.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(attribute.to_ascii_lowercase())
            } else {
                Cow::Borrowed(attribute)
            };
            attributes.push((attribute, value));
        }
    }
    // Sorted, a repeated attribute sits next to itself (a stable sort keeps its values'
    // order, which does not matter: it is refused).
    attributes.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = attributes.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(BinaryError::Header {
            header: format!("ce-{}", pair[0].0),
            rule: REPEATED,
        });
    }
    signal_from_binary(
        attributes
            .iter()
            .map(|(name, value)| (name.as_ref(), *value)),
        content_type,
        body,
        None,
    )
}

/// Why a header given twice is refused.
const REPEATED: &str = "appears more than once; an attribute has one value";

/// Reads a binary-mode message: `attributes` are the `ce-*` headers (name without the
/// prefix, lower case, value as sent), `content_type` the `Content-Type` header, `body` the
/// data. Extensions come back as strings (binary mode does not keep their types); an empty
/// body is no data; string data with a content type that is neither JSON nor `text/*` comes
/// back as bytes.
fn signal_from_binary<'a>(
    attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
    content_type: Option<&str>,
    body: &[u8],
    extra: Option<(&str, &str)>,
) -> Result<Signal, BinaryError> {
    let mut specversion = None;
    let (mut id, mut source, mut ty, mut subject, mut time, mut dataschema) =
        (None, None, None, None, None, None);
    let mut extensions = Vec::new();
    for (name, raw) in attributes {
        let value = decode_value(raw)
            .map_err(|rule| BinaryError::Header {
                header: format!("ce-{name}"),
                rule,
            })?
            .into_owned();
        match name {
            "specversion" => specversion = Some(value),
            "id" => id = Some(value),
            "source" => source = Some(value),
            "type" => ty = Some(value),
            "subject" => subject = Some(value),
            "time" => time = Some(value),
            "dataschema" => dataschema = Some(value),
            "datacontenttype" => {}
            _ => extensions.push((name.to_owned(), value)),
        }
    }
    let specversion = specversion.ok_or(SignalError::Missing {
        field: "specversion",
    })?;
    if specversion != "1.0" && specversion != "1.0.2" {
        return Err(SignalError::SpecVersion { value: specversion }.into());
    }
    let ty = ty.ok_or(SignalError::Missing { field: "type" })?;
    let source = source.ok_or(SignalError::Missing { field: "source" })?;
    let id = id.ok_or(SignalError::Missing { field: "id" })?;
    let mut builder = Signal::builder(ty, source).id(id);
    if let Some(s) = subject {
        builder = builder.subject(s);
    }
    if let Some(t) = time {
        builder = builder.time_str(&t);
    }
    if let Some(s) = dataschema {
        builder = builder.dataschema(s);
    }
    if let Some(ct) = content_type {
        builder = builder.datacontenttype(ct);
    }
    // An empty body is no data (the content type, if any, is kept).
    if !body.is_empty() {
        builder = if is_json(content_type) {
            let value = serde_json::from_slice(body).map_err(|e| BinaryError::Body {
                expected: "JSON",
                reason: e.to_string(),
            })?;
            builder.data(value)
        } else if content_type.is_some_and(|ct| ct.trim_start().starts_with("text/")) {
            let text = std::str::from_utf8(body).map_err(|e| BinaryError::Body {
                expected: "UTF-8 text",
                reason: e.to_string(),
            })?;
            builder.data(serde_json::Value::String(text.to_owned()))
        } else {
            builder.data_bytes(body.to_vec())
        };
    }
    for (name, value) in extensions {
        builder = builder.extension(name, ExtensionValue::String(value));
    }
    if let Some((name, value)) = extra {
        builder = builder.extension(name, value);
    }
    Ok(builder.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_round_trips() {
        for s in ["plain", "/a b", "ü%\"x", ""] {
            assert_eq!(decode_value(&encode_value(s)).unwrap(), s);
        }
        assert_eq!(encode_value("/a b"), "/a%20b");
        assert!(decode_value("%G1").is_err());
        assert!(decode_value("%FF").is_err());
    }

    #[test]
    fn types_with_any_character_round_trip_through_ce_type() {
        for ty in [
            "com.example/orders:created",
            "100%.caf\u{e9}.\u{65e5}\u{672c}",
            "a+b@c~d.#.*.\"q\"",
        ] {
            let encoded = encode_value(ty);
            assert!(
                encoded.bytes().all(|b| (0x21..=0x7e).contains(&b)),
                "{encoded}"
            );
            let attrs = [("specversion", "1.0"), ("id", "1"), ("source", "/s")];
            let attrs = attrs.into_iter().chain([("type", encoded.as_ref())]);
            let s = signal_from_binary(attrs, None, b"", None).unwrap();
            assert_eq!(s.ty(), ty);
        }
    }

    #[test]
    fn binary_reads_text_json_and_bytes() {
        let attrs = [
            ("specversion", "1.0"),
            ("id", "1"),
            ("source", "/a%20b"),
            ("type", "a.b"),
            ("tenant", "acme"),
        ];
        let s = signal_from_binary(attrs, Some("application/json"), br#"{"k":1}"#, None).unwrap();
        assert_eq!(s.source(), "/a b");
        assert_eq!(s.data(), Some(&serde_json::json!({"k": 1})));
        assert_eq!(s.extension("tenant").and_then(|v| v.as_str()), Some("acme"));
        let s = signal_from_binary(attrs, Some("text/plain"), b"hi", None).unwrap();
        assert_eq!(s.data(), Some(&serde_json::json!("hi")));
        let s = signal_from_binary(attrs, Some("application/octet-stream"), &[0, 1], None).unwrap();
        assert_eq!(s.data_bytes(), Some(&[0u8, 1][..]));
        let s = signal_from_binary(attrs, None, b"", Some(("origin", "n1"))).unwrap();
        assert!(s.data().is_none());
        assert_eq!(s.extension("origin").and_then(|v| v.as_str()), Some("n1"));
    }

    #[test]
    fn binary_rejects_what_is_not_a_signal() {
        let e = signal_from_binary([("id", "1")], None, b"", None).unwrap_err();
        assert_eq!(e.to_string(), "`specversion` is required");
        let attrs = [
            ("specversion", "1.0"),
            ("id", "1"),
            ("source", "/s"),
            ("type", "a..b"),
        ];
        assert!(signal_from_binary(attrs, None, b"", None)
            .unwrap_err()
            .to_string()
            .contains("empty segment"));
        let attrs = [
            ("specversion", "1.0"),
            ("id", "1"),
            ("source", "/s"),
            ("type", "a"),
        ];
        let e = signal_from_binary(attrs, Some("application/json"), b"{", None).unwrap_err();
        assert!(e.to_string().starts_with("body is not valid JSON"), "{e}");
    }
}
