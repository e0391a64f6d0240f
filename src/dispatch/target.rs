use std::{fmt, sync::Arc, time::Duration};

use crate::{Adapter, ConfigError};

/// Default delivery timeout of a target.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest delivery timeout a target accepts.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// An adapter plus how to deliver to it: its timeout (and, as they land, its retry policy,
/// circuit breaker, delivery mode, batching and dead-letter targets).
///
/// Building a target never fails; `subscribe` (or [`Target::validate`]) reports every
/// problem at once.
///
/// ```
/// use std::time::Duration;
/// use signal_bus::{adapter::Logger, Target};
///
/// let target = Target::new(Logger::info()).timeout(Duration::from_secs(1)).label("audit-log");
/// assert_eq!(target.name(), "audit-log");
/// ```
#[derive(Clone)]
pub struct Target {
    pub(crate) adapter: Arc<dyn Adapter>,
    pub(crate) name: Arc<str>,
    pub(crate) timeout: Duration,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("adapter", &self.adapter.name())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Target {
    /// A target delivering to `adapter` with the defaults: synchronous, 5 s timeout.
    pub fn new(adapter: impl Adapter) -> Self {
        Target::from_arc(Arc::new(adapter))
    }

    /// A target delivering to a shared adapter.
    pub fn from_arc(adapter: Arc<dyn Adapter>) -> Self {
        let name: Arc<str> = Arc::from(adapter.name());
        Target {
            adapter,
            name,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// How long one delivery may take. Default: 5 s; allowed: 1 ms to 24 h.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The name this target has in reports, metrics and logs. Default: the adapter's name.
    pub fn label(mut self, name: impl AsRef<str>) -> Self {
        self.name = Arc::from(name.as_ref());
        self
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The adapter.
    pub fn adapter(&self) -> &Arc<dyn Adapter> {
        &self.adapter
    }

    /// The delivery timeout.
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// Checks the adapter and the policies. Pure: no I/O.
    ///
    /// # Errors
    /// Every problem found, as one [`ConfigError`] (a [`ConfigError::Many`] when several).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if let Err(e) = self.adapter.validate() {
            problems.push(e);
        }
        if self.timeout < Duration::from_millis(1) || self.timeout > MAX_TIMEOUT {
            problems.push(ConfigError::invalid(
                "timeout",
                format!("{:?}", self.timeout),
                "must be between 1ms and 24h",
            ));
        }
        if self.name.is_empty() {
            problems.push(ConfigError::invalid("label", "", "must not be empty"));
        }
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(ConfigError::Many(problems)),
        }
    }
}

/// What `subscribe`, `dispatch` and `on_failure` take: one adapter, a [`Target`], or several
/// targets.
pub trait IntoTargets {
    /// The targets.
    fn into_targets(self) -> Vec<Target>;
}

impl<A: Adapter> IntoTargets for A {
    fn into_targets(self) -> Vec<Target> {
        vec![Target::new(self)]
    }
}

impl IntoTargets for Target {
    fn into_targets(self) -> Vec<Target> {
        vec![self]
    }
}

impl IntoTargets for Vec<Target> {
    fn into_targets(self) -> Vec<Target> {
        self
    }
}

impl<const N: usize> IntoTargets for [Target; N] {
    fn into_targets(self) -> Vec<Target> {
        self.into()
    }
}

impl IntoTargets for &[Target] {
    fn into_targets(self) -> Vec<Target> {
        self.to_vec()
    }
}
