//! The remote dispatcher as a pure state machine: [`Remote::handle`] takes the time and one
//! [`Event`] and returns the [`Action`]s to perform. No I/O, no clock, no tasks: the loop in
//! `remote/mod.rs` feeds events in and performs the actions (sends, Redis work in the
//! background whose completion comes back as events).
//!
//! Pull and push differ only in how a message reaches a worker ([`Outlet`]). Runs recovered from
//! a dispatcher that is gone follow one rule ([`Remote::orphan`]): they wait `orphan_grace` for
//! a worker to list or report them, then are settled as lost. What each worker holds is
//! reconciled against what it lists in `hello`, `heartbeat` and `fetch` (see
//! [`Remote::reconcile`] and docs/protocol.md).
//!
//! The queue is read ahead of what the workers can take, as deep as the pace of recent runs
//! allows ([`ahead`]): those entries wait in the backlog, QUEUED and unclaimed, so a worker that
//! reports results gets its next tasks after one claim, without waiting for a queue read; a
//! stopping dispatcher hands the backlog back to the queue.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use super::registry::{pick, Assigned, Outlet, Worker};
use crate::dispatcher::ahead::{self, Pace};
use crate::dispatcher::core::{Owned, Prepared, Running};
use crate::dispatcher::runs::{task_ref, Loss};
use crate::protocol::{
    transfer_allowance, Decoded, Header, ResultMeta, TaskMeta, TaskRef, WorkerInfo, VERSION,
};
use crate::runtime::Runtime;
use crate::store::presence::WorkerPresence;
use crate::store::QueueEntry;

/// How long a handed-back run this dispatcher had no record of is remembered (until its queue
/// entry turns up in a recovery pass, which runs every 10 s).
const RELEASED_KEEP: Duration = Duration::from_secs(60);

/// Liveness, deadline and grace settings.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub interval: Duration,
    pub misses: u32,
    /// Time a worker has to report a sent run (task_deadline_secs); None: no limit.
    pub deadline: Option<Duration>,
    /// Time a run recovered from a dispatcher that is gone waits for its worker to come back.
    pub orphan_grace: Duration,
}

impl Timing {
    /// Silence after which a worker is dead.
    pub fn threshold(&self) -> Duration {
        self.interval * self.misses.max(1)
    }
}

/// Everything the state machine reacts to.
#[derive(Debug)]
pub enum Event {
    /// A message from a worker; `envelope` is the ROUTER identity (+ REQ delimiter).
    Inbound { envelope: Vec<Bytes>, msg: Decoded },
    /// New (or recovered, still QUEUED) queue entries.
    Entries(Vec<QueueEntry>),
    /// A recovered entry whose task was RUNNING under a dispatcher that is gone.
    Orphan {
        task_id: Uuid,
        attempt: Option<u32>,
        entry_id: String,
    },
    /// A recovery pass finished: every run from before the start is known from now on.
    Recovered,
    /// Entries claimed for a worker (`count` entries were taken from its credit).
    Claimed {
        worker_id: String,
        count: usize,
        prepared: Vec<Prepared>,
    },
    /// Results stored; acknowledge them (to `reply_to` when a pull report waits for it).
    Stored {
        worker_id: String,
        acks: Vec<TaskRef>,
        reply_to: Option<Vec<Bytes>>,
    },
    /// A user cancelled this RUNNING task (the hook for `POST /cancel` of running tasks): its
    /// run is cancelled on its worker and the task FAILED with `TaskCancelled`.
    Cancel { task_id: Uuid },
    /// Time passed (heartbeats, liveness, deadlines, orphans).
    Tick,
    /// The dispatcher is stopping: no more claims.
    Drain,
}

/// One result to store: what the worker said, and our record of the run if we have one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToStore {
    pub meta: ResultMeta,
    pub blob: Bytes,
    pub owned: Option<Owned>,
}

/// What the loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a message to the peer addressed by `to`.
    Send {
        to: Vec<Bytes>,
        header: Header,
        blobs: Vec<Bytes>,
    },
    /// Claim the entries for a worker (answers with [`Event::Claimed`]).
    Claim {
        worker_id: String,
        entries: Vec<QueueEntry>,
    },
    /// Store results (answers with [`Event::Stored`]).
    Store {
        worker_id: String,
        results: Vec<ToStore>,
        reply_to: Option<Vec<Bytes>>,
    },
    /// Settle runs that ended without a result.
    Settle { losses: Vec<Loss>, reason: String },
    /// Record a worker's runtime for the tasks claimed for it (None: forget it).
    Runtime {
        worker_id: String,
        runtime: Option<Runtime>,
    },
    /// Tell the queue reader how many more entries the workers can take.
    Demand(usize),
    /// Hand entries read but never claimed back to the queue (the dispatcher is stopping, or no
    /// worker is left to take them).
    Release(Vec<QueueEntry>),
}

