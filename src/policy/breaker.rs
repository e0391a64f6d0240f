//! Circuit breakers: stop calling an endpoint that keeps failing, and probe it now and then.
//!
//! [`CircuitBreaker`] is the configuration (per target); [`Breaker`] is the runtime state
//! shared by all deliveries to one endpoint. A delivery asks [`Breaker::try_acquire`] before
//! calling; on [`Rejected`] it fails fast with
//! [`DeliveryError::CircuitOpen`](crate::DeliveryError::CircuitOpen). Otherwise it reports the
//! outcome with [`Breaker::on_success`] or [`Breaker::on_failure`]. Every state change comes
//! back as a [`Transition`], for telemetry.
//!
//! ```text
//!          failures reach the threshold
//!          (or the failure rate trips)        recovery_timeout passed
//!  Closed ─────────────────────────────▶ Open ────────────────────────▶ HalfOpen
//!    ▲                                    ▲                                │
//!    │                                    └────── a probe fails ───────────┤
//!    └──────────────── half_open_max_calls probes succeed ─────────────────┘
//! ```

use std::{
    fmt,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::ConfigError;

const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_HALF_OPEN_MAX_CALLS: u32 = 1;
const MAX_RECOVERY_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
const MIN_RATE_WINDOW: Duration = Duration::from_secs(1);
/// The failure-rate window is counted in this many buckets.
const BUCKETS: u64 = 10;

/// Circuit breaker configuration for one target's endpoints.
///
/// Two rules open the circuit, and both may be active:
///
/// - **consecutive failures** (always on): `failure_threshold` failures in a row, with no
///   success in between;
/// - **failure rate** (off unless [`failure_rate`](CircuitBreaker::failure_rate) is set): over
///   the last `window`, at least `min_calls` calls of which at least `rate` failed.
///
/// Once open, every call fails fast for `recovery_timeout`; then up to `half_open_max_calls`
/// probe calls go through. When they all succeed the circuit closes; when one fails it opens
/// again for another `recovery_timeout`.
///
/// Setters never fail: they store the value, and [`validate`](CircuitBreaker::validate)
/// reports every problem at once (the bus calls it when a target is subscribed).
///
/// # Default
///
/// [`CircuitBreaker::new()`]: open after 5 consecutive failures, stay open 30 s, then let 1
/// probe through; no failure-rate rule.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use signal_bus::policy::{CircuitBreaker, CircuitState, Transition};
/// use tokio::time::Instant;
///
/// let config = CircuitBreaker::new()
///     .failure_threshold(5)
///     .recovery_timeout(Duration::from_secs(60))
///     .half_open_max_calls(3);
/// config.validate().unwrap();
/// let breaker = config.build();
///
/// let t0 = Instant::now();
/// for _ in 0..5 {
///     let permit = breaker.try_acquire(t0).unwrap();
///     breaker.on_failure(permit, t0);
/// }
/// assert_eq!(breaker.state(), CircuitState::Open);
/// assert!(breaker.try_acquire(t0 + Duration::from_secs(59)).is_err()); // fail fast
///
/// // After the recovery timeout, 3 probes go through; a 4th waits.
/// let later = t0 + Duration::from_secs(61);
/// let probes: Vec<_> = (0..3).map(|_| breaker.try_acquire(later).unwrap()).collect();
/// assert_eq!(
///     probes[0].transition(),
///     Some(Transition { from: CircuitState::Open, to: CircuitState::HalfOpen }),
/// );
/// assert!(breaker.try_acquire(later).is_err());
/// let mut closed = None;
/// for probe in probes {
///     closed = breaker.on_success(probe, later);
/// }
/// assert_eq!(closed, Some(Transition { from: CircuitState::HalfOpen, to: CircuitState::Closed }));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    recovery_timeout: Duration,
    half_open_max_calls: u32,
    failure_rate: Option<FailureRate>,
}

/// The optional failure-rate rule.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FailureRate {
    rate: f64,
    window: Duration,
    min_calls: u32,
}

impl Default for CircuitBreaker {
    /// The same as [`CircuitBreaker::new`].
    fn default() -> Self {
        CircuitBreaker::new()
    }
}

impl CircuitBreaker {
    /// A breaker configuration with the defaults.
    ///
    /// # Default
    ///
    /// `failure_threshold` 5, `recovery_timeout` 30 s, `half_open_max_calls` 1, no
    /// failure-rate rule.
    pub fn new() -> Self {
        CircuitBreaker {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            recovery_timeout: DEFAULT_RECOVERY_TIMEOUT,
            half_open_max_calls: DEFAULT_HALF_OPEN_MAX_CALLS,
            failure_rate: None,
        }
    }

