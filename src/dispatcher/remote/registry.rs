//! The dispatcher's in-memory registry of workers: the runs assigned to each, and the one place
//! where pull and push differ, how a message reaches a worker ([`Outlet`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use crate::dispatcher::core::{Owned, Running};
use crate::dispatcher::runs::task_ref;
use crate::protocol::{Header, TaskRef, WorkerInfo};

/// A run assigned to a worker (claimed; maybe not yet sent).
#[derive(Debug, Clone)]
pub struct Assigned {
    pub owned: Owned,
    /// When it was sent to the worker, plus the time its message may take to arrive on a slow
    /// link (None while waiting for delivery).
    pub sent_at: Option<Instant>,
    /// When the run is declared lost if no result came (task_deadline_secs).
    pub deadline: Option<Instant>,
    /// When it was claimed for the worker (None: adopted after a restart). Claim to result is
    /// the pace the read-ahead follows.
    pub claimed_at: Option<Instant>,
}

impl Assigned {
    pub fn task(&self) -> TaskRef {
        task_ref(&self.owned)
    }
}

/// How messages reach a worker. Push: its DEALER, at any time. Pull: only as the answer to a
/// fetch it parked with us (each message to a REQ socket answers exactly one request).
#[derive(Debug, Clone)]
pub enum Outlet {
    Stream(Vec<Bytes>),
    Parked(Option<(Vec<Bytes>, Instant)>),
}

impl Outlet {
    /// The outlet of a worker that just said `hello` on `envelope`.
    pub fn new(pull: bool, envelope: Vec<Bytes>) -> Self {
        if pull {
            Outlet::Parked(None)
        } else {
            Outlet::Stream(envelope)
        }
    }

    /// A message can go out now.
    pub fn open(&self) -> bool {
        match self {
            Outlet::Stream(_) => true,
            Outlet::Parked(p) => p.is_some(),
        }
    }

    /// The route for one message (a parked fetch is used up).
    pub fn take(&mut self) -> Option<Vec<Bytes>> {
        match self {
            Outlet::Stream(env) => Some(env.clone()),
            Outlet::Parked(p) => p.take().map(|(env, _)| env),
        }
    }

    /// A message from the worker arrived on `envelope` (push: the latest route wins).
    pub fn heard(&mut self, envelope: &[Bytes]) {
        if let Outlet::Stream(env) = self {
            *env = envelope.to_vec();
        }
    }

    /// Pull: a fetch waits for an answer.
    pub fn park(&mut self, envelope: Vec<Bytes>, now: Instant) {
        if let Outlet::Parked(p) = self {
            *p = Some((envelope, now));
        }
    }

    /// The worker waits on us (a parked fetch): it is alive however long it is quiet.
    pub fn waiting(&self) -> bool {
        matches!(self, Outlet::Parked(Some(_)))
    }

    /// The worker's requests are answered one by one (pull), so a `report` gets its own `ack`.
    pub fn answers_requests(&self) -> bool {
        matches!(self, Outlet::Parked(_))
    }

    /// Time for an idle message: push, nothing sent for an interval (our heartbeat); pull, a
    /// fetch parked for an interval (answered so the worker knows we are alive).
    pub fn idle_due(&self, last_sent: Instant, now: Instant, interval: Duration) -> bool {
        match self {
            Outlet::Stream(_) => now.saturating_duration_since(last_sent) >= interval,
            Outlet::Parked(Some((_, since))) => now.saturating_duration_since(*since) >= interval,
            Outlet::Parked(None) => false,
        }
    }

    /// The message that says "nothing to run", carrying pending acknowledgements.
    pub fn idle_message(&self, acks: Vec<TaskRef>) -> Header {
        match self {
            Outlet::Stream(_) if acks.is_empty() => Header::Ping,
            Outlet::Stream(_) => Header::Ack { acks },
            Outlet::Parked(_) => Header::Nothing { acks },
        }
    }
}

/// One registered worker.
#[derive(Debug)]
pub struct Worker {
    pub info: WorkerInfo,
    pub outlet: Outlet,
    pub last_seen: Instant,
    pub last_sent: Instant,
    /// Runs assigned to it, by task id.
    pub running: HashMap<Uuid, Assigned>,
    /// Tasks being claimed in Redis for it (credit reserved).
    pub claiming: usize,
    /// Claimed runs waiting to be sent.
    pub ready: Vec<Running>,
    /// Stored results to acknowledge in the next message.
    pub acks: Vec<TaskRef>,
    /// Results acknowledged lately, and when: the worker may still list them in a message it
    /// sent before the ack arrived, so they are not taken for runs it should not hold (kept
    /// while it lists them, for at most one liveness threshold).
    pub acked: HashMap<TaskRef, Instant>,
    /// Runs to cancel on the worker in the next message.
    pub cancels: Vec<TaskRef>,
    /// Results being written to Redis (duplicates are ignored meanwhile).
    pub storing: HashSet<TaskRef>,
    /// Runs the worker holds that are not assigned to it here (cancelled, past their deadline,
    /// or not known yet after a restart): they take its slots until it stops listing them.
    pub foreign: HashSet<TaskRef>,
    /// It said bye: no new tasks.
    pub leaving: bool,
}

impl Worker {
    pub fn new(info: WorkerInfo, outlet: Outlet, now: Instant) -> Self {
        Worker {
            info,
            outlet,
            last_seen: now,
            last_sent: now,
            running: HashMap::new(),
            claiming: 0,
            ready: Vec::new(),
            acks: Vec::new(),
            acked: HashMap::new(),
            cancels: Vec::new(),
            storing: HashSet::new(),
            foreign: HashSet::new(),
            leaving: false,
        }
    }

