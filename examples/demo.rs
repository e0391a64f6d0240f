//! The demo: one bus, several subscriptions and adapters, a few hundred signals, and a
//! summary of what went where. Runs on embedded defaults: no server needed.
//!
//! `cargo run --release --example demo`
//!
//! Its output, in order: the lines two adapters write while the signals are published
//! (Logger lines tagged `[Logger, pattern]`, Console lines for `payment.failed`), a table with
//! one row per (subscription, target), what each receiver got (each count checked against
//! its row), and a flaky payment partner behind retries and a circuit breaker. The failures
//! are staged on purpose and say so: one handler fails every fifth call, and the partner
//! answers 503 and 500 in its `flaky` and `outage` phases.

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

/// `=` when a count matches what it should equal, else `!=` (shown, never hidden).
fn eq(a: usize, b: usize) -> &'static str {
    if a == b {
        "="
    } else {
        "!="
    }
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
    let runner = queue.start()?;
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
        Logger::info().format("[Logger, audit.**] $type for $subject"),
    )?;
    bus.subscribe(
        "payment.failed",
        Console::stdout().format(ConsoleFormat::Compact),
    )?;
    bus.subscribe(
        "inventory.low",
        Logger::warn().format("[Logger, inventory.low] stock low: $data"),
    )?;
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
    let (mut unmatched, mut outcomes) = (0, 0);
    println!(
        "--- publishing {} signals: the lines up to the table are written by two adapters ---",
        signals.len()
    );
    println!("    Logger adapter (through tracing): lines tagged [Logger, audit.**] and [Logger, inventory.low]");
    println!("    Console adapter (payment.failed): the untagged lines `<time> payment.failed /demo/shop <id> ...`");
    println!();
    let started = Instant::now();
    for signal in signals.iter().cloned() {
        let report = bus.publish(signal).await?;
        if report.is_empty() {
            unmatched += 1;
        }
        outcomes += report.len();
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
    println!("--- a flaky payment partner: retries, a circuit breaker, dead letters ---");
    println!(
        "    staged on purpose: phase `flaky` answers 503 to every third request, `outage` answers"
    );
    println!("    500 to every request, `recovered` answers 204. The lines below are the bus's own tracing");
    println!(
        "    events about it (retries, the circuit breaker, dead letters), not an adapter's output"
    );
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
    let mut refused = 0; // publishes the open circuit answered without calling the partner
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
            let partner = report.outcomes().find(|o| o.target == "payment-partner");
            if partner.is_some_and(|o| o.is_ok()) {
                ok += 1;
            } else {
                failed += 1;
            }
            if partner.is_some_and(|o| matches!(o.error, Some(DeliveryError::CircuitOpen { .. }))) {
                refused += 1;
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

    // What each (pattern, target) row counted as delivered.
    let row = |pattern: &str, target: &str| -> usize {
        table
            .iter()
            .filter(|((sub, t), _)| t == target && patterns.get(sub).is_some_and(|p| p == pattern))
            .map(|(_, (ok, _))| ok)
            .sum()
    };
    let forwarder = table
        .iter()
        .find(|((sub, t), _)| {
            t.contains("siem") && patterns.get(sub).is_some_and(|p| p == "audit.**")
        })
        .map(|((_, t), _)| t.clone())
        .unwrap_or_default();
    let note = |pattern: &str, target: &str| -> &'static str {
        match (pattern, target) {
            ("order.shipped", "partner-api") => "staged: fails every 5th call on purpose",
            ("audit.**", t) if t == forwarder => "enqueued; the queue delivers it (jobs below)",
            ("order.paid", "partner-webhook") => "signed POST to the loopback receiver",
            ("audit.**", "logger") => "the [Logger, audit.**] lines above",
            ("inventory.low", "logger") => "the [Logger, inventory.low] lines above",
            ("payment.failed", "console") => "the untagged payment.failed lines above",
            ("debug.**", _) => "Noop: accepted and dropped",
            ("**", _) => "every signal",
            _ => "",
        }
    };

    println!();
    println!("--- what went where: one row per (subscription, target) ---");
    println!("    delivered + failed = the signals that matched the subscription");
    println!(
        "{:<22} {:<16} {:>10} {:>8}  note",
        "subscription", "target", "delivered", "failed"
    );
    for ((sub, target), (ok, failed)) in &table {
        let pattern = patterns.get(sub).map_or("?", String::as_str);
        let note = note(pattern, target);
        println!("{pattern:<22} {target:<16} {ok:>10} {failed:>8}  {note}");
    }
    let deliveries: usize = table.values().map(|(ok, _)| ok).sum();
    let failures: usize = table.values().map(|(_, f)| f).sum();
    let staged: usize = table
        .iter()
        .filter(|((sub, t), _)| {
            t == "partner-api" && patterns.get(sub).is_some_and(|p| p == "order.shipped")
        })
        .map(|(_, (_, f))| f)
        .sum();
    println!(
        "{:<22} {:<16} {deliveries:>10} {failures:>8}  {} {outcomes} outcomes in the publish reports",
        "total",
        "",
        eq(deliveries + failures, outcomes)
    );
    println!();
    // Let the queue finish the audit trail, then stop it cleanly.
    let enqueued = row("audit.**", &forwarder);
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.counts().await?[&JobState::Completed] < enqueued as u64 && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    runner.shutdown().await;
    let jobs = queue.counts().await?;
    let _ = std::fs::remove_dir_all(&queue_dir);

    println!("--- what the receivers got, each beside the row it should equal ---");
    let pair = |got: usize, pattern: &str, target: &str| {
        let want = row(pattern, target);
        format!(
            "{got:<6} {} {want} delivered by {pattern} -> {target}",
            eq(got, want)
        )
    };
    println!(
        "fulfilment task (Channel)       {}",
        pair(fulfilment, "order.**", "channel")
    );
    println!(
        "email_service (Named)           {}",
        pair(email, "user.*", "named")
    );
    println!(
        "billing listener A (PubSub)     {}",
        pair(billing_a, "order.{placed,paid}", "pubsub")
    );
    println!(
        "billing listener B (PubSub)     {}  (a topic gives every listener every signal)",
        pair(billing_b, "order.{placed,paid}", "pubsub")
    );
    let completed = usize::try_from(jobs[&JobState::Completed]).unwrap_or(usize::MAX);
    let job_states: Vec<String> = jobs
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    println!(
        "durable queue (SQLite) jobs     {}  ({enqueued} enqueued by audit.** -> {forwarder})",
        job_states.join(", ")
    );
    {
        let r = received.lock().unwrap();
        let webhook = row("order.paid", "partner-webhook");
        println!(
            "signed webhook receiver         {:<6} {} {webhook} partner-webhook + {completed} completed SIEM jobs; {} rejected",
            r.verified,
            eq(r.verified, webhook + completed),
            r.rejected.len()
        );
    }
    receiver_task.abort();
    println!("metrics handler (Handler on **), per type:");
    let per_type = per_type.lock().unwrap();
    for (ty, n) in per_type.iter() {
        println!("    {ty:<24} {n}");
    }
    let seen: usize = per_type.values().sum();
    let captured = per_type.get("payment.captured").copied().unwrap_or(0);
    println!(
        "    {:<24} {seen} {} {} signals above + {captured} payment.captured from the flaky partner below",
        "total",
        eq(seen, signals.len() + captured),
        signals.len()
    );
    drop(per_type);
    println!();
    println!(
        "--- the flaky payment partner: payment.captured -> Http target `payment-partner` ---"
    );
    println!(
        "{:<12} {:>9} {:>10} {:>8}",
        "phase", "published", "delivered", "failed"
    );
    let (mut published, mut failed_total) = (0, 0);
    for (phase, ok, failed) in &phases {
        println!("{phase:<12} {:>9} {ok:>10} {failed:>8}", ok + failed);
        published += ok + failed;
        failed_total += failed;
    }
    if let Some(p) = partner_metrics {
        println!(
            "{published} published; {failed_total} failed for good {} {} in the target's metrics; {} dead-lettered",
            eq(failed_total, usize::try_from(p.failed).unwrap_or(usize::MAX)),
            p.failed,
            p.dead_lettered
        );
        let requests = partner_requests.load(Ordering::SeqCst);
        let retried = usize::try_from(p.retried).unwrap_or(usize::MAX);
        println!(
            "requests the partner saw: {requests} {} {} first attempts ({published} published - \
             {refused} refused by the open circuit) + {retried} retries",
            eq(requests, published - refused + retried),
            published - refused
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
    println!();
    println!(
        "{} signals published in {:.2?} ({unmatched} matched nothing): {outcomes} target outcomes = \
         {deliveries} delivered + {failures} failed ({staged} of them staged: partner-api's every 5th call)",
        signals.len(),
        elapsed
    );
    Ok(())
}
