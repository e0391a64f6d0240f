//! The journal store conformance suite (`support/journal_suite.rs`) on every backend:
//! memory; SQLite on a real file and in memory; PostgreSQL when `SIGNAL_BUS_POSTGRES_URL` is set (each
//! case on a database of its own, `signal_bus_test_<random>`, dropped at the end; skipped
//! with a note otherwise). Then what only the SQL stores can show: corrupt rows, reopening
//! a file, upgrading a database made before the journal, and (PostgreSQL) the commit order
//! of concurrent appenders in many pools.

#[path = "support/journal_suite.rs"]
mod journal_suite;
#[allow(unused)]
#[path = "support/scratch.rs"]
mod scratch;

#[cfg(feature = "postgres")]
#[path = "support/pg_db.rs"]
mod pg_db;

use std::sync::Arc;

use signal_bus::{journal::JournalStore, queue::MemoryStore};

async fn fresh_memory() -> Option<(Arc<dyn JournalStore>, ())> {
    Some((Arc::new(MemoryStore::new()), ()))
}

async fn finish_memory((): ()) {}

journal_suite!(memory, fresh_memory, finish_memory);

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::{path::Path, sync::Arc};

    use signal_bus::{
        journal::{JournalError, JournalStore},
        queue::{JobStore, NewJob, SqliteStore},
    };
    use sqlx::{sqlite::SqliteConnectOptions, SqlitePool};

    use super::{
        journal_suite::{all, seqs, sig, sigs, t0},
        scratch::TempDir,
    };
    use crate::journal_suite;

    async fn fresh() -> Option<(Arc<dyn JournalStore>, TempDir)> {
        let dir = TempDir::new("journal");
        let store = SqliteStore::open(dir.db()).await.expect("open the store");
        Some((Arc::new(store), dir))
    }

    async fn finish(_dir: TempDir) {}

    journal_suite!(conformance, fresh, finish);

    async fn fresh_in_memory() -> Option<(Arc<dyn JournalStore>, ())> {
        let store = SqliteStore::in_memory().await.expect("open the store");
        Some((Arc::new(store), ()))
    }

    async fn finish_in_memory((): ()) {}

    // The in-memory database: one connection reads and writes.
    journal_suite!(in_memory, fresh_in_memory, finish_in_memory);

    /// A plain connection to the file, for tampering behind the store's back.
    async fn raw(path: &Path) -> SqlitePool {
        SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
            .await
            .expect("raw connection")
    }

    #[tokio::test]
    async fn corrupt_rows_are_reported_with_their_seq() {
        let dir = TempDir::new("journal-corrupt");
        let store = SqliteStore::open(dir.db()).await.unwrap();
        let mut batch = sigs("a.x", 0, 3);
        batch.push(sig("b.y", 3));
        store.append("j", &batch, t0()).await.unwrap();
        store
            .add_dead_letter("j", "sub", 7, &sig("a.x", 7), "boom", t0())
            .await
            .unwrap();
        let pool = raw(&dir.db()).await;
        // Not JSON, with a NUL and a byte that is not UTF-8 in it.
        sqlx::query("UPDATE signal_bus_journal SET body = X'7B22006E6FFF74223A' WHERE seq = 2")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("UPDATE signal_bus_journal_dead SET body = X'00' WHERE seq = 7")
            .execute(&pool)
            .await
            .unwrap();
        super::check_corrupt(&store).await;
        pool.close().await;
    }

    #[tokio::test]
    async fn a_reopened_file_keeps_the_journal_and_head() {
        let dir = TempDir::new("journal-reopen");
        {
            let store = SqliteStore::open(dir.db()).await.unwrap();
            store.append("j", &sigs("a", 0, 5), t0()).await.unwrap();
            store.create_checkpoint("j", "sub", 3).await.unwrap();
            let retention = signal_bus::journal::JournalRetention::default()
                .max_entries(2)
                .protect_unacknowledged(false);
            let pruned = JournalStore::prune(&store, "j", &retention, t0()).await;
            assert_eq!(pruned.unwrap(), 3);
        }
        let store = SqliteStore::open(dir.db()).await.unwrap();
        assert_eq!(store.head("j").await.unwrap(), 5);
        assert_eq!(seqs(&all(&store, "j").await), [4, 5]);
        assert_eq!(store.checkpoint("j", "sub").await.unwrap(), Some(3));
        assert_eq!(
            store.append("j", &sigs("a", 5, 1), t0()).await.unwrap(),
            [6]
        );
    }

    /// A file made before the journal existed (every earlier migration, a queued job) gets
    /// the journal's tables when opened, and keeps its job.
    #[tokio::test]
    async fn a_database_from_before_the_journal_is_upgraded() {
        let dir = TempDir::new("journal-upgrade");
        let job_id = {
            let store = SqliteStore::open(dir.db()).await.unwrap();
            store
                .enqueue(None, &NewJob::new("w", serde_json::json!({ "k": 1 })))
                .await
                .unwrap()
                .unwrap()
        };
        // Back to the schema before the journal's migration.
        let pool = raw(&dir.db()).await;
        let before: i64 = sqlx::query_scalar("SELECT MAX(version) FROM signal_bus_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(before, 4, "the journal's migration is version 4");
        for statement in [
            "DROP TABLE signal_bus_journal",
            "DROP TABLE signal_bus_journal_heads",
            "DROP TABLE signal_bus_journal_subs",
            "DROP TABLE signal_bus_journal_dead",
            "DELETE FROM signal_bus_migrations WHERE version = 4",
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        pool.close().await;

        let store = SqliteStore::open(dir.db()).await.unwrap();
        assert_eq!(
            store.append("j", &sigs("a", 0, 2), t0()).await.unwrap(),
            [1, 2]
        );
        assert_eq!(seqs(&all(&store, "j").await), [1, 2]);
        assert!(
            store.get(job_id).await.unwrap().is_some(),
            "the queued job stays"
        );
        let pool = raw(&dir.db()).await;
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM signal_bus_migrations ORDER BY version")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(versions, [1, 2, 3, 4]);
        pool.close().await;
    }

    /// A store that cannot be written reports the append as a store error naming what failed.
    #[tokio::test]
    async fn store_errors_name_what_failed() {
        let dir = TempDir::new("journal-errors");
        let store = SqliteStore::open(dir.db()).await.unwrap();
        let pool = raw(&dir.db()).await;
        sqlx::query("DROP TABLE signal_bus_journal")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let err = store.append("j", &sigs("a", 0, 1), t0()).await.unwrap_err();
        assert!(
            matches!(
                &err,
                JournalError::Store {
                    backend: "sqlite",
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("appending 1 signals to journal `j`"),
            "{text}"
        );
        assert!(std::error::Error::source(&err).is_some());
        let err = store.read("j", 0, 10, None).await.unwrap_err();
        assert!(err.to_string().contains("reading journal `j`"), "{err}");
    }
}

/// Checks a store where journal `j` holds `a.x` at 1..=3 (2 corrupt) and `b.y` at 4, and
/// subscription `sub` has a corrupt dead letter at 7.
#[allow(dead_code)]
async fn check_corrupt(store: &dyn JournalStore) {
    use signal_bus::journal::JournalError;
    let corrupt_at = |r: Result<_, JournalError>, at: u64| match r {
        Err(JournalError::Corrupt {
            journal,
            seq,
            message,
        }) => {
            assert_eq!((journal.as_str(), seq), ("j", at), "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected Corrupt at {at}, got {other:?}"),
    };
    corrupt_at(store.read("j", 0, 10, None).await.map(|_| ()), 2);
    // Before it, and after it, reads go on.
    let page = store.read("j", 0, 1, None).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    let page = store.read("j", 2, 10, None).await.unwrap();
    assert_eq!(page.entries.len(), 2);
    // A filter that skips its type never parses it.
    let only_b = |ty: &str| ty == "b.y";
    let page = store.read("j", 0, 10, Some(&only_b)).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.scanned_to, 4);
    // A corrupt dead letter: reported, and not taken.
    corrupt_at(store.dead_letters("j", "sub", 10).await.map(|_| ()), 7);
    corrupt_at(
        store.take_dead_letters("j", "sub", None).await.map(|_| ()),
        7,
    );
    corrupt_at(store.dead_letters("j", "sub", 10).await.map(|_| ()), 7);
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::{collections::BTreeSet, sync::Arc, time::Duration};

    use signal_bus::{
        journal::JournalStore,
        queue::{JobStore, NewJob, PostgresStore},
    };

    use super::journal_suite::{all, seqs, sig, sigs, t0};
    use crate::{journal_suite, pg_db::TestDb};

    /// A store on the test's fresh database.
    async fn connect(db: &TestDb) -> PostgresStore {
        PostgresStore::connect(&db.url)
            .await
            .expect("connect the store")
    }

    /// Closes `stores`, then drops the test's database.
    async fn drop_db(db: TestDb, stores: impl IntoIterator<Item = PostgresStore>) {
        for store in stores {
            store.pool().close().await;
        }
        db.drop_db().await;
    }

    async fn fresh() -> Option<(Arc<dyn JournalStore>, (TestDb, PostgresStore))> {
        let db = TestDb::new("journal_conformance").await?;
        let store = connect(&db).await;
        Some((Arc::new(store.clone()), (db, store)))
    }

    async fn finish((db, store): (TestDb, PostgresStore)) {
        drop_db(db, [store]).await;
    }

    journal_suite!(conformance, fresh, finish);

    #[tokio::test]
    async fn corrupt_rows_are_reported_with_their_seq() {
        let Some(db) = TestDb::new("journal_conformance").await else {
            return;
        };
        let store = connect(&db).await;
        let mut batch = sigs("a.x", 0, 3);
        batch.push(sig("b.y", 3));
        store.append("j", &batch, t0()).await.unwrap();
        store
            .add_dead_letter("j", "sub", 7, &sig("a.x", 7), "boom", t0())
            .await
            .unwrap();
        sqlx::query("UPDATE signal_bus_journal SET body = '\\x7b226e6f74223a' WHERE seq = 2")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("UPDATE signal_bus_journal_dead SET body = '\\x00' WHERE seq = 7")
            .execute(store.pool())
            .await
            .unwrap();
        super::check_corrupt(&store).await;
        drop_db(db, [store]).await;
    }

    /// Eight appenders, each on a pool of its own (as eight processes would be), append
    /// 2,000 signals in batches of 1 to 13 while a reader tails the journal with
    /// `read(after = last)`: the reader sees every sequence number exactly once, each page
    /// going on right after the last one — never `n + 1` before `n`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appenders_commit_in_sequence_order() {
        const APPENDERS: usize = 8;
        const EACH: usize = 250;
        const TOTAL: u64 = (APPENDERS * EACH) as u64;
        let Some(db) = TestDb::new("journal_conformance").await else {
            return;
        };
        let mut stores = Vec::new();
        for _ in 0..=APPENDERS {
            stores.push(
                PostgresStore::builder(&db.url)
                    .max_connections(2)
                    .connect()
                    .await
                    .unwrap(),
            );
        }
        let reader = stores[APPENDERS].clone();
        let tail = tokio::spawn(async move {
            let mut last = 0u64;
            let mut seen = Vec::new();
            while last < TOTAL {
                let page = reader.read("j", last, 100, None).await.unwrap();
                for entry in &page.entries {
                    assert_eq!(
                        entry.seq,
                        last + 1,
                        "the reader saw {} after {last}",
                        entry.seq
                    );
                    last = entry.seq;
                    seen.push(entry.signal.id().to_owned());
                }
                assert_eq!(page.scanned_to, last);
                if page.entries.is_empty() {
                    tokio::task::yield_now().await;
                }
            }
            seen
        });
        let mut appenders = Vec::new();
        for (a, store) in stores.iter().take(APPENDERS).enumerate() {
            let store = store.clone();
            appenders.push(tokio::spawn(async move {
                let mut given = Vec::new();
                let mut n = 0;
                let mut batch = 1 + a % 13;
                while n < EACH {
                    let size = batch.min(EACH - n);
                    let signals: Vec<_> = (n..n + size).map(|i| sig("a", a * EACH + i)).collect();
                    let got = store.append("j", &signals, t0()).await.unwrap();
                    assert_eq!(got.len(), size);
                    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
                    given.extend(got);
                    n += size;
                    batch = batch % 13 + 1;
                }
                given
            }));
        }
        let mut given = BTreeSet::new();
        for appender in appenders {
            for seq in appender.await.unwrap() {
                assert!(given.insert(seq), "{seq} given twice");
            }
        }
        assert_eq!(given, (1..=TOTAL).collect::<BTreeSet<u64>>());
        let seen = tokio::time::timeout(Duration::from_secs(120), tail)
            .await
            .expect("the reader caught up")
            .unwrap();
        let ids: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), ids.len(), "no signal twice");
        let expected: BTreeSet<String> = (0..APPENDERS * EACH).map(|n| format!("s{n}")).collect();
        assert_eq!(ids, expected);
        assert_eq!(stores[0].head("j").await.unwrap(), TOTAL);
        drop_db(db, stores).await;
    }

    /// A database made before the journal existed gets its tables on connect, and keeps
    /// its jobs.
    #[tokio::test]
    async fn a_database_from_before_the_journal_is_upgraded() {
        let Some(db) = TestDb::new("journal_conformance").await else {
            return;
        };
        let store = connect(&db).await;
        let job_id = store
            .enqueue(None, &NewJob::new("w", serde_json::json!({ "k": 1 })))
            .await
            .unwrap()
            .unwrap();
        for statement in [
            "DROP TABLE signal_bus_journal",
            "DROP TABLE signal_bus_journal_heads",
            "DROP TABLE signal_bus_journal_subs",
            "DROP TABLE signal_bus_journal_dead",
            "DELETE FROM signal_bus_migrations WHERE version = 4",
        ] {
            sqlx::query(statement).execute(store.pool()).await.unwrap();
        }
        store.pool().close().await;
        let store = connect(&db).await;
        assert_eq!(
            store.append("j", &sigs("a", 0, 2), t0()).await.unwrap(),
            [1, 2]
        );
        assert_eq!(seqs(&all(&store, "j").await), [1, 2]);
        assert!(store.get(job_id).await.unwrap().is_some());
        let versions: Vec<i32> =
            sqlx::query_scalar("SELECT version FROM signal_bus_migrations ORDER BY version")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(versions, [1, 2, 3, 4]);
        drop_db(db, [store]).await;
    }
}
