#![cfg(feature = "http")]
//! The egress guard with proxy environment variables set: a guarded webhook ignores them (its
//! resolver must see the destination), a webhook with `allow_private_networks(true)` uses
//! them. A real HTTP proxy on 127.0.0.1 records what reaches it.
//!
//! Environment variables are process-global and read when a client is built: these tests
//! live in their own binary, run one at a time (a lock), set the variables first, and each
//! uses its own `pool_max_idle_per_host` so it gets a client built under its own variables.

mod support;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use serde_json::json;
use signal_bus::{dispatch, http::Webhook, Adapter, ErrorKind, Signal};
use support::TestServer;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// One test at a time: they change the process environment.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Clears every proxy variable, then sets `vars`. Only called under `serial()`, before the
/// test's runtime starts.
fn set_proxy_env(vars: &[(&str, &str)]) {
    for v in PROXY_VARS {
        std::env::remove_var(v);
    }
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn signal(id: &str) -> Signal {
    Signal::builder("order.placed", "/shop")
        .id(id)
        .data(json!({"total": 42}))
        .build()
        .unwrap()
}

/// A forward proxy on 127.0.0.1: records each request line (`POST http://host/path HTTP/1.1`
/// or `CONNECT host:443 HTTP/1.1`), answers 204 to plain requests and 502 to CONNECT.
struct Proxy {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let Some(line) = text.lines().next().filter(|l| !l.is_empty()) else {
                        return;
                    };
                    record.lock().unwrap().push(line.to_owned());
                    let reply: &[u8] = if line.starts_with("CONNECT ") {
                        b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    } else {
                        b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
                    };
                    let _ = socket.write_all(reply).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Proxy { url, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A webhook to a name resolving to 127.0.0.1, with `var` pointing at the proxy: refused by
/// the guard, and neither the proxy nor the receiver sees anything.
fn guarded_webhook_ignores(var: &str, pool: usize) {
    let _serial = serial();
    let rt = runtime();
    let (proxy, server) = rt.block_on(async { (Proxy::start().await, TestServer::start().await) });
    set_proxy_env(&[(var, &proxy.url)]);
    rt.block_on(async {
        let hook = Webhook::new(&server.localhost_url("/hook"))
            .unwrap()
            .pool_max_idle_per_host(pool);
        // Delivered directly: `subscribe` (and `dispatch`) would refuse `localhost` before
        // any request; this is the guard at connect time.
        let e = hook.deliver(&signal("p1")).await.expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("host `localhost` resolves to")
                && msg.contains("a loopback address")
                && msg.contains("allow_private_networks(true)"),
            "{msg}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(proxy.seen(), Vec::<String>::new(), "the proxy saw nothing");
        assert_eq!(server.count(), 0, "the receiver saw nothing");
    });
    set_proxy_env(&[]);
}

#[test]
fn guarded_webhook_ignores_http_proxy() {
    guarded_webhook_ignores("HTTP_PROXY", 9_101);
}

#[test]
fn guarded_webhook_ignores_lowercase_http_proxy() {
    guarded_webhook_ignores("http_proxy", 9_102);
}

#[test]
fn guarded_webhook_ignores_all_proxy() {
    guarded_webhook_ignores("ALL_PROXY", 9_103);
}

#[test]
fn guarded_https_webhook_sends_no_connect_to_the_proxy() {
    let _serial = serial();
    let rt = runtime();
    let proxy = rt.block_on(Proxy::start());
    set_proxy_env(&[("HTTPS_PROXY", &proxy.url), ("ALL_PROXY", &proxy.url)]);
    rt.block_on(async {
        let hook = Webhook::new("https://localhost:9/hook")
            .unwrap()
            .pool_max_idle_per_host(9_104);
        let e = hook.deliver(&signal("p2")).await.expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
        assert!(e.to_string().contains("a loopback address"), "{e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(proxy.seen(), Vec::<String>::new(), "no CONNECT");
    });
    set_proxy_env(&[]);
}

#[test]
fn guarded_webhook_does_not_fall_back_to_the_proxy_when_dns_fails() {
    let _serial = serial();
    let rt = runtime();
    let proxy = rt.block_on(Proxy::start());
    set_proxy_env(&[("HTTP_PROXY", &proxy.url)]);
    rt.block_on(async {
        // `.invalid` never resolves (RFC 6761): only a proxy could deliver this.
        let hook = Webhook::new("http://hooks.invalid/hook")
            .unwrap()
            .pool_max_idle_per_host(9_105);
        let report = dispatch(signal("p3"), hook).await.unwrap();
        assert!(report.get(0).unwrap().error.is_some(), "{report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(proxy.seen(), Vec::<String>::new());
    });
    set_proxy_env(&[]);
}

#[test]
fn unguarded_webhook_uses_the_environment_proxy() {
    let _serial = serial();
    let rt = runtime();
    let proxy = rt.block_on(Proxy::start());
    set_proxy_env(&[("HTTP_PROXY", &proxy.url), ("HTTPS_PROXY", &proxy.url)]);
    rt.block_on(async {
        // The name does not resolve: delivered only because the proxy took it.
        let hook = Webhook::new("http://hooks.invalid/hook?token=x")
            .unwrap()
            .allow_private_networks(true)
            .pool_max_idle_per_host(9_106);
        let report = dispatch(signal("p4"), hook).await.unwrap();
        assert!(report.is_ok(), "{report}");
        // HTTPS goes through a CONNECT tunnel (this proxy refuses it).
        let hook = Webhook::new("https://hooks.invalid/hook")
            .unwrap()
            .allow_private_networks(true)
            .pool_max_idle_per_host(9_106);
        let report = dispatch(signal("p5"), hook).await.unwrap();
        assert!(report.get(0).unwrap().error.is_some(), "{report}");
        assert_eq!(
            proxy.seen(),
            [
                "POST http://hooks.invalid/hook?token=x HTTP/1.1",
                "CONNECT hooks.invalid:443 HTTP/1.1"
            ]
        );
    });
    set_proxy_env(&[]);
}

#[test]
fn unguarded_webhook_honours_no_proxy() {
    let _serial = serial();
    let rt = runtime();
    let (proxy, server) = rt.block_on(async { (Proxy::start().await, TestServer::start().await) });
    set_proxy_env(&[("ALL_PROXY", &proxy.url), ("NO_PROXY", "localhost")]);
    rt.block_on(async {
        let hook = Webhook::new(&server.localhost_url("/direct"))
            .unwrap()
            .allow_private_networks(true)
            .pool_max_idle_per_host(9_107);
        let report = dispatch(signal("p6"), hook).await.unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(server.count(), 1);
        assert_eq!(proxy.seen(), Vec::<String>::new());
    });
    set_proxy_env(&[]);
}

/// `deliver` called directly (no `subscribe`, so no validation) still refuses a literal
/// address the guard refuses, and the receiver sees nothing.
#[tokio::test]
async fn direct_deliver_to_a_literal_address_is_refused() {
    use signal_bus::Adapter as _;
    let hook = signal_bus::http::Webhook::new("http://127.0.0.1:9/hook").unwrap();
    let signal = signal_bus::Signal::builder("a.b", "/egress")
        .build()
        .unwrap();
    let e = hook.deliver(&signal).await.unwrap_err();
    assert_eq!(e.kind(), signal_bus::ErrorKind::Permanent, "{e}");
    assert!(e.to_string().contains("a loopback address"), "{e}");
}
