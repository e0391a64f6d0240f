//! The live state of one activated target: its breaker, counters, latency histogram, async
//! queue and last success or error. Created fresh when a target is subscribed (or
//! dispatched), so two subscriptions never share a breaker. What a target does not use is
//! not allocated: no breaker or queue unless configured, and no counters, last error or
//! latency histogram before the first delivery.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex, OnceLock,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{middleware::Chain, queue::AsyncQueue};
use crate::{
    context::{BusContext, WeakBus},
    policy::Breaker,
};

/// Fast-path deliveries are timed one in this many (timing costs two clock reads).
pub(crate) const LATENCY_SAMPLE: u64 = 64;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) queued: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
}

/// A lock-free latency histogram: log-linear buckets (4 per power of two of nanoseconds),
/// so percentiles are within 19 % of the truth.
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .finish()
    }
}

const SUB: u32 = 4;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..(64 * SUB)).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Histogram {
    fn index(nanos: u64) -> usize {
        if nanos < u64::from(SUB) {
            return nanos as usize;
        }
        let msb = 63 - nanos.leading_zeros();
        let sub = (nanos >> (msb - 2)) & u64::from(SUB - 1);
        (msb * SUB) as usize + sub as usize
    }

    /// The lower bound of a bucket, in nanoseconds.
    fn lower(index: usize) -> u64 {
        let index = index as u32;
        if index < SUB {
            return u64::from(index);
        }
        if index < 2 * SUB {
            // Unused buckets between the exact ones (0..4 ns) and the first log bucket.
            return u64::from(SUB);
        }
        let msb = index / SUB;
        let sub = u64::from(index % SUB);
        (1u64 << msb) | (sub << (msb - 2))
    }

    pub(crate) fn record(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[Self::index(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1), or `None` before any sample.
    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                // The bucket's midpoint.
                let lo = Self::lower(i);
                let hi = Self::lower(i + 1);
                return Some(Duration::from_nanos(lo + (hi - lo) / 2));
            }
        }
        None
    }
}

/// What a target accumulates once it is used: counters, the last success and error, and
/// the latency histogram (allocated apart, on the first timed delivery: 2 KiB).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) counters: Counters,
    /// Unix milliseconds of the last success (0: never). Fast-path successes update it one
    /// in [`LATENCY_SAMPLE`].
    pub(crate) last_success_ms: AtomicU64,
    pub(crate) last_error: Mutex<Option<(SystemTime, String)>>,
    latency: OnceLock<Histogram>,
}

impl Stats {
    pub(crate) fn latency(&self) -> Option<&Histogram> {
        self.latency.get()
    }

    fn record_latency(&self, d: Duration) {
        self.latency.get_or_init(Histogram::default).record(d);
    }
}

/// Identifies the calling thread among the threads that deliver: a number of its own, never
/// reused (0 is no thread). Read once per publish.
#[inline]
pub(crate) fn thread_token() -> u64 {
    use std::cell::Cell;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: Cell<u64> = const { Cell::new(0) };
    }
    TOKEN
        .try_with(|t| match t.get() {
            0 => {
                let token = NEXT.fetch_add(1, Ordering::Relaxed);
                t.set(token);
                token
            }
            token => token,
        })
        .unwrap_or(0)
}

/// How many threads may own a delivered counter of a target (two workers publishing, the
/// usual case on two cores); deliveries from other threads go to the shared counter.
const OWNED_SLOTS: usize = 2;

/// A delivered counter written by one thread only: the thread whose token `owner` holds.
#[derive(Debug, Default)]
struct OwnedCount {
    owner: AtomicU64,
    count: AtomicU64,
}

