//! Reading CloudEvents from a received HTTP request: structured, binary and batch mode.

use http::{header::CONTENT_TYPE, HeaderMap};
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::binding::{BATCH_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE};
use crate::{
    binding::{signal_from_headers, BinaryError},
    Signal, SignalError,
};

/// Largest request body [`read_signals`] reads: 16 MiB. A larger body is refused with
/// [`ReadError::BodyTooLarge`] before any of it is parsed.
pub const MAX_BODY_LEN: usize = 16 * 1024 * 1024;

/// Most signals one batch-mode request may hold: 10,000, the largest batch the bus sends
/// ([`MAX_BATCH_SIZE`](crate::dispatch::MAX_BATCH_SIZE)). A longer batch is refused with
/// [`ReadError::TooManySignals`].
pub const MAX_BATCH_LEN: usize = crate::dispatch::MAX_BATCH_SIZE;

/// Why a received HTTP request holds no valid signals.
///
/// Every message names the header or member at fault and the rule, in lower case, for
/// example ``header `ce-source` is missing`` or ``batch element 2 is not a valid signal:
/// `type` is required at line 1 column 42``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The body is longer than [`MAX_BODY_LEN`].
    #[error("body is {len} bytes, more than the limit of {max}")]
    BodyTooLarge {
        /// The body's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A batch holds more signals than [`MAX_BATCH_LEN`].
    #[error("batch holds {len} signals, more than the limit of {max}")]
    TooManySignals {
        /// How many elements the batch holds.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The request is in no CloudEvents mode: its content type is neither structured nor
    /// batch, and it has no `ce-specversion` header (binary mode).
    #[error("{}", not_cloudevents(.content_type.as_deref()))]
    NotCloudEvents {
        /// The `Content-Type` received, if any.
        content_type: Option<String>,
    },
    /// The content type names a CloudEvents mode in a format or charset this reader does not
    /// read (only JSON, in UTF-8).
    #[error("content type `{content_type}` is not supported: {reason}")]
    UnsupportedContentType {
        /// The `Content-Type` received.
        content_type: String,
        /// Why it is not supported.
        reason: &'static str,
    },
    /// A header is missing, repeated, unreadable, or its value makes an invalid attribute.
    #[error("header `{name}` {reason}")]
    Header {
        /// The header name, in lower case (`ce-source`, `content-type`).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A binary-mode body is not what its content type says (JSON that does not parse,
    /// text that is not UTF-8).
    #[error("body is not valid {expected}, as its content type says it is: {reason}")]
    Data {
        /// What the content type promised: `JSON` or `UTF-8 text`.
        expected: &'static str,
        /// The parser's reason.
        reason: String,
    },
    /// A structured-mode body is not one valid signal in CloudEvents JSON.
    #[error("body is not a valid signal: {reason}")]
    #[non_exhaustive]
    Structured {
        /// The reason, naming the member at fault and where it is.
        reason: String,
        /// The JSON error: [`source()`](std::error::Error::source) returns the
        /// `serde_json::Error`.
        source: crate::Cause,
    },
    /// A batch-mode body is not a JSON array.
    #[error("body is not a JSON array of signals: {reason}")]
    #[non_exhaustive]
    Batch {
        /// The parser's reason.
        reason: String,
        /// The JSON error: [`source()`](std::error::Error::source) returns the
        /// `serde_json::Error`.
        source: crate::Cause,
    },
    /// An element of a batch is not a valid signal.
    #[error("batch element {index} is not a valid signal: {reason}")]
    #[non_exhaustive]
    BatchElement {
        /// Its position in the batch, from 0.
        index: usize,
        /// The reason, naming the member at fault and where it is in the element.
        reason: String,
        /// The JSON error: [`source()`](std::error::Error::source) returns the
        /// `serde_json::Error`.
        source: crate::Cause,
    },
    /// The binary-mode attributes do not make a valid signal.
    #[error(transparent)]
    Signal(SignalError),
}

fn not_cloudevents(content_type: Option<&str>) -> String {
    let modes = format!(
        "no `ce-specversion` header (binary mode), and the content type is neither \
         `{STRUCTURED_CONTENT_TYPE}` (structured mode) nor `{BATCH_CONTENT_TYPE}` (batch mode)"
    );
    match content_type {
        Some(ct) => format!("not a CloudEvents request: {modes}: it is `{ct}`"),
        None => format!("not a CloudEvents request: {modes}: there is none"),
    }
}

/// Which mode a request is in.
enum Mode {
    Structured,
    Batch,
    Binary,
}

/// Reads the signals of a received HTTP request, as the CloudEvents HTTP protocol binding
/// says, from its headers and exact body.
///
/// The mode comes from `Content-Type`, as the binding says:
/// - **structured** (`application/cloudevents+json`, parameters such as `; charset=utf-8`
///   allowed): the body is one signal in CloudEvents JSON, read as
///   [`Signal::from_json_slice`] reads it (a member named twice is refused); `ce-*` headers
///   are ignored;
/// - **batch** (`application/cloudevents-batch+json`): the body is a JSON array of signals,
///   at most [`MAX_BATCH_LEN`]; `[]` is no signals;
/// - **binary** (any other content type, or none, with a `ce-specversion` header): the
///   attributes are the `ce-*` headers, percent-decoded; `Content-Type` is
///   `datacontenttype` as it is; the body is the data: parsed as JSON when the content type
///   is JSON (`application/json`, `text/json`, `*+json`, or none), as a string for `text/*`,
///   kept as bytes otherwise; an empty body is no data. Extensions come back as strings
///   (binary mode does not carry their JSON types). A `ce-*` header or `Content-Type` given
///   twice is refused.
///
/// Another CloudEvents format (`application/cloudevents+xml`) or a charset other than UTF-8
/// is refused, and so is a body longer than [`MAX_BODY_LEN`].
///
/// Check a signature, if any, on the same `body` before reading it
/// ([`signing`](crate::http::signing)); with the `axum` feature, the `http::axum` extractors
/// do both.
///
/// A signal's `traceparent`/`tracestate` (structured members, or `ce-traceparent` and
/// `ce-tracestate` headers) come through untouched, an invalid one too. Handle each signal
/// in [`receive_span(&signal, "http")`](crate::trace::receive_span) to continue its trace
/// (with the `opentelemetry` feature, that span's parent is the signal's trace context).
///
/// # Example
/// ```
/// use http::{HeaderMap, HeaderValue};
/// use signal_bus::{http::read_signals, Signal};
///
/// // Binary mode: attributes in headers, the data as the body.
/// let mut headers = HeaderMap::new();
/// headers.insert("ce-specversion", HeaderValue::from_static("1.0"));
/// headers.insert("ce-id", HeaderValue::from_static("42"));
/// headers.insert("ce-source", HeaderValue::from_static("/billing%20eu"));
/// headers.insert("ce-type", HeaderValue::from_static("invoice.paid"));
/// headers.insert("content-type", HeaderValue::from_static("application/json"));
/// let signals: Vec<Signal> = read_signals(&headers, br#"{"cents":1250}"#)?;
/// assert_eq!(signals[0].source(), "/billing eu");
/// assert_eq!(signals[0].data(), Some(&serde_json::json!({"cents": 1250})));
///
/// // What is wrong is named.
/// headers.remove("ce-id");
/// let e = read_signals(&headers, b"{}").unwrap_err();
/// assert_eq!(e.to_string(), "header `ce-id` is missing");
/// # Ok::<(), signal_bus::http::ReadError>(())
/// ```
///
/// # Errors
/// A [`ReadError`] naming the header or member at fault.
pub fn read_signals(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Signal>, ReadError> {
    if body.len() > MAX_BODY_LEN {
        return Err(ReadError::BodyTooLarge {
            len: body.len(),
            max: MAX_BODY_LEN,
        });
    }
    let mut content_types = headers.get_all(CONTENT_TYPE).iter();
    let content_type = match content_types.next() {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| not_visible("content-type"))?),
    };
    if content_types.next().is_some() {
        return Err(ReadError::Header {
            name: "content-type".to_owned(),
            reason: "appears more than once".to_owned(),
        });
    }
    match mode(content_type)? {
        Mode::Structured => Signal::from_json_slice(body)
            .map(|signal| vec![signal])
            .map_err(|e| ReadError::Structured {
                reason: e.to_string(),
                source: crate::Cause::new(e),
            }),
        Mode::Batch => read_batch(body),
        Mode::Binary => {
            if !headers.contains_key("ce-specversion") {
                return Err(ReadError::NotCloudEvents {
                    content_type: content_type.map(str::to_owned),
                });
            }
            let mut pairs = Vec::with_capacity(headers.len());
            for (name, value) in headers {
                let name = name.as_str();
                if name.starts_with("ce-") || name == "content-type" {
                    pairs.push((name, value.to_str().map_err(|_| not_visible(name))?));
                }
            }
            signal_from_headers(pairs, body)
                .map(|signal| vec![signal])
                .map_err(binary_error)
        }
    }
}

fn not_visible(name: &str) -> ReadError {
    ReadError::Header {
        name: name.to_owned(),
        reason: "is not visible ASCII (other bytes are percent-encoded)".to_owned(),
    }
}

/// The mode of a request with this content type (binary for any other than CloudEvents').
fn mode(content_type: Option<&str>) -> Result<Mode, ReadError> {
    let Some(ct) = content_type else {
        return Ok(Mode::Binary);
    };
    let mut parts = ct.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let mode = if essence.starts_with("application/cloudevents-batch") {
        Mode::Batch
    } else if essence.starts_with("application/cloudevents") {
        Mode::Structured
    } else {
        return Ok(Mode::Binary);
    };
    let unsupported = |reason| ReadError::UnsupportedContentType {
        content_type: ct.to_owned(),
        reason,
    };
    if essence != STRUCTURED_CONTENT_TYPE && essence != BATCH_CONTENT_TYPE {
        return Err(unsupported(
            "the only CloudEvents format read is JSON (`+json`)",
        ));
    }
    for param in parts {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if name.trim().eq_ignore_ascii_case("charset") {
            let value = value.trim().trim_matches('"');
            if !value.eq_ignore_ascii_case("utf-8") && !value.eq_ignore_ascii_case("utf8") {
                return Err(unsupported("CloudEvents JSON is read in UTF-8 only"));
            }
        }
    }
    Ok(mode)
}

/// The elements of a JSON array, unparsed, and how many there were past the limit.
struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = (Vec<&'de RawValue>, usize);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of signals")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut elements = Vec::new();
        while let Some(element) = seq.next_element::<&RawValue>()? {
            if elements.len() == MAX_BATCH_LEN {
                // Counted, not kept: a huge array allocates nothing more.
                let mut len = elements.len() + 1;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    len += 1;
                }
                return Ok((elements, len));
            }
            elements.push(element);
        }
        let len = elements.len();
        Ok((elements, len))
    }
}

