//! Reuse isolation: long-lived executor processes (at most one per slot) run tasks one after
//! another over their control socket. A process that crashes, times out or breaks the protocol
//! is killed, reaped and replaced in the background.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::classify::{self, TaskEnd};
use super::config::ExecutorConfig;
use super::process::{self, kill_group, Executor};
use super::protocol;
use super::script::Mode;
use super::{ExecutorError, Outcome, TaskSpec};
use crate::pickle::PlatformError;

/// How long shutdown waits for busy processes to be reaped by their tasks.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    idle: Vec<Executor>,
    /// Idle + busy + starting processes.
    total: usize,
    busy: HashSet<u32>,
    closed: bool,
}

/// The reuse-mode backend of the pool.
pub struct ReuseBackend {
    cfg: Arc<ExecutorConfig>,
    slots: usize,
    state: StdMutex<State>,
    available: Notify,
    replaced: AtomicU64,
}

impl ReuseBackend {
    /// Starts one warm process per slot.
    pub async fn start(cfg: Arc<ExecutorConfig>, slots: usize) -> Result<Arc<Self>, ExecutorError> {
        let mut starting = tokio::task::JoinSet::new();
        for _ in 0..slots {
            let cfg = cfg.clone();
            starting.spawn(async move { process::spawn(&cfg, Mode::Reuse).await });
        }
        let mut idle = Vec::with_capacity(slots);
        while let Some(joined) = starting.join_next().await {
            let exe = joined
                .map_err(|e| ExecutorError::Startup(format!("start-up task failed: {e}")))??;
            idle.push(exe);
        }
        tracing::info!(processes = idle.len(), "reuse executors started");
        Ok(Arc::new(ReuseBackend {
            cfg,
            slots,
            state: StdMutex::new(State {
                total: idle.len(),
                idle,
                ..State::default()
            }),
            available: Notify::new(),
            replaced: AtomicU64::new(0),
        }))
    }

    /// Pids of all idle and busy processes.
    pub fn pids(&self) -> Vec<u32> {
        let st = self.lock();
        st.idle
            .iter()
            .map(|e| e.pid)
            .chain(st.busy.iter().copied())
            .collect()
    }

    /// Processes started to replace lost ones.
    pub fn restarts(&self) -> u64 {
        self.replaced.load(Ordering::Relaxed)
    }

    /// Runs one task on an idle process.
    pub async fn run(self: &Arc<Self>, task: &TaskSpec, timeout: Option<Duration>) -> Outcome {
        let mut exe = match self.checkout().await {
            Ok(exe) => exe,
            Err(e) => {
                return classify::platform(
                    PlatformError::WorkerFailure,
                    &format!("cannot run task: {e}"),
                )
            }
        };
        tracing::debug!(task_id = %task.task_id, pid = exe.pid, "task submitted");
        let io = async {
            let (mut rd, mut wr) = exe.ctrl.split();
            let write = async {
                if let Err(e) = protocol::write_task(&mut wr, task).await {
                    tracing::debug!(task_id = %task.task_id, error = %e, "writing task to executor failed");
                }
            };
            let (_, result) = tokio::join!(write, protocol::read_result(&mut rd));
            result
        };
        let read = match timeout {
            Some(t) => tokio::time::timeout(t, io).await.ok(),
            None => Some(io.await),
        };
        let mut end = TaskEnd::new("executor process", self.cfg.memory_limit_mb);
        match read {
            Some(Ok(Some(result))) => {
                self.checkin(exe);
                return classify::from_result(result);
            }
            Some(other) => end.result = other,
            None => {
                end.timed_out = timeout;
                tracing::info!(task_id = %task.task_id, pid = exe.pid, "task timed out; killing its executor");
            }
        }
        end.exit = process::kill_and_reap(&mut exe.child, exe.pid).await;
        end.pool_closed = self.discard(exe.pid);
        end.outcome()
    }

    /// Kills every process; waits (bounded) until busy ones have been reaped by their tasks.
    pub async fn shutdown(&self) {
        let idle = {
            let mut st = self.lock();
            st.closed = true;
            for pid in &st.busy {
                kill_group(*pid);
            }
            std::mem::take(&mut st.idle)
        };
        for mut exe in idle {
            process::kill_and_reap(&mut exe.child, exe.pid).await;
            self.lock().total -= 1;
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        while self.lock().total > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn checkout(self: &Arc<Self>) -> Result<Executor, ExecutorError> {
        loop {
            let notified = self.available.notified();
            let may_spawn = {
                let mut st = self.lock();
                if st.closed {
                    return Err(ExecutorError::Unavailable(
                        "executor pool is shut down".into(),
                    ));
                }
                if let Some(exe) = st.idle.pop() {
                    st.busy.insert(exe.pid);
                    return Ok(exe);
                }
                let may_spawn = st.total < self.slots;
                if may_spawn {
                    st.total += 1;
                }
                may_spawn
            };
            if may_spawn {
                return self.spawn_busy().await;
            }
            notified.await;
        }
    }

    async fn spawn_busy(&self) -> Result<Executor, ExecutorError> {
        match process::spawn(&self.cfg, Mode::Reuse).await {
            Ok(exe) => {
                self.lock().busy.insert(exe.pid);
                Ok(exe)
            }
            Err(e) => {
                self.lock().total -= 1;
                self.available.notify_one();
                Err(e)
            }
        }
    }

    fn checkin(&self, exe: Executor) {
        let mut st = self.lock();
        st.busy.remove(&exe.pid);
        if st.closed {
            kill_group(exe.pid);
            st.total -= 1;
            // Dropping the child (kill_on_drop) leaves reaping to tokio's orphan reaper.
            return;
        }
        st.idle.push(exe);
        drop(st);
        self.available.notify_one();
    }

    /// Forgets a dead process and starts its replacement; returns whether the pool is closed.
    fn discard(self: &Arc<Self>, pid: u32) -> bool {
        let closed = {
            let mut st = self.lock();
            st.busy.remove(&pid);
            st.total -= 1;
            st.closed
        };
        if !closed {
            let this = self.clone();
            tokio::spawn(async move { this.replace().await });
        }
        closed
    }

    async fn replace(&self) {
        {
            let mut st = self.lock();
            if st.closed || st.total >= self.slots {
                return;
            }
            st.total += 1;
        }
        match process::spawn(&self.cfg, Mode::Reuse).await {
            Ok(exe) => {
                self.replaced.fetch_add(1, Ordering::Relaxed);
                tracing::info!(pid = exe.pid, "replacement executor started");
                self.lock().busy.insert(exe.pid);
                self.checkin(exe);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not start a replacement executor");
                self.lock().total -= 1;
                self.available.notify_one();
            }
        }
    }
}
