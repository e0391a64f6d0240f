//! Scratch space and waiting, for tests that use real files and background workers.

#![allow(dead_code)]

use std::{
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

/// A unique directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory whose name starts with `signal-bus-{tag}`.
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "signal-bus-{tag}-{}-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// The usual database file in this directory, `queue.db`.
    pub fn db(&self) -> PathBuf {
        self.0.join("queue.db")
    }

    /// A `sqlite:` URL of file `name` in this directory.
    pub fn sqlite(&self, name: &str) -> String {
        format!("sqlite:{}", self.0.join(name).display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` every 10 ms until it holds (the state changes elsewhere: a worker, a runner);
/// panics naming `what` after 30 s.
pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}
