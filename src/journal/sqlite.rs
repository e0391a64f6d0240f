//! The journal in a [`SqliteStore`]: tables of its own in the queue's file.
//!
//! - **Writes** go through the store's one writer connection; the multi-statement ones
//!   (append, taking dead letters, deleting a subscription) run in `BEGIN IMMEDIATE`
//!   transactions, so another process sharing the file waits at `BEGIN` rather than failing
//!   half-way. An append bumps the journal's row in `signal_bus_journal_heads` and inserts
//!   its entries in the same transaction: numbers are given and committed in order.
//! - **Reads** use the reader pool (WAL: they never block the writer). A page comes back as
//!   one value (`group_concat` of length-framed entries: sqlx hands rows between threads
//!   one at a time, which costs more than SQLite's own work), or row by row when it is too
//!   big for one value. Each entry's type is read beside its body, and only the bodies
//!   whose type passes the filter are parsed.
//! - **Prune** deletes in rounds of at most 10,000 rows, each its own short write, so a big
//!   prune never holds the writer for long; each round re-reads the lowest checkpoint.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{sqlite::SqliteRow, Row, SqliteConnection};

use super::{
    JournalDeadLetter, JournalEntry, JournalError, JournalPage, JournalRetention, JournalStore,
    TypeFilter,
};
use crate::{
    queue::{from_ms, to_ms, SqliteStore},
    Signal,
};

const BACKEND: &str = "sqlite";

/// Rows a prune deletes per round.
const PRUNE_ROUND: i64 = 10_000;

/// The row counts of the multi-row inserts an append is split into (largest first): a
/// handful of distinct statements, each prepared once per connection.
const CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// The insert statement of `CHUNKS[i]` rows.
fn insert_statement(i: usize) -> &'static str {
    static STATEMENTS: OnceLock<Vec<String>> = OnceLock::new();
    &STATEMENTS.get_or_init(|| {
        CHUNKS
            .iter()
            .map(|&n| {
                let mut sql = String::from(
                    "INSERT INTO signal_bus_journal (journal, seq, appended_at, type, body, size) \
                     VALUES ",
                );
                for i in 0..n {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str("(?, ?, ?, ?, ?, ?)");
                }
                sql
            })
            .collect()
    })[i]
}

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

/// A page of a journal as one value: per entry, `seq appended_at type_len body_len ` (decimal,
/// lengths in bytes) then the type and the body. SQLite concatenates the subquery's rows in
/// their order in practice, but only an `ORDER BY` inside the aggregate promises it, and that
/// one sorts the page again (a fifth of the query's time); so the reader checks the order
/// and sorts the page itself when it is not ascending.
const READ_FRAMED: &str = "SELECT group_concat(
        seq || ' ' || appended_at || ' ' || length(CAST(type AS BLOB)) || ' '
        || length(CAST(body AS BLOB)) || ' ' || type || CAST(body AS BLOB), '')
    FROM (SELECT seq, appended_at, type, body FROM signal_bus_journal
          WHERE journal = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3)";

