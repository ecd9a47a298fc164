//! Pull and push modes: the dispatcher serves ZeroMQ workers (protocol in docs/protocol.md).
//!
//! The logic is a pure state machine ([`state::Remote`]: `handle(now, event) -> actions`, no
//! I/O). This loop feeds it events — messages from workers (a receiver task), queue entries and
//! recovered orphans (the [`feeder`]), the completions of Redis work, ticks — and performs the
//! actions it returns ([`effects`]): Redis work runs in background tasks that report back as
//! events, sends go through per-peer writers ([`outbound`]), so nothing the network does can
//! stall the loop.
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

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use zeromq::{RouterSocket, Socket, SocketRecv};

use super::core::Core;
use super::presence::Presence;
use super::pulse::Pulse;
use super::DispatchError;
use crate::config::{DispatcherConfig, Mode};
use crate::dispatcher::runs::InFlight;
use crate::notify::{StatusLine, Watchdog};
use crate::protocol::{decode, guard};
use crate::shutdown::Shutdown;
use crate::store::QueueReader;

pub use state::{Action, Event, Remote, Timing};

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
    let in_flight = InFlight::default();
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
        orphan_grace: Duration::from_secs_f64(cfg.orphan_grace_secs.max(0.0)),
    };
    let cancelled = super::cancels::Recent::default();
    let _cancels = super::cancels::follow(
        core.clone(),
        in_flight.clone(),
        StopOnWorker {
            events: tx.clone(),
            recent: cancelled.clone(),
        },
    );
    let health_of = core.clone();
    let mut presence = Presence::offered(core.store.clone(), core.name.clone(), cfg.mode.as_str());
    let mut state = Remote::new(cfg.mode == Mode::Pull, core.name.clone(), timing);
    let mut fx = effects::Effects {
        core,
        out: outbound::Outbound::new(send),
        events: tx,
        demand: demand_tx,
        in_flight,
        cancelled,
        releases: Vec::new(),
    };
    let mut step = |state: &mut Remote, ev: Event| {
        let actions = state.handle(std::time::Instant::now(), ev);
        fx.perform(actions);
    };
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
            Some(ev) = rx.recv() => step(&mut state, ev),
            _ = tick.tick() => step(&mut state, Event::Tick),
            _ = wd.due(), if alive => {}
        }
    }
    feeder_stop.trigger();
    step(&mut state, Event::Drain);
    tracing::info!(
        running = state.busy(),
        "draining: waiting for running tasks to report"
    );
    let until = tokio::time::Instant::now() + drain;
    while state.busy() > 0 {
        wd.poll();
        status.set_with(|| format!("stopping: waiting for {} running tasks", state.busy()));
        tokio::select! {
            Some(ev) = rx.recv() => step(&mut state, ev),
            _ = tick.tick() => step(&mut state, Event::Tick),
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
    // Entries of a read that was on its way when the feeder stopped go back to the queue too.
    while let Ok(ev) = rx.try_recv() {
        if let Event::Entries(_) = ev {
            step(&mut state, ev);
        }
    }
    fx.finish().await;
    Ok(())
}

/// Remote modes stop a cancelled run by telling its worker (`Event::Cancel`: the state machine
/// sends `cancel` to the worker holding it and settles the run).
struct StopOnWorker {
    events: mpsc::Sender<Event>,
    recent: super::cancels::Recent,
}

impl super::cancels::Stop for StopOnWorker {
    fn stop(&self, task_id: uuid::Uuid) {
        // Remembered first, for a claim still on its way to the loop (see effects.rs).
        self.recent.note(task_id);
        if self.events.try_send(Event::Cancel { task_id }).is_err() {
            tracing::warn!(%task_id, "event queue full or closed: the cancelled run is not stopped (its result will be refused as stale)");
        }
    }
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
