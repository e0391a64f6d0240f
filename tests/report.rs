#![cfg(all(feature = "http", feature = "sqlite"))]
//! What a `PublishReport` says happened to each target, with real adapters: a channel, an
//! HTTP endpoint (a loopback server failing on command), an async queue with a drop policy,
//! and a durable forwarder on a SQLite file whose job a runner later runs.

#[path = "support/scratch.rs"]
mod scratch;
use scratch::{wait_until, TempDir};

#[path = "support/capture.rs"]
mod capture;
mod support;

use std::time::Duration;

use serde_json::json;
use signal_bus::{
    adapter::Channel,
    dispatch::{DropReason, OutcomeKind, QueuedIn},
    dispatch_batch,
    http::Http,
    policy::{Mode, Overflow, RetryPolicy},
    queue::{DispatchMode, Forwarder, JobBackoff, JobState, Queue, SqliteStore},
    Bus, DeliveryError, PublishReport, Signal, Target,
};
use support::{Reply, TestServer};
use tokio::sync::mpsc;

fn signal(n: usize) -> Signal {
    Signal::builder("order.paid", "/tests")
        .id(format!("sig-{n}"))
        .data(json!({ "n": n }))
        .build()
        .unwrap()
}

/// A durable queue on a fresh SQLite file: quick polls, quick retries.
async fn sqlite_queue(dir: &TempDir) -> Queue {
    let store = SqliteStore::open(dir.0.join("queue.db")).await.unwrap();
    Queue::builder(store)
        .poll_interval(Duration::from_millis(10))
        .backoff(JobBackoff::Policy(RetryPolicy::constant(
            Duration::from_millis(10),
        )))
        .build()
}

/// A bus with a durable queue on a fresh SQLite file (the directory lives as long as the
/// returned guard).
async fn queued_bus(tag: &str) -> (TempDir, Queue, Bus) {
    let dir = TempDir::new(tag);
    let queue = sqlite_queue(&dir).await;
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    (dir, queue, bus)
}

/// The report's counts, in the order delivered, queued, dropped, failed; checked to add up.
fn counts(report: &PublishReport) -> (usize, usize, usize, usize) {
    let c = (
        report.delivered(),
        report.queued(),
        report.dropped(),
        report.failed(),
    );
    assert_eq!(c.0 + c.1 + c.2 + c.3, report.len(), "{report}");
    assert_eq!(report.accepted(), c.0 + c.1, "{report}");
    assert_eq!(report.outcomes().count(), report.len());
    c
}

#[tokio::test]
async fn a_forwarder_job_is_queued_not_delivered_and_its_later_failure_shows_in_the_queue() {
    let (_dir, queue, bus) = queued_bus("forwarder").await;
    let server = TestServer::start().await;
    server.always(Reply::status(500));
    bus.subscribe(
        "order.*",
        Forwarder::new("ledger", Http::post(&server.url("/ledger")).unwrap())
            .dispatch(DispatchMode::Async)
            .max_attempts(2),
    )
    .unwrap();

    let report = bus.publish(signal(1)).await.unwrap();
    assert_eq!(counts(&report), (0, 1, 0, 0));
    assert!(report.is_ok() && report.all_accepted(), "{report}");
    let outcome = report.get(0).unwrap();
    assert_eq!(outcome.target, "forwarder:ledger");
    assert!(outcome.is_queued() && !outcome.is_delivered());
    let job = outcome.job_id().expect("the job's id");
    assert!(matches!(
        outcome.kind,
        OutcomeKind::Queued(QueuedIn::Durable { job: Some(id), .. }) if id == job
    ));
    assert_eq!(
        report.to_string(),
        "1 target: 0 delivered, 1 queued, 0 failed"
    );
    assert_eq!(server.count(), 0, "nothing sent before a runner runs");
    // The bus's metrics agree with the report: queued, not delivered.
    let m = bus.metrics();
    let t = m
        .targets
        .iter()
        .find(|t| t.target == "forwarder:ledger")
        .unwrap();
    assert_eq!((t.delivered, t.queued, t.failed), (0, 1, 0), "{t:?}");
    let stored = queue.store().get(job).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Available);

    // The runner's attempts fail: the job ends discarded, with the last error.
    let runner = queue.start().unwrap();
    let mut discarded = None;
    for _ in 0..3000 {
        let j = queue.store().get(job).await.unwrap().unwrap();
        if j.state == JobState::Discarded {
            discarded = Some(j);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runner.shutdown().await;
    let j = discarded.expect("the job discarded after its attempts");
    assert_eq!(j.attempt, 2);
    assert!(
        j.last_error.as_deref().is_some_and(|e| e.contains("500")),
        "{j:?}"
    );
    assert_eq!(server.count(), 2);
    let listed = queue.list(JobState::Discarded, 10).await.unwrap();
    assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), [job]);
}

