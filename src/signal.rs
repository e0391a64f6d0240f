//! [`Signal`]: a CloudEvents 1.0 event.
//!
//! A signal is built with [`Signal::builder`], validated once, and shared as `Arc<Signal>`
//! from then on: the bus never deep-clones a signal while delivering it.
//!
//! Its serde form is the CloudEvents JSON format (structured mode): attributes and extensions
//! at the top level, `data` for JSON, `data_base64` for bytes. Any CloudEvents SDK reads it.
//!
//! ```
//! use serde_json::json;
//! use signal_bus::Signal;
//!
//! let signal = Signal::builder("user.created", "/services/accounts")
//!     .subject("user/42")
//!     .data(json!({"id": 42}))
//!     .extension("tenant", "acme")
//!     .build()?;
//! assert_eq!(signal.ty(), "user.created");
//! assert_eq!(signal.datacontenttype(), Some("application/json"));
//!
//! let wire = serde_json::to_string(&signal)?;
//! let back: Signal = serde_json::from_str(&wire)?;
//! assert_eq!(back, signal);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::{
    collections::{btree_map::Entry, BTreeMap},
    fmt,
    sync::OnceLock,
};

use bytes::Bytes;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{
    de::{self, Deserializer},
    ser::{SerializeMap, Serializer},
    Deserialize, Serialize,
};
use serde_json::{value::RawValue, Map, Value};

use crate::pattern::{check_type, TypeFault};

mod trace_context;
pub use trace_context::{
    validate_tracestate, TraceContext, MAX_TRACESTATE_LEN, MAX_TRACESTATE_MEMBERS, TRACEPARENT,
    TRACESTATE,
};

/// The CloudEvents version this crate writes.
pub const SPEC_VERSION: &str = "1.0";

/// Longest accepted value for `id`, `source` and `subject`, in bytes (`type` has its own,
/// shorter limit: [`MAX_TYPE_LEN`]).
pub const MAX_ATTRIBUTE_LEN: usize = 4096;

/// Longest accepted signal type, in bytes (UTF-8), the same as a pattern's
/// ([`MAX_PATTERN_LEN`](crate::pattern::MAX_PATTERN_LEN)). Real CloudEvents types are a few
/// dozen bytes; a type travels in HTTP headers (`ce-type`, percent-encoded) and NATS subjects
/// (escaped, up to three times as long), where 1 KiB keeps every message well inside the
/// servers' limits (NATS: 4 KiB control lines).
pub const MAX_TYPE_LEN: usize = 1024;

/// The most dot-separated segments a signal type may have (the same cap as a pattern's,
/// [`MAX_PATTERN_SEGMENTS`](crate::pattern::MAX_PATTERN_SEGMENTS)). Real CloudEvents types
/// use a handful (`com.github.pull_request.opened`). A bus routes fewer by default: see
/// [`DEFAULT_MAX_TYPE_SEGMENTS`].
pub const MAX_TYPE_SEGMENTS: usize = 128;

/// The default of `BusBuilder::max_type_segments`: the most segments a type may have for a
/// bus to route it. 32 leaves room above real types and keeps the router's worst case (which
/// grows with the number of segments) small.
pub const DEFAULT_MAX_TYPE_SEGMENTS: usize = 32;

/// Deepest nesting of arrays and objects accepted in `data` read from JSON (`[1]` is one
/// level). serde_json stops at 128 levels for a whole document, so without a limit of its own
/// a signal's verdict would depend on how deep it sits (alone, in a batch, in an envelope);
/// 100 leaves room for those.
pub const MAX_DATA_DEPTH: usize = 100;

/// The core attributes of the JSON form, in the order [`Signal::from_parts`] takes them.
const CORE_ATTRIBUTES: [&str; 10] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];

