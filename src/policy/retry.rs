//! Retry policies: how many attempts, and how long to wait between them.
//!
//! A [`RetryPolicy`] is pure configuration: a backoff kind (constant, linear, exponential, an
//! explicit schedule, or the durable queue's curve), caps, and a [`Jitter`]. Each delivery asks
//! it for a fresh [`Backoff`], an iterator of delays that keeps the per-delivery state (the
//! attempt count, the previous delay for decorrelated jitter, and its random generator).
//!
//! Deciding *whether* a failure is worth retrying is not this module's job: see
//! [`DeliveryError::is_retryable`](crate::DeliveryError::is_retryable). This module only says
//! *how long to wait*, honouring the receiver's
//! [`retry_after`](crate::DeliveryError::retry_after) when it gives one.
//!
//! # `Retry-After`
//!
//! A wait the receiver asks for (HTTP `Retry-After` on 429 or 503, or
//! [`DeliveryError::throttled`](crate::DeliveryError::throttled) from a custom adapter) is
//! honoured exactly, never shortened:
//!
//! - up to the policy's [`max_delay`](RetryPolicy::max_delay) (and what
//!   [`max_elapsed`](RetryPolicy::max_elapsed) leaves), the next attempt waits the larger of
//!   the receiver's wait and the policy's own delay for that retry (jitter may only add);
//! - beyond it, the in-memory retries end at once ([`NextStep::Throttled`]): the delivery
//!   fails as [`DeliveryError::RetryLater`](crate::DeliveryError::RetryLater), a throttled
//!   failure whose [`retry_after`](crate::DeliveryError::retry_after) and
//!   [`not_before`](crate::DeliveryError::not_before) carry the time the receiver asked for,
//!   and whose dead letter carries it too (`deadletternotbefore`). A durable
//!   [`Forwarder`](crate::queue::Forwarder) job is instead rescheduled to that time without
//!   spending an attempt.

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::ConfigError;

/// The default base delay of [`RetryPolicy::default`]: 100 ms.
const DEFAULT_BASE: Duration = Duration::from_millis(100);
/// The default number of attempts, the first included.
const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The default number of attempts of [`RetryPolicy::sigra`].
const SIGRA_MAX_ATTEMPTS: u32 = 5;
/// The most attempts a policy may allow.
const MAX_ATTEMPTS_LIMIT: u32 = 1000;
/// The default cap on each delay.
const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);
/// The default growth factor of exponential backoff.
const DEFAULT_FACTOR: f64 = 2.0;

/// How each delay grows with the retry number.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// Every delay is the base.
    Constant,
    /// `base * n` for retry `n`.
    Linear,
    /// `base * factor^(n-1)` for retry `n`.
    Exponential,
    /// An explicit list; its last delay repeats when more attempts are allowed.
    Schedule(Arc<[Duration]>),
    /// `n^4 + 15 + rand(1..=10) * n` seconds for retry `n`.
    Sigra,
}

/// How many times to attempt a delivery, and how long to wait between attempts.
///
/// Build one with [`constant`](RetryPolicy::constant), [`linear`](RetryPolicy::linear),
/// [`exponential`](RetryPolicy::exponential), [`schedule`](RetryPolicy::schedule),
/// [`sigra`](RetryPolicy::sigra) or [`none`](RetryPolicy::none), then adjust it with the
/// chained setters. Setters never fail: they store the value, and
/// [`validate`](RetryPolicy::validate) reports every problem at once (the bus calls it when a
/// target is subscribed).
///
/// # Default
///
/// [`RetryPolicy::default()`] is `exponential(100 ms)` with factor 2, 3 attempts (so 2 retries
/// after 100 ms and 200 ms), a 30 s cap on each delay, no overall time limit and no jitter.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use signal_bus::policy::{Jitter, RetryPolicy};
///
/// let policy = RetryPolicy::exponential(Duration::from_millis(100))
///     .max_attempts(4)
///     .max_delay(Duration::from_secs(5))
///     .jitter(Jitter::Full);
/// policy.validate().unwrap();
///
/// // Without jitter: 100 ms, 200 ms, 400 ms, then give up (4 attempts in all).
/// let plain = policy.clone().jitter(Jitter::None);
/// let delays: Vec<Duration> = plain.backoff().collect();
/// assert_eq!(delays, [100, 200, 400].map(Duration::from_millis));
///
/// // With full jitter each delay is somewhere in [0, un-jittered delay].
/// for (jittered, cap) in policy.backoff_seeded(7).zip(delays) {
///     assert!(jittered <= cap);
/// }
///
/// // Bad values are reported together, not mid-chain.
/// let bad = RetryPolicy::exponential(Duration::from_secs(2)).max_delay(Duration::from_secs(1));
/// assert_eq!(
///     bad.validate().unwrap_err().to_string(),
///     "invalid max_delay `1s`: must be at least the base delay 2s",
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    kind: Kind,
    base: Duration,
    factor: Option<f64>,
    max_attempts: Option<u32>,
    max_delay: Option<Duration>,
    max_elapsed: Option<Duration>,
    jitter: Jitter,
}