/// A RUNNING task recovered from a dispatcher that is gone, waiting for its worker to return.
#[derive(Debug)]
struct Orphan {
    attempt: Option<u32>,
    entry_id: String,
    until: Instant,
}

pub struct Remote {
    pull: bool,
    name: String,
    timing: Timing,
    workers: HashMap<String, Worker>,
    /// Entries read and not yet claimed (QUEUED; read ahead of demand as [`ahead`] allows).
    backlog: VecDeque<QueueEntry>,
    /// How long recent runs took from claim to result (the read-ahead depth follows it).
    pace: Pace,
    orphans: HashMap<Uuid, Orphan>,
    /// Runs handed back by a worker that this dispatcher had no record of: (attempt, forget at).
    released: HashMap<Uuid, (u32, Instant)>,
    /// A recovery pass has finished: a run nobody here knows is not ours.
    recovered: bool,
    draining: bool,
    out: Vec<Action>,
}

impl Remote {
    /// A dispatcher named `name` serving pull (`pull`) or push workers.
    pub fn new(pull: bool, name: String, timing: Timing) -> Self {
        Remote {
            pull,
            name,
            timing,
            workers: HashMap::new(),
            backlog: VecDeque::new(),
            pace: Pace::default(),
            orphans: HashMap::new(),
            released: HashMap::new(),
            recovered: false,
            draining: false,
            out: Vec::new(),
        }
    }

    /// Runs assigned to workers, being claimed, or whose results are being stored: what a
    /// graceful stop waits for. (Orphans stay pending for the next start.)
    pub fn busy(&self) -> usize {
        self.workers
            .values()
            .map(|w| w.running.len() + w.claiming + w.storing.len())
            .sum()
    }

    /// One-line summary (logs and systemd `STATUS=`): workers, slots (processes), free
    /// processes, running (assigned runs, prefetched ones included), backlog.
    pub fn summary(&self) -> String {
        let slots: usize = self.workers.values().map(|w| w.info.slots as usize).sum();
        let free: usize = self.workers.values().map(Worker::free_processes).sum();
        let running: usize = self.workers.values().map(|w| w.running.len()).sum();
        format!(
            "{} workers, {slots} slots, {free} free, {running} running, backlog {}",
            self.workers.len(),
            self.backlog.len()
        )
    }

    /// The workers as published for `GET /info` and `/metrics` (see store::presence).
    pub fn presence(&self) -> Vec<WorkerPresence> {
        self.workers
            .values()
            .map(|w| WorkerPresence {
                id: w.info.id.clone(),
                host: w.info.host.clone(),
                slots: w.info.slots,
                free: u32::try_from(w.free_processes()).unwrap_or(u32::MAX),
                runtime: w.info.runtime.clone(),
            })
            .collect()
    }

    /// Applies `ev` at time `now`; returns what to do.
    pub fn handle(&mut self, now: Instant, ev: Event) -> Vec<Action> {
        match ev {
            Event::Inbound { envelope, msg } => self.on_message(now, envelope, msg),
            // Entries that arrive while stopping (a read that was on its way) go straight back.
            Event::Entries(entries) if self.draining => self.out.push(Action::Release(entries)),
            Event::Entries(entries) => {
                self.backlog.extend(entries);
                self.assign();
            }
            Event::Orphan {
                task_id,
                attempt,
                entry_id,
            } => self.orphan(now, task_id, attempt, entry_id),
            Event::Recovered => self.recovered = true,
            Event::Claimed {
                worker_id,
                count,
                prepared,
            } => self.on_claimed(now, &worker_id, count, prepared),
            Event::Stored {
                worker_id,
                acks,
                reply_to,
            } => self.on_stored(now, &worker_id, acks, reply_to),
            Event::Cancel { task_id } => self.cancel(now, task_id),
            Event::Tick => self.tick(now),
            Event::Drain => self.drain(now),
        }
        std::mem::take(&mut self.out)
    }

    fn send(&mut self, to: Vec<Bytes>, header: Header) {
        self.out.push(Action::Send {
            to,
            header,
            blobs: Vec::new(),
        });
    }

    fn settle(&mut self, losses: Vec<Loss>, reason: String) {
        if !losses.is_empty() {
            self.out.push(Action::Settle { losses, reason });
        }
    }

    // ---- inbound messages ----

