//! A bridge reports what happens to it as `signal_bus::cluster` events: start, malformed
//! messages, the connection lost and regained (its own nats-server, killed and restarted),
//! and stop.
#![cfg(feature = "nats")]

#[path = "support/nats.rs"]
mod nats;

#[path = "support/capture.rs"]
mod capture;

use std::time::Duration;

use bytes::Bytes;
use signal_bus::cluster::NatsBridge;

const WAIT: Duration = Duration::from_secs(20);

// One thread: the bridge task runs where the subscriber is set.
#[tokio::test(flavor = "current_thread")]
async fn bridge_events_name_what_happened() {
    let (out, _guard) = capture::capture("signal_bus::cluster=info");

    let mut server = nats::OwnServer::start();
    let client = nats::fast_reconnect().connect(server.url()).await.unwrap();
    let (bus, _) = nats::bus_with_inbox("tele", "**");
    let bridge = NatsBridge::builder(client.clone(), &bus)
        .start()
        .await
        .unwrap();
    client
        .publish("signals.user.created", Bytes::from_static(b"{oops"))
        .await
        .unwrap();
    nats::eventually("the malformed message is counted", WAIT, || {
        bridge.stats().malformed == 1
    })
    .await;

    server.kill();
    nats::eventually("the disconnection is counted", WAIT, || {
        bridge.stats().disconnects == 1
    })
    .await;
    assert!(!bridge.health().is_healthy());
    server.restart();
    nats::eventually("the reconnection is counted", WAIT, || {
        bridge.stats().reconnects == 1
    })
    .await;
    nats::eventually("healthy again", WAIT, || bridge.health().is_healthy()).await;
    bridge.shutdown().await;

    let text = capture::text(&out);
    for expected in [
        "NATS bridge started. kind=\"started\" bus=\"tele\" subjects=[\"signals.>\"] durable=false",
        "Skipped a NATS message that is not a signal. kind=\"malformed\" bus=\"tele\" subject=\"signals.user.created\"",
        "Disconnected from NATS; the client is reconnecting. kind=\"disconnected\" bus=\"tele\"",
        "Reconnected to NATS. kind=\"reconnected\" bus=\"tele\"",
        "NATS bridge stopped. kind=\"stopped\" bus=\"tele\" reason=\"shut down\"",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(
        text.contains(" WARN signal_bus::cluster: Disconnected"),
        "{text}"
    );
}

/// A wildcard tap on the bridge's own connection takes the probe's message, so the server
/// never answers "no responders"; the probe's own copy confirms the subscriptions anyway,
/// with no `unconfirmed` warning (a probe that waited for no-responders alone would sit out
/// the whole minute and then warn).
#[tokio::test(flavor = "current_thread")]
async fn a_wildcard_tap_on_the_bridges_connection_does_not_stall_start() {
    let (out, _guard) = capture::capture("signal_bus::cluster=info");
    let client = nats::connect().await;
    let _tap = client.subscribe(">").await.unwrap();
    let (prefix, _) = nats::unique("tap");
    let (bus, _) = nats::bus_with_inbox("tap", "**");
    let bridge = NatsBridge::builder(client.clone(), &bus)
        .prefix(&prefix)
        .confirm_wait(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    bridge.shutdown().await;
    let text = capture::text(&out);
    assert!(text.contains("kind=\"started\""), "{text}");
    assert!(!text.contains("unconfirmed"), "{text}");
}

/// A server that does not answer the probe within `confirm_wait` (here: the bridge's link
/// holds everything it sends for 2 s, twice the wait) is named in a warning, and the bridge
/// starts anyway.
#[tokio::test(flavor = "current_thread")]
async fn an_unconfirmed_start_is_a_warning() {
    let (out, _guard) = capture::capture("signal_bus::cluster=info");
    let link = nats::SlowLink::start(Duration::from_secs(2)).await;
    let client = signal_bus::cluster::async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(20))
        .connect(&link.url)
        .await
        .unwrap();
    let (prefix, _) = nats::unique("unconf");
    let (bus, _) = nats::bus_with_inbox("unconf", "**");
    let bridge = NatsBridge::builder(client.clone(), &bus)
        .prefix(&prefix)
        .confirm_wait(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let text = capture::text(&out);
    assert!(
        text.contains(
            " WARN signal_bus::cluster: NATS bridge started, but could not confirm that the \
             server has its subscriptions: signals published in the next moments may be \
             missed. kind=\"unconfirmed\" bus=\"unconf\" reason=\"no answer within 1s\""
        ),
        "{text}"
    );
    bridge.shutdown().await;
}
