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
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde_json::json;
use signal_bus::{
    queue::{CancelReason, Job, JobState, JobStore, LeaseToken, NewJob, PostgresStore, QueueError},
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

/// A signal with this source and id.
fn keyed(source: &str, id: &str, n: u32) -> Signal {
    Signal::builder("audit.login", source)
        .id(id)
        .data(json!({ "n": n }))
        .build()
        .expect("valid signal")
}

/// A job that refers to `signal` the way forwarder jobs do.
fn signal_job(worker: &str, signal: &Signal) -> NewJob {
    NewJob::new(
        worker,
        json!({ "signal_source": signal.source(), "signal_id": signal.id() }),
    )
}

fn job(worker: &str) -> NewJob {
    NewJob::new(worker, json!({ "ref": worker }))
}

fn later(secs: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(secs)
}

fn names(workers: &[&str]) -> Vec<String> {
    workers.iter().map(|w| (*w).to_owned()).collect()
}

/// Claims one job of worker `w` in `default` as `owner` at `now`, its lease ending `until`.
async fn claim_one(
    store: &PostgresStore,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<Job> {
    store
        .claim("default", &names(&["w"]), 1, owner, now, until)
        .await
        .unwrap()
}

/// Claims up to 100 jobs of `workers` in `queue` for an hour.
async fn claim(store: &PostgresStore, queue: &str, workers: &[&str]) -> Vec<Job> {
    store
        .claim(
            queue,
            &names(workers),
            100,
            "runner-a",
            Utc::now(),
            later(3600),
        )
        .await
        .expect("claim")
}

fn ids(jobs: &[Job]) -> Vec<i64> {
    jobs.iter().map(|j| j.id).collect()
}

/// No backoff for rescued jobs: they are due at once.
fn no_backoff(_attempt: u32) -> Duration {
    Duration::ZERO
}

async fn state_of(store: &PostgresStore, id: i64) -> JobState {
    store.get(id).await.unwrap().expect("job exists").state
}

/// The `(signal_source, signal_id)` columns of a job.
async fn signal_columns(store: &PostgresStore, id: i64) -> (Option<String>, Option<String>) {
    sqlx::query_as("SELECT signal_source, signal_id FROM signal_bus_jobs WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn stored_at(store: &PostgresStore, source: &str, id: &str) -> i64 {
    sqlx::query_scalar("SELECT stored_at FROM signal_bus_signals WHERE source = $1 AND id = $2")
        .bind(source)
        .bind(id)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn age_signal(store: &PostgresStore, signal: &Signal, at: DateTime<Utc>) {
    sqlx::query("UPDATE signal_bus_signals SET stored_at = $1 WHERE source = $2 AND id = $3")
        .bind(at.timestamp_millis())
        .bind(signal.source())
        .bind(signal.id())
        .execute(store.pool())
        .await
        .unwrap();
}

async fn count_signals(store: &PostgresStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM signal_bus_signals")
        .fetch_one(store.pool())
        .await
        .unwrap()
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

    assert_eq!(count_signals(&store).await, 1, "the signal is stored once");
    let loaded = store
        .load_signal(sig.source(), sig.id())
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(loaded, sig);
    assert!(store
        .load_signal(sig.source(), "missing")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .load_signal("/elsewhere", sig.id())
        .await
        .unwrap()
        .is_none());
    for id in [a, b] {
        assert_eq!(
            signal_columns(&store, id).await,
            (Some(sig.source().to_owned()), Some(sig.id().to_owned())),
            "the job refers to its signal"
        );
    }
    let bare = store.enqueue(None, &job("audit")).await.unwrap().unwrap();
    assert_eq!(signal_columns(&store, bare).await, (None, None));

    let fresh = store.get(a).await.unwrap().expect("job a");
    assert_eq!(fresh.state, JobState::Available);
    assert_eq!(fresh.attempt, 0);
    assert_eq!(fresh.token, 0);
    assert_eq!(fresh.max_attempts, 5);
    assert_eq!(fresh.args, json!({ "ref": "audit" }));
    assert_eq!(fresh.queue, "default");
    assert_eq!(fresh.cancel_reason, None);

    let claimed = claim(&store, "default", &["audit", "mirror"]).await;
    assert_eq!(ids(&claimed), vec![a, b, bare]);
    assert!(claimed.iter().all(|j| j.state == JobState::Executing
        && j.attempt == 1
        && j.token == 1
        && j.attempted_at.is_some()));
    assert!(
        claim(&store, "default", &["audit", "mirror"])
            .await
            .is_empty(),
        "claimed once"
    );

    store
        .complete(claimed[0].lease(), Utc::now())
        .await
        .unwrap();
    let done = store.get(a).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert!(done.finished_at.is_some());
    assert!(store.get(i64::MAX).await.unwrap().is_none());

    assert!(store.delete_signal(sig.source(), sig.id()).await.unwrap());
    assert!(!store.delete_signal(sig.source(), sig.id()).await.unwrap());
    assert!(store
        .load_signal(sig.source(), sig.id())
        .await
        .unwrap()
        .is_none());
    db.drop_db([store]).await;
}

#[tokio::test]
async fn storing_a_signal_again_keeps_its_body_and_renews_its_age() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let first = keyed("/svc", "evt-1", 1);
    // Same (source, id), another body: CloudEvents says it is the same event.
    let second = keyed("/svc", "evt-1", 2);
    store
        .enqueue(Some(&first), &signal_job("w", &first))
        .await
        .unwrap();
    let long_ago = Utc::now() - chrono::Duration::days(3);
    age_signal(&store, &first, long_ago).await;

    store
        .enqueue(Some(&second), &signal_job("w", &second))
        .await
        .unwrap();
    assert_eq!(count_signals(&store).await, 1);
    assert_eq!(
        store.load_signal("/svc", "evt-1").await.unwrap(),
        Some(first.clone()),
        "the first body is kept"
    );
    let renewed = stored_at(&store, "/svc", "evt-1").await;
    assert!(
        renewed > long_ago.timestamp_millis() + 60_000,
        "stored_at is renewed"
    );

    // The same through a batch, with the key twice in it (as two signal objects).
    age_signal(&store, &first, long_ago).await;
    let batch = vec![
        (Some(Arc::new(second.clone())), signal_job("w", &second)),
        (Some(Arc::new(keyed("/svc", "evt-1", 3))), job("w")),
        (Some(Arc::new(keyed("/svc", "evt-2", 4))), job("w")),
    ];
    let got = store.enqueue_many(&batch).await.unwrap();
    assert!(got.iter().all(Option::is_some));
    assert_eq!(count_signals(&store).await, 2);
    assert_eq!(
        store.load_signal("/svc", "evt-1").await.unwrap(),
        Some(first.clone())
    );
    assert!(stored_at(&store, "/svc", "evt-1").await > long_ago.timestamp_millis() + 60_000);

    // A renewal never moves stored_at backwards.
    let future = Utc::now() + chrono::Duration::days(1);
    age_signal(&store, &first, future).await;
    store
        .enqueue(Some(&first), &signal_job("w", &first))
        .await
        .unwrap();
    assert_eq!(
        stored_at(&store, "/svc", "evt-1").await,
        future.timestamp_millis()
    );
    db.drop_db([store]).await;
}

#[tokio::test]
async fn same_id_from_two_sources_are_two_signals() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let a = keyed("/service-a", "1", 1);
    let b = keyed("/service-b", "1", 2);
    let ja = store
        .enqueue(Some(&a), &signal_job("w", &a))
        .await
        .unwrap()
        .unwrap();
    let jb = store
        .enqueue(Some(&b), &signal_job("w", &b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(count_signals(&store).await, 2, "both stored");
    assert_eq!(
        store.load_signal("/service-a", "1").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.load_signal("/service-b", "1").await.unwrap(),
        Some(b.clone())
    );

    let claimed = claim(&store, "default", &["w"]).await;
    assert_eq!(ids(&claimed), vec![ja, jb]);
    let keys: Vec<(&str, &str)> = claimed.iter().filter_map(Job::signal_ref).collect();
    assert_eq!(keys, vec![("/service-a", "1"), ("/service-b", "1")]);
    let loaded: BTreeMap<(String, String), Signal> = store
        .load_signals(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, s)| (k, s.expect("parses")))
        .collect();
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[&("/service-a".to_owned(), "1".to_owned())], a);
    assert_eq!(loaded[&("/service-b".to_owned(), "1".to_owned())], b);
    // Keys not stored are absent; repeated keys are read once.
    let some = store
        .load_signals(&[
            ("/service-a", "1"),
            ("/service-c", "1"),
            ("/service-a", "1"),
        ])
        .await
        .unwrap();
    assert_eq!(some.len(), 1);
    assert!(store.load_signals(&[]).await.unwrap().is_empty());

    // Deleting one leaves the other.
    assert!(store.delete_signal("/service-a", "1").await.unwrap());
    assert_eq!(store.load_signal("/service-a", "1").await.unwrap(), None);
    assert_eq!(store.load_signal("/service-b", "1").await.unwrap(), Some(b));
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
    for (id, (sig, new)) in ids.iter().zip(&items) {
        let stored = store.get(*id).await.unwrap().unwrap();
        assert_eq!(stored.worker, new.worker);
        assert_eq!(stored.queue, new.queue);
        let sig = sig.as_ref().unwrap();
        assert_eq!(
            signal_columns(&store, *id).await,
            (Some(sig.source().to_owned()), Some(sig.id().to_owned()))
        );
    }
    assert_eq!(
        count_signals(&store).await,
        26,
        "one shared signal and 25 others"
    );
    assert_eq!(
        store
            .load_signal(shared.source(), shared.id())
            .await
            .unwrap()
            .as_ref(),
        Some(&*shared)
    );
    assert!(store.enqueue_many(&[]).await.unwrap().is_empty());

    // A batch without signals refers to none.
    let bare = store
        .enqueue_many(&[(None, job("x")), (None, job("y"))])
        .await
        .unwrap();
    for id in bare {
        assert_eq!(signal_columns(&store, id.unwrap()).await, (None, None));
    }

    // A single invalid job rejects the whole batch before any write.
    let bad = vec![(None, job("ok")), (None, job("bad").priority(10))];
    assert!(matches!(
        store.enqueue_many(&bad).await,
        Err(QueueError::Invalid(_))
    ));
    assert_eq!(store.counts().await.unwrap()[&JobState::Available], 52);
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

    let all = names(&["p5", "p0", "p9", "p0-old", "p0-b", "x"]);
    let first = store
        .claim("default", &all, 2, "r", Utc::now(), later(60))
        .await
        .unwrap();
    assert_eq!(ids(&first), vec![p0_old, p0]);
    let rest = store
        .claim("default", &all, 100, "r", Utc::now(), later(60))
        .await
        .unwrap();
    assert_eq!(ids(&rest), vec![p0_b, p5, p9]);
    assert!(store
        .claim("default", &all, 0, "r", Utc::now(), later(60))
        .await
        .unwrap()
        .is_empty());
    let others = claim(&store, "other", &["x"]).await;
    assert_eq!(ids(&others), vec![other]);
    db.drop_db([store]).await;
}

#[tokio::test]
async fn claims_take_only_the_listed_workers() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let a = store.enqueue(None, &job("a")).await.unwrap().unwrap();
    let b = store.enqueue(None, &job("b")).await.unwrap().unwrap();
    let c = store.enqueue(None, &job("c")).await.unwrap().unwrap();
    let none: Vec<String> = Vec::new();
    assert!(
        store
            .claim("default", &none, 100, "r", Utc::now(), later(60))
            .await
            .unwrap()
            .is_empty(),
        "no workers claim nothing"
    );
    assert_eq!(ids(&claim(&store, "default", &["b", "unknown"]).await), [b]);
    assert_eq!(
        ids(&claim(&store, "default", &["c", "a", "c"]).await),
        [a, c]
    );
    assert!(claim(&store, "default", &["a", "b", "c"]).await.is_empty());
    db.drop_db([store]).await;
}

/// One row that does not hold a valid job must not strand the rest of its claim batch: it
/// is cancelled as `schema_mismatch`, the others are handed out.
#[tokio::test]
async fn a_corrupt_row_does_not_take_its_claim_batch_down() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let mut job_ids = Vec::new();
    for _ in 0..3 {
        job_ids.push(store.enqueue(None, &job("a")).await.unwrap().unwrap());
    }
    let mut conn = db.conn().await;
    sqlx::query("UPDATE signal_bus_jobs SET cancel_reason = 'no-such-reason' WHERE id = $1")
        .bind(job_ids[1])
        .execute(&mut conn)
        .await
        .unwrap();
    let claimed = claim(&store, "default", &["a"]).await;
    assert_eq!(ids(&claimed), [job_ids[0], job_ids[2]]);
    let executing: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM signal_bus_jobs WHERE state = 'executing' ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        executing,
        [job_ids[0], job_ids[2]],
        "nothing taken and not handed out"
    );
    let (state, detail): (String, String) =
        sqlx::query_as("SELECT state, last_error FROM signal_bus_jobs WHERE id = $1")
            .bind(job_ids[1])
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(state, "cancelled");
    assert!(
        detail.starts_with("schema_mismatch: corrupt queue data"),
        "{detail}"
    );
    drop(conn);
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
async fn cancel_job_by_hand_takes_the_lease_away() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let waiting = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    let running = store.enqueue(None, &job("v")).await.unwrap().unwrap();
    let claimed = claim(&store, "default", &["v"]).await;
    let now = Utc::now();
    for id in [waiting, running] {
        assert!(store
            .cancel_job(id, CancelReason::Manual, "cancelled by hand", now)
            .await
            .unwrap());
        let j = store.get(id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Cancelled);
        assert_eq!(j.cancel_reason, Some(CancelReason::Manual));
        assert_eq!(j.last_error.as_deref(), Some("cancelled by hand"));
        assert_eq!(
            j.finished_at.map(|t| t.timestamp_millis()),
            Some(now.timestamp_millis())
        );
    }
    // The runner that held it finds its lease lost.
    assert!(matches!(
        store.complete(claimed[0].lease(), Utc::now()).await,
        Err(QueueError::LeaseLost { job }) if job == running
    ));
    assert_eq!(
        store
            .heartbeat(&[claimed[0].lease()], later(60))
            .await
            .unwrap(),
        [running]
    );
    db.drop_db([store]).await;
}

