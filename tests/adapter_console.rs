//! The console adapter, printing into in-memory writers.

#[path = "support/capture.rs"]
mod capture;

use std::{io, sync::Arc};

use capture::Captured;
use serde_json::json;
use signal_bus::{
    adapter::{Console, ConsoleFormat},
    Adapter, Bus, ErrorKind, Signal,
};

/// A writer whose pipe is closed.
struct Broken;

impl io::Write for Broken {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::BrokenPipe, "pipe closed"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn signal() -> Signal {
    Signal::builder("user.created", "/accounts")
        .id("sig-1")
        .subject("user/42")
        .time_str("2024-05-01T12:00:00Z")
        .data(json!({"id": 42, "tags": ["a", "b"]}))
        .extension("tenant", "acme")
        .build()
        .unwrap()
}

fn print(console: &Console, signal: Signal) {
    let result = console.try_deliver(&Arc::new(signal));
    assert!(matches!(result, Some(Ok(()))), "{result:?}");
}

#[test]
fn json_lines_parse_back() {
    let buf = Captured::default();
    let console = Console::writer(buf.clone()).format(ConsoleFormat::Json);
    let input = signal();
    print(&console, input.clone());
    print(&console, input.clone());
    let text = buf.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(text.ends_with('\n'));
    for line in lines {
        let back = Signal::from_json_slice(line.as_bytes()).unwrap();
        assert_eq!(back, input);
    }
}

#[test]
fn json_is_never_colored() {
    let buf = Captured::default();
    let console = Console::writer(buf.clone())
        .format(ConsoleFormat::Json)
        .colors(true);
    print(&console, signal());
    assert!(!buf.text().contains('\x1b'));
}

#[test]
fn compact_is_one_line() {
    let buf = Captured::default();
    let console = Console::writer(buf.clone());
    print(&console, signal());
    assert_eq!(
        buf.text(),
        "2024-05-01T12:00:00Z user.created /accounts sig-1 user/42 {\"id\":42,\"tags\":[\"a\",\"b\"]}\n"
    );

    let buf = Captured::default();
    let console = Console::writer(buf.clone()).format(ConsoleFormat::Compact);
    let bare = Signal::builder("a.b", "/s")
        .id("x")
        .time_str("2024-05-01T12:00:00Z")
        .build()
        .unwrap();
    print(&console, bare);
    assert_eq!(buf.text(), "2024-05-01T12:00:00Z a.b /s x\n");
}

/// A type holds no whitespace or control characters, so it stays one field of the compact
/// line whatever else it holds.
#[test]
fn compact_shows_any_type_as_one_field() {
    let buf = Captured::default();
    let console = Console::writer(buf.clone());
    let ty = "com.example/orders:created.caf\u{e9}+v2@eu~1.#.*";
    let s = Signal::builder(ty, "/s")
        .id("x")
        .time_str("2024-05-01T12:00:00Z")
        .build()
        .unwrap();
    print(&console, s);
    assert_eq!(buf.text(), format!("2024-05-01T12:00:00Z {ty} /s x\n"));
    assert!(Signal::builder("a.b\u{1b}[31m", "/s").build().is_err());
}

#[test]
fn compact_escapes_newlines_in_attributes() {
    let buf = Captured::default();
    let console = Console::writer(buf.clone());
    let sneaky = Signal::builder("a.b", "/s")
        .subject("line1\nline2\x1b[31m")
        .data(json!({"text": "x\ny"}))
        .build()
        .unwrap();
    print(&console, sneaky);
    let text = buf.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(!text.contains('\x1b'), "{text:?}");
}

#[test]
fn pretty_is_indented() {
    let buf = Captured::default();
    let console = Console::writer(buf.clone()).format(ConsoleFormat::Pretty);
    print(&console, signal());
    let expected = "\
[2024-05-01T12:00:00Z] user.created
  source: /accounts
  id: sig-1
  subject: user/42
  datacontenttype: application/json
  tenant: acme
  data:
    {
      \"id\": 42,
      \"tags\": [
        \"a\",
        \"b\"
      ]
    }
";
    assert_eq!(buf.text(), expected);

    let buf = Captured::default();
    let console = Console::writer(buf.clone()).format(ConsoleFormat::Pretty);
    let bytes = Signal::builder("a.b", "/s")
        .data_bytes(vec![1, 2, 3])
        .build()
        .unwrap();
    print(&console, bytes);
    let text = buf.text();
    assert!(text.contains("  data: <3 bytes>\n"), "{text}");
    assert!(!text.contains("subject:"), "{text}");
}

#[test]
fn colors_on_and_off() {
    for format in [ConsoleFormat::Compact, ConsoleFormat::Pretty] {
        let buf = Captured::default();
        let console = Console::writer(buf.clone()).format(format).colors(true);
        assert!(console.colored());
        print(&console, signal());
        let text = buf.text();
        assert!(text.contains("\x1b["), "{format}: {text:?}");
        assert!(
            text.contains("\x1b[1muser.created\x1b[0m"),
            "{format}: {text:?}"
        );

        let buf = Captured::default();
        let console = Console::writer(buf.clone()).format(format).colors(false);
        print(&console, signal());
        assert!(!buf.text().contains('\x1b'), "{format}");
    }
    // A writer is never a terminal: no colors by default.
    let buf = Captured::default();
    let console = Console::writer(buf.clone());
    assert!(!console.colored());
    print(&console, signal());
    assert!(!buf.text().contains('\x1b'));
}

#[tokio::test]
async fn write_errors_name_the_device() {
    let console = Console::writer(Broken);
    let err = console.deliver(&signal()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    let msg = err.to_string();
    assert!(msg.contains("writer"), "{msg}");
    assert!(msg.contains("pipe closed"), "{msg}");

    let fast = console.try_deliver(&Arc::new(signal()));
    assert!(matches!(fast, Some(Err(_))), "{fast:?}");

    let bus = Bus::builder().build().unwrap();
    bus.subscribe("user.*", Console::writer(Broken)).unwrap();
    let report = bus.publish(signal()).await.unwrap();
    assert!(!report.is_ok());
    let failure = report.failures().next().unwrap();
    assert!(
        failure.error.unwrap().to_string().contains("writer"),
        "{failure:?}"
    );
}

#[tokio::test]
async fn through_the_bus() {
    let buf = Captured::default();
    let bus = Bus::builder().build().unwrap();
    bus.subscribe(
        "a.*",
        Console::writer(buf.clone()).format(ConsoleFormat::Json),
    )
    .unwrap();
    let input = Signal::new("a.b", "/s", json!({"n": 1})).unwrap();
    let report = bus.publish(input.clone()).await.unwrap();
    assert!(report.is_ok());
    assert_eq!(report.delivered(), 1);
    let text = buf.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert_eq!(
        Signal::from_json_slice(text.trim_end().as_bytes()).unwrap(),
        input
    );

    // Not matching: nothing written.
    bus.publish(Signal::new("b.c", "/s", json!(null)).unwrap())
        .await
        .unwrap();
    assert_eq!(buf.text(), text);
}

#[test]
fn debug_and_name() {
    let console = Console::stderr().format(ConsoleFormat::Pretty);
    let s = format!("{console:?}");
    assert!(s.contains(r#"device: "stderr""#), "{s}");
    assert!(s.contains("format: Pretty"), "{s}");
    assert_eq!(console.name(), "console");
    assert_eq!(Console::default().device(), "stdout");
    assert_eq!(
        format!("{:?}", Console::writer(Vec::new()))
            .matches("writer")
            .count(),
        1
    );
}
