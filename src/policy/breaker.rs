//! Circuit breakers (in progress).