#[tokio::test]
async fn a_forwarder_delivering_inline_is_delivered() {
    let (_dir, queue, bus) = queued_bus("inline").await;
    let server = TestServer::start().await;
    bus.subscribe(
        "order.*",
        Forwarder::new("ledger", Http::post(&server.url("/ledger")).unwrap())
            .dispatch(DispatchMode::Sync),
    )
    .unwrap();
    let report = bus.publish(signal(1)).await.unwrap();
    assert_eq!(counts(&report), (1, 0, 0, 0));
    assert_eq!(report.get(0).unwrap().job_id(), None);
    assert_eq!(server.count(), 1);
    let m = bus.metrics();
    let t = m
        .targets
        .iter()
        .find(|t| t.target == "forwarder:ledger")
        .unwrap();
    assert_eq!((t.delivered, t.queued), (1, 0), "{t:?}");
    assert_eq!(queue.counts().await.unwrap().values().sum::<u64>(), 0);
}

#[tokio::test]
async fn async_mode_counts_as_queued() {
    let bus = Bus::builder().build().unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    bus.subscribe(
        "order.*",
        Target::new(Channel::new(tx))
            .mode(Mode::async_with_capacity(8))
            .label("async"),
    )
    .unwrap();
    let report = bus.publish(signal(1)).await.unwrap();
    assert_eq!(counts(&report), (0, 1, 0, 0));
    let outcome = report.get(0).unwrap();
    assert!(matches!(
        outcome.kind,
        OutcomeKind::Queued(QueuedIn::Memory)
    ));
    assert_eq!(outcome.job_id(), None);
    assert!(outcome.is_ok() && outcome.is_accepted());
    // The worker delivers it later.
    assert_eq!(rx.recv().await.unwrap().id(), "sig-1");
    assert_eq!(bus.metrics().targets[0].delivered, 1);
}

