//! A webhook receiver built on the `axum` feature's extractors: `/hook` takes signed
//! webhooks only (`VerifiedCloudEvents`: Standard Webhooks signature checked on the raw body,
//! then the CloudEvents read in any mode), `/events` takes unsigned CloudEvents
//! (`CloudEvents`). It prints what it got.
//!
//! ```text
//! cargo run --features axum --example webhook_receiver                 # listen on 127.0.0.1:3000
//! cargo run --features axum --example webhook_receiver -- --port 8080
//! cargo run --features axum --example webhook_receiver -- --send 5     # also send 5 signed signals to itself, then exit
//! ```
//! Secret: `SIGNAL_BUS_WEBHOOK_SECRET` (default: the Standard Webhooks example secret).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{extract::State, http::HeaderMap, http::StatusCode, routing::post, Router};
use signal_bus::{
    adapter::Adapter,
    http::{
        axum::{CloudEvents, CloudEventsRejection, VerifiedCloudEvents, Verifier},
        signing::StandardWebhooks,
        ContentMode, Http, Webhook,
    },
    Bus, DeliveryError, Signal,
};

const EXAMPLE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the receiver has seen.
#[derive(Debug, Default)]
struct Received {
    verified: usize,
    unsigned: usize,
    rejected: Vec<String>,
}

#[derive(Clone)]
struct AppState {
    verifier: Verifier,
    received: Arc<Mutex<Received>>,
}

// `VerifiedCloudEvents` finds its verifier in the router's state.
impl axum::extract::FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.verifier.clone()
    }
}

fn show(signal: &Signal, how: &str, headers: &HeaderMap) {
    println!(
        "{how} {} {} from {} (webhook-id {})",
        signal.ty(),
        signal.subject().unwrap_or("-"),
        signal.source(),
        headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    );
}

/// Signed webhooks. Taking the `Result` lets the handler see (and count) what was refused;
/// taking `VerifiedCloudEvents` alone answers the rejection (401 or 400) by itself.
async fn hook(
    State(state): State<AppState>,
    headers: HeaderMap,
    signals: Result<VerifiedCloudEvents, CloudEventsRejection>,
) -> (StatusCode, String) {
    match signals {
        Ok(VerifiedCloudEvents(signals)) => {
            for signal in &signals {
                show(signal, "verified", &headers);
            }
            state.received.lock().unwrap().verified += signals.len();
            (StatusCode::NO_CONTENT, String::new())
        }
        Err(rejection) => {
            println!("rejected: {rejection}");
            let answer = (rejection.status(), rejection.to_string());
            state
                .received
                .lock()
                .unwrap()
                .rejected
                .push(answer.1.clone());
            answer
        }
    }
}

/// Unsigned CloudEvents, in any mode: a bad request is answered 400 with the reader's message.
async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    CloudEvents(signals): CloudEvents,
) -> StatusCode {
    for signal in &signals {
        show(signal, "read", &headers);
    }
    state.received.lock().unwrap().unsigned += signals.len();
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 3000u16;
    let mut send = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = value.parse().map_err(|_| format!("bad port `{value}`"))?,
            "--send" => send = value.parse().map_err(|_| format!("bad count `{value}`"))?,
            _ => return Err(format!("unknown flag {flag}: use --port or --send").into()),
        }
    }
    let secret =
        std::env::var("SIGNAL_BUS_WEBHOOK_SECRET").unwrap_or_else(|_| EXAMPLE_SECRET.to_owned());
    let addr: SocketAddr = ([127, 0, 0, 1], if send > 0 { 0 } else { port }).into();

    let received = Arc::new(Mutex::new(Received::default()));
    let state = AppState {
        verifier: Verifier::new(StandardWebhooks::new(&secret)?),
        received: Arc::clone(&received),
    };
    let app = Router::new()
        .route("/hook", post(hook))
        .route("/events", post(events))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    println!(
        "listening on http://{local}/hook (Standard Webhooks signatures verified) and /events"
    );
    let serve = async move { axum::serve(listener, app).await };

    if send == 0 {
        return Ok(serve.await?);
    }
    let server = tokio::spawn(serve);
    // Send to ourselves: signed signals in both content modes, unsigned
    // CloudEvents, and one forged request.
    let bus = Bus::builder().name("sender").build()?;
    for mode in [ContentMode::Structured, ContentMode::Binary] {
        let hook = Webhook::new(&format!("http://{local}/hook"))?
            .allow_private_networks(true)
            .content_mode(mode)
            .signing(StandardWebhooks::new(&secret)?);
        let pattern = match mode {
            ContentMode::Structured => "invoice.paid",
            _ => "invoice.refunded",
        };
        bus.subscribe(pattern, hook)?;
    }
    bus.subscribe(
        "invoice.viewed",
        Http::post(&format!("http://{local}/events"))?.content_mode(ContentMode::Binary),
    )?;
    for i in 0..send {
        let ty = if i % 2 == 0 {
            "invoice.paid"
        } else {
            "invoice.refunded"
        };
        let signal = Signal::builder(ty, "/billing")
            .subject(format!("invoice/{i}"))
            .data(serde_json::json!({"amount_cents": 1000 + i}))
            .build()?;
        let report = bus.publish(signal).await?;
        assert!(report.is_ok(), "{report}");
    }
    let viewed = Signal::builder("invoice.viewed", "/portal")
        .subject("invoice/0")
        .build()?;
    let report = bus.publish(viewed).await?;
    assert!(report.is_ok(), "{report}");

    // A forged signature: refused with 401 before the body is read as CloudEvents.
    let forged = Http::post(&format!("http://{local}/hook"))?
        .header("webhook-id", "msg_forged")
        .header(
            "webhook-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header("webhook-signature", "v1,Zm9yZ2Vk");
    let probe = Signal::builder("invoice.paid", "/forger").build()?;
    match forged.deliver(&probe).await {
        Err(DeliveryError::Http { status, body, .. }) => {
            println!("forged request answered {status}: {body}");
            assert_eq!(status, 401);
        }
        other => panic!("the forged request was answered {other:?}"),
    }

    let r = received.lock().unwrap();
    println!(
        "verified {}, read unsigned {}, rejected {}",
        r.verified,
        r.unsigned,
        r.rejected.len()
    );
    assert_eq!(r.verified, send);
    assert_eq!(r.unsigned, 1);
    assert_eq!(r.rejected.len(), 1);
    server.abort();
    Ok(())
}
