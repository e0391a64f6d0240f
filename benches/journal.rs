//! Journal store throughput on SQLite, beside raw sqlx baselines in the same run.
//!
//! `cargo bench --bench journal`:
//!
//! - `journal/append/store`: 64 producers each append single signals through a small
//!   group-commit loop (an mpsc channel; the committer takes up to 1,024 waiting signals and
//!   calls `JournalStore::append` once for them), on a file with `synchronous = FULL`;
//! - `journal/append/raw`: the same producers and loop, the committer doing the same writes
//!   by hand: `BEGIN IMMEDIATE`, the head row, one plain `INSERT` per signal, `COMMIT`;
//! - `journal/read/store`: a 1,000,000-entry journal read from the beginning in pages of
//!   1,000 with `JournalStore::read`;
//! - `journal/read/raw`: `SELECT body .. WHERE journal = ? AND seq > ? ORDER BY seq LIMIT ?`
//!   over the same file, each body parsed with `Signal::from_json_slice`;
//! - the read split (3 runs each, no criterion): that raw SELECT without parsing, and
//!   parsing alone (100,000 bodies in memory), to tell SQLite's and sqlx's share from JSON's.
//!
//! The 1M-entry journal is built once per run. After criterion's report, the medians of
//! every measured run and the store/raw ratios are printed. Temporary files live in
//! `signal-bus-bench-journal-<pid>-*` under the temp dir and are removed by a guard, also
//! when a step panics.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use signal_bus::{journal::JournalStore, queue::SqliteStore, Signal};
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    SqlitePool,
};
use tokio::sync::{mpsc, oneshot};

/// Concurrent producers of the append rows.
const PRODUCERS: usize = 64;
/// Signals per producer per measured run.
const PER_PRODUCER: usize = 250;
/// Signals per append run.
const APPEND_N: usize = PRODUCERS * PER_PRODUCER;
/// The most signals one commit takes.
const BATCH: usize = 1_024;
/// Entries of the read journal.
const READ_N: usize = 1_000_000;
/// Entries per read page.
const PAGE: usize = 1_000;

/// A directory for one database, removed on drop (panics included).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "signal-bus-bench-journal-{}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the bench directory");
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("journal.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn signal(n: usize) -> Arc<Signal> {
    Arc::new(
        Signal::builder("order.placed", "/bench/shop")
            .data(json!({ "order": n, "amount": 1250, "currency": "EUR", "lines": 3 }))
            .build()
            .unwrap(),
    )
}

/// One producer's request: a signal, and where its sequence number goes.
type Request = (Arc<Signal>, oneshot::Sender<u64>);

/// Commits waiting signals in batches of up to [`BATCH`] with `commit`, until every sender
/// is gone.
async fn committer<F, Fut>(mut rx: mpsc::Receiver<Request>, commit: F)
where
    F: Fn(Vec<Arc<Signal>>) -> Fut,
    Fut: std::future::Future<Output = Vec<u64>>,
{
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let (signals, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let seqs = commit(signals).await;
        for (reply, seq) in replies.into_iter().zip(seqs) {
            let _ = reply.send(seq);
        }
    }
}

