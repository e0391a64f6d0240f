#![cfg(feature = "sqlite")]
//! The SQLite job store on real database files: every `JobStore` operation, reopening a
//! file, corrupt rows, unwritable files, group commit and concurrent writers.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use signal_bus::{
    queue::{JobState, JobStore, NewJob, QueueError, SqliteStore},
    Signal,
};
use sqlx::{sqlite::SqliteConnectOptions, Row, SqlitePool};

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "signal-bus-sqlite-{name}-{}-{nanos}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("queue.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn store(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(dir.db()).await.expect("open store")
}

/// A plain connection to the file, for checks and tampering behind the store's back.
async fn raw(path: &Path) -> SqlitePool {
    SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
        .await
        .expect("raw connection")
}

fn signal(n: u32) -> Signal {
    Signal::new("order.created", "/shop", json!({ "n": n })).expect("signal")
}

fn job(worker: &str) -> NewJob {
    NewJob::new(worker, json!({ "signal_id": "x" }))
}

fn secs(s: i64) -> TimeDelta {
    TimeDelta::seconds(s)
}

async fn claim_all(store: &SqliteStore, now: DateTime<Utc>) -> Vec<signal_bus::queue::Job> {
    store
        .claim("default", 100, "runner-1", now, now + secs(30))
        .await
        .expect("claim")
}

#[tokio::test]
async fn enqueue_claim_complete_roundtrip() {
    let dir = TempDir::new("roundtrip");
    let store = store(&dir).await;
    assert_eq!(store.backend(), "sqlite");
    assert!(format!("{store:?}").contains("queue.db"));

    let sig = signal(1);
    let args = json!({ "forwarder": "audit", "signal_id": sig.id() });
    let a = store
        .enqueue(Some(&sig), &NewJob::new("audit", args.clone()))
        .await
        .unwrap()
        .expect("job a");
    let b = store
        .enqueue(Some(&sig), &NewJob::new("audit", args.clone()))
        .await
        .unwrap()
        .expect("job b");
    assert_ne!(a, b);

    let pool = raw(&dir.db()).await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signal_bus_signals")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "the signal is stored once");

    let now = Utc::now();
    let jobs = store
        .claim("default", 1, "runner-1", now, now + secs(30))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    let j = &jobs[0];
    assert_eq!(j.id, a);
    assert_eq!(j.state, JobState::Executing);
    assert_eq!(j.attempt, 1);
    assert_eq!(j.args, args);
    assert_eq!(j.worker, "audit");
    assert!(j.attempted_at.is_some());

    let loaded = store.load_signal(sig.id()).await.unwrap().expect("stored");
    assert_eq!(loaded, sig);
    assert_eq!(store.load_signal("nope").await.unwrap(), None);

    store.complete(a, now).await.unwrap();
    let done = store.get(a).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(
        done.finished_at.map(|t| t.timestamp_millis()),
        Some(now.timestamp_millis())
    );
    assert_eq!(
        store.get(b).await.unwrap().unwrap().state,
        JobState::Available
    );
    assert_eq!(store.get(999_999).await.unwrap(), None);

    assert!(store.delete_signal(sig.id()).await.unwrap());
    assert!(!store.delete_signal(sig.id()).await.unwrap());
    assert_eq!(store.load_signal(sig.id()).await.unwrap(), None);
}

#[tokio::test]
async fn invalid_jobs_store_nothing() {
    let dir = TempDir::new("invalid");
    let store = store(&dir).await;
    for bad in [
        job("w").queue(""),
        job(""),
        job("w").max_attempts(0),
        job("w").priority(10),
        job("w").priority(-1),
    ] {
        let err = store.enqueue(None, &bad).await.unwrap_err();
        assert!(matches!(err, QueueError::Invalid(_)), "{err}");
    }
    let items = vec![(None, job("w")), (None, job("w").priority(12))];
    assert!(matches!(
        store.enqueue_many(&items).await,
        Err(QueueError::Invalid(_))
    ));
    let counts = store.counts().await.unwrap();
    assert!(counts.values().all(|&n| n == 0), "{counts:?}");
}