#[tokio::test]
async fn a_full_queue_with_the_drop_policy_counts_as_dropped() {
    let bus = Bus::builder().build().unwrap();
    // A consumer that never reads: its channel holds one signal.
    let (tx, mut rx) = mpsc::channel(1);
    bus.subscribe(
        "order.*",
        Target::new(Channel::new(tx))
            .mode(Mode::Async {
                capacity: 1,
                overflow: Overflow::DropNewest,
            })
            .label("slow"),
    )
    .unwrap();
    // 1 fills the channel; 2 is held by the worker, waiting for room; 3 fills the queue.
    assert_eq!(counts(&bus.publish(signal(1)).await.unwrap()), (0, 1, 0, 0));
    wait_until("the channel full", || rx.len() == 1).await;
    assert_eq!(counts(&bus.publish(signal(2)).await.unwrap()), (0, 1, 0, 0));
    wait_until("the worker holding 2", || {
        bus.metrics().targets[0].queue_depth == 0
    })
    .await;
    assert_eq!(counts(&bus.publish(signal(3)).await.unwrap()), (0, 1, 0, 0));

    let report = bus.publish(signal(4)).await.unwrap();
    assert_eq!(counts(&report), (0, 0, 1, 0));
    assert!(report.is_ok(), "dropping by choice is not a failure");
    assert!(!report.all_accepted(), "but the target will not get it");
    let outcome = report.get(0).unwrap();
    assert!(matches!(
        outcome.kind,
        OutcomeKind::Dropped(DropReason::QueueFull { capacity: 1, .. })
    ));
    assert!(outcome.is_dropped() && outcome.is_ok() && !outcome.is_accepted());
    assert!(outcome.error.is_none() && report.failures().next().is_none());
    assert_eq!(
        report.to_string(),
        "1 target: 0 delivered, 1 dropped, 0 failed; slow: dropped: the queue was full \
         (capacity 1, overflow drop-newest)"
    );
    assert_eq!(bus.metrics().targets[0].dropped, 1);
    // The dropped signal never arrives: 1, 2, 3 do.
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(rx.recv().await.unwrap().id().to_owned());
    }
    assert_eq!(got, ["sig-1", "sig-2", "sig-3"]);
    assert!(bus.shutdown(Duration::from_secs(5)).await.is_complete());
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn a_failing_http_target_counts_as_failed() {
    let bus = Bus::builder().build().unwrap();
    let server = TestServer::start().await;
    bus.subscribe(
        "order.*",
        Target::new(Http::post(&server.url("/hook")).unwrap()).label("hook"),
    )
    .unwrap();
    assert_eq!(counts(&bus.publish(signal(1)).await.unwrap()), (1, 0, 0, 0));

    server.always(Reply::status(500));
    let report = bus.publish(signal(2)).await.unwrap();
    assert_eq!(counts(&report), (0, 0, 0, 1));
    assert!(!report.is_ok() && !report.all_accepted());
    let outcome = report.get(0).unwrap();
    let OutcomeKind::Failed(error) = outcome.kind else {
        panic!("{:?}", outcome.kind)
    };
    assert!(error.to_string().contains("500"), "{error}");
    assert!(std::ptr::eq(outcome.error.unwrap(), error));
    assert!(outcome.result().is_err() && outcome.is_failed());
    let failed: Vec<&str> = report.failures().map(|o| o.target).collect();
    assert_eq!(failed, ["hook"]);
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn every_kind_in_one_report_and_the_counts_add_up() {
    let (_dir, queue, bus) = queued_bus("kinds").await;
    let server = TestServer::start().await;
    server.always(Reply::status(503));
    let (sync_tx, mut sync_rx) = mpsc::channel(16);
    let (async_tx, mut async_rx) = mpsc::channel(16);
    bus.subscribe(
        "order.*",
        vec![
            Target::new(Channel::new(sync_tx)).label("inbox"),
            Target::new(Channel::new(async_tx))
                .mode(Mode::async_with_capacity(8))
                .label("background"),
            Target::new(Http::post(&server.url("/down")).unwrap()).label("down"),
            Target::new(
                Forwarder::new("audit", Http::post(&server.url("/audit")).unwrap())
                    .dispatch(DispatchMode::Async),
            ),
        ],
    )
    .unwrap();

    let report = bus.publish(signal(1)).await.unwrap();
    assert_eq!(counts(&report), (1, 2, 0, 1));
    let kinds: Vec<(&str, String)> = report
        .outcomes()
        .map(|o| {
            let kind = match o.kind {
                OutcomeKind::Delivered => "delivered".to_owned(),
                OutcomeKind::Queued(QueuedIn::Memory) => "queued in memory".to_owned(),
                OutcomeKind::Queued(QueuedIn::Durable { job: Some(_), .. }) => {
                    "durable job".to_owned()
                }
                OutcomeKind::Failed(e) => format!("failed: {}", e.kind()),
                other => format!("unexpected: {other}"),
            };
            (o.target, kind)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("inbox", "delivered".to_owned()),
            ("background", "queued in memory".to_owned()),
            ("down", "failed: retryable".to_owned()),
            ("forwarder:audit", "durable job".to_owned()),
        ]
    );
    assert_eq!(sync_rx.recv().await.unwrap().id(), "sig-1");
    assert_eq!(async_rx.recv().await.unwrap().id(), "sig-1");
    let job = report.get(3).unwrap().job_id().unwrap();
    assert_eq!(
        queue.store().get(job).await.unwrap().unwrap().state,
        JobState::Available
    );
}

#[tokio::test]
async fn a_batch_dispatch_delivers_even_to_async_targets() {
    // dispatch_batch hands each target its batch directly, not through its queue.
    let (tx, mut rx) = mpsc::channel(16);
    let target = Target::new(Channel::new(tx)).mode(Mode::async_with_capacity(8));
    let report = dispatch_batch([signal(1), signal(2)], target)
        .await
        .unwrap();
    assert_eq!(counts(&report), (1, 0, 0, 0));
    assert_eq!(rx.recv().await.unwrap().id(), "sig-1");
    assert_eq!(rx.recv().await.unwrap().id(), "sig-2");
}

#[tokio::test]
async fn an_enqueue_that_fails_is_failed() {
    // A forwarder that cannot enqueue (the job is invalid: a queue name the store refuses)
    // is a failed outcome, not a queued one.
    let (_dir, queue, bus) = queued_bus("refused").await;
    bus.subscribe(
        "order.*",
        Forwarder::new("ledger", signal_bus::adapter::Noop)
            .dispatch(DispatchMode::Async)
            .queue(""),
    )
    .unwrap();
    let report = bus.publish(signal(1)).await.unwrap();
    assert_eq!(counts(&report), (0, 0, 0, 1), "{report}");
    let e: &DeliveryError = report.get(0).unwrap().error.unwrap();
    assert!(e.to_string().contains("could not enqueue"), "{e}");
    assert_eq!(queue.counts().await.unwrap().values().sum::<u64>(), 0);
}
