//! The PostgreSQL queue store against a real server.
//!
//! The server comes from `SIGNAL_BUS_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); these tests fail, never skip, when it is
//! unreachable. Each test creates its own database (`signal_bus_test_<random>`), so tests
//! run in parallel without sharing tables, advisory locks or notifications, and drops it at
//! the end.
#![cfg(feature = "postgres")]

#[path = "support/queue_suite.rs"]
mod queue_suite;

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde_json::json;
use signal_bus::{
    queue::{JobState, JobStore, NewJob, PostgresStore, QueueError},
    Signal,
};
use sqlx::{postgres::PgConnectOptions, ConnectOptions, Connection, Executor, PgConnection};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server under test.
fn base_url() -> String {
    std::env::var("SIGNAL_BUS_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A fresh database, dropped by [`TestDb::drop_db`] (or on drop when a test fails).
struct TestDb {
    name: String,
    url: String,
    dropped: bool,
}

impl TestDb {
    async fn new() -> TestDb {
        let base = base_url();
        let mut admin = PgConnection::connect(&base).await.unwrap_or_else(|e| {
            panic!("PostgreSQL must be reachable at SIGNAL_BUS_POSTGRES_URL ({base}): {e}")
        });
        let name = format!("signal_bus_test_{}", uuid::Uuid::now_v7().simple());
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create the test database");
        let options: PgConnectOptions = base.parse().expect("parse SIGNAL_BUS_POSTGRES_URL");
        let url = options.database(&name).to_url_lossy().to_string();
        TestDb {
            name,
            url,
            dropped: false,
        }
    }

    async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&self.url)
            .await
            .expect("connect the store")
    }

    async fn conn(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("connect to the test database")
    }

    async fn drop_db(mut self, stores: impl IntoIterator<Item = PostgresStore>) {
        for store in stores {
            store.pool().close().await;
        }
        drop_database(&self.name)
            .await
            .expect("drop the test database");
        self.dropped = true;
    }
}

impl Drop for TestDb {
    /// A failed test still drops its database (on a thread of its own: no async drop).
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let _ = runtime.block_on(drop_database(&name));
        })
        .join();
    }
}

async fn drop_database(name: &str) -> Result<(), sqlx::Error> {
    let mut admin = PgConnection::connect(&base_url()).await?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await?;
    Ok(())
}

fn signal(n: u32) -> Signal {
    Signal::new("user.created", "/accounts", json!({ "n": n })).expect("valid signal")
}

fn job(worker: &str) -> NewJob {
    NewJob::new(worker, json!({ "ref": worker }))
}

fn later(secs: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(secs)
}

async fn claim_all(store: &PostgresStore, queue: &str) -> Vec<signal_bus::queue::Job> {
    store
        .claim(queue, 100, "runner-a", Utc::now(), later(60))
        .await
        .expect("claim")
}

#[tokio::test]
async fn enqueue_claim_complete_stores_the_signal_once() {
    let db = TestDb::new().await;
    let store = db.store().await;
    assert_eq!(store.backend(), "postgres");
    let sig = signal(1);
    let a = store
        .enqueue(Some(&sig), &job("audit"))
        .await
        .unwrap()
        .unwrap();
    let b = store
        .enqueue(Some(&sig), &job("mirror"))
        .await
        .unwrap()
        .unwrap();
    assert!(b > a);

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM signal_bus_signals")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(stored, 1, "the signal is stored once");
    let loaded = store.load_signal(sig.id()).await.unwrap().expect("stored");
    assert_eq!(loaded, sig);
    assert!(store.load_signal("missing").await.unwrap().is_none());

    let fresh = store.get(a).await.unwrap().expect("job a");
    assert_eq!(fresh.state, JobState::Available);
    assert_eq!(fresh.attempt, 0);
    assert_eq!(fresh.max_attempts, 5);
    assert_eq!(fresh.args, json!({ "ref": "audit" }));
    assert_eq!(fresh.queue, "default");

    let claimed = claim_all(&store, "default").await;
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a, b]);
    assert!(claimed
        .iter()
        .all(|j| j.state == JobState::Executing && j.attempt == 1 && j.attempted_at.is_some()));
    assert!(
        claim_all(&store, "default").await.is_empty(),
        "claimed once"
    );

    store.complete(a, Utc::now()).await.unwrap();
    let done = store.get(a).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert!(done.finished_at.is_some());
    assert!(store.get(i64::MAX).await.unwrap().is_none());

    assert!(store.delete_signal(sig.id()).await.unwrap());
    assert!(!store.delete_signal(sig.id()).await.unwrap());
    assert!(store.load_signal(sig.id()).await.unwrap().is_none());
    db.drop_db([store]).await;
}