    /// Open after this many consecutive failures (a success resets the count).
    ///
    /// # Default
    ///
    /// 5. Must be at least 1.
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }

    /// How long the circuit stays open (every call failing fast) before probing.
    ///
    /// # Default
    ///
    /// 30 s. Must be greater than zero and at most 24 h.
    pub fn recovery_timeout(mut self, d: Duration) -> Self {
        self.recovery_timeout = d;
        self
    }

    /// How many probe calls go through in the half-open state; all must succeed to close.
    ///
    /// # Default
    ///
    /// 1. Must be at least 1.
    pub fn half_open_max_calls(mut self, n: u32) -> Self {
        self.half_open_max_calls = n;
        self
    }

    /// Also open when, over the last `window`, there were at least `min_calls` calls and at
    /// least `rate` of them failed (`0.5` = half). Calls are counted in 10 buckets of
    /// `window / 10`, so the window slides in those steps.
    ///
    /// # Default
    ///
    /// Off. When set: `rate` in `(0, 1]`, `window` at least 1 s (and at most 24 h),
    /// `min_calls` at least 1.
    pub fn failure_rate(mut self, rate: f64, window: Duration, min_calls: u32) -> Self {
        self.failure_rate = Some(FailureRate {
            rate,
            window,
            min_calls,
        });
        self
    }

    /// The consecutive-failure threshold.
    /// Whether a failure-rate rule is set (then every call is timed, so the rate window
    /// sees successes as well as failures).
    pub fn has_failure_rate(&self) -> bool {
        self.failure_rate.is_some()
    }

    /// The consecutive-failure threshold.
    pub fn get_failure_threshold(&self) -> u32 {
        self.failure_threshold
    }

    /// How long the circuit stays open before probing.
    pub fn get_recovery_timeout(&self) -> Duration {
        self.recovery_timeout
    }

    /// How many probes the half-open state lets through.
    pub fn get_half_open_max_calls(&self) -> u32 {
        self.half_open_max_calls
    }

    /// Checks every rule and reports every problem: one [`ConfigError::Invalid`], or
    /// [`ConfigError::Many`] when there are several.
    ///
    /// # Errors
    ///
    /// - `failure_threshold` or `half_open_max_calls` of 0;
    /// - `recovery_timeout` of zero or above 24 h;
    /// - a failure rate outside `(0, 1]` (NaN included), a window below 1 s or above 24 h, or
    ///   `min_calls` of 0.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        if self.failure_threshold == 0 {
            errors.push(ConfigError::invalid(
                "failure_threshold",
                0,
                "must be at least 1",
            ));
        }
        if self.recovery_timeout.is_zero() {
            errors.push(ConfigError::invalid(
                "recovery_timeout",
                format!("{:?}", self.recovery_timeout),
                "must be greater than zero",
            ));
        } else if self.recovery_timeout > MAX_RECOVERY_TIMEOUT {
            errors.push(ConfigError::invalid(
                "recovery_timeout",
                format!("{:?}", self.recovery_timeout),
                "must be at most 24h",
            ));
        }
        if self.half_open_max_calls == 0 {
            errors.push(ConfigError::invalid(
                "half_open_max_calls",
                0,
                "must be at least 1",
            ));
        }
        if let Some(r) = self.failure_rate {
            if !(r.rate > 0.0 && r.rate <= 1.0) {
                errors.push(ConfigError::invalid(
                    "failure_rate",
                    r.rate,
                    "must be in (0, 1]",
                ));
            }
            if r.window < MIN_RATE_WINDOW || r.window > MAX_RECOVERY_TIMEOUT {
                errors.push(ConfigError::invalid(
                    "failure_rate window",
                    format!("{:?}", r.window),
                    "must be between 1s and 24h",
                ));
            }
            if r.min_calls == 0 {
                errors.push(ConfigError::invalid(
                    "failure_rate min_calls",
                    0,
                    "must be at least 1",
                ));
            }
        }
        ConfigError::from_problems(errors)
    }

    /// A fresh breaker (closed) with this configuration.
    ///
    /// Out-of-range values that [`validate`](CircuitBreaker::validate) would reject are
    /// clamped rather than panicking: a threshold or probe count of 0 acts as 1.
    pub fn build(&self) -> Breaker {
        Breaker::new(self.clone())
    }
}

/// The state of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls fail fast without reaching the endpoint.
    Open,
    /// A few probe calls go through to test whether the endpoint has recovered.
    HalfOpen,
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        })
    }
}

