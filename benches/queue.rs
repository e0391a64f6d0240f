//! Durable queue throughput, beside raw SQL baselines in the same run (medians of
//! [`RUNS`] runs, with each run's spread and ratios).
//!
//! `cargo bench --bench queue` (SQLite); add `--features postgres` for the PostgreSQL rows,
//! with a server at `SIGNAL_BUS_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`): the bench creates a database of its own
//! there (`signal_bus_bench_<pid>_<n>`) and drops it at the end.
//!
//! - enqueue_signal, 1 producer: each call awaited (a durable commit each, FULL sync);
//! - enqueue_signal, 16 / 64 producers: concurrent calls (group commit);
//! - enqueue (generic NewJob), 64 producers: concurrent `Queue::enqueue` of jobs without a
//!   signal, through the same group committer; same n and same run as the `enqueue_signal`
//!   row, runs interleaved, so the two compare;
//! - store.enqueue per job, 64 producers: what `Queue::enqueue` did before it went through
//!   the group committer (one transaction per job), for reference;
//! - enqueue -> completed: N forwarder jobs (worker `signal_bus.forwarder:bench`) run by a
//!   runner with a no-op adapter.
//!
//! Cleanup: every SQLite directory (`signal-bus-bench-<pid>-*` in the temp dir) and the
//! PostgreSQL database are owned by Drop guards; the body runs under `catch_unwind` and
//! races SIGINT/SIGTERM, so a panicking step or a Ctrl-C still removes them (then exits
//! with the panic, or 130). At start, directories of bench processes that are gone and
//! `signal_bus_bench_%` databases nobody is connected to (left by killed runs) are removed.

use std::{
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::FutureExt as _;
use serde_json::json;
use signal_bus::{
    adapter::Noop,
    queue::{
        forwarder_worker, DispatchMode, Forwarder, JobState, JobStore, NewJob, Queue, SqliteStore,
    },
    Bus, Signal,
};

/// Runs per row; the table shows the median and the spread.
const RUNS: usize = 5;
/// Jobs per run of the 64-producer enqueue rows (signal and generic alike).
const N64: usize = 64_000;
/// How long enqueue -> completed may go without a single job completing.
const STALL: Duration = Duration::from_secs(60);
const DIR_PREFIX: &str = "signal-bus-bench-";

// ---------------------------------------------------------------------------------------
// Cleanup: guards, plus a registry the final sweep reads (whatever a guard did not get to).

/// Directories created and not yet removed.
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A directory of its own for one SQLite database, removed on drop (panics included).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{tag}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        // Registered first: a failure half-way is still swept.
        DIRS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.clone());
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn db(&self) -> PathBuf {
        self.0.join("queue.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_dir(&self.0);
        DIRS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|d| *d != self.0);
    }
}

fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("queue bench: cannot remove {}: {e}", dir.display()),
    }
}

/// Removes what no guard removed (a guard leaked or never dropped).
fn sweep() {
    let dirs = std::mem::take(&mut *DIRS.lock().unwrap_or_else(|e| e.into_inner()));
    for dir in dirs {
        remove_dir(&dir);
    }
    #[cfg(feature = "postgres")]
    pg::sweep();
}

