//! The demo: one bus, several subscriptions and adapters, a few hundred signals, and a
//! summary of what went where. Runs on embedded defaults: no server needed.
//!
//! `cargo run --release --example demo`

#[path = "shared/receiver.rs"]
mod receiver;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::json;
use signal_bus::{
    adapter::{Channel, Console, ConsoleFormat, Handler, Logger, Named, Noop, PubSub},
    http::{signing::StandardWebhooks, Http, Webhook},
    policy::{CircuitBreaker, CircuitState, RetryPolicy},
    queue::{DispatchMode, Forwarder, JobState, Queue, SqliteStore},
    Bus, DeliveryError, Signal, Target,
};
use tokio::sync::mpsc;

const TYPES: [&str; 10] = [
    "user.created",
    "user.updated",
    "order.placed",
    "order.paid",
    "order.shipped",
    "order.item.added",
    "payment.failed",
    "audit.login.succeeded",
    "inventory.low",
    "debug.trace",
];

/// A deterministic stream of `n` signals across the types above.
fn signals(n: usize) -> Vec<Signal> {
    (0..n)
        .map(|i| {
            // Rare types (payment.failed, audit, debug) appear less often.
            let ty = match i % 20 {
                19 => TYPES[6],
                17 => TYPES[7],
                13 => TYPES[9],
                k => TYPES[k % 6],
            };
            let ty = if i % 37 == 0 { TYPES[8] } else { ty };
            Signal::builder(ty, "/demo/shop")
                .subject(format!("customer/{}", i % 25))
                .data(json!({"seq": i, "amount_cents": (i * 137) % 10_000}))
                .build()
                .expect("the demo builds valid signals")
        })
        .collect()
}

const FLAKY: usize = 0;
const DOWN: usize = 1;
const HEALTHY: usize = 2;

