//! The store conformance suite on the in-memory store.

#[path = "support/queue_suite.rs"]
mod queue_suite;

use std::sync::Arc;

use signal_bus::queue::MemoryStore;

#[tokio::test]
async fn memory_store_conformance() {
    queue_suite::run_all(Arc::new(MemoryStore::new())).await;
}
