//! Signals per second through NATS between two buses on one machine, beside raw async-nats
//! publishing of the same bytes (`nats bench`-style), in the same run.
//!
//! `cargo bench --features nats --bench cluster` (nats-server with JetStream at
//! `SIGNAL_BUS_NATS_URL`, default `nats://127.0.0.1:4222`)
//!
//! Each measurement is end to end: from the first publish until the receiving side has
//! counted all `iters` messages. Two connections (publisher, receiver), as two nodes would
//! have; on the receiving side a task counts what arrives on a channel, in both cases.
//! - `core/bus`: bus A → `PubSub::nats` → nats-server → `NatsBridge` (parses each message
//!   into a signal) → bus B → a channel. Signals come from a pool of 4,096, so each is
//!   serialized once (the bus caches the JSON form), as the raw baseline publishes
//!   pre-serialized bytes.
//! - `core/bus_fresh`: the same with a new signal built for every publish (build and
//!   serialization included in the time).
//! - `core/raw`: `client.publish` of the same bytes → a subscriber → a channel.
//! - `jetstream/bus`: bus A with a JetStream publisher batching 256 signals per
//!   acknowledgement round → a durable bridge acking each signal after local delivery. New
//!   signals (each id is its `Nats-Msg-Id`, and JetStream drops repeated ids).
//! - `jetstream/raw`: JetStream publishes of the same bytes, 256 in flight then their acks →
//!   a pull consumer acking each message → a channel.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, consumer::pull, AckKind};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::StreamExt;
use signal_bus::{
    adapter::{Channel, PubSub},
    cluster::{ensure_stream, NatsBridge},
    Bus, Signal, Target,
};
use tokio::{
    runtime::Runtime,
    sync::{mpsc, Notify},
};

const WINDOW: usize = 256;
const POOL: usize = 4096;

fn url() -> String {
    std::env::var("SIGNAL_BUS_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

fn signal(i: u64) -> Signal {
    Signal::builder("order.placed", "/bench/shop")
        .subject(format!("order/{i}"))
        .data(serde_json::json!({
            "order_id": i, "customer": "c-1042", "total_cents": 129_900,
            "currency": "EUR", "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}]
        }))
        .build()
        .unwrap()
}

async fn connect() -> async_nats::Client {
    let url = url();
    async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .client_capacity(1 << 16)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("NATS at {url}: {e}"))
}

/// Counts what a receiver gets, and wakes the bench once it has what it waits for.
#[derive(Clone, Default)]
struct Counter {
    received: Arc<AtomicU64>,
    wanted: Arc<AtomicU64>,
    done: Arc<Notify>,
}

impl Counter {
    fn spawn<T: Send + 'static>(&self, mut rx: mpsc::Receiver<T>) {
        let c = self.clone();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                let n = c.received.fetch_add(1, Ordering::AcqRel) + 1;
                if n >= c.wanted.load(Ordering::Acquire) {
                    c.done.notify_one();
                }
            }
        });
    }

    /// Runs `publish`, then waits until `n` more messages arrived; the time for both.
    async fn time<F: std::future::Future<Output = ()>>(&self, n: u64, publish: F) -> Duration {
        let target = self.received.load(Ordering::Acquire) + n;
        self.wanted.store(target, Ordering::Release);
        let start = Instant::now();
        publish.await;
        while self.received.load(Ordering::Acquire) < target {
            self.done.notified().await;
        }
        start.elapsed()
    }
}

/// Bus A publishing to NATS; bus B bridging into a counted channel.
struct Pair {
    a: Bus,
    counter: Counter,
    _bridge: NatsBridge,
}

async fn pair(prefix: &str, stream: Option<&str>) -> Pair {
    let (pub_client, sub_client) = (connect().await, connect().await);
    let a = Bus::builder().name("a").node_id("bench-a").build().unwrap();
    let publisher = PubSub::nats(pub_client).prefix(prefix);
    let target = match stream {
        None => Target::new(publisher),
        Some(s) => Target::new(publisher.jetstream(s)).batch(WINDOW, Duration::from_millis(1)),
    };
    a.subscribe("**", target).unwrap();
    let b = Bus::builder().name("b").node_id("bench-b").build().unwrap();
    let (tx, rx) = mpsc::channel(1 << 16);
    b.subscribe("**", Channel::new(tx)).unwrap();
    let counter = Counter::default();
    counter.spawn(rx);
    let bridge = NatsBridge::builder(sub_client, &b).prefix(prefix);
    let bridge = match stream {
        None => bridge,
        Some(s) => bridge.durable(s, "bench-b"),
    };
    Pair {
        a,
        counter,
        _bridge: bridge.start().await.unwrap(),
    }
}

