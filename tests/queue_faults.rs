#![cfg(all(feature = "sqlite", feature = "http"))]
//! Fault injection on the durable queue: runners SIGKILLed mid-delivery, two runners on one
//! PostgreSQL queue, the PostgreSQL server itself killed and restarted, a runner started
//! before its forwarder is subscribed, two services with different forwarders on one queue,
//! and the same signal id from two sources.
//!
//! Every case counts `lost` (acknowledged signals never delivered: asserted to be 0) and
//! `duplicates` (extra deliveries: printed, not asserted; at-least-once allows them).
//! "Acknowledged" means `publish` returned `Ok` with an ok report: the signal and its job
//! are durably committed.
//!
//! Real processes and real kills: the test binary runs itself again as a child (the `child`
//! test, a no-op in a normal run) with `SIGNAL_BUS_FAULTS_CHILD` naming its role (`runner`
//! or `publisher`); a child prints `@@faults READY`, `@@faults ACK <source> <id>`, ... on
//! stdout and stops when its stdin closes. Deliveries go to real HTTP servers on 127.0.0.1
//! in this process, which record every request; a delivery's identity is the CloudEvent's
//! `(source, id)` from the structured JSON body.
//!
//! PostgreSQL (feature `postgres`): the shared-server cases use the server at
//! `SIGNAL_BUS_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`, as in
//! `tests/queue_postgres.rs`) and fail, never skip, when it is unreachable; each creates a
//! database of its own and drops it at the end, even on failure. The server-restart case starts a throwaway server of its own
//! (`support::pg_server`) and never touches the shared one.
//!
//! Cases run one at a time (a lock): each spawns processes and the machine may have 2 cores.
//! The file needs the `http` feature as well as `sqlite` (forwarders deliver through `Http`):
//! both are default features.

#[path = "support/scratch.rs"]
mod scratch;
use scratch::TempDir;

mod support;

use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use signal_bus::{
    adapter::Noop,
    http::Http,
    policy::RetryPolicy,
    queue::{
        forwarder_worker, DispatchMode, Forwarder, Job, JobBackoff, JobState, Queue, QueueBuilder,
        SqliteStore,
    },
    Bus, Signal,
};
use support::{Reply, TestServer};

/// Names the child's role; unset in a normal run.
const CHILD_ROLE: &str = "SIGNAL_BUS_FAULTS_CHILD";
/// What precedes every line a child reports on stdout (libtest may print before it).
const MARK: &str = "@@faults ";
/// The header a child runner adds to its deliveries, naming itself.
const RUNNER_HEADER: &str = "x-faults-runner";
/// The longest any single wait of a case may take.
const WAIT: Duration = Duration::from_secs(120);
/// The poll interval of every runner here.
const POLL: Duration = Duration::from_millis(50);

/// One case at a time: each spawns processes and servers.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A delivery's identity: (source, id).
type Key = (String, String);

// ---------------------------------------------------------------------------------------
// Stores, queues, signals
// ---------------------------------------------------------------------------------------

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_ms(name: &str) -> Option<Duration> {
    env(name).map(|v| Duration::from_millis(v.parse().expect("milliseconds")))
}

/// The settings every runner here uses: short lease, fast polls, 100 ms constant backoff.
fn tuned(builder: QueueBuilder, lease: Duration) -> QueueBuilder {
    builder
        .lease(lease)
        .poll_interval(POLL)
        .backoff(JobBackoff::Policy(RetryPolicy::constant(
            Duration::from_millis(100),
        )))
}