#[tokio::test]
async fn rescue_retries_expired_leases_behind_fresh_work() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let now = Utc::now();
    let id = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    let live = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    let w = names(&["w"]);
    let dead = claim_one(&store, "dead", now, now + chrono::Duration::seconds(1)).await;
    let alive = claim_one(&store, "alive", now, now + chrono::Duration::seconds(60)).await;
    assert_eq!(ids(&dead), [id]);
    let backoff = |attempt: u32| Duration::from_secs(10 * u64::from(attempt));
    assert_eq!(
        store.rescue(now, &backoff).await.unwrap(),
        0,
        "lease still running"
    );
    // The live runner heartbeats past the rescue time; the dead one's lease stays held
    // until the rescue.
    assert!(store
        .heartbeat(&[alive[0].lease()], now + chrono::Duration::seconds(120))
        .await
        .unwrap()
        .is_empty());
    let at = now + chrono::Duration::seconds(2);
    assert_eq!(store.rescue(at, &backoff).await.unwrap(), 1);
    let j = store.get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Retryable, "a failed attempt");
    assert_eq!(j.attempt, 1, "the attempt is kept");
    assert_eq!(
        j.scheduled_at.timestamp_millis(),
        (at + chrono::Duration::seconds(10)).timestamp_millis(),
        "after backoff(attempt)"
    );
    assert!(
        j.last_error
            .as_deref()
            .is_some_and(|e| e.contains("attempt 1 of 5")),
        "{:?}",
        j.last_error
    );
    assert_eq!(j.finished_at, None);
    assert_eq!(state_of(&store, live).await, JobState::Executing);
    // The rescued runner's heartbeat says the lease is gone.
    assert_eq!(
        store
            .heartbeat(&[dead[0].lease(), alive[0].lease()], later(300))
            .await
            .unwrap(),
        [id]
    );
    assert!(store.heartbeat(&[], later(60)).await.unwrap().is_empty());
    assert_eq!(
        store
            .rescue(now + chrono::Duration::seconds(100), &backoff)
            .await
            .unwrap(),
        0,
        "the heartbeat renewed the live lease"
    );
    assert!(
        claim(&store, "default", &["w"]).await.is_empty(),
        "behind its backoff"
    );
    let again = store
        .claim(
            "default",
            &w,
            10,
            "r",
            at + chrono::Duration::seconds(11),
            later(60),
        )
        .await
        .unwrap();
    assert_eq!(ids(&again), [id]);
    assert_eq!((again[0].attempt, again[0].token), (2, 2));
    db.drop_db([store]).await;
}

