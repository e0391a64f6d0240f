#![cfg(feature = "sqlite")]
//! Crash safety: a publisher process killed with SIGKILL mid-stream loses no acknowledged
//! signal. The child publishes through an async forwarder on a SQLite file and prints the
//! id of each signal once `publish` returned; the parent kills it, opens the same file,
//! runs the queue and checks that every acknowledged signal is delivered at least once.

use std::{
    collections::HashSet,
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use signal_bus::{
    adapter::{Handler, Noop},
    queue::{DispatchMode, Forwarder, JobState, Queue, SqliteStore},
    Bus, Signal,
};

const CHILD_ENV: &str = "SIGNAL_BUS_CRASH_CHILD_DB";

/// The child: publishes forever, acknowledging each signal on stdout. A no-op in a normal
/// test run.
#[tokio::test]
async fn child_publisher() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let queue = Queue::new(SqliteStore::open(&path).await.unwrap());
    let bus = Bus::builder().queue(queue).build().unwrap();
    bus.subscribe(
        "audit.**",
        Forwarder::new("siem", Noop).dispatch(DispatchMode::Async),
    )
    .unwrap();
    let mut out = std::io::stdout();
    for i in 0.. {
        let signal = Signal::builder("audit.event", "/crash")
            .id(format!("crash-{i}"))
            .build()
            .unwrap();
        let report = bus.publish(signal).await.unwrap();
        assert!(report.is_ok(), "{report}");
        // Acknowledged: publish returned, so the signal and its job are committed.
        writeln!(out, "ACK crash-{i}").unwrap();
        out.flush().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_signals_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("signal-bus-crash-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("crash.db");

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_publisher",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("ACK ") {
                acked.push(id.to_owned());
            }
        }
        acked
    });
    // Let it publish for a while, then kill it mid-stream (SIGKILL: no cleanup at all).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let published = SqliteStore::open(&db).await.ok();
        let n = match published {
            Some(s) => {
                let counts = signal_bus::queue::JobStore::counts(&s)
                    .await
                    .unwrap_or_default();
                counts.get(&JobState::Available).copied().unwrap_or(0)
            }
            None => 0,
        };
        if n >= 300 || std::time::Instant::now() > deadline {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let acked = reader.join().unwrap();
    assert!(
        acked.len() >= 100,
        "the child acknowledged only {} signals",
        acked.len()
    );

    // Restart: a new process-like owner opens the same file and runs the queue.
    let queue = Queue::builder(SqliteStore::open(&db).await.unwrap())
        .poll_interval(Duration::from_millis(20))
        .build();
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    let delivered = Arc::new(Mutex::new(HashSet::new()));
    let d = Arc::clone(&delivered);
    bus.subscribe(
        "audit.**",
        Forwarder::new(
            "siem",
            Handler::new(move |s: Arc<Signal>| {
                let d = Arc::clone(&d);
                async move {
                    d.lock().unwrap().insert(s.id().to_owned());
                    Ok(())
                }
            }),
        )
        .dispatch(DispatchMode::Async),
    )
    .unwrap();
    let runner = queue.start().unwrap();
    let wait = async {
        loop {
            let missing = {
                let got = delivered.lock().unwrap();
                acked.iter().filter(|id| !got.contains(*id)).count()
            };
            if missing == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let complete = tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .is_ok();
    runner.shutdown().await;
    let got = delivered.lock().unwrap();
    let missing: Vec<&String> = acked.iter().filter(|id| !got.contains(*id)).collect();
    assert!(
        complete && missing.is_empty(),
        "{} of {} acknowledged signals were lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    drop(got);
    std::fs::remove_dir_all(&dir).unwrap();
}