fn bench(c: &mut Criterion) {
    let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool: Arc<Vec<Arc<Signal>>> =
        Arc::new((0..POOL as u64).map(|i| Arc::new(signal(i))).collect());
    let payload = pool[0].to_json_bytes();
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let tag = &run_id[run_id.len() - 8..];

    let mut group = c.benchmark_group("cluster/core");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let prefix = format!("benchcore{tag}");
    let p = rt.block_on(pair(&prefix, None));
    group.bench_function("bus", |b| {
        b.iter_custom(|iters| {
            rt.block_on(p.counter.time(iters, async {
                for i in 0..iters as usize {
                    p.a.publish(Arc::clone(&pool[i % POOL])).await.unwrap();
                }
            }))
        })
    });
    group.bench_function("bus_fresh", |b| {
        b.iter_custom(|iters| {
            rt.block_on(p.counter.time(iters, async {
                for i in 0..iters {
                    p.a.publish(signal(i)).await.unwrap();
                }
            }))
        })
    });
    let (publisher, raw_counter) = rt.block_on(async {
        let (p, s) = (connect().await, connect().await);
        let mut sub = s.subscribe(format!("{prefix}raw.>")).await.unwrap();
        s.flush().await.unwrap();
        let (tx, rx) = mpsc::channel(1 << 16);
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let _ = tx.send(m.payload).await;
            }
        });
        let counter = Counter::default();
        counter.spawn(rx);
        (p, counter)
    });
    let subject = format!("{prefix}raw.order.placed");
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| {
            rt.block_on(raw_counter.time(iters, async {
                for _ in 0..iters {
                    publisher
                        .publish(subject.clone(), payload.clone())
                        .await
                        .unwrap();
                }
            }))
        })
    });
    group.finish();

    let mut group = c.benchmark_group("cluster/jetstream");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let prefix = format!("benchjs{tag}");
    let stream = format!("BENCHJS{tag}");
    let raw_prefix = format!("benchjsraw{tag}");
    let raw_stream = format!("BENCHJSRAW{tag}");
    let (js, raw_counter) = rt.block_on(async {
        let client = connect().await;
        ensure_stream(&client, &stream, &prefix).await.unwrap();
        let s = ensure_stream(&client, &raw_stream, &raw_prefix)
            .await
            .unwrap();
        let consumer = s
            .create_consumer(pull::Config {
                durable_name: Some("raw".to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let (tx, rx) = mpsc::channel(1 << 16);
        tokio::spawn(async move {
            while let Some(Ok(m)) = messages.next().await {
                let _ = m.ack_with(AckKind::Ack).await;
                let _ = tx.send(m.message.payload.clone()).await;
            }
        });
        let counter = Counter::default();
        counter.spawn(rx);
        (jetstream::new(connect().await), counter)
    });
    let p = rt.block_on(pair(&prefix, Some(&stream)));
    // New signals: JetStream would drop a pooled signal's repeated id as a duplicate.
    let next = AtomicU64::new(0);
    group.bench_function("bus", |b| {
        b.iter_custom(|iters| {
            rt.block_on(p.counter.time(iters, async {
                for _ in 0..iters {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    p.a.publish(signal(i)).await.unwrap();
                }
            }))
        })
    });
    let subject = format!("{raw_prefix}.order.placed");
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| {
            rt.block_on(raw_counter.time(iters, async {
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(WINDOW);
                    let mut acks = Vec::with_capacity(n);
                    for _ in 0..n {
                        acks.push(js.publish(subject.clone(), payload.clone()).await.unwrap());
                    }
                    for ack in acks {
                        ack.await.unwrap();
                    }
                    left -= n;
                }
            }))
        })
    });
    group.finish();
    rt.block_on(async {
        let _ = js.delete_stream(&stream).await;
        let _ = js.delete_stream(&raw_stream).await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
