//! Measures the journal through the bus, beside the durable queue in the same run, on a
//! SQLite file (`synchronous = FULL`, every commit synced):
//!
//! - **journaled publish**: `--publishers` concurrent tasks (default 64) publish
//!   `--signals` signals (default 64,000) on a bus with a journal and one `Noop`
//!   subscriber; each publish returns once its signal is durably appended (group commit);
//! - **queue enqueue**: the same number of concurrent producers calling
//!   `Queue::enqueue_signal` on another file, the durable queue's own group commit;
//! - **replay**: `bus.replay("**", Replay::Beginning)` over a journal of `--replay` entries
//!   (default 1,000,000; appended in batches first), counting signals;
//! - **persistent subscription**: a subscription from the beginning with a `Noop` target
//!   (`max_in_flight` 1 and 64), until its checkpoint reaches the last entry of a journal of
//!   `--persistent` entries (default 20,000).
//!
//! ```text
//! cargo run --release --example journal_bench
//! cargo run --release --example journal_bench -- --publishers 64 --signals 64000 --replay 1000000 --runs 3
//! ```
//! Each figure is the median of `--runs` runs (default 3).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use signal_bus::{
    adapter::Noop,
    journal::{JournalStore, Replay, StartAt},
    queue::{NewJob, Queue, SqliteStore},
    Bus, Signal,
};

