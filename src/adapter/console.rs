use std::{
    fmt,
    fmt::Write as _,
    io::{self, IsTerminal, Write},
    str::FromStr,
    sync::{Arc, Mutex, PoisonError},
};

use async_trait::async_trait;

use crate::{signal::Data, Adapter, ConfigError, DeliveryError, Signal};

/// How a [`Console`] prints a signal.
///
/// Parses case-insensitively from `json`, `pretty` and `compact`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ConsoleFormat {
    /// One line: the CloudEvents JSON of the signal. Never colored, so lines stay parseable.
    Json,
    /// Several lines: `[time] type`, then `  source: …`, `  id: …`, `  subject: …` (when
    /// present), the data content type and extensions, and the data pretty-printed and
    /// indented.
    Pretty,
    /// One line: `time type source id`, then the subject and the compact JSON data when
    /// present (the default).
    #[default]
    Compact,
}

impl fmt::Display for ConsoleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConsoleFormat::Json => "json",
            ConsoleFormat::Pretty => "pretty",
            ConsoleFormat::Compact => "compact",
        })
    }
}

impl FromStr for ConsoleFormat {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(ConsoleFormat::Json),
            "pretty" => Ok(ConsoleFormat::Pretty),
            "compact" => Ok(ConsoleFormat::Compact),
            _ => Err(ConfigError::invalid(
                "format",
                s,
                "expected one of json, pretty, compact",
            )),
        }
    }
}

/// Where the output goes.
enum Device {
    Stdout,
    Stderr,
    Writer(Mutex<Box<dyn Write + Send>>),
}

impl Device {
    fn name(&self) -> &'static str {
        match self {
            Device::Stdout => "stdout",
            Device::Stderr => "stderr",
            Device::Writer(_) => "writer",
        }
    }
}

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const CYAN: &str = "\x1b[36m";
const YELLOW: &str = "\x1b[33m";
const GREEN: &str = "\x1b[32m";
const MAGENTA: &str = "\x1b[35m";

/// Prints each signal to stdout, stderr or any writer, for development (Jido's `console`
/// adapter).
///
/// | option | default | what it does |
/// |---|---|---|
/// | device ([`stdout`](Console::stdout), [`stderr`](Console::stderr), [`writer`](Console::writer)) | stdout | where to print |
/// | [`format`](Console::format) | [`ConsoleFormat::Compact`] | one line, JSON line, or multi-line |
/// | [`colors`](Console::colors) | auto | ANSI colors: on when the device is a terminal and `NO_COLOR` is unset or empty; never for a writer |
///
/// Each signal is written with one `write_all` and flushed, so lines of concurrent
/// deliveries do not interleave. Writing blocks the calling task: this adapter is meant for
/// development, not for high volumes. Control characters inside signal attributes are escaped
/// in the compact and pretty formats, so a signal cannot move the terminal's cursor.
///
/// A failed write (a closed pipe) is a permanent [`DeliveryError`] naming the device.
///
/// ```
/// use std::sync::Arc;
/// use signal_bus::{adapter::{Console, ConsoleFormat}, Adapter, Signal};
///
/// let console = Console::writer(Vec::new()).format(ConsoleFormat::Json);
/// let signal = Arc::new(Signal::builder("user.created", "/accounts").build()?);
/// assert!(console.try_deliver(&signal).unwrap().is_ok());
///
/// // On a bus: print everything under `debug.` to stderr.
/// let bus = signal_bus::Bus::builder().build()?;
/// bus.subscribe("debug.**", Console::stderr().format(ConsoleFormat::Pretty))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Console {
    device: Device,
    format: ConsoleFormat,
    colors: bool,
}

impl fmt::Debug for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Console")
            .field("device", &self.device.name())
            .field("format", &self.format)
            .field("colors", &self.colors)
            .finish()
    }
}

impl Default for Console {
    /// [`Console::stdout`].
    fn default() -> Self {
        Console::stdout()
    }
}

