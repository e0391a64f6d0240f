//! The queue never raises: every failure is reported as a `signal_bus::queue` event (Sigra
//! D-17), with the fields an operator needs (`kind`, `action`, `worker`, `forwarder`,
//! `job_id`, `attempt`). A store that fails on command drives the error paths; deleting an
//! event from the library makes one of these tests fail.

#[path = "support/capture.rs"]
mod capture;
#[path = "support/hooked_store.rs"]
mod hooked_store;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use capture::{capture, text, Captured};
use chrono::Utc;
use hooked_store::{Hook, Hooked};
use serde_json::json;
use signal_bus::{
    adapter::{Handler, Noop},
    policy::RetryPolicy,
    queue::{
        forwarder_worker, CancelReason, DispatchMode, Forwarder, Job, JobBackoff, JobState,
        JobStore, NewJob, Queue, QueueError,
    },
    Bus, DeliveryError, Signal,
};

/// A hook under which a store's writes of job outcomes (`retry`, `cancel`), or claims, fail
/// while a switch is on.
#[derive(Clone, Default)]
struct Flaky {
    fail_outcomes: Arc<AtomicBool>,
    fail_claims: Arc<AtomicBool>,
}

#[async_trait]
impl Hook for Flaky {
    fn backend(&self) -> &'static str {
        "flaky"
    }
    async fn before(&self, call: &'static str, _jobs: usize) -> Result<(), QueueError> {
        let switch = match call {
            "claim" => &self.fail_claims,
            "retry" | "cancel" => &self.fail_outcomes,
            _ => return Result::Ok(()),
        };
        if switch.load(Ordering::SeqCst) {
            return Err(QueueError::store("memory", format!("{call}: disk on fire")));
        }
        Result::Ok(())
    }
}

fn queue(store: &Hooked<Flaky>) -> Queue {
    Queue::builder(store.clone())
        .poll_interval(Duration::from_millis(10))
        .backoff(JobBackoff::Policy(RetryPolicy::constant(
            Duration::from_secs(3600),
        )))
        .build()
}

fn signal(id: &str) -> Signal {
    Signal::builder("audit.login", "/tele")
        .id(id)
        .build()
        .unwrap()
}

