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
    /// The last error, or what its cancellation says.
    pub last_error: Option<String>,
    /// Why it was cancelled (for a cancelled job).
    pub cancel_reason: Option<CancelReason>,
    /// The claim token: it grows by one with every claim. A runner presents it with every
    /// state change it makes after the claim ([`Job::lease`]), so a runner whose lease was
    /// taken over cannot finish another runner's attempt.
    pub token: i64,
}

impl Job {
    /// The lease this job was claimed with: what [`JobStore`](super::JobStore) state changes
    /// after a claim must present.
    pub fn lease(&self) -> LeaseToken {
        LeaseToken {
            job: self.id,
            token: self.token,
        }
    }

    /// The forwarder a forwarder job delivers through (`None` for other jobs).
    pub fn forwarder(&self) -> Option<&str> {
        self.worker
            .strip_prefix(super::FORWARDER_WORKER)
            .and_then(|rest| rest.strip_prefix(':'))
    }

    /// The stored signal a job refers to, as `(source, id)` (forwarder jobs and any job whose
    /// args carry `signal_source` and `signal_id`).
    pub fn signal_ref(&self) -> Option<(&str, &str)> {
        let source = self.args.get("signal_source")?.as_str()?;
        let id = self.args.get("signal_id")?.as_str()?;
        Some((source, id))
    }
}

/// Proof of a claim: the job and the token the claim wrote on it. Every state change a
/// runner makes after a claim presents it, and is refused with
/// [`QueueError::LeaseLost`](super::QueueError::LeaseLost) when the job has since been
/// rescued, released, cancelled or claimed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken {
    /// The job id.
    pub job: i64,
    /// The token its claim wrote.
    pub token: i64,
}

/// Why a job was cancelled: Sigra's taxonomy, plus cancellations by a worker or by hand.
/// A cancelled job is never retried; [`Queue::redrive`](super::Queue::redrive) runs it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CancelReason {
    /// The stored signal a forwarder job points at is gone (deleted by retention or by hand).
    SignalNotFound,
    /// No process registered the job's forwarder for the queue's grace period
    /// ([`QueueBuilder::unknown_after`](super::QueueBuilder::unknown_after), default 1 h).
    UnknownForwarder,
    /// No process registered the job's worker for the grace period (a generic job).
    UnknownWorker,
    /// The stored signal no longer parses, the job's args are not what its worker reads, or
    /// the adapter said so ([`DeliveryError::schema_mismatch`](crate::DeliveryError::schema_mismatch)).
    SchemaMismatch,
    /// Its worker returned [`WorkOutcome::Cancel`](super::WorkOutcome::Cancel).
    Worker,
    /// Cancelled by hand ([`Queue::cancel`](super::Queue::cancel)).
    Manual,
}

impl CancelReason {
    /// Every reason.
    pub const ALL: [CancelReason; 6] = [
        CancelReason::SignalNotFound,
        CancelReason::UnknownForwarder,
        CancelReason::UnknownWorker,
        CancelReason::SchemaMismatch,
        CancelReason::Worker,
        CancelReason::Manual,
    ];

    /// The stored name (`signal_not_found`, `unknown_forwarder`, `unknown_worker`,
    /// `schema_mismatch`, `worker`, `manual`).
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::SignalNotFound => "signal_not_found",
            CancelReason::UnknownForwarder => "unknown_forwarder",
            CancelReason::UnknownWorker => "unknown_worker",
            CancelReason::SchemaMismatch => "schema_mismatch",
            CancelReason::Worker => "worker",
            CancelReason::Manual => "manual",
        }
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CancelReason {
    type Err = super::QueueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CancelReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| super::QueueError::Corrupt {
                what: format!(
                    "cancel reason `{s}` is not one of signal_not_found, unknown_forwarder, \
                     unknown_worker, schema_mismatch, worker, manual"
                ),
            })
    }
}

