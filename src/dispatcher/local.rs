//! Local mode: the dispatcher runs tasks on its own executor pool.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinSet;

use super::core::{Core, Prepared, Running};
use super::DispatchError;
use crate::executor::{ExecutorPool, Slot};
use crate::shutdown::Shutdown;
use crate::store::{QueueEntry, QueueReader};

/// How long one blocking queue read waits before the loop looks around (shutdown, orphans).
const READ_BLOCK: Duration = Duration::from_secs(2);
/// How often entries of dead dispatchers are looked for.
const ADOPT_EVERY: Duration = Duration::from_secs(10);

/// The local loop's state: what runs where.
struct Local {
    core: Arc<Core>,
    pool: Arc<ExecutorPool>,
    /// Queue entries being run by this process (they are in our pending list too).
    in_flight: Arc<Mutex<HashSet<String>>>,
    running: JoinSet<()>,
}

fn lock(set: &Mutex<HashSet<String>>) -> MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the local loop until `shutdown`, then drains running tasks for up to `drain`.
pub async fn run(
    core: Arc<Core>,
    pool: Arc<ExecutorPool>,
    mut reader: QueueReader,
    mut shutdown: Shutdown,
    drain: Duration,
) -> Result<(), DispatchError> {
    let mut l = Local {
        core,
        pool,
        in_flight: Arc::default(),
        running: JoinSet::new(),
    };
    let mut last_adopt: Option<tokio::time::Instant> = None;
    loop {
        while l.running.try_join_next().is_some() {}
        if last_adopt.is_none_or(|t| t.elapsed() >= ADOPT_EVERY) {
            last_adopt = Some(tokio::time::Instant::now());
            l.recover(&mut reader, &shutdown).await?;
        }
        let slot = tokio::select! {
            _ = shutdown.wait() => break,
            s = l.pool.reserve() => s,
        };
        let want = 1 + l.pool.available();
        let entries = tokio::select! {
            _ = shutdown.wait() => break,
            r = reader.read_new(want, READ_BLOCK) => r?,
        };
        let mut slot = Some(slot);
        for entry in entries {
            let s = match slot.take() {
                Some(s) => s,
                None => l.pool.reserve().await,
            };
            l.start(s, entry, false);
        }
    }
    tracing::info!(running = l.running.len(), "draining running tasks");
    let drained = tokio::time::timeout(drain, async {
        while l.running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = l.running.len(),
            "drain timeout: stopping executors; unfinished tasks stay pending for the next start"
        );
        l.running.abort_all();
    }
    Ok(())
}

impl Local {
    /// Adopts entries of dead dispatchers and runs every entry pending for this consumer
    /// that is not already running here.
    async fn recover(
        &mut self,
        reader: &mut QueueReader,
        shutdown: &Shutdown,
    ) -> Result<(), DispatchError> {
        reader.adopt_orphans().await?;
        let pending = reader.read_pending(10_000).await?;
        for entry in pending {
            if shutdown.is_triggered() {
                break;
            }
            if lock(&self.in_flight).contains(&entry.entry_id) {
                continue;
            }
            let slot = self.pool.reserve().await;
            self.start(slot, entry, true);
        }
        Ok(())
    }

    /// Claims the entry's task and runs it on `slot` in the background.
    fn start(&mut self, slot: Slot, entry: QueueEntry, recovered: bool) {
        let core = self.core.clone();
        let in_flight = self.in_flight.clone();
        lock(&in_flight).insert(entry.entry_id.clone());
        self.running.spawn(async move {
            let worker = core.name.clone();
            match core.prepare(&entry, &worker, recovered).await {
                Ok(Prepared::Run(run)) => execute(&core, slot, run).await,
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
                    tracing::error!(entry = %entry.entry_id, error = %e, "could not claim task; it stays pending")
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
