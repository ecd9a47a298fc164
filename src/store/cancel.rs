//! Cancelling a queued task: QUEUED → FAILED with `TaskCancelled`, in one atomic step.
//!
//! The task's queue entry stays in the stream; the dispatcher that reads it finds the task
//! FAILED and acknowledges the entry without running anything. A RUNNING task is not touched
//! (stopping a run needs the dispatcher ⇄ worker `cancel` message, which does not exist yet).

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use uuid::Uuid;

use super::{keys, Store, StoreError, TaskStatus};
use crate::pickle::{platform_exception, PlatformError};
use crate::time::now_ms;

/// QUEUED → FAILED. KEYS: task hash, stats hash. ARGV: result, error, now_ms, ttl_secs, done
/// channel, task_id. Returns "CANCELLED", the current status, or "MISSING".
static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    let body = r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'MISSING' end
if st ~= 'QUEUED' then return st end
redis.call('HSET', KEYS[1], 'status', 'FAILED', 'result', ARGV[1], 'error', ARGV[2], 'finished_ms', ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
faas_settled(KEYS[2], KEYS[1], 'FAILED', ARGV[2], ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 'CANCELLED'
"#;
    Script::new(&format!("{}{body}", *super::stats::SETTLED_LUA))
});

/// What a cancel request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The task was QUEUED and is now FAILED with `TaskCancelled`.
    Cancelled,
    /// The task is in this state (RUNNING, COMPLETED or FAILED) and was left alone.
    Refused(TaskStatus),
    /// No such task.
    Missing,
}

impl Store {
    /// Cancels a QUEUED task; `ttl` (0 = none) is the lifetime of the cancelled record.
    pub async fn cancel(&self, task_id: &Uuid, ttl: Duration) -> Result<Cancel, StoreError> {
        let kind = PlatformError::TaskCancelled;
        let detail = "cancelled by request before it ran";
        let mut c = self.conn();
        let answer: String = CANCEL
            .key(keys::task(task_id))
            .key(keys::STATS)
            .arg(platform_exception(kind, detail))
            .arg(kind.message(detail))
            .arg(now_ms())
            .arg(ttl.as_secs())
            .arg(keys::DONE_CHANNEL)
            .arg(task_id.to_string())
            .invoke_async(&mut c)
            .await?;
        match answer.as_str() {
            "CANCELLED" => Ok(Cancel::Cancelled),
            "MISSING" => Ok(Cancel::Missing),
            other => Ok(Cancel::Refused(other.parse().map_err(StoreError::Corrupt)?)),
        }
    }
}