/// The delivered counter a thread adds to: its own slot, with a load and a store (no
/// read-modify-write, so no locked instruction and no cache line taken from another core),
/// or the shared counter, with an atomic add. Sums stay exact: each slot has one writer.
#[derive(Clone, Copy)]
pub(crate) enum DeliveredCount<'a> {
    Owned(&'a AtomicU64),
    Shared(&'a AtomicU64),
}

impl DeliveredCount<'_> {
    /// The count so far (of this slot, or the shared counter): picks the sampled deliveries.
    #[inline]
    pub(crate) fn get(self) -> u64 {
        match self {
            DeliveredCount::Owned(c) | DeliveredCount::Shared(c) => c.load(Ordering::Relaxed),
        }
    }

    /// Counts one delivery.
    #[inline]
    pub(crate) fn add_one(self) {
        match self {
            // Only this thread writes the slot: load, then store. (Loaded again rather than
            // reusing `get`: an adapter could have published on this thread in between.)
            DeliveredCount::Owned(c) => c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed),
            DeliveredCount::Shared(c) => {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The live state of one activated target. Small when unused (a subscription costs a few
/// words here): the breaker and queue exist only when configured, and the counters, last
/// error and latency histogram are allocated on first use.
#[derive(Debug, Default)]
pub(crate) struct TargetRuntime {
    pub(crate) breaker: Option<Box<Breaker>>,
    pub(crate) queue: Option<Box<AsyncQueue>>,
    /// Set after a 410 Gone: no more deliveries until re-enabled.
    pub(crate) disabled: AtomicBool,
    /// No breaker and no queue: `publish` may take the short fast path.
    pub(crate) plain: bool,
    /// Fast-path deliveries of the first threads that delivered to this target; the others'
    /// go to `stats.counters.delivered`. `delivered()` sums them.
    owned: [OwnedCount; OWNED_SLOTS],
    stats: OnceLock<Box<Stats>>,
    /// The bus the target is subscribed on (dangling for `dispatch`), for the signals it
    /// emits about its targets.
    pub(crate) bus: WeakBus,
    /// The bus's middleware, when it has some: run around each delivery.
    pub(crate) middleware: Option<Chain>,
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl TargetRuntime {
    pub(crate) fn new(
        breaker: Option<Breaker>,
        queue: Option<AsyncQueue>,
        bus: Option<&BusContext>,
        middleware: Option<&Chain>,
    ) -> Self {
        TargetRuntime {
            plain: breaker.is_none() && queue.is_none(),
            middleware: middleware.cloned(),
            breaker: breaker.map(Box::new),
            queue: queue.map(Box::new),
            bus: bus.map_or_else(WeakBus::default, |b| b.bus.clone()),
            ..TargetRuntime::default()
        }
    }

    /// The middleware the publishing task runs around this target's deliveries: the bus's,
    /// unless the target is queued (its worker runs them).
    #[inline]
    pub(crate) fn inline_middleware(&self) -> Option<&Chain> {
        self.middleware.as_ref().filter(|_| self.queue.is_none())
    }

    /// The stats, allocated on first use.
    #[inline]
    pub(crate) fn stats(&self) -> &Stats {
        self.stats.get_or_init(Box::default)
    }

    /// The stats, if the target was ever used.
    pub(crate) fn stats_if_used(&self) -> Option<&Stats> {
        self.stats.get().map(|b| &**b)
    }

    /// Delivered signals so far (0 before the first use): the shared counter plus every
    /// thread's own.
    pub(crate) fn delivered(&self) -> u64 {
        let owned: u64 = self
            .owned
            .iter()
            .map(|o| o.count.load(Ordering::Relaxed))
            .sum();
        owned
            + self
                .stats
                .get()
                .map_or(0, |s| s.counters.delivered.load(Ordering::Relaxed))
    }

    /// The delivered counter the thread with `token` adds to: the slot it owns, a free slot
    /// it claims now, or the shared counter.
    #[inline]
    pub(crate) fn delivered_count(&self, token: u64) -> DeliveredCount<'_> {
        for slot in &self.owned {
            if slot.owner.load(Ordering::Relaxed) == token && token != 0 {
                return DeliveredCount::Owned(&slot.count);
            }
        }
        self.claim_count(token)
    }

    #[cold]
    fn claim_count(&self, token: u64) -> DeliveredCount<'_> {
        if token != 0 {
            for slot in &self.owned {
                if slot.owner.load(Ordering::Relaxed) == 0
                    && slot
                        .owner
                        .compare_exchange(0, token, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    return DeliveredCount::Owned(&slot.count);
                }
            }
        }
        DeliveredCount::Shared(&self.stats().counters.delivered)
    }

    /// A fast-path success, counted on `count`; `latency` when it was timed.
    pub(crate) fn record_success(&self, count: DeliveredCount<'_>, latency: Option<Duration>) {
        count.add_one();
        if let Some(l) = latency {
            let stats = self.stats();
            stats.record_latency(l);
            stats
                .last_success_ms
                .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
        }
    }

    /// `n` signals delivered by the slow path, which took `latency` (when timed).
    pub(crate) fn record_delivered(&self, n: u64, latency: Option<Duration>) {
        let stats = self.stats();
        stats.counters.delivered.fetch_add(n, Ordering::Relaxed);
        if let Some(l) = latency {
            stats.record_latency(l);
        }
        stats
            .last_success_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    /// `n` signals enqueued as durable jobs by the slow path (a forwarder in async mode):
    /// accepted, not yet delivered.
    pub(crate) fn record_queued(&self, n: u64) {
        let stats = self.stats();
        stats.counters.queued.fetch_add(n, Ordering::Relaxed);
        stats
            .last_success_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    pub(crate) fn record_error(&self, error: &crate::DeliveryError) {
        let mut last = self
            .stats()
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *last = Some((SystemTime::now(), error.to_string()));
    }

    pub(crate) fn last_success(&self) -> Option<SystemTime> {
        match self
            .stats_if_used()?
            .last_success_ms
            .load(Ordering::Relaxed)
        {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    pub(crate) fn last_error(&self) -> Option<(SystemTime, String)> {
        self.stats_if_used()?
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A latency quantile, `None` before any timed delivery.
    pub(crate) fn latency_quantile(&self, q: f64) -> Option<Duration> {
        self.stats_if_used()?.latency()?.quantile(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_ordered_and_tight() {
        for n in [0u64, 1, 3, 4, 5, 7, 8, 100, 1_000, 123_456, u64::MAX / 3] {
            let i = Histogram::index(n);
            assert!(Histogram::lower(i) <= n, "{n}");
            if i + 1 < 64 * SUB as usize {
                assert!(Histogram::lower(i + 1) > n, "{n}");
            }
        }
    }

    #[test]
    fn quantiles_are_within_a_bucket() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).unwrap().as_micros() as f64;
        let p99 = h.quantile(0.99).unwrap().as_micros() as f64;
        assert!((40.0..=60.0).contains(&p50), "{p50}");
        assert!((80.0..=120.0).contains(&p99), "{p99}");
        assert_eq!(h.count(), 100);
    }
}
