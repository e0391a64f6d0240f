//! Delivery modes: wait for a target, or hand it a bounded queue.

use std::fmt;

/// How `publish` hands a signal to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// `publish` waits for the delivery (and its retries) to finish. The default.
    #[default]
    Sync,
    /// `publish` returns once the signal is in the target's bounded queue; a worker task
    /// delivers from it in order.
    Async {
        /// How many signals the queue holds (1 to 10,000,000).
        capacity: usize,
        /// What happens when it is full.
        overflow: Overflow,
    },
}

impl Mode {
    /// Async with the given capacity and [`Overflow::Block`].
    pub fn async_with_capacity(capacity: usize) -> Self {
        Mode::Async {
            capacity,
            overflow: Overflow::Block,
        }
    }
}

/// Largest async queue a target may have.
pub const MAX_QUEUE_CAPACITY: usize = 10_000_000;

/// What a full async queue does with one more signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// The publisher waits for room, up to the target's timeout, then the outcome fails
    /// with `QueueFull` (backpressure). The default.
    #[default]
    Block,
    /// The oldest queued signal is dropped to make room (counted in `dropped`).
    DropOldest,
    /// The new signal is dropped (counted in `dropped`); the outcome still succeeds.
    DropNewest,
    /// The outcome fails at once with `QueueFull`.
    Error,
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Overflow::Block => "block",
            Overflow::DropOldest => "drop-oldest",
            Overflow::DropNewest => "drop-newest",
            Overflow::Error => "error",
        })
    }
}
