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
//! With feature `postgres` and `SIGNAL_BUS_POSTGRES_URL` set, journaled publish and queue
//! enqueue also run on PostgreSQL, in a scratch database the bench creates and drops.
//!
//! ```text
//! cargo run --release --example journal_bench
//! SIGNAL_BUS_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo run --release --features postgres --example journal_bench
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
    /// Only this part (`publish`, `postgres`, `replay` or `persistent`), or all of them.
    only: Option<String>,
}

impl Args {
    fn runs(&self, part: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == part)
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        publishers: 64,
        signals: 64_000,
        replay: 1_000_000,
        persistent: 20_000,
        runs: 3,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("flag {flag} needs a value"))?;
        if flag == "--only" {
            if !["publish", "postgres", "replay", "persistent"].contains(&value.as_str()) {
                return Err(format!(
                    "--only takes publish, postgres, replay or persistent, got `{value}`"
                ));
            }
            args.only = Some(value);
            continue;
        }
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
    publish_on(args, store, "default").await
}

async fn publish_on(args: &Args, store: impl JournalStore, journal: &str) -> f64 {
    let bus = Bus::builder()
        .journal(signal_bus::journal::Journal::new(store).name(journal))
        .build()
        .expect("a bus");
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
    enqueue_on(args, store).await
}

async fn enqueue_on(args: &Args, store: impl signal_bus::queue::JobStore) -> f64 {
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

/// Journaled publish and queue enqueue on PostgreSQL, in a scratch database.
#[cfg(feature = "postgres")]
async fn postgres(args: &Args) {
    use signal_bus::queue::PostgresStore;
    let Ok(url) = std::env::var("SIGNAL_BUS_POSTGRES_URL") else {
        eprintln!("(SIGNAL_BUS_POSTGRES_URL is not set: the PostgreSQL figures are skipped)");
        return;
    };
    let admin = PostgresStore::connect(&url)
        .await
        .expect("connect to PostgreSQL");
    let name = format!("signal_bus_jbench_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(admin.pool())
        .await
        .expect("create the scratch database");
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
    let scratch_url = format!("{base}/{name}");
    let (mut publish, mut enqueue) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        let store = PostgresStore::connect(&scratch_url).await.expect("connect");
        publish.push(publish_on(args, store.clone(), &format!("bench-{run}")).await);
        enqueue.push(enqueue_on(args, store).await);
    }
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(admin.pool())
        .await;
    let (p, q) = (median(publish.clone()), median(enqueue.clone()));
    println!(
        "PostgreSQL journaled publish, {} publishers: {:>9.0} signals/s (runs: {:?})",
        args.publishers,
        p,
        publish.iter().map(|x| x.round()).collect::<Vec<_>>()
    );
    println!(
        "PostgreSQL queue enqueue_signal, {} producers: {:>9.0} jobs/s (runs: {:?})",
        args.publishers,
        q,
        enqueue.iter().map(|x| x.round()).collect::<Vec<_>>()
    );
    println!("PostgreSQL ratio publish/enqueue: {:.2}", p / q);
}

fn rounded(rates: &[f64]) -> Vec<f64> {
    rates.iter().map(|x| x.round()).collect()
}

/// Journaled publish beside queue enqueue and the raw baseline, alternating their order
/// from run to run so neither side always runs on a warmer disk cache.
async fn sqlite_publish(args: &Args, scratch: &Scratch) {
    let (mut publish, mut enqueue, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.runs {
        if run % 2 == 0 {
            publish.push(journaled_publish(args, scratch, run).await);
            enqueue.push(queue_enqueue(args, scratch, run).await);
            raw.push(raw_inserts(args, scratch, run).await);
        } else {
            raw.push(raw_inserts(args, scratch, run).await);
            enqueue.push(queue_enqueue(args, scratch, run).await);
            publish.push(journaled_publish(args, scratch, run).await);
        }
    }
    let (p, q, r) = (
        median(publish.clone()),
        median(enqueue.clone()),
        median(raw.clone()),
    );
    println!(
        "journaled publish, {} publishers, {} signals: {:>9.0} signals/s (runs: {:?})",
        args.publishers,
        args.signals,
        p,
        rounded(&publish)
    );
    println!(
        "queue enqueue_signal, {} producers, {} jobs:   {:>9.0} jobs/s    (runs: {:?})",
        args.publishers,
        args.signals,
        q,
        rounded(&enqueue)
    );
    println!(
        "raw sqlx, the same inserts {} to a transaction: {:>9.0} rows/s    (runs: {:?})",
        args.publishers,
        r,
        rounded(&raw)
    );
    println!(
        "ratio publish/enqueue: {:.2}; raw/publish: {:.2}",
        p / q,
        r / p
    );
}

/// Replay through the bus beside a raw sqlx read of the same file, alternately.
async fn sqlite_replay(args: &Args, scratch: &Scratch) {
    let fill = Instant::now();
    let path = scratch.file("replay.db");
    let big = filled(&path, args.replay).await;
    eprintln!("(filled {} entries in {:?})", args.replay, fill.elapsed());
    let raw_pool = raw_pool(&path).await;
    let (mut rates, mut raw) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        if run % 2 == 0 {
            rates.push(replay(&big, args.replay).await);
            raw.push(raw_read(&raw_pool, args.replay).await);
        } else {
            raw.push(raw_read(&raw_pool, args.replay).await);
            rates.push(replay(&big, args.replay).await);
        }
    }
    let (b, r) = (median(rates.clone()), median(raw.clone()));
    println!(
        "replay from the beginning of {} entries: {:>9.0} signals/s (runs: {:?})",
        args.replay,
        b,
        rounded(&rates)
    );
    println!(
        "raw sqlx, SELECT pages of 1,000 + parse:     {:>9.0} signals/s (runs: {:?})",
        r,
        rounded(&raw)
    );
    println!("ratio raw/replay: {:.2}", r / b);
    raw_pool.close().await;
}

/// A plain sqlx pool on `path` set up as the store's connections are (WAL, FULL).
async fn raw_pool(path: &std::path::Path) -> sqlx::SqlitePool {
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(path)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(5)),
        )
        .await
        .expect("a raw pool")
}

