//! Errors keep their cause and read well: the `source()` chain of real failures reaches the
//! underlying reqwest, sqlx, io or serde_json error and shows no secret; messages a newcomer
//! meets name the value and the rule, and count things in the right number.

#[cfg(any(feature = "http", feature = "sqlite", feature = "nats"))]
use std::error::Error as StdError;

use async_trait::async_trait;
use signal_bus::{
    adapter::{Named, Noop},
    dispatch, Adapter, Bus, DeliveryError, EndpointError, Signal, Target,
};

/// `e` and every error under it, outermost first.
#[cfg(any(feature = "http", feature = "sqlite", feature = "nats"))]
#[allow(dead_code)] // not every feature set walks chains
fn chain<'a>(e: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut all = vec![e];
    let mut last = e;
    while let Some(next) = last.source() {
        all.push(next);
        last = next;
    }
    all
}

#[cfg(any(feature = "http", feature = "sqlite", feature = "nats"))]
#[allow(dead_code)] // not every feature set checks secrets
fn assert_no_secret(e: &(dyn StdError + 'static), secret: &str) {
    for (i, link) in chain(e).into_iter().enumerate() {
        let shown = format!("{link} / {link:?}");
        assert!(
            !shown.contains(secret),
            "link {i} of the chain shows the secret: {shown}"
        );
    }
}

fn signal() -> Signal {
    Signal::builder("order.placed", "/shop")
        .id("e1")
        .build()
        .unwrap()
}

/// A loopback port nothing listens on.
#[cfg(feature = "http")]
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[cfg(feature = "http")]
#[tokio::test]
async fn a_refused_connection_keeps_reqwest_and_io_errors_without_the_url() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/hook?token=s3cret-token");
    let report = dispatch(signal(), signal_bus::http::Http::post(&url).unwrap())
        .await
        .unwrap();
    let e = report.get(0).unwrap().error.expect("nothing listens there");
    assert!(
        matches!(e, DeliveryError::Transport { .. }),
        "a transport failure: {e:?}"
    );
    assert!(e.is_retryable(), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot connect to http://127.0.0.1:{port}/hook?…: {}",
            chain(e).last().unwrap()
        )
    );
    let links = chain(e);
    let reqwest_error = links
        .iter()
        .find_map(|l| l.downcast_ref::<reqwest::Error>())
        .unwrap_or_else(|| panic!("no reqwest::Error in {links:?}"));
    assert!(reqwest_error.is_connect(), "{reqwest_error:?}");
    assert_eq!(
        reqwest_error.url(),
        None,
        "the URL is stripped from the cause"
    );
    let io = links
        .iter()
        .find_map(|l| l.downcast_ref::<std::io::Error>())
        .unwrap_or_else(|| panic!("no io::Error in {links:?}"));
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_no_secret(e, "s3cret");
    // The report's own Display and Debug too.
    assert!(
        !format!("{report} {report:?}").contains("s3cret"),
        "{report:?}"
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_sqlite_file_in_a_missing_directory_keeps_the_sqlx_error() {
    let dir = std::env::temp_dir().join(format!("signal-bus-errors-{}", std::process::id()));
    let path = dir.join("no-such-dir").join("queue.db");
    let e = signal_bus::queue::SqliteStore::open(&path)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            signal_bus::queue::QueueError::Store {
                backend: "sqlite",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    let links = chain(&e);
    assert!(
        links[1].downcast_ref::<sqlx::Error>().is_some(),
        "the first cause is sqlx's own error: {links:?}"
    );
    assert!(!path.exists());
}

#[cfg(feature = "http")]
#[test]
fn bad_json_keeps_the_serde_json_error() {
    use signal_bus::http::{read_signals, ReadError, STRUCTURED_CONTENT_TYPE};

    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(STRUCTURED_CONTENT_TYPE),
    );
    let e = read_signals(&headers, b"{\"specversion\": \"1.0\",\n \"id\": ").unwrap_err();
    assert!(matches!(e, ReadError::Structured { .. }), "{e:?}");
    let json = e
        .source()
        .and_then(|s| s.downcast_ref::<serde_json::Error>())
        .unwrap_or_else(|| panic!("the cause is serde_json's error: {e:?}"));
    assert_eq!(
        (json.line(), json.classify()),
        (2, serde_json::error::Category::Eof)
    );
    assert_eq!(e.to_string(), format!("body is not a valid signal: {json}"));

    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(signal_bus::http::BATCH_CONTENT_TYPE),
    );
    let e = read_signals(&headers, b"[{\"specversion\": \"1.0\"}]").unwrap_err();
    assert!(
        matches!(e, ReadError::BatchElement { index: 0, .. }),
        "{e:?}"
    );
    assert!(e
        .source()
        .unwrap()
        .downcast_ref::<serde_json::Error>()
        .is_some());
}

