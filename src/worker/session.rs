//! State shared by both modes: liveness timing, the drain on shutdown, and the worker context
//! (running tasks, outbox, link, status) each mode loop works on.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::connect::Link;
use super::state::{Finished, State};
use super::Status;
use crate::notify::Watchdog;
use crate::protocol::{decode, Decoded, Header, TaskRef, WorkerInfo};
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
    /// The token proven when the dispatcher sends a challenge (`token_file`).
    pub token: Option<crate::protocol::auth::Token>,
    pub done: mpsc::UnboundedReceiver<Finished>,
    pub shutdown: Shutdown,
    pub drain: Drain,
    pub drain_timeout: Duration,
    pub status: watch::Sender<Status>,
    pub registered: bool,
    /// Runs killed at the drain deadline, to hand back with `release` until acknowledged.
    pub release: Vec<TaskRef>,
    /// `release` was sent on the current registration (sent again after the next `welcome`).
    pub release_sent: bool,
    /// systemd watchdog, pinged by the mode loop (see [`crate::notify`]).
    pub watchdog: Watchdog,
}

impl Ctx {
    pub fn hello(&self) -> Header {
        Header::Hello {
            worker: self.info.clone(),
            running: self.held(),
        }
    }

    pub fn bye(&self) -> Header {
        Header::Bye {
            worker_id: self.info.id.clone(),
        }
    }

    /// The `release` message to send now, if runs wait to be handed back on this registration.
    pub fn release_due(&mut self) -> Option<Header> {
        if !self.registered || self.release_sent || self.release.is_empty() {
            return None;
        }
        self.release_sent = true;
        Some(Header::Release {
            worker_id: self.info.id.clone(),
            tasks: self.release.clone(),
        })
    }

    /// Applies acknowledgements: settled results leave the outbox, handed-back runs are done.
    pub fn ack(&mut self, acks: &[TaskRef]) {
        self.state.ack(acks);
        self.release.retain(|t| !acks.contains(t));
    }

    /// Adopts a `welcome`'s liveness settings and logs the (re)join.
    pub fn welcomed(&mut self, dispatcher: &str, heartbeat_ms: u64, heartbeat_misses: u32) {
        self.timing = Timing::new(heartbeat_ms, heartbeat_misses);
        self.registered = true;
        self.release_sent = false;
        let reconnect = self.link.up();
        tracing::info!(worker = %self.info.id, dispatcher = %self.link.endpoint, name = dispatcher,
            heartbeat_ms, heartbeat_misses, running = self.state.running_count(),
            unacked = self.state.outbox_len(), reconnect, "registered with dispatcher");
    }

    /// The runs listed to the dispatcher: running, finished but unacknowledged, and killed at
    /// the drain deadline but not handed back yet (else the dispatcher would count them lost).
    pub fn held(&self) -> Vec<TaskRef> {
        let mut v = self.state.held();
        v.extend(
            self.release
                .iter()
                .filter(|t| !v.contains(t))
                .copied()
                .collect::<Vec<_>>(),
        );
        v
    }

    /// `cancel` from the dispatcher: kill and forget these runs.
    pub fn cancel(&mut self, tasks: &[TaskRef]) {
        let n = self.state.cancel(tasks);
        self.release.retain(|t| !tasks.contains(t));
        tracing::debug!(worker = %self.info.id, asked = tasks.len(), held = n, "cancel applied");
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
    /// At the drain deadline, runs still going are killed (the executors are stopped) and queued
    /// for `release`, which hands them back to the dispatcher.
    pub async fn drain_done(&mut self, unsent: bool) -> bool {
        let Some(run_deadline) = self.drain.run_deadline else {
            return false;
        };
        let now = Instant::now();
        if self.state.running_count() > 0 {
            if now < run_deadline {
                return false;
            }
            let killed = self.state.abort_running();
            // Kill the processes before anyone else may run these tasks again.
            self.state.pool().shutdown().await;
            for t in &killed {
                tracing::warn!(worker = %self.info.id, task_id = %t.task_id, attempt = t.attempt,
                    "drain timeout: task killed; handing it back to the dispatcher");
            }
            self.release.extend(killed);
        }
        if self.state.outbox_len() == 0 && self.release.is_empty() && !unsent {
            return true;
        }
        let ack_deadline = *self
            .drain
            .ack_deadline
            .get_or_insert(now + self.timing.silence());
        if now >= ack_deadline {
            tracing::warn!(worker = %self.info.id, unacked = self.state.outbox_len(),
                handed_back_unacked = self.release.len(),
                "stopping with unacknowledged results (the dispatcher handles those runs as lost)");
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

/// Aborts a reader or writer task when the connection ends.
pub(crate) struct Reader(pub tokio::task::JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Forwards decoded messages from a DEALER; ends (closing `out`) when the socket fails.
pub(crate) async fn read_loop(mut rx: zeromq::DealerRecvHalf, out: mpsc::Sender<Decoded>) {
    use zeromq::SocketRecv;
    loop {
        match rx.recv().await {
            Ok(m) => match decode(m.into_vec()) {
                Ok(d) => {
                    if out.send(d).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "invalid message from dispatcher ignored"),
            },
            Err(e) => {
                tracing::debug!(error = %e, "dispatcher connection closed");
                return;
            }
        }
    }
}
