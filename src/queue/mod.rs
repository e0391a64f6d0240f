//! The durable queue: jobs stored in SQLite (embedded), PostgreSQL (many nodes) or memory
//! (tests), run by workers with retries, and the [`Forwarder`] target that delivers signals
//! through it.
//!
//! A signal is stored once, as its CloudEvents JSON; a forwarder job carries only a thin
//! reference (forwarder name, signal id, occurred-at) and the worker reloads the signal when
//! it runs (the Sigra audit-forwarder design).

mod job;
#[cfg(feature = "postgres")]
mod postgres;
mod store;

pub use job::{Job, JobState, NewJob, DEFAULT_MAX_ATTEMPTS};
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use store::JobStore;

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
