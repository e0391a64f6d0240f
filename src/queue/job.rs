//! Jobs: what the durable queue stores and runs.

use std::{fmt, str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum JobState {
    /// Ready to run now.
    Available,
    /// Waiting for its `scheduled_at` (a scheduled or snoozed job).
    Scheduled,
    /// Claimed by a runner and running.
    Executing,
    /// Failed; will run again at `scheduled_at`.
    Retryable,
    /// Done.
    Completed,
    /// Will not run: cancelled by its worker (signal not found, unknown forwarder, schema
    /// mismatch) or by hand.
    Cancelled,
    /// Failed `max_attempts` times.
    Discarded,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 7] = [
        JobState::Available,
        JobState::Scheduled,
        JobState::Executing,
        JobState::Retryable,
        JobState::Completed,
        JobState::Cancelled,
        JobState::Discarded,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Available => "available",
            JobState::Scheduled => "scheduled",
            JobState::Executing => "executing",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Discarded => "discarded",
        }
    }

    /// Whether the job is finished (completed, cancelled or discarded).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Cancelled | JobState::Discarded
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = super::QueueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| super::QueueError::Corrupt {
                what: format!("job state `{s}` is not one of available, scheduled, executing, retryable, completed, cancelled, discarded"),
            })
    }
}

/// A job to insert.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NewJob {
    /// The queue it runs in. Default: `"default"`.
    pub queue: String,
    /// The worker (or forwarder) that runs it.
    pub worker: String,
    /// Its arguments: a thin reference, never a payload copy.
    pub args: Value,
    /// Attempts before it is discarded. Default: 5.
    pub max_attempts: u32,
    /// Lower runs first (0 to 9). Default: 0.
    pub priority: i16,
    /// When it may run. Default: now.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// At most one live job with this key within `unique_for` of the first.
    pub unique_key: Option<String>,
    /// How long the unique key holds. Default: 1 minute when a key is set.
    pub unique_for: Duration,
}

/// Default attempts before a job is discarded.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

impl NewJob {
    /// A job for `worker` with `args` and the defaults.
    pub fn new(worker: impl Into<String>, args: Value) -> Self {
        NewJob {
            queue: "default".to_owned(),
            worker: worker.into(),
            args,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            priority: 0,
            scheduled_at: None,
            unique_key: None,
            unique_for: Duration::from_secs(60),
        }
    }
    /// Runs in `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }
    /// At most `n` attempts.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }
    /// Lower runs first (0 to 9).
    pub fn priority(mut self, p: i16) -> Self {
        self.priority = p;
        self
    }
    /// Runs no earlier than `at`.
    pub fn scheduled_at(mut self, at: DateTime<Utc>) -> Self {
        self.scheduled_at = Some(at);
        self
    }
    /// At most one live job with `key` within `period` of the first.
    pub fn unique(mut self, key: impl Into<String>, period: Duration) -> Self {
        self.unique_key = Some(key.into());
        self.unique_for = period;
        self
    }
}

/// A stored job.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Job {
    /// Its id.
    pub id: i64,
    /// Its queue.
    pub queue: String,
    /// The worker (or forwarder) that runs it.
    pub worker: String,
    /// Its arguments.
    pub args: Value,
    /// Its state.
    pub state: JobState,
    /// Attempts started so far (the running one included).
    pub attempt: u32,
    /// Attempts before it is discarded.
    pub max_attempts: u32,
    /// Lower runs first.
    pub priority: i16,
    /// When it was inserted.
    pub inserted_at: DateTime<Utc>,
    /// When it may run next.
    pub scheduled_at: DateTime<Utc>,
    /// When its last attempt started.
    pub attempted_at: Option<DateTime<Utc>>,
    /// When it completed, was cancelled or discarded.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its unique key.
    pub unique_key: Option<String>,
    /// The last error or cancel reason.
    pub last_error: Option<String>,
}

/// Milliseconds since the Unix epoch, as stored.
#[allow(dead_code)]
pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A stored timestamp back to a time.
#[allow(dead_code)]
pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
