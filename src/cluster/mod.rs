//! Signals across processes and machines through NATS (feature `nats`).
//!
//! Two pieces, one per direction:
//!
//! | piece | direction | what it does |
//! |---|---|---|
//! | [`PubSub::nats`](crate::adapter::PubSub::nats) ([`NatsPubSub`]) | bus → NATS | publishes each signal to `<prefix>.<type>`, core NATS or JetStream (acknowledged) |
//! | [`NatsBridge`] | NATS → bus | subscribes to the subjects of a bus pattern and republishes what it receives into the local bus; core NATS or a JetStream durable consumer |
//!
//! A bus that both publishes and bridges never echoes: each message carries the sending
//! node's id ([`Bus::node_id`](crate::Bus::node_id)) as the [`ORIGIN_EXTENSION`] extension
//! attribute, the bridge skips its own node's messages, and the bus's NATS publishers never
//! send out a signal that came in through a bridge (it has that extension).
//!
//! A type becomes subject tokens as written, but for what NATS reads as syntax: a segment
//! that is exactly `*` or `>` is sent as `%2A` or `%3E`, and every `%` as `%25`
//! ([`subject_for`]), so every type (any characters but whitespace and control characters)
//! has a literal subject of its own, and the escaping is reversible.
//!
//! Patterns become subjects as NATS allows: a literal segment becomes its token (an escaped
//! `\*` the token `%2A`), `*` stays `*`, a trailing `**` becomes `>`
//! (plus the bare subject, since `**` also matches nothing); glob segments and a `**` before
//! other segments become a wider subscription filtered locally ([`SubjectFilter`]).
//!
//! # Guarantees
//! - **Core NATS**: at most once. A signal published while a bridge is down, or lost with a
//!   connection, is not delivered to it.
//! - **JetStream**: a publish is `Ok` once the stream stored it; a durable bridge
//!   acknowledges a signal only after the local bus delivered it to every matching target
//!   (an async target: queued it), asks for a redelivery (with a doubling delay) when one
//!   failed, gives up after `max_deliver` deliveries (counted and logged), and resumes after
//!   a restart where it stopped. At least once: receivers deduplicate on the signal's `(source, id)`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use signal_bus::{adapter::PubSub, cluster::NatsBridge, Bus};
//!
//! let client = async_nats::connect("127.0.0.1:4222").await?;
//! let bus = Bus::builder().name("orders").build()?;
//! bus.subscribe("order.**", PubSub::nats(client.clone()))?;
//! let bridge = NatsBridge::builder(client, &bus).pattern("invoice.*").start().await?;
//! # drop(bridge); Ok(()) }
//! ```

use async_nats::jetstream::{self, stream};

mod bridge;
pub(crate) mod codec;
mod publisher;
mod subject;

/// The `async-nats` crate this module is built on, for connecting clients of the same
/// version.
pub use async_nats;
pub use bridge::{BridgeStats, NatsBridge, NatsBridgeBuilder};
pub use codec::{MalformedMessage, EXTERNAL_ORIGIN, ORIGIN_EXTENSION};
pub use publisher::NatsPubSub;
pub use subject::{subject_for, SubjectFilter};

/// The default subject prefix: signals go to `signals.<type>`.
pub const DEFAULT_PREFIX: &str = "signals";

/// What can go wrong setting up the NATS side of a cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// An invalid option.
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    /// The server refused a subscription.
    #[error("cannot subscribe to NATS subject `{subject}`: {reason}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// The client's or server's reason.
        reason: String,
        /// The client's error (an `async_nats` error), when there is one:
        /// [`source()`](std::error::Error::source) returns it.
        source: Option<crate::Cause>,
    },
    /// A JetStream stream could not be found, created, or does not fit.
    #[error("JetStream stream `{stream}`: {reason}")]
    Stream {
        /// The stream name.
        stream: String,
        /// What is wrong.
        reason: String,
        /// The client's error (an `async_nats` error), when there is one:
        /// [`source()`](std::error::Error::source) returns it.
        source: Option<crate::Cause>,
    },
    /// A JetStream consumer could not be created or bound.
    #[error("JetStream consumer `{consumer}` on stream `{stream}`: {reason}")]
    Consumer {
        /// The stream name.
        stream: String,
        /// The consumer name.
        consumer: String,
        /// What is wrong.
        reason: String,
        /// The client's error (an `async_nats` error), when there is one:
        /// [`source()`](std::error::Error::source) returns it.
        source: Option<crate::Cause>,
    },
}

/// Checks a JetStream stream or consumer name: not empty, at most 255 bytes, no whitespace,
/// control characters, `.`, `*`, `>`, `/` or `\`.
pub(crate) fn validate_stream_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("it must not be empty")
    } else if name.len() > 255 {
        Err("it must be at most 255 bytes")
    } else if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c))
    {
        Err("it must not contain whitespace, control characters, `.`, `*`, `>`, `/` or `\\`")
    } else {
        Ok(())
    }
}

/// Whether a stream subject captures every subject under `prefix` (`<prefix>.>`).
fn captures(stream_subject: &str, prefix: &str) -> bool {
    let prefix: Vec<&str> = prefix.split('.').collect();
    for (i, token) in stream_subject.split('.').enumerate() {
        match (token, prefix.get(i)) {
            (">", _) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (t, Some(p)) if t == *p => {}
            _ => return false,
        }
    }
    false
}

