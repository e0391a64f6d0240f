//! The durable queue: jobs stored in SQLite (embedded), PostgreSQL (many nodes) or memory
//! (tests), run by workers with retries, and the [`Forwarder`] target that delivers signals
//! through it.
//!
//! A signal is stored once per `(source, id)`, as its CloudEvents JSON; a forwarder job
//! carries only a thin reference (signal source and id, occurred-at) and the worker reloads
//! the signal when it runs (the Sigra audit-forwarder design).

pub(crate) mod events;
mod forwarder;
mod job;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod runner;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod worker;

pub use forwarder::{DispatchMode, Forwarder, FORWARDER_WORKER};
pub use job::{
    forwarder_worker, CancelReason, Job, JobState, LeaseToken, NewJob, PruneReport, Retention,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_SIGNAL_MARGIN,
};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
pub use runner::{
    JobBackoff, Queue, QueueBuilder, Runner, RunnerReport, DEFAULT_CONCURRENCY, DEFAULT_LEASE,
    DEFAULT_POLL_INTERVAL, DEFAULT_PRUNE_INTERVAL, DEFAULT_UNKNOWN_AFTER,
};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, SqliteStoreBuilder};
pub use store::{JobStore, RescueBackoff, SignalKey};
pub use worker::{tenant_scope, Scope, Tenant, TenantWorker, WorkOutcome, Worker, TENANT_KEYS};

pub(crate) use crate::error::after;
#[allow(unused_imports)]
pub(crate) use job::{from_ms, to_ms};

/// What the queue's store refuses or cannot do.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The store could not be reached, opened or written (the database's own message).
    #[error("queue store {backend} failed: {message}")]
    #[non_exhaustive]
    Store {
        /// `sqlite`, `postgres` or `memory`.
        backend: &'static str,
        /// What failed, with what the database (or the file system) said.
        message: String,
        /// The database's own error (a `sqlx::Error`, whose own `source()` may be a
        /// `std::io::Error`), when there is one: [`source()`](std::error::Error::source)
        /// returns it.
        source: Option<crate::Cause>,
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
    /// A runner's state change was refused: the job is no longer executing under the lease
    /// it presented (rescued after its lease ran out, released, cancelled by hand or claimed
    /// again). The job's current holder decides its outcome.
    #[error("job {job}: the lease is no longer held by this runner (the job was rescued, released, cancelled or claimed again)")]
    LeaseLost {
        /// The job id.
        job: i64,
    },
    /// A call that spawns tasks ([`Queue::start`]) was made outside a tokio runtime.
    #[error("{}", crate::error::no_runtime(call))]
    NoRuntime {
        /// The call, e.g. `Queue::start`.
        call: &'static str,
    },
    /// A tenant job misses a required argument.
    #[error("job args must contain `{key}` (null is allowed, absent is not)")]
    MissingArg {
        /// The missing key.
        key: &'static str,
    },
}

impl QueueError {
    /// A store failure described by `error`'s message (with no [`source`](std::error::Error::source);
    /// [`QueueError::store_caused`] keeps the error itself).
    pub fn store(backend: &'static str, error: impl std::fmt::Display) -> Self {
        QueueError::Store {
            backend,
            message: error.to_string(),
            source: None,
        }
    }

    /// A store failure: `message` says what failed (it should include the cause's message,
    /// without secrets), and `cause` is kept whole as the error's
    /// [`source`](std::error::Error::source).
    pub fn store_caused(
        backend: &'static str,
        message: impl std::fmt::Display,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        QueueError::Store {
            backend,
            message: message.to_string(),
            source: Some(crate::Cause::new(cause)),
        }
    }

    /// A database error as a store failure, keeping it as the source.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn sql(backend: &'static str, error: sqlx::Error) -> Self {
        QueueError::store_caused(backend, error.to_string(), error)
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

/// What a rescued job's history says: its runner stopped renewing the lease.
pub(crate) fn rescue_error(attempt: u32, max_attempts: u32) -> String {
    if attempt >= max_attempts {
        format!(
            "discarded: its runner stopped during attempt {attempt} of {max_attempts} (the lease \
             ran out: the process died or hung)"
        )
    } else {
        format!(
            "its runner stopped during attempt {attempt} of {max_attempts} (the lease ran out: \
             the process died or hung); retried with backoff"
        )
    }
}

/// The cancel reason and detail for a job nobody registered a worker for.
pub(crate) fn unregistered_reason(worker: &str) -> (CancelReason, String) {
    match worker
        .strip_prefix(FORWARDER_WORKER)
        .and_then(|r| r.strip_prefix(':'))
    {
        Some(name) => (
            CancelReason::UnknownForwarder,
            format!(
                "unknown_forwarder: no process registered forwarder `{name}` for this queue \
                 within the grace period"
            ),
        ),
        None => (
            CancelReason::UnknownWorker,
            format!(
                "unknown_worker: no process registered worker `{worker}` for this queue within \
                 the grace period"
            ),
        ),
    }
}

/// A stored signal that does not parse.
pub(crate) fn corrupt_signal(source: &str, id: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Corrupt {
        what: format!("signal `{id}` from `{source}` does not hold a valid signal: {e}"),
    }
}
