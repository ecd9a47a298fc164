//! Reuse isolation: long-lived executor processes run tasks one after another over their control
//! socket, each driven by its own loop (a *driver*) that takes tasks from one in-memory queue
//! shared by all processes.
//!
//! The pool admits more tasks than it has processes (`executor.prefetch`); admitted tasks wait in
//! the [`Queue`] here, never bound to a process, so a short task never waits behind a long one
//! while another process is idle. A driver that has read a result hands it back and writes the
//! next queued task at once, in the same task: no wake-up chain between two tasks of a process.
//! A task whose `stop` fires while it waits leaves the queue and ends FAILED `TaskCancelled`
//! without running; a timeout counts from the moment its driver writes it.
//!
//! A process that crashes, times out or breaks the protocol is killed, reaped and replaced by
//! its driver, and so is one whose task hit a resource limit (with whatever it forked); tasks
//! queued meanwhile are taken by the other drivers or run on the replacement. The replacement
//! removes the private working directory the old process left behind (only a process of the
//! executor user may).

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use super::classify::{self, TaskEnd};
use super::process::{self, kill_group, Executor, Launcher};
use super::protocol;
use super::script::Mode;
use super::{ExecutorError, Outcome, TaskSpec};
use crate::pickle::PlatformError;

/// How long shutdown waits for the drivers to finish (busy processes are killed first).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// How long an idle process may take to exit (removing its directory) once its socket closed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// A cancel request for one admitted task, seen by whoever holds the task at that moment.
#[derive(Default)]
struct Cancel {
    fired: AtomicBool,
    notify: Notify,
}

impl Cancel {
    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.fired() {
                return;
            }
            notified.await;
        }
    }
}

/// An admitted task waiting for (or run by) a driver.
struct Job {
    id: u64,
    task: TaskSpec,
    timeout: Option<Duration>,
    cancel: Arc<Cancel>,
    reply: oneshot::Sender<Outcome>,
}

/// Tasks waiting for a process, oldest first.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// Per driver: the pid of its process, if it has one, and whether it runs a task.
#[derive(Default, Clone, Copy)]
struct DriverState {
    pid: Option<u32>,
    busy: bool,
}

/// The reuse-mode backend of the pool.
pub struct ReuseBackend {
    launcher: Arc<Launcher>,
    queue: StdMutex<Queue>,
    /// Wakes an idle driver when a task was queued (or the pool closed).
    queued: Notify,
    drivers: StdMutex<Vec<DriverState>>,
    /// Private directories of processes that died, for the next process started to remove.
    orphaned: StdMutex<Vec<PathBuf>>,
    handles: StdMutex<Vec<JoinHandle<()>>>,
    next_id: AtomicU64,
    replaced: AtomicU64,
}

impl ReuseBackend {
    /// Starts one warm process per slot, each with its driver.
    pub async fn start(launcher: Arc<Launcher>, slots: usize) -> Result<Arc<Self>, ExecutorError> {
        let mut starting = tokio::task::JoinSet::new();
        for _ in 0..slots {
            let launcher = launcher.clone();
            starting.spawn(async move { launcher.spawn(Mode::Reuse, &[]).await });
        }
        let mut started = Vec::with_capacity(slots);
        while let Some(joined) = starting.join_next().await {
            let exe = joined
                .map_err(|e| ExecutorError::Startup(format!("start-up task failed: {e}")))??;
            started.push(exe);
        }
        tracing::info!(processes = started.len(), "reuse executors started");
        let this = Arc::new(ReuseBackend {
            launcher,
            queue: StdMutex::new(Queue::default()),
            queued: Notify::new(),
            drivers: StdMutex::new(
                started
                    .iter()
                    .map(|e| DriverState {
                        pid: Some(e.pid),
                        busy: false,
                    })
                    .collect(),
            ),
            orphaned: StdMutex::new(Vec::new()),
            handles: StdMutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            replaced: AtomicU64::new(0),
        });
        let handles = started
            .into_iter()
            .enumerate()
            .map(|(index, exe)| {
                let this = this.clone();
                tokio::spawn(async move { this.drive(index, Some(exe)).await })
            })
            .collect();
        *lock(&this.handles) = handles;
        Ok(this)
    }