#[tokio::test]
async fn enqueue_many_inserts_in_order_with_signals_once() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let shared = Arc::new(signal(1));
    let items: Vec<(Option<Arc<Signal>>, NewJob)> = (0..50)
        .map(|i| {
            let sig = if i % 2 == 0 {
                Some(shared.clone())
            } else {
                Some(Arc::new(signal(i)))
            };
            (
                sig,
                job(&format!("w{i}")).queue(if i < 25 { "a" } else { "b" }),
            )
        })
        .collect();
    let ids = store.enqueue_many(&items).await.unwrap();
    assert_eq!(ids.len(), 50);
    let ids: Vec<i64> = ids.into_iter().map(|id| id.expect("inserted")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids follow the items");
    for (id, (_, new)) in ids.iter().zip(&items) {
        let stored = store.get(*id).await.unwrap().unwrap();
        assert_eq!(stored.worker, new.worker);
        assert_eq!(stored.queue, new.queue);
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM signal_bus_signals")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(stored, 26, "one shared signal and 25 others");
    assert_eq!(
        store.load_signal(shared.id()).await.unwrap().as_ref(),
        Some(&*shared)
    );
    assert!(store.enqueue_many(&[]).await.unwrap().is_empty());

    // A single invalid job rejects the whole batch before any write.
    let bad = vec![(None, job("ok")), (None, job("bad").priority(10))];
    assert!(matches!(
        store.enqueue_many(&bad).await,
        Err(QueueError::Invalid(_))
    ));
    assert_eq!(store.counts().await.unwrap()[&JobState::Available], 50);
    db.drop_db([store]).await;
}

#[tokio::test]
async fn invalid_jobs_are_rejected() {
    let db = TestDb::new().await;
    let store = db.store().await;
    for bad in [
        job("w").priority(10),
        job("w").priority(-1),
        job("w").max_attempts(0),
        job("w").queue(""),
        job(""),
    ] {
        let err = store.enqueue(None, &bad).await.unwrap_err();
        assert!(matches!(err, QueueError::Invalid(_)), "{bad:?}: {err}");
    }
    assert_eq!(store.counts().await.unwrap().values().sum::<u64>(), 0);
    db.drop_db([store]).await;
}

#[tokio::test]
async fn claims_follow_priority_then_schedule_then_id() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let past = Utc::now() - chrono::Duration::seconds(10);
    let p5 = store
        .enqueue(None, &job("p5").priority(5))
        .await
        .unwrap()
        .unwrap();
    let p0 = store
        .enqueue(None, &job("p0").priority(0))
        .await
        .unwrap()
        .unwrap();
    let p9 = store
        .enqueue(None, &job("p9").priority(9))
        .await
        .unwrap()
        .unwrap();
    let p0_old = store
        .enqueue(None, &job("p0-old").priority(0).scheduled_at(past))
        .await
        .unwrap()
        .unwrap();
    let p0_b = store
        .enqueue(None, &job("p0-b").priority(0))
        .await
        .unwrap()
        .unwrap();
    let other = store
        .enqueue(None, &job("x").queue("other"))
        .await
        .unwrap()
        .unwrap();

    let first = store
        .claim("default", 2, "r", Utc::now(), later(60))
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![p0_old, p0]
    );
    let rest = claim_all(&store, "default").await;
    assert_eq!(
        rest.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![p0_b, p5, p9]
    );
    assert!(store
        .claim("default", 0, "r", Utc::now(), later(60))
        .await
        .unwrap()
        .is_empty());
    let others = claim_all(&store, "other").await;
    assert_eq!(others.iter().map(|j| j.id).collect::<Vec<_>>(), vec![other]);
    db.drop_db([store]).await;
}

