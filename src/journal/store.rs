//! The storage contract every journal backend implements.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::JournalError;
use crate::Signal;

/// One journaled signal: its sequence number, when it was appended, and the signal.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JournalEntry {
    /// Its position in the journal: 1 for the first signal, then strictly increasing in
    /// append (and commit) order. Sequence numbers of pruned entries are never reused.
    pub seq: u64,
    /// When it was appended.
    pub appended_at: DateTime<Utc>,
    /// The signal, as it was published.
    pub signal: Arc<Signal>,
}

impl JournalEntry {
    /// An entry (for stores outside this crate).
    pub fn new(seq: u64, appended_at: DateTime<Utc>, signal: Arc<Signal>) -> Self {
        JournalEntry {
            seq,
            appended_at,
            signal,
        }
    }
}

/// One page of a journal read: the entries that passed the type filter, and the last
/// sequence number the read looked at (passed or not), from which the next page starts.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct JournalPage {
    /// Matching entries, ascending by `seq`.
    pub entries: Vec<JournalEntry>,
    /// The highest `seq` the read scanned (`after` when it scanned nothing: the page is the
    /// end of the journal for now).
    pub scanned_to: u64,
}

impl JournalPage {
    /// A page (for stores outside this crate).
    pub fn new(entries: Vec<JournalEntry>, scanned_to: u64) -> Self {
        JournalPage {
            entries,
            scanned_to,
        }
    }
}

/// A signal a persistent subscription gave up on: its targets failed for good.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JournalDeadLetter {
    /// The journal sequence number of the signal.
    pub seq: u64,
    /// The signal (a copy: it outlives the journal entry's retention).
    pub signal: Arc<Signal>,
    /// The last error, as text.
    pub error: String,
    /// When it was dead-lettered.
    pub failed_at: DateTime<Utc>,
}

impl JournalDeadLetter {
    /// A dead letter (for stores outside this crate).
    pub fn new(seq: u64, signal: Arc<Signal>, error: String, failed_at: DateTime<Utc>) -> Self {
        JournalDeadLetter {
            seq,
            signal,
            error,
            failed_at,
        }
    }
}

/// What a journal keeps. Every limit is optional; the default keeps everything.
///
/// An entry goes when any set limit says so: older than `max_age`, beyond the newest
/// `max_entries`, or beyond the newest entries that fit in `max_bytes` (of stored signal
/// JSON). Unless [`protect_unacknowledged`](JournalRetention::protect_unacknowledged) is
/// turned off, entries that a persistent subscription of the journal has not acknowledged
/// yet are kept whatever the limits say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalRetention {
    /// Entries older than this go.
    pub max_age: Option<Duration>,
    /// At most this many newest entries stay.
    pub max_entries: Option<u64>,
    /// At most this many bytes of signal JSON (newest first) stay.
    pub max_bytes: Option<u64>,
    /// Keep entries after the lowest checkpoint of the journal's persistent subscriptions.
    /// Default: true.
    pub protect_unacknowledged: bool,
}

impl Default for JournalRetention {
    fn default() -> Self {
        JournalRetention {
            max_age: None,
            max_entries: None,
            max_bytes: None,
            protect_unacknowledged: true,
        }
    }
}

impl JournalRetention {
    /// Keeps everything (the default).
    pub fn keep_forever() -> Self {
        Self::default()
    }
    /// Entries older than `age` go.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }
    /// At most `n` newest entries stay.
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = Some(n);
        self
    }
    /// At most `bytes` of signal JSON stay, newest first.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }
    /// Whether entries a persistent subscription has not acknowledged are kept whatever the
    /// limits say (default true). Off, a subscription that falls behind retention skips
    /// what was pruned (and says so in a warning).
    pub fn protect_unacknowledged(mut self, protect: bool) -> Self {
        self.protect_unacknowledged = protect;
        self
    }
}

/// A type filter for [`JournalStore::read`]: `true` for the types to return. Stores call it
/// before they parse a signal, so a replay of a few types among many pays for those only.
pub type TypeFilter<'a> = &'a (dyn Fn(&str) -> bool + Send + Sync);

