//! Redis store: the schema of functions and tasks, the durable queue and every task transition.
//!
//! Only the gateway and the dispatcher talk to Redis; workers never do. Every write that changes a
//! task's state is one Lua script (see [`scripts`]), so a task is never half-created and a terminal
//! state is never overwritten by a late or duplicate report.

pub mod batch;
pub mod cancel;
pub mod done;
pub mod functions;
pub mod keys;
pub mod lease;
pub mod presence;
pub mod queue;
pub mod scripts;
pub mod stats;
pub mod status;

use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client, Value};
use thiserror::Error;
use uuid::Uuid;

pub use queue::{QueueEntry, QueueReader};
pub use status::TaskStatus;

use crate::runtime::Runtime;
use crate::time::now_ms;

/// Errors of the store layer.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("invalid Redis URL {url:?}: {source}")]
    Url {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected data in Redis: {0}")]
    Corrupt(String),
}

/// Result of trying to move a task from QUEUED to RUNNING.
#[derive(Debug, Clone)]
pub enum Claim {
    /// The task is now RUNNING under `attempt` (the fencing token for its result).
    Running {
        attempt: u32,
        function_id: Uuid,
        args: Bytes,
        /// The task's own time limit, if it was submitted with one.
        timeout: Option<Duration>,
    },
    /// The task was not QUEUED; it is in this state.
    NotQueued(TaskStatus),
    /// No such task (expired or never existed).
    Missing,
}

/// A terminal report for a task.
#[derive(Debug, Clone)]
pub struct Finish<'a> {
    pub task_id: Uuid,
    /// The state the task must be in for the report to apply (RUNNING, or QUEUED for early failures).
    pub from: TaskStatus,
    /// Attempt number the report belongs to; `None` accepts any.
    pub attempt: Option<u32>,
    pub status: TaskStatus,
    /// Pickle of the return value or exception.
    pub result: &'a [u8],
    /// One-line failure cause for operators ("" when COMPLETED).
    pub error: &'a str,
    /// Queue entry to acknowledge in the same step.
    pub entry_id: Option<&'a str>,
}

/// A snapshot of a task record (for `/result`, logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    pub status: TaskStatus,
    pub result: Option<Vec<u8>>,
    /// Python and dill versions of the executor that ran (or runs) the task, when known.
    pub runtime: Option<Runtime>,
}

/// Handle on the faas data in one Redis database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: Client,
    conn: ConnectionManager,
    result_ttl: Duration,
}

impl Store {
    /// Connects to `url`. Fails if Redis cannot be reached within `connect_timeout`.
    pub async fn connect(
        url: &str,
        result_ttl: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(|source| StoreError::Url {
            url: url.to_string(),
            source,
        })?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let conn = client.get_connection_manager_with_config(cfg).await?;
        Ok(Store {
            client,
            conn,
            result_ttl,
        })
    }

    /// The underlying client, for dedicated (blocking) connections.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A clone of the shared multiplexed connection.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// PING.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// Stores a function and returns its new id.
    pub async fn register_function(&self, name: &str, payload: &[u8]) -> Result<Uuid, StoreError> {
        let id = Uuid::new_v4();
        let now = now_ms();
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .hset_multiple(
                keys::function(&id),
                &[
                    ("name", name.as_bytes()),
                    ("payload", payload),
                    ("created_ms", now.to_string().as_bytes()),
                ],
            )
            .ignore()
            .zadd(keys::FUNCTIONS, id.to_string(), now)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(id)
    }

    /// The pickled function body, or `None` if the function does not exist.
    pub async fn function_payload(&self, id: &Uuid) -> Result<Option<Bytes>, StoreError> {
        let mut c = self.conn.clone();
        let v: Option<Vec<u8>> = c.hget(keys::function(id), "payload").await?;
        Ok(v.map(Bytes::from))
    }

