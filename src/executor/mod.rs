//! Executor pool: runs Python functions in supervised, isolated processes.
//!
//! Two isolation modes share one protocol (see [`protocol`], [`frame`]) with the embedded
//! Python side ([`script`], `python/faas_executor.py`):
//! - `fork` ([`zygote`]): a warm single-threaded zygote forks one child per task and reports
//!   `started`/`exited` (wait status) for it; this side enforces timeouts with `killpg`.
//! - `reuse` ([`reuse`]): one long-lived process per slot runs tasks back to back, each driven by
//!   a loop that takes the next task from a queue shared by all processes.
//!
//! The pool admits `slots × (1 + executor.prefetch)` tasks ([`ExecutorPool::capacity`]; prefetch
//! is 0 by default) but runs at most `slots` at once: admitted tasks wait in memory for the next
//! free process (no task is bound to a busy one), so a process that finishes a task starts the
//! next without a round trip to the dispatcher. A waiting task whose `stop` fires leaves the
//! queue without running.
//!
//! Processes are spawned by [`process`] into the [`sandbox`] resolved once per pool (executor
//! user, environment allowlist, network namespace, no capabilities, set between fork and exec;
//! per-task limits are set by the Python side) and every way a task can end is mapped to an
//! [`Outcome`] by [`classify`].

pub mod classify;
pub mod frame;
mod output;
pub mod process;
pub mod protocol;
pub mod reuse;
pub mod sandbox;
pub mod script;
pub mod zygote;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

pub use crate::config::{ExecutorConfig, Isolation, Network};

use crate::pickle::PlatformError;

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

impl Outcome {
    /// The result pickle.
    pub fn result(&self) -> &[u8] {
        match self {
            Outcome::Completed { result } | Outcome::Failed { result, .. } => result,
        }
    }

    /// This outcome, or FAILED with `ResultTooLarge` when its pickle exceeds `max` bytes
    /// (`max_result_bytes`): a task whose result cannot be kept ends cleanly, never in retries.
    pub fn within(self, max: usize) -> Outcome {
        let len = self.result().len();
        if len <= max {
            return self;
        }
        classify::platform(
            PlatformError::ResultTooLarge,
            &classify::too_large(len, max),
        )
    }
}

/// Errors starting or running the pool itself (never the outcome of a user's task).
#[derive(Debug, Error)]
pub enum ExecutorError {
    #[error("executor pool is not available: {0}")]
    Unavailable(String),
    #[error("invalid executor configuration: {0}")]
    Config(String),
    #[error("cannot start python interpreter {python:?}: {source}")]
    Spawn {
        python: String,
        #[source]
        source: std::io::Error,
    },
    #[error("executor start-up failed: {0}")]
    Startup(String),
}

/// A snapshot of the pool for status lines and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    pub isolation: Isolation,
    pub slots: usize,
    pub available: usize,
    /// Pids of the long-lived executor processes (the zygote, or the reuse processes).
    pub pids: Vec<u32>,
    /// Executor processes started to replace lost ones.
    pub restarts: u64,
}

enum Backend {
    Fork(zygote::ForkBackend),
    Reuse(Arc<reuse::ReuseBackend>),
}

impl Backend {
    async fn run(
        &self,
        task: TaskSpec,
        timeout: Option<Duration>,
        stop: impl Future<Output = ()>,
    ) -> Outcome {
        match self {
            Backend::Fork(b) => b.run(&task, timeout, stop).await,
            Backend::Reuse(b) => b.run(task, timeout, stop).await,
        }
    }
}

/// A pool of `slots` concurrent task executions that admits `capacity` tasks.
pub struct ExecutorPool {
    slots: usize,
    capacity: usize,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
}

struct Shared {
    cfg: ExecutorConfig,
    backend: Backend,
    /// Starts executors; holds the result limit its backends read with.
    launcher: Arc<process::Launcher>,
}

impl Drop for Shared {
    /// The pool and every slot are gone: stop the reuse drivers (they hold the processes; the
    /// zygote goes when its backend is dropped).
    fn drop(&mut self) {
        if let Backend::Reuse(b) = &self.backend {
            b.close();
        }
    }
}

/// A reserved admission of the pool; running a task consumes it (the task may wait in memory
/// for a free process first).
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    shared: Arc<Shared>,
}