/// A signal that does not follow the CloudEvents rules this crate enforces.
///
/// The message names the field and the rule, e.g. ``type `user..created` has an empty
/// segment``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// A required attribute is absent.
    #[error("`{field}` is required")]
    Missing {
        /// The attribute name.
        field: &'static str,
    },
    /// An attribute is present but empty.
    #[error("`{field}` must not be empty")]
    Empty {
        /// The attribute name.
        field: &'static str,
    },
    /// An attribute is longer than [`MAX_ATTRIBUTE_LEN`].
    #[error("`{field}` is {len} bytes long, more than the limit of {max}")]
    TooLong {
        /// The attribute name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The type is not a routable CloudEvents type: see [`validate_type`] for the rules.
    #[error("type `{value}` {rule}")]
    InvalidType {
        /// The rejected type as shown: its first 128 bytes (then `...`), with control and
        /// whitespace characters other than the space escaped (`\n`, `\u{a0}`).
        value: String,
        /// The rule it broke.
        rule: String,
    },
    /// `specversion` is not 1.0.
    #[error("specversion `{value}` is not supported: expected \"1.0\"")]
    SpecVersion {
        /// The rejected value.
        value: String,
    },
    /// `time` is not an RFC 3339 timestamp.
    #[error("time `{value}` is not an RFC 3339 timestamp: {reason}")]
    InvalidTime {
        /// The rejected value.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// An attribute has the wrong JSON type.
    #[error("`{field}` must be {expected}")]
    WrongType {
        /// The attribute name.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
    /// `data` and `data_base64` were both given.
    #[error("`data` and `data_base64` must not both be present")]
    DataConflict,
    /// A member of the JSON form appears more than once (a core attribute, `data`,
    /// `data_base64` or an extension). No reading picks one: a signature checked on one
    /// reading and routing done on another must never see two different signals.
    #[error("duplicate member `{member}`: a signal's JSON object names each member once")]
    DuplicateMember {
        /// The member's name (unescaped).
        member: String,
    },
    /// `data` read from JSON nests arrays and objects deeper than [`MAX_DATA_DEPTH`].
    #[error("`data` nests arrays and objects more than {max} levels deep, the limit")]
    DataTooDeep {
        /// The limit.
        max: usize,
    },
    /// `data` is JSON text that does not make a JSON value (a number out of range, a lone
    /// surrogate, nesting too deep).
    #[error("`data` is not a valid JSON value: {reason}")]
    InvalidData {
        /// The parser's reason.
        reason: String,
    },
    /// `data_base64` does not decode.
    #[error("`data_base64` is not valid base64: {reason}")]
    InvalidBase64 {
        /// The decoder's reason.
        reason: String,
    },
    /// An extension name breaks the CloudEvents naming rule or reuses a core attribute.
    #[error("extension name `{name}` is invalid: {rule}")]
    ExtensionName {
        /// The rejected name.
        name: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// A `traceparent` given to [`SignalBuilder::traceparent`] (or [`TraceContext::parse`])
    /// that breaks a W3C Trace Context rule.
    #[error("traceparent `{value}` is invalid: {rule}")]
    InvalidTraceparent {
        /// The rejected value as shown (its first 128 bytes, control characters escaped).
        value: String,
        /// The rule it broke.
        rule: String,
    },
    /// A `tracestate` given to [`SignalBuilder::tracestate`] (or [`validate_tracestate`])
    /// that breaks a W3C Trace Context rule.
    #[error("tracestate `{value}` is invalid: {rule}")]
    InvalidTracestate {
        /// The rejected value as shown (its first 128 bytes, control characters escaped).
        value: String,
        /// The rule it broke.
        rule: String,
    },
    /// A `datacontenttype` that cannot be an HTTP `Content-Type`: it must be visible ASCII
    /// (spaces and tabs allowed), as every binding writes it to a header.
    #[error("datacontenttype `{value}` is invalid: {rule}")]
    InvalidContentType {
        /// The rejected value as shown (its first 128 bytes, control characters escaped).
        value: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// The JSON form of a signal is not a JSON object.
    #[error("a signal must be a JSON object, got {got}")]
    NotAnObject {
        /// The JSON kind that was found.
        got: &'static str,
    },
}

/// Checks a signal type, the rules a type follows to be routed: CloudEvents allows any
/// string; this crate takes any string of at most [`MAX_TYPE_LEN`] bytes and
/// [`MAX_TYPE_SEGMENTS`] `.`-separated segments, no segment empty, and no whitespace or
/// control character anywhere. So `user.created`, `com.example/orders:created`,
/// `com.github.pull_request.opened` and `a+b@c~d.#.*` are types; `user..created`, `.user`,
/// `user created` and `user\ncreated` are not. Routing splits a type on `.`; a pattern
/// names a segment holding a glob metacharacter by escaping it (`orders.\*`, see
/// [`Pattern`](crate::Pattern)).
///
/// ```
/// use signal_bus::signal::validate_type;
///
/// assert!(validate_type("com.example/orders:created").is_ok());
/// let e = validate_type("orders..created").unwrap_err();
/// assert_eq!(e.to_string(), "type `orders..created` has an empty segment at position 1");
/// let e = validate_type("orders created").unwrap_err();
/// assert_eq!(
///     e.to_string(),
///     "type `orders created` has the whitespace character ' ' in segment 0: \
///      a type holds no whitespace or control characters"
/// );
/// ```
///
/// # Errors
/// [`SignalError::Empty`] for the empty string, else [`SignalError::InvalidType`] naming the
/// type (its first 128 bytes) and the first broken rule.
pub fn validate_type(ty: &str) -> Result<(), SignalError> {
    if ty.is_empty() {
        return Err(SignalError::Empty { field: "type" });
    }
    let invalid = |rule: String| SignalError::InvalidType {
        value: shown_type(ty),
        rule,
    };
    if ty.len() > MAX_TYPE_LEN {
        return Err(invalid(format!(
            "is {} bytes long, more than the limit of {MAX_TYPE_LEN}",
            ty.len()
        )));
    }
    match check_type(ty) {
        Ok(segments) if segments > MAX_TYPE_SEGMENTS => Err(invalid(format!(
            "has {segments} segments, more than the limit of {MAX_TYPE_SEGMENTS}"
        ))),
        Ok(_) => Ok(()),
        Err(TypeFault::Empty) => Err(SignalError::Empty { field: "type" }),
        Err(TypeFault::EmptySegment { position }) => Err(invalid(format!(
            "has an empty segment at position {position}"
        ))),
        Err(TypeFault::Character {
            character,
            position,
        }) => {
            let kind = if character.is_whitespace() {
                "whitespace"
            } else {
                "control"
            };
            Err(invalid(format!(
                "has the {kind} character {character:?} in segment {position}: a type holds no \
                 whitespace or control characters"
            )))
        }
    }
}

/// A type as errors show it: at most its first 128 bytes (then `...`), control and
/// whitespace characters other than the space escaped, so that it cannot break a log line.
#[cold]
pub(crate) fn shown_type(ty: &str) -> String {
    let mut end = ty.len().min(128);
    while !ty.is_char_boundary(end) {
        end -= 1;
    }
    let mut shown = String::with_capacity(end + 8);
    for c in ty[..end].chars() {
        if c.is_control() || (c.is_whitespace() && c != ' ') {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    if end < ty.len() {
        shown.push_str("...");
    }
    shown
}

/// The number of `.`-separated segments of a type, counting the dots eight bytes at a time.
pub(crate) fn type_segments(ty: &str) -> usize {
    const DOTS: u64 = u64::from_ne_bytes([b'.'; 8]);
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let mut chunks = ty.as_bytes().chunks_exact(8);
    let mut dots = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        // A byte of `x` is zero where the type has a dot; the top bit of each byte of
        // `nonzero` is set where it has anything else (no carry crosses bytes).
        let x = u64::from_ne_bytes(word) ^ DOTS;
        let nonzero = (((x & LOW7) + LOW7) | x) & !LOW7;
        dots += 8 - nonzero.count_ones() as usize;
    }
    dots += chunks.remainder().iter().filter(|&&b| b == b'.').count();
    dots + 1
}

fn check_len(field: &'static str, value: &str) -> Result<(), SignalError> {
    if value.len() > MAX_ATTRIBUTE_LEN {
        return Err(SignalError::TooLong {
            field,
            len: value.len(),
            max: MAX_ATTRIBUTE_LEN,
        });
    }
    Ok(())
}

fn validate_extension_name(name: &str) -> Result<(), SignalError> {
    let rule = if name.is_empty() {
        Some("it must not be empty")
    } else if name.len() > 64 {
        Some("it must be at most 64 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Some("CloudEvents extension names are lower-case letters and digits only")
    } else if CORE_ATTRIBUTES.contains(&name) {
        Some("it is a core CloudEvents attribute")
    } else {
        None
    };
    match rule {
        Some(rule) => Err(SignalError::ExtensionName {
            name: name.to_owned(),
            rule,
        }),
        None => Ok(()),
    }
}

/// The payload of a signal.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Data {
    /// A JSON value (`data` on the wire).
    Json(Value),
    /// Raw bytes (`data_base64` on the wire).
    Binary(Vec<u8>),
}

/// How a signal holds its data: as built, or as the JSON text it was read from, parsed only
/// when something asks for it (a bridge or receiver that only passes the signal on never
/// pays for parsing its data, and writes the same text back out).
#[derive(Debug, Clone)]
enum Payload {
    Ready(Data),
    Raw {
        json: Box<RawValue>,
        parsed: OnceLock<Data>,
    },
}

impl Payload {
    /// Keeps `json` as text when it certainly parses into a `Value` no deeper than
    /// [`MAX_DATA_DEPTH`]; otherwise parses it now and reports why it does not, exactly as
    /// [`Payload::from_value`] would for the value.
    fn checked(json: Box<RawValue>) -> Result<Payload, SignalError> {
        if !needs_full_parse(json.get().as_bytes()) {
            return Ok(Payload::Raw {
                json,
                parsed: OnceLock::new(),
            });
        }
        let value = serde_json::from_str(json.get()).map_err(|e| SignalError::InvalidData {
            reason: e.to_string(),
        })?;
        Payload::from_value(value)
    }

    /// JSON data read as a value: refused when it nests deeper than [`MAX_DATA_DEPTH`].
    fn from_value(value: Value) -> Result<Payload, SignalError> {
        // Recursion is bounded: serde_json builds no value deeper than 128 levels.
        fn too_deep(v: &Value, levels_left: usize) -> bool {
            match v {
                Value::Array(a) => {
                    levels_left == 0 || a.iter().any(|v| too_deep(v, levels_left - 1))
                }
                Value::Object(o) => {
                    levels_left == 0 || o.values().any(|v| too_deep(v, levels_left - 1))
                }
                _ => false,
            }
        }
        if too_deep(&value, MAX_DATA_DEPTH) {
            return Err(SignalError::DataTooDeep {
                max: MAX_DATA_DEPTH,
            });
        }
        Ok(Payload::Ready(Data::Json(value)))
    }

    fn get(&self) -> &Data {
        match self {
            Payload::Ready(d) => d,
            Payload::Raw { json, parsed } => parsed.get_or_init(|| {
                // `checked` kept only text that parses: no escapes that could be lone
                // surrogates, no exponents or long digit runs that could overflow, shallow
                // nesting.
                Data::Json(serde_json::from_str(json.get()).unwrap_or(Value::Null))
            }),
        }
    }

    fn is_binary(&self) -> bool {
        matches!(self, Payload::Ready(Data::Binary(_)))
    }
}

/// Whether JSON text (already valid syntax) might still fail to parse into a `Value` or to
/// pass as data: a `\u` escape (a lone surrogate), a number with an exponent or a long digit
/// run (out of range), or nesting deeper than [`MAX_DATA_DEPTH`]. Such text is parsed at
/// once instead of kept.
fn needs_full_parse(json: &[u8]) -> bool {
    let (mut in_string, mut escaped, mut depth, mut digits) = (false, false, 0usize, 0usize);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, b'u') => return true,
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DATA_DEPTH {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'0'..=b'9' => {
                digits += 1;
                if digits > 300 {
                    return true;
                }
                continue;
            }
            // Outside strings `e` only appears in `true`, `false` and exponents.
            b'e' | b'E' if digits > 0 => return true,
            _ => {}
        }
        digits = 0;
    }
    false
}

/// The value of an extension attribute: CloudEvents allows strings, integers and booleans.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ExtensionValue {
    /// A string (also used for URIs, timestamps and binary in their string forms).
    String(String),
    /// A signed integer.
    Integer(i64),
    /// A boolean.
    Bool(bool),
}

impl fmt::Display for ExtensionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtensionValue::String(s) => f.write_str(s),
            ExtensionValue::Integer(i) => write!(f, "{i}"),
            ExtensionValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl From<&str> for ExtensionValue {
    fn from(s: &str) -> Self {
        ExtensionValue::String(s.to_owned())
    }
}
impl From<String> for ExtensionValue {
    fn from(s: String) -> Self {
        ExtensionValue::String(s)
    }
}
impl From<i64> for ExtensionValue {
    fn from(i: i64) -> Self {
        ExtensionValue::Integer(i)
    }
}
impl From<i32> for ExtensionValue {
    fn from(i: i32) -> Self {
        ExtensionValue::Integer(i.into())
    }
}
impl From<u32> for ExtensionValue {
    fn from(i: u32) -> Self {
        ExtensionValue::Integer(i.into())
    }
}
impl From<bool> for ExtensionValue {
    fn from(b: bool) -> Self {
        ExtensionValue::Bool(b)
    }
}

impl ExtensionValue {
    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ExtensionValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// A CloudEvents 1.0 event: the unit the bus routes and delivers.
///
/// Build one with [`Signal::builder`]; read one from JSON with serde. Once built, a signal is
/// immutable: share it as `Arc<Signal>`.
///
/// Its type is any string the bus can route ([`validate_type`]): no whitespace or control
/// characters, `.`-separated segments none of which is empty, at most [`MAX_TYPE_LEN`] bytes
/// and [`MAX_TYPE_SEGMENTS`] segments; `/`, `:`, `+`, `@`, `~`, `*`, `#` and any other
/// character are allowed.
///
/// ```
/// use signal_bus::Signal;
///
/// let s = Signal::builder("com.example/orders:created", "/shop").build()?;
/// assert_eq!(s.ty(), "com.example/orders:created");
/// let e = Signal::builder("orders..created", "/shop").build().unwrap_err();
/// assert_eq!(e.to_string(), "type `orders..created` has an empty segment at position 1");
/// # Ok::<(), signal_bus::SignalError>(())
/// ```
///
/// A signal with a subject, JSON data and an extension, written as CloudEvents JSON and read
/// back:
///
/// ```
/// use serde_json::json;
/// use signal_bus::Signal;
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let signal = Signal::builder("order.placed", "/shop")
///         .subject("order/1001")
///         .data(json!({ "total": 42.5, "currency": "EUR" }))
///         .extension("tenant", "acme")
///         .build()?;
///     assert_eq!(signal.datacontenttype(), Some("application/json")); // set for JSON data
///
///     let bytes = signal.to_json_vec(); // {"specversion":"1.0","id":...,"type":"order.placed",...}
///     let back = Signal::from_json_slice(&bytes)?;
///     assert_eq!(back.id(), signal.id()); // a UUIDv7 unless `.id(..)` set one
///     assert_eq!(back.subject(), Some("order/1001"));
///     assert_eq!(back.data(), Some(&json!({ "total": 42.5, "currency": "EUR" })));
///     assert_eq!(back.extension("tenant").and_then(|v| v.as_str()), Some("acme"));
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Signal {
    id: String,
    source: String,
    ty: String,
    subject: Option<String>,
    time: DateTime<Utc>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    data: Option<Payload>,
    extensions: BTreeMap<String, ExtensionValue>,
    /// The CloudEvents JSON form, computed once on first use (signals are immutable).
    json: OnceLock<Bytes>,
}

impl PartialEq for Signal {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.source == other.source
            && self.ty == other.ty
            && self.subject == other.subject
            && self.time == other.time
            && self.datacontenttype == other.datacontenttype
            && self.dataschema == other.dataschema
            && self.payload() == other.payload()
            && self.extensions == other.extensions
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Signal");
        d.field("id", &self.id)
            .field("type", &self.ty)
            .field("source", &self.source);
        if let Some(s) = &self.subject {
            d.field("subject", s);
        }
        d.field("time", &self.time_rfc3339());
        if !self.extensions.is_empty() {
            d.field("extensions", &self.extensions);
        }
        match self.payload() {
            Some(Data::Json(v)) => d.field("data", v),
            Some(Data::Binary(b)) => d.field("data_bytes", &b.len()),
            _ => d.field("data", &Option::<()>::None),
        };
        d.finish()
    }
}

impl Signal {
    /// Starts a signal with its two required attributes: the `type` (`.`-separated segments,
    /// see [`validate_type`]) and the `source`.
    ///
    /// Nothing is checked until [`SignalBuilder::build`].
    pub fn builder(ty: impl Into<String>, source: impl Into<String>) -> SignalBuilder {
        SignalBuilder {
            ty: ty.into(),
            source: source.into(),
            id: None,
            subject: None,
            time: None,
            time_error: None,
            datacontenttype: None,
            dataschema: None,
            data: None,
            extensions: BTreeMap::new(),
            extension_error: None,
            trace_error: None,
        }
    }

    /// Shorthand for `Signal::builder(ty, source).data(data).build()`.
    ///
    /// # Errors
    /// As [`SignalBuilder::build`].
    pub fn new(
        ty: impl Into<String>,
        source: impl Into<String>,
        data: Value,
    ) -> Result<Signal, SignalError> {
        Signal::builder(ty, source).data(data).build()
    }

    /// The id: unique per source (a UUIDv7 unless given).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The dotted type, e.g. `user.created`: what subscriptions match against.
    pub fn ty(&self) -> &str {
        &self.ty
    }
    /// Where the signal comes from (a URI reference).
    pub fn source(&self) -> &str {
        &self.source
    }
    /// The CloudEvents version: always `"1.0"`.
    pub fn specversion(&self) -> &'static str {
        SPEC_VERSION
    }
    /// What the signal is about, within its source.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }
    /// When it happened.
    pub fn time(&self) -> DateTime<Utc> {
        self.time
    }
    /// The time in RFC 3339 form, as written on the wire.
    pub fn time_rfc3339(&self) -> String {
        self.time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }
    /// The media type of the data (`application/json` by default when data is present).
    pub fn datacontenttype(&self) -> Option<&str> {
        self.datacontenttype.as_deref()
    }
    /// The schema the data adheres to.
    pub fn dataschema(&self) -> Option<&str> {
        self.dataschema.as_deref()
    }
    /// The JSON data, if the payload is JSON.
    pub fn data(&self) -> Option<&Value> {
        match self.payload() {
            Some(Data::Json(v)) => Some(v),
            _ => None,
        }
    }
    /// The binary data, if the payload is bytes.
    pub fn data_bytes(&self) -> Option<&[u8]> {
        match self.payload() {
            Some(Data::Binary(b)) => Some(b),
            _ => None,
        }
    }
    /// The payload in either form. Data read from JSON is parsed on the first call.
    pub fn payload(&self) -> Option<&Data> {
        self.data.as_ref().map(Payload::get)
    }
    /// One extension attribute.
    pub fn extension(&self, name: &str) -> Option<&ExtensionValue> {
        self.extensions.get(name)
    }
    /// All extension attributes, sorted by name.
    pub fn extensions(&self) -> &BTreeMap<String, ExtensionValue> {
        &self.extensions
    }

    /// The W3C `traceparent` the signal carries (the CloudEvents distributed-tracing
    /// extension `traceparent`), exactly as it came: a signal read from outside keeps even
    /// an invalid one, untouched. `None` when absent or not a string.
    /// [`trace_context`](Signal::trace_context) is the checked reading.
    pub fn traceparent(&self) -> Option<&str> {
        self.extensions.get(TRACEPARENT)?.as_str()
    }

    /// The W3C `tracestate` the signal carries (extension `tracestate`), exactly as it came.
    pub fn tracestate(&self) -> Option<&str> {
        self.extensions.get(TRACESTATE)?.as_str()
    }

    /// The signal's trace context: its `traceparent` read by the W3C rules, `None` when it
    /// has none or an invalid one (which then passes through as an ordinary extension and is
    /// never used as a parent).
    ///
    /// ```
    /// use signal_bus::Signal;
    ///
    /// let s = Signal::builder("order.placed", "/shop")
    ///     .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    ///     .build()?;
    /// let tc = s.trace_context().expect("a valid traceparent");
    /// assert_eq!(tc.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    ///
    /// // From outside, an invalid one is kept as it came but is no trace context.
    /// let json = br#"{"specversion":"1.0","id":"1","source":"/x","type":"a.b","traceparent":"junk"}"#;
    /// let s = Signal::from_json_slice(json)?;
    /// assert_eq!(s.traceparent(), Some("junk"));
    /// assert_eq!(s.trace_context(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn trace_context(&self) -> Option<TraceContext> {
        TraceContext::parse(self.traceparent()?).ok()
    }

    /// A copy of this signal with one more extension (used for dead letters and origins).
    ///
    /// # Errors
    /// [`SignalError::ExtensionName`] for a name outside the CloudEvents rules.
    pub fn with_extension(
        &self,
        name: &str,
        value: impl Into<ExtensionValue>,
    ) -> Result<Signal, SignalError> {
        validate_extension_name(name)?;
        let mut s = self.clone();
        s.extensions.insert(name.to_owned(), value.into());
        s.json = OnceLock::new();
        Ok(s)
    }

    /// A copy of this signal with several more extensions.
    ///
    /// # Errors
    /// [`SignalError::ExtensionName`] for a name outside the CloudEvents rules.
    pub fn with_extensions<'a>(
        &self,
        extensions: impl IntoIterator<Item = (&'a str, ExtensionValue)>,
    ) -> Result<Signal, SignalError> {
        let mut s = self.clone();
        for (name, value) in extensions {
            validate_extension_name(name)?;
            s.extensions.insert(name.to_owned(), value);
        }
        s.json = OnceLock::new();
        Ok(s)
    }

    /// A copy of this signal with `data` as its JSON data, and the same id, type, source,
    /// time and extensions: for middleware that rewrites or redacts a payload. The copy
    /// keeps the content type of JSON data; it gets `application/json` in place of a binary
    /// payload's (or when there was none).
    ///
    /// ```
    /// use serde_json::json;
    /// use signal_bus::Signal;
    ///
    /// let signal = Signal::new("user.created", "/accounts", json!({"id": 7, "email": "a@b.c"}))?;
    /// let redacted = signal.with_data(json!({"id": 7}))?;
    /// assert_eq!((redacted.id(), redacted.data()), (signal.id(), Some(&json!({"id": 7}))));
    /// # Ok::<(), signal_bus::SignalError>(())
    /// ```
    ///
    /// # Errors
    /// [`SignalError::DataTooDeep`] when `data` nests deeper than [`MAX_DATA_DEPTH`].
    pub fn with_data(&self, data: Value) -> Result<Signal, SignalError> {
        let payload = Payload::from_value(data)?;
        let json_before = self.data.as_ref().is_some_and(|p| !p.is_binary());
        let datacontenttype = match &self.datacontenttype {
            Some(ct) if json_before => Some(ct.clone()),
            _ => Some("application/json".to_owned()),
        };
        Ok(Signal {
            id: self.id.clone(),
            source: self.source.clone(),
            ty: self.ty.clone(),
            subject: self.subject.clone(),
            time: self.time,
            datacontenttype,
            dataschema: self.dataschema.clone(),
            data: Some(payload),
            extensions: self.extensions.clone(),
            json: OnceLock::new(),
        })
    }

    /// Sets an extension in place, for signals not shared yet (`name` must be valid).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn set_extension(&mut self, name: &str, value: impl Into<ExtensionValue>) {
        debug_assert!(validate_extension_name(name).is_ok());
        self.extensions.insert(name.to_owned(), value.into());
        self.json = OnceLock::new();
    }

    /// The CloudEvents JSON bytes of this signal (structured mode).
    ///
    /// Serialized once, on first use, then shared: every HTTP target, URL and retry of the
    /// same signal sends the same bytes. Cloning the result is cheap.
    pub fn to_json_bytes(&self) -> Bytes {
        self.json
            .get_or_init(|| {
                // Serializing a Signal cannot fail: every field is a string, a number or a
                // JSON value.
                Bytes::from(serde_json::to_vec(&JsonForm(self)).unwrap_or_default())
            })
            .clone()
    }

    /// The CloudEvents JSON bytes of this signal, as a vector.
    pub fn to_json_vec(&self) -> Vec<u8> {
        self.to_json_bytes().to_vec()
    }

    /// Reads a signal from CloudEvents JSON bytes.
    ///
    /// The data is checked here but kept as text, parsed only when it is read
    /// ([`data`](Signal::data)), and written back out as it came. The verdict and the signal
    /// are the same as serde's (`serde_json::from_slice::<Signal>`, `from_str`, an element of
    /// a `Vec<Signal>`): there is one reading of a signal's JSON.
    ///
    /// # Errors
    /// The JSON error, whose message names the field and rule for invalid signals. Among
    /// them: a member named twice (a core attribute, `data`, `data_base64` or an extension,
    /// even with the same value, even when one is `null`) is refused with
    /// [`SignalError::DuplicateMember`], ``duplicate member `type` ``, never resolved by
    /// keeping the first or the last; `data` that does not make a JSON value, or nests deeper
    /// than [`MAX_DATA_DEPTH`], is refused naming `data`.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Signal, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let signal = de::Deserializer::deserialize_any(&mut de, SignalVisitor { raw_data: true })?;
        de.end()?;
        Ok(signal)
    }

    /// Builds a signal from a parsed JSON value in CloudEvents JSON form.
    ///
    /// A [`Value`] holds one member per name: parsing text into a `Value` has already kept
    /// the last of any repeated member. To refuse duplicates, read signals from the text
    /// ([`Signal::from_json_slice`] or serde), not through a `Value`.
    ///
    /// # Errors
    /// A [`SignalError`] naming the field and the rule.
    pub fn from_json_value(value: Value) -> Result<Signal, SignalError> {
        match value {
            Value::Object(map) => Signal::from_map(map),
            other => Err(SignalError::NotAnObject {
                got: json_kind(&other),
            }),
        }
    }

    fn from_map(mut map: Map<String, Value>) -> Result<Signal, SignalError> {
        let mut known: Known = Default::default();
        for (slot, field) in known.iter_mut().zip(CORE_ATTRIBUTES) {
            *slot = map.remove(field);
        }
        Signal::from_parts(known, None, map)
    }

    /// Builds a signal from its core attributes (in [`CORE_ATTRIBUTES`] order) and the remaining
    /// members, which are extensions.
    fn from_parts(
        known: Known,
        data: Option<DataIn>,
        extensions: impl IntoIterator<Item = (String, Value)>,
    ) -> Result<Signal, SignalError> {
        let [specversion, id, source, ty, subject, time, datacontenttype, dataschema, data_value, data_base64] =
            known;
        let data = data.or(data_value.map(DataIn::Value));
        fn take_str(
            value: Option<Value>,
            field: &'static str,
        ) -> Result<Option<String>, SignalError> {
            match value {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(SignalError::WrongType {
                    field: field.to_owned(),
                    expected: "a string",
                }),
            }
        }
        let specversion = take_str(specversion, "specversion")?.ok_or(SignalError::Missing {
            field: "specversion",
        })?;
        if specversion != "1.0" && specversion != "1.0.2" {
            return Err(SignalError::SpecVersion { value: specversion });
        }
        let id = take_str(id, "id")?.ok_or(SignalError::Missing { field: "id" })?;
        let source = take_str(source, "source")?.ok_or(SignalError::Missing { field: "source" })?;
        let ty = take_str(ty, "type")?.ok_or(SignalError::Missing { field: "type" })?;
        let subject = take_str(subject, "subject")?;
        let time = take_str(time, "time")?;
        let datacontenttype = take_str(datacontenttype, "datacontenttype")?;
        let dataschema = take_str(dataschema, "dataschema")?;
        let data_base64 = take_str(data_base64, "data_base64")?;
        let data = match (data, data_base64) {
            (Some(_), Some(_)) => return Err(SignalError::DataConflict),
            (Some(DataIn::Value(v)), None) => Some(Payload::from_value(v)?),
            (Some(DataIn::Raw(raw)), None) => Some(Payload::checked(raw)?),
            (None, Some(b)) => Some(Payload::Ready(Data::Binary(
                base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(|e| SignalError::InvalidBase64 {
                        reason: e.to_string(),
                    })?,
            ))),
            (None, None) => None,
        };
        let mut builder = Signal::builder(ty, source).id(id);
        builder.subject = subject;
        builder.datacontenttype = datacontenttype;
        builder.dataschema = dataschema;
        builder.data = data;
        if let Some(t) = time {
            builder = builder.time_str(&t);
        }
        for (name, value) in extensions {
            let value = match value {
                Value::String(s) => ExtensionValue::String(s),
                Value::Bool(b) => ExtensionValue::Bool(b),
                Value::Number(n) if n.is_i64() => {
                    ExtensionValue::Integer(n.as_i64().unwrap_or_default())
                }
                Value::Null => continue,
                _ => {
                    return Err(SignalError::WrongType {
                        field: name,
                        expected: "a string, an integer or a boolean (extension attribute)",
                    })
                }
            };
            builder = builder.extension(name, value);
        }
        builder.build_inner(false)
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Builds a [`Signal`]. Never fails mid-chain: [`build`](SignalBuilder::build) reports the
/// first problem.
///
/// ```
/// use serde_json::json;
/// use signal_bus::{Signal, SignalError};
///
/// let signal = Signal::builder("order.placed", "/services/shop")
///     .id("order-1042")
///     .subject("order/1042")
///     .time_str("2026-01-02T03:04:05Z")
///     .extension("tenant", "acme")
///     .data(json!({"total_cents": 129_900}))
///     .build()?;
/// assert_eq!(signal.id(), "order-1042");
/// assert_eq!(signal.datacontenttype(), Some("application/json"));
/// assert_eq!(signal.extension("tenant").map(|v| v.to_string()).as_deref(), Some("acme"));
///
/// // A bad value anywhere in the chain is reported by `build`, naming it.
/// let bad = Signal::builder("order placed", "/services/shop").build();
/// assert!(matches!(bad, Err(SignalError::InvalidType { .. })));
/// # Ok::<(), SignalError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct SignalBuilder {
    ty: String,
    source: String,
    id: Option<String>,
    subject: Option<String>,
    time: Option<DateTime<Utc>>,
    time_error: Option<SignalError>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    data: Option<Payload>,
    extensions: BTreeMap<String, ExtensionValue>,
    extension_error: Option<SignalError>,
    trace_error: Option<SignalError>,
}

