//! What a worker holds between messages: its runs (executing, or prefetched: waiting in the
//! pool's queue for a process) and the outbox of finished results that the dispatcher has not
//! acknowledged yet.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::conv;
use crate::executor::ExecutorPool;
use crate::protocol::{ResultMeta, TaskMeta, TaskRef};

/// A task that finished on the pool, on its way to the outbox.
#[derive(Debug)]
pub(crate) struct Finished {
    pub meta: ResultMeta,
    pub blob: Bytes,
}

/// What [`State::accept`] did with a `tasks` message.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub started: usize,
    /// Tasks skipped because they already run here.
    pub running_duplicates: usize,
    /// Tasks skipped because their result waits in the outbox (it should be reported again).
    pub outbox_duplicates: usize,
}

/// A run in progress: its task, and the switch that kills its process (`cancel`).
struct Run {
    handle: JoinHandle<()>,
    stop: oneshot::Sender<()>,
}

/// Running tasks and unacknowledged results.
pub(crate) struct State {
    pool: Arc<ExecutorPool>,
    slots: usize,
    /// Tasks held at once: `slots` plus those queued for a process (prefetch).
    capacity: usize,
    /// Runs held: executing, or waiting for a process (prefetched).
    running: HashMap<TaskRef, Run>,
    /// Finished results in finishing order, until acknowledged.
    outbox: Vec<(ResultMeta, Bytes)>,
    done: mpsc::UnboundedSender<Finished>,
    /// This worker's id, for log fields.
    worker: Arc<str>,
    /// The turn of the run accepted last: fires (or is dropped) once that run holds a process or
    /// ended, so the next one queues for a process only then. Runs start in the order the
    /// dispatcher sent them, whatever order the runtime polls their tasks in.
    turn: Option<oneshot::Receiver<()>>,
}

