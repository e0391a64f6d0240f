//! Durable queue throughput, beside raw SQL baselines in the same run (medians of 3 runs).
//!
//! `cargo bench --bench queue` (SQLite; add `--features postgres` with a server at
//! `SIGNAL_BUS_POSTGRES_URL` for the PostgreSQL rows).
//!
//! - enqueue, 1 producer: each `enqueue_signal` awaited (a durable commit each, FULL sync);
//! - enqueue, 16 producers: concurrent `enqueue_signal` calls (group commit);
//! - enqueue to completed: N forwarder jobs run by a runner with a no-op adapter.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use signal_bus::{
    adapter::Noop,
    queue::{
        DispatchMode, Forwarder, JobState, JobStore, NewJob, Queue, SqliteStore, FORWARDER_WORKER,
    },
    Bus, Signal,
};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn tmp_db(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("signal-bus-bench-{tag}-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("queue.db")
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

fn job(s: &Signal) -> NewJob {
    NewJob::new(
        FORWARDER_WORKER,
        json!({"forwarder": "bench", "signal_id": s.id(), "occurred_at": s.time_rfc3339()}),
    )
}

/// Raw sqlx: one row per transaction (FULL sync), the floor of a durable single enqueue.
async fn raw_sqlite_single(n: usize) -> f64 {
    use sqlx::{sqlite::SqliteConnectOptions, ConnectOptions, Connection};
    let path = tmp_db("raw");
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
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
    drop(conn);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    rate
}

async fn enqueue_rate(queue: &Queue, producers: usize, n: usize) -> f64 {
    let start = Instant::now();
    let per = n / producers;
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let q = queue.clone();
            tokio::spawn(async move {
                for i in 0..per {
                    let s = signal(p * per + i);
                    let j = job(&s);
                    q.enqueue_signal(s, j).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (per * producers) as f64 / start.elapsed().as_secs_f64()
}

async fn end_to_end(store: impl JobStore + Clone, n: usize) -> f64 {
    let items: Vec<(Option<Arc<Signal>>, NewJob)> = (0..n)
        .map(|i| {
            let s = signal(i);
            let j = job(&s);
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
    let runner = queue.start();
    loop {
        let done = store.counts().await.unwrap()[&JobState::Completed];
        if done as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    runner.shutdown().await;
    rate
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; a filter argument is ignored.
    let runs = 3;
    let mut rows: Vec<(String, f64)> = Vec::new();

    let mut raw = Vec::new();
    let mut single = Vec::new();
    let mut grouped = Vec::new();
    let mut grouped64 = Vec::new();
    let mut e2e = Vec::new();
    for _ in 0..runs {
        raw.push(raw_sqlite_single(2_000).await);
        let q = Queue::new(SqliteStore::open(tmp_db("one")).await.unwrap());
        single.push(enqueue_rate(&q, 1, 2_000).await);
        let q = Queue::new(SqliteStore::open(tmp_db("group")).await.unwrap());
        grouped.push(enqueue_rate(&q, 16, 40_000).await);
        let q = Queue::new(SqliteStore::open(tmp_db("group64")).await.unwrap());
        grouped64.push(enqueue_rate(&q, 64, 64_000).await);
        e2e.push(end_to_end(SqliteStore::open(tmp_db("e2e")).await.unwrap(), 20_000).await);
    }
    rows.push(("sqlite raw insert, 1 row/txn (FULL)".into(), median(raw)));
    rows.push(("sqlite enqueue_signal, 1 producer".into(), median(single)));
    rows.push((
        "sqlite enqueue_signal, 16 producers (group commit)".into(),
        median(grouped),
    ));
    rows.push((
        "sqlite enqueue_signal, 64 producers (group commit)".into(),
        median(grouped64),
    ));
    rows.push((
        "sqlite enqueue -> completed, noop forwarder, 64 at once".into(),
        median(e2e),
    ));

    #[cfg(feature = "postgres")]
    {
        use sqlx::{postgres::PgConnectOptions, ConnectOptions, Connection, Executor};
        let admin_url = std::env::var("SIGNAL_BUS_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        // A database of its own, created and dropped here: the bench truncates its tables.
        let bench_db = format!("signal_bus_bench_{}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        admin
            .execute(format!("CREATE DATABASE {bench_db}").as_str())
            .await
            .unwrap();
        let options: PgConnectOptions = admin_url.parse().unwrap();
        let url = options.database(&bench_db).to_url_lossy().to_string();
        let mut pg_raw = Vec::new();
        let mut pg_group = Vec::new();
        let mut pg_e2e = Vec::new();
        for _ in 0..runs {
            pg_raw.push(raw_pg_unnest(&url, 20_000).await);
            let store = signal_bus::queue::PostgresStore::connect(&url)
                .await
                .unwrap();
            reset_pg(&store).await;
            pg_group.push(enqueue_rate(&Queue::new(store.clone()), 16, 20_000).await);
            reset_pg(&store).await;
            pg_e2e.push(end_to_end(store, 20_000).await);
        }
        rows.push((
            "postgres raw INSERT ... unnest, 100 rows/txn, 1 conn".into(),
            median(pg_raw),
        ));
        rows.push((
            "postgres enqueue_signal, 16 producers (group commit)".into(),
            median(pg_group),
        ));
        rows.push((
            "postgres enqueue -> completed, noop forwarder, 64 at once".into(),
            median(pg_e2e),
        ));
    }

    println!("queue throughput, median of {runs} runs, 2 workers");
    for (name, rate) in rows {
        println!("{name:<60} {rate:>10.0} /s");
    }
}

/// Raw sqlx: 100-row `INSERT ... SELECT FROM unnest(...)` per transaction, one connection.
#[cfg(feature = "postgres")]
async fn raw_pg_unnest(url: &str, n: usize) -> f64 {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    conn.execute("DROP TABLE IF EXISTS raw_bench; CREATE TABLE raw_bench (id BIGSERIAL PRIMARY KEY, body BYTEA NOT NULL)")
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
    (n / 100 * 100) as f64 / start.elapsed().as_secs_f64()
}

#[cfg(feature = "postgres")]
async fn reset_pg(store: &signal_bus::queue::PostgresStore) {
    sqlx::query("TRUNCATE signal_bus_jobs, signal_bus_signals")
        .execute(store.pool())
        .await
        .unwrap();
}
