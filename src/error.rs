//! Error types shared across the crate.
//!
//! Each area has its own error: [`SignalError`](crate::SignalError) for bad signals,
//! [`PatternError`](crate::PatternError) for bad patterns, [`ConfigError`] for a bad
//! configuration (found when a target or bus is built), [`BusError`] for what the bus refuses,
//! and [`DeliveryError`] for a delivery that failed. Every message names the bad value and the
//! rule it broke; none contains a secret.

use std::{error::Error as StdError, fmt, ops::Deref, sync::Arc, time::Duration};

use crate::{router::RouteError, PatternError};

/// The underlying error a crate error was caused by: a `reqwest`, `sqlx`, `std::io`,
/// `serde_json` or `async-nats` error, kept whole (shared, so errors that hold it stay
/// `Clone`).
///
/// The error holding it returns the underlying error itself from
/// [`source()`](std::error::Error::source), so `downcast_ref` finds its concrete type:
///
/// ```
/// use std::error::Error as _;
/// use signal_bus::{DeliveryError, ErrorKind};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let e = DeliveryError::transport(ErrorKind::Retryable, "cannot connect to the receiver", io);
/// let cause = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
/// assert_eq!(cause.map(std::io::Error::kind), Some(std::io::ErrorKind::ConnectionRefused));
/// ```
///
/// Errors that may carry a secret in their message (a `reqwest::Error` shows its URL, query
/// included) are stripped of it before they are kept.
#[derive(Clone)]
pub struct Cause(Arc<dyn StdError + Send + Sync + 'static>);

impl Cause {
    /// Keeps `error` as a cause.
    pub fn new(error: impl StdError + Send + Sync + 'static) -> Self {
        Cause(Arc::new(error))
    }

    /// The underlying error.
    pub fn get(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.0
    }
}

// Deliberately not `std::error::Error`: a `#[source]` field of this type derefs to the
// underlying error, so `source()` returns that error (not this wrapper) and `downcast_ref`
// to its concrete type works.
impl Deref for Cause {
    type Target = dyn StdError + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// Two causes are equal when they are the same error, or errors with the same message
/// (`std::error::Error` has no equality of its own); this keeps the errors holding a cause
/// comparable in tests.
impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause {}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

/// The innermost message of `error`'s `source()` chain (`error`'s own when it has none):
/// what a flattened message shows of a cause, e.g. "Connection refused (os error 111)".
#[cfg(feature = "http")]
pub(crate) fn innermost(error: &(dyn StdError + 'static)) -> String {
    let mut last = error;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// `n` and a noun, singular for exactly one: `count(1, "target", "targets")` is
/// "1 target", `count(3, ..)` "3 targets". Every message that counts things uses it.
pub(crate) fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// A configuration that cannot work: found at construction or at `subscribe`, before any I/O.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An option has a value outside its allowed range or form.
    #[error("invalid {option} `{value}`: {rule}")]
    Invalid {
        /// The option, e.g. `timeout`.
        option: &'static str,
        /// The offending value, rendered for humans (never a secret).
        value: String,
        /// The rule it broke.
        rule: String,
    },
    /// Several problems at once (a builder reports all of them).
    #[error("{}", join_errors(.0))]
    Many(Vec<ConfigError>),
}

fn join_errors(errors: &[ConfigError]) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

impl ConfigError {
    /// Every problem a validation found: `Ok` for none, the one problem, or
    /// [`ConfigError::Many`].
    pub(crate) fn from_problems(mut problems: Vec<ConfigError>) -> Result<(), ConfigError> {
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(ConfigError::Many(problems)),
        }
    }

    /// A shorthand for [`ConfigError::Invalid`].
    pub fn invalid(
        option: &'static str,
        value: impl fmt::Display,
        rule: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            option,
            value: value.to_string(),
            rule: rule.into(),
        }
    }
}

/// What the bus refuses: a bad pattern, an invalid target, an unknown subscription.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The subscription pattern does not parse.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// The priority is outside -100..=100.
    #[error("priority {value} is out of range -100..=100")]
    Priority {
        /// The rejected priority.
        value: i32,
    },
    /// A target failed validation.
    #[error("{}: {source}", invalid_target(target))]
    InvalidTarget {
        /// The adapter name of the target.
        target: String,
        /// What is wrong with it.
        #[source]
        source: ConfigError,
    },
    /// A subscription needs at least one target.
    #[error("subscription to `{pattern}` has no targets")]
    NoTargets {
        /// The pattern of the subscription.
        pattern: String,
    },
    /// No subscription with this id exists (never did, or already removed).
    #[error("subscription {id} does not exist")]
    UnknownSubscription {
        /// The id that was not found.
        id: u64,
    },
    /// A receiver name is invalid (empty, too long, or with control characters).
    #[error("receiver name `{name}` is invalid: {rule}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// A receiver is already registered under this name and is still open.
    #[error("name `{name}` is already registered")]
    NameTaken {
        /// The name in use.
        name: String,
    },
    /// A published signal's type has more segments than the bus routes
    /// (`BusBuilder::max_type_segments`).
    #[error(
        "signal type `{ty}` has {segments} segments, more than the limit of {max} this bus \
         routes (BusBuilder::max_type_segments)"
    )]
    TypeTooLong {
        /// The refused type (its first 128 bytes, then `...`).
        ty: String,
        /// Its number of segments.
        segments: usize,
        /// The bus's limit.
        max: usize,
    },
    /// The bus has been shut down and accepts no more signals.
    #[error("bus `{bus}` is shut down")]
    Closed {
        /// The bus name.
        bus: String,
    },
    /// A call that spawns a task was made outside a tokio runtime.
    #[error("{}", no_runtime(call))]
    NoRuntime {
        /// The call, e.g. `dispatch_async`.
        call: &'static str,
    },
    /// The bus's journal failed: for `publish`, the signal was not appended and not
    /// delivered.
    #[error("journal `{journal}`: {source}")]
    Journal {
        /// The journal's name.
        journal: String,
        /// What failed.
        #[source]
        source: JournalError,
    },
    /// The call needs a journal, and this bus has none (build it with
    /// `Bus::builder().journal(store)`).
    #[error("`{call}` needs a journal, and bus `{bus}` has none: build it with Bus::builder().journal(store)")]
    NoJournal {
        /// The call, e.g. `Bus::replay`.
        call: &'static str,
        /// The bus name.
        bus: String,
    },
    /// No persistent subscription of this name runs on this bus.
    #[error("persistent subscription `{name}` does not run on this bus (start it first)")]
    UnknownPersistent {
        /// The name.
        name: String,
    },
    /// A persistent subscription of this name already runs on this bus.
    #[error("persistent subscription `{name}` already runs on this bus (stop it first)")]
    PersistentTaken {
        /// The name.
        name: String,
    },
    /// A middleware's `before_publish` hook refused the signal (or panicked): nothing was
    /// delivered.
    #[error("middleware `{middleware}` refused the signal: {reason}")]
    Refused {
        /// The name of the middleware that refused it.
        middleware: String,
        /// Why, as the middleware said (or the panic message).
        reason: String,
    },
}

