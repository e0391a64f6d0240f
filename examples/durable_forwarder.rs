//! The durable forwarder: audit signals go through a queue (SQLite by default, PostgreSQL
//! with `--postgres URL`) to a flaky webhook receiver, retried until delivered.
//!
//! ```text
//! cargo run --example durable_forwarder
//! cargo run --example durable_forwarder --features postgres -- --postgres postgres://postgres@127.0.0.1/postgres
//! ```

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use signal_bus::{
    http::Webhook,
    policy::RetryPolicy,
    queue::{DispatchMode, Forwarder, JobBackoff, JobState, Queue, SqliteStore},
    Bus, Signal,
};

/// A receiver that fails the first three requests with 503, then accepts.
async fn flaky_receiver() -> std::io::Result<(std::net::SocketAddr, Arc<AtomicUsize>)> {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    let app = axum::Router::new().fallback(move || {
        let n = h.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 3 {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            } else {
                axum::http::StatusCode::NO_CONTENT
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, hits))
}

async fn store_from_args() -> Result<Box<dyn FnOnce() -> Queue>, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let backoff = JobBackoff::Policy(RetryPolicy::constant(Duration::from_millis(200)));
    if let Some(i) = args.iter().position(|a| a == "--postgres") {
        #[cfg(feature = "postgres")]
        {
            let url = args.get(i + 1).ok_or("--postgres needs a URL")?;
            let store = signal_bus::queue::PostgresStore::connect(url).await?;
            println!("queue: PostgreSQL ({store:?})");
            return Ok(Box::new(move || {
                Queue::builder(store)
                    .poll_interval(Duration::from_millis(50))
                    .backoff(backoff)
                    .build()
            }));
        }
        #[cfg(not(feature = "postgres"))]
        {
            let _ = i;
            return Err("--postgres needs the `postgres` feature: add --features postgres".into());
        }
    }
    let dir = std::env::temp_dir().join(format!("signal-bus-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::open(dir.join("signals.db")).await?;
    println!("queue: SQLite file {}", dir.join("signals.db").display());
    Ok(Box::new(move || {
        Queue::builder(store)
            .poll_interval(Duration::from_millis(50))
            .backoff(backoff)
            .build()
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue = store_from_args().await?();
    let (addr, hits) = flaky_receiver().await?;
    let bus = Bus::builder().name("audit").queue(queue.clone()).build()?;
    bus.subscribe(
        "audit.**",
        Forwarder::new(
            "siem",
            Webhook::new(&format!("http://{addr}/siem"))?.allow_private_networks(true),
        )
        .dispatch(DispatchMode::Async),
    )?;

    // Publish: each call returns once the signal and its job are durably committed.
    let done_before = queue.counts().await?[&JobState::Completed];
    let started = Instant::now();
    for i in 0..20 {
        let signal = Signal::builder("audit.login.succeeded", "/auth")
            .subject(format!("user/{i}"))
            .build()?;
        let report = bus.publish(signal).await?;
        assert!(report.is_ok(), "{report}");
    }
    println!(
        "20 signals durably enqueued in {:.1?}; jobs now: {}",
        started.elapsed(),
        describe(&queue.counts().await?)
    );

    // Run the queue: the receiver fails three times, the jobs are retried.
    let runner = queue.start()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = queue.store().counts().await?;
        if counts[&JobState::Completed] >= done_before + 20 || Instant::now() > deadline {
            println!("jobs after running: {}", describe(&counts));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runner.shutdown().await;
    println!(
        "the receiver saw {} requests for 20 signals (3 refused, then retried)",
        hits.load(Ordering::SeqCst)
    );
    Ok(())
}

fn describe(counts: &std::collections::BTreeMap<JobState, u64>) -> String {
    counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}
