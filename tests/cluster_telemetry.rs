//! A bridge reports what happens to it as `signal_bus::cluster` events: start, malformed
//! messages, the connection lost and regained (its own nats-server, killed and restarted),
//! and stop.
#![cfg(feature = "nats")]

#[path = "support/nats.rs"]
mod nats;

use std::{
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use signal_bus::cluster::NatsBridge;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

const WAIT: Duration = Duration::from_secs(20);

// One thread: the bridge task runs where the subscriber is set.
#[tokio::test(flavor = "current_thread")]
async fn bridge_events_name_what_happened() {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_env_filter("signal_bus::cluster=info")
        .without_time()
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

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

    let text = out.text();
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
