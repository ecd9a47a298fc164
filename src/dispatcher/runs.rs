//! Runs, whatever the mode: the in-flight set of queue entries, the recovery pass that finds
//! pending entries nobody here handles, storing a result (waiting out Redis outages), and
//! settling a run that ended without one.
//!
//! One vocabulary across local and remote dispatch: a *run* is a task id plus the attempt that
//! fences its result ([`TaskRef`] on the wire) and, once claimed here, the queue entry that is
//! acknowledged when the run settles ([`Owned`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use uuid::Uuid;

use super::core::{Core, Owned};
use crate::executor::Outcome;
use crate::pickle::PlatformError;
use crate::protocol::TaskRef;
use crate::shutdown::Shutdown;
use crate::store::{QueueEntry, QueueReader, Recorded, StoreError, TaskStatus};

/// Most pending entries one recovery pass looks at.
const PENDING_PAGE: usize = 10_000;
/// How long a stopping dispatcher waits for the answer of a queue read it had sent.
const SETTLE_READ: Duration = Duration::from_millis(100);

/// What a queue read raced against shutdown came to.
pub enum Read {
    /// The read answered first.
    Got(Result<Vec<QueueEntry>, StoreError>),
    /// Shutdown came first: the entries Redis had already delivered (pending here, so they must
    /// be handed back); none when the read was blocked (nothing queued) or failed.
    Stopping(Vec<QueueEntry>),
}

/// Reads up to `count` new entries unless shutdown comes first. A read already sent then gets
/// [`SETTLE_READ`] to answer, so entries Redis delivered at that moment are not left pending
/// unseen; a blocked one is dropped.
pub async fn read_new(
    reader: &mut QueueReader,
    count: usize,
    block: Duration,
    shutdown: &mut Shutdown,
) -> Read {
    let read = reader.read_new(count, block);
    tokio::pin!(read);
    tokio::select! {
        r = &mut read => Read::Got(r),
        _ = shutdown.wait() => Read::Stopping(
            match tokio::time::timeout(SETTLE_READ, &mut read).await {
                Ok(Ok(entries)) => entries,
                _ => Vec::new(),
            },
        ),
    }
}

/// Queue entries this dispatcher is handling (so a recovery pass does not take them twice), with
/// the run each turned into once claimed.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashMap<String, Option<Owned>>>>);

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Option<Owned>>> {
        // A poisoned lock only means a panic elsewhere; the map itself is consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `entry_id` as handled here; false if it already was.
    pub fn begin(&self, entry_id: &str) -> bool {
        let mut m = self.lock();
        if m.contains_key(entry_id) {
            return false;
        }
        m.insert(entry_id.to_string(), None);
        true
    }

    /// Records the run an entry was claimed as.
    pub fn own(&self, run: &Owned) {
        self.lock().insert(run.entry_id.clone(), Some(run.clone()));
    }

    /// The entry is settled (or left for the next recovery pass).
    pub fn end(&self, entry_id: &str) {
        self.lock().remove(entry_id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The claimed runs still in flight.
    pub fn owned(&self) -> Vec<Owned> {
        self.lock().values().flatten().cloned().collect()
    }
}

/// A recovery pass: adopts the entries of dead dispatchers, then returns this consumer's pending
/// entries that are not in flight here (each is marked in flight).
pub async fn pending(
    reader: &mut QueueReader,
    in_flight: &InFlight,
) -> Result<Vec<QueueEntry>, StoreError> {
    reader.adopt_orphans().await?;
    let pending = reader.read_pending(PENDING_PAGE).await?;
    Ok(pending
        .into_iter()
        .filter(|e| in_flight.begin(&e.entry_id))
        .collect())
}

/// Hands queue entries this dispatcher read and never started back to the queue when it stops
/// (one attempt: if Redis does not answer, they stay pending here and are recovered like those
/// of any dispatcher that stopped).
pub async fn hand_back(core: &Core, entries: &[QueueEntry]) {
    if entries.is_empty() {
        return;
    }
    match core.store.release(entries).await {
        Ok(n) => tracing::info!(
            read = entries.len(),
            requeued = n,
            "handed the tasks read but not started back to the queue"
        ),
        Err(e) => tracing::warn!(read = entries.len(), error = %e,
            "could not hand the tasks read but not started back; they stay pending for recovery"),
    }
}

/// The [`TaskRef`] of an owned run.
pub fn task_ref(o: &Owned) -> TaskRef {
    TaskRef {
        task_id: o.task_id,
        attempt: o.attempt,
    }
}

/// Stores a run's outcome, waiting for Redis while it is away. `owned` is our record of the run
/// (its entry is acknowledged and leaves the in-flight set); without one (a run from before a
/// restart) the result is fenced by attempt alone and the entry settles when it is recovered.
/// A store error that is not an outage is logged: the caller acknowledges the result anyway
/// (or the worker would resend it for ever) and the task is settled when its entry is recovered.
pub async fn store(
    core: &Core,
    run: TaskRef,
    owned: Option<&Owned>,
    outcome: Outcome,
    in_flight: &InFlight,
) -> Option<Recorded> {
    let stored = match owned {
        Some(o) => core.complete(o, outcome).await,
        None => {
            core.complete_unowned(run.task_id, run.attempt, outcome)
                .await
        }
    };
    if let Some(o) = owned {
        in_flight.end(&o.entry_id);
    }
    match stored {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(task_id = %run.task_id, attempt = run.attempt, error = %e,
                "could not store the result; dropped (the task is settled when its entry is recovered)");
            None
        }
    }
}

/// How a run that ended without a result is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// It ran (or may have): retry within `max_retries`, else WorkerFailure.
    Lost {
        task_id: Uuid,
        attempt: Option<u32>,
        entry_id: String,
    },
    /// It was never sent: back to the queue.
    Undelivered(Owned),
    /// It was stopped on purpose (a drain ran out) and handed back: back to the queue.
    Released(Owned),
    /// A user cancelled it while it ran: FAILED with `TaskCancelled` (fenced by attempt).
    Cancelled(Owned),
}

impl Loss {
    /// A run that ran (or may have) and is lost.
    pub fn lost(o: Owned) -> Self {
        Loss::Lost {
            task_id: o.task_id,
            attempt: Some(o.attempt),
            entry_id: o.entry_id,
        }
    }

    fn entry_id(&self) -> &str {
        match self {
            Loss::Lost { entry_id, .. } => entry_id,
            Loss::Undelivered(o) | Loss::Released(o) | Loss::Cancelled(o) => &o.entry_id,
        }
    }
}

/// Settles `losses` one by one (waiting for Redis); each entry leaves the in-flight set, and one
/// that could not be settled is retried by the next recovery pass.
pub async fn settle(core: &Core, losses: Vec<Loss>, reason: &str, in_flight: &InFlight) {
    for loss in losses {
        let r = match &loss {
            Loss::Lost {
                task_id,
                attempt,
                entry_id,
            } => core.lost(*task_id, *attempt, entry_id, reason).await,
            Loss::Undelivered(o) => core.undeliverable(o, reason).await,
            Loss::Released(o) => core.hand_back(o, reason).await.map(drop),
            Loss::Cancelled(o) => {
                core.fail(
                    o.task_id,
                    TaskStatus::Running,
                    Some(o.attempt),
                    &o.entry_id,
                    PlatformError::TaskCancelled,
                    reason,
                )
                .await
            }
        };
        if let Err(e) = r {
            tracing::error!(entry = %loss.entry_id(), error = %e, "could not settle a lost task; recovery will retry");
        }
        in_flight.end(loss.entry_id());
    }
}
