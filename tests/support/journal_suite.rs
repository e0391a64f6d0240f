//! One conformance suite every `JournalStore` passes: memory, SQLite and PostgreSQL run the
//! same checks, each case its own test on a fresh store (`journal_suite!`). Times are passed
//! explicitly (whole milliseconds: the SQL stores keep milliseconds), so no check depends on
//! the clock or on how fast the machine is.

#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::json;
use signal_bus::{
    journal::{JournalRetention, JournalStore},
    Signal,
};

/// A fixed time in whole milliseconds.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_767_225_600_000).unwrap()
}

pub fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// Signal `n` of type `ty` (its id says which).
pub fn sig(ty: &str, n: usize) -> Arc<Signal> {
    Arc::new(
        Signal::builder(ty, "/journal-suite")
            .id(format!("s{n}"))
            .data(json!({ "n": n }))
            .build()
            .unwrap(),
    )
}

/// `count` signals of type `ty`, numbered from `from`.
pub fn sigs(ty: &str, from: usize, count: usize) -> Vec<Arc<Signal>> {
    (from..from + count).map(|n| sig(ty, n)).collect()
}

/// Every entry of `journal` (read in pages of 7), as (seq, id).
pub async fn all(s: &dyn JournalStore, journal: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = s.read(journal, after, 7, None).await.unwrap();
        if page.scanned_to == after {
            assert!(page.entries.is_empty());
            return out;
        }
        out.extend(
            page.entries
                .iter()
                .map(|e| (e.seq, e.signal.id().to_owned())),
        );
        after = page.scanned_to;
    }
}

pub fn seqs(entries: &[(u64, String)]) -> Vec<u64> {
    entries.iter().map(|(s, _)| *s).collect()
}

/// Declares one `#[tokio::test]` per suite case, in a module `$module`, each case on a fresh
/// store: `$fresh` is an async fn returning `Some((Arc<dyn JournalStore>, T))` (the store,
/// empty, and what must outlive it) or `None` to skip (after printing why), `$finish` an
/// async fn taking that `T` back when the case passed.
#[macro_export]
macro_rules! journal_suite {
    ($module:ident, $fresh:path, $finish:path) => {
        $crate::journal_suite!(@cases $module, $fresh, $finish;
            append_returns_increasing_seqs,
            reads_in_order_with_paging,
            filter_skips_types_and_scanned_to_advances,
            head_and_seq_before,
            seq_before_with_clocks_out_of_order,
            journals_are_independent,
            checkpoints,
            leases,
            dead_letters,
            delete_subscription,
            prune_by_age,
            prune_by_count,
            prune_by_bytes,
            prune_protects_unacknowledged,
            prune_in_rounds,
        );
    };
    (@cases $module:ident, $fresh:path, $finish:path; $($case:ident),* $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some((store, keep)) = $fresh().await else {
                        return;
                    };
                    $crate::journal_suite::$case(&*store).await;
                    drop(store);
                    $finish(keep).await;
                }
            )*
        }
    };
}

pub async fn append_returns_increasing_seqs(s: &dyn JournalStore) {
    assert_eq!(s.head("j").await.unwrap(), 0);
    assert_eq!(
        s.append("j", &sigs("a", 0, 3), t0()).await.unwrap(),
        [1, 2, 3]
    );
    assert_eq!(s.append("j", &sigs("a", 3, 2), t0()).await.unwrap(), [4, 5]);
    assert!(s.append("j", &[], t0()).await.unwrap().is_empty());
    assert_eq!(s.append("j", &sigs("a", 5, 1), t0()).await.unwrap(), [6]);
    assert_eq!(s.head("j").await.unwrap(), 6);
    // A batch bigger than any chunk a store may split it into.
    let big = s.append("j", &sigs("a", 6, 1_000), t0()).await.unwrap();
    assert_eq!(big, (7..=1_006).collect::<Vec<u64>>());
    assert_eq!(s.head("j").await.unwrap(), 1_006);
    let stored = all(s, "j").await;
    assert_eq!(seqs(&stored), (1..=1_006).collect::<Vec<u64>>());
    for (seq, id) in &stored {
        assert_eq!(*id, format!("s{}", seq - 1), "entry {seq} holds its signal");
    }
}

