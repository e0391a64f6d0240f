//! One conformance suite every `JobStore` passes: memory, SQLite and PostgreSQL run the
//! same checks, each case its own test on a fresh store (`store_suite!`), so a backend's
//! own test file keeps only what is specific to it. Times are passed explicitly wherever
//! the store takes them, so no check depends on how fast the machine is; where the store
//! reads the clock itself (unique periods) a check waits for the event.

#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::json;
use signal_bus::{
    queue::{CancelReason, Job, JobState, JobStore, LeaseToken, NewJob, QueueError},
    Signal,
};

fn signal(id: &str) -> Signal {
    signal_from("/suite", id)
}

fn signal_from(source: &str, id: &str) -> Signal {
    Signal::builder("audit.login", source)
        .id(id)
        .data(json!({"user": id, "source": source}))
        .build()
        .unwrap()
}

fn ms(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

/// The worker every suite job runs as.
fn w() -> Vec<String> {
    vec!["w".to_owned()]
}

async fn claim_at(store: &dyn JobStore, queue: &str, now: DateTime<Utc>) -> Vec<Job> {
    store
        .claim(queue, &w(), 100, "suite", now, now + ms(60_000))
        .await
        .unwrap()
}

async fn claim_all(store: &dyn JobStore, queue: &str) -> Vec<Job> {
    claim_at(store, queue, Utc::now()).await
}

fn ids(jobs: &[Job]) -> Vec<i64> {
    jobs.iter().map(|j| j.id).collect()
}

fn no_backoff(_: u32) -> Duration {
    Duration::ZERO
}

/// Declares one `#[tokio::test]` per suite case, in a module `$module`, each case on a fresh
/// store: `$fresh` is an async fn returning `(Arc<dyn JobStore>, T)` (the store, empty, and
/// what must outlive it), `$finish` an async fn taking that `T` back when the case passed.
/// Every backend runs the same cases under the same names.
#[macro_export]
macro_rules! store_suite {
    ($module:ident, $fresh:path, $finish:path) => {
        $crate::store_suite!(@cases $module, $fresh, $finish;
            roundtrip_and_signal_stored_once,
            same_id_from_two_sources,
            priority_then_time_order,
            claims_only_registered_workers,
            retry_snooze_cancel_discard,
            stale_leases_are_refused,
            rescue_is_a_failed_attempt_behind_fresh_work,
            heartbeat_and_release,
            crash_on_last_attempt_discards,
            unregistered_names_wait_then_cancel,
            redrive_and_counts,
            prune_per_state_and_signals,
            group_commit,
            types_with_any_character_are_stored_as_they_are,
            invalid_jobs_store_nothing,
            scheduled_jobs_wait_for_their_time,
            snooze_gives_the_attempt_back,
            unique_keys_dedup_within_their_period,
            retry_runs_again_at_its_time_with_the_next_attempt,
            release_gives_the_attempt_back,
            cancel_and_discard_are_final,
        );
    };
    (@cases $module:ident, $fresh:path, $finish:path; $($case:ident,)*) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let (store, keep) = $fresh().await;
                    $crate::queue_suite::$case(store.as_ref()).await;
                    $finish(keep).await;
                }
            )*
        }
    };
}

/// A type holds any character but whitespace and control characters: the store keeps it
/// byte for byte.
pub async fn types_with_any_character_are_stored_as_they_are(s: &dyn JobStore) {
    let ty = "com.example/orders:created.caf\u{e9}+v2@eu~1.#.*.%.'q'.\"d\".\\";
    let sig = Signal::builder(ty, "/types").id("t-1").build().unwrap();
    let job = NewJob::new("w", json!({"signal_id": sig.id()})).queue("q-types");
    s.enqueue(Some(&sig), &job).await.unwrap().unwrap();
    let loaded = s.load_signal("/types", "t-1").await.unwrap().unwrap();
    assert_eq!(loaded.ty(), ty);
    assert_eq!(loaded, sig);
    for job in claim_all(s, "q-types").await {
        s.complete(job.lease(), Utc::now()).await.unwrap();
    }
}