/// Whether `NO_COLOR` asks for no colors (set and not empty, per no-color.org).
fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl Console {
    fn with_device(device: Device, terminal: bool) -> Self {
        Console {
            device,
            format: ConsoleFormat::default(),
            colors: terminal && !no_color(),
        }
    }

    /// Prints to standard output. Colors are on when it is a terminal and `NO_COLOR` is unset
    /// or empty (checked now).
    pub fn stdout() -> Self {
        Console::with_device(Device::Stdout, io::stdout().is_terminal())
    }

    /// Prints to standard error. Colors are on when it is a terminal and `NO_COLOR` is unset
    /// or empty (checked now).
    pub fn stderr() -> Self {
        Console::with_device(Device::Stderr, io::stderr().is_terminal())
    }

    /// Prints to any writer (a file, a buffer, a socket). Colors are off unless turned on
    /// with [`colors`](Console::colors).
    pub fn writer(writer: impl Write + Send + 'static) -> Self {
        Console::with_device(Device::Writer(Mutex::new(Box::new(writer))), false)
    }

    /// The output format.
    ///
    /// # Default
    /// [`ConsoleFormat::Compact`].
    pub fn format(mut self, format: ConsoleFormat) -> Self {
        self.format = format;
        self
    }

    /// Turns ANSI colors on or off, overriding the automatic choice. The JSON format is never
    /// colored.
    pub fn colors(mut self, colors: bool) -> Self {
        self.colors = colors;
        self
    }

    /// The device name: `stdout`, `stderr` or `writer`.
    pub fn device(&self) -> &'static str {
        self.device.name()
    }

    /// Whether output is colored (after the automatic choice or [`colors`](Console::colors)).
    pub fn colored(&self) -> bool {
        self.colors
    }

    /// The text printed for one signal, newline included.
    fn render(&self, signal: &Signal) -> Vec<u8> {
        match self.format {
            ConsoleFormat::Json => {
                let mut out = signal.to_json_vec();
                out.push(b'\n');
                out
            }
            ConsoleFormat::Compact => self.render_compact(signal).into_bytes(),
            ConsoleFormat::Pretty => self.render_pretty(signal).into_bytes(),
        }
    }

    fn paint(&self, out: &mut String, color: &str, text: &str) {
        if self.colors {
            out.push_str(color);
            push_clean(out, text);
            out.push_str(RESET);
        } else {
            push_clean(out, text);
        }
    }

    fn render_compact(&self, signal: &Signal) -> String {
        let mut out = String::with_capacity(128);
        self.paint(&mut out, DIM, &signal.time_rfc3339());
        out.push(' ');
        self.paint(&mut out, BOLD, signal.ty());
        out.push(' ');
        self.paint(&mut out, CYAN, signal.source());
        out.push(' ');
        self.paint(&mut out, DIM, signal.id());
        if let Some(subject) = signal.subject() {
            out.push(' ');
            self.paint(&mut out, YELLOW, subject);
        }
        match signal.payload() {
            Some(Data::Json(v)) => {
                out.push(' ');
                // Compact JSON escapes control characters: it stays on one line.
                self.paint(&mut out, GREEN, &v.to_string());
            }
            Some(Data::Binary(b)) => {
                out.push(' ');
                self.paint(
                    &mut out,
                    GREEN,
                    &format!("<{}>", crate::error::count(b.len(), "byte", "bytes")),
                );
            }
            _ => {}
        }
        out.push('\n');
        out
    }

    fn render_pretty(&self, signal: &Signal) -> String {
        let mut out = String::with_capacity(256);
        out.push('[');
        self.paint(&mut out, DIM, &signal.time_rfc3339());
        out.push_str("] ");
        self.paint(&mut out, BOLD, signal.ty());
        out.push('\n');
        self.pretty_line(&mut out, "source", CYAN, signal.source());
        self.pretty_line(&mut out, "id", DIM, signal.id());
        if let Some(subject) = signal.subject() {
            self.pretty_line(&mut out, "subject", YELLOW, subject);
        }
        if let Some(ct) = signal.datacontenttype() {
            self.pretty_line(&mut out, "datacontenttype", DIM, ct);
        }
        if let Some(schema) = signal.dataschema() {
            self.pretty_line(&mut out, "dataschema", DIM, schema);
        }
        for (name, value) in signal.extensions() {
            self.pretty_line(&mut out, name, MAGENTA, &value.to_string());
        }
        match signal.payload() {
            Some(Data::Json(v)) => {
                out.push_str("  data:\n");
                let pretty = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
                for line in pretty.lines() {
                    out.push_str("    ");
                    self.paint(&mut out, GREEN, line);
                    out.push('\n');
                }
            }
            Some(Data::Binary(b)) => {
                self.pretty_line(
                    &mut out,
                    "data",
                    GREEN,
                    &format!("<{}>", crate::error::count(b.len(), "byte", "bytes")),
                );
            }
            _ => {}
        }
        out
    }

    fn pretty_line(&self, out: &mut String, key: &str, color: &str, value: &str) {
        out.push_str("  ");
        out.push_str(key);
        out.push_str(": ");
        self.paint(out, color, value);
        out.push('\n');
    }

    fn write(&self, signal: &Signal) -> Result<(), DeliveryError> {
        let bytes = self.render(signal);
        let result = match &self.device {
            Device::Stdout => {
                let mut lock = io::stdout().lock();
                lock.write_all(&bytes).and_then(|()| lock.flush())
            }
            Device::Stderr => {
                let mut lock = io::stderr().lock();
                lock.write_all(&bytes).and_then(|()| lock.flush())
            }
            Device::Writer(w) => {
                // A panic in another writer call leaves the writer usable: ignore poisoning.
                let mut w = w.lock().unwrap_or_else(PoisonError::into_inner);
                w.write_all(&bytes).and_then(|()| w.flush())
            }
        };
        result.map_err(|e| {
            DeliveryError::permanent(format!(
                "console could not write to {}: {e}",
                self.device.name()
            ))
        })
    }
}

/// Appends `text`, escaping control characters (newlines, ESC) so one attribute cannot break
/// the layout or send terminal escape sequences.
fn push_clean(out: &mut String, text: &str) {
    if !text.contains(char::is_control) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
}

#[async_trait]
impl Adapter for Console {
    fn name(&self) -> &str {
        "console"
    }

    async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
        self.write(signal)
    }

    fn try_deliver(&self, signal: &Arc<Signal>) -> Option<Result<(), DeliveryError>> {
        Some(self.write(signal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let mut out = String::new();
        push_clean(&mut out, "a\nb\x1b[31mc");
        assert_eq!(out, "a\\nb\\u{1b}[31mc");
    }

    #[test]
    fn formats_parse() {
        assert_eq!(
            "JSON".parse::<ConsoleFormat>().unwrap(),
            ConsoleFormat::Json
        );
        assert!("yaml"
            .parse::<ConsoleFormat>()
            .unwrap_err()
            .to_string()
            .contains("`yaml`"));
    }
}
