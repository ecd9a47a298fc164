//! Reads the Redis queue for the remote loop: only as many entries as workers can take, plus a
//! periodic recovery pass over pending entries (own and those of dead dispatchers).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::Event;
use crate::dispatcher::core::{Core, Recovered};
use crate::shutdown::Shutdown;
use crate::store::QueueReader;

const READ_BLOCK: Duration = Duration::from_secs(1);
const RECOVER_EVERY: Duration = Duration::from_secs(10);

/// Queue entry ids this dispatcher is handling (so recovery does not take them twice).
pub type InFlight = Arc<Mutex<HashSet<String>>>;

pub fn lock(set: &InFlight) -> MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs until shutdown. `demand` says how many tasks the workers can take right now; the loop
/// republishes it after every batch, which is what lets the feeder read again.
pub async fn run(
    core: Arc<Core>,
    mut reader: QueueReader,
    mut demand: watch::Receiver<usize>,
    events: mpsc::Sender<Event>,
    in_flight: InFlight,
    mut shutdown: Shutdown,
) {
    let mut last_recover: Option<tokio::time::Instant> = None;
    loop {
        if shutdown.is_triggered() {
            return;
        }
        if last_recover.is_none_or(|t| t.elapsed() >= RECOVER_EVERY) {
            last_recover = Some(tokio::time::Instant::now());
            if let Err(e) = recover(&core, &mut reader, &events, &in_flight).await {
                tracing::warn!(error = %e, "recovery pass failed; will retry");
            }
        }
        let want = *demand.borrow_and_update();
        if want == 0 {
            tokio::select! {
                _ = shutdown.wait() => return,
                r = demand.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(RECOVER_EVERY) => {}
            }
            continue;
        }
        let read = tokio::select! {
            _ = shutdown.wait() => return,
            r = reader.read_new(want, READ_BLOCK) => r,
        };
        match read {
            Ok(entries) if entries.is_empty() => {}
            Ok(entries) => {
                {
                    let mut set = lock(&in_flight);
                    for e in &entries {
                        set.insert(e.entry_id.clone());
                    }
                }
                if events.send(Event::Entries(entries)).await.is_err() {
                    return;
                }
                // Wait for the loop to account for them before reading more.
                tokio::select! {
                    _ = shutdown.wait() => return,
                    r = demand.changed() => if r.is_err() { return },
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the queue failed; retrying");
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn recover(
    core: &Core,
    reader: &mut QueueReader,
    events: &mpsc::Sender<Event>,
    in_flight: &InFlight,
) -> Result<(), crate::store::StoreError> {
    reader.adopt_orphans().await?;
    let pending = reader.read_pending(10_000).await?;
    let mut queued = Vec::new();
    for entry in pending {
        if !lock(in_flight).insert(entry.entry_id.clone()) {
            continue;
        }
        let id = entry.entry_id.clone();
        match core.classify_recovered(entry).await {
            Ok(Recovered::Queued(e)) => queued.push(e),
            Ok(Recovered::Orphan {
                task_id,
                attempt,
                entry_id,
            }) => {
                let _ = events
                    .send(Event::Orphan {
                        task_id,
                        attempt,
                        entry_id,
                    })
                    .await;
            }
            Ok(Recovered::Settled) => {
                lock(in_flight).remove(&id);
            }
            Err(e) => {
                lock(in_flight).remove(&id);
                return Err(e);
            }
        }
    }
    if !queued.is_empty() {
        let _ = events.send(Event::Entries(queued)).await;
    }
    Ok(())
}