/// How delays are randomized, so that many failing deliveries do not retry in lockstep.
///
/// The formulas follow AWS's "Exponential Backoff and Jitter". `d` is the un-jittered delay of
/// this retry, already capped at the policy's `max_delay`.
///
/// # Default
///
/// [`Jitter::None`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// No randomness: every delay is `d`.
    #[default]
    None,
    /// Uniform in `[0, d]`: spreads retries the most.
    Full,
    /// `d/2` plus uniform `[0, d/2]`: keeps at least half the delay.
    Equal,
    /// Uniform in `[base, previous * 3]`, capped at `max_delay`; the previous delay starts at
    /// the base. Ignores `d`: each delay grows from the one before.
    Decorrelated,
    /// Uniform in `[d * (1 - f), d * (1 + f)]`, capped at `max_delay`, for `f` in `(0, 1]`
    /// (Svix uses 0.2).
    Proportional(f64),
}

impl Default for RetryPolicy {
    /// `exponential(100 ms)`, factor 2, 3 attempts, each delay capped at 30 s, no jitter.
    fn default() -> Self {
        RetryPolicy::exponential(DEFAULT_BASE)
    }
}

impl RetryPolicy {
    fn with_kind(kind: Kind, base: Duration) -> Self {
        RetryPolicy {
            kind,
            base,
            factor: None,
            max_attempts: None,
            max_delay: None,
            max_elapsed: None,
            jitter: Jitter::None,
        }
    }

    /// One attempt, no retry.
    pub fn none() -> Self {
        RetryPolicy::constant(Duration::ZERO).max_attempts(1)
    }

    /// The same `delay` before every retry.
    ///
    /// # Default
    ///
    /// 3 attempts; each delay capped at 30 s.
    pub fn constant(delay: Duration) -> Self {
        RetryPolicy::with_kind(Kind::Constant, delay)
    }

    /// `base * n` before retry `n` (1-based): `base`, `2 * base`, `3 * base`, ...
    ///
    /// # Default
    ///
    /// 3 attempts; each delay capped at 30 s. `base` must not be zero.
    pub fn linear(base: Duration) -> Self {
        RetryPolicy::with_kind(Kind::Linear, base)
    }

    /// `base * factor^(n-1)` before retry `n` (1-based): `base`, `2 * base`, `4 * base`, ...
    ///
    /// # Default
    ///
    /// Factor 2 (see [`factor`](RetryPolicy::factor)); 3 attempts; each delay capped at 30 s.
    /// `base` must not be zero.
    pub fn exponential(base: Duration) -> Self {
        RetryPolicy::with_kind(Kind::Exponential, base)
    }

    /// An explicit list of delays, Svix style: the first retry waits `delays[0]`, the second
    /// `delays[1]`, and so on.
    ///
    /// # Default
    ///
    /// `delays.len() + 1` attempts, so the list is used exactly once. When
    /// [`max_attempts`](RetryPolicy::max_attempts) allows more, the last delay repeats. No cap
    /// on each delay unless [`max_delay`](RetryPolicy::max_delay) sets one. The list must not
    /// be empty.
    pub fn schedule(delays: impl IntoIterator<Item = Duration>) -> Self {
        let delays: Arc<[Duration]> = delays.into_iter().collect();
        let base = delays.iter().copied().min().unwrap_or(Duration::ZERO);
        RetryPolicy::with_kind(Kind::Schedule(delays), base)
    }

    /// The durable queue's curve (from Oban and Sigra): retry `n` waits
    /// `n^4 + 15 + rand(1..=10) * n` seconds (see [`RetryPolicy::sigra_backoff`]): about
    /// 16-25 s, 33-51 s, 1.6-2.1 min, 4.6-5.7 min, ...
    ///
    /// # Default
    ///
    /// 5 attempts (the forwarder's default), no cap on each delay.
    pub fn sigra() -> Self {
        RetryPolicy::with_kind(Kind::Sigra, Duration::from_secs(16))
    }

    /// The durable queue's default backoff: `attempt^4 + 15 + rand_1_to_10 * attempt` seconds,
    /// saturating instead of overflowing. `rand_1_to_10` is meant to be uniform in `1..=10`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use signal_bus::policy::RetryPolicy;
    ///
    /// assert_eq!(RetryPolicy::sigra_backoff(1, 1), Duration::from_secs(17));
    /// assert_eq!(RetryPolicy::sigra_backoff(3, 10), Duration::from_secs(81 + 15 + 30));
    /// ```
    pub fn sigra_backoff(attempt: u32, rand_1_to_10: u32) -> Duration {
        let a = u64::from(attempt);
        let secs = a
            .saturating_pow(4)
            .saturating_add(15)
            .saturating_add(u64::from(rand_1_to_10).saturating_mul(a));
        Duration::from_secs(secs)
    }

    /// The growth factor of exponential backoff; ignored by the other kinds (and reported by
    /// [`validate`](RetryPolicy::validate) when set on them).
    ///
    /// # Default
    ///
    /// 2.0. Must be finite and at least 1.
    pub fn factor(mut self, f: f64) -> Self {
        self.factor = Some(f);
        self
    }

