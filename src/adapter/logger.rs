use std::{fmt, io, str::FromStr, sync::Arc};

use async_trait::async_trait;
use serde_json::Value;

use crate::{Adapter, ConfigError, DeliveryError, Signal};

/// The `tracing` target of every event the [`Logger`] emits.
const TARGET: &str = "signal_bus::adapter::logger";

/// The template a [`Logger`] uses unless given another one.
const DEFAULT_TEMPLATE: &str = "Signal $type from $source ($id)";

/// The placeholders a template may use, for error messages and docs.
const VALID_PLACEHOLDERS: &str =
    "$type, $source, $id, $subject, $time, $data, $datacontenttype, $ext.<name> ($$ for a literal $)";

/// How severe the events of a [`Logger`] are: one of the five `tracing` levels.
///
/// Parses case-insensitively from `trace`, `debug`, `info`, `warn` (or `warning`) and `error`.
///
/// ```
/// use signal_bus::adapter::LogLevel;
///
/// assert_eq!("WARNING".parse::<LogLevel>()?, LogLevel::Warn);
/// assert_eq!(LogLevel::default(), LogLevel::Info);
/// assert_eq!(LogLevel::Error.to_string(), "error");
/// # Ok::<(), signal_bus::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub enum LogLevel {
    /// `tracing::Level::TRACE`.
    Trace,
    /// `tracing::Level::DEBUG`.
    Debug,
    /// `tracing::Level::INFO` (the default).
    #[default]
    Info,
    /// `tracing::Level::WARN`.
    Warn,
    /// `tracing::Level::ERROR`.
    Error,
}

impl LogLevel {
    /// The matching `tracing` level.
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Trace => tracing::Level::TRACE,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error => tracing::Level::ERROR,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        })
    }
}

impl FromStr for LogLevel {
    type Err = ConfigError;

    /// # Errors
    /// A [`ConfigError`] naming the value when it is not a level.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            _ => Err(ConfigError::invalid(
                "level",
                s,
                "expected one of trace, debug, info, warn (or warning), error",
            )),
        }
    }
}

impl From<LogLevel> for tracing::Level {
    fn from(level: LogLevel) -> Self {
        level.as_tracing()
    }
}

/// One piece of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Type,
    Source,
    Id,
    Subject,
    Time,
    Data,
    DataContentType,
    Extension(String),
}

/// A compiled message template for a [`Logger`]: the text split once into literals and
/// placeholders, so rendering a signal is one pass with no parsing.
///
/// Placeholders: `$type`, `$source`, `$id`, `$subject`, `$time` (RFC 3339), `$data` (compact
/// JSON, or `<N bytes>` for binary data), `$datacontenttype` and `$ext.<name>` (an extension
/// attribute). Absent values render as `-`. `$$` is a literal `$`, and a `$` not followed by a
/// letter is kept as is. A placeholder is the longest run of letters, digits and `_` after the
/// `$`: `$types` is the unknown placeholder `types`, while `$type.` is `$type` then a dot.
///
/// Compiling never fails; unknown placeholders are reported by
/// [`validate`](LogFormat::validate) (and so by `subscribe`).
///
/// # Default
/// `"Signal $type from $source ($id)"`.
///
/// ```
/// use signal_bus::{adapter::LogFormat, Signal};
///
/// let format = LogFormat::new("$type about $subject");
/// let signal = Signal::builder("user.created", "/accounts").build()?;
/// assert_eq!(format.render(&signal), "user.created about -");
/// assert!(LogFormat::new("$nope").validate().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat {
    template: String,
    segments: Vec<Segment>,
    unknown: Vec<String>,
    uses_data: bool,
}

impl Default for LogFormat {
    fn default() -> Self {
        LogFormat::new(DEFAULT_TEMPLATE)
    }
}

