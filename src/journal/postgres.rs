//! The journal in a [`PostgresStore`]: tables of its own beside the queue's; many
//! processes append to one journal.
//!
//! - **Append order**: an append first bumps the journal's row in
//!   `signal_bus_journal_heads` (`INSERT .. ON CONFLICT DO UPDATE .. RETURNING`), which
//!   row-locks it until the transaction ends, then inserts its entries with one
//!   `INSERT .. SELECT FROM unnest(..)`. Appenders of one journal, in any number of
//!   processes, are serialized by that lock: the next one gets its numbers only once the
//!   previous one committed, so no reader ever sees `n + 1` before `n`.
//! - **Reads** select the type beside the body and parse only the bodies whose type passes
//!   the filter.
//! - **Prune** deletes in rounds of at most 10,000 rows, each its own statement; each round
//!   re-reads the lowest checkpoint.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{postgres::PgRow, Row};

use super::{
    JournalDeadLetter, JournalEntry, JournalError, JournalPage, JournalRetention, JournalStore,
    TypeFilter,
};
use crate::{
    queue::{from_ms, to_ms, PostgresStore},
    Signal,
};

const BACKEND: &str = "postgres";

/// Rows a prune deletes per round.
const PRUNE_ROUND: i64 = 10_000;

/// A sequence number as stored (sequence numbers stay far below `i64::MAX`).
fn db_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A stored sequence number (never negative).
fn seq_of(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

fn db_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A database error while doing `what`.
fn failed(what: impl std::fmt::Display, e: sqlx::Error) -> JournalError {
    JournalError::store_caused(BACKEND, format!("{what} failed: {e}"), e)
}

/// A stored body as a signal, or `Corrupt` naming the journal and sequence number.
fn parse(journal: &str, seq: u64, body: &[u8], what: &str) -> Result<Signal, JournalError> {
    Signal::from_json_slice(body).map_err(|e| JournalError::Corrupt {
        journal: journal.to_owned(),
        seq,
        message: format!("{what} does not parse: {e}"),
    })
}

/// A `(seq, body, error, failed_at)` row as a dead letter.
fn dead_letter(journal: &str, name: &str, row: &PgRow) -> Result<JournalDeadLetter, JournalError> {
    let get = |e| {
        failed(
            format_args!("reading dead letters of `{name}` in journal `{journal}`"),
            e,
        )
    };
    let seq = seq_of(row.try_get(0).map_err(get)?);
    let body: &[u8] = row.try_get(1).map_err(get)?;
    let error: String = row.try_get(2).map_err(get)?;
    let at: i64 = row.try_get(3).map_err(get)?;
    let what = format!("the dead letter of subscription `{name}`");
    let signal = parse(journal, seq, body, &what)?;
    Ok(JournalDeadLetter::new(
        seq,
        Arc::new(signal),
        error,
        from_ms(at),
    ))
}

#[async_trait]
impl JournalStore for PostgresStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn append(
        &self,
        journal: &str,
        signals: &[Arc<Signal>],
        at: DateTime<Utc>,
    ) -> Result<Vec<u64>, JournalError> {
        if signals.is_empty() {
            return Ok(Vec::new());
        }
        let what = || format!("appending {} signals to journal `{journal}`", signals.len());
        let n = i64::try_from(signals.len()).unwrap_or(i64::MAX);
        let bodies: Vec<bytes::Bytes> = signals.iter().map(|s| s.to_json_bytes()).collect();
        let body_refs: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
        let types: Vec<&str> = signals.iter().map(|s| s.ty()).collect();
        let mut tx = self.pool().begin().await.map_err(|e| failed(what(), e))?;
        // Locks the journal's head row until commit: the next appender waits here.
        let last: i64 = sqlx::query_scalar(
            "INSERT INTO signal_bus_journal_heads AS h (journal, last_seq) VALUES ($1, $2)
             ON CONFLICT (journal) DO UPDATE SET last_seq = h.last_seq + EXCLUDED.last_seq
             RETURNING last_seq",
        )
        .bind(journal)
        .bind(n)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| failed(what(), e))?;
        let first = last - n + 1;
        sqlx::query(
            "INSERT INTO signal_bus_journal (journal, seq, appended_at, type, body, size)
             SELECT $1, $2 + x.o - 1, $3, x.t, x.b, octet_length(x.b)
             FROM unnest($4::text[], $5::bytea[]) WITH ORDINALITY AS x(t, b, o)",
        )
        .bind(journal)
        .bind(first)
        .bind(to_ms(at))
        .bind(&types)
        .bind(&body_refs)
        .execute(&mut *tx)
        .await
        .map_err(|e| failed(what(), e))?;
        tx.commit().await.map_err(|e| failed(what(), e))?;
        let first = seq_of(first);
        Ok((first..first + signals.len() as u64).collect())
    }

    async fn read(
        &self,
        journal: &str,
        after: u64,
        limit: usize,
        filter: Option<TypeFilter<'_>>,
    ) -> Result<JournalPage, JournalError> {
        let what = || format!("reading journal `{journal}` after {after}");
        let rows = sqlx::query(
            "SELECT seq, appended_at, type, body FROM signal_bus_journal
             WHERE journal = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(journal)
        .bind(db_seq(after))
        .bind(db_limit(limit))
        .fetch_all(self.pool())
        .await
        .map_err(|e| failed(what(), e))?;
        let mut page = JournalPage::new(Vec::with_capacity(rows.len()), after);
        for row in &rows {
            let seq = seq_of(row.try_get(0).map_err(|e| failed(what(), e))?);
            page.scanned_to = seq;
            let ty: &str = row.try_get(2).map_err(|e| failed(what(), e))?;
            if filter.is_some_and(|f| !f(ty)) {
                continue;
            }
            let at: i64 = row.try_get(1).map_err(|e| failed(what(), e))?;
            let body: &[u8] = row.try_get(3).map_err(|e| failed(what(), e))?;
            let signal = parse(journal, seq, body, "the stored signal")?;
            page.entries
                .push(JournalEntry::new(seq, from_ms(at), Arc::new(signal)));
        }
        Ok(page)
    }

    async fn head(&self, journal: &str) -> Result<u64, JournalError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM signal_bus_journal_heads WHERE journal = $1")
                .bind(journal)
                .fetch_optional(self.pool())
                .await
                .map_err(|e| failed(format_args!("reading the head of journal `{journal}`"), e))?;
        Ok(last.map_or(0, seq_of))
    }

    async fn seq_before(&self, journal: &str, time: DateTime<Utc>) -> Result<u64, JournalError> {
        // The lowest sequence number appended at or after `time`, not the latest entry before
        // it: appenders whose clocks disagree can give a later entry an earlier time. When
        // there is none, the head, read in the same statement (one snapshot): an entry
        // committed between two statements would be neither found nor read after.
        let seq: i64 = sqlx::query_scalar(
            "SELECT COALESCE(
                 (SELECT min(seq) - 1 FROM signal_bus_journal
                  WHERE journal = $1 AND appended_at >= $2),
                 (SELECT last_seq FROM signal_bus_journal_heads WHERE journal = $1),
                 0)",
        )
        .bind(journal)
        .bind(to_ms(time))
        .fetch_one(self.pool())
        .await
        .map_err(|e| {
            failed(
                format_args!("finding entries of journal `{journal}` before {time}"),
                e,
            )
        })?;
        Ok(seq_of(seq))
    }

    async fn checkpoint(&self, journal: &str, name: &str) -> Result<Option<u64>, JournalError> {
        let checkpoint: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT checkpoint FROM signal_bus_journal_subs WHERE journal = $1 AND name = $2",
        )
        .bind(journal)
        .bind(name)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| {
            failed(
                format_args!("reading the checkpoint of `{name}` in journal `{journal}`"),
                e,
            )
        })?;
        Ok(checkpoint.flatten().map(seq_of))
    }

    async fn create_checkpoint(
        &self,
        journal: &str,
        name: &str,
        seq: u64,
    ) -> Result<u64, JournalError> {
        let checkpoint: i64 = sqlx::query_scalar(
            "INSERT INTO signal_bus_journal_subs AS s (journal, name, checkpoint)
             VALUES ($1, $2, $3)
             ON CONFLICT (journal, name)
             DO UPDATE SET checkpoint = COALESCE(s.checkpoint, EXCLUDED.checkpoint)
             RETURNING checkpoint",
        )
        .bind(journal)
        .bind(name)
        .bind(db_seq(seq))
        .fetch_one(self.pool())
        .await
        .map_err(|e| {
            failed(
                format_args!("creating subscription `{name}` of journal `{journal}`"),
                e,
            )
        })?;
        Ok(seq_of(checkpoint))
    }

    async fn save_checkpoint(
        &self,
        journal: &str,
        name: &str,
        owner: &str,
        seq: u64,
    ) -> Result<bool, JournalError> {
        let done = sqlx::query(
            "UPDATE signal_bus_journal_subs
             SET checkpoint = GREATEST(COALESCE(checkpoint, 0), $1)
             WHERE journal = $2 AND name = $3 AND lease_owner = $4",
        )
        .bind(db_seq(seq))
        .bind(journal)
        .bind(name)
        .bind(owner)
        .execute(self.pool())
        .await
        .map_err(|e| {
            failed(
                format_args!("saving the checkpoint of `{name}` in journal `{journal}`"),
                e,
            )
        })?;
        Ok(done.rows_affected() > 0)
    }

    async fn acquire_lease(
        &self,
        journal: &str,
        name: &str,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, JournalError> {
        let done = sqlx::query(
            "INSERT INTO signal_bus_journal_subs AS s (journal, name, lease_owner, lease_until)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (journal, name) DO UPDATE
             SET lease_owner = EXCLUDED.lease_owner, lease_until = EXCLUDED.lease_until
             WHERE s.lease_owner IS NULL OR s.lease_owner = EXCLUDED.lease_owner
                OR s.lease_until < $5",
        )
        .bind(journal)
        .bind(name)
        .bind(owner)
        .bind(to_ms(until))
        .bind(to_ms(now))
        .execute(self.pool())
        .await
        .map_err(|e| {
            failed(
                format_args!("taking the lease of `{name}` in journal `{journal}`"),
                e,
            )
        })?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_lease(
        &self,
        journal: &str,
        name: &str,
        owner: &str,
    ) -> Result<(), JournalError> {
        sqlx::query(
            "UPDATE signal_bus_journal_subs SET lease_owner = NULL, lease_until = NULL
             WHERE journal = $1 AND name = $2 AND lease_owner = $3",
        )
        .bind(journal)
        .bind(name)
        .bind(owner)
        .execute(self.pool())
        .await
        .map_err(|e| {
            failed(
                format_args!("releasing the lease of `{name}` in journal `{journal}`"),
                e,
            )
        })?;
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
        let body = signal.to_json_bytes();
        sqlx::query(
            "INSERT INTO signal_bus_journal_dead (journal, name, seq, body, error, failed_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (journal, name, seq) DO UPDATE
             SET body = EXCLUDED.body, error = EXCLUDED.error, failed_at = EXCLUDED.failed_at",
        )
        .bind(journal)
        .bind(name)
        .bind(db_seq(seq))
        .bind(&body[..])
        .bind(error)
        .bind(to_ms(at))
        .execute(self.pool())
        .await
        .map_err(|e| {
            failed(
                format_args!("storing dead letter {seq} of `{name}` in journal `{journal}`"),
                e,
            )
        })?;
        Ok(())
    }

    async fn dead_letters(
        &self,
        journal: &str,
        name: &str,
        limit: usize,
    ) -> Result<Vec<JournalDeadLetter>, JournalError> {
        let rows = sqlx::query(
            "SELECT seq, body, error, failed_at FROM signal_bus_journal_dead
             WHERE journal = $1 AND name = $2 ORDER BY seq LIMIT $3",
        )
        .bind(journal)
        .bind(name)
        .bind(db_limit(limit))
        .fetch_all(self.pool())
        .await
        .map_err(|e| {
            failed(
                format_args!("reading dead letters of `{name}` in journal `{journal}`"),
                e,
            )
        })?;
        rows.iter().map(|r| dead_letter(journal, name, r)).collect()
    }

    async fn take_dead_letters(
        &self,
        journal: &str,
        name: &str,
        seqs: Option<&[u64]>,
    ) -> Result<Vec<JournalDeadLetter>, JournalError> {
        let what = || format!("taking dead letters of `{name}` in journal `{journal}`");
        let mut tx = self.pool().begin().await.map_err(|e| failed(what(), e))?;
        let rows = match seqs {
            None => {
                sqlx::query(
                    "DELETE FROM signal_bus_journal_dead WHERE journal = $1 AND name = $2
                     RETURNING seq, body, error, failed_at",
                )
                .bind(journal)
                .bind(name)
                .fetch_all(&mut *tx)
                .await
            }
            Some(seqs) => {
                let list: Vec<i64> = seqs.iter().map(|s| db_seq(*s)).collect();
                sqlx::query(
                    "DELETE FROM signal_bus_journal_dead
                     WHERE journal = $1 AND name = $2 AND seq = ANY($3)
                     RETURNING seq, body, error, failed_at",
                )
                .bind(journal)
                .bind(name)
                .bind(&list)
                .fetch_all(&mut *tx)
                .await
            }
        }
        .map_err(|e| failed(what(), e))?;
        // A letter that does not parse stays (the transaction rolls back on drop).
        let mut taken = rows
            .iter()
            .map(|r| dead_letter(journal, name, r))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await.map_err(|e| failed(what(), e))?;
        taken.sort_by_key(|d| d.seq);
        Ok(taken)
    }

    async fn delete_subscription(&self, journal: &str, name: &str) -> Result<bool, JournalError> {
        let what = || format!("deleting subscription `{name}` of journal `{journal}`");
        let mut tx = self.pool().begin().await.map_err(|e| failed(what(), e))?;
        let checkpoint: Option<Option<i64>> = sqlx::query_scalar(
            "DELETE FROM signal_bus_journal_subs WHERE journal = $1 AND name = $2
             RETURNING checkpoint",
        )
        .bind(journal)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| failed(what(), e))?;
        let dead =
            sqlx::query("DELETE FROM signal_bus_journal_dead WHERE journal = $1 AND name = $2")
                .bind(journal)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(|e| failed(what(), e))?
                .rows_affected();
        tx.commit().await.map_err(|e| failed(what(), e))?;
        Ok(checkpoint.flatten().is_some() || dead > 0)
    }

    async fn prune(
        &self,
        journal: &str,
        retention: &JournalRetention,
        now: DateTime<Utc>,
    ) -> Result<u64, JournalError> {
        let what = || format!("pruning journal `{journal}`");
        let pool = self.pool();
        // Everything at or below `cut` goes (then no further than the lowest checkpoint).
        let mut cut = 0i64;
        if let Some(age) = retention.max_age {
            let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            let limit = to_ms(now).saturating_sub(age);
            let seq: Option<i64> = sqlx::query_scalar(
                "SELECT seq FROM signal_bus_journal WHERE journal = $1 AND appended_at < $2
                 ORDER BY appended_at DESC, seq DESC LIMIT 1",
            )
            .bind(journal)
            .bind(limit)
            .fetch_optional(pool)
            .await
            .map_err(|e| failed(what(), e))?;
            cut = cut.max(seq.unwrap_or(0));
        }
        if let Some(max) = retention.max_entries {
            // The newest entry beyond the newest `max`.
            let seq: Option<i64> = sqlx::query_scalar(
                "SELECT seq FROM signal_bus_journal WHERE journal = $1
                 ORDER BY seq DESC LIMIT 1 OFFSET $2",
            )
            .bind(journal)
            .bind(db_seq(max))
            .fetch_optional(pool)
            .await
            .map_err(|e| failed(what(), e))?;
            cut = cut.max(seq.unwrap_or(0));
        }
        if let Some(max) = retention.max_bytes {
            // The newest entry that does not fit, counting sizes from the newest.
            let seq: Option<i64> = sqlx::query_scalar(
                "SELECT seq FROM (
                    SELECT seq, SUM(size) OVER (ORDER BY seq DESC) AS total
                    FROM signal_bus_journal WHERE journal = $1) AS t
                 WHERE total > $2 ORDER BY seq DESC LIMIT 1",
            )
            .bind(journal)
            .bind(db_seq(max))
            .fetch_optional(pool)
            .await
            .map_err(|e| failed(what(), e))?;
            cut = cut.max(seq.unwrap_or(0));
        }
        if cut == 0 {
            return Ok(0);
        }
        let protect = retention.protect_unacknowledged;
        let mut pruned = 0u64;
        loop {
            let deleted = sqlx::query(
                "DELETE FROM signal_bus_journal WHERE journal = $1 AND seq IN (
                    SELECT seq FROM signal_bus_journal
                    WHERE journal = $1 AND seq <= $2
                      AND (NOT $3 OR seq <= COALESCE((
                          SELECT MIN(checkpoint) FROM signal_bus_journal_subs
                          WHERE journal = $1), $2))
                    ORDER BY seq LIMIT $4)",
            )
            .bind(journal)
            .bind(cut)
            .bind(protect)
            .bind(PRUNE_ROUND)
            .execute(pool)
            .await
            .map_err(|e| failed(what(), e))?
            .rows_affected();
            pruned += deleted;
            if deleted < PRUNE_ROUND as u64 {
                return Ok(pruned);
            }
        }
    }
}
