//! The logger adapter, observed through a capturing `tracing` subscriber.

#[path = "support/capture.rs"]
mod capture;

use std::sync::Arc;

use capture::Captured;

use serde_json::json;
use signal_bus::{
    adapter::{LogLevel, Logger},
    Adapter, Bus, ConfigError, Signal,
};
use tracing::Level;

/// Runs `f` with a subscriber at `max` level installed on this thread, returning the output.
fn capture(max: Level, f: impl FnOnce()) -> String {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_max_level(max)
        .without_time()
        .with_target(true)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    out.text()
}

fn deliver(logger: &Logger, signal: Signal) {
    let result = logger.try_deliver(&Arc::new(signal));
    assert!(matches!(result, Some(Ok(()))), "{result:?}");
}

fn signal() -> Signal {
    Signal::builder("user.created", "/accounts")
        .id("sig-1")
        .subject("user/42")
        .time_str("2024-05-01T12:00:00Z")
        .data(json!({"user_id": 42, "plan": "pro"}))
        .extension("tenant", "acme")
        .build()
        .unwrap()
}

#[test]
fn default_template_at_info_with_target() {
    let out = capture(Level::TRACE, || deliver(&Logger::info(), signal()));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains(" INFO "), "{out}");
    assert!(out.contains("signal_bus::adapter::logger:"), "{out}");
    assert!(
        out.contains("Signal user.created from /accounts (sig-1)"),
        "{out}"
    );
    assert!(!out.contains("metadata="), "{out}");
    assert!(!out.contains("data="), "{out}");
}

#[test]
fn each_level_is_used() {
    for (logger, tag) in [
        (Logger::trace(), "TRACE"),
        (Logger::debug(), "DEBUG"),
        (Logger::info(), "INFO"),
        (Logger::warn(), "WARN"),
        (Logger::error(), "ERROR"),
        (Logger::new(LogLevel::Warn), "WARN"),
    ] {
        let out = capture(Level::TRACE, || deliver(&logger, signal()));
        assert!(
            out.contains(&format!("{tag} signal_bus::adapter::logger")),
            "{tag}: {out}"
        );
    }
}

#[test]
fn every_placeholder_renders() {
    let logger = Logger::info().format(
        "t=$type s=$source i=$id sub=$subject at=$time ct=$datacontenttype d=$data x=$ext.tenant",
    );
    logger.validate().unwrap();
    let out = capture(Level::TRACE, || deliver(&logger, signal()));
    assert!(
        out.contains(
            r#"t=user.created s=/accounts i=sig-1 sub=user/42 at=2024-05-01T12:00:00Z ct=application/json d={"plan":"pro","user_id":42} x=acme"#
        ),
        "{out}"
    );
}

/// A type holding `$`, `/`, `:` and the like renders as it is: the template is compiled,
/// so a `$source` inside the type is text, not a placeholder.
#[test]
fn types_with_any_character_render_as_they_are() {
    let logger = Logger::info().format("t=$type s=$source");
    let ty = "com.example/orders:created.$source.$$.{x}*";
    let s = Signal::builder(ty, "/shop").build().unwrap();
    let out = capture(Level::TRACE, || deliver(&logger, s));
    assert!(out.contains(&format!("t={ty} s=/shop")), "{out}");
}

#[test]
fn absent_values_render_as_dash_and_bytes_as_size() {
    let logger = Logger::info().format("sub=$subject x=$ext.missing d=$data");
    let bare = Signal::builder("a.b", "/s").build().unwrap();
    let bytes = Signal::builder("a.b", "/s")
        .data_bytes(vec![0u8; 7])
        .build()
        .unwrap();
    let out = capture(Level::TRACE, || {
        deliver(&logger, bare);
        deliver(&logger, bytes);
    });
    assert!(out.contains("sub=- x=- d=-"), "{out}");
    assert!(out.contains("d=<7 bytes>"), "{out}");
}

