//! [`NatsBridge`]: receives signals from NATS and republishes them into the local bus.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use async_nats::{
    client::RequestErrorKind,
    connection::State,
    jetstream::{
        self,
        consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer},
        AckKind,
    },
    Client, HeaderMap,
};
use futures_util::StreamExt;
use tokio::{sync::watch, task::JoinHandle};
use tracing::Instrument;

use super::{
    codec::{decode, Decoded, OwnOrigin},
    ensure_stream_on,
    subject::{validate_prefix, SubjectFilter},
    telemetry, validate_stream_name, ClusterError, DEFAULT_PREFIX,
};
use crate::{adapter::Health, Bus, ConfigError, Pattern};

/// How often the bridge looks at the connection state.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// How many JetStream messages a durable bridge holds at once. Their `ack_wait` runs while
/// the ones before them are delivered locally, so this stays small.
const PULL_BATCH: usize = 64;
/// The longest delay before a failed JetStream message is redelivered.
const MAX_REDELIVERY_DELAY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct Durable {
    stream: String,
    consumer: String,
    create_stream: bool,
    max_deliver: u32,
    ack_wait: Duration,
    redelivery_delay: Duration,
}

/// Builds a [`NatsBridge`]; [`start`](NatsBridgeBuilder::start) validates every option, then
/// subscribes.
#[must_use = "a builder does nothing until start() is called"]
pub struct NatsBridgeBuilder {
    client: Client,
    bus: Bus,
    pattern: String,
    prefix: String,
    durable: Option<Durable>,
    confirm_wait: Duration,
}

impl fmt::Debug for NatsBridgeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBridgeBuilder")
            .field("bus", &self.bus.name())
            .field("pattern", &self.pattern)
            .field("prefix", &self.prefix)
            .field("durable", &self.durable)
            .field("confirm_wait", &self.confirm_wait)
            .finish_non_exhaustive()
    }
}

impl NatsBridgeBuilder {
    /// Which signals to bring in: a bus pattern (`*`, `**`, globs). NATS gets the closest
    /// subjects it can express; the bridge checks every signal against the pattern itself.
    /// Default: `**` (everything under the prefix).
    pub fn pattern(mut self, pattern: impl Into<String>) -> Self {
        self.pattern = pattern.into();
        self
    }

    /// The subject prefix the publishers use (`<prefix>.<type>`). Default: `signals`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Core NATS: how long [`start`](Self::start) waits for the server to confirm that it
    /// has the bridge's subscriptions (0 to 1 min; zero: do not wait). Default: 5 s.
    ///
    /// The client's `flush` only writes to the socket, so `start` sends a probe on a fresh
    /// inbox subject and waits for it to come back (its own copy, or the server's
    /// no-responders answer): the server read the subscriptions before it. Credentials
    /// without the right to publish to the client's inbox prefix (`_INBOX.>` by default)
    /// get no answer: `start` waits this long, logs a `signal_bus::cluster` warning
    /// (`kind=unconfirmed`) and starts anyway; give such a bridge zero. Durable mode waits
    /// for its consumer instead and ignores this.
    pub fn confirm_wait(mut self, wait: Duration) -> Self {
        self.confirm_wait = wait;
        self
    }

    /// Reads through the JetStream durable consumer `consumer` on `stream` instead of a core
    /// NATS subscription: each signal is acknowledged once the local bus delivered it to
    /// every matching target (an async target: queued it), redelivered when a target failed,
    /// and a restarted bridge with the same consumer name resumes where it stopped. A new
    /// consumer starts from the beginning of the stream. The stream is created (capturing
    /// `<prefix>.>`) when it does not exist; see
    /// [`create_stream`](NatsBridgeBuilder::create_stream).
    pub fn durable(mut self, stream: impl Into<String>, consumer: impl Into<String>) -> Self {
        self.durable = Some(Durable {
            stream: stream.into(),
            consumer: consumer.into(),
            create_stream: true,
            max_deliver: 10,
            ack_wait: Duration::from_secs(30),
            redelivery_delay: Duration::from_secs(1),
        });
        self
    }

