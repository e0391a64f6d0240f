//! The journal through the bus: publish appends before it delivers, replay reads back in
//! order, persistent subscriptions acknowledge, checkpoint, resume, dead-letter and hand over
//! their lease. Each case runs on the memory store, on a real SQLite file and (when
//! `SIGNAL_BUS_POSTGRES_URL` is set; skipped with a note otherwise) on a fresh PostgreSQL
//! database of its own.

#[cfg(feature = "postgres")]
#[path = "support/pg_db.rs"]
mod pg_db;
#[path = "support/scratch.rs"]
mod scratch;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::StreamExt;
use signal_bus::{
    adapter::{Channel, Handler},
    journal::{Journal, JournalRetention, JournalStore, Replay, StartAt},
    policy::{Mode, RetryPolicy},
    queue::MemoryStore,
    Bus, BusError, DeliveryError, Signal, Target,
};
use tokio::sync::mpsc;

fn signal(ty: &str, n: usize) -> Signal {
    Signal::builder(ty, "/test")
        .id(format!("s{n}"))
        .data(serde_json::json!({ "n": n }))
        .build()
        .unwrap()
}

/// Runs `case` on a memory store, on a fresh SQLite file and on a fresh PostgreSQL database.
macro_rules! on_every_store {
    ($name:ident, $case:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                // Every call gives the same store, as a restarted process would find it.
                let store = signal_bus::queue::MemoryStore::new();
                super::$case(move || {
                    let store = store.clone();
                    async move { store }
                })
                .await;
            }

            #[cfg(feature = "sqlite")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_file() {
                let dir = super::scratch::TempDir::new("journal");
                let path = dir.0.join("journal.db");
                // Every call opens the same file again, as a restarted process would.
                super::$case(move || {
                    let path = path.clone();
                    async move { signal_bus::queue::SqliteStore::open(&path).await.unwrap() }
                })
                .await;
            }

            #[cfg(feature = "postgres")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = super::pg_db::TestDb::new(stringify!($name)).await else {
                    return;
                };
                let url = db.url.clone();
                // Every call connects to the same database again, as a restarted process would.
                super::$case(move || {
                    let url = url.clone();
                    async move {
                        signal_bus::queue::PostgresStore::connect(&url)
                            .await
                            .unwrap()
                    }
                })
                .await;
                db.drop_db().await;
            }
        }
    };
}

async fn channel_rx(rx: &mut mpsc::Receiver<Arc<Signal>>) -> Arc<Signal> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a delivery within 30 s")
        .expect("the channel is open")
}

async fn collect(bus: &Bus, pattern: &str, from: Replay) -> Vec<String> {
    let mut stream = bus.replay(pattern, from).await.unwrap();
    let mut ids = Vec::new();
    while let Some(s) = stream.next().await {
        ids.push(s.unwrap().id().to_owned());
    }
    ids
}

on_every_store!(
    publish_appends_then_replays_in_order,
    publish_appends_then_replays
);
async fn publish_appends_then_replays<S, F, Fut>(open: F)
where
    S: JournalStore + Clone,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let bus = Bus::builder()
        .name("shop")
        .journal(open().await)
        .build()
        .unwrap();
    assert_eq!(bus.journal_name(), Some("shop"));
    let mut seqs = Vec::new();
    for n in 0..2_500 {
        let ty = if n % 2 == 0 {
            "order.placed"
        } else {
            "user.created"
        };
        let report = bus.publish(signal(ty, n)).await.unwrap();
        seqs.push(report.journal_seq().unwrap());
    }
    // Sequence numbers are 1, 2, 3, ... in publish order.
    assert_eq!(seqs, (1..=2_500).collect::<Vec<u64>>());
    // Replay pages through the journal (more than one page) and filters by pattern.
    let orders = collect(&bus, "order.*", Replay::Beginning).await;
    let expected: Vec<String> = (0..2_500).step_by(2).map(|n| format!("s{n}")).collect();
    assert_eq!(orders, expected);
    let all = collect(&bus, "**", Replay::After(2_490)).await;
    assert_eq!(
        all,
        (2_490..2_500).map(|n| format!("s{n}")).collect::<Vec<_>>()
    );
    assert!(collect(&bus, "**", Replay::After(2_500)).await.is_empty());
    // Since a time: everything appended after it.
    let mark = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    bus.publish(signal("order.paid", 9_000)).await.unwrap();
    assert_eq!(collect(&bus, "**", Replay::Since(mark)).await, ["s9000"]);
    // A new bus on the same store and name sees the same journal, and continues it.
    drop(bus);
    let bus = Bus::builder()
        .name("shop")
        .journal(open().await)
        .build()
        .unwrap();
    assert_eq!(
        collect(&bus, "order.paid", Replay::Beginning).await,
        ["s9000"]
    );
    let report = bus.publish(signal("order.paid", 9_001)).await.unwrap();
    assert_eq!(report.journal_seq(), Some(2_502));
    // Another journal name in the same store is another journal.
    let other = Bus::builder()
        .journal(Journal::new(open().await).name("other"))
        .build()
        .unwrap();
    assert!(collect(&other, "**", Replay::Beginning).await.is_empty());
}

