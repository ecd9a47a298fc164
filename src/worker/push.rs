//! Push mode: one DEALER socket; the dispatcher sends `tasks` while we have credit, we send
//! `report`s as results finish and `heartbeat`s every interval, and rebuild the socket when the
//! dispatcher is silent for `heartbeat_ms × heartbeat_misses`.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use zeromq::{DealerRecvHalf, DealerSendHalf, DealerSocket, SocketRecv};

use super::connect::send_within;
use super::session::{sleep_opt, Ctx};
use super::WorkerError;
use crate::protocol::{decode, encode, Decoded, Header, TaskRef};

/// Pause before dropping the socket at the end, so queued messages are written.
const LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// How a connection ended.
enum End {
    /// Drained: the worker may stop.
    Done,
    /// Connection lost or dispatcher silent: rebuild the socket.
    Lost(String),
}

/// Runs push mode until drained (Ok) or refused.
pub(crate) async fn run(ctx: &mut Ctx) -> Result<(), WorkerError> {
    loop {
        let Some(socket) = connect(ctx).await else {
            return Ok(());
        };
        match session(ctx, socket).await? {
            End::Done => return Ok(()),
            End::Lost(reason) => {
                ctx.registered = false;
                ctx.publish();
                ctx.link.down(&reason);
            }
        }
    }
}

/// Connects a new DEALER while still collecting results and watching for shutdown; `None` when
/// the drain finished before the dispatcher came back.
async fn connect(ctx: &mut Ctx) -> Option<DealerSocket> {
    let connecting = ctx.link.connect::<DealerSocket>();
    tokio::pin!(connecting);
    loop {
        if ctx.drain_done(false).await {
            return None;
        }
        ctx.publish();
        ctx.watchdog.poll();
        tokio::select! {
            s = &mut connecting => return Some(s),
            _ = ctx.watchdog.due() => {}
            Some(f) = ctx.done.recv() => { ctx.finished(f); }
            _ = ctx.shutdown.wait(), if !ctx.drain.active() => ctx.begin_drain(),
            _ = sleep_opt(ctx.drain.wake()) => {}
        }
    }
}

