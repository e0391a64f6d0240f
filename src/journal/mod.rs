//! The journal: a durable, ordered log of every signal a bus published, with replay and
//! persistent subscriptions.
//!
//! A bus built with [`BusBuilder::journal`](crate::BusBuilder::journal) appends each
//! published signal to its journal, with a sequence number, before it delivers it; `publish`
//! returns `Ok` only once the append is durable (concurrent publishers share one commit).
//! A bus without a journal pays nothing for it.

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;

pub use store::{
    JournalDeadLetter, JournalEntry, JournalPage, JournalRetention, JournalStore, TypeFilter,
};

use chrono::{DateTime, Utc};

/// Where a [replay](crate::Bus::replay) starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replay {
    /// The first entry the journal still holds.
    Beginning,
    /// The first entry appended at or after this time.
    Since(DateTime<Utc>),
    /// The entry after this sequence number.
    After(u64),
}

/// A journal operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The store could not be reached or written (the database's own message).
    #[error("journal store {backend} failed: {message}")]
    #[non_exhaustive]
    Store {
        /// `sqlite`, `postgres` or `memory`.
        backend: &'static str,
        /// What failed, with what the database said.
        message: String,
        /// The database's own error, when there is one.
        source: Option<crate::Cause>,
    },
    /// A stored entry does not parse any more.
    #[error("corrupt journal entry {seq} in journal `{journal}`: {message}")]
    Corrupt {
        /// The journal.
        journal: String,
        /// The entry's sequence number.
        seq: u64,
        /// What is wrong.
        message: String,
    },
    /// An option is invalid.
    #[error("invalid journal option: {0}")]
    Invalid(#[from] crate::ConfigError),
}

impl JournalError {
    /// A store failure described by `error`'s message.
    pub fn store(backend: &'static str, error: impl std::fmt::Display) -> Self {
        JournalError::Store {
            backend,
            message: error.to_string(),
            source: None,
        }
    }

    /// A store failure that keeps `error` as its [`source`](std::error::Error::source).
    pub fn store_caused(
        backend: &'static str,
        message: impl Into<String>,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        JournalError::Store {
            backend,
            message: message.into(),
            source: Some(crate::Cause::new(error)),
        }
    }
}