impl SignalBuilder {
    /// Sets the id. Default: a new UUIDv7 (time-ordered).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// Sets the subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }
    /// Sets the time. Default: now.
    pub fn time(mut self, time: DateTime<Utc>) -> Self {
        self.time = Some(time);
        self
    }
    /// Sets the time from an RFC 3339 string; a bad string fails at `build`.
    pub fn time_str(mut self, time: &str) -> Self {
        match DateTime::parse_from_rfc3339(time) {
            Ok(t) => self.time = Some(t.with_timezone(&Utc)),
            Err(e) => {
                self.time_error = Some(SignalError::InvalidTime {
                    value: time.to_owned(),
                    reason: e.to_string(),
                })
            }
        }
        self
    }
    /// Sets JSON data. The content type defaults to `application/json`.
    pub fn data(mut self, data: Value) -> Self {
        self.data = Some(Payload::Ready(Data::Json(data)));
        self
    }
    /// Sets binary data (`data_base64` on the wire). Set a content type with
    /// [`datacontenttype`](Self::datacontenttype); the default is `application/octet-stream`.
    pub fn data_bytes(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.data = Some(Payload::Ready(Data::Binary(data.into())));
        self
    }
    /// Sets the media type of the data.
    pub fn datacontenttype(mut self, ct: impl Into<String>) -> Self {
        self.datacontenttype = Some(ct.into());
        self
    }
    /// Sets the schema URI of the data.
    pub fn dataschema(mut self, schema: impl Into<String>) -> Self {
        self.dataschema = Some(schema.into());
        self
    }
    /// Adds an extension attribute (lower-case letters and digits; checked at `build`).
    pub fn extension(mut self, name: impl Into<String>, value: impl Into<ExtensionValue>) -> Self {
        let name = name.into();
        if let Err(e) = validate_extension_name(&name) {
            self.extension_error.get_or_insert(e);
        }
        self.extensions.insert(name, value.into());
        self
    }