    fn on_message(&mut self, now: Instant, envelope: Vec<Bytes>, msg: Decoded) {
        let Decoded { header, blobs } = msg;
        match header {
            Header::Hello { worker, running } => self.on_hello(now, envelope, worker, running),
            Header::Fetch {
                worker_id,
                free,
                results,
                running,
            } => {
                if !self.seen(now, &envelope, &worker_id) {
                    return;
                }
                self.on_results(now, &worker_id, results, blobs, None);
                self.reconcile(now, &worker_id, &running);
                if let Some(w) = self.workers.get_mut(&worker_id) {
                    w.outlet.park(envelope, now);
                    if w.ready.is_empty() && (free == 0 || w.leaving || self.draining) {
                        self.flush(now, &worker_id, true);
                    }
                }
                self.flush(now, &worker_id, false);
                self.assign();
            }
            Header::Report { worker_id, results } => {
                if !self.seen(now, &envelope, &worker_id) {
                    return;
                }
                let reply_to = self
                    .workers
                    .get(&worker_id)
                    .and_then(|w| w.outlet.answers_requests().then(|| envelope.clone()));
                self.on_results(now, &worker_id, results, blobs, reply_to);
            }
            Header::Heartbeat {
                worker_id, running, ..
            } => {
                // Heartbeats come on the worker's control connection: answered there at once
                // (its sign of our life, never queued behind a bulk transfer), route unchanged.
                if self.alive(now, &envelope, &worker_id, false) {
                    self.send(envelope, Header::Ping);
                    self.reconcile(now, &worker_id, &running);
                    self.flush(now, &worker_id, false);
                    self.assign();
                }
            }
            Header::Bye { worker_id } => self.on_bye(now, envelope, &worker_id),
            Header::Release { worker_id, tasks } => {
                self.on_release(now, envelope, &worker_id, tasks)
            }
            other => tracing::warn!(kind = other.kind(), "unexpected message from a worker"),
        }
    }

    /// Marks `worker_id` alive. An unknown id is told to say hello again (returns false).
    fn seen(&mut self, now: Instant, envelope: &[Bytes], worker_id: &str) -> bool {
        self.alive(now, envelope, worker_id, true)
    }

    /// [`Self::seen`]; `route`: the message came on the worker's data connection (push: the
    /// latest one is where messages go), not on its control connection.
    fn alive(&mut self, now: Instant, envelope: &[Bytes], worker_id: &str, route: bool) -> bool {
        match self.workers.get_mut(worker_id) {
            Some(w) => {
                w.last_seen = now;
                if route {
                    w.outlet.heard(envelope);
                }
                true
            }
            None => {
                tracing::debug!(worker = %worker_id, "message from an unknown worker; asking it to register");
                self.send(envelope.to_vec(), Header::Unknown);
                false
            }
        }
    }

    fn on_hello(
        &mut self,
        now: Instant,
        envelope: Vec<Bytes>,
        info: WorkerInfo,
        running: Vec<TaskRef>,
    ) {
        if info.protocol != VERSION {
            let reason = format!(
                "protocol version {} is not supported (dispatcher speaks {VERSION})",
                info.protocol
            );
            tracing::warn!(worker = %info.id, %reason, "worker refused");
            self.send(envelope, Header::Refused { reason });
            return;
        }
        let id = info.id.clone();
        self.out.push(Action::Runtime {
            worker_id: id.clone(),
            runtime: Some(info.runtime.clone()),
        });
        let restarted = self
            .workers
            .get(&id)
            .is_some_and(|w| w.info.pid != info.pid || w.info.host != info.host);
        if restarted {
            self.remove_worker(&id, "worker restarted");
        }
        let outlet = Outlet::new(self.pull, envelope.clone());
        match self.workers.get_mut(&id) {
            Some(w) => {
                tracing::info!(worker = %id, "worker reconnected");
                w.outlet = outlet;
                w.last_seen = now;
                w.info.slots = info.slots;
                w.info.capacity = info.capacity;
            }
            None => {
                tracing::info!(worker = %id, slots = info.slots, capacity = info.capacity(), host = %info.host, pid = info.pid, version = %info.version, "worker joined");
                self.workers
                    .insert(id.clone(), Worker::new(info, outlet, now));
            }
        }
        self.reconcile(now, &id, &running);
        let welcome = Header::Welcome {
            dispatcher: self.name.clone(),
            heartbeat_ms: u64::try_from(self.timing.interval.as_millis()).unwrap_or(u64::MAX),
            heartbeat_misses: self.timing.misses,
        };
        self.send(envelope, welcome);
        if let Some(w) = self.workers.get_mut(&id) {
            w.last_sent = now;
        }
        self.flush(now, &id, false);
        self.assign();
    }

    fn on_bye(&mut self, now: Instant, envelope: Vec<Bytes>, worker_id: &str) {
        let acks = match self.workers.get_mut(worker_id) {
            Some(w) => {
                w.leaving = true;
                w.last_seen = now;
                w.last_sent = now;
                tracing::info!(worker = %worker_id, running = w.running.len(), "worker leaving");
                w.take_acks(now)
            }
            None => Vec::new(),
        };
        self.send(envelope, Header::Ack { acks });
        self.requeue_ready(worker_id, "worker is leaving");
        self.assign();
    }