#[tokio::test]
async fn scheduled_jobs_wait_for_their_time() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let at = later(3600);
    let id = store
        .enqueue(None, &job("later").scheduled_at(at))
        .await
        .unwrap()
        .unwrap();
    let stored = store.get(id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Scheduled);
    assert_eq!(
        stored.scheduled_at.timestamp_millis(),
        at.timestamp_millis()
    );
    assert!(claim_all(&store, "default").await.is_empty());
    let claimed = store
        .claim(
            "default",
            10,
            "r",
            at + chrono::Duration::seconds(1),
            later(7200),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, id);
    db.drop_db([store]).await;
}

#[tokio::test]
async fn unique_keys_deduplicate_live_jobs() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let period = Duration::from_secs(60);
    let first = store
        .enqueue(None, &job("w").unique("k1", period))
        .await
        .unwrap();
    assert!(first.is_some());
    assert_eq!(
        store
            .enqueue(None, &job("w").unique("k1", period))
            .await
            .unwrap(),
        None
    );
    assert!(store
        .enqueue(None, &job("w").unique("k2", period))
        .await
        .unwrap()
        .is_some());

    // A cancelled job no longer holds its key.
    store
        .cancel(first.unwrap(), "by hand", Utc::now())
        .await
        .unwrap();
    assert!(store
        .enqueue(None, &job("w").unique("k1", period))
        .await
        .unwrap()
        .is_some());

    // An expired period no longer holds the key.
    assert!(store
        .enqueue(None, &job("w").unique("short", Duration::from_millis(1)))
        .await
        .unwrap()
        .is_some());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(store
        .enqueue(None, &job("w").unique("short", Duration::from_millis(1)))
        .await
        .unwrap()
        .is_some());

    // In one batch: the first of a key wins, and a deduplicated job stores no signal.
    let sig = Arc::new(signal(7));
    let batch = vec![
        (None, job("w").unique("k3", period)),
        (Some(sig.clone()), job("w").unique("k3", period)),
        (None, job("w").unique("k2", period)),
        (None, job("w")),
    ];
    let ids = store.enqueue_many(&batch).await.unwrap();
    assert!(ids[0].is_some());
    assert_eq!(ids[1], None);
    assert_eq!(ids[2], None);
    assert!(ids[3].is_some());
    assert!(store.load_signal(sig.id()).await.unwrap().is_none());
    db.drop_db([store]).await;
}

#[tokio::test]
async fn concurrent_unique_enqueues_insert_exactly_one() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .enqueue(None, &job("w").unique("race", Duration::from_secs(60)))
                .await
                .unwrap()
        }));
    }
    let mut inserted = 0;
    for task in tasks {
        if task.await.unwrap().is_some() {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 1);
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM signal_bus_jobs WHERE unique_key = 'race'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(rows, 1);
    db.drop_db([store]).await;
}