#[tokio::test]
async fn rescue_on_the_last_attempt_discards() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let id = store
        .enqueue(None, &job("w").max_attempts(1))
        .await
        .unwrap()
        .unwrap();
    let t0 = Utc::now();
    claim_one(
        &store,
        "crashed",
        t0,
        t0 + chrono::Duration::milliseconds(10),
    )
    .await;
    let at = t0 + chrono::Duration::milliseconds(20);
    assert_eq!(store.rescue(at, &no_backoff).await.unwrap(), 1);
    let j = store.get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Discarded, "no endless crash loop");
    assert_eq!(
        j.finished_at.map(|t| t.timestamp_millis()),
        Some(at.timestamp_millis())
    );
    assert!(
        j.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("discarded:")),
        "{:?}",
        j.last_error
    );
    db.drop_db([store]).await;
}

#[tokio::test]
async fn rescue_skips_a_job_locked_by_another_transaction() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let id = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    let t0 = Utc::now();
    claim_one(
        &store,
        "crashed",
        t0,
        t0 + chrono::Duration::milliseconds(10),
    )
    .await;
    // A late runner is finishing the job right now (it holds the row lock).
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("SELECT id FROM signal_bus_jobs WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    let rescued = tokio::time::timeout(
        Duration::from_secs(5),
        store.rescue(t0 + chrono::Duration::seconds(1), &no_backoff),
    )
    .await
    .expect("the rescue does not wait for the lock")
    .unwrap();
    assert_eq!(rescued, 0);
    tx.rollback().await.unwrap();
    assert_eq!(
        store
            .rescue(t0 + chrono::Duration::seconds(1), &no_backoff)
            .await
            .unwrap(),
        1
    );
    db.drop_db([store]).await;
}

#[tokio::test]
async fn a_stale_lease_is_refused() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let id = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    let t0 = Utc::now();
    let first = claim_one(&store, "slow", t0, t0 + chrono::Duration::milliseconds(10)).await;
    let t = first[0].token;
    assert_eq!(
        store
            .rescue(t0 + chrono::Duration::milliseconds(20), &no_backoff)
            .await
            .unwrap(),
        1
    );
    let second = claim_one(
        &store,
        "fast",
        Utc::now() + chrono::Duration::seconds(1),
        later(60),
    )
    .await;
    assert_eq!(ids(&second), [id]);
    assert_eq!(second[0].token, t + 1);
    let (old, new) = (first[0].lease(), second[0].lease());
    assert_eq!(old, LeaseToken { job: id, token: t });

    // The slow runner comes back: every change it tries is refused.
    for r in [
        store.complete(old, Utc::now()).await,
        store.retry(old, Utc::now(), "late").await,
        store.snooze(old, Utc::now()).await,
        store
            .cancel(old, CancelReason::Worker, "late", Utc::now())
            .await,
        store.discard(old, "late", Utc::now()).await,
    ] {
        assert!(
            matches!(r, Err(QueueError::LeaseLost { job }) if job == id),
            "{r:?}"
        );
    }
    assert_eq!(store.heartbeat(&[old], later(60)).await.unwrap(), [id]);
    assert_eq!(store.complete_many(&[old], Utc::now()).await.unwrap(), [id]);
    let j = store.get(id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.token),
        (JobState::Executing, t + 1),
        "untouched"
    );

    store.complete(new, Utc::now()).await.unwrap();
    assert_eq!(state_of(&store, id).await, JobState::Completed);
    db.drop_db([store]).await;
}