/// [`PRODUCERS`] producers publish [`APPEND_N`] signals through a group committer running
/// `commit`; returns the time from the first send to the last acknowledgement.
async fn append_run<F, Fut>(commit: F) -> Duration
where
    F: Fn(Vec<Arc<Signal>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Vec<u64>> + Send + 'static,
{
    // The signals exist (and are serialized) before the clock starts, as published ones are.
    let signals: Vec<Vec<Arc<Signal>>> = (0..PRODUCERS)
        .map(|p| {
            (0..PER_PRODUCER)
                .map(|i| signal(p * PER_PRODUCER + i))
                .collect()
        })
        .collect();
    let (tx, rx) = mpsc::channel::<Request>(PRODUCERS * 2);
    let start = Instant::now();
    let commits = tokio::spawn(committer(rx, commit));
    let mut producers = Vec::new();
    for mine in signals {
        let tx = tx.clone();
        producers.push(tokio::spawn(async move {
            for s in mine {
                let (reply, seq) = oneshot::channel();
                tx.send((s, reply)).await.unwrap();
                seq.await.expect("committed");
            }
        }));
    }
    drop(tx);
    for p in producers {
        p.await.unwrap();
    }
    let elapsed = start.elapsed();
    commits.await.unwrap();
    elapsed
}

/// The raw baseline's commit: the head row and one plain INSERT per signal.
async fn raw_append(pool: &SqlitePool, signals: &[Arc<Signal>]) -> Vec<u64> {
    let n = signals.len() as i64;
    let at = Utc::now().timestamp_millis();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    let last: i64 = sqlx::query_scalar(
        "INSERT INTO signal_bus_journal_heads (journal, last_seq) VALUES (?1, ?2)
         ON CONFLICT (journal) DO UPDATE SET last_seq = last_seq + excluded.last_seq
         RETURNING last_seq",
    )
    .bind("bench")
    .bind(n)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let first = last - n + 1;
    for (i, s) in signals.iter().enumerate() {
        let body = s.to_json_bytes();
        sqlx::query(
            "INSERT INTO signal_bus_journal (journal, seq, appended_at, type, body, size)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind("bench")
        .bind(first + i as i64)
        .bind(at)
        .bind(s.ty())
        .bind(&body[..])
        .bind(body.len() as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    (first..=last).map(|s| s as u64).collect()
}

/// A plain pool on `path` set up as the store's writer is (WAL, FULL, one connection).
async fn raw_pool(path: &Path, max: u32) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(max)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(path)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap()
}

/// Reads the whole journal with the store; returns the entries read.
async fn store_read(store: &SqliteStore) -> usize {
    let (mut after, mut read) = (0, 0);
    loop {
        let page = store.read("bench", after, PAGE, None).await.unwrap();
        if page.scanned_to == after {
            return read;
        }
        read += page.entries.len();
        after = page.scanned_to;
    }
}

/// Reads the whole journal by hand: SELECT body, parse each.
async fn raw_read(pool: &SqlitePool) -> usize {
    use sqlx::Row;
    let (mut after, mut read) = (0i64, 0);
    loop {
        let rows = sqlx::query(
            "SELECT seq, body FROM signal_bus_journal WHERE journal = ? AND seq > ?
             ORDER BY seq LIMIT ?",
        )
        .bind("bench")
        .bind(after)
        .bind(PAGE as i64)
        .fetch_all(pool)
        .await
        .unwrap();
        if rows.is_empty() {
            return read;
        }
        for row in &rows {
            let body: &[u8] = row.get(1);
            let signal = Signal::from_json_slice(body).unwrap();
            std::hint::black_box(Arc::new(signal));
            after = row.get(0);
            read += 1;
        }
    }
}

/// Reads the whole journal by hand without parsing: what SQLite and sqlx cost alone.
async fn fetch_only(pool: &SqlitePool) -> usize {
    use sqlx::Row;
    let (mut after, mut read) = (0i64, 0);
    loop {
        let rows = sqlx::query(
            "SELECT seq, body FROM signal_bus_journal WHERE journal = ? AND seq > ?
             ORDER BY seq LIMIT ?",
        )
        .bind("bench")
        .bind(after)
        .bind(PAGE as i64)
        .fetch_all(pool)
        .await
        .unwrap();
        let Some(last) = rows.last() else {
            return read;
        };
        for row in &rows {
            let body: &[u8] = row.get(1);
            std::hint::black_box(body);
        }
        after = last.get(0);
        read += rows.len();
    }
}

/// Every measured run's rate (signals per second), per row, for the summary.
static RATES: Mutex<Vec<(&'static str, f64)>> = Mutex::new(Vec::new());

fn record(row: &'static str, n: usize, took: Duration) {
    RATES
        .lock()
        .unwrap()
        .push((row, n as f64 / took.as_secs_f64()));
}

fn median(row: &str) -> f64 {
    let mut rates: Vec<f64> = RATES
        .lock()
        .unwrap()
        .iter()
        .filter(|(r, _)| *r == row)
        .map(|(_, v)| *v)
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(f64::NAN)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Appends.
    let store_dir = TempDir::new("append-store");
    let raw_dir = TempDir::new("append-raw");
    let (store, raw) = rt.block_on(async {
        let store = SqliteStore::open(store_dir.db()).await.unwrap();
        // The raw baseline gets the same schema from the store, then writes by hand.
        drop(SqliteStore::open(raw_dir.db()).await.unwrap());
        (store, raw_pool(&raw_dir.db(), 1).await)
    });
    let mut group = c.benchmark_group("journal/append");
    group.throughput(Throughput::Elements(APPEND_N as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("store", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let store = store.clone();
                let took = rt.block_on(append_run(move |signals| {
                    let store = store.clone();
                    async move { store.append("bench", &signals, Utc::now()).await.unwrap() }
                }));
                record("append/store", APPEND_N, took);
                total += took;
            }
            total
        })
    });
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let raw = raw.clone();
                let took = rt.block_on(append_run(move |signals| {
                    let raw = raw.clone();
                    async move { raw_append(&raw, &signals).await }
                }));
                record("append/raw", APPEND_N, took);
                total += took;
            }
            total
        })
    });
    group.finish();
    rt.block_on(raw.close());
    drop(store);
    drop((store_dir, raw_dir));

    // Reads of a 1M-entry journal, built once.
    let read_dir = TempDir::new("read");
    let (store, raw) = rt.block_on(async {
        let store = SqliteStore::builder(read_dir.db())
            .synchronous_normal()
            .open()
            .await
            .unwrap();
        let built = Instant::now();
        let mut n = 0;
        while n < READ_N {
            let batch: Vec<Arc<Signal>> = (n..n + 10_000).map(signal).collect();
            store.append("bench", &batch, Utc::now()).await.unwrap();
            n += batch.len();
        }
        eprintln!(
            "journal bench: built a {READ_N}-entry journal in {:.1?}",
            built.elapsed()
        );
        let raw = raw_pool(&read_dir.db(), 4).await;
        (store, raw)
    });
    let mut group = c.benchmark_group("journal/read");
    group.throughput(Throughput::Elements(READ_N as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("store", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let n = rt.block_on(store_read(&store));
                let took = start.elapsed();
                assert_eq!(n, READ_N);
                record("read/store", READ_N, took);
                total += took;
            }
            total
        })
    });
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let n = rt.block_on(raw_read(&raw));
                let took = start.elapsed();
                assert_eq!(n, READ_N);
                record("read/raw", READ_N, took);
                total += took;
            }
            total
        })
    });
    group.finish();
    // Where a read's time goes: fetching alone, and parsing alone (bodies in memory).
    for _ in 0..3 {
        let start = Instant::now();
        let n = rt.block_on(fetch_only(&raw));
        record("read/fetch-only", n, start.elapsed());
    }
    let bodies: Vec<bytes::Bytes> = (0..100_000).map(|n| signal(n).to_json_bytes()).collect();
    for _ in 0..3 {
        let start = Instant::now();
        for body in &bodies {
            std::hint::black_box(Arc::new(Signal::from_json_slice(body).unwrap()));
        }
        record("read/parse-only", bodies.len(), start.elapsed());
    }
    rt.block_on(raw.close());
    drop(store);
    drop(read_dir);

    let row = |name: &str, store: &str, raw: &str| {
        let (s, r) = (median(store), median(raw));
        eprintln!(
            "journal bench: {name}: store {:>9.0}/s, raw {:>9.0}/s, store/raw {:.2}",
            s,
            r,
            s / r
        );
    };
    eprintln!("journal bench: medians of every measured run (warm-up included)");
    row(
        "append, 64 producers, group commit",
        "append/store",
        "append/raw",
    );
    row(
        "read 1M from the beginning, pages of 1,000",
        "read/store",
        "read/raw",
    );
    eprintln!(
        "journal bench: read split: fetch only (SELECT, no parse) {:.0}/s, parse only {:.0}/s",
        median("read/fetch-only"),
        median("read/parse-only")
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