#[tokio::test]
async fn retry_runs_again_with_the_next_attempt() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let id = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    assert_eq!(claim_all(&store, "default").await[0].attempt, 1);
    let at = later(30);
    store.retry(id, at, "boom").await.unwrap();
    let j = store.get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Retryable);
    assert_eq!(j.last_error.as_deref(), Some("boom"));
    assert_eq!(j.scheduled_at.timestamp_millis(), at.timestamp_millis());
    assert!(
        claim_all(&store, "default").await.is_empty(),
        "not before its time"
    );
    let again = store
        .claim("default", 10, "r", later(31), later(90))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    // Retry only applies to executing jobs.
    store.complete(id, Utc::now()).await.unwrap();
    store.retry(id, Utc::now(), "late").await.unwrap();
    assert_eq!(
        store.get(id).await.unwrap().unwrap().state,
        JobState::Completed
    );
    db.drop_db([store]).await;
}

#[tokio::test]
async fn snooze_gives_the_attempt_back() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let id = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    assert_eq!(claim_all(&store, "default").await[0].attempt, 1);
    store.snooze(id, later(5)).await.unwrap();
    let j = store.get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Scheduled);
    assert_eq!(j.attempt, 0);
    assert!(claim_all(&store, "default").await.is_empty());
    let again = store
        .claim("default", 10, "r", later(6), later(60))
        .await
        .unwrap();
    assert_eq!(again[0].attempt, 1);
    db.drop_db([store]).await;
}

#[tokio::test]
async fn cancel_and_discard_are_final() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let a = store.enqueue(None, &job("a")).await.unwrap().unwrap();
    let b = store.enqueue(None, &job("b")).await.unwrap().unwrap();
    claim_all(&store, "default").await;
    store
        .cancel(a, "signal not found", Utc::now())
        .await
        .unwrap();
    store
        .discard(b, "out of attempts", Utc::now())
        .await
        .unwrap();
    let ja = store.get(a).await.unwrap().unwrap();
    let jb = store.get(b).await.unwrap().unwrap();
    assert_eq!(ja.state, JobState::Cancelled);
    assert_eq!(ja.last_error.as_deref(), Some("signal not found"));
    assert!(ja.finished_at.is_some());
    assert_eq!(jb.state, JobState::Discarded);
    assert_eq!(jb.last_error.as_deref(), Some("out of attempts"));
    assert!(jb.finished_at.is_some());

    // Final states stay final.
    store.complete(a, Utc::now()).await.unwrap();
    store.discard(a, "again", Utc::now()).await.unwrap();
    assert_eq!(
        store.get(a).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    assert!(claim_all(&store, "default").await.is_empty());
    db.drop_db([store]).await;
}

#[tokio::test]
async fn rescue_returns_expired_leases() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let now = Utc::now();
    let id = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    let live = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    store
        .claim(
            "default",
            1,
            "dead",
            now,
            now + chrono::Duration::seconds(1),
        )
        .await
        .unwrap();
    store
        .claim(
            "default",
            1,
            "alive",
            now,
            now + chrono::Duration::seconds(60),
        )
        .await
        .unwrap();
    assert_eq!(store.rescue(now).await.unwrap(), 0, "lease still running");
    // The live runner heartbeats past the rescue time.
    store
        .heartbeat(&[live], "alive", now + chrono::Duration::seconds(120))
        .await
        .unwrap();
    let rescued = store
        .rescue(now + chrono::Duration::seconds(2))
        .await
        .unwrap();
    assert_eq!(rescued, 1);
    let j = store.get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Available);
    assert_eq!(j.attempt, 1, "the attempt is kept");
    assert_eq!(
        store.get(live).await.unwrap().unwrap().state,
        JobState::Executing
    );
    // After a heartbeat from the wrong owner nothing changes.
    store.heartbeat(&[live], "someone-else", now).await.unwrap();
    assert_eq!(
        store
            .rescue(now + chrono::Duration::seconds(100))
            .await
            .unwrap(),
        0
    );
    let again = claim_all(&store, "default").await;
    assert_eq!(again[0].id, id);
    assert_eq!(again[0].attempt, 2);
    db.drop_db([store]).await;
}

