//! The bus emits `tracing` events with stable names and fields for publish and deliver.

#[path = "support/capture.rs"]
mod capture;

use std::sync::Arc;

use capture::{capture, text};
use signal_bus::{
    adapter::{Handler, Noop},
    Bus, DeliveryError, Signal, Target,
};

#[tokio::test(flavor = "current_thread")]
async fn publish_and_deliver_events_carry_their_fields() {
    let (out, _guard) = capture("signal_bus::publish=debug,signal_bus::deliver=trace");
    let bus = Bus::builder().name("tele").build().unwrap();
    bus.subscribe(
        "a.*",
        vec![
            Target::new(Noop).label("quiet"),
            Target::new(Handler::new(|_s: Arc<Signal>| async {
                Err(DeliveryError::retryable("upstream 503"))
            }))
            .label("flaky"),
        ],
    )
    .unwrap();
    let signal = Signal::builder("a.b", "/t").id("sig-1").build().unwrap();
    bus.publish(signal).await.unwrap();
    let log = text(&out);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(lines[0].contains("TRACE signal_bus::deliver:"), "{log}");
    assert!(lines[0].contains("target_name=\"quiet\""), "{log}");
    assert!(lines[0].contains("outcome=\"ok\""), "{log}");
    assert!(
        lines[1].contains("WARN signal_bus::deliver: Delivery failed."),
        "{log}"
    );
    for field in [
        "target_name=\"flaky\"",
        "signal_type=\"a.b\"",
        "signal_id=\"sig-1\"",
        "outcome=\"failed\"",
        "error_kind=retryable",
        "error=upstream 503",
        "subscription=1",
    ] {
        assert!(lines[1].contains(field), "missing {field}: {log}");
    }
    assert!(lines[2].contains("DEBUG signal_bus::publish:"), "{log}");
    for field in ["bus=\"tele\"", "targets=2", "failed=1", "duration_us="] {
        assert!(lines[2].contains(field), "missing {field}: {log}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn successful_deliveries_are_silent_at_warn() {
    let (out, _guard) = capture("signal_bus=warn");
    let bus = Bus::builder().build().unwrap();
    bus.subscribe("a.*", Noop).unwrap();
    bus.publish(Signal::builder("a.b", "/t").build().unwrap())
        .await
        .unwrap();
    assert_eq!(text(&out), "");
}

#[tokio::test(flavor = "current_thread")]
async fn retry_circuit_and_dead_letter_events() {
    use signal_bus::policy::{CircuitBreaker, RetryPolicy};
    use std::time::Duration;
    let (out, _guard) = capture("signal_bus=info");
    let bus = Bus::builder().name("tele").build().unwrap();
    bus.subscribe(
        "a.*",
        Target::new(Handler::new(|_s: Arc<Signal>| async {
            Err(DeliveryError::retryable("upstream 503"))
        }))
        .label("flaky")
        .retry(RetryPolicy::constant(Duration::from_millis(1)).max_attempts(2))
        .circuit_breaker(CircuitBreaker::new().failure_threshold(2))
        .on_failure(Noop),
    )
    .unwrap();
    let signal = Signal::builder("a.b", "/t").id("sig-2").build().unwrap();
    bus.publish(signal).await.unwrap();
    let log = text(&out);
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {log}"))
            .to_owned()
    };
    let retry = line("signal_bus::retry: Retrying after error.");
    for field in [
        "target_name=\"flaky\"",
        "attempt=1",
        "delay_ms=1",
        "signal_id=\"sig-2\"",
    ] {
        assert!(retry.contains(field), "missing {field}: {retry}");
    }
    let opened = line("signal_bus::circuit: Circuit breaker opened.");
    assert!(
        opened.contains("from=closed") && opened.contains("to=open"),
        "{opened}"
    );
    let dead = line("signal_bus::dead_letter:");
    assert!(
        dead.contains("attempts=2") && dead.contains("error=upstream 503"),
        "{dead}"
    );
}