/// Where a journal keeps signals, and the state of its persistent subscriptions
/// (checkpoints, leases, dead letters). Implemented by
/// [`SqliteStore`](crate::queue::SqliteStore), `PostgresStore` (feature `postgres`) and
/// [`MemoryStore`](crate::queue::MemoryStore): the same store types as the queue's, in
/// tables of their own. One store holds many journals, each named; sequence numbers are
/// per journal.
///
/// Every method is one atomic step. The trait is open: a backend of your own, or a wrapper
/// (fault injection, metrics), is a supported use; `tests/support/journal_suite.rs` holds
/// every backend to the same semantics.
#[async_trait]
pub trait JournalStore: Send + Sync + 'static {
    /// The backend's name: `sqlite`, `postgres`, `memory`.
    fn backend(&self) -> &'static str;

    /// Appends `signals` to `journal`, in this order, in one transaction (group commit),
    /// stamped `at`; returns their sequence numbers. Numbers are strictly increasing, above
    /// every number the journal ever gave, and commit in order: once a reader sees `n`, it
    /// sees everything below `n` that was not pruned (appenders of one journal are
    /// serialized, in any number of processes). Returns once the append is durable.
    ///
    /// # Errors
    /// The store is unreachable or read-only; nothing is appended then.
    async fn append(
        &self,
        journal: &str,
        signals: &[Arc<Signal>],
        at: DateTime<Utc>,
    ) -> Result<Vec<u64>, JournalError>;

    /// Reads entries of `journal` with `seq > after`, ascending, scanning at most `limit`
    /// entries; returns those whose type passes `filter` (all without one), parsed. Never
    /// loads more than `limit` entries.
    ///
    /// # Errors
    /// The store is unreachable, or a stored signal no longer parses
    /// ([`JournalError::Corrupt`] naming its sequence number).
    async fn read(
        &self,
        journal: &str,
        after: u64,
        limit: usize,
        filter: Option<TypeFilter<'_>>,
    ) -> Result<JournalPage, JournalError>;

    /// The highest sequence number `journal` has given (0 when it never had an entry), even
    /// if that entry was pruned.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn head(&self, journal: &str) -> Result<u64, JournalError>;

    /// Where a replay "since `time`" starts: one less than the lowest sequence number of an
    /// entry appended at or after `time`, or the journal's [`head`](JournalStore::head) when
    /// there is none. Reading after it yields every entry appended at or after `time`, also
    /// when appenders' clocks disagree and a later entry carries an earlier time (the entries
    /// after it that were appended before `time` then come along: never fewer, sometimes
    /// more).
    ///
    /// # Errors
    /// The store is unreachable.
    async fn seq_before(&self, journal: &str, time: DateTime<Utc>) -> Result<u64, JournalError>;

    /// The checkpoint of persistent subscription `name`: the sequence number up to which
    /// it acknowledged everything, or `None` for a name never seen.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn checkpoint(&self, journal: &str, name: &str) -> Result<Option<u64>, JournalError>;

    /// Creates the subscription `name` at `seq` if it does not exist; returns its
    /// checkpoint (the existing one, or `seq`).
    ///
    /// # Errors
    /// The store is unreachable.
    async fn create_checkpoint(
        &self,
        journal: &str,
        name: &str,
        seq: u64,
    ) -> Result<u64, JournalError>;

    /// Moves the checkpoint of `name` to `seq` (never backwards: a lower `seq` is ignored),
    /// if `owner` holds its lease. Returns whether the owner held it.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn save_checkpoint(
        &self,
        journal: &str,
        name: &str,
        owner: &str,
        seq: u64,
    ) -> Result<bool, JournalError>;

    /// Takes or renews the lease of subscription `name` for `owner` until `until`: it
    /// succeeds when nobody holds it, `owner` holds it, or the holder's lease ended
    /// before `now`. Returns whether `owner` holds it now.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn acquire_lease(
        &self,
        journal: &str,
        name: &str,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, JournalError>;

    /// Gives up `owner`'s lease of `name` (nothing when another owner holds it).
    ///
    /// # Errors
    /// The store is unreachable.
    async fn release_lease(
        &self,
        journal: &str,
        name: &str,
        owner: &str,
    ) -> Result<(), JournalError>;

    /// Records that subscription `name` gave up on `signal` (at `seq`) with `error`. Storing
    /// the same `seq` again replaces the error.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn add_dead_letter(
        &self,
        journal: &str,
        name: &str,
        seq: u64,
        signal: &Signal,
        error: &str,
        at: DateTime<Utc>,
    ) -> Result<(), JournalError>;

    /// The dead letters of `name`, oldest `seq` first, at most `limit`.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn dead_letters(
        &self,
        journal: &str,
        name: &str,
        limit: usize,
    ) -> Result<Vec<JournalDeadLetter>, JournalError>;

    /// Removes dead letters of `name`: those with the given sequence numbers, or all of them
    /// for `None`; returns the removed ones (oldest first).
    ///
    /// # Errors
    /// The store is unreachable.
    async fn take_dead_letters(
        &self,
        journal: &str,
        name: &str,
        seqs: Option<&[u64]>,
    ) -> Result<Vec<JournalDeadLetter>, JournalError>;

    /// Deletes the subscription `name`: its checkpoint, lease and dead letters. Returns
    /// whether it existed.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn delete_subscription(&self, journal: &str, name: &str) -> Result<bool, JournalError>;

    /// Deletes the entries of `journal` that `retention` lets go at `now` (see
    /// [`JournalRetention`]), in rounds of at most 10,000 rows; returns how many.
    ///
    /// # Errors
    /// The store is unreachable (what was deleted before stays deleted).
    async fn prune(
        &self,
        journal: &str,
        retention: &JournalRetention,
        now: DateTime<Utc>,
    ) -> Result<u64, JournalError>;
}

