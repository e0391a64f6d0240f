//! The shortest tour: build a bus, subscribe a channel and a handler, publish, read.
//!
//! `cargo run --example quickstart`

use std::sync::Arc;

use serde_json::json;
use signal_bus::{
    adapter::{Channel, Handler, Logger},
    Bus, Signal, Target,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_target(false).init();

    let bus = Bus::builder().name("app").build()?;

    // A task that consumes every user.* signal from a channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<Signal>>(1024);
    bus.subscribe("user.*", Channel::new(tx))?;

    // Code that runs for each user.created signal.
    bus.subscribe(
        "user.created",
        Handler::new(|signal: Arc<Signal>| async move {
            println!("welcome e-mail for {}", signal.subject().unwrap_or("?"));
            Ok(())
        }),
    )?;

    // Everything under audit, logged.
    bus.subscribe(
        "audit.**",
        Target::new(Logger::info().format("audit: $type by $subject")),
    )?;

    let signal = Signal::builder("user.created", "/services/accounts")
        .subject("user/42")
        .data(json!({"id": 42, "email": "ada@example.com"}))
        .build()?;
    let report = bus.publish(signal).await?;
    println!("user.created: {report}");

    let report = bus
        .publish(
            Signal::builder("audit.login.succeeded", "/auth")
                .subject("user/42")
                .build()?,
        )
        .await?;
    println!("audit.login.succeeded: {report}");

    let got = rx.recv().await.expect("the channel subscriber got it");
    println!(
        "channel got {} ({})",
        got.ty(),
        serde_json::to_string(&*got)?
    );
    Ok(())
}
