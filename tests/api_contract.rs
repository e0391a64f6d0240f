//! The code of `API.md` that the core covers, compiled as written and run with assertions.
//! Later areas (HTTP, policies, queue) add their blocks as they land.

use std::{sync::Arc, time::Duration};

use serde_json::json;
use signal_bus::adapter::{Channel, Console, Logger, Named, Noop};
use signal_bus::{Adapter, Bus, ConfigError, DeliveryError, Pattern, Router, Signal, Target};

#[tokio::test]
async fn api_md_core_block() -> Result<(), Box<dyn std::error::Error>> {
    // Signals: CloudEvents 1.0.
    let signal: Signal = Signal::builder("user.created", "/services/accounts")
        .subject("user/42")
        .data(json!({"id": 42}))
        .build()?; // Result<Signal, SignalError>
    let (_id, _ty, _src) = (signal.id(), signal.ty(), signal.source());
    assert_eq!(_ty, "user.created");
    assert_eq!(_src, "/services/accounts");
    let wire = serde_json::to_string(&signal)?; // CloudEvents JSON (structured mode)
    let back: Signal = serde_json::from_str(&wire)?; // bad input: an error naming the field
    assert_eq!(back, signal);

    // Patterns and the router.
    let p: Pattern = Pattern::parse("user.*")?; // Result<Pattern, PatternError>
    assert!(p.matches("user.created") && !p.matches("user.a.b"));
    let mut router: Router<&str> = Router::new();
    let _rid = router.add("user.**", 0, "audit")?; // pattern, priority -100..=100, value
    router.add("user.created", 10, "welcome")?;
    let hits: Vec<&&str> = router.route("user.created"); // specificity, then priority, then registration
    assert_eq!(hits, [&"welcome", &"audit"]);

    // The bus and in-process adapters.
    let bus = Bus::builder().name("app").build()?; // Result<Bus, ConfigError>; Bus is Clone
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<Signal>>(1024);
    let sub = bus.subscribe("user.*", Channel::new(tx))?; // Result<SubscriptionId, BusError>
    bus.subscribe(
        "audit.**",
        vec![Target::new(Logger::info()), Target::new(Console::stderr())],
    )?;
    let report = bus.publish(signal).await?; // takes Signal or Arc<Signal>; Err only when the
    assert!(report.is_ok()); // bus cannot accept it; the report has one outcome
                             // per target, failures included
    assert_eq!(report.len(), 1);
    let got: Arc<Signal> = rx.recv().await.unwrap();
    assert_eq!(got.subject(), Some("user/42"));
    bus.unsubscribe(sub)?;
    let (tx_email, mut _rx_email) = tokio::sync::mpsc::channel::<Arc<Signal>>(64);
    bus.register("email_service", tx_email)?; // a named in-process receiver
    bus.subscribe("user.created", Named::new("email_service"))?;
    bus.subscribe("test.**", Noop)?;
    use signal_bus::adapter::Handler; // an async closure as a handler
    bus.subscribe(
        "user.*",
        Handler::new(|signal: Arc<Signal>| async move {
            println!("got {}", signal.ty());
            Ok(()) // Result<(), DeliveryError>
        }),
    )?;

    // A custom adapter.
    struct Slack;
    #[signal_bus::async_trait] // re-exported: no async-trait dependency needed
    impl Adapter for Slack {
        fn name(&self) -> &str {
            "slack"
        }
        fn validate(&self) -> Result<(), ConfigError> {
            Ok(())
        } // pure: no I/O
        async fn deliver(&self, _signal: &Signal) -> Result<(), DeliveryError> {
            Ok(())
        }
    }
    bus.subscribe("alerts.**", Slack)?;

    // What was subscribed behaves as commented.
    let again = Signal::builder("user.created", "/services/accounts").build()?;
    let report = bus.publish(again).await?;
    let targets: Vec<&str> = report.outcomes().map(|o| o.target).collect();
    assert_eq!(targets, ["named", "handler"]);
    assert!(report.is_ok());
    assert_eq!(_rx_email.recv().await.unwrap().ty(), "user.created");
    let report = bus
        .publish(Signal::builder("alerts.disk.full", "/m").build()?)
        .await?;
    assert_eq!(report.get(0).unwrap().target, "slack");
    let _ = Duration::from_secs(1);
    Ok(())
}

#[cfg(feature = "http")]
#[tokio::test]
async fn api_md_http_and_webhook_block() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::builder().name("app").build()?;

    // Per-target timeout on an HTTP target (the policy options arrive with the policy work).
    use signal_bus::http::Http;
    let target =
        Target::new(Http::post("https://api.example.com/events")?).timeout(Duration::from_secs(10));
    assert_eq!(target.name(), "http");
    bus.subscribe("payment.**", target)?;

    // Webhooks and signing (signers are pure and usable by receivers).
    use signal_bus::http::{
        signing::{GitHub, StandardWebhooks},
        Webhook,
    };
    let std_hooks = StandardWebhooks::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?; // Result<_, ConfigError>
    let body: &[u8] = br#"{"a":1}"#;
    let header: String = std_hooks.sign("msg_1", 1_700_000_000, body); // "v1,<base64>"; i64 unix seconds
    assert!(header.starts_with("v1,"));
    let headers = http::HeaderMap::new(); // a receiver's request headers
    let _ = std_hooks.verify(&headers, body); // Result<(), VerifyError>; tolerance 5 min
    assert!(std_hooks.verify(&headers, body).is_err());
    let gh: String = GitHub::new("secret")?.sign(body); // "sha256=<hex>"
    assert!(gh.starts_with("sha256="));
    let hook = Webhook::new("https://merchant.example.com/hook")?.signing(std_hooks);
    bus.subscribe("order.**", hook)?;
    // Private, loopback and link-local targets are refused (a failed outcome in the report, or an
    // Err from new/subscribe for a literal address) unless allowed:
    let local = Webhook::new("http://127.0.0.1:9000/hook")?.allow_private_networks(true);
    bus.subscribe("local.**", local)?;
    assert!(bus
        .subscribe("x.**", Webhook::new("http://127.0.0.1:9000/hook")?)
        .is_err());
    Ok(())
}