on_every_store!(
    replay_reads_ahead_without_skipping_or_repeating,
    replay_reads_ahead
);
/// Replay reads pages ahead while the journal gives full, consecutive pages. Appends while
/// the replay runs, a pruned prefix and a replay dropped half way must neither skip nor repeat
/// an entry.
async fn replay_reads_ahead<S, F, Fut>(open: F)
where
    S: JournalStore + Clone,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let bus = Bus::builder()
        .journal(
            Journal::new(open().await)
                .retention(JournalRetention::default().max_entries(3_700))
                // Pruned only when the test says so.
                .prune_interval(Duration::from_secs(24 * 3600)),
        )
        .build()
        .unwrap();
    for n in 0..4_500 {
        bus.publish(signal("a.b", n)).await.unwrap();
    }
    // Appends while a replay reads ahead: the replay gives s0, s1, ... with no gap and no
    // repeat, up to at least what the journal held when it started.
    let mut stream = bus.replay("**", Replay::Beginning).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(stream.next().await.unwrap().unwrap().id().to_owned());
    }
    let appender = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for n in 4_500..5_500 {
                bus.publish(signal("a.b", n)).await.unwrap();
            }
        })
    };
    while let Some(s) = stream.next().await {
        seen.push(s.unwrap().id().to_owned());
    }
    appender.await.unwrap();
    assert!(seen.len() >= 4_500, "only {} replayed", seen.len());
    let expected: Vec<String> = (0..seen.len()).map(|n| format!("s{n}")).collect();
    assert!(seen == expected, "replay skipped or repeated an entry");
    // A replay dropped while it reads ahead leaves the bus working.
    let mut stream = bus.replay("**", Replay::Beginning).await.unwrap();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    // A pruned prefix: the first page starts past the gap, then full pages follow.
    assert_eq!(bus.prune_journal().await.unwrap(), 5_500 - 3_700);
    let kept = collect(&bus, "**", Replay::Beginning).await;
    let expected: Vec<String> = (1_800..5_500).map(|n| format!("s{n}")).collect();
    assert!(
        kept == expected,
        "replay after pruning skipped or repeated an entry"
    );
    assert_eq!(
        collect(&bus, "**", Replay::After(4_000)).await,
        (4_000..5_500).map(|n| format!("s{n}")).collect::<Vec<_>>()
    );
}

/// A journal with holes in the middle (rows deleted behind the store's back), each reached
/// while pages are read ahead: the page read ahead no longer starts where the page before it
/// ended, and is read again from the right place.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_across_holes_in_a_sqlite_journal() {
    let dir = scratch::TempDir::new("journal-holes");
    let path = dir.0.join("journal.db");
    let store = signal_bus::queue::SqliteStore::open(&path).await.unwrap();
    for first in (1..=8_000).step_by(1_000) {
        let batch: Vec<Arc<Signal>> = (first..first + 1_000)
            .map(|n| Arc::new(signal("a.b", n)))
            .collect();
        let seqs = store.append("j", &batch, chrono::Utc::now()).await.unwrap();
        assert_eq!(seqs.first(), Some(&(first as u64)));
    }
    let bus = Bus::builder()
        .journal(Journal::new(store).name("j"))
        .build()
        .unwrap();
    // Pages read: 1..=1000 (full: 1001.. and 2001.. read ahead), 1001..=2500 less the first
    // hole (the page from 2000 dropped), 2501..=3500 (full), 3501..=4503 less the second hole
    // (dropped again), 4504..=5503, 5504..=6503 (full), 6504..=7504 less the third.
    let holes = [(1_200, 1_700), (4_200, 4_202), (6_600, 6_600)];
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for (from, to) in holes {
        sqlx::query("DELETE FROM signal_bus_journal WHERE seq BETWEEN ?1 AND ?2")
            .bind(from)
            .bind(to)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    let expected: Vec<String> = (1..=8_000)
        .filter(|n| !holes.iter().any(|(from, to)| (from..=to).contains(&n)))
        .map(|n| format!("s{n}"))
        .collect();
    assert!(
        collect(&bus, "**", Replay::Beginning).await == expected,
        "replay across holes skipped or repeated an entry"
    );
}

