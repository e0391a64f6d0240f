//! Delivery policies: retries with backoff, circuit breakers, delivery modes and batching.
//!
//! Each is set per target (see [`Target`](crate::Target)): a [`RetryPolicy`] decides how
//! often and how long to retry what is worth retrying, a [`CircuitBreaker`] stops calling an
//! endpoint that keeps failing, and a [`Mode`] decides whether `publish` waits for the
//! delivery or hands it to a bounded queue.

mod breaker;
mod mode;
mod retry;

pub use breaker::{Breaker, CircuitBreaker, CircuitState, Permit, Rejected, Transition};
pub use mode::{Mode, Overflow, MAX_QUEUE_CAPACITY};
pub use retry::{Backoff, Jitter, NextStep, RetryPolicy};
