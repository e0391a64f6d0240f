//! The NATS form of the `PubSub` adapter: publishes signals to `<prefix>.<type>`.

use std::{
    fmt,
    future::IntoFuture,
    sync::{Arc, OnceLock},
    time::Instant,
};

use async_nats::{
    client::PublishErrorKind as CorePublishErrorKind,
    connection::State,
    jetstream::{
        self,
        context::{ContextBuilder, PublishErrorKind},
        message::PublishMessage,
    },
    Client,
};
use async_trait::async_trait;
use futures_util::FutureExt;

use super::{
    codec::{self, ORIGIN_EXTENSION},
    subject::{subject_for, validate_prefix},
    validate_stream_name, DEFAULT_PREFIX,
};
use crate::{
    adapter::{
        hooks::{BusHooks, Sealed},
        AttachSlot, Health, PubSub,
    },
    binding::encode_value,
    context::BusContext,
    Adapter, ConfigError, ContentMode, DeliveryError, Signal,
};

/// The origin of a publisher used outside a bus: one id per process.
fn process_origin() -> &'static str {
    static ORIGIN: OnceLock<String> = OnceLock::new();
    ORIGIN.get_or_init(|| format!("process-{}", uuid::Uuid::now_v7().simple()))
}

/// Publishes each signal to NATS, on subject `<prefix>.<type>` (prefix `signals` by
/// default; a type segment that is exactly `*` or `>`, and every `%`, percent-escaped: see
/// [`subject_for`](super::subject_for)), as CloudEvents JSON or in binary mode. Build it with
/// [`PubSub::nats`](crate::adapter::PubSub::nats).
///
/// - **Core NATS** (the default): fire and forget. A publish succeeds once the client has
///   queued the message; what the server never receives (a connection lost with messages in
///   flight) is lost. While the client reconnects, publishes wait for room in its buffer, up
///   to the target's timeout.
/// - **JetStream** ([`jetstream`](NatsPubSub::jetstream)): each publish waits for the stream's
///   acknowledgement, so an `Ok` outcome means the signal is stored. The message id
///   (`Nats-Msg-Id`) is the signal's source and id, so a retried publish within the stream's
///   duplicate window is stored once. With batching ([`Target::batch`](crate::Target::batch)) a batch is
///   published in one go and its acknowledgements awaited together.
///
/// Every message carries the id of the bus's node as the
/// [`signalorigin`](super::ORIGIN_EXTENSION) extension attribute (the first member of the
/// JSON, or the `ce-signalorigin` header). Signals that came in through a
/// [`NatsBridge`](super::NatsBridge) already have it and are not published again (the
/// outcome is `Ok`): bridged buses never echo signals back and forth. This holds for any
/// signal carrying that extension, however it reached the bus: do not set it yourself.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use signal_bus::{adapter::PubSub, Bus, ContentMode};
///
/// let client = async_nats::connect("127.0.0.1:4222").await?;
/// let bus = Bus::builder().name("orders").build()?;
/// bus.subscribe("order.**", PubSub::nats(client.clone()))?;            // core NATS
/// bus.subscribe("audit.**", PubSub::nats(client).jetstream("SIGNALS")   // acknowledged
///     .content_mode(ContentMode::Binary))?;
/// # Ok(()) }
/// ```
pub struct NatsPubSub {
    client: Client,
    prefix: String,
    mode: ContentMode,
    stream: Option<String>,
    jetstream: OnceLock<jetstream::Context>,
    attached: AttachSlot,
}