#[tokio::test]
async fn complete_many_returns_the_leases_it_lost() {
    let db = TestDb::new().await;
    let store = db.store().await;
    for _ in 0..4 {
        store.enqueue(None, &job("w")).await.unwrap();
    }
    let claimed = claim(&store, "default", &["w"]).await;
    assert_eq!(claimed.len(), 4);
    // One cancelled by hand, one completed already.
    assert!(store
        .cancel_job(claimed[1].id, CancelReason::Manual, "by hand", Utc::now())
        .await
        .unwrap());
    store
        .complete(claimed[3].lease(), Utc::now())
        .await
        .unwrap();
    let stale = LeaseToken {
        job: claimed[0].id,
        token: claimed[0].token - 1,
    };
    let leases: Vec<LeaseToken> = claimed
        .iter()
        .map(Job::lease)
        .rev()
        .chain([stale])
        .collect();
    let lost = store.complete_many(&leases, Utc::now()).await.unwrap();
    assert_eq!(lost, [claimed[3].id, claimed[1].id, claimed[0].id]);
    assert_eq!(state_of(&store, claimed[0].id).await, JobState::Completed);
    assert_eq!(state_of(&store, claimed[1].id).await, JobState::Cancelled);
    assert_eq!(state_of(&store, claimed[2].id).await, JobState::Completed);
    assert!(store
        .complete_many(&[], Utc::now())
        .await
        .unwrap()
        .is_empty());
    db.drop_db([store]).await;
}

#[tokio::test]
async fn redrive_makes_dead_jobs_available() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let a = store.enqueue(None, &job("a")).await.unwrap().unwrap();
    let b = store.enqueue(None, &job("b")).await.unwrap().unwrap();
    let c = store.enqueue(None, &job("c")).await.unwrap().unwrap();
    let claimed = claim(&store, "default", &["a", "b", "c"]).await;
    store
        .discard(claimed[0].lease(), "out of attempts", Utc::now())
        .await
        .unwrap();
    store
        .cancel(
            claimed[1].lease(),
            CancelReason::SchemaMismatch,
            "schema_mismatch: bad args",
            Utc::now(),
        )
        .await
        .unwrap();
    store
        .complete(claimed[2].lease(), Utc::now())
        .await
        .unwrap();
    let now = Utc::now();
    assert_eq!(store.redrive(&[a, b, c], now).await.unwrap(), 2);
    assert_eq!(store.redrive(&[], now).await.unwrap(), 0);
    for id in [a, b] {
        let j = store.get(id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Available);
        assert_eq!(j.attempt, 0);
        assert_eq!(j.finished_at, None);
        assert_eq!(j.cancel_reason, None);
        assert_eq!(j.scheduled_at.timestamp_millis(), now.timestamp_millis());
    }
    assert_eq!(state_of(&store, c).await, JobState::Completed);
    // Claimed again with a new token.
    let again = claim(&store, "default", &["a", "b"]).await;
    assert!(again.iter().all(|j| j.token == 2 && j.attempt == 1));
    db.drop_db([store]).await;
}

/// Enqueues a job of worker `w`, claims it and finishes it as `state` at `at`.
async fn finished_job(store: &PostgresStore, state: JobState, at: DateTime<Utc>) -> i64 {
    finished_job_with(store, None, state, at).await
}

async fn finished_job_with(
    store: &PostgresStore,
    signal: Option<&Signal>,
    state: JobState,
    at: DateTime<Utc>,
) -> i64 {
    let new = match signal {
        Some(s) => signal_job("fin", s),
        None => job("fin"),
    };
    let id = store.enqueue(signal, &new).await.unwrap().unwrap();
    let claimed = claim(store, "default", &["fin"]).await;
    assert_eq!(ids(&claimed), [id]);
    let lease = claimed[0].lease();
    match state {
        JobState::Completed => store.complete(lease, at).await.unwrap(),
        JobState::Cancelled => store
            .cancel(lease, CancelReason::Worker, "no", at)
            .await
            .unwrap(),
        JobState::Discarded => store.discard(lease, "dead", at).await.unwrap(),
        other => panic!("{other} is not final"),
    }
    id
}

#[tokio::test]
async fn prune_deletes_old_final_jobs_per_state() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let long_ago = Utc::now() - chrono::Duration::days(30);
    let before = Utc::now() - chrono::Duration::days(1);
    let old_done = finished_job(&store, JobState::Completed, long_ago).await;
    let new_done = finished_job(&store, JobState::Completed, Utc::now()).await;
    let old_cancelled: Vec<i64> = vec![
        finished_job(&store, JobState::Cancelled, long_ago).await,
        finished_job(&store, JobState::Cancelled, long_ago).await,
    ];
    let old_discarded = finished_job(&store, JobState::Discarded, long_ago).await;
    let open = store.enqueue(None, &job("open")).await.unwrap().unwrap();
    let running = store.enqueue(None, &job("run")).await.unwrap().unwrap();
    claim(&store, "default", &["run"]).await;

    // States that are not final delete nothing, whatever their age.
    for state in [
        JobState::Available,
        JobState::Scheduled,
        JobState::Executing,
        JobState::Retryable,
    ] {
        assert_eq!(store.prune(state, later(3600), 100).await.unwrap(), 0);
    }
    assert_eq!(
        store.prune(JobState::Completed, before, 0).await.unwrap(),
        0,
        "limit 0"
    );
    assert_eq!(
        store.prune(JobState::Completed, before, 100).await.unwrap(),
        1
    );
    assert!(store.get(old_done).await.unwrap().is_none());
    assert!(store.get(new_done).await.unwrap().is_some());
    // At most `limit` per call.
    assert_eq!(
        store.prune(JobState::Cancelled, before, 1).await.unwrap(),
        1
    );
    assert_eq!(
        store.prune(JobState::Cancelled, before, 1).await.unwrap(),
        1
    );
    assert_eq!(
        store.prune(JobState::Cancelled, before, 1).await.unwrap(),
        0
    );
    for id in old_cancelled {
        assert!(store.get(id).await.unwrap().is_none());
    }
    assert!(store.get(old_discarded).await.unwrap().is_some());
    assert_eq!(
        store.prune(JobState::Discarded, before, 100).await.unwrap(),
        1
    );
    assert!(store.get(old_discarded).await.unwrap().is_none());
    assert!(store.get(open).await.unwrap().is_some());
    assert!(store.get(running).await.unwrap().is_some());
    assert!(store.get(new_done).await.unwrap().is_some());
    db.drop_db([store]).await;
}

