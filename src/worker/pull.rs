//! Pull mode: two REQ sockets and a control DEALER. The fetch socket says `hello` and then sends
//! `fetch{free, results}` whenever there are free slots or results (the dispatcher parks it until
//! work comes); the report socket carries results that finish while a fetch is parked. The
//! control socket carries only `heartbeat`s and the dispatcher's answers, so liveness never waits
//! behind a large fetch, report or `tasks` answer: when the dispatcher is silent on all sockets
//! for a liveness threshold (or a request gets no answer within its generous limit), the sockets
//! are dropped and rebuilt and the worker says `hello` again.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use zeromq::{DealerSendHalf, DealerSocket, ReqSocket, SocketRecv, SocketSend, ZmqMessage};

use super::connect::send_within;
use super::session::{read_loop, sleep_opt, Ctx, Reader};
use super::WorkerError;
use crate::protocol::{decode, encode, transfer_allowance, Decoded, Header, ResultMeta, TaskRef};

type Connecting = Pin<Box<dyn Future<Output = ReqSocket> + Send>>;
type Request = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Longest wait for the answer to a `fetch` or `report`, beyond the time its own size needs on a
/// slow link: a dispatcher that is gone is noticed on the control socket; this limit catches a
/// request lost on a live connection, and bounds how long a large `tasks` answer may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// The limit of a request carrying `blobs` (a large answer, e.g. `tasks`, fits in the base).
fn request_limit(blobs: &[bytes::Bytes]) -> Duration {
    REQUEST_LIMIT + transfer_allowance(blobs.iter().map(|b| b.len() as u64).sum())
}

/// The control connection: heartbeats out, the dispatcher's answers (`ping`, `unknown`,
/// `cancel`) in.
enum Control {
    Down,
    Connecting(Pin<Box<dyn Future<Output = DealerSocket> + Send>>),
    Up { tx: DealerSendHalf, _reader: Reader },
}

impl Control {
    /// A freshly connected control socket (cancel-safe; pending unless connecting).
    async fn connected(&mut self) -> DealerSocket {
        match self {
            Control::Connecting(f) => {
                let s = f.as_mut().await;
                *self = Control::Down;
                s
            }
            _ => std::future::pending().await,
        }
    }
}

/// What a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Hello,
    Fetch,
    Report,
    Bye,
    Release,
}

/// The end of a request: the socket back (unless it must be rebuilt) and the answer.
struct Reply {
    socket: Option<ReqSocket>,
    answer: Result<Decoded, String>,
    purpose: Purpose,
}

/// One REQ socket's state.
enum Sock {
    Down,
    Connecting(Connecting),
    Idle(ReqSocket),
    Busy(Request),
}

enum Event {
    Connected(ReqSocket),
    Reply(Reply),
}

impl Sock {
    /// The next completion of a connect or request (cancel-safe; pending while idle or down).
    async fn next(&mut self) -> Event {
        let event = match self {
            Sock::Connecting(f) => Event::Connected(f.as_mut().await),
            Sock::Busy(f) => Event::Reply(f.as_mut().await),
            Sock::Down | Sock::Idle(_) => return std::future::pending().await,
        };
        *self = Sock::Down;
        event
    }

    fn is_idle(&self) -> bool {
        matches!(self, Sock::Idle(_))
    }

    /// Starts a request if the socket is idle.
    fn start(&mut self, h: &Header, blobs: Vec<bytes::Bytes>, limit: Duration, purpose: Purpose) {
        if let Sock::Idle(socket) = std::mem::replace(self, Sock::Down) {
            tracing::trace!(kind = h.kind(), "request");
            *self = Sock::Busy(Box::pin(request(
                socket,
                encode(&[], h, blobs),
                limit,
                purpose,
            )));
        }
    }
}

