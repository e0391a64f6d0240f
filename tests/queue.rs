//! The queue runner and the forwarder: thin jobs reloaded at run time, dispatch modes, the
//! cancel taxonomy, retries and discards, 410 pauses, panics, snoozes on an open breaker,
//! tenant workers, shutdown and rescue, runners that claim only what they can run, the
//! grace period for unknown names, lease tokens and pruning. On the in-memory store (the SQL stores run the same code
//! and their own conformance suites).

#[path = "support/scratch.rs"]
mod scratch;
use scratch::wait_until;

#[path = "support/hooked_store.rs"]
mod hooked_store;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use hooked_store::{Hook, Hooked};
use serde_json::json;
use signal_bus::{
    adapter::Handler,
    policy::{CircuitBreaker, RetryPolicy},
    queue::{
        forwarder_worker, CancelReason, DispatchMode, Forwarder, Job, JobBackoff, JobState,
        JobStore, MemoryStore, NewJob, Queue, QueueError, Retention, Scope, Tenant, TenantWorker,
        WorkOutcome, Worker,
    },
    Bus, DeliveryError, Signal,
};

fn quick_queue(store: MemoryStore) -> Queue {
    Queue::builder(store)
        .poll_interval(Duration::from_millis(10))
        .lease(Duration::from_secs(5))
        .backoff(JobBackoff::Policy(RetryPolicy::constant(
            Duration::from_millis(10),
        )))
        .build()
}

fn signal(n: usize) -> Signal {
    Signal::builder("audit.login", "/tests")
        .id(format!("sig-{n}"))
        .data(json!({ "n": n }))
        .build()
        .unwrap()
}

/// A handler recording the ids it got; `fail` decides per call.
fn recorder(
    seen: &Arc<Mutex<Vec<String>>>,
    fail: impl Fn(usize) -> Option<DeliveryError> + Send + Sync + 'static,
) -> impl signal_bus::Adapter {
    let seen = Arc::clone(seen);
    let calls = Arc::new(AtomicUsize::new(0));
    let fail = Arc::new(fail);
    Handler::new(move |s: Arc<Signal>| {
        let (seen, calls, fail) = (Arc::clone(&seen), Arc::clone(&calls), Arc::clone(&fail));
        async move {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if let Some(e) = fail(n) {
                return Err(e);
            }
            seen.lock().unwrap().push(s.id().to_owned());
            Ok(())
        }
    })
}

async fn state_of(queue: &Queue, id: i64) -> Job {
    queue.store().get(id).await.unwrap().unwrap()
}

async fn only_job(queue: &Queue) -> Job {
    let mut all = Vec::new();
    for st in JobState::ALL {
        all.extend(queue.list(st, 100).await.unwrap());
    }
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

#[tokio::test]
async fn async_forwarder_enqueues_a_thin_job_and_the_runner_delivers() {
    let store = MemoryStore::new();
    let queue = quick_queue(store.clone());
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    bus.subscribe(
        "audit.**",
        Forwarder::new("siem", recorder(&seen, |_| None)).dispatch(DispatchMode::Async),
    )
    .unwrap();
    let report = bus.publish(signal(1)).await.unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.get(0).unwrap().target, "forwarder:siem");
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing delivered before a runner runs"
    );
    let job = only_job(&queue).await;
    assert_eq!(job.worker, forwarder_worker("siem"));
    assert_eq!(job.worker, "signal_bus.forwarder:siem");
    assert_eq!(job.forwarder(), Some("siem"));
    assert_eq!(job.state, JobState::Available);
    let args = job.args.as_object().unwrap();
    let mut keys: Vec<&String> = args.keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["forwarder", "occurred_at", "signal_id", "signal_source"],
        "a thin reference"
    );
    assert_eq!(args["signal_source"], "/tests");
    assert_eq!(args["signal_id"], "sig-1");
    let runner = queue.start().unwrap();
    wait_until("delivery", || seen.lock().unwrap().len() == 1).await;
    wait_until("completion", || {
        futures_util::FutureExt::now_or_never(state_of(&queue, job.id))
            .is_some_and(|j| j.state == JobState::Completed)
    })
    .await;
    runner.shutdown().await;
}

#[tokio::test]
async fn auto_dispatch_is_sync_without_a_runner_and_async_with_one() {
    let queue = quick_queue(MemoryStore::new());
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    bus.subscribe(
        "audit.**",
        Forwarder::new("siem", recorder(&seen, |_| None)),
    )
    .unwrap();
    bus.publish(signal(1)).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), ["sig-1"], "inline without a runner");
    assert_eq!(queue.counts().await.unwrap().values().sum::<u64>(), 0);
    let runner = queue.start().unwrap();
    bus.publish(signal(2)).await.unwrap();
    wait_until("queued delivery", || seen.lock().unwrap().len() == 2).await;
    assert_eq!(queue.counts().await.unwrap()[&JobState::Completed], 1);
    let per_state = bus.metrics().queue.expect("queue depth in bus.metrics()");
    assert_eq!(per_state[&JobState::Completed], 1);
    assert_eq!(per_state[&JobState::Available], 0);
    runner.shutdown().await;
}

#[tokio::test]
async fn sync_dispatch_delivers_inline_and_reports_failures() {
    let queue = quick_queue(MemoryStore::new());
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    bus.subscribe(
        "audit.**",
        Forwarder::new(
            "siem",
            recorder(&seen, |_| Some(DeliveryError::permanent("nope"))),
        )
        .dispatch(DispatchMode::Sync),
    )
    .unwrap();
    let report = bus.publish(signal(1)).await.unwrap();
    assert_eq!(report.get(0).unwrap().error.unwrap().to_string(), "nope");
}

