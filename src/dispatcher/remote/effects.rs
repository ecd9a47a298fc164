//! Performs the state machine's [`Action`]s: sends go to the per-peer writers, Redis work runs
//! in background tasks that report back as [`Event`]s.
//!
//! Each Redis job waits for Redis while it is unavailable (the [`Core`] calls do), so a claim, a
//! result or a settlement made during an outage completes when Redis answers again; the loop
//! meanwhile goes on serving workers.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::outbound::Outbound;
use super::state::{Action, Event, ToStore};
use crate::dispatcher::cancels::Recent;
use crate::dispatcher::core::{Core, Prepared};
use crate::dispatcher::runs::{self, InFlight};
use crate::executor::Outcome;
use crate::store::QueueEntry;

/// What performing actions needs.
pub struct Effects {
    pub core: Arc<Core>,
    pub out: Outbound,
    pub events: mpsc::Sender<Event>,
    pub demand: watch::Sender<usize>,
    pub in_flight: InFlight,
    /// Tasks cancelled recently: a run claimed while its cancel was published is cancelled again
    /// once the loop knows it.
    pub cancelled: Recent,
    /// Hand-backs of entries under way (awaited by [`Effects::finish`] before the process ends).
    pub releases: Vec<tokio::task::JoinHandle<()>>,
}

impl Effects {
    /// Performs `actions` in order (never waits: Redis work is spawned).
    pub fn perform(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { to, header, blobs } => self.out.send(&to, &header, blobs),
                Action::Claim { worker_id, entries } => self.claim(worker_id, entries),
                Action::Store {
                    worker_id,
                    results,
                    reply_to,
                } => self.store(worker_id, results, reply_to),
                Action::Settle { losses, reason } => {
                    let (core, in_flight) = (self.core.clone(), self.in_flight.clone());
                    tokio::spawn(async move {
                        runs::settle(&core, losses, &reason, &in_flight).await;
                    });
                }
                Action::Runtime { worker_id, runtime } => {
                    self.core.set_runtime(&worker_id, runtime)
                }
                Action::Demand(n) => {
                    let _ = self.demand.send(n);
                }
                Action::Release(entries) => self.release(entries),
            }
        }
    }

    /// Hands `entries` back to the queue (see [`runs::hand_back`]), then forgets them.
    fn release(&mut self, entries: Vec<QueueEntry>) {
        self.releases.retain(|h| !h.is_finished());
        let (core, in_flight) = (self.core.clone(), self.in_flight.clone());
        self.releases.push(tokio::spawn(async move {
            runs::hand_back(&core, &entries).await;
            for e in &entries {
                in_flight.end(&e.entry_id);
            }
        }));
    }

    /// Waits for the hand-backs under way.
    pub async fn finish(&mut self) {
        for h in self.releases.drain(..) {
            let _ = h.await;
        }
    }

    /// Claims `entries` for `worker_id` and reports them as [`Event::Claimed`].
    fn claim(&self, worker_id: String, entries: Vec<QueueEntry>) {
        let (core, events, in_flight, cancelled) = (
            self.core.clone(),
            self.events.clone(),
            self.in_flight.clone(),
            self.cancelled.clone(),
        );
        tokio::spawn(async move {
            let mut prepared = Vec::with_capacity(entries.len());
            let count = entries.len();
            let answers = core.prepare_many(&entries, &worker_id, false).await;
            for (entry, answer) in entries.into_iter().zip(answers) {
                match answer {
                    Ok(Prepared::Settled) => in_flight.end(&entry.entry_id),
                    Ok(p) => {
                        if let Prepared::Run(r) = &p {
                            in_flight.own(&r.owned);
                        }
                        prepared.push(p)
                    }
                    Err(e) => {
                        // Stays in our pending list; the next recovery pass retries it.
                        tracing::error!(entry = %entry.entry_id, task_id = ?entry.task_id, worker = %worker_id, error = %e, "could not claim task");
                        in_flight.end(&entry.entry_id);
                    }
                }
            }
            let claimed: Vec<_> = prepared
                .iter()
                .filter_map(|p| match p {
                    Prepared::Run(r) => Some(r.owned.task_id),
                    _ => None,
                })
                .collect();
            let _ = events
                .send(Event::Claimed {
                    worker_id,
                    count,
                    prepared,
                })
                .await;
            // A cancel published before the loop knew these runs was ignored there; checked only
            // now (after Claimed is queued), so one published from here on is seen by the loop
            // after Claimed anyway.
            for task_id in claimed.into_iter().filter(|t| cancelled.contains(t)) {
                let _ = events.send(Event::Cancel { task_id }).await;
            }
        });
    }

    /// Stores results (waiting while Redis is away) and reports them as [`Event::Stored`].
    fn store(&self, worker_id: String, results: Vec<ToStore>, reply_to: Option<Vec<bytes::Bytes>>) {
        let (core, events, in_flight) = (
            self.core.clone(),
            self.events.clone(),
            self.in_flight.clone(),
        );
        // The span puts the worker on every event below (e.g. `task COMPLETED`: WORKER= in journald).
        let span = tracing::info_span!("results", worker = %worker_id);
        let work = async move {
            let acks = results.iter().map(|r| r.meta.task).collect();
            // All at once: the group commit stores them in as few calls as it can.
            let stores = results.into_iter().map(|r| {
                let (core, in_flight) = (&core, &in_flight);
                async move {
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
                    runs::store(core, r.meta.task, r.owned.as_ref(), outcome, in_flight).await;
                }
            });
            futures_util::future::join_all(stores).await;
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
}
