//! The store conformance suite, run on every embedded backend: memory and a real SQLite
//! file. (PostgreSQL runs it in `queue_postgres.rs`, behind the `postgres` feature.)

#[path = "support/queue_suite.rs"]
mod queue_suite;

use std::sync::Arc;

use signal_bus::queue::MemoryStore;

#[tokio::test]
async fn memory_store_conformance() {
    queue_suite::run_all(Arc::new(MemoryStore::new())).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_store_conformance() {
    let dir = std::env::temp_dir().join(format!("signal-bus-conf-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = signal_bus::queue::SqliteStore::open(dir.join("queue.db"))
        .await
        .unwrap();
    queue_suite::run_all(Arc::new(store)).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