#[tokio::test]
async fn an_async_forwarder_needs_a_queue() {
    let bus = Bus::builder().build().unwrap();
    let e = bus
        .subscribe(
            "audit.**",
            Forwarder::new("siem", signal_bus::adapter::Noop).dispatch(DispatchMode::Async),
        )
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "target `forwarder:siem` is invalid: invalid dispatch `async`: needs a durable queue, \
         and this bus has none: build it with Bus::builder().queue(queue)"
    );
}

async fn counts_reach(
    queue: &Queue,
    what: &str,
    f: impl Fn(&std::collections::BTreeMap<JobState, u64>) -> bool,
) {
    for _ in 0..3000 {
        if f(&queue.counts().await.unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "timed out waiting for {what}: {:?}",
        queue.counts().await.unwrap()
    );
}

#[tokio::test]
async fn cancel_taxonomy() {
    let store = MemoryStore::new();
    let queue = quick_queue(store.clone());
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    bus.subscribe(
        "audit.**",
        Forwarder::new(
            "siem",
            recorder(&seen, |n| {
                (n == 0).then(|| DeliveryError::schema_mismatch("field `user` removed"))
            }),
        )
        .dispatch(DispatchMode::Async),
    )
    .unwrap();
    // 1. schema_mismatch said by the adapter, 2. signal deleted, 3. a stored signal that no
    // longer parses.
    bus.publish(signal(1)).await.unwrap();
    bus.publish(signal(2)).await.unwrap();
    bus.publish(signal(3)).await.unwrap();
    queue
        .store()
        .delete_signal("/tests", "sig-2")
        .await
        .unwrap();
    store.corrupt_signal("/tests", "sig-3", b"{not json");
    let runner = queue.start().unwrap();
    counts_reach(&queue, "all cancelled", |c| c[&JobState::Cancelled] == 3).await;
    runner.shutdown().await;
    let cancelled = queue.list(JobState::Cancelled, 10).await.unwrap();
    let reasons: Vec<Option<CancelReason>> = cancelled.iter().map(|j| j.cancel_reason).collect();
    assert_eq!(
        reasons,
        [
            Some(CancelReason::SchemaMismatch),
            Some(CancelReason::SignalNotFound),
            Some(CancelReason::SchemaMismatch)
        ]
    );
    let details: Vec<&str> = cancelled
        .iter()
        .map(|j| j.last_error.as_deref().unwrap())
        .collect();
    assert_eq!(
        details[0],
        "schema_mismatch: schema mismatch: field `user` removed"
    );
    assert_eq!(
        details[1],
        "signal_not_found: signal `sig-2` from `/tests` was deleted"
    );
    assert!(
        details[2].starts_with(
            "schema_mismatch: signal `sig-3` from `/tests` does not hold a valid signal"
        ),
        "{}",
        details[2]
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn permanent_failures_are_retried_then_discarded_not_cancelled() {
    let queue = quick_queue(MemoryStore::new());
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    // An expired API key: 401 twice, then the operator fixes it.
    let expired_key = |n: usize| {
        (n < 2).then(|| DeliveryError::permanent("receiver answered HTTP 401: key expired"))
    };
    bus.subscribe(
        "audit.**",
        Forwarder::new("siem", recorder(&seen, expired_key))
            .dispatch(DispatchMode::Async)
            .max_attempts(3),
    )
    .unwrap();
    bus.publish(signal(1)).await.unwrap();
    let id = only_job(&queue).await.id;
    let runner = queue.start().unwrap();
    wait_until("delivered on the third attempt", || {
        seen.lock().unwrap().len() == 1
    })
    .await;
    counts_reach(&queue, "completed", |c| c[&JobState::Completed] == 1).await;
    let job = state_of(&queue, id).await;
    assert_eq!((job.attempt, job.cancel_reason), (3, None));

    // Never fixed: discarded with the last error after max_attempts, never cancelled.
    let bus2 = Bus::builder().queue(queue.clone()).build().unwrap();
    bus2.subscribe(
        "audit.**",
        Forwarder::new(
            "moved",
            recorder(&seen, |_| Some(DeliveryError::permanent("HTTP 404"))),
        )
        .dispatch(DispatchMode::Async)
        .max_attempts(2),
    )
    .unwrap();
    bus2.publish(signal(2)).await.unwrap();
    counts_reach(&queue, "discarded", |c| c[&JobState::Discarded] == 1).await;
    runner.shutdown().await;
    let d = queue.list(JobState::Discarded, 1).await.unwrap().remove(0);
    assert_eq!(
        (d.attempt, d.last_error.as_deref(), d.cancel_reason),
        (2, Some("HTTP 404"), None)
    );
}

#[tokio::test]
async fn gone_pauses_the_forwarder_and_keeps_every_job() {
    let queue = quick_queue(MemoryStore::new());
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gone_once = |n: usize| {
        (n == 0).then(|| DeliveryError::Gone {
            message: "receiver answered HTTP 410".to_owned(),
        })
    };
    bus.subscribe(
        "audit.**",
        Forwarder::new("siem", recorder(&seen, gone_once)).dispatch(DispatchMode::Async),
    )
    .unwrap();
    for n in 0..3 {
        bus.publish(signal(n)).await.unwrap();
    }
    let runner = queue.start().unwrap();
    assert!(bus.metrics().queue_paused.is_empty());
    wait_until("paused", || queue.paused_forwarders() == ["siem"]).await;
    assert_eq!(
        bus.metrics().queue_paused,
        ["siem"],
        "metrics show the pause"
    );
    // Every job waits, none spent an attempt.
    counts_reach(&queue, "all back, waiting", |c| {
        c[&JobState::Executing] == 0 && c[&JobState::Available] + c[&JobState::Scheduled] == 3
    })
    .await;
    for st in [JobState::Available, JobState::Scheduled] {
        for j in queue.list(st, 10).await.unwrap() {
            assert_eq!(j.attempt, 0, "{j:?}");
        }
    }
    assert!(queue.resume_forwarder("siem"));
    assert!(!queue.resume_forwarder("siem"), "already running");
    assert!(bus.metrics().queue_paused.is_empty(), "resumed");
    counts_reach(&queue, "all delivered", |c| c[&JobState::Completed] == 3).await;
    runner.shutdown().await;
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn errors_are_retried_then_discarded_and_can_be_redriven() {
    let queue = quick_queue(MemoryStore::new());
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fail_first_two = |n: usize| (n < 2).then(|| DeliveryError::retryable("receiver 503"));
    bus.subscribe(
        "audit.login",
        Forwarder::new("flaky", recorder(&seen, fail_first_two)).dispatch(DispatchMode::Async),
    )
    .unwrap();
    bus.publish(signal(1)).await.unwrap();
    let id = only_job(&queue).await.id;
    let runner = queue.start().unwrap();
    wait_until("success on the third attempt", || {
        seen.lock().unwrap().len() == 1
    })
    .await;
    counts_reach(&queue, "completed", |c| c[&JobState::Completed] == 1).await;
    let job = state_of(&queue, id).await;
    assert_eq!((job.state, job.attempt), (JobState::Completed, 3));
    assert_eq!(job.last_error.as_deref(), Some("receiver 503"));

    // Always failing, two attempts: discarded, then redriven by hand.
    let bus2 = Bus::builder().queue(queue.clone()).build().unwrap();
    let never = Arc::new(Mutex::new(Vec::new()));
    bus2.subscribe(
        "audit.logout",
        Forwarder::new(
            "down",
            recorder(&never, |_| Some(DeliveryError::retryable("down"))),
        )
        .dispatch(DispatchMode::Async)
        .max_attempts(2),
    )
    .unwrap();
    bus2.publish(
        Signal::builder("audit.logout", "/t")
            .id("out-1")
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    wait_until("discarded", || {
        futures_util::FutureExt::now_or_never(queue.counts())
            .and_then(Result::ok)
            .is_some_and(|c| c[&JobState::Discarded] == 1)
    })
    .await;
    let discarded = queue.list(JobState::Discarded, 10).await.unwrap();
    assert_eq!(discarded[0].attempt, 2);
    runner.shutdown().await;
    assert_eq!(queue.redrive(&[discarded[0].id]).await.unwrap(), 1);
    assert_eq!(
        state_of(&queue, discarded[0].id).await.state,
        JobState::Available
    );
}

struct Panicking;

#[async_trait::async_trait]
impl Worker for Panicking {
    async fn perform(&self, _job: &Job) -> WorkOutcome {
        panic!("worker bug")
    }
}

#[tokio::test]
async fn a_panicking_worker_becomes_an_error_and_the_runner_goes_on() {
    let queue = quick_queue(MemoryStore::new());
    queue.register_worker("panics", Panicking);
    let id = queue
        .enqueue(NewJob::new("panics", json!({})).max_attempts(1))
        .await
        .unwrap()
        .unwrap();
    let fine = queue
        .enqueue(NewJob::new("fine", json!({})))
        .await
        .unwrap()
        .unwrap();
    struct Fine;
    #[async_trait::async_trait]
    impl Worker for Fine {
        async fn perform(&self, _job: &Job) -> WorkOutcome {
            WorkOutcome::Ok
        }
    }
    queue.register_worker("fine", Fine);
    let runner = queue.start().unwrap();
    counts_reach(&queue, "both done", |c| {
        c[&JobState::Discarded] == 1 && c[&JobState::Completed] == 1
    })
    .await;
    runner.shutdown().await;
    let job = state_of(&queue, id).await;
    assert_eq!(
        job.last_error.as_deref(),
        Some("adapter panicked: worker bug")
    );
    assert_eq!(state_of(&queue, fine).await.state, JobState::Completed);
}

#[tokio::test]
async fn an_open_breaker_snoozes_without_spending_attempts() {
    // The failed job's retry waits an hour, so it cannot come back (and be snoozed too)
    // while the test looks, however slow the machine.
    let queue = Queue::builder(MemoryStore::new())
        .poll_interval(Duration::from_millis(10))
        .backoff(JobBackoff::Policy(RetryPolicy::constant(
            Duration::from_secs(3600),
        )))
        .build();
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    bus.subscribe(
        "audit.**",
        Forwarder::new(
            "guarded",
            recorder(&seen, |_| Some(DeliveryError::retryable("503"))),
        )
        .dispatch(DispatchMode::Async)
        .circuit_breaker(
            CircuitBreaker::new()
                .failure_threshold(1)
                .recovery_timeout(Duration::from_secs(60)),
        ),
    )
    .unwrap();
    bus.publish(signal(1)).await.unwrap();
    bus.publish(signal(2)).await.unwrap();
    let runner = queue.start().unwrap();
    counts_reach(&queue, "one retryable, one snoozed", |c| {
        c[&JobState::Retryable] == 1 && c[&JobState::Scheduled] == 1
    })
    .await;
    runner.shutdown().await;
    let snoozed = queue.list(JobState::Scheduled, 10).await.unwrap();
    assert_eq!(snoozed[0].attempt, 0, "a snooze spends no attempt");
    let retried = queue.list(JobState::Retryable, 10).await.unwrap();
    assert_eq!(retried[0].attempt, 1);
}

struct Audit {
    scopes: Arc<Mutex<Vec<Scope>>>,
}

#[async_trait::async_trait]
impl TenantWorker for Audit {
    async fn perform(&self, scope: Scope, _job: &Job) -> WorkOutcome {
        self.scopes.lock().unwrap().push(scope);
        WorkOutcome::Ok
    }
}

#[tokio::test]
async fn tenant_workers_need_both_keys() {
    let queue = quick_queue(MemoryStore::new());
    let scopes = Arc::new(Mutex::new(Vec::new()));
    queue.register_worker(
        "audit",
        Tenant(Audit {
            scopes: Arc::clone(&scopes),
        }),
    );
    let e = queue
        .enqueue_tenant(NewJob::new("audit", json!({"organization_id": "org-1"})))
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::MissingArg { key: "actor_id" }));
    assert_eq!(
        e.to_string(),
        "job args must contain `actor_id` (null is allowed, absent is not)"
    );
    queue
        .enqueue_tenant(NewJob::new(
            "audit",
            json!({"organization_id": "org-1", "actor_id": null}),
        ))
        .await
        .unwrap();
    // A hand-built job that skipped the check is cancelled at run time.
    let bad = queue
        .enqueue(NewJob::new("audit", json!({"actor_id": "u1"})))
        .await
        .unwrap()
        .unwrap();
    let runner = queue.start().unwrap();
    wait_until("the good job ran", || scopes.lock().unwrap().len() == 1).await;
    wait_until("the bad job was cancelled", || {
        futures_util::FutureExt::now_or_never(state_of(&queue, bad))
            .is_some_and(|j| j.state == JobState::Cancelled)
    })
    .await;
    runner.shutdown().await;
    let s = scopes.lock().unwrap()[0].clone();
    assert_eq!(
        (s.organization_id.as_deref(), s.actor_id),
        (Some("org-1"), None)
    );
}

struct Sleepy;

#[async_trait::async_trait]
impl Worker for Sleepy {
    async fn perform(&self, _job: &Job) -> WorkOutcome {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        WorkOutcome::Ok
    }
}

#[tokio::test]
async fn shutdown_releases_unfinished_jobs_and_another_runner_rescues_orphans() {
    let queue = quick_queue(MemoryStore::new());
    queue.register_worker("sleepy", Sleepy);
    let id = queue
        .enqueue(NewJob::new("sleepy", json!({})))
        .await
        .unwrap()
        .unwrap();
    let runner = queue.start().unwrap();
    wait_until("claimed", || {
        futures_util::FutureExt::now_or_never(state_of(&queue, id))
            .is_some_and(|j| j.state == JobState::Executing)
    })
    .await;
    let report = runner.shutdown_within(Duration::from_millis(100)).await;
    assert_eq!(report.released, 1);
    let job = state_of(&queue, id).await;
    assert_eq!(
        (job.state, job.attempt),
        (JobState::Available, 0),
        "nothing lost, no attempt spent"
    );

    // A runner that dies without shutdown: its lease runs out and the job is rescued.
    let store = MemoryStore::new();
    let fast = Queue::builder(store.clone())
        .poll_interval(Duration::from_millis(10))
        .lease(Duration::from_millis(200))
        .backoff(JobBackoff::Policy(RetryPolicy::constant(
            Duration::from_millis(10),
        )))
        .build();
    let done = Arc::new(AtomicUsize::new(0));
    struct Count(Arc<AtomicUsize>);
    #[async_trait::async_trait]
    impl Worker for Count {
        async fn perform(&self, _job: &Job) -> WorkOutcome {
            self.0.fetch_add(1, Ordering::SeqCst);
            WorkOutcome::Ok
        }
    }
    fast.register_worker("count", Count(Arc::clone(&done)));
    let id = fast
        .enqueue(NewJob::new("count", json!({})))
        .await
        .unwrap()
        .unwrap();
    let now = chrono::Utc::now();
    // "Crashed" runner: claimed it, then vanished.
    fast.store()
        .claim(
            "default",
            &["count".to_owned()],
            1,
            "crashed",
            now,
            now + chrono::Duration::milliseconds(200),
        )
        .await
        .unwrap();
    let runner = fast.start().unwrap();
    wait_until("rescued and run", || done.load(Ordering::SeqCst) == 1).await;
    counts_reach(&fast, "completed", |c| c[&JobState::Completed] == 1).await;
    runner.shutdown().await;
    let job = state_of(&fast, id).await;
    assert_eq!(job.attempt, 2, "the crashed attempt counts");
    assert!(
        job.last_error
            .as_deref()
            .is_some_and(|e| e.contains("runner stopped during attempt 1")),
        "its history says the runner died: {:?}",
        job.last_error
    );
}

#[tokio::test]
async fn two_forwarders_of_one_signal_both_deliver() {
    let queue = quick_queue(MemoryStore::new());
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let (a, b) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    bus.subscribe(
        "audit.**",
        vec![
            signal_bus::Target::new(
                Forwarder::new("a", recorder(&a, |_| None)).dispatch(DispatchMode::Async),
            ),
            signal_bus::Target::new(
                Forwarder::new("b", recorder(&b, |_| None)).dispatch(DispatchMode::Async),
            ),
        ],
    )
    .unwrap();
    bus.publish(signal(1)).await.unwrap();
    let runner = queue.start().unwrap();
    wait_until("both forwarders", || {
        a.lock().unwrap().len() == 1 && b.lock().unwrap().len() == 1
    })
    .await;
    runner.shutdown().await;
    assert_eq!(queue.counts().await.unwrap()[&JobState::Completed], 2);
}

#[tokio::test]
async fn a_timed_out_shutdown_keeps_finished_jobs_completed() {
    struct Quick;
    #[async_trait::async_trait]
    impl Worker for Quick {
        async fn perform(&self, _job: &Job) -> WorkOutcome {
            tokio::time::sleep(Duration::from_millis(50)).await;
            WorkOutcome::Ok
        }
    }
    let queue = quick_queue(MemoryStore::new());
    queue.register_worker("quick", Quick);
    queue.register_worker("sleepy", Sleepy);
    let quick = queue
        .enqueue(NewJob::new("quick", json!({})))
        .await
        .unwrap()
        .unwrap();
    let slow = queue
        .enqueue(NewJob::new("sleepy", json!({})))
        .await
        .unwrap()
        .unwrap();
    let runner = queue.start().unwrap();
    wait_until("both claimed", || {
        futures_util::FutureExt::now_or_never(state_of(&queue, slow))
            .is_some_and(|j| j.state == JobState::Executing)
    })
    .await;
    // Quick needs 50 ms; the deadline leaves it 2 s however busy the machine is.
    let report = runner.shutdown_within(Duration::from_secs(2)).await;
    assert_eq!(report.released, 1, "only the unfinished job is released");
    assert_eq!(state_of(&queue, quick).await.state, JobState::Completed);
    assert_eq!(state_of(&queue, slow).await.state, JobState::Available);
}

/// Waits until the running runner has seen the one job of forwarder `siem` with no forwarder
/// registered under that name, and checks the job was left as it was (`why` if not).
async fn siem_job_waits_unregistered(queue: &Queue, why: &str) {
    wait_until("the job shows as waiting for an unregistered name", || {
        queue
            .cached_unregistered()
            .is_some_and(|u| u.get(&("default".to_owned(), forwarder_worker("siem"))) == Some(&1))
    })
    .await;
    let job = only_job(queue).await;
    assert_eq!((job.state, job.attempt), (JobState::Available, 0), "{why}");
}

/// A target that always fails permanently, with an async forwarder `siem` as its dead-letter
/// target; both record into `seen`.
fn failing_into_siem(seen: &Arc<Mutex<Vec<String>>>) -> signal_bus::Target {
    let failing = recorder(seen, |_| Some(DeliveryError::permanent("refused")));
    let dead_letters =
        Forwarder::new("siem", recorder(seen, |_| None)).dispatch(DispatchMode::Async);
    signal_bus::Target::new(failing).on_failure(dead_letters)
}

#[tokio::test]
async fn unsubscribing_a_forwarder_leaves_its_jobs_waiting() {
    let queue = quick_queue(MemoryStore::new());
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let forwarder =
        || Forwarder::new("siem", recorder(&seen, |_| None)).dispatch(DispatchMode::Async);
    let sub = bus.subscribe("audit.**", forwarder()).unwrap();
    bus.publish(signal(1)).await.unwrap();
    bus.unsubscribe(sub).unwrap();
    let runner = queue.start().unwrap();
    // The runner has looked at the queue and seen a job nobody here can run...
    siem_job_waits_unregistered(&queue, "not spent").await;
    assert!(bus
        .metrics()
        .queue_unregistered
        .is_some_and(|u| u.values().sum::<u64>() == 1));
    // ...and subscribing again delivers it.
    bus.subscribe("audit.**", forwarder()).unwrap();
    wait_until("delivered", || seen.lock().unwrap().len() == 1).await;
    counts_reach(&queue, "completed", |c| c[&JobState::Completed] == 1).await;
    runner.shutdown().await;
}

/// A forwarder that is a dead-letter target is detached with its subscription too: after
/// the unsubscribe its job waits for a forwarder of that name instead of running.
#[tokio::test]
async fn unsubscribing_detaches_a_dead_letter_forwarder() {
    let queue = quick_queue(MemoryStore::new());
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sub = bus.subscribe("audit.**", failing_into_siem(&seen)).unwrap();
    let report = bus.publish(signal(1)).await.unwrap();
    assert_eq!(report.failed(), 1);
    bus.unsubscribe(sub).unwrap();
    let runner = queue.start().unwrap();
    siem_job_waits_unregistered(&queue, "not run").await;
    assert!(seen.lock().unwrap().is_empty(), "nothing delivered");
    runner.shutdown().await;
}

/// The same when a persistent subscription stops: its targets' dead-letter forwarder is
/// detached with them.
#[tokio::test]
async fn stopping_a_persistent_subscription_detaches_a_dead_letter_forwarder() {
    let queue = quick_queue(MemoryStore::new());
    let bus = Bus::builder()
        .queue(queue.clone())
        .journal(MemoryStore::new())
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sub = bus
        .persistent("billing", "audit.**")
        .targets(failing_into_siem(&seen))
        .start()
        .await
        .unwrap();
    bus.publish(signal(1)).await.unwrap();
    wait_until("the signal dead-lettered", || sub.dead_lettered() == 1).await;
    sub.stop().await;
    let runner = queue.start().unwrap();
    siem_job_waits_unregistered(&queue, "not run").await;
    assert!(seen.lock().unwrap().is_empty(), "nothing delivered");
    runner.shutdown().await;
}

#[tokio::test]
async fn a_runner_started_before_subscribe_delivers_every_pending_job() {
    let store = MemoryStore::new();
    // Published by an earlier process that had no runner.
    {
        let earlier = quick_queue(store.clone());
        let bus = Bus::builder().queue(earlier).build().unwrap();
        bus.subscribe(
            "audit.**",
            Forwarder::new("siem", signal_bus::adapter::Noop).dispatch(DispatchMode::Async),
        )
        .unwrap();
        for n in 0..20 {
            assert!(bus.publish(signal(n)).await.unwrap().is_ok());
        }
    }
    // A restart, in the order the README shows: runner first, then subscribe.
    let queue = quick_queue(store);
    let runner = queue.start().unwrap();
    wait_until("the runner looked at the pending jobs", || {
        queue
            .cached_unregistered()
            .is_some_and(|u| u.values().sum::<u64>() == 20)
    })
    .await;
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    bus.subscribe(
        "audit.**",
        Forwarder::new("siem", recorder(&seen, |_| None)).dispatch(DispatchMode::Async),
    )
    .unwrap();
    counts_reach(&queue, "all delivered", |c| c[&JobState::Completed] == 20).await;
    runner.shutdown().await;
    assert_eq!(queue.counts().await.unwrap()[&JobState::Cancelled], 0);
    let mut ids = seen.lock().unwrap().clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20);
}

#[tokio::test]
async fn two_services_with_different_forwarders_share_one_queue() {
    let store = MemoryStore::new();
    let (a_seen, b_seen) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let mut runners = Vec::new();
    let mut buses = Vec::new();
    for (name, seen) in [("a", &a_seen), ("b", &b_seen)] {
        let queue = quick_queue(store.clone());
        runners.push(queue.start().unwrap());
        let bus = Bus::builder().queue(queue.clone()).build().unwrap();
        bus.subscribe(
            format!("{name}.**").as_str(),
            Forwarder::new(name, recorder(seen, |_| None)).dispatch(DispatchMode::Async),
        )
        .unwrap();
        buses.push(bus);
    }
    for n in 0..10 {
        for (bus, ty) in [(&buses[0], "a.event"), (&buses[1], "b.event")] {
            let s = Signal::builder(ty, "/svc")
                .id(format!("{ty}-{n}"))
                .build()
                .unwrap();
            bus.publish(s).await.unwrap();
        }
    }
    wait_until("both services delivered their own", || {
        a_seen.lock().unwrap().len() == 10 && b_seen.lock().unwrap().len() == 10
    })
    .await;
    for r in runners {
        r.shutdown().await;
    }
    assert!(a_seen.lock().unwrap().iter().all(|id| id.starts_with("a.")));
    assert!(b_seen.lock().unwrap().iter().all(|id| id.starts_with("b.")));
    let c = store.counts().await.unwrap();
    assert_eq!((c[&JobState::Completed], c[&JobState::Cancelled]), (20, 0));
}

#[tokio::test]
async fn jobs_nobody_registers_are_cancelled_after_the_grace_period() {
    let queue = Queue::builder(MemoryStore::new())
        .poll_interval(Duration::from_millis(10))
        .unknown_after(Duration::from_millis(100))
        .build();
    let sig = signal(1);
    queue
        .store()
        .enqueue(
            Some(&sig),
            &NewJob::new(
                forwarder_worker("gone"),
                json!({"forwarder": "gone", "signal_source": "/tests", "signal_id": "sig-1"}),
            ),
        )
        .await
        .unwrap();
    let worker_job = queue
        .enqueue(NewJob::new("retired-worker", json!({})))
        .await
        .unwrap()
        .unwrap();
    let runner = queue.start().unwrap();
    counts_reach(&queue, "both cancelled", |c| c[&JobState::Cancelled] == 2).await;
    runner.shutdown().await;
    let f = queue.list(JobState::Cancelled, 10).await.unwrap();
    assert_eq!(f[0].cancel_reason, Some(CancelReason::UnknownForwarder));
    assert!(f[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("forwarder `gone`"));
    assert_eq!(
        state_of(&queue, worker_job).await.cancel_reason,
        Some(CancelReason::UnknownWorker)
    );
}

#[tokio::test]
async fn a_job_cancelled_while_running_keeps_its_cancellation() {
    struct Slow(Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>);
    #[async_trait::async_trait]
    impl Worker for Slow {
        async fn perform(&self, _job: &Job) -> WorkOutcome {
            self.0.notify_one();
            self.1.notified().await;
            WorkOutcome::Ok
        }
    }
    let queue = quick_queue(MemoryStore::new());
    let (started, release) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    queue.register_worker("slow", Slow(Arc::clone(&started), Arc::clone(&release)));
    let id = queue
        .enqueue(NewJob::new("slow", json!({})))
        .await
        .unwrap()
        .unwrap();
    let runner = queue.start().unwrap();
    started.notified().await;
    assert!(
        queue.cancel(id).await.unwrap(),
        "cancelled by hand while running"
    );
    release.notify_one();
    // The runner's completion must be refused: the job stays cancelled.
    runner.shutdown().await;
    let job = state_of(&queue, id).await;
    assert_eq!(
        (job.state, job.cancel_reason),
        (JobState::Cancelled, Some(CancelReason::Manual))
    );
}

#[tokio::test]
async fn generic_enqueues_share_one_commit_and_lose_nothing() {
    let queue = quick_queue(MemoryStore::new());
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..64 {
        let q = queue.clone();
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for n in 0..20 {
                ids.push(
                    q.enqueue(NewJob::new("w", json!({"p": p, "n": n})))
                        .await
                        .unwrap()
                        .unwrap(),
                );
            }
            ids
        });
    }
    let mut all = Vec::new();
    while let Some(ids) = tasks.join_next().await {
        all.extend(ids.unwrap());
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 64 * 20);
    assert_eq!(queue.counts().await.unwrap()[&JobState::Available], 64 * 20);
    let e = queue
        .enqueue(NewJob::new("w", json!({})).priority(10))
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::Invalid(_)), "{e}");
}

