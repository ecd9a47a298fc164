//! The remote loop's state machine: workers, backlog, orphans, and what each event does to them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

use super::effects::{self, Loss, ToStore};
use super::feeder::InFlight;
use super::outbound::Outbound;
use super::registry::{pick, Assigned, Worker};
use super::Event;
use crate::config::Mode;
use crate::dispatcher::core::{Core, Owned, Prepared, Running};
use crate::protocol::{Decoded, Header, ResultMeta, TaskMeta, TaskRef, WorkerInfo, VERSION};
use crate::store::presence::WorkerPresence;
use crate::store::QueueEntry;

/// A RUNNING task recovered from a dispatcher that is gone, waiting for its worker to return.
struct Orphan {
    attempt: Option<u32>,
    entry_id: String,
    until: Instant,
}

/// How long a handed-back run this dispatcher had no record of is remembered (until its queue
/// entry turns up in a recovery pass, which runs every 10 s).
const RELEASED_KEEP: Duration = Duration::from_secs(60);

/// Liveness and deadline settings.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub interval: Duration,
    pub misses: u32,
    pub deadline: Option<Duration>,
}

impl Timing {
    /// Silence after which a worker is dead.
    pub fn threshold(&self) -> Duration {
        self.interval * self.misses.max(1)
    }
}

pub struct Remote {
    core: Arc<Core>,
    mode: Mode,
    timing: Timing,
    out: Outbound,
    events: mpsc::Sender<Event>,
    demand: watch::Sender<usize>,
    in_flight: InFlight,
    workers: HashMap<String, Worker>,
    backlog: VecDeque<QueueEntry>,
    orphans: HashMap<Uuid, Orphan>,
    /// Runs handed back by a worker that this dispatcher had no record of: (attempt, forget at).
    released: HashMap<Uuid, (u32, Instant)>,
    draining: bool,
}

impl Remote {
    pub fn new(
        core: Arc<Core>,
        mode: Mode,
        timing: Timing,
        out: Outbound,
        events: mpsc::Sender<Event>,
        demand: watch::Sender<usize>,
        in_flight: InFlight,
    ) -> Self {
        Remote {
            core,
            mode,
            timing,
            out,
            events,
            demand,
            in_flight,
            workers: HashMap::new(),
            backlog: VecDeque::new(),
            orphans: HashMap::new(),
            released: HashMap::new(),
            draining: false,
        }
    }

    fn pull(&self) -> bool {
        self.mode == Mode::Pull
    }

    /// Runs assigned to workers, being claimed, or whose results are being stored: what a
    /// graceful stop waits for. (Orphans stay pending for the next start.)
    pub fn busy(&self) -> usize {
        self.workers
            .values()
            .map(|w| w.running.len() + w.claiming + w.storing.len())
            .sum()
    }