/// Opens the queue `spec` names (`sqlite:<path>` or a `postgres://` URL), configured by
/// `configure`.
async fn open_queue(spec: &str, configure: impl FnOnce(QueueBuilder) -> QueueBuilder) -> Queue {
    match spec.strip_prefix("sqlite:") {
        Some(path) => {
            let store = SqliteStore::open(path)
                .await
                .unwrap_or_else(|e| panic!("open the SQLite queue {path}: {e}"));
            configure(Queue::builder(store)).build()
        }
        None => open_postgres(spec, configure).await,
    }
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, configure: impl FnOnce(QueueBuilder) -> QueueBuilder) -> Queue {
    // A short acquire timeout: while the server is down, calls fail instead of hanging.
    let store = signal_bus::queue::PostgresStore::builder(url)
        .acquire_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect the PostgreSQL queue {url}: {e}"));
    configure(Queue::builder(store)).build()
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(url: &str, _: impl FnOnce(QueueBuilder) -> QueueBuilder) -> Queue {
    panic!("queue {url}: PostgreSQL needs the `postgres` feature")
}

fn signal(ty: &str, source: &str, id: &str, n: usize) -> Signal {
    Signal::builder(ty, source)
        .id(id)
        .data(json!({ "source": source, "id": id, "n": n }))
        .build()
        .expect("valid signal")
}

fn key(s: &Signal) -> Key {
    (s.source().to_owned(), s.id().to_owned())
}

/// Publishes `signals` through a bus on `queue` whose forwarders (`(name, pattern)`, no-op
/// adapters, async: no runner here) enqueue them; 50 at a time so commits group. Panics
/// unless every publish is acknowledged; returns the keys, in order.
async fn publish_all(queue: &Queue, forwarders: &[(&str, &str)], signals: Vec<Signal>) -> Vec<Key> {
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    for (name, pattern) in forwarders {
        bus.subscribe(
            pattern,
            Forwarder::new(*name, Noop).dispatch(DispatchMode::Async),
        )
        .unwrap();
    }
    let mut acked = Vec::with_capacity(signals.len());
    let mut rest = signals.into_iter();
    loop {
        let chunk: Vec<Signal> = rest.by_ref().take(50).collect();
        if chunk.is_empty() {
            break;
        }
        let published = futures_util::future::join_all(chunk.into_iter().map(|s| {
            let bus = &bus;
            async move {
                let k = key(&s);
                (k, bus.publish(s).await)
            }
        }))
        .await;
        for (k, result) in published {
            let report = result.unwrap_or_else(|e| panic!("publish {k:?}: {e}"));
            assert!(report.is_ok(), "publish {k:?}: {report}");
            acked.push(k);
        }
    }
    acked
}

/// The job counts, with every state present.
async fn counts(queue: &Queue) -> BTreeMap<JobState, u64> {
    let mut c = queue.counts().await.expect("job counts");
    for s in JobState::ALL {
        c.entry(s).or_insert(0);
    }
    c
}

fn not_final(c: &BTreeMap<JobState, u64>) -> u64 {
    c.iter()
        .filter(|(s, _)| !s.is_final())
        .map(|(_, n)| n)
        .sum()
}

fn total(c: &BTreeMap<JobState, u64>) -> u64 {
    c.values().sum()
}

/// Waits until every job of `queue` is final and there are `expected` of them.
async fn wait_all_final(queue: &Queue, expected: u64) -> Result<BTreeMap<JobState, u64>, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = counts(queue).await;
        if not_final(&c) == 0 && total(&c) >= expected {
            return Ok(c);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "jobs still not final after {WAIT:?} (expected {expected}): {c:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn describe(jobs: &[Job]) -> String {
    jobs.iter()
        .take(10)
        .map(|j| {
            format!(
                "job {} {} attempt {}/{} {:?} reason {:?}: {}",
                j.id,
                j.worker,
                j.attempt,
                j.max_attempts,
                j.signal_ref(),
                j.cancel_reason,
                j.last_error.as_deref().unwrap_or("-")
            )
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// Asserts that no job was cancelled or discarded, naming the first few that were.
async fn assert_none_cancelled_or_discarded(queue: &Queue, case: &str) {
    let cancelled = queue.list(JobState::Cancelled, 1000).await.expect("list");
    let discarded = queue.list(JobState::Discarded, 1000).await.expect("list");
    assert!(
        cancelled.is_empty() && discarded.is_empty(),
        "{case}: {} jobs cancelled, {} discarded:\n  {}\n  {}",
        cancelled.len(),
        discarded.len(),
        describe(&cancelled),
        describe(&discarded)
    );
}

// ---------------------------------------------------------------------------------------
// The recording receiver
// ---------------------------------------------------------------------------------------

/// One delivery as a receiver saw it.
#[derive(Debug, Clone)]
struct Delivery {
    key: Key,
    data: Value,
    runner: Option<String>,
}

fn deliveries(server: &TestServer) -> Vec<Delivery> {
    server
        .requests()
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
                panic!(
                    "a delivery that is not a structured CloudEvent ({e}): {}",
                    String::from_utf8_lossy(&r.body)
                )
            });
            let field = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
            Delivery {
                key: (field("source"), field("id")),
                data: body["data"].clone(),
                runner: r
                    .headers
                    .get(RUNNER_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            }
        })
        .collect()
}

fn delivered_by(server: &TestServer, runner: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| {
            r.headers
                .get(RUNNER_HEADER)
                .is_some_and(|v| v.as_bytes() == runner.as_bytes())
        })
        .count()
}

/// What the receivers got, against what was acknowledged.
struct Tally {
    lost: Vec<Key>,
    duplicates: usize,
    total: usize,
    by_runner: BTreeMap<String, usize>,
}

fn tally(servers: &[&TestServer], acked: &[Key]) -> Tally {
    let all: Vec<Delivery> = servers.iter().flat_map(|s| deliveries(s)).collect();
    let unique: HashSet<&Key> = all.iter().map(|d| &d.key).collect();
    let mut by_runner = BTreeMap::new();
    for d in &all {
        *by_runner
            .entry(d.runner.clone().unwrap_or_else(|| "-".to_owned()))
            .or_insert(0) += 1;
    }
    Tally {
        lost: acked
            .iter()
            .filter(|k| !unique.contains(k))
            .cloned()
            .collect(),
        duplicates: all.len() - unique.len(),
        total: all.len(),
        by_runner,
    }
}