pub async fn roundtrip_and_signal_stored_once(s: &dyn JobStore) {
    let sig = signal("sig-roundtrip");
    let job = || NewJob::new("w", json!({"signal_id": sig.id()})).queue("q1");
    let a = s.enqueue(Some(&sig), &job()).await.unwrap().unwrap();
    let b = s.enqueue(Some(&sig), &job()).await.unwrap().unwrap();
    assert_ne!(a, b);
    let loaded = s.load_signal("/suite", sig.id()).await.unwrap().unwrap();
    assert_eq!(loaded, sig, "the reloaded signal equals the original");
    assert_eq!(
        s.load_signal("/elsewhere", sig.id()).await.unwrap(),
        None,
        "keyed by source too"
    );
    let jobs = claim_all(s, "q1").await;
    assert_eq!(ids(&jobs), [a, b]);
    assert!(jobs
        .iter()
        .all(|j| j.state == JobState::Executing && j.attempt == 1 && j.token == 1));
    assert_eq!(jobs[0].args, json!({"signal_id": "sig-roundtrip"}));
    s.complete(jobs[0].lease(), Utc::now()).await.unwrap();
    let done = s.get(a).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert!(done.finished_at.is_some());
    assert!(
        claim_all(s, "q1").await.is_empty(),
        "an executing job is not claimed twice"
    );
    assert!(s.delete_signal("/suite", sig.id()).await.unwrap());
    assert_eq!(s.load_signal("/suite", sig.id()).await.unwrap(), None);
    assert!(!s.delete_signal("/suite", sig.id()).await.unwrap());
}

pub async fn same_id_from_two_sources(s: &dyn JobStore) {
    let a = signal_from("/service-a", "1");
    let b = signal_from("/service-b", "1");
    for sig in [&a, &b] {
        let job = NewJob::new(
            "w",
            json!({"signal_source": sig.source(), "signal_id": sig.id()}),
        )
        .queue("q-two-sources");
        s.enqueue(Some(sig), &job).await.unwrap().unwrap();
    }
    assert_eq!(
        s.load_signal("/service-a", "1").await.unwrap().as_ref(),
        Some(&a)
    );
    assert_eq!(
        s.load_signal("/service-b", "1").await.unwrap().as_ref(),
        Some(&b)
    );
    let jobs = claim_all(s, "q-two-sources").await;
    assert_eq!(jobs.len(), 2);
    let keys: Vec<(&str, &str)> = jobs.iter().filter_map(Job::signal_ref).collect();
    let mut loaded = s.load_signals(&keys).await.unwrap();
    loaded.sort_by(|x, y| x.0.cmp(&y.0));
    let got: Vec<(String, Signal)> = loaded
        .into_iter()
        .map(|((source, _), r)| (source, r.unwrap()))
        .collect();
    assert_eq!(
        got,
        [("/service-a".to_owned(), a), ("/service-b".to_owned(), b)],
        "each source's own signal, not one of them twice"
    );
    s.complete_many(&jobs.iter().map(Job::lease).collect::<Vec<_>>(), Utc::now())
        .await
        .unwrap();
}

pub async fn priority_then_time_order(s: &dyn JobStore) {
    let base = Utc::now() - ms(10_000);
    let mut job_ids = Vec::new();
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
        job_ids.push(id);
    }
    assert_eq!(
        ids(&claim_all(s, "q2").await),
        [job_ids[2], job_ids[1], job_ids[0], job_ids[3]]
    );
}

pub async fn claims_only_registered_workers(s: &dyn JobStore) {
    let mine = s
        .enqueue(None, &NewJob::new("w", json!({})).queue("q-filter"))
        .await
        .unwrap()
        .unwrap();
    let theirs = s
        .enqueue(None, &NewJob::new("other", json!({})).queue("q-filter"))
        .await
        .unwrap()
        .unwrap();
    let now = Utc::now();
    assert!(
        s.claim("q-filter", &[], 10, "suite", now, now + ms(60_000))
            .await
            .unwrap()
            .is_empty(),
        "no names, no claims"
    );
    assert_eq!(ids(&claim_all(s, "q-filter").await), [mine]);
    let other = s
        .claim(
            "q-filter",
            &["other".to_owned()],
            10,
            "suite",
            now,
            now + ms(60_000),
        )
        .await
        .unwrap();
    assert_eq!(ids(&other), [theirs], "left for the process that runs it");
    assert_eq!(other[0].attempt, 1, "no attempt was spent while it waited");
}