/// A payment partner on loopback. `FLAKY`: every third request fails with 503. `DOWN`: every
/// request fails with 500. `HEALTHY`: every request succeeds.
async fn flaky_partner(
) -> std::io::Result<(std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>)> {
    let mode = Arc::new(AtomicUsize::new(FLAKY));
    let requests = Arc::new(AtomicUsize::new(0));
    let (m, r) = (Arc::clone(&mode), Arc::clone(&requests));
    let app = axum::Router::new().fallback(move || {
        let n = r.fetch_add(1, Ordering::SeqCst);
        let mode = m.load(Ordering::SeqCst);
        async move {
            match mode {
                DOWN => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                FLAKY if n % 3 == 2 => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                _ => axum::http::StatusCode::NO_CONTENT,
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, mode, requests))
}

/// A consumer task that counts what it receives.
fn spawn_counter(mut rx: mpsc::Receiver<Arc<Signal>>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Audit lines from the Logger adapter go through tracing.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,signal_bus::deliver=off".into()),
        )
        .with_target(false)
        .init();

    // The embedded durable queue: one SQLite file, no server.
    let queue_dir = std::env::temp_dir().join(format!("signal-bus-demo-{}", std::process::id()));
    std::fs::create_dir_all(&queue_dir)?;
    let queue = Queue::builder(SqliteStore::open(queue_dir.join("signals.db")).await?)
        .poll_interval(Duration::from_millis(20))
        .build();
    let runner = queue.start();
    let bus = Bus::builder().name("demo").queue(queue.clone()).build()?;

    // 1. Fulfilment: a task owning a channel gets every order signal.
    let (orders_tx, orders_rx) = mpsc::channel(256);
    bus.subscribe("order.**", Channel::new(orders_tx))?;
    let fulfilment = spawn_counter(orders_rx);

    // 2. E-mail: a receiver registered by name gets user signals.
    let (email_tx, email_rx) = mpsc::channel(256);
    bus.register("email_service", email_tx)?;
    bus.subscribe("user.*", Named::new("email_service"))?;
    let email = spawn_counter(email_rx);

    // 3. Billing: a topic with two listeners, fed by a glob segment.
    let billing_a = bus.pubsub_subscribe("billing");
    let billing_b = bus.pubsub_subscribe("billing");
    bus.subscribe("order.{placed,paid}", PubSub::new("billing"))?;
    let listen = |mut rx: tokio::sync::broadcast::Receiver<Arc<Signal>>| {
        tokio::spawn(async move {
            let mut n = 0;
            while rx.recv().await.is_ok() {
                n += 1;
            }
            n
        })
    };
    let (billing_a, billing_b) = (listen(billing_a), listen(billing_b));

    // 4. Metrics: a handler sees everything and counts per type.
    let per_type: Arc<std::sync::Mutex<BTreeMap<String, usize>>> = Arc::default();
    let counts = Arc::clone(&per_type);
    bus.subscribe_with_priority(
        "**",
        -10,
        Target::new(Handler::new(move |s: Arc<Signal>| {
            let counts = Arc::clone(&counts);
            async move {
                *counts.lock().unwrap().entry(s.ty().to_owned()).or_default() += 1;
                Ok(())
            }
        }))
        .label("metrics"),
    )?;

    // 5. A flaky partner integration: fails one delivery in five.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    bus.subscribe(
        "order.shipped",
        Target::new(Handler::new(move |_s: Arc<Signal>| {
            let n = c.fetch_add(1, Ordering::Relaxed);
            async move {
                if n % 5 == 4 {
                    Err(DeliveryError::retryable("partner API answered 503"))
                } else {
                    Ok(())
                }
            }
        }))
        .label("partner-api"),
    )?;

    // 6. Audit trail through tracing, payment failures on the console, debug noise dropped.
    bus.subscribe(
        "audit.**",
        Logger::info().format("audit: $type for $subject"),
    )?;
    bus.subscribe(
        "payment.failed",
        Console::stdout().format(ConsoleFormat::Compact),
    )?;
    bus.subscribe("inventory.low", Logger::warn().format("stock low: $data"))?;
    bus.subscribe("debug.**", Noop)?;

    // 7. A partner webhook: paid orders, signed with Standard Webhooks, to a receiver on
    //    loopback that verifies every signature with the library's verifier.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (addr, received, serve) =
        receiver::start(([127, 0, 0, 1], 0).into(), secret, false).await?;
    let receiver_task = tokio::spawn(serve);
    let hook = Webhook::new(&format!("http://{addr}/partner/orders"))?
        .allow_private_networks(true) // loopback, on purpose
        .signing(StandardWebhooks::new(secret)?);
    bus.subscribe("order.paid", Target::new(hook).label("partner-webhook"))?;

    // 8. An audit trail to a SIEM, through the durable queue: publish returns once the
    //    signal and a thin job are committed to SQLite; the runner delivers them, signed.
    let siem = Webhook::new(&format!("http://{addr}/siem"))?
        .allow_private_networks(true)
        .signing(StandardWebhooks::new(secret)?);
    bus.subscribe(
        "audit.**",
        Forwarder::new("siem", siem).dispatch(DispatchMode::Async),
    )?;

    // Publish a few hundred signals and tally every outcome per subscription target.
    let signals = signals(400);
    let patterns: BTreeMap<u64, String> = bus
        .subscriptions()
        .into_iter()
        .map(|s| (s.id.get(), s.pattern.to_string()))
        .collect();
    let mut table: BTreeMap<(u64, String), (usize, usize)> = BTreeMap::new();
    let mut unmatched = 0;
    println!(
        "--- publishing {} signals (console and log lines below) ---",
        signals.len()
    );
    let started = Instant::now();
    for signal in signals.iter().cloned() {
        let report = bus.publish(signal).await?;
        if report.is_empty() {
            unmatched += 1;
        }
        for o in report.outcomes() {
            let sub = o.subscription.map_or(0, |s| s.get());
            let row = table.entry((sub, o.target.to_owned())).or_default();
            if o.is_ok() {
                row.0 += 1;
            } else {
                row.1 += 1;
            }
        }
    }
    let elapsed = started.elapsed();

    // 9. Resilience: a flaky payment partner behind retries and a circuit breaker; what fails
    //    for good goes to a dead-letter channel.
    println!();
    println!("--- a flaky partner: retries, a circuit breaker, dead letters ---");
    let (partner, mode, partner_requests) = flaky_partner().await?;
    let (dead_tx, mut dead_rx) = mpsc::channel::<Arc<Signal>>(100);
    bus.subscribe(
        "payment.captured",
        Target::new(Http::post(&format!("http://{partner}/payments"))?)
            .label("payment-partner")
            .retry(RetryPolicy::constant(Duration::from_millis(20)).max_attempts(3))
            .circuit_breaker(
                CircuitBreaker::new()
                    .failure_threshold(3)
                    .recovery_timeout(Duration::from_millis(300)),
            )
            .on_failure(Channel::new(dead_tx)),
    )?;
    let mut states = vec![CircuitState::Closed];
    let mut note_state = |bus: &Bus| {
        let state = bus
            .metrics()
            .target("payment-partner")
            .and_then(|t| t.circuit);
        if let Some(state) = state {
            if states.last() != Some(&state) {
                states.push(state);
            }
        }
    };
    let capture = |i: usize| {
        Signal::builder("payment.captured", "/demo/payments")
            .subject(format!("payment/{i}"))
            .data(json!({"amount_cents": 500 + i}))
            .build()
    };
    let mut phases = Vec::new();
    for (phase, partner_mode, count) in [
        ("flaky", FLAKY, 12),
        ("outage", DOWN, 8),
        ("recovered", HEALTHY, 10),
    ] {
        mode.store(partner_mode, Ordering::SeqCst);
        if partner_mode == HEALTHY {
            // Past the breaker's recovery timeout: the next delivery is a probe.
            tokio::time::sleep(Duration::from_millis(350)).await;
        }
        let (mut ok, mut failed) = (0, 0);
        for i in 0..count {
            let report = bus.publish(capture(i)?).await?;
            let partner_ok = report
                .outcomes()
                .find(|o| o.target == "payment-partner")
                .is_some_and(|o| o.is_ok());
            if partner_ok {
                ok += 1;
            } else {
                failed += 1;
            }
            note_state(&bus);
        }
        phases.push((phase, ok, failed));
    }
    let mut dead_letters = Vec::new();
    while let Ok(s) = dead_rx.try_recv() {
        dead_letters.push(s);
    }
    let m = bus.metrics();
    let partner_metrics = m.target("payment-partner").cloned();
    drop(m);

    drop(bus); // closes channels and topics so the consumers finish
    let (fulfilment, email) = (fulfilment.await?, email.await?);
    let (billing_a, billing_b) = (billing_a.await?, billing_b.await?);

    println!();
    println!("--- what went where ---");
    println!(
        "{:<22} {:<14} {:>10} {:>8}",
        "subscription", "target", "delivered", "failed"
    );
    for ((sub, target), (ok, failed)) in &table {
        let pattern = patterns.get(sub).map_or("?", String::as_str);
        println!("{pattern:<22} {target:<14} {ok:>10} {failed:>8}");
    }
    println!();
    // Let the queue finish the audit trail, then stop it cleanly.
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.counts().await?[&JobState::Completed] < 19 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    runner.shutdown().await;
    let jobs = queue.counts().await?;
    let _ = std::fs::remove_dir_all(&queue_dir);

    println!("--- what the receivers got ---");
    println!("fulfilment task (channel)     {fulfilment}");
    println!("email_service (named)         {email}");
    println!("billing listeners (pubsub)    {billing_a} and {billing_b}");
    {
        let r = received.lock().unwrap();
        println!(
            "signed webhook receiver       {} verified, {} rejected (partner orders and SIEM)",
            r.verified,
            r.rejected.len()
        );
    }
    let job_states: Vec<String> = jobs
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    println!("durable queue (SQLite) jobs   {}", job_states.join(", "));
    receiver_task.abort();
    println!("metrics handler, per type:");
    for (ty, n) in per_type.lock().unwrap().iter() {
        println!("    {ty:<24} {n}");
    }
    println!();
    println!("--- the flaky partner ---");
    println!("{:<12} {:>10} {:>8}", "phase", "delivered", "failed");
    for (phase, ok, failed) in &phases {
        println!("{phase:<12} {ok:>10} {failed:>8}");
    }
    if let Some(p) = partner_metrics {
        println!(
            "requests the partner saw: {}; retries: {}; failed for good: {}; dead-lettered: {}",
            partner_requests.load(Ordering::SeqCst),
            p.retried,
            p.failed,
            p.dead_lettered
        );
    }
    let path: Vec<String> = states.iter().map(ToString::to_string).collect();
    println!("circuit breaker: {}", path.join(" -> "));
    if let Some(first) = dead_letters.first() {
        let ext = |k: &str| {
            first
                .extension(k)
                .map(ToString::to_string)
                .unwrap_or_default()
        };
        println!(
            "dead-letter channel got {} signals; the first: {} (attempts {}, {})",
            dead_letters.len(),
            first.subject().unwrap_or("?"),
            ext("deadletterattempts"),
            ext("deadlettererror")
        );
    }
    let deliveries: usize = table.values().map(|(ok, _)| ok).sum();
    let failures: usize = table.values().map(|(_, f)| f).sum();
    println!();
    println!(
        "{} signals published in {:.2?}: {deliveries} deliveries, {failures} failed, {unmatched} matched nothing",
        signals.len(),
        elapsed
    );
    Ok(())
}