/// Directories of bench processes that no longer run (killed before they could clean up).
/// Only where `/proc` tells which processes run.
fn remove_stale_dirs() {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            eprintln!(
                "queue bench: removing {} (left by process {pid}, gone)",
                entry.path().display()
            );
            remove_dir(&entry.path());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Workload.

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn signal(i: usize) -> Arc<Signal> {
    Arc::new(
        Signal::builder("audit.login.succeeded", "/bench")
            .subject(format!("user/{i}"))
            .data(json!({"user_id": i, "ip": "10.0.0.1", "agent": "bench"}))
            .build()
            .unwrap(),
    )
}

/// The job a forwarder named `bench` enqueues for `s`.
fn forwarder_job(s: &Signal) -> NewJob {
    NewJob::new(
        forwarder_worker("bench"),
        json!({
            "forwarder": "bench",
            "signal_source": s.source(),
            "signal_id": s.id(),
            "occurred_at": s.time_rfc3339(),
        }),
    )
}

/// A generic job (no stored signal), args about the size of a forwarder job's.
fn generic_job(i: usize) -> NewJob {
    NewJob::new(
        "bench.generic",
        json!({
            "organization_id": "org-bench",
            "actor_id": format!("user/{i}"),
            "user_id": i,
            "ip": "10.0.0.1",
        }),
    )
}

#[derive(Clone, Copy)]
enum Enqueue {
    /// `Queue::enqueue_signal` (group commit).
    Signal,
    /// `Queue::enqueue` of a generic job (group commit).
    Generic,
    /// `JobStore::enqueue` of a generic job: one transaction each (the old `Queue::enqueue`).
    StoreDirect,
}

async fn enqueue_rate(queue: &Queue, kind: Enqueue, producers: usize, n: usize) -> f64 {
    let start = Instant::now();
    let per = n / producers;
    // A JoinSet: when the body is dropped (Ctrl-C) or a producer panics, the others are
    // aborted instead of running on against a database being dropped.
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..producers {
        let q = queue.clone();
        tasks.spawn(async move {
            for i in p * per..(p + 1) * per {
                match kind {
                    Enqueue::Signal => {
                        let s = signal(i);
                        let j = forwarder_job(&s);
                        q.enqueue_signal(s, j).await.unwrap();
                    }
                    Enqueue::Generic => {
                        q.enqueue(generic_job(i)).await.unwrap();
                    }
                    Enqueue::StoreDirect => {
                        q.store().enqueue(None, &generic_job(i)).await.unwrap();
                    }
                };
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    (per * producers) as f64 / start.elapsed().as_secs_f64()
}

async fn end_to_end(store: impl JobStore + Clone, n: usize) -> f64 {
    let items: Vec<(Option<Arc<Signal>>, NewJob)> = (0..n)
        .map(|i| {
            let s = signal(i);
            let j = forwarder_job(&s);
            (Some(s), j)
        })
        .collect();
    for chunk in items.chunks(1000) {
        store.enqueue_many(chunk).await.unwrap();
    }
    let queue = Queue::builder(store.clone())
        .queue("default", 64)
        .poll_interval(Duration::from_millis(5))
        .build();
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    bus.subscribe(
        "audit.**",
        Forwarder::new("bench", Noop).dispatch(DispatchMode::Async),
    )
    .unwrap();
    let start = Instant::now();
    let runner = queue.start().unwrap();
    let (mut last, mut progressed) = (0, Instant::now());
    loop {
        let counts = store.counts().await.unwrap();
        let done = counts.get(&JobState::Completed).copied().unwrap_or(0) as usize;
        if done >= n {
            break;
        }
        if done > last {
            (last, progressed) = (done, Instant::now());
        }
        assert!(
            progressed.elapsed() < STALL,
            "enqueue -> completed stalled at {done} of {n} for {STALL:?}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    runner.shutdown().await;
    rate
}

/// Raw sqlx: one row per transaction (FULL sync), the floor of a durable single enqueue.
async fn raw_sqlite_single(n: usize) -> f64 {
    use sqlx::{sqlite::SqliteConnectOptions, ConnectOptions, Connection};
    let dir = TempDir::new("raw");
    let mut conn = SqliteConnectOptions::new()
        .filename(dir.db())
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
        .connect()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    let body = signal(0).to_json_vec();
    let start = Instant::now();
    for _ in 0..n {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("INSERT INTO t (body) VALUES (?)")
            .bind(&body)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = conn.close().await;
    rate
}

/// A fresh SQLite queue in a directory of its own; the directory goes with the guard.
async fn sqlite_queue(tag: &str) -> (Queue, TempDir) {
    let dir = TempDir::new(tag);
    let store = SqliteStore::open(dir.db()).await.unwrap();
    (Queue::new(store), dir)
}

// ---------------------------------------------------------------------------------------
// The table.

/// One row: a rate per run.
struct Row {
    name: &'static str,
    rates: Vec<f64>,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn row(&mut self, name: &'static str) -> usize {
        self.rows.push(Row {
            name,
            rates: Vec::new(),
        });
        self.rows.len() - 1
    }
    fn push(&mut self, row: usize, rate: f64) {
        self.rows[row].rates.push(rate);
    }
    fn rates(&self, row: usize) -> &[f64] {
        &self.rows[row].rates
    }
    /// Prints every row: median, min..max, and the median against `baseline`'s.
    fn print(&self, baseline: usize) {
        let base = median(self.rates(baseline));
        for row in &self.rows {
            let (min, max) = row
                .rates
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
            let m = median(&row.rates);
            println!(
                "{:<66} {m:>9.0} /s  ({min:>7.0} .. {max:>7.0})  {:>6.2}x raw",
                row.name,
                m / base
            );
        }
    }
}

/// `a / b` run by run (same run, same conditions), and the median of those ratios.
fn ratio(label: &str, a: &[f64], b: &[f64]) {
    let per_run: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
    let shown: Vec<String> = per_run.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "  {label:<64} {:>5.2}  (per run: {})",
        median(&per_run),
        shown.join(", ")
    );
}

// ---------------------------------------------------------------------------------------
// The body.

async fn sqlite_rows() {
    let mut t = Table::default();
    let raw = t.row("sqlite raw insert, 1 row/txn (FULL): baseline");
    let single = t.row("sqlite enqueue_signal, 1 producer");
    let g16 = t.row("sqlite enqueue_signal, 16 producers (group commit)");
    let s64 = t.row("sqlite enqueue_signal, 64 producers (group commit)");
    let j64 = t.row("sqlite enqueue (generic NewJob), 64 producers");
    let direct = t.row("sqlite store.enqueue per job (no group commit), 64 producers");
    let e2e = t.row("sqlite enqueue -> completed, noop forwarder, 64 at once");
    for run in 0..RUNS {
        // Each row on a fresh file; the file and its directory go when the row ends.
        t.push(raw, raw_sqlite_single(2_000).await);
        {
            let (q, _dir) = sqlite_queue("one").await;
            t.push(single, enqueue_rate(&q, Enqueue::Signal, 1, 2_000).await);
        }
        {
            let (q, _dir) = sqlite_queue("group16").await;
            t.push(g16, enqueue_rate(&q, Enqueue::Signal, 16, 40_000).await);
        }
        // Signal and generic back to back, the first one alternating from run to run.
        let mut order = [(Enqueue::Signal, s64), (Enqueue::Generic, j64)];
        if run % 2 == 1 {
            order.reverse();
        }
        for (kind, row) in order {
            let (q, _dir) = sqlite_queue("group64").await;
            t.push(row, enqueue_rate(&q, kind, 64, N64).await);
        }
        {
            let (q, _dir) = sqlite_queue("direct").await;
            t.push(
                direct,
                enqueue_rate(&q, Enqueue::StoreDirect, 64, 4_000).await,
            );
        }
        let dir = TempDir::new("e2e");
        let store = SqliteStore::open(dir.db()).await.unwrap();
        t.push(e2e, end_to_end(store, 20_000).await);
    }
    println!("SQLite: queue throughput, median of {RUNS} runs (min .. max), 2 worker threads");
    t.print(raw);
    ratio(
        "generic enqueue / enqueue_signal, 64 producers",
        t.rates(j64),
        t.rates(s64),
    );
    ratio(
        "generic enqueue (group commit) / store.enqueue per job",
        t.rates(j64),
        t.rates(direct),
    );
    println!();
}

async fn run() {
    remove_stale_dirs();
    sqlite_rows().await;
    #[cfg(feature = "postgres")]
    pg::rows().await;
}

enum Outcome {
    Done,
    Panicked(Box<dyn std::any::Any + Send>),
    Interrupted(&'static str),
}

/// SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                r.expect("SIGINT handler");
                "SIGINT"
            }
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.expect("Ctrl-C handler");
        "Ctrl-C"
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes --bench; a filter argument is ignored.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt.block_on(async {
        tokio::select! {
            r = AssertUnwindSafe(run()).catch_unwind() => match r {
                Ok(()) => Outcome::Done,
                Err(panic) => Outcome::Panicked(panic),
            },
            signal = interrupted() => Outcome::Interrupted(signal),
        }
        // The body is dropped here: its guards remove their directories and database.
    });
    // Stops what the body spawned (group committers, runners) before the final sweep.
    rt.shutdown_timeout(Duration::from_secs(10));
    sweep();
    match outcome {
        Outcome::Done => ExitCode::SUCCESS,
        Outcome::Panicked(panic) => {
            eprintln!("queue bench: a step panicked; temp directories and database removed");
            std::panic::resume_unwind(panic)
        }
        Outcome::Interrupted(signal) => {
            eprintln!("queue bench: {signal}; temp directories and database removed");
            ExitCode::from(130)
        }
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL.

#[cfg(feature = "postgres")]
mod pg {
    use std::{
        sync::Mutex,
        time::{Duration, Instant},
    };

    use signal_bus::queue::{PostgresStore, Queue};
    use sqlx::{postgres::PgConnectOptions, ConnectOptions, Connection, Executor, PgConnection};

    use super::{end_to_end, enqueue_rate, ratio, signal, Enqueue, Table, N64, RUNS};

    /// `(admin url, database)` of a database created and not yet dropped.
    static DATABASE: Mutex<Option<(String, String)>> = Mutex::new(None);

    fn admin_url() -> String {
        std::env::var("SIGNAL_BUS_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// A database of the bench's own (it truncates its tables), dropped on drop.
    struct BenchDatabase {
        admin_url: String,
        name: String,
        url: String,
    }

    impl BenchDatabase {
        async fn create(admin: &mut PgConnection, admin_url: &str) -> BenchDatabase {
            let name = format!(
                "signal_bus_bench_{}_{}",
                std::process::id(),
                chrono::Utc::now().timestamp_millis()
            );
            // Registered first: a failure half-way is still swept.
            *DATABASE.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((admin_url.to_owned(), name.clone()));
            let db = BenchDatabase {
                admin_url: admin_url.to_owned(),
                url: admin_url
                    .parse::<PgConnectOptions>()
                    .unwrap()
                    .database(&name)
                    .to_url_lossy()
                    .to_string(),
                name,
            };
            admin
                .execute(format!("CREATE DATABASE \"{}\"", db.name).as_str())
                .await
                .unwrap();
            db
        }
    }

    impl Drop for BenchDatabase {
        fn drop(&mut self) {
            drop_blocking(&self.admin_url, &self.name);
            *DATABASE.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Drops the database a guard did not.
    pub(super) fn sweep() {
        let left = DATABASE.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((admin_url, name)) = left {
            drop_blocking(&admin_url, &name);
        }
    }

    /// `DROP DATABASE .. WITH (FORCE)` on a fresh connection in a runtime of its own, on a
    /// thread of its own: works from a destructor, inside the bench's runtime or after it.
    fn drop_blocking(admin_url: &str, name: &str) {
        let (admin_url, owned) = (admin_url.to_owned(), name.to_owned());
        let done = std::thread::spawn(move || -> Result<(), String> {
            let name = owned;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), async {
                    let mut admin = PgConnection::connect(&admin_url)
                        .await
                        .map_err(|e| e.to_string())?;
                    admin
                        .execute(
                            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str(),
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    let _ = admin.close().await;
                    Ok(())
                })
                .await
                .map_err(|_| "timed out after 30 s".to_owned())?
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the dropping thread panicked".to_owned()));
        if let Err(e) = done {
            eprintln!(
                "queue bench: cannot drop database {name}: {e} \
                 (drop it by hand: DROP DATABASE \"{name}\" WITH (FORCE))"
            );
        }
    }

    /// Drops `signal_bus_bench_%` databases of earlier runs that nobody is connected to
    /// (a run still going has its connections open and is left alone).
    async fn drop_leftovers(admin: &mut PgConnection) {
        let left: Vec<String> = sqlx::query_scalar(
            "SELECT d.datname::text FROM pg_database AS d
             WHERE d.datname LIKE 'signal\\_bus\\_bench\\_%'
               AND NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a WHERE a.datname = d.datname)",
        )
        .fetch_all(&mut *admin)
        .await
        .unwrap();
        for name in left {
            eprintln!("queue bench: dropping database {name} left by an earlier run");
            admin
                .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                .await
                .unwrap();
        }
    }

    /// Raw sqlx: 100-row `INSERT ... SELECT FROM unnest(...)` per transaction, one connection.
    async fn raw_unnest(url: &str, n: usize) -> f64 {
        let mut conn = PgConnection::connect(url).await.unwrap();
        conn.execute(
            "DROP TABLE IF EXISTS raw_bench; \
             CREATE TABLE raw_bench (id BIGSERIAL PRIMARY KEY, body BYTEA NOT NULL)",
        )
        .await
        .unwrap();
        let body = signal(0).to_json_vec();
        let batch: Vec<Vec<u8>> = (0..100).map(|_| body.clone()).collect();
        let start = Instant::now();
        for _ in 0..n / 100 {
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("INSERT INTO raw_bench (body) SELECT * FROM unnest($1::bytea[])")
                .bind(&batch)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let rate = (n / 100 * 100) as f64 / start.elapsed().as_secs_f64();
        let _ = conn.close().await;
        rate
    }

    async fn reset(store: &PostgresStore) {
        sqlx::query("TRUNCATE signal_bus_jobs, signal_bus_signals")
            .execute(store.pool())
            .await
            .unwrap();
    }

    pub(super) async fn rows() {
        let admin_url = admin_url();
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        drop_leftovers(&mut admin).await;
        let db = BenchDatabase::create(&mut admin, &admin_url).await;
        let _ = admin.close().await;
        let mut t = Table::default();
        let raw = t.row("postgres raw INSERT ... unnest, 100 rows/txn, 1 conn: baseline");
        let g16 = t.row("postgres enqueue_signal, 16 producers (group commit)");
        let s64 = t.row("postgres enqueue_signal, 64 producers (group commit)");
        let j64 = t.row("postgres enqueue (generic NewJob), 64 producers");
        let direct = t.row("postgres store.enqueue per job (no group commit), 64 producers");
        let e2e = t.row("postgres enqueue -> completed, noop forwarder, 64 at once");
        let store = PostgresStore::connect(&db.url).await.unwrap();
        for run in 0..RUNS {
            t.push(raw, raw_unnest(&db.url, 20_000).await);
            reset(&store).await;
            t.push(
                g16,
                enqueue_rate(&Queue::new(store.clone()), Enqueue::Signal, 16, 20_000).await,
            );
            let mut order = [(Enqueue::Signal, s64), (Enqueue::Generic, j64)];
            if run % 2 == 1 {
                order.reverse();
            }
            for (kind, row) in order {
                reset(&store).await;
                t.push(
                    row,
                    enqueue_rate(&Queue::new(store.clone()), kind, 64, N64).await,
                );
            }
            reset(&store).await;
            t.push(
                direct,
                enqueue_rate(&Queue::new(store.clone()), Enqueue::StoreDirect, 64, 8_000).await,
            );
            reset(&store).await;
            t.push(e2e, end_to_end(store.clone(), 20_000).await);
        }
        drop(store);
        println!(
            "PostgreSQL: queue throughput, median of {RUNS} runs (min .. max), 2 worker threads"
        );
        t.print(raw);
        ratio(
            "generic enqueue / enqueue_signal, 64 producers",
            t.rates(j64),
            t.rates(s64),
        );
        ratio(
            "generic enqueue (group commit) / store.enqueue per job",
            t.rates(j64),
            t.rates(direct),
        );
        println!();
        drop(db);
    }
}