    /// A stopping worker killed these runs: re-queue them (fenced by attempt) and acknowledge.
    fn on_release(
        &mut self,
        now: Instant,
        envelope: Vec<Bytes>,
        worker_id: &str,
        tasks: Vec<TaskRef>,
    ) {
        if !self.seen(now, &envelope, worker_id) {
            return; // it registers again and repeats the release
        }
        let mut back = Vec::with_capacity(tasks.len());
        for t in &tasks {
            tracing::info!(task_id = %t.task_id, attempt = t.attempt, worker = %worker_id,
                "worker stopped before the task finished and handed it back");
            if let Some(owned) = self.take_run(worker_id, t) {
                back.push(Loss::Released(owned));
            } else {
                // No record here yet (this dispatcher restarted): settle it when its entry is
                // recovered, rather than waiting for a worker that is gone.
                tracing::debug!(task_id = %t.task_id, attempt = t.attempt, worker = %worker_id,
                    "handed-back task not known yet; re-queued when its entry is recovered");
                self.released
                    .insert(t.task_id, (t.attempt, now + RELEASED_KEEP));
            }
        }
        let Some(w) = self.workers.get_mut(worker_id) else {
            return;
        };
        for t in &tasks {
            w.foreign.remove(t);
        }
        let mut acks = w.take_acks(now);
        acks.extend(tasks);
        w.last_sent = now;
        self.send(envelope, Header::Ack { acks });
        self.settle(
            back,
            format!("worker {worker_id} stopped before the task finished"),
        );
        self.assign();
    }

    /// Our record of run `t` reported by `worker_id`, taken out: assigned to that worker, or an
    /// orphan from before a restart (any worker may claim it: the old assignment is unknown).
    fn take_run(&mut self, worker_id: &str, t: &TaskRef) -> Option<Owned> {
        if let Some(w) = self.workers.get_mut(worker_id) {
            if w.has(t) {
                return w.running.remove(&t.task_id).map(|a| a.owned);
            }
        }
        if self
            .orphans
            .get(&t.task_id)
            .is_some_and(|o| o.attempt == Some(t.attempt))
        {
            return self.orphans.remove(&t.task_id).map(|o| Owned {
                task_id: t.task_id,
                attempt: t.attempt,
                entry_id: o.entry_id,
            });
        }
        None
    }

    /// The worker assigned run `t`, if it is another one than `worker_id`.
    fn assigned_elsewhere(&self, worker_id: &str, t: &TaskRef) -> Option<String> {
        self.workers
            .values()
            .find(|w| w.info.id != worker_id && w.has(t))
            .map(|w| w.info.id.clone())
    }

    /// Results from a worker: stored when the run is assigned to it (or an orphan, or unknown
    /// before the first recovery pass finished); refused (acknowledged, not stored) otherwise.
    fn on_results(
        &mut self,
        now: Instant,
        worker_id: &str,
        results: Vec<ResultMeta>,
        blobs: Vec<Bytes>,
        reply_to: Option<Vec<Bytes>>,
    ) {
        let mut batch = Vec::with_capacity(results.len());
        let mut refused = Vec::new();
        for (meta, blob) in results.into_iter().zip(blobs) {
            let t = meta.task;
            let Some(w) = self.workers.get_mut(worker_id) else {
                return;
            };
            if w.storing.contains(&t) {
                continue; // already being stored: the ack will come
            }
            w.foreign.remove(&t);
            if let Some(claimed) = w.running.get(&t.task_id).and_then(|a| a.claimed_at) {
                if w.has(&t) {
                    self.pace.observe(now.saturating_duration_since(claimed));
                }
            }
            let owned = self.take_run(worker_id, &t);
            let elsewhere = self.assigned_elsewhere(worker_id, &t);
            if owned.is_none() && (elsewhere.is_some() || self.recovered) {
                tracing::warn!(task_id = %t.task_id, attempt = t.attempt, worker = %worker_id,
                    assigned_to = elsewhere.as_deref().unwrap_or("nobody"),
                    "result for a run not assigned to this worker refused (acknowledged, not stored)");
                refused.push(t);
                continue;
            }
            if let Some(w) = self.workers.get_mut(worker_id) {
                w.storing.insert(t);
            }
            batch.push(ToStore { meta, blob, owned });
        }
        if let Some(w) = self.workers.get_mut(worker_id) {
            w.acks.extend(refused);
        }
        if batch.is_empty() {
            if let Some(to) = reply_to {
                let acks = self
                    .workers
                    .get_mut(worker_id)
                    .map(|w| w.take_acks(now))
                    .unwrap_or_default();
                self.send(to, Header::Ack { acks });
            } else {
                self.flush(now, worker_id, false);
            }
            return;
        }
        self.out.push(Action::Store {
            worker_id: worker_id.to_string(),
            results: batch,
            reply_to,
        });
        self.assign();
    }