/// A hook that counts a store's enqueue transactions: per-job `enqueue` calls apart from
/// `enqueue_many` calls (one transaction each, however many jobs). The first transaction of
/// either kind is held until [`Counting::open`], so a test can make every enqueue wait for
/// the committer before anything commits.
#[derive(Clone)]
struct Counting {
    single: Arc<AtomicUsize>,
    many: Arc<AtomicUsize>,
    jobs_in_many: Arc<AtomicUsize>,
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Counting {
    fn store() -> Hooked<Counting> {
        Hooked::new(Counting {
            single: Arc::default(),
            many: Arc::default(),
            jobs_in_many: Arc::default(),
            open: Arc::new(tokio::sync::watch::channel(false).0),
        })
    }
    fn open(&self) {
        self.open.send_replace(true);
    }
}

#[async_trait::async_trait]
impl Hook for Counting {
    fn backend(&self) -> &'static str {
        "counting"
    }
    async fn before(&self, call: &'static str, jobs: usize) -> Result<(), QueueError> {
        match call {
            "enqueue" => self.single.fetch_add(1, Ordering::SeqCst),
            "enqueue_many" => {
                self.jobs_in_many.fetch_add(jobs, Ordering::SeqCst);
                self.many.fetch_add(1, Ordering::SeqCst)
            }
            _ => return Ok(()),
        };
        // Holds the first transaction until `open`.
        if self.single.load(Ordering::SeqCst) + self.many.load(Ordering::SeqCst) == 1 {
            let mut open = self.open.subscribe();
            let _ = open.wait_for(|o| *o).await;
        }
        Ok(())
    }
}

