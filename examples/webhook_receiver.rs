//! A webhook receiver that verifies Standard Webhooks signatures with the library's own
//! verifier and prints what it got.
//!
//! ```text
//! cargo run --example webhook_receiver                 # listen on 127.0.0.1:3000
//! cargo run --example webhook_receiver -- --port 8080
//! cargo run --example webhook_receiver -- --send 5     # also send 5 signed signals to itself, then exit
//! ```
//! Secret: `SIGNAL_BUS_WEBHOOK_SECRET` (default: the Standard Webhooks example secret).

#[path = "shared/receiver.rs"]
mod receiver;

use std::net::SocketAddr;

use signal_bus::{
    http::{signing::StandardWebhooks, Webhook},
    Bus, Signal,
};

const EXAMPLE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

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
    let (local, received, serve) = receiver::start(addr, &secret, true).await?;
    println!("listening on http://{local}/ (verifying Standard Webhooks signatures)");

    if send == 0 {
        return Ok(serve.await?);
    }
    let server = tokio::spawn(serve);
    // Send to ourselves: one correctly signed stream, and one forged request.
    let bus = Bus::builder().name("sender").build()?;
    let hook = Webhook::new(&format!("http://{local}/hook"))?
        .allow_private_networks(true)
        .signing(StandardWebhooks::new(&secret)?);
    bus.subscribe("**", hook)?;
    for i in 0..send {
        let signal = Signal::builder("invoice.paid", "/billing")
            .subject(format!("invoice/{i}"))
            .data(serde_json::json!({"amount_cents": 1000 + i}))
            .build()?;
        let report = bus.publish(signal).await?;
        assert!(report.is_ok(), "{report}");
    }
    // reqwest is built without a bundled crypto provider and the library installs none
    // process-wide: give this client one (plain HTTP here, so no roots are needed).
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let forged = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()?
        .post(format!("http://{local}/hook"))
        .header("webhook-id", "msg_forged")
        .header(
            "webhook-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header("webhook-signature", "v1,Zm9yZ2Vk")
        .body("{}")
        .send()
        .await?;
    println!("forged request answered {}", forged.status());
    let r = received.lock().unwrap();
    println!("verified {}, rejected {}", r.verified, r.rejected.len());
    assert_eq!(r.verified, send);
    assert_eq!(r.rejected.len(), 1);
    server.abort();
    Ok(())
}