/// A journal operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The store could not be reached or written (the database's own message).
    #[error("journal store {backend} failed: {message}")]
    #[non_exhaustive]
    Store {
        /// `sqlite`, `postgres` or `memory`.
        backend: &'static str,
        /// What failed, with what the database said.
        message: String,
        /// The database's own error, when there is one.
        source: Option<Cause>,
    },
    /// A stored entry does not parse any more.
    #[error("corrupt journal entry {seq} in journal `{journal}`: {message}")]
    Corrupt {
        /// The journal.
        journal: String,
        /// The entry's sequence number.
        seq: u64,
        /// What is wrong.
        message: String,
    },
    /// An option is invalid.
    #[error("invalid journal option: {0}")]
    Invalid(#[from] ConfigError),
}

impl JournalError {
    /// A store failure described by `error`'s message.
    pub fn store(backend: &'static str, error: impl std::fmt::Display) -> Self {
        JournalError::Store {
            backend,
            message: error.to_string(),
            source: None,
        }
    }

    /// A store failure that keeps `error` as its [`source`](std::error::Error::source).
    pub fn store_caused(
        backend: &'static str,
        message: impl Into<String>,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        JournalError::Store {
            backend,
            message: message.into(),
            source: Some(Cause::new(error)),
        }
    }
}