pub async fn retry_snooze_cancel_discard(s: &dyn JobStore) {
    let id = s
        .enqueue(
            None,
            &NewJob::new("w", json!({})).queue("q5").max_attempts(3),
        )
        .await
        .unwrap()
        .unwrap();
    let first = claim_all(s, "q5").await;
    assert_eq!(ids(&first), [id]);
    let soon = Utc::now() + ms(60_000);
    s.retry(first[0].lease(), soon, "boom").await.unwrap();
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.last_error.as_deref()),
        (JobState::Retryable, Some("boom"))
    );
    assert!(
        claim_at(s, "q5", soon - ms(1)).await.is_empty(),
        "not before its time"
    );
    let again = claim_at(s, "q5", soon).await;
    assert_eq!((again[0].attempt, again[0].token), (2, 2));
    s.snooze(again[0].lease(), soon).await.unwrap();
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempt),
        (JobState::Scheduled, 1),
        "a snooze gives the attempt back"
    );
    let again = claim_at(s, "q5", soon + ms(1)).await;
    assert_eq!(again[0].attempt, 2);
    s.cancel(
        again[0].lease(),
        CancelReason::SignalNotFound,
        "signal_not_found: gone",
        Utc::now(),
    )
    .await
    .unwrap();
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Cancelled);
    assert_eq!(j.cancel_reason, Some(CancelReason::SignalNotFound));
    assert_eq!(j.last_error.as_deref(), Some("signal_not_found: gone"));
    let d = s
        .enqueue(None, &NewJob::new("w", json!({})).queue("q5"))
        .await
        .unwrap()
        .unwrap();
    let claimed = claim_all(s, "q5").await;
    s.discard(claimed[0].lease(), "out of attempts", Utc::now())
        .await
        .unwrap();
    let j = s.get(d).await.unwrap().unwrap();
    assert_eq!((j.state, j.cancel_reason), (JobState::Discarded, None));
    // By hand: any job that has not finished, executing or not.
    let m = s
        .enqueue(None, &NewJob::new("w", json!({})).queue("q5"))
        .await
        .unwrap()
        .unwrap();
    assert!(s
        .cancel_job(m, CancelReason::Manual, "manual", Utc::now())
        .await
        .unwrap());
    assert!(!s
        .cancel_job(m, CancelReason::Manual, "manual", Utc::now())
        .await
        .unwrap());
    let j = s.get(m).await.unwrap().unwrap();
    assert_eq!(j.cancel_reason, Some(CancelReason::Manual));
}

pub async fn stale_leases_are_refused(s: &dyn JobStore) {
    let id = s
        .enqueue(None, &NewJob::new("w", json!({})).queue("q-lease"))
        .await
        .unwrap()
        .unwrap();
    let t0 = Utc::now();
    let first = s
        .claim("q-lease", &w(), 1, "slow", t0, t0 + ms(10))
        .await
        .unwrap();
    let stale = first[0].lease();
    assert_eq!(s.rescue(t0 + ms(20), &no_backoff).await.unwrap(), 1);
    let second = claim_at(s, "q-lease", t0 + ms(30)).await;
    let fresh = second[0].lease();
    assert_eq!(
        fresh.token,
        stale.token + 1,
        "every claim writes a new token"
    );
    // The slow runner wakes up: none of its updates may touch the new attempt.
    let lost =
        |r: Result<(), QueueError>| matches!(r, Err(QueueError::LeaseLost { job }) if job == id);
    assert!(lost(s.complete(stale, Utc::now()).await));
    assert!(lost(s.retry(stale, Utc::now(), "late").await));
    assert!(lost(s.snooze(stale, Utc::now()).await));
    assert!(lost(s.discard(stale, "late", Utc::now()).await));
    assert!(lost(
        s.cancel(stale, CancelReason::Worker, "late", Utc::now())
            .await
    ));
    assert_eq!(s.complete_many(&[stale], Utc::now()).await.unwrap(), [id]);
    assert_eq!(
        s.heartbeat(&[stale], Utc::now() + ms(60_000))
            .await
            .unwrap(),
        [id]
    );
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!((j.state, j.token), (JobState::Executing, fresh.token));
    assert!(s
        .heartbeat(&[fresh], Utc::now() + ms(60_000))
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .complete_many(&[fresh], Utc::now())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.get(id).await.unwrap().unwrap().state, JobState::Completed);
    // A job that does not exist is no lease either.
    let ghost = LeaseToken {
        job: i64::MAX,
        token: 1,
    };
    assert!(matches!(
        s.complete(ghost, Utc::now()).await,
        Err(QueueError::LeaseLost { .. })
    ));
}