pub async fn reads_in_order_with_paging(s: &dyn JournalStore) {
    let signals = sigs("a", 0, 25);
    s.append("j", &signals[..10], t0()).await.unwrap();
    s.append("j", &signals[10..], t0() + secs(1)).await.unwrap();

    let page = s.read("j", 0, 10, None).await.unwrap();
    assert_eq!(page.scanned_to, 10);
    let got: Vec<u64> = page.entries.iter().map(|e| e.seq).collect();
    assert_eq!(got, (1..=10).collect::<Vec<u64>>());
    for (entry, signal) in page.entries.iter().zip(&signals) {
        assert_eq!(*entry.signal, **signal, "a signal reads back as published");
        assert_eq!(entry.appended_at, t0());
    }
    let page = s.read("j", 10, 10, None).await.unwrap();
    assert_eq!(page.scanned_to, 20);
    assert_eq!(page.entries[0].seq, 11);
    assert_eq!(page.entries[0].appended_at, t0() + secs(1));
    assert_eq!(*page.entries[9].signal, *signals[19]);
    // The last page is short.
    let page = s.read("j", 20, 10, None).await.unwrap();
    assert_eq!(page.scanned_to, 25);
    assert_eq!(page.entries.len(), 5);
    // The end: nothing scanned, scanned_to stays at `after`.
    let page = s.read("j", 25, 10, None).await.unwrap();
    assert!(page.entries.is_empty());
    assert_eq!(page.scanned_to, 25);
    let page = s.read("j", 1_000, 10, None).await.unwrap();
    assert!(page.entries.is_empty());
    assert_eq!(page.scanned_to, 1_000);
    // From the middle, limit 1, limit 0.
    let page = s.read("j", 17, 1, None).await.unwrap();
    assert_eq!((page.entries.len(), page.scanned_to), (1, 18));
    assert_eq!(*page.entries[0].signal, *signals[17]);
    let page = s.read("j", 3, 0, None).await.unwrap();
    assert!(page.entries.is_empty());
    assert_eq!(page.scanned_to, 3);
    // Types and data with any character come back byte for byte.
    let odd = Arc::new(
        Signal::builder("com.example/caf\u{e9}+v2@eu~1.#.*.%.'q'.\"d\".\\", "/j")
            .id("odd 1")
            .data(json!({ "text": "\u{17c}\u{f3}\u{142}w \u{2603} \u{0} ' \" 1 2 3 " }))
            .build()
            .unwrap(),
    );
    let seq = s.append("odd", &[Arc::clone(&odd)], t0()).await.unwrap();
    let page = s.read("odd", 0, 10, None).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].seq, seq[0]);
    assert_eq!(*page.entries[0].signal, *odd);
    let exact = |ty: &str| ty == odd.ty();
    let page = s.read("odd", 0, 10, Some(&exact)).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    // A journal never written reads empty.
    let page = s.read("none", 0, 10, None).await.unwrap();
    assert!(page.entries.is_empty());
    assert_eq!(page.scanned_to, 0);
}

