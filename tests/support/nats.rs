//! NATS for the cluster tests: the shared server at `SIGNAL_BUS_NATS_URL` (default
//! `nats://127.0.0.1:4222`), which must be up (tests fail, never skip), and servers of a
//! test's own on a free port that it can stop and start again.

#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use signal_bus::{adapter::Channel, Bus, Signal};
use tokio::sync::mpsc;

pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// The shared server's URL.
pub fn url() -> String {
    std::env::var("SIGNAL_BUS_NATS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Options that reconnect fast, for tests that stop their server.
pub fn fast_reconnect() -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connection_timeout(Duration::from_secs(2))
}

/// A client of the shared server; panics with the URL when it is unreachable.
pub async fn connect() -> async_nats::Client {
    let url = url();
    async_nats::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "NATS must be reachable at SIGNAL_BUS_NATS_URL ({url}) for the `nats` tests: {e}. \
             Start it with: nats-server -a 127.0.0.1 -p 4222 -js"
        )
    })
}

/// A prefix and stream name no other test uses.
pub fn unique(tag: &str) -> (String, String) {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let short = &id[id.len() - 12..];
    (
        format!("t{tag}{short}"),
        format!("T{}{short}", tag.to_uppercase()),
    )
}

/// Deletes a test's stream (best effort).
pub async fn delete_stream(client: &async_nats::Client, stream: &str) {
    let _ = async_nats::jetstream::new(client.clone())
        .delete_stream(stream)
        .await;
}

/// A bus named `name` with node id `name`, and a channel receiving every signal matching
/// `pattern`.
pub fn bus_with_inbox(name: &str, pattern: &str) -> (Bus, mpsc::Receiver<Arc<Signal>>) {
    let bus = Bus::builder().name(name).node_id(name).build().unwrap();
    let (tx, rx) = mpsc::channel(100_000);
    bus.subscribe(pattern, Channel::new(tx)).unwrap();
    (bus, rx)
}

/// Receives `n` signals, or panics after `within`.
pub async fn recv_n(
    rx: &mut mpsc::Receiver<Arc<Signal>>,
    n: usize,
    within: Duration,
) -> Vec<Arc<Signal>> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => got.push(s),
            Ok(None) => panic!("inbox closed after {} of {n} signals", got.len()),
            Err(_) => panic!(
                "only {} of {n} signals arrived within {within:?}",
                got.len()
            ),
        }
    }
    got
}

/// Whatever arrives within `quiet` of the last signal.
pub async fn drain(rx: &mut mpsc::Receiver<Arc<Signal>>, quiet: Duration) -> Vec<Arc<Signal>> {
    let mut got = Vec::new();
    while let Ok(Some(s)) = tokio::time::timeout(quiet, rx.recv()).await {
        got.push(s);
    }
    got
}

/// Waits until `check` holds, or panics with `what` after `within`.
pub async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The nats-server binary: `SIGNAL_BUS_NATS_SERVER`, else `nats-server` on the PATH, else
/// `/usr/sbin/nats-server`.
fn server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SIGNAL_BUS_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

/// A nats-server of the test's own, with JetStream on a store directory that survives
/// restarts. Killed on drop.
pub struct OwnServer {
    pub port: u16,
    pub store: PathBuf,
    child: Option<Child>,
}

impl OwnServer {
    pub fn start() -> OwnServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = std::env::temp_dir().join(format!("signal-bus-nats-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&store).unwrap();
        let mut server = OwnServer {
            port,
            store,
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let binary = server_binary();
        let child = Command::new(&binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {} (set SIGNAL_BUS_NATS_SERVER): {e}",
                    binary.display()
                )
            });
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nats-server did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// A TCP proxy on 127.0.0.1 to the shared server that holds back what the client sends by
/// `delay` (in order) and passes what the server sends straight through: a connection whose
/// subscriptions reach the server late, while other connections are quick.
pub struct SlowLink {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl SlowLink {
    pub async fn start(delay: Duration) -> SlowLink {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = url()
            .trim_start_matches("nats://")
            .trim_start_matches("tls://")
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue; // this client's connection fails; the next one may not
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                        let due = tokio::time::Instant::now() + delay;
                        if tx.send((due, buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some((due, bytes)) = rx.recv().await {
                        tokio::time::sleep_until(due).await;
                        if server_write.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
            }
        });
        SlowLink {
            url: format!("nats://127.0.0.1:{port}"),
            task,
        }
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}