/// What a call that spawns says when it finds no tokio runtime.
pub(crate) fn no_runtime(call: &str) -> String {
    format!(
        "`{call}` must be called inside a tokio runtime: it spawns a task (call it from async \
         code, or enter a runtime first with `Runtime::enter`)"
    )
}

/// The current tokio runtime, or the error naming `call` that needs one.
pub(crate) fn runtime_for(call: &'static str) -> Result<tokio::runtime::Handle, BusError> {
    tokio::runtime::Handle::try_current().map_err(|_| BusError::NoRuntime { call })
}

fn invalid_target(target: &str) -> String {
    if target.is_empty() {
        "a target with an empty name is invalid".to_owned()
    } else {
        format!("target `{target}` is invalid")
    }
}

impl From<RouteError> for BusError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::Pattern(p) => BusError::Pattern(p),
            RouteError::Priority { value } => BusError::Priority { value },
        }
    }
}

/// How a failed delivery should be treated by the retry layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A transient failure: timeouts, connect errors, 408, 5xx. Worth retrying.
    Retryable,
    /// The receiver asked us to slow down (429, 503 with `Retry-After`). Retry later.
    Throttled,
    /// The endpoint is gone for good (410): disable it.
    Gone,
    /// Retrying will not help: bad request, rejected, misconfigured, closed receiver.
    Permanent,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Retryable => "retryable",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Gone => "gone",
            ErrorKind::Permanent => "permanent",
        })
    }
}

