//! Two buses in two processes exchanging signals through a local nats-server.
//!
//! ```sh
//! cargo run --example cluster --features nats                 # core NATS
//! cargo run --example cluster --features nats -- --jetstream  # JetStream, durable consumers
//! ```
//!
//! The parent process runs the bus `shop`: it publishes orders to NATS and bridges invoices
//! in. It starts itself again as the child process `billing`, whose bus bridges orders in and
//! answers each with an invoice. Neither bus gets its own signals back, and neither sends a
//! bridged signal out again. Options: `--nats URL` (default `SIGNAL_BUS_NATS_URL` or
//! `nats://127.0.0.1:4222`), `--orders N` (default 10), `--jetstream`.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde_json::json;
use signal_bus::{
    adapter::{Channel, PubSub},
    cluster::{ensure_stream, NatsBridge, NatsPubSub, ORIGIN_EXTENSION},
    Bus, Signal,
};

const STREAM: &str = "SIGNALS_EXAMPLE";
const PREFIX: &str = "example";

struct Options {
    url: String,
    orders: usize,
    jetstream: bool,
    child: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        url: std::env::var("SIGNAL_BUS_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned()),
        orders: 10,
        jetstream: false,
        child: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--nats" => o.url = args.next().context("--nats needs a URL")?,
            "--orders" => o.orders = args.next().context("--orders needs a number")?.parse()?,
            "--jetstream" => o.jetstream = true,
            "--child" => o.child = true,
            other => bail!("unknown option `{other}` (try --nats URL, --orders N, --jetstream)"),
        }
    }
    Ok(o)
}

/// A publisher to the cluster, core or JetStream.
fn to_nats(client: &async_nats::Client, jetstream: bool) -> NatsPubSub {
    let publisher = PubSub::nats(client.clone()).prefix(PREFIX);
    if jetstream {
        publisher.jetstream(STREAM)
    } else {
        publisher
    }
}

/// A bridge from the cluster into `bus`, durable under `name` with JetStream.
async fn bridge(
    client: &async_nats::Client,
    bus: &Bus,
    pattern: &str,
    name: &str,
    jetstream: bool,
) -> anyhow::Result<NatsBridge> {
    let builder = NatsBridge::builder(client.clone(), bus)
        .prefix(PREFIX)
        .pattern(pattern);
    let builder = if jetstream {
        builder.durable(STREAM, name)
    } else {
        builder
    };
    Ok(builder.start().await?)
}

/// The child: billing. Orders in, invoices out, until `order.done`.
async fn billing(o: &Options, client: async_nats::Client) -> anyhow::Result<()> {
    let bus = Bus::builder().name("billing").node_id("billing").build()?;
    bus.subscribe("invoice.**", to_nats(&client, o.jetstream))?;
    let (tx, mut orders) = tokio::sync::mpsc::channel::<Arc<Signal>>(1024);
    bus.subscribe("order.*", Channel::new(tx))?;
    let bridge = bridge(&client, &bus, "order.*", "billing", o.jetstream).await?;
    println!("READY");
    while let Some(order) = orders.recv().await {
        if order.ty() == "order.done" {
            break;
        }
        let invoice = Signal::builder("invoice.issued", "/billing")
            .subject(order.id())
            .data(
                json!({"order": order.id(), "amount": order.data().and_then(|d| d.get("amount"))}),
            )
            .build()?;
        bus.publish(invoice).await?;
    }
    client.flush().await?;
    let s = bridge.stats();
    println!(
        "billing: bridged {} orders in, skipped {} of its own, {} malformed",
        s.republished, s.echoes, s.malformed
    );
    bridge.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = options()?;
    let client = async_nats::connect(&o.url)
        .await
        .with_context(|| format!("connect to NATS at {} (is nats-server running?)", o.url))?;
    if o.child {
        return billing(&o, client).await;
    }
    if o.jetstream {
        // A fresh stream each run, so the durable consumers start from nothing.
        let _ = async_nats::jetstream::new(client.clone())
            .delete_stream(STREAM)
            .await;
        ensure_stream(&client, STREAM, PREFIX).await?;
    }

    // The child process, started from this same binary.
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--child")
        .args(["--nats", &o.url])
        .args(o.jetstream.then_some("--jetstream"))
        .stdout(Stdio::piped())
        .spawn()
        .context("start the billing process")?;
    let mut lines = BufReader::new(child.stdout.take().context("child stdout")?).lines();
    loop {
        match lines.next().transpose()? {
            Some(line) if line.trim() == "READY" => break,
            Some(_) => {}
            None => bail!("the billing process exited before it was ready"),
        }
    }
    println!("shop: billing (pid {}) is up", child.id());

    let bus = Bus::builder().name("shop").node_id("shop").build()?;
    bus.subscribe("order.**", to_nats(&client, o.jetstream))?;
    bus.subscribe("user.**", to_nats(&client, o.jetstream))?; // nobody bridges these
    let (tx, mut invoices) = tokio::sync::mpsc::channel::<Arc<Signal>>(1024);
    bus.subscribe("invoice.*", Channel::new(tx))?;
    let bridge = bridge(&client, &bus, "invoice.*", "shop", o.jetstream).await?;

    let started = Instant::now();
    for i in 0..o.orders {
        let order = Signal::builder("order.placed", "/shop")
            .id(format!("order-{i}"))
            .data(json!({"amount": 10 * (i + 1)}))
            .build()?;
        bus.publish(order).await?;
        bus.publish(Signal::builder("user.seen", "/shop").build()?)
            .await?;
    }
    for _ in 0..o.orders {
        let invoice = tokio::time::timeout(Duration::from_secs(10), invoices.recv())
            .await
            .context("waiting for an invoice")?
            .context("invoice channel closed")?;
        let from = invoice.extension(ORIGIN_EXTENSION).and_then(|v| v.as_str());
        println!(
            "shop: {} for {} from {}: {}",
            invoice.ty(),
            invoice.subject().unwrap_or("?"),
            from.unwrap_or("?"),
            invoice.data().map(ToString::to_string).unwrap_or_default()
        );
    }
    let took = started.elapsed();
    bus.publish(Signal::builder("order.done", "/shop").build()?)
        .await?;
    for line in lines {
        println!("{}", line?);
    }
    let status = child.wait()?;
    let s = bridge.stats();
    println!(
        "shop: {} orders out, {} invoices in ({:?} round trip for all), {} of its own skipped, \
         mode {}",
        o.orders,
        s.republished,
        took,
        s.echoes,
        if o.jetstream {
            "JetStream (durable)"
        } else {
            "core NATS"
        }
    );
    bridge.shutdown().await;
    if !status.success() {
        bail!("the billing process failed: {status}");
    }
    Ok(())
}