#[tokio::test]
async fn claim_order_is_priority_then_scheduled_at_then_id() {
    let dir = TempDir::new("order");
    let store = store(&dir).await;
    let base = Utc::now() - secs(3600);
    let a = store
        .enqueue(None, &job("a").priority(1).scheduled_at(base + secs(10)))
        .await
        .unwrap()
        .unwrap();
    let b = store
        .enqueue(None, &job("b").priority(1).scheduled_at(base + secs(5)))
        .await
        .unwrap()
        .unwrap();
    let c = store
        .enqueue(None, &job("c").priority(0).scheduled_at(base + secs(20)))
        .await
        .unwrap()
        .unwrap();
    let d = store
        .enqueue(None, &job("d").priority(2).scheduled_at(base))
        .await
        .unwrap()
        .unwrap();
    let e = store
        .enqueue(None, &job("e").priority(1).scheduled_at(base + secs(5)))
        .await
        .unwrap()
        .unwrap();
    // Another queue is not touched.
    store
        .enqueue(None, &job("other").queue("other"))
        .await
        .unwrap()
        .unwrap();

    let now = Utc::now();
    let first = store
        .claim("default", 2, "r", now, now + secs(30))
        .await
        .unwrap();
    assert_eq!(first.iter().map(|j| j.id).collect::<Vec<_>>(), [c, b]);
    let rest = claim_all(&store, now).await;
    assert_eq!(rest.iter().map(|j| j.id).collect::<Vec<_>>(), [e, a, d]);
    assert!(claim_all(&store, now).await.is_empty());
    assert_eq!(store.counts().await.unwrap()[&JobState::Available], 1);
}

#[tokio::test]
async fn scheduled_jobs_wait_for_their_time() {
    let dir = TempDir::new("scheduled");
    let store = store(&dir).await;
    let now = Utc::now();
    let id = store
        .enqueue(None, &job("w").scheduled_at(now + secs(3600)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.get(id).await.unwrap().unwrap().state,
        JobState::Scheduled
    );
    assert!(claim_all(&store, now).await.is_empty());
    assert!(claim_all(&store, now + secs(3599)).await.is_empty());
    let jobs = claim_all(&store, now + secs(3601)).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, id);
}

#[tokio::test]
async fn unique_keys_dedup_within_their_period() {
    let dir = TempDir::new("unique");
    let store = store(&dir).await;
    let long = Duration::from_secs(60);
    let first = store
        .enqueue(None, &job("w").unique("k1", long))
        .await
        .unwrap();
    assert!(first.is_some());
    assert_eq!(
        store
            .enqueue(None, &job("w").unique("k1", long))
            .await
            .unwrap(),
        None
    );
    // Other keys are independent.
    assert!(store
        .enqueue(None, &job("w").unique("k2", long))
        .await
        .unwrap()
        .is_some());
    // A cancelled job no longer holds its key.
    store
        .cancel(first.unwrap(), "by hand", Utc::now())
        .await
        .unwrap();
    assert!(store
        .enqueue(None, &job("w").unique("k1", long))
        .await
        .unwrap()
        .is_some());

    // After the period the key is free again.
    let short = Duration::from_millis(50);
    assert!(store
        .enqueue(None, &job("w").unique("k3", short))
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store
            .enqueue(None, &job("w").unique("k3", short))
            .await
            .unwrap(),
        None
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(store
        .enqueue(None, &job("w").unique("k3", short))
        .await
        .unwrap()
        .is_some());

    // Within one enqueue_many too.
    let items = vec![
        (None, job("w").unique("k4", long)),
        (None, job("w").unique("k4", long)),
    ];
    let ids = store.enqueue_many(&items).await.unwrap();
    assert!(ids[0].is_some());
    assert_eq!(ids[1], None);
}

#[tokio::test]
async fn retry_runs_again_at_its_time_with_the_next_attempt() {
    let dir = TempDir::new("retry");
    let store = store(&dir).await;
    let id = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    let now = Utc::now();
    assert_eq!(claim_all(&store, now).await[0].attempt, 1);
    store.retry(id, now + secs(10), "boom").await.unwrap();
    let j = store.get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Retryable);
    assert_eq!(j.last_error.as_deref(), Some("boom"));
    assert_eq!(j.attempt, 1);
    assert!(claim_all(&store, now + secs(5)).await.is_empty());
    let again = claim_all(&store, now + secs(11)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].state, JobState::Executing);
}

#[tokio::test]
async fn snooze_gives_the_attempt_back() {
    let dir = TempDir::new("snooze");
    let store = store(&dir).await;
    let id = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    let now = Utc::now();
    assert_eq!(claim_all(&store, now).await[0].attempt, 1);
    store.snooze(id, now + secs(60)).await.unwrap();
    let j = store.get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Scheduled);
    assert_eq!(j.attempt, 0);
    assert!(claim_all(&store, now + secs(30)).await.is_empty());
    assert_eq!(claim_all(&store, now + secs(61)).await[0].attempt, 1);
}