#[tokio::test]
async fn counts_are_in_the_right_number() {
    let report = dispatch(signal(), Noop).await.unwrap();
    assert_eq!(report.to_string(), "1 target: 1 delivered, 0 failed");
    let report = dispatch(signal(), vec![Target::new(Noop), Target::new(Noop)])
        .await
        .unwrap();
    assert_eq!(report.to_string(), "2 targets: 2 delivered, 0 failed");

    let e = DeliveryError::Endpoints {
        total: 1,
        failures: vec![EndpointError::new(
            "https://a.example/x",
            DeliveryError::permanent("refused"),
        )],
    };
    assert_eq!(
        e.to_string(),
        "1 of 1 endpoint failed: https://a.example/x: refused"
    );
}

struct Nameless;

#[async_trait]
impl Adapter for Nameless {
    fn name(&self) -> &str {
        ""
    }

    async fn deliver(&self, _: &Signal) -> Result<(), DeliveryError> {
        Ok(())
    }
}

#[test]
fn empty_names_say_which_option_they_came_from() {
    let bus = Bus::builder().build().unwrap();
    let e = bus
        .subscribe("a.*", Target::new(Noop).label(""))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "a target with an empty name is invalid: invalid label ``: must not be empty (set \
         with Target::label)"
    );
    let e = bus.subscribe("a.*", Nameless).unwrap_err();
    assert_eq!(
        e.to_string(),
        "a target with an empty name is invalid: invalid adapter name ``: must not be empty: \
         return a name from the adapter's name(), or give the target one with Target::label"
    );
    let e = bus.subscribe("a.*", Named::new("")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "target `named` is invalid: invalid receiver name ``: it must not be empty"
    );
    let e = bus
        .register("", tokio::sync::mpsc::channel(1).0)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "receiver name `` is invalid: it must not be empty"
    );
    let e = Bus::builder().name("").build().unwrap_err();
    assert_eq!(e.to_string(), "invalid bus name ``: it must not be empty");
}

#[cfg(feature = "http")]
#[test]
fn a_url_without_a_scheme_and_a_guarded_localhost_are_refused_at_construction() {
    let e = signal_bus::http::Webhook::new("localhost:8080/events").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid url `localhost:8080/events`: has no scheme: write it as \
         `http://localhost:8080/events` or `https://localhost:8080/events`"
    );
    let e = signal_bus::http::Http::post("localhost:8080/events").unwrap_err();
    assert!(e.to_string().contains("has no scheme"), "{e}");

    let bus = Bus::builder().build().unwrap();
    for (url, rule) in [
        (
            "http://localhost:8080/events",
            "names `localhost`, a loopback name (RFC 6761)",
        ),
        (
            "http://127.0.0.1:8080/events",
            "points to 127.0.0.1, a loopback address",
        ),
        (
            "http://[::1]:8080/events",
            "points to ::1, a loopback address",
        ),
    ] {
        let e = bus
            .subscribe("a.*", signal_bus::http::Webhook::new(url).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "target `webhook` is invalid: invalid url `{url}`: "
            )),
            "{e}"
        );
        assert!(e.contains(rule), "{e}");
        assert!(e.contains("allow_private_networks(true)"), "{e}");
    }
    assert!(bus.is_empty());
    // Allowed on request.
    bus.subscribe(
        "a.*",
        signal_bus::http::Webhook::new("http://localhost:8080/events")
            .unwrap()
            .allow_private_networks(true),
    )
    .unwrap();
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn a_missing_jetstream_stream_keeps_the_async_nats_error() {
    use signal_bus::cluster::{async_nats, ClusterError, NatsBridge};

    let url =
        std::env::var("SIGNAL_BUS_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let client = async_nats::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("NATS must be reachable at {url}: {e}"));
    let bus = Bus::builder().build().unwrap();
    let stream = format!("NO_SUCH_STREAM_{}", std::process::id());
    let e = NatsBridge::builder(client, &bus)
        .pattern("a.*")
        .durable(&stream, "c")
        .create_stream(false)
        .start()
        .await
        .expect_err("the stream does not exist");
    assert!(matches!(e, ClusterError::Stream { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("JetStream stream `{stream}`: ")),
        "{e}"
    );
    let cause = e.source().expect("the client's error is kept");
    assert!(
        cause
            .downcast_ref::<async_nats::jetstream::context::GetStreamError>()
            .is_some(),
        "{cause:?}"
    );
}