pub async fn rescue_is_a_failed_attempt_behind_fresh_work(s: &dyn JobStore) {
    let crashed = s
        .enqueue(None, &NewJob::new("w", json!({})).queue("q6"))
        .await
        .unwrap()
        .unwrap();
    let t0 = Utc::now();
    // A runner that crashed: its lease ended in the past.
    s.claim("q6", &w(), 1, "crashed", t0, t0 + ms(10))
        .await
        .unwrap();
    let fresh = s
        .enqueue(None, &NewJob::new("w", json!({})).queue("q6"))
        .await
        .unwrap()
        .unwrap();
    let backoff = |attempt: u32| Duration::from_secs(u64::from(attempt) * 30);
    assert_eq!(
        s.rescue(t0 + ms(5), &backoff).await.unwrap(),
        0,
        "lease still valid"
    );
    assert_eq!(s.rescue(t0 + ms(20), &backoff).await.unwrap(), 1);
    let j = s.get(crashed).await.unwrap().unwrap();
    assert_eq!((j.state, j.attempt), (JobState::Retryable, 1));
    assert_eq!(
        j.scheduled_at.timestamp_millis(),
        (t0 + ms(20) + ms(30_000)).timestamp_millis(),
        "backoff(1) after the rescue"
    );
    let history = j.last_error.unwrap();
    assert!(
        history.contains("runner stopped during attempt 1"),
        "{history}"
    );
    let now = t0 + ms(25);
    assert_eq!(
        ids(&claim_at(s, "q6", now).await),
        [fresh],
        "the rescued job waits behind fresh work"
    );
    let later = claim_at(s, "q6", t0 + ms(20) + ms(30_000)).await;
    assert_eq!((ids(&later), later[0].attempt), (vec![crashed], 2));
}

pub async fn heartbeat_and_release(s: &dyn JobStore) {
    let id = s
        .enqueue(None, &NewJob::new("w", json!({})).queue("q6b"))
        .await
        .unwrap()
        .unwrap();
    let now = Utc::now();
    let got = s
        .claim("q6b", &w(), 1, "suite-6", now, now + ms(10))
        .await
        .unwrap();
    assert_eq!(ids(&got), [id]);
    assert!(s
        .heartbeat(&[got[0].lease()], now + ms(120_000))
        .await
        .unwrap()
        .is_empty());
    s.rescue(now + ms(90_000), &no_backoff).await.unwrap();
    assert_eq!(
        s.get(id).await.unwrap().unwrap().state,
        JobState::Executing,
        "renewed"
    );
    assert_eq!(s.release("someone-else", Utc::now()).await.unwrap(), 0);
    assert_eq!(s.release("suite-6", Utc::now()).await.unwrap(), 1);
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempt),
        (JobState::Available, 0),
        "release gives the attempt back"
    );
}

pub async fn crash_on_last_attempt_discards(s: &dyn JobStore) {
    let id = s
        .enqueue(
            None,
            &NewJob::new("w", json!({})).queue("q9").max_attempts(1),
        )
        .await
        .unwrap()
        .unwrap();
    let t0 = Utc::now();
    s.claim("q9", &w(), 1, "crashed", t0, t0 + ms(10))
        .await
        .unwrap();
    assert_eq!(s.rescue(t0 + ms(20), &no_backoff).await.unwrap(), 1);
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Discarded, "no endless crash loop");
    assert!(
        j.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("discarded: its runner stopped during attempt 1 of 1")),
        "{:?}",
        j.last_error
    );
}

pub async fn unregistered_names_wait_then_cancel(s: &dyn JobStore) {
    let t0 = Utc::now();
    let job = |worker: &str| {
        NewJob::new(worker, json!({}))
            .queue("q-reg")
            .scheduled_at(t0 - ms(10_000))
    };
    let known = s.enqueue(None, &job("w")).await.unwrap().unwrap();
    let forwarder = s
        .enqueue(None, &job("signal_bus.forwarder:gone"))
        .await
        .unwrap()
        .unwrap();
    let worker = s.enqueue(None, &job("gone-worker")).await.unwrap().unwrap();
    let elsewhere = s.enqueue(None, &job("elsewhere")).await.unwrap().unwrap();
    // `w` registered by this process, `elsewhere` by another one a while ago.
    s.register_workers("q-reg", &w(), t0).await.unwrap();
    s.register_workers("q-reg", &["elsewhere".to_owned()], t0 - ms(5_000))
        .await
        .unwrap();
    let waiting = s.unregistered(t0 - ms(1_000), t0).await.unwrap();
    let key = |w: &str| ("q-reg".to_owned(), w.to_owned());
    assert_eq!(waiting.get(&key("signal_bus.forwarder:gone")), Some(&1));
    assert_eq!(waiting.get(&key("gone-worker")), Some(&1));
    assert_eq!(
        waiting.get(&key("elsewhere")),
        Some(&1),
        "seen 5 s ago only"
    );
    assert_eq!(waiting.get(&key("w")), None);
    // A grace of 8 s: `elsewhere` was seen within it and keeps its job.
    let cancelled = s.cancel_unregistered(t0 - ms(8_000), t0).await.unwrap();
    assert_eq!(cancelled.get(&key("signal_bus.forwarder:gone")), Some(&1));
    assert_eq!(cancelled.get(&key("gone-worker")), Some(&1));
    assert_eq!(cancelled.len(), 2, "{cancelled:?}");
    let reason = |id| async move { s.get(id).await.unwrap().unwrap() };
    let f = reason(forwarder).await;
    assert_eq!(
        (f.state, f.cancel_reason),
        (JobState::Cancelled, Some(CancelReason::UnknownForwarder))
    );
    assert!(f.last_error.unwrap().contains("`gone`"));
    assert_eq!(
        reason(worker).await.cancel_reason,
        Some(CancelReason::UnknownWorker)
    );
    assert_eq!(reason(known).await.state, JobState::Available);
    assert_eq!(reason(elsewhere).await.state, JobState::Available);
    // Jobs that became due within the grace period are not cancelled yet.
    let recent = s
        .enqueue(
            None,
            &NewJob::new("late-worker", json!({}))
                .queue("q-reg")
                .scheduled_at(t0 - ms(1_000)),
        )
        .await
        .unwrap()
        .unwrap();
    s.cancel_unregistered(t0 - ms(8_000), t0).await.unwrap();
    assert_eq!(reason(recent).await.state, JobState::Available);
    // Clean up for the later checks.
    for id in [known, elsewhere, recent] {
        s.cancel_job(id, CancelReason::Manual, "suite", t0)
            .await
            .unwrap();
    }
}