on_every_store!(persistent_resumes_after_the_checkpoint, persistent_resumes);
async fn persistent_resumes<S, F, Fut>(open: F)
where
    S: JournalStore + Clone,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let bus = Bus::builder()
        .name("app")
        .node_id("node-a")
        .journal(open().await)
        .build()
        .unwrap();
    // Published before the subscription exists: StartAt::Beginning reaches them.
    for n in 0..5 {
        bus.publish(signal("order.placed", n)).await.unwrap();
    }
    let (tx, mut rx) = mpsc::channel(1_000);
    let sub = bus
        .persistent("billing", "order.**")
        .targets(Channel::new(tx))
        .start_at(StartAt::Beginning)
        .start()
        .await
        .unwrap();
    for n in 5..10 {
        bus.publish(signal("order.placed", n)).await.unwrap();
        bus.publish(signal("user.created", 100 + n)).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(channel_rx(&mut rx).await.id().to_owned());
    }
    assert_eq!(got, (0..10).map(|n| format!("s{n}")).collect::<Vec<_>>());
    // The checkpoint covers the last order signal (seq 5 + 2*5 - 1 = 14), skipping users.
    assert!(sub.wait_for_checkpoint(14).await);
    // The same name twice on one bus is refused.
    let (tx2, _rx2) = mpsc::channel(1);
    let taken = bus
        .subscribe_persistent("billing", "order.**", Channel::new(tx2))
        .await
        .unwrap_err();
    assert!(matches!(taken, BusError::PersistentTaken { ref name } if name == "billing"));
    sub.stop().await;

    // Published while nobody consumes.
    for n in 10..15 {
        bus.publish(signal("order.placed", n)).await.unwrap();
    }
    drop(bus);
    // A restart: same node, same name, same store: resumes after the checkpoint, whatever
    // start_at says for a new name.
    let bus = Bus::builder()
        .name("app")
        .node_id("node-a")
        .journal(open().await)
        .build()
        .unwrap();
    let (tx, mut rx) = mpsc::channel(1_000);
    let sub = bus
        .subscribe_persistent("billing", "order.**", Channel::new(tx))
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(channel_rx(&mut rx).await.id().to_owned());
    }
    assert_eq!(got, (10..15).map(|n| format!("s{n}")).collect::<Vec<_>>());
    sub.stop().await;
    assert!(rx.try_recv().is_err(), "nothing delivered twice");
}

on_every_store!(a_new_name_starts_now_by_default, starts_now);
async fn starts_now<S, F, Fut>(open: F)
where
    S: JournalStore + Clone,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let bus = Bus::builder().journal(open().await).build().unwrap();
    bus.publish(signal("a.old", 1)).await.unwrap();
    let (tx, mut rx) = mpsc::channel(10);
    let sub = bus
        .subscribe_persistent("fresh", "a.*", Channel::new(tx))
        .await
        .unwrap();
    bus.publish(signal("a.new", 2)).await.unwrap();
    assert_eq!(channel_rx(&mut rx).await.id(), "s2");
    // StartAt::After and StartAt::Time for other new names.
    let (tx, mut rx) = mpsc::channel(10);
    let after = bus
        .persistent("after", "a.*")
        .targets(Channel::new(tx))
        .start_at(StartAt::After(0))
        .start()
        .await
        .unwrap();
    assert_eq!(channel_rx(&mut rx).await.id(), "s1");
    assert_eq!(channel_rx(&mut rx).await.id(), "s2");
    sub.stop().await;
    after.stop().await;
}