#[tokio::test]
async fn prune_signals_keeps_referenced_and_recent_signals() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let long_ago = Utc::now() - chrono::Duration::days(30);
    let before = Utc::now() - chrono::Duration::hours(1);

    // Referenced by a live job: kept however old.
    let live = keyed("/p", "live", 1);
    let live_job = store
        .enqueue(Some(&live), &signal_job("w", &live))
        .await
        .unwrap()
        .unwrap();
    // Referenced by a finished job that is still kept: kept.
    let kept = keyed("/p", "kept", 2);
    finished_job_with(&store, Some(&kept), JobState::Discarded, long_ago).await;
    // Their jobs pruned: deleted.
    let gone_a = keyed("/p", "gone-a", 3);
    let gone_b = keyed("/p", "gone-b", 4);
    for s in [&gone_a, &gone_b] {
        finished_job_with(&store, Some(s), JobState::Completed, long_ago).await;
    }
    assert_eq!(
        store.prune(JobState::Completed, before, 100).await.unwrap(),
        2
    );
    // No job refers to it, but it is recent: kept.
    let recent = keyed("/p", "recent", 5);
    finished_job_with(&store, Some(&recent), JobState::Completed, long_ago).await;
    store.prune(JobState::Completed, before, 100).await.unwrap();
    for s in [&live, &kept, &gone_a, &gone_b] {
        age_signal(&store, s, long_ago).await;
    }

    assert_eq!(store.prune_signals(before, 0).await.unwrap(), 0, "limit 0");
    assert_eq!(store.prune_signals(before, 1).await.unwrap(), 1);
    assert_eq!(store.prune_signals(before, 10).await.unwrap(), 1);
    assert_eq!(store.prune_signals(before, 10).await.unwrap(), 0);
    for (s, there) in [
        (&live, true),
        (&kept, true),
        (&gone_a, false),
        (&gone_b, false),
        (&recent, true),
    ] {
        assert_eq!(
            store
                .load_signal(s.source(), s.id())
                .await
                .unwrap()
                .is_some(),
            there,
            "{}",
            s.id()
        );
    }
    // The live job still finds its signal.
    let claimed = claim(&store, "default", &["w"]).await;
    assert_eq!(ids(&claimed), [live_job]);
    let (source, id) = claimed[0].signal_ref().unwrap();
    assert_eq!(store.load_signal(source, id).await.unwrap(), Some(live));
    db.drop_db([store]).await;
}

/// An enqueue that stores an old, unreferenced signal again races a prune: the prune skips
/// the row the enqueue holds, and after the commit the signal is young and referenced.
#[tokio::test]
async fn prune_signals_never_deletes_a_signal_an_enqueue_is_storing_again() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let long_ago = Utc::now() - chrono::Duration::days(30);
    let before = Utc::now() - chrono::Duration::hours(1);
    let sig = keyed("/race", "r-1", 1);
    finished_job_with(&store, Some(&sig), JobState::Completed, long_ago).await;
    store.prune(JobState::Completed, before, 100).await.unwrap();
    age_signal(&store, &sig, long_ago).await;

    let mut tx = store.pool().begin().await.unwrap();
    let id = store
        .enqueue_in(
            &mut tx,
            Some(&keyed("/race", "r-1", 2)),
            &signal_job("w", &sig),
        )
        .await
        .unwrap()
        .unwrap();
    let pruned = tokio::time::timeout(Duration::from_secs(5), store.prune_signals(before, 10))
        .await
        .expect("the prune does not wait for the enqueue")
        .unwrap();
    assert_eq!(pruned, 0, "the row the enqueue holds is skipped");
    tx.commit().await.unwrap();
    assert_eq!(store.prune_signals(before, 10).await.unwrap(), 0);
    assert_eq!(
        store.load_signal("/race", "r-1").await.unwrap(),
        Some(sig.clone()),
        "still there, with its first body"
    );
    assert_eq!(
        signal_columns(&store, id).await,
        (Some("/race".to_owned()), Some("r-1".to_owned()))
    );
    db.drop_db([store]).await;
}

#[tokio::test]
async fn registry_tells_waiting_jobs_from_jobs_nobody_runs() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let t = Utc::now();
    let seen_at = |queue: &'static str, worker: &'static str| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT seen_at FROM signal_bus_workers WHERE queue = $1 AND worker = $2",
            )
            .bind(queue)
            .bind(worker)
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    };
    let in_a_minute = t + chrono::Duration::minutes(1);
    store
        .register_workers("q", &names(&["a", "b", "a"]), in_a_minute)
        .await
        .unwrap();
    // An older report never moves seen_at back.
    store
        .register_workers("q", &names(&["a"]), t)
        .await
        .unwrap();
    store.register_workers("q", &[], t).await.unwrap();
    assert_eq!(
        seen_at("q", "a").await,
        Some(in_a_minute.timestamp_millis())
    );
    assert_eq!(
        seen_at("q", "b").await,
        Some(in_a_minute.timestamp_millis())
    );
    assert_eq!(seen_at("other", "a").await, None);

    let forwarder = signal_bus::queue::forwarder_worker("siem");
    let ja = store
        .enqueue(None, &job("a").queue("q"))
        .await
        .unwrap()
        .unwrap();
    let jc = store
        .enqueue(None, &job("c").queue("q"))
        .await
        .unwrap()
        .unwrap();
    let jc_later = store
        .enqueue(
            None,
            &job("c")
                .queue("q")
                .scheduled_at(t + chrono::Duration::hours(1)),
        )
        .await
        .unwrap()
        .unwrap();
    let jf = store
        .enqueue(None, &job(&forwarder).queue("q"))
        .await
        .unwrap()
        .unwrap();
    let jo = store
        .enqueue(None, &job("a").queue("other"))
        .await
        .unwrap()
        .unwrap();
    // A retryable job that is due counts; an executing one does not.
    store.enqueue(None, &job("c").queue("q")).await.unwrap();
    let jr = store
        .enqueue(None, &job("r").queue("q"))
        .await
        .unwrap()
        .unwrap();
    let running = claim(&store, "q", &["r"]).await;
    assert_eq!(ids(&running), [jr]);
    store.retry(running[0].lease(), t, "again").await.unwrap();
    let jx = store
        .enqueue(None, &job("x").queue("q"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&claim(&store, "q", &["x"]).await), [jx]);

    let soon = Utc::now() + chrono::Duration::seconds(30);
    let key = |q: &str, w: &str| (q.to_owned(), w.to_owned());
    let expected: BTreeMap<(String, String), u64> = [
        (key("q", "c"), 2),
        (key("q", &forwarder), 1),
        (key("q", "r"), 1),
        (key("other", "a"), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        store
            .unregistered(t - chrono::Duration::seconds(1), soon)
            .await
            .unwrap(),
        expected
    );
    // Later, the scheduled one is due too; and `a` was not seen since then.
    let much_later = t + chrono::Duration::hours(2);
    let counted = store.unregistered(much_later, much_later).await.unwrap();
    assert_eq!(counted[&key("q", "c")], 3);
    assert_eq!(counted[&key("q", "a")], 1);

    // Cancel what has been due since before the cutoff and was not seen since.
    let cancelled = store.cancel_unregistered(soon, soon).await.unwrap();
    assert_eq!(cancelled, expected);
    let j = store.get(jc).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Cancelled);
    assert_eq!(j.cancel_reason, Some(CancelReason::UnknownWorker));
    assert!(
        j.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("unknown_worker") && e.contains("`c`")),
        "{:?}",
        j.last_error
    );
    assert_eq!(
        j.finished_at.map(|f| f.timestamp_millis()),
        Some(soon.timestamp_millis())
    );
    let j = store.get(jf).await.unwrap().unwrap();
    assert_eq!(j.cancel_reason, Some(CancelReason::UnknownForwarder));
    assert!(
        j.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("unknown_forwarder") && e.contains("`siem`")),
        "{:?}",
        j.last_error
    );
    assert_eq!(state_of(&store, jo).await, JobState::Cancelled);
    assert_eq!(state_of(&store, jr).await, JobState::Cancelled);
    assert_eq!(
        state_of(&store, ja).await,
        JobState::Available,
        "registered"
    );
    assert_eq!(
        state_of(&store, jc_later).await,
        JobState::Scheduled,
        "not due yet"
    );
    assert_eq!(state_of(&store, jx).await, JobState::Executing, "running");
    assert!(store
        .cancel_unregistered(soon, soon)
        .await
        .unwrap()
        .is_empty());
    db.drop_db([store]).await;
}

