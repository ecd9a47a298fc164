//! Executor pool: runs Python functions in supervised, isolated processes (API; the implementation lands next).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How task processes are isolated from each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A warm zygote forks one child per task (default): full isolation, ~2 ms per task.
    #[default]
    Fork,
    /// Long-lived processes run tasks one after another: fastest, no isolation between tasks.
    Reuse,
}

/// Settings of the executor subsystem (the `[executor]` table of dispatcher.toml and worker.toml).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorConfig {
    /// Python interpreter used for executors (must have dill importable).
    pub python: String,
    /// `fork` (a zygote forks a child per task) or `reuse` (long-lived processes).
    pub isolation: Isolation,
    /// Extra import paths, prepended to the inherited `PYTHONPATH`.
    pub pythonpath: Vec<PathBuf>,
    /// Modules imported once at executor start (e.g. `numpy`), so tasks need not import them.
    pub preload: Vec<String>,
    /// Per-task wall-clock limit in seconds; 0 means no limit.
    pub task_timeout_secs: f64,
    /// Per-task address-space limit (RLIMIT_AS) in MiB; 0 means no limit.
    pub memory_limit_mb: u64,
    /// Working directory of executor processes; unset means the daemon's own.
    pub workdir: Option<PathBuf>,
    /// Seconds allowed for an executor to start and import dill before start-up fails.
    pub start_timeout_secs: f64,
    /// Deserialized functions kept per process in `reuse` mode.
    pub function_cache_size: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            python: "python3".into(),
            isolation: Isolation::Fork,
            pythonpath: Vec::new(),
            preload: Vec::new(),
            task_timeout_secs: 0.0,
            memory_limit_mb: 0,
            workdir: None,
            start_timeout_secs: 30.0,
            function_cache_size: 256,
        }
    }
}

/// One task handed to the pool.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub task_id: String,
    pub function_id: String,
    /// dill pickle of the function (decoded bytes, not base64).
    pub fn_payload: Bytes,
    /// dill pickle of `(args_tuple, kwargs_dict)`.
    pub args_payload: Bytes,
    /// Overrides the configured per-task timeout.
    pub timeout: Option<Duration>,
}

/// How a task ended. Both variants carry a pickle for the task's `result` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The function returned; `result` is the dill pickle of the return value.
    Completed { result: Vec<u8> },
    /// The function raised, or the platform failed it; `result` is a pickled exception and
    /// `cause` a one-line summary for logs (e.g. `ExecutorCrashed: killed by signal 9 (SIGKILL)`).
    Failed { result: Vec<u8>, cause: String },
}

/// Errors starting or running the pool itself (never the outcome of a user's task).
#[derive(Debug, Error)]
pub enum ExecutorError {
    #[error("executor pool is not available: {0}")]
    Unavailable(String),
}

/// A pool of `slots` concurrent task executions.
pub struct ExecutorPool {
    slots: usize,
    permits: Arc<Semaphore>,
}

/// A reserved slot of the pool; running a task consumes it.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl ExecutorPool {
    /// Starts the executor processes and waits until they are warm.
    pub async fn start(_cfg: ExecutorConfig, slots: usize) -> Result<Self, ExecutorError> {
        Ok(ExecutorPool {
            slots,
            permits: Arc::new(Semaphore::new(slots)),
        })
    }

    /// Total concurrent slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Slots free right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Waits for a free slot.
    pub async fn reserve(&self) -> Slot {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("pool semaphore is never closed");
        Slot { _permit: permit }
    }

    /// Reserves a slot and runs `task` on it.
    pub async fn run(&self, task: TaskSpec) -> Outcome {
        self.reserve().await.run(task).await
    }

    /// Stops all executor processes (running tasks are killed).
    pub async fn shutdown(&self) {}
}

impl Slot {
    /// Runs `task` and reports how it ended; infrastructure failures become `Outcome::Failed`.
    pub async fn run(self, task: TaskSpec) -> Outcome {
        let result = crate::pickle::platform_exception(
            crate::pickle::PlatformError::ExecutorCrashed,
            &format!("executor not implemented (task {})", task.task_id),
        );
        Outcome::Failed {
            result,
            cause: "ExecutorCrashed: executor not implemented".into(),
        }
    }
}
