//! The journal a bus appends to: its options ([`Journal`]) and, once a bus is built with
//! it, the running part (group commit, the pruner, the head that wakes subscribers).

use std::{
    fmt,
    sync::{Arc, OnceLock, Weak},
    time::Duration,
};

use chrono::Utc;
use tokio::sync::{mpsc, oneshot, watch};

use super::{JournalError, JournalRetention, JournalStore};
use crate::{ConfigError, Signal};

/// Most signals appended in one transaction.
const MAX_GROUP: usize = 1024;

/// The default time between two prunes.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// The journal a bus appends every published signal to: a [`JournalStore`] and its
/// options. Built from a store (`Bus::builder().journal(store)` converts it) or with
/// [`Journal::new`] for options.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use signal_bus::{journal::{Journal, JournalRetention}, queue::MemoryStore, Bus};
///
/// let journal = Journal::new(MemoryStore::new())
///     .name("orders")
///     .retention(JournalRetention::default().max_age(Duration::from_secs(7 * 24 * 3600)));
/// let bus = Bus::builder().journal(journal).build()?;
/// assert_eq!(bus.journal_name(), Some("orders"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Journal {
    pub(crate) store: Arc<dyn JournalStore>,
    pub(crate) name: Option<String>,
    pub(crate) retention: JournalRetention,
    pub(crate) prune_interval: Duration,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("backend", &self.store.backend())
            .field("name", &self.name)
            .field("retention", &self.retention)
            .field("prune_interval", &self.prune_interval)
            .finish()
    }
}

impl<S: JournalStore> From<S> for Journal {
    fn from(store: S) -> Self {
        Journal::new(store)
    }
}

impl Journal {
    /// A journal in `store`, named after the bus, keeping everything.
    pub fn new(store: impl JournalStore) -> Self {
        Journal {
            store: Arc::new(store),
            name: None,
            retention: JournalRetention::default(),
            prune_interval: DEFAULT_PRUNE_INTERVAL,
        }
    }

    /// The journal's name in its store (default: the bus's name). Buses of several
    /// processes that name the same journal in one PostgreSQL store share it: one sequence,
    /// every signal any of them published.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// What the journal keeps (default: everything). A pruner task deletes the rest every
    /// [`prune_interval`](Journal::prune_interval).
    pub fn retention(mut self, retention: JournalRetention) -> Self {
        self.retention = retention;
        self
    }

    /// How often the pruner runs (default 60 s; at least 10 ms). It runs only when the
    /// retention sets a limit.
    pub fn prune_interval(mut self, interval: Duration) -> Self {
        self.prune_interval = interval;
        self
    }

    /// Checks the options; `bus` is the bus's name, the default journal name.
    pub(crate) fn validate(&self, problems: &mut Vec<ConfigError>) {
        if let Some(name) = &self.name {
            if let Err(rule) = crate::context::validate_name("journal name", name) {
                problems.push(ConfigError::invalid("journal name", name, rule));
            }
        }
        if self.prune_interval < Duration::from_millis(10) {
            problems.push(ConfigError::invalid(
                "prune_interval",
                format!("{:?}", self.prune_interval),
                "must be at least 10ms",
            ));
        }
        if self.retention.max_entries == Some(0) {
            problems.push(ConfigError::invalid(
                "retention.max_entries",
                0,
                "must be at least 1 (a journal that keeps nothing cannot replay or feed a \
                 persistent subscription)",
            ));
        }
        if self.retention.max_bytes == Some(0) {
            problems.push(ConfigError::invalid(
                "retention.max_bytes",
                0,
                "must be at least 1",
            ));
        }
        if self.retention.max_age == Some(Duration::ZERO) {
            problems.push(ConfigError::invalid(
                "retention.max_age",
                "0s",
                "must be longer than zero",
            ));
        }
    }

    /// The running journal of a bus named `bus`.
    pub(crate) fn start(self, bus: &str) -> Arc<JournalRuntime> {
        let name: Arc<str> = Arc::from(self.name.as_deref().unwrap_or(bus));
        let (head, _) = watch::channel(0);
        Arc::new(JournalRuntime {
            store: self.store,
            name,
            retention: self.retention,
            prune_interval: self.prune_interval,
            committer: OnceLock::new(),
            head,
        })
    }
}

/// One append waiting for the group committer.
struct Pending {
    signal: Arc<Signal>,
    reply: oneshot::Sender<Result<u64, JournalError>>,
}

