//! One conformance suite every `JobStore` passes: memory, SQLite and PostgreSQL run the
//! same checks.

#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use serde_json::json;
use signal_bus::{
    queue::{JobState, JobStore, NewJob, QueueError},
    Signal,
};

fn signal(id: &str) -> Signal {
    Signal::builder("audit.login", "/suite")
        .id(id)
        .data(json!({"user": id}))
        .build()
        .unwrap()
}

fn ms(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

async fn claim_all(store: &dyn JobStore, queue: &str) -> Vec<i64> {
    let now = Utc::now();
    store
        .claim(queue, 100, "suite", now, now + ms(60_000))
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect()
}

/// Runs every check against `store` (which must be empty).
pub async fn run_all(store: Arc<dyn JobStore>) {
    let s = store.as_ref();
    roundtrip_and_signal_stored_once(s).await;
    priority_then_time_order(s).await;
    scheduled_jobs_wait(s).await;
    unique_keys(s).await;
    retry_snooze_cancel_discard(s).await;
    rescue_and_release(s).await;
    crash_on_last_attempt_discards(s).await;
    redrive_prune_counts(s).await;
    invalid_jobs_are_refused(s).await;
    group_commit(s).await;
}

async fn roundtrip_and_signal_stored_once(s: &dyn JobStore) {
    let sig = signal("sig-roundtrip");
    let a = s
        .enqueue(
            Some(&sig),
            &NewJob::new("w", json!({"signal_id": sig.id()})).queue("q1"),
        )
        .await
        .unwrap()
        .unwrap();
    let b = s
        .enqueue(
            Some(&sig),
            &NewJob::new("w", json!({"signal_id": sig.id()})).queue("q1"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_ne!(a, b);
    let loaded = s.load_signal(sig.id()).await.unwrap().unwrap();
    assert_eq!(loaded, sig, "the reloaded signal equals the original");
    let jobs = {
        let now = Utc::now();
        s.claim("q1", 10, "suite", now, now + ms(60_000))
            .await
            .unwrap()
    };
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [a, b]);
    assert!(jobs
        .iter()
        .all(|j| j.state == JobState::Executing && j.attempt == 1));
    assert_eq!(jobs[0].args, json!({"signal_id": "sig-roundtrip"}));
    s.complete(a, Utc::now()).await.unwrap();
    let done = s.get(a).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert!(done.finished_at.is_some());
    assert!(
        claim_all(s, "q1").await.is_empty(),
        "an executing job is not claimed twice"
    );
    assert!(s.delete_signal(sig.id()).await.unwrap());
    assert_eq!(s.load_signal(sig.id()).await.unwrap(), None);
    assert!(!s.delete_signal(sig.id()).await.unwrap());
}

async fn priority_then_time_order(s: &dyn JobStore) {
    let base = Utc::now() - ms(10_000);
    let mut ids = Vec::new();
    for (p, offset) in [(5, 0), (0, 2), (0, 1), (9, 0)] {
        let id = s
            .enqueue(
                None,
                &NewJob::new("w", json!({}))
                    .queue("q2")
                    .priority(p)
                    .scheduled_at(base + ms(offset)),
            )
            .await
            .unwrap()
            .unwrap();
        ids.push(id);
    }
    assert_eq!(claim_all(s, "q2").await, [ids[2], ids[1], ids[0], ids[3]]);
}

async fn scheduled_jobs_wait(s: &dyn JobStore) {
    let later = Utc::now() + ms(60_000);
    let id = s
        .enqueue(
            None,
            &NewJob::new("w", json!({})).queue("q3").scheduled_at(later),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.get(id).await.unwrap().unwrap().state, JobState::Scheduled);
    assert!(claim_all(s, "q3").await.is_empty());
    let got = s
        .claim("q3", 10, "suite", later + ms(1), later + ms(60_000))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
}

async fn unique_keys(s: &dyn JobStore) {
    let job = NewJob::new("w", json!({}))
        .queue("q4")
        .unique("report-42", Duration::from_secs(60));
    assert!(s.enqueue(None, &job).await.unwrap().is_some());
    assert_eq!(
        s.enqueue(None, &job).await.unwrap(),
        None,
        "same key within the period"
    );
    let short = NewJob::new("w", json!({}))
        .queue("q4")
        .unique("short", Duration::from_millis(50));
    assert!(s.enqueue(None, &short).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(
        s.enqueue(None, &short).await.unwrap().is_some(),
        "allowed after the period"
    );
}

async fn retry_snooze_cancel_discard(s: &dyn JobStore) {
    let id = s
        .enqueue(
            None,
            &NewJob::new("w", json!({})).queue("q5").max_attempts(3),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim_all(s, "q5").await, [id]);
    let soon = Utc::now() + ms(30);
    s.retry(id, soon, "boom").await.unwrap();
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.last_error.as_deref()),
        (JobState::Retryable, Some("boom"))
    );
    assert!(claim_all(s, "q5").await.is_empty(), "not before its time");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let now = Utc::now();
    let again = s
        .claim("q5", 10, "suite", now, now + ms(60_000))
        .await
        .unwrap();
    assert_eq!(again[0].attempt, 2);
    s.snooze(id, Utc::now()).await.unwrap();
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempt),
        (JobState::Scheduled, 1),
        "a snooze gives the attempt back"
    );
    let now = Utc::now() + ms(1);
    let again = s
        .claim("q5", 10, "suite", now, now + ms(60_000))
        .await
        .unwrap();
    assert_eq!(again[0].attempt, 2);
    s.cancel(id, "signal_not_found: gone", Utc::now())
        .await
        .unwrap();
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Cancelled);
    assert_eq!(j.last_error.as_deref(), Some("signal_not_found: gone"));
    let d = s
        .enqueue(None, &NewJob::new("w", json!({})).queue("q5"))
        .await
        .unwrap()
        .unwrap();
    claim_all(s, "q5").await;
    s.discard(d, "out of attempts", Utc::now()).await.unwrap();
    assert_eq!(s.get(d).await.unwrap().unwrap().state, JobState::Discarded);
}

