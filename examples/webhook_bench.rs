//! Signed webhook deliveries per second through a bus to a loopback receiver, beside raw
//! reqwest posts of the same bytes, in the same run.
//!
//! ```text
//! cargo run --release --example webhook_bench -- --concurrency 16 --requests 100000
//! ```
//! Flags: `--concurrency N` (default 16), `--requests N` (default 100,000), `--runs N`
//! (default 3; medians are printed).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use signal_bus::{
    http::{signing::StandardWebhooks, Webhook},
    Bus, Signal,
};

fn flag(name: &str, default: u64) -> Result<u64, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.replace('_', "").parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{name} takes a whole number above 0")),
    }
}

/// A 204 receiver on its own thread and runtime, like a separate process.
fn receiver() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let app = axum::Router::new()
                .fallback(|_b: axum::body::Bytes| async { axum::http::StatusCode::NO_CONTENT });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    rx.recv().expect("receiver started")
}

async fn spread<F, Fut>(total: u64, concurrency: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let per_task = total.div_ceil(concurrency);
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    op(t * per_task + i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let concurrency = flag("--concurrency", 16)?;
    let requests = flag("--requests", 100_000)?;
    let runs = flag("--runs", 3)?;
    let url = format!("http://{}/hook", receiver());

    let bus = Bus::builder().name("webhook-bench").build()?;
    bus.subscribe(
        "order.**",
        Webhook::new(&url)?
            .allow_private_networks(true)
            .signing(StandardWebhooks::new(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            )?),
    )?;
    let template = Signal::builder("order.placed", "/bench/shop")
        .data(serde_json::json!({"order_id": 1, "total_cents": 129_900, "currency": "EUR"}))
        .build()?;
    let body = bytes::Bytes::from(serde_json::to_vec(&template)?);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let template = Arc::new(template);

    let (mut raw, mut signed) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (c, u, b) = (client.clone(), url.clone(), body.clone());
        raw.push(
            spread(requests, concurrency, move |_| {
                let (c, u, b) = (c.clone(), u.clone(), b.clone());
                async move {
                    let r = c.post(&u).body(b).send().await.expect("raw post");
                    assert!(r.status().is_success());
                }
            })
            .await,
        );
        let (bus, t) = (bus.clone(), Arc::clone(&template));
        signed.push(
            spread(requests, concurrency, move |_| {
                let (bus, t) = (bus.clone(), Arc::clone(&t));
                async move {
                    // A fresh copy: serialization and signing are paid every time.
                    let report = bus.publish(Signal::clone(&t)).await.expect("bus open");
                    assert!(report.is_ok(), "{report}");
                }
            })
            .await,
        );
    }
    raw.sort();
    signed.sort();
    let (raw, signed) = (raw[raw.len() / 2], signed[signed.len() / 2]);
    let rate = |d: Duration| requests as f64 / d.as_secs_f64();
    println!("{requests} requests at concurrency {concurrency}, median of {runs} runs");
    println!("raw reqwest posts       {:>10.0} /s", rate(raw));
    println!("bus + signed webhooks   {:>10.0} /s", rate(signed));
    println!(
        "ratio (time)            {:>10.2}x",
        signed.as_secs_f64() / raw.as_secs_f64()
    );
    Ok(())
}