#[cfg(all(feature = "http", feature = "sqlite"))]
#[tokio::test]
async fn api_md_queue_block() -> Result<(), Box<dyn std::error::Error>> {
    use signal_bus::http::Webhook;
    // API.md opens `signals.db` in the working directory: use a fresh one.
    let _cwd = CWD.lock().await;
    let dir = std::env::temp_dir().join(format!("signal-bus-api-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    std::env::set_current_dir(&dir)?;

    // The durable queue and the forwarder.
    use signal_bus::queue::{DispatchMode, Forwarder, Queue, SqliteStore};
    let queue = Queue::new(SqliteStore::open("signals.db").await?);
    let runner = queue.start(); // workers; runner.shutdown().await drains
    let runner = runner?; // `start` refuses to run outside a tokio runtime
    let bus = Bus::builder().queue(queue.clone()).build()?;
    bus.subscribe(
        "audit.**",
        Forwarder::new("siem", Webhook::new("https://siem.example.com")?)
            .dispatch(DispatchMode::Auto),
    )?;

    assert!(dir.join("signals.db").exists());
    assert!(queue.is_running());
    runner.shutdown().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Tests that change the working directory (API.md's relative `signals.db`) take turns.
static CWD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// "Added for the journal issue": the journal, a persistent subscription and replay.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn api_md_journal_block() -> Result<(), Box<dyn std::error::Error>> {
    use signal_bus::queue::SqliteStore;
    let _cwd = CWD.lock().await;
    let dir = std::env::temp_dir().join(format!("signal-bus-api-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    std::env::set_current_dir(&dir)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<Signal>>(16);
    let target = Channel::new(tx);

    // The journal: every published signal is appended (durably) before it is delivered.
    use signal_bus::journal::Replay;
    let store = SqliteStore::open("signals.db").await?; // the same store type as the queue's
    let bus = Bus::builder().journal(store.clone()).build()?;
    // A named durable cursor: resumes after the last acknowledged signal after a restart.
    let sub = bus
        .subscribe_persistent("billing", "order.**", target)
        .await?; // Result<_, BusError>

    let report = bus
        .publish(Signal::builder("order.paid", "/shop").build()?)
        .await?;
    bus.publish(Signal::builder("user.created", "/accounts").build()?)
        .await?;
    assert_eq!(report.journal_seq(), Some(1));
    assert_eq!(rx.recv().await.unwrap().ty(), "order.paid");
    assert!(sub.wait_for_checkpoint(1).await);

    // Replay: a futures Stream of Result<Arc<Signal>, _>, in journal order.
    let mut stream = bus.replay("order.**", Replay::Beginning).await?;
    let mut seen = Vec::new();
    while let Some(signal) = futures_util::StreamExt::next(&mut stream).await {
        let _signal: Arc<Signal> = signal?;
        seen.push(_signal.ty().to_owned());
    }
    assert_eq!(seen, ["order.paid"]);

    sub.stop().await;
    drop((bus, store));
    std::env::set_current_dir(std::env::temp_dir())?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn api_md_types_with_any_character() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::builder().name("shop").build()?;
    // Types may hold '/', ':' and the like (no whitespace, no empty '.'-segments); routing splits on '.'.
    let s = Signal::builder("com.example/orders:created", "/shop").build()?;
    bus.subscribe("com.example/orders:created", Noop)?;

    // What was subscribed behaves as commented.
    let report = bus.publish(s).await?;
    assert_eq!(report.len(), 1);
    assert_eq!(report.get(0).unwrap().target, "noop");
    assert!(report.is_ok());
    let e = Signal::builder("com.example/orders created", "/shop")
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "type `com.example/orders created` has the whitespace character ' ' in segment 1: \
         a type holds no whitespace or control characters"
    );
    Ok(())
}

#[test]
fn error_types_implement_std_error_and_name_the_value() {
    fn is_error<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
    let e = Signal::builder("user..created", "/s").build().unwrap_err();
    is_error(&e);
    assert_eq!(
        e.to_string(),
        "type `user..created` has an empty segment at position 1"
    );
    let e = Pattern::parse("a..b").unwrap_err();
    is_error(&e);
    assert!(e.to_string().contains("a..b"), "{e}");
    let e = Bus::builder().name("").build().unwrap_err();
    is_error(&e);
    is_error(&DeliveryError::permanent("x"));
    let e =
        serde_json::from_str::<Signal>(r#"{"specversion":"1.0","id":"1","type":"a"}"#).unwrap_err();
    assert!(e.to_string().contains("`source` is required"), "{e}");
}

/// "Added for the HTTP-both-ways issue": reading CloudEvents from a received request.
#[cfg(feature = "http")]
#[test]
fn api_md_read_signals_line() -> Result<(), Box<dyn std::error::Error>> {
    let mut headers = http::HeaderMap::new(); // a receiver's request headers
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/cloudevents+json"),
    );
    let wire = Signal::builder("user.created", "/accounts")
        .build()?
        .to_json_vec();
    let body: &[u8] = &wire;
    // Reading CloudEvents from an HTTP request: structured, binary or batch.
    let signals: Vec<Signal> = signal_bus::http::read_signals(&headers, body)?; // Result<Vec<Signal>, impl std::error::Error>
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0].ty(), "user.created");
    Ok(())
}