/// Runs `fut`, counting in `polled` once its first poll has returned. An enqueue hands its
/// job to the group committer before its first await, so once counted it is waiting there.
async fn counted<F: std::future::Future>(polled: Arc<AtomicUsize>, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut first = true;
    std::future::poll_fn(move |cx| {
        let r = fut.as_mut().poll(cx);
        if std::mem::take(&mut first) {
            polled.fetch_add(1, Ordering::SeqCst);
        }
        r
    })
    .await
}

/// 64 concurrent `enqueue` (or `enqueue_tenant`) calls while the store holds its first
/// transaction: they must all share at most two transactions (the held one, and one for
/// everything that waited behind it), and none may go through the per-job `store.enqueue`.
async fn sixty_four_concurrent_enqueues_share_commits(tenant: bool) {
    const PRODUCERS: usize = 64;
    let store = Counting::store();
    let queue = Queue::builder(store.clone()).build();
    let polled = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PRODUCERS {
        let (q, polled) = (queue.clone(), Arc::clone(&polled));
        tasks.spawn(async move {
            let args = json!({"organization_id": "org-1", "actor_id": null, "p": p});
            let job = NewJob::new("w", args);
            counted(polled, async {
                if tenant {
                    q.enqueue_tenant(job).await
                } else {
                    q.enqueue(job).await
                }
            })
            .await
        });
    }
    // Every call has handed its job over while the first transaction is still held.
    wait_until("all 64 enqueues wait for the committer", || {
        polled.load(Ordering::SeqCst) == PRODUCERS
    })
    .await;
    store.hook.open();
    let mut ids = Vec::new();
    while let Some(id) = tasks.join_next().await {
        ids.push(id.unwrap().unwrap().expect("stored"));
    }
    ids.sort_unstable();
    ids.dedup();
    let kind = if tenant { "enqueue_tenant" } else { "enqueue" };
    assert_eq!(ids.len(), PRODUCERS, "{kind}: one id per job");
    assert_eq!(
        store.hook.single.load(Ordering::SeqCst),
        0,
        "{kind}: no job may go through the per-job store.enqueue"
    );
    let transactions = store.hook.many.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&transactions),
        "{kind}: {PRODUCERS} concurrent calls took {transactions} transactions (group commit \
         allows 2: the held one and one for the calls that waited behind it)"
    );
    assert_eq!(store.hook.jobs_in_many.load(Ordering::SeqCst), PRODUCERS);
    assert_eq!(
        queue.counts().await.unwrap()[&JobState::Available],
        PRODUCERS as u64
    );
}

