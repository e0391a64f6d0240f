//! The live state of one activated target: its breaker, counters, latency histogram, async
//! queue and last success or error. Created fresh when a target is subscribed (or
//! dispatched), so two subscriptions never share a breaker.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex, OnceLock,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::queue::AsyncQueue;
use crate::{bus::BusContext, policy::Breaker};

/// Fast-path deliveries are timed one in this many (timing costs two clock reads).
pub(crate) const LATENCY_SAMPLE: u64 = 64;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
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

#[derive(Debug, Default)]
pub(crate) struct TargetRuntime {
    pub(crate) counters: Counters,
    pub(crate) latency: Histogram,
    pub(crate) breaker: Option<Breaker>,
    pub(crate) queue: Option<AsyncQueue>,
    /// Set after a 410 Gone: no more deliveries until re-enabled.
    pub(crate) disabled: AtomicBool,
    /// Unix milliseconds of the last success (0: never). Fast-path successes update it one
    /// in [`LATENCY_SAMPLE`].
    pub(crate) last_success_ms: AtomicU64,
    pub(crate) last_error: Mutex<Option<(SystemTime, String)>>,
    pub(crate) bus: OnceLock<BusContext>,
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl TargetRuntime {
    pub(crate) fn record_success(&self, latency: Option<Duration>) {
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = latency {
            self.latency.record(l);
            self.last_success_ms
                .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
        }
    }

    pub(crate) fn record_error(&self, error: &crate::DeliveryError) {
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some((SystemTime::now(), error.to_string()));
    }

    pub(crate) fn last_success(&self) -> Option<SystemTime> {
        match self.last_success_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
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
