//! The CloudEvents HTTP protocol binding: structured, binary and batch bodies.

use bytes::{BufMut, Bytes, BytesMut};
use http::{header::CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

pub use crate::binding::ContentMode;
use crate::{
    binding::{binary_body, binary_content_type, encode_value},
    Signal,
};

/// Media type of a structured-mode body.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// Media type of a batch-mode body.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// A request body and the headers that describe it.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub(crate) body: Bytes,
    pub(crate) headers: HeaderMap,
}

/// Encodes one signal. Structured bodies are the signal's cached JSON: no serialization
/// after the first target.
pub(crate) fn encode(signal: &Signal, mode: ContentMode) -> Encoded {
    let mut headers = HeaderMap::new();
    match mode {
        ContentMode::Structured => {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(STRUCTURED_CONTENT_TYPE),
            );
            Encoded {
                body: signal.to_json_bytes(),
                headers,
            }
        }
        ContentMode::Binary => {
            let put = |headers: &mut HeaderMap, name: &'static str, value: &str| {
                headers.insert(HeaderName::from_static(name), header_value(value));
            };
            put(&mut headers, "ce-specversion", signal.specversion());
            put(&mut headers, "ce-id", signal.id());
            put(&mut headers, "ce-source", signal.source());
            put(&mut headers, "ce-type", signal.ty());
            if let Some(s) = signal.subject() {
                put(&mut headers, "ce-subject", s);
            }
            put(&mut headers, "ce-time", &signal.time_rfc3339());
            if let Some(s) = signal.dataschema() {
                put(&mut headers, "ce-dataschema", s);
            }
            for (name, value) in signal.extensions() {
                // Extension names are lower-case alphanumeric: always a valid header name.
                if let Ok(name) = HeaderName::try_from(format!("ce-{name}")) {
                    headers.insert(name, header_value(&value.to_string()));
                }
            }
            if let Some(ct) = binary_content_type(signal) {
                // `Content-Type` is not a `ce-*` attribute: sent as it is (`; charset=utf-8`
                // keeps its space), percent-encoded only when a header cannot carry it.
                let value = HeaderValue::from_str(ct).unwrap_or_else(|_| header_value(ct));
                headers.insert(CONTENT_TYPE, value);
            }
            Encoded {
                body: binary_body(signal),
                headers,
            }
        }
    }
}

/// A JSON array of the signals' structured forms (`application/cloudevents-batch+json`).
pub(crate) fn encode_batch(signals: &[std::sync::Arc<Signal>]) -> Encoded {
    let parts: Vec<Bytes> = signals.iter().map(|s| s.to_json_bytes()).collect();
    let len = parts.iter().map(Bytes::len).sum::<usize>() + parts.len() + 2;
    let mut body = BytesMut::with_capacity(len);
    body.put_u8(b'[');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(part);
    }
    body.put_u8(b']');
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(BATCH_CONTENT_TYPE));
    Encoded {
        body: body.freeze(),
        headers,
    }
}

/// A header value, percent-encoding what HTTP headers cannot carry.
fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(&encode_value(value)).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binary_mode_headers_and_body() {
        let s = Signal::builder("user.created", "/a b")
            .id("1")
            .subject("ü")
            .time_str("2024-01-01T00:00:00Z")
            .data(json!({"k": 1}))
            .extension("tenant", "acme")
            .build()
            .unwrap();
        let e = encode(&s, ContentMode::Binary);
        assert_eq!(e.headers["ce-id"], "1");
        assert_eq!(e.headers["ce-source"], "/a%20b");
        assert_eq!(e.headers["ce-subject"], "%C3%BC");
        assert_eq!(e.headers["ce-tenant"], "acme");
        assert_eq!(e.headers["ce-time"], "2024-01-01T00:00:00Z");
        assert_eq!(e.headers[CONTENT_TYPE], "application/json");
        assert_eq!(&e.body[..], br#"{"k":1}"#);
    }

    #[test]
    fn binary_mode_content_type_is_not_percent_encoded() {
        let s = Signal::builder("a", "/s")
            .datacontenttype("application/json; charset=utf-8")
            .data(json!("x"))
            .build()
            .unwrap();
        let e = encode(&s, ContentMode::Binary);
        assert_eq!(e.headers[CONTENT_TYPE], "application/json; charset=utf-8");
    }

    #[test]
    fn binary_mode_text_and_bytes() {
        let s = Signal::builder("a", "/s")
            .datacontenttype("text/plain")
            .data(json!("hello"))
            .build()
            .unwrap();
        assert_eq!(&encode(&s, ContentMode::Binary).body[..], b"hello");
        let s = Signal::builder("a", "/s")
            .data_bytes(vec![0, 1])
            .build()
            .unwrap();
        let e = encode(&s, ContentMode::Binary);
        assert_eq!(&e.body[..], &[0, 1]);
        assert_eq!(e.headers[CONTENT_TYPE], "application/octet-stream");
    }

    #[test]
    fn bytes_without_a_content_type_go_as_octet_stream() {
        // Read from JSON, bytes data may come without `datacontenttype`; binary mode must
        // not send them without a content type, which readers take for JSON.
        let s = Signal::from_json_slice(
            br#"{"specversion":"1.0","id":"1","source":"/s","type":"a","data_base64":"AAH/"}"#,
        )
        .unwrap();
        assert_eq!(s.datacontenttype(), None);
        let e = encode(&s, ContentMode::Binary);
        assert_eq!(e.headers[CONTENT_TYPE], "application/octet-stream");
        let back = crate::http::read_signals(&e.headers, &e.body).unwrap();
        assert_eq!(back[0].data_bytes(), Some(&[0u8, 1, 0xff][..]));
    }

    #[test]
    fn batch_is_a_json_array_of_structured_signals() {
        let a = std::sync::Arc::new(Signal::builder("a", "/s").id("1").build().unwrap());
        let b = std::sync::Arc::new(Signal::builder("b", "/s").id("2").build().unwrap());
        let e = encode_batch(&[a.clone(), b]);
        let v: Vec<Signal> = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], *a);
        assert_eq!(e.headers[CONTENT_TYPE], BATCH_CONTENT_TYPE);
    }
}