pub async fn redrive_and_counts(s: &dyn JobStore) {
    let id = s
        .enqueue(None, &NewJob::new("w", json!({})).queue("q7"))
        .await
        .unwrap()
        .unwrap();
    let c = claim_all(s, "q7").await;
    s.discard(c[0].lease(), "x", Utc::now()).await.unwrap();
    assert!(s
        .list(JobState::Discarded, 1000)
        .await
        .unwrap()
        .iter()
        .any(|j| j.id == id));
    assert_eq!(s.redrive(&[id], Utc::now()).await.unwrap(), 1);
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!((j.state, j.attempt), (JobState::Available, 0));
    let c = claim_all(s, "q7").await;
    s.complete(c[0].lease(), Utc::now()).await.unwrap();
    let counts = s.counts().await.unwrap();
    assert_eq!(counts.len(), 7, "every state is counted");
    assert!(counts[&JobState::Completed] >= 1);
}

pub async fn prune_per_state_and_signals(s: &dyn JobStore) {
    // Start from no finished jobs, so the counts below are exact.
    let far = Utc::now() + ms(3_600_000);
    for state in [
        JobState::Completed,
        JobState::Cancelled,
        JobState::Discarded,
    ] {
        s.prune(state, far, usize::MAX).await.unwrap();
    }
    let t0 = Utc::now();
    let mk = |i: usize| signal_from("/prune", &format!("p-{i}"));
    let mut leases = Vec::new();
    for i in 0..4 {
        let sig = mk(i);
        let job = NewJob::new(
            "w",
            json!({"signal_source": "/prune", "signal_id": sig.id()}),
        )
        .queue("q-prune");
        s.enqueue(Some(&sig), &job).await.unwrap().unwrap();
    }
    for j in claim_all(s, "q-prune").await {
        leases.push(j.lease());
    }
    let old = t0 - ms(3_600_000);
    s.complete(leases[0], old).await.unwrap();
    s.cancel(leases[1], CancelReason::Worker, "c", old)
        .await
        .unwrap();
    s.discard(leases[2], "d", old).await.unwrap();
    // leases[3] stays executing: its signal must survive everything below.
    assert_eq!(s.prune(JobState::Executing, t0, 100).await.unwrap(), 0);
    assert_eq!(
        s.prune(JobState::Completed, old - ms(1), 100)
            .await
            .unwrap(),
        0,
        "younger than the cut"
    );
    assert_eq!(s.prune(JobState::Completed, t0, 100).await.unwrap(), 1);
    assert_eq!(s.prune(JobState::Cancelled, t0, 100).await.unwrap(), 1);
    assert!(
        s.get(leases[2].job).await.unwrap().is_some(),
        "discarded kept"
    );
    assert_eq!(s.prune(JobState::Discarded, t0, 100).await.unwrap(), 1);
    // Signals of pruned jobs go; the executing job's stays.
    let later = Utc::now() + ms(1_000);
    let mut deleted = 0;
    loop {
        let n = s.prune_signals(later, 1).await.unwrap();
        if n == 0 {
            break;
        }
        deleted += n;
    }
    assert!(
        deleted >= 3,
        "at least the three pruned jobs' signals: {deleted}"
    );
    for i in 0..3 {
        assert_eq!(
            s.load_signal("/prune", &format!("p-{i}")).await.unwrap(),
            None
        );
    }
    assert!(s.load_signal("/prune", "p-3").await.unwrap().is_some());
    s.complete(leases[3], t0).await.unwrap();
}