impl ExecutorPool {
    /// Starts the executor processes (`slots` of them, or a zygote running at most `slots`
    /// children) and waits until they are warm.
    pub async fn start(cfg: ExecutorConfig, slots: usize) -> Result<Self, ExecutorError> {
        cfg.validate()
            .map_err(|e| ExecutorError::Config(e.to_string()))?;
        let capacity = slots
            .checked_mul(1 + cfg.prefetch_per_process())
            .filter(|c| slots > 0 && *c <= Semaphore::MAX_PERMITS)
            .ok_or_else(|| {
                ExecutorError::Config(format!(
                    "slots × (1 + executor.prefetch) must be between 1 and {}, got {slots} × (1 + {})",
                    Semaphore::MAX_PERMITS,
                    cfg.prefetch
                ))
            })?;
        let launcher = Arc::new(process::Launcher::new(cfg.clone())?);
        let backend = match cfg.isolation {
            Isolation::Fork => {
                Backend::Fork(zygote::ForkBackend::start(launcher.clone(), slots).await?)
            }
            Isolation::Reuse => {
                Backend::Reuse(reuse::ReuseBackend::start(launcher.clone(), slots).await?)
            }
        };
        tracing::info!(isolation = ?cfg.isolation, slots, capacity, python = %cfg.python, "executor pool started");
        Ok(ExecutorPool {
            slots,
            capacity,
            permits: Arc::new(Semaphore::new(capacity)),
            shared: Arc::new(Shared {
                cfg,
                backend,
                launcher,
            }),
        })
    }

    /// Sets the largest result a task may return (`max_result_bytes`); larger ones end FAILED
    /// with `ResultTooLarge`, and are drained from the executor without being held in memory.
    /// Without it, only the executor framing's limit applies ([`frame::MAX_FRAME`]).
    pub fn limit_results(self, max: usize) -> Self {
        self.shared.launcher.set_max_result(max);
        self
    }

    /// Tasks run at once: executor processes (reuse) or children (fork).
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Tasks admitted at once: [`slots`](Self::slots) running plus `executor.prefetch` per
    /// process waiting in memory.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Admissions free right now (of [`capacity`](Self::capacity)).
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Waits for a free admission (returns at once after [`ExecutorPool::shutdown`]; running such a
    /// slot fails the task with `WorkerFailure`).
    pub async fn reserve(&self) -> Slot {
        Slot {
            permit: self.permits.clone().acquire_owned().await.ok(),
            shared: self.shared.clone(),
        }
    }

    /// Reserves an admission and runs `task` with it.
    pub async fn run(&self, task: TaskSpec) -> Outcome {
        self.reserve().await.run(task).await
    }

    /// Python and dill versions the executors reported at start-up.
    pub fn runtime(&self) -> Option<crate::runtime::Runtime> {
        process::runtime_of(&self.shared.cfg.python)
    }

    /// Pool state for status lines.
    pub async fn stats(&self) -> PoolStats {
        let (pids, restarts) = match &self.shared.backend {
            Backend::Fork(b) => (b.pids().await, b.restarts()),
            Backend::Reuse(b) => (b.pids(), b.restarts()),
        };
        PoolStats {
            isolation: self.shared.cfg.isolation,
            slots: self.slots,
            available: self.available(),
            pids,
            restarts,
        }
    }

    /// Stops all executor processes (running and queued tasks fail with `WorkerFailure`) and
    /// reaps them; later tasks fail at once.
    pub async fn shutdown(&self) {
        self.permits.close();
        match &self.shared.backend {
            Backend::Fork(b) => b.shutdown().await,
            Backend::Reuse(b) => b.shutdown().await,
        }
        tracing::info!("executor pool stopped");
    }
}

impl Slot {
    /// Runs `task` and reports how it ended; infrastructure failures become `Outcome::Failed`.
    pub async fn run(self, task: TaskSpec) -> Outcome {
        self.run_until(task, std::future::pending()).await
    }

    /// [`Slot::run`], but when `stop` completes first the task leaves the queue without running,
    /// or its process is killed (and reaped or replaced like after a timeout); either way the run
    /// ends FAILED with `TaskCancelled`. The timeout counts from the task's actual start.
    pub async fn run_until(self, task: TaskSpec, stop: impl Future<Output = ()>) -> Outcome {
        if self.permit.is_none() {
            return classify::platform(PlatformError::WorkerFailure, "executor pool is shut down");
        }
        let timeout = task.timeout.or_else(|| self.shared.cfg.task_timeout());
        let span =
            tracing::debug_span!("task", task_id = %task.task_id, function_id = %task.function_id);
        let started = std::time::Instant::now();
        let task_id = task.task_id.clone();
        let outcome = self
            .shared
            .backend
            .run(task, timeout, stop)
            .instrument(span)
            .await
            // Payloads are capped while read; this also catches a huge foreign exception text.
            .within(self.shared.launcher.max_result());
        match &outcome {
            Outcome::Completed { .. } => {
                tracing::debug!(task_id = %task_id, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "task completed")
            }
            Outcome::Failed { cause, .. } => {
                tracing::info!(task_id = %task_id, cause = %cause, "task failed")
            }
        }
        outcome
    }
}
