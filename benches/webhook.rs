//! Signed webhook deliveries per second to a loopback axum receiver at concurrency 1, 16 and
//! 64, beside raw reqwest posts of the same bytes, in the same run.
//!
//! `cargo bench --bench webhook`
//!
//! Each published signal is new, so its serialization and signing are part of the measured
//! cost; the raw baseline posts pre-serialized bytes with no signature.

#[path = "../examples/shared/loopback.rs"]
mod loopback;

use std::{sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use signal_bus::{
    http::{signing::StandardWebhooks, Webhook},
    Bus, Signal,
};
use tokio::runtime::Runtime;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn signals(n: usize) -> Vec<Arc<Signal>> {
    (0..n)
        .map(|i| {
            Arc::new(
                Signal::builder("order.placed", "/bench/shop")
                    .subject(format!("order/{i}"))
                    .data(serde_json::json!({
                        "order_id": i, "customer": "c-1042", "total_cents": 129_900,
                        "currency": "EUR", "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}]
                    }))
                    .build()
                    .unwrap(),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let addr = loopback::start_receiver();
    let url = format!("http://{addr}/hook");
    let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let bus = Bus::builder().name("bench").build().unwrap();
    let hook = Webhook::new(&url)
        .unwrap()
        .allow_private_networks(true)
        .signing(StandardWebhooks::new(SECRET).unwrap());
    bus.subscribe("order.**", hook).unwrap();
    let pool = Arc::new(signals(4096));
    let raw_body = bytes::Bytes::from(serde_json::to_vec(&*pool[0]).unwrap());
    // Nothing installs a process-wide rustls provider: the baseline client (plain HTTP, so
    // no roots are needed) is given one explicitly, like the library's clients.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap();

    let mut group = c.benchmark_group("webhook");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(1));
    for &concurrency in &[1u64, 16, 64] {
        group.bench_with_input(
            BenchmarkId::new("raw_reqwest", concurrency),
            &concurrency,
            |b, &conc| {
                b.iter_custom(|iters| {
                    let (client, url, body) = (client.clone(), url.clone(), raw_body.clone());
                    rt.block_on(loopback::spread(iters, conc, move |_| {
                        let (client, url, body) = (client.clone(), url.clone(), body.clone());
                        async move {
                            let resp = client
                                .post(&url)
                                .header("content-type", "application/cloudevents+json")
                                .body(body)
                                .send()
                                .await
                                .unwrap();
                            assert!(resp.status().is_success());
                        }
                    }))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("bus_signed_webhook", concurrency),
            &concurrency,
            |b, &conc| {
                b.iter_custom(|iters| {
                    let (bus, pool) = (bus.clone(), Arc::clone(&pool));
                    rt.block_on(loopback::spread(iters, conc, move |i| {
                        let (bus, pool) = (bus.clone(), Arc::clone(&pool));
                        async move {
                            // A fresh copy, so serialization is measured every time.
                            let signal = Signal::clone(&pool[i as usize % pool.len()]);
                            let report = bus.publish(signal).await.unwrap();
                            assert!(report.is_ok(), "{report}");
                        }
                    }))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