pub async fn filter_skips_types_and_scanned_to_advances(s: &dyn JournalStore) {
    // seq 1..=10: odd seqs `a.x`, even seqs `b.y`; then 11..=15 all `a.x`.
    let mut batch = Vec::new();
    for n in 0..10 {
        batch.push(sig(if n % 2 == 0 { "a.x" } else { "b.y" }, n));
    }
    s.append("j", &batch, t0()).await.unwrap();
    s.append("j", &sigs("a.x", 10, 5), t0()).await.unwrap();

    let only_b = |ty: &str| ty == "b.y";
    let page = s.read("j", 0, 5, Some(&only_b)).await.unwrap();
    let got: Vec<u64> = page.entries.iter().map(|e| e.seq).collect();
    assert_eq!(got, [2, 4]);
    assert!(page.entries.iter().all(|e| e.signal.ty() == "b.y"));
    assert_eq!(page.scanned_to, 5, "scanned past the skipped `a.x` at 5");
    let page = s.read("j", 5, 100, Some(&only_b)).await.unwrap();
    let got: Vec<u64> = page.entries.iter().map(|e| e.seq).collect();
    assert_eq!(got, [6, 8, 10]);
    assert_eq!(page.scanned_to, 15);
    // A page where nothing matches still advances.
    let page = s.read("j", 10, 3, Some(&only_b)).await.unwrap();
    assert!(page.entries.is_empty());
    assert_eq!(page.scanned_to, 13);
    // A filter matching nothing at all.
    let none = |_: &str| false;
    let page = s.read("j", 0, 100, Some(&none)).await.unwrap();
    assert!(page.entries.is_empty());
    assert_eq!(page.scanned_to, 15);
    // The filter sees every scanned type (and nothing else).
    let seen = std::sync::Mutex::new(Vec::new());
    let record = |ty: &str| {
        seen.lock().unwrap().push(ty.to_owned());
        true
    };
    let page = s.read("j", 8, 4, Some(&record)).await.unwrap();
    assert_eq!(page.entries.len(), 4);
    assert_eq!(*seen.lock().unwrap(), ["a.x", "b.y", "a.x", "a.x"]);
}

pub async fn head_and_seq_before(s: &dyn JournalStore) {
    assert_eq!(s.head("j").await.unwrap(), 0);
    assert_eq!(s.seq_before("j", t0()).await.unwrap(), 0);
    s.append("j", &sigs("a", 0, 3), t0()).await.unwrap(); // 1..=3
    s.append("j", &sigs("a", 3, 2), t0() + secs(10))
        .await
        .unwrap(); // 4..=5
    s.append("j", &sigs("a", 5, 4), t0() + secs(20))
        .await
        .unwrap(); // 6..=9
    assert_eq!(s.head("j").await.unwrap(), 9);
    let before = |t| s.seq_before("j", t);
    assert_eq!(before(t0() - secs(1)).await.unwrap(), 0);
    assert_eq!(before(t0()).await.unwrap(), 0, "strictly before");
    assert_eq!(
        before(t0() + chrono::Duration::milliseconds(1))
            .await
            .unwrap(),
        3
    );
    assert_eq!(before(t0() + secs(10)).await.unwrap(), 3);
    assert_eq!(before(t0() + secs(15)).await.unwrap(), 5);
    assert_eq!(before(t0() + secs(20)).await.unwrap(), 5);
    assert_eq!(before(t0() + secs(3600)).await.unwrap(), 9);
    // The head stays when every entry is pruned; numbers are never reused.
    let gone = s
        .prune("j", &JournalRetention::default().max_entries(0), t0())
        .await
        .unwrap();
    assert_eq!(gone, 9);
    assert_eq!(s.head("j").await.unwrap(), 9);
    // Nothing at or after the time: the head (a replay from there reads what comes next).
    assert_eq!(s.seq_before("j", t0() + secs(3600)).await.unwrap(), 9);
    assert_eq!(s.append("j", &sigs("a", 9, 1), t0()).await.unwrap(), [10]);
    assert_eq!(s.head("j").await.unwrap(), 10);
}

/// Appenders whose clocks disagree: a later entry can carry an earlier time. A replay since a
/// time still yields every entry appended at or after it.
pub async fn seq_before_with_clocks_out_of_order(s: &dyn JournalStore) {
    s.append("j", &sigs("a", 0, 2), t0() + secs(20))
        .await
        .unwrap(); // 1..=2 at +20 s
    s.append("j", &sigs("a", 2, 2), t0() + secs(10))
        .await
        .unwrap(); // 3..=4 at +10 s: a slower clock
    s.append("j", &sigs("a", 4, 1), t0() + secs(30))
        .await
        .unwrap(); // 5 at +30 s
    let before = |t| s.seq_before("j", t);
    // Since +15 s: 1 and 2 (+20 s) are in, so the replay starts at the beginning.
    assert_eq!(before(t0() + secs(15)).await.unwrap(), 0);
    assert_eq!(before(t0() + secs(5)).await.unwrap(), 0);
    assert_eq!(before(t0() + secs(25)).await.unwrap(), 4);
    assert_eq!(before(t0() + secs(31)).await.unwrap(), 5);
}