    /// One-line summary (logs and systemd `STATUS=`): workers, slots, free, running, backlog.
    pub fn summary(&self) -> String {
        let slots: usize = self.workers.values().map(|w| w.info.slots as usize).sum();
        let free: usize = self.workers.values().map(Worker::free).sum();
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
                free: u32::try_from(w.free()).unwrap_or(u32::MAX),
                runtime: w.info.runtime.clone(),
            })
            .collect()
    }

    pub fn handle(&mut self, ev: Event) {
        match ev {
            Event::Inbound { envelope, msg } => self.on_message(envelope, msg),
            Event::Entries(entries) => {
                self.backlog.extend(entries);
                self.assign();
            }
            Event::Orphan {
                task_id,
                attempt,
                entry_id,
            } => self.on_orphan(task_id, attempt, entry_id),
            Event::Claimed {
                worker_id,
                count,
                prepared,
            } => self.on_claimed(&worker_id, count, prepared),
            Event::Stored {
                worker_id,
                acks,
                reply_to,
            } => self.on_stored(&worker_id, acks, reply_to),
        }
    }

    // ---- inbound messages ----

    fn on_message(&mut self, envelope: Vec<Bytes>, msg: Decoded) {
        let Decoded { header, blobs } = msg;
        match header {
            Header::Hello { worker, running } => self.on_hello(envelope, worker, running),
            Header::Fetch {
                worker_id,
                free,
                results,
            } => self.on_fetch(envelope, &worker_id, free, results, blobs),
            Header::Report { worker_id, results } => {
                if !self.seen(&envelope, &worker_id, true) {
                    return;
                }
                let reply_to = self.pull().then(|| envelope.clone());
                self.on_results(&worker_id, results, blobs, reply_to);
            }
            Header::Heartbeat { worker_id, .. } => {
                self.seen(&envelope, &worker_id, true);
            }
            Header::Bye { worker_id } => {
                if let Some(w) = self.workers.get_mut(&worker_id) {
                    w.leaving = true;
                    w.last_seen = Instant::now();
                    tracing::info!(worker = %worker_id, running = w.running.len(), "worker leaving");
                    let acks = std::mem::take(&mut w.acks);
                    if self.mode == Mode::Pull {
                        self.out.send(&envelope, &Header::Ack { acks }, Vec::new());
                    } else {
                        w.acks = acks;
                    }
                    self.requeue_ready(&worker_id, "worker is leaving");
                } else if self.pull() {
                    self.out
                        .send(&envelope, &Header::Ack { acks: Vec::new() }, Vec::new());
                }
            }
            Header::Release { worker_id, tasks } => self.on_release(envelope, &worker_id, tasks),
            other => tracing::warn!(kind = other.kind(), "unexpected message from a worker"),
        }
    }

    /// Marks `worker_id` alive. An unknown id is told to say hello again (returns false).
    fn seen(&mut self, envelope: &[Bytes], worker_id: &str, update_envelope: bool) -> bool {
        match self.workers.get_mut(worker_id) {
            Some(w) => {
                w.last_seen = Instant::now();
                if update_envelope && self.mode == Mode::Push {
                    w.envelope = envelope.to_vec();
                }
                true
            }
            None => {
                tracing::debug!(worker = %worker_id, "message from an unknown worker; asking it to register");
                self.out.send(envelope, &Header::Unknown, Vec::new());
                false
            }
        }
    }

    /// A stopping worker killed these runs: re-queue them (fenced by attempt) and acknowledge.
    fn on_release(&mut self, envelope: Vec<Bytes>, worker_id: &str, tasks: Vec<TaskRef>) {
        if !self.seen(&envelope, worker_id, true) {
            return; // it registers again and repeats the release
        }
        let Some(w) = self.workers.get_mut(worker_id) else {
            return;
        };
        let now = Instant::now();
        let mut back = Vec::with_capacity(tasks.len());
        for t in &tasks {
            let mine = w
                .running
                .get(&t.task_id)
                .is_some_and(|a| a.owned.attempt == t.attempt);
            let orphan = self
                .orphans
                .get(&t.task_id)
                .is_some_and(|o| o.attempt == Some(t.attempt));
            if let Some(a) = w.running.remove(&t.task_id).filter(|_| mine) {
                back.push(Loss::Released(a.owned));
            } else if let Some(o) = self.orphans.remove(&t.task_id).filter(|_| orphan) {
                back.push(Loss::Released(Owned {
                    task_id: t.task_id,
                    attempt: t.attempt,
                    entry_id: o.entry_id,
                }));
            } else {
                // No record here yet (this dispatcher restarted): settle it when its entry is
                // recovered, rather than waiting for a worker that is gone.
                tracing::debug!(task_id = %t.task_id, attempt = t.attempt, worker = %worker_id,
                    "handed-back task not known yet; re-queued when its entry is recovered");
                self.released
                    .insert(t.task_id, (t.attempt, now + RELEASED_KEEP));
            }
        }
        for t in &tasks {
            tracing::info!(task_id = %t.task_id, attempt = t.attempt, worker = %worker_id,
                "worker stopped before the task finished and handed it back");
        }
        let mut acks = std::mem::take(&mut w.acks);
        acks.extend(tasks);
        w.last_sent = now;
        self.out.send(&envelope, &Header::Ack { acks }, Vec::new());
        self.settle(
            back,
            format!("worker {worker_id} stopped before the task finished"),
        );
        self.assign();
    }

    fn on_hello(&mut self, envelope: Vec<Bytes>, info: WorkerInfo, running: Vec<TaskRef>) {
        if info.protocol != VERSION {
            let reason = format!(
                "protocol version {} is not supported (dispatcher speaks {VERSION})",
                info.protocol
            );
            tracing::warn!(worker = %info.id, %reason, "worker refused");
            self.out
                .send(&envelope, &Header::Refused { reason }, Vec::new());
            return;
        }
        let now = Instant::now();
        let id = info.id.clone();
        self.core.set_runtime(&id, Some(info.runtime.clone()));
        let restarted = self
            .workers
            .get(&id)
            .is_some_and(|w| w.info.pid != info.pid || w.info.host != info.host);
        if restarted {
            self.remove_worker(&id, "worker restarted");
        }
        match self.workers.get_mut(&id) {
            Some(w) => {
                tracing::info!(worker = %id, "worker reconnected");
                w.envelope = envelope.clone();
                w.last_seen = now;
                w.parked = None;
                w.info.slots = info.slots;
            }
            None => {
                tracing::info!(worker = %id, slots = info.slots, host = %info.host, pid = info.pid, version = %info.version, "worker joined");
                self.workers
                    .insert(id.clone(), Worker::new(info, envelope.clone(), now));
            }
        }
        // Adopt runs a previous dispatcher gave this worker.
        if let Some(w) = self.workers.get_mut(&id) {
            for t in running {
                let adopt = self
                    .orphans
                    .get(&t.task_id)
                    .is_some_and(|o| o.attempt == Some(t.attempt));
                if adopt {
                    if let Some(o) = self.orphans.remove(&t.task_id) {
                        tracing::info!(task_id = %t.task_id, worker = %id, "running task adopted from before the restart");
                        w.running.insert(
                            t.task_id,
                            Assigned {
                                owned: Owned {
                                    task_id: t.task_id,
                                    attempt: t.attempt,
                                    entry_id: o.entry_id,
                                },
                                sent: true,
                                deadline: self.timing.deadline.map(|d| now + d),
                            },
                        );
                    }
                }
            }
        }
        let welcome = Header::Welcome {
            dispatcher: self.core.name.clone(),
            heartbeat_ms: u64::try_from(self.timing.interval.as_millis()).unwrap_or(u64::MAX),
            heartbeat_misses: self.timing.misses,
        };
        self.out.send(&envelope, &welcome, Vec::new());
        if let Some(w) = self.workers.get_mut(&id) {
            w.last_sent = now;
        }
        self.deliver(&id);
        self.assign();
    }

    fn on_fetch(
        &mut self,
        envelope: Vec<Bytes>,
        worker_id: &str,
        free: u32,
        results: Vec<ResultMeta>,
        blobs: Vec<Bytes>,
    ) {
        if !self.seen(&envelope, worker_id, false) {
            return;
        }
        self.on_results(worker_id, results, blobs, None);
        let draining = self.draining;
        let Some(w) = self.workers.get_mut(worker_id) else {
            return;
        };
        w.envelope = envelope.clone();
        w.parked = Some((envelope, Instant::now()));
        if !w.ready.is_empty() {
            self.deliver(worker_id);
        } else if free == 0 || w.leaving || draining {
            self.answer_parked(worker_id);
        } else {
            self.assign();
        }
    }

    fn on_results(
        &mut self,
        worker_id: &str,
        results: Vec<ResultMeta>,
        blobs: Vec<Bytes>,
        reply_to: Option<Vec<Bytes>>,
    ) {
        let Some(w) = self.workers.get_mut(worker_id) else {
            return;
        };
        let mut batch = Vec::with_capacity(results.len());
        for (meta, blob) in results.into_iter().zip(blobs) {
            if !w.storing.insert(meta.task) {
                continue; // already being stored: the ack will come
            }
            w.expired.remove(&meta.task);
            let mine = w
                .running
                .get(&meta.task.task_id)
                .is_some_and(|a| a.owned.attempt == meta.task.attempt);
            let owned = if mine {
                w.running.remove(&meta.task.task_id).map(|a| a.owned)
            } else if self
                .orphans
                .get(&meta.task.task_id)
                .is_some_and(|o| o.attempt == Some(meta.task.attempt))
            {
                self.orphans.remove(&meta.task.task_id).map(|o| Owned {
                    task_id: meta.task.task_id,
                    attempt: meta.task.attempt,
                    entry_id: o.entry_id,
                })
            } else {
                None
            };
            batch.push(ToStore { meta, blob, owned });
        }
        if batch.is_empty() {
            if let Some(to) = reply_to {
                let acks = std::mem::take(&mut w.acks);
                self.out.send(&to, &Header::Ack { acks }, Vec::new());
            }
            return;
        }
        effects::store(
            self.core.clone(),
            worker_id.to_string(),
            batch,
            reply_to,
            self.events.clone(),
            self.in_flight.clone(),
        );
        self.assign();
    }

    fn on_stored(&mut self, worker_id: &str, acks: Vec<TaskRef>, reply_to: Option<Vec<Bytes>>) {
        let Some(w) = self.workers.get_mut(worker_id) else {
            if let Some(to) = reply_to {
                self.out.send(&to, &Header::Ack { acks }, Vec::new());
            }
            return;
        };
        for a in &acks {
            w.storing.remove(a);
        }
        match (reply_to, self.mode) {
            (Some(to), _) => {
                let mut all = std::mem::take(&mut w.acks);
                all.extend(acks);
                self.out.send(&to, &Header::Ack { acks: all }, Vec::new());
            }
            (None, Mode::Push) => {
                let env = w.envelope.clone();
                w.last_sent = Instant::now();
                self.out.send(&env, &Header::Ack { acks }, Vec::new());
            }
            (None, _) => {
                w.acks.extend(acks);
                // Hand the acks over now rather than at the next interval.
                if w.ready.is_empty() {
                    self.answer_parked(worker_id);
                }
            }
        }
    }

    // ---- claiming and delivery ----

    fn on_orphan(&mut self, task_id: Uuid, attempt: Option<u32>, entry_id: String) {
        if attempt.is_none() {
            self.settle(
                vec![Loss::Lost {
                    task_id,
                    attempt,
                    entry_id,
                }],
                "the task's record is incomplete".into(),
            );
            return;
        }
        if self.was_released(task_id, attempt, &entry_id) {
            return;
        }
        // Two liveness thresholds: time for its worker to notice the restart and say hello.
        let until = Instant::now() + self.timing.threshold() * 2 + self.timing.interval;
        tracing::info!(task_id = %task_id, attempt, "running task from before the restart: waiting for its worker");
        self.orphans.insert(
            task_id,
            Orphan {
                attempt,
                entry_id,
                until,
            },
        );
    }

    /// True (and the run is re-queued) if a worker already handed this orphan back.
    fn was_released(&mut self, task_id: Uuid, attempt: Option<u32>, entry_id: &str) -> bool {
        let Some(attempt) = attempt else {
            return false;
        };
        if self
            .released
            .get(&task_id)
            .is_none_or(|(a, _)| *a != attempt)
        {
            return false;
        }
        self.released.remove(&task_id);
        let owned = Owned {
            task_id,
            attempt,
            entry_id: entry_id.to_string(),
        };
        self.settle(
            vec![Loss::Released(owned)],
            "its worker stopped before the task finished".into(),
        );
        true
    }

    /// Gives backlog entries to workers with free slots, most free first, in batches.
    fn assign(&mut self) {
        if !self.draining {
            let pull = self.pull();
            while !self.backlog.is_empty() {
                let Some(id) = pick(self.workers.values(), |w| !pull || w.parked.is_some()) else {
                    break;
                };
                let Some(w) = self.workers.get_mut(&id) else {
                    break;
                };
                let n = w.free().min(self.backlog.len());
                w.claiming += n;
                let batch: Vec<QueueEntry> = self.backlog.drain(..n).collect();
                effects::claim(
                    self.core.clone(),
                    id,
                    batch,
                    self.events.clone(),
                    self.in_flight.clone(),
                );
            }
        }
        self.publish_demand();
    }

    fn publish_demand(&self) {
        let capacity: usize = if self.draining {
            0
        } else {
            self.workers.values().map(Worker::free).sum()
        };
        let _ = self
            .demand
            .send(capacity.saturating_sub(self.backlog.len()));
    }

    fn on_claimed(&mut self, worker_id: &str, count: usize, prepared: Vec<Prepared>) {
        let now = Instant::now();
        let mut undelivered = Vec::new();
        match self.workers.get_mut(worker_id) {
            Some(w) => {
                w.claiming = w.claiming.saturating_sub(count);
                for p in prepared {
                    match p {
                        Prepared::Run(r) if !w.leaving => {
                            w.running.insert(
                                r.owned.task_id,
                                Assigned {
                                    owned: r.owned.clone(),
                                    sent: false,
                                    deadline: None,
                                },
                            );
                            w.ready.push(r);
                        }
                        Prepared::Run(r) => undelivered.push(Loss::Undelivered(r.owned)),
                        Prepared::Orphan {
                            task_id,
                            attempt,
                            entry_id,
                        } => {
                            if self
                                .released
                                .get(&task_id)
                                .is_some_and(|(a, _)| Some(*a) == attempt)
                            {
                                self.released.remove(&task_id);
                                let owned = attempt.map(|attempt| Owned {
                                    task_id,
                                    attempt,
                                    entry_id,
                                });
                                undelivered.extend(owned.map(Loss::Released));
                                continue;
                            }
                            let until = now + self.timing.threshold() * 2;
                            self.orphans.insert(
                                task_id,
                                Orphan {
                                    attempt,
                                    entry_id,
                                    until,
                                },
                            );
                        }
                        Prepared::Settled => {}
                    }
                }
            }
            None => {
                for p in prepared {
                    if let Prepared::Run(r) = p {
                        undelivered.push(Loss::Undelivered(r.owned));
                    }
                }
            }
        }
        self.settle(
            undelivered,
            format!("worker {worker_id} went away before the task was sent"),
        );
        self.deliver(worker_id);
        self.assign();
    }

    /// Sends claimed runs to the worker (pull: only into a parked fetch).
    fn deliver(&mut self, worker_id: &str) {
        let deadline = self.timing.deadline;
        let mode = self.mode;
        let Some(w) = self.workers.get_mut(worker_id) else {
            return;
        };
        if w.ready.is_empty() {
            return;
        }
        let envelope = match mode {
            Mode::Pull => match w.parked.take() {
                Some((env, _)) => env,
                None => return,
            },
            _ => w.envelope.clone(),
        };
        let now = Instant::now();
        let ready = std::mem::take(&mut w.ready);
        let mut tasks = Vec::with_capacity(ready.len());
        let mut blobs = Vec::with_capacity(ready.len() * 2);
        for Running {
            owned,
            function_id,
            spec,
        } in ready
        {
            if let Some(a) = w.running.get_mut(&owned.task_id) {
                a.sent = true;
                a.deadline = deadline.map(|d| now + d);
            }
            tasks.push(TaskMeta {
                task: effects::task_ref(&owned),
                function_id,
                timeout_ms: spec
                    .timeout
                    .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            });
            blobs.push(spec.fn_payload);
            blobs.push(spec.args_payload);
        }
        let acks = std::mem::take(&mut w.acks);
        w.last_sent = now;
        tracing::debug!(worker = %worker_id, tasks = tasks.len(), "tasks sent");
        self.out
            .send(&envelope, &Header::Tasks { tasks, acks }, blobs);
    }

    /// Pull: answers a parked fetch with `nothing` (and any acks).
    fn answer_parked(&mut self, worker_id: &str) {
        if let Some(w) = self.workers.get_mut(worker_id) {
            if let Some((env, _)) = w.parked.take() {
                let acks = std::mem::take(&mut w.acks);
                w.last_sent = Instant::now();
                self.out.send(&env, &Header::Nothing { acks }, Vec::new());
            }
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

    /// Settles lost or undelivered runs in the background.
    fn settle(&self, losses: Vec<Loss>, reason: String) {
        effects::settle(self.core.clone(), losses, reason, self.in_flight.clone());
    }

    // ---- time ----

    /// Heartbeats, parked answers, liveness, deadlines, orphans.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let interval = self.timing.interval;
        let ids: Vec<String> = self.workers.keys().cloned().collect();
        for id in &ids {
            let Some(w) = self.workers.get_mut(id) else {
                continue;
            };
            match self.mode {
                Mode::Pull => {
                    if w.parked
                        .as_ref()
                        .is_some_and(|(_, since)| now - *since >= interval)
                    {
                        self.answer_parked(id);
                    }
                }
                _ => {
                    if now - w.last_sent >= interval {
                        w.last_sent = now;
                        let env = w.envelope.clone();
                        let acks = std::mem::take(&mut w.acks);
                        let h = if acks.is_empty() {
                            Header::Ping
                        } else {
                            Header::Ack { acks }
                        };
                        self.out.send(&env, &h, Vec::new());
                    }
                }
            }
        }
        // Liveness: a parked fetch means the worker is waiting on us.
        let threshold = self.timing.threshold();
        let dead: Vec<String> = self
            .workers
            .values()
            .filter(|w| w.parked.is_none() && now - w.last_seen > threshold)
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
        // Deadlines.
        for w in self.workers.values_mut() {
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
                w.expired.insert(effects::task_ref(&a.owned));
                losses.push(Loss::Lost {
                    task_id: a.owned.task_id,
                    attempt: Some(a.owned.attempt),
                    entry_id: a.owned.entry_id,
                });
            }
            let reason = format!(
                "worker {} did not report the result within the {:.1} s deadline",
                w.describe(),
                self.timing.deadline.unwrap_or_default().as_secs_f64()
            );
            tracing::warn!(worker = %w.info.id, tasks = expired.len(), "task deadline passed");
            effects::settle(self.core.clone(), losses, reason, self.in_flight.clone());
        }
        self.released.retain(|_, (_, until)| now < *until);
        // Orphans whose worker never came back (while stopping they stay for the next start).
        if self.draining {
            self.publish_demand();
            return;
        }
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
            "its worker did not return after the dispatcher restarted".into(),
        );
        self.publish_demand();
    }

    /// Forgets a worker; its sent runs are lost, its unsent ones go back to the queue.
    fn remove_worker(&mut self, id: &str, reason: &str) {
        let Some(w) = self.workers.remove(id) else {
            return;
        };
        self.core.set_runtime(id, None);
        let who = w.describe();
        if w.running.is_empty() {
            tracing::info!(worker = %id, reason, "worker left");
        } else {
            tracing::warn!(worker = %id, reason, tasks = w.running.len(), "worker lost with running tasks");
        }
        let mut lost = Vec::new();
        let mut undelivered = Vec::new();
        for a in w.running.into_values() {
            if a.sent {
                lost.push(Loss::Lost {
                    task_id: a.owned.task_id,
                    attempt: Some(a.owned.attempt),
                    entry_id: a.owned.entry_id,
                });
            } else {
                undelivered.push(Loss::Undelivered(a.owned));
            }
        }
        self.settle(lost, format!("worker {who} was lost: {reason}"));
        self.settle(
            undelivered,
            format!("worker {who} was lost before the task was sent"),
        );
        self.assign();
    }

    /// Stops taking tasks: parked fetches are answered, no more claims.
    pub fn start_drain(&mut self) {
        self.draining = true;
        let ids: Vec<String> = self.workers.keys().cloned().collect();
        for id in &ids {
            self.requeue_ready(id, "dispatcher is stopping");
            if self.pull() {
                self.answer_parked(id);
            }
        }
        // Entries read but not yet given to anyone stay pending for the next start.
        self.backlog.clear();
        self.publish_demand();
    }
}