    /// Pids of all running executor processes.
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.drivers).iter().filter_map(|d| d.pid).collect()
    }

    /// Processes started to replace lost ones.
    pub fn restarts(&self) -> u64 {
        self.replaced.load(Ordering::Relaxed)
    }

    /// Queues one task for the next free process; `stop` completing first takes it out of the
    /// queue (it never runs) or kills its process (like a timeout).
    pub async fn run(
        &self,
        task: TaskSpec,
        timeout: Option<Duration>,
        stop: impl Future<Output = ()>,
    ) -> Outcome {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = Arc::new(Cancel::default());
        // A caller that goes away (its future dropped) cancels the task like `stop`.
        let _guard = FireOnDrop(cancel.clone());
        let (reply, mut outcome) = oneshot::channel();
        {
            let mut q = lock(&self.queue);
            if q.closed {
                return shut_down();
            }
            q.jobs.push_back(Job {
                id,
                task,
                timeout,
                cancel: cancel.clone(),
                reply,
            });
        }
        self.queued.notify_one();
        tokio::select! {
            biased;
            done = &mut outcome => return done.unwrap_or_else(|_| shut_down()),
            () = stop => {}
        }
        // Cancelled: still queued means it never started; otherwise its driver kills it.
        let waiting = {
            let mut q = lock(&self.queue);
            let before = q.jobs.len();
            q.jobs.retain(|j| j.id != id);
            q.jobs.len() != before
        };
        if waiting {
            tracing::info!("run cancelled while queued; it never started");
            return cancelled_while_queued();
        }
        cancel.fire();
        outcome.await.unwrap_or_else(|_| shut_down())
    }

    /// Fails every queued task, kills every process; waits (bounded) for the drivers to end.
    pub async fn shutdown(&self) {
        self.close();
        let handles = std::mem::take(&mut *lock(&self.handles));
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        for mut h in handles {
            if tokio::time::timeout_at(deadline, &mut h).await.is_err() {
                h.abort();
            }
        }
    }

    /// Closes the queue (failing what waits in it), kills busy processes and tells idle drivers
    /// to stop theirs; the drivers end by themselves.
    pub fn close(&self) {
        let queued = {
            let mut q = lock(&self.queue);
            q.closed = true;
            std::mem::take(&mut q.jobs)
        };
        for job in queued {
            let _ = job.reply.send(shut_down());
        }
        for d in lock(&self.drivers).iter() {
            if let (Some(pid), true) = (d.pid, d.busy) {
                kill_group(pid);
            }
        }
        self.queued.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        lock(&self.queue).closed
    }

    /// The next queued task for driver `index`; `None` once the pool is closed.
    async fn next_job(&self) -> Option<Job> {
        loop {
            let notified = self.queued.notified();
            {
                let mut q = lock(&self.queue);
                if q.closed {
                    return None;
                }
                if let Some(job) = q.jobs.pop_front() {
                    let more = !q.jobs.is_empty();
                    drop(q);
                    if more {
                        // Another driver may be idle: pass the wake-up on.
                        self.queued.notify_one();
                    }
                    return Some(job);
                }
            }
            notified.await;
        }
    }

    fn set_state(&self, index: usize, pid: Option<u32>, busy: bool) {
        if let Some(d) = lock(&self.drivers).get_mut(index) {
            *d = DriverState { pid, busy };
        }
    }

    /// One process's loop: take a task, run it, repeat; replace the process when it is lost.
    async fn drive(self: Arc<Self>, index: usize, mut exe: Option<Executor>) {
        loop {
            if exe.is_none() && !self.is_closed() {
                exe = self.replace(index).await;
            }
            let Some(job) = self.next_job().await else {
                break;
            };
            if job.cancel.fired() {
                let _ = job.reply.send(cancelled_while_queued());
                continue;
            }
            let mut current = match exe.take() {
                Some(e) => e,
                None => match self.spawn_with_cleanup().await {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = job.reply.send(classify::platform(
                            PlatformError::WorkerFailure,
                            &format!("cannot run task: {e}"),
                        ));
                        continue;
                    }
                },
            };
            self.set_state(index, Some(current.pid), true);
            let (outcome, keep) = self.run_one(&mut current, &job).await;
            let _ = job.reply.send(outcome);
            if keep {
                self.set_state(index, Some(current.pid), false);
                exe = Some(current);
            } else {
                lock(&self.orphaned).extend(current.workdir.take());
                self.set_state(index, None, false);
            }
        }
        if let Some(exe) = exe {
            self.close_idle(exe).await;
        }
        self.set_state(index, None, false);
    }

    /// Runs `job` on `exe`; returns its outcome and whether the process may run another task
    /// (otherwise it has been killed and reaped).
    async fn run_one(&self, exe: &mut Executor, job: &Job) -> (Outcome, bool) {
        let task = &job.task;
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
            match job.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let mut end = TaskEnd::new("executor process", self.launcher.cfg.memory_limit_mb);
        let read = tokio::select! {
            r = io => Some(r),
            () = limit => None,
            () = job.cancel.wait() => {
                end.stopped = true;
                None
            }
        };
        match read {
            Some(Ok(Some(result))) if !result.hit_a_limit() => {
                return (classify::from_result(result), true);
            }
            Some(Ok(Some(result))) => {
                // Whatever ran into the limit (a fork bomb's processes, a fragmented heap) goes
                // with the process; the task's own result stands.
                tracing::info!(task_id = %task.task_id, pid = exe.pid, "task hit a resource limit; replacing its executor");
                process::kill_and_reap(&mut exe.child, exe.pid).await;
                return (classify::from_result(result), false);
            }
            Some(other) => end.result = other,
            None if end.stopped => {
                tracing::info!(task_id = %task.task_id, pid = exe.pid, "run cancelled; killing its executor");
            }
            None => {
                end.timed_out = job.timeout;
                tracing::info!(task_id = %task.task_id, pid = exe.pid, "task timed out; killing its executor");
            }
        }
        end.exit = process::kill_and_reap(&mut exe.child, exe.pid).await;
        end.pool_closed = self.is_closed();
        (end.outcome(), false)
    }

    /// Starts the replacement of driver `index`'s lost process (`None` if that failed: the
    /// driver tries again for its next task).
    async fn replace(&self, index: usize) -> Option<Executor> {
        match self.spawn_with_cleanup().await {
            Ok(exe) => {
                self.replaced.fetch_add(1, Ordering::Relaxed);
                tracing::info!(pid = exe.pid, "replacement executor started");
                if self.is_closed() {
                    self.close_idle(exe).await;
                    return None;
                }
                self.set_state(index, Some(exe.pid), false);
                Some(exe)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not start a replacement executor");
                None
            }
        }
    }

    /// Starts a process that first removes the directories of dead ones.
    async fn spawn_with_cleanup(&self) -> Result<Executor, ExecutorError> {
        let orphaned = std::mem::take(&mut *lock(&self.orphaned));
        let spawned = self.launcher.spawn(Mode::Reuse, &orphaned).await;
        if spawned.is_err() {
            lock(&self.orphaned).extend(orphaned);
        }
        spawned
    }

    /// Closes an idle process's socket so it exits by itself (removing its private directory);
    /// kills it if it does not.
    async fn close_idle(&self, exe: Executor) {
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
    }
}

/// Fires a task's cancel when its caller's future ends or is dropped; a finished task ignores it.
struct FireOnDrop(Arc<Cancel>);

impl Drop for FireOnDrop {
    fn drop(&mut self) {
        self.0.fire();
    }
}

fn lock<T>(m: &StdMutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn shut_down() -> Outcome {
    classify::platform(PlatformError::WorkerFailure, "executor pool is shut down")
}

fn cancelled_while_queued() -> Outcome {
    classify::platform(
        PlatformError::TaskCancelled,
        "the run was cancelled before it started",
    )
}