#[tokio::test]
async fn release_gives_jobs_back_to_the_queue() {
    let db = TestDb::new().await;
    let store = db.store().await;
    for _ in 0..3 {
        store.enqueue(None, &job("w")).await.unwrap();
    }
    store
        .claim("default", 2, "leaving", Utc::now(), later(60))
        .await
        .unwrap();
    store
        .claim("default", 1, "staying", Utc::now(), later(60))
        .await
        .unwrap();
    assert_eq!(store.release("leaving", Utc::now()).await.unwrap(), 2);
    let available = store.list(JobState::Available, 10).await.unwrap();
    assert_eq!(available.len(), 2);
    assert!(available.iter().all(|j| j.attempt == 0));
    assert_eq!(store.list(JobState::Executing, 10).await.unwrap().len(), 1);
    db.drop_db([store]).await;
}

#[tokio::test]
async fn redrive_makes_dead_jobs_available() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let a = store.enqueue(None, &job("a")).await.unwrap().unwrap();
    let b = store.enqueue(None, &job("b")).await.unwrap().unwrap();
    let c = store.enqueue(None, &job("c")).await.unwrap().unwrap();
    claim_all(&store, "default").await;
    store
        .discard(a, "out of attempts", Utc::now())
        .await
        .unwrap();
    store.cancel(b, "by hand", Utc::now()).await.unwrap();
    store.complete(c, Utc::now()).await.unwrap();
    let now = Utc::now();
    assert_eq!(store.redrive(&[a, b, c], now).await.unwrap(), 2);
    assert_eq!(store.redrive(&[], now).await.unwrap(), 0);
    for id in [a, b] {
        let j = store.get(id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Available);
        assert_eq!(j.attempt, 0);
        assert_eq!(j.finished_at, None);
        assert_eq!(j.scheduled_at.timestamp_millis(), now.timestamp_millis());
    }
    assert_eq!(
        store.get(c).await.unwrap().unwrap().state,
        JobState::Completed
    );
    db.drop_db([store]).await;
}

#[tokio::test]
async fn prune_deletes_old_completed_jobs() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let old = store.enqueue(None, &job("old")).await.unwrap().unwrap();
    let new = store.enqueue(None, &job("new")).await.unwrap().unwrap();
    let open = store.enqueue(None, &job("open")).await.unwrap().unwrap();
    claim_all(&store, "default").await;
    let long_ago = Utc::now() - chrono::Duration::days(30);
    store.complete(old, long_ago).await.unwrap();
    store.complete(new, Utc::now()).await.unwrap();
    assert_eq!(
        store
            .prune(Utc::now() - chrono::Duration::days(1))
            .await
            .unwrap(),
        1
    );
    assert!(store.get(old).await.unwrap().is_none());
    assert!(store.get(new).await.unwrap().is_some());
    assert!(store.get(open).await.unwrap().is_some());
    db.drop_db([store]).await;
}

#[tokio::test]
async fn counts_cover_every_state() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let empty = store.counts().await.unwrap();
    assert_eq!(empty.len(), JobState::ALL.len());
    assert!(empty.values().all(|n| *n == 0));

    for _ in 0..4 {
        store.enqueue(None, &job("w")).await.unwrap();
    }
    store
        .enqueue(None, &job("w").scheduled_at(later(600)))
        .await
        .unwrap();
    let claimed = store
        .claim("default", 3, "r", Utc::now(), later(60))
        .await
        .unwrap();
    store.complete(claimed[0].id, Utc::now()).await.unwrap();
    store.retry(claimed[1].id, later(60), "e").await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(counts[&JobState::Available], 1);
    assert_eq!(counts[&JobState::Scheduled], 1);
    assert_eq!(counts[&JobState::Executing], 1);
    assert_eq!(counts[&JobState::Retryable], 1);
    assert_eq!(counts[&JobState::Completed], 1);
    assert_eq!(counts[&JobState::Cancelled], 0);
    assert_eq!(counts[&JobState::Discarded], 0);

    let listed = store.list(JobState::Available, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(store.list(JobState::Completed, 0).await.unwrap().len(), 0);
    db.drop_db([store]).await;
}