pub async fn journals_are_independent(s: &dyn JournalStore) {
    assert_eq!(
        s.append("one", &sigs("a", 0, 3), t0()).await.unwrap(),
        [1, 2, 3]
    );
    assert_eq!(
        s.append("two", &sigs("b", 100, 2), t0()).await.unwrap(),
        [1, 2]
    );
    assert_eq!(s.append("one", &sigs("a", 3, 1), t0()).await.unwrap(), [4]);
    assert_eq!(s.head("one").await.unwrap(), 4);
    assert_eq!(s.head("two").await.unwrap(), 2);
    let one = all(s, "one").await;
    let two = all(s, "two").await;
    assert_eq!(seqs(&one), [1, 2, 3, 4]);
    assert_eq!(two, [(1, "s100".to_owned()), (2, "s101".to_owned())]);

    // Subscriptions of the same name are per journal.
    assert_eq!(s.create_checkpoint("one", "sub", 2).await.unwrap(), 2);
    assert_eq!(s.checkpoint("two", "sub").await.unwrap(), None);
    assert!(s
        .acquire_lease("one", "sub", "o1", t0() + secs(60), t0())
        .await
        .unwrap());
    assert!(s
        .acquire_lease("two", "sub", "o2", t0() + secs(60), t0())
        .await
        .unwrap());
    assert!(!s.save_checkpoint("two", "sub", "o1", 9).await.unwrap());
    let signal = sig("a", 0);
    s.add_dead_letter("one", "sub", 1, &signal, "boom", t0())
        .await
        .unwrap();
    assert!(s.dead_letters("two", "sub", 10).await.unwrap().is_empty());

    // Pruning one leaves the other.
    let retention = JournalRetention::default()
        .max_entries(0)
        .protect_unacknowledged(false);
    assert_eq!(s.prune("one", &retention, t0()).await.unwrap(), 4);
    assert_eq!(seqs(&all(s, "two").await), [1, 2]);
    assert!(s.delete_subscription("one", "sub").await.unwrap());
    assert!(
        !s.delete_subscription("two", "sub").await.unwrap(),
        "only a lease"
    );
}

pub async fn checkpoints(s: &dyn JournalStore) {
    assert_eq!(s.checkpoint("j", "sub").await.unwrap(), None);
    assert_eq!(s.create_checkpoint("j", "sub", 5).await.unwrap(), 5);
    assert_eq!(s.checkpoint("j", "sub").await.unwrap(), Some(5));
    // Creating again keeps the existing one.
    assert_eq!(s.create_checkpoint("j", "sub", 9).await.unwrap(), 5);
    assert_eq!(s.create_checkpoint("j", "sub", 0).await.unwrap(), 5);
    // Saving needs the lease.
    assert!(!s.save_checkpoint("j", "sub", "o1", 7).await.unwrap());
    assert_eq!(s.checkpoint("j", "sub").await.unwrap(), Some(5));
    assert!(s
        .acquire_lease("j", "sub", "o1", t0() + secs(30), t0())
        .await
        .unwrap());
    assert!(s.save_checkpoint("j", "sub", "o1", 7).await.unwrap());
    assert_eq!(s.checkpoint("j", "sub").await.unwrap(), Some(7));
    // Never backwards (the owner still held it).
    assert!(s.save_checkpoint("j", "sub", "o1", 3).await.unwrap());
    assert_eq!(s.checkpoint("j", "sub").await.unwrap(), Some(7));
    assert!(s.save_checkpoint("j", "sub", "o1", 7).await.unwrap());
    // Another owner is refused.
    assert!(!s.save_checkpoint("j", "sub", "o2", 100).await.unwrap());
    assert_eq!(s.checkpoint("j", "sub").await.unwrap(), Some(7));
    // Released: refused again.
    s.release_lease("j", "sub", "o1").await.unwrap();
    assert!(!s.save_checkpoint("j", "sub", "o1", 8).await.unwrap());
    assert_eq!(s.checkpoint("j", "sub").await.unwrap(), Some(7));
    // A lease taken before the checkpoint exists: saving creates it.
    assert!(s
        .acquire_lease("j", "late", "o1", t0() + secs(30), t0())
        .await
        .unwrap());
    assert_eq!(s.checkpoint("j", "late").await.unwrap(), None);
    assert!(s.save_checkpoint("j", "late", "o1", 4).await.unwrap());
    assert_eq!(s.checkpoint("j", "late").await.unwrap(), Some(4));
    assert_eq!(s.create_checkpoint("j", "late", 1).await.unwrap(), 4);
    // Big sequence numbers round-trip.
    assert_eq!(
        s.create_checkpoint("j", "big", 1 << 40).await.unwrap(),
        1 << 40
    );
}

