use std::sync::Arc;

use async_trait::async_trait;

use crate::{Adapter, DeliveryError, Signal};

/// Discards every signal and reports success: for tests and conditional routing.
///
/// ```
/// # let bus = signal_bus::Bus::builder().build().unwrap();
/// bus.subscribe("test.**", signal_bus::adapter::Noop)?;
/// # Ok::<(), signal_bus::BusError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

#[async_trait]
impl Adapter for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    async fn deliver(&self, _signal: &Signal) -> Result<(), DeliveryError> {
        Ok(())
    }
    fn try_deliver(&self, _signal: &Arc<Signal>) -> Option<Result<(), DeliveryError>> {
        Some(Ok(()))
    }
}