/// Sends `msg` and waits for the answer, all within `limit`.
async fn request(
    mut socket: ReqSocket,
    msg: ZmqMessage,
    limit: Duration,
    purpose: Purpose,
) -> Reply {
    let exchange = async {
        socket.send(msg).await.map_err(|e| e.to_string())?;
        socket.recv().await.map_err(|e| e.to_string())
    };
    let (socket, answer) = match tokio::time::timeout(limit, exchange).await {
        Ok(Ok(m)) => {
            let answer = decode(m.into_vec()).map_err(|e| format!("invalid answer: {e}"));
            (Some(socket), answer)
        }
        Ok(Err(e)) => (None, Err(e)),
        Err(_) => (None, Err(format!("no answer within {limit:?}"))),
    };
    Reply {
        socket,
        answer,
        purpose,
    }
}

/// The two sockets and what their outstanding requests carry.
struct Pull {
    fetch: Sock,
    report: Sock,
    /// Results in the outstanding fetch / report (not to be sent on the other socket).
    fetch_results: Vec<TaskRef>,
    report_results: Vec<TaskRef>,
    /// Results the dispatcher answered without acknowledging (still being stored, say): not
    /// sent again before `holdback_until`, one heartbeat interval later, so a dispatcher that
    /// answers at once is not asked again and again in a tight loop.
    holdback: Vec<TaskRef>,
    holdback_until: Option<Instant>,
    need_bye: bool,
    bye_in_flight: bool,
    /// When an idle, registered worker with nothing to say sends a liveness `fetch{free: 0}`.
    next_liveness: Instant,
    /// No `hello` before this (after a dispatcher answered `hello` with nonsense).
    hold_until: Option<Instant>,
    control: Control,
    /// Messages from the control socket (its reader task holds a clone of `control_tx`).
    control_rx: mpsc::Receiver<Decoded>,
    control_tx: mpsc::Sender<Decoded>,
    /// When the next heartbeat is due on the control socket.
    next_beat: Instant,
    /// Last time anything came from the dispatcher (an answer, or a control message).
    last_heard: Instant,
}

/// Runs pull mode until drained (Ok) or refused.
pub(crate) async fn run(ctx: &mut Ctx) -> Result<(), WorkerError> {
    let (control_tx, control_rx) = mpsc::channel(64);
    let mut p = Pull {
        fetch: Sock::Down,
        report: Sock::Down,
        fetch_results: Vec::new(),
        report_results: Vec::new(),
        holdback: Vec::new(),
        holdback_until: None,
        need_bye: false,
        bye_in_flight: false,
        next_liveness: Instant::now(),
        hold_until: None,
        control: Control::Down,
        control_rx,
        control_tx,
        next_beat: Instant::now(),
        last_heard: Instant::now(),
    };
    loop {
        if ctx.drain_done(p.need_bye || p.bye_in_flight).await {
            return Ok(());
        }
        p.pump(ctx);
        ctx.publish();
        ctx.watchdog.poll();
        let liveness = p.fetch.is_idle() && ctx.registered;
        let beat = ctx.registered && matches!(p.control, Control::Up { .. });
        let silent_at = p.last_heard + ctx.timing.silence();
        tokio::select! {
            ev = p.fetch.next() => p.on_fetch(ctx, ev)?,
            ev = p.report.next() => p.on_report(ctx, ev)?,
            s = p.control.connected() => p.control_up(s),
            Some(d) = p.control_rx.recv() => p.on_control(ctx, d).await?,
            _ = tokio::time::sleep_until(p.next_beat), if beat => p.heartbeat(ctx).await,
            _ = tokio::time::sleep_until(silent_at), if ctx.registered => {
                let reason = format!("no message from dispatcher for {:?}", ctx.timing.silence());
                p.drop_all(ctx, &reason);
            }
            Some(f) = ctx.done.recv() => { ctx.finished(f); }
            _ = ctx.shutdown.wait(), if !ctx.drain.active() => {
                ctx.begin_drain();
                p.need_bye = true;
            }
            _ = tokio::time::sleep_until(p.next_liveness), if liveness => {}
            _ = sleep_opt(p.hold_until) => p.hold_until = None,
            _ = sleep_opt(p.holdback_until) => p.release_holdback(),
            _ = sleep_opt(ctx.drain.wake()) => {}
            _ = ctx.watchdog.due() => {}
        }
    }
}

