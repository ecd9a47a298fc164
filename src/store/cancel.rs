//! Cancelling a task: QUEUED or RUNNING → FAILED with `TaskCancelled`, in one atomic step.
//!
//! A QUEUED task's entry stays in the stream; the dispatcher that reads it finds the task
//! FAILED and acknowledges the entry without running anything. A RUNNING task is FAILED at
//! once too (so a result that races with the cancel is fenced off as stale), and its id is
//! published on [`keys::CANCEL_CHANNEL`]: the dispatcher running it kills the run's executor,
//! locally or through the worker's `cancel` message, and its report of the killed run then only
//! acknowledges the queue entry. A dispatcher that missed the message (not subscribed at that
//! moment) finds out when the run's result is refused as stale: the run is wasted work, never a
//! second outcome.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use uuid::Uuid;

use super::{keys, Store, StoreError, TaskStatus};
use crate::pickle::{platform_exception, PlatformError};
use crate::time::now_ms;

/// QUEUED|RUNNING → FAILED. KEYS: task hash, stats hash. ARGV: result and error for a queued
/// task, result and error for a running one, now_ms, ttl_secs, done channel, cancel channel,
/// task_id, '1' to cancel a RUNNING task too ('0': leave it). Returns "QUEUED" or "RUNNING" (what was cancelled), "MISSING", or "LEFT:" and the status
/// it found and left alone. Again: the task is FAILED, so the repetition answers "FAILED" (the caller asked
/// once; the gateway answers what it finds, as for any cancel of a finished task).
static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    let body = r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'MISSING' end
local result, err
if st == 'QUEUED' then
  result, err = ARGV[1], ARGV[2]
elseif st == 'RUNNING' and ARGV[10] == '1' then
  result, err = ARGV[3], ARGV[4]
else
  return 'LEFT:' .. st
end
redis.call('HSET', KEYS[1], 'status', 'FAILED', 'result', result, 'error', err, 'finished_ms', ARGV[5])
if tonumber(ARGV[6]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[6]) end
faas_settled(KEYS[2], KEYS[1], 'FAILED', err, ARGV[5])
redis.call('PUBLISH', ARGV[7], ARGV[9])
if st == 'RUNNING' then redis.call('PUBLISH', ARGV[8], ARGV[9]) end
return st
"#;
    Script::new(&format!("{}{body}", *super::stats::SETTLED_LUA))
});

/// What a cancel request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The task was in this state (QUEUED or RUNNING) and is now FAILED with `TaskCancelled`.
    Cancelled(TaskStatus),
    /// The task had already finished (COMPLETED or FAILED), or was RUNNING and running tasks
    /// were not to be cancelled: left alone.
    Refused(TaskStatus),
    /// No such task.
    Missing,
}

impl Store {
    /// Cancels a QUEUED task, or a RUNNING one when `running`; `ttl` (0 = none) is the
    /// lifetime of the cancelled record.
    pub async fn cancel(
        &self,
        task_id: &Uuid,
        ttl: Duration,
        running: bool,
    ) -> Result<Cancel, StoreError> {
        let kind = PlatformError::TaskCancelled;
        let queued = "cancelled by request before it ran";
        let stopped = "cancelled by request while running (its executor was stopped)";
        let mut c = self.conn();
        let answer: String = CANCEL
            .key(keys::task(task_id))
            .key(keys::STATS)
            .arg(platform_exception(kind, queued))
            .arg(kind.message(queued))
            .arg(platform_exception(kind, stopped))
            .arg(kind.message(stopped))
            .arg(now_ms())
            .arg(ttl.as_secs())
            .arg(keys::DONE_CHANNEL)
            .arg(keys::CANCEL_CHANNEL)
            .arg(task_id.to_string())
            .arg(if running { "1" } else { "0" })
            .invoke_async(&mut c)
            .await?;
        if answer == "MISSING" {
            return Ok(Cancel::Missing);
        }
        let (left, found) = match answer.strip_prefix("LEFT:") {
            Some(st) => (true, st),
            None => (false, answer.as_str()),
        };
        let found: TaskStatus = found.parse().map_err(StoreError::Corrupt)?;
        Ok(if left {
            Cancel::Refused(found)
        } else {
            Cancel::Cancelled(found)
        })
    }
}