/// A delivery that failed.
///
/// Built-in adapters return the specific variants; custom adapters usually build one with
/// [`DeliveryError::retryable`], [`DeliveryError::permanent`] or [`DeliveryError::throttled`].
/// [`is_retryable`](DeliveryError::is_retryable) and
/// [`retry_after`](DeliveryError::retry_after) tell the retry layer what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The delivery did not finish within the target's timeout.
    #[error("delivery timed out after {after:?}")]
    Timeout {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// A bounded channel had no free slot (non-waiting send).
    #[error("channel is full (capacity {capacity})")]
    ChannelFull {
        /// The channel's capacity.
        capacity: usize,
    },
    /// The receiving end of a channel was dropped.
    #[error("channel is closed: its receiver was dropped")]
    ChannelClosed,
    /// No receiver is registered under this name.
    #[error("no receiver is registered under the name `{name}`")]
    UnknownName {
        /// The name looked up.
        name: String,
    },
    /// The receiver registered under this name was dropped.
    #[error("the receiver registered as `{name}` was dropped")]
    ReceiverGone {
        /// The name looked up.
        name: String,
    },
    /// The adapter is not attached to a bus and has nothing to deliver to.
    #[error(
        "adapter `{adapter}` is not attached to a bus: subscribe it on a bus or give it a registry"
    )]
    Detached {
        /// The adapter name.
        adapter: String,
    },
    /// The receiver answered with an HTTP status that is not a success.
    #[error("{}", http_message(*.status, .body))]
    Http {
        /// The HTTP status code.
        status: u16,
        /// A short, bounded excerpt of the response body.
        body: String,
        /// What the receiver asked for in `Retry-After`, if anything.
        retry_after: Option<Duration>,
    },
    /// The adapter is gone for good (HTTP 410, or a disabled endpoint).
    #[error("endpoint is gone: {message}")]
    Gone {
        /// What happened.
        message: String,
    },
    /// The circuit breaker of this target is open: the endpoint was not called.
    #[error("circuit breaker is open for `{endpoint}`")]
    CircuitOpen {
        /// The endpoint whose breaker is open.
        endpoint: String,
    },
    /// Some endpoints of a multi-endpoint target (a webhook with several URLs) failed.
    #[error(
        "{} of {} failed: {}",
        failures.len(),
        count(*total, "endpoint", "endpoints"),
        join_endpoint_errors(.failures)
    )]
    Endpoints {
        /// How many endpoints were tried.
        total: usize,
        /// Each failed endpoint and why.
        failures: Vec<EndpointError>,
    },
    /// The target's async queue is full (overflow `Error`, or `Block` past the timeout).
    #[error("queue of target `{target}` is full (capacity {capacity})")]
    QueueFull {
        /// The target's name.
        target: String,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The target is shutting down and takes no more signals.
    #[error("target `{target}` is closed")]
    Closed {
        /// The target's name.
        target: String,
    },
    /// The adapter panicked while delivering; the panic was caught.
    #[error("adapter panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The receiver cannot take this signal as it is, and never will: its shape is not what
    /// the receiver's schema accepts. A durable forwarder cancels the job as
    /// `schema_mismatch` instead of retrying it (other permanent failures are retried
    /// with the job backoff, then discarded).
    #[error("schema mismatch: {message}")]
    SchemaMismatch {
        /// What does not match.
        message: String,
    },
    /// The receiver asked to wait longer than the target's retry policy allows (its
    /// `max_delay`, or what its `max_elapsed` leaves): the in-memory retries ended at once
    /// instead of retrying sooner than asked. Throttled; [`retry_after`](Self::retry_after)
    /// and [`not_before`](Self::not_before) give the time the receiver asked for.
    #[error(
        "receiver asked to wait {after:?}, more than the {allowed:?} the retry policy allows: \
         not retried before {}: {error}",
        not_before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )]
    RetryLater {
        /// The wait the receiver asked for (`Retry-After`).
        after: Duration,
        /// The longest wait the retry policy allowed at that point.
        allowed: Duration,
        /// When the receiver may be tried again: the failure's time plus `after`.
        not_before: chrono::DateTime<chrono::Utc>,
        /// The receiver's answer (e.g. HTTP 429).
        error: Box<DeliveryError>,
    },
    /// An [`HttpPool`](crate::http::HttpPool) had no free connection to the endpoint's host
    /// within its `pool_timeout` (all `max_connections` were busy). Retryable.
    #[error(
        "pool `{pool}` had no free connection to {host} within {waited:?} \
         (max_connections {max_connections})"
    )]
    PoolTimeout {
        /// The pool's name.
        pool: String,
        /// The host (and port) the request was for.
        host: String,
        /// How long the request waited for a connection (the pool's `pool_timeout`).
        waited: Duration,
        /// The pool's cap on connections per host.
        max_connections: usize,
    },
    /// The request could not be sent or its answer not read (a refused or reset connection,
    /// a TLS failure, a client that could not be built): [`source()`](std::error::Error::source)
    /// returns the transport's own error (a `reqwest::Error` without its URL, an
    /// `async_nats` error, a `std::io::Error`). The message names the endpoint (never its
    /// query or credentials) and the innermost cause.
    #[error("{message}")]
    #[non_exhaustive]
    Transport {
        /// How to treat it.
        kind: ErrorKind,
        /// What happened, for humans.
        message: String,
        /// The transport's error.
        source: Cause,
    },
    /// A middleware's `before_deliver` hook kept the signal from this target (or
    /// panicked): the adapter was not called. Permanent: not retried, not dead-lettered.
    #[error("middleware `{middleware}` skipped this target: {reason}")]
    Skipped {
        /// The name of the middleware that skipped the target.
        middleware: String,
        /// Why, as the middleware said (or the panic message).
        reason: String,
    },
    /// A failure with an explicit kind, from a custom adapter or a transport.
    #[error("{message}")]
    Other {
        /// How to treat it.
        kind: ErrorKind,
        /// What happened.
        message: String,
        /// Wait at least this long before retrying, when known.
        retry_after: Option<Duration>,
    },
}