    /// Total attempts, the first one included: `max_attempts(4)` means up to 3 retries.
    ///
    /// # Default
    ///
    /// 3 (for [`schedule`](RetryPolicy::schedule): the list's length + 1; for
    /// [`sigra`](RetryPolicy::sigra): 5). Must be in `1..=1000`.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// The cap on each delay (jitter included). A receiver's `Retry-After` up to this cap is
    /// waited exactly; a longer one ends the in-memory retries as a throttled failure that
    /// carries the time asked for (see [`Backoff::next_step`]).
    ///
    /// # Default
    ///
    /// 30 s (for [`schedule`](RetryPolicy::schedule) and [`sigra`](RetryPolicy::sigra): no
    /// cap). For constant, linear and exponential backoff it must be at least the base delay.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = Some(d);
        self
    }

    /// Give up once this much time has passed since the first attempt: a retry whose delay
    /// would end after it is not made.
    ///
    /// # Default
    ///
    /// No limit. Must not be zero.
    pub fn max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = Some(d);
        self
    }

    /// How delays are randomized.
    ///
    /// # Default
    ///
    /// [`Jitter::None`].
    pub fn jitter(mut self, j: Jitter) -> Self {
        self.jitter = j;
        self
    }

    /// Checks every rule and reports every problem: one [`ConfigError::Invalid`], or
    /// [`ConfigError::Many`] when there are several.
    ///
    /// # Errors
    ///
    /// - `max_attempts` outside `1..=1000`;
    /// - a zero base delay for linear or exponential backoff;
    /// - `max_delay` below the base delay (constant, linear, exponential);
    /// - a factor that is not finite or below 1, or a factor on a non-exponential kind;
    /// - an empty schedule, or one longer than 999 delays without `max_attempts`;
    /// - a zero `max_elapsed`;
    /// - `Jitter::Proportional(f)` with `f` outside `(0, 1]` (NaN included).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        match &self.kind {
            Kind::Constant | Kind::Sigra => {}
            Kind::Linear => self.check_base(&mut errors),
            Kind::Exponential => self.check_base(&mut errors),
            Kind::Schedule(delays) => {
                if delays.is_empty() {
                    errors.push(ConfigError::invalid(
                        "schedule",
                        "[]",
                        "must have at least one delay",
                    ));
                } else if self.max_attempts.is_none() && delays.len() >= MAX_ATTEMPTS_LIMIT as usize
                {
                    errors.push(ConfigError::invalid(
                        "schedule",
                        format!("{} delays", delays.len()),
                        format!(
                            "must have at most {} delays (or set max_attempts)",
                            MAX_ATTEMPTS_LIMIT - 1
                        ),
                    ));
                }
            }
        }
        if let Some(factor) = self.factor {
            if self.kind != Kind::Exponential {
                errors.push(ConfigError::invalid(
                    "factor",
                    factor,
                    "only exponential backoff has a factor",
                ));
            } else if !(factor.is_finite() && factor >= 1.0) {
                errors.push(ConfigError::invalid(
                    "factor",
                    factor,
                    "must be a finite number of at least 1",
                ));
            }
        }
        if let Some(n) = self.max_attempts {
            if n == 0 {
                errors.push(ConfigError::invalid(
                    "max_attempts",
                    n,
                    "must be at least 1 (the first attempt)",
                ));
            } else if n > MAX_ATTEMPTS_LIMIT {
                errors.push(ConfigError::invalid(
                    "max_attempts",
                    n,
                    format!("must be at most {MAX_ATTEMPTS_LIMIT}"),
                ));
            }
        }
        if let Some(max) = self.max_delay {
            let computed = matches!(self.kind, Kind::Constant | Kind::Linear | Kind::Exponential);
            if computed && max < self.base {
                errors.push(ConfigError::invalid(
                    "max_delay",
                    format!("{max:?}"),
                    format!("must be at least the base delay {:?}", self.base),
                ));
            }
        }
        if self.max_elapsed == Some(Duration::ZERO) {
            errors.push(ConfigError::invalid(
                "max_elapsed",
                format!("{:?}", Duration::ZERO),
                "must be greater than zero (use RetryPolicy::none() for no retry)",
            ));
        }
        if let Jitter::Proportional(f) = self.jitter {
            if !(f > 0.0 && f <= 1.0) {
                errors.push(ConfigError::invalid(
                    "jitter",
                    format!("Proportional({f})"),
                    "the proportion must be in (0, 1]",
                ));
            }
        }
        ConfigError::from_problems(errors)
    }

    fn check_base(&self, errors: &mut Vec<ConfigError>) {
        if self.base.is_zero() {
            errors.push(ConfigError::invalid(
                "base delay",
                format!("{:?}", self.base),
                "must be greater than zero (use constant(Duration::ZERO) to retry at once)",
            ));
        }
    }

    /// Total attempts allowed, the first one included (the default applied).
    pub fn get_max_attempts(&self) -> u32 {
        self.max_attempts.unwrap_or(match &self.kind {
            Kind::Schedule(delays) => u32::try_from(delays.len())
                .unwrap_or(u32::MAX)
                .saturating_add(1),
            Kind::Sigra => SIGRA_MAX_ATTEMPTS,
            _ => DEFAULT_MAX_ATTEMPTS,
        })
    }

    /// The overall time limit, if any.
    pub fn get_max_elapsed(&self) -> Option<Duration> {
        self.max_elapsed
    }

    /// The cap on each delay (the default applied: `Duration::MAX` means no cap).
    pub fn get_max_delay(&self) -> Duration {
        self.max_delay.unwrap_or(match &self.kind {
            Kind::Schedule(_) | Kind::Sigra => Duration::MAX,
            _ => DEFAULT_MAX_DELAY,
        })
    }

    /// Whether this policy never retries (one attempt in all).
    pub fn is_none(&self) -> bool {
        self.get_max_attempts() == 1
    }

    /// A fresh backoff for one delivery, randomly seeded.
    pub fn backoff(&self) -> Backoff {
        self.backoff_seeded(random_seed())
    }

    /// A fresh backoff for one delivery with a fixed seed: the same seed gives the same
    /// delays (for tests).
    pub fn backoff_seeded(&self, seed: u64) -> Backoff {
        Backoff {
            kind: self.kind.clone(),
            factor: self.factor.unwrap_or(DEFAULT_FACTOR),
            base: self.base,
            max_attempts: self.get_max_attempts(),
            max_delay: self.get_max_delay(),
            max_elapsed: self.max_elapsed,
            jitter: self.jitter,
            attempts: 1,
            prev: self.base,
            rng: SplitMix64(seed),
        }
    }
}

