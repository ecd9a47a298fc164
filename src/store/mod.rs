//! Redis store: the schema of functions and tasks, the durable queue and every task transition.
//!
//! Only the gateway and the dispatcher talk to Redis; workers never do. Every write that changes a
//! task's state is one Lua script (see [`scripts`]), so a task is never half-created and a terminal
//! state is never overwritten by a late or duplicate report. Every operation is idempotent, so a
//! call whose reply was lost may be repeated ([`conn`] does so once after a dropped connection,
//! [`Store::retrying`] until Redis is back).
//!
//! Connections ([`conn`]) recover by themselves and follow Sentinel failovers; [`Health`] says
//! whether Redis is reachable.

pub mod batch;
pub mod cancel;
pub mod claims;
pub mod conn;
pub mod endpoint;
pub mod follow;
pub mod functions;
pub mod health;
pub mod keys;
pub mod lease;
pub mod presence;
pub mod queue;
mod replicas;
pub mod scripts;
pub mod stats;
pub mod status;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use redis::{AsyncCommands, Value};
use thiserror::Error;
use uuid::Uuid;

pub use conn::{is_unavailable, is_value_refused, Conn, Connector};
pub use endpoint::Endpoint;
pub use health::{Health, Outage};
pub use queue::{QueueEntry, QueueReader, ADOPT_MIN_IDLE};
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
    /// `WAIT` saw fewer replicas than asked for: the tasks exist and are queued on the primary,
    /// but a failover now could lose them.
    #[error(
        "{} queued, but only {acked} of {wanted} Redis replicas confirmed the write within {timeout_ms} \
         ms; it will run unless the primary fails before a replica has it (see GET /status/ID)",
        named(task_ids)
    )]
    NotReplicated {
        task_ids: Vec<Uuid>,
        acked: u32,
        wanted: u32,
        timeout_ms: u64,
    },
}

/// "task ID is" or "tasks ID, ID, ... are", for [`StoreError::NotReplicated`].
fn named(ids: &[Uuid]) -> String {
    match ids {
        [one] => format!("task {one} is"),
        many => {
            let list: Vec<String> = many.iter().map(Uuid::to_string).collect();
            format!("tasks {} are", list.join(", "))
        }
    }
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

/// What a terminal report did to its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The task took the reported state.
    Applied,
    /// The task already has this state from the same attempt (a report sent again, or a retry
    /// whose first reply was lost): nothing changed.
    Duplicate,
    /// The task is in another state or attempt (a late report of a lost run): ignored.
    Stale,
    /// Redis has no record of the task (it expired, or Redis lost its data): ignored.
    Unknown,
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

/// How long a daemon tries to reach Redis at start before it gives up (and systemd restarts it).
pub const STARTUP_WAIT: Duration = Duration::from_secs(5);

/// Response timeout of the queue reader's connection: its longest `BLOCK` plus a margin.
const QUEUE_RESPONSE_TIMEOUT: Duration =
    Duration::from_millis(queue::MAX_BLOCK.as_millis() as u64 + 1000);
/// Shortest pause between two tries of [`Store::retrying`] (longer while Redis is down).
const RETRY_PAUSE: Duration = Duration::from_millis(50);
const RETRY_PAUSE_DOWN: Duration = Duration::from_millis(250);

/// Handle on the faas data in one Redis database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    connector: Connector,
    conn: Conn,
    result_ttl: Duration,
    replicas: Option<std::sync::Arc<replicas::Replicas>>,
}

impl Store {
    /// A store for `url` (`redis://…` or `redis+sentinel://…`); connects on first use. No I/O.
    pub fn open(url: &str, result_ttl: Duration) -> Result<Self, StoreError> {
        let connector = Connector::open(url)?;
        let conn = connector.conn("shared", conn::RESPONSE_TIMEOUT);
        Ok(Store {
            connector,
            conn,
            result_ttl,
            replicas: None,
        })
    }

