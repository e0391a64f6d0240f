//! Two buses in two processes exchange signals both ways through the real nats-server at
//! `SIGNAL_BUS_NATS_URL`, with pattern filtering and no echo. The test spawns itself as the
//! child process; it fails, never skips, when the server is unreachable.
#![cfg(feature = "nats")]

#[path = "support/nats.rs"]
mod nats;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use serde_json::json;
use signal_bus::{
    adapter::{Handler, PubSub},
    cluster::{NatsBridge, ORIGIN_EXTENSION},
    Signal,
};

const CHILD_ENV: &str = "SIGNAL_BUS_CLUSTER_CHILD_PREFIX";
const WAIT: Duration = Duration::from_secs(20);

/// The child ("billing"): bridges `order.*` in, answers each order with an
/// `invoice.issued`, publishes noise nobody bridges, and reports on stdout. A no-op in a
/// normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_node() {
    let Ok(prefix) = std::env::var(CHILD_ENV) else {
        return;
    };
    let client = nats::connect().await;
    let (bus, mut inbox) = nats::bus_with_inbox("billing", "**");
    bus.subscribe("**", PubSub::nats(client.clone()).prefix(&prefix))
        .unwrap();
    let bridge = NatsBridge::builder(client.clone(), &bus)
        .prefix(&prefix)
        .pattern("order.*")
        .start()
        .await
        .unwrap();
    println!("READY");
    while let Some(signal) = inbox.recv().await {
        let origin = signal.extension(ORIGIN_EXTENSION).and_then(|v| v.as_str());
        match (signal.ty(), origin) {
            (_, None) => {} // its own
            ("order.done", Some(_)) => break,
            (ty, Some(origin)) => {
                println!("GOT {ty} {} {origin}", signal.id());
                let invoice = Signal::builder("invoice.issued", "/billing")
                    .id(format!("invoice-for-{}", signal.id()))
                    .data(json!({"order": signal.id()}))
                    .build()
                    .unwrap();
                bus.publish(invoice).await.unwrap();
                let noise = Signal::builder("noise.tick", "/billing").build().unwrap();
                bus.publish(noise).await.unwrap();
            }
        }
    }
    client.flush().await.unwrap();
    let s = bridge.stats();
    println!("STATS republished={} echoes={}", s.republished, s.echoes);
}

/// Kills the child when the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child's next line on stdout, or `None` once it closed or after [`WAIT`].
async fn next_line(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Option<String> {
    tokio::time::timeout(WAIT, lines.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_exchange_signals_both_ways() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let client = nats::connect().await;
    let (prefix, _) = nats::unique("proc");
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["child_node", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &prefix)
            .env("SIGNAL_BUS_NATS_URL", nats::url())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    loop {
        let line = next_line(&mut lines).await.expect("the child starts");
        // libtest prints `test child_node ... ` before the child's first line.
        if line.ends_with("READY") {
            break;
        }
    }

    // The parent ("shop"): publishes orders and users, bridges invoices in.
    let (bus, _) = nats::bus_with_inbox("shop", "nothing");
    let invoices = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&invoices);
    bus.subscribe(
        "**",
        Handler::new(move |s: Arc<Signal>| {
            sink.lock().unwrap().push(s);
            async { Ok(()) }
        }),
    )
    .unwrap();
    bus.subscribe("**", PubSub::nats(client.clone()).prefix(&prefix))
        .unwrap();
    let bridge = NatsBridge::builder(client.clone(), &bus)
        .prefix(&prefix)
        .pattern("invoice.**")
        .start()
        .await
        .unwrap();
    let orders: Vec<String> = (0..20).map(|i| format!("order-{i}")).collect();
    for id in &orders {
        let order = Signal::builder("order.placed", "/shop")
            .id(id)
            .build()
            .unwrap();
        bus.publish(order).await.unwrap();
        // Not bridged by the child (`order.*` is one segment; `user.*` not at all).
        bus.publish(
            Signal::builder("order.placed.gift", "/shop")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
        bus.publish(Signal::builder("user.seen", "/shop").build().unwrap())
            .await
            .unwrap();
    }

    // The child got every order once, from "shop", and nothing else.
    let mut got = BTreeSet::new();
    while got.len() < orders.len() {
        let line = next_line(&mut lines)
            .await
            .expect("the child reports each order");
        let parts: Vec<&str> = line.split(' ').collect();
        if let ["GOT", ty, id, origin] = parts[..] {
            assert_eq!((ty, origin), ("order.placed", "shop"), "{line}");
            assert!(got.insert(id.to_owned()), "{id} arrived twice");
        }
    }
    assert_eq!(got, orders.iter().cloned().collect::<BTreeSet<_>>());

    // The parent got one invoice per order, from "billing", and no noise.
    nats::eventually("an invoice per order", WAIT, || {
        let n = invoices
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.ty() == "invoice.issued")
            .count();
        n == orders.len()
    })
    .await;
    bus.publish(Signal::builder("order.done", "/shop").build().unwrap())
        .await
        .unwrap();
    let mut stats = None;
    while let Some(line) = next_line(&mut lines).await {
        if let Some(s) = line.strip_prefix("STATS ") {
            stats = Some(s.to_owned());
        }
    }
    assert_eq!(
        stats.as_deref(),
        Some("republished=21 echoes=0"),
        "the child's bridge"
    );
    assert!(child.0.wait().unwrap().success());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let seen = invoices.lock().unwrap();
    let bridged: Vec<&Arc<Signal>> = seen
        .iter()
        .filter(|s| s.extension(ORIGIN_EXTENSION).is_some())
        .collect();
    assert_eq!(
        bridged.len(),
        orders.len(),
        "only invoices cross back, each once"
    );
    assert!(bridged.iter().all(|s| s.ty() == "invoice.issued"
        && s.extension(ORIGIN_EXTENSION).and_then(|v| v.as_str()) == Some("billing")));
    // Its own 61 signals (20 orders, 20 gifts, 20 users, 1 done), each once: no echo.
    assert_eq!(seen.len() - bridged.len(), 61);
    assert_eq!(bridge.stats().republished, 20);
    assert_eq!(bridge.stats().echoes, 0);
}