#[tokio::test]
async fn concurrent_generic_enqueues_are_group_committed() {
    sixty_four_concurrent_enqueues_share_commits(false).await;
}

#[tokio::test]
async fn concurrent_tenant_enqueues_are_group_committed() {
    sixty_four_concurrent_enqueues_share_commits(true).await;
}

/// An async `Forwarder` inside a user's wrapper that names it through `Adapter::wrapped`:
/// refused on a bus without a queue, and on one with a queue registered, so its jobs run.
#[tokio::test]
async fn a_forwarder_inside_a_wrapper_is_registered_through_wrapped() {
    struct Wrapper(Forwarder);
    #[async_trait::async_trait]
    impl signal_bus::Adapter for Wrapper {
        fn name(&self) -> &str {
            self.0.name()
        }
        async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
            self.0.deliver(signal).await
        }
        fn wrapped(&self) -> Option<&dyn signal_bus::Adapter> {
            Some(&self.0)
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let wrapped =
        || Wrapper(Forwarder::new("siem", recorder(&seen, |_| None)).dispatch(DispatchMode::Async));
    let e = Bus::builder()
        .build()
        .unwrap()
        .subscribe("audit.**", wrapped())
        .unwrap_err();
    assert!(e.to_string().contains("durable queue"), "{e}");

    let queue = quick_queue(MemoryStore::new());
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    // The forwarder inside is validated at `subscribe` too, though the wrapper does not
    // forward `validate`.
    let e = bus
        .subscribe(
            "audit.**",
            Wrapper(Forwarder::new("siem", recorder(&seen, |_| None)).max_attempts(0)),
        )
        .unwrap_err();
    assert!(e.to_string().contains("max_attempts"), "{e}");
    // A wrapper that forwards `validate` too gets each problem named once.
    struct Forwarding(Wrapper);
    #[async_trait::async_trait]
    impl signal_bus::Adapter for Forwarding {
        fn name(&self) -> &str {
            self.0.name()
        }
        fn validate(&self) -> Result<(), signal_bus::ConfigError> {
            self.0 .0.validate()
        }
        async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
            self.0.deliver(signal).await
        }
        fn wrapped(&self) -> Option<&dyn signal_bus::Adapter> {
            Some(&self.0)
        }
    }
    let e = bus
        .subscribe(
            "audit.**",
            Forwarding(Wrapper(
                Forwarder::new("siem", recorder(&seen, |_| None)).max_attempts(0),
            )),
        )
        .unwrap_err()
        .to_string();
    assert_eq!(e.matches("max_attempts").count(), 1, "{e}");
    bus.subscribe("audit.**", wrapped()).unwrap();
    let report = bus.publish(signal(1)).await.unwrap();
    assert_eq!(report.queued(), 1, "{report}");
    let runner = queue.start().unwrap();
    wait_until("delivery", || seen.lock().unwrap().len() == 1).await;
    runner.shutdown().await;
}