/// The delays of one delivery: an [`Iterator`] of `Duration`s, one per retry.
///
/// Made by [`RetryPolicy::backoff`]. With `max_attempts` n it yields at most n - 1 delays.
/// Inside a delivery loop, prefer [`next_delay`](Backoff::next_delay), which also honours the
/// receiver's `Retry-After` and the policy's `max_elapsed`.
#[derive(Debug, Clone)]
pub struct Backoff {
    kind: Kind,
    base: Duration,
    factor: f64,
    max_attempts: u32,
    max_delay: Duration,
    max_elapsed: Option<Duration>,
    jitter: Jitter,
    attempts: u32,
    prev: Duration,
    rng: SplitMix64,
}

/// What a [`Backoff`] says after a failure: see [`Backoff::next_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NextStep {
    /// Wait this long, then make the next attempt.
    Retry(Duration),
    /// No more attempts: the attempts are exhausted, or the next delay would end after
    /// `max_elapsed`.
    GiveUp,
    /// The receiver asked to wait `asked`, longer than the policy allows (`allowed`: the
    /// smaller of `max_delay` and what `max_elapsed` leaves): no in-memory retry is made,
    /// and the failure is reported as throttled with the time the receiver asked for.
    Throttled {
        /// The wait the receiver asked for (`Retry-After`).
        asked: Duration,
        /// The longest wait the policy allowed at that point.
        allowed: Duration,
    },
}

impl Backoff {
    /// The delay before the next attempt after one more failure, or `None` to give up
    /// (attempts exhausted, `elapsed + delay` would exceed `max_elapsed`, or the receiver
    /// asked for a wait beyond what the policy allows).
    ///
    /// The same as [`next_step`](Backoff::next_step) without telling why it gave up.
    pub fn next_delay(
        &mut self,
        retry_after: Option<Duration>,
        elapsed: Duration,
    ) -> Option<Duration> {
        match self.next_step(retry_after, elapsed) {
            NextStep::Retry(delay) => Some(delay),
            NextStep::GiveUp | NextStep::Throttled { .. } => None,
        }
    }

    /// What to do after one more failure: wait and retry, give up, or stop because the
    /// receiver asked for a longer wait than the policy allows.
    ///
    /// `elapsed` is the time since the first attempt started. `retry_after` (from the
    /// receiver, see [`DeliveryError::retry_after`](crate::DeliveryError::retry_after)) is
    /// honoured exactly:
    ///
    /// - within the limit (`max_delay`, and what `max_elapsed` leaves after `elapsed`), the
    ///   delay is the larger of the receiver's wait and this retry's own jittered delay, so
    ///   it is never shorter than asked (jitter may only add);
    /// - beyond the limit, [`NextStep::Throttled`]: retrying sooner than asked gets senders
    ///   blocked, so the in-memory retries end there and the caller reports when the
    ///   receiver may be tried again.
    ///
    /// Without `retry_after` the delay is this retry's jittered delay, and `None` is given
    /// up when `elapsed + delay` would exceed `max_elapsed`. Attempts exhausted always give
    /// up.
    pub fn next_step(&mut self, retry_after: Option<Duration>, elapsed: Duration) -> NextStep {
        if self.attempts >= self.max_attempts || self.max_elapsed.is_some_and(|l| elapsed > l) {
            return NextStep::GiveUp;
        }
        let left = self
            .max_elapsed
            .map_or(Duration::MAX, |limit| limit.saturating_sub(elapsed));
        let limit = self.max_delay.min(left);
        let d = self.plain_delay(self.attempts);
        let delay = match retry_after {
            Some(asked) if asked > limit => {
                return NextStep::Throttled {
                    asked,
                    allowed: limit,
                }
            }
            Some(asked) => asked.max(self.jittered(d)).min(limit),
            None => {
                let delay = self.jittered(d);
                if delay > left {
                    return NextStep::GiveUp;
                }
                delay
            }
        };
        self.prev = delay;
        self.attempts += 1;
        NextStep::Retry(delay)
    }

    /// Attempts made so far, counting the one about to be made after the last delay given:
    /// starts at 1 (the first attempt).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The un-jittered delay before retry `n` (1-based), capped at `max_delay`.
    fn plain_delay(&mut self, n: u32) -> Duration {
        let d = match &self.kind {
            Kind::Constant => self.base,
            Kind::Linear => self.base.saturating_mul(n),
            Kind::Exponential => {
                let exp = i32::try_from(n - 1).unwrap_or(i32::MAX);
                let nanos = self.base.as_nanos() as f64 * self.factor.powi(exp);
                if nanos < self.max_delay.as_nanos() as f64 {
                    duration_from_nanos_f64(nanos)
                } else {
                    // Overflow, infinity and NaN all land on the cap.
                    self.max_delay
                }
            }
            Kind::Schedule(delays) => {
                let i = (n as usize - 1).min(delays.len().saturating_sub(1));
                delays.get(i).copied().unwrap_or(Duration::ZERO)
            }
            Kind::Sigra => {
                let rand = 1 + self.rng.below(10) as u32;
                RetryPolicy::sigra_backoff(n, rand)
            }
        };
        d.min(self.max_delay)
    }