#[test]
fn metadata_from_extensions_and_data() {
    let logger = Logger::info().metadata(["user_id", "tenant", "absent", "plan"]);
    let out = capture(Level::TRACE, || deliver(&logger, signal()));
    assert!(
        out.contains(r#"metadata="user_id=42 tenant=acme plan=pro""#),
        "{out}"
    );
    assert!(!out.contains("absent"), "{out}");
}

#[test]
fn structured_fields() {
    let logger = Logger::warn().structured(true).metadata(["tenant"]);
    let out = capture(Level::TRACE, || deliver(&logger, signal()));
    for field in [
        r#"signal_type="user.created""#,
        r#"signal_source="/accounts""#,
        r#"signal_id="sig-1""#,
        r#"signal_subject="user/42""#,
        r#"signal_time="2024-05-01T12:00:00Z""#,
        r#"metadata="tenant=acme""#,
    ] {
        assert!(out.contains(field), "missing {field}: {out}");
    }
    assert!(
        out.contains("Signal user.created from /accounts (sig-1)"),
        "{out}"
    );

    // Without `structured`, none of them.
    let out = capture(Level::TRACE, || deliver(&Logger::warn(), signal()));
    assert!(!out.contains("signal_type="), "{out}");
}

#[test]
fn include_data_and_truncation() {
    let logger = Logger::info().include_data(true);
    let out = capture(Level::TRACE, || deliver(&logger, signal()));
    assert!(
        out.contains(r#"data="{\"plan\":\"pro\",\"user_id\":42}""#),
        "{out}"
    );

    let long = Signal::new("a.b", "/s", json!({"text": "é".repeat(100)})).unwrap();
    let logger = Logger::info()
        .include_data(true)
        .max_data_len(12)
        .format("$data");
    let out = capture(Level::TRACE, || deliver(&logger, long));
    // `{"text":"` is 9 bytes, `é` is 2: 12 bytes end inside the second `é`.
    assert!(out.contains(r#"{"text":"é…(truncated)"#), "{out}");
    assert!(out.contains(r#"data="{\"text\":\"é…(truncated)""#), "{out}");
    assert!(!out.contains("éé"), "{out}");
}

#[test]
fn unknown_placeholder_is_rejected() {
    let err = Logger::info()
        .format("Signal $type by $user")
        .validate()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                option: "format",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(msg.contains("`$user`"), "{msg}");
    assert!(
        msg.contains("$type, $source, $id, $subject, $time, $data"),
        "{msg}"
    );

    let bus = Bus::builder().build().unwrap();
    let err = bus
        .subscribe("a.*", Logger::info().format("$nope"))
        .unwrap_err();
    assert!(err.to_string().contains("$nope"), "{err}");

    assert!(Logger::info().max_data_len(0).validate().is_err());
    assert!(Logger::info().metadata([""]).validate().is_err());
}

#[test]
fn filtered_out_below_the_subscriber_level() {
    let out = capture(Level::ERROR, || {
        deliver(&Logger::warn(), signal());
        deliver(&Logger::info(), signal());
    });
    assert!(out.is_empty(), "{out}");
    let out = capture(Level::ERROR, || deliver(&Logger::error(), signal()));
    assert!(out.contains("ERROR"), "{out}");
}

#[test]
fn env_filter_on_the_target() {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_env_filter("signal_bus::adapter::logger=warn")
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        deliver(&Logger::info(), signal());
        deliver(&Logger::warn().format("kept $id"), signal());
    });
    let text = out.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("kept sig-1"), "{text}");
}

#[tokio::test]
async fn through_the_bus() {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_max_level(Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let logger = Logger::info().format("bus got $type $subject");
    assert!(logger.deliver(&signal()).await.is_ok());

    let bus = Bus::builder().build().unwrap();
    bus.subscribe("user.*", logger).unwrap();
    let report = bus.publish(signal()).await.unwrap();
    assert!(report.is_ok());
    assert_eq!(
        out.text().matches("bus got user.created user/42").count(),
        2
    );
}

#[test]
fn debug_shows_options() {
    let s = format!("{:?}", Logger::error().format("$id").include_data(true));
    assert!(s.contains("level: Error"), "{s}");
    assert!(s.contains(r#"format: "$id""#), "{s}");
    assert!(s.contains("include_data: true"), "{s}");
}
