//! Redis work the remote loop hands off to background tasks, reporting back as events.
//!
//! Each waits for Redis while it is unavailable (the [`Core`] calls do), so a claim, a result or a
//! settlement made during an outage completes when Redis answers again; the loop meanwhile goes
//! on serving workers.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::Instrument;
use uuid::Uuid;

use super::feeder::{lock, InFlight};
use super::Event;
use crate::dispatcher::core::{Core, Owned, Prepared};
use crate::executor::Outcome;
use crate::protocol::{ResultMeta, TaskRef};
use crate::store::QueueEntry;

/// Claims `entries` for `worker_id` and reports them as [`Event::Claimed`].
pub fn claim(
    core: Arc<Core>,
    worker_id: String,
    entries: Vec<QueueEntry>,
    events: mpsc::Sender<Event>,
    in_flight: InFlight,
) {
    tokio::spawn(async move {
        let mut prepared = Vec::with_capacity(entries.len());
        let count = entries.len();
        for entry in entries {
            match core.prepare(&entry, &worker_id, false).await {
                Ok(Prepared::Settled) => {
                    lock(&in_flight).remove(&entry.entry_id);
                }
                Ok(p) => prepared.push(p),
                Err(e) => {
                    // Stays in our pending list; the next recovery pass retries it.
                    tracing::error!(entry = %entry.entry_id, task_id = ?entry.task_id, worker = %worker_id, error = %e, "could not claim task");
                    lock(&in_flight).remove(&entry.entry_id);
                }
            }
        }
        let _ = events
            .send(Event::Claimed {
                worker_id,
                count,
                prepared,
            })
            .await;
    });
}

/// One result to store: what the worker said, and our record of the run if we have one.
pub struct ToStore {
    pub meta: ResultMeta,
    pub blob: Bytes,
    pub owned: Option<Owned>,
}

/// Stores results (waiting while Redis is away) and reports them as [`Event::Stored`].
pub fn store(
    core: Arc<Core>,
    worker_id: String,
    results: Vec<ToStore>,
    reply_to: Option<Vec<Bytes>>,
    events: mpsc::Sender<Event>,
    in_flight: InFlight,
) {
    // The span puts the worker on every event below (e.g. `task COMPLETED`: WORKER= in journald).
    let span = tracing::info_span!("results", worker = %worker_id);
    let work = async move {
        let mut acks = Vec::with_capacity(results.len());
        for r in results {
            let outcome = if r.meta.ok {
                Outcome::Completed {
                    result: r.blob.to_vec(),
                }
            } else {
                Outcome::Failed {
                    result: r.blob.to_vec(),
                    cause: r.meta.cause.clone(),
                }
            };
            let stored = match &r.owned {
                Some(o) => core.complete(o, &outcome).await,
                None => {
                    core.complete_unowned(r.meta.task.task_id, r.meta.task.attempt, &outcome)
                        .await
                }
            };
            if let Err(e) = stored {
                // Not an outage (those are waited out): acknowledged anyway, or the worker would
                // resend it for ever; the task is settled when its entry is recovered.
                tracing::error!(task_id = %r.meta.task.task_id, attempt = r.meta.task.attempt, error = %e,
                    "could not store the result; dropped");
            }
            if let Some(o) = &r.owned {
                lock(&in_flight).remove(&o.entry_id);
            }
            acks.push(r.meta.task);
        }
        let _ = events
            .send(Event::Stored {
                worker_id,
                acks,
                reply_to,
            })
            .await;
    };
    tokio::spawn(work.instrument(span));
}

/// How a run with no result is settled.
pub enum Loss {
    /// It ran (or may have): retry within `max_retries`, else WorkerFailure.
    Lost {
        task_id: Uuid,
        attempt: Option<u32>,
        entry_id: String,
    },
    /// It was never sent: back to the queue.
    Undelivered(Owned),
    /// Its worker stopped it on purpose (drain timeout) and handed it back: back to the queue.
    Released(Owned),
}

/// Settles lost runs in the background.
pub fn settle(core: Arc<Core>, losses: Vec<Loss>, reason: String, in_flight: InFlight) {
    if losses.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for loss in losses {
            let (entry, r) = match &loss {
                Loss::Lost {
                    task_id,
                    attempt,
                    entry_id,
                } => (
                    entry_id.clone(),
                    core.lost(*task_id, *attempt, entry_id, &reason).await,
                ),
                Loss::Undelivered(o) => (o.entry_id.clone(), core.undeliverable(o, &reason).await),
                Loss::Released(o) => (
                    o.entry_id.clone(),
                    core.hand_back(o, &reason).await.map(drop),
                ),
            };
            if let Err(e) = r {
                tracing::error!(entry = %entry, error = %e, "could not settle a lost task; recovery will retry");
            }
            lock(&in_flight).remove(&entry);
        }
    });
}

/// The [`TaskRef`] of an owned run.
pub fn task_ref(o: &Owned) -> TaskRef {
    TaskRef {
        task_id: o.task_id,
        attempt: o.attempt,
    }
}