async fn rescue_and_release(s: &dyn JobStore) {
    let id = s
        .enqueue(None, &NewJob::new("w", json!({})).queue("q6"))
        .await
        .unwrap()
        .unwrap();
    let t0 = Utc::now();
    // A runner that crashed: its lease ended in the past.
    s.claim("q6", 1, "crashed", t0, t0 + ms(10)).await.unwrap();
    assert_eq!(s.rescue(t0 + ms(5)).await.unwrap(), 0, "lease still valid");
    assert_eq!(s.rescue(t0 + ms(20)).await.unwrap(), 1);
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!((j.state, j.attempt), (JobState::Available, 1));
    let got = claim_all(s, "q6").await;
    assert_eq!(got, [id]);
    s.heartbeat(&[id], "suite-6", Utc::now() + ms(120_000))
        .await
        .unwrap();
    // Owned by "suite" (claim_all), so a heartbeat by another owner changes nothing...
    s.rescue(Utc::now() + ms(90_000)).await.unwrap();
    assert_eq!(s.get(id).await.unwrap().unwrap().state, JobState::Available);
    // ...while the owner's own heartbeat keeps the job from being rescued.
    let now = Utc::now();
    let got = s
        .claim("q6", 1, "suite-6", now, now + ms(10))
        .await
        .unwrap();
    assert_eq!(got[0].id, id);
    s.heartbeat(&[id], "suite-6", now + ms(120_000))
        .await
        .unwrap();
    s.rescue(now + ms(90_000)).await.unwrap();
    assert_eq!(
        s.get(id).await.unwrap().unwrap().state,
        JobState::Executing,
        "renewed"
    );
    assert_eq!(s.release("suite-6", Utc::now()).await.unwrap(), 1);
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempt),
        (JobState::Available, 2),
        "release gives the attempt back"
    );
}

async fn crash_on_last_attempt_discards(s: &dyn JobStore) {
    let id = s
        .enqueue(
            None,
            &NewJob::new("w", json!({})).queue("q9").max_attempts(1),
        )
        .await
        .unwrap()
        .unwrap();
    let t0 = Utc::now();
    s.claim("q9", 1, "crashed", t0, t0 + ms(10)).await.unwrap();
    assert_eq!(s.rescue(t0 + ms(20)).await.unwrap(), 1);
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Discarded, "no endless crash loop");
    assert_eq!(
        j.last_error.as_deref(),
        Some("discarded: its runner stopped during the last attempt")
    );
}

async fn redrive_prune_counts(s: &dyn JobStore) {
    let id = s
        .enqueue(None, &NewJob::new("w", json!({})).queue("q7"))
        .await
        .unwrap()
        .unwrap();
    claim_all(s, "q7").await;
    s.discard(id, "x", Utc::now()).await.unwrap();
    assert!(s
        .list(JobState::Discarded, 100)
        .await
        .unwrap()
        .iter()
        .any(|j| j.id == id));
    assert_eq!(s.redrive(&[id], Utc::now()).await.unwrap(), 1);
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!((j.state, j.attempt), (JobState::Available, 0));
    claim_all(s, "q7").await;
    s.complete(id, Utc::now() - ms(5_000)).await.unwrap();
    let before = s.counts().await.unwrap();
    assert_eq!(before.len(), 7, "every state is counted");
    assert!(before[&JobState::Completed] >= 1);
    assert!(s.prune(Utc::now() - ms(1_000)).await.unwrap() >= 1);
    assert!(s.get(id).await.unwrap().is_none());
}

async fn invalid_jobs_are_refused(s: &dyn JobStore) {
    for job in [
        NewJob::new("", json!({})),
        NewJob::new("w", json!({})).queue(""),
        NewJob::new("w", json!({})).max_attempts(0),
        NewJob::new("w", json!({})).priority(10),
    ] {
        let e = s.enqueue(None, &job).await.unwrap_err();
        assert!(matches!(e, QueueError::Invalid(_)), "{e:?}");
    }
}

async fn group_commit(s: &dyn JobStore) {
    let items: Vec<(Option<Arc<Signal>>, NewJob)> = (0..500)
        .map(|i| {
            let sig = Arc::new(signal(&format!("bulk-{i}")));
            let job = NewJob::new("w", json!({"signal_id": sig.id()})).queue("q8");
            (Some(sig), job)
        })
        .collect();
    let ids = s.enqueue_many(&items).await.unwrap();
    assert_eq!(ids.iter().flatten().count(), 500);
    assert_eq!(
        s.load_signal("bulk-499").await.unwrap().unwrap().id(),
        "bulk-499"
    );
    let now = Utc::now();
    let claimed = s
        .claim("q8", 1000, "suite", now, now + ms(60_000))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 500);
}