/// Waits until every acknowledged key reached one of `servers`.
async fn wait_delivered(servers: &[&TestServer], acked: &[Key]) -> Tally {
    let deadline = Instant::now() + WAIT;
    loop {
        let t = tally(servers, acked);
        if t.lost.is_empty() || Instant::now() > deadline {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The verdict of a case: prints its figures, asserts nothing acknowledged was lost.
fn verdict(case: &str, started: Instant, acked: &[Key], t: &Tally, extra: &str) {
    eprintln!(
        "[queue_faults] {case}: acknowledged {}, delivered {} ({} unique), lost {}, \
         duplicates {}, by runner {:?}, {extra}, took {:.1?}",
        acked.len(),
        t.total,
        t.total - t.duplicates,
        t.lost.len(),
        t.duplicates,
        t.by_runner,
        started.elapsed()
    );
    assert!(
        t.lost.is_empty(),
        "{case}: {} of {} acknowledged signals were never delivered, e.g. {:?}",
        t.lost.len(),
        acked.len(),
        t.lost.iter().take(10).collect::<Vec<_>>()
    );
}

/// Polls `check` every 20 ms until it holds or `within` passes; whether it held.
async fn wait_for(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn receiver(delay: Duration) -> TestServer {
    let server = TestServer::start().await;
    server.always(Reply::status(204).delay(delay));
    server
}

// ---------------------------------------------------------------------------------------
// Scratch directories, child processes, databases
// ---------------------------------------------------------------------------------------

/// A child process running this test binary's `child` test. Killed on drop.
struct ChildProc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr: PathBuf,
}

impl ChildProc {
    /// Spawns a child named `name` (its stderr goes to `<dir>/<name>.stderr`).
    fn spawn(name: &str, dir: &Path, envs: &[(&str, String)]) -> ChildProc {
        let stderr = dir.join(format!("{name}.stderr"));
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["child", "--exact", "--nocapture", "--test-threads=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the child test process");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(MARK) {
                    sink.lock()
                        .unwrap()
                        .push(line[at + MARK.len()..].to_owned());
                }
            }
        });
        ChildProc {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            reader: Some(reader),
            stderr,
        }
    }

    fn count(&self, prefix: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    /// The keys it acknowledged (`ACK <source> <id>`).
    fn acks(&self) -> Vec<Key> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                let mut parts = l.strip_prefix("ACK ")?.split(' ');
                Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
            })
            .collect()
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until it printed `line` (or exited: then panics with its stderr).
    async fn wait_line(&mut self, line: &str) {
        let deadline = Instant::now() + WAIT;
        while self.count(line) == 0 {
            assert!(
                !self.exited() && Instant::now() < deadline,
                "child {} never printed {line}; stderr:\n{}",
                self.name,
                self.stderr_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown, no release, whatever it was doing stops there.
    fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_reader();
    }

    /// Closes its stdin (it stops cleanly) and waits for it to exit; killed after 60 s.
    async fn stop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.exited() {
            if Instant::now() > deadline {
                eprintln!("[queue_faults] child {} did not stop: killed", self.name);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.sigkill();
    }

    /// Every stdout line is read once the child is gone.
    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runner_env(
    store: &str,
    forwarder: &str,
    pattern: &str,
    target: &str,
    tag: &str,
) -> Vec<(&'static str, String)> {
    vec![
        (CHILD_ROLE, "runner".to_owned()),
        ("FAULTS_STORE", store.to_owned()),
        ("FAULTS_FORWARDER", forwarder.to_owned()),
        ("FAULTS_PATTERN", pattern.to_owned()),
        ("FAULTS_TARGET", target.to_owned()),
        ("FAULTS_TAG", tag.to_owned()),
    ]
}

fn publisher_env(
    store: &str,
    ty: &str,
    source: &str,
    count: usize,
    pace: Duration,
) -> Vec<(&'static str, String)> {
    vec![
        (CHILD_ROLE, "publisher".to_owned()),
        ("FAULTS_STORE", store.to_owned()),
        ("FAULTS_FORWARDER", "siem".to_owned()),
        ("FAULTS_PATTERN", "faults.**".to_owned()),
        ("FAULTS_TYPE", ty.to_owned()),
        ("FAULTS_SOURCE", source.to_owned()),
        ("FAULTS_COUNT", count.to_string()),
        ("FAULTS_PACE_MS", pace.as_millis().to_string()),
    ]
}

/// The shared server when `SIGNAL_BUS_POSTGRES_URL` is unset (as in `tests/queue_postgres.rs`).
#[cfg(feature = "postgres")]
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of the test's own on the shared server (`SIGNAL_BUS_POSTGRES_URL`), dropped
/// on drop (success or failure).
#[cfg(feature = "postgres")]
struct TestDb {
    admin: String,
    name: String,
    url: String,
}

#[cfg(feature = "postgres")]
impl TestDb {
    /// On the server at `SIGNAL_BUS_POSTGRES_URL` (default [`DEFAULT_POSTGRES_URL`], as in
    /// `tests/queue_postgres.rs`); panics, never skips, when it is unreachable.
    async fn create(case: &str) -> TestDb {
        use sqlx::{
            postgres::PgConnectOptions, ConnectOptions as _, Connection as _, Executor as _,
        };
        let admin =
            env("SIGNAL_BUS_POSTGRES_URL").unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_owned());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("{case}: PostgreSQL must be reachable at SIGNAL_BUS_POSTGRES_URL ({admin}): {e}")
        });
        let name = format!("signal_bus_faults_{}", uuid::Uuid::now_v7().simple());
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        let options: PgConnectOptions = admin.parse().expect("parse SIGNAL_BUS_POSTGRES_URL");
        let url = options.database(&name).to_url_lossy().to_string();
        TestDb { admin, name, url }
    }
}

#[cfg(feature = "postgres")]
impl Drop for TestDb {
    /// On a thread of its own: no async drop, and the test's runtime may be gone.
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            use sqlx::{Connection as _, Executor as _};
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = conn
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}