    fn durable_mut(&mut self) -> Option<&mut Durable> {
        self.durable.as_mut()
    }

    /// Durable mode: whether to create the stream when it does not exist. Default: `true`.
    pub fn create_stream(mut self, create: bool) -> Self {
        if let Some(d) = self.durable_mut() {
            d.create_stream = create;
        }
        self
    }

    /// Durable mode: how many times a signal is delivered before the bridge gives up on it
    /// (at least 1): the last failure terminates it, counts it in
    /// [`BridgeStats::abandoned`] and logs a `signal_bus::cluster` error. Default: 10.
    pub fn max_deliver(mut self, times: u32) -> Self {
        if let Some(d) = self.durable_mut() {
            d.max_deliver = times;
        }
        self
    }

    /// Durable mode: how long JetStream waits for an acknowledgement before it redelivers
    /// (1 s to 1 h). Default: 30 s.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        if let Some(d) = self.durable_mut() {
            d.ack_wait = wait;
        }
        self
    }

    /// Durable mode: the delay before the first redelivery of a signal some target failed
    /// to take; it doubles with each delivery, up to 5 minutes (at most 1 h). Default: 1 s.
    pub fn redelivery_delay(mut self, delay: Duration) -> Self {
        if let Some(d) = self.durable_mut() {
            d.redelivery_delay = delay;
        }
        self
    }

    /// Checks every option (pure: no I/O).
    ///
    /// # Errors
    /// Every invalid option, each naming its value and the rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.checked().map(drop)
    }

    /// [`validate`](Self::validate), returning the parsed pattern.
    fn checked(&self) -> Result<Pattern, ConfigError> {
        let mut problems = Vec::new();
        let pattern = Pattern::parse(&self.pattern)
            .map_err(|e| {
                problems.push(ConfigError::invalid(
                    "pattern",
                    &self.pattern,
                    e.to_string(),
                ))
            })
            .ok();
        if let Err(rule) = validate_prefix(&self.prefix) {
            problems.push(ConfigError::invalid("prefix", &self.prefix, rule));
        } else {
            // The client's replies (and the start probe) must not land in the bridge.
            let inbox = self.client.new_inbox();
            if inbox.starts_with(&format!("{}.", self.prefix)) {
                let client_prefix = inbox.rsplit_once('.').map_or(inbox.as_str(), |(p, _)| p);
                problems.push(ConfigError::invalid(
                    "prefix",
                    &self.prefix,
                    format!("must not cover the client's inbox prefix `{client_prefix}`"),
                ));
            }
        }
        if self.confirm_wait > MAX_CONFIRM_WAIT {
            problems.push(ConfigError::invalid(
                "confirm_wait",
                format!("{:?}", self.confirm_wait),
                "must be at most 1 min",
            ));
        }
        if let Some(d) = &self.durable {
            if let Err(rule) = validate_stream_name(&d.stream) {
                problems.push(ConfigError::invalid("stream", &d.stream, rule));
            }
            if let Err(rule) = validate_stream_name(&d.consumer) {
                problems.push(ConfigError::invalid("consumer", &d.consumer, rule));
            }
            if d.max_deliver == 0 {
                problems.push(ConfigError::invalid("max_deliver", 0, "must be at least 1"));
            }
            if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d.ack_wait) {
                problems.push(ConfigError::invalid(
                    "ack_wait",
                    format!("{:?}", d.ack_wait),
                    "must be between 1 s and 1 h",
                ));
            }
            if d.redelivery_delay > Duration::from_secs(3600) {
                problems.push(ConfigError::invalid(
                    "redelivery_delay",
                    format!("{:?}", d.redelivery_delay),
                    "must be at most 1 h",
                ));
            }
        }
        ConfigError::from_problems(problems)?;
        // No problems: the pattern parsed.
        pattern.ok_or_else(|| ConfigError::invalid("pattern", &self.pattern, "does not parse"))
    }

    /// Validates, subscribes (or binds the durable consumer), and starts republishing into
    /// the bus from a task of its own.
    ///
    /// # Errors
    /// [`ClusterError::Config`] for a bad option; a subscription, stream or consumer the
    /// server refuses.
    pub async fn start(self) -> Result<NatsBridge, ClusterError> {
        let pattern = self.checked()?;
        let filter = SubjectFilter::new(&self.prefix, &pattern);
        let shared = Arc::new(Shared {
            stats: Counters::default(),
            running: AtomicBool::new(true),
            last_error: Mutex::new(None),
        });
        let statistics = self.client.statistics();
        let worker = Worker {
            bus: self.bus.clone(),
            client: self.client.clone(),
            last_connects: AtomicU64::new(statistics.connects.load(Ordering::Relaxed)),
            down_seen: AtomicBool::new(self.client.connection_state() != State::Connected),
            statistics,
            origin: OwnOrigin::new(self.bus.node_id()),
            prefix: self.prefix.clone(),
            pattern,
            shared: Arc::clone(&shared),
        };
        let (stop, stopped) = watch::channel(false);
        let (task, subjects) = match &self.durable {
            None => {
                let mut subscribers = Vec::new();
                for subject in filter.subjects() {
                    let sub = self.client.subscribe(subject.clone()).await.map_err(|e| {
                        ClusterError::Subscribe {
                            subject: subject.clone(),
                            reason: e.to_string(),
                            source: Some(crate::Cause::new(e)),
                        }
                    })?;
                    subscribers.push(sub);
                }
                confirm_subscriptions(&self.client, self.bus.name(), self.confirm_wait).await;
                let task = tokio::spawn(worker.run_core(subscribers, stopped));
                (task, filter.subjects().to_vec())
            }
            Some(d) => {
                let subject = filter.single();
                let consumer = bind_consumer(&self.client, &self.prefix, d, &subject).await?;
                let task = tokio::spawn(worker.run_durable(consumer, d.clone(), stopped));
                (task, vec![subject])
            }
        };
        telemetry::started(self.bus.name(), &subjects, self.durable.is_some());
        Ok(NatsBridge {
            shared,
            stop,
            task: Some(task),
            subjects,
            client: self.client,
        })
    }
}