/// Makes sure the JetStream stream `name` exists and captures `<prefix>.>`: creates it
/// (file storage, a 2-minute duplicate window, no age or size limit: set limits on the stream
/// yourself, or create it with your own configuration first) when it does not exist.
///
/// # Errors
/// [`ClusterError::Stream`] when the name is invalid, the server refuses, or an existing
/// stream of that name does not capture `<prefix>.>`.
pub async fn ensure_stream(
    client: &async_nats::Client,
    name: &str,
    prefix: &str,
) -> Result<stream::Stream, ClusterError> {
    ensure_stream_on(&jetstream::new(client.clone()), name, prefix).await
}

pub(crate) async fn ensure_stream_on(
    js: &jetstream::Context,
    name: &str,
    prefix: &str,
) -> Result<stream::Stream, ClusterError> {
    let fail = |reason: String| ClusterError::Stream {
        stream: name.to_owned(),
        reason,
        source: None,
    };
    validate_stream_name(name).map_err(|rule| fail(format!("invalid name: {rule}")))?;
    subject::validate_prefix(prefix)
        .map_err(|rule| fail(format!("invalid prefix `{prefix}`: {rule}")))?;
    let stream = js
        .get_or_create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::Stream {
            stream: name.to_owned(),
            reason: e.to_string(),
            source: Some(crate::Cause::new(e)),
        })?;
    let subjects = &stream.cached_info().config.subjects;
    if !subjects.iter().any(|s| captures(s, prefix)) {
        return Err(fail(format!(
            "exists but does not capture `{prefix}.>` (its subjects: {subjects:?})"
        )));
    }
    Ok(stream)
}

/// `signal_bus::cluster` events.
mod telemetry {
    use super::MalformedMessage;

    pub(super) fn started(bus: &str, subjects: &[String], durable: bool) {
        tracing::info!(
            name: "signal_bus::cluster",
            target: "signal_bus::cluster",
            message = "NATS bridge started.",
            kind = "started",
            bus,
            subjects = ?subjects,
            durable,
        );
    }

    pub(super) fn unconfirmed(bus: &str, reason: &str) {
        tracing::warn!(
            name: "signal_bus::cluster",
            target: "signal_bus::cluster",
            message = "NATS bridge started, but could not confirm that the server has its \
                       subscriptions: signals published in the next moments may be missed.",
            kind = "unconfirmed",
            bus,
            reason,
        );
    }

    pub(super) fn stopped(bus: &str, reason: &str) {
        tracing::info!(
            name: "signal_bus::cluster",
            target: "signal_bus::cluster",
            message = "NATS bridge stopped.",
            kind = "stopped",
            bus,
            reason,
        );
    }

    pub(super) fn abandoned(bus: &str, subject: &str, deliveries: i64) {
        tracing::error!(
            name: "signal_bus::cluster",
            target: "signal_bus::cluster",
            message = "Gave up on a bridged signal: local targets failed it max_deliver times.",
            kind = "abandoned",
            bus,
            subject,
            deliveries,
        );
    }

    pub(super) fn disconnected(bus: &str) {
        tracing::warn!(
            name: "signal_bus::cluster",
            target: "signal_bus::cluster",
            message = "Disconnected from NATS; the client is reconnecting.",
            kind = "disconnected",
            bus,
        );
    }

    pub(super) fn reconnected(bus: &str) {
        tracing::info!(
            name: "signal_bus::cluster",
            target: "signal_bus::cluster",
            message = "Reconnected to NATS.",
            kind = "reconnected",
            bus,
        );
    }

    pub(super) fn malformed(bus: &str, subject: &str, error: &MalformedMessage) {
        tracing::warn!(
            name: "signal_bus::cluster",
            target: "signal_bus::cluster",
            message = "Skipped a NATS message that is not a signal.",
            kind = "malformed",
            bus,
            subject,
            error = %error,
        );
    }

    pub(super) fn local_failure(bus: &str, ty: &str, id: &str, failed: usize) {
        tracing::warn!(
            name: "signal_bus::cluster",
            target: "signal_bus::cluster",
            message = "A bridged signal failed to reach some local targets.",
            kind = "local_failure",
            bus,
            signal_type = ty,
            signal_id = id,
            failed,
        );
    }

    pub(super) fn stream_error(bus: &str, stream: &str, consumer: &str, error: &str) {
        tracing::warn!(
            name: "signal_bus::cluster",
            target: "signal_bus::cluster",
            message = "JetStream consumer stream error; continuing.",
            kind = "stream_error",
            bus,
            stream,
            consumer,
            error,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        assert!(validate_stream_name("SIGNALS").is_ok());
        assert!(validate_stream_name("node-1_a").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", "a/b", "a\\b", "a\tb"] {
            assert!(validate_stream_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stream_subjects_capture_prefixes() {
        assert!(captures(">", "signals"));
        assert!(captures("signals.>", "signals"));
        assert!(captures("acme.>", "acme.prod"));
        assert!(!captures("acme.prod.>", "acme"));
        assert!(!captures("signals.*", "signals"));
        assert!(!captures("sig.>", "signals"));
        assert!(captures("*.>", "signals"));
        assert!(captures("acme.*.>", "acme.prod"));
        assert!(!captures("acme.*", "acme.prod"));
        assert!(!captures("signals", "signals"));
    }
}