    fn jittered(&mut self, d: Duration) -> Duration {
        match self.jitter {
            Jitter::None => d,
            Jitter::Full => self.rng.uniform(Duration::ZERO, d),
            Jitter::Equal => self.rng.uniform(d / 2, d),
            Jitter::Decorrelated => {
                let hi = self.prev.saturating_mul(3).max(self.base);
                self.rng.uniform(self.base, hi).min(self.max_delay)
            }
            Jitter::Proportional(f) => {
                let f = if f.is_nan() { 0.0 } else { f.clamp(0.0, 1.0) };
                let lo = mul_f64_saturating(d, 1.0 - f).min(d);
                let hi = mul_f64_saturating(d, 1.0 + f).max(d);
                self.rng.uniform(lo, hi).min(self.max_delay)
            }
        }
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    /// The next delay, as [`next_delay(None, Duration::ZERO)`](Backoff::next_delay).
    fn next(&mut self) -> Option<Duration> {
        self.next_delay(None, Duration::ZERO)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.max_attempts.saturating_sub(self.attempts) as usize;
        if self.max_elapsed.is_some() {
            (0, Some(left))
        } else {
            (left, Some(left))
        }
    }
}

/// `d * x`, saturating at zero and `Duration::MAX` (x must not be negative or NaN).
fn mul_f64_saturating(d: Duration, x: f64) -> Duration {
    duration_from_nanos_f64(d.as_nanos() as f64 * x)
}

/// A duration from a float number of nanoseconds, rounded; saturating at both ends.
fn duration_from_nanos_f64(nanos: f64) -> Duration {
    if nanos.is_nan() || nanos <= 0.0 {
        Duration::ZERO
    } else if nanos < u64::MAX as f64 {
        Duration::from_nanos(nanos.round() as u64)
    } else {
        Duration::try_from_secs_f64(nanos / 1e9).unwrap_or(Duration::MAX)
    }
}

/// SplitMix64: a tiny, fast generator, plenty for jitter (not for secrets).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift (bias below 2^-64 * n).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[lo, hi]` at nanosecond resolution (`hi` below `lo` gives `lo`).
    fn uniform(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo;
        let offset = match u64::try_from(span.as_nanos()) {
            Ok(n) if n < u64::MAX => Duration::from_nanos(self.below(n + 1)),
            // Spans over 584 years: float resolution is fine.
            _ => {
                let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                Duration::try_from_secs_f64(span.as_secs_f64() * u).unwrap_or(span)
            }
        };
        lo.saturating_add(offset).min(hi)
    }
}

