#![cfg(feature = "http")]
//! Delivery policies end to end: retries against a loopback server that fails on command,
//! circuit breakers, disabled endpoints, dead letters, async queues and their overflow
//! modes, batching, shutdown, metrics and health.

mod support;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::json;
use signal_bus::{
    adapter::{Channel, Handler},
    bus::ENDPOINT_DISABLED_TYPE,
    dispatch_async,
    http::{Http, Webhook},
    policy::{CircuitBreaker, CircuitState, Mode, Overflow, RetryPolicy},
    queue::{DispatchMode, Forwarder, JobState, MemoryStore, Queue},
    testing::Spy,
    Adapter, Bus, DeliveryError, ErrorKind, Signal, Target,
};
use support::{Reply, TestServer};
use tokio::sync::mpsc;

fn signal(n: usize) -> Signal {
    Signal::builder("job.run", "/tests")
        .id(format!("sig-{n}"))
        .data(json!({ "n": n }))
        .build()
        .unwrap()
}

fn bus() -> Bus {
    Bus::builder().name("policies").build().unwrap()
}

fn quick_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::constant(Duration::from_millis(10))
        .max_attempts(attempts)
        .max_delay(Duration::from_millis(50))
}

#[tokio::test]
async fn a_500_then_success_is_retried_to_success() {
    let server = TestServer::start().await;
    server.reply(Reply::status(500));
    server.reply(Reply::status(502));
    let bus = bus();
    bus.subscribe(
        "job.*",
        Target::new(Http::post(&server.url("/")).unwrap()).retry(quick_retries(4)),
    )
    .unwrap();
    let report = bus.publish(signal(1)).await.unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(server.count(), 3);
    let m = bus.metrics();
    let t = m.target("http").unwrap();
    assert_eq!((t.delivered, t.failed, t.retried), (1, 0, 2));
    assert!(t.latency_p50.is_some());
}

#[tokio::test]
async fn retries_stop_at_max_attempts() {
    let server = TestServer::start().await;
    server.always(Reply::status(503));
    let bus = bus();
    bus.subscribe(
        "job.*",
        Target::new(Http::post(&server.url("/")).unwrap()).retry(quick_retries(3)),
    )
    .unwrap();
    let report = bus.publish(signal(1)).await.unwrap();
    assert_eq!(report.failed(), 1);
    assert_eq!(server.count(), 3);
    let t = bus.metrics().targets[0].clone();
    assert_eq!((t.delivered, t.failed, t.retried), (0, 1, 2));
}

#[tokio::test]
async fn permanent_failures_are_not_retried() {
    let server = TestServer::start().await;
    server.always(Reply::status(400).body("bad field"));
    let bus = bus();
    bus.subscribe(
        "job.*",
        Target::new(Http::post(&server.url("/")).unwrap()).retry(quick_retries(5)),
    )
    .unwrap();
    let report = bus.publish(signal(1)).await.unwrap();
    let e = report.get(0).unwrap().error.unwrap();
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert_eq!(e.to_string(), "receiver answered HTTP 400: bad field");
    assert_eq!(server.count(), 1, "a 400 is never retried");
}

