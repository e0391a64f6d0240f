//! The durable queue: jobs stored in SQLite (embedded), PostgreSQL (many nodes) or memory
//! (tests), run by workers with retries, and the [`Forwarder`] target that delivers signals
//! through it.
//!
//! A signal is stored once, as its CloudEvents JSON; a forwarder job carries only a thin
//! reference (forwarder name, signal id, occurred-at) and the worker reloads the signal when
//! it runs (the Sigra audit-forwarder design).

mod forwarder;
mod job;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod runner;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod worker;

pub use forwarder::{DispatchMode, Forwarder, FORWARDER_WORKER};
pub use job::{Job, JobState, NewJob, DEFAULT_MAX_ATTEMPTS};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
pub use runner::{
    JobBackoff, Queue, QueueBuilder, Runner, RunnerReport, DEFAULT_CONCURRENCY, DEFAULT_LEASE,
    DEFAULT_POLL_INTERVAL,
};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, SqliteStoreBuilder};
pub use store::JobStore;
pub use worker::{tenant_scope, Scope, Tenant, TenantWorker, WorkOutcome, Worker, TENANT_KEYS};

#[allow(unused_imports)]
pub(crate) use job::{from_ms, to_ms};

/// What the queue's store refuses or cannot do.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The store could not be reached, opened or written (the database's own message).
    #[error("queue store {backend} failed: {message}")]
    Store {
        /// `sqlite`, `postgres` or `memory`.
        backend: &'static str,
        /// What the database said.
        message: String,
    },
    /// A stored row does not hold what it should.
    #[error("corrupt queue data: {what}")]
    Corrupt {
        /// What is wrong, naming the row.
        what: String,
    },
    /// A job or option is invalid.
    #[error("invalid job: {0}")]
    Invalid(#[from] crate::ConfigError),
    /// A tenant job misses a required argument.
    #[error("job args must contain `{key}` (null is allowed, absent is not)")]
    MissingArg {
        /// The missing key.
        key: &'static str,
    },
}

impl QueueError {
    /// A store failure.
    pub fn store(backend: &'static str, error: impl std::fmt::Display) -> Self {
        QueueError::Store {
            backend,
            message: error.to_string(),
        }
    }
}

/// Checks a job before it is stored.
pub(crate) fn validate_new_job(job: &NewJob) -> Result<(), QueueError> {
    use crate::ConfigError;
    if job.queue.is_empty() {
        return Err(ConfigError::invalid("queue", "", "must not be empty").into());
    }
    if job.worker.is_empty() {
        return Err(ConfigError::invalid("worker", "", "must not be empty").into());
    }
    if job.max_attempts == 0 || i32::try_from(job.max_attempts).is_err() {
        return Err(ConfigError::invalid(
            "max_attempts",
            job.max_attempts,
            format!("must be between 1 and {}", i32::MAX),
        )
        .into());
    }
    if !(0..=9).contains(&job.priority) {
        return Err(
            ConfigError::invalid("priority", job.priority, "must be between 0 and 9").into(),
        );
    }
    Ok(())
}