/// How long [`confirm_subscriptions`] waits for the server by default.
const DEFAULT_CONFIRM_WAIT: Duration = Duration::from_secs(5);

/// The longest [`NatsBridgeBuilder::confirm_wait`].
const MAX_CONFIRM_WAIT: Duration = Duration::from_secs(60);

/// Returns once the server has read every subscription this client sent before (or after
/// `wait`), so a bridge that [`start`](NatsBridgeBuilder::start)ed receives what is
/// published next.
///
/// `Client::flush` is not enough: in async-nats 0.46 it writes the client's buffer to the
/// socket and returns, and the server may read a publish from another connection before the
/// subscriptions (a loaded test run lost all of the 100 signals published right after
/// `start`), and the client has no PING of its own to offer. So the probe is a request on a
/// fresh inbox subject that this client also subscribes to: the server reads one
/// connection in order and answers the request only after reading it, with the client's
/// own copy (echo on) or "no responders" (echo off). A client that is not connected sends
/// its subscriptions again when it reconnects: nothing to wait for. No answer in time
/// (no right to publish to the inbox, a server too old for no-responders with echo off, a
/// stalled server) is noted in telemetry, and the bridge starts anyway.
async fn confirm_subscriptions(client: &Client, bus: &str, wait: Duration) {
    if wait.is_zero() || client.connection_state() != State::Connected {
        return;
    }
    let subject = client.new_inbox();
    let mut request_error = None;
    let probe = async {
        let mut echo = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| e.to_string())?;
        let request = client.request(subject.clone(), bytes::Bytes::new());
        tokio::pin!(request);
        let mut asking = true;
        loop {
            tokio::select! {
                m = echo.next() => {
                    return m.map(drop).ok_or_else(|| "the client closed".to_owned());
                }
                r = &mut request, if asking => match r {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == RequestErrorKind::NoResponders => return Ok(()),
                    // The client's own request timeout, say: the echo may still come.
                    Err(e) => {
                        request_error = Some(e.to_string());
                        asking = false;
                    }
                },
            }
        }
    };
    let outcome = tokio::time::timeout(wait, probe).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => telemetry::unconfirmed(bus, &e),
        Err(_) => {
            let mut reason = format!("no answer within {wait:?}");
            if let Some(e) = request_error {
                reason.push_str(&format!(" (the request: {e})"));
            }
            telemetry::unconfirmed(bus, &reason);
        }
    }
}