/// A bus's journal at run time.
pub(crate) struct JournalRuntime {
    pub(crate) store: Arc<dyn JournalStore>,
    pub(crate) name: Arc<str>,
    retention: JournalRetention,
    prune_interval: Duration,
    committer: OnceLock<mpsc::UnboundedSender<Pending>>,
    /// The highest sequence number this process appended: wakes persistent subscriptions.
    pub(crate) head: watch::Sender<u64>,
}

impl fmt::Debug for JournalRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalRuntime")
            .field("backend", &self.store.backend())
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl JournalRuntime {
    /// Appends `signal` durably; concurrent appends share one transaction. Returns its
    /// sequence number.
    pub(crate) async fn append(self: &Arc<Self>, signal: Arc<Signal>) -> Result<u64, JournalError> {
        let (reply, done) = oneshot::channel();
        let sender = self.committer.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(group_commit(Arc::downgrade(self), rx));
            if self.retention != JournalRetention::default()
                && (self.retention.max_age.is_some()
                    || self.retention.max_entries.is_some()
                    || self.retention.max_bytes.is_some())
            {
                tokio::spawn(prune_loop(Arc::downgrade(self)));
            }
            tx
        });
        if let Err(e) = sender.send(Pending { signal, reply }) {
            // The committer is gone (its runtime shut down): append on our own.
            let seqs = self
                .store
                .append(&self.name, &[e.0.signal], Utc::now())
                .await?;
            let seq = seqs.last().copied().unwrap_or(0);
            self.advance(seq);
            return Ok(seq);
        }
        done.await.map_err(|_| {
            JournalError::store(
                self.store.backend(),
                "the journal's group committer stopped before answering",
            )
        })?
    }

    /// Records that entries up to `seq` exist, waking local subscribers.
    fn advance(&self, seq: u64) {
        self.head.send_if_modified(|head| {
            if seq > *head {
                *head = seq;
                true
            } else {
                false
            }
        });
    }

    /// Deletes what the retention lets go; returns how many entries.
    pub(crate) async fn prune(&self) -> Result<u64, JournalError> {
        self.store
            .prune(&self.name, &self.retention, Utc::now())
            .await
    }
}

/// Takes what waits, appends up to [`MAX_GROUP`] signals in one transaction, answers each.
async fn group_commit(journal: Weak<JournalRuntime>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(64);
    let mut signals: Vec<Arc<Signal>> = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, MAX_GROUP).await > 0 {
        let Some(journal) = journal.upgrade() else {
            return;
        };
        // A publish whose caller stopped waiting (a timeout around it, a dropped future) is
        // not appended behind its back: it was never told the signal was journaled.
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        signals.extend(batch.iter().map(|p| Arc::clone(&p.signal)));
        let result = journal
            .store
            .append(&journal.name, &signals, Utc::now())
            .await;
        signals.clear();
        match result {
            Ok(seqs) if seqs.len() == batch.len() => {
                if let Some(last) = seqs.last() {
                    journal.advance(*last);
                }
                for (p, seq) in batch.drain(..).zip(seqs) {
                    let _ = p.reply.send(Ok(seq));
                }
            }
            Ok(seqs) => {
                let message = format!(
                    "the store returned {} sequence numbers for {} signals",
                    seqs.len(),
                    batch.len()
                );
                for p in batch.drain(..) {
                    let _ = p
                        .reply
                        .send(Err(JournalError::store(journal.store.backend(), &message)));
                }
            }
            Err(e) => {
                let message = e.to_string();
                let mut first = Some(e);
                for p in batch.drain(..) {
                    let err = first
                        .take()
                        .unwrap_or_else(|| JournalError::store(journal.store.backend(), &message));
                    let _ = p.reply.send(Err(err));
                }
            }
        }
    }
}

/// Prunes every `prune_interval` until the journal is dropped.
async fn prune_loop(journal: Weak<JournalRuntime>) {
    let Some(interval) = journal.upgrade().map(|j| j.prune_interval) else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(journal) = journal.upgrade() else {
            return;
        };
        match journal.prune().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                target: "signal_bus::journal",
                journal = %journal.name,
                pruned = n,
                "journal pruned"
            ),
            Err(e) => tracing::warn!(
                target: "signal_bus::journal",
                journal = %journal.name,
                error = %e,
                "journal prune failed; retrying at the next interval"
            ),
        }
    }
}