/// The next entry of a [`READ_FRAMED`] page: `(seq, appended_at, type, body)`.
fn next_frame<'a>(rest: &mut &'a [u8]) -> Option<(i64, i64, &'a str, &'a [u8])> {
    fn number(rest: &mut &[u8]) -> Option<i64> {
        let end = rest.iter().position(|b| *b == b' ')?;
        let n = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
        *rest = &rest[end + 1..];
        Some(n)
    }
    let seq = number(rest)?;
    let at = number(rest)?;
    let ty_len = usize::try_from(number(rest)?).ok()?;
    let body_len = usize::try_from(number(rest)?).ok()?;
    let ty = std::str::from_utf8(rest.get(..ty_len)?).ok()?;
    let body = rest.get(ty_len..ty_len.checked_add(body_len)?)?;
    *rest = &rest[ty_len + body_len..];
    Some((seq, at, ty, body))
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
fn dead_letter(
    journal: &str,
    name: &str,
    row: &SqliteRow,
) -> Result<JournalDeadLetter, JournalError> {
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

/// Appends inside the caller's transaction; returns the first sequence number.
async fn insert_entries(
    conn: &mut SqliteConnection,
    journal: &str,
    bodies: &[(&str, bytes::Bytes)],
    at: i64,
) -> Result<u64, sqlx::Error> {
    let n = i64::try_from(bodies.len()).unwrap_or(i64::MAX);
    let last: i64 = sqlx::query_scalar(
        "INSERT INTO signal_bus_journal_heads (journal, last_seq) VALUES (?1, ?2)
         ON CONFLICT (journal) DO UPDATE SET last_seq = last_seq + excluded.last_seq
         RETURNING last_seq",
    )
    .bind(journal)
    .bind(n)
    .fetch_one(&mut *conn)
    .await?;
    let first = last - n + 1;
    let mut seq = first;
    let mut rest = bodies;
    for (i, &size) in CHUNKS.iter().enumerate() {
        while rest.len() >= size {
            let (chunk, tail) = rest.split_at(size);
            let mut query = sqlx::query(insert_statement(i));
            for (ty, body) in chunk {
                query = query
                    .bind(journal)
                    .bind(seq)
                    .bind(at)
                    .bind(*ty)
                    .bind(&body[..])
                    .bind(i64::try_from(body.len()).unwrap_or(i64::MAX));
                seq += 1;
            }
            query.execute(&mut *conn).await?;
            rest = tail;
        }
    }
    Ok(seq_of(first))
}

#[async_trait]
impl JournalStore for SqliteStore {
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
        let bodies: Vec<(&str, bytes::Bytes)> = signals
            .iter()
            .map(|s| (s.ty(), s.to_json_bytes()))
            .collect();
        let what = || format!("appending {} signals to journal `{journal}`", signals.len());
        let mut tx = self
            .writer_pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| failed(what(), e))?;
        let first = insert_entries(&mut tx, journal, &bodies, to_ms(at))
            .await
            .map_err(|e| failed(what(), e))?;
        tx.commit().await.map_err(|e| failed(what(), e))?;
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
        let mut page = JournalPage::new(Vec::new(), after);
        let mut ascending = true;
        let mut take = |seq: u64, at: i64, ty: &str, body: &[u8]| {
            ascending &= seq > page.scanned_to;
            page.scanned_to = page.scanned_to.max(seq);
            if filter.is_none_or(|f| f(ty)) {
                let signal = parse(journal, seq, body, "the stored signal")?;
                page.entries
                    .push(JournalEntry::new(seq, from_ms(at), Arc::new(signal)));
            }
            Ok::<(), JournalError>(())
        };
        // One framed row per page: sqlx hands rows over one by one between threads, which
        // costs more than SQLite's own work; a page as one value costs that once.
        let framed = sqlx::query(READ_FRAMED)
            .bind(journal)
            .bind(db_seq(after))
            .bind(db_limit(limit))
            .fetch_one(self.reader_pool())
            .await;
        match framed {
            Ok(row) => {
                let frames: Option<&[u8]> = row.try_get(0).map_err(|e| failed(what(), e))?;
                let mut rest = frames.unwrap_or_default();
                while !rest.is_empty() {
                    let (seq, at, ty, body) = next_frame(&mut rest).ok_or_else(|| {
                        JournalError::store(BACKEND, format!("{}: a page does not unframe", what()))
                    })?;
                    take(seq_of(seq), at, ty, body)?;
                }
            }
            // A page too big for one SQLite value (`SQLITE_TOOBIG`, 1 GB): row by row.
            Err(sqlx::Error::Database(_)) => {
                let rows = sqlx::query(
                    "SELECT seq, appended_at, type, body FROM signal_bus_journal
                     WHERE journal = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )
                .bind(journal)
                .bind(db_seq(after))
                .bind(db_limit(limit))
                .fetch_all(self.reader_pool())
                .await
                .map_err(|e| failed(what(), e))?;
                for row in &rows {
                    let seq = seq_of(row.try_get(0).map_err(|e| failed(what(), e))?);
                    let at: i64 = row.try_get(1).map_err(|e| failed(what(), e))?;
                    let ty: &str = row.try_get(2).map_err(|e| failed(what(), e))?;
                    let body: &[u8] = row.try_get(3).map_err(|e| failed(what(), e))?;
                    take(seq, at, ty, body)?;
                }
            }
            Err(e) => return Err(failed(what(), e)),
        }
        if !ascending {
            page.entries.sort_unstable_by_key(|e| e.seq);
        }
        Ok(page)
    }

    async fn head(&self, journal: &str) -> Result<u64, JournalError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM signal_bus_journal_heads WHERE journal = ?1")
                .bind(journal)
                .fetch_optional(self.reader_pool())
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
                  WHERE journal = ?1 AND appended_at >= ?2),
                 (SELECT last_seq FROM signal_bus_journal_heads WHERE journal = ?1),
                 0)",
        )
        .bind(journal)
        .bind(to_ms(time))
        .fetch_one(self.reader_pool())
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
            "SELECT checkpoint FROM signal_bus_journal_subs WHERE journal = ?1 AND name = ?2",
        )
        .bind(journal)
        .bind(name)
        .fetch_optional(self.reader_pool())
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
            "INSERT INTO signal_bus_journal_subs (journal, name, checkpoint) VALUES (?1, ?2, ?3)
             ON CONFLICT (journal, name)
             DO UPDATE SET checkpoint = COALESCE(checkpoint, excluded.checkpoint)
             RETURNING checkpoint",
        )
        .bind(journal)
        .bind(name)
        .bind(db_seq(seq))
        .fetch_one(self.writer_pool())
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
            "UPDATE signal_bus_journal_subs SET checkpoint = MAX(COALESCE(checkpoint, 0), ?1)
             WHERE journal = ?2 AND name = ?3 AND lease_owner = ?4",
        )
        .bind(db_seq(seq))
        .bind(journal)
        .bind(name)
        .bind(owner)
        .execute(self.writer_pool())
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
            "INSERT INTO signal_bus_journal_subs (journal, name, lease_owner, lease_until)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (journal, name) DO UPDATE
             SET lease_owner = excluded.lease_owner, lease_until = excluded.lease_until
             WHERE lease_owner IS NULL OR lease_owner = excluded.lease_owner
                OR lease_until < ?5",
        )
        .bind(journal)
        .bind(name)
        .bind(owner)
        .bind(to_ms(until))
        .bind(to_ms(now))
        .execute(self.writer_pool())
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
             WHERE journal = ?1 AND name = ?2 AND lease_owner = ?3",
        )
        .bind(journal)
        .bind(name)
        .bind(owner)
        .execute(self.writer_pool())
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (journal, name, seq) DO UPDATE
             SET body = excluded.body, error = excluded.error, failed_at = excluded.failed_at",
        )
        .bind(journal)
        .bind(name)
        .bind(db_seq(seq))
        .bind(&body[..])
        .bind(error)
        .bind(to_ms(at))
        .execute(self.writer_pool())
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
             WHERE journal = ?1 AND name = ?2 ORDER BY seq LIMIT ?3",
        )
        .bind(journal)
        .bind(name)
        .bind(db_limit(limit))
        .fetch_all(self.reader_pool())
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
        let mut tx = self
            .writer_pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| failed(what(), e))?;
        let rows = match seqs {
            None => {
                sqlx::query(
                    "DELETE FROM signal_bus_journal_dead WHERE journal = ?1 AND name = ?2
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
                    "DELETE FROM signal_bus_journal_dead WHERE journal = ?1 AND name = ?2
                       AND seq IN (SELECT value FROM json_each(?3))
                     RETURNING seq, body, error, failed_at",
                )
                .bind(journal)
                .bind(name)
                .bind(serde_json::Value::from(list).to_string())
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
        let mut tx = self
            .writer_pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| failed(what(), e))?;
        let checkpoint: Option<Option<i64>> = sqlx::query_scalar(
            "DELETE FROM signal_bus_journal_subs WHERE journal = ?1 AND name = ?2
             RETURNING checkpoint",
        )
        .bind(journal)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| failed(what(), e))?;
        let dead =
            sqlx::query("DELETE FROM signal_bus_journal_dead WHERE journal = ?1 AND name = ?2")
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
        let reader = self.reader_pool();
        // Everything at or below `cut` goes (then no further than the lowest checkpoint).
        let mut cut = 0i64;
        if let Some(age) = retention.max_age {
            let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            let limit = to_ms(now).saturating_sub(age);
            let seq: Option<i64> = sqlx::query_scalar(
                "SELECT seq FROM signal_bus_journal WHERE journal = ?1 AND appended_at < ?2
                 ORDER BY appended_at DESC, seq DESC LIMIT 1",
            )
            .bind(journal)
            .bind(limit)
            .fetch_optional(reader)
            .await
            .map_err(|e| failed(what(), e))?;
            cut = cut.max(seq.unwrap_or(0));
        }
        if let Some(max) = retention.max_entries {
            // The newest entry beyond the newest `max`.
            let seq: Option<i64> = sqlx::query_scalar(
                "SELECT seq FROM signal_bus_journal WHERE journal = ?1
                 ORDER BY seq DESC LIMIT 1 OFFSET ?2",
            )
            .bind(journal)
            .bind(db_seq(max))
            .fetch_optional(reader)
            .await
            .map_err(|e| failed(what(), e))?;
            cut = cut.max(seq.unwrap_or(0));
        }
        if let Some(max) = retention.max_bytes {
            // The newest entry that does not fit, counting sizes from the newest.
            let seq: Option<i64> = sqlx::query_scalar(
                "SELECT seq FROM (
                    SELECT seq, SUM(size) OVER (ORDER BY seq DESC) AS total
                    FROM signal_bus_journal WHERE journal = ?1)
                 WHERE total > ?2 ORDER BY seq DESC LIMIT 1",
            )
            .bind(journal)
            .bind(db_seq(max))
            .fetch_optional(reader)
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
                "DELETE FROM signal_bus_journal WHERE journal = ?1 AND seq IN (
                    SELECT seq FROM signal_bus_journal
                    WHERE journal = ?1 AND seq <= ?2
                      AND (NOT ?3 OR seq <= COALESCE((
                          SELECT MIN(checkpoint) FROM signal_bus_journal_subs
                          WHERE journal = ?1), ?2))
                    ORDER BY seq LIMIT ?4)",
            )
            .bind(journal)
            .bind(cut)
            .bind(protect)
            .bind(PRUNE_ROUND)
            .execute(self.writer_pool())
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