pub async fn leases(s: &dyn JournalStore) {
    let until = t0() + secs(10);
    assert!(s
        .acquire_lease("j", "sub", "o1", until, t0())
        .await
        .unwrap());
    // Held: another owner is refused, up to and including `until`.
    assert!(!s
        .acquire_lease("j", "sub", "o2", t0() + secs(99), t0())
        .await
        .unwrap());
    assert!(!s
        .acquire_lease("j", "sub", "o2", t0() + secs(99), until)
        .await
        .unwrap());
    // The holder renews.
    let renewed = t0() + secs(20);
    assert!(s
        .acquire_lease("j", "sub", "o1", renewed, t0() + secs(5))
        .await
        .unwrap());
    assert!(!s
        .acquire_lease("j", "sub", "o2", t0() + secs(99), t0() + secs(15))
        .await
        .unwrap());
    // Expired: another owner steals it; the old one is refused and cannot save.
    let stolen_at = renewed + chrono::Duration::milliseconds(1);
    assert!(s
        .acquire_lease("j", "sub", "o2", stolen_at + secs(10), stolen_at)
        .await
        .unwrap());
    assert!(!s
        .acquire_lease("j", "sub", "o1", stolen_at + secs(10), stolen_at)
        .await
        .unwrap());
    s.create_checkpoint("j", "sub", 0).await.unwrap();
    assert!(!s.save_checkpoint("j", "sub", "o1", 3).await.unwrap());
    assert!(s.save_checkpoint("j", "sub", "o2", 3).await.unwrap());
    // Releasing someone else's lease does nothing.
    s.release_lease("j", "sub", "o1").await.unwrap();
    assert!(!s
        .acquire_lease("j", "sub", "o1", stolen_at + secs(10), stolen_at)
        .await
        .unwrap());
    // Released by its holder: free at once, and the checkpoint stays.
    s.release_lease("j", "sub", "o2").await.unwrap();
    assert!(s
        .acquire_lease("j", "sub", "o1", stolen_at + secs(10), stolen_at)
        .await
        .unwrap());
    assert_eq!(s.checkpoint("j", "sub").await.unwrap(), Some(3));
    // Releasing a lease nobody holds, of a name never seen: nothing happens.
    s.release_lease("j", "nobody", "o1").await.unwrap();
    assert_eq!(s.checkpoint("j", "nobody").await.unwrap(), None);
}