on_every_store!(failures_go_to_dead_letters_and_redrive, dead_letters);
async fn dead_letters<S, F, Fut>(open: F)
where
    S: JournalStore + Clone,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let bus = Bus::builder().journal(open().await).build().unwrap();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let attempts = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::channel::<Arc<Signal>>(100);
    let handler = {
        let fail = Arc::clone(&fail);
        let attempts = Arc::clone(&attempts);
        Handler::new(move |s: Arc<Signal>| {
            let fail = Arc::clone(&fail);
            let attempts = Arc::clone(&attempts);
            let tx = tx.clone();
            async move {
                attempts.fetch_add(1, Ordering::SeqCst);
                if s.id() == "s1" && fail.load(Ordering::SeqCst) {
                    return Err(DeliveryError::retryable("the ledger refused s1"));
                }
                tx.send(s)
                    .await
                    .map_err(|_| DeliveryError::permanent("gone"))
            }
        })
    };
    // Two attempts per signal before it fails for good.
    let target = Target::new(handler)
        .retry(RetryPolicy::exponential(Duration::from_millis(1)).max_attempts(2));
    let sub = bus
        .subscribe_persistent("ledger", "**", target)
        .await
        .unwrap();
    let mut last = 0;
    for n in 0..3 {
        last = bus
            .publish(signal("t.x", n))
            .await
            .unwrap()
            .journal_seq()
            .unwrap();
    }
    assert_eq!(channel_rx(&mut rx).await.id(), "s0");
    // s1 failed for good after its retries: the subscription goes on with s2.
    assert_eq!(channel_rx(&mut rx).await.id(), "s2");
    assert!(sub.wait_for_checkpoint(last).await);
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
    let letters = bus.dead_letters("ledger", 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].signal.id(), "s1");
    assert_eq!(letters[0].seq, 2);
    assert!(
        letters[0].error.contains("the ledger refused s1"),
        "{}",
        letters[0].error
    );
    assert_eq!(sub.dead_lettered(), 1);
    // Redrive while it still fails: it stays.
    let again = bus.redrive("ledger", None).await.unwrap();
    assert_eq!((again.delivered, again.failed), (0, 1));
    assert_eq!(bus.dead_letters("ledger", 10).await.unwrap().len(), 1);
    // Fixed: redrive delivers it and empties the list.
    fail.store(false, Ordering::SeqCst);
    let again = bus.redrive("ledger", Some(&[2])).await.unwrap();
    assert_eq!((again.delivered, again.failed), (1, 0));
    assert_eq!(channel_rx(&mut rx).await.id(), "s1");
    assert!(bus.dead_letters("ledger", 10).await.unwrap().is_empty());
    // Redrive needs the subscription running here; clear does not.
    sub.stop().await;
    let e = bus.redrive("ledger", None).await.unwrap_err();
    assert!(matches!(e, BusError::UnknownPersistent { .. }), "{e}");
    assert_eq!(bus.clear_dead_letters("ledger").await.unwrap(), 0);
    assert!(bus.delete_persistent("ledger").await.unwrap());
}

on_every_store!(manual_acknowledgement, manual_ack);
async fn manual_ack<S, F, Fut>(open: F)
where
    S: JournalStore + Clone,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let bus = Bus::builder().journal(open().await).build().unwrap();
    let (sub, mut deliveries) = bus
        .persistent("by-hand", "job.*")
        .max_in_flight(2)
        .manual(8)
        .await
        .unwrap();
    for n in 1..=3 {
        bus.publish(signal("job.run", n)).await.unwrap();
    }
    let first = deliveries.recv().await.unwrap();
    let second = deliveries.recv().await.unwrap();
    assert_eq!((first.seq(), second.seq()), (1, 2));
    // At most two outstanding: the third waits for an answer.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), deliveries.recv())
            .await
            .is_err()
    );
    // The second is acknowledged first: the checkpoint cannot pass the first yet.
    second.ack();
    let third = deliveries.recv().await.unwrap();
    assert_eq!(third.seq(), 3);
    assert_eq!(sub.checkpoint(), 0);
    // Dropping the first unanswered delivers it again.
    drop(first);
    let first = deliveries.recv().await.unwrap();
    assert_eq!(first.seq(), 1);
    first.ack();
    assert!(sub.wait_for_checkpoint(2).await);
    third.fail("cannot run job 3");
    assert!(sub.wait_for_checkpoint(3).await);
    let letters = bus.dead_letters("by-hand", 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].seq, letters[0].error.as_str()),
        (3, "cannot run job 3")
    );
    sub.stop().await;
}