    fn on_stored(
        &mut self,
        now: Instant,
        worker_id: &str,
        acks: Vec<TaskRef>,
        reply_to: Option<Vec<Bytes>>,
    ) {
        let Some(w) = self.workers.get_mut(worker_id) else {
            if let Some(to) = reply_to {
                self.send(to, Header::Ack { acks });
            }
            return;
        };
        for a in &acks {
            w.storing.remove(a);
        }
        w.acks.extend(acks);
        match reply_to {
            Some(to) => {
                let acks = w.take_acks(now);
                self.send(to, Header::Ack { acks });
            }
            // Tasks are being claimed for this worker: their `tasks` message carries the acks
            // (one message instead of two, and a parked fetch is not answered `nothing` just
            // before its tasks are ready). If the claim takes long, the idle message of the
            // next tick carries them (within one heartbeat interval).
            None if w.claiming > 0 => {}
            None => self.flush(now, worker_id, false),
        }
    }

    // ---- reconciliation ----

    /// Compares what a worker says it holds (`listed`) with what is assigned to it here:
    /// - a run sent more than one liveness threshold ago (plus the time its message may take on a
    ///   slow link) that it does not list (and whose result is not being stored) is lost:
    ///   re-queued or FAILED per `max_retries`;
    /// - a run it lists that is an orphan from before a restart is adopted;
    /// - any other run it lists is not wanted here (another attempt, another worker's, settled):
    ///   it is cancelled, and takes a slot until the worker stops listing it. Before the first
    ///   recovery pass finished, unknown runs are only counted, not cancelled (they may be
    ///   orphans not read yet).
    fn reconcile(&mut self, now: Instant, worker_id: &str, listed: &[TaskRef]) {
        let threshold = self.timing.threshold();
        let deadline = self.timing.deadline;
        let recovered = self.recovered;
        let mut adopted = Vec::new();
        let mut unknown = HashSet::new();
        {
            let Some(w) = self.workers.get(worker_id) else {
                return;
            };
            for t in listed {
                // Ours, being stored, or acknowledged and the ack not yet seen by the worker.
                let acked = w
                    .acked
                    .get(t)
                    .is_some_and(|at| now.saturating_duration_since(*at) < threshold);
                if w.has(t) || w.storing.contains(t) || w.acks.contains(t) || acked {
                    continue;
                }
                let orphan = self
                    .orphans
                    .get(&t.task_id)
                    .is_some_and(|o| o.attempt == Some(t.attempt));
                if orphan {
                    adopted.push(*t);
                } else {
                    unknown.insert(*t);
                }
            }
        }
        let adopted: Vec<Owned> = adopted
            .iter()
            .filter_map(|t| self.take_run("", t))
            .collect();
        let Some(w) = self.workers.get_mut(worker_id) else {
            return;
        };
        for owned in adopted {
            tracing::info!(task_id = %owned.task_id, attempt = owned.attempt, worker = %worker_id,
                "running task adopted from before the restart");
            w.running.insert(
                owned.task_id,
                Assigned {
                    owned,
                    sent_at: Some(now),
                    deadline: deadline.map(|d| now + d),
                    claimed_at: None,
                },
            );
        }
        let held: HashSet<&TaskRef> = listed.iter().collect();
        w.acked
            .retain(|t, at| held.contains(t) && now.saturating_duration_since(*at) < threshold);
        let missing: Vec<Uuid> = w
            .running
            .values()
            .filter(|a| {
                a.sent_at
                    .is_some_and(|s| now.saturating_duration_since(s) >= threshold)
                    && !held.contains(&a.task())
                    && !w.storing.contains(&a.task())
            })
            .map(|a| a.owned.task_id)
            .collect();
        let lost: Vec<Loss> = missing
            .iter()
            .filter_map(|id| w.running.remove(id))
            .map(|a| Loss::lost(a.owned))
            .collect();
        if recovered {
            let cancel: Vec<TaskRef> = unknown
                .iter()
                .filter(|t| !w.foreign.contains(t) || !w.cancels.contains(t))
                .copied()
                .collect();
            for t in &cancel {
                tracing::info!(task_id = %t.task_id, attempt = t.attempt, worker = %worker_id,
                    "worker holds a run not assigned to it; cancelling it");
            }
            for t in cancel {
                if !w.cancels.contains(&t) {
                    w.cancels.push(t);
                }
            }
        }
        w.foreign = unknown;
        if !lost.is_empty() {
            let who = w.describe();
            tracing::warn!(worker = %worker_id, tasks = lost.len(), "worker does not have tasks sent to it");
            self.settle(
                lost,
                format!("worker {who} does not have the task (it was sent but never arrived, or the worker lost it)"),
            );
        }
    }

    // ---- claiming and delivery ----