pub async fn dead_letters(s: &dyn JournalStore) {
    assert!(s.dead_letters("j", "sub", 10).await.unwrap().is_empty());
    let (a, b, c) = (sig("a", 1), sig("b", 2), sig("c", 3));
    s.add_dead_letter("j", "sub", 30, &c, "three", t0() + secs(3))
        .await
        .unwrap();
    s.add_dead_letter("j", "sub", 10, &a, "one", t0() + secs(1))
        .await
        .unwrap();
    s.add_dead_letter("j", "sub", 20, &b, "two", t0() + secs(2))
        .await
        .unwrap();
    s.add_dead_letter("j", "other", 10, &a, "elsewhere", t0())
        .await
        .unwrap();
    let listed = s.dead_letters("j", "sub", 10).await.unwrap();
    let got: Vec<(u64, &str)> = listed.iter().map(|d| (d.seq, d.error.as_str())).collect();
    assert_eq!(got, [(10, "one"), (20, "two"), (30, "three")]);
    assert_eq!(*listed[1].signal, *b);
    assert_eq!(listed[1].failed_at, t0() + secs(2));
    let first_two = s.dead_letters("j", "sub", 2).await.unwrap();
    assert_eq!(
        first_two.iter().map(|d| d.seq).collect::<Vec<_>>(),
        [10, 20]
    );
    // The same seq again replaces the letter.
    s.add_dead_letter("j", "sub", 20, &b, "two again", t0() + secs(9))
        .await
        .unwrap();
    let listed = s.dead_letters("j", "sub", 10).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[1].error, "two again");
    assert_eq!(listed[1].failed_at, t0() + secs(9));
    // Take some (unknown seqs ignored), oldest first whatever the order asked.
    let taken = s
        .take_dead_letters("j", "sub", Some(&[30, 99, 10]))
        .await
        .unwrap();
    assert_eq!(taken.iter().map(|d| d.seq).collect::<Vec<_>>(), [10, 30]);
    assert_eq!(*taken[1].signal, *c);
    assert_eq!(taken[1].error, "three");
    let left = s.dead_letters("j", "sub", 10).await.unwrap();
    assert_eq!(left.iter().map(|d| d.seq).collect::<Vec<_>>(), [20]);
    assert!(s
        .take_dead_letters("j", "sub", Some(&[]))
        .await
        .unwrap()
        .is_empty());
    // Take all.
    let taken = s.take_dead_letters("j", "sub", None).await.unwrap();
    assert_eq!(taken.iter().map(|d| d.seq).collect::<Vec<_>>(), [20]);
    assert!(s.dead_letters("j", "sub", 10).await.unwrap().is_empty());
    assert!(s
        .take_dead_letters("j", "sub", None)
        .await
        .unwrap()
        .is_empty());
    // Another subscription's letters stay.
    assert_eq!(s.dead_letters("j", "other", 10).await.unwrap().len(), 1);
}

pub async fn delete_subscription(s: &dyn JournalStore) {
    assert!(!s.delete_subscription("j", "sub").await.unwrap());
    s.create_checkpoint("j", "sub", 4).await.unwrap();
    assert!(s
        .acquire_lease("j", "sub", "o1", t0() + secs(60), t0())
        .await
        .unwrap());
    s.add_dead_letter("j", "sub", 2, &sig("a", 2), "boom", t0())
        .await
        .unwrap();
    s.create_checkpoint("j", "keep", 1).await.unwrap();
    assert!(s.delete_subscription("j", "sub").await.unwrap());
    assert_eq!(s.checkpoint("j", "sub").await.unwrap(), None);
    assert!(s.dead_letters("j", "sub", 10).await.unwrap().is_empty());
    assert!(
        s.acquire_lease("j", "sub", "o2", t0() + secs(60), t0())
            .await
            .unwrap(),
        "the lease went with it"
    );
    assert!(
        !s.delete_subscription("j", "sub").await.unwrap(),
        "only a lease left"
    );
    assert!(!s.delete_subscription("j", "sub").await.unwrap());
    assert_eq!(s.checkpoint("j", "keep").await.unwrap(), Some(1));
    // Dead letters alone are a subscription too.
    s.add_dead_letter("j", "orphan", 1, &sig("a", 1), "boom", t0())
        .await
        .unwrap();
    assert!(s.delete_subscription("j", "orphan").await.unwrap());
    assert!(s.dead_letters("j", "orphan", 10).await.unwrap().is_empty());
}