/// An async forwarder's enqueue that outlives its target's timeout is reported failed, and
/// is not committed afterwards behind that report's back: publishing again (what a retry
/// does) makes exactly one job.
#[tokio::test]
async fn a_timed_out_forwarder_enqueue_is_not_committed_later() {
    let store = Counting::store();
    let queue = Queue::builder(store.clone()).build();
    // A first enqueue holds the store's first transaction (until `open`), so the forwarder's
    // job waits for the committer behind it.
    let held = tokio::spawn({
        let q = queue.clone();
        async move { q.enqueue(NewJob::new("w", json!({"n": 0}))).await }
    });
    wait_until("the first transaction is held", || {
        store.hook.many.load(Ordering::SeqCst) == 1
    })
    .await;
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    bus.subscribe(
        "audit.**",
        signal_bus::Target::new(
            Forwarder::new("siem", recorder(&seen, |_| None)).dispatch(DispatchMode::Async),
        )
        .timeout(Duration::from_millis(50)),
    )
    .unwrap();
    let report = bus.publish(signal(1)).await.unwrap();
    assert_eq!(report.failed(), 1, "{report}");
    assert!(report.to_string().contains("timed out"), "{report}");

    store.hook.open();
    held.await
        .unwrap()
        .unwrap()
        .expect("the held job is stored");
    // The committer answers in order: once a later enqueue is answered, it has decided on
    // the forwarder's job too.
    queue
        .enqueue(NewJob::new("w", json!({"n": 1})))
        .await
        .unwrap()
        .unwrap();
    let forwarder_jobs =
        |jobs: Vec<Job>| jobs.into_iter().filter(|j| j.forwarder().is_some()).count();
    assert_eq!(
        forwarder_jobs(queue.list(JobState::Available, 100).await.unwrap()),
        0,
        "the enqueue reported as timed out was committed anyway"
    );

    // Publishing again enqueues it once.
    let report = bus.publish(signal(1)).await.unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        forwarder_jobs(queue.list(JobState::Available, 100).await.unwrap()),
        1
    );
}