    /// Creates a QUEUED task, enqueues it and publishes its id, atomically (a batch of one, see
    /// [`Store::create_tasks`]). Returns `None` (and writes nothing) when the function does not exist.
    pub async fn create_task(
        &self,
        function_id: &Uuid,
        args: &[u8],
    ) -> Result<Option<Uuid>, StoreError> {
        let ids = self.create_tasks(function_id, &[args], None).await?;
        Ok(ids.and_then(|v| v.into_iter().next()))
    }

    /// The task's status, or `None` for an unknown id.
    pub async fn task_status(&self, id: &Uuid) -> Result<Option<TaskStatus>, StoreError> {
        let mut c = self.conn.clone();
        let v: Option<String> = c.hget(keys::task(id), "status").await?;
        v.map(|s| s.parse().map_err(StoreError::Corrupt))
            .transpose()
    }

    /// The task's status, result (if any) and runtime, or `None` for an unknown id.
    pub async fn task_view(&self, id: &Uuid) -> Result<Option<TaskView>, StoreError> {
        let mut views = self.task_views(std::slice::from_ref(id)).await?;
        Ok(views.pop().flatten())
    }

    /// Moves a task from QUEUED to RUNNING on `worker`, without recording a runtime.
    pub async fn claim(&self, task_id: &Uuid, worker: &str) -> Result<Claim, StoreError> {
        self.claim_for(task_id, worker, &Runtime::default()).await
    }

    /// Moves a task from QUEUED to RUNNING on `worker`, whose executors run `runtime`.
    pub async fn claim_for(
        &self,
        task_id: &Uuid,
        worker: &str,
        runtime: &Runtime,
    ) -> Result<Claim, StoreError> {
        let mut c = self.conn.clone();
        let reply: Vec<Value> = scripts::CLAIM
            .key(keys::task(task_id))
            .arg(worker)
            .arg(now_ms())
            .arg(&runtime.python)
            .arg(&runtime.dill)
            .invoke_async(&mut c)
            .await?;
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
                let args = match reply.get(3) {
                    Some(Value::BulkString(b)) => Bytes::from(b.clone()),
                    _ => Bytes::new(),
                };
                let timeout = text(4)?
                    .parse::<u64>()
                    .ok()
                    .filter(|&ms| ms > 0)
                    .map(Duration::from_millis);
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

    /// Applies a terminal report. Returns whether it changed the task (false: late or duplicate).
    pub async fn finish(&self, f: &Finish<'_>) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let applied: i64 = scripts::FINISH
            .key(keys::task(&f.task_id))
            .key(keys::QUEUE)
            .key(keys::STATS)
            .arg(f.from.as_str())
            .arg(f.attempt.map(|a| a.to_string()).unwrap_or_default())
            .arg(f.status.as_str())
            .arg(f.result)
            .arg(f.error)
            .arg(now_ms())
            .arg(self.result_ttl.as_secs())
            .arg(f.entry_id.unwrap_or(""))
            .arg(keys::GROUP)
            .arg(keys::DONE_CHANNEL)
            .arg(f.task_id.to_string())
            .invoke_async(&mut c)
            .await?;
        Ok(applied == 1)
    }

    /// Puts a RUNNING task back to QUEUED (a retry) and re-enqueues it. Returns whether it applied.
    pub async fn requeue(
        &self,
        task_id: &Uuid,
        attempt: u32,
        reason: &str,
        entry_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let applied: i64 = scripts::REQUEUE
            .key(keys::task(task_id))
            .key(keys::QUEUE)
            .arg(attempt.to_string())
            .arg(reason)
            .arg(task_id.to_string())
            .arg(entry_id.unwrap_or(""))
            .arg(keys::GROUP)
            .invoke_async(&mut c)
            .await?;
        Ok(applied == 1)
    }

    /// Acknowledges and deletes a queue entry without touching any task.
    pub async fn ack(&self, entry_id: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = scripts::ACK
            .key(keys::QUEUE)
            .arg(keys::GROUP)
            .arg(entry_id)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Number of entries in the queue (queued plus delivered-but-unacknowledged tasks).
    pub async fn queue_len(&self) -> Result<u64, StoreError> {
        let mut c = self.conn.clone();
        Ok(c.xlen(keys::QUEUE).await?)
    }
}