/// The raw baseline of journaled publish: the same rows (the journal's schema, one
/// `INSERT` each, the head row kept) written by one task, `--publishers` rows to a synced
/// transaction: what group commit would reach if every publisher's signal always made the
/// same commit and nothing else ran.
async fn raw_inserts(args: &Args, scratch: &Scratch, run: usize) -> f64 {
    let path = scratch.file(&format!("raw-{run}.db"));
    // The schema from the store, then plain sqlx.
    drop(SqliteStore::open(&path).await.expect("create the raw file"));
    let pool = raw_pool(&path).await;
    let signals: Vec<(String, Vec<u8>)> = (0..args.signals)
        .map(|i| {
            let s = signal(i);
            (s.ty().to_owned(), s.to_json_vec())
        })
        .collect();
    let started = Instant::now();
    let mut seq = 0i64;
    for batch in signals.chunks(args.publishers) {
        let at = chrono::Utc::now().timestamp_millis();
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
        sqlx::query(
            "INSERT INTO signal_bus_journal_heads (journal, last_seq) VALUES ('default', ?1)
             ON CONFLICT (journal) DO UPDATE SET last_seq = last_seq + excluded.last_seq",
        )
        .bind(batch.len() as i64)
        .execute(&mut *tx)
        .await
        .expect("head row");
        for (ty, body) in batch {
            seq += 1;
            sqlx::query(
                "INSERT INTO signal_bus_journal (journal, seq, appended_at, type, body, size)
                 VALUES ('default', ?, ?, ?, ?, ?)",
            )
            .bind(seq)
            .bind(at)
            .bind(ty)
            .bind(&body[..])
            .bind(body.len() as i64)
            .execute(&mut *tx)
            .await
            .expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    let rate = args.signals as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    rate
}

/// The raw baseline of replay: `SELECT seq, body` pages of 1,000 in sequence order, each
/// body parsed with `Signal::from_json_slice`.
async fn raw_read(pool: &sqlx::SqlitePool, n: usize) -> f64 {
    use sqlx::Row;
    let started = Instant::now();
    let (mut after, mut read) = (0i64, 0);
    loop {
        let rows = sqlx::query(
            "SELECT seq, body FROM signal_bus_journal WHERE journal = 'default' AND seq > ?
             ORDER BY seq LIMIT 1000",
        )
        .bind(after)
        .fetch_all(pool)
        .await
        .expect("a page");
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let body: &[u8] = row.get(1);
            let signal = Signal::from_json_slice(body).expect("a stored signal");
            std::hint::black_box(Arc::new(signal));
            after = row.get(0);
            read += 1;
        }
    }
    assert_eq!(read, n, "the raw read returns every entry");
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| {
        eprintln!("journal_bench: {e}");
        e
    })?;
    let scratch = Scratch::new();
    if args.runs("publish") {
        sqlite_publish(&args, &scratch).await;
    }
    #[cfg(feature = "postgres")]
    if args.runs("postgres") {
        postgres(&args).await;
    }
    if args.runs("replay") {
        sqlite_replay(&args, &scratch).await;
    }
    if args.runs("persistent") {
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
                rounded(&rates)
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
