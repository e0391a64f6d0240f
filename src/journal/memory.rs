//! The journal in a [`MemoryStore`]: the reference semantics, for tests.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    JournalDeadLetter, JournalEntry, JournalError, JournalPage, JournalRetention, JournalStore,
    TypeFilter,
};
use crate::{queue::MemoryStore, Signal};

#[derive(Debug, Default)]
struct Journal {
    /// seq -> (appended at, signal, its JSON size).
    entries: BTreeMap<u64, (DateTime<Utc>, Arc<Signal>, u64)>,
    head: u64,
    /// name -> checkpoint.
    checkpoints: HashMap<String, u64>,
    /// name -> (owner, until).
    leases: HashMap<String, (String, DateTime<Utc>)>,
    /// name -> seq -> dead letter.
    dead: HashMap<String, BTreeMap<u64, JournalDeadLetter>>,
}

#[derive(Debug, Default)]
struct Journals(Mutex<HashMap<String, Journal>>);

impl MemoryStore {
    fn with_journal<R>(&self, journal: &str, f: impl FnOnce(&mut Journal) -> R) -> R {
        let state = self.journal_state::<Journals>();
        let mut map = state.0.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(journal.to_owned()).or_default())
    }
}

#[async_trait]
impl JournalStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn append(
        &self,
        journal: &str,
        signals: &[Arc<Signal>],
        at: DateTime<Utc>,
    ) -> Result<Vec<u64>, JournalError> {
        let sized: Vec<(Arc<Signal>, u64)> = signals
            .iter()
            .map(|s| (Arc::clone(s), s.to_json_vec().len() as u64))
            .collect();
        Ok(self.with_journal(journal, |j| {
            sized
                .into_iter()
                .map(|(signal, size)| {
                    j.head += 1;
                    j.entries.insert(j.head, (at, signal, size));
                    j.head
                })
                .collect()
        }))
    }

    async fn read(
        &self,
        journal: &str,
        after: u64,
        limit: usize,
        filter: Option<TypeFilter<'_>>,
    ) -> Result<JournalPage, JournalError> {
        Ok(self.with_journal(journal, |j| {
            let mut page = JournalPage::new(Vec::new(), after);
            for (seq, (at, signal, _)) in j.entries.range(after.saturating_add(1)..).take(limit) {
                page.scanned_to = *seq;
                if filter.is_none_or(|f| f(signal.ty())) {
                    page.entries
                        .push(JournalEntry::new(*seq, *at, Arc::clone(signal)));
                }
            }
            page
        }))
    }

    async fn head(&self, journal: &str) -> Result<u64, JournalError> {
        Ok(self.with_journal(journal, |j| j.head))
    }

    async fn seq_before(&self, journal: &str, time: DateTime<Utc>) -> Result<u64, JournalError> {
        Ok(self.with_journal(journal, |j| {
            j.entries
                .iter()
                .find(|(_, (at, _, _))| *at >= time)
                .map_or(j.head, |(seq, _)| seq - 1)
        }))
    }

    async fn checkpoint(&self, journal: &str, name: &str) -> Result<Option<u64>, JournalError> {
        Ok(self.with_journal(journal, |j| j.checkpoints.get(name).copied()))
    }

    async fn create_checkpoint(
        &self,
        journal: &str,
        name: &str,
        seq: u64,
    ) -> Result<u64, JournalError> {
        Ok(self.with_journal(journal, |j| {
            *j.checkpoints.entry(name.to_owned()).or_insert(seq)
        }))
    }

    async fn save_checkpoint(
        &self,
        journal: &str,
        name: &str,
        owner: &str,
        seq: u64,
    ) -> Result<bool, JournalError> {
        Ok(self.with_journal(journal, |j| {
            if j.leases.get(name).map(|(o, _)| o.as_str()) != Some(owner) {
                return false;
            }
            let cp = j.checkpoints.entry(name.to_owned()).or_insert(0);
            *cp = (*cp).max(seq);
            true
        }))
    }

    async fn acquire_lease(
        &self,
        journal: &str,
        name: &str,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, JournalError> {
        Ok(self.with_journal(journal, |j| match j.leases.get(name) {
            Some((o, end)) if o != owner && *end >= now => false,
            _ => {
                j.leases.insert(name.to_owned(), (owner.to_owned(), until));
                true
            }
        }))
    }

    async fn release_lease(
        &self,
        journal: &str,
        name: &str,
        owner: &str,
    ) -> Result<(), JournalError> {
        self.with_journal(journal, |j| {
            if j.leases.get(name).is_some_and(|(o, _)| o == owner) {
                j.leases.remove(name);
            }
        });
        Ok(())
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
        let letter = JournalDeadLetter::new(seq, Arc::new(signal.clone()), error.to_owned(), at);
        self.with_journal(journal, |j| {
            j.dead
                .entry(name.to_owned())
                .or_default()
                .insert(seq, letter);
        });
        Ok(())
    }

    async fn dead_letters(
        &self,
        journal: &str,
        name: &str,
        limit: usize,
    ) -> Result<Vec<JournalDeadLetter>, JournalError> {
        Ok(self.with_journal(journal, |j| {
            j.dead
                .get(name)
                .map(|d| d.values().take(limit).cloned().collect())
                .unwrap_or_default()
        }))
    }

    async fn take_dead_letters(
        &self,
        journal: &str,
        name: &str,
        seqs: Option<&[u64]>,
    ) -> Result<Vec<JournalDeadLetter>, JournalError> {
        Ok(self.with_journal(journal, |j| {
            let Some(dead) = j.dead.get_mut(name) else {
                return Vec::new();
            };
            match seqs {
                None => std::mem::take(dead).into_values().collect(),
                Some(seqs) => {
                    let mut taken: Vec<JournalDeadLetter> =
                        seqs.iter().filter_map(|s| dead.remove(s)).collect();
                    taken.sort_by_key(|d| d.seq);
                    taken
                }
            }
        }))
    }

    async fn delete_subscription(&self, journal: &str, name: &str) -> Result<bool, JournalError> {
        Ok(self.with_journal(journal, |j| {
            let existed = j.checkpoints.remove(name).is_some();
            j.leases.remove(name);
            j.dead.remove(name).is_some() || existed
        }))
    }

    async fn prune(
        &self,
        journal: &str,
        retention: &JournalRetention,
        now: DateTime<Utc>,
    ) -> Result<u64, JournalError> {
        Ok(self.with_journal(journal, |j| {
            // Everything at or below `cut` goes.
            let mut cut = 0u64;
            // An age reaching before the earliest representable time lets nothing go.
            let age_limit = retention
                .max_age
                .and_then(|age| now.checked_sub_signed(chrono::Duration::from_std(age).ok()?));
            if let Some(limit) = age_limit {
                if let Some((seq, _)) = j
                    .entries
                    .iter()
                    .take_while(|(_, (at, _, _))| *at < limit)
                    .last()
                {
                    cut = cut.max(*seq);
                }
            }
            if let Some(max) = retention.max_entries {
                let len = j.entries.len() as u64;
                if len > max {
                    if let Some(seq) = j.entries.keys().nth((len - max - 1) as usize) {
                        cut = cut.max(*seq);
                    }
                }
            }
            if let Some(max) = retention.max_bytes {
                let mut total = 0u64;
                for (seq, (_, _, size)) in j.entries.iter().rev() {
                    total += size;
                    if total > max {
                        cut = cut.max(*seq);
                        break;
                    }
                }
            }
            if retention.protect_unacknowledged {
                if let Some(min) = j.checkpoints.values().min() {
                    cut = cut.min(*min);
                }
            }
            let keep = j.entries.split_off(&cut.saturating_add(1));
            let pruned = j.entries.len() as u64;
            j.entries = keep;
            pruned
        }))
    }
}