impl LogFormat {
    /// Compiles a template.
    pub fn new(template: impl Into<String>) -> Self {
        let template = template.into();
        let mut segments = Vec::new();
        let mut unknown = Vec::new();
        let mut literal = String::new();
        let bytes = template.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                // Copy up to the next `$` (always a char boundary: `$` is ASCII).
                let end = template[i..].find('$').map_or(bytes.len(), |p| i + p);
                literal.push_str(&template[i..end]);
                i = end;
                continue;
            }
            if bytes.get(i + 1) == Some(&b'$') {
                literal.push('$');
                i += 2;
                continue;
            }
            let start = i + 1;
            let end = ident_end(bytes, start);
            if end == start || !bytes[start].is_ascii_alphabetic() {
                literal.push('$');
                i += 1;
                continue;
            }
            let word = &template[start..end];
            let mut next = end;
            let segment = match word {
                "type" => Some(Segment::Type),
                "source" => Some(Segment::Source),
                "id" => Some(Segment::Id),
                "subject" => Some(Segment::Subject),
                "time" => Some(Segment::Time),
                "data" => Some(Segment::Data),
                "datacontenttype" => Some(Segment::DataContentType),
                "ext" if bytes.get(end) == Some(&b'.') => {
                    let name_end = ident_end(bytes, end + 1);
                    next = name_end;
                    if name_end == end + 1 {
                        unknown.push(format!("${word}."));
                        None
                    } else {
                        Some(Segment::Extension(template[end + 1..name_end].to_owned()))
                    }
                }
                _ => {
                    unknown.push(format!("${word}"));
                    None
                }
            };
            if let Some(segment) = segment {
                if !literal.is_empty() {
                    segments.push(Segment::Literal(std::mem::take(&mut literal)));
                }
                segments.push(segment);
            }
            i = next;
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        let uses_data = segments.contains(&Segment::Data);
        LogFormat {
            template,
            segments,
            unknown,
            uses_data,
        }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.template
    }

    /// Whether the template contains `$data`.
    pub fn uses_data(&self) -> bool {
        self.uses_data
    }

    /// Checks that every placeholder is known.
    ///
    /// # Errors
    /// A [`ConfigError`] on the `format` option naming the unknown placeholder and listing the
    /// valid ones ([`ConfigError::Many`] when there are several).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let errors: Vec<ConfigError> = self
            .unknown
            .iter()
            .map(|p| {
                ConfigError::invalid(
                    "format",
                    p,
                    format!("unknown placeholder; valid placeholders are {VALID_PLACEHOLDERS}"),
                )
            })
            .collect();
        ConfigError::from_problems(errors)
    }

    /// Renders a signal with this template (data uncapped).
    pub fn render(&self, signal: &Signal) -> String {
        let data = self.uses_data.then(|| render_data(signal, usize::MAX));
        self.render_with(signal, data.as_deref())
    }

    /// Renders with `data` already rendered (`None` when the template does not use it).
    fn render_with(&self, signal: &Signal, data: Option<&str>) -> String {
        let mut out = String::with_capacity(self.template.len() + 64);
        for segment in &self.segments {
            match segment {
                Segment::Literal(s) => out.push_str(s),
                Segment::Type => out.push_str(signal.ty()),
                Segment::Source => out.push_str(signal.source()),
                Segment::Id => out.push_str(signal.id()),
                Segment::Subject => out.push_str(signal.subject().unwrap_or("-")),
                Segment::Time => out.push_str(&signal.time_rfc3339()),
                Segment::Data => out.push_str(data.unwrap_or("-")),
                Segment::DataContentType => out.push_str(signal.datacontenttype().unwrap_or("-")),
                Segment::Extension(name) => match signal.extension(name) {
                    Some(v) => {
                        use fmt::Write as _;
                        let _ = write!(out, "{v}");
                    }
                    None => out.push('-'),
                },
            }
        }
        out
    }
}

fn ident_end(bytes: &[u8], start: usize) -> usize {
    let mut end = start;
    while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
        end += 1;
    }
    end
}

/// Marker appended to data cut at `max_data_len`.
const TRUNCATED: &str = "…(truncated)";