    /// Opens `url` and checks that Redis answers within `timeout` (trying again meanwhile).
    pub async fn connect(
        url: &str,
        result_ttl: Duration,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let store = Self::open(url, result_ttl)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match store.ping().await {
                Ok(()) => return Ok(store),
                Err(e) if is_unavailable(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(store.conn.retry_in().max(RETRY_PAUSE)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes [`Store::create_task`] wait until `wanted` replicas have the task (Redis `WAIT`, at
    /// most `timeout`); fewer is [`StoreError::NotReplicated`]. 0 turns it off.
    pub fn with_replicas(mut self, wanted: u32, timeout: Duration) -> Self {
        self.replicas = (wanted > 0).then(|| {
            std::sync::Arc::new(replicas::Replicas::new(
                self.connector.clone(),
                wanted,
                timeout,
            ))
        });
        self
    }

    /// Runs `op` again and again while it fails because Redis is unavailable, waiting for the
    /// next connection attempt in between (so it resumes at most about a second after Redis
    /// answers again, and never spins). Other errors and successes are returned. Only for
    /// idempotent work: every operation of this store is.
    pub async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        loop {
            match op().await {
                Err(e) if is_unavailable(&e) => {
                    tracing::debug!(error = %e, "Redis unavailable; will retry");
                    let least = if self.health().is_down() {
                        RETRY_PAUSE_DOWN
                    } else {
                        RETRY_PAUSE
                    };
                    tokio::time::sleep(self.conn.retry_in().max(least)).await;
                }
                other => return other,
            }
        }
    }

    /// Where Redis is and how to reach it (for connections of other kinds, e.g. pub/sub).
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Where Redis is (displays without passwords).
    pub fn endpoint(&self) -> &Endpoint {
        self.connector.endpoint()
    }

    /// Whether Redis is reachable, as this daemon's connections see it.
    pub fn health(&self) -> &Health {
        self.connector.health()
    }

    /// The shared connection (multiplexed; reconnects by itself).
    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// A new dedicated connection for blocking queue reads (see [`QueueReader`]).
    pub fn queue_conn(&self) -> Conn {
        self.connector.conn("queue", QUEUE_RESPONSE_TIMEOUT)
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
    /// [`Store::create_tasks`]). Returns `None` (and writes nothing) when the function does not
    /// exist. With [`Store::with_replicas`], returns only once enough replicas have the task.
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

    /// Moves a task from QUEUED to RUNNING on `worker`, without recording a runtime or a claim
    /// token (for tests and tools).
    pub async fn claim(&self, task_id: &Uuid, worker: &str) -> Result<Claim, StoreError> {
        self.claim_for(task_id, worker, &Runtime::default(), "")
            .await
    }

    /// Moves a task from QUEUED to RUNNING on `worker`, whose executors run `runtime`. `token`
    /// names this claim (unique per dispatcher process and queue entry): a claim repeated with
    /// the same token, because the reply to the first was lost, returns the same run instead of
    /// "already RUNNING".
    pub async fn claim_for(
        &self,
        task_id: &Uuid,
        worker: &str,
        runtime: &Runtime,
        token: &str,
    ) -> Result<Claim, StoreError> {
        let mut c = self.conn.clone();
        let reply: Vec<Value> = scripts::CLAIM
            .key(keys::task(task_id))
            .arg(worker)
            .arg(now_ms())
            .arg(&runtime.python)
            .arg(&runtime.dill)
            .arg(token)
            .invoke_async(&mut c)
            .await?;
        claims::parse_claim(task_id, reply)
    }

    /// Applies a terminal report (see [`Recorded`] for what it may find).
    pub async fn finish(&self, f: &Finish<'_>) -> Result<Recorded, StoreError> {
        let mut c = self.conn.clone();
        let outcome: i64 = scripts::FINISH
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
        claims::recorded(&f.task_id, outcome)
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