pub async fn group_commit(s: &dyn JobStore) {
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
        s.load_signal("/suite", "bulk-499")
            .await
            .unwrap()
            .unwrap()
            .id(),
        "bulk-499"
    );
    let claimed = claim_all(s, "q8").await;
    assert_eq!(claimed.len(), 100);
}

/// Invalid jobs are refused and store nothing, not even their signal, alone or in a batch.
pub async fn invalid_jobs_store_nothing(s: &dyn JobStore) {
    let sig = signal("invalid");
    for bad in [
        NewJob::new("w", json!({})).queue(""),
        NewJob::new("", json!({})),
        NewJob::new("w", json!({})).max_attempts(0),
        NewJob::new("w", json!({})).priority(10),
        NewJob::new("w", json!({})).priority(-1),
    ] {
        let err = s.enqueue(Some(&sig), &bad).await.unwrap_err();
        assert!(matches!(err, QueueError::Invalid(_)), "{bad:?}: {err}");
    }
    let items = vec![
        (Some(Arc::new(sig.clone())), NewJob::new("w", json!({}))),
        (None, NewJob::new("w", json!({})).priority(12)),
    ];
    assert!(matches!(
        s.enqueue_many(&items).await,
        Err(QueueError::Invalid(_))
    ));
    let counts = s.counts().await.unwrap();
    assert!(counts.values().all(|&n| n == 0), "{counts:?}");
    assert_eq!(
        s.load_signal(sig.source(), sig.id()).await.unwrap(),
        None,
        "not even the signal"
    );
}

/// A job scheduled later is stored `scheduled` at that time (to the millisecond) and is
/// claimed only once its time has come.
pub async fn scheduled_jobs_wait_for_their_time(s: &dyn JobStore) {
    let now = Utc::now();
    let at = now + ms(3_600_000);
    let id = s
        .enqueue(None, &NewJob::new("w", json!({})).scheduled_at(at))
        .await
        .unwrap()
        .unwrap();
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Scheduled);
    assert_eq!(j.scheduled_at.timestamp_millis(), at.timestamp_millis());
    assert!(claim_at(s, "default", now).await.is_empty());
    assert!(claim_at(s, "default", at - ms(1)).await.is_empty());
    assert_eq!(ids(&claim_at(s, "default", at).await), [id]);
}

/// A snooze reschedules without spending an attempt; the next claim gets a new token, and
/// the snoozed lease is lost.
pub async fn snooze_gives_the_attempt_back(s: &dyn JobStore) {
    let id = s
        .enqueue(None, &NewJob::new("w", json!({})))
        .await
        .unwrap()
        .unwrap();
    let now = Utc::now();
    let first = claim_at(s, "default", now).await;
    assert_eq!(first[0].attempt, 1);
    s.snooze(first[0].lease(), now + ms(60_000)).await.unwrap();
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Scheduled);
    assert_eq!(j.attempt, 0);
    assert!(claim_at(s, "default", now + ms(30_000)).await.is_empty());
    let again = claim_at(s, "default", now + ms(61_000)).await;
    assert_eq!((again[0].attempt, again[0].token), (1, 2));
    assert!(matches!(
        s.snooze(first[0].lease(), now + ms(600_000)).await,
        Err(QueueError::LeaseLost { job }) if job == id
    ));
}

