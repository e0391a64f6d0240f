#![cfg(feature = "http")]
//! `HttpPool`: a named client shared on purpose, with a real cap on connections per host
//! (against a loopback server that holds requests open until told), its pool timeout, and
//! user-built clients.

mod support;

use std::time::Duration;

use serde_json::json;
use signal_bus::{
    dispatch,
    http::{Http, HttpPool, Webhook},
    Adapter, Bus, DeliveryError, Signal, Target,
};
use support::{HoldingServer, TestServer};
use tokio::sync::mpsc;

fn signal(n: usize) -> Signal {
    Signal::builder("order.placed", "/shop")
        .id(format!("ord-{n}"))
        .data(json!({ "n": n }))
        .build()
        .unwrap()
}

/// Five adapters on one pool, three `Http` and two `Webhook`, to the same host.
fn five_adapters(url: &str, pool: &HttpPool) -> Vec<Target> {
    (0..5)
        .map(|i| {
            let target = if i % 2 == 0 {
                Target::new(Http::post(url).unwrap().pool(pool))
            } else {
                Target::new(
                    Webhook::new(url)
                        .unwrap()
                        .allow_private_networks(true)
                        .pool(pool),
                )
            };
            target.timeout(Duration::from_secs(3600))
        })
        .collect()
}

/// Delivers to each target on its own task; each outcome arrives on the channel.
fn deliver_all(targets: Vec<Target>) -> mpsc::UnboundedReceiver<Result<(), DeliveryError>> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (n, target) in targets.into_iter().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            let report = dispatch(signal(n), target).await.unwrap();
            let outcome = match report.get(0).unwrap().error {
                None => Ok(()),
                Some(e) => Err(e.clone()),
            };
            let _ = tx.send(outcome);
        });
    }
    rx
}

#[tokio::test]
async fn max_connections_caps_what_is_open_at_once() {
    let server = HoldingServer::start().await;
    let pool = HttpPool::new("payments")
        .max_connections(2)
        .pool_timeout(Duration::from_secs(60));
    pool.validate().unwrap();
    let mut outcomes = deliver_all(five_adapters(&server.url("/hook"), &pool));
    server.wait_until("2 held", |s| s.held() == 2).await;
    // One answer lets exactly one waiting request in: still 2 held, never more.
    for answered in 1..=3 {
        server.release(1);
        server
            .wait_until("the next one held", |s| {
                s.answered() == answered && s.held() == 2
            })
            .await;
    }
    server.release(2);
    for _ in 0..5 {
        outcomes.recv().await.unwrap().unwrap();
    }
    assert_eq!(server.answered(), 5);
    assert_eq!(server.max_held(), 2, "at most 2 requests in flight");
    assert!(
        server.max_open() <= 2,
        "{} connections open at once",
        server.max_open()
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_that_waits_past_pool_timeout_fails_with_the_pool_error() {
    let server = HoldingServer::start().await;
    let pool = HttpPool::new("payments")
        .max_connections(2)
        .pool_timeout(Duration::from_millis(500));
    let mut outcomes = deliver_all(five_adapters(&server.url("/hook"), &pool));
    let mut failed = Vec::new();
    for _ in 0..3 {
        failed.push(outcomes.recv().await.unwrap().unwrap_err());
    }
    assert_eq!(server.held(), 2);
    for e in &failed {
        match e {
            DeliveryError::PoolTimeout {
                pool,
                waited,
                max_connections,
                ..
            } => {
                assert_eq!(pool, "payments");
                assert_eq!(*waited, Duration::from_millis(500));
                assert_eq!(*max_connections, 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(e.is_retryable());
        assert_eq!(
            e.to_string(),
            format!(
                "pool `payments` had no free connection to {} within 500ms (max_connections 2)",
                server.addr
            )
        );
    }
    server.release(2);
    for _ in 0..2 {
        outcomes.recv().await.unwrap().unwrap();
    }
}

/// A client of the test's own: default headers, ring given explicitly (plain HTTP, so no
/// roots are needed).
fn user_client() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-tenant", "acme".parse().unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}

#[tokio::test]
async fn from_client_sends_through_the_users_client() {
    let server = TestServer::start().await;
    let pool = HttpPool::from_client("corporate", user_client()).max_connections(4);
    assert!(pool.is_user_client());
    let http = Http::post(&server.url("/in")).unwrap().pool(&pool);
    let webhook = Webhook::new(&server.url("/hook"))
        .unwrap()
        .allow_private_networks(true)
        .pool(&pool);
    let bus = Bus::builder().build().unwrap();
    bus.subscribe("order.*", http).unwrap();
    bus.subscribe("order.*", webhook).unwrap();
    let report = bus.publish(signal(1)).await.unwrap();
    assert!(report.is_ok(), "{report}");
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert_eq!(r.headers["x-tenant"], "acme", "{}", r.path);
    }
    // The webhook's own headers are still there.
    let hook = seen.iter().find(|r| r.path == "/hook").unwrap();
    assert!(hook.headers.contains_key("webhook-id"));
}

#[tokio::test]
async fn a_guarded_webhook_on_a_user_client_is_refused_unless_accepted() {
    let bus = Bus::builder().build().unwrap();
    let pool = HttpPool::from_client("corporate", user_client());
    let hook = Webhook::new("https://hooks.example.com/in")
        .unwrap()
        .pool(&pool);
    assert_eq!(
        hook.validate().unwrap_err().to_string(),
        "invalid pool `corporate`: uses a client built by you, which resolves names itself, \
         so the egress guard cannot check them: use allow_private_networks(true) on this \
         webhook, or accept literal-only checks with HttpPool::guard_literals_only(true)"
    );
    assert!(bus.subscribe("order.*", hook.clone()).is_err());
    // A direct delivery is refused too, without a request.
    let e = hook.deliver(&signal(1)).await.unwrap_err();
    assert!(
        e.to_string().contains("egress guard cannot check them"),
        "{e}"
    );
    // Accepted: literal addresses and local names are still refused; other names pass.
    let accepted = pool.guard_literals_only(true);
    Webhook::new("https://hooks.example.com/in")
        .unwrap()
        .pool(&accepted)
        .validate()
        .unwrap();
    let local = Webhook::new("http://api.localhost:8080/in")
        .unwrap()
        .pool(&accepted);
    assert_eq!(
        local.validate().unwrap_err().to_string(),
        "invalid url `http://api.localhost:8080/in`: names `api.localhost`, a loopback name \
         (RFC 6761); webhooks refuse it unless allow_private_networks(true)"
    );
    let literal = Webhook::new("http://10.0.0.8/in").unwrap().pool(&accepted);
    assert!(literal.validate().is_err());
}

#[test]
fn connection_settings_belong_to_the_pool() {
    let pool = HttpPool::new("payments");
    let http = Http::post("https://api.example.com/")
        .unwrap()
        .pool(&pool)
        .connect_timeout(Duration::from_secs(2));
    assert_eq!(
        http.validate().unwrap_err().to_string(),
        "invalid pool `payments`: sets the connections of this adapter: set \
         pool_max_idle_per_host, pool_idle_timeout and connect_timeout on the pool, not on the \
         adapter"
    );
    let bad = HttpPool::new("payments").max_connections(0);
    let http = Http::post("https://api.example.com/").unwrap().pool(&bad);
    assert_eq!(
        http.validate().unwrap_err().to_string(),
        "invalid max_connections `0`: must be between 1 and 10000"
    );
}
