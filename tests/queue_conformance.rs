//! The store conformance suite on the in-memory backend. (SQLite runs it in
//! `queue_sqlite.rs`, PostgreSQL in `queue_postgres.rs`, behind the `postgres` feature.)

#[path = "support/queue_suite.rs"]
mod queue_suite;

use std::sync::Arc;

use signal_bus::queue::{JobStore, MemoryStore};

async fn fresh_store() -> (Arc<dyn JobStore>, ()) {
    (Arc::new(MemoryStore::new()), ())
}

async fn finish((): ()) {}

store_suite!(memory, fresh_store, finish);
