//! HTTP delivery: the [`Http`] and [`Webhook`] adapters and webhook [`signing`].

pub mod signing;
