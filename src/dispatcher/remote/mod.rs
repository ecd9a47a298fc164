//! Pull and push modes: the dispatcher serves ZeroMQ workers (protocol in docs/protocol.md).
//!
//! One task owns all state ([`state::Remote`]) and reacts to events: messages from workers (a
//! receiver task), queue entries (the [`feeder`]), and the results of Redis work done in the
//! background ([`effects`]). Sends go through per-peer writers ([`outbound`]), so nothing the
//! network does can stall the loop.
//!
//! systemd: `READY=1` once the ROUTER is bound; the loop pings the watchdog while the feeder's
//! [`Pulse`] shows signs of life (so a wedged loop or a stuck queue reader stops the pings, see
//! [`crate::dispatcher::pulse`]) and refreshes `STATUS=` from [`state::Remote::summary`] and the
//! Redis health. On SIGTERM the loop stops assigning, answers parked fetches and waits up to
//! `drain` for running results; tasks still running then stay with their workers, which report
//! them to the next dispatcher.

mod effects;
mod feeder;
mod gate;
mod outbound;
mod registry;
mod state;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;
use zeromq::{RouterSocket, Socket, SocketRecv};

use super::core::{Core, Prepared};
use super::presence::Presence;
use super::pulse::Pulse;
use super::DispatchError;
use crate::config::DispatcherConfig;
use crate::notify::{StatusLine, Watchdog};
use crate::protocol::{decode, guard, Decoded, TaskRef};
use crate::shutdown::Shutdown;
use crate::store::{QueueEntry, QueueReader};

pub use state::Timing;

/// Everything the loop reacts to.
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
}

/// Runs the pull or push loop until `shutdown`, then waits up to `drain` for running tasks.
pub async fn run(
    core: Arc<Core>,
    cfg: &DispatcherConfig,
    reader: QueueReader,
    mut shutdown: Shutdown,
    drain: Duration,
) -> Result<(), DispatchError> {
    let endpoint = format!("tcp://{}:{}", cfg.bind, cfg.port);
    let mut socket = RouterSocket::new();
    // Workers reach the socket only through the transport guard (docs/protocol.md).
    let limits = guard::Limits::from_max_message_bytes(cfg.max_message().get());
    let _front = guard::front(&cfg.bind, cfg.port, &mut socket, limits)
        .await
        .map_err(|e| DispatchError::Bind {
            endpoint: endpoint.clone(),
            message: e.to_string(),
        })?;
    let (send, recv) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Event>(4096);
    let gate = gate::Gate::new(gate::GateConfig {
        token: cfg.token()?,
        max_slots: cfg.max_worker_slots,
        push: cfg.mode == crate::config::Mode::Push,
    });
    let gate_out = outbound::Outbound::new(send.clone());
    let receiver = tokio::spawn(receive(recv, tx.clone(), gate, gate_out));

    let (demand_tx, demand_rx) = watch::channel(0usize);
    let in_flight = feeder::InFlight::default();
    let pulse = Arc::new(Pulse::default());
    let (feeder_stop, feeder_shutdown) = crate::shutdown::channel();
    let feeder = tokio::spawn(feeder::run(
        core.clone(),
        reader,
        demand_rx,
        tx.clone(),
        in_flight.clone(),
        pulse.clone(),
        feeder_shutdown,
    ));
    let timing = Timing {
        interval: Duration::from_millis(cfg.heartbeat_interval_ms.max(10)),
        misses: cfg.heartbeat_misses.max(1),
        deadline: (cfg.task_deadline_secs > 0.0)
            .then(|| Duration::from_secs_f64(cfg.task_deadline_secs)),
    };
    let health_of = core.clone();
    let mut presence = Presence::offered(core.store.clone(), core.name.clone(), cfg.mode.as_str());
    let mut state = state::Remote::new(
        core,
        cfg.mode,
        timing,
        outbound::Outbound::new(send),
        tx,
        demand_tx,
        in_flight,
    );
    let mut tick = tokio::time::interval(timing.interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mode = cfg.mode.as_str();
    let mut wd = Watchdog::from_env();
    let status = StatusLine::spawn();
    tracing::info!(mode, %endpoint, "dispatcher ready");
    crate::notify::ready();
    loop {
        let alive = pulse.alive();
        if alive {
            wd.poll();
        }
        status.set_with(|| {
            let health = health_of.store.health();
            let redis = if health.is_down() {
                format!(", {}", health.summary())
            } else {
                String::new()
            };
            format!("{mode}: {}{redis}{}", state.summary(), pulse.status_note())
        });
        presence.offer(|| state.presence());
        tokio::select! {
            _ = shutdown.wait() => break,
            Some(ev) = rx.recv() => state.handle(ev),
            _ = tick.tick() => state.tick(),
            _ = wd.due(), if alive => {}
        }
    }
    feeder_stop.trigger();
    state.start_drain();
    tracing::info!(
        running = state.busy(),
        "draining: waiting for running tasks to report"
    );
    let until = tokio::time::Instant::now() + drain;
    while state.busy() > 0 {
        wd.poll();
        status.set_with(|| format!("stopping: waiting for {} running tasks", state.busy()));
        tokio::select! {
            Some(ev) = rx.recv() => state.handle(ev),
            _ = tick.tick() => state.tick(),
            _ = wd.due() => {}
            _ = tokio::time::sleep_until(until) => {
                tracing::warn!(left = state.busy(), "drain timeout: running tasks stay with their workers, which report them to the next dispatcher");
                break;
            }
        }
    }
    tracing::info!("{}", state.summary());
    receiver.abort();
    let _ = feeder.await;
    Ok(())
}

/// Receives worker messages and forwards those the [`gate::Gate`] lets through to the loop.
async fn receive(
    mut recv: zeromq::RouterRecvHalf,
    tx: mpsc::Sender<Event>,
    mut gate: gate::Gate,
    mut out: outbound::Outbound,
) {
    loop {
        let frames = match recv.recv().await {
            Ok(m) => m.into_vec(),
            Err(e) => {
                tracing::warn!(error = %e, "receiving from workers failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let cut = if frames.get(1).is_some_and(|f| f.is_empty()) {
            2
        } else {
            1
        };
        if frames.len() <= cut {
            tracing::warn!("message without a body from a worker; ignored");
            continue;
        }
        let mut frames = frames;
        let body = frames.split_off(cut);
        let decoded = decode(body).map(|msg| gate.inbound(&frames[0], msg, Instant::now()));
        match decoded {
            Ok(gate::Verdict::Drop) => {}
            Ok(gate::Verdict::Reply(h)) => out.send(&frames, &h, Vec::new()),
            Ok(gate::Verdict::Pass(msg)) => {
                if tx
                    .send(Event::Inbound {
                        envelope: frames,
                        msg,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "invalid message from a worker; ignored"),
        }
    }
}