impl State {
    /// A state of worker `worker` running tasks on `pool`; finished tasks are sent to `done`.
    pub fn new(
        worker: &str,
        pool: Arc<ExecutorPool>,
        done: mpsc::UnboundedSender<Finished>,
    ) -> Self {
        State {
            worker: Arc::from(worker),
            slots: pool.slots(),
            capacity: super::capacity(&pool),
            pool,
            running: HashMap::new(),
            outbox: Vec::new(),
            done,
            turn: None,
        }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    pub fn pool(&self) -> &Arc<ExecutorPool> {
        &self.pool
    }

    /// Tasks held at once (processes plus prefetch).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tasks it can still take: capacity minus the runs it holds, running or prefetched (by this
    /// worker's count, like the dispatcher's).
    pub fn free(&self) -> usize {
        self.capacity.saturating_sub(self.running.len())
    }

    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    pub fn running(&self) -> Vec<TaskRef> {
        let mut v: Vec<TaskRef> = self.running.keys().copied().collect();
        v.sort_by_key(|t| (t.task_id, t.attempt));
        v
    }

    /// The runs this worker holds, as listed to the dispatcher (reconciliation): running, or
    /// finished with the result not acknowledged yet.
    pub fn held(&self) -> Vec<TaskRef> {
        let mut v: Vec<TaskRef> = self
            .running
            .keys()
            .copied()
            .chain(self.outbox.iter().map(|(m, _)| m.task))
            .collect();
        v.sort_by_key(|t| (t.task_id, t.attempt));
        v.dedup();
        v
    }

    /// `cancel`: kills the executors of these runs and forgets them (their results are never
    /// reported; one already finished leaves the outbox). Returns how many were held here.
    pub fn cancel(&mut self, tasks: &[TaskRef]) -> usize {
        let mut n = 0;
        for t in tasks {
            if let Some(run) = self.running.remove(t) {
                // The run ends by itself once its process is killed; its result is dropped.
                let _ = run.stop.send(());
                drop(run.handle);
                n += 1;
                tracing::info!(worker = %self.worker, task_id = %t.task_id, attempt = t.attempt,
                    "run cancelled by the dispatcher; killing it");
            }
        }
        let before = self.outbox.len();
        self.outbox.retain(|(m, _)| !tasks.contains(&m.task));
        n + (before - self.outbox.len())
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Starts each task of a `tasks` message (`blobs` holds two per task); duplicates of tasks
    /// running here or waiting in the outbox are not run again.
    pub fn accept(&mut self, tasks: Vec<TaskMeta>, blobs: Vec<Bytes>) -> Accepted {
        let mut acc = Accepted::default();
        let mut blobs = blobs.into_iter();
        for meta in tasks {
            let (Some(fn_payload), Some(args_payload)) = (blobs.next(), blobs.next()) else {
                // decode() checked the count; stay safe anyway.
                tracing::warn!(task_id = %meta.task.task_id, "task without its payloads ignored");
                continue;
            };
            let task = meta.task;
            if self.running.contains_key(&task) {
                tracing::debug!(task_id = %task.task_id, "duplicate delivery of a running task ignored");
                acc.running_duplicates += 1;
                continue;
            }
            if self.outbox.iter().any(|(m, _)| m.task == task) {
                tracing::debug!(task_id = %task.task_id, "duplicate delivery of a finished task ignored");
                acc.outbox_duplicates += 1;
                continue;
            }
            let spec = conv::task_spec(&meta, fn_payload, args_payload);
            let pool = self.pool.clone();
            let done = self.done.clone();
            let worker = self.worker.clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let before = self.turn.take();
            let (my_turn, next_turn) = oneshot::channel::<()>();
            self.turn = Some(next_turn);
            let handle = tokio::spawn(async move {
                // Only an explicit `cancel` stops the run (not the sender going away).
                let stopped = async {
                    if stopped.await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::pin!(stopped);
                // Queue for a process after the run accepted before this one (prefetched runs
                // start in order); a run cancelled meanwhile still keeps its place in the chain.
                let previous = async {
                    if let Some(p) = before {
                        let _ = p.await;
                    }
                };
                tokio::pin!(previous);
                tokio::select! {
                    () = &mut previous => {}
                    () = &mut stopped => {
                        previous.await;
                        return;
                    }
                }
                let slot = tokio::select! {
                    s = pool.reserve() => s,
                    () = &mut stopped => return,
                };
                // The next run may queue for a process now (dropping `my_turn` does the same).
                let _ = my_turn.send(());
                let function_id = spec.function_id.clone();
                tracing::info!(task_id = %task.task_id, attempt = task.attempt, %function_id, %worker, "task started");
                let outcome = slot.run_until(spec, stopped).await;
                let (meta, blob) = conv::result(task, outcome);
                tracing::info!(task_id = %task.task_id, attempt = task.attempt, %function_id,
                    %worker, ok = meta.ok, cause = %meta.cause, "task finished");
                // The receiver only goes away when the worker stops.
                let _ = done.send(Finished { meta, blob });
            });
            self.running.insert(task, Run { handle, stop });
            acc.started += 1;
        }
        acc
    }

    /// Moves a finished task from the running set to the outbox (a task that is no longer
    /// running was aborted, and is handed back rather than reported).
    pub fn finish(&mut self, f: Finished) -> TaskRef {
        let task = f.meta.task;
        if self.running.remove(&task).is_none() {
            tracing::debug!(task_id = %task.task_id, attempt = task.attempt, "result of an aborted task dropped");
            return task;
        }
        if !self.outbox.iter().any(|(m, _)| m.task == task) {
            self.outbox.push((f.meta, f.blob));
        }
        task
    }

    /// Forgets acknowledged results; returns how many were in the outbox.
    pub fn ack(&mut self, acks: &[TaskRef]) -> usize {
        let before = self.outbox.len();
        self.outbox.retain(|(m, _)| !acks.contains(&m.task));
        before - self.outbox.len()
    }

    /// True while `task`'s result waits in the outbox (not yet acknowledged).
    pub fn unacked(&self, task: &TaskRef) -> bool {
        self.outbox.iter().any(|(m, _)| m.task == *task)
    }

    /// Outbox results selected by `keep`, as a `results` list and its blobs.
    pub fn results(&self, keep: impl Fn(&TaskRef) -> bool) -> (Vec<ResultMeta>, Vec<Bytes>) {
        self.outbox
            .iter()
            .filter(|(m, _)| keep(&m.task))
            .map(|(m, b)| (m.clone(), b.clone()))
            .unzip()
    }

    /// Aborts the tasks still running (at the end of a drain); their results are never reported
    /// (the caller hands them back, or the dispatcher treats them as lost).
    pub fn abort_running(&mut self) -> Vec<TaskRef> {
        let refs = self.running();
        for (_, run) in self.running.drain() {
            run.handle.abort();
        }
        refs
    }
}
