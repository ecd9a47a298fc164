//! Local mode: the dispatcher runs tasks on its own executor pool.
//!
//! The loop owns the systemd watchdog: it pings between queue reads (whose block is shortened to
//! the ping interval) and while it waits for a free executor slot. A drain that times out hands the
//! unfinished runs back (see [`run`]); `STATUS=` comes from [`status`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinSet;

use super::core::{Core, Owned, Prepared, Running};
use super::presence::Presence;
use super::DispatchError;
use crate::executor::{ExecutorPool, Slot};
use crate::notify::{StatusLine, Watchdog};
use crate::shutdown::Shutdown;
use crate::store::presence::WorkerPresence;
use crate::store::{QueueEntry, QueueReader};

/// How long one blocking queue read waits before the loop looks around (shutdown, orphans).
const READ_BLOCK: Duration = Duration::from_secs(2);
/// Shortest queue read block (Redis reads `BLOCK 0` as "forever").
const MIN_READ_BLOCK: Duration = Duration::from_millis(5);
/// How often entries of dead dispatchers are looked for.
const ADOPT_EVERY: Duration = Duration::from_secs(10);

/// Queue entries being run by this process (they are in our pending list too), with the run
/// once the task is claimed.
type InFlight = Arc<Mutex<HashMap<String, Option<Owned>>>>;

/// The local loop's state: what runs where.
struct Local {
    core: Arc<Core>,
    pool: Arc<ExecutorPool>,
    in_flight: InFlight,
    running: JoinSet<()>,
}

fn lock(set: &InFlight) -> MutexGuard<'_, HashMap<String, Option<Owned>>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the local loop until `shutdown`, then drains running tasks for up to `drain`. Returns
/// the runs that did not finish in time: they were aborted, and the caller hands them back to
/// the queue once the executors are stopped.
pub async fn run(
    core: Arc<Core>,
    pool: Arc<ExecutorPool>,
    mut reader: QueueReader,
    mut shutdown: Shutdown,
    drain: Duration,
) -> Result<Vec<Owned>, DispatchError> {
    let mut l = Local {
        core,
        pool,
        in_flight: Arc::default(),
        running: JoinSet::new(),
    };
    let mut wd = Watchdog::from_env();
    let status = StatusLine::spawn();
    let reporter = status.is_enabled().then(|| {
        tokio::spawn(status::report(
            status.clone(),
            l.core.clone(),
            l.pool.slots(),
            l.in_flight.clone(),
        ))
    });
    crate::notify::ready();
    let _presence = Presence::polling(
        l.core.store.clone(),
        l.core.name.clone(),
        "local",
        l.presence(),
    );
    let mut last_adopt: Option<tokio::time::Instant> = None;
    loop {
        wd.poll();
        while l.running.try_join_next().is_some() {}
        if last_adopt.is_none_or(|t| t.elapsed() >= ADOPT_EVERY) {
            last_adopt = Some(tokio::time::Instant::now());
            l.recover(&mut reader, &shutdown, &mut wd).await?;
        }
        let slot = tokio::select! {
            _ = shutdown.wait() => break,
            s = wd.during(l.pool.reserve()) => s,
        };
        let want = 1 + l.pool.available();
        // Back in time for the next watchdog ping (a read is not cancelled midway).
        let block = wd
            .remaining()
            .map_or(READ_BLOCK, |r| r.clamp(MIN_READ_BLOCK, READ_BLOCK));
        let entries = tokio::select! {
            _ = shutdown.wait() => break,
            r = reader.read_new(want, block) => r?,
        };
        let mut slot = Some(slot);
        for entry in entries {
            let s = match slot.take() {
                Some(s) => s,
                None => wd.during(l.pool.reserve()).await,
            };
            l.start(s, entry, false);
        }
    }
    status.set(format!(
        "stopping: draining {} running tasks",
        l.running.len()
    ));
    tracing::info!(running = l.running.len(), "draining running tasks");
    let drained = wd
        .during(tokio::time::timeout(drain, async {
            while l.running.join_next().await.is_some() {}
        }))
        .await;
    let mut unfinished = Vec::new();
    if drained.is_err() {
        l.running.abort_all();
        while l.running.join_next().await.is_some() {}
        unfinished = lock(&l.in_flight).values().flatten().cloned().collect();
        tracing::warn!(
            left = unfinished.len(),
            "drain timeout: stopping executors; unfinished tasks go back to the queue"
        );
    }
    if let Some(r) = reporter {
        r.abort();
    }
    Ok(unfinished)
}