on_every_store!(one_holder_at_a_time_and_takeover, lease_takeover);
async fn lease_takeover<S, F, Fut>(open: F)
where
    S: JournalStore + Clone,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    // Two buses (as two processes would) on one store and journal.
    let a = Bus::builder()
        .name("shared")
        .node_id("a")
        .journal(open().await)
        .build()
        .unwrap();
    let b = Bus::builder()
        .name("shared")
        .node_id("b")
        .journal(open().await)
        .build()
        .unwrap();
    let (tx_a, mut rx_a) = mpsc::channel(100);
    let (tx_b, mut rx_b) = mpsc::channel(100);
    let sub_a = a
        .persistent("worker", "**")
        .targets(Channel::new(tx_a))
        .lease(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    // Wait until a holds the lease, then start b.
    for _ in 0..3000 {
        if sub_a.is_active() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(sub_a.is_active(), "a holds the lease");
    let sub_b = b
        .persistent("worker", "**")
        .targets(Channel::new(tx_b))
        .lease(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    a.publish(signal("t.x", 1)).await.unwrap();
    assert_eq!(channel_rx(&mut rx_a).await.id(), "s1");
    assert!(sub_a.wait_for_checkpoint(1).await);
    assert!(!sub_b.is_active());
    assert!(rx_b.try_recv().is_err());
    // a stops (its lease is released): b takes over and continues after the checkpoint.
    sub_a.stop().await;
    a.publish(signal("t.x", 2)).await.unwrap();
    assert_eq!(channel_rx(&mut rx_b).await.id(), "s2");
    assert!(sub_b.is_active());
    assert!(rx_a.try_recv().is_err());
    sub_b.stop().await;
}

#[tokio::test]
async fn refusals_name_what_is_wrong() {
    // No journal.
    let bus = Bus::builder().name("plain").build().unwrap();
    let e = bus.replay("**", Replay::Beginning).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "`Bus::replay` needs a journal, and bus `plain` has none: build it with \
         Bus::builder().journal(store)"
    );
    let (tx, _rx) = mpsc::channel(1);
    let e = bus
        .subscribe_persistent("x", "**", Channel::new(tx))
        .await
        .unwrap_err();
    assert!(matches!(e, BusError::NoJournal { .. }), "{e}");

    let bus = Bus::builder().journal(MemoryStore::new()).build().unwrap();
    // An async-mode target would acknowledge on enqueue.
    let (tx, _rx) = mpsc::channel(1);
    let e = bus
        .subscribe_persistent(
            "x",
            "**",
            Target::new(Channel::new(tx)).mode(Mode::async_with_capacity(10)),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("would acknowledge on enqueue"),
        "{e}"
    );
    // Bad options, every one named.
    let (tx, _rx) = mpsc::channel(1);
    let e = bus
        .persistent("", "**")
        .targets(Channel::new(tx))
        .max_in_flight(0)
        .lease(Duration::from_millis(1))
        .start()
        .await
        .unwrap_err();
    let text = e.to_string();
    for part in ["subscription name", "max_in_flight", "lease", "100ms"] {
        assert!(text.contains(part), "{part} in {text}");
    }
    // A failed start frees the name.
    let (tx, _rx) = mpsc::channel(1);
    assert!(bus
        .subscribe_persistent("x", "**", Channel::new(tx))
        .await
        .is_ok());
    // Journal options.
    let e = Bus::builder()
        .journal(
            Journal::new(MemoryStore::new())
                .name("")
                .retention(JournalRetention::default().max_entries(0))
                .prune_interval(Duration::ZERO),
        )
        .build()
        .unwrap_err();
    let text = e.to_string();
    for part in ["journal name", "max_entries", "prune_interval"] {
        assert!(text.contains(part), "{part} in {text}");
    }
}

/// A store whose appends fail: publish reports it and delivers nothing.
#[tokio::test]
async fn a_failed_append_delivers_nothing() {
    let bus = Bus::builder()
        .name("b")
        .journal(Faulty {
            inner: MemoryStore::new(),
            fail_appends: true,
            fail_reads_from: None,
            gate: None,
        })
        .build()
        .unwrap();
    let (tx, mut rx) = mpsc::channel(10);
    bus.subscribe("**", Channel::new(tx)).unwrap();
    let e = bus.publish(signal("a.b", 1)).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "journal `b`: journal store broken failed: disk full"
    );
    assert!(rx.try_recv().is_err(), "nothing delivered");
}

