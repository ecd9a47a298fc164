//! The dispatcher's in-memory registry of workers and the runs assigned to them.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use tokio::time::Instant;
use uuid::Uuid;

use crate::dispatcher::core::{Owned, Running};
use crate::protocol::{TaskRef, WorkerInfo};

/// A run assigned to a worker (claimed; maybe not yet sent).
#[derive(Debug, Clone)]
pub struct Assigned {
    pub owned: Owned,
    /// Sent to the worker (false while waiting for delivery).
    pub sent: bool,
    /// When the run is declared lost if no result came (task_deadline_secs).
    pub deadline: Option<Instant>,
}

/// One registered worker.
#[derive(Debug)]
pub struct Worker {
    pub info: WorkerInfo,
    /// Where messages for it go (push: its DEALER; pull: its latest fetch socket).
    pub envelope: Vec<Bytes>,
    pub last_seen: Instant,
    pub last_sent: Instant,
    /// Runs assigned to it, by task id.
    pub running: HashMap<Uuid, Assigned>,
    /// Tasks being claimed in Redis for it (credit reserved).
    pub claiming: usize,
    /// Claimed runs waiting to be sent.
    pub ready: Vec<Running>,
    /// Pull: a fetch waiting for an answer, and since when.
    pub parked: Option<(Vec<Bytes>, Instant)>,
    /// Stored results to acknowledge in the next message.
    pub acks: Vec<TaskRef>,
    /// Results being written to Redis (duplicates are ignored meanwhile).
    pub storing: HashSet<TaskRef>,
    /// It said bye: no new tasks.
    pub leaving: bool,
    /// Runs whose deadline passed (already settled as lost) but which may still occupy a slot on
    /// the worker until it reports them.
    pub expired: HashSet<TaskRef>,
}

impl Worker {
    pub fn new(info: WorkerInfo, envelope: Vec<Bytes>, now: Instant) -> Self {
        Worker {
            info,
            envelope,
            last_seen: now,
            last_sent: now,
            running: HashMap::new(),
            claiming: 0,
            ready: Vec::new(),
            parked: None,
            acks: Vec::new(),
            storing: HashSet::new(),
            leaving: false,
            expired: HashSet::new(),
        }
    }

    /// Slots not taken by assigned or being-claimed runs.
    pub fn free(&self) -> usize {
        if self.leaving {
            return 0;
        }
        (self.info.slots as usize)
            .saturating_sub(self.running.len() + self.claiming + self.expired.len())
    }

    /// A short description for logs and failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} (host {}, pid {})",
            self.info.id, self.info.host, self.info.pid
        )
    }
}

/// Picks the worker to give tasks to: the one with the most free slots (ties: fewer running),
/// among those `eligible`.
pub fn pick<'a>(
    workers: impl Iterator<Item = &'a Worker>,
    eligible: impl Fn(&Worker) -> bool,
) -> Option<String> {
    workers
        .filter(|w| w.free() > 0 && eligible(w))
        .max_by_key(|w| (w.free(), std::cmp::Reverse(w.running.len())))
        .map(|w| w.info.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str, slots: u32, running: usize) -> Worker {
        let mut w = Worker::new(
            WorkerInfo {
                id: id.into(),
                slots,
                host: "h".into(),
                pid: 1,
                version: "v".into(),
                protocol: 1,
                runtime: Default::default(),
            },
            vec![],
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
                    sent: true,
                    deadline: None,
                },
            );
        }
        w
    }

    #[test]
    fn picks_the_least_loaded() {
        let ws = [worker("a", 2, 1), worker("b", 4, 1), worker("c", 4, 4)];
        assert_eq!(pick(ws.iter(), |_| true).as_deref(), Some("b"));
        assert_eq!(pick(ws.iter(), |w| w.info.id != "b").as_deref(), Some("a"));
        let mut leaving = worker("d", 8, 0);
        leaving.leaving = true;
        assert_eq!(leaving.free(), 0);
        assert_eq!(pick([worker("c", 1, 1)].iter(), |_| true), None);
    }
}