/// A unique key holds while its job is live and within its period: other keys are
/// independent, a cancelled job frees its key, the key is free again after the period
/// (never before), and within one batch the first of a key wins and a deduplicated job
/// stores no signal.
pub async fn unique_keys_dedup_within_their_period(s: &dyn JobStore) {
    let long = Duration::from_secs(3600);
    let job = |key: &str, period| NewJob::new("w", json!({})).unique(key, period);
    let first = s.enqueue(None, &job("k1", long)).await.unwrap();
    assert!(first.is_some());
    assert_eq!(s.enqueue(None, &job("k1", long)).await.unwrap(), None);
    // Other keys are independent.
    assert!(s.enqueue(None, &job("k2", long)).await.unwrap().is_some());
    // A cancelled job no longer holds its key.
    assert!(s
        .cancel_job(first.unwrap(), CancelReason::Manual, "by hand", Utc::now())
        .await
        .unwrap());
    assert!(s.enqueue(None, &job("k1", long)).await.unwrap().is_some());

    // After the period the key is free again. The store reads the clock itself here, so
    // wait for the key to be free rather than for a fixed time; it must not be free before
    // the period is over.
    let short = Duration::from_millis(20);
    let t0 = Utc::now();
    assert!(s.enqueue(None, &job("k3", short)).await.unwrap().is_some());
    let patience = t0 + ms(30_000);
    let freed_at = loop {
        if s.enqueue(None, &job("k3", short)).await.unwrap().is_some() {
            break Utc::now();
        }
        assert!(Utc::now() < patience, "the unique period never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let waited = freed_at - t0;
    assert!(
        waited >= chrono::Duration::from_std(short).unwrap(),
        "freed after {waited}"
    );

    // In one batch: the first of a key wins, a live key elsewhere holds, and a
    // deduplicated job stores no signal.
    let sig = Arc::new(signal("deduplicated"));
    let batch = vec![
        (None, job("k4", long)),
        (Some(sig.clone()), job("k4", long)),
        (None, job("k2", long)),
        (None, NewJob::new("w", json!({}))),
    ];
    let ids = s.enqueue_many(&batch).await.unwrap();
    assert!(ids[0].is_some());
    assert_eq!(ids[1], None);
    assert_eq!(ids[2], None);
    assert!(ids[3].is_some());
    assert!(s
        .load_signal(sig.source(), sig.id())
        .await
        .unwrap()
        .is_none());
}

/// Whether `r` is the refusal of a lost lease on job `id`.
fn lost(r: Result<(), QueueError>, id: i64) -> bool {
    matches!(r, Err(QueueError::LeaseLost { job }) if job == id)
}

/// A retried job is `retryable` at its time with the error recorded, runs again with the
/// next attempt and a new token, and the old lease (or a finished job's) is refused.
pub async fn retry_runs_again_at_its_time_with_the_next_attempt(s: &dyn JobStore) {
    let id = s
        .enqueue(None, &NewJob::new("w", json!({})))
        .await
        .unwrap()
        .unwrap();
    let now = Utc::now();
    let first = claim_at(s, "default", now).await;
    assert_eq!((first[0].attempt, first[0].token), (1, 1));
    let at = now + ms(10_000);
    s.retry(first[0].lease(), at, "boom").await.unwrap();
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Retryable);
    assert_eq!(j.last_error.as_deref(), Some("boom"));
    assert_eq!(j.attempt, 1);
    assert_eq!(j.scheduled_at.timestamp_millis(), at.timestamp_millis());
    assert!(
        claim_at(s, "default", now + ms(5_000)).await.is_empty(),
        "not before its time"
    );
    let again = claim_at(s, "default", at).await;
    assert_eq!(ids(&again), [id]);
    assert_eq!((again[0].attempt, again[0].token), (2, 2));
    assert_eq!(again[0].state, JobState::Executing);
    // The first attempt's lease is stale now.
    assert!(lost(s.retry(first[0].lease(), now, "late").await, id));
    assert!(lost(s.complete(first[0].lease(), now).await, id));
    assert_eq!(s.get(id).await.unwrap().unwrap().state, JobState::Executing);
    // Retry only applies to executing jobs held under the lease.
    s.complete(again[0].lease(), Utc::now()).await.unwrap();
    assert!(lost(
        s.retry(again[0].lease(), Utc::now(), "late").await,
        id
    ));
    assert_eq!(s.get(id).await.unwrap().unwrap().state, JobState::Completed);
}

/// Release puts back the executing jobs of one owner only, with their attempt given back;
/// their leases are refused and the next claim takes them with a new token.
pub async fn release_gives_the_attempt_back(s: &dyn JobStore) {
    for _ in 0..3 {
        s.enqueue(None, &NewJob::new("w", json!({}))).await.unwrap();
    }
    let now = Utc::now();
    let until = now + ms(60_000);
    let mine = s.claim("default", &w(), 2, "a", now, until).await.unwrap();
    let theirs = s.claim("default", &w(), 2, "b", now, until).await.unwrap();
    assert_eq!((mine.len(), theirs.len()), (2, 1));
    assert_eq!(s.release("nobody", now).await.unwrap(), 0);
    assert_eq!(s.release("a", now).await.unwrap(), 2);
    for j in &mine {
        let j = s.get(j.id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Available);
        assert_eq!(j.attempt, 0);
        assert!(lost(s.complete(mine[0].lease(), now).await, mine[0].id));
    }
    let available = s.list(JobState::Available, 10).await.unwrap();
    assert_eq!(available.len(), 2);
    assert!(available.iter().all(|j| j.attempt == 0));
    assert_eq!(s.list(JobState::Executing, 10).await.unwrap().len(), 1);
    let theirs = s.get(theirs[0].id).await.unwrap().unwrap();
    assert_eq!(theirs.state, JobState::Executing);
    assert_eq!(theirs.attempt, 1);
    let again = claim_at(s, "default", now).await;
    assert_eq!(ids(&again), ids(&mine));
    assert!(again.iter().all(|j| j.attempt == 1 && j.token == 2));
}

/// Cancelled and discarded jobs are final, with their reason, error and finish time:
/// nothing claims them, every lease on them is refused, a second cancel (or one of an
/// unknown id) does nothing; a job cancelled by hand while it runs loses its lease, and a
/// worker's own cancellation records its reason.
pub async fn cancel_and_discard_are_final(s: &dyn JobStore) {
    let c = s
        .enqueue(None, &NewJob::new("w", json!({})))
        .await
        .unwrap()
        .unwrap();
    let d = s
        .enqueue(None, &NewJob::new("w", json!({})))
        .await
        .unwrap()
        .unwrap();
    let now = Utc::now();
    // By hand, before any runner took it.
    assert!(s
        .cancel_job(c, CancelReason::Manual, "by hand", now)
        .await
        .unwrap());
    let claimed = claim_at(s, "default", now).await;
    assert_eq!(ids(&claimed), [d]);
    let d_lease = claimed[0].lease();
    s.discard(d_lease, "out of attempts", now).await.unwrap();

    let cj = s.get(c).await.unwrap().unwrap();
    assert_eq!(cj.state, JobState::Cancelled);
    assert!(cj.state.is_final());
    assert_eq!(cj.cancel_reason, Some(CancelReason::Manual));
    assert_eq!(cj.last_error.as_deref(), Some("by hand"));
    assert!(cj.finished_at.is_some());
    let dj = s.get(d).await.unwrap().unwrap();
    assert_eq!(dj.state, JobState::Discarded);
    assert_eq!(dj.cancel_reason, None);
    assert_eq!(dj.last_error.as_deref(), Some("out of attempts"));
    assert!(dj.finished_at.is_some());

    // Nothing claims or revives them but redrive.
    assert!(claim_at(s, "default", now + ms(86_400_000))
        .await
        .is_empty());
    assert!(lost(s.complete(d_lease, now).await, d));
    assert!(lost(s.retry(d_lease, now, "again").await, d));
    assert!(lost(s.discard(d_lease, "again", now).await, d));
    assert!(lost(
        s.cancel(d_lease, CancelReason::Worker, "again", now).await,
        d
    ));
    for id in [c, d] {
        assert!(!s
            .cancel_job(id, CancelReason::Manual, "again", now)
            .await
            .unwrap());
    }
    assert!(!s
        .cancel_job(i64::MAX, CancelReason::Manual, "none", now)
        .await
        .unwrap());
    assert_eq!(s.get(c).await.unwrap().unwrap(), cj);
    assert_eq!(s.get(d).await.unwrap().unwrap(), dj);

    // Cancelled by hand while it runs: its runner finds the lease lost.
    let e = s
        .enqueue(None, &NewJob::new("w", json!({})))
        .await
        .unwrap()
        .unwrap();
    let running = claim_at(s, "default", now).await;
    assert_eq!(ids(&running), [e]);
    assert!(s
        .cancel_job(e, CancelReason::Manual, "stop it", now)
        .await
        .unwrap());
    assert!(lost(s.complete(running[0].lease(), now).await, e));
    assert_eq!(
        s.heartbeat(&[running[0].lease()], now + ms(60_000))
            .await
            .unwrap(),
        [e]
    );
    let ej = s.get(e).await.unwrap().unwrap();
    assert_eq!(
        (ej.state, ej.cancel_reason),
        (JobState::Cancelled, Some(CancelReason::Manual))
    );

    // A worker's own cancellation, with its reason.
    let f = s
        .enqueue(None, &NewJob::new("w", json!({})))
        .await
        .unwrap()
        .unwrap();
    let running = claim_at(s, "default", now).await;
    s.cancel(
        running[0].lease(),
        CancelReason::SignalNotFound,
        "signal_not_found: gone",
        now,
    )
    .await
    .unwrap();
    let fj = s.get(f).await.unwrap().unwrap();
    assert_eq!(fj.cancel_reason, Some(CancelReason::SignalNotFound));
    assert_eq!(fj.last_error.as_deref(), Some("signal_not_found: gone"));
    assert!(lost(s.discard(running[0].lease(), "again", now).await, f));
}
