//! Reuse isolation: long-lived executor processes (at most one per slot) run tasks one after
//! another over their control socket. A process that crashes, times out or breaks the protocol
//! is killed, reaped and replaced in the background, and so is one whose task hit a resource
//! limit (with whatever it forked); the replacement removes the private working directory the
//! old process left behind (only a process of the executor user may).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::classify::{self, TaskEnd};
use super::process::{self, kill_group, Executor, Launcher};
use super::protocol;
use super::script::Mode;
use super::{ExecutorError, Outcome, TaskSpec};
use crate::pickle::PlatformError;

/// How long shutdown waits for busy processes to be reaped by their tasks.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// How long an idle process may take to exit (removing its directory) once its socket closed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

#[derive(Default)]
struct State {
    idle: Vec<Executor>,
    /// Idle + busy + starting processes.
    total: usize,
    busy: HashSet<u32>,
    closed: bool,
    /// Private directories of processes that died, for the next process started to remove.
    orphaned: Vec<PathBuf>,
}

/// The reuse-mode backend of the pool.
pub struct ReuseBackend {
    launcher: Arc<Launcher>,
    slots: usize,
    state: StdMutex<State>,
    available: Notify,
    replaced: AtomicU64,
}

impl ReuseBackend {
    /// Starts one warm process per slot.
    pub async fn start(launcher: Arc<Launcher>, slots: usize) -> Result<Arc<Self>, ExecutorError> {
        let mut starting = tokio::task::JoinSet::new();
        for _ in 0..slots {
            let launcher = launcher.clone();
            starting.spawn(async move { launcher.spawn(Mode::Reuse, &[]).await });
        }
        let mut idle = Vec::with_capacity(slots);
        while let Some(joined) = starting.join_next().await {
            let exe = joined
                .map_err(|e| ExecutorError::Startup(format!("start-up task failed: {e}")))??;
            idle.push(exe);
        }
        tracing::info!(processes = idle.len(), "reuse executors started");
        Ok(Arc::new(ReuseBackend {
            launcher,
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
    /// Runs one task on an idle process; `stop` completing first kills it (like a timeout).
    pub async fn run(
        self: &Arc<Self>,
        task: &TaskSpec,
        timeout: Option<Duration>,
        stop: impl std::future::Future<Output = ()>,
    ) -> Outcome {
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
            let (_, result) = tokio::join!(
                write,
                protocol::read_result(&mut rd, self.launcher.max_result())
            );
            result
        };
        let limit = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let mut end = TaskEnd::new("executor process", self.launcher.cfg.memory_limit_mb);
        let read = tokio::select! {
            r = io => Some(r),
            () = limit => None,
            () = stop => {
                end.stopped = true;
                None
            }
        };
        match read {
            Some(Ok(Some(result))) if !result.hit_a_limit() => {
                self.checkin(exe);
                return classify::from_result(result);
            }
            Some(Ok(Some(result))) => {
                // Whatever ran into the limit (a fork bomb's processes, a fragmented heap) goes
                // with the process; the task's own result stands.
                tracing::info!(task_id = %task.task_id, pid = exe.pid, "task hit a resource limit; replacing its executor");
                process::kill_and_reap(&mut exe.child, exe.pid).await;
                self.discard(exe);
                return classify::from_result(result);
            }
            Some(other) => end.result = other,
            None if end.stopped => {
                tracing::info!(task_id = %task.task_id, pid = exe.pid, "run cancelled; killing its executor");
            }
            None => {
                end.timed_out = timeout;
                tracing::info!(task_id = %task.task_id, pid = exe.pid, "task timed out; killing its executor");
            }
        }
        end.exit = process::kill_and_reap(&mut exe.child, exe.pid).await;
        end.pool_closed = self.discard(exe);
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
        for exe in idle {
            // Closing the socket lets it exit by itself and remove its private directory.
            let Executor {
                mut child,
                pid,
                ctrl,
                ..
            } = exe;
            drop(ctrl);
            if tokio::time::timeout(EXIT_GRACE, child.wait())
                .await
                .is_err()
            {
                process::kill_and_reap(&mut child, pid).await;
            }
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
        match self.spawn_with_cleanup().await {
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

    /// Starts a process that first removes the directories of dead ones.
    async fn spawn_with_cleanup(&self) -> Result<Executor, ExecutorError> {
        let orphaned = std::mem::take(&mut self.lock().orphaned);
        let spawned = self.launcher.spawn(Mode::Reuse, &orphaned).await;
        if spawned.is_err() {
            self.lock().orphaned.extend(orphaned);
        }
        spawned
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
    fn discard(self: &Arc<Self>, exe: Executor) -> bool {
        let closed = {
            let mut st = self.lock();
            st.busy.remove(&exe.pid);
            st.total -= 1;
            st.orphaned.extend(exe.workdir);
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
        match self.spawn_with_cleanup().await {
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