impl fmt::Debug for NatsPubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsPubSub")
            .field("prefix", &self.prefix)
            .field("mode", &self.mode)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl NatsPubSub {
    /// Publishes through `client` with the defaults: prefix `signals`, structured mode, core
    /// NATS.
    pub fn new(client: Client) -> Self {
        NatsPubSub {
            client,
            prefix: DEFAULT_PREFIX.to_owned(),
            mode: ContentMode::Structured,
            stream: None,
            jetstream: OnceLock::new(),
            attached: AttachSlot::default(),
        }
    }

    /// The subject prefix: signals go to `<prefix>.<type>`. Dot-separated tokens without
    /// wildcards or whitespace. Default: `signals`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Structured (the whole signal as CloudEvents JSON, the default) or binary (`ce-*`
    /// headers, the data as payload).
    pub fn content_mode(mut self, mode: ContentMode) -> Self {
        self.mode = mode;
        self
    }

    /// Publishes to the JetStream stream `stream` and waits for its acknowledgement. The
    /// stream must capture `<prefix>.>` (see [`ensure_stream`](super::ensure_stream)); a
    /// subject stored by another stream is refused. Default: core NATS.
    pub fn jetstream(mut self, stream: impl Into<String>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    /// The subject a signal of type `ty` goes to (see [`subject_for`](super::subject_for)).
    pub fn subject_for(&self, ty: &str) -> String {
        subject_for(&self.prefix, ty)
    }

    /// The bus's node id (one id per process outside a bus): the bridge on the same bus
    /// recognises its own signals by it.
    fn origin_id(&self) -> &str {
        match self.attached.get() {
            Some(ctx) => ctx.node_id(),
            None => process_origin(),
        }
    }

    fn jetstream_context(&self) -> &jetstream::Context {
        // Built on first use: building one spawns a task, so it needs the runtime.
        self.jetstream.get_or_init(|| {
            ContextBuilder::new()
                .backpressure_on_inflight(true)
                .build(self.client.clone())
        })
    }

    /// Sends one signal; for JetStream, returns the acknowledgement still to await.
    async fn send(
        &self,
        signal: &Signal,
    ) -> Result<Option<jetstream::context::PublishAckFuture>, DeliveryError> {
        let subject = self.subject_for(signal.ty());
        let (headers, payload) = codec::encode(signal, self.mode, self.origin_id());
        match &self.stream {
            None => match headers {
                Some(headers) => {
                    self.client
                        .publish_with_headers(subject, headers, payload)
                        .await
                }
                None => self.client.publish(subject, payload).await,
            }
            .map(|()| None)
            .map_err(|e| {
                let message = format!(
                    "NATS publish to `{}` failed: {e}",
                    self.subject_for(signal.ty())
                );
                match e.kind() {
                    CorePublishErrorKind::MaxPayloadExceeded | CorePublishErrorKind::BadSubject => {
                        DeliveryError::permanent(message)
                    }
                    _ => DeliveryError::retryable(message),
                }
            }),
            Some(stream) => {
                let mut message = PublishMessage::build().payload(payload);
                if let Some(headers) = headers {
                    message = message.headers(headers);
                }
                // CloudEvents ids are unique per source: the message id is both.
                let id = format!(
                    "{} {}",
                    encode_value(signal.source()),
                    encode_value(signal.id())
                );
                let message = message.message_id(id).expected_stream(stream);
                self.jetstream_context()
                    .send_publish(subject, message)
                    .await
                    .map(Some)
                    .map_err(|e| jetstream_error(stream, &e))
            }
        }
    }
}

fn jetstream_error(stream: &str, e: &jetstream::context::PublishError) -> DeliveryError {
    match e.kind() {
        PublishErrorKind::StreamNotFound => DeliveryError::retryable(format!(
            "JetStream publish failed: no stream captures the subject (expected stream \
             `{stream}`)"
        )),
        PublishErrorKind::TimedOut => DeliveryError::retryable(format!(
            "JetStream publish to stream `{stream}` timed out waiting for its acknowledgement"
        )),
        // The server refuses a subject that `stream` does not capture (expected stream).
        PublishErrorKind::Other if e.to_string().contains("expected stream") => {
            DeliveryError::permanent(format!(
                "JetStream publish refused: stream `{stream}` does not capture the subject: {e}"
            ))
        }
        _ => DeliveryError::retryable(format!(
            "JetStream publish to stream `{stream}` failed: {e}"
        )),
    }
}

/// Whether a signal came in from NATS through a bridge (and so must not go back out).
fn bridged(signal: &Signal) -> bool {
    signal.extension(ORIGIN_EXTENSION).is_some()
}

#[async_trait]
impl Adapter for NatsPubSub {
    fn name(&self) -> &str {
        "nats"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if let Err(rule) = validate_prefix(&self.prefix) {
            problems.push(ConfigError::invalid("prefix", &self.prefix, rule));
        }
        if let Some(stream) = &self.stream {
            if let Err(rule) = validate_stream_name(stream) {
                problems.push(ConfigError::invalid("jetstream", stream, rule));
            }
        }
        ConfigError::from_problems(problems)
    }

    async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
        if bridged(signal) {
            return Ok(());
        }
        if let Some(ack) = self.send(signal).await? {
            let stream = self.stream.as_deref().unwrap_or_default();
            ack.await.map_err(|e| jetstream_error(stream, &e))?;
        }
        Ok(())
    }

    /// Publishes every signal, then awaits the JetStream acknowledgements together.
    async fn deliver_batch(&self, signals: &[Arc<Signal>]) -> Result<(), DeliveryError> {
        let mut acks = Vec::new();
        for signal in signals.iter().filter(|s| !bridged(s)) {
            if let Some(ack) = self.send(signal).await? {
                acks.push(ack.into_future());
            }
        }
        let stream = self.stream.as_deref().unwrap_or_default();
        for result in futures_util::future::join_all(acks).await {
            result.map_err(|e| jetstream_error(stream, &e))?;
        }
        Ok(())
    }

    /// Core NATS: queues the message when the client has room right away (no timer, no
    /// boxed future); otherwise the bus falls back to [`deliver`](Adapter::deliver), which
    /// waits for room up to the target's timeout.
    fn try_deliver(&self, signal: &Arc<Signal>) -> Option<Result<(), DeliveryError>> {
        if self.stream.is_some() {
            return None;
        }
        if bridged(signal) {
            return Some(Ok(()));
        }
        // A send into the client's queue completes on its first poll when there is room;
        // dropping it unpolled-to-completion sends nothing (tokio's mpsc is cancel-safe).
        self.send(signal).now_or_never().map(|r| r.map(drop))
    }

    async fn health_check(&self) -> Health {
        let started = Instant::now();
        match self.client.connection_state() {
            State::Connected => Health::healthy(),
            State::Pending => Health::degraded("connecting to NATS"),
            State::Disconnected => Health::unhealthy("disconnected from NATS"),
        }
        .with_latency(started.elapsed())
    }

    fn bus_hooks(&self, _: Sealed) -> Option<&dyn BusHooks> {
        Some(self)
    }
}

impl BusHooks for NatsPubSub {
    fn attach(&self, bus: &BusContext) {
        self.attached.set(bus);
    }
}

impl PubSub {
    /// The NATS form: publishes each signal to NATS subject `<prefix>.<type>` (core NATS, or
    /// JetStream with acknowledgements), so other processes and machines receive it through
    /// a [`NatsBridge`](crate::cluster::NatsBridge). Feature `nats`; see
    /// [`NatsPubSub`](crate::cluster::NatsPubSub) for the options.
    pub fn nats(client: async_nats::Client) -> NatsPubSub {
        NatsPubSub::new(client)
    }
}