    /// Sets the W3C `traceparent` (the CloudEvents distributed-tracing extension), checked
    /// by the W3C Trace Context rules ([`TraceContext`]); a bad value fails at `build`,
    /// naming the value and the rule. (Through [`extension`](Self::extension) the value is
    /// not checked: that is how signals read from outside keep theirs untouched.)
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        let value = traceparent.into();
        if let Err(e) = TraceContext::parse(&value) {
            self.trace_error.get_or_insert(e);
        }
        self.extensions
            .insert(TRACEPARENT.to_owned(), ExtensionValue::String(value));
        self
    }

    /// Sets the `traceparent` from a [`TraceContext`] (valid by construction).
    pub fn trace_context(mut self, context: TraceContext) -> Self {
        self.extensions.insert(
            TRACEPARENT.to_owned(),
            ExtensionValue::String(context.to_string()),
        );
        self
    }

    /// Sets the W3C `tracestate` (extension `tracestate`), checked by
    /// [`validate_tracestate`]; a bad value fails at `build`, naming the value and the rule.
    pub fn tracestate(mut self, tracestate: impl Into<String>) -> Self {
        let value = tracestate.into();
        if let Err(e) = validate_tracestate(&value) {
            self.trace_error.get_or_insert(e);
        }
        self.extensions
            .insert(TRACESTATE.to_owned(), ExtensionValue::String(value));
        self
    }

    /// Validates and builds the signal.
    ///
    /// # Errors
    /// - `source` empty or longer than [`MAX_ATTRIBUTE_LEN`];
    /// - a type that breaks a rule of [`validate_type`] (empty, longer than [`MAX_TYPE_LEN`]
    ///   or [`MAX_TYPE_SEGMENTS`] segments, an empty segment, whitespace or a control
    ///   character);
    /// - an empty id, subject, content type or schema when given;
    /// - a time that is not RFC 3339;
    /// - an extension name that is not lower-case alphanumeric, or reuses a core attribute;
    /// - a `traceparent` or `tracestate` given to [`traceparent`](Self::traceparent) or
    ///   [`tracestate`](Self::tracestate) that breaks a W3C Trace Context rule.
    pub fn build(self) -> Result<Signal, SignalError> {
        self.build_inner(true)
    }

    fn build_inner(self, defaults: bool) -> Result<Signal, SignalError> {
        validate_type(&self.ty)?;
        if self.source.is_empty() {
            return Err(SignalError::Empty { field: "source" });
        }
        check_len("source", &self.source)?;
        if let Some(e) = self.time_error {
            return Err(e);
        }
        if let Some(e) = self.extension_error {
            return Err(e);
        }
        if let Some(e) = self.trace_error {
            return Err(e);
        }
        let id = match self.id {
            Some(id) if id.is_empty() => return Err(SignalError::Empty { field: "id" }),
            Some(id) => {
                check_len("id", &id)?;
                id
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        for (field, value) in [
            ("subject", &self.subject),
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
        ] {
            if let Some(v) = value {
                if v.is_empty() {
                    return Err(SignalError::Empty { field });
                }
                check_len(field, v)?;
            }
        }
        if let Some(ct) = &self.datacontenttype {
            // The HTTP binary mode and NATS headers carry it as a header value.
            if !ct.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
                return Err(SignalError::InvalidContentType {
                    value: shown_type(ct),
                    rule: "must be visible ASCII (spaces and tabs allowed), as a Content-Type \
                           header is",
                });
            }
        }
        let datacontenttype = match (&self.datacontenttype, &self.data, defaults) {
            (Some(_), _, _) => self.datacontenttype,
            (None, Some(p), true) if p.is_binary() => Some("application/octet-stream".to_owned()),
            (None, Some(_), true) => Some("application/json".to_owned()),
            _ => None,
        };
        Ok(Signal {
            id,
            source: self.source,
            ty: self.ty,
            subject: self.subject,
            time: self.time.unwrap_or_else(Utc::now),
            datacontenttype,
            dataschema: self.dataschema,
            data: self.data,
            extensions: self.extensions,
            json: OnceLock::new(),
        })
    }
}

