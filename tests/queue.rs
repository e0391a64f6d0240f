//! The queue runner and the forwarder: thin jobs reloaded at run time, dispatch modes, the
//! cancel taxonomy, retries and discards, panics, snoozes on an open breaker, tenant
//! workers, shutdown and rescue. On the in-memory store (the SQL stores run the same code
//! and their own conformance suites).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::json;
use signal_bus::{
    adapter::Handler,
    policy::{CircuitBreaker, RetryPolicy},
    queue::{
        DispatchMode, Forwarder, Job, JobBackoff, JobState, MemoryStore, NewJob, Queue, QueueError,
        Scope, Tenant, TenantWorker, WorkOutcome, Worker, FORWARDER_WORKER,
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

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
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
    assert_eq!(job.worker, FORWARDER_WORKER);
    assert_eq!(job.state, JobState::Available);
    let args = job.args.as_object().unwrap();
    let mut keys: Vec<&String> = args.keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["forwarder", "occurred_at", "signal_id"],
        "a thin reference"
    );
    assert_eq!(args["signal_id"], "sig-1");
    let runner = queue.start();
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
    let runner = queue.start();
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
                (n == 0).then(|| DeliveryError::permanent("field `user` removed"))
            }),
        )
        .dispatch(DispatchMode::Async),
    )
    .unwrap();
    // 1. schema_mismatch from the adapter (a permanent failure), 2. signal deleted,
    // 3. a stored signal that no longer parses, 4. an unknown forwarder.
    bus.publish(signal(1)).await.unwrap();
    bus.publish(signal(2)).await.unwrap();
    bus.publish(signal(3)).await.unwrap();
    queue.store().delete_signal("sig-2").await.unwrap();
    store.corrupt_signal("sig-3", b"{not json");
    let sig4 = signal(4);
    queue
        .store()
        .enqueue(
            Some(&sig4),
            &NewJob::new(
                FORWARDER_WORKER,
                json!({"forwarder": "gone", "signal_id": "sig-4"}),
            ),
        )
        .await
        .unwrap();
    let runner = queue.start();
    wait_until("all cancelled", || {
        futures_util::FutureExt::now_or_never(queue.counts())
            .and_then(Result::ok)
            .is_some_and(|c| c[&JobState::Cancelled] == 4)
    })
    .await;
    runner.shutdown().await;
    let reasons: Vec<String> = queue
        .list(JobState::Cancelled, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.last_error.unwrap())
        .collect();
    assert_eq!(reasons[0], "schema_mismatch: field `user` removed");
    assert_eq!(reasons[1], "signal_not_found: signal `sig-2` was deleted");
    assert!(
        reasons[2].starts_with("schema_mismatch: signal `sig-3` does not parse"),
        "{}",
        reasons[2]
    );
    assert_eq!(
        reasons[3],
        "unknown_forwarder: no forwarder `gone` is subscribed on a bus using this queue"
    );
    assert!(seen.lock().unwrap().is_empty());
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
    let runner = queue.start();
    wait_until("success on the third attempt", || {
        seen.lock().unwrap().len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
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
    let ok_id = queue
        .enqueue(NewJob::new("unknown-worker", json!({})))
        .await
        .unwrap()
        .unwrap();
    let runner = queue.start();
    wait_until("both done", || {
        futures_util::FutureExt::now_or_never(queue.counts())
            .and_then(Result::ok)
            .is_some_and(|c| c[&JobState::Discarded] == 1 && c[&JobState::Cancelled] == 1)
    })
    .await;
    runner.shutdown().await;
    let job = state_of(&queue, id).await;
    assert_eq!(
        job.last_error.as_deref(),
        Some("adapter panicked: worker bug")
    );
    assert_eq!(
        state_of(&queue, ok_id).await.last_error.as_deref(),
        Some("unknown worker `unknown-worker`")
    );
}

#[tokio::test]
async fn an_open_breaker_snoozes_without_spending_attempts() {
    let queue = quick_queue(MemoryStore::new());
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
    let runner = queue.start();
    wait_until("one retryable, one snoozed", || {
        futures_util::FutureExt::now_or_never(queue.counts())
            .and_then(Result::ok)
            .is_some_and(|c| {
                c[&JobState::Retryable] + c[&JobState::Scheduled] == 2
                    && c[&JobState::Scheduled] >= 1
            })
    })
    .await;
    runner.shutdown().await;
    let snoozed = queue.list(JobState::Scheduled, 10).await.unwrap();
    assert!(
        snoozed.iter().all(|j| j.attempt == 0),
        "a snooze spends no attempt: {snoozed:?}"
    );
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
    let runner = queue.start();
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
    let runner = queue.start();
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
            1,
            "crashed",
            now,
            now + chrono::Duration::milliseconds(200),
        )
        .await
        .unwrap();
    let runner = fast.start();
    wait_until("rescued and run", || done.load(Ordering::SeqCst) == 1).await;
    runner.shutdown().await;
    assert_eq!(state_of(&fast, id).await.attempt, 2);
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
    let runner = queue.start();
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
    let runner = queue.start();
    wait_until("both claimed", || {
        futures_util::FutureExt::now_or_never(state_of(&queue, slow))
            .is_some_and(|j| j.state == JobState::Executing)
    })
    .await;
    let report = runner.shutdown_within(Duration::from_millis(300)).await;
    assert_eq!(report.released, 1, "only the unfinished job is released");
    assert_eq!(state_of(&queue, quick).await.state, JobState::Completed);
    assert_eq!(state_of(&queue, slow).await.state, JobState::Available);
}

#[tokio::test]
async fn unsubscribing_a_forwarder_unregisters_it() {
    let queue = quick_queue(MemoryStore::new());
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sub = bus
        .subscribe(
            "audit.**",
            Forwarder::new("siem", recorder(&seen, |_| None)).dispatch(DispatchMode::Async),
        )
        .unwrap();
    bus.publish(signal(1)).await.unwrap();
    bus.unsubscribe(sub).unwrap();
    let runner = queue.start();
    wait_until("the orphaned job is cancelled", || {
        futures_util::FutureExt::now_or_never(queue.counts())
            .and_then(Result::ok)
            .is_some_and(|c| c[&JobState::Cancelled] == 1)
    })
    .await;
    runner.shutdown().await;
    assert!(seen.lock().unwrap().is_empty());
    let job = queue.list(JobState::Cancelled, 1).await.unwrap().remove(0);
    assert!(job.last_error.unwrap().starts_with("unknown_forwarder"));
}