/// A memory store that fails on command: every append, or every read from a sequence number
/// on; with a gate, it holds its first append until the gate opens.
#[derive(Clone)]
struct Faulty {
    inner: MemoryStore,
    fail_appends: bool,
    fail_reads_from: Option<u64>,
    gate: Option<Gate>,
}

/// Holds a store's first append until [`Gate::open`]; counts appends.
#[derive(Clone, Default)]
struct Gate {
    appends: Arc<AtomicUsize>,
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Gate {
    fn open(&self) {
        self.open.send_replace(true);
    }
}

/// A publish the caller stopped waiting for before its append began journals nothing: the
/// caller was never told it was journaled, and would journal it twice by publishing again.
#[tokio::test]
async fn a_publish_abandoned_before_its_append_journals_nothing() {
    let gate = Gate::default();
    let bus = Bus::builder()
        .name("b")
        .journal(Faulty {
            inner: MemoryStore::new(),
            fail_appends: false,
            fail_reads_from: None,
            gate: Some(gate.clone()),
        })
        .build()
        .unwrap();
    let first = tokio::spawn({
        let bus = bus.clone();
        async move { bus.publish(signal("a.b", 1)).await }
    });
    while gate.appends.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // The committer is held in the first append: this publish waits behind it, and its
    // caller gives up.
    let abandoned = tokio::time::timeout(Duration::from_millis(50), bus.publish(signal("a.b", 2)));
    assert!(
        abandoned.await.is_err(),
        "the store is held: it cannot finish"
    );
    gate.open();
    assert_eq!(first.await.unwrap().unwrap().journal_seq(), Some(1));
    // The committer answers in order: by the answer to this one it has decided on the second.
    assert_eq!(
        bus.publish(signal("a.b", 3)).await.unwrap().journal_seq(),
        Some(2)
    );
    assert_eq!(collect(&bus, "**", Replay::Beginning).await, ["s1", "s3"]);
}

#[signal_bus::async_trait]
impl JournalStore for Faulty {
    fn backend(&self) -> &'static str {
        "broken"
    }
    async fn append(
        &self,
        j: &str,
        signals: &[Arc<Signal>],
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<u64>, signal_bus::journal::JournalError> {
        if let Some(gate) = &self.gate {
            if gate.appends.fetch_add(1, Ordering::SeqCst) == 0 {
                let _ = gate.open.subscribe().wait_for(|o| *o).await;
            }
        }
        if self.fail_appends {
            return Err(signal_bus::journal::JournalError::store(
                "broken",
                "disk full",
            ));
        }
        self.inner.append(j, signals, at).await
    }
    async fn read(
        &self,
        j: &str,
        after: u64,
        limit: usize,
        filter: Option<signal_bus::journal::TypeFilter<'_>>,
    ) -> Result<signal_bus::journal::JournalPage, signal_bus::journal::JournalError> {
        if self.fail_reads_from.is_some_and(|from| after >= from) {
            return Err(signal_bus::journal::JournalError::store(
                "broken",
                format!("read after {after} refused"),
            ));
        }
        self.inner.read(j, after, limit, filter).await
    }
    async fn head(&self, j: &str) -> Result<u64, signal_bus::journal::JournalError> {
        self.inner.head(j).await
    }
    async fn seq_before(
        &self,
        j: &str,
        t: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, signal_bus::journal::JournalError> {
        self.inner.seq_before(j, t).await
    }
    async fn checkpoint(
        &self,
        j: &str,
        n: &str,
    ) -> Result<Option<u64>, signal_bus::journal::JournalError> {
        self.inner.checkpoint(j, n).await
    }
    async fn create_checkpoint(
        &self,
        j: &str,
        n: &str,
        s: u64,
    ) -> Result<u64, signal_bus::journal::JournalError> {
        self.inner.create_checkpoint(j, n, s).await
    }
    async fn save_checkpoint(
        &self,
        j: &str,
        n: &str,
        o: &str,
        s: u64,
    ) -> Result<bool, signal_bus::journal::JournalError> {
        self.inner.save_checkpoint(j, n, o, s).await
    }
    async fn acquire_lease(
        &self,
        j: &str,
        n: &str,
        o: &str,
        u: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, signal_bus::journal::JournalError> {
        self.inner.acquire_lease(j, n, o, u, now).await
    }
    async fn release_lease(
        &self,
        j: &str,
        n: &str,
        o: &str,
    ) -> Result<(), signal_bus::journal::JournalError> {
        self.inner.release_lease(j, n, o).await
    }
    async fn add_dead_letter(
        &self,
        j: &str,
        n: &str,
        s: u64,
        sig: &Signal,
        e: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), signal_bus::journal::JournalError> {
        self.inner.add_dead_letter(j, n, s, sig, e, at).await
    }
    async fn dead_letters(
        &self,
        j: &str,
        n: &str,
        l: usize,
    ) -> Result<Vec<signal_bus::journal::JournalDeadLetter>, signal_bus::journal::JournalError>
    {
        self.inner.dead_letters(j, n, l).await
    }
    async fn take_dead_letters(
        &self,
        j: &str,
        n: &str,
        s: Option<&[u64]>,
    ) -> Result<Vec<signal_bus::journal::JournalDeadLetter>, signal_bus::journal::JournalError>
    {
        self.inner.take_dead_letters(j, n, s).await
    }
    async fn delete_subscription(
        &self,
        j: &str,
        n: &str,
    ) -> Result<bool, signal_bus::journal::JournalError> {
        self.inner.delete_subscription(j, n).await
    }
    async fn prune(
        &self,
        j: &str,
        r: &JournalRetention,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, signal_bus::journal::JournalError> {
        self.inner.prune(j, r, now).await
    }
}

/// A read ahead that fails while the page before it is still being consumed: that page's
/// signals come first, then the error, then the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_ahead_comes_after_the_pages_before_it() {
    let bus = Bus::builder()
        .journal(Faulty {
            inner: MemoryStore::new(),
            fail_appends: false,
            fail_reads_from: Some(2_000),
            gate: None,
        })
        .build()
        .unwrap();
    for n in 0..3_000 {
        bus.publish(signal("a.b", n)).await.unwrap();
    }
    let mut stream = bus.replay("**", Replay::Beginning).await.unwrap();
    let mut ok = 0;
    let error = loop {
        match stream.next().await {
            Some(Ok(s)) => {
                assert_eq!(s.id(), format!("s{ok}"));
                ok += 1;
            }
            Some(Err(e)) => break e,
            None => panic!("the replay ended without the read error, after {ok} signals"),
        }
    };
    assert_eq!(ok, 2_000, "every signal before the failed page");
    assert_eq!(
        error.to_string(),
        "journal store broken failed: read after 2000 refused"
    );
    assert!(
        stream.next().await.is_none(),
        "the replay ends after an error"
    );
    assert!(stream.next().await.is_none());
}

/// Retention through the bus: the oldest entries go, but not those a subscription has not
/// acknowledged.
#[tokio::test]
async fn retention_keeps_what_a_subscription_has_not_acknowledged() {
    let store = MemoryStore::new();
    let bus = Bus::builder()
        .journal(Journal::new(store.clone()).retention(JournalRetention::default().max_entries(3)))
        .build()
        .unwrap();
    let (sub, mut deliveries) = bus
        .persistent("slow", "**")
        .start_at(StartAt::Beginning)
        .manual(1)
        .await
        .unwrap();
    for n in 1..=10 {
        bus.publish(signal("a.b", n)).await.unwrap();
    }
    // Nothing acknowledged: nothing pruned.
    assert_eq!(bus.prune_journal().await.unwrap(), 0);
    let first = deliveries.recv().await.unwrap();
    first.ack();
    for _ in 2..=5 {
        deliveries.recv().await.unwrap().ack();
    }
    assert!(sub.wait_for_checkpoint(5).await);
    // Entries 1..=5 are acknowledged; max_entries(3) would keep 8..=10: 5 go.
    assert_eq!(bus.prune_journal().await.unwrap(), 5);
    assert_eq!(
        collect(&bus, "**", Replay::Beginning)
            .await
            .first()
            .unwrap(),
        "s6"
    );
    sub.stop().await;
}