/// A fresh seed per backoff: std's per-process random keys mixed with a counter.
fn random_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    RandomState::new().hash_one(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn delays(p: &RetryPolicy) -> Vec<Duration> {
        p.backoff_seeded(1).collect()
    }

    #[test]
    fn the_api_example_compiles_and_validates() {
        let p = RetryPolicy::exponential(ms(100))
            .max_attempts(4)
            .max_delay(secs(5))
            .jitter(Jitter::Full);
        p.validate().unwrap();
        assert_eq!(p.get_max_attempts(), 4);
        assert_eq!(p.get_max_delay(), secs(5));
        assert_eq!(p.get_max_elapsed(), None);
        assert_eq!(p.backoff().count(), 3);
    }

    #[test]
    fn defaults() {
        let p = RetryPolicy::default();
        assert_eq!(p, RetryPolicy::exponential(ms(100)));
        assert_eq!(p.get_max_attempts(), 3);
        assert_eq!(p.get_max_delay(), secs(30));
        assert_eq!(p.get_max_elapsed(), None);
        assert_eq!(delays(&p), [ms(100), ms(200)]);
        p.validate().unwrap();
    }

    #[test]
    fn none_makes_one_attempt() {
        let p = RetryPolicy::none();
        assert!(p.is_none());
        p.validate().unwrap();
        let mut b = p.backoff();
        assert_eq!(b.attempts(), 1);
        assert_eq!(b.next(), None);
        assert!(!RetryPolicy::default().is_none());
    }

    #[test]
    fn constant_delays() {
        let p = RetryPolicy::constant(ms(250)).max_attempts(4);
        assert_eq!(delays(&p), [ms(250); 3]);
    }

    #[test]
    fn linear_delays() {
        let p = RetryPolicy::linear(ms(100)).max_attempts(5);
        assert_eq!(delays(&p), [ms(100), ms(200), ms(300), ms(400)]);
    }

    #[test]
    fn exponential_delays() {
        let p = RetryPolicy::exponential(ms(100)).max_attempts(6);
        assert_eq!(delays(&p), [ms(100), ms(200), ms(400), ms(800), ms(1600)]);
        let p = RetryPolicy::exponential(ms(100))
            .factor(3.0)
            .max_attempts(4);
        assert_eq!(delays(&p), [ms(100), ms(300), ms(900)]);
        let p = RetryPolicy::exponential(ms(100))
            .factor(1.5)
            .max_attempts(4);
        assert_eq!(delays(&p), [ms(100), ms(150), ms(225)]);
    }

    #[test]
    fn max_delay_caps_each_delay() {
        let p = RetryPolicy::exponential(secs(1))
            .max_attempts(7)
            .max_delay(secs(10));
        assert_eq!(
            delays(&p),
            [secs(1), secs(2), secs(4), secs(8), secs(10), secs(10)]
        );
        let p = RetryPolicy::linear(secs(20)).max_attempts(4);
        assert_eq!(delays(&p), [secs(20), secs(30), secs(30)]);
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        for p in [
            RetryPolicy::exponential(secs(1)).max_attempts(1000),
            RetryPolicy::exponential(secs(1))
                .factor(1e300)
                .max_attempts(1000),
            RetryPolicy::linear(Duration::MAX).max_delay(Duration::MAX),
            RetryPolicy::exponential(Duration::MAX)
                .max_delay(Duration::MAX)
                .max_attempts(1000)
                .jitter(Jitter::Proportional(1.0)),
            RetryPolicy::sigra().max_attempts(1000),
            RetryPolicy::constant(secs(1))
                .max_attempts(1000)
                .max_delay(Duration::MAX)
                .jitter(Jitter::Decorrelated),
        ] {
            let n = p.backoff().count();
            assert_eq!(n as u32, p.get_max_attempts() - 1);
        }
        let last = RetryPolicy::exponential(secs(1))
            .max_attempts(1000)
            .backoff()
            .last();
        assert_eq!(last, Some(secs(30)));
    }

    #[test]
    fn schedule_delays() {
        let p = RetryPolicy::schedule([secs(5), secs(300), secs(1800)]);
        assert_eq!(p.get_max_attempts(), 4);
        assert_eq!(p.get_max_delay(), Duration::MAX);
        assert_eq!(delays(&p), [secs(5), secs(300), secs(1800)]);
        p.validate().unwrap();
        // More attempts repeat the last delay; fewer cut the list.
        let more = p.clone().max_attempts(6);
        assert_eq!(
            delays(&more),
            [secs(5), secs(300), secs(1800), secs(1800), secs(1800)]
        );
        assert_eq!(delays(&p.clone().max_attempts(2)), [secs(5)]);
        // An explicit cap applies.
        let capped = p.max_delay(secs(600));
        assert_eq!(delays(&capped), [secs(5), secs(300), secs(600)]);
        capped.validate().unwrap();
    }

    #[test]
    fn max_attempts_yields_n_minus_one_delays() {
        for n in 1..=20 {
            let p = RetryPolicy::constant(ms(1)).max_attempts(n);
            let mut b = p.backoff();
            assert_eq!(b.size_hint(), ((n - 1) as usize, Some((n - 1) as usize)));
            let mut count = 0;
            while b.next().is_some() {
                count += 1;
                assert_eq!(b.attempts(), count + 1);
            }
            assert_eq!(count, n - 1);
            assert_eq!(b.next(), None, "stays exhausted");
        }
    }

    #[test]
    fn max_elapsed_stops_retrying() {
        let p = RetryPolicy::constant(secs(2))
            .max_attempts(10)
            .max_elapsed(secs(5));
        let mut b = p.backoff();
        assert_eq!(b.next_delay(None, Duration::ZERO), Some(secs(2)));
        assert_eq!(
            b.next_delay(None, secs(3)),
            Some(secs(2)),
            "3 + 2 = 5 is allowed"
        );
        assert_eq!(b.next_delay(None, secs(4)), None, "4 + 2 > 5");
        assert_eq!(b.attempts(), 3, "giving up makes no attempt");
        // The plain iterator assumes no time has passed.
        assert_eq!(p.backoff().count(), 9);
    }

    #[test]
    fn retry_after_within_max_delay_is_waited_exactly() {
        let p = RetryPolicy::exponential(ms(100))
            .max_attempts(10)
            .max_delay(secs(5));
        let mut b = p.backoff_seeded(3);
        // d = 100 ms: asked 3 s, waited 3 s (the old rule clamped it to 200 ms).
        assert_eq!(
            b.next_step(Some(secs(3)), Duration::ZERO),
            NextStep::Retry(secs(3))
        );
        // d = 200 ms: asked exactly max_delay.
        assert_eq!(
            b.next_step(Some(secs(5)), Duration::ZERO),
            NextStep::Retry(secs(5))
        );
        // d = 400 ms: asked 0 s, the policy's own delay still applies.
        assert_eq!(
            b.next_step(Some(secs(0)), Duration::ZERO),
            NextStep::Retry(ms(400))
        );
        // Jitter only adds: never below the asked wait, never above max_delay.
        for jitter in [
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
            Jitter::Proportional(1.0),
        ] {
            let p = RetryPolicy::exponential(secs(1))
                .max_attempts(100)
                .max_delay(secs(10))
                .jitter(jitter);
            for seed in 0..50 {
                let mut b = p.backoff_seeded(seed);
                for _ in 0..20 {
                    match b.next_step(Some(ms(2_500)), Duration::ZERO) {
                        NextStep::Retry(d) => assert!(ms(2_500) <= d && d <= secs(10), "{d:?}"),
                        other => panic!("{other:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn retry_after_beyond_the_limit_is_throttled() {
        let p = RetryPolicy::exponential(ms(100))
            .max_attempts(10)
            .max_delay(secs(5));
        let mut b = p.backoff();
        assert_eq!(
            b.next_step(Some(secs(60)), Duration::ZERO),
            NextStep::Throttled {
                asked: secs(60),
                allowed: secs(5)
            }
        );
        assert_eq!(b.attempts(), 1, "no attempt is planned");
        assert_eq!(b.clone().next_delay(Some(secs(60)), Duration::ZERO), None);
        // What max_elapsed leaves counts too.
        let p = RetryPolicy::constant(secs(1)).max_elapsed(secs(10));
        let mut b = p.backoff();
        assert_eq!(
            b.next_step(Some(secs(4)), secs(7)),
            NextStep::Throttled {
                asked: secs(4),
                allowed: secs(3)
            }
        );
        assert_eq!(
            b.next_step(Some(secs(3)), secs(7)),
            NextStep::Retry(secs(3))
        );
        // Exhausted attempts give up, whatever was asked.
        let mut b = RetryPolicy::none().backoff();
        assert_eq!(
            b.next_step(Some(secs(60)), Duration::ZERO),
            NextStep::GiveUp
        );
        // A schedule has no cap: a day is waited.
        let mut b = RetryPolicy::schedule([secs(5)]).backoff();
        assert_eq!(
            b.next_step(Some(secs(86_400)), Duration::ZERO),
            NextStep::Retry(secs(86_400))
        );
    }

    #[test]
    fn validate_reports_each_rule() {
        let msg = |p: RetryPolicy| p.validate().unwrap_err().to_string();
        assert_eq!(
            msg(RetryPolicy::exponential(secs(2)).max_delay(secs(1))),
            "invalid max_delay `1s`: must be at least the base delay 2s"
        );
        assert_eq!(
            msg(RetryPolicy::exponential(secs(1)).factor(0.5)),
            "invalid factor `0.5`: must be a finite number of at least 1"
        );
        assert_eq!(
            msg(RetryPolicy::exponential(secs(1)).factor(f64::NAN)),
            "invalid factor `NaN`: must be a finite number of at least 1"
        );
        assert_eq!(
            msg(RetryPolicy::exponential(secs(1)).factor(f64::INFINITY)),
            "invalid factor `inf`: must be a finite number of at least 1"
        );
        assert_eq!(
            msg(RetryPolicy::linear(secs(1)).factor(3.0)),
            "invalid factor `3`: only exponential backoff has a factor"
        );
        assert_eq!(
            msg(RetryPolicy::constant(secs(1)).max_attempts(0)),
            "invalid max_attempts `0`: must be at least 1 (the first attempt)"
        );
        assert_eq!(
            msg(RetryPolicy::constant(secs(1)).max_attempts(1001)),
            "invalid max_attempts `1001`: must be at most 1000"
        );
        assert_eq!(
            msg(RetryPolicy::schedule([])),
            "invalid schedule `[]`: must have at least one delay"
        );
        assert_eq!(
            msg(RetryPolicy::schedule(vec![secs(1); 1000])),
            "invalid schedule `1000 delays`: must have at most 999 delays (or set max_attempts)"
        );
        RetryPolicy::schedule(vec![secs(1); 1000])
            .max_attempts(10)
            .validate()
            .unwrap();
        assert_eq!(
            msg(RetryPolicy::exponential(Duration::ZERO)),
            "invalid base delay `0ns`: must be greater than zero \
             (use constant(Duration::ZERO) to retry at once)"
        );
        assert_eq!(
            msg(RetryPolicy::constant(secs(1)).max_elapsed(Duration::ZERO)),
            "invalid max_elapsed `0ns`: must be greater than zero \
             (use RetryPolicy::none() for no retry)"
        );
        for f in [0.0, -0.1, 1.5, f64::NAN] {
            let e = msg(RetryPolicy::constant(secs(1)).jitter(Jitter::Proportional(f)));
            assert_eq!(
                e,
                format!("invalid jitter `Proportional({f})`: the proportion must be in (0, 1]")
            );
        }
        RetryPolicy::constant(secs(1))
            .jitter(Jitter::Proportional(1.0))
            .validate()
            .unwrap();
        RetryPolicy::constant(Duration::ZERO).validate().unwrap();
        RetryPolicy::sigra().validate().unwrap();
    }

    #[test]
    fn validate_reports_every_problem_at_once() {
        let p = RetryPolicy::exponential(secs(2))
            .factor(0.5)
            .max_attempts(0)
            .max_delay(secs(1))
            .jitter(Jitter::Proportional(2.0));
        match p.validate().unwrap_err() {
            ConfigError::Many(errors) => assert_eq!(errors.len(), 4),
            other => panic!("expected several errors, got {other}"),
        }
        // The setter order does not matter and nothing is lost.
        let p = RetryPolicy::linear(secs(1)).factor(3.0).max_attempts(5);
        assert_eq!(p.get_max_attempts(), 5);
        assert_eq!(delays(&p), [secs(1), secs(2), secs(3), secs(4)]);
    }

    #[test]
    fn seeded_backoffs_are_deterministic() {
        for jitter in [
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
            Jitter::Proportional(0.2),
        ] {
            let p = RetryPolicy::exponential(ms(100))
                .max_attempts(10)
                .jitter(jitter);
            let a: Vec<_> = p.backoff_seeded(42).collect();
            let b: Vec<_> = p.backoff_seeded(42).collect();
            let c: Vec<_> = p.backoff_seeded(43).collect();
            assert_eq!(a, b);
            assert_ne!(a, c, "{jitter:?}");
        }
        // Random seeds differ from one backoff to the next.
        let p = RetryPolicy::exponential(secs(1))
            .max_attempts(10)
            .jitter(Jitter::Full);
        let a: Vec<_> = p.backoff().collect();
        let b: Vec<_> = p.backoff().collect();
        assert_ne!(a, b);
    }

    #[test]
    fn sigra_curve() {
        assert_eq!(RetryPolicy::sigra_backoff(1, 1), secs(17));
        assert_eq!(RetryPolicy::sigra_backoff(2, 5), secs(16 + 15 + 10));
        assert_eq!(
            RetryPolicy::sigra_backoff(u32::MAX, 10),
            Duration::from_secs(u64::MAX)
        );
        let p = RetryPolicy::sigra();
        assert_eq!(p.get_max_attempts(), 5);
        let got = delays(&p);
        assert_eq!(got.len(), 4);
        for (i, d) in got.iter().enumerate() {
            let n = i as u32 + 1;
            assert!(
                (RetryPolicy::sigra_backoff(n, 1)..=RetryPolicy::sigra_backoff(n, 10)).contains(d),
                "{n}: {d:?}"
            );
        }
    }

    fn jitter_strategy() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated),
            (0.001f64..=1.0).prop_map(Jitter::Proportional),
        ]
    }

    fn kind_strategy() -> impl Strategy<Value = u8> {
        0u8..3
    }

    fn policy(kind: u8, base: Duration, factor: f64) -> RetryPolicy {
        match kind {
            0 => RetryPolicy::constant(base),
            1 => RetryPolicy::linear(base),
            _ => RetryPolicy::exponential(base).factor(factor),
        }
    }

    proptest! {
        #[test]
        fn delays_stay_within_their_bounds(
            kind in kind_strategy(),
            base_ms in 1u64..10_000,
            extra_ms in 0u64..100_000,
            factor in 1.0f64..10.0,
            attempts in 1u32..=60,
            jitter in jitter_strategy(),
            seed in any::<u64>(),
        ) {
            let base = ms(base_ms);
            let max = base + ms(extra_ms);
            let p = policy(kind, base, factor)
                .max_attempts(attempts)
                .max_delay(max)
                .jitter(jitter);
            prop_assert!(p.validate().is_ok());
            let plain: Vec<Duration> = p.clone().jitter(Jitter::None).backoff().collect();
            let got: Vec<Duration> = p.backoff_seeded(seed).collect();
            prop_assert_eq!(plain.len() as u32, attempts - 1);
            prop_assert_eq!(got.len() as u32, attempts - 1);
            for (d, v) in plain.iter().copied().zip(got.iter().copied()) {
                prop_assert!(v <= max, "{:?} above the cap {:?}", v, max);
                match jitter {
                    Jitter::None => prop_assert_eq!(v, d),
                    Jitter::Full => prop_assert!(v <= d),
                    Jitter::Equal => prop_assert!(d / 2 <= v && v <= d),
                    Jitter::Decorrelated => prop_assert!(base <= v && v <= max),
                    Jitter::Proportional(f) => {
                        let slack = 1e-9 * d.as_secs_f64() + 1e-9;
                        let lo = d.as_secs_f64() * (1.0 - f) - slack;
                        let hi = (d.as_secs_f64() * (1.0 + f)).min(max.as_secs_f64()) + slack;
                        prop_assert!(lo <= v.as_secs_f64() && v.as_secs_f64() <= hi,
                            "{:?} outside [{}, {}] for d {:?}", v, lo, hi, d);
                    }
                }
            }
        }

        #[test]
        fn plain_delays_grow_until_capped(
            kind in kind_strategy(),
            base_ms in 1u64..10_000,
            extra_ms in 0u64..100_000,
            factor in 1.0f64..10.0,
            attempts in 1u32..=200,
        ) {
            let base = ms(base_ms);
            let max = base + ms(extra_ms);
            let p = policy(kind, base, factor).max_attempts(attempts).max_delay(max);
            let got: Vec<Duration> = p.backoff().collect();
            prop_assert_eq!(got.len() as u32, attempts - 1);
            if let Some(first) = got.first() {
                prop_assert_eq!(*first, base);
            }
            for pair in got.windows(2) {
                prop_assert!(pair[0] <= pair[1], "{:?} then {:?}", pair[0], pair[1]);
                if pair[0] == max {
                    prop_assert_eq!(pair[1], max);
                }
            }
        }

        #[test]
        fn decorrelated_stays_between_base_and_cap(
            base_ms in 0u64..1_000,
            extra_ms in 0u64..100_000,
            attempts in 1u32..=100,
            seed in any::<u64>(),
        ) {
            let base = ms(base_ms);
            let max = base + ms(extra_ms);
            let p = RetryPolicy::constant(base)
                .max_attempts(attempts)
                .max_delay(max)
                .jitter(Jitter::Decorrelated);
            let got: Vec<Duration> = p.backoff_seeded(seed).collect();
            prop_assert_eq!(got.len() as u32, attempts - 1);
            for v in got {
                prop_assert!(base <= v && v <= max);
            }
        }
    }
}