#[tokio::test]
async fn corrupt_rows_name_their_id() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let sig = signal(1);
    let id = store.enqueue(Some(&sig), &job("w")).await.unwrap().unwrap();
    sqlx::query("UPDATE signal_bus_signals SET body = $1 WHERE id = $2")
        .bind(&b"not a signal"[..])
        .bind(sig.id())
        .execute(store.pool())
        .await
        .unwrap();
    match store.load_signal(sig.id()).await {
        Err(QueueError::Corrupt { what }) => assert!(what.contains(sig.id()), "{what}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }

    sqlx::query("UPDATE signal_bus_jobs SET state = 'lost' WHERE id = $1")
        .bind(id)
        .execute(store.pool())
        .await
        .unwrap();
    match store.get(id).await {
        Err(QueueError::Corrupt { what }) => assert!(what.contains(&id.to_string()), "{what}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        store.counts().await,
        Err(QueueError::Corrupt { .. })
    ));
    db.drop_db([store]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runners_never_claim_the_same_job() {
    const JOBS: usize = 2000;
    const RUNNERS: usize = 4;
    let db = TestDb::new().await;
    let store = db.store().await;
    let mut all = Vec::with_capacity(JOBS);
    for chunk in 0..(JOBS / 500) {
        let items: Vec<(Option<Arc<Signal>>, NewJob)> = (0..500)
            .map(|i| (None, job(&format!("w{}", chunk * 500 + i))))
            .collect();
        for id in store.enqueue_many(&items).await.unwrap() {
            all.push(id.expect("inserted"));
        }
    }

    let mut runners = Vec::new();
    let mut stores = vec![store];
    for r in 0..RUNNERS {
        // Each runner has its own store: its own pool and connections.
        let runner = PostgresStore::builder(&db.url)
            .max_connections(2)
            .connect()
            .await
            .unwrap();
        stores.push(runner.clone());
        runners.push(tokio::spawn(async move {
            let owner = format!("runner-{r}");
            let mut seen = Vec::new();
            loop {
                let jobs = runner
                    .claim("default", 10, &owner, Utc::now(), later(300))
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    break;
                }
                for j in jobs {
                    assert_eq!(j.attempt, 1, "job {} claimed twice", j.id);
                    runner.complete(j.id, Utc::now()).await.unwrap();
                    seen.push(j.id);
                }
            }
            seen
        }));
    }
    let mut claimed = Vec::with_capacity(JOBS);
    let mut per_runner = Vec::new();
    for runner in runners {
        let seen = runner.await.unwrap();
        per_runner.push(seen.len());
        claimed.extend(seen);
    }
    let unique: HashSet<i64> = claimed.iter().copied().collect();
    assert_eq!(unique.len(), claimed.len(), "a job was claimed twice");
    claimed.sort_unstable();
    all.sort_unstable();
    assert_eq!(claimed, all, "every job claimed exactly once");
    assert_eq!(
        stores[0].counts().await.unwrap()[&JobState::Completed],
        JOBS as u64
    );
    eprintln!("jobs per runner: {per_runner:?}");
    db.drop_db(stores).await;
}

#[tokio::test]
async fn enqueue_in_commits_and_rolls_back_with_the_caller() {
    let db = TestDb::new().await;
    let store = db.store().await;
    sqlx::query("CREATE TABLE accounts (id BIGINT PRIMARY KEY, active BOOLEAN NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();

    let kept = signal(1);
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO accounts VALUES (1, true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let id = store
        .enqueue_in(&mut tx, Some(&kept), &job("audit"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        store.get(id).await.unwrap().is_none(),
        "invisible before commit"
    );
    tx.commit().await.unwrap();
    assert_eq!(
        store.get(id).await.unwrap().unwrap().state,
        JobState::Available
    );
    assert_eq!(store.load_signal(kept.id()).await.unwrap(), Some(kept));

    let dropped = signal(2);
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO accounts VALUES (2, true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let gone = store
        .enqueue_in(&mut tx, Some(&dropped), &job("audit"))
        .await
        .unwrap()
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(store.get(gone).await.unwrap().is_none());
    assert!(store.load_signal(dropped.id()).await.unwrap().is_none());
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(accounts, 1);

    // Invalid jobs are refused before any write, leaving the transaction usable.
    let mut tx = store.pool().begin().await.unwrap();
    assert!(matches!(
        store
            .enqueue_in(&mut tx, None, &job("w").priority(42))
            .await,
        Err(QueueError::Invalid(_))
    ));
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    db.drop_db([store]).await;
}

#[tokio::test]
async fn wait_for_jobs_wakes_up_on_enqueue() {
    let db = TestDb::new().await;
    let waiter = db.store().await;
    let producer = db.store().await;

    // Nothing enqueued: it waits out the timeout (and sets up its listener).
    let start = Instant::now();
    waiter.wait_for_jobs(Duration::from_millis(300)).await;
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );

    let w = waiter.clone();
    let wait = tokio::spawn(async move {
        let start = Instant::now();
        w.wait_for_jobs(Duration::from_secs(5)).await;
        start.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    producer.enqueue(None, &job("w")).await.unwrap();
    let waited = wait.await.unwrap();
    assert!(
        waited < Duration::from_secs(2),
        "woke after {waited:?}, not on the notification"
    );

    // Two waiters of one store both wake up on one enqueue.
    let mut waits = Vec::new();
    for _ in 0..2 {
        let w = waiter.clone();
        waits.push(tokio::spawn(async move {
            let start = Instant::now();
            w.wait_for_jobs(Duration::from_secs(5)).await;
            start.elapsed()
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    producer.enqueue(None, &job("w")).await.unwrap();
    for wait in waits {
        let waited = wait.await.unwrap();
        assert!(waited < Duration::from_secs(2), "woke after {waited:?}");
    }

    // A rolled-back outbox enqueue sends nothing.
    let mut tx = producer.pool().begin().await.unwrap();
    producer.enqueue_in(&mut tx, None, &job("w")).await.unwrap();
    tx.rollback().await.unwrap();
    let start = Instant::now();
    waiter.wait_for_jobs(Duration::from_millis(300)).await;
    assert!(start.elapsed() >= Duration::from_millis(250));
    db.drop_db([waiter, producer]).await;
}

#[tokio::test]
async fn wait_for_jobs_falls_back_to_sleeping_when_the_listener_breaks() {
    let db = TestDb::new().await;
    let store = db.store().await;
    store.wait_for_jobs(Duration::from_millis(50)).await;
    // Kill every other backend of this database (the listener included).
    let mut conn = db.conn().await;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    // Waiting still returns within its timeout, then works again.
    let start = Instant::now();
    store.wait_for_jobs(Duration::from_millis(500)).await;
    assert!(start.elapsed() < Duration::from_secs(3));
    let start = Instant::now();
    store.wait_for_jobs(Duration::from_millis(300)).await;
    assert!(start.elapsed() < Duration::from_secs(3));
    // The pool recovers too.
    store.enqueue(None, &job("w")).await.unwrap();
    db.drop_db([store]).await;
}

#[tokio::test]
async fn migrations_run_once_for_many_processes() {
    let db = TestDb::new().await;
    let mut connects = Vec::new();
    for _ in 0..4 {
        let url = db.url.clone();
        connects.push(tokio::spawn(async move {
            PostgresStore::connect(&url).await.unwrap()
        }));
    }
    let mut stores = Vec::new();
    for c in connects {
        stores.push(c.await.unwrap());
    }
    let again = db.store().await;
    let versions: Vec<i32> =
        sqlx::query_scalar("SELECT version FROM signal_bus_migrations ORDER BY version")
            .fetch_all(again.pool())
            .await
            .unwrap();
    assert_eq!(versions, vec![1, 2], "each version applied exactly once");
    stores.push(again);
    db.drop_db(stores).await;
}

#[tokio::test]
async fn unreachable_server_is_a_clear_store_error() {
    let start = Instant::now();
    let err = PostgresStore::builder("postgres://postgres@127.0.0.1:1/x")
        .acquire_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    match &err {
        QueueError::Store { backend, message } => {
            assert_eq!(*backend, "postgres");
            assert!(!message.is_empty());
        }
        other => panic!("expected a store error, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with("queue store postgres failed"),
        "{err}"
    );

    let start = Instant::now();
    let err = PostgresStore::connect("postgres://postgres@127.0.0.1:1/x")
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::Store { .. }));
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );

    assert!(matches!(
        PostgresStore::connect("not a url").await,
        Err(QueueError::Store { .. })
    ));
}

#[tokio::test]
async fn debug_never_shows_the_password() {
    let db = TestDb::new().await;
    let mut options: PgConnectOptions = db.url.parse().unwrap();
    options = options.password("s3cretpw42");
    let url = options.to_url_lossy().to_string();
    assert!(url.contains("s3cretpw42"));
    let builder = PostgresStore::builder(&url);
    assert!(!format!("{builder:?}").contains("s3cretpw42"));
    let store = PostgresStore::connect(&url).await.unwrap();
    let debug = format!("{store:?}");
    assert!(!debug.contains("s3cretpw42"), "{debug}");
    assert!(debug.contains(&db.name), "{debug}");
    db.drop_db([store]).await;
}

/// The conformance suite every store passes, on a fresh PostgreSQL database.
#[tokio::test]
async fn postgres_store_conformance() {
    let db = TestDb::new().await;
    let store = db.store().await;
    queue_suite::run_all(std::sync::Arc::new(store.clone())).await;
    db.drop_db([store]).await;
}

/// Forwarder jobs run end to end on PostgreSQL, and a second runner on another connection
/// never runs a job twice.
#[tokio::test]
async fn forwarder_through_postgres_with_two_runners() {
    use signal_bus::{
        adapter::Handler,
        queue::{DispatchMode, Forwarder, Queue},
        Bus,
    };
    use std::sync::Mutex;
    let db = TestDb::new().await;
    let (a, b) = (db.store().await, db.store().await);
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let mut runners = Vec::new();
    let mut buses = Vec::new();
    for store in [a.clone(), b.clone()] {
        let queue = Queue::builder(store)
            .poll_interval(std::time::Duration::from_millis(20))
            .build();
        let bus = Bus::builder().queue(queue.clone()).build().unwrap();
        let s = std::sync::Arc::clone(&seen);
        bus.subscribe(
            "audit.**",
            Forwarder::new(
                "siem",
                Handler::new(move |sig: std::sync::Arc<signal_bus::Signal>| {
                    let s = std::sync::Arc::clone(&s);
                    async move {
                        s.lock().unwrap().push(sig.id().to_owned());
                        Ok(())
                    }
                }),
            )
            .dispatch(DispatchMode::Async),
        )
        .unwrap();
        runners.push(queue.start());
        buses.push(bus);
    }
    for i in 0..200 {
        let signal = signal_bus::Signal::builder("audit.event", "/pg")
            .id(format!("pg-{i}"))
            .build()
            .unwrap();
        assert!(buses[i % 2].publish(signal).await.unwrap().is_ok());
    }
    for _ in 0..500 {
        if seen.lock().unwrap().len() >= 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for r in runners {
        r.shutdown().await;
    }
    let mut got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 200, "every signal delivered exactly once");
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 200, "no job ran twice");
    db.drop_db([a, b]).await;
}
