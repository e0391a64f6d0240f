//! Publish cost: the bus delivering to 1, 10 and 100 channel subscribers among 1,000
//! non-matching subscriptions (a quarter sharing the signal type's prefix, a quarter `**`),
//! beside a raw loop of `try_send` over the same number of tokio mpsc senders, in the same
//! run. Consumer tasks drain every channel on the runtime's workers while the publisher
//! runs, in the raw case and the bus case alike; the publisher reads each report.
//!
//! `cargo bench --bench fanout`

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use signal_bus::{
    adapter::Channel,
    policy::{CircuitBreaker, RetryPolicy},
    Bus, Signal, Target,
};
use tokio::{runtime::Runtime, sync::mpsc};

const NOISE: usize = 1_000;
const CAPACITY: usize = 4096;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn drain(rt: &Runtime, mut rx: mpsc::Receiver<Arc<Signal>>) {
    rt.spawn(async move { while rx.recv().await.is_some() {} });
}

fn signal() -> Arc<Signal> {
    Arc::new(
        Signal::builder("bench.fanout.event", "/bench")
            .subject("item/1")
            .data(serde_json::json!({"id": 1, "name": "a fairly typical payload"}))
            .build()
            .unwrap(),
    )
}

/// A bus with `NOISE` non-matching subscriptions and `n` matching channel targets, shaped by
/// `policy`, whose channels are drained by tasks on `rt`.
fn bus_with(rt: &Runtime, n: usize, policy: impl Fn(Target) -> Target) -> Bus {
    let bus = Bus::builder().name("bench").build().unwrap();
    for i in 0..NOISE {
        // As in `examples/fanout_bench.rs`: unrelated literals and `*`, and patterns sharing
        // the signal type's prefix (a literal, and a `**` one) so the trie walk goes down the
        // matching branch. None matches `bench.fanout.event`.
        let pattern = match i % 4 {
            0 => format!("noise{}.svc{i}.created", i % 10),
            1 => format!("noise{}.svc{i}.*", i % 10),
            2 => format!("bench.fanout.other{i}"),
            _ => format!("bench.**.other{i}"),
        };
        bus.subscribe(&pattern, signal_bus::adapter::Noop).unwrap();
    }
    for _ in 0..n {
        let (tx, rx) = mpsc::channel(CAPACITY);
        drain(rt, rx);
        bus.subscribe("bench.fanout.event", policy(Target::new(Channel::new(tx))))
            .unwrap();
    }
    bus
}

/// Publishes on a runtime task, `iters` times, and returns the time taken.
fn measure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    name: &str,
    n: usize,
    bus: &Bus,
    sig: &Arc<Signal>,
) {
    group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
        b.iter_custom(|iters| {
            let bus = bus.clone();
            let sig = Arc::clone(sig);
            rt.block_on(async move {
                tokio::spawn(async move {
                    let start = Instant::now();
                    let mut failed = 0;
                    for _ in 0..iters {
                        let report = bus.publish(Arc::clone(&sig)).await.unwrap();
                        // Read the report, as a caller would.
                        failed += report.failed();
                    }
                    assert_eq!(failed, 0);
                    start.elapsed()
                })
                .await
                .unwrap()
            })
        })
    });
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("fanout");
    group
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);
    for &n in &[1usize, 10, 100] {
        group.throughput(Throughput::Elements(1));

        // Raw baseline: the same number of senders, one try_send each (send().await if full).
        let senders: Vec<mpsc::Sender<Arc<Signal>>> = (0..n)
            .map(|_| {
                let (tx, rx) = mpsc::channel(CAPACITY);
                drain(&rt, rx);
                tx
            })
            .collect();
        let sig = signal();
        group.bench_with_input(BenchmarkId::new("raw_try_send", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let senders = senders.clone();
                let sig = Arc::clone(&sig);
                rt.block_on(async move {
                    tokio::spawn(async move {
                        let start = Instant::now();
                        for _ in 0..iters {
                            for tx in &senders {
                                if let Err(mpsc::error::TrySendError::Full(s)) =
                                    tx.try_send(Arc::clone(&sig))
                                {
                                    let _ = tx.send(s).await;
                                }
                            }
                        }
                        start.elapsed()
                    })
                    .await
                    .unwrap()
                })
            })
        });
        drop(senders);

        // The bus: n matching channel subscribers among NOISE non-matching patterns, with
        // default targets, then with a retry policy and a breaker that never trigger.
        let plain = bus_with(&rt, n, |t| t);
        measure(&mut group, &rt, "bus_publish", n, &plain, &sig);
        let guarded = bus_with(&rt, n, |t| {
            t.retry(RetryPolicy::exponential(Duration::from_millis(100)).max_attempts(4))
                .circuit_breaker(CircuitBreaker::new().failure_threshold(5))
        });
        measure(&mut group, &rt, "bus_publish_policies", n, &guarded, &sig);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