#[async_trait]
impl<S: JournalStore + ?Sized> JournalStore for Arc<S> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    async fn append(
        &self,
        journal: &str,
        signals: &[Arc<Signal>],
        at: DateTime<Utc>,
    ) -> Result<Vec<u64>, JournalError> {
        (**self).append(journal, signals, at).await
    }
    async fn read(
        &self,
        journal: &str,
        after: u64,
        limit: usize,
        filter: Option<TypeFilter<'_>>,
    ) -> Result<JournalPage, JournalError> {
        (**self).read(journal, after, limit, filter).await
    }
    async fn head(&self, journal: &str) -> Result<u64, JournalError> {
        (**self).head(journal).await
    }
    async fn seq_before(&self, journal: &str, time: DateTime<Utc>) -> Result<u64, JournalError> {
        (**self).seq_before(journal, time).await
    }
    async fn checkpoint(&self, journal: &str, name: &str) -> Result<Option<u64>, JournalError> {
        (**self).checkpoint(journal, name).await
    }
    async fn create_checkpoint(
        &self,
        journal: &str,
        name: &str,
        seq: u64,
    ) -> Result<u64, JournalError> {
        (**self).create_checkpoint(journal, name, seq).await
    }
    async fn save_checkpoint(
        &self,
        journal: &str,
        name: &str,
        owner: &str,
        seq: u64,
    ) -> Result<bool, JournalError> {
        (**self).save_checkpoint(journal, name, owner, seq).await
    }
    async fn acquire_lease(
        &self,
        journal: &str,
        name: &str,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, JournalError> {
        (**self)
            .acquire_lease(journal, name, owner, until, now)
            .await
    }
    async fn release_lease(
        &self,
        journal: &str,
        name: &str,
        owner: &str,
    ) -> Result<(), JournalError> {
        (**self).release_lease(journal, name, owner).await
    }
    async fn add_dead_letter(
        &self,
        journal: &str,
        name: &str,
        seq: u64,
        signal: &Signal,
        error: &str,
        at: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        (**self)
            .add_dead_letter(journal, name, seq, signal, error, at)
            .await
    }
    async fn dead_letters(
        &self,
        journal: &str,
        name: &str,
        limit: usize,
    ) -> Result<Vec<JournalDeadLetter>, JournalError> {
        (**self).dead_letters(journal, name, limit).await
    }
    async fn take_dead_letters(
        &self,
        journal: &str,
        name: &str,
        seqs: Option<&[u64]>,
    ) -> Result<Vec<JournalDeadLetter>, JournalError> {
        (**self).take_dead_letters(journal, name, seqs).await
    }
    async fn delete_subscription(&self, journal: &str, name: &str) -> Result<bool, JournalError> {
        (**self).delete_subscription(journal, name).await
    }
    async fn prune(
        &self,
        journal: &str,
        retention: &JournalRetention,
        now: DateTime<Utc>,
    ) -> Result<u64, JournalError> {
        (**self).prune(journal, retention, now).await
    }
}