impl Pull {
    /// Starts whatever can be started now: connects, `hello`, `fetch`, `bye`, `report`.
    fn pump(&mut self, ctx: &mut Ctx) {
        let now = Instant::now();
        if matches!(self.fetch, Sock::Down) {
            ctx.registered = false;
            self.fetch = Sock::Connecting(Box::pin(ctx.link.connect::<ReqSocket>()));
        }
        if matches!(self.report, Sock::Down) {
            self.report = Sock::Connecting(Box::pin(ctx.link.connect::<ReqSocket>()));
        }
        if matches!(self.control, Control::Down) {
            self.control = Control::Connecting(Box::pin(ctx.link.connect::<DealerSocket>()));
        }
        if self.fetch.is_idle() && !ctx.registered && self.hold_until.is_none() {
            let limit = ctx.timing.silence();
            self.fetch
                .start(&ctx.hello(), vec![], limit, Purpose::Hello);
        }
        if self.fetch.is_idle() && ctx.registered {
            let (results, blobs) = self.sendable(ctx, &self.report_results);
            let free = ctx.free();
            if free > 0 || !results.is_empty() || now >= self.next_liveness {
                self.fetch_results = results.iter().map(|r| r.task).collect();
                self.next_liveness = now + ctx.timing.interval;
                tracing::trace!(free, results = results.len(), "fetch");
                let h = Header::Fetch {
                    worker_id: ctx.info.id.clone(),
                    free,
                    results,
                    running: ctx.held(),
                };
                let limit = request_limit(&blobs).max(ctx.timing.parked());
                self.fetch.start(&h, blobs, limit, Purpose::Fetch);
            }
        }
        if self.report.is_idle() && ctx.registered {
            if self.need_bye {
                self.need_bye = false;
                // Until it is answered (or fails), the drain waits for it.
                self.bye_in_flight = true;
                self.report
                    .start(&ctx.bye(), vec![], ctx.timing.interval, Purpose::Bye);
            } else if let Some(h) = ctx.release_due() {
                self.report
                    .start(&h, vec![], ctx.timing.silence(), Purpose::Release);
            } else if matches!(self.fetch, Sock::Busy(_)) {
                let (results, blobs) = self.sendable(ctx, &self.fetch_results);
                if !results.is_empty() {
                    self.report_results = results.iter().map(|r| r.task).collect();
                    let h = Header::Report {
                        worker_id: ctx.info.id.clone(),
                        results,
                    };
                    let limit = request_limit(&blobs);
                    self.report.start(&h, blobs, limit, Purpose::Report);
                }
            }
        }
    }

    fn on_fetch(&mut self, ctx: &mut Ctx, ev: Event) -> Result<(), WorkerError> {
        let reply = match ev {
            Event::Connected(s) => {
                self.fetch = Sock::Idle(s);
                ctx.registered = false;
                return Ok(());
            }
            Event::Reply(r) => r,
        };
        let carried = std::mem::take(&mut self.fetch_results);
        let Some(socket) = reply.socket else {
            self.lost(ctx, &reply.answer.err().unwrap_or_default());
            return Ok(());
        };
        self.fetch = Sock::Idle(socket);
        let d = match reply.answer {
            Ok(d) => {
                self.last_heard = Instant::now();
                d
            }
            Err(e) => {
                tracing::warn!(error = %e, "bad answer on the fetch socket ignored");
                return Ok(());
            }
        };
        match (reply.purpose, d.header) {
            (_, Header::Refused { reason }) => return Err(WorkerError::Refused(reason)),
            (p, Header::Challenge { nonce }) => challenged(ctx, &mut self.fetch, p, &nonce)?,
            (
                Purpose::Hello,
                Header::Welcome {
                    dispatcher,
                    heartbeat_ms,
                    heartbeat_misses,
                },
            ) => {
                ctx.welcomed(&dispatcher, heartbeat_ms, heartbeat_misses);
                self.next_liveness = Instant::now();
                self.next_beat = Instant::now() + ctx.timing.interval;
                if ctx.drain.active() {
                    self.need_bye = true;
                }
            }
            (Purpose::Hello, other) => {
                tracing::warn!(
                    kind = other.kind(),
                    "unexpected answer to hello; retrying later"
                );
                self.hold_until = Some(Instant::now() + ctx.timing.interval);
            }
            (_, Header::Tasks { tasks, acks }) => {
                ctx.ack(&acks);
                self.hold_back(ctx, &carried);
                ctx.state.accept(tasks, d.blobs);
            }
            (_, Header::Nothing { acks } | Header::Ack { acks }) => {
                ctx.ack(&acks);
                self.hold_back(ctx, &carried);
            }
            (_, Header::Cancel { tasks }) => ctx.cancel(&tasks),
            (_, Header::Unknown) => unknown(ctx),
            (_, other) => tracing::warn!(kind = other.kind(), "unexpected answer to fetch ignored"),
        }
        Ok(())
    }

