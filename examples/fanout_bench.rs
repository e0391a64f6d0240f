//! Measures publish throughput: the bus fanning each signal out to N channel subscribers
//! among 1,000 non-matching subscriptions (some sharing the signal type's prefix, some
//! `**`), beside a raw loop of `try_send` over N tokio mpsc senders, in the same run. The
//! time runs until every consumer task (on the runtime's other worker) has received every
//! signal, and the publisher reads each report.
//!
//! ```text
//! cargo run --release --example fanout_bench -- --subscribers 10 --events 1000000
//! ```
//! Flags: `--subscribers N` (default 10), `--events N` (default 1,000,000), `--noise N`
//! non-matching subscriptions (default 1,000), `--runs N` (default 3; the median is printed),
//! `--only raw|bus` (one side only, for a profiler such as callgrind), `--middleware N`
//! middleware that do nothing on the bus (default 0: what a bus without middleware costs).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use signal_bus::{adapter::Channel, adapter::Noop, middleware::Middleware, Bus, Signal};
use tokio::sync::mpsc;

#[derive(Clone, Copy)]
struct Args {
    subscribers: usize,
    events: u64,
    noise: usize,
    runs: usize,
    /// Middleware on the bus that implement no hook (each hook's default does nothing).
    middleware: usize,
    /// Run only one side (`raw` or `bus`), e.g. to count instructions under callgrind.
    only: Option<&'static str>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        subscribers: 10,
        events: 1_000_000,
        noise: 1_000,
        runs: 3,
        middleware: 0,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("flag {flag} needs a value"))?;
        if flag == "--only" {
            args.only = match value.as_str() {
                "raw" => Some("raw"),
                "bus" => Some("bus"),
                _ => return Err(format!("--only takes raw or bus, got `{value}`")),
            };
            continue;
        }
        let n: u64 = value
            .replace('_', "")
            .parse()
            .map_err(|_| format!("{flag} takes a whole number, got `{value}`"))?;
        match flag.as_str() {
            "--subscribers" => args.subscribers = n as usize,
            "--events" => args.events = n,
            "--noise" => args.noise = n as usize,
            "--runs" => args.runs = (n as usize).max(1),
            "--middleware" => args.middleware = n as usize,
            _ => {
                return Err(format!(
                    "unknown flag {flag}: use --subscribers, --events, --noise, --runs, --middleware, --only"
                ))
            }
        }
    }
    if args.subscribers == 0 || args.events == 0 {
        return Err("--subscribers and --events must be at least 1".into());
    }
    Ok(args)
}

fn consumers(n: usize, received: &Arc<AtomicU64>) -> Vec<mpsc::Sender<Arc<Signal>>> {
    (0..n)
        .map(|_| {
            let (tx, mut rx) = mpsc::channel::<Arc<Signal>>(4096);
            let received = Arc::clone(received);
            tokio::spawn(async move {
                while rx.recv().await.is_some() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            });
            tx
        })
        .collect()
}

async fn wait_for(received: &AtomicU64, expected: u64) {
    while received.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn raw_run(args: &Args, signal: &Arc<Signal>) -> Duration {
    let received = Arc::new(AtomicU64::new(0));
    let senders = consumers(args.subscribers, &received);
    let start = Instant::now();
    for _ in 0..args.events {
        for tx in &senders {
            if let Err(mpsc::error::TrySendError::Full(s)) = tx.try_send(Arc::clone(signal)) {
                tx.send(s).await.expect("consumer alive");
            }
        }
    }
    wait_for(&received, args.events * args.subscribers as u64).await;
    start.elapsed()
}

async fn bus_run(args: &Args, signal: &Arc<Signal>) -> Duration {
    let received = Arc::new(AtomicU64::new(0));
    let mut builder = Bus::builder().name("fanout");
    for _ in 0..args.middleware {
        builder = builder.middleware(Idle);
    }
    let bus = builder.build().expect("valid bus");
    for i in 0..args.noise {
        bus.subscribe(&noise_pattern(i), Noop)
            .expect("valid pattern");
    }
    for tx in consumers(args.subscribers, &received) {
        bus.subscribe("bench.fanout.event", Channel::new(tx))
            .expect("valid subscription");
    }
    let start = Instant::now();
    let mut failed = 0;
    for _ in 0..args.events {
        let report = bus.publish(Arc::clone(signal)).await.expect("bus open");
        // Read the report, as a caller would.
        failed += report.failed();
    }
    assert_eq!(failed, 0, "every delivery succeeds");
    wait_for(&received, args.events * args.subscribers as u64).await;
    start.elapsed()
}

/// A middleware with every hook left to its default: what the hooks cost by themselves.
struct Idle;

impl Middleware for Idle {
    fn name(&self) -> &str {
        "idle"
    }
}

/// The `i`-th non-matching pattern: a quarter unrelated literals, a quarter with a `*`, a
/// quarter sharing the signal type's first segments (so the trie walk goes down the same
/// branch), a quarter `**`-rich under the same first segment. None matches
/// `bench.fanout.event`.
fn noise_pattern(i: usize) -> String {
    match i % 4 {
        0 => format!("noise{}.svc{i}.created", i % 10),
        1 => format!("noise{}.svc{i}.*", i % 10),
        2 => format!("bench.fanout.other{i}"),
        _ => format!("bench.**.other{i}"),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let signal = Arc::new(
        Signal::builder("bench.fanout.event", "/bench")
            .data(serde_json::json!({"id": 1, "name": "a fairly typical payload"}))
            .build()
            .expect("valid signal"),
    );
    let mut raw = Vec::new();
    let mut bus = Vec::new();
    for _ in 0..args.runs {
        if args.only.is_some() {
            let d = if args.only == Some("raw") {
                raw_run(&args, &signal).await
            } else {
                bus_run(&args, &signal).await
            };
            println!("{}: {:?}", args.only.unwrap_or_default(), d);
            continue;
        }
        raw.push(
            tokio::spawn({
                let (a, s) = (args, Arc::clone(&signal));
                async move { raw_run(&a, &s).await }
            })
            .await
            .expect("raw run"),
        );
        bus.push(
            tokio::spawn({
                let (a, s) = (args, Arc::clone(&signal));
                async move { bus_run(&a, &s).await }
            })
            .await
            .expect("bus run"),
        );
    }
    if args.only.is_some() {
        return;
    }
    let mut ratios: Vec<f64> = raw
        .iter()
        .zip(&bus)
        .map(|(r, b)| b.as_secs_f64() / r.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let (raw, bus) = (median(raw), median(bus));
    let per_sec = |d: Duration| args.events as f64 / d.as_secs_f64();
    println!(
        "{} events x {} subscribers ({} non-matching subscriptions, {} middleware), median of {} \
         runs, 2 workers",
        args.events, args.subscribers, args.noise, args.middleware, args.runs
    );
    println!(
        "{:<10} {:>14} {:>16} {:>12}",
        "", "events/s", "deliveries/s", "ns/event"
    );
    for (name, d) in [("raw mpsc", raw), ("bus", bus)] {
        println!(
            "{:<10} {:>14.0} {:>16.0} {:>12.0}",
            name,
            per_sec(d),
            per_sec(d) * args.subscribers as f64,
            d.as_nanos() as f64 / args.events as f64
        );
    }
    println!(
        "ratio bus/raw (time): {:.2}x of the medians; run by run: {}",
        bus.as_secs_f64() / raw.as_secs_f64(),
        ratios
            .iter()
            .map(|r| format!("{r:.2}x"))
            .collect::<Vec<_>>()
            .join(" ")
    );
}