/// Aborts the reader task when the connection ends.
struct Reader(tokio::task::JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Forwards decoded messages; ends (closing `out`) when the socket fails.
async fn read_loop(mut rx: DealerRecvHalf, out: mpsc::Sender<Decoded>) {
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

/// One connection: hello → welcome, then tasks/results/heartbeats until lost or drained.
async fn session(ctx: &mut Ctx, socket: DealerSocket) -> Result<End, WorkerError> {
    let (mut tx, rx) = socket.split();
    let (msg_tx, mut msgs) = mpsc::channel(64);
    let _reader = Reader(tokio::spawn(read_loop(rx, msg_tx)));
    let mut out = Out { tx: &mut tx };
    if let Err(e) = out.send(ctx, &ctx.hello(), vec![]).await {
        return Ok(End::Lost(e));
    }
    let mut last_heard = Instant::now();
    let mut beat = new_beat(ctx);
    loop {
        if ctx.drain_done(false).await {
            // Like ZMQ_LINGER: give the last messages (e.g. `bye`) a moment to leave the queue.
            tokio::time::sleep(LINGER).await;
            return Ok(End::Done);
        }
        ctx.publish();
        ctx.watchdog.poll();
        if let Some(h) = ctx.release_due() {
            if let Err(e) = out.send(ctx, &h, vec![]).await {
                return Ok(End::Lost(e));
            }
        }
        let result = tokio::select! {
            m = msgs.recv() => match m {
                None => Err("connection closed".to_string()),
                Some(d) => {
                    last_heard = Instant::now();
                    let was = ctx.timing;
                    let r = handle(ctx, &mut out, d).await?;
                    if ctx.timing != was {
                        beat = new_beat(ctx);
                    }
                    r
                }
            },
            Some(f) = ctx.done.recv() => {
                let new = ctx.finished(f);
                if ctx.registered { out.report(ctx, |t| new.contains(t)).await } else { Ok(()) }
            }
            _ = beat.tick(), if ctx.registered => {
                let h = Header::Heartbeat {
                    worker_id: ctx.info.id.clone(),
                    free: ctx.free(),
                    running: ctx.state.running(),
                };
                out.send(ctx, &h, vec![]).await
            }
            _ = tokio::time::sleep_until(last_heard + ctx.timing.silence()) => {
                Err(format!("no message from dispatcher for {:?}", ctx.timing.silence()))
            }
            _ = ctx.shutdown.wait(), if !ctx.drain.active() => {
                ctx.begin_drain();
                if ctx.registered { out.send(ctx, &ctx.bye(), vec![]).await } else { Ok(()) }
            }
            _ = sleep_opt(ctx.drain.wake()) => Ok(()),
            _ = ctx.watchdog.due() => Ok(()),
        };
        if let Err(reason) = result {
            return Ok(End::Lost(reason));
        }
    }
}

fn new_beat(ctx: &Ctx) -> tokio::time::Interval {
    let period = ctx.timing.interval;
    let mut beat = tokio::time::interval_at(Instant::now() + period, period);
    beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    beat
}

/// The sending half with the worker's send rules.
struct Out<'a> {
    tx: &'a mut DealerSendHalf,
}

impl Out<'_> {
    async fn send(&mut self, ctx: &Ctx, h: &Header, blobs: Vec<Bytes>) -> Result<(), String> {
        send_within(self.tx, encode(&[], h, blobs), ctx.timing.silence()).await
    }

    /// Reports the outbox results selected by `keep` (nothing when there are none).
    async fn report(&mut self, ctx: &Ctx, keep: impl Fn(&TaskRef) -> bool) -> Result<(), String> {
        let (results, blobs) = ctx.state.results(keep);
        if results.is_empty() {
            return Ok(());
        }
        tracing::debug!(results = results.len(), "reporting results");
        let h = Header::Report {
            worker_id: ctx.info.id.clone(),
            results,
        };
        self.send(ctx, &h, blobs).await
    }
}

/// Handles one message from the dispatcher; Err(reason) means the connection must be rebuilt.
async fn handle(
    ctx: &mut Ctx,
    out: &mut Out<'_>,
    d: Decoded,
) -> Result<Result<(), String>, WorkerError> {
    Ok(match d.header {
        Header::Welcome {
            dispatcher,
            heartbeat_ms,
            heartbeat_misses,
        } => {
            ctx.welcomed(&dispatcher, heartbeat_ms, heartbeat_misses);
            let mut r = out.report(ctx, |_| true).await;
            if r.is_ok() && ctx.drain.active() {
                r = out.send(ctx, &ctx.bye(), vec![]).await;
            }
            r
        }
        Header::Refused { reason } => return Err(WorkerError::Refused(reason)),
        Header::Challenge { nonce } => match super::auth::answer(ctx, &nonce)? {
            Some(h) => out.send(ctx, &h, vec![]).await,
            None => Ok(()),
        },
        Header::Tasks { tasks, acks } => {
            ctx.ack(&acks);
            if ctx.drain.active() && !tasks.is_empty() {
                tracing::info!(tasks = tasks.len(), "tasks arrived after bye; running them");
            }
            let acc = ctx.state.accept(tasks, d.blobs);
            if acc.outbox_duplicates > 0 {
                out.report(ctx, |_| true).await
            } else {
                Ok(())
            }
        }
        Header::Ack { acks } | Header::Nothing { acks } => {
            ctx.ack(&acks);
            Ok(())
        }
        Header::Ping => Ok(()),
        Header::Unknown => {
            tracing::info!(worker = %ctx.info.id, dispatcher = %ctx.link.endpoint,
                "dispatcher does not know this worker; registering again");
            ctx.registered = false;
            out.send(ctx, &ctx.hello(), vec![]).await
        }
        other => {
            tracing::warn!(
                kind = other.kind(),
                "unexpected message from dispatcher ignored"
            );
            Ok(())
        }
    })
}
