//! The journal: a durable, ordered log of every signal a bus published, with replay and
//! persistent subscriptions.
//!
//! A bus built with [`BusBuilder::journal`](crate::BusBuilder::journal) appends each
//! published signal to its journal, with a sequence number, before it delivers it; `publish`
//! returns `Ok` only once the append is durable (concurrent publishers share one commit).
//! A bus without a journal pays nothing for it.

mod log;
mod memory;
mod persistent;
#[cfg(feature = "postgres")]
mod postgres;
mod replay;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;

pub(crate) use log::JournalRuntime;
pub use log::{Journal, DEFAULT_PRUNE_INTERVAL};
pub(crate) use persistent::{
    dead_letters as persistent_dead_letters, redrive as persistent_redrive, PersistentSet,
};
pub use persistent::{
    Delivery, PersistentBuilder, PersistentSubscription, Redriven, StartAt, DEFAULT_LEASE,
    DEFAULT_POLL_INTERVAL,
};
pub use replay::ReplayStream;

pub use store::{
    JournalDeadLetter, JournalEntry, JournalPage, JournalRetention, JournalStore, TypeFilter,
};

use chrono::{DateTime, Utc};

pub use crate::error::JournalError;

/// Where a [replay](crate::Bus::replay) starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replay {
    /// The first entry the journal still holds.
    Beginning,
    /// The first entry (lowest sequence number) appended at or after this time, and every
    /// entry after it: when appenders' clocks disagree, none appended at or after the time is
    /// left out.
    Since(DateTime<Utc>),
    /// The entry after this sequence number.
    After(u64),
}