impl Serialize for ExtensionValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ExtensionValue::String(s) => serializer.serialize_str(s),
            ExtensionValue::Integer(i) => serializer.serialize_i64(*i),
            ExtensionValue::Bool(b) => serializer.serialize_bool(*b),
        }
    }
}

/// The JSON form as this crate writes it with serde_json: data read from JSON goes back out
/// as the same text. (Through `Serialize` with any other serializer, the data is written as a
/// value.)
struct JsonForm<'a>(&'a Signal);

impl Serialize for JsonForm<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.0.serialize_members(&mut map, true)?;
        map.end()
    }
}

impl Signal {
    fn serialize_members<M: SerializeMap>(&self, map: &mut M, raw: bool) -> Result<(), M::Error> {
        map.serialize_entry("specversion", SPEC_VERSION)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("source", &self.source)?;
        map.serialize_entry("type", &self.ty)?;
        if let Some(s) = &self.subject {
            map.serialize_entry("subject", s)?;
        }
        map.serialize_entry("time", &self.time_rfc3339())?;
        if let Some(ct) = &self.datacontenttype {
            map.serialize_entry("datacontenttype", ct)?;
        }
        if let Some(ds) = &self.dataschema {
            map.serialize_entry("dataschema", ds)?;
        }
        for (name, value) in &self.extensions {
            map.serialize_entry(name, value)?;
        }
        match &self.data {
            Some(Payload::Raw { json, .. }) if raw => map.serialize_entry("data", json)?,
            Some(p @ Payload::Raw { .. }) => match p.get() {
                Data::Json(v) => map.serialize_entry("data", v)?,
                Data::Binary(_) => unreachable!("raw data is JSON"),
            },
            Some(Payload::Ready(Data::Json(v))) => map.serialize_entry("data", v)?,
            Some(Payload::Ready(Data::Binary(b))) => map.serialize_entry(
                "data_base64",
                &base64::engine::general_purpose::STANDARD.encode(b),
            )?,
            None => {}
        }
        Ok(())
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.serialize_members(&mut map, false)?;
        map.end()
    }
}

