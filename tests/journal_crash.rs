#![cfg(feature = "sqlite")]
//! Crash safety of the journal and its persistent subscriptions, with real processes killed
//! by SIGKILL. The test binary runs itself again as the child (an environment variable says
//! which child); the child prints one line per event on stdout and the parent reads them.
//!
//! - A consumer of a persistent subscription on a SQLite file, killed several times
//!   mid-stream and restarted: every published signal is received at least once (lost = 0),
//!   each incarnation receives in journal order and resumes at or before its checkpoint + 1,
//!   and only signals in flight at a kill are received twice.
//! - A publisher killed mid-stream: every signal whose `publish` returned is in the journal.
//! - Two processes competing for one persistent subscription on PostgreSQL (when
//!   `SIGNAL_BUS_POSTGRES_URL` is set; skipped with a note otherwise): one delivers at a
//!   time, the other takes over after the holder is killed, nothing is skipped.

#[cfg(feature = "postgres")]
#[path = "support/pg_db.rs"]
mod pg_db;
#[path = "support/scratch.rs"]
mod scratch;

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use signal_bus::{
    adapter::Handler,
    journal::{JournalStore, Replay, StartAt},
    queue::SqliteStore,
    Bus, Signal, Target,
};
use tokio::sync::mpsc;

/// Which child to be, and its argument.
const CONSUMER_ENV: &str = "SIGNAL_BUS_JCRASH_CONSUMER_DB";
const PUBLISHER_ENV: &str = "SIGNAL_BUS_JCRASH_PUBLISHER_DB";
const WORKER_ENV: &str = "SIGNAL_BUS_JCRASH_WORKER_URL";
#[cfg(feature = "postgres")]
const NODE_ENV: &str = "SIGNAL_BUS_JCRASH_NODE";

/// The journal and subscription names every process uses.
const JOURNAL: &str = "crash";
const SUBSCRIPTION: &str = "audit";
/// The consumer's window: at most this many signals outstanding.
const MAX_IN_FLIGHT: usize = 4;
/// The cap on any wait for an event (never a timing window: the waits end on the event).
const CAP: Duration = Duration::from_secs(120);

fn is_child() -> bool {
    [CONSUMER_ENV, PUBLISHER_ENV, WORKER_ENV]
        .iter()
        .any(|v| std::env::var(v).is_ok())
}

fn signal(n: usize) -> Signal {
    Signal::builder("audit.event", "/crash")
        .id(format!("j-{n}"))
        .build()
        .unwrap()
}

/// Prints one line and flushes it, so it is in the pipe before the caller goes on.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// A child exits when its parent is gone (its stdin closes), so none outlives a failed test.
fn exit_with_parent() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
}

/// Prints `CKPT <n>` each time the subscription's checkpoint moves.
fn report_checkpoints(sub: Arc<signal_bus::journal::PersistentSubscription>) {
    tokio::spawn(async move {
        let mut next = sub.checkpoint() + 1;
        while sub.wait_for_checkpoint(next).await {
            let c = sub.checkpoint();
            say(&format!("CKPT {c}"));
            next = c + 1;
        }
    });
}

/// A target that prints `{prefix} {id}` before it acknowledges.
fn printing(prefix: String) -> Target {
    Target::new(Handler::new(move |s: Arc<Signal>| {
        let line = format!("{prefix} {}", s.id());
        async move {
            say(&line);
            Ok(())
        }
    }))
}

