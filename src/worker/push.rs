//! Push mode: two DEALER sockets. On the data socket the dispatcher sends `tasks` while we have
//! credit and we send `hello`, `report`s as results finish, `bye` and `release`; a writer task
//! sends them in order, so a large result never blocks the loop. The control socket carries only
//! our `heartbeat`s and the dispatcher's answers, so liveness never waits behind a bulk transfer
//! (docs/protocol.md, "Liveness and large messages"). Both sockets are rebuilt when the dispatcher
//! is silent on both for `heartbeat_ms × heartbeat_misses`.

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use zeromq::{DealerSendHalf, DealerSocket, SocketSend, ZmqMessage};

use super::connect::send_within;
use super::session::{read_loop, sleep_opt, Ctx, Reader};
use super::WorkerError;
use crate::protocol::{encode, Decoded, Header, TaskRef};

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
        let Some(sockets) = connect(ctx).await else {
            return Ok(());
        };
        match session(ctx, sockets).await? {
            End::Done => return Ok(()),
            End::Lost(reason) => {
                ctx.registered = false;
                ctx.publish();
                ctx.link.down(&reason);
            }
        }
    }
}

/// The data and control sockets of one connection.
struct Sockets {
    data: DealerSocket,
    control: DealerSocket,
}

/// Connects new DEALERs while still collecting results and watching for shutdown; `None` when
/// the drain finished before the dispatcher came back.
async fn connect(ctx: &mut Ctx) -> Option<Sockets> {
    let (data, control) = (
        ctx.link.connect::<DealerSocket>(),
        ctx.link.connect::<DealerSocket>(),
    );
    let connecting = async move {
        let data = data.await;
        Sockets {
            data,
            control: control.await,
        }
    };
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

/// Sends the data socket's messages in order, without a time limit (a large result takes as long
/// as the link needs; a dead dispatcher is noticed on the control socket). Reports the first
/// failure on `failed`.
async fn write_loop(
    mut tx: DealerSendHalf,
    mut rx: mpsc::UnboundedReceiver<ZmqMessage>,
    failed: oneshot::Sender<String>,
) {
    while let Some(m) = rx.recv().await {
        if let Err(e) = tx.send(m).await {
            let _ = failed.send(e.to_string());
            return;
        }
    }
}

/// One connection: hello → welcome, then tasks/results/heartbeats until lost or drained.
async fn session(ctx: &mut Ctx, sockets: Sockets) -> Result<End, WorkerError> {
    let (tx, rx) = sockets.data.split();
    let (mut control, control_rx) = sockets.control.split();
    let (msg_tx, mut msgs) = mpsc::channel(64);
    let _reader = Reader(tokio::spawn(read_loop(rx, msg_tx.clone())));
    // Control messages come on their own channel: a challenge there is answered there.
    let (ctl_tx, mut ctl_msgs) = mpsc::channel(16);
    let _control_reader = Reader(tokio::spawn(read_loop(control_rx, ctl_tx)));
    drop(msg_tx);
    let (data_tx, data_rx) = mpsc::unbounded_channel();
    let (failed_tx, mut failed) = oneshot::channel();
    let mut writer = Reader(tokio::spawn(write_loop(tx, data_rx, failed_tx)));
    let mut out = Out { tx: data_tx };
    if let Err(e) = out.send(ctx, &ctx.hello(), vec![]).await {
        return Ok(End::Lost(e));
    }
    let mut last_heard = Instant::now();
    let mut beat = new_beat(ctx);
    loop {
        if ctx.drain_done(false).await {
            // Like ZMQ_LINGER: give the last messages (e.g. `bye`) a moment to leave the queue.
            out.close();
            let _ = tokio::time::timeout(ctx.timing.silence(), &mut writer.0).await;
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
            Some(d) = ctl_msgs.recv() => {
                last_heard = Instant::now();
                match d.header {
                    Header::Challenge { nonce } => {
                        super::auth::answer_on(ctx, &mut control, &nonce).await?
                    }
                    _ => handle(ctx, &mut out, d).await?,
                }
            }
            Some(f) = ctx.done.recv() => {
                let new = ctx.finished(f);
                if ctx.registered { out.report(ctx, |t| new.contains(t)).await } else { Ok(()) }
            }
            _ = beat.tick(), if ctx.registered => {
                let h = Header::Heartbeat {
                    worker_id: ctx.info.id.clone(),
                    free: ctx.free(),
                    running: ctx.held(),
                };
                send_within(&mut control, encode(&[], &h, vec![]), ctx.timing.silence()).await
            }
            r = &mut failed => Err(r.unwrap_or_else(|_| "data writer stopped".into())),
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

/// The data socket's queue (its writer task sends in order).
struct Out {
    tx: mpsc::UnboundedSender<ZmqMessage>,
}

impl Out {
    async fn send(&mut self, _ctx: &Ctx, h: &Header, blobs: Vec<Bytes>) -> Result<(), String> {
        self.tx
            .send(encode(&[], h, blobs))
            .map_err(|_| "data writer stopped".to_string())
    }

    /// No more messages: the writer ends once the queue is sent (later sends fail).
    fn close(&mut self) {
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, closed));
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
    out: &mut Out,
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
        Header::Cancel { tasks } => {
            ctx.cancel(&tasks);
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