    fn on_report(&mut self, ctx: &mut Ctx, ev: Event) -> Result<(), WorkerError> {
        let reply = match ev {
            Event::Connected(s) => {
                self.report = Sock::Idle(s);
                return Ok(());
            }
            Event::Reply(r) => r,
        };
        let carried = std::mem::take(&mut self.report_results);
        if reply.purpose == Purpose::Bye {
            self.bye_in_flight = false;
        }
        if reply.purpose == Purpose::Release
            && !matches!(reply.answer, Ok(ref d) if matches!(d.header, Header::Ack { .. }))
        {
            ctx.release_sent = false; // not acknowledged: send it again
        }
        if let Some(socket) = reply.socket {
            self.report = Sock::Idle(socket);
        }
        let d = match (reply.purpose, reply.answer) {
            (_, Ok(d)) => {
                self.last_heard = Instant::now();
                d
            }
            (Purpose::Bye, Err(e)) => {
                // Nothing needs the answer to `bye`; just make sure the socket is usable again.
                tracing::debug!(error = %e, "no usable answer to bye");
                return Ok(());
            }
            (_, Err(e)) => {
                if matches!(self.report, Sock::Down) {
                    self.lost(ctx, &e);
                } else {
                    tracing::warn!(error = %e, "bad answer on the report socket ignored");
                }
                return Ok(());
            }
        };
        match d.header {
            Header::Refused { reason } => return Err(WorkerError::Refused(reason)),
            Header::Challenge { nonce } => {
                challenged(ctx, &mut self.report, reply.purpose, &nonce)?
            }
            Header::Ack { acks } | Header::Nothing { acks } => {
                ctx.ack(&acks);
                self.hold_back(ctx, &carried);
            }
            Header::Tasks { tasks, acks } => {
                ctx.ack(&acks);
                self.hold_back(ctx, &carried);
                ctx.state.accept(tasks, d.blobs);
            }
            Header::Cancel { tasks } => ctx.cancel(&tasks),
            Header::Unknown => unknown(ctx),
            other => tracing::debug!(kind = other.kind(), "answer on the report socket ignored"),
        }
        Ok(())
    }
}

impl Pull {
    /// The control socket connected: start reading it.
    fn control_up(&mut self, socket: DealerSocket) {
        let (tx, rx) = socket.split();
        let reader = Reader(tokio::spawn(read_loop(rx, self.control_tx.clone())));
        self.control = Control::Up {
            tx,
            _reader: reader,
        };
    }

    /// A message on the control socket: a sign of life; `unknown` and `cancel` act.
    async fn on_control(&mut self, ctx: &mut Ctx, d: Decoded) -> Result<(), WorkerError> {
        self.last_heard = Instant::now();
        match d.header {
            Header::Challenge { nonce } => {
                if let Control::Up { tx, .. } = &mut self.control {
                    if let Err(e) = super::auth::answer_on(ctx, tx, &nonce).await? {
                        tracing::debug!(error = %e, "auth failed; rebuilding the control socket");
                        self.control = Control::Down;
                    }
                }
            }
            Header::Ping | Header::Ack { .. } => {}
            Header::Cancel { tasks } => ctx.cancel(&tasks),
            Header::Unknown => unknown(ctx),
            Header::Refused { reason } => return Err(WorkerError::Refused(reason)),
            other => tracing::debug!(kind = other.kind(), "message on the control socket ignored"),
        }
        Ok(())
    }

