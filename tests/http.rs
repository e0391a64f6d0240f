#![cfg(feature = "http")]
//! The `Http` adapter against real loopback servers: bodies in each CloudEvents mode,
//! response classification, timeouts, refused and dropped connections, bad configuration.

mod support;

use std::{sync::Arc, time::Duration};

use serde_json::json;
use signal_bus::{
    dispatch, dispatch_batch,
    http::{ContentMode, Http, Webhook},
    queue::Forwarder,
    Adapter, Bus, DeliveryError, ErrorKind, Signal, Target,
};
use support::{dropping_server, refused_addr, Reply, TestServer};

fn signal() -> Signal {
    Signal::builder("order.placed", "/shop")
        .id("ord-1")
        .subject("order/7")
        .time_str("2024-05-01T10:00:00Z")
        .data(json!({"total": 42}))
        .extension("tenant", "acme")
        .build()
        .unwrap()
}

async fn deliver(http: Http) -> Result<(), DeliveryError> {
    let report = dispatch(signal(), http).await.unwrap();
    match report.get(0).unwrap().error {
        None => Ok(()),
        Some(e) => Err(e.clone()),
    }
}

#[tokio::test]
async fn structured_mode_posts_the_cloudevent() {
    let server = TestServer::start().await;
    let http = Http::post(&server.url("/events?key=1"))
        .unwrap()
        .header("x-source", "tests")
        .bearer_auth("t0ken");
    deliver(http).await.unwrap();
    let req = &server.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/events");
    assert_eq!(req.headers["content-type"], "application/cloudevents+json");
    assert_eq!(req.headers["x-source"], "tests");
    assert_eq!(req.headers["authorization"], "Bearer t0ken");
    assert!(req.headers["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("signal-bus/"));
    let got: Signal = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(got, signal());
    assert_eq!(&req.body[..], &signal().to_json_bytes()[..]);
}

#[tokio::test]
async fn binary_mode_puts_attributes_in_headers() {
    let server = TestServer::start().await;
    let http = Http::put(&server.url("/b"))
        .unwrap()
        .content_mode(ContentMode::Binary);
    deliver(http).await.unwrap();
    let req = &server.requests()[0];
    assert_eq!(req.method, "PUT");
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "ord-1"),
        ("ce-source", "/shop"),
        ("ce-type", "order.placed"),
        ("ce-subject", "order/7"),
        ("ce-time", "2024-05-01T10:00:00Z"),
        ("ce-tenant", "acme"),
        ("content-type", "application/json"),
    ] {
        assert_eq!(req.headers[name], value, "{name}");
    }
    assert_eq!(&req.body[..], br#"{"total":42}"#);
}

/// `ce-type` carries any type: printable ASCII as is, `%` and characters outside ASCII
/// percent-encoded (CloudEvents HTTP binding, 3.1.3.2).
#[tokio::test]
async fn binary_mode_percent_encodes_types_outside_printable_ascii() {
    let server = TestServer::start().await;
    for ty in ["com.example/orders:created", "100%.caf\u{e9}+v2@eu~1.#.*"] {
        let http = Http::post(&server.url("/t"))
            .unwrap()
            .content_mode(ContentMode::Binary);
        let s = Signal::builder(ty, "/shop").build().unwrap();
        let report = dispatch(s, http).await.unwrap();
        assert!(report.is_ok(), "{report}");
    }
    let reqs = server.requests();
    assert_eq!(reqs[0].headers["ce-type"], "com.example/orders:created");
    assert_eq!(reqs[1].headers["ce-type"], "100%25.caf%C3%A9+v2@eu~1.#.*");
}

#[tokio::test]
async fn batches_are_one_cloudevents_batch_request() {
    let server = TestServer::start().await;
    let http = Http::patch(&server.url("/batch")).unwrap();
    let signals: Vec<Signal> = (0..3)
        .map(|i| {
            Signal::builder("metric.sample", "/m")
                .id(format!("m{i}"))
                .build()
                .unwrap()
        })
        .collect();
    let report = dispatch_batch(signals.clone(), http).await.unwrap();
    assert!(report.is_ok(), "{report}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "PATCH");
    assert_eq!(
        reqs[0].headers["content-type"],
        "application/cloudevents-batch+json"
    );
    let got: Vec<Signal> = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(got, signals);
}

#[tokio::test]
async fn every_status_class_is_classified() {
    let server = TestServer::start().await;
    let cases: Vec<(Reply, Option<ErrorKind>, Option<Duration>)> = vec![
        (Reply::status(200), None, None),
        (Reply::status(201), None, None),
        (Reply::status(202), None, None),
        (Reply::status(204), None, None),
        (Reply::status(408), Some(ErrorKind::Retryable), None),
        (Reply::status(500), Some(ErrorKind::Retryable), None),
        (Reply::status(502), Some(ErrorKind::Retryable), None),
        (Reply::status(503), Some(ErrorKind::Retryable), None),
        (
            Reply::status(503).header("retry-after", "3"),
            Some(ErrorKind::Throttled),
            Some(Duration::from_secs(3)),
        ),
        (
            Reply::status(429).header("retry-after", "7"),
            Some(ErrorKind::Throttled),
            Some(Duration::from_secs(7)),
        ),
        (Reply::status(429), Some(ErrorKind::Throttled), None),
        (Reply::status(410), Some(ErrorKind::Gone), None),
        (Reply::status(400), Some(ErrorKind::Permanent), None),
        (Reply::status(401), Some(ErrorKind::Permanent), None),
        (Reply::status(404), Some(ErrorKind::Permanent), None),
        (Reply::status(422), Some(ErrorKind::Permanent), None),
        (
            Reply::status(301).header("location", "/elsewhere"),
            Some(ErrorKind::Permanent),
            None,
        ),
        (
            Reply::status(307).header("location", "/elsewhere"),
            Some(ErrorKind::Permanent),
            None,
        ),
    ];
    let http = Arc::new(Http::post(&server.url("/s")).unwrap());
    for (i, (reply, kind, retry_after)) in cases.into_iter().enumerate() {
        let status = reply.status;
        server.reply(reply);
        let report = dispatch(signal(), Target::from_arc(http.clone()))
            .await
            .unwrap();
        let outcome = report.get(0).unwrap();
        match kind {
            None => assert!(outcome.is_ok(), "{status}: {report}"),
            Some(kind) => {
                let e = outcome.error.expect("a failure");
                assert_eq!(e.kind(), kind, "{status}: {e}");
                assert_eq!(e.retry_after(), retry_after, "{status}");
                assert!(
                    matches!(e, DeliveryError::Http { status: s, .. } if *s == status),
                    "{e:?}"
                );
                assert!(e
                    .to_string()
                    .starts_with(&format!("receiver answered HTTP {status}")));
            }
        }
        // Redirects are not followed: exactly one request per delivery.
        assert_eq!(server.count(), i + 1, "{status}");
    }
    assert!(server.requests().iter().all(|r| r.path == "/s"));
}

#[tokio::test]
async fn error_carries_a_bounded_body_excerpt() {
    let server = TestServer::start().await;
    server.reply(Reply::status(500).body(format!("db down\n{}", "x".repeat(10_000))));
    let e = deliver(Http::post(&server.url("/")).unwrap())
        .await
        .unwrap_err();
    let DeliveryError::Http { body, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(body.starts_with("db down x"), "{body}");
    assert!(body.chars().count() <= 257, "{}", body.len());
    assert!(body.ends_with('…'));
}

#[tokio::test]
async fn slow_receivers_time_out() {
    let server = TestServer::start().await;
    server.always(Reply::status(204).delay(Duration::from_secs(3)));
    // The adapter's own request timeout.
    let e = deliver(
        Http::post(&server.url("/"))
            .unwrap()
            .timeout(Duration::from_millis(200)),
    )
    .await
    .unwrap_err();
    assert!(e.is_timeout() && e.is_retryable(), "{e:?}");
    assert_eq!(e.to_string(), "delivery timed out after 200ms");
    // Without one, the target's timeout bounds the delivery.
    let target =
        Target::new(Http::post(&server.url("/")).unwrap()).timeout(Duration::from_millis(300));
    let report = dispatch(signal(), target).await.unwrap();
    let e = report.get(0).unwrap().error.unwrap();
    assert_eq!(e.to_string(), "delivery timed out after 300ms");
}

/// The error of the only outcome of a bus publish.
async fn publish_to(target: Target) -> Result<(), DeliveryError> {
    let bus = Bus::builder().build().unwrap();
    bus.subscribe("order.*", target).unwrap();
    let report = bus.publish(signal()).await.unwrap();
    match report.get(0).unwrap().error {
        None => Ok(()),
        Some(e) => Err(e.clone()),
    }
}

#[tokio::test(start_paused = true)]
async fn a_target_without_a_timeout_takes_the_adapters_longer_one() {
    let server = TestServer::start().await;
    server.always(Reply::status(204).delay(Duration::from_secs(7)));
    // Http and Webhook with a 10 s timeout: the target's 5 s default no longer caps it.
    let http = Http::post(&server.url("/"))
        .unwrap()
        .timeout(Duration::from_secs(10));
    let target = Target::new(http);
    assert_eq!(target.get_timeout(), Duration::from_secs(10));
    let started = tokio::time::Instant::now();
    publish_to(target).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(7));
    let webhook = Webhook::new(&server.url("/"))
        .unwrap()
        .allow_private_networks(true)
        .timeout(Duration::from_secs(10));
    publish_to(Target::new(webhook)).await.unwrap();
    assert_eq!(server.count(), 2);
    // A shorter adapter timeout leaves the default alone, and still bounds each request.
    let short = Http::post(&server.url("/"))
        .unwrap()
        .timeout(Duration::from_secs(2));
    assert_eq!(Target::new(short).get_timeout(), Duration::from_secs(5));
    // The adapter's timeout still applies inside a longer explicit target timeout.
    server.always(Reply::status(204).delay(Duration::from_secs(12)));
    let http = Http::post(&server.url("/"))
        .unwrap()
        .timeout(Duration::from_secs(10));
    let e = publish_to(Target::new(http).timeout(Duration::from_secs(15)))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "delivery timed out after 10s");
}

#[tokio::test]
async fn a_target_timeout_shorter_than_the_adapters_is_refused_naming_both() {
    let bus = Bus::builder().build().unwrap();
    let http = Http::post("http://127.0.0.1:9/")
        .unwrap()
        .timeout(Duration::from_secs(10));
    let e = bus
        .subscribe("order.*", Target::new(http).timeout(Duration::from_secs(5)))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "target `http` is invalid: invalid timeout `5s`: is shorter than the adapter's own \
         timeout 10s and would cut its requests short: give the target at least 10s, or the \
         adapter less"
    );
    // Equal is fine.
    let http = Http::post("http://127.0.0.1:9/")
        .unwrap()
        .timeout(Duration::from_secs(10));
    bus.subscribe(
        "order.*",
        Target::new(http).timeout(Duration::from_secs(10)),
    )
    .unwrap();
    // A forwarder's job timeout composes the same way.
    let webhook = Webhook::new("https://example.com/")
        .unwrap()
        .timeout(Duration::from_secs(45));
    let fwd = Forwarder::new("slow", webhook).job_timeout(Duration::from_secs(40));
    assert_eq!(
        fwd.validate().unwrap_err().to_string(),
        "invalid job_timeout `40s`: is shorter than the adapter's own timeout 45s and would cut \
         its requests short: give the job at least 45s, or the adapter less"
    );
}