pub async fn prune_by_age(s: &dyn JournalStore) {
    s.append("j", &sigs("a", 0, 3), t0()).await.unwrap(); // 1..=3
    s.append("j", &sigs("a", 3, 3), t0() + secs(10))
        .await
        .unwrap(); // 4..=6
    s.append("j", &sigs("a", 6, 3), t0() + secs(20))
        .await
        .unwrap(); // 7..=9
    let keep_15s = JournalRetention::default().max_age(Duration::from_secs(15));
    // At t0 + 25 s: older than t0 + 10 s goes (strictly older: 4..=6 stay).
    assert_eq!(s.prune("j", &keep_15s, t0() + secs(25)).await.unwrap(), 3);
    assert_eq!(seqs(&all(s, "j").await), [4, 5, 6, 7, 8, 9]);
    assert_eq!(s.prune("j", &keep_15s, t0() + secs(25)).await.unwrap(), 0);
    assert_eq!(s.prune("j", &keep_15s, t0() + secs(26)).await.unwrap(), 3);
    assert_eq!(seqs(&all(s, "j").await), [7, 8, 9]);
    // Keep-forever prunes nothing; an age beyond any time prunes nothing either.
    assert_eq!(
        s.prune("j", &JournalRetention::keep_forever(), t0() + secs(1 << 30))
            .await
            .unwrap(),
        0
    );
    let forever = JournalRetention::default().max_age(Duration::MAX);
    assert_eq!(s.prune("j", &forever, t0() + secs(99)).await.unwrap(), 0);
    assert_eq!(s.head("j").await.unwrap(), 9);
}

pub async fn prune_by_count(s: &dyn JournalStore) {
    s.append("j", &sigs("a", 0, 30), t0()).await.unwrap();
    let ten = JournalRetention::default().max_entries(10);
    assert_eq!(s.prune("j", &ten, t0()).await.unwrap(), 20);
    assert_eq!(seqs(&all(s, "j").await), (21..=30).collect::<Vec<u64>>());
    assert_eq!(s.prune("j", &ten, t0()).await.unwrap(), 0);
    s.append("j", &sigs("a", 30, 5), t0()).await.unwrap();
    assert_eq!(s.prune("j", &ten, t0()).await.unwrap(), 5);
    assert_eq!(seqs(&all(s, "j").await), (26..=35).collect::<Vec<u64>>());
    let many = JournalRetention::default().max_entries(u64::MAX);
    assert_eq!(s.prune("j", &many, t0()).await.unwrap(), 0);
    let none = JournalRetention::default().max_entries(0);
    assert_eq!(s.prune("j", &none, t0()).await.unwrap(), 10);
    assert!(all(s, "j").await.is_empty());
}

pub async fn prune_by_bytes(s: &dyn JournalStore) {
    let signals = sigs("a", 0, 20);
    s.append("j", &signals, t0()).await.unwrap();
    let size = |i: usize| signals[i].to_json_vec().len() as u64;
    // The newest 5 fit exactly.
    let newest5: u64 = (15..20).map(size).sum();
    let exact = JournalRetention::default().max_bytes(newest5);
    assert_eq!(s.prune("j", &exact, t0()).await.unwrap(), 15);
    assert_eq!(seqs(&all(s, "j").await), [16, 17, 18, 19, 20]);
    // One byte less: one more goes.
    let less = JournalRetention::default().max_bytes(newest5 - 1);
    assert_eq!(s.prune("j", &less, t0()).await.unwrap(), 1);
    assert_eq!(seqs(&all(s, "j").await), [17, 18, 19, 20]);
    // Plenty: nothing; zero: everything.
    let plenty = JournalRetention::default().max_bytes(u64::MAX);
    assert_eq!(s.prune("j", &plenty, t0()).await.unwrap(), 0);
    let zero = JournalRetention::default().max_bytes(0);
    assert_eq!(s.prune("j", &zero, t0()).await.unwrap(), 4);
    // Limits together: whichever lets more go.
    s.append("j", &sigs("a", 20, 10), t0()).await.unwrap(); // 21..=30
    s.append("j", &sigs("a", 30, 10), t0() + secs(10))
        .await
        .unwrap(); // 31..=40
    let both = JournalRetention::default()
        .max_entries(15)
        .max_age(Duration::from_secs(5));
    assert_eq!(s.prune("j", &both, t0() + secs(10)).await.unwrap(), 10);
    assert_eq!(seqs(&all(s, "j").await), (31..=40).collect::<Vec<u64>>());
}

