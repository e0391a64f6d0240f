#![cfg(feature = "axum")]
//! The axum extractors on a real server: `CloudEvents` reads what the bus sends in every
//! mode and answers 400 with the reader's message otherwise; `VerifiedCloudEvents` checks
//! the signature on the raw body first (401, nothing parsed) with the verifier of the
//! router's state (a `Verifier` as the state, or one found through `FromRef`, of a scheme
//! the crate has or one the application implements).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{DefaultBodyLimit, FromRef, State},
    routing::post,
    Router,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use signal_bus::{
    dispatch, dispatch_batch,
    http::{
        axum::{CloudEvents, VerifiedCloudEvents, Verifier},
        signing::{SignInput, SigningScheme, StandardWebhooks, VerifyError},
        ContentMode, Http, Webhook, MAX_BODY_LEN,
    },
    Signal,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Clone)]
struct AppState {
    verifier: Verifier,
    seen: Arc<Mutex<Vec<Signal>>>,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.verifier.clone()
    }
}

async fn open(State(state): State<AppState>, CloudEvents(signals): CloudEvents) -> String {
    let n = signals.len();
    state.seen.lock().unwrap().extend(signals);
    format!("read {n}")
}

async fn signed(
    State(state): State<AppState>,
    VerifiedCloudEvents(signals): VerifiedCloudEvents,
) -> String {
    let n = signals.len();
    state.seen.lock().unwrap().extend(signals);
    format!("verified {n}")
}

/// A handler on a router whose whole state is the verifier.
async fn plain(VerifiedCloudEvents(signals): VerifiedCloudEvents) -> String {
    signals.iter().map(Signal::id).collect::<Vec<_>>().join(",")
}

/// A scheme of the application's own: a shared token in `x-token`.
#[derive(Debug)]
struct Token;

impl SigningScheme for Token {
    fn name(&self) -> &'static str {
        "token"
    }
    fn sign_headers(&self, _: &SignInput<'_>) -> Vec<(HeaderName, HeaderValue)> {
        vec![(
            HeaderName::from_static("x-token"),
            HeaderValue::from_static("open sesame"),
        )]
    }
    fn header_names(&self) -> Vec<HeaderName> {
        vec![HeaderName::from_static("x-token")]
    }
    fn verify(&self, headers: &HeaderMap, _: &[u8]) -> Result<(), VerifyError> {
        match headers.get("x-token") {
            Some(v) if v == "open sesame" => Ok(()),
            Some(_) => Err(VerifyError::NoMatchingSignature {
                name: "x-token".to_owned(),
            }),
            None => Err(VerifyError::MissingHeader { name: "x-token" }),
        }
    }
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Signal>>>,
}

async fn start() -> Server {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = AppState {
        verifier: Verifier::new(StandardWebhooks::new(SECRET).unwrap()),
        seen: Arc::clone(&seen),
    };
    let token = AppState {
        verifier: Verifier::new(Token),
        seen: Arc::clone(&seen),
    };
    let app = Router::new()
        .route("/events", post(open))
        .route("/hook", post(signed))
        .with_state(state.clone())
        .merge(
            Router::new()
                .route("/token", post(signed))
                .with_state(token),
        )
        .merge(
            Router::new()
                .route("/plain", post(plain))
                .with_state(Verifier::new(StandardWebhooks::new(SECRET).unwrap())),
        )
        .merge(
            Router::new()
                .route("/big", post(open))
                .layer(DefaultBodyLimit::max(MAX_BODY_LEN + 1024))
                .with_state(state),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { addr, seen }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn take(&self) -> Vec<Signal> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// POSTs by hand (HTTP/1.1, one request per connection): the status and the body.
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
            self.addr,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        // A server refusing early may close before reading everything: that is its answer.
        let _ = stream.write_all(body).await;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response);
        let status = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (status, body)
    }
}

fn signals() -> Vec<Signal> {
    vec![
        Signal::builder("order.placed", "/shop")
            .id("1")
            .time_str("2024-05-01T10:00:00Z")
            .data(json!({"total": 42}))
            .extension("tenant", "acme")
            .build()
            .unwrap(),
        Signal::builder("order.shipped", "/shop")
            .id("2")
            .time_str("2024-05-01T10:00:01Z")
            .datacontenttype("text/plain; charset=utf-8")
            .data(json!("on its way"))
            .build()
            .unwrap(),
    ]
}

#[tokio::test]
async fn cloudevents_reads_every_mode_the_bus_sends() {
    let server = start().await;
    for mode in [ContentMode::Structured, ContentMode::Binary] {
        for signal in signals() {
            let http = Http::post(&server.url("/events"))
                .unwrap()
                .content_mode(mode);
            let report = dispatch(signal.clone(), http).await.unwrap();
            assert!(report.is_ok(), "{mode:?}: {report}");
            assert_eq!(server.take(), [signal], "{mode:?}");
        }
    }
    let report = dispatch_batch(signals(), Http::post(&server.url("/events")).unwrap())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(server.take(), signals());
}