async fn bind_consumer(
    client: &Client,
    prefix: &str,
    d: &Durable,
    subject: &str,
) -> Result<PullConsumer, ClusterError> {
    let js = jetstream::new(client.clone());
    let stream = if d.create_stream {
        ensure_stream_on(&js, &d.stream, prefix).await?
    } else {
        js.get_stream(&d.stream)
            .await
            .map_err(|e| ClusterError::Stream {
                stream: d.stream.clone(),
                reason: e.to_string(),
                source: Some(crate::Cause::new(e)),
            })?
    };
    let config = pull::Config {
        durable_name: Some(d.consumer.clone()),
        filter_subject: subject.to_owned(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: d.ack_wait,
        max_deliver: i64::from(d.max_deliver),
        ..Default::default()
    };
    stream
        .create_consumer(config)
        .await
        .map_err(|e| ClusterError::Consumer {
            stream: d.stream.clone(),
            consumer: d.consumer.clone(),
            reason: format!(
                "{e} (an existing consumer of that name keeps its filter `{subject}` only if \
                 it was created with it: delete it or pick another name)"
            ),
            source: Some(crate::Cause::new(e)),
        })
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    republished: AtomicU64,
    echoes: AtomicU64,
    filtered: AtomicU64,
    malformed: AtomicU64,
    failed: AtomicU64,
    redeliveries: AtomicU64,
    abandoned: AtomicU64,
    disconnects: AtomicU64,
    reconnects: AtomicU64,
    stream_errors: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    stats: Counters,
    running: AtomicBool,
    last_error: Mutex<Option<(Instant, String)>>,
}

impl Shared {
    fn count(&self, counter: impl Fn(&Counters) -> &AtomicU64) {
        counter(&self.stats).fetch_add(1, Ordering::Relaxed);
    }
    fn error(&self, message: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), message));
    }
}

/// What a bridge has seen, from [`NatsBridge::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeStats {
    /// Messages received from NATS.
    pub received: u64,
    /// Signals published into the local bus.
    pub republished: u64,
    /// This node's own signals, skipped.
    pub echoes: u64,
    /// Signals the subjects let through but the pattern does not match, skipped.
    pub filtered: u64,
    /// Messages that are not signals (or sit on the wrong subject), counted and skipped.
    pub malformed: u64,
    /// Republished signals some local target failed to take (redelivered in durable mode).
    pub failed: u64,
    /// Redeliveries asked of JetStream (durable mode).
    pub redeliveries: u64,
    /// Signals given up on after `max_deliver` failed deliveries (durable mode), each
    /// reported as a `signal_bus::cluster` error event.
    pub abandoned: u64,
    /// Times the connection to NATS was lost.
    pub disconnects: u64,
    /// Times it came back.
    pub reconnects: u64,
    /// Errors of the JetStream message stream (missed heartbeats, a deleted consumer).
    pub stream_errors: u64,
}