#[tokio::test]
async fn refused_and_dropped_connections_are_retryable() {
    let refused = refused_addr().await;
    let e = deliver(Http::post(&format!("http://{refused}/x?token=secret")).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Retryable, "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("cannot connect to http://{refused}/x?…")),
        "{msg}"
    );
    assert!(!msg.contains("secret"), "query leaked: {msg}");

    let (addr, accepted) = dropping_server().await;
    let e = deliver(Http::post(&format!("http://{addr}/")).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Retryable, "{e}");
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn bad_configuration_is_refused_with_clear_messages() {
    let e = Http::post("ftp://x.example/").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid url `ftp://x.example/`: has scheme `ftp`: only http and https are allowed"
    );
    let e = Http::new(http::Method::GET, "https://x.example/").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid method `GET`: must be POST, PUT or PATCH"
    );

    let bus = Bus::builder().build().unwrap();
    let http = Http::post("https://x.example/")
        .unwrap()
        .header("x-ok", "fine")
        .header("x-bad", "a\r\nInjected: yes")
        .header("bad name", "v")
        .header("Content-Length", "5")
        .timeout(Duration::from_secs(61));
    let e = bus.subscribe("a.*", http).unwrap_err().to_string();
    for part in [
        "target `http` is invalid:",
        "invalid header `x-bad`: has a value with CR, LF or other control characters",
        "invalid header `bad name`: is not a valid header name",
        "invalid header `content-length`: is set by the HTTP client and cannot be given",
        "invalid timeout `61s`: must be between 1ns and 60s",
    ] {
        assert!(e.contains(part), "missing {part:?} in {e}");
    }
    let e = Http::post("https://x.example/")
        .unwrap()
        .header("x-api-key", "v\n")
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("(value redacted)"), "{e}");
}

