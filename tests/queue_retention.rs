#![cfg(feature = "sqlite")]
//! Retention soak: a SQLite queue that delivers and prunes cycle after cycle stays the same
//! size on disk (deleted pages are reused), and keeps no job or signal it was told to let
//! go; the same load without pruning grows, so the check can tell the difference.

#[path = "support/scratch.rs"]
mod scratch;
use scratch::TempDir;

use std::{path::Path, time::Duration};

use signal_bus::{
    adapter::Noop,
    queue::{DispatchMode, Forwarder, JobState, Queue, Retention, SqliteStore},
    Bus, Signal,
};
use sqlx::{sqlite::SqliteConnectOptions, SqlitePool};

const CYCLES: usize = 30;
const PER_CYCLE: usize = 300;

/// Pages in the database (the file's size in pages once the WAL is checkpointed).
async fn pages(path: &Path) -> i64 {
    let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
        .await
        .unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

async fn rows(path: &Path, table: &str) -> i64 {
    let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// Runs `CYCLES` rounds of publish, deliver and (when `prune`) prune; returns the page
/// count after each round.
async fn soak(path: &Path, prune: bool) -> Vec<i64> {
    // Durability is not what this test is about: NORMAL keeps it fast.
    let store = SqliteStore::builder(path)
        .synchronous_normal()
        .open()
        .await
        .unwrap();
    let queue = Queue::builder(store)
        .poll_interval(Duration::from_millis(5))
        .retention(Retention::keep_forever())
        .queue("default", 50)
        .build();
    let runner = queue.start().unwrap();
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    bus.subscribe(
        "audit.**",
        Forwarder::new("siem", Noop).dispatch(DispatchMode::Async),
    )
    .unwrap();
    let payload = "x".repeat(512);
    let mut sizes = Vec::new();
    for cycle in 0..CYCLES {
        let publishes = (0..PER_CYCLE).map(|n| {
            let s = Signal::builder("audit.event", "/soak")
                .id(format!("{cycle}-{n}"))
                .data(serde_json::json!({ "pad": payload }))
                .build()
                .unwrap();
            bus.publish(s)
        });
        for report in futures_util::future::join_all(publishes).await {
            assert!(report.unwrap().is_ok());
        }
        let target = ((cycle + 1) * PER_CYCLE) as u64;
        for i in 0.. {
            let c = queue.counts().await.unwrap();
            let done = c[&JobState::Completed];
            if (prune && done + pruned_so_far(cycle) >= target) || (!prune && done >= target) {
                break;
            }
            assert!(i < 6000, "cycle {cycle} never finished: {c:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if prune {
            // Completions are stamped in milliseconds and pruning takes those finished before
            // now: wait until the clock has left the millisecond of the last completion.
            let seen = chrono::Utc::now().timestamp_millis();
            while chrono::Utc::now().timestamp_millis() <= seen {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let report = queue
                .prune(
                    Retention::keep_forever()
                        .completed(Some(Duration::ZERO))
                        .signal_margin(Duration::ZERO),
                )
                .await
                .unwrap();
            assert_eq!(
                report.completed, PER_CYCLE as u64,
                "cycle {cycle}: {report:?}"
            );
            assert_eq!(
                report.signals, PER_CYCLE as u64,
                "cycle {cycle}: {report:?}"
            );
        }
        sizes.push(pages(path).await);
    }
    runner.shutdown().await;
    sizes
}

fn pruned_so_far(cycle: usize) -> u64 {
    (cycle * PER_CYCLE) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_keeps_the_database_size_flat() {
    let dir = TempDir::new("soak");
    let (pruned, kept) = (dir.0.join("pruned.db"), dir.0.join("kept.db"));

    let flat = soak(&pruned, true).await;
    assert_eq!(rows(&pruned, "signal_bus_jobs").await, 0);
    assert_eq!(rows(&pruned, "signal_bus_signals").await, 0);
    // After the first rounds have sized the file, it stops growing: freed pages are reused.
    let settled = flat[4];
    let last = *flat.last().unwrap();
    eprintln!("pages with pruning, per cycle: {flat:?}");
    assert!(
        last <= settled + settled / 10 + 8,
        "the file grew from {settled} to {last} pages over {} pruned cycles: {flat:?}",
        CYCLES - 5
    );

    let grown = soak(&kept, false).await;
    eprintln!("pages without pruning, per cycle: {grown:?}");
    assert!(
        *grown.last().unwrap() > 3 * last,
        "without pruning the same load must grow the file ({grown:?} vs {flat:?})"
    );
}