#[tokio::test]
async fn cancel_unregistered_skips_a_job_being_claimed() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let locked = store.enqueue(None, &job("nobody")).await.unwrap().unwrap();
    let free = store.enqueue(None, &job("nobody")).await.unwrap().unwrap();
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("SELECT id FROM signal_bus_jobs WHERE id = $1 FOR UPDATE")
        .bind(locked)
        .execute(&mut *tx)
        .await
        .unwrap();
    let cutoff = later(10);
    let cancelled = tokio::time::timeout(
        Duration::from_secs(5),
        store.cancel_unregistered(cutoff, cutoff),
    )
    .await
    .expect("it does not wait for the lock")
    .unwrap();
    assert_eq!(
        cancelled.get(&("default".to_owned(), "nobody".to_owned())),
        Some(&1)
    );
    tx.rollback().await.unwrap();
    assert_eq!(state_of(&store, locked).await, JobState::Available);
    assert_eq!(state_of(&store, free).await, JobState::Cancelled);
    db.drop_db([store]).await;
}

#[tokio::test]
async fn counts_cover_every_state() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let empty = store.counts().await.unwrap();
    assert_eq!(empty.len(), JobState::ALL.len());
    assert!(empty.values().all(|n| *n == 0));

    for _ in 0..5 {
        store.enqueue(None, &job("w")).await.unwrap();
    }
    store
        .enqueue(None, &job("w").scheduled_at(later(600)))
        .await
        .unwrap();
    let claimed = store
        .claim("default", &names(&["w"]), 4, "r", Utc::now(), later(60))
        .await
        .unwrap();
    store
        .complete(claimed[0].lease(), Utc::now())
        .await
        .unwrap();
    store
        .retry(claimed[1].lease(), later(60), "e")
        .await
        .unwrap();
    store
        .cancel(claimed[2].lease(), CancelReason::Worker, "c", Utc::now())
        .await
        .unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(counts[&JobState::Available], 1);
    assert_eq!(counts[&JobState::Scheduled], 1);
    assert_eq!(counts[&JobState::Executing], 1);
    assert_eq!(counts[&JobState::Retryable], 1);
    assert_eq!(counts[&JobState::Completed], 1);
    assert_eq!(counts[&JobState::Cancelled], 1);
    assert_eq!(counts[&JobState::Discarded], 0);

    let listed = store.list(JobState::Available, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(store.list(JobState::Completed, 0).await.unwrap().len(), 0);
    let cancelled = store.list(JobState::Cancelled, 10).await.unwrap();
    assert_eq!(cancelled[0].cancel_reason, Some(CancelReason::Worker));
    db.drop_db([store]).await;
}

