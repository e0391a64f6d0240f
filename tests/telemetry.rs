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
    for field in [
        "target_name=\"quiet\"",
        "adapter=\"noop\"",
        "mode=\"sync\"",
        "subscription=1",
        "signal_type=\"a.b\"",
        "signal_id=\"sig-1\"",
        "duration_us=",
        "outcome=\"ok\"",
    ] {
        assert!(lines[0].contains(field), "missing {field}: {log}");
    }
    assert!(
        lines[1].contains("WARN signal_bus::deliver: Delivery failed."),
        "{log}"
    );
    for field in [
        "target_name=\"flaky\"",
        "adapter=\"handler\"",
        "mode=\"sync\"",
        "duration_us=",
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

/// Yields to the runtime's other tasks (queue workers, runners) until a line of the capture
/// contains every needle; returns that line. Waits for the event itself, not for a time.
async fn event_with(out: &capture::Captured, needles: &[&str]) -> String {
    for _ in 0..200_000 {
        if let Some(line) = text(out)
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return line.to_owned();
        }
        tokio::task::yield_now().await;
    }
    panic!("no event with {needles:?} in:\n{}", text(out));
}

#[tokio::test(flavor = "current_thread")]
async fn async_mode_deliveries_emit_deliver_events_from_the_worker() {
    use signal_bus::{
        adapter::Channel,
        policy::{Mode, Overflow},
    };
    let (out, _guard) = capture("signal_bus::deliver=trace");
    let bus = Bus::builder().build().unwrap();
    let async_mode = Mode::Async {
        capacity: 16,
        overflow: Overflow::Block,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    bus.subscribe(
        "a.*",
        vec![
            Target::new(Channel::new(tx))
                .mode(async_mode)
                .label("later"),
            Target::new(Handler::new(|_s: Arc<Signal>| async {
                Err(DeliveryError::permanent("no such mailbox"))
            }))
            .mode(async_mode)
            .label("bouncing"),
        ],
    )
    .unwrap();
    let signal = Signal::builder("a.b", "/t").id("sig-3").build().unwrap();
    assert!(bus.publish(signal).await.unwrap().is_ok());
    // Queued is not delivered: nothing yet.
    assert!(
        !text(&out).contains("signal_bus::deliver"),
        "{}",
        text(&out)
    );
    assert!(rx.recv().await.is_some());
    let ok = event_with(
        &out,
        &["TRACE signal_bus::deliver:", "target_name=\"later\""],
    )
    .await;
    for field in [
        "adapter=\"channel\"",
        "mode=\"async\"",
        "signal_type=\"a.b\"",
        "signal_id=\"sig-3\"",
        "duration_us=",
        "outcome=\"ok\"",
    ] {
        assert!(ok.contains(field), "missing {field}: {ok}");
    }
    let failed = event_with(
        &out,
        &["WARN signal_bus::deliver:", "target_name=\"bouncing\""],
    )
    .await;
    for field in [
        "adapter=\"handler\"",
        "mode=\"async\"",
        "signal_id=\"sig-3\"",
        "duration_us=",
        "outcome=\"failed\"",
        "error_kind=permanent",
        "error=no such mailbox",
    ] {
        assert!(failed.contains(field), "missing {field}: {failed}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn batch_deliveries_emit_one_deliver_event_with_the_batch_size() {
    use signal_bus::adapter::Channel;
    use std::time::Duration;
    let (out, _guard) = capture("signal_bus::deliver=trace");
    let bus = Bus::builder().build().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    bus.subscribe(
        "a.*",
        Target::new(Channel::new(tx))
            .batch(3, Duration::from_secs(3600))
            .label("grouped"),
    )
    .unwrap();
    for i in 0..3 {
        let signal = Signal::builder("a.b", "/t")
            .id(format!("b-{i}"))
            .build()
            .unwrap();
        assert!(bus.publish(signal).await.unwrap().is_ok());
    }
    for _ in 0..3 {
        assert!(rx.recv().await.is_some());
    }
    let line = event_with(&out, &["signal_bus::deliver:", "target_name=\"grouped\""]).await;
    for field in [
        "TRACE",
        "adapter=\"channel\"",
        "mode=\"batch\"",
        "batch_size=3",
        "duration_us=",
        "outcome=\"ok\"",
    ] {
        assert!(line.contains(field), "missing {field}: {line}");
    }
    assert!(
        !line.contains("signal_id="),
        "a batch names no one signal: {line}"
    );
    assert_eq!(text(&out).lines().count(), 1, "{}", text(&out));
}

#[tokio::test(flavor = "current_thread")]
async fn forwarder_jobs_emit_deliver_events() {
    use signal_bus::{
        policy::RetryPolicy,
        queue::{DispatchMode, Forwarder, JobBackoff, MemoryStore, Queue},
    };
    use std::time::Duration;
    let (out, _guard) = capture("signal_bus::deliver=trace");
    let queue = Queue::builder(MemoryStore::new())
        .poll_interval(Duration::from_millis(5))
        .backoff(JobBackoff::Policy(RetryPolicy::constant(
            Duration::from_millis(1),
        )))
        .build();
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    bus.subscribe(
        "audit.*",
        Forwarder::new(
            "siem",
            Handler::new(move |_s: Arc<Signal>| {
                let first = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                async move {
                    if first {
                        Err(DeliveryError::retryable("siem is restarting"))
                    } else {
                        Ok(())
                    }
                }
            }),
        )
        .dispatch(DispatchMode::Async),
    )
    .unwrap();
    let signal = Signal::builder("audit.login", "/t")
        .id("job-sig")
        .build()
        .unwrap();
    assert!(bus.publish(signal).await.unwrap().is_ok());
    let runner = queue.start().unwrap();
    let failed = event_with(&out, &["WARN signal_bus::deliver:", "mode=\"forwarder\""]).await;
    let ok = event_with(&out, &["TRACE signal_bus::deliver:", "mode=\"forwarder\""]).await;
    runner.shutdown().await;
    for (line, attempt) in [(&failed, "attempt=1"), (&ok, "attempt=2")] {
        for field in [
            "target_name=forwarder:siem",
            "adapter=\"handler\"",
            "signal_type=\"audit.login\"",
            "signal_id=\"job-sig\"",
            "job_id=",
            attempt,
            "duration_us=",
        ] {
            assert!(line.contains(field), "missing {field}: {line}");
        }
    }
    assert!(
        failed.contains("outcome=\"failed\"") && failed.contains("error=siem is restarting"),
        "{failed}"
    );
    assert!(ok.contains("outcome=\"ok\""), "{ok}");
}

/// The `signal_bus::deliver` event of a forwarder's enqueue says `queued`, with the job,
/// as the report does; the `signal_bus::publish` event carries the report's counts. (Here,
/// where every test captures events: a callsite first seen by a thread with no subscriber
/// can keep a stale "never" interest while another thread installs one.)
#[tokio::test(flavor = "current_thread")]
async fn telemetry_agrees_with_the_report() {
    use signal_bus::queue::{DispatchMode, Forwarder, MemoryStore, Queue};
    let queue = Queue::new(MemoryStore::new());
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    bus.subscribe(
        "order.*",
        Forwarder::new("audit", signal_bus::adapter::Noop).dispatch(DispatchMode::Async),
    )
    .unwrap();
    let (out, _guard) = capture::capture("signal_bus::deliver=trace,signal_bus::publish=debug");
    let report = bus
        .publish(
            Signal::builder("order.paid", "/tests")
                .id("sig-1")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let job = report.get(0).unwrap().job_id().unwrap();
    let text = text(&out);
    let deliver = text
        .lines()
        .find(|l| l.contains("signal_bus::deliver"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(deliver.contains("outcome=\"queued\""), "{deliver}");
    assert!(deliver.contains(&format!("job_id={job}")), "{deliver}");
    assert!(
        deliver.contains("target_name=\"forwarder:audit\""),
        "{deliver}"
    );
    let publish = text
        .lines()
        .find(|l| l.contains("signal_bus::publish"))
        .unwrap_or_else(|| panic!("{text}"));
    for field in [
        "targets=1",
        "delivered=0",
        "queued=1",
        "dropped=0",
        "failed=0",
    ] {
        assert!(publish.contains(field), "{field}: {publish}");
    }
}