// ---------------------------------------------------------------------------------------
// The child: a runner or a publisher, by SIGNAL_BUS_FAULTS_CHILD
// ---------------------------------------------------------------------------------------

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{MARK}{line}");
    let _ = out.flush();
}

/// Set once stdin closes (the parent stopping the child, or the parent gone).
fn stdin_closed() -> Arc<AtomicBool> {
    let closed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&closed);
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        flag.store(true, Ordering::SeqCst);
    });
    closed
}

/// The child process: a no-op in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child() {
    let Some(role) = env(CHILD_ROLE) else {
        return;
    };
    let store = env("FAULTS_STORE").expect("FAULTS_STORE");
    let forwarder = env("FAULTS_FORWARDER").unwrap_or_else(|| "siem".to_owned());
    let pattern = env("FAULTS_PATTERN").unwrap_or_else(|| "faults.**".to_owned());
    let closed = stdin_closed();
    // Whatever happens to the parent, a child does not outlive the case.
    let give_up = Instant::now() + Duration::from_secs(600);
    let stopping = || closed.load(Ordering::SeqCst) || Instant::now() > give_up;
    match role.as_str() {
        "runner" => {
            let target = env("FAULTS_TARGET").expect("FAULTS_TARGET");
            let tag = env("FAULTS_TAG").unwrap_or_else(|| "child".to_owned());
            let lease = env_ms("FAULTS_LEASE_MS").unwrap_or(Duration::from_secs(1));
            let concurrency: usize = env("FAULTS_CONCURRENCY").map_or(10, |c| c.parse().unwrap());
            let unknown_after = env_ms("FAULTS_UNKNOWN_AFTER_MS");
            let queue = open_queue(&store, |b| {
                let b = tuned(b, lease).queue("default", concurrency);
                match unknown_after {
                    Some(grace) => b.unknown_after(grace),
                    None => b,
                }
            })
            .await;
            let bus = Bus::builder().queue(queue.clone()).build().unwrap();
            let http = Http::post(&target).unwrap().header(RUNNER_HEADER, &tag);
            bus.subscribe(
                &pattern,
                Forwarder::new(forwarder, http).dispatch(DispatchMode::Async),
            )
            .unwrap();
            let runner = queue.start().unwrap();
            say("READY");
            while !stopping() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let report = runner.shutdown_within(Duration::from_secs(10)).await;
            say(&format!("STOPPED released {}", report.released));
        }
        "publisher" => {
            let ty = env("FAULTS_TYPE").unwrap_or_else(|| "faults.event".to_owned());
            let source = env("FAULTS_SOURCE").unwrap_or_else(|| "/faults".to_owned());
            let count: usize = env("FAULTS_COUNT").map_or(1000, |c| c.parse().unwrap());
            let pace = env_ms("FAULTS_PACE_MS").unwrap_or_default();
            let queue = open_queue(&store, |b| b).await;
            let bus = Bus::builder().queue(queue.clone()).build().unwrap();
            bus.subscribe(
                &pattern,
                Forwarder::new(forwarder, Noop).dispatch(DispatchMode::Async),
            )
            .unwrap();
            say("READY");
            for i in 0..count {
                if stopping() {
                    break;
                }
                let id = format!("p-{i}");
                match bus.publish(signal(&ty, &source, &id, i)).await {
                    // Acknowledged: the signal and its job are committed.
                    Ok(report) if report.is_ok() => say(&format!("ACK {source} {id}")),
                    Ok(report) => {
                        say(&format!("ERR {}", report.to_string().replace('\n', " ")));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => {
                        say(&format!("ERR {}", e.to_string().replace('\n', " ")));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                if !pace.is_zero() {
                    tokio::time::sleep(pace).await;
                }
            }
            say("DONE");
        }
        other => panic!("unknown child role {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// 1. A runner SIGKILLed again and again mid-delivery (SQLite file)
// ---------------------------------------------------------------------------------------

const KILL_SIGNALS: usize = 300;
const KILLS: usize = 6;

/// 300 acknowledged signals; six runner processes in turn, each SIGKILLed once it has
/// delivered a few (the receiver holds every request 30 ms, so kills land mid-delivery and
/// leave jobs executing under a dead runner's lease); then a runner in this process until
/// every job is final. Nothing is lost, and no job is cancelled or discarded: a rescued job
/// is a failed attempt retried with backoff behind fresh work, so 6 kills do not exhaust
/// its 5 attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_sigkilled_repeatedly_mid_delivery_sqlite() {
    if env(CHILD_ROLE).is_some() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let case = "runner SIGKILLed repeatedly (sqlite)";
    let started = Instant::now();
    let dir = TempDir::new("kill");
    let spec = dir.sqlite("queue.db");
    let server = receiver(Duration::from_millis(30)).await;
    let target = server.url("/siem");

    // Stored and acknowledged, nothing runs them yet.
    let acked = {
        let queue = open_queue(&spec, |b| b).await;
        let signals = (0..KILL_SIGNALS)
            .map(|i| signal("faults.kill", "/faults/kill", &format!("k-{i}"), i))
            .collect();
        publish_all(&queue, &[("siem", "faults.**")], signals).await
    };
    assert_eq!(acked.len(), KILL_SIGNALS);

    let mut kills = 0;
    for round in 0..KILLS {
        if tally(&[&server], &acked).lost.is_empty() {
            eprintln!("[queue_faults] {case}: everything delivered after {kills} kills");
            break;
        }
        let tag = format!("killed-{round}");
        let mut child = ChildProc::spawn(
            &tag,
            &dir.0,
            &runner_env(&spec, "siem", "faults.**", &target, &tag),
        );
        // Some new deliveries from this very runner, then SIGKILL while others are in flight.
        let delivering =
            wait_for(WAIT, || delivered_by(&server, &tag) >= 20 || child.exited()).await;
        let exited = child.exited();
        child.sigkill();
        assert!(
            delivering && !exited,
            "{case}: runner {tag} delivered {} and {}; stderr:\n{}",
            delivered_by(&server, &tag),
            if exited {
                "exited on its own"
            } else {
                "then stalled"
            },
            child.stderr_tail()
        );
        kills += 1;
        eprintln!(
            "[queue_faults] {case}: SIGKILLed {tag} after {} of its deliveries ({} in all)",
            delivered_by(&server, &tag),
            server.count()
        );
    }
    assert!(kills >= 5, "{case}: only {kills} kills landed");

    // The survivor: a runner of this process, until every job is final.
    let queue = open_queue(&spec, |b| tuned(b, Duration::from_secs(1))).await;
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    bus.subscribe(
        "faults.**",
        Forwarder::new(
            "siem",
            Http::post(&target).unwrap().header(RUNNER_HEADER, "final"),
        )
        .dispatch(DispatchMode::Async),
    )
    .unwrap();
    let runner = queue.start().unwrap();
    let finished = wait_all_final(&queue, KILL_SIGNALS as u64).await;
    runner.shutdown().await;
    let t = tally(&[&server], &acked);
    let c = counts(&queue).await;
    let mut attempts = BTreeMap::new();
    let completed = queue
        .list(JobState::Completed, 2 * KILL_SIGNALS)
        .await
        .unwrap();
    for job in &completed {
        *attempts.entry(job.attempt).or_insert(0) += 1;
    }
    // The kills left jobs executing under a dead runner's lease: some were rescued (a failed
    // attempt whose history says the runner stopped) and completed on a later attempt.
    let rescued = completed
        .iter()
        .filter(|j| {
            j.attempt >= 2
                || j.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("its runner stopped"))
        })
        .count();
    verdict(
        case,
        started,
        &acked,
        &t,
        &format!(
            "{kills} kills, jobs {c:?}, completed jobs by attempt {attempts:?}, {rescued} rescued"
        ),
    );
    if let Err(e) = finished {
        panic!("{case}: {e}");
    }
    assert!(
        rescued > 0,
        "{case}: no completed job was rescued (attempt >= 2, or \"its runner stopped\" in its \
         history) after {kills} SIGKILLs mid-delivery: the kills tested nothing; completed jobs \
         by attempt {attempts:?}"
    );
    assert_none_cancelled_or_discarded(&queue, case).await;
    assert_eq!(
        c[&JobState::Completed],
        KILL_SIGNALS as u64,
        "{case}: {c:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. A runner started before its forwarder is subscribed (SQLite file)
// ---------------------------------------------------------------------------------------

const EARLY_SIGNALS: usize = 200;

/// An earlier process published 200 signals and exited. A new process starts its runner
/// first, lets it poll with no forwarder registered (nothing may be cancelled meanwhile),
/// then subscribes the forwarder: every signal is delivered, none cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_started_before_the_forwarder_is_subscribed_sqlite() {
    if env(CHILD_ROLE).is_some() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let case = "runner started before its forwarder (sqlite)";
    let started = Instant::now();
    let dir = TempDir::new("early");
    let spec = dir.sqlite("queue.db");
    let server = receiver(Duration::ZERO).await;

    // The earlier process: publishes, exits.
    let mut publisher = ChildProc::spawn(
        "publisher",
        &dir.0,
        &publisher_env(
            &spec,
            "faults.early",
            "/faults/early",
            EARLY_SIGNALS,
            Duration::ZERO,
        ),
    );
    publisher.wait_line("DONE").await;
    publisher.stop().await;
    let acked = publisher.acks();
    assert_eq!(
        acked.len(),
        EARLY_SIGNALS,
        "{case}: the publisher acknowledged {}",
        acked.len()
    );

    // The new process: runner first.
    let queue = open_queue(&spec, |b| tuned(b, Duration::from_secs(2))).await;
    let runner = queue.start().unwrap();
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    // The runner's housekeeping has run a full round (registry, sweep of unknown names,
    // counts) and reports all 200 jobs as waiting for a forwarder nobody registered.
    let waiting_key = ("default".to_owned(), forwarder_worker("siem"));
    let reported = wait_for(WAIT, || {
        queue
            .cached_unregistered()
            .is_some_and(|u| u.get(&waiting_key) == Some(&(EARLY_SIGNALS as u64)))
    })
    .await;
    assert!(
        reported,
        "{case}: the runner never reported the {EARLY_SIGNALS} jobs as waiting for an \
         unregistered forwarder: {:?}",
        queue.cached_unregistered()
    );
    // Nothing ended and nothing was spent meanwhile: every job is still available, unclaimed.
    let before = counts(&queue).await;
    assert_eq!(
        before[&JobState::Available],
        EARLY_SIGNALS as u64,
        "{case}: jobs moved while no forwarder was registered: {before:?}"
    );
    let spent: Vec<Job> = queue
        .list(JobState::Available, 2 * EARLY_SIGNALS)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.attempt != 0)
        .collect();
    assert!(
        spent.is_empty(),
        "{case}: attempts spent with no forwarder registered:\n  {}",
        describe(&spent)
    );
    eprintln!("[queue_faults] {case}: waiting for an unregistered forwarder: {before:?}");
    bus.subscribe(
        "faults.**",
        Forwarder::new("siem", Http::post(&server.url("/siem")).unwrap())
            .dispatch(DispatchMode::Async),
    )
    .unwrap();
    let t = wait_delivered(&[&server], &acked).await;
    let finished = wait_all_final(&queue, EARLY_SIGNALS as u64).await;
    runner.shutdown().await;
    let c = counts(&queue).await;
    verdict(case, started, &acked, &t, &format!("jobs {c:?}"));
    if let Err(e) = finished {
        panic!("{case}: {e}");
    }
    assert_none_cancelled_or_discarded(&queue, case).await;
}

// ---------------------------------------------------------------------------------------
// 6. The same id from two sources
// ---------------------------------------------------------------------------------------

/// Ids "1" to "5" from `/service-a` and from `/service-b`, stored before any runner runs:
/// ten signals, ten deliveries, each with its own source and body.
async fn same_id_from_two_sources(spec: &str, case: &str) {
    let started = Instant::now();
    let server = receiver(Duration::ZERO).await;
    let queue = open_queue(spec, |b| tuned(b, Duration::from_secs(2))).await;
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    bus.subscribe(
        "faults.**",
        Forwarder::new("siem", Http::post(&server.url("/siem")).unwrap())
            .dispatch(DispatchMode::Async),
    )
    .unwrap();
    let mut acked = Vec::new();
    for i in 1..=5usize {
        for source in ["/service-a", "/service-b"] {
            let s = Signal::builder("faults.same", source)
                .id(i.to_string())
                .data(json!({ "from": source, "n": i }))
                .build()
                .unwrap();
            let k = key(&s);
            let report = bus.publish(s).await.expect("publish");
            assert!(report.is_ok(), "{case}: publish {k:?}: {report}");
            acked.push(k);
        }
    }
    let runner = queue.start().unwrap();
    let t = wait_delivered(&[&server], &acked).await;
    let finished = wait_all_final(&queue, acked.len() as u64).await;
    runner.shutdown().await;
    let c = counts(&queue).await;
    verdict(case, started, &acked, &t, &format!("jobs {c:?}"));
    if let Err(e) = finished {
        panic!("{case}: {e}");
    }
    for d in deliveries(&server) {
        let (source, id) = &d.key;
        assert_eq!(
            d.data,
            json!({ "from": source, "n": id.parse::<usize>().unwrap() }),
            "{case}: ({source}, {id}) was delivered with another signal's body"
        );
    }
    assert_none_cancelled_or_discarded(&queue, case).await;
    assert_eq!(c[&JobState::Completed], acked.len() as u64, "{case}: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_id_from_two_sources_sqlite() {
    if env(CHILD_ROLE).is_some() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let dir = TempDir::new("same-id");
    same_id_from_two_sources(&dir.sqlite("queue.db"), "same id, two sources (sqlite)").await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_id_from_two_sources_postgres() {
    if env(CHILD_ROLE).is_some() {
        return;
    }
    let case = "same id, two sources (postgres)";
    let db = TestDb::create(case).await;
    let _serial = SERIAL.lock().await;
    same_id_from_two_sources(&db.url, case).await;
}

// ---------------------------------------------------------------------------------------
// 2. Two runner processes on one PostgreSQL queue
// ---------------------------------------------------------------------------------------

#[cfg(feature = "postgres")]
const SHARED_SIGNALS: usize = 400;

/// Two runner processes with the same forwarder on one PostgreSQL queue; 400 signals
/// published while both run. Both deliver; nothing is lost (duplicates are reported).
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_share_a_postgres_queue() {
    if env(CHILD_ROLE).is_some() {
        return;
    }
    let case = "two runners on one postgres queue";
    let db = TestDb::create(case).await;
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let dir = TempDir::new("two-runners");
    let server = receiver(Duration::from_millis(10)).await;
    let target = server.url("/siem");
    let mut runners: Vec<ChildProc> = ["one", "two"]
        .into_iter()
        .map(|tag| {
            let mut env = runner_env(&db.url, "siem", "faults.**", &target, tag);
            env.push(("FAULTS_LEASE_MS", "2000".to_owned()));
            ChildProc::spawn(tag, &dir.0, &env)
        })
        .collect();
    for r in &mut runners {
        r.wait_line("READY").await;
    }
    let queue = open_queue(&db.url, |b| b).await;
    let signals = (0..SHARED_SIGNALS)
        .map(|i| signal("faults.shared", "/faults/shared", &format!("s-{i}"), i))
        .collect();
    let acked = publish_all(&queue, &[("siem", "faults.**")], signals).await;
    let t = wait_delivered(&[&server], &acked).await;
    let finished = wait_all_final(&queue, SHARED_SIGNALS as u64).await;
    for r in &mut runners {
        r.stop().await;
    }
    let c = counts(&queue).await;
    verdict(case, started, &acked, &t, &format!("jobs {c:?}"));
    if let Err(e) = finished {
        panic!("{case}: {e}");
    }
    assert_none_cancelled_or_discarded(&queue, case).await;
    for tag in ["one", "two"] {
        assert!(
            t.by_runner.get(tag).copied().unwrap_or(0) > 0,
            "{case}: runner {tag} delivered nothing: {:?}",
            t.by_runner
        );
    }
}

// ---------------------------------------------------------------------------------------
// 5. Two services with different forwarders on one PostgreSQL queue
// ---------------------------------------------------------------------------------------

#[cfg(feature = "postgres")]
const SERVICE_SIGNALS: usize = 100;

/// Service A (forwarder `a`) and service B (forwarder `b`) run runners on one queue. First
/// only A runs: it delivers the `a` jobs and must leave the `b` jobs waiting (not cancel
/// them: the grace period, 10 minutes here, far longer than the case, has not passed). Then B starts and delivers
/// them, and a second batch of both kinds goes through while both run. Every `a` job is
/// delivered by A's receiver, every `b` job by B's; none cancelled.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_with_different_forwarders_share_a_postgres_queue() {
    if env(CHILD_ROLE).is_some() {
        return;
    }
    let case = "two services, forwarders a and b, one postgres queue";
    let db = TestDb::create(case).await;
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let dir = TempDir::new("services");
    let (server_a, server_b) = (
        receiver(Duration::from_millis(10)).await,
        receiver(Duration::from_millis(10)).await,
    );
    let service = |tag: &str, forwarder: &str, server: &TestServer| {
        let mut env = runner_env(
            &db.url,
            forwarder,
            &format!("faults.{forwarder}.**"),
            &server.url(&format!("/{forwarder}")),
            tag,
        );
        env.push(("FAULTS_LEASE_MS", "2000".to_owned()));
        // 10 minutes: far longer than any phase of the case, however slow the machine.
        env.push(("FAULTS_UNKNOWN_AFTER_MS", "600000".to_owned()));
        ChildProc::spawn(tag, &dir.0, &env)
    };
    let queue = open_queue(&db.url, |b| b).await;
    let forwarders = [("a", "faults.a.**"), ("b", "faults.b.**")];
    let batch = |round: usize| -> Vec<Signal> {
        (0..SERVICE_SIGNALS)
            .flat_map(|i| {
                let id = format!("r{round}-{i}");
                [
                    signal("faults.a.event", "/service-a", &id, i),
                    signal("faults.b.event", "/service-b", &id, i),
                ]
            })
            .collect()
    };
    let split = |acked: &[Key]| -> (Vec<Key>, Vec<Key>) {
        acked
            .iter()
            .cloned()
            .partition(|(source, _)| source == "/service-a")
    };

    // Only A runs.
    let mut a = service("A", "a", &server_a);
    a.wait_line("READY").await;
    let first = publish_all(&queue, &forwarders, batch(0)).await;
    let (first_a, first_b) = split(&first);
    let t = wait_delivered(&[&server_a], &first_a).await;
    assert!(
        t.lost.is_empty(),
        "{case}: A did not deliver {:?}",
        &t.lost[..t.lost.len().min(5)]
    );
    // A's claim loop ran (it delivered every `a` job) and left the `b` jobs alone: all of
    // them still available, no attempt spent, reported as waiting for an unregistered name.
    let c = counts(&queue).await;
    assert_eq!(
        c[&JobState::Cancelled] + c[&JobState::Discarded],
        0,
        "{case}: jobs ended while only A ran: {c:?}\n  {}",
        describe(&queue.list(JobState::Cancelled, 10).await.unwrap())
    );
    let waiting_b: Vec<Job> = queue
        .list(JobState::Available, 4 * SERVICE_SIGNALS)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.worker == forwarder_worker("b"))
        .collect();
    assert_eq!(
        waiting_b.len(),
        first_b.len(),
        "{case}: the b jobs must wait, available, while only A runs: {c:?}"
    );
    assert!(
        waiting_b.iter().all(|j| j.attempt == 0),
        "{case}: A spent attempts of b jobs:\n  {}",
        describe(&waiting_b)
    );
    let unregistered = queue.unregistered().await.unwrap();
    assert_eq!(
        unregistered.get(&("default".to_owned(), forwarder_worker("b"))),
        Some(&(first_b.len() as u64)),
        "{case}: the b jobs show as waiting for an unregistered forwarder: {unregistered:?}"
    );
    assert_eq!(server_b.count(), 0);

    // B joins; a second batch while both run.
    let mut b = service("B", "b", &server_b);
    b.wait_line("READY").await;
    let second = publish_all(&queue, &forwarders, batch(1)).await;
    let (second_a, second_b) = split(&second);
    let acked_a: Vec<Key> = first_a.into_iter().chain(second_a).collect();
    let acked_b: Vec<Key> = first_b.into_iter().chain(second_b).collect();
    let ta = wait_delivered(&[&server_a], &acked_a).await;
    let tb = wait_delivered(&[&server_b], &acked_b).await;
    let finished = wait_all_final(&queue, 4 * SERVICE_SIGNALS as u64).await;
    a.stop().await;
    b.stop().await;
    let c = counts(&queue).await;
    verdict(
        &format!("{case} [a]"),
        started,
        &acked_a,
        &ta,
        &format!("jobs {c:?}"),
    );
    verdict(&format!("{case} [b]"), started, &acked_b, &tb, "");
    if let Err(e) = finished {
        panic!("{case}: {e}");
    }
    assert_none_cancelled_or_discarded(&queue, case).await;
    assert!(
        deliveries(&server_a)
            .iter()
            .all(|d| d.key.0 == "/service-a" && d.runner.as_deref() == Some("A")),
        "{case}: A's receiver got something else"
    );
    assert!(
        deliveries(&server_b)
            .iter()
            .all(|d| d.key.0 == "/service-b" && d.runner.as_deref() == Some("B")),
        "{case}: B's receiver got something else"
    );
}

// ---------------------------------------------------------------------------------------
// 3. The PostgreSQL server SIGKILLed and restarted mid-run (a server of the test's own)
// ---------------------------------------------------------------------------------------

/// A server of the test's own; a runner process delivers while a publisher process
/// publishes continuously and prints each acknowledged signal. The postmaster and its
/// backends are SIGKILLed mid-run, and restarted on the same port and data directory
/// (crash recovery); the publisher publishes some more (its failures during the outage
/// are not acknowledged), then stops. Every acknowledged signal is delivered.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_server_killed_and_restarted_mid_run() {
    if env(CHILD_ROLE).is_some() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let case = "postgres server SIGKILLed and restarted";
    let started = Instant::now();
    let mut pg = tokio::task::spawn_blocking(support::pg_server::PgServer::new)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{case}: start a PostgreSQL server of the test's own: {e}"));
    let url = pg.url();
    let dir = TempDir::new("pg-restart");
    let server = receiver(Duration::from_millis(5)).await;

    // Creates the schema before the two children race to.
    drop(open_queue(&url, |b| b).await);
    let mut runner = {
        let mut env = runner_env(&url, "siem", "faults.**", &server.url("/siem"), "runner");
        env.push(("FAULTS_LEASE_MS", "2000".to_owned()));
        ChildProc::spawn("runner", &dir.0, &env)
    };
    runner.wait_line("READY").await;
    let mut publisher = ChildProc::spawn(
        "publisher",
        &dir.0,
        &publisher_env(
            &url,
            "faults.pg",
            "/faults/pg",
            20_000,
            Duration::from_millis(2),
        ),
    );

    // Running: acknowledged and delivered signals.
    let running = wait_for(WAIT, || {
        publisher.count("ACK ") >= 200 && server.count() >= 100
    })
    .await;
    assert!(
        running,
        "{case}: no progress before the kill: {} acknowledged, {} delivered; publisher:\n{}\nrunner:\n{}",
        publisher.count("ACK "),
        server.count(),
        publisher.stderr_tail(),
        runner.stderr_tail()
    );
    let acked_at_kill = publisher.count("ACK ");
    let errors_before = publisher.count("ERR ");
    let delivered_at_kill = server.count();
    tokio::task::block_in_place(|| pg.kill());
    eprintln!(
        "[queue_faults] {case}: postmaster SIGKILLed at {acked_at_kill} acknowledged, \
         {delivered_at_kill} delivered"
    );
    // The outage is seen: publishes fail. Two failures: the second waits out the store's
    // 2 s acquire timeout, so the outage outlasts the runner's 2 s lease (its heartbeats
    // fail too). Bounded: the server comes back either way.
    let seen = wait_for(Duration::from_secs(30), || {
        publisher.count("ERR ") >= errors_before + 2
    })
    .await;
    let acked_in_outage = publisher.count("ACK ") - acked_at_kill;
    tokio::task::block_in_place(|| pg.start())
        .unwrap_or_else(|e| panic!("{case}: restart the server: {e}"));
    let acked_at_restart = publisher.count("ACK ");
    eprintln!(
        "[queue_faults] {case}: restarted; publisher failures seen: {seen} ({} errors), \
         acknowledged during the outage: {acked_in_outage}",
        publisher.count("ERR ") - errors_before
    );
    assert!(
        seen,
        "{case}: the publisher never saw the outage (fewer than 2 failed publishes within 30 s \
         of the kill): the server was not down, or the case tested nothing; publisher:\n{}",
        publisher.stderr_tail()
    );
    // Some more after the restart, then the publisher stops.
    let resumed = wait_for(WAIT, || publisher.count("ACK ") >= acked_at_restart + 200).await;
    publisher.stop().await;
    assert!(
        resumed,
        "{case}: the publisher did not recover after the restart ({} acknowledged since); \
         stderr:\n{}\nserver log:\n{}",
        publisher.count("ACK ") - acked_at_restart,
        publisher.stderr_tail(),
        pg.log_tail(20)
    );
    let acked = publisher.acks();
    let t = wait_delivered(&[&server], &acked).await;
    runner.stop().await;
    let queue = open_queue(&url, |b| b).await;
    let c = counts(&queue).await;
    let extra = format!("{} publish errors, jobs {c:?}", publisher.count("ERR "));
    if !t.lost.is_empty() {
        eprintln!(
            "runner stderr:\n{}\nserver log:\n{}",
            runner.stderr_tail(),
            pg.log_tail(30)
        );
    }
    verdict(case, started, &acked, &t, &extra);
}