/// Waits until the captured log has a line with every one of `fields`; returns it.
async fn line_with(out: &Captured, fields: &[&str]) -> String {
    for _ in 0..3000 {
        let log = text(out);
        if let Some(line) = log.lines().find(|l| fields.iter().all(|f| l.contains(f))) {
            return line.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no event with {fields:?} in:\n{}", text(out));
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_outcome_write_is_reported_with_the_job() {
    let (out, _guard) = capture("signal_bus::queue=debug");
    let store = Hooked::<Flaky>::default();
    let queue = queue(&store);
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    bus.subscribe(
        "audit.**",
        Forwarder::new(
            "siem",
            Handler::new(|_s: Arc<Signal>| async { Err(DeliveryError::retryable("503")) }),
        )
        .dispatch(DispatchMode::Async),
    )
    .unwrap();
    bus.publish(signal("s-1")).await.unwrap();
    store.hook.fail_outcomes.store(true, Ordering::SeqCst);
    let runner = queue.start().unwrap();
    let job_failed = line_with(
        &out,
        &["WARN", "Job did not complete.", "kind=\"retryable\""],
    )
    .await;
    for field in [
        "worker=signal_bus.forwarder:siem",
        "forwarder=\"siem\"",
        "job_id=1",
        "attempt=1",
        "max_attempts=5",
        "error=\"503\"",
    ] {
        assert!(job_failed.contains(field), "missing {field}: {job_failed}");
    }
    let store_error = line_with(&out, &["ERROR", "kind=\"store_error\"", "action=\"retry\""]).await;
    for field in [
        "worker=signal_bus.forwarder:siem",
        "forwarder=\"siem\"",
        "job_id=1",
        "attempt=1",
        "disk on fire",
    ] {
        assert!(
            store_error.contains(field),
            "missing {field}: {store_error}"
        );
    }
    drop(runner);
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_claim_is_reported_and_the_runner_goes_on() {
    let (out, _guard) = capture("signal_bus::queue=debug");
    let store = Hooked::<Flaky>::default();
    let queue = queue(&store);
    queue.register_worker("w", Ok);
    store.hook.fail_claims.store(true, Ordering::SeqCst);
    let id = queue
        .enqueue(NewJob::new("w", json!({})))
        .await
        .unwrap()
        .unwrap();
    let runner = queue.start().unwrap();
    let line = line_with(&out, &["ERROR", "kind=\"store_error\"", "action=\"claim\""]).await;
    assert!(line.contains("queue=\"default\""), "{line}");
    store.hook.fail_claims.store(false, Ordering::SeqCst);
    let done = line_with(&out, &["DEBUG", "kind=\"completed\"", "worker=w"]).await;
    assert!(done.contains(&format!("job_id={id}")), "{done}");
    runner.shutdown().await;
}

/// A worker that completes every job.
struct Ok;
#[async_trait]
impl signal_bus::queue::Worker for Ok {
    async fn perform(&self, _job: &Job) -> signal_bus::queue::WorkOutcome {
        signal_bus::queue::WorkOutcome::Ok
    }
}

#[tokio::test(flavor = "current_thread")]
async fn cancellations_name_their_reason_and_unknown_names_are_warned_about() {
    let (out, _guard) = capture("signal_bus::queue=debug");
    let store = Hooked::<Flaky>::default();
    let queue = Queue::builder(store.clone())
        .poll_interval(Duration::from_millis(10))
        .unknown_after(Duration::from_millis(100))
        .build();
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    bus.subscribe(
        "audit.**",
        Forwarder::new("siem", Noop).dispatch(DispatchMode::Async),
    )
    .unwrap();
    bus.publish(signal("s-1")).await.unwrap();
    queue.store().delete_signal("/tele", "s-1").await.unwrap();
    queue
        .enqueue(NewJob::new(forwarder_worker("retired"), json!({})))
        .await
        .unwrap();
    let runner = queue.start().unwrap();
    let cancelled = line_with(
        &out,
        &["kind=\"cancelled\"", "cancel_reason=\"signal_not_found\""],
    )
    .await;
    assert!(cancelled.contains("forwarder=\"siem\""), "{cancelled}");
    let unknown = line_with(&out, &["WARN", "kind=\"unknown_forwarder\""]).await;
    for field in ["forwarder=\"retired\"", "count=1", "queue=\"default\""] {
        assert!(unknown.contains(field), "missing {field}: {unknown}");
    }
    runner.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn rescues_lost_leases_and_paused_forwarders_are_reported() {
    let (out, _guard) = capture("signal_bus=debug");
    let store = Hooked::<Flaky>::default();
    let queue = Queue::builder(store.clone())
        .poll_interval(Duration::from_millis(10))
        .lease(Duration::from_millis(200))
        .backoff(JobBackoff::Policy(RetryPolicy::constant(
            Duration::from_secs(3600),
        )))
        .build();
    // A runner that died holding a job: rescued, reported.
    let id = queue
        .enqueue(NewJob::new("w", json!({})))
        .await
        .unwrap()
        .unwrap();
    let now = Utc::now();
    store
        .claim("default", &["w".to_owned()], 1, "dead", now, now)
        .await
        .unwrap();
    let runner = queue.start().unwrap();
    let rescued = line_with(&out, &["WARN", "kind=\"rescued\""]).await;
    assert!(rescued.contains("count=1"), "{rescued}");
    assert_eq!(
        store.get(id).await.unwrap().unwrap().state,
        JobState::Retryable
    );
    // A forwarder whose endpoint is gone: paused, reported as an endpoint_disabled error.
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    bus.subscribe(
        "audit.**",
        Forwarder::new(
            "moved",
            Handler::new(|_s: Arc<Signal>| async {
                Err(DeliveryError::Gone {
                    message: "receiver answered HTTP 410".to_owned(),
                })
            }),
        )
        .dispatch(DispatchMode::Async),
    )
    .unwrap();
    bus.publish(signal("s-2")).await.unwrap();
    let paused = line_with(&out, &["ERROR", "signal_bus::endpoint_disabled"]).await;
    for field in ["forwarder=\"moved\"", "410"] {
        assert!(paused.contains(field), "missing {field}: {paused}");
    }
    runner.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_completion_is_reported_as_a_lost_lease() {
    struct Gate(Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>);
    #[async_trait]
    impl signal_bus::queue::Worker for Gate {
        async fn perform(&self, _job: &Job) -> signal_bus::queue::WorkOutcome {
            self.0.notify_one();
            self.1.notified().await;
            signal_bus::queue::WorkOutcome::Ok
        }
    }
    let (out, _guard) = capture("signal_bus::queue=debug");
    let store = Hooked::<Flaky>::default();
    let queue = queue(&store);
    let (started, release) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    queue.register_worker("gate", Gate(Arc::clone(&started), Arc::clone(&release)));
    let id = queue
        .enqueue(NewJob::new("gate", json!({})))
        .await
        .unwrap()
        .unwrap();
    let runner = queue.start().unwrap();
    started.notified().await;
    assert!(queue.cancel(id).await.unwrap());
    release.notify_one();
    // A heartbeat may notice first (also reported); the refused completion must be too.
    let lost = line_with(
        &out,
        &["WARN", "kind=\"lease_lost\"", "action=\"complete\""],
    )
    .await;
    for field in [
        "action=\"complete\"",
        &format!("job_id={id}"),
        "queue=\"default\"",
    ] {
        assert!(lost.contains(field), "missing {field}: {lost}");
    }
    runner.shutdown().await;
    assert_eq!(
        store.get(id).await.unwrap().unwrap().cancel_reason,
        Some(CancelReason::Manual)
    );
}