#[tokio::test]
async fn credentials_never_show_in_debug() {
    let http = Http::post("https://x.example/hook?sig=abc123")
        .unwrap()
        .bearer_auth("sup3r-s3cret")
        .header("x-api-key", "k3y-v4lue");
    let debug = format!("{http:?}");
    for secret in ["sup3r-s3cret", "k3y-v4lue", "abc123"] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
    assert!(debug.contains("authorization") && debug.contains("x-api-key"));
}

#[tokio::test]
async fn health_check_connects_and_measures() {
    let server = TestServer::start().await;
    let health = Http::post(&server.url("/")).unwrap().health_check().await;
    assert!(health.is_healthy(), "{health:?}");
    assert!(health.latency.is_some());
    let refused = refused_addr().await;
    let health = Http::post(&format!("http://{refused}/"))
        .unwrap()
        .health_check()
        .await;
    assert!(!health.is_healthy());
    assert!(health
        .message
        .unwrap()
        .starts_with(&format!("cannot connect to http://{refused}/")));
    assert_eq!(server.count(), 0, "a health check sends no request");
}

#[tokio::test]
async fn publish_through_the_bus() {
    let server = TestServer::start().await;
    let bus = Bus::builder().build().unwrap();
    bus.subscribe("order.**", Http::post(&server.url("/orders")).unwrap())
        .unwrap();
    server.reply(Reply::status(500));
    let report = bus.publish(signal()).await.unwrap();
    assert_eq!(report.failed(), 1);
    let report = bus.publish(signal()).await.unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(server.count(), 2);
}