struct Args {
    publishers: usize,
    signals: usize,
    replay: usize,
    persistent: usize,
    runs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        publishers: 64,
        signals: 64_000,
        replay: 1_000_000,
        persistent: 20_000,
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("flag {flag} needs a value"))?;
        let n: usize = value
            .replace('_', "")
            .parse()
            .map_err(|_| format!("flag {flag} takes a number, got `{value}`"))?;
        if n == 0 {
            return Err(format!("flag {flag} must be at least 1"));
        }
        match flag.as_str() {
            "--publishers" => args.publishers = n,
            "--signals" => args.signals = n,
            "--replay" => args.replay = n,
            "--persistent" => args.persistent = n,
            "--runs" => args.runs = n,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// A directory removed when dropped, even when the bench fails.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("signal-bus-journal-bench-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Scratch(dir)
    }
    fn file(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn signal(i: usize) -> Signal {
    Signal::builder("order.placed", "/bench")
        .id(format!("sig-{i}"))
        .data(serde_json::json!({ "order": i, "total": 42.5, "currency": "EUR" }))
        .build()
        .expect("a valid signal")
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// `n` items split over `workers` concurrent tasks running `f(i)`; returns items per second.
async fn concurrently<F, Fut>(workers: usize, n: usize, f: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let f = Arc::clone(&f);
            tokio::spawn(async move {
                let mut i = w;
                while i < n {
                    f(i).await;
                    i += workers;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a publisher task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn journaled_publish(args: &Args, scratch: &Scratch, run: usize) -> f64 {
    let store = SqliteStore::open(scratch.file(&format!("publish-{run}.db")))
        .await
        .expect("open the journal file");
    let bus = Bus::builder().journal(store).build().expect("a bus");
    bus.subscribe("order.*", Noop).expect("subscribe");
    concurrently(args.publishers, args.signals, move |i| {
        let bus = bus.clone();
        async move {
            let report = bus.publish(signal(i)).await.expect("publish");
            assert!(report.journal_seq().is_some());
        }
    })
    .await
}

async fn queue_enqueue(args: &Args, scratch: &Scratch, run: usize) -> f64 {
    let store = SqliteStore::open(scratch.file(&format!("queue-{run}.db")))
        .await
        .expect("open the queue file");
    let queue = Queue::new(store);
    concurrently(args.publishers, args.signals, move |i| {
        let queue = queue.clone();
        async move {
            queue
                .enqueue_signal(
                    Arc::new(signal(i)),
                    NewJob::new("bench", serde_json::json!({ "i": i })),
                )
                .await
                .expect("enqueue");
        }
    })
    .await
}

/// A journal file of `n` entries, appended straight into the store in batches.
async fn filled(path: &std::path::Path, n: usize) -> SqliteStore {
    let store = SqliteStore::open(path).await.expect("open");
    let now = chrono::Utc::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<Arc<Signal>> = (i..(i + 5_000).min(n))
            .map(|j| Arc::new(signal(j)))
            .collect();
        store.append("default", &batch, now).await.expect("append");
        i += batch.len();
    }
    store
}

async fn replay(store: &SqliteStore, n: usize) -> f64 {
    let bus = Bus::builder()
        .journal(store.clone())
        .build()
        .expect("a bus");
    let started = Instant::now();
    let mut stream = bus.replay("**", Replay::Beginning).await.expect("replay");
    let mut count = 0;
    while let Some(signal) = stream.next().await {
        signal.expect("a journaled signal");
        count += 1;
    }
    assert_eq!(count, n, "replay returns every entry");
    n as f64 / started.elapsed().as_secs_f64()
}

async fn persistent(store: &SqliteStore, n: usize, in_flight: usize, run: usize) -> f64 {
    let bus = Bus::builder()
        .journal(store.clone())
        .build()
        .expect("a bus");
    let started = Instant::now();
    let sub = bus
        .persistent(format!("bench-{in_flight}-{run}"), "**")
        .targets(Noop)
        .start_at(StartAt::Beginning)
        .max_in_flight(in_flight)
        .start()
        .await
        .expect("subscribe");
    assert!(sub.wait_for_checkpoint(n as u64).await);
    let rate = n as f64 / started.elapsed().as_secs_f64();
    sub.stop().await;
    rate
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| {
        eprintln!("journal_bench: {e}");
        e
    })?;
    let scratch = Scratch::new();
    let (mut publish, mut enqueue) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        // Alternate the order so neither side always runs on a warmer disk cache.
        if run % 2 == 0 {
            publish.push(journaled_publish(&args, &scratch, run).await);
            enqueue.push(queue_enqueue(&args, &scratch, run).await);
        } else {
            enqueue.push(queue_enqueue(&args, &scratch, run).await);
            publish.push(journaled_publish(&args, &scratch, run).await);
        }
    }
    let (p, q) = (median(publish.clone()), median(enqueue.clone()));
    println!(
        "journaled publish, {} publishers, {} signals: {:>9.0} signals/s (runs: {:?})",
        args.publishers,
        args.signals,
        p,
        publish.iter().map(|x| x.round()).collect::<Vec<_>>()
    );
    println!(
        "queue enqueue_signal, {} producers, {} jobs:   {:>9.0} jobs/s    (runs: {:?})",
        args.publishers,
        args.signals,
        q,
        enqueue.iter().map(|x| x.round()).collect::<Vec<_>>()
    );
    println!("ratio publish/enqueue: {:.2}", p / q);

    let fill = Instant::now();
    let big = filled(&scratch.file("replay.db"), args.replay).await;
    eprintln!("(filled {} entries in {:?})", args.replay, fill.elapsed());
    let mut rates = Vec::new();
    for _ in 0..args.runs {
        rates.push(replay(&big, args.replay).await);
    }
    println!(
        "replay from the beginning of {} entries: {:>9.0} signals/s (runs: {:?})",
        args.replay,
        median(rates.clone()),
        rates.iter().map(|x| x.round()).collect::<Vec<_>>()
    );
    drop(big);

    let small = filled(&scratch.file("persistent.db"), args.persistent).await;
    for in_flight in [1, 64] {
        let mut rates = Vec::new();
        for run in 0..args.runs {
            rates.push(persistent(&small, args.persistent, in_flight, run).await);
        }
        println!(
            "persistent subscription, max_in_flight {in_flight}, {} entries: {:>9.0} signals/s (runs: {:?})",
            args.persistent,
            median(rates.clone()),
            rates.iter().map(|x| x.round()).collect::<Vec<_>>()
        );
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
