//! The NATS server stopped (SIGKILL) and started again mid-stream, on a nats-server of the
//! test's own (a free port, its own JetStream store). The loss profile:
//! - JetStream publisher + durable bridge: none. Every signal whose publish was
//!   acknowledged reaches the other bus (a publish that failed during the outage is retried
//!   by the target's retry policy until the stream acknowledges it).
//! - core NATS: best effort. What was in flight when the server died may be lost; once the
//!   clients have reconnected, everything arrives again.
#![cfg(feature = "nats")]

#[path = "support/nats.rs"]
mod nats;

use std::{collections::BTreeSet, time::Duration};

use signal_bus::{
    adapter::PubSub,
    cluster::{ensure_stream, NatsBridge},
    policy::RetryPolicy,
    Signal, Target,
};

const WAIT: Duration = Duration::from_secs(30);

fn order(i: usize) -> Signal {
    Signal::builder("order.placed", "/tests/restart")
        .id(format!("order-{i}"))
        .build()
        .unwrap()
}

async fn connect(url: &str) -> async_nats::Client {
    nats::fast_reconnect()
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to the test's own nats-server at {url}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_loses_nothing_across_a_server_restart() {
    let mut server = Some(nats::OwnServer::start());
    let url = server.as_ref().unwrap().url();
    let (publisher, receiver) = (connect(&url).await, connect(&url).await);
    ensure_stream(&publisher, "SIGNALS", "signals")
        .await
        .unwrap();

    let a = signal_bus::Bus::builder()
        .name("a")
        .node_id("a")
        .build()
        .unwrap();
    a.subscribe(
        "**",
        Target::new(PubSub::nats(publisher.clone()).jetstream("SIGNALS"))
            .timeout(Duration::from_secs(2))
            .retry(RetryPolicy::constant(Duration::from_millis(100)).max_attempts(300)),
    )
    .unwrap();
    let (b, mut inbox) = nats::bus_with_inbox("b", "**");
    let bridge = NatsBridge::builder(receiver.clone(), &b)
        .durable("SIGNALS", "b")
        .ack_wait(Duration::from_secs(2))
        .start()
        .await
        .unwrap();

    let total = 300;
    let mut restarted = None;
    for i in 0..total {
        if i == 100 {
            let mut server = server.take().unwrap();
            server.kill();
            nats::eventually("the bridge sees the disconnection", WAIT, || {
                !bridge.health().is_healthy()
            })
            .await;
            // Back in a second; meanwhile publishes fail and are retried.
            restarted = Some(tokio::task::spawn_blocking(move || {
                std::thread::sleep(Duration::from_secs(1));
                server.restart();
                server
            }));
        }
        let report = a.publish(order(i)).await.unwrap();
        assert!(report.is_ok(), "order-{i} was not acknowledged: {report}");
    }
    let _server = restarted.unwrap().await.unwrap();

    // Every acknowledged signal arrives (at least once).
    let expected: BTreeSet<String> = (0..total).map(|i| format!("order-{i}")).collect();
    let mut got = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !expected.is_subset(&got) {
        match tokio::time::timeout_at(deadline, inbox.recv()).await {
            Ok(Some(s)) => {
                got.insert(s.id().to_owned());
            }
            _ => panic!(
                "acknowledged but never delivered: {:?}",
                expected.difference(&got).collect::<Vec<_>>()
            ),
        }
    }
    assert_eq!(got, expected);
    nats::eventually(
        "the bridge counted the disconnection and reconnection",
        WAIT,
        || {
            let stats = bridge.stats();
            stats.disconnects >= 1 && stats.reconnects >= 1
        },
    )
    .await;
    let stats = bridge.stats();
    nats::eventually("the bridge is healthy again", WAIT, || {
        bridge.health().is_healthy()
    })
    .await;
    eprintln!(
        "jetstream restart: {total} acknowledged, {} delivered (distinct), stats {stats:?}",
        got.len()
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_is_best_effort_and_resumes_after_a_server_restart() {
    let mut server = nats::OwnServer::start();
    let (publisher, receiver) = (connect(&server.url()).await, connect(&server.url()).await);
    let a = signal_bus::Bus::builder()
        .name("a")
        .node_id("a")
        .build()
        .unwrap();
    a.subscribe(
        "**",
        Target::new(PubSub::nats(publisher.clone())).timeout(Duration::from_millis(200)),
    )
    .unwrap();
    let (b, mut inbox) = nats::bus_with_inbox("b", "**");
    let bridge = NatsBridge::builder(receiver.clone(), &b)
        .start()
        .await
        .unwrap();

    // Connected: everything arrives.
    for i in 0..100 {
        assert!(a.publish(order(i)).await.unwrap().is_ok());
    }
    publisher.flush().await.unwrap();
    let first = nats::recv_n(&mut inbox, 100, WAIT).await;
    assert_eq!(first.len(), 100);

    // Killed mid-stream, then back: best effort.
    let mut ok = 0;
    for i in 100..200 {
        if i == 100 {
            server.kill();
            nats::eventually("the bridge sees the disconnection", WAIT, || {
                !bridge.health().is_healthy()
            })
            .await;
        }
        if i == 150 {
            server.restart();
        }
        if a.publish(order(i)).await.unwrap().is_ok() {
            ok += 1;
        }
    }
    nats::eventually("both clients reconnected", WAIT, || {
        bridge.health().is_healthy()
            && publisher.connection_state() == async_nats::connection::State::Connected
    })
    .await;
    receiver.flush().await.unwrap();
    publisher.flush().await.unwrap();
    let around: Vec<String> = nats::drain(&mut inbox, Duration::from_millis(500))
        .await
        .iter()
        .map(|s| s.id().to_owned())
        .collect();
    let distinct: BTreeSet<&String> = around.iter().collect();
    assert_eq!(distinct.len(), around.len(), "nothing arrives twice");
    assert!(
        around
            .iter()
            .all(|id| (100..200).any(|i| *id == format!("order-{i}"))),
        "nothing from nowhere: {around:?}"
    );

    // Reconnected means connected again, with the bridge's subscription back on the
    // server: a probe goes through end to end.
    let start = std::time::Instant::now();
    'probe: for k in 0.. {
        assert!(
            start.elapsed() < WAIT,
            "no probe got through after reconnecting"
        );
        let probe = Signal::builder("order.probe", "/tests/restart")
            .id(format!("probe-{k}"))
            .build()
            .unwrap();
        a.publish(probe).await.unwrap();
        while let Ok(Some(s)) = tokio::time::timeout(Duration::from_millis(50), inbox.recv()).await
        {
            if s.id().starts_with("probe-") {
                break 'probe;
            }
        }
    }
    nats::drain(&mut inbox, Duration::from_millis(300)).await;

    // After reconnecting, nothing is lost.
    for i in 200..300 {
        assert!(a.publish(order(i)).await.unwrap().is_ok());
    }
    let expected: BTreeSet<String> = (200..300).map(|i| format!("order-{i}")).collect();
    let mut after = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !expected.is_subset(&after) {
        match tokio::time::timeout_at(deadline, inbox.recv()).await {
            Ok(Some(s)) => {
                after.insert(s.id().to_owned());
            }
            _ => panic!(
                "published after reconnecting but lost: {:?}",
                expected.difference(&after).collect::<Vec<_>>()
            ),
        }
    }
    nats::eventually(
        "the bridge counted the disconnection and reconnection",
        WAIT,
        || {
            let stats = bridge.stats();
            stats.disconnects >= 1 && stats.reconnects >= 1
        },
    )
    .await;
    let stats = bridge.stats();
    eprintln!(
        "core restart: of 100 published around the outage, {ok} publishes returned Ok and {} \
         arrived; all 100 before and all 100 after arrived; stats {stats:?}",
        around.len()
    );
    bridge.shutdown().await;
}