#[tokio::test]
async fn cancel_and_discard_are_final() {
    let dir = TempDir::new("final");
    let store = store(&dir).await;
    let c = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    let d = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    let now = Utc::now();
    store.cancel(c, "signal not found", now).await.unwrap();
    assert_eq!(claim_all(&store, now).await.len(), 1);
    store.discard(d, "out of attempts", now).await.unwrap();

    let c = store.get(c).await.unwrap().unwrap();
    assert_eq!(c.state, JobState::Cancelled);
    assert!(c.state.is_final());
    assert_eq!(c.last_error.as_deref(), Some("signal not found"));
    assert!(c.finished_at.is_some());
    let d = store.get(d).await.unwrap().unwrap();
    assert_eq!(d.state, JobState::Discarded);
    assert_eq!(d.last_error.as_deref(), Some("out of attempts"));
    assert!(d.finished_at.is_some());

    // Nothing claims or revives them but redrive.
    assert!(claim_all(&store, now + secs(86_400)).await.is_empty());
    store.complete(c.id, now).await.unwrap();
    store.retry(d.id, now, "again").await.unwrap();
    assert_eq!(
        store.get(c.id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    assert_eq!(
        store.get(d.id).await.unwrap().unwrap().state,
        JobState::Discarded
    );
}

#[tokio::test]
async fn rescue_returns_expired_leases() {
    let dir = TempDir::new("rescue");
    let store = store(&dir).await;
    let id = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    let now = Utc::now();
    store
        .claim("default", 10, "dead-runner", now, now + secs(30))
        .await
        .unwrap();
    assert_eq!(store.rescue(now + secs(10)).await.unwrap(), 0);
    // A heartbeat from the owner extends the lease; from anyone else it does nothing.
    store
        .heartbeat(&[id], "other", now + secs(3600))
        .await
        .unwrap();
    store
        .heartbeat(&[id], "dead-runner", now + secs(60))
        .await
        .unwrap();
    assert_eq!(store.rescue(now + secs(45)).await.unwrap(), 0);
    assert_eq!(store.rescue(now + secs(61)).await.unwrap(), 1);
    let j = store.get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Available);
    assert_eq!(j.attempt, 1, "a rescue keeps the attempt");
    assert_eq!(claim_all(&store, now + secs(62)).await[0].attempt, 2);
}

#[tokio::test]
async fn release_gives_the_attempt_back() {
    let dir = TempDir::new("release");
    let store = store(&dir).await;
    for _ in 0..3 {
        store.enqueue(None, &job("w")).await.unwrap().unwrap();
    }
    let now = Utc::now();
    let mine = store
        .claim("default", 2, "a", now, now + secs(30))
        .await
        .unwrap();
    let theirs = store
        .claim("default", 2, "b", now, now + secs(30))
        .await
        .unwrap();
    assert_eq!((mine.len(), theirs.len()), (2, 1));
    assert_eq!(store.release("a", now).await.unwrap(), 2);
    for j in &mine {
        let j = store.get(j.id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Available);
        assert_eq!(j.attempt, 0);
    }
    let theirs = store.get(theirs[0].id).await.unwrap().unwrap();
    assert_eq!(theirs.state, JobState::Executing);
    assert_eq!(theirs.attempt, 1);
}

#[tokio::test]
async fn redrive_revives_cancelled_and_discarded() {
    let dir = TempDir::new("redrive");
    let store = store(&dir).await;
    let c = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    let d = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    let live = store.enqueue(None, &job("w")).await.unwrap().unwrap();
    let now = Utc::now();
    claim_all(&store, now).await;
    store.cancel(c, "by hand", now).await.unwrap();
    store.discard(d, "too many", now).await.unwrap();
    let later = now + secs(100);
    assert_eq!(store.redrive(&[c, d, live, 12345], later).await.unwrap(), 2);
    assert_eq!(store.redrive(&[], later).await.unwrap(), 0);
    for id in [c, d] {
        let j = store.get(id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Available);
        assert_eq!(j.attempt, 0);
        assert_eq!(j.finished_at, None);
        assert_eq!(j.scheduled_at.timestamp_millis(), later.timestamp_millis());
    }
    assert_eq!(
        store.get(live).await.unwrap().unwrap().state,
        JobState::Executing
    );
    assert_eq!(claim_all(&store, later).await.len(), 2);
}

#[tokio::test]
async fn prune_deletes_old_completed_jobs() {
    let dir = TempDir::new("prune");
    let store = store(&dir).await;
    let ids: Vec<i64> = futures_ids(&store, 3).await;
    let now = Utc::now();
    claim_all(&store, now).await;
    store.complete(ids[0], now - secs(7200)).await.unwrap();
    store.complete(ids[1], now).await.unwrap();
    store.cancel(ids[2], "old", now - secs(7200)).await.unwrap();
    assert_eq!(store.prune(now - secs(3600)).await.unwrap(), 1);
    assert_eq!(store.get(ids[0]).await.unwrap(), None);
    assert!(store.get(ids[1]).await.unwrap().is_some());
    assert!(
        store.get(ids[2]).await.unwrap().is_some(),
        "only completed jobs"
    );
}

async fn futures_ids(store: &SqliteStore, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(store.enqueue(None, &job("w")).await.unwrap().unwrap());
    }
    ids
}

