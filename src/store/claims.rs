//! Batched task transitions: claiming N tasks ([`scripts::CLAIM_MANY`]) and settling N
//! ([`scripts::FINISH_MANY`]) in one round trip each, acknowledging N queue entries and reading
//! N function payloads at once.
//!
//! Each batch has exactly the per-task semantics and replies of N single calls
//! ([`Store::claim_for`], [`Store::finish`], [`Store::ack`]), and is idempotent the same way: a
//! batch repeated because its reply was lost answers as the single calls would when repeated.

use std::time::Duration;

use bytes::Bytes;
use redis::Value;
use uuid::Uuid;

use super::{keys, scripts, Claim, Finish, QueueEntry, Recorded, Store, StoreError};
use crate::runtime::Runtime;
use crate::time::now_ms;

/// One task of a [`Store::claim_many`]: its id and the claim token naming this claim.
#[derive(Debug, Clone, Copy)]
pub struct ClaimOf<'a> {
    pub task_id: Uuid,
    pub token: &'a str,
}

impl Store {
    /// Claims every task of `tasks` for `worker`, whose executors run `runtime`, in one step:
    /// one [`Claim`] per task, in order, the same as [`Store::claim_for`] for each.
    pub async fn claim_many(
        &self,
        tasks: &[ClaimOf<'_>],
        worker: &str,
        runtime: &Runtime,
    ) -> Result<Vec<Claim>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts::CLAIM_MANY.prepare_invoke();
        for t in tasks {
            inv.key(keys::task(&t.task_id));
        }
        inv.arg(worker)
            .arg(now_ms())
            .arg(&runtime.python)
            .arg(&runtime.dill);
        for t in tasks {
            inv.arg(t.token);
        }
        let mut c = self.conn();
        let replies: Vec<Vec<Value>> = inv.invoke_async(&mut c).await?;
        per_task("claim", tasks, replies, |t, r| parse_claim(&t.task_id, r))
    }

    /// Applies every terminal report of `finishes` in one step: one [`Recorded`] per report, in
    /// order, the same as [`Store::finish`] for each.
    pub async fn finish_many(&self, finishes: &[Finish<'_>]) -> Result<Vec<Recorded>, StoreError> {
        if finishes.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts::FINISH_MANY.prepare_invoke();
        inv.key(keys::QUEUE).key(keys::STATS);
        for f in finishes {
            inv.key(keys::task(&f.task_id));
        }
        inv.arg(now_ms())
            .arg(self.result_ttl.as_secs())
            .arg(keys::GROUP)
            .arg(keys::DONE_CHANNEL);
        for f in finishes {
            inv.arg(f.from.as_str())
                .arg(f.attempt.map(|a| a.to_string()).unwrap_or_default())
                .arg(f.status.as_str())
                .arg(f.result)
                .arg(f.error)
                .arg(f.entry_id.unwrap_or(""))
                .arg(f.task_id.to_string());
        }
        let mut c = self.conn();
        let replies: Vec<i64> = inv.invoke_async(&mut c).await?;
        per_task("finish", finishes, replies, |f, r| recorded(&f.task_id, r))
    }

    /// Acknowledges and deletes queue entries without touching any task, in one atomic step.
    /// Again: no-op.
    pub async fn ack_many(&self, entry_ids: &[&str]) -> Result<(), StoreError> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let mut c = self.conn();
        let _: () = redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(keys::QUEUE)
            .arg(keys::GROUP)
            .arg(entry_ids)
            .ignore()
            .cmd("XDEL")
            .arg(keys::QUEUE)
            .arg(entry_ids)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Hands queue entries this consumer read but never claimed back to the queue
    /// ([`scripts::RELEASE`]), e.g. read ahead by a dispatcher that is stopping: each task still
    /// QUEUED gets a new entry that any dispatcher may read. Other entries (no task id, a task
    /// no longer QUEUED) are left pending for a recovery pass. Returns how many tasks were
    /// re-enqueued.
    pub async fn release(&self, entries: &[QueueEntry]) -> Result<usize, StoreError> {
        let mut script = scripts::RELEASE.prepare_invoke();
        script.key(keys::QUEUE).arg(keys::GROUP);
        let mut any = false;
        for e in entries {
            if let Some(id) = e.task_id {
                script
                    .key(keys::task(&id))
                    .arg(&e.entry_id)
                    .arg(id.to_string());
                any = true;
            }
        }
        if !any {
            return Ok(0);
        }
        let mut c = self.conn();
        let n: usize = script.invoke_async(&mut c).await?;
        Ok(n)
    }

    /// The pickled body of each function (`None` for one that does not exist), in one round trip.
    pub async fn function_payloads(&self, ids: &[Uuid]) -> Result<Vec<Option<Bytes>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGET").arg(keys::function(id)).arg("payload");
        }
        let mut c = self.conn();
        let got: Vec<Option<Vec<u8>>> = pipe.query_async(&mut c).await?;
        Ok(got.into_iter().map(|v| v.map(Bytes::from)).collect())
    }
}

/// The answer of a batch script (`what`: "claim", "finish") for each of `tasks`, parsed by
/// `parse` from its reply: the script answers one reply per task, in order, and any other count
/// is [`StoreError::Corrupt`].
fn per_task<T, R, O>(
    what: &str,
    tasks: &[T],
    replies: Vec<R>,
    parse: impl Fn(&T, R) -> Result<O, StoreError>,
) -> Result<Vec<O>, StoreError> {
    if replies.len() != tasks.len() {
        return Err(StoreError::Corrupt(format!(
            "{what} of {} tasks: {} replies",
            tasks.len(),
            replies.len()
        )));
    }
    tasks
        .iter()
        .zip(replies)
        .map(|(t, r)| parse(t, r))
        .collect()
}

/// A [`Claim`] from one [`scripts::CLAIM`] reply.
pub(super) fn parse_claim(task_id: &Uuid, reply: Vec<Value>) -> Result<Claim, StoreError> {
    let text = |i: usize| -> Result<String, StoreError> {
        match reply.get(i) {
            Some(Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
            other => Err(StoreError::Corrupt(format!(
                "claim reply field {i} of task {task_id}: {other:?}"
            ))),
        }
    };
    let state = text(0)?;
    match state.as_str() {
        "MISSING" => Ok(Claim::Missing),
        "RUNNING" if reply.len() == 5 => {
            let attempt = text(1)?
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("attempt of {task_id}: {e}")))?;
            let function_id = Uuid::parse_str(&text(2)?)
                .map_err(|e| StoreError::Corrupt(format!("function_id of {task_id}: {e}")))?;
            let timeout = text(4)?
                .parse::<u64>()
                .ok()
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis);
            let args = match reply.into_iter().nth(3) {
                Some(Value::BulkString(b)) => Bytes::from(b),
                _ => Bytes::new(),
            };
            Ok(Claim::Running {
                attempt,
                function_id,
                args,
                timeout,
            })
        }
        other => Ok(Claim::NotQueued(
            other.parse().map_err(StoreError::Corrupt)?,
        )),
    }
}

/// A [`Recorded`] from one [`scripts::FINISH`] reply.
pub(super) fn recorded(task_id: &Uuid, reply: i64) -> Result<Recorded, StoreError> {
    match reply {
        1 => Ok(Recorded::Applied),
        2 => Ok(Recorded::Duplicate),
        0 => Ok(Recorded::Stale),
        -1 => Ok(Recorded::Unknown),
        other => Err(StoreError::Corrupt(format!(
            "finish of task {task_id}: reply {other}"
        ))),
    }
}
