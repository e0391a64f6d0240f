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