#[tokio::test]
async fn counts_and_list_cover_every_state() {
    let dir = TempDir::new("counts");
    let store = store(&dir).await;
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.len(), JobState::ALL.len());
    assert!(counts.values().all(|&n| n == 0));

    let now = Utc::now();
    let ids = futures_ids(&store, 5).await;
    store
        .enqueue(None, &job("w").scheduled_at(now + secs(600)))
        .await
        .unwrap();
    let claimed = store
        .claim("default", 4, "r", now, now + secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 4);
    store.complete(ids[0], now).await.unwrap();
    store.retry(ids[1], now + secs(60), "e").await.unwrap();
    store.cancel(ids[2], "c", now).await.unwrap();

    let counts = store.counts().await.unwrap();
    let expect = [
        (JobState::Available, 1),
        (JobState::Scheduled, 1),
        (JobState::Executing, 1),
        (JobState::Retryable, 1),
        (JobState::Completed, 1),
        (JobState::Cancelled, 1),
        (JobState::Discarded, 0),
    ];
    for (state, n) in expect {
        assert_eq!(counts[&state], n, "{state}");
    }

    let executing = store.list(JobState::Executing, 10).await.unwrap();
    assert_eq!(executing.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[3]]);
    let all_available = futures_ids(&store, 3).await;
    let listed = store.list(JobState::Available, 3).await.unwrap();
    let listed: Vec<i64> = listed.iter().map(|j| j.id).collect();
    assert_eq!(listed, [ids[4], all_available[0], all_available[1]]);
}

#[tokio::test]
async fn reopening_keeps_everything_and_migrates_once() {
    let dir = TempDir::new("reopen");
    let sig = signal(7);
    let id = {
        let store = store(&dir).await;
        store
            .enqueue(Some(&sig), &job("w").priority(3))
            .await
            .unwrap()
            .unwrap()
    };
    let pool = raw(&dir.db()).await;
    let migrations = |pool: SqlitePool| async move {
        sqlx::query("SELECT version, applied_at FROM signal_bus_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1)))
            .collect::<Vec<_>>()
    };
    let before = migrations(pool.clone()).await;
    assert!(!before.is_empty());
    // One row per version, versions 1..=n.
    let versions: Vec<i64> = before.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, (1..=before.len() as i64).collect::<Vec<_>>());

    tokio::time::sleep(Duration::from_millis(5)).await;
    let store = store(&dir).await;
    let again = SqliteStore::builder(dir.db())
        .synchronous_normal()
        .max_connections(2)
        .open()
        .await
        .unwrap();
    assert_eq!(migrations(pool).await, before, "no migration ran again");

    let j = store.get(id).await.unwrap().unwrap();
    assert_eq!(j.priority, 3);
    assert_eq!(j.state, JobState::Available);
    assert_eq!(again.load_signal(sig.id()).await.unwrap(), Some(sig));
    // Ids keep growing after a reopen.
    let next = again.enqueue(None, &job("w")).await.unwrap().unwrap();
    assert!(next > id);
}