pub async fn prune_protects_unacknowledged(s: &dyn JournalStore) {
    s.append("j", &sigs("a", 0, 20), t0()).await.unwrap();
    s.create_checkpoint("j", "slow", 5).await.unwrap();
    s.create_checkpoint("j", "fast", 15).await.unwrap();
    // A lease without a checkpoint protects nothing.
    s.acquire_lease("j", "bare", "o", t0() + secs(60), t0())
        .await
        .unwrap();
    let all_go = JournalRetention::default().max_entries(0);
    assert!(all_go.protect_unacknowledged);
    assert_eq!(
        s.prune("j", &all_go, t0()).await.unwrap(),
        5,
        "up to the lowest checkpoint"
    );
    assert_eq!(seqs(&all(s, "j").await), (6..=20).collect::<Vec<u64>>());
    // The slow one moves on.
    s.acquire_lease("j", "slow", "o", t0() + secs(60), t0())
        .await
        .unwrap();
    s.save_checkpoint("j", "slow", "o", 12).await.unwrap();
    assert_eq!(s.prune("j", &all_go, t0()).await.unwrap(), 7);
    assert_eq!(seqs(&all(s, "j").await), (13..=20).collect::<Vec<u64>>());
    // Limits that let less go than the checkpoints allow are kept as they are.
    s.save_checkpoint("j", "slow", "o", 18).await.unwrap(); // fast is at 15
    let keep6 = JournalRetention::default().max_entries(6);
    assert_eq!(s.prune("j", &keep6, t0()).await.unwrap(), 2);
    // Protection off: the limits alone.
    let unprotected = all_go.protect_unacknowledged(false);
    assert_eq!(s.prune("j", &unprotected, t0()).await.unwrap(), 6);
    assert!(all(s, "j").await.is_empty());
    // Deleting the subscriptions lifts the protection.
    s.append("j", &sigs("a", 20, 3), t0()).await.unwrap(); // 21..=23
    assert_eq!(
        s.prune("j", &all_go, t0()).await.unwrap(),
        0,
        "slow is at 18, fast at 15"
    );
    s.acquire_lease("j", "fast", "o", t0() + secs(60), t0())
        .await
        .unwrap();
    s.save_checkpoint("j", "fast", "o", 22).await.unwrap();
    assert_eq!(
        s.prune("j", &all_go, t0()).await.unwrap(),
        0,
        "slow is still at 18"
    );
    assert!(s.delete_subscription("j", "slow").await.unwrap());
    assert_eq!(s.prune("j", &all_go, t0()).await.unwrap(), 2);
    assert_eq!(seqs(&all(s, "j").await), [23]);
}

pub async fn prune_in_rounds(s: &dyn JournalStore) {
    // More than one round of 10,000.
    for batch in 0..25 {
        s.append("j", &sigs("a", batch * 1_000, 1_000), t0())
            .await
            .unwrap();
    }
    let keep = JournalRetention::default().max_entries(100);
    assert_eq!(s.prune("j", &keep, t0()).await.unwrap(), 24_900);
    let page = s.read("j", 0, 1_000, None).await.unwrap();
    assert_eq!(page.entries.len(), 100);
    assert_eq!(page.entries[0].seq, 24_901);
    assert_eq!(page.scanned_to, 25_000);
    assert_eq!(s.head("j").await.unwrap(), 25_000);
}
