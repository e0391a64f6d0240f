//! The NATS publisher and bridge against the real nats-server at `SIGNAL_BUS_NATS_URL`
//! (default `nats://127.0.0.1:4222`, JetStream on). These tests fail, never skip, when it is
//! unreachable. Each test uses a subject prefix and stream of its own.
#![cfg(feature = "nats")]

#[path = "support/nats.rs"]
mod nats;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use serde_json::json;
use signal_bus::{
    adapter::{Handler, PubSub},
    cluster::{
        async_nats, ensure_stream, NatsBridge, NatsBridgeBuilder, NatsPubSub, ORIGIN_EXTENSION,
    },
    ContentMode, DeliveryError, ErrorKind, Signal, Target,
};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(300);

/// A publisher to `<prefix>.<type>` through the JetStream stream `stream`.
fn to_stream(client: &async_nats::Client, prefix: &str, stream: &str) -> NatsPubSub {
    PubSub::nats(client.clone())
        .prefix(prefix)
        .jetstream(stream)
}

fn signal(ty: &str, i: usize) -> Signal {
    Signal::builder(ty, "/tests/cluster")
        .id(format!("{ty}-{i}"))
        .data(json!({"i": i}))
        .build()
        .unwrap()
}

#[tokio::test]
async fn two_buses_exchange_signals_both_ways_with_pattern_filtering_and_no_echo() {
    let client = nats::connect().await;
    let (prefix, _) = nats::unique("pair");
    let (a, mut a_inbox) = nats::bus_with_inbox("node-a", "**");
    let (b, mut b_inbox) = nats::bus_with_inbox("node-b", "**");
    // Both buses publish everything to NATS and bridge a part of it back in.
    a.subscribe("**", PubSub::nats(client.clone()).prefix(&prefix))
        .unwrap();
    b.subscribe("**", PubSub::nats(client.clone()).prefix(&prefix))
        .unwrap();
    let a_bridge = NatsBridge::builder(client.clone(), &a)
        .prefix(&prefix)
        .pattern("invoice.*")
        .start()
        .await
        .unwrap();
    let b_bridge = NatsBridge::builder(client.clone(), &b)
        .prefix(&prefix)
        .pattern("order.**")
        .start()
        .await
        .unwrap();
    assert_eq!(
        b_bridge.subjects(),
        [format!("{prefix}.order"), format!("{prefix}.order.>")]
    );

    for i in 0..5 {
        a.publish(signal("order.placed", i)).await.unwrap();
        a.publish(signal("user.created", i)).await.unwrap(); // nobody bridges user.*
        b.publish(signal("invoice.sent", i)).await.unwrap();
        b.publish(signal("invoice.sent.late", i)).await.unwrap(); // invoice.* is one segment
    }
    a.publish(signal("order", 0)).await.unwrap(); // `order.**` matches `order` too

    // Each bus has its own 10 (+1) signals, and what it bridges from the other.
    let at_b = nats::recv_n(&mut b_inbox, 10 + 6, WAIT).await;
    let at_a = nats::recv_n(&mut a_inbox, 11 + 5, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert!(
        nats::drain(&mut a_inbox, QUIET).await.is_empty(),
        "a got extra signals (echo?)"
    );
    assert!(
        nats::drain(&mut b_inbox, QUIET).await.is_empty(),
        "b got extra signals (echo?)"
    );

    let bridged = |got: &[Arc<Signal>], origin: &str| -> Vec<String> {
        let mut types: Vec<String> = got
            .iter()
            .filter(|s| s.extension(ORIGIN_EXTENSION).and_then(|v| v.as_str()) == Some(origin))
            .map(|s| s.ty().to_owned())
            .collect();
        types.sort();
        types.dedup();
        types
    };
    assert_eq!(bridged(&at_b, "node-a"), ["order", "order.placed"]);
    assert_eq!(bridged(&at_a, "node-b"), ["invoice.sent"]);
    // Bridged signals keep id and data.
    let placed = at_b.iter().find(|s| s.id() == "order.placed-3").unwrap();
    assert_eq!(placed.data(), Some(&json!({"i": 3})));

    let (sa, sb) = (a_bridge.stats(), b_bridge.stats());
    assert_eq!(sa.republished, 5);
    assert_eq!(sb.republished, 6);
    // b's pattern never covers what b publishes: nothing of its own comes back to it.
    assert_eq!(sb.echoes, 0);
    assert!(a_bridge.health().is_healthy(), "{:?}", a_bridge.health());
    a_bridge.shutdown().await;
    b_bridge.shutdown().await;
}

/// `start` returns once the server has the bridge's subscriptions, not once they are
/// written to the socket: a signal published from another connection right after `start`
/// arrives even when the bridge's own connection is slow to reach the server.
#[tokio::test]
async fn a_started_bridge_receives_what_is_published_right_after_over_a_slow_link() {
    let link = nats::SlowLink::start(Duration::from_millis(300)).await;
    let slow = async_nats::connect(&link.url).await.unwrap();
    let quick = nats::connect().await;
    let (prefix, _) = nats::unique("slow");
    let a = signal_bus::Bus::builder()
        .node_id("node-a")
        .build()
        .unwrap();
    a.subscribe("**", PubSub::nats(quick.clone()).prefix(&prefix))
        .unwrap();
    let (b, mut inbox) = nats::bus_with_inbox("node-b", "**");
    let bridge = NatsBridge::builder(slow.clone(), &b)
        .prefix(&prefix)
        .start()
        .await
        .unwrap();
    assert!(a.publish(signal("order.placed", 1)).await.unwrap().is_ok());
    quick.flush().await.unwrap();
    let got = nats::recv_n(&mut inbox, 1, WAIT).await;
    assert_eq!(got[0].id(), "order.placed-1");
    bridge.shutdown().await;
}

#[tokio::test]
async fn own_signals_are_skipped_and_bridged_ones_are_not_published_again() {
    let client = nats::connect().await;
    let (prefix, _) = nats::unique("echo");
    let (a, mut a_inbox) = nats::bus_with_inbox("echo-a", "**");
    let (b, mut b_inbox) = nats::bus_with_inbox("echo-b", "**");
    for bus in [&a, &b] {
        bus.subscribe("**", PubSub::nats(client.clone()).prefix(&prefix))
            .unwrap();
    }
    let bridge = |bus| {
        NatsBridge::builder(client.clone(), bus)
            .prefix(&prefix)
            .start()
    };
    let (a_bridge, b_bridge) = (bridge(&a).await.unwrap(), bridge(&b).await.unwrap());
    // A raw subscriber counts every message on the prefix: a storm would show here.
    let mut raw = client.subscribe(format!("{prefix}.>")).await.unwrap();
    client.flush().await.unwrap();

    a.publish(signal("ping.once", 0)).await.unwrap();
    let at_b = nats::recv_n(&mut b_inbox, 1, WAIT).await;
    assert_eq!(
        at_b[0].extension(ORIGIN_EXTENSION).unwrap().as_str(),
        Some("echo-a")
    );
    nats::eventually("a's bridge sees its own signal", WAIT, || {
        a_bridge.stats().echoes == 1
    })
    .await;

    let mut on_wire = 0;
    while let Ok(Some(_)) =
        tokio::time::timeout(QUIET * 2, futures_util::StreamExt::next(&mut raw)).await
    {
        on_wire += 1;
    }
    assert_eq!(
        on_wire, 1,
        "the signal crossed NATS once, with no echo back"
    );
    assert_eq!(
        nats::drain(&mut a_inbox, QUIET).await.len(),
        1,
        "a has its own signal once"
    );
    assert!(nats::drain(&mut b_inbox, QUIET).await.is_empty());
    assert_eq!(a_bridge.stats().republished, 0);
    assert_eq!(b_bridge.stats().republished, 1);
}

#[tokio::test]
async fn malformed_messages_are_counted_and_skipped() {
    let client = nats::connect().await;
    let (prefix, _) = nats::unique("bad");
    let (bus, mut inbox) = nats::bus_with_inbox("bad-node", "**");
    let bridge = NatsBridge::builder(client.clone(), &bus)
        .prefix(&prefix)
        .start()
        .await
        .unwrap();
    let good = signal("user.created", 1);
    let junk: Vec<(String, Bytes)> = vec![
        (
            format!("{prefix}.user.created"),
            Bytes::from_static(b"not json"),
        ),
        (
            format!("{prefix}.user.created"),
            Bytes::from_static(b"[1,2]"),
        ),
        (format!("{prefix}.user.created"), Bytes::from_static(b"")),
        (
            format!("{prefix}.user.created"),
            Bytes::from_static(br#"{"specversion":"1.0","id":"x","source":"/s"}"#),
        ),
        (
            format!("{prefix}.user.created"),
            Bytes::from_static(
                br#"{"specversion":"9","id":"x","source":"/s","type":"user.created"}"#,
            ),
        ),
        // A valid signal on the wrong subject.
        (format!("{prefix}.user.deleted"), good.to_json_bytes()),
        (format!("{prefix}.x"), Bytes::from(vec![0xff, 0xfe, 0x00])),
    ];
    for (subject, payload) in junk {
        client.publish(subject, payload).await.unwrap();
    }
    // Binary mode without the required attributes.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("ce-specversion", "1.0");
    headers.insert("ce-type", "user.created");
    client
        .publish_with_headers(format!("{prefix}.user.created"), headers, Bytes::new())
        .await
        .unwrap();
    // Then a good one, published by a plain client: it still arrives.
    client
        .publish(format!("{prefix}.user.created"), good.to_json_bytes())
        .await
        .unwrap();

    let got = nats::recv_n(&mut inbox, 1, WAIT).await;
    assert_eq!(got[0].id(), good.id());
    assert_eq!(
        got[0].extension(ORIGIN_EXTENSION).unwrap().as_str(),
        Some("external"),
        "a signal without an origin header is marked external"
    );
    nats::eventually("every malformed message counted", WAIT, || {
        bridge.stats().malformed == 8
    })
    .await;
    let stats = bridge.stats();
    assert_eq!((stats.received, stats.republished), (9, 1));
    assert!(bridge.health().is_healthy());
}

#[tokio::test]
async fn binary_mode_carries_attributes_in_headers() {
    let client = nats::connect().await;
    let (prefix, _) = nats::unique("bin");
    let (a, _) = nats::bus_with_inbox("bin-a", "nothing");
    let (b, mut b_inbox) = nats::bus_with_inbox("bin-b", "**");
    a.subscribe(
        "**",
        PubSub::nats(client.clone())
            .prefix(&prefix)
            .content_mode(ContentMode::Binary),
    )
    .unwrap();
    let mut raw = client.subscribe(format!("{prefix}.>")).await.unwrap();
    let _bridge = NatsBridge::builder(client.clone(), &b)
        .prefix(&prefix)
        .start()
        .await
        .unwrap();
    let sent = Signal::builder("doc.saved", "/a b")
        .id("bin-1")
        .subject("ü")
        .datacontenttype("text/plain")
        .data(json!("hello"))
        .extension("tenant", "acme")
        .build()
        .unwrap();
    a.publish(sent.clone()).await.unwrap();

    let m = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let h = m.headers.as_ref().unwrap();
    assert_eq!(h.get("ce-id").unwrap().as_str(), "bin-1");
    assert_eq!(h.get("ce-source").unwrap().as_str(), "/a%20b");
    assert_eq!(h.get("ce-tenant").unwrap().as_str(), "acme");
    assert_eq!(h.get("content-type").unwrap().as_str(), "text/plain");
    assert_eq!(h.get("ce-signalorigin").unwrap().as_str(), "bin-a");
    assert_eq!(&m.payload[..], b"hello");

    let got = nats::recv_n(&mut b_inbox, 1, WAIT).await;
    assert_eq!(
        *got[0],
        sent.with_extension(ORIGIN_EXTENSION, "bin-a").unwrap()
    );
}

#[tokio::test]
async fn jetstream_publishes_are_acknowledged_and_stored_once() {
    let client = nats::connect().await;
    let (prefix, stream) = nats::unique("jsp");
    ensure_stream(&client, &stream, &prefix).await.unwrap();
    let (bus, _) = nats::bus_with_inbox("jsp-node", "nothing");
    bus.subscribe("**", to_stream(&client, &prefix, &stream))
        .unwrap();
    for i in 0..20 {
        let report = bus.publish(signal("audit.login", i)).await.unwrap();
        assert!(report.is_ok(), "{report}");
    }
    // The same signal again (a retry after a lost ack): JetStream keeps one copy.
    let report = bus.publish(signal("audit.login", 0)).await.unwrap();
    assert!(report.is_ok(), "{report}");
    let js = async_nats::jetstream::new(client.clone());
    let mut s = js.get_stream(&stream).await.unwrap();
    assert_eq!(s.info().await.unwrap().state.messages, 20);
    // The same id from another source is another signal (CloudEvents: source + id).
    let other_source = Signal::builder("audit.login", "/elsewhere")
        .id("audit.login-0")
        .build()
        .unwrap();
    assert!(bus.publish(other_source).await.unwrap().is_ok());
    assert_eq!(s.info().await.unwrap().state.messages, 21);

    // A batch target publishes a batch and awaits its acks together.
    let batched =
        Target::new(to_stream(&client, &prefix, &stream)).batch(8, Duration::from_millis(20));
    bus.subscribe("bulk.**", batched).unwrap();
    for i in 0..30 {
        bus.publish(signal("bulk.item", i)).await.unwrap();
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let stored = s.info().await.unwrap().state.messages;
        if stored == 51 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{stored} of 51 stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A stream that does not capture the subject: a permanent failure, named.
    let other = format!("{stream}X");
    let (other_prefix, _) = nats::unique("jsq");
    ensure_stream(&client, &other, &other_prefix).await.unwrap();
    let (bus2, _) = nats::bus_with_inbox("jsp-node2", "nothing");
    bus2.subscribe("**", to_stream(&client, &prefix, &other))
        .unwrap();
    let report = bus2.publish(signal("audit.login", 99)).await.unwrap();
    let failure = report.failures().next().expect("refused");
    let error: &DeliveryError = failure.error.unwrap();
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
    assert!(error.to_string().contains(&other), "{error}");
    nats::delete_stream(&client, &stream).await;
    nats::delete_stream(&client, &other).await;
}

#[tokio::test]
async fn durable_bridge_catches_up_on_what_was_published_while_it_was_down() {
    let client = nats::connect().await;
    let (prefix, stream) = nats::unique("dur");
    let (a, _) = nats::bus_with_inbox("dur-a", "nothing");
    a.subscribe("**", to_stream(&client, &prefix, &stream))
        .unwrap();
    let (b, mut b_inbox) = nats::bus_with_inbox("dur-b", "**");
    let start = || {
        NatsBridge::builder(client.clone(), &b)
            .prefix(&prefix)
            .pattern("order.*")
            .durable(&stream, "billing")
            .start()
    };
    let bridge = start().await.unwrap();
    for i in 0..10 {
        assert!(a.publish(signal("order.placed", i)).await.unwrap().is_ok());
    }
    let first = nats::recv_n(&mut b_inbox, 10, WAIT).await;
    bridge.shutdown().await;

    // While b's bridge is down: 25 more, and some it does not want.
    for i in 10..35 {
        assert!(a.publish(signal("order.placed", i)).await.unwrap().is_ok());
        assert!(a
            .publish(signal("order.placed.late", i))
            .await
            .unwrap()
            .is_ok());
    }
    assert!(
        nats::drain(&mut b_inbox, QUIET).await.is_empty(),
        "the bridge is down"
    );

    let bridge = start().await.unwrap();
    let caught_up = nats::recv_n(&mut b_inbox, 25, WAIT).await;
    assert!(
        nats::drain(&mut b_inbox, QUIET).await.is_empty(),
        "nothing twice"
    );
    let mut ids: Vec<String> = first
        .iter()
        .chain(&caught_up)
        .map(|s| s.id().to_owned())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..35).map(|i| format!("order.placed-{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected, "every signal exactly once, in the end");
    assert_eq!(bridge.subjects(), [format!("{prefix}.order.*")]);
    bridge.shutdown().await;
    nats::delete_stream(&client, &stream).await;
}

/// A JetStream publisher bus, and a bus whose `job.*` handler fails the first `failures`
/// deliveries, bridged durably; the handler's call count.
async fn flaky_durable_pair(
    tag: &str,
    failures: usize,
    configure: impl FnOnce(NatsBridgeBuilder) -> NatsBridgeBuilder,
) -> (
    signal_bus::Bus,
    NatsBridge,
    Arc<AtomicUsize>,
    async_nats::Client,
    String,
) {
    let client = nats::connect().await;
    let (prefix, stream) = nats::unique(tag);
    let (a, _) = nats::bus_with_inbox(&format!("{tag}-a"), "nothing");
    a.subscribe("**", to_stream(&client, &prefix, &stream))
        .unwrap();
    let b = signal_bus::Bus::builder()
        .name(format!("{tag}-b"))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    b.subscribe(
        "job.*",
        Handler::new(move |s: Arc<Signal>| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < failures {
                    Err(DeliveryError::retryable(format!("not yet: {}", s.id())))
                } else {
                    Ok(())
                }
            }
        }),
    )
    .unwrap();
    let builder = NatsBridge::builder(client.clone(), &b)
        .prefix(&prefix)
        .durable(&stream, "worker");
    let bridge = configure(builder).start().await.unwrap();
    (a, bridge, calls, client, stream)
}

#[tokio::test]
async fn durable_bridge_redelivers_when_a_local_target_fails() {
    let (a, bridge, calls, client, stream) =
        flaky_durable_pair("red", 2, |b| b.redelivery_delay(Duration::from_millis(50))).await;
    a.publish(signal("job.run", 1)).await.unwrap();
    nats::eventually("delivered on the third try", WAIT, || {
        calls.load(Ordering::SeqCst) >= 3
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "acknowledged after the success: no more"
    );
    let stats = bridge.stats();
    assert_eq!(
        (
            stats.failed,
            stats.redeliveries,
            stats.republished,
            stats.abandoned
        ),
        (2, 2, 3, 0)
    );
    bridge.shutdown().await;
    nats::delete_stream(&client, &stream).await;
}

#[tokio::test]
async fn durable_bridge_gives_up_after_max_deliver_and_says_so() {
    let (a, bridge, calls, client, stream) = flaky_durable_pair("give", usize::MAX, |b| {
        b.max_deliver(3).redelivery_delay(Duration::from_millis(20))
    })
    .await;
    a.publish(signal("job.run", 1)).await.unwrap();
    nats::eventually("abandoned after three deliveries", WAIT, || {
        bridge.stats().abandoned == 1
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let stats = bridge.stats();
    assert_eq!(
        (stats.failed, stats.redeliveries, stats.abandoned),
        (3, 2, 1)
    );
    bridge.shutdown().await;
    nats::delete_stream(&client, &stream).await;
}

#[tokio::test]
async fn a_closed_bus_stops_its_bridge() {
    let client = nats::connect().await;
    let (prefix, _) = nats::unique("closed");
    let (bus, _) = nats::bus_with_inbox("closed-node", "**");
    let bridge = NatsBridge::builder(client.clone(), &bus)
        .prefix(&prefix)
        .start()
        .await
        .unwrap();
    assert!(bridge.health().is_healthy());
    bus.close();
    client
        .publish(format!("{prefix}.a"), signal("a", 1).to_json_bytes())
        .await
        .unwrap();
    nats::eventually("the bridge stops", WAIT, || !bridge.health().is_healthy()).await;
    assert_eq!(bridge.health().message.as_deref(), Some("bridge stopped"));
    assert_eq!(bridge.stats().republished, 0);
}

#[tokio::test]
async fn bad_options_are_refused_with_their_values() {
    let client = nats::connect().await;
    let bus = signal_bus::Bus::builder().build().unwrap();
    let err = NatsBridge::builder(client.clone(), &bus)
        .pattern("a..b")
        .prefix("x.*")
        .durable("S.1", "")
        .max_deliver(0)
        .ack_wait(Duration::from_millis(1))
        .confirm_wait(Duration::from_secs(61))
        .start()
        .await
        .unwrap_err()
        .to_string();
    for part in [
        "pattern `a..b`",
        "prefix `x.*`",
        "stream `S.1`",
        "consumer ``",
        "max_deliver `0`",
        "ack_wait `1ms`",
        "confirm_wait `61s`",
    ] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }
    let err = bus
        .subscribe(
            "**",
            PubSub::nats(client.clone())
                .prefix("a b")
                .jetstream("no.dots"),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("prefix `a b`") && err.contains("jetstream `no.dots`"),
        "{err}"
    );
    let err = NatsBridge::builder(client.clone(), &bus)
        .prefix("_INBOX.signals")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("prefix `_INBOX.signals`") && err.contains("must not start with `_INBOX`"),
        "{err}"
    );
    let custom = async_nats::ConnectOptions::new()
        .custom_inbox_prefix("acme.inbox")
        .connect(nats::url())
        .await
        .unwrap();
    let err = NatsBridge::builder(custom, &bus)
        .prefix("acme")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("prefix `acme`") && err.contains("inbox prefix `acme.inbox`"),
        "{err}"
    );
    let err = ensure_stream(&client, "ok", "bad..prefix")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad..prefix"), "{err}");
}

/// Types with any character but whitespace and control characters cross NATS: each type's
/// subject is a literal (a `*` or `>` segment and every `%` escaped), JetStream stores them,
/// and a bridge for an escaped literal pattern gets exactly its type from the server.
#[tokio::test]
async fn types_with_any_character_cross_nats_on_literal_subjects() {
    let client = nats::connect().await;
    let (prefix, stream) = nats::unique("chars");
    ensure_stream(&client, &stream, &prefix).await.unwrap();
    let (a, _) = nats::bus_with_inbox("chars-a", "nothing");
    a.subscribe("**", PubSub::nats(client.clone()).prefix(&prefix))
        .unwrap();
    a.subscribe("**", to_stream(&client, &prefix, &stream))
        .unwrap();
    let (b, mut b_inbox) = nats::bus_with_inbox("chars-b", "**");
    let all = NatsBridge::builder(client.clone(), &b)
        .prefix(&prefix)
        .pattern("**")
        .start()
        .await
        .unwrap();
    let (c, mut c_inbox) = nats::bus_with_inbox("chars-c", "**");
    let exact = NatsBridge::builder(client.clone(), &c)
        .prefix(&prefix)
        .pattern(r"orders.\*")
        .start()
        .await
        .unwrap();
    assert_eq!(exact.subjects(), [format!("{prefix}.orders.%2A")]);

    let types = [
        "com.example/orders:created",
        "a+b@c~d.#.$x.[y].{z}",
        "orders.created",
        "orders.>",
        "orders.%2A",
        "100%.caf\u{e9}.\u{65e5}\u{672c}",
        "*.>.**",
        "orders.*",
    ];
    for (i, ty) in types.iter().enumerate() {
        let report = a.publish(signal(ty, i)).await.unwrap();
        assert!(report.is_ok(), "{ty}: {report}");
    }
    // Each signal goes out twice (core NATS, and the JetStream publish on the same subject).
    let got = nats::recv_n(&mut b_inbox, 2 * types.len(), WAIT).await;
    let mut received: Vec<&str> = got.iter().map(|s| s.ty()).collect();
    let mut sent = [types, types].concat();
    received.sort_unstable();
    sent.sort_unstable();
    assert_eq!(received, sent);
    // `orders.*` went out last: c's subscription saw nothing before it.
    let only = nats::recv_n(&mut c_inbox, 2, WAIT).await;
    assert!(only.iter().all(|s| s.ty() == "orders.*"), "{only:?}");
    assert_eq!(exact.stats().received, 2, "{:?}", exact.stats());
    assert_eq!(all.stats().malformed, 0, "{:?}", all.stats());

    let js = async_nats::jetstream::new(client.clone());
    let mut s = js.get_stream(&stream).await.unwrap();
    // The stream captures both publishes of each: every subject is a literal it stores.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let stored = s.info().await.unwrap().state.messages;
        if stored == 2 * types.len() as u64 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stored} stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    all.shutdown().await;
    exact.shutdown().await;
    nats::delete_stream(&client, &stream).await;
}