/// One failed endpoint of a multi-endpoint delivery.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{endpoint}: {error}")]
#[non_exhaustive]
pub struct EndpointError {
    /// The endpoint (a URL without its query).
    pub endpoint: String,
    /// Why it failed.
    pub error: DeliveryError,
}

impl EndpointError {
    /// An endpoint's failure.
    pub fn new(endpoint: impl Into<String>, error: DeliveryError) -> Self {
        EndpointError {
            endpoint: endpoint.into(),
            error,
        }
    }
}

fn join_endpoint_errors(failures: &[EndpointError]) -> String {
    let parts: Vec<String> = failures.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

fn http_message(status: u16, body: &str) -> String {
    if body.is_empty() {
        format!("receiver answered HTTP {status}")
    } else {
        format!("receiver answered HTTP {status}: {body}")
    }
}

impl DeliveryError {
    /// A transient failure, worth retrying.
    pub fn retryable(message: impl fmt::Display) -> Self {
        DeliveryError::Other {
            kind: ErrorKind::Retryable,
            message: message.to_string(),
            retry_after: None,
        }
    }

    /// A failure that retrying will not fix.
    pub fn permanent(message: impl fmt::Display) -> Self {
        DeliveryError::Other {
            kind: ErrorKind::Permanent,
            message: message.to_string(),
            retry_after: None,
        }
    }

    /// The receiver will never accept this signal as it is (a schema mismatch): permanent,
    /// and a durable forwarder cancels the job as `schema_mismatch` rather than retrying it.
    pub fn schema_mismatch(message: impl fmt::Display) -> Self {
        DeliveryError::SchemaMismatch {
            message: message.to_string(),
        }
    }

    /// Whether the receiver said the signal does not match its schema.
    pub fn is_schema_mismatch(&self) -> bool {
        matches!(self, DeliveryError::SchemaMismatch { .. })
    }

    /// The receiver asked to slow down; retry after `after` if given.
    pub fn throttled(message: impl fmt::Display, after: Option<Duration>) -> Self {
        DeliveryError::Other {
            kind: ErrorKind::Throttled,
            message: message.to_string(),
            retry_after: after,
        }
    }

    /// A transport failure of `kind`: `message` for humans, `source` the transport's error
    /// (returned by [`source()`](std::error::Error::source)). Keep secrets out of both: a
    /// `reqwest::Error` should go through `without_url()` first.
    pub fn transport(
        kind: ErrorKind,
        message: impl fmt::Display,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        DeliveryError::Transport {
            kind,
            message: message.to_string(),
            source: Cause::new(source),
        }
    }

    /// How the retry layer should treat this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DeliveryError::Timeout { .. }
            | DeliveryError::QueueFull { .. }
            | DeliveryError::PoolTimeout { .. } => ErrorKind::Retryable,
            DeliveryError::RetryLater { .. } => ErrorKind::Throttled,
            DeliveryError::Closed { .. } => ErrorKind::Permanent,
            DeliveryError::ChannelFull { .. } => ErrorKind::Retryable,
            DeliveryError::ChannelClosed
            | DeliveryError::UnknownName { .. }
            | DeliveryError::ReceiverGone { .. }
            | DeliveryError::Detached { .. }
            | DeliveryError::Panicked { .. }
            | DeliveryError::Skipped { .. }
            | DeliveryError::SchemaMismatch { .. } => ErrorKind::Permanent,
            DeliveryError::Http {
                status,
                retry_after,
                ..
            } => classify_status(*status, retry_after.is_some()),
            DeliveryError::Gone { .. } => ErrorKind::Gone,
            // Worth retrying when any endpoint's failure is.
            DeliveryError::Endpoints { failures, .. } => {
                if failures.iter().any(|f| f.error.is_retryable()) {
                    ErrorKind::Retryable
                } else {
                    failures
                        .first()
                        .map_or(ErrorKind::Permanent, |f| f.error.kind())
                }
            }
            DeliveryError::CircuitOpen { .. } => ErrorKind::Throttled,
            DeliveryError::Other { kind, .. } | DeliveryError::Transport { kind, .. } => *kind,
        }
    }

    /// Whether a retry may succeed (retryable or throttled).
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Retryable | ErrorKind::Throttled)
    }

    /// Whether this failure was a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, DeliveryError::Timeout { .. })
    }

    /// How long the receiver asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Http { retry_after, .. } | DeliveryError::Other { retry_after, .. } => {
                *retry_after
            }
            DeliveryError::RetryLater { after, .. } => Some(*after),
            DeliveryError::Endpoints { failures, .. } => {
                failures.iter().filter_map(|f| f.error.retry_after()).max()
            }
            _ => None,
        }
    }

    /// When the receiver may be tried again, for a delivery whose in-memory retries ended
    /// because the receiver asked to wait longer than the retry policy allows
    /// ([`DeliveryError::RetryLater`]). `None` otherwise.
    pub fn not_before(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            DeliveryError::RetryLater { not_before, .. } => Some(*not_before),
            _ => None,
        }
    }

    /// The failure `error` whose receiver asked to wait `after`, longer than the `allowed`
    /// wait: not before now plus `after`.
    pub(crate) fn retry_later(error: DeliveryError, after: Duration, allowed: Duration) -> Self {
        let not_before = self::after(chrono::Utc::now(), after);
        DeliveryError::RetryLater {
            after,
            allowed,
            not_before,
            error: Box::new(error),
        }
    }
}