/// An `io::Write` that keeps at most `limit` bytes and fails once more are written, which
/// stops the JSON serializer early on large data.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.limit - self.buf.len();
        if data.len() > room {
            self.buf.extend_from_slice(&data[..room]);
            self.truncated = true;
            return Err(io::Error::other("data cap reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The data as compact JSON (or `<N bytes>`), at most `max` bytes plus a truncation marker,
/// cut on a char boundary; `-` without data.
fn render_data(signal: &Signal, max: usize) -> String {
    if let Some(bytes) = signal.data_bytes() {
        return format!("<{}>", crate::error::count(bytes.len(), "byte", "bytes"));
    }
    let Some(value) = signal.data() else {
        return "-".to_owned();
    };
    let mut w = Capped {
        buf: Vec::new(),
        limit: max,
        truncated: false,
    };
    let _ = serde_json::to_writer(&mut w, value);
    let valid = match std::str::from_utf8(&w.buf) {
        Ok(s) => s,
        // The cut fell inside a char: keep the complete chars before it.
        Err(e) => std::str::from_utf8(&w.buf[..e.valid_up_to()]).unwrap_or_default(),
    };
    let mut out = valid.to_owned();
    if w.truncated {
        out.push_str(TRUNCATED);
    }
    out
}

/// A metadata value: strings bare unless they would be ambiguous, everything else as JSON.
fn push_meta_value(out: &mut String, value: &Value) {
    match value {
        Value::String(s)
            if !s.is_empty()
                && !s.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') =>
        {
            out.push_str(s);
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Emits one event at a level chosen at run time: `tracing` macros need a static level, so
/// each arm has its own callsite.
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            LogLevel::Trace => tracing::event!(target: TARGET, tracing::Level::TRACE, $($rest)+),
            LogLevel::Debug => tracing::event!(target: TARGET, tracing::Level::DEBUG, $($rest)+),
            LogLevel::Info => tracing::event!(target: TARGET, tracing::Level::INFO, $($rest)+),
            LogLevel::Warn => tracing::event!(target: TARGET, tracing::Level::WARN, $($rest)+),
            LogLevel::Error => tracing::event!(target: TARGET, tracing::Level::ERROR, $($rest)+),
        }
    };
}

/// Logs each signal as one `tracing` event (Jido's `logger` adapter): for audit trails and
/// debugging.
///
/// Events have the target `signal_bus::adapter::logger` and the level the logger was built
/// with, so they are filtered like any other `tracing` event
/// (`RUST_LOG=signal_bus::adapter::logger=info`). Nothing is rendered when the level is
/// filtered out.
///
/// | option | default | what it does |
/// |---|---|---|
/// | level ([`Logger::new`], [`Logger::info`], ...) | info | the event's level |
/// | [`format`](Logger::format) | `"Signal $type from $source ($id)"` | the message template, see [`LogFormat`] |
/// | [`metadata`](Logger::metadata) | none | extension names or data keys, logged as one `metadata` field: `user_id=42 tenant=acme` |
/// | [`structured`](Logger::structured) | false | also log `signal_type`, `signal_source`, `signal_id`, `signal_subject`, `signal_time` fields |
/// | [`include_data`](Logger::include_data) | false | also log a `data` field with the compact JSON data |
/// | [`max_data_len`](Logger::max_data_len) | 4096 | cap on rendered data in bytes, beyond which it ends with `…(truncated)` |
///
/// Logging is synchronous: delivery always succeeds on the bus's fast path.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use signal_bus::{adapter::Logger, Bus, Signal};
///
/// let bus = Bus::builder().build()?;
/// bus.subscribe(
///     "user.*",
///     Logger::info()
///         .format("User event: $type from $source")
///         .metadata(["user_id", "tenant"]),
/// )?;
/// let report = bus
///     .publish(Signal::builder("user.created", "/accounts").build()?)
///     .await?;
/// assert!(report.is_ok());
///
/// // Unknown placeholders are refused at subscribe.
/// assert!(bus.subscribe("user.*", Logger::info().format("$typo")).is_err());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Logger {
    level: LogLevel,
    format: LogFormat,
    metadata: Arc<[String]>,
    structured: bool,
    include_data: bool,
    max_data_len: usize,
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("level", &self.level)
            .field("format", &self.format.as_str())
            .field("metadata", &self.metadata)
            .field("structured", &self.structured)
            .field("include_data", &self.include_data)
            .field("max_data_len", &self.max_data_len)
            .finish()
    }
}

impl Default for Logger {
    /// An info logger with the default template.
    fn default() -> Self {
        Logger::new(LogLevel::Info)
    }
}

impl Logger {
    /// A logger at `level`, with the default template and no extra fields.
    pub fn new(level: LogLevel) -> Self {
        Logger {
            level,
            format: LogFormat::default(),
            metadata: Arc::from(Vec::new()),
            structured: false,
            include_data: false,
            max_data_len: 4096,
        }
    }
    /// A logger at trace level.
    pub fn trace() -> Self {
        Logger::new(LogLevel::Trace)
    }
    /// A logger at debug level.
    pub fn debug() -> Self {
        Logger::new(LogLevel::Debug)
    }
    /// A logger at info level.
    pub fn info() -> Self {
        Logger::new(LogLevel::Info)
    }
    /// A logger at warn level.
    pub fn warn() -> Self {
        Logger::new(LogLevel::Warn)
    }
    /// A logger at error level.
    pub fn error() -> Self {
        Logger::new(LogLevel::Error)
    }

    /// The message template; see [`LogFormat`] for the placeholders. Compiled here, checked
    /// by [`validate`](Adapter::validate).
    pub fn format(mut self, template: impl Into<String>) -> Self {
        self.format = LogFormat::new(template);
        self
    }

    /// Extra fields to log: each name is an extension attribute of the signal or, failing
    /// that, a top-level key of its JSON object data. They are logged as one `metadata` field
    /// (`user_id=42 tenant=acme`), skipping those the signal does not have.
    pub fn metadata(mut self, fields: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.metadata = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Whether to log the signal's attributes as separate fields (`signal_type`,
    /// `signal_source`, `signal_id`, `signal_subject`, `signal_time`) besides the message.
    ///
    /// # Default
    /// `false`.
    pub fn structured(mut self, structured: bool) -> Self {
        self.structured = structured;
        self
    }

    /// Whether to log a `data` field with the compact JSON data (capped at
    /// [`max_data_len`](Logger::max_data_len)). The template can show it too with `$data`.
    ///
    /// # Default
    /// `false`.
    pub fn include_data(mut self, include: bool) -> Self {
        self.include_data = include;
        self
    }

    /// The most bytes of rendered data to log, in the `data` field and in `$data`; longer
    /// data is cut on a char boundary and ends with `…(truncated)`. Must be at least 1.
    ///
    /// # Default
    /// 4096.
    pub fn max_data_len(mut self, max: usize) -> Self {
        self.max_data_len = max;
        self
    }

    /// The level of the events.
    pub fn level(&self) -> LogLevel {
        self.level
    }

    /// The compiled template.
    pub fn log_format(&self) -> &LogFormat {
        &self.format
    }

    fn enabled(&self) -> bool {
        match self.level {
            LogLevel::Trace => tracing::enabled!(target: TARGET, tracing::Level::TRACE),
            LogLevel::Debug => tracing::enabled!(target: TARGET, tracing::Level::DEBUG),
            LogLevel::Info => tracing::enabled!(target: TARGET, tracing::Level::INFO),
            LogLevel::Warn => tracing::enabled!(target: TARGET, tracing::Level::WARN),
            LogLevel::Error => tracing::enabled!(target: TARGET, tracing::Level::ERROR),
        }
    }

    fn render_metadata(&self, signal: &Signal) -> Option<String> {
        if self.metadata.is_empty() {
            return None;
        }
        let object = signal.data().and_then(Value::as_object);
        let mut out = String::new();
        for name in self.metadata.iter() {
            let value = if let Some(ext) = signal.extension(name) {
                Value::String(ext.to_string())
            } else if let Some(v) = object.and_then(|o| o.get(name)) {
                v.clone()
            } else {
                continue;
            };
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(name);
            out.push('=');
            push_meta_value(&mut out, &value);
        }
        (!out.is_empty()).then_some(out)
    }

    fn log(&self, signal: &Signal) {
        if !self.enabled() {
            return;
        }
        let data = (self.include_data || self.format.uses_data())
            .then(|| render_data(signal, self.max_data_len));
        let message = self.format.render_with(signal, data.as_deref());
        let metadata = self.render_metadata(signal);
        let metadata = metadata.as_deref();
        let data = if self.include_data {
            data.as_deref()
        } else {
            None
        };
        if self.structured {
            let time = signal.time_rfc3339();
            event_at!(
                self.level,
                signal_type = signal.ty(),
                signal_source = signal.source(),
                signal_id = signal.id(),
                signal_subject = signal.subject(),
                signal_time = time.as_str(),
                metadata,
                data,
                "{}",
                message
            );
        } else {
            event_at!(self.level, metadata, data, "{}", message);
        }
    }
}

#[async_trait]
impl Adapter for Logger {
    fn name(&self) -> &str {
        "logger"
    }

    /// Checks the template's placeholders, the metadata names and `max_data_len`.
    fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        match self.format.validate() {
            Ok(()) => {}
            Err(ConfigError::Many(many)) => errors.extend(many),
            Err(e) => errors.push(e),
        }
        for name in self.metadata.iter() {
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '=') {
                errors.push(ConfigError::invalid(
                    "metadata",
                    format!("{name:?}"),
                    "a field name must be non-empty, without spaces or `=`",
                ));
            }
        }
        if self.max_data_len == 0 {
            errors.push(ConfigError::invalid(
                "max_data_len",
                0,
                "must be at least 1",
            ));
        }
        ConfigError::from_problems(errors)
    }

    async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
        self.log(signal);
        Ok(())
    }

    fn try_deliver(&self, signal: &Arc<Signal>) -> Option<Result<(), DeliveryError>> {
        self.log(signal);
        Some(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn signal() -> Signal {
        Signal::builder("user.created", "/accounts")
            .id("abc")
            .subject("user/42")
            .data(json!({"id": 42, "name": "Zoë"}))
            .extension("tenant", "acme")
            .build()
            .unwrap()
    }

    #[test]
    fn compiles_placeholders_and_literals() {
        let f = LogFormat::new("a $type b $$ c $ d $ext.tenant. $id$source");
        assert!(f.validate().is_ok());
        assert_eq!(
            f.render(&signal()),
            "a user.created b $ c $ d acme. abc/accounts"
        );
    }

    #[test]
    fn unknown_placeholders_are_all_reported() {
        let err = LogFormat::new("$types $ext. $foo_bar")
            .validate()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`$types`"), "{msg}");
        assert!(msg.contains("`$ext.`"), "{msg}");
        assert!(msg.contains("`$foo_bar`"), "{msg}");
        assert!(msg.contains("$datacontenttype"), "{msg}");
    }

    #[test]
    fn data_is_capped_on_a_char_boundary() {
        let s = signal();
        let full = render_data(&s, usize::MAX);
        assert_eq!(full, r#"{"id":42,"name":"Zoë"}"#);
        // Cut inside the two-byte `ë`.
        let cut = full.find('ë').unwrap() + 1;
        let out = render_data(&s, cut);
        assert_eq!(out, format!("{}{TRUNCATED}", &full[..cut - 1]));
        assert_eq!(render_data(&s, full.len()), full);
    }

    #[test]
    fn levels_parse_and_display() {
        for l in [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ] {
            assert_eq!(l.to_string().parse::<LogLevel>().unwrap(), l);
        }
        assert_eq!("Warning".parse::<LogLevel>().unwrap(), LogLevel::Warn);
        let err = "loud".parse::<LogLevel>().unwrap_err().to_string();
        assert!(err.contains("`loud`"), "{err}");
    }
}
