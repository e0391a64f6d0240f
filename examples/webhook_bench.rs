//! Signed webhook deliveries per second through a bus to a loopback receiver, beside raw
//! reqwest posts of the same bytes, in the same run.
//!
//! ```text
//! cargo run --release --example webhook_bench -- --concurrency 16 --requests 100000
//! ```
//! Flags: `--concurrency N` (default 16), `--requests N` (default 100,000), `--runs N`
//! (default 3; medians are printed).

#[path = "shared/loopback.rs"]
mod loopback;

use std::{sync::Arc, time::Duration};

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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let concurrency = flag("--concurrency", 16)?;
    let requests = flag("--requests", 100_000)?;
    let runs = flag("--runs", 3)?;
    let url = format!("http://{}/hook", loopback::start_receiver());

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
    // Nothing installs a process-wide rustls provider: the baseline client (plain HTTP, so
    // no roots are needed) is given one explicitly, like the library's clients.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tls_backend_preconfigured(tls)
        .build()?;
    let template = Arc::new(template);

    let (mut raw, mut signed) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (c, u, b) = (client.clone(), url.clone(), body.clone());
        raw.push(
            loopback::spread(requests, concurrency, move |_| {
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
            loopback::spread(requests, concurrency, move |_| {
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