impl DeliveryError {
    /// Turns a caught panic payload into an error.
    pub(crate) fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_owned());
        DeliveryError::Panicked { message }
    }
}

/// Classifies an HTTP status for the retry layer: 408 and 5xx retryable, 429 (and 503 with
/// `Retry-After`) throttled, 410 gone, everything else that is not 2xx permanent.
pub fn classify_status(status: u16, has_retry_after: bool) -> ErrorKind {
    match status {
        429 => ErrorKind::Throttled,
        503 if has_retry_after => ErrorKind::Throttled,
        408 | 500..=599 => ErrorKind::Retryable,
        410 => ErrorKind::Gone,
        _ => ErrorKind::Permanent,
    }
}

/// `now + d`, saturating instead of overflowing.
pub(crate) fn after(
    now: chrono::DateTime<chrono::Utc>,
    d: std::time::Duration,
) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_of_statuses() {
        assert_eq!(classify_status(500, false), ErrorKind::Retryable);
        assert_eq!(classify_status(408, false), ErrorKind::Retryable);
        assert_eq!(classify_status(503, false), ErrorKind::Retryable);
        assert_eq!(classify_status(503, true), ErrorKind::Throttled);
        assert_eq!(classify_status(429, false), ErrorKind::Throttled);
        assert_eq!(classify_status(410, false), ErrorKind::Gone);
        assert_eq!(classify_status(400, false), ErrorKind::Permanent);
        assert_eq!(classify_status(302, false), ErrorKind::Permanent);
    }

    #[test]
    fn custom_errors_carry_their_kind() {
        assert!(DeliveryError::retryable("flaky").is_retryable());
        assert!(!DeliveryError::permanent("bad").is_retryable());
        let t = DeliveryError::throttled("slow down", Some(Duration::from_secs(3)));
        assert_eq!(t.kind(), ErrorKind::Throttled);
        assert_eq!(t.retry_after(), Some(Duration::from_secs(3)));
        assert!(DeliveryError::Timeout {
            after: Duration::from_secs(1)
        }
        .is_timeout());
    }

    #[test]
    fn config_error_names_value_and_rule() {
        let e = ConfigError::invalid("timeout", "90s", "must be at most 60s");
        assert_eq!(e.to_string(), "invalid timeout `90s`: must be at most 60s");
        let many = ConfigError::Many(vec![e.clone(), ConfigError::invalid("url", "x", "no host")]);
        assert!(many.to_string().contains("; invalid url `x`: no host"));
    }
}