    /// The one orphan rule: a run recovered from a dispatcher that is gone waits `orphan_grace`
    /// for a worker to list or report it, unless a worker already handed it back.
    fn orphan(&mut self, now: Instant, task_id: Uuid, attempt: Option<u32>, entry_id: String) {
        let Some(a) = attempt else {
            self.settle(
                vec![Loss::Lost {
                    task_id,
                    attempt,
                    entry_id,
                }],
                "the task's record is incomplete".into(),
            );
            return;
        };
        if self.released.get(&task_id).is_some_and(|(r, _)| *r == a) {
            self.released.remove(&task_id);
            let owned = Owned {
                task_id,
                attempt: a,
                entry_id,
            };
            self.settle(
                vec![Loss::Released(owned)],
                "its worker stopped before the task finished".into(),
            );
            return;
        }
        let t = TaskRef {
            task_id,
            attempt: a,
        };
        let holder = self
            .workers
            .values()
            .find(|w| w.foreign.contains(&t))
            .map(|w| w.info.id.clone());
        self.orphans.insert(
            task_id,
            Orphan {
                attempt,
                entry_id,
                until: now + self.timing.orphan_grace,
            },
        );
        match holder {
            Some(id) => {
                // Its worker already listed it: adopt at once.
                let listed: Vec<TaskRef> = self
                    .workers
                    .get(&id)
                    .map(|w| {
                        w.foreign
                            .iter()
                            .copied()
                            .chain(w.running.values().map(Assigned::task))
                            .collect()
                    })
                    .unwrap_or_default();
                self.reconcile(now, &id, &listed);
            }
            None => {
                tracing::info!(task_id = %task_id, attempt, grace_secs = self.timing.orphan_grace.as_secs_f64(),
                    "running task from before the restart: waiting for its worker");
            }
        }
    }

    /// Gives backlog entries to workers with free capacity (processes plus prefetch) and an open
    /// outlet: free processes first, on every worker, then prefetch; a worker alone with free
    /// room gets all it can take in one claim (and later one `tasks` message).
    fn assign(&mut self) {
        if !self.draining {
            while !self.backlog.is_empty() {
                let Some(id) = pick(self.workers.values()) else {
                    break;
                };
                // While another worker has an idle process, fill only this one's processes:
                // prefetch comes after every free process (a queued task should start at once).
                let others_idle = self
                    .workers
                    .values()
                    .any(|o| o.info.id != id && o.outlet.open() && o.free_processes() > 0);
                let Some(w) = self.workers.get_mut(&id) else {
                    break;
                };
                let room = if others_idle {
                    w.free_processes()
                } else {
                    w.free()
                };
                let n = room.min(self.backlog.len());
                if n == 0 {
                    break;
                }
                w.claiming += n;
                let entries: Vec<QueueEntry> = self.backlog.drain(..n).collect();
                self.out.push(Action::Claim {
                    worker_id: id,
                    entries,
                });
            }
        }
        self.demand();
    }

    /// Publishes how many entries the feeder may read: what the workers can take now, plus the
    /// read-ahead that the pace of recent runs allows for their processes (see
    /// [`ahead::depth`]), minus the backlog already read.
    /// With no worker left to take them, entries read go back to the queue, where any
    /// dispatcher can read them.
    fn demand(&mut self) {
        let (mut takers, mut processes, mut free) = (0, 0, 0);
        for w in self.workers.values().filter(|w| !w.leaving) {
            takers += 1;
            processes += w.info.slots as usize;
            free += w.free();
        }
        if takers == 0 && !self.draining && !self.backlog.is_empty() {
            let back = self.backlog.drain(..).collect();
            self.out.push(Action::Release(back));
        }
        let want = if self.draining {
            0
        } else {
            free + ahead::depth(processes, self.pace.average())
        };
        self.out
            .push(Action::Demand(want.saturating_sub(self.backlog.len())));
    }

    fn on_claimed(&mut self, now: Instant, worker_id: &str, count: usize, prepared: Vec<Prepared>) {
        let mut undelivered = Vec::new();
        let mut orphans = Vec::new();
        let draining = self.draining;
        let mut worker = self.workers.get_mut(worker_id);
        if let Some(w) = worker.as_deref_mut() {
            w.claiming = w.claiming.saturating_sub(count);
        }
        // Runs go to a worker that is still here and takes tasks; otherwise back to the queue.
        let mut taker = worker.filter(|w| !w.leaving && !draining);
        for p in prepared {
            match (p, taker.as_deref_mut()) {
                (Prepared::Run(r), Some(w)) => {
                    w.running.insert(
                        r.owned.task_id,
                        Assigned {
                            owned: r.owned.clone(),
                            sent_at: None,
                            deadline: None,
                            claimed_at: Some(now),
                        },
                    );
                    w.ready.push(r);
                }
                (Prepared::Run(r), None) => undelivered.push(Loss::Undelivered(r.owned)),
                (
                    Prepared::Orphan {
                        task_id,
                        attempt,
                        entry_id,
                    },
                    _,
                ) => orphans.push((task_id, attempt, entry_id)),
                (Prepared::Settled, _) => {}
            }
        }
        for (task_id, attempt, entry_id) in orphans {
            self.orphan(now, task_id, attempt, entry_id);
        }
        self.settle(
            undelivered,
            format!("worker {worker_id} went away before the task was sent"),
        );
        self.flush(now, worker_id, false);
        self.assign();
    }