#[tokio::test]
async fn gone_disables_the_target_and_tells_the_bus() {
    let server = TestServer::start().await;
    server.reply(Reply::status(410));
    let bus = bus();
    let disabled = Spy::attach(&bus, ENDPOINT_DISABLED_TYPE).unwrap();
    let sub = bus
        .subscribe(
            "job.*",
            Target::new(Http::post(&server.url("/gone")).unwrap())
                .retry(quick_retries(5))
                .label("partner"),
        )
        .unwrap();
    let report = bus.publish(signal(1)).await.unwrap();
    assert_eq!(
        report.get(0).unwrap().error.unwrap().kind(),
        ErrorKind::Gone
    );
    assert_eq!(server.count(), 1, "a 410 is never retried");
    let event = disabled
        .wait_for_type(ENDPOINT_DISABLED_TYPE, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(event.subject(), Some("partner"));
    assert_eq!(event.data().unwrap()["target"], "partner");
    assert!(bus.metrics().target("partner").unwrap().disabled);
    // Disabled: fails without a request until re-enabled.
    let report = bus.publish(signal(2)).await.unwrap();
    let e = report.get(0).unwrap().error.unwrap();
    assert!(
        e.to_string()
            .contains("was disabled after its endpoint answered 410 Gone"),
        "{e}"
    );
    assert_eq!(server.count(), 1);
    assert_eq!(bus.enable_target(sub, "partner").unwrap(), 1);
    assert!(bus.publish(signal(3)).await.unwrap().is_ok());
    assert_eq!(server.count(), 2);
}

/// A target posting to `server` with `policy`, and a timeout no paused-time jump can reach.
fn patient(server: &TestServer, policy: RetryPolicy) -> Target {
    Target::new(Http::post(&server.url("/")).unwrap())
        .label("patient")
        .timeout(Duration::from_secs(3600))
        .retry(policy)
}

#[tokio::test(start_paused = true)]
async fn retry_after_within_max_delay_is_waited_exactly() {
    let server = TestServer::start().await;
    server.reply(Reply::status(429).header("retry-after", "3"));
    server.reply(Reply::status(503).header("retry-after", "2"));
    let bus = bus();
    bus.subscribe(
        "job.*",
        patient(
            &server,
            RetryPolicy::exponential(Duration::from_millis(100))
                .max_attempts(3)
                .max_delay(Duration::from_secs(5)),
        ),
    )
    .unwrap();
    let report = bus.publish(signal(1)).await.unwrap();
    assert!(report.is_ok(), "{report}");
    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    // The policy alone would wait 100 ms then 200 ms (the old clamp: at most 2x that).
    for (i, asked) in [(1, 3), (2, 2)] {
        let waited = seen[i].at - seen[i - 1].at;
        let asked = Duration::from_secs(asked);
        assert!(
            asked <= waited && waited <= asked + Duration::from_millis(5),
            "retry {i} waited {waited:?}, the receiver asked {asked:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_max_delay_is_a_throttled_failure_that_says_when() {
    let server = TestServer::start().await;
    server.always(Reply::status(429).header("retry-after", "60"));
    let bus = bus();
    let (tx, mut dead) = mpsc::channel(8);
    bus.subscribe(
        "job.*",
        patient(
            &server,
            RetryPolicy::exponential(Duration::from_millis(100))
                .max_attempts(5)
                .max_delay(Duration::from_secs(5)),
        )
        .on_failure(Channel::new(tx)),
    )
    .unwrap();
    let before = chrono::Utc::now();
    let started = tokio::time::Instant::now();
    let report = bus.publish(signal(1)).await.unwrap();
    let after = chrono::Utc::now();
    assert_eq!(server.count(), 1, "no in-memory retry sooner than asked");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let outcome = report.failures().next().unwrap();
    let e = outcome.error.unwrap();
    assert!(matches!(e, DeliveryError::RetryLater { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Throttled);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(60)));
    let not_before = e.not_before().unwrap();
    assert_eq!(outcome.not_before(), Some(not_before));
    let sixty = chrono::TimeDelta::seconds(60);
    assert!(before + sixty <= not_before && not_before <= after + sixty);
    assert!(
        e.to_string().starts_with(
            "receiver asked to wait 60s, more than the 5s the retry policy allows: not retried \
             before "
        ),
        "{e}"
    );
    assert!(
        e.to_string().ends_with(": receiver answered HTTP 429"),
        "{e}"
    );
    let got = dead.recv().await.unwrap();
    let ext = |k: &str| got.extension(k).unwrap().to_string();
    assert_eq!(ext("deadletterkind"), "throttled");
    assert_eq!(ext("deadletterattempts"), "1");
    assert_eq!(
        ext("deadletternotbefore"),
        not_before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_what_max_elapsed_leaves_is_throttled_too() {
    let server = TestServer::start().await;
    server.reply(Reply::status(503).header("retry-after", "2"));
    server.always(Reply::status(503).header("retry-after", "2"));
    let bus = bus();
    bus.subscribe(
        "job.*",
        patient(
            &server,
            RetryPolicy::constant(Duration::from_millis(100))
                .max_attempts(10)
                .max_elapsed(Duration::from_secs(3)),
        ),
    )
    .unwrap();
    let report = bus.publish(signal(1)).await.unwrap();
    // 2 s waited once; then only 1 s is left of the 3 s: no second wait.
    assert_eq!(server.count(), 2);
    let e = report.failures().next().unwrap().error.unwrap();
    match e {
        DeliveryError::RetryLater { after, allowed, .. } => {
            assert_eq!(*after, Duration::from_secs(2));
            assert!(*allowed < Duration::from_secs(2), "{allowed:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_throttled_forwarder_job_is_rescheduled_to_the_time_asked_unspent() {
    let server = TestServer::start().await;
    server.always(Reply::status(429).header("retry-after", "120"));
    let queue = Queue::builder(MemoryStore::new())
        .poll_interval(Duration::from_millis(10))
        .build();
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    bus.subscribe(
        "job.*",
        Forwarder::new("throttled", Http::post(&server.url("/")).unwrap())
            .dispatch(DispatchMode::Async),
    )
    .unwrap();
    let before = chrono::Utc::now();
    bus.publish(signal(1)).await.unwrap();
    let runner = queue.start().unwrap();
    server.wait_for(1).await;
    let mut job = None;
    for _ in 0..1000 {
        if let Some(j) = queue.list(JobState::Scheduled, 10).await.unwrap().pop() {
            job = Some(j);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = chrono::Utc::now();
    runner.shutdown().await;
    let job = job.expect("the job was rescheduled");
    assert_eq!(job.attempt, 0, "a throttled job spends no attempt");
    let asked = chrono::TimeDelta::seconds(120);
    assert!(
        before + asked <= job.scheduled_at && job.scheduled_at <= after + asked,
        "{} not 120 s after [{before}, {after}]",
        job.scheduled_at
    );
    assert_eq!(server.count(), 1);
}

/// An in-process endpoint that fails or succeeds on command, counting its calls, with a
/// delay in (paused) tokio time: breaker timing is exact, whatever the machine's load.
#[derive(Clone, Default)]
struct Endpoint {
    calls: Arc<AtomicUsize>,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    delay: Arc<Mutex<Duration>>,
}

impl Endpoint {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn answer(&self, healthy: bool, delay: Duration) {
        self.healthy.store(healthy, Ordering::SeqCst);
        *self.delay.lock().unwrap() = delay;
    }
    fn target(&self) -> Target {
        let me = self.clone();
        Target::new(Handler::new(move |_s: Arc<Signal>| {
            let me = me.clone();
            async move {
                me.calls.fetch_add(1, Ordering::SeqCst);
                let delay = *me.delay.lock().unwrap();
                tokio::time::sleep(delay).await;
                if me.healthy.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(DeliveryError::retryable("receiver answered HTTP 500"))
                }
            }
        }))
    }
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_fails_fast_probes_and_closes() {
    let endpoint = Endpoint::default();
    let bus = bus();
    bus.subscribe(
        "job.*",
        endpoint.target().circuit_breaker(
            CircuitBreaker::new()
                .failure_threshold(3)
                .recovery_timeout(Duration::from_millis(300))
                .half_open_max_calls(2),
        ),
    )
    .unwrap();
    for _ in 0..3 {
        bus.publish(signal(1)).await.unwrap();
    }
    assert_eq!(endpoint.calls(), 3);
    assert_eq!(bus.metrics().targets[0].circuit, Some(CircuitState::Open));
    // Open: fails fast, the endpoint is not touched.
    let report = bus.publish(signal(2)).await.unwrap();
    let e = report.get(0).unwrap().error.unwrap();
    assert!(matches!(e, DeliveryError::CircuitOpen { .. }), "{e:?}");
    assert_eq!(endpoint.calls(), 3);
    let health = bus.health().await;
    assert!(!health[0]
        .status
        .eq(&signal_bus::adapter::HealthStatus::Healthy));
    assert!(health[0].last_error.is_some());
    // Still open just before the recovery timeout.
    tokio::time::advance(Duration::from_millis(299)).await;
    assert!(bus
        .publish(signal(2))
        .await
        .unwrap()
        .get(0)
        .unwrap()
        .error
        .is_some());
    assert_eq!(endpoint.calls(), 3);

    // After the recovery timeout exactly two probes go through at once; a third fails fast.
    tokio::time::advance(Duration::from_millis(1)).await;
    endpoint.answer(true, Duration::from_millis(200));
    let (a, b, c) = tokio::join!(
        bus.publish(signal(3)),
        bus.publish(signal(4)),
        bus.publish(signal(5))
    );
    let outcomes = [a.unwrap(), b.unwrap(), c.unwrap()];
    let ok = outcomes.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 2, "exactly half_open_max_calls probes");
    assert_eq!(endpoint.calls(), 5);
    assert_eq!(bus.metrics().targets[0].circuit, Some(CircuitState::Closed));
    assert!(bus.publish(signal(6)).await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_the_breaker() {
    let endpoint = Endpoint::default();
    let bus = bus();
    bus.subscribe(
        "job.*",
        endpoint.target().circuit_breaker(
            CircuitBreaker::new()
                .failure_threshold(1)
                .recovery_timeout(Duration::from_millis(200)),
        ),
    )
    .unwrap();
    bus.publish(signal(1)).await.unwrap();
    assert_eq!(bus.metrics().targets[0].circuit, Some(CircuitState::Open));
    tokio::time::advance(Duration::from_millis(200)).await;
    bus.publish(signal(2)).await.unwrap(); // the probe, which fails
    assert_eq!(endpoint.calls(), 2);
    assert_eq!(bus.metrics().targets[0].circuit, Some(CircuitState::Open));
    tokio::time::advance(Duration::from_millis(199)).await;
    bus.publish(signal(3)).await.unwrap();
    assert_eq!(endpoint.calls(), 2, "reopened: fails fast again");
}

/// The same breaker in front of a real HTTP endpoint: an open breaker never touches it.
#[tokio::test]
async fn an_open_breaker_spares_a_real_endpoint() {
    let server = TestServer::start().await;
    server.always(Reply::status(500));
    let bus = bus();
    bus.subscribe(
        "job.*",
        Target::new(Http::post(&server.url("/")).unwrap()).circuit_breaker(
            CircuitBreaker::new()
                .failure_threshold(2)
                .recovery_timeout(Duration::from_secs(3600)),
        ),
    )
    .unwrap();
    for n in 0..5 {
        bus.publish(signal(n)).await.unwrap();
    }
    assert_eq!(server.count(), 2);
    assert_eq!(bus.metrics().targets[0].circuit, Some(CircuitState::Open));
}

#[tokio::test]
async fn dead_letters_arrive_with_what_failed() {
    let server = TestServer::start().await;
    server.always(Reply::status(503));
    let bus = bus();
    let (tx, mut dead) = mpsc::channel(8);
    bus.subscribe(
        "job.*",
        Target::new(Http::post(&server.url("/")).unwrap())
            .label("billing")
            .retry(quick_retries(3))
            .on_failure(Channel::new(tx)),
    )
    .unwrap();
    let report = bus.publish(signal(7)).await.unwrap();
    assert_eq!(report.failed(), 1);
    let got = dead.recv().await.unwrap();
    assert_eq!(got.id(), "sig-7");
    assert_eq!(got.data().unwrap()["n"], 7);
    let ext = |k: &str| got.extension(k).unwrap().to_string();
    assert_eq!(ext("deadlettertarget"), "billing");
    assert_eq!(ext("deadletterattempts"), "3");
    assert_eq!(ext("deadletterkind"), "retryable");
    assert_eq!(ext("deadlettererror"), "receiver answered HTTP 503");
    assert_eq!(bus.metrics().target("billing").unwrap().dead_lettered, 1);
    // A delivered signal is never dead-lettered.
    server.always(Reply::status(204));
    assert!(bus.publish(signal(8)).await.unwrap().is_ok());
    assert!(dead.try_recv().is_err());
}

/// A target whose handler records the `n` of each signal, taking `delay` per signal.
fn slow_recorder(seen: &Arc<Mutex<Vec<u64>>>, delay: Duration) -> Target {
    let seen = Arc::clone(seen);
    Target::new(Handler::new(move |s: Arc<Signal>| {
        let seen = Arc::clone(&seen);
        async move {
            tokio::time::sleep(delay).await;
            seen.lock()
                .unwrap()
                .push(s.data().unwrap()["n"].as_u64().unwrap());
            Ok(())
        }
    }))
}

async fn overflow_run(overflow: Overflow) -> (Bus, Vec<bool>, Arc<Mutex<Vec<u64>>>) {
    let bus = bus();
    let seen = Arc::new(Mutex::new(Vec::new()));
    bus.subscribe(
        "job.*",
        slow_recorder(&seen, Duration::from_millis(5))
            .mode(Mode::Async {
                capacity: 2,
                overflow,
            })
            .label("slow"),
    )
    .unwrap();
    let mut ok = Vec::new();
    for n in 0..10 {
        let report = bus.publish(signal(n)).await.unwrap();
        assert!(bus.metrics().targets[0].queue_depth <= 2, "bounded");
        ok.push(report.is_ok());
    }
    let report = bus.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_complete(), "{report:?}");
    (bus, ok, seen)
}

#[tokio::test(flavor = "current_thread")]
async fn overflow_drop_newest_keeps_the_first() {
    let (bus, ok, seen) = overflow_run(Overflow::DropNewest).await;
    assert!(ok.iter().all(|o| *o), "dropping by choice is not a failure");
    assert_eq!(*seen.lock().unwrap(), [0, 1]);
    assert_eq!(bus.metrics().targets[0].dropped, 8);
}

#[tokio::test(flavor = "current_thread")]
async fn overflow_drop_oldest_keeps_the_last() {
    let (bus, ok, seen) = overflow_run(Overflow::DropOldest).await;
    assert!(ok.iter().all(|o| *o));
    assert_eq!(*seen.lock().unwrap(), [8, 9]);
    assert_eq!(bus.metrics().targets[0].dropped, 8);
}

#[tokio::test(flavor = "current_thread")]
async fn overflow_error_fails_the_outcome() {
    let (bus, ok, seen) = overflow_run(Overflow::Error).await;
    assert_eq!(
        ok,
        [true, true, false, false, false, false, false, false, false, false]
    );
    assert_eq!(*seen.lock().unwrap(), [0, 1]);
    let m = bus.metrics();
    assert_eq!((m.targets[0].dropped, m.targets[0].failed), (0, 8));
}

#[tokio::test(flavor = "current_thread")]
async fn overflow_block_waits_and_loses_nothing() {
    let (bus, ok, seen) = overflow_run(Overflow::Block).await;
    assert!(ok.iter().all(|o| *o));
    assert_eq!(*seen.lock().unwrap(), (0..10).collect::<Vec<u64>>());
    assert_eq!(bus.metrics().targets[0].dropped, 0);
}

#[tokio::test(start_paused = true)]
async fn block_gives_up_after_the_timeout() {
    let bus = bus();
    let seen = Arc::new(Mutex::new(Vec::new()));
    bus.subscribe(
        "job.*",
        slow_recorder(&seen, Duration::from_secs(3600))
            .mode(Mode::async_with_capacity(1))
            .timeout(Duration::from_secs(2)),
    )
    .unwrap();
    assert!(bus.publish(signal(0)).await.unwrap().is_ok()); // taken by the worker
    tokio::task::yield_now().await;
    assert!(bus.publish(signal(1)).await.unwrap().is_ok()); // queued
    let started = tokio::time::Instant::now();
    let report = bus.publish(signal(2)).await.unwrap();
    let e = report.get(0).unwrap().error.unwrap();
    assert!(
        matches!(e, DeliveryError::QueueFull { capacity: 1, .. }),
        "{e:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[tokio::test]
async fn publish_returns_before_async_delivery_and_shutdown_drains() {
    let bus = bus();
    let seen = Arc::new(Mutex::new(Vec::new()));
    bus.subscribe(
        "job.*",
        slow_recorder(&seen, Duration::from_millis(20)).mode(Mode::async_with_capacity(100)),
    )
    .unwrap();
    for n in 0..10 {
        assert!(bus.publish(signal(n)).await.unwrap().is_ok());
    }
    assert!(seen.lock().unwrap().len() < 10, "publish did not wait");
    let report = bus.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.drained, 10, "{report:?}");
    assert!(report.is_complete());
    assert_eq!(*seen.lock().unwrap(), (0..10).collect::<Vec<u64>>());
    assert!(
        bus.publish(signal(11)).await.is_err(),
        "closed after shutdown"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_reports_what_is_left_at_the_deadline() {
    let bus = bus();
    let seen = Arc::new(Mutex::new(Vec::new()));
    bus.subscribe(
        "job.*",
        slow_recorder(&seen, Duration::from_millis(100))
            .mode(Mode::async_with_capacity(100))
            .label("slow"),
    )
    .unwrap();
    for n in 0..10 {
        bus.publish(signal(n)).await.unwrap();
    }
    let report = bus.shutdown(Duration::from_millis(250)).await;
    assert!(!report.is_complete());
    let left = report.left[0].1;
    assert_eq!(report.left[0].0, "slow");
    assert!((5..=9).contains(&left), "{report:?}");
    // Every signal is either delivered or left, the one in the worker's hands at the
    // deadline included.
    assert_eq!(report.drained, seen.lock().unwrap().len(), "{report:?}");
    assert_eq!(report.drained + left, 10, "{report:?}");
}

struct Batches {
    sizes: Mutex<Vec<usize>>,
}

#[async_trait::async_trait]
impl Adapter for Batches {
    fn name(&self) -> &str {
        "batches"
    }
    async fn deliver(&self, _signal: &Signal) -> Result<(), DeliveryError> {
        self.sizes.lock().unwrap().push(1);
        Ok(())
    }
    async fn deliver_batch(&self, signals: &[Arc<Signal>]) -> Result<(), DeliveryError> {
        self.sizes.lock().unwrap().push(signals.len());
        Ok(())
    }
}

#[tokio::test]
async fn batching_groups_by_size_and_flushes_on_time() {
    let bus = bus();
    let batches = Arc::new(Batches {
        sizes: Mutex::new(Vec::new()),
    });
    bus.subscribe(
        "job.*",
        Target::from_arc(batches.clone()).batch(3, Duration::from_millis(150)),
    )
    .unwrap();
    for n in 0..7 {
        bus.publish(signal(n)).await.unwrap();
    }
    // The last batch of one is flushed by time alone: wait for it (no window to miss).
    for _ in 0..1000 {
        if batches.sizes.lock().unwrap().iter().sum::<usize>() == 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sizes = batches.sizes.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 7, "{sizes:?}");
    assert!(sizes.iter().all(|s| *s <= 3), "{sizes:?}");
    assert_eq!(bus.metrics().targets[0].delivered, 7);
}

/// A batch still filling when the bus shuts down counts as pending: the shutdown flushes it
/// and reports it drained (it was in neither the queue nor the worker's delivery).
#[tokio::test(start_paused = true)]
async fn shutdown_counts_a_batch_still_filling() {
    let bus = bus();
    let batches = Arc::new(Batches {
        sizes: Mutex::new(Vec::new()),
    });
    bus.subscribe(
        "job.*",
        Target::from_arc(batches.clone()).batch(10, Duration::from_secs(3600)),
    )
    .unwrap();
    for n in 0..5 {
        bus.publish(signal(n)).await.unwrap();
    }
    // Paused time moves only when every task waits: the worker has taken the five and waits
    // for five more (or the hour).
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(batches.sizes.lock().unwrap().is_empty());
    let report = bus.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.drained, 5, "{report:?}");
    assert_eq!(*batches.sizes.lock().unwrap(), [5]);
}

#[tokio::test]
async fn http_batches_are_one_request_per_batch() {
    let server = TestServer::start().await;
    let bus = bus();
    bus.subscribe(
        "job.*",
        Target::new(Http::post(&server.url("/bulk")).unwrap()).batch(5, Duration::from_millis(100)),
    )
    .unwrap();
    for n in 0..10 {
        bus.publish(signal(n)).await.unwrap();
    }
    let report = bus.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_complete());
    let reqs = server.requests();
    let total: usize = reqs
        .iter()
        .map(|r| {
            serde_json::from_slice::<Vec<Signal>>(&r.body)
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(total, 10);
    assert!(reqs.len() >= 2 && reqs.len() <= 10, "{}", reqs.len());
    assert!(reqs
        .iter()
        .all(|r| r.headers["content-type"] == "application/cloudevents-batch+json"));
}

#[tokio::test]
async fn each_webhook_url_gets_its_own_breaker() {
    let good = TestServer::start().await;
    let bad = TestServer::start().await;
    bad.always(Reply::status(500));
    let bus = bus();
    bus.subscribe(
        "job.*",
        Target::new(
            Webhook::urls([good.url("/"), bad.url("/")])
                .unwrap()
                .allow_private_networks(true),
        )
        .circuit_breaker(CircuitBreaker::new().failure_threshold(2)),
    )
    .unwrap();
    for n in 0..4 {
        bus.publish(signal(n)).await.unwrap();
    }
    let m = bus.metrics();
    assert_eq!(m.targets.len(), 2, "one target per URL");
    let by_url = |s: &TestServer| {
        m.targets
            .iter()
            .find(|t| t.target.ends_with(&s.url("/")))
            .unwrap()
            .clone()
    };
    assert_eq!(by_url(&good).circuit, Some(CircuitState::Closed));
    assert_eq!(by_url(&good).delivered, 4);
    assert_eq!(by_url(&bad).circuit, Some(CircuitState::Open));
    assert_eq!(bad.count(), 2, "the open breaker spared the failing URL");
    assert_eq!(good.count(), 4);
}

#[tokio::test]
async fn dispatch_async_returns_a_handle() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    let handler = Handler::new(move |_s: Arc<Signal>| {
        let c = Arc::clone(&c);
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let handle = dispatch_async(signal(1), handler).unwrap();
    let report = handle.await.unwrap().unwrap();
    assert!(report.is_ok());
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn invalid_policies_are_refused_at_subscribe() {
    let bus = bus();
    let e = bus
        .subscribe(
            "job.*",
            Target::new(signal_bus::adapter::Noop)
                .retry(
                    RetryPolicy::exponential(Duration::from_secs(2))
                        .max_delay(Duration::from_secs(1)),
                )
                .mode(Mode::Async {
                    capacity: 0,
                    overflow: Overflow::Block,
                })
                .batch(0, Duration::from_secs(1)),
        )
        .unwrap_err()
        .to_string();
    for part in [
        "invalid max_delay",
        "invalid capacity `0`: must be between 1 and 10,000,000",
        "invalid batch size `0`: must be between 1 and 10,000",
    ] {
        assert!(e.contains(part), "missing {part:?} in {e}");
    }
    assert!(bus.is_empty());
}