/// Receives signals from NATS and republishes them into a local bus.
///
/// It subscribes to the subjects for a bus pattern under a prefix (see
/// [`SubjectFilter`](super::SubjectFilter)), reads each message as a CloudEvent (structured
/// or binary mode), skips this node's own signals (no echo), marks the rest with the
/// [`signalorigin`](super::ORIGIN_EXTENSION) extension so the bus's NATS publishers do not
/// send them out again, and publishes them on the bus. Messages that are not signals are
/// counted in [`stats`](NatsBridge::stats) and skipped; they never stop the bridge.
///
/// Two modes:
/// - **core NATS** (default): at most once. What is published while the bridge is down or
///   disconnected is not seen.
/// - **durable** ([`durable`](NatsBridgeBuilder::durable)): a JetStream durable consumer
///   with explicit acks after local delivery, so nothing acknowledged by the stream is lost
///   (unless a local target fails it `max_deliver` times) and a restarted bridge catches up;
///   at least once (a signal may come twice, so receivers deduplicate on the signal's `(source, id)`).
///
/// Reconnects are the client's work; the bridge reports disconnections as
/// `signal_bus::cluster` events, in [`stats`](NatsBridge::stats) and in
/// [`health`](NatsBridge::health). Dropping the bridge stops it;
/// [`shutdown`](NatsBridge::shutdown) also waits for the message in hand.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use signal_bus::{adapter::PubSub, cluster::NatsBridge, Bus};
///
/// let client = async_nats::connect("127.0.0.1:4222").await?;
/// let bus = Bus::builder().name("billing").node_id("billing-1").build()?;
/// bus.subscribe("invoice.**", PubSub::nats(client.clone()))?;   // out to the cluster
/// let bridge = NatsBridge::builder(client, &bus)                 // in from the cluster
///     .pattern("order.*")
///     .durable("SIGNALS", "billing")
///     .start()
///     .await?;
/// println!("{:?}", bridge.stats());
/// bridge.shutdown().await;
/// # Ok(()) }
/// ```
pub struct NatsBridge {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    subjects: Vec<String>,
    client: Client,
}

impl fmt::Debug for NatsBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBridge")
            .field("subjects", &self.subjects)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl NatsBridge {
    /// Starts building a bridge from NATS (through `client`) into `bus`.
    pub fn builder(client: Client, bus: &Bus) -> NatsBridgeBuilder {
        NatsBridgeBuilder {
            client,
            bus: bus.clone(),
            pattern: "**".to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            durable: None,
            confirm_wait: DEFAULT_CONFIRM_WAIT,
        }
    }

    /// The NATS subjects the bridge listens on.
    pub fn subjects(&self) -> &[String] {
        &self.subjects
    }

    /// What the bridge has seen so far.
    pub fn stats(&self) -> BridgeStats {
        let c = &self.shared.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BridgeStats {
            received: get(&c.received),
            republished: get(&c.republished),
            echoes: get(&c.echoes),
            filtered: get(&c.filtered),
            malformed: get(&c.malformed),
            failed: get(&c.failed),
            redeliveries: get(&c.redeliveries),
            abandoned: get(&c.abandoned),
            disconnects: get(&c.disconnects),
            reconnects: get(&c.reconnects),
            stream_errors: get(&c.stream_errors),
        }
    }

    /// Unhealthy while disconnected from NATS or stopped; degraded within 30 s of a
    /// JetStream stream error; healthy otherwise.
    pub fn health(&self) -> Health {
        if !self.shared.running.load(Ordering::Acquire) {
            return Health::unhealthy("bridge stopped");
        }
        match self.client.connection_state() {
            State::Connected => {}
            State::Pending => return Health::unhealthy("connecting to NATS"),
            State::Disconnected => return Health::unhealthy("disconnected from NATS"),
        }
        let last = self
            .shared
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match last {
            Some((at, message)) if at.elapsed() < Duration::from_secs(30) => {
                Health::degraded(message)
            }
            _ => Health::healthy(),
        }
    }

    /// Stops the bridge: finishes the message in hand, unsubscribes, and flushes the client
    /// so the last acknowledgements reach the server.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let _ = self.client.flush().await;
    }
}

