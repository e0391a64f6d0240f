//! Retry policies (in progress).