/// An unreferenced signal stored again lately is kept for the margin (so a prune never
/// races an enqueue that points a new job at it); past the margin it goes.
#[tokio::test]
async fn unreferenced_signals_are_kept_for_the_margin() {
    let store = MemoryStore::new();
    let queue = quick_queue(store.clone());
    let s = signal(1);
    let job = NewJob::new(forwarder_worker("siem"), json!({}));
    let id = store.enqueue(Some(&s), &job).await.unwrap().unwrap();
    assert!(queue.cancel(id).await.unwrap());
    let jobs_only = Retention::keep_forever().cancelled(Some(Duration::ZERO));
    assert_eq!(
        jobs_only.signal_margin,
        signal_bus::queue::DEFAULT_SIGNAL_MARGIN
    );
    assert_eq!(
        signal_bus::queue::DEFAULT_SIGNAL_MARGIN,
        Duration::from_secs(300)
    );
    assert_eq!(Retention::default().signal_margin, Duration::from_secs(300));
    let report = queue.prune(jobs_only).await.unwrap();
    assert_eq!((report.cancelled, report.signals), (1, 0), "{report:?}");
    assert!(
        store
            .load_signal("/tests", "sig-1")
            .await
            .unwrap()
            .is_some(),
        "stored just now: inside the margin, kept"
    );
    let report = queue
        .prune(jobs_only.signal_margin(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(report.signals, 1, "{report:?}");
    assert!(store
        .load_signal("/tests", "sig-1")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn the_runner_prunes_what_retention_lets_go() {
    let store = MemoryStore::new();
    let queue = Queue::builder(store.clone())
        .poll_interval(Duration::from_millis(10))
        .retention(
            Retention::default()
                .completed(Some(Duration::ZERO))
                .signal_margin(Duration::ZERO),
        )
        .prune_interval(Duration::from_millis(20))
        .build();
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    bus.subscribe(
        "audit.**",
        Forwarder::new("siem", signal_bus::adapter::Noop).dispatch(DispatchMode::Async),
    )
    .unwrap();
    for n in 0..10 {
        bus.publish(signal(n)).await.unwrap();
    }
    let runner = queue.start().unwrap();
    // Delivered, then pruned: no job left, and no signal either.
    wait_until("pruned", || {
        futures_util::FutureExt::now_or_never(queue.counts())
            .and_then(Result::ok)
            .is_some_and(|c| c.values().sum::<u64>() == 0)
    })
    .await;
    let mut gone = 0;
    for n in 0..10 {
        for _ in 0..3000 {
            if store
                .load_signal("/tests", &format!("sig-{n}"))
                .await
                .unwrap()
                .is_none()
            {
                gone += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    runner.shutdown().await;
    assert_eq!(gone, 10, "signals no job refers to are pruned too");
    // By hand, per state.
    let report = queue
        .prune(Retention::keep_forever().cancelled(Some(Duration::ZERO)))
        .await
        .unwrap();
    assert_eq!(report, signal_bus::queue::PruneReport::default());
}