fn read_batch(body: &[u8]) -> Result<Vec<Signal>, ReadError> {
    let batch_error = |e: serde_json::Error| ReadError::Batch {
        reason: e.to_string(),
        source: crate::Cause::new(e),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let (elements, len) =
        de::Deserializer::deserialize_seq(&mut de, BatchVisitor).map_err(batch_error)?;
    de.end().map_err(batch_error)?;
    if len > MAX_BATCH_LEN {
        return Err(ReadError::TooManySignals {
            len,
            max: MAX_BATCH_LEN,
        });
    }
    elements
        .into_iter()
        .enumerate()
        .map(|(index, element)| {
            Signal::from_json_slice(element.get().as_bytes()).map_err(|e| ReadError::BatchElement {
                index,
                reason: e.to_string(),
                source: crate::Cause::new(e),
            })
        })
        .collect()
}

/// A binary-mode error, naming the header of the attribute at fault.
fn binary_error(e: BinaryError) -> ReadError {
    match e {
        BinaryError::Header { header, rule } => ReadError::Header {
            name: header,
            reason: rule.to_owned(),
        },
        BinaryError::Body { expected, reason } => ReadError::Data { expected, reason },
        BinaryError::Signal(e) => match &e {
            SignalError::Missing { field } => ReadError::Header {
                name: header_of(field),
                reason: "is missing".to_owned(),
            },
            SignalError::DataTooDeep { .. } | SignalError::InvalidData { .. } => ReadError::Data {
                expected: "JSON",
                reason: e.to_string(),
            },
            _ => match attribute_of(&e) {
                Some(field) => ReadError::Header {
                    name: header_of(field),
                    reason: format!("is invalid: {e}"),
                },
                None => ReadError::Signal(e),
            },
        },
    }
}

/// The header that carries an attribute in binary mode.
fn header_of(attribute: &str) -> String {
    if attribute == "datacontenttype" {
        "content-type".to_owned()
    } else {
        format!("ce-{attribute}")
    }
}

/// The attribute a signal error is about, if one.
fn attribute_of(e: &SignalError) -> Option<&str> {
    Some(match e {
        SignalError::Missing { field }
        | SignalError::Empty { field }
        | SignalError::TooLong { field, .. } => field,
        SignalError::WrongType { field, .. } => field,
        SignalError::InvalidType { .. } => "type",
        SignalError::SpecVersion { .. } => "specversion",
        SignalError::InvalidTime { .. } => "time",
        SignalError::ExtensionName { name, .. } => name,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_from_the_content_type() {
        assert!(matches!(mode(None), Ok(Mode::Binary)));
        assert!(matches!(mode(Some("application/json")), Ok(Mode::Binary)));
        assert!(matches!(
            mode(Some("Application/CloudEvents+JSON; charset=UTF-8")),
            Ok(Mode::Structured)
        ));
        assert!(matches!(
            mode(Some("application/cloudevents-batch+json;charset=\"utf-8\"")),
            Ok(Mode::Batch)
        ));
        let e = mode(Some("application/cloudevents+xml")).err().unwrap();
        assert_eq!(
            e.to_string(),
            "content type `application/cloudevents+xml` is not supported: the only CloudEvents \
             format read is JSON (`+json`)"
        );
        let e = mode(Some("application/cloudevents+json; charset=latin1"))
            .err()
            .unwrap();
        assert!(e.to_string().ends_with("read in UTF-8 only"), "{e}");
    }
}
