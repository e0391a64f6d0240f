use std::{fmt, future::Future, sync::Arc};

use async_trait::async_trait;

use crate::{Adapter, DeliveryError, Signal};

/// Runs an async closure for each signal: the simplest way to subscribe code to a pattern.
///
/// The closure gets the shared signal; returning `Err` makes the outcome a failure (and, with
/// a retry policy, a retry).
///
/// ```
/// use std::sync::Arc;
/// use signal_bus::{adapter::Handler, Bus, Signal};
///
/// let bus = Bus::builder().build()?;
/// bus.subscribe("user.*", Handler::new(|signal: Arc<Signal>| async move {
///     println!("got {}", signal.ty());
///     Ok(())
/// }))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Handler<F> {
    f: F,
    name: String,
}

impl<F> fmt::Debug for Handler<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<F, Fut> Handler<F>
where
    F: Fn(Arc<Signal>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), DeliveryError>> + Send + 'static,
{
    /// Wraps the closure. Its name in reports is `handler`.
    pub fn new(f: F) -> Self {
        Handler {
            f,
            name: "handler".to_owned(),
        }
    }

    /// Names the handler for reports, metrics and logs.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

#[async_trait]
impl<F, Fut> Adapter for Handler<F>
where
    F: Fn(Arc<Signal>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), DeliveryError>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }
    async fn deliver(&self, signal: &Signal) -> Result<(), DeliveryError> {
        (self.f)(Arc::new(signal.clone())).await
    }
    async fn deliver_shared(&self, signal: Arc<Signal>) -> Result<(), DeliveryError> {
        (self.f)(signal).await
    }
}