    /// Sends a heartbeat on the control socket (rebuilt if that fails).
    async fn heartbeat(&mut self, ctx: &mut Ctx) {
        self.next_beat = Instant::now() + ctx.timing.interval;
        let h = Header::Heartbeat {
            worker_id: ctx.info.id.clone(),
            free: ctx.free(),
            running: ctx.held(),
        };
        if let Control::Up { tx, .. } = &mut self.control {
            if let Err(e) = send_within(tx, encode(&[], &h, vec![]), ctx.timing.silence()).await {
                tracing::debug!(error = %e, "heartbeat failed; rebuilding the control socket");
                self.control = Control::Down;
            }
        }
    }

    /// The outbox's results one socket may send now: not those the other socket carries
    /// (`busy`), nor those held back.
    fn sendable(&self, ctx: &Ctx, busy: &[TaskRef]) -> (Vec<ResultMeta>, Vec<bytes::Bytes>) {
        let held = &self.holdback;
        ctx.state
            .results(|t| !busy.contains(t) && !held.contains(t))
    }

    /// Holds back the results of `carried` that the answer to their request did not
    /// acknowledge (see [`Pull::holdback`]).
    fn hold_back(&mut self, ctx: &Ctx, carried: &[TaskRef]) {
        let before = self.holdback.len();
        self.holdback
            .extend(carried.iter().filter(|t| ctx.state.unacked(t)));
        if self.holdback.len() > before && self.holdback_until.is_none() {
            tracing::debug!(
                results = self.holdback.len() - before,
                "results answered without an ack; sending them again in one interval"
            );
            self.holdback_until = Some(Instant::now() + ctx.timing.interval);
        }
    }

    /// Held-back results may go out again.
    fn release_holdback(&mut self) {
        self.holdback.clear();
        self.holdback_until = None;
    }

    /// The dispatcher went silent: every socket is rebuilt (requests in flight are dropped;
    /// their results stay in the outbox) and the worker says `hello` again.
    fn drop_all(&mut self, ctx: &mut Ctx, reason: &str) {
        ctx.registered = false;
        ctx.link.down(reason);
        self.fetch = Sock::Down;
        self.report = Sock::Down;
        self.control = Control::Down;
        self.fetch_results.clear();
        self.report_results.clear();
        // Everything goes out again at once after the `welcome`.
        self.release_holdback();
        // A `bye` in flight is lost with its socket; the next `welcome` asks for another.
        self.bye_in_flight = false;
        self.last_heard = Instant::now();
    }

    /// A socket failed (it is already dropped): the dispatcher is probably gone, so the other
    /// socket, if idle, is rebuilt too (it would fail on first use), and we say `hello` again.
    fn lost(&mut self, ctx: &mut Ctx, reason: &str) {
        ctx.registered = false;
        ctx.link.down(reason);
        for sock in [&mut self.fetch, &mut self.report] {
            if sock.is_idle() {
                *sock = Sock::Down;
            }
        }
    }
}

/// Answers a challenge on `sock` with `auth`, as the same request (the dispatcher answers it
/// as it would have answered the message it held back).
fn challenged(
    ctx: &Ctx,
    sock: &mut Sock,
    purpose: Purpose,
    nonce: &str,
) -> Result<(), WorkerError> {
    if let Some(h) = super::auth::answer(ctx, nonce)? {
        let limit = if purpose == Purpose::Fetch {
            ctx.timing.parked()
        } else {
            ctx.timing.silence()
        };
        sock.start(&h, vec![], limit, purpose);
    }
    Ok(())
}

fn unknown(ctx: &mut Ctx) {
    tracing::info!(worker = %ctx.info.id, dispatcher = %ctx.link.endpoint,
        "dispatcher does not know this worker; registering again");
    ctx.registered = false;
}