/// How long finished jobs are kept before [`Queue::prune`](super::Queue::prune) (or the
/// runner's pruner) deletes them; a state set to `None` is kept forever. Stored signals
/// that no job refers to any more are deleted with them.
///
/// A stored signal no job refers to is deleted only once it was last stored (or stored
/// again) longer ago than the [`signal_margin`](Retention::signal_margin) (default 5
/// minutes). The margin is what makes pruning safe against an enqueue that stores the same
/// signal again at the same moment: on PostgreSQL, such an enqueue can commit its job after
/// the prune took its snapshot, where the prune would not see the job; it renews the
/// signal's `stored_at` to its own time, which the margin keeps out of reach. So enqueue
/// transactions (your own ones too, with `enqueue_in`) must commit within the margin, and
/// machines sharing a queue must keep their clocks well within it.
///
/// # Default
/// Completed jobs 1 day; cancelled and discarded jobs 30 days (they are the dead letters:
/// inspect and redrive them before then); unreferenced signals 5 minutes after they were
/// last stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Completed jobs. Default: 1 day.
    pub completed: Option<Duration>,
    /// Cancelled jobs. Default: 30 days.
    pub cancelled: Option<Duration>,
    /// Discarded jobs. Default: 30 days.
    pub discarded: Option<Duration>,
    /// How long after it was last stored an unreferenced signal is kept. Default: 5 minutes
    /// ([`DEFAULT_SIGNAL_MARGIN`]).
    pub signal_margin: Duration,
}

/// How long an unreferenced stored signal outlives its last store. Default: 5 minutes.
pub const DEFAULT_SIGNAL_MARGIN: Duration = Duration::from_secs(5 * 60);

impl Default for Retention {
    fn default() -> Self {
        Retention {
            completed: Some(Duration::from_secs(24 * 3600)),
            cancelled: Some(Duration::from_secs(30 * 24 * 3600)),
            discarded: Some(Duration::from_secs(30 * 24 * 3600)),
            signal_margin: DEFAULT_SIGNAL_MARGIN,
        }
    }
}

impl Retention {
    /// Keeps every job and signal forever (no pruning).
    pub fn keep_forever() -> Self {
        Retention {
            completed: None,
            cancelled: None,
            discarded: None,
            signal_margin: DEFAULT_SIGNAL_MARGIN,
        }
    }
    /// Keeps an unreferenced signal for `margin` after it was last stored. Default: 5
    /// minutes. A shorter margin frees space sooner but lets a prune race an enqueue that
    /// stores the same signal again (see the type's docs); zero is for tests only.
    pub fn signal_margin(mut self, margin: Duration) -> Self {
        self.signal_margin = margin;
        self
    }
    /// Keeps completed jobs for `age` (`None`: forever).
    pub fn completed(mut self, age: Option<Duration>) -> Self {
        self.completed = age;
        self
    }
    /// Keeps cancelled jobs for `age` (`None`: forever).
    pub fn cancelled(mut self, age: Option<Duration>) -> Self {
        self.cancelled = age;
        self
    }
    /// Keeps discarded jobs for `age` (`None`: forever).
    pub fn discarded(mut self, age: Option<Duration>) -> Self {
        self.discarded = age;
        self
    }
    /// Every final state with its age.
    pub(crate) fn per_state(&self) -> [(JobState, Option<Duration>); 3] {
        [
            (JobState::Completed, self.completed),
            (JobState::Cancelled, self.cancelled),
            (JobState::Discarded, self.discarded),
        ]
    }
}

/// What a prune deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PruneReport {
    /// Completed jobs deleted.
    pub completed: u64,
    /// Cancelled jobs deleted.
    pub cancelled: u64,
    /// Discarded jobs deleted.
    pub discarded: u64,
    /// Stored signals deleted (no job referred to them any more).
    pub signals: u64,
}

/// The worker name of the jobs of forwarder `name`: `signal_bus.forwarder:<name>`.
pub fn forwarder_worker(name: &str) -> String {
    format!("{}:{name}", super::FORWARDER_WORKER)
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