    /// The acknowledgements to send now (remembered in `acked`).
    pub fn take_acks(&mut self, now: Instant) -> Vec<TaskRef> {
        let acks = std::mem::take(&mut self.acks);
        for t in &acks {
            self.acked.insert(*t, now);
        }
        acks
    }

    /// Runs it holds by our count: assigned (sent or not), being claimed, or foreign.
    pub fn held(&self) -> usize {
        self.running.len() + self.claiming + self.foreign.len()
    }

    /// Tasks it can still be given: its capacity (processes plus prefetch) minus the runs it
    /// holds by our count. What batches are sized by.
    pub fn free(&self) -> usize {
        if self.leaving {
            return 0;
        }
        (self.info.capacity() as usize).saturating_sub(self.held())
    }

    /// Processes without a run by our count (for `/info` and `/metrics`, which show processes,
    /// not prefetch): the runs it holds fill its processes first.
    pub fn free_processes(&self) -> usize {
        if self.leaving {
            return 0;
        }
        (self.info.slots as usize).saturating_sub(self.held())
    }

    /// The run `t` is assigned to this worker (same attempt).
    pub fn has(&self, t: &TaskRef) -> bool {
        self.running
            .get(&t.task_id)
            .is_some_and(|a| a.owned.attempt == t.attempt)
    }

    /// A short description for logs and failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} (host {}, pid {})",
            self.info.id, self.info.host, self.info.pid
        )
    }
}

/// Picks the worker to give tasks to, among those with free capacity and an open outlet: the one
/// with the most free processes (a task sent there starts at once, rather than waiting behind
/// another worker's runs), then the most free capacity, then the fewest runs.
pub fn pick<'a>(workers: impl Iterator<Item = &'a Worker>) -> Option<String> {
    workers
        .filter(|w| w.free() > 0 && w.outlet.open())
        .max_by_key(|w| {
            (
                w.free_processes(),
                w.free(),
                std::cmp::Reverse(w.running.len()),
            )
        })
        .map(|w| w.info.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str, slots: u32, running: usize, outlet: Outlet) -> Worker {
        let mut w = Worker::new(
            WorkerInfo {
                id: id.into(),
                slots,
                capacity: None,
                host: "h".into(),
                pid: 1,
                version: "v".into(),
                protocol: 1,
                runtime: Default::default(),
            },
            outlet,
            Instant::now(),
        );
        for _ in 0..running {
            let id = Uuid::new_v4();
            w.running.insert(
                id,
                Assigned {
                    owned: Owned {
                        task_id: id,
                        attempt: 1,
                        entry_id: "0-1".into(),
                    },
                    sent_at: Some(Instant::now()),
                    deadline: None,
                    claimed_at: None,
                },
            );
        }
        w
    }

    fn push() -> Outlet {
        Outlet::Stream(vec![Bytes::from_static(b"p")])
    }

    #[test]
    fn picks_the_least_loaded_open_worker() {
        let ws = [
            worker("a", 2, 1, push()),
            worker("b", 4, 1, push()),
            worker("c", 4, 4, push()),
        ];
        assert_eq!(pick(ws.iter()).as_deref(), Some("b"));
        let closed = [
            worker("b", 4, 1, Outlet::Parked(None)),
            worker("a", 2, 1, push()),
        ];
        assert_eq!(pick(closed.iter()).as_deref(), Some("a"));
        let mut leaving = worker("d", 8, 0, push());
        leaving.leaving = true;
        assert_eq!(leaving.free(), 0);
        assert_eq!(pick([worker("c", 1, 1, push())].iter()), None);
    }

    #[test]
    fn free_processes_come_before_prefetch() {
        // a: 2 processes busy, room for 2 prefetched; b: 1 process, idle.
        let mut a = worker("a", 2, 2, push());
        a.info.capacity = Some(4);
        let b = worker("b", 1, 0, push());
        assert_eq!((a.free(), a.free_processes()), (2, 0));
        assert_eq!((b.free(), b.free_processes()), (1, 1));
        assert_eq!(pick([&a, &b].into_iter()).as_deref(), Some("b"));
        // Once b is busy too, a's prefetch room is used.
        let b = worker("b", 1, 1, push());
        assert_eq!(pick([&a, &b].into_iter()).as_deref(), Some("a"));
    }

    #[test]
    fn foreign_runs_take_slots() {
        let mut w = worker("a", 2, 1, push());
        w.foreign.insert(TaskRef {
            task_id: Uuid::new_v4(),
            attempt: 3,
        });
        assert_eq!(w.free(), 0);
    }

    #[test]
    fn outlets_differ_only_in_how_they_route() {
        let now = Instant::now();
        let env = vec![Bytes::from_static(b"x")];
        let mut pull = Outlet::new(true, env.clone());
        assert!(!pull.open() && pull.take().is_none());
        pull.park(env.clone(), now);
        assert!(pull.open() && pull.waiting());
        assert!(pull.idle_due(now, now + Duration::from_secs(1), Duration::from_secs(1)));
        assert_eq!(pull.take(), Some(env.clone()));
        assert!(!pull.open());
        let mut push = Outlet::new(false, env.clone());
        assert!(push.open() && !push.waiting());
        assert_eq!(push.take(), Some(env.clone()));
        assert!(push.open());
        assert_eq!(push.idle_message(vec![]), Header::Ping);
        assert_eq!(pull.idle_message(vec![]), Header::Nothing { acks: vec![] });
    }
}
