//! Workers: code the queue runs for a job.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{CancelReason, Job, QueueError};

/// How a job run ended (the Sigra/Oban outcome taxonomy).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkOutcome {
    /// Done: the job completes.
    Ok,
    /// Will never work: the job is cancelled ([`CancelReason::Worker`]), not retried.
    Cancel(String),
    /// Will never work, for one of the named reasons (e.g.
    /// [`CancelReason::SchemaMismatch`]: the args are not what this worker reads).
    CancelFor(CancelReason, String),
    /// Failed: retried with backoff until `max_attempts`, then discarded.
    Error(String),
    /// Not now: run again after this long, without spending an attempt.
    Snooze(Duration),
}

/// Code the queue runs for jobs of one worker name.
#[async_trait]
pub trait Worker: Send + Sync + 'static {
    /// Runs one job. Never panics out: a panic becomes [`WorkOutcome::Error`].
    async fn perform(&self, job: &Job) -> WorkOutcome;
}

/// The audit-only scope a [`TenantWorker`] receives: who the job acts for. It carries no
/// session, request or membership and must never be passed to authorization code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scope {
    /// The organization the job belongs to (`null` in the args: none, e.g. a system job).
    pub organization_id: Option<String>,
    /// The user the job acts for (`null` in the args: none).
    pub actor_id: Option<String>,
}

/// The argument keys every tenant job must carry.
pub const TENANT_KEYS: [&str; 2] = ["organization_id", "actor_id"];

/// Checks tenant job args: `organization_id` and `actor_id` present (null allowed), and
/// rebuilds the scope from them.
///
/// # Errors
/// [`QueueError::MissingArg`] for an absent key; [`QueueError::Corrupt`] for a value that is
/// neither a string, a number nor null.
pub fn tenant_scope(args: &Value) -> Result<Scope, QueueError> {
    let get = |key: &'static str| -> Result<Option<String>, QueueError> {
        match args.get(key) {
            None => Err(QueueError::MissingArg { key }),
            Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(QueueError::Corrupt {
                what: format!("job arg `{key}` is {other}, not a string, a number or null"),
            }),
        }
    };
    Ok(Scope {
        organization_id: get("organization_id")?,
        actor_id: get("actor_id")?,
    })
}

/// A worker for jobs that act for a tenant (Sigra's `Sigra.Workers`): its args must contain
/// `organization_id` and `actor_id` (null allowed, absent rejected at enqueue and again at
/// run time for hand-built jobs), rebuilt into an audit-only [`Scope`].
#[async_trait]
pub trait TenantWorker: Send + Sync + 'static {
    /// Runs one job for `scope`.
    async fn perform(&self, scope: Scope, job: &Job) -> WorkOutcome;
}

/// Runs a [`TenantWorker`] as a [`Worker`].
#[derive(Debug)]
pub struct Tenant<W>(pub W);

#[async_trait]
impl<W: TenantWorker> Worker for Tenant<W> {
    async fn perform(&self, job: &Job) -> WorkOutcome {
        match tenant_scope(&job.args) {
            Ok(scope) => self.0.perform(scope, job).await,
            Err(e) => WorkOutcome::CancelFor(CancelReason::SchemaMismatch, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tenant_keys_must_be_present_null_allowed() {
        let s = tenant_scope(&json!({"organization_id": "org-1", "actor_id": null})).unwrap();
        assert_eq!(s.organization_id.as_deref(), Some("org-1"));
        assert_eq!(s.actor_id, None);
        let e = tenant_scope(&json!({"organization_id": 7})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "job args must contain `actor_id` (null is allowed, absent is not)"
        );
        assert!(tenant_scope(&json!({"organization_id": [], "actor_id": null})).is_err());
    }
}