#[tokio::test]
async fn corrupt_rows_are_reported_not_panicked() {
    let dir = TempDir::new("corrupt");
    let store = store(&dir).await;
    let sig = signal(3);
    let id = store.enqueue(Some(&sig), &job("w")).await.unwrap().unwrap();
    let pool = raw(&dir.db()).await;
    sqlx::query("UPDATE signal_bus_signals SET body = ? WHERE id = ?")
        .bind(&b"\x00\xffnot json"[..])
        .bind(sig.id())
        .execute(&pool)
        .await
        .unwrap();
    match store.load_signal(sig.id()).await {
        Err(QueueError::Corrupt { what }) => assert!(what.contains(sig.id()), "{what}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }

    sqlx::query("UPDATE signal_bus_jobs SET args = '{oops' WHERE id = ?")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    match store.get(id).await {
        Err(QueueError::Corrupt { what }) => assert!(what.contains(&id.to_string()), "{what}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    sqlx::query("UPDATE signal_bus_jobs SET args = '{}', state = 'exploded' WHERE id = ?")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    match store.get(id).await {
        Err(QueueError::Corrupt { what }) => {
            assert!(
                what.contains(&id.to_string()) && what.contains("exploded"),
                "{what}"
            )
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn unwritable_files_give_a_store_error() {
    let dir = TempDir::new("readonly");
    // A file in a directory that does not exist.
    let missing = dir.0.join("no-such-dir").join("queue.db");
    match SqliteStore::open(&missing).await {
        Err(QueueError::Store { backend, message }) => {
            assert_eq!(backend, "sqlite");
            assert!(message.contains("queue.db"), "{message}");
        }
        other => panic!("expected Store, got {other:?}"),
    }

    // A read-only database file.
    let path = dir.db();
    drop(store(&dir).await);
    // Let the dropped pools close their connections.
    tokio::time::sleep(Duration::from_millis(100)).await;
    set_read_only(&path);
    if std::fs::OpenOptions::new().write(true).open(&path).is_ok() {
        // Running as root: permissions do not stop us; the missing-directory case above is
        // the check then.
        eprintln!("skipping the read-only file case: file permissions do not apply (root)");
        return;
    }
    // Opening checks the migrations in a write transaction, so it fails right away.
    match SqliteStore::open(&path).await {
        Err(QueueError::Store { backend, message }) => {
            assert_eq!(backend, "sqlite");
            assert!(message.contains("queue.db"), "{message}");
            assert!(message.contains("readonly"), "{message}");
        }
        other => panic!("expected Store, got {other:?}"),
    }
}

#[cfg(unix)]
fn set_read_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
}

#[cfg(not(unix))]
fn set_read_only(path: &Path) {
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(path, perms).unwrap();
}

#[tokio::test]
async fn enqueue_many_lands_a_thousand_jobs_in_one_call() {
    let dir = TempDir::new("many");
    let store = store(&dir).await;
    let signals: Vec<Arc<Signal>> = (0..10).map(|n| Arc::new(signal(n))).collect();
    let items: Vec<(Option<Arc<Signal>>, NewJob)> = (0..1000)
        .map(|i| {
            let sig = &signals[i % signals.len()];
            (
                Some(Arc::clone(sig)),
                NewJob::new("audit", json!({ "signal_id": sig.id(), "i": i })),
            )
        })
        .collect();
    let ids = store.enqueue_many(&items).await.unwrap();
    assert_eq!(ids.len(), 1000);
    let ids: HashSet<i64> = ids.into_iter().map(|id| id.expect("inserted")).collect();
    assert_eq!(ids.len(), 1000);
    assert_eq!(store.counts().await.unwrap()[&JobState::Available], 1000);
    let pool = raw(&dir.db()).await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signal_bus_signals")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!(store.enqueue_many(&[]).await.unwrap(), Vec::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_all_land() {
    let dir = TempDir::new("concurrent");
    let store = store(&dir).await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..100 {
                let sig = signal(t * 1000 + i);
                let id = store
                    .enqueue(Some(&sig), &NewJob::new("w", json!({ "t": t, "i": i })))
                    .await
                    .unwrap()
                    .unwrap();
                ids.push(id);
            }
            ids
        }));
    }
    let mut all = HashSet::new();
    for task in tasks {
        for id in task.await.unwrap() {
            assert!(all.insert(id), "duplicate id {id}");
        }
    }
    assert_eq!(all.len(), 800);
    assert_eq!(store.counts().await.unwrap()[&JobState::Available], 800);

    // Concurrent claimers never take the same job.
    let now = Utc::now();
    let mut claimers = Vec::new();
    for c in 0..4 {
        let store = store.clone();
        claimers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let jobs = store
                    .claim("default", 25, &format!("c{c}"), now, now + secs(30))
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    return got;
                }
                got.extend(jobs.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut claimed = HashSet::new();
    for c in claimers {
        for id in c.await.unwrap() {
            assert!(claimed.insert(id), "job {id} claimed twice");
        }
    }
    assert_eq!(claimed, all);
}

#[tokio::test]
async fn in_memory_store_works() {
    let store = SqliteStore::in_memory().await.unwrap();
    let other = SqliteStore::in_memory().await.unwrap();
    let sig = signal(9);
    let id = store.enqueue(Some(&sig), &job("w")).await.unwrap().unwrap();
    let clone = store.clone();
    assert_eq!(clone.get(id).await.unwrap().unwrap().id, id);
    assert_eq!(clone.load_signal(sig.id()).await.unwrap(), Some(sig));
    assert_eq!(
        other.get(id).await.unwrap(),
        None,
        "each in-memory store is its own"
    );
    assert!(format!("{store:?}").contains(":memory:"));
}
