//! A small webhook receiver that verifies Standard Webhooks signatures with the library's
//! own verifier, then reads the CloudEvents with `http::read_signals`, by hand (the `demo`
//! example's; `webhook_receiver` does the same with the `axum` feature's extractors).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    Router,
};
use signal_bus::http::{read_signals, signing::StandardWebhooks};

/// What the receiver has seen.
#[derive(Debug, Default)]
pub struct Received {
    pub verified: usize,
    pub rejected: Vec<String>,
    pub per_type: BTreeMap<String, usize>,
}

struct Shared {
    verifier: StandardWebhooks,
    received: Arc<Mutex<Received>>,
    verbose: bool,
}

/// Binds the receiver on `addr` (port 0 for any). Returns where it listens, what it has
/// received, and the server future to spawn.
pub async fn start(
    addr: SocketAddr,
    secret: &str,
    verbose: bool,
) -> std::io::Result<(
    SocketAddr,
    Arc<Mutex<Received>>,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let received = Arc::new(Mutex::new(Received::default()));
    let shared = Arc::new(Shared {
        verifier: StandardWebhooks::new(secret).map_err(std::io::Error::other)?,
        received: Arc::clone(&received),
        verbose,
    });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new().fallback(receive).with_state(shared);
    Ok((
        local,
        received,
        async move { axum::serve(listener, app).await },
    ))
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    // Verify first, on the exact bytes received; parse only what verified.
    if let Err(e) = shared.verifier.verify(&headers, &body) {
        if shared.verbose {
            println!("rejected: {e}");
        }
        shared.received.lock().unwrap().rejected.push(e.to_string());
        return StatusCode::UNAUTHORIZED;
    }
    let signals = match read_signals(&headers, &body) {
        Ok(signals) => signals,
        Err(e) => {
            shared.received.lock().unwrap().rejected.push(e.to_string());
            return StatusCode::BAD_REQUEST;
        }
    };
    let mut r = shared.received.lock().unwrap();
    for signal in &signals {
        if shared.verbose {
            println!(
                "verified {} {} from {} (webhook-id {})",
                signal.ty(),
                signal.subject().unwrap_or("-"),
                signal.source(),
                headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
            );
        }
        r.verified += 1;
        *r.per_type.entry(signal.ty().to_owned()).or_default() += 1;
    }
    StatusCode::NO_CONTENT
}