#[tokio::test]
async fn cloudevents_answers_400_with_the_readers_message() {
    let server = start().await;
    let (status, body) = server
        .post(
            "/events",
            &[("content-type", "application/cloudevents+json")],
            br#"{"specversion":"1.0","id":"1","type":"a"}"#,
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body.starts_with("body is not a valid signal: `source` is required"),
        "{body}"
    );
    let (status, body) = server
        .post("/events", &[("content-type", "application/json")], b"{}")
        .await;
    assert_eq!(status, 400);
    assert!(body.starts_with("not a CloudEvents request"), "{body}");
    assert!(server.take().is_empty());
}

#[tokio::test]
async fn bodies_past_the_readers_limit_are_413() {
    let server = start().await;
    let body = vec![b' '; MAX_BODY_LEN + 1];
    let (status, text) = server
        .post(
            "/big",
            &[("content-type", "application/cloudevents+json")],
            &body,
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(
        text,
        format!(
            "body is {} bytes, more than the limit of {MAX_BODY_LEN}",
            MAX_BODY_LEN + 1
        )
    );
}

#[tokio::test]
async fn verified_cloudevents_reads_what_verifies() {
    let server = start().await;
    // Signed by the bus, in every mode: through.
    for mode in [ContentMode::Structured, ContentMode::Binary] {
        let hook = Webhook::new(&server.url("/hook"))
            .unwrap()
            .allow_private_networks(true)
            .content_mode(mode)
            .signing(StandardWebhooks::new(SECRET).unwrap());
        let report = dispatch(signals()[0].clone(), hook).await.unwrap();
        assert!(report.is_ok(), "{mode:?}: {report}");
        assert_eq!(server.take(), [signals()[0].clone()]);
    }
    let hook = Webhook::new(&server.url("/hook"))
        .unwrap()
        .allow_private_networks(true)
        .signing(StandardWebhooks::new(SECRET).unwrap());
    assert!(dispatch_batch(signals(), hook).await.unwrap().is_ok());
    assert_eq!(server.take(), signals());

    // The verifier as the router's whole state.
    let hook = Webhook::new(&server.url("/plain"))
        .unwrap()
        .allow_private_networks(true)
        .signing(StandardWebhooks::new(SECRET).unwrap());
    assert!(dispatch_batch(signals(), hook).await.unwrap().is_ok());

    // A scheme the application implements.
    let hook = Webhook::new(&server.url("/token"))
        .unwrap()
        .allow_private_networks(true)
        .signing(Token);
    assert!(dispatch(signals()[1].clone(), hook).await.unwrap().is_ok());
    assert_eq!(server.take(), [signals()[1].clone()]);
    let (status, body) = server
        .post(
            "/token",
            &[
                ("x-token", "guess"),
                ("content-type", "application/cloudevents+json"),
            ],
            &signals()[1].to_json_vec(),
        )
        .await;
    assert_eq!(
        (status, body.as_str()),
        (
            401,
            "signature does not verify: no signature in header `x-token` matches"
        )
    );
}

#[tokio::test]
async fn verified_cloudevents_refuses_before_parsing() {
    let server = start().await;
    let scheme = StandardWebhooks::new(SECRET).unwrap();
    let now = chrono::Utc::now().timestamp();
    let now_text = now.to_string();
    let body = signals()[0].to_json_vec();
    let good = scheme.sign("msg_1", now, &body);
    let ct = ("content-type", "application/cloudevents+json");

    // No signature headers at all: 401 naming both header sets.
    let (status, text) = server.post("/hook", &[ct], &body).await;
    assert_eq!(status, 401);
    assert!(
        text.starts_with(
            "signature does not verify: no signature headers: looked for `webhook-id`"
        ),
        "{text}"
    );
    // A forged signature on a body that is not even JSON: 401, not 400 (not parsed).
    let forged = [
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", now_text.as_str()),
        (
            "webhook-signature",
            "v1,Zm9yZ2VkIHNpZ25hdHVyZSBmb3JnZWQgc2lnbmF0dXJl",
        ),
        ct,
    ];
    let (status, text) = server.post("/hook", &forged, b"{not json").await;
    assert_eq!(status, 401, "{text}");
    assert_eq!(
        text,
        "signature does not verify: no signature in header `webhook-signature` matches"
    );
    // The right signature on another body: 401.
    let tampered = [
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", now_text.as_str()),
        ("webhook-signature", good.as_str()),
        ct,
    ];
    let (status, _) = server
        .post("/hook", &tampered, &signals()[1].to_json_vec())
        .await;
    assert_eq!(status, 401);
    // Svix's header names: through.
    let svix = [
        ("svix-id", "msg_1"),
        ("svix-timestamp", now_text.as_str()),
        ("svix-signature", good.as_str()),
        ct,
    ];
    let (status, text) = server.post("/hook", &svix, &body).await;
    assert_eq!((status, text.as_str()), (200, "verified 1"));
    assert_eq!(server.take(), [signals()[0].clone()]);
    // Signed, but not a signal: 400 with the reader's message.
    let bad = br#"{"specversion":"1.0","id":"1","source":"/s"}"#;
    let sig = scheme.sign("msg_2", now, bad);
    let headers = [
        ("webhook-id", "msg_2"),
        ("webhook-timestamp", now_text.as_str()),
        ("webhook-signature", sig.as_str()),
        ct,
    ];
    let (status, text) = server.post("/hook", &headers, bad).await;
    assert_eq!(status, 400);
    assert!(
        text.starts_with("body is not a valid signal: `type` is required"),
        "{text}"
    );
    assert!(server.take().is_empty());
}