/// A child process of this test binary, and the lines it prints.
struct Child {
    process: std::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Child {
    fn spawn(test: &str, env: &[(&str, &str)], tag: Option<&'static str>) -> Child {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut process = command.spawn().unwrap();
        let stdout = process.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest prints `test NAME ... ` unterminated before the test's own output.
                let line = match line
                    .strip_prefix("test ")
                    .and_then(|l| l.split_once(" ... "))
                {
                    Some((_, rest)) => rest.to_owned(),
                    None => line,
                };
                let line = match tag {
                    Some(tag) => format!("{tag} {line}"),
                    None => line,
                };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Child { process, lines }
    }

    /// The next line, within the cap; `None` once the child's stdout is closed.
    async fn next(&mut self) -> Option<String> {
        tokio::time::timeout(CAP, self.lines.recv())
            .await
            .expect("the child printed nothing within the cap")
    }

    /// SIGKILL, then every line it printed before it died.
    async fn kill(mut self) -> Vec<String> {
        self.process.kill().unwrap(); // SIGKILL on Unix
        self.process.wait().unwrap();
        let mut rest = Vec::new();
        while let Some(line) = self.next().await {
            rest.push(line);
        }
        rest
    }
}

impl Drop for Child {
    /// A failed test kills its children too.
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

// ---------------------------------------------------------------------------------------
// 1. A consumer killed mid-stream, on a SQLite file.

/// The consumer child: a persistent subscription from the beginning of the journal whose
/// target prints `RECV <id>` before it acknowledges. A no-op in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_consumer() {
    let Ok(path) = std::env::var(CONSUMER_ENV) else {
        return;
    };
    exit_with_parent();
    let store = SqliteStore::open(&path).await.unwrap();
    // The checkpoint this incarnation starts from (the previous one is dead).
    let start = store
        .checkpoint(JOURNAL, SUBSCRIPTION)
        .await
        .unwrap()
        .unwrap_or(0);
    say(&format!("START {start}"));
    // A fixed node id: a restarted consumer re-takes its own lease at once.
    let bus = Bus::builder()
        .name(JOURNAL)
        .node_id("consumer")
        .journal(store)
        .build()
        .unwrap();
    let sub = bus
        .persistent(SUBSCRIPTION, "**")
        .targets(printing("RECV".to_owned()))
        .start_at(StartAt::Beginning)
        .max_in_flight(MAX_IN_FLIGHT)
        .lease(Duration::from_secs(1))
        .poll_interval(Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    report_checkpoints(Arc::new(sub));
    std::future::pending::<()>().await;
}

/// One consumer incarnation as the parent saw it.
#[derive(Default)]
struct Incarnation {
    start: u64,
    received: Vec<u64>,
    checkpoint: u64,
}

impl Incarnation {
    /// Records one line of the consumer.
    fn record(&mut self, line: &str) {
        if let Some(start) = line.strip_prefix("START ") {
            self.start = start.parse().unwrap();
        } else if let Some(id) = line.strip_prefix("RECV ") {
            self.received.push(id_seq(id));
        } else if let Some(c) = line.strip_prefix("CKPT ") {
            self.checkpoint = self.checkpoint.max(c.parse().unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumer_loses_and_skips_nothing() {
    if is_child() {
        return;
    }
    const N: usize = 3_000;
    const KILLS: usize = 4;
    /// Each incarnation but the last is killed once it received this many more signals.
    const LINES_BEFORE_KILL: usize = 200;
    let dir = scratch::TempDir::new("journal-crash");
    let db = dir.0.join("journal.db");
    let db_arg = db.to_str().unwrap().to_owned();
    let bus = Bus::builder()
        .name(JOURNAL)
        .node_id("publisher")
        .journal(SqliteStore::open(&db).await.unwrap())
        .build()
        .unwrap();

    // The publisher: each signal acknowledged once publish returned Ok.
    let (acked_tx, mut acked_rx) = mpsc::unbounded_channel::<(String, u64)>();
    let mut publisher = Some({
        let bus = bus.clone();
        tokio::spawn(async move {
            for n in 0..N {
                let s = signal(n);
                let id = s.id().to_owned();
                let report = bus.publish(s).await.unwrap();
                let _ = acked_tx.send((id, report.journal_seq().unwrap()));
            }
        })
    });
    // id -> seq, from the publish reports.
    let mut seqs: HashMap<String, u64> = HashMap::new();
    let mut incarnations: Vec<Incarnation> = Vec::new();
    for kill in 0..=KILLS {
        let mut child = Child::spawn("child_consumer", &[(CONSUMER_ENV, &db_arg)], None);
        let mut me = Incarnation::default();
        if kill < KILLS {
            // Wait for the event: enough new signals received, then SIGKILL mid-stream.
            while me.received.len() < LINES_BEFORE_KILL {
                let line = child.next().await.expect("the consumer exited");
                me.record(&line);
            }
            for line in child.kill().await {
                me.record(&line);
            }
        } else {
            // The last one: publishing ends, then it catches up to the last seq.
            publisher.take().unwrap().await.unwrap();
            while let Some((id, seq)) = acked_rx.recv().await {
                seqs.insert(id, seq);
            }
            let last = seqs.values().copied().max().unwrap();
            while me.checkpoint < last {
                let line = child.next().await.expect("the consumer exited");
                me.record(&line);
            }
            for line in child.kill().await {
                me.record(&line);
            }
        }
        incarnations.push(me);
    }
    assert_eq!(seqs.len(), N);
    assert!(
        seqs.iter().all(|(id, seq)| id_seq(id) == *seq),
        "`j-{{n}}` has seq n + 1"
    );

    // Nothing lost: every acknowledged signal was received at least once.
    let received: Vec<u64> = incarnations
        .iter()
        .flat_map(|i| i.received.iter().copied())
        .collect();
    let distinct: HashSet<u64> = received.iter().copied().collect();
    let lost: Vec<&String> = seqs
        .iter()
        .filter(|(_, seq)| !distinct.contains(seq))
        .map(|(id, _)| id)
        .collect();
    // In order and nothing skipped, per incarnation.
    for (k, me) in incarnations.iter().enumerate() {
        eprintln!(
            "incarnation {k}: resumed after {}, received {} (seqs {:?}..={:?}), checkpoint {}",
            me.start,
            me.received.len(),
            me.received.first(),
            me.received.last(),
            me.checkpoint
        );
        assert!(
            me.received.windows(2).all(|w| w[0] < w[1]),
            "incarnation {k} received out of order: {:?}",
            me.received
        );
        let first = *me.received.first().expect("every incarnation received");
        assert!(
            first <= me.start + 1,
            "incarnation {k} started at checkpoint {} but first received seq {first}: skipped",
            me.start
        );
        if k > 0 {
            assert!(
                me.start >= incarnations[k - 1].checkpoint,
                "incarnation {k} resumed at {}, before the checkpoint {} its predecessor printed",
                me.start,
                incarnations[k - 1].checkpoint
            );
        }
    }
    let duplicates = received.len() - distinct.len();
    eprintln!(
        "journal_crash consumer: {N} published, {} received, {} distinct, lost {}, \
         duplicates {duplicates} after {KILLS} SIGKILLs (max_in_flight {MAX_IN_FLIGHT}); \
         resumed at {:?}",
        received.len(),
        distinct.len(),
        lost.len(),
        incarnations.iter().map(|i| i.start).collect::<Vec<_>>()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged signals were never received, e.g. {:?}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        duplicates <= KILLS * MAX_IN_FLIGHT,
        "{duplicates} duplicates: more than the {} signals in flight at {KILLS} kills",
        KILLS * MAX_IN_FLIGHT
    );
}

/// Ids are `j-{n}` and the journal was empty: `j-{n}` has seq n + 1 (checked against the
/// publish reports at the end).
fn id_seq(id: &str) -> u64 {
    id.strip_prefix("j-")
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("unexpected id {id}"))
        + 1
}

// ---------------------------------------------------------------------------------------
// 2. A publisher killed mid-stream.

/// The publisher child: publishes forever through a bus with the journal, printing
/// `ACK <id> <seq>` once publish returned. A no-op in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_publisher() {
    let Ok(path) = std::env::var(PUBLISHER_ENV) else {
        return;
    };
    exit_with_parent();
    let bus = Bus::builder()
        .name(JOURNAL)
        .journal(SqliteStore::open(&path).await.unwrap())
        .build()
        .unwrap();
    for n in 0.. {
        let report = bus.publish(signal(n)).await.unwrap();
        say(&format!("ACK j-{n} {}", report.journal_seq().unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_publisher_loses_no_acknowledged_signal() {
    if is_child() {
        return;
    }
    let dir = scratch::TempDir::new("journal-crash-pub");
    let db = dir.0.join("journal.db");
    let mut child = Child::spawn(
        "child_publisher",
        &[(PUBLISHER_ENV, db.to_str().unwrap())],
        None,
    );
    let mut acked: Vec<(String, u64)> = Vec::new();
    while acked.len() < 300 {
        let line = child.next().await.expect("the publisher exited");
        parse(&line, &mut acked);
    }
    for line in child.kill().await {
        parse(&line, &mut acked);
    }
    let found = replay_all(&db).await;
    let missing: Vec<&(String, u64)> = acked
        .iter()
        .filter(|(id, seq)| found.get(seq) != Some(id))
        .collect();
    eprintln!(
        "journal_crash publisher: {} acknowledged before SIGKILL, {} in the journal, missing {}",
        acked.len(),
        found.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged signals not in the journal at their seq: {:?}",
        missing.iter().take(5).collect::<Vec<_>>()
    );
}

fn parse(line: &str, acked: &mut Vec<(String, u64)>) {
    if let Some(rest) = line.strip_prefix("ACK ") {
        let (id, seq) = rest.split_once(' ').unwrap();
        acked.push((id.to_owned(), seq.parse().unwrap()));
    }
}

/// Every entry of the journal on the file, seq -> id, by replay from the beginning.
async fn replay_all(db: &Path) -> HashMap<u64, String> {
    use futures_util::StreamExt;
    let bus = Bus::builder()
        .name(JOURNAL)
        .journal(SqliteStore::open(db).await.unwrap())
        .build()
        .unwrap();
    let mut stream = bus.replay("**", Replay::Beginning).await.unwrap();
    let mut found = HashMap::new();
    let mut n = 0;
    while let Some(s) = stream.next().await {
        let s = s.unwrap();
        n += 1;
        found.insert(id_seq(s.id()), s.id().to_owned());
    }
    assert_eq!(n, found.len(), "every entry once");
    found
}

// ---------------------------------------------------------------------------------------
// 3. Two processes competing for one subscription, on PostgreSQL.

/// A worker child: a persistent subscription `worker` on the database at `WORKER_ENV`,
/// printing `DELIVER <id>` before it acknowledges. A no-op in a normal test run.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_worker() {
    let (Ok(url), Ok(node)) = (std::env::var(WORKER_ENV), std::env::var(NODE_ENV)) else {
        return;
    };
    exit_with_parent();
    let bus = Bus::builder()
        .name(JOURNAL)
        .node_id(node)
        .journal(
            signal_bus::queue::PostgresStore::connect(&url)
                .await
                .unwrap(),
        )
        .build()
        .unwrap();
    let sub = bus
        .persistent("worker", "**")
        .targets(printing("DELIVER".to_owned()))
        .start_at(StartAt::Beginning)
        .lease(Duration::from_secs(2))
        .poll_interval(Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    say("READY");
    report_checkpoints(Arc::new(sub));
    std::future::pending::<()>().await;
}

/// The next line either worker printed, within the cap.
#[cfg(feature = "postgres")]
async fn next_line(lines: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(CAP, lines.recv())
        .await
        .expect("a worker line within the cap")
        .expect("the workers' output is open")
}

/// Records a worker's `<node> DELIVER <id>` line; returns the checkpoint of a `CKPT` line.
#[cfg(feature = "postgres")]
fn record(line: &str, delivered: &mut HashMap<String, Vec<u64>>) -> Option<u64> {
    let (node, rest) = line.split_once(' ')?;
    if let Some(id) = rest.strip_prefix("DELIVER ") {
        delivered
            .entry(node.to_owned())
            .or_default()
            .push(id_seq(id));
    }
    rest.strip_prefix("CKPT ").map(|c| c.parse().unwrap())
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_processes_one_at_a_time_and_takeover_after_a_kill() {
    if is_child() {
        return;
    }
    let Some(db) = pg_db::TestDb::new("competing_processes").await else {
        return;
    };
    let store = signal_bus::queue::PostgresStore::connect(&db.url)
        .await
        .unwrap();
    let bus = Bus::builder()
        .name(JOURNAL)
        .node_id("publisher")
        .journal(store.clone())
        .build()
        .unwrap();
    // Both workers print into one stream, each line tagged with its node.
    let mut a = Child::spawn(
        "child_worker",
        &[(WORKER_ENV, &db.url), (NODE_ENV, "node-a")],
        Some("node-a"),
    );
    let mut b = Child::spawn(
        "child_worker",
        &[(WORKER_ENV, &db.url), (NODE_ENV, "node-b")],
        Some("node-b"),
    );
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<String>();
    for child in [&mut a, &mut b] {
        let mut rx = std::mem::replace(&mut child.lines, mpsc::unbounded_channel().1);
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                let _ = tx.send(line);
            }
        });
    }
    drop(lines_tx);
    // Wait for both to be running before publishing.
    let mut ready = HashSet::new();
    while ready.len() < 2 {
        let line = next_line(&mut lines).await;
        if let Some(node) = line.strip_suffix(" READY") {
            ready.insert(node.to_owned());
        }
    }

    // Publish continuously until told to stop.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut n = 0;
            while !*stop_rx.borrow_and_update() {
                last = bus.publish(signal(n)).await.unwrap().journal_seq().unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            last
        })
    };

    // node -> seqs delivered, in order.
    let mut delivered: HashMap<String, Vec<u64>> = HashMap::new();
    // While both live: 300 deliveries, all from one node.
    while delivered.values().map(Vec::len).sum::<usize>() < 300 {
        let line = next_line(&mut lines).await;
        record(&line, &mut delivered);
    }
    assert_eq!(
        delivered.len(),
        1,
        "both workers delivered while both were alive: {:?}",
        delivered
            .iter()
            .map(|(n, s)| (n, s.len()))
            .collect::<Vec<_>>()
    );
    let holder = delivered.keys().next().unwrap().clone();
    let (victim, survivor, survivor_node) = if holder == "node-a" {
        (a, b, "node-b")
    } else {
        (b, a, "node-a")
    };
    // SIGKILL the holder; what it printed before dying is still in the pipe.
    let killed_at = std::time::Instant::now();
    let mut victim = victim;
    victim.process.kill().unwrap();
    victim.process.wait().unwrap();
    let covered = store
        .checkpoint(JOURNAL, "worker")
        .await
        .unwrap()
        .unwrap_or(0);
    // The survivor takes over: wait for its first delivery.
    let first_taken_over = loop {
        let line = next_line(&mut lines).await;
        record(&line, &mut delivered);
        if let Some(seqs) = delivered.get(survivor_node) {
            break seqs[0];
        }
    };
    let takeover = killed_at.elapsed();
    assert!(
        first_taken_over <= covered + 1,
        "{survivor_node} took over at seq {first_taken_over}, but the killed holder's checkpoint \
         only covered {covered}: skipped"
    );

    // Publishing ends; the survivor catches up to the last seq.
    stop_tx.send_replace(true);
    let last = publisher.await.unwrap();
    let mut checkpoint = 0;
    while checkpoint < last {
        let line = next_line(&mut lines).await;
        if let Some(c) = record(&line, &mut delivered) {
            if line.starts_with(survivor_node) {
                checkpoint = checkpoint.max(c);
            }
        }
    }
    let mut survivor = survivor;
    survivor.process.kill().unwrap();
    survivor.process.wait().unwrap();
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(5), lines.recv()).await {
        record(&line, &mut delivered);
    }

    let all: HashSet<u64> = delivered.values().flatten().copied().collect();
    let lost: Vec<u64> = (1..=last).filter(|s| !all.contains(s)).collect();
    let total: usize = delivered.values().map(Vec::len).sum();
    for (node, seqs) in &delivered {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{node} delivered out of order"
        );
    }
    eprintln!(
        "journal_crash competing: {last} published; {holder} delivered {}, then SIGKILL; \
         {survivor_node} took over after {takeover:?} (lease 2s) at seq {first_taken_over} \
         (checkpoint covered {covered}); lost {}, duplicates {}",
        delivered[&holder].len(),
        lost.len(),
        total - all.len()
    );
    assert!(
        lost.is_empty(),
        "never delivered: {:?}",
        &lost[..lost.len().min(10)]
    );
    drop(bus);
    store.pool().close().await;
    db.drop_db().await;
}