/// A change of state, reported once, for telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: CircuitState,
    /// The state after.
    pub to: CircuitState,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.from, self.to)
    }
}

/// Leave to make one call, from [`Breaker::try_acquire`]. Give it back with
/// [`Breaker::on_success`] or [`Breaker::on_failure`].
///
/// A permit dropped without being reported is harmless in the closed state; in the half-open
/// state its probe slot is lost until the breaker starts a new round of probes (after another
/// `recovery_timeout`).
#[derive(Debug)]
#[must_use = "report the call's outcome with Breaker::on_success or Breaker::on_failure"]
pub struct Permit {
    /// The breaker's state word (state and generation) when this permit was issued.
    word: u32,
    transition: Option<Transition>,
}

impl Permit {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        state_of(self.word) == CircuitState::HalfOpen
    }

    /// The transition that issuing this permit caused (`Open -> HalfOpen` for the first probe
    /// after the recovery timeout), if any.
    pub fn transition(&self) -> Option<Transition> {
        self.transition
    }
}

/// The breaker refused a call: fail fast without calling the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is {state}: retry in {remaining:?}")]
pub struct Rejected {
    state: CircuitState,
    remaining: Duration,
}

impl Rejected {
    /// The state that refused the call: open, or half-open with all its probes in flight.
    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// How long until the breaker lets a call through again, at the earliest.
    pub fn remaining(&self) -> Duration {
        self.remaining
    }
}

// The state word: the state in the low 2 bits, a generation (bumped on every transition) above.
const CLOSED: u32 = 0;
const OPEN: u32 = 1;
const HALF_OPEN: u32 = 2;
const STATE_MASK: u32 = 0b11;
const GENERATION_ONE: u32 = 0b100;

fn state_of(word: u32) -> CircuitState {
    match word & STATE_MASK {
        CLOSED => CircuitState::Closed,
        OPEN => CircuitState::Open,
        _ => CircuitState::HalfOpen,
    }
}