impl Drop for NatsBridge {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// What to tell JetStream about a message.
enum Verdict {
    Ack,
    Term,
    Nak,
    /// The bus is closed: stop the bridge (the message is redelivered later).
    Stop,
}

struct Worker {
    bus: Bus,
    client: Client,
    statistics: Arc<async_nats::Statistics>,
    /// The client's connect count at the last look.
    last_connects: AtomicU64,
    /// Whether a disconnection was seen and its reconnection not yet.
    down_seen: AtomicBool,
    origin: OwnOrigin,
    prefix: String,
    pattern: Pattern,
    shared: Arc<Shared>,
}

impl Worker {
    async fn handle(&self, subject: &str, headers: Option<&HeaderMap>, payload: &[u8]) -> Verdict {
        let shared = &self.shared;
        shared.count(|c| &c.received);
        let signal = match decode(subject, headers, payload, &self.prefix, &self.origin) {
            Ok(Decoded::Signal(signal)) => signal,
            Ok(Decoded::Echo) => {
                shared.count(|c| &c.echoes);
                return Verdict::Ack;
            }
            Err(e) => {
                shared.count(|c| &c.malformed);
                telemetry::malformed(self.bus.name(), subject, &e);
                return Verdict::Term;
            }
        };
        if !self.pattern.matches(signal.ty()) {
            shared.count(|c| &c.filtered);
            return Verdict::Ack;
        }
        let signal = Arc::new(signal);
        let span = crate::trace::receive_span(&signal, "nats");
        match self.bus.publish(Arc::clone(&signal)).instrument(span).await {
            Ok(report) => {
                shared.count(|c| &c.republished);
                if report.is_ok() {
                    Verdict::Ack
                } else {
                    shared.count(|c| &c.failed);
                    telemetry::local_failure(
                        self.bus.name(),
                        signal.ty(),
                        signal.id(),
                        report.failed(),
                    );
                    Verdict::Nak
                }
            }
            Err(_) => Verdict::Stop,
        }
    }

    /// Notes connection changes in stats and telemetry. Reconnections come from the
    /// client's connect counter, so one that happened between two looks is counted too,
    /// with the disconnection before it.
    fn watch_connection(&self) {
        let connects = self.statistics.connects.load(Ordering::Relaxed);
        let before = self.last_connects.swap(connects, Ordering::AcqRel);
        let mut new = connects.saturating_sub(before);
        if before == 0 && new > 0 {
            // The first connection of a client that was still connecting at start.
            new -= 1;
            self.down_seen.store(false, Ordering::Release);
        }
        let connected = self.client.connection_state() == State::Connected;
        let stats = &self.shared.stats;
        if new > 0 {
            let unseen = new - u64::from(self.down_seen.swap(false, Ordering::AcqRel));
            if unseen > 0 {
                stats.disconnects.fetch_add(unseen, Ordering::Relaxed);
                telemetry::disconnected(self.bus.name());
            }
            stats.reconnects.fetch_add(new, Ordering::Relaxed);
            telemetry::reconnected(self.bus.name());
        }
        if !connected && !self.down_seen.swap(true, Ordering::AcqRel) {
            self.shared.count(|c| &c.disconnects);
            telemetry::disconnected(self.bus.name());
        }
    }