#[tokio::test]
async fn corrupt_rows_name_their_id() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let sig = signal(1);
    let good = signal(2);
    let id = store.enqueue(Some(&sig), &job("w")).await.unwrap().unwrap();
    store.enqueue(Some(&good), &job("w")).await.unwrap();
    sqlx::query("UPDATE signal_bus_signals SET body = $1 WHERE source = $2 AND id = $3")
        .bind(&b"not a signal"[..])
        .bind(sig.source())
        .bind(sig.id())
        .execute(store.pool())
        .await
        .unwrap();
    match store.load_signal(sig.source(), sig.id()).await {
        Err(QueueError::Corrupt { what }) => assert!(what.contains(sig.id()), "{what}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // In a batch, the corrupt one is an error for its key only.
    let loaded = store
        .load_signals(&[(sig.source(), sig.id()), (good.source(), good.id())])
        .await
        .unwrap();
    assert_eq!(loaded.len(), 2);
    for ((source, id), result) in loaded {
        if id == sig.id() {
            assert_eq!(source, sig.source());
            assert!(matches!(result, Err(QueueError::Corrupt { .. })));
        } else {
            assert_eq!(result.unwrap(), good);
        }
    }

    sqlx::query("UPDATE signal_bus_jobs SET cancel_reason = 'bored' WHERE id = $1")
        .bind(id)
        .execute(store.pool())
        .await
        .unwrap();
    match store.get(id).await {
        Err(QueueError::Corrupt { what }) => {
            assert!(
                what.contains(&id.to_string()) && what.contains("bored"),
                "{what}"
            )
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    sqlx::query("UPDATE signal_bus_jobs SET state = 'lost', cancel_reason = NULL WHERE id = $1")
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
            .map(|i| (None, NewJob::new("w", json!({ "n": chunk * 500 + i }))))
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
            let workers = names(&["w"]);
            let mut seen = Vec::new();
            loop {
                let jobs = runner
                    .claim("default", &workers, 10, &owner, Utc::now(), later(300))
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    break;
                }
                // Half one by one, half in one write.
                let (one, many) = jobs.split_at(jobs.len() / 2);
                for j in &jobs {
                    assert_eq!((j.attempt, j.token), (1, 1), "job {} claimed twice", j.id);
                    seen.push(j.id);
                }
                for j in one {
                    runner.complete(j.lease(), Utc::now()).await.unwrap();
                }
                let leases: Vec<LeaseToken> = many.iter().map(Job::lease).collect();
                let lost = runner.complete_many(&leases, Utc::now()).await.unwrap();
                assert!(lost.is_empty(), "{lost:?}");
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
        .enqueue_in(&mut tx, Some(&kept), &signal_job("audit", &kept))
        .await
        .unwrap()
        .unwrap();
    assert!(
        store.get(id).await.unwrap().is_none(),
        "invisible before commit"
    );
    tx.commit().await.unwrap();
    assert_eq!(state_of(&store, id).await, JobState::Available);
    assert_eq!(
        store.load_signal(kept.source(), kept.id()).await.unwrap(),
        Some(kept.clone())
    );
    assert_eq!(
        signal_columns(&store, id).await,
        (Some(kept.source().to_owned()), Some(kept.id().to_owned()))
    );

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
    assert!(store
        .load_signal(dropped.source(), dropped.id())
        .await
        .unwrap()
        .is_none());
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
    assert_eq!(
        versions,
        vec![1, 2, 3, 4],
        "each version applied exactly once"
    );
    stores.push(again);
    db.drop_db(stores).await;
}

/// The schema of the release before signals were keyed by source: versions 1 and 2 exactly
/// as that release ran them.
const OLD_SCHEMA: &[&str] = &[
    "CREATE TABLE signal_bus_signals (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            body BYTEA NOT NULL,
            stored_at BIGINT NOT NULL
        )",
    "CREATE TABLE signal_bus_jobs (
            id BIGSERIAL PRIMARY KEY,
            queue TEXT NOT NULL,
            worker TEXT NOT NULL,
            args JSONB NOT NULL,
            state TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            priority SMALLINT NOT NULL DEFAULT 0,
            inserted_at BIGINT NOT NULL,
            scheduled_at BIGINT NOT NULL,
            attempted_at BIGINT,
            finished_at BIGINT,
            lease_until BIGINT,
            owner TEXT,
            unique_key TEXT,
            unique_until BIGINT,
            last_error TEXT
        )",
    "CREATE INDEX signal_bus_jobs_fetch
            ON signal_bus_jobs (queue, state, priority, scheduled_at, id)",
    "CREATE INDEX signal_bus_jobs_unique
            ON signal_bus_jobs (unique_key) WHERE unique_key IS NOT NULL",
    "CREATE INDEX signal_bus_jobs_lease ON signal_bus_jobs (state, lease_until)",
    "CREATE INDEX signal_bus_jobs_runnable
            ON signal_bus_jobs (queue, priority, scheduled_at, id)
            WHERE state IN ('available', 'scheduled', 'retryable')",
];

/// Creates the old release's schema on `conn` and records versions 1 and 2 as it did.
async fn create_old_schema(conn: &mut PgConnection) {
    for statement in OLD_SCHEMA {
        sqlx::query(statement).execute(&mut *conn).await.unwrap();
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS signal_bus_migrations (
            version INTEGER PRIMARY KEY,
            applied_at BIGINT NOT NULL
        )",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    for version in [1_i32, 2] {
        sqlx::query("INSERT INTO signal_bus_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(Utc::now().timestamp_millis())
            .execute(&mut *conn)
            .await
            .unwrap();
    }
}

/// Stores a signal body the way the old release did (keyed by id alone).
async fn old_signal(conn: &mut PgConnection, id: &str, ty: &str, body: &[u8]) {
    sqlx::query(
        "INSERT INTO signal_bus_signals (id, type, body, stored_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(ty)
    .bind(body)
    .bind(Utc::now().timestamp_millis())
    .execute(&mut *conn)
    .await
    .unwrap();
}

/// Inserts a job the way the old release did; `finished` makes it completed.
async fn old_job(
    conn: &mut PgConnection,
    worker: &str,
    args: serde_json::Value,
    finished: bool,
) -> i64 {
    let now = Utc::now().timestamp_millis() - 1_000;
    sqlx::query_scalar(
        "INSERT INTO signal_bus_jobs
            (queue, worker, args, state, attempt, max_attempts, priority, inserted_at,
             scheduled_at, attempted_at, finished_at, unique_key, unique_until)
         VALUES ('default', $1, $2::jsonb, $3, $4, 5, 0, $5, $5, $6, $6, NULL, NULL)
         RETURNING id",
    )
    .bind(worker)
    .bind(args.to_string())
    .bind(if finished { "completed" } else { "available" })
    .bind(i32::from(finished))
    .bind(now)
    .bind(finished.then_some(now + 500))
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

/// The args of an old release's forwarder job.
fn old_forwarder_args(name: &str, signal: &Signal) -> serde_json::Value {
    json!({
        "forwarder": name,
        "signal_id": signal.id(),
        "occurred_at": signal.time_rfc3339(),
    })
}

/// A database written by the previous release upgrades without losing a row, and its
/// pending forwarder jobs are then delivered by the new runner.
#[tokio::test]
async fn an_old_database_upgrades_and_delivers_its_pending_jobs() {
    use signal_bus::{
        adapter::Handler,
        queue::{DispatchMode, Forwarder, Queue},
        Bus,
    };
    use std::sync::Mutex;

    let db = TestDb::new().await;
    let signals = [
        keyed("/billing", "old-1", 1),
        keyed("/accounts", "old-2", 2),
    ];
    let mut conn = db.conn().await;
    create_old_schema(&mut conn).await;
    let mut pending = Vec::new();
    for s in &signals {
        old_signal(&mut conn, s.id(), s.ty(), &s.to_json_bytes()).await;
        pending.push(
            old_job(
                &mut conn,
                "signal_bus.forwarder",
                old_forwarder_args("siem", s),
                false,
            )
            .await,
        );
    }
    let done = old_job(
        &mut conn,
        "signal_bus.forwarder",
        old_forwarder_args("siem", &signals[0]),
        true,
    )
    .await;
    conn.close().await.unwrap();

    let store = db.store().await;
    let versions: Vec<i32> =
        sqlx::query_scalar("SELECT version FROM signal_bus_migrations ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(versions, [1, 2, 3, 4]);
    assert_eq!(count_signals(&store).await, 2, "every signal kept");
    let counts = store.counts().await.unwrap();
    assert_eq!(counts[&JobState::Available], 2, "{counts:?}");
    assert_eq!(counts[&JobState::Completed], 1, "{counts:?}");
    for (id, s) in pending.iter().zip(&signals).chain([(&done, &signals[0])]) {
        let j = store.get(*id).await.unwrap().unwrap();
        assert_eq!(j.worker, "signal_bus.forwarder:siem");
        assert_eq!(j.forwarder(), Some("siem"));
        assert_eq!(j.args["signal_source"], s.source());
        assert_eq!(j.args["signal_id"], s.id());
        assert_eq!(j.args["forwarder"], "siem", "the old args are kept");
        assert_eq!(j.signal_ref(), Some((s.source(), s.id())));
        assert_eq!(j.token, 0);
        assert_eq!(j.cancel_reason, None);
        assert_eq!(
            signal_columns(&store, *id).await,
            (Some(s.source().to_owned()), Some(s.id().to_owned()))
        );
    }
    for s in &signals {
        assert_eq!(
            store
                .load_signal(s.source(), s.id())
                .await
                .unwrap()
                .as_ref(),
            Some(s),
            "found by (source, id)"
        );
    }
    // The new schema works on the old rows: keyed inserts and prunes.
    assert_eq!(
        store
            .prune_signals(Utc::now() + chrono::Duration::days(1), 10)
            .await
            .unwrap(),
        0,
        "every signal is referenced"
    );

    // The pending jobs are delivered end to end.
    let queue = Queue::new(store.clone());
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let seen: Arc<Mutex<Vec<Signal>>> = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    bus.subscribe(
        "audit.**",
        Forwarder::new(
            "siem",
            Handler::new(move |sig: Arc<Signal>| {
                let recorded = Arc::clone(&recorded);
                async move {
                    recorded.lock().unwrap().push((*sig).clone());
                    Ok(())
                }
            }),
        )
        .dispatch(DispatchMode::Async),
    )
    .unwrap();
    let runner = queue.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = queue.counts().await.unwrap();
        if counts[&JobState::Completed] == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upgraded jobs were not delivered: {counts:?}, {:?}",
            store.list(JobState::Cancelled, 10).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runner.shutdown().await;
    let mut got = seen.lock().unwrap().clone();
    got.sort_by(|a, b| a.id().cmp(b.id()));
    assert_eq!(got, signals, "each signal delivered once, as stored");
    db.drop_db([store]).await;
}

/// Rows the old release could hold but no one could read (a body that is not a signal, a
/// forwarder job whose signal was deleted) survive the upgrade and end as they would have;
/// other jobs that name a signal refer to it; cancelled jobs get their reason.
#[tokio::test]
async fn an_old_database_keeps_the_rows_it_cannot_read() {
    let db = TestDb::new().await;
    let good = keyed("/ok", "good", 1);
    let mut conn = db.conn().await;
    create_old_schema(&mut conn).await;
    old_signal(&mut conn, good.id(), good.ty(), &good.to_json_bytes()).await;
    old_signal(&mut conn, "broken", "audit.login", b"not json").await;
    old_signal(&mut conn, "not-utf8", "audit.login", &[0xff, 0xfe, 0x00]).await;
    let broken_job = old_job(
        &mut conn,
        "signal_bus.forwarder",
        json!({ "forwarder": "siem", "signal_id": "broken" }),
        false,
    )
    .await;
    let gone_job = old_job(
        &mut conn,
        "signal_bus.forwarder",
        json!({ "forwarder": "siem", "signal_id": "deleted" }),
        false,
    )
    .await;
    let nameless = old_job(
        &mut conn,
        "signal_bus.forwarder",
        json!({ "signal_id": good.id() }),
        false,
    )
    .await;
    let generic = old_job(&mut conn, "audit", json!({ "signal_id": good.id() }), false).await;
    let own_source = old_job(
        &mut conn,
        "audit",
        json!({ "signal_id": good.id(), "signal_source": "/mine" }),
        false,
    )
    .await;
    // Cancelled jobs, with what the old release wrote for each reason.
    let mut cancelled = Vec::new();
    for (error, reason) in [
        (
            "signal_not_found: signal `x` was deleted",
            CancelReason::SignalNotFound,
        ),
        (
            "unknown_forwarder: no forwarder `y` is subscribed",
            CancelReason::UnknownForwarder,
        ),
        ("unknown worker `z`", CancelReason::UnknownWorker),
        ("schema_mismatch: bad", CancelReason::SchemaMismatch),
        ("not today", CancelReason::Worker),
    ] {
        let id = old_job(&mut conn, "report", json!({}), true).await;
        sqlx::query(
            "UPDATE signal_bus_jobs SET state = 'cancelled', last_error = $1 WHERE id = $2",
        )
        .bind(error)
        .bind(id)
        .execute(&mut conn)
        .await
        .unwrap();
        cancelled.push((id, reason));
    }
    let plain = old_job(&mut conn, "report", json!({ "n": 1 }), false).await;
    conn.close().await.unwrap();

    let store = db.store().await;
    assert_eq!(count_signals(&store).await, 3, "every signal kept");
    let counts = store.counts().await.unwrap();
    assert_eq!(counts[&JobState::Available], 6);
    assert_eq!(counts[&JobState::Cancelled], 5);
    for (id, reason) in cancelled {
        let j = store.get(id).await.unwrap().unwrap();
        assert_eq!(j.cancel_reason, Some(reason), "{:?}", j.last_error);
    }
    let sources: Vec<(String, String)> =
        sqlx::query_as("SELECT id, source FROM signal_bus_signals ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        sources,
        [
            ("broken".to_owned(), String::new()),
            ("good".to_owned(), "/ok".to_owned()),
            ("not-utf8".to_owned(), String::new()),
        ]
    );
    // Its job finds the unreadable signal, which says it is corrupt.
    let j = store.get(broken_job).await.unwrap().unwrap();
    assert_eq!(j.worker, "signal_bus.forwarder:siem");
    assert_eq!(j.signal_ref(), Some(("", "broken")));
    assert!(matches!(
        store.load_signal("", "broken").await,
        Err(QueueError::Corrupt { .. })
    ));
    // A job whose signal was already gone gets no source: nothing to point at.
    let j = store.get(gone_job).await.unwrap().unwrap();
    assert_eq!(j.worker, "signal_bus.forwarder:siem");
    assert_eq!(j.args.get("signal_source"), None);
    assert_eq!(j.signal_ref(), None);
    assert_eq!(signal_columns(&store, gone_job).await, (None, None));
    // A forwarder job without a name keeps its worker (nobody registers it).
    let j = store.get(nameless).await.unwrap().unwrap();
    assert_eq!(j.worker, "signal_bus.forwarder");
    // Other jobs that name a signal refer to it (retention keeps it), but their args are
    // their workers' own and stay as they were.
    let j = store.get(generic).await.unwrap().unwrap();
    assert_eq!(j.worker, "audit");
    assert_eq!(j.args, json!({ "signal_id": "good" }));
    assert_eq!(
        signal_columns(&store, generic).await,
        (Some("/ok".to_owned()), Some("good".to_owned()))
    );
    let j = store.get(own_source).await.unwrap().unwrap();
    assert_eq!(j.args["signal_source"], "/mine");
    assert_eq!(
        signal_columns(&store, own_source).await,
        (Some("/ok".to_owned()), Some("good".to_owned()))
    );
    assert_eq!(signal_columns(&store, plain).await, (None, None));
    assert_eq!(store.load_signal("/ok", "good").await.unwrap(), Some(good));
    db.drop_db([store]).await;
}

#[tokio::test]
async fn unreachable_server_is_a_clear_store_error() {
    let start = Instant::now();
    // A password in the URL must not come back in the error, nor anywhere in its causes.
    let err = PostgresStore::builder("postgres://postgres:hunter2-secret@127.0.0.1:1/x")
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
        QueueError::Store {
            backend, message, ..
        } => {
            assert_eq!(*backend, "postgres");
            assert!(!message.is_empty());
        }
        other => panic!("expected a store error, got {other:?}"),
    }
    // The cause is kept whole: sqlx's error, and under it the refused connection.
    let mut chain: Vec<&(dyn std::error::Error + 'static)> = vec![&err];
    while let Some(next) = chain.last().unwrap().source() {
        chain.push(next);
    }
    assert!(
        chain
            .iter()
            .any(|e| e.downcast_ref::<sqlx::Error>().is_some()),
        "{chain:?}"
    );
    let io = chain
        .iter()
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .unwrap_or_else(|| panic!("no io::Error in {chain:?}"));
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    for e in &chain {
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("hunter2"), "the password leaked: {shown}");
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

/// The conformance suite every store passes, each case on a fresh PostgreSQL database.
async fn fresh_store() -> (Arc<dyn JobStore>, (TestDb, PostgresStore)) {
    let db = TestDb::new().await;
    let store = db.store().await;
    (Arc::new(store.clone()), (db, store))
}

async fn drop_fresh((db, store): (TestDb, PostgresStore)) {
    db.drop_db([store]).await;
}

store_suite!(conformance, fresh_store, drop_fresh);

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
        runners.push(queue.start().unwrap());
        buses.push(bus);
    }
    for i in 0..200 {
        let signal = signal_bus::Signal::builder("audit.event", "/pg")
            .id(format!("pg-{i}"))
            .build()
            .unwrap();
        assert!(buses[i % 2].publish(signal).await.unwrap().is_ok());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < 200 && Instant::now() < deadline {
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