    /// Sends what waits for the worker while its outlet is open, one message each: cancels,
    /// then claimed runs (with acks), then (if `idle` or acks wait) the idle message.
    fn flush(&mut self, now: Instant, worker_id: &str, mut idle: bool) {
        let deadline = self.timing.deadline;
        loop {
            let Some(w) = self.workers.get_mut(worker_id) else {
                return;
            };
            if !w.outlet.open() {
                return;
            }
            let (header, blobs) = if !w.cancels.is_empty() {
                let tasks = std::mem::take(&mut w.cancels);
                (Header::Cancel { tasks }, Vec::new())
            } else if !w.ready.is_empty() {
                let ready = std::mem::take(&mut w.ready);
                let bytes: u64 = ready
                    .iter()
                    .map(|r| (r.spec.fn_payload.len() + r.spec.args_payload.len()) as u64)
                    .sum();
                let arrives = now + transfer_allowance(bytes);
                let mut tasks = Vec::with_capacity(ready.len());
                let mut blobs = Vec::with_capacity(ready.len() * 2);
                for Running {
                    owned,
                    function_id,
                    spec,
                } in ready
                {
                    if let Some(a) = w.running.get_mut(&owned.task_id) {
                        a.sent_at = Some(arrives);
                        a.deadline = deadline.map(|d| now + d);
                    }
                    tasks.push(TaskMeta {
                        task: task_ref(&owned),
                        function_id,
                        timeout_ms: spec
                            .timeout
                            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                    });
                    blobs.push(spec.fn_payload);
                    blobs.push(spec.args_payload);
                }
                tracing::debug!(worker = %worker_id, tasks = tasks.len(), "tasks sent");
                let acks = w.take_acks(now);
                (Header::Tasks { tasks, acks }, blobs)
            } else if idle || !w.acks.is_empty() {
                idle = false;
                let acks = w.take_acks(now);
                (w.outlet.idle_message(acks), Vec::new())
            } else {
                return;
            };
            let Some(to) = w.outlet.take() else {
                return;
            };
            w.last_sent = now;
            self.out.push(Action::Send { to, header, blobs });
        }
    }

    /// Claimed runs not yet sent go back to the queue.
    fn requeue_ready(&mut self, worker_id: &str, reason: &str) {
        let Some(w) = self.workers.get_mut(worker_id) else {
            return;
        };
        let ready = std::mem::take(&mut w.ready);
        let mut losses = Vec::new();
        for r in ready {
            w.running.remove(&r.owned.task_id);
            losses.push(Loss::Undelivered(r.owned));
        }
        self.settle(losses, format!("worker {worker_id}: {reason}"));
    }

    // ---- time ----

    /// Heartbeats, parked answers, liveness, deadlines, orphans.
    fn tick(&mut self, now: Instant) {
        let interval = self.timing.interval;
        let ids: Vec<String> = self.workers.keys().cloned().collect();
        for id in &ids {
            let due = self
                .workers
                .get(id)
                .is_some_and(|w| w.outlet.idle_due(w.last_sent, now, interval));
            if due {
                self.flush(now, id, true);
            }
        }
        // Liveness: a parked fetch means the worker is waiting on us.
        let threshold = self.timing.threshold();
        let dead: Vec<String> = self
            .workers
            .values()
            .filter(|w| {
                !w.outlet.waiting() && now.saturating_duration_since(w.last_seen) > threshold
            })
            .map(|w| w.info.id.clone())
            .collect();
        for id in dead {
            let silence = format!(
                "no message for {:.1} s (heartbeat {} ms × {})",
                threshold.as_secs_f64(),
                interval.as_millis(),
                self.timing.misses
            );
            self.remove_worker(&id, &silence);
        }
        self.deadlines(now);
        self.released.retain(|_, (_, until)| now < *until);
        // Orphans whose worker never came back (while stopping they stay for the next start).
        if !self.draining {
            let gone: Vec<Uuid> = self
                .orphans
                .iter()
                .filter(|(_, o)| now >= o.until)
                .map(|(id, _)| *id)
                .collect();
            let losses = gone
                .iter()
                .filter_map(|id| self.orphans.remove(id).map(|o| (id, o)))
                .map(|(id, o)| Loss::Lost {
                    task_id: *id,
                    attempt: o.attempt,
                    entry_id: o.entry_id,
                })
                .collect();
            self.settle(
                losses,
                format!(
                    "its worker did not return within {:.0} s after the dispatcher restarted",
                    self.timing.orphan_grace.as_secs_f64()
                ),
            );
        }
        self.demand();
    }

