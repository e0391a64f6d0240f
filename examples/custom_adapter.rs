//! A custom adapter: implement `Adapter` (a name, a pure `validate`, an async `deliver`) and
//! subscribe it like any built-in one.
//!
//! `cargo run --example custom_adapter`

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use signal_bus::{Adapter, Bus, ConfigError, DeliveryError, Signal};

/// Posts alerts to a chat channel (here: prints them, and fails for `alerts.broken.*`).
struct Slack {
    channel: String,
    sent: AtomicUsize,
}

#[signal_bus::async_trait]
impl Adapter for Slack {
    fn name(&self) -> &str {
        "slack"
    }

    // Pure checks only: no network here. `subscribe` calls this and refuses bad targets.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.channel.starts_with('#') && self.channel.len() > 1 {
            Ok(())
        } else {
            Err(ConfigError::invalid(
                "channel",
                &self.channel,
                "must be a channel name starting with #",
            ))
        }
    }

    async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
        if signal.ty().starts_with("alerts.broken.") {
            // Tell the retry layer whether trying again can help.
            return Err(DeliveryError::retryable("slack answered 502"));
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        println!(
            "[{}] {} from {}",
            self.channel,
            signal.ty(),
            signal.source()
        );
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::builder().build()?;

    // A bad configuration is refused at subscribe, with the value and the rule.
    let bad = Slack {
        channel: "alerts".into(),
        sent: AtomicUsize::new(0),
    };
    match bus.subscribe("alerts.**", bad) {
        Err(e) => println!("refused: {e}"),
        Ok(_) => unreachable!("an invalid channel is refused"),
    }

    let slack = Arc::new(Slack {
        channel: "#ops".into(),
        sent: AtomicUsize::new(0),
    });
    bus.subscribe("alerts.**", Arc::clone(&slack))?;

    for ty in ["alerts.disk.full", "alerts.broken.pipe", "alerts.cpu.hot"] {
        let report = bus
            .publish(Signal::builder(ty, "/monitor").build()?)
            .await?;
        for outcome in report.outcomes() {
            match outcome.result() {
                Ok(()) => println!("  {ty}: delivered to {}", outcome.target),
                Err(e) => println!(
                    "  {ty}: {} failed ({e}); retryable: {}",
                    outcome.target,
                    e.is_retryable()
                ),
            }
        }
    }
    println!("slack sent {} messages", slack.sent.load(Ordering::Relaxed));
    Ok(())
}