    async fn run_core(
        self,
        subscribers: Vec<async_nats::Subscriber>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut running = Running::new(&self, "stopped");
        let mut messages = futures_util::stream::select_all(subscribers);
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                _ = tick.tick() => self.watch_connection(),
                message = messages.next() => {
                    let Some(m) = message else { break };
                    if let Verdict::Stop =
                        self.handle(m.subject.as_str(), m.headers.as_ref(), &m.payload).await
                    {
                        running.reason = "the bus is closed";
                        break;
                    }
                }
            }
        }
        if running.reason == "stopped" && *stopped.borrow() {
            running.reason = "shut down";
        } else if running.reason == "stopped" {
            running.reason = "the NATS client closed the subscription";
        }
    }

    async fn run_durable(
        self,
        consumer: PullConsumer,
        d: Durable,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut running = Running::new(&self, "shut down");
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        'outer: loop {
            let mut messages = tokio::select! {
                _ = stopped.changed() => break 'outer,
                m = consumer.stream().max_messages_per_batch(PULL_BATCH).messages() => match m {
                    Ok(m) => m,
                    Err(e) => {
                        self.stream_error(&d, e.to_string());
                        tokio::select! {
                            _ = stopped.changed() => break 'outer,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue 'outer,
                        }
                    }
                },
            };
            loop {
                tokio::select! {
                    _ = stopped.changed() => break 'outer,
                    _ = tick.tick() => self.watch_connection(),
                    item = messages.next() => match item {
                        // The stream ended: open a new one, after a pause.
                        None => tokio::select! {
                            _ = stopped.changed() => break 'outer,
                            _ = tokio::time::sleep(Duration::from_millis(100)) => continue 'outer,
                        },
                        Some(Err(e)) => self.stream_error(&d, e.to_string()),
                        Some(Ok(m)) => {
                            let verdict = self
                                .handle(m.subject.as_str(), m.headers.as_ref(), &m.payload)
                                .await;
                            let ack = match verdict {
                                Verdict::Ack => AckKind::Ack,
                                Verdict::Term => AckKind::Term,
                                Verdict::Nak => {
                                    let delivered = m.info().map_or(1, |i| i.delivered.max(1));
                                    if delivered >= i64::from(d.max_deliver) {
                                        // JetStream would not redeliver it anyway: say so.
                                        self.shared.count(|c| &c.abandoned);
                                        telemetry::abandoned(
                                            self.bus.name(),
                                            m.subject.as_str(),
                                            delivered,
                                        );
                                        AckKind::Term
                                    } else {
                                        self.shared.count(|c| &c.redeliveries);
                                        AckKind::Nak(Some(redelivery_delay(&d, delivered)))
                                    }
                                }
                                Verdict::Stop => {
                                    let _ = m.ack_with(AckKind::Nak(None)).await;
                                    running.reason = "the bus is closed";
                                    break 'outer;
                                }
                            };
                            // A lost ack means a redelivery after `ack_wait`: at least once.
                            if let Err(e) = m.ack_with(ack).await {
                                self.shared.error(format!("acknowledgement failed: {e}"));
                            }
                        }
                    },
                }
            }
        }
        drop(running);
    }

    fn stream_error(&self, d: &Durable, message: String) {
        self.shared.count(|c| &c.stream_errors);
        telemetry::stream_error(self.bus.name(), &d.stream, &d.consumer, &message);
        self.shared.error(message);
    }
}

/// Marks the bridge stopped when its task ends, however it ends (a panic included), and
/// reports why.
struct Running<'a> {
    worker: &'a Worker,
    reason: &'static str,
}

impl<'a> Running<'a> {
    fn new(worker: &'a Worker, reason: &'static str) -> Self {
        Running { worker, reason }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let reason = if std::thread::panicking() {
            "the bridge task panicked"
        } else {
            self.reason
        };
        self.worker.shared.running.store(false, Ordering::Release);
        telemetry::stopped(self.worker.bus.name(), reason);
    }
}

/// `redelivery_delay * 2^(delivered-1)`, at most [`MAX_REDELIVERY_DELAY`].
fn redelivery_delay(d: &Durable, delivered: i64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(20);
    d.redelivery_delay
        .saturating_mul(1 << doublings)
        .min(MAX_REDELIVERY_DELAY.max(d.redelivery_delay))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redelivery_delay_doubles_up_to_the_cap() {
        let d = Durable {
            stream: "S".into(),
            consumer: "c".into(),
            create_stream: true,
            max_deliver: 10,
            ack_wait: Duration::from_secs(30),
            redelivery_delay: Duration::from_secs(1),
        };
        let delays: Vec<u64> = (1..=11)
            .map(|n| redelivery_delay(&d, n).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(redelivery_delay(&d, i64::MAX), MAX_REDELIVERY_DELAY);
    }
}