impl Local {
    /// This dispatcher's executor pool as one worker, for `GET /info` and `/metrics`: slots
    /// minus the runs in flight are free.
    fn presence(&self) -> impl Fn() -> Vec<WorkerPresence> + Send + 'static {
        let (name, pool, in_flight) = (
            self.core.name.clone(),
            self.pool.clone(),
            self.in_flight.clone(),
        );
        move || {
            let busy = lock(&in_flight).len();
            vec![WorkerPresence {
                id: name.clone(),
                host: crate::host::hostname(),
                slots: u32::try_from(pool.slots()).unwrap_or(u32::MAX),
                free: u32::try_from(pool.slots().saturating_sub(busy)).unwrap_or(u32::MAX),
                runtime: pool.runtime().unwrap_or_default(),
            }]
        }
    }

    /// Adopts entries of dead dispatchers and runs every entry pending for this consumer
    /// that is not already running here.
    async fn recover(
        &mut self,
        reader: &mut QueueReader,
        shutdown: &Shutdown,
        wd: &mut Watchdog,
    ) -> Result<(), DispatchError> {
        reader.adopt_orphans().await?;
        let pending = reader.read_pending(10_000).await?;
        for entry in pending {
            if shutdown.is_triggered() {
                break;
            }
            if lock(&self.in_flight).contains_key(&entry.entry_id) {
                continue;
            }
            let slot = wd.during(self.pool.reserve()).await;
            self.start(slot, entry, true);
        }
        Ok(())
    }

    /// Claims the entry's task and runs it on `slot` in the background.
    fn start(&mut self, slot: Slot, entry: QueueEntry, recovered: bool) {
        let core = self.core.clone();
        let in_flight = self.in_flight.clone();
        lock(&in_flight).insert(entry.entry_id.clone(), None);
        self.running.spawn(async move {
            let worker = core.name.clone();
            match core.prepare(&entry, &worker, recovered).await {
                Ok(Prepared::Run(run)) => {
                    lock(&in_flight).insert(entry.entry_id.clone(), Some(run.owned.clone()));
                    execute(&core, slot, run).await
                }
                Ok(Prepared::Orphan {
                    task_id,
                    attempt,
                    entry_id,
                }) => {
                    // Local runs die with their dispatcher: nobody else can report this one.
                    let reason = format!("dispatcher {} stopped while the task was running", core.name);
                    if let Err(e) = core.lost(task_id, attempt, &entry_id, &reason).await {
                        tracing::error!(task_id = %task_id, error = %e, "could not settle lost task; it stays pending");
                    }
                }
                Ok(Prepared::Settled) => {}
                Err(e) => {
                    tracing::error!(entry = %entry.entry_id, task_id = ?entry.task_id, error = %e, "could not claim task; it stays pending")
                }
            }
            lock(&in_flight).remove(&entry.entry_id);
        });
    }
}

async fn execute(core: &Core, slot: Slot, run: Running) {
    let outcome = slot.run(run.spec.clone()).await;
    // Redis may be briefly away: keep the result and retry rather than lose it.
    let mut delay = Duration::from_millis(100);
    loop {
        match core.complete(&run.owned, &outcome).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(task_id = %run.owned.task_id, error = %e, "could not store result; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The local dispatcher's `STATUS=` line.
mod status {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use super::{lock, InFlight};
    use crate::dispatcher::core::Core;
    use crate::notify::{StatusLine, STATUS_GAP};

    /// Refreshes the line every [`STATUS_GAP`] (the queue depth needs a Redis call, so the loop
    /// does not build it itself). Runs until aborted.
    pub async fn report(
        status: StatusLine,
        core: Arc<Core>,
        processes: usize,
        in_flight: InFlight,
    ) {
        loop {
            let busy = lock(&in_flight).len();
            let queue =
                match tokio::time::timeout(Duration::from_secs(1), core.store.queue_len()).await {
                    // The stream also holds delivered entries: ours are the busy ones.
                    Ok(Ok(n)) => n.saturating_sub(busy as u64).to_string(),
                    _ => "unknown (redis unreachable)".into(),
                };
            let c = &core.counters;
            status.set(format!(
                "local: {processes} processes, {busy} busy, {} completed, {} failed, queue {queue}",
                c.completed.load(Ordering::Relaxed),
                c.failed.load(Ordering::Relaxed),
            ));
            tokio::time::sleep(STATUS_GAP).await;
        }
    }
}