    /// A user cancel of a running task: the worker holding it is sent `cancel` (the run keeps
    /// its slot until the worker stops listing it) and the task is FAILED with `TaskCancelled`.
    /// An unsent run (still `ready`) is just dropped; an orphan is settled the same way.
    fn cancel(&mut self, now: Instant, task_id: Uuid) {
        let holder = self
            .workers
            .values()
            .find(|w| w.running.contains_key(&task_id))
            .map(|w| w.info.id.clone());
        let owned = match &holder {
            Some(id) => self.workers.get_mut(id).and_then(|w| {
                let a = w.running.remove(&task_id)?;
                w.ready.retain(|r| r.owned.task_id != task_id);
                if a.sent_at.is_some() {
                    w.foreign.insert(a.task());
                    w.cancels.push(a.task());
                }
                Some(a.owned)
            }),
            None => self.orphans.remove(&task_id).and_then(|o| {
                o.attempt.map(|attempt| Owned {
                    task_id,
                    attempt,
                    entry_id: o.entry_id,
                })
            }),
        };
        let Some(owned) = owned else {
            tracing::debug!(task_id = %task_id, "cancel for a run not held here; ignored");
            return;
        };
        tracing::info!(task_id = %task_id, attempt = owned.attempt, worker = holder.as_deref().unwrap_or("none"),
            "running task cancelled");
        self.settle(
            vec![Loss::Cancelled(owned)],
            "the task was cancelled while it was running".into(),
        );
        if let Some(id) = holder {
            self.flush(now, &id, false);
        }
        self.assign();
    }

    /// Runs past their deadline are lost; the worker is told to cancel them.
    fn deadlines(&mut self, now: Instant) {
        let Some(limit) = self.timing.deadline else {
            return;
        };
        let ids: Vec<String> = self.workers.keys().cloned().collect();
        for id in ids {
            let Some(w) = self.workers.get_mut(&id) else {
                continue;
            };
            let expired: Vec<Uuid> = w
                .running
                .iter()
                .filter(|(_, a)| a.deadline.is_some_and(|d| now >= d))
                .map(|(id, _)| *id)
                .collect();
            if expired.is_empty() {
                continue;
            }
            let mut losses = Vec::with_capacity(expired.len());
            for a in expired.iter().filter_map(|id| w.running.remove(id)) {
                w.foreign.insert(a.task());
                w.cancels.push(a.task());
                losses.push(Loss::lost(a.owned));
            }
            let reason = format!(
                "worker {} did not report the result within the {:.1} s deadline",
                w.describe(),
                limit.as_secs_f64()
            );
            tracing::warn!(worker = %id, tasks = expired.len(), "task deadline passed; cancelling");
            self.settle(losses, reason);
            self.flush(now, &id, false);
        }
    }

    /// Forgets a worker; its sent runs are lost, its unsent ones go back to the queue.
    fn remove_worker(&mut self, id: &str, reason: &str) {
        let Some(w) = self.workers.remove(id) else {
            return;
        };
        self.out.push(Action::Runtime {
            worker_id: id.to_string(),
            runtime: None,
        });
        let who = w.describe();
        if w.running.is_empty() {
            tracing::info!(worker = %id, reason, "worker left");
        } else {
            tracing::warn!(worker = %id, reason, tasks = w.running.len(), "worker lost with running tasks");
        }
        let (sent, unsent): (Vec<Assigned>, Vec<Assigned>) =
            w.running.into_values().partition(|a| a.sent_at.is_some());
        self.settle(
            sent.into_iter().map(|a| Loss::lost(a.owned)).collect(),
            format!("worker {who} was lost: {reason}"),
        );
        self.settle(
            unsent
                .into_iter()
                .map(|a| Loss::Undelivered(a.owned))
                .collect(),
            format!("worker {who} was lost before the task was sent"),
        );
        self.assign();
    }

    /// Stops taking tasks: unsent runs go back, parked fetches are answered, no more claims.
    fn drain(&mut self, now: Instant) {
        self.draining = true;
        let ids: Vec<String> = self.workers.keys().cloned().collect();
        for id in &ids {
            self.requeue_ready(id, "dispatcher is stopping");
            if self.workers.get(id).is_some_and(|w| w.outlet.waiting()) {
                self.flush(now, id, true);
            }
        }
        // Entries read but not yet given to anyone go back to the queue, for any dispatcher.
        if !self.backlog.is_empty() {
            let back = self.backlog.drain(..).collect();
            self.out.push(Action::Release(back));
        }
        self.demand();
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