type Known = [Option<Value>; 10];

/// The index of `data` in [`CORE_ATTRIBUTES`].
const DATA: usize = 8;

/// The data member as read: a parsed value, or JSON text kept for later.
enum DataIn {
    Value(Value),
    Raw(Box<RawValue>),
}

/// A member name of the JSON form: a core attribute (its index in [`CORE_ATTRIBUTES`]) or an
/// extension. Core names are recognised without allocating.
struct Key(Result<usize, String>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl de::Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an attribute name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(CORE_ATTRIBUTES
                    .iter()
                    .position(|f| *f == v)
                    .ok_or_else(|| v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Reads the JSON form member by member, straight into the attributes: no intermediate
/// JSON object. With `raw_data` (only for serde_json's own deserializer) the data is kept as
/// text; other formats get it as a value.
///
/// This is the one place every reading of a signal from JSON goes through
/// ([`Signal::from_json_slice`], serde_json's `from_slice`, `from_str`, `from_reader` and
/// `from_value`, batches, flattened and untagged envelopes), and the one place that refuses
/// a member named twice: at its second name, before its value is read.
struct SignalVisitor {
    raw_data: bool,
}

impl<'de> de::Visitor<'de> for SignalVisitor {
    type Value = Signal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CloudEvents JSON object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut access: A) -> Result<Signal, A::Error> {
        let mut known: Known = Default::default();
        let mut data = None;
        // The core attributes seen so far, one bit per index in `CORE_ATTRIBUTES`; the
        // extensions' names are their map's keys.
        let mut seen = 0u16;
        let mut extensions = BTreeMap::new();
        while let Some(Key(key)) = access.next_key::<Key>()? {
            match key {
                Ok(i) if seen & (1 << i) != 0 => {
                    return Err(duplicate(CORE_ATTRIBUTES[i].to_owned()))
                }
                Ok(DATA) => {
                    seen |= 1 << DATA;
                    // Any failure inside the data is reported as the data's, on every path.
                    data = Some(if self.raw_data {
                        // Kept as text: parsed only if something reads it.
                        DataIn::Raw(access.next_value().map_err(invalid_data)?)
                    } else {
                        DataIn::Value(access.next_value().map_err(invalid_data)?)
                    });
                }
                Ok(i) => {
                    seen |= 1 << i;
                    known[i] = Some(access.next_value()?);
                }
                Err(name) => match extensions.entry(name) {
                    Entry::Occupied(e) => return Err(duplicate(e.remove_entry().0)),
                    Entry::Vacant(e) => {
                        e.insert(access.next_value::<Value>()?);
                    }
                },
            }
        }
        Signal::from_parts(known, data, extensions).map_err(de::Error::custom)
    }

    // Anything but an object: the same error as `from_json_value`.
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Signal, A::Error> {
        Err(not_an_object("an array"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Signal, E> {
        Err(not_an_object("a string"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Signal, E> {
        Err(not_an_object("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Signal, E> {
        Err(not_an_object("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Signal, E> {
        Err(not_an_object("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Signal, E> {
        Err(not_an_object("a number"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Signal, E> {
        Err(not_an_object("null"))
    }
}

fn not_an_object<E: de::Error>(got: &'static str) -> E {
    E::custom(SignalError::NotAnObject { got })
}

fn duplicate<E: de::Error>(member: String) -> E {
    E::custom(SignalError::DuplicateMember { member })
}

fn invalid_data<E: de::Error>(e: E) -> E {
    E::custom(SignalError::InvalidData {
        reason: e.to_string(),
    })
}

/// Reads the CloudEvents JSON form (structured mode), with the same rules and errors as
/// [`Signal::from_json_slice`]: a member named twice is refused
/// ([`SignalError::DuplicateMember`]), as is data that is not a JSON value or nests deeper
/// than [`MAX_DATA_DEPTH`]. Through serde the data is read as a value at once.
impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SignalVisitor { raw_data: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn type_segments_counts_every_dot() {
        let naive = |ty: &str| ty.bytes().filter(|&b| b == b'.').count() + 1;
        let alphabet = [b'.', b'a', b'Z', b'-', 0x80 | b'.', 0xae, b'/', 0];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..70 {
            for _ in 0..50 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        alphabet[(seed % alphabet.len() as u64) as usize]
                    })
                    .collect();
                let ty = String::from_utf8_lossy(&bytes);
                assert_eq!(type_segments(&ty), naive(&ty), "{ty:?}");
            }
        }
        assert_eq!(type_segments(&".".repeat(64)), 65);
        assert_eq!(type_segments("a.b.c.d.e.f.g.h.i"), 9);
    }

    fn sample() -> Signal {
        Signal::builder("user.created", "/accounts")
            .id("abc")
            .subject("user/42")
            .time_str("2024-01-02T03:04:05Z")
            .data(json!({"id": 42}))
            .extension("tenant", "acme")
            .extension("attempt", 3)
            .build()
            .unwrap()
    }

    #[test]
    fn builder_defaults() {
        let s = Signal::builder("a.b", "/src").build().unwrap();
        assert_eq!(s.specversion(), "1.0");
        let id = uuid::Uuid::parse_str(s.id()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(s.datacontenttype(), None);
        let s = Signal::new("a.b", "/src", json!([1])).unwrap();
        assert_eq!(s.datacontenttype(), Some("application/json"));
        let b = Signal::builder("a.b", "/src")
            .data_bytes(vec![1, 2])
            .build()
            .unwrap();
        assert_eq!(b.datacontenttype(), Some("application/octet-stream"));
        assert_eq!(b.data_bytes(), Some(&[1u8, 2][..]));
    }

    #[test]
    fn json_form_is_cloudevents_structured() {
        let v: Value = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            v,
            json!({
                "specversion": "1.0", "id": "abc", "source": "/accounts", "type": "user.created",
                "subject": "user/42", "time": "2024-01-02T03:04:05Z",
                "datacontenttype": "application/json", "tenant": "acme", "attempt": 3,
                "data": {"id": 42}
            })
        );
    }

    #[test]
    fn data_read_from_json_is_parsed_on_demand_and_written_back_verbatim() {
        let wire = br#"{"specversion":"1.0","id":"1","source":"/s","type":"a.b","data":{"z":1, "a":[true,null]}}"#;
        let s = Signal::from_json_slice(wire).unwrap();
        // Not parsed yet: serialization writes the text as it came (spacing and order).
        let out = String::from_utf8(s.to_json_vec()).unwrap();
        assert!(
            out.ends_with(r#""data":{"z":1, "a":[true,null]}}"#),
            "{out}"
        );
        // Read on demand, and equal to the same signal built from a value.
        assert_eq!(s.data(), Some(&json!({"z": 1, "a": [true, null]})));
        let built = Signal::from_json_value(json!({
            "specversion": "1.0", "id": "1", "source": "/s", "type": "a.b",
            "time": s.time_rfc3339(), "data": {"a": [true, null], "z": 1}
        }))
        .unwrap();
        assert_eq!(s, built);
        assert_eq!(s.clone(), s);
        // Through a `Value` deserializer too.
        let v: Value = serde_json::from_slice(wire).unwrap();
        let t: Signal = serde_json::from_value(v).unwrap();
        assert_eq!(t.data(), s.data());
        // Null data stays null.
        let n = Signal::from_json_slice(
            br#"{"specversion":"1.0","id":"1","source":"/s","type":"a","data":null}"#,
        )
        .unwrap();
        assert_eq!(n.data(), Some(&Value::Null));
    }

    #[test]
    fn data_that_does_not_make_a_value_is_refused_when_read() {
        let with = |data: &str| {
            format!(r#"{{"specversion":"1.0","id":"1","source":"/s","type":"a","data":{data}}}"#)
        };
        for bad in [
            "1e400",
            r#""\ud800""#,
            &format!("{}1{}", "[".repeat(200), "]".repeat(200)),
        ] {
            let e = Signal::from_json_slice(with(bad).as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains("`data` is not a valid JSON value"), "{bad}: {e}");
        }
        // Escapes, exponents and depth that do parse are read at once, and kept.
        let s = Signal::from_json_slice(with(r#"{"x":1.5e3,"s":"\u00e9"}"#).as_bytes()).unwrap();
        assert_eq!(s.data(), Some(&json!({"x": 1500.0, "s": "é"})));
        // Needs-a-full-parse is conservative, never wrong the other way.
        assert!(!needs_full_parse(
            br#"{"a":[1,2.5,-3,true,false,null,"e\n"]}"#
        ));
        assert!(needs_full_parse(b"1E2"));
        assert!(needs_full_parse(r#""\u0041""#.as_bytes()));
    }

    #[test]
    fn other_serde_formats_get_the_data_as_a_value() {
        let wire = br#"{"specversion":"1.0","id":"1","source":"/s","type":"a","time":"2024-01-01T00:00:00Z","data":{"k":[1]}}"#;
        let s = Signal::from_json_slice(wire).unwrap();
        // serde_json's Value serializer, through the generic `Serialize`.
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["data"], json!({"k": [1]}));
        // Flattened and untagged: the generic `Deserialize` buffers the input.
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Envelope {
            note: String,
            #[serde(flatten)]
            signal: Signal,
        }
        let env = Envelope {
            note: "n".into(),
            signal: s.clone(),
        };
        let text = serde_json::to_string(&env).unwrap();
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.signal.data(), s.data());
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Either {
            Signal(Box<Signal>),
            Other(Value),
        }
        match serde_json::from_slice::<Either>(wire).unwrap() {
            Either::Signal(t) => assert_eq!(*t, s),
            Either::Other(v) => panic!("read as {v}"),
        }
        // A repeated member is refused, whichever way the signal is read: serde's buffered
        // forms keep both names, so the visitor sees them.
        let dup = r#"{"specversion":"1.0","id":"1","source":"/s","type":"a","x":"1","x":"2"}"#;
        let e = Signal::from_json_slice(dup.as_bytes()).unwrap_err();
        assert!(e.to_string().starts_with("duplicate member `x`"), "{e}");
        let e = serde_json::from_str::<Envelope>(&format!(r#"{{"note":"n",{}"#, &dup[1..]))
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("duplicate member `x`"), "{e}");
        assert!(matches!(
            serde_json::from_str::<Either>(dup).unwrap(),
            Either::Other(_)
        ));
    }

    #[test]
    fn roundtrip_json_and_binary() {
        let s = sample();
        let back: Signal = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let b = Signal::builder("a.b", "/src")
            .data_bytes(b"\x00\xffhello".to_vec())
            .build()
            .unwrap();
        let wire = serde_json::to_value(&b).unwrap();
        assert_eq!(wire["data_base64"], json!("AP9oZWxsbw=="));
        let back: Signal = serde_json::from_value(wire).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn reads_other_sdks_output() {
        let wire = json!({
            "specversion": "1.0.2", "id": "1", "source": "urn:x", "type": "com.example.thing",
            "time": "2024-01-02T05:04:05+02:00", "comexampleext": true, "data": "text"
        });
        let s: Signal = serde_json::from_value(wire).unwrap();
        assert_eq!(s.time_rfc3339(), "2024-01-02T03:04:05Z");
        assert_eq!(
            s.extension("comexampleext"),
            Some(&ExtensionValue::Bool(true))
        );
        assert_eq!(s.data(), Some(&json!("text")));
        // No content type is invented for a read signal.
        assert_eq!(s.datacontenttype(), None);
    }

    fn err_of(v: Value) -> String {
        serde_json::from_value::<Signal>(v).unwrap_err().to_string()
    }

    #[test]
    fn bad_input_names_field_and_rule() {
        let base = || json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "a.b"});
        let mut v = base();
        v.as_object_mut().unwrap().remove("source");
        assert_eq!(err_of(v), "`source` is required");
        let mut v = base();
        v["specversion"] = json!("0.3");
        assert!(err_of(v).contains("specversion `0.3` is not supported"));
        let mut v = base();
        v["type"] = json!("user..created");
        assert_eq!(
            err_of(v),
            "type `user..created` has an empty segment at position 1"
        );
        let mut v = base();
        v["time"] = json!("yesterday");
        assert!(err_of(v).starts_with("time `yesterday` is not an RFC 3339 timestamp"));
        let mut v = base();
        v["data"] = json!(1);
        v["data_base64"] = json!("AA==");
        assert_eq!(
            err_of(v),
            "`data` and `data_base64` must not both be present"
        );
        assert_eq!(
            err_of(json!([1, 2])),
            "a signal must be a JSON object, got an array"
        );
        let mut v = base();
        v["id"] = json!(5);
        assert_eq!(err_of(v), "`id` must be a string");
        let mut v = base();
        v["Bad_Ext"] = json!("x");
        assert!(err_of(v).contains("extension name `Bad_Ext` is invalid"));
        let mut v = base();
        v["id"] = json!("");
        assert_eq!(err_of(v), "`id` must not be empty");
        let mut v = base();
        v["data_base64"] = json!("***");
        assert!(err_of(v).starts_with("`data_base64` is not valid base64"));
    }

    #[test]
    fn builder_rejects_bad_values() {
        let e = Signal::builder("user created", "/s").build().unwrap_err();
        assert!(
            e.to_string()
                .contains("type `user created` has the whitespace character ' '"),
            "{e}"
        );
        let e = Signal::builder("a", "").build().unwrap_err();
        assert_eq!(e.to_string(), "`source` must not be empty");
        let e = Signal::builder("", "/s").build().unwrap_err();
        assert_eq!(e.to_string(), "`type` must not be empty");
        let e = Signal::builder("a", "/s")
            .extension("data", 1)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("core CloudEvents attribute"));
        let e = Signal::builder("a", "/s").subject("").build().unwrap_err();
        assert_eq!(e.to_string(), "`subject` must not be empty");
        let long = "a".repeat(MAX_ATTRIBUTE_LEN + 1);
        let e = Signal::builder("a", long).build().unwrap_err();
        assert!(e.to_string().contains("more than the limit of 4096"));
    }

    #[test]
    fn types_are_any_string_without_whitespace_or_control_characters() {
        for ty in [
            "com.example/orders:created",
            "com.github.pull_request.opened",
            "a+b@c~d.#.*.**.>.$.%.[x].{y}.\\.?",
            "caf\u{e9}.\u{65e5}\u{672c}",
            "urn:example:order",
        ] {
            let s = Signal::builder(ty, "/shop").build().unwrap();
            assert_eq!(s.ty(), ty);
            // Every JSON reading takes it back.
            let json = s.to_json_vec();
            assert_eq!(Signal::from_json_slice(&json).unwrap(), s, "{ty}");
            assert_eq!(serde_json::from_slice::<Signal>(&json).unwrap(), s, "{ty}");
        }
        let why = |ty: &str| Signal::builder(ty, "/s").build().unwrap_err().to_string();
        assert_eq!(
            why("a..b"),
            "type `a..b` has an empty segment at position 1"
        );
        assert_eq!(why(".a"), "type `.a` has an empty segment at position 0");
        assert_eq!(
            why("a/b."),
            "type `a/b.` has an empty segment at position 1"
        );
        assert_eq!(
            why("orders.new\tone"),
            "type `orders.new\\tone` has the whitespace character '\\t' in segment 1: a type \
             holds no whitespace or control characters"
        );
        assert_eq!(
            why("a.b.c\u{0}"),
            "type `a.b.c\\u{0}` has the control character '\\0' in segment 2: a type holds no \
             whitespace or control characters"
        );
        assert!(why("a\u{a0}b").contains("the whitespace character '\\u{a0}' in segment 0"));
        assert!(why("x\u{2028}").contains("whitespace character"));
        assert!(why("x\u{85}").contains("control character"));
        // The length limit, in bytes, with the value shown truncated.
        let at_limit = "é".repeat(MAX_TYPE_LEN / 2);
        assert!(validate_type(&at_limit).is_ok());
        let over = format!("{at_limit}x");
        let e = why(&over);
        assert!(
            e.starts_with(&format!("type `{}...` is 1025 bytes long", "é".repeat(64))),
            "{e}"
        );
        assert!(e.ends_with("more than the limit of 1024"), "{e}");
        let many = vec!["a"; MAX_TYPE_SEGMENTS + 1].join(".");
        assert!(why(&many).ends_with("has 129 segments, more than the limit of 128"));
        // A huge bad type is named by its beginning only.
        let huge = format!("{}\n", "a".repeat(100_000));
        let e = Signal::builder(huge, "/s").build().unwrap_err();
        let SignalError::InvalidType { value, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(value, &format!("{}...", "a".repeat(128)));
    }

    #[test]
    fn json_readers_refuse_bad_types_alike() {
        for ty in ["a..b", "a b", "a\u{1b}[31m", "\u{3000}", ""] {
            let wire = serde_json::to_vec(&json!({
                "specversion": "1.0", "id": "1", "source": "/s", "type": ty
            }))
            .unwrap();
            let fast = Signal::from_json_slice(&wire).unwrap_err().to_string();
            let serde = serde_json::from_slice::<Signal>(&wire)
                .unwrap_err()
                .to_string();
            assert!(serde.starts_with(&fast), "{ty:?}: {fast} vs {serde}");
            assert!(fast.contains("type"), "{ty:?}: {fast}");
        }
    }

    #[test]
    fn json_bytes_are_computed_once_and_match_serde() {
        let s = sample();
        let a = s.to_json_bytes();
        let b = s.to_json_bytes();
        assert_eq!(a.as_ptr(), b.as_ptr(), "cached, not serialized twice");
        assert_eq!(&a[..], serde_json::to_vec(&s).unwrap().as_slice());
        // A copy with an extra extension serializes afresh.
        let t = s.with_extension("extra", 1).unwrap();
        assert!(String::from_utf8(t.to_json_vec())
            .unwrap()
            .contains("\"extra\":1"));
        assert_eq!(s, s.clone());
    }

    #[test]
    fn with_extension_copies() {
        let s = sample();
        let t = s.with_extension("deadletter", "x").unwrap();
        assert_eq!(
            t.extension("deadletter").and_then(|v| v.as_str()),
            Some("x")
        );
        assert!(s.extension("deadletter").is_none());
        assert!(s.with_extension("X", 1).is_err());
    }
}