/// The runtime state of one circuit, shared by the deliveries to one endpoint (`Send + Sync`;
/// put it in an `Arc`).
///
/// In the closed state with no failures, [`try_acquire`](Breaker::try_acquire) and
/// [`on_success`](Breaker::on_success) are a few atomic loads: no lock, no allocation, no
/// clock read (with a failure-rate rule, one atomic add per call more). A lock is taken only
/// for the failure that opens the circuit, and in the open and half-open states.
///
/// Permits carry the generation of the state that issued them, so an outcome that arrives
/// after the state changed does not corrupt the counts: a stale failure is ignored, a stale
/// success does not count as a probe.
pub struct Breaker {
    config: CircuitBreaker,
    /// State and generation; written only with `inner` locked.
    word: AtomicU32,
    /// Consecutive failures in the current closed generation.
    failures: AtomicU32,
    window: Option<Window>,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// When the circuit last opened (Open) or the current round of probes began (HalfOpen).
    since: Instant,
    probes_issued: u32,
    probes_succeeded: u32,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("state", &self.state())
            .field("failures", &self.failures.load(Ordering::Relaxed))
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Breaker {
    /// A closed breaker with this configuration (see [`CircuitBreaker::build`]).
    pub fn new(config: CircuitBreaker) -> Self {
        let now = Instant::now();
        let window = config
            .failure_rate
            .map(|r| Window::new(now, r.window.max(Duration::from_millis(1))));
        Breaker {
            config,
            word: AtomicU32::new(CLOSED),
            failures: AtomicU32::new(0),
            window,
            inner: Mutex::new(Inner {
                since: now,
                probes_issued: 0,
                probes_succeeded: 0,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CircuitBreaker {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        state_of(self.word.load(Ordering::Acquire))
    }

    /// Asks to make a call at `now`.
    ///
    /// Closed: always granted. Open: rejected until `recovery_timeout` has passed since the
    /// circuit opened; then the breaker turns half-open (reported by
    /// [`Permit::transition`]) and the call is its first probe. Half-open: granted as a probe
    /// while fewer than `half_open_max_calls` probes were issued, else rejected. If a round of
    /// probes has not settled after another `recovery_timeout` (permits dropped unreported), a
    /// new round begins.
    ///
    /// # Errors
    ///
    /// [`Rejected`] when the call must fail fast without reaching the endpoint.
    pub fn try_acquire(&self, now: Instant) -> Result<Permit, Rejected> {
        let word = self.word.load(Ordering::Acquire);
        if word & STATE_MASK == CLOSED {
            return Ok(Permit {
                word,
                transition: None,
            });
        }
        self.acquire_slow(now)
    }

    #[cold]
    fn acquire_slow(&self, now: Instant) -> Result<Permit, Rejected> {
        let mut inner = self.lock();
        let word = self.word.load(Ordering::Acquire);
        let recovery = self.config.recovery_timeout;
        let elapsed = now.saturating_duration_since(inner.since);
        match word & STATE_MASK {
            CLOSED => Ok(Permit {
                word,
                transition: None,
            }),
            OPEN if elapsed < recovery => Err(Rejected {
                state: CircuitState::Open,
                remaining: recovery - elapsed,
            }),
            OPEN => {
                let word = self.start_probes(&mut inner, word, now);
                Ok(Permit {
                    word,
                    transition: Some(Transition {
                        from: CircuitState::Open,
                        to: CircuitState::HalfOpen,
                    }),
                })
            }
            _ if inner.probes_issued < self.config.half_open_max_calls.max(1) => {
                inner.probes_issued += 1;
                Ok(Permit {
                    word,
                    transition: None,
                })
            }
            // Every probe slot is taken. If the round is older than the recovery timeout,
            // its permits were most likely dropped: start a new round.
            _ if elapsed >= recovery => {
                let word = self.start_probes(&mut inner, word, now);
                Ok(Permit {
                    word,
                    transition: None,
                })
            }
            _ => Err(Rejected {
                state: CircuitState::HalfOpen,
                remaining: recovery - elapsed,
            }),
        }
    }

    /// Enters (or restarts) the half-open state, issuing the first probe. `inner` is locked.
    fn start_probes(&self, inner: &mut Inner, word: u32, now: Instant) -> u32 {
        let word = next_word(word, HALF_OPEN);
        self.word.store(word, Ordering::Release);
        inner.since = now;
        inner.probes_issued = 1;
        inner.probes_succeeded = 0;
        word
    }

    /// Reports that the call made with `permit` succeeded at `now`. Returns the transition it
    /// caused, if any (`HalfOpen -> Closed` when the last probe succeeds).
    pub fn on_success(&self, permit: Permit, now: Instant) -> Option<Transition> {
        match permit.word & STATE_MASK {
            CLOSED => {
                if let Some(window) = &self.window {
                    if self.word.load(Ordering::Acquire) == permit.word {
                        window.record(now, false);
                    }
                }
                if self.failures.load(Ordering::Relaxed) != 0
                    && self.word.load(Ordering::Acquire) == permit.word
                {
                    self.failures.store(0, Ordering::Relaxed);
                }
                None
            }
            HALF_OPEN => {
                let mut inner = self.lock();
                if self.word.load(Ordering::Acquire) != permit.word {
                    return None; // a probe of an earlier round
                }
                inner.probes_succeeded += 1;
                if inner.probes_succeeded < self.config.half_open_max_calls.max(1) {
                    return None;
                }
                self.failures.store(0, Ordering::Relaxed);
                if let Some(window) = &self.window {
                    window.clear();
                }
                inner.since = now;
                inner.probes_issued = 0;
                inner.probes_succeeded = 0;
                self.word
                    .store(next_word(permit.word, CLOSED), Ordering::Release);
                Some(Transition {
                    from: CircuitState::HalfOpen,
                    to: CircuitState::Closed,
                })
            }
            _ => None, // never issued in the open state
        }
    }

    /// Reports that the call made with `permit` failed at `now`. Returns the transition it
    /// caused, if any (`Closed -> Open` when a rule trips, `HalfOpen -> Open` for a probe).
    pub fn on_failure(&self, permit: Permit, now: Instant) -> Option<Transition> {
        match permit.word & STATE_MASK {
            CLOSED => {
                if self.word.load(Ordering::Acquire) != permit.word {
                    return None; // issued before the circuit opened
                }
                let failures = self
                    .failures
                    .fetch_add(1, Ordering::AcqRel)
                    .saturating_add(1);
                let mut trip = failures >= self.config.failure_threshold;
                if let (Some(window), Some(rule)) = (&self.window, self.config.failure_rate) {
                    window.record(now, true);
                    if !trip {
                        let (calls, failed) = window.totals(now);
                        trip = calls >= u64::from(rule.min_calls.max(1))
                            && failed as f64 >= rule.rate * calls as f64;
                    }
                }
                if !trip {
                    return None;
                }
                let mut inner = self.lock();
                if self.word.load(Ordering::Acquire) != permit.word {
                    return None; // another failure opened it first
                }
                self.open(&mut inner, permit.word, now);
                Some(Transition {
                    from: CircuitState::Closed,
                    to: CircuitState::Open,
                })
            }
            HALF_OPEN => {
                let mut inner = self.lock();
                if self.word.load(Ordering::Acquire) != permit.word {
                    return None; // a probe of an earlier round
                }
                self.open(&mut inner, permit.word, now);
                Some(Transition {
                    from: CircuitState::HalfOpen,
                    to: CircuitState::Open,
                })
            }
            _ => None,
        }
    }

    /// Opens the circuit from the state `word`. `inner` is locked.
    fn open(&self, inner: &mut Inner, word: u32, now: Instant) {
        inner.since = now;
        inner.probes_issued = 0;
        inner.probes_succeeded = 0;
        self.word.store(next_word(word, OPEN), Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The word of the next generation in `state`.
fn next_word(word: u32, state: u32) -> u32 {
    (word & !STATE_MASK).wrapping_add(GENERATION_ONE) | state
}

/// Calls and failures over a sliding window, in lock-free buckets.
///
/// Each bucket counts one time slot of `window / BUCKETS`; bucket `slot % BUCKETS` is reused
/// when its slot is too old. A call racing with the reset of its bucket may go uncounted: the
/// rate is a statistic, not a ledger.
#[derive(Debug)]
struct Window {
    origin: Instant,
    slot_nanos: u128,
    buckets: Box<[Bucket]>,
}

#[derive(Debug, Default)]
struct Bucket {
    /// The time slot this bucket counts.
    slot: AtomicU64,
    /// Calls in the low 32 bits, failures in the high 32 bits.
    counts: AtomicU64,
}

const ONE_CALL: u64 = 1;
const ONE_FAILURE: u64 = 1 << 32;

impl Window {
    fn new(origin: Instant, window: Duration) -> Self {
        Window {
            origin,
            slot_nanos: (window.as_nanos() / u128::from(BUCKETS)).max(1),
            buckets: (0..BUCKETS).map(|_| Bucket::default()).collect(),
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos / self.slot_nanos).unwrap_or(u64::MAX)
    }

    fn record(&self, now: Instant, failure: bool) {
        let slot = self.slot(now);
        let bucket = &self.buckets[(slot % BUCKETS) as usize];
        let held = bucket.slot.load(Ordering::Acquire);
        if held != slot {
            if held > slot {
                return; // an outcome older than the window
            }
            if bucket
                .slot
                .compare_exchange(held, slot, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                bucket.counts.store(0, Ordering::Release);
            }
        }
        let add = if failure {
            ONE_CALL + ONE_FAILURE
        } else {
            ONE_CALL
        };
        bucket.counts.fetch_add(add, Ordering::AcqRel);
    }

    /// (calls, failures) over the window ending at `now`.
    fn totals(&self, now: Instant) -> (u64, u64) {
        let slot = self.slot(now);
        let (mut calls, mut failures) = (0, 0);
        for bucket in self.buckets.iter() {
            let held = bucket.slot.load(Ordering::Acquire);
            if held <= slot && slot - held < BUCKETS {
                let counts = bucket.counts.load(Ordering::Acquire);
                calls += counts & 0xFFFF_FFFF;
                failures += counts >> 32;
            }
        }
        (calls, failures)
    }

    fn clear(&self) {
        for bucket in self.buckets.iter() {
            bucket.counts.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    const CLOSE: Transition = Transition {
        from: CircuitState::HalfOpen,
        to: CircuitState::Closed,
    };
    const TRIP: Transition = Transition {
        from: CircuitState::Closed,
        to: CircuitState::Open,
    };
    const REOPEN: Transition = Transition {
        from: CircuitState::HalfOpen,
        to: CircuitState::Open,
    };
    const PROBE: Transition = Transition {
        from: CircuitState::Open,
        to: CircuitState::HalfOpen,
    };

    fn fail(b: &Breaker, now: Instant) -> Option<Transition> {
        let p = b.try_acquire(now).expect("permit");
        b.on_failure(p, now)
    }

    fn succeed(b: &Breaker, now: Instant) -> Option<Transition> {
        let p = b.try_acquire(now).expect("permit");
        b.on_success(p, now)
    }

    #[test]
    fn defaults_and_accessors() {
        let c = CircuitBreaker::default();
        assert_eq!(c, CircuitBreaker::new());
        assert_eq!(c.get_failure_threshold(), 5);
        assert_eq!(c.get_recovery_timeout(), secs(30));
        assert_eq!(c.get_half_open_max_calls(), 1);
        c.validate().unwrap();
        let b = c.build();
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.config(), &c);
        assert!(format!("{b:?}").contains("Closed"));
    }

    #[test]
    fn the_api_example_compiles() {
        let c = CircuitBreaker::new()
            .failure_threshold(5)
            .recovery_timeout(secs(60))
            .half_open_max_calls(3);
        c.validate().unwrap();
        assert_eq!(c.get_half_open_max_calls(), 3);
    }

    #[test]
    fn display() {
        assert_eq!(CircuitState::Closed.to_string(), "closed");
        assert_eq!(CircuitState::Open.to_string(), "open");
        assert_eq!(CircuitState::HalfOpen.to_string(), "half-open");
        assert_eq!(TRIP.to_string(), "closed -> open");
    }

    #[test]
    fn opens_exactly_at_the_threshold() {
        let b = CircuitBreaker::new().failure_threshold(3).build();
        let t0 = Instant::now();
        assert_eq!(fail(&b, t0), None);
        assert_eq!(fail(&b, t0), None);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(fail(&b, t0), Some(TRIP));
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let b = CircuitBreaker::new().failure_threshold(3).build();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(fail(&b, t0), None);
            assert_eq!(fail(&b, t0), None);
            assert_eq!(succeed(&b, t0), None);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(fail(&b, t0), Some(TRIP));
    }

    #[test]
    fn rejects_while_open() {
        let b = CircuitBreaker::new()
            .failure_threshold(1)
            .recovery_timeout(secs(60))
            .build();
        let t0 = Instant::now();
        assert_eq!(fail(&b, t0), Some(TRIP));
        let r = b.try_acquire(t0 + secs(10)).unwrap_err();
        assert_eq!(r.state(), CircuitState::Open);
        assert_eq!(r.remaining(), secs(50));
        assert_eq!(r.to_string(), "circuit breaker is open: retry in 50s");
        assert!(b.try_acquire(t0 + secs(59)).is_err());
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn half_open_lets_exactly_max_calls_probes_through_then_closes() {
        let b = CircuitBreaker::new()
            .failure_threshold(5)
            .recovery_timeout(secs(60))
            .half_open_max_calls(3)
            .build();
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(fail(&b, t0), None);
        }
        assert_eq!(fail(&b, t0), Some(TRIP));
        let t1 = t0 + secs(61);
        let p1 = b.try_acquire(t1).unwrap();
        assert_eq!(p1.transition(), Some(PROBE));
        assert!(p1.is_probe());
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let p2 = b.try_acquire(t1).unwrap();
        let p3 = b.try_acquire(t1).unwrap();
        assert_eq!(p2.transition(), None);
        let r = b.try_acquire(t1).unwrap_err();
        assert_eq!(r.state(), CircuitState::HalfOpen);
        assert_eq!(b.on_success(p1, t1), None);
        assert_eq!(b.on_success(p2, t1), None);
        assert!(
            b.try_acquire(t1).is_err(),
            "still only 3 probes in this round"
        );
        assert_eq!(b.on_success(p3, t1), Some(CLOSE));
        assert_eq!(b.state(), CircuitState::Closed);
        let p = b.try_acquire(t1).unwrap();
        assert!(!p.is_probe());
        assert_eq!(b.on_success(p, t1), None);
        // Counters were reset: it takes 5 failures again.
        for _ in 0..4 {
            assert_eq!(fail(&b, t1), None);
        }
        assert_eq!(fail(&b, t1), Some(TRIP));
    }

    #[test]
    fn a_probe_failure_reopens_with_a_new_timer() {
        let b = CircuitBreaker::new()
            .failure_threshold(1)
            .recovery_timeout(secs(60))
            .half_open_max_calls(2)
            .build();
        let t0 = Instant::now();
        fail(&b, t0);
        let t1 = t0 + secs(60);
        let p1 = b.try_acquire(t1).unwrap();
        let p2 = b.try_acquire(t1).unwrap();
        assert_eq!(b.on_success(p1, t1), None);
        let t2 = t1 + secs(5);
        assert_eq!(b.on_failure(p2, t2), Some(REOPEN));
        assert_eq!(b.state(), CircuitState::Open);
        // The timer restarted at t2.
        let r = b.try_acquire(t2 + secs(59)).unwrap_err();
        assert_eq!(r.remaining(), secs(1));
        let p = b.try_acquire(t2 + secs(60)).unwrap();
        assert_eq!(p.transition(), Some(PROBE));
        assert_eq!(b.on_failure(p, t2 + secs(60)), Some(REOPEN));
    }

    #[test]
    fn stale_permits_do_not_corrupt_counts() {
        let b = CircuitBreaker::new()
            .failure_threshold(2)
            .recovery_timeout(secs(10))
            .half_open_max_calls(2)
            .build();
        let t0 = Instant::now();
        // Two calls in flight while closed; a third pair of failures opens the circuit.
        let stale_ok = b.try_acquire(t0).unwrap();
        let stale_err = b.try_acquire(t0).unwrap();
        fail(&b, t0);
        assert_eq!(fail(&b, t0), Some(TRIP));
        // A stale failure while open changes nothing.
        assert_eq!(b.on_failure(stale_err, t0), None);
        assert_eq!(b.state(), CircuitState::Open);
        let t1 = t0 + secs(10);
        let probe = b.try_acquire(t1).unwrap();
        // A stale success while half-open is not a probe.
        assert_eq!(b.on_success(stale_ok, t1), None);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(b.on_success(probe, t1), None, "one probe of two");
        let probe2 = b.try_acquire(t1).unwrap();
        assert_eq!(b.on_success(probe2, t1), Some(CLOSE));

        // A permit from an earlier closed generation is ignored after re-closing.
        let b = CircuitBreaker::new()
            .failure_threshold(1)
            .recovery_timeout(secs(10))
            .build();
        let old = b.try_acquire(t0).unwrap();
        fail(&b, t0);
        succeed(&b, t0 + secs(10));
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.on_failure(old, t0 + secs(11)), None);
        assert_eq!(b.state(), CircuitState::Closed);

        // A probe of an earlier round does not count in the next one.
        let b = CircuitBreaker::new()
            .failure_threshold(1)
            .recovery_timeout(secs(10))
            .half_open_max_calls(2)
            .build();
        fail(&b, t0);
        let old_probe = b.try_acquire(t0 + secs(10)).unwrap();
        let failing = b.try_acquire(t0 + secs(10)).unwrap();
        assert_eq!(b.on_failure(failing, t0 + secs(10)), Some(REOPEN));
        let p = b.try_acquire(t0 + secs(20)).unwrap();
        assert_eq!(b.on_success(old_probe, t0 + secs(20)), None);
        assert_eq!(b.on_success(p, t0 + secs(20)), None, "1 of 2");
        assert_eq!(b.state(), CircuitState::HalfOpen);
    }

    #[test]
    fn dropped_probes_are_replaced_after_a_recovery_timeout() {
        let b = CircuitBreaker::new()
            .failure_threshold(1)
            .recovery_timeout(secs(10))
            .build();
        let t0 = Instant::now();
        fail(&b, t0);
        let lost = b.try_acquire(t0 + secs(10)).unwrap();
        drop(lost);
        let r = b.try_acquire(t0 + secs(15)).unwrap_err();
        assert_eq!(r.remaining(), secs(5));
        let p = b.try_acquire(t0 + secs(20)).unwrap();
        assert!(p.is_probe());
        assert_eq!(p.transition(), None);
        assert_eq!(b.on_success(p, t0 + secs(20)), Some(CLOSE));
    }

    #[test]
    fn failure_rate_respects_min_calls_and_opens_at_the_rate() {
        let b = CircuitBreaker::new()
            .failure_threshold(1000)
            .failure_rate(0.5, secs(10), 10)
            .build();
        let t0 = Instant::now();
        // 4 failures of 4 calls: 100 %, but below min_calls.
        for _ in 0..4 {
            assert_eq!(fail(&b, t0), None);
            assert_eq!(succeed(&b, t0), None);
        }
        // 8 calls, 4 failed. One more success (9 calls), then a failure: 10 calls, 5 failed.
        assert_eq!(succeed(&b, t0), None);
        assert_eq!(fail(&b, t0 + secs(1)), Some(TRIP));
    }

    #[test]
    fn failure_rate_below_the_rate_stays_closed() {
        let b = CircuitBreaker::new()
            .failure_threshold(1000)
            .failure_rate(0.5, secs(10), 4)
            .build();
        let t0 = Instant::now();
        for _ in 0..50 {
            succeed(&b, t0);
            succeed(&b, t0);
            assert_eq!(fail(&b, t0), None);
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn failure_rate_forgets_calls_outside_the_window() {
        let b = CircuitBreaker::new()
            .failure_threshold(1000)
            .failure_rate(0.5, secs(10), 4)
            .build();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(fail(&b, t0), None);
        }
        // 20 s later the old failures are gone: 1 failure of 1 call, below min_calls.
        let t1 = t0 + secs(20);
        assert_eq!(fail(&b, t1), None);
        assert_eq!(fail(&b, t1), None);
        assert_eq!(fail(&b, t1), None);
        assert_eq!(fail(&b, t1), Some(TRIP));
    }

    #[test]
    fn both_rules_can_trip() {
        let b = CircuitBreaker::new()
            .failure_threshold(3)
            .failure_rate(0.9, secs(60), 100)
            .build();
        let t0 = Instant::now();
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(fail(&b, t0), Some(TRIP), "the consecutive rule");
    }

    #[test]
    fn validate_reports_each_rule() {
        let msg = |c: CircuitBreaker| c.validate().unwrap_err().to_string();
        assert_eq!(
            msg(CircuitBreaker::new().failure_threshold(0)),
            "invalid failure_threshold `0`: must be at least 1"
        );
        assert_eq!(
            msg(CircuitBreaker::new().half_open_max_calls(0)),
            "invalid half_open_max_calls `0`: must be at least 1"
        );
        assert_eq!(
            msg(CircuitBreaker::new().recovery_timeout(Duration::ZERO)),
            "invalid recovery_timeout `0ns`: must be greater than zero"
        );
        assert_eq!(
            msg(CircuitBreaker::new().recovery_timeout(secs(86_401))),
            "invalid recovery_timeout `86401s`: must be at most 24h"
        );
        CircuitBreaker::new()
            .recovery_timeout(secs(86_400))
            .validate()
            .unwrap();
        assert_eq!(
            msg(CircuitBreaker::new().failure_rate(1.5, secs(10), 5)),
            "invalid failure_rate `1.5`: must be in (0, 1]"
        );
        assert_eq!(
            msg(CircuitBreaker::new().failure_rate(f64::NAN, secs(10), 5)),
            "invalid failure_rate `NaN`: must be in (0, 1]"
        );
        assert_eq!(
            msg(CircuitBreaker::new().failure_rate(0.5, Duration::from_millis(500), 5)),
            "invalid failure_rate window `500ms`: must be between 1s and 24h"
        );
        assert_eq!(
            msg(CircuitBreaker::new().failure_rate(0.5, secs(10), 0)),
            "invalid failure_rate min_calls `0`: must be at least 1"
        );
        CircuitBreaker::new()
            .failure_rate(1.0, secs(1), 1)
            .validate()
            .unwrap();
        let all = CircuitBreaker::new()
            .failure_threshold(0)
            .recovery_timeout(Duration::ZERO)
            .half_open_max_calls(0)
            .failure_rate(0.0, Duration::ZERO, 0);
        match all.validate().unwrap_err() {
            ConfigError::Many(errors) => assert_eq!(errors.len(), 6),
            other => panic!("expected several errors, got {other}"),
        }
    }

    #[test]
    fn invalid_values_are_clamped_at_runtime() {
        let b = CircuitBreaker::new()
            .failure_threshold(0)
            .half_open_max_calls(0)
            .recovery_timeout(Duration::ZERO)
            .build();
        let t0 = Instant::now();
        assert_eq!(fail(&b, t0), Some(TRIP));
        let p = b.try_acquire(t0).unwrap();
        assert_eq!(p.transition(), Some(PROBE));
        assert_eq!(b.on_success(p, t0), Some(CLOSE));
    }

    #[test]
    fn breaker_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Breaker>();
        check::<Permit>();
    }

    #[test]
    fn concurrency_smoke_test() {
        let b = Arc::new(
            CircuitBreaker::new()
                .failure_threshold(3)
                .recovery_timeout(Duration::from_millis(1))
                .half_open_max_calls(2)
                .failure_rate(0.5, secs(1), 20)
                .build(),
        );
        let t0 = Instant::now();
        let transitions = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let b = Arc::clone(&b);
                let transitions = Arc::clone(&transitions);
                std::thread::spawn(move || {
                    let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    for i in 0..20_000u64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let now = t0 + Duration::from_micros(i * 10 + x % 7);
                        match b.try_acquire(now) {
                            Ok(p) => {
                                if let Some(tr) = p.transition() {
                                    assert_eq!(tr, PROBE);
                                    transitions.fetch_add(1, Ordering::Relaxed);
                                }
                                let out = if x % 3 == 0 {
                                    b.on_failure(p, now)
                                } else {
                                    b.on_success(p, now)
                                };
                                if let Some(tr) = out {
                                    assert_ne!(tr.from, tr.to);
                                    transitions.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(r) => assert_ne!(r.state(), CircuitState::Closed),
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("no panic");
        }
        assert!(transitions.load(Ordering::Relaxed) > 0);
        // Whatever the state, the breaker still works: eventually it closes again.
        let mut now = t0 + secs(10);
        for _ in 0..10 {
            if let Ok(p) = b.try_acquire(now) {
                b.on_success(p, now);
            }
            now += Duration::from_millis(2);
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
