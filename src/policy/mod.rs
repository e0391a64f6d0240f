//! Delivery policies: retries with backoff, circuit breakers, delivery modes and batching.

mod breaker;
mod retry;

pub use breaker::{Breaker, CircuitBreaker, CircuitState, Permit, Rejected, Transition};
pub use retry::{Backoff, Jitter, RetryPolicy};
