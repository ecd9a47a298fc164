//! State shared by both modes: liveness timing, the drain on shutdown, and the worker context
//! (running tasks, outbox, link, status) each mode loop works on.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::connect::Link;
use super::state::{Finished, State};
use super::Status;
use crate::protocol::{Header, TaskRef, WorkerInfo};
use crate::shutdown::Shutdown;

/// Heartbeat interval and misses, from the config until a `welcome` says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub interval: Duration,
    pub misses: u32,
}

impl Timing {
    pub fn new(interval_ms: u64, misses: u32) -> Self {
        Timing {
            interval: Duration::from_millis(interval_ms.max(1)),
            misses: misses.max(1),
        }
    }

    /// Silence after which the dispatcher is considered gone.
    pub fn silence(&self) -> Duration {
        self.interval * self.misses
    }

    /// Limit for a request the dispatcher may park for one interval.
    pub fn parked(&self) -> Duration {
        self.interval * (self.misses + 1)
    }
}

/// Shutdown progress: running tasks get until `run_deadline`, then unacknowledged results get a
/// short wait for their acks.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    run_deadline: Option<Instant>,
    ack_deadline: Option<Instant>,
}

impl Drain {
    pub fn active(&self) -> bool {
        self.run_deadline.is_some()
    }

    /// When the drain next needs attention.
    pub fn wake(&self) -> Option<Instant> {
        self.ack_deadline.or(self.run_deadline)
    }
}

/// Everything a mode loop works on.
pub(crate) struct Ctx {
    pub info: WorkerInfo,
    pub link: Link,
    pub timing: Timing,
    pub state: State,
    pub done: mpsc::UnboundedReceiver<Finished>,
    pub shutdown: Shutdown,
    pub drain: Drain,
    pub drain_timeout: Duration,
    pub status: watch::Sender<Status>,
    pub registered: bool,
}

impl Ctx {
    pub fn hello(&self) -> Header {
        Header::Hello {
            worker: self.info.clone(),
            running: self.state.running(),
        }
    }

    pub fn bye(&self) -> Header {
        Header::Bye {
            worker_id: self.info.id.clone(),
        }
    }

    /// Adopts a `welcome`'s liveness settings and logs the (re)join.
    pub fn welcomed(&mut self, dispatcher: &str, heartbeat_ms: u64, heartbeat_misses: u32) {
        self.timing = Timing::new(heartbeat_ms, heartbeat_misses);
        self.registered = true;
        let reconnect = self.link.up();
        tracing::info!(worker = %self.info.id, dispatcher = %self.link.endpoint, name = dispatcher,
            heartbeat_ms, heartbeat_misses, running = self.state.running_count(),
            unacked = self.state.outbox_len(), reconnect, "registered with dispatcher");
    }

    /// Moves `f` and every other already finished task to the outbox; returns their refs.
    pub fn finished(&mut self, f: Finished) -> Vec<TaskRef> {
        let mut refs = vec![self.state.finish(f)];
        while let Ok(f) = self.done.try_recv() {
            refs.push(self.state.finish(f));
        }
        refs
    }

    /// Starts the drain (shutdown was requested).
    pub fn begin_drain(&mut self) {
        let now = Instant::now();
        self.drain.run_deadline = Some(now + self.drain_timeout);
        tracing::info!(worker = %self.info.id, dispatcher = %self.link.endpoint,
            running = self.state.running_count(), unacked = self.state.outbox_len(),
            "stopping: no new tasks; draining running tasks");
    }

    /// Advances the drain; true once the worker may stop. `unsent` says the mode still has
    /// something to tell the dispatcher (e.g. `bye`): that gets the same short wait as acks.
    pub fn drain_done(&mut self, unsent: bool) -> bool {
        let Some(run_deadline) = self.drain.run_deadline else {
            return false;
        };
        let now = Instant::now();
        if self.state.running_count() > 0 {
            if now < run_deadline {
                return false;
            }
            let lost = self.state.abort_running();
            tracing::warn!(worker = %self.info.id, tasks = ?lost,
                "drain timeout: abandoning running tasks (the dispatcher will treat them as lost)");
        }
        if self.state.outbox_len() == 0 && !unsent {
            return true;
        }
        let ack_deadline = *self
            .drain
            .ack_deadline
            .get_or_insert(now + self.timing.silence());
        if now >= ack_deadline {
            tracing::warn!(worker = %self.info.id, unacked = self.state.outbox_len(),
                "stopping with unacknowledged results");
            return true;
        }
        false
    }

    /// Publishes the current counts to the status channel.
    pub fn publish(&self) {
        let s = Status {
            slots: self.state.slots(),
            running: self.state.running_count(),
            free: self.free(),
            unacked: self.state.outbox_len(),
            registered: self.registered,
            draining: self.drain.active(),
        };
        self.status.send_if_modified(|old| {
            let changed = *old != s;
            *old = s;
            changed
        });
    }

    /// Free slots as announced to the dispatcher (none while draining).
    pub fn free(&self) -> u32 {
        if self.drain.active() {
            0
        } else {
            u32::try_from(self.state.free()).unwrap_or(u32::MAX)
        }
    }
}

/// Sleeps until `at`, or forever when it is `None`.
pub(crate) async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
