//! The connection gate: what the dispatcher accepts from each ZeroMQ connection (ROUTER routing
//! identity) before the state machine sees it. Pure: no I/O; the receiver task executes its
//! [`Verdict`]s (docs/protocol.md "Authentication").
//!
//! Every connection is `fresh`, `challenged` (token mode: its first message is held back until
//! the worker proves the token for a random nonce) or `bound` to one worker id. A bound
//! connection's messages pass only when they name its worker; a message naming another worker
//! is dropped and logged. A worker id has at most one connection per role: the one that said
//! `hello` (data), the one that sent a `heartbeat` first (control), and one other (pull mode's
//! report socket); a new connection in a role replaces the old one (e.g. after a reconnect), which
//! must then start over. Without a token, the first message binds (push mode answers a fresh
//! connection whose first message is neither `hello` nor `heartbeat` with `unknown`), so binding
//! there keeps connections apart but is no authentication.
//! `hello` advertising more than `max_worker_slots` slots is refused in every mode; a capacity
//! (processes plus prefetch) above it is lowered to it.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::protocol::auth::{self, Nonce, Token};
use crate::protocol::{Decoded, Header};

/// Connections above which idle ones are forgotten.
const PRUNE_AT: usize = 1024;
/// A connection silent this long is forgotten when pruning (a live worker talks every heartbeat
/// interval; a forgotten but live connection is simply challenged/bound again).
const IDLE: Duration = Duration::from_secs(600);
/// Hard cap on tracked connections; messages from new ones are dropped beyond it.
const MAX_CONNS: usize = 65_536;
/// A challenged connection still talking without an answer this long after the challenge is
/// logged as refused (a worker may send one more message before its answer goes out).
const UNPROVEN_LOG_AFTER: Duration = Duration::from_secs(5);
/// At most one warning about refused peers per this period (the rest are counted).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What the gate is told once.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// When set, every connection must prove it holds this token.
    pub token: Option<Token>,
    /// Most slots a worker may advertise.
    pub max_slots: u32,
    /// Push mode (a worker's only connection says `hello` first).
    pub push: bool,
}

/// What to do with one inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand this message to the state machine (it may be one held back earlier).
    Pass(Decoded),
    /// Answer the connection with this header; act on nothing.
    Reply(Header),
    /// Ignore the message.
    Drop,
}

#[derive(Debug, Clone)]
enum State {
    Fresh,
    Challenged { nonce: Nonce, held: Decoded },
    Bound { worker: String },
}

#[derive(Debug)]
struct Conn {
    state: State,
    last: Instant,
    /// A refusal on this connection was logged already.
    logged: bool,
    /// When the current challenge was issued.
    challenged_at: Instant,
}

/// Rate limit for warnings about refused peers.
#[derive(Debug, Default)]
struct Limiter {
    next: Option<Instant>,
    suppressed: u64,
}

impl Limiter {
    fn warn(&mut self, now: Instant, reason: &str, worker: Option<&str>) {
        if self.next.is_some_and(|n| now < n) {
            self.suppressed += 1;
            tracing::debug!(reason, worker, "peer refused");
            return;
        }
        tracing::warn!(
            reason,
            worker,
            suppressed = self.suppressed,
            "peer refused: acting on nothing from this connection"
        );
        self.suppressed = 0;
        self.next = Some(now + LOG_EVERY);
    }
}

/// Per-connection admission (see the module docs).
pub struct Gate {
    cfg: GateConfig,
    nonces: Box<dyn FnMut() -> Option<Nonce> + Send>,
    conns: HashMap<Bytes, Conn>,
    /// The connection holding each (worker, role).
    roles: HashMap<(String, Role), Bytes>,
    log: Limiter,
}

/// What a connection is to its worker, by its first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    /// Said `hello`: the data connection (push DEALER, pull fetch socket).
    Data,
    /// Started with a `heartbeat`: the control connection.
    Control,
    /// Anything else: pull mode's report socket.
    Other,
}

impl Role {
    fn of(h: &Header) -> Role {
        match h {
            Header::Hello { .. } => Role::Data,
            Header::Heartbeat { .. } => Role::Control,
            _ => Role::Other,
        }
    }
}

/// The worker id a worker message speaks for.
fn named(h: &Header) -> Option<&str> {
    match h {
        Header::Hello { worker, .. } => Some(&worker.id),
        Header::Fetch { worker_id, .. }
        | Header::Report { worker_id, .. }
        | Header::Heartbeat { worker_id, .. }
        | Header::Bye { worker_id }
        | Header::Release { worker_id, .. }
        | Header::Auth { worker_id, .. } => Some(worker_id),
        _ => None,
    }
}

/// `msg` without result blobs: what is held back while a connection is challenged (the worker
/// keeps unacknowledged results and sends them again).
fn stripped(mut msg: Decoded) -> Decoded {
    match &mut msg.header {
        Header::Fetch { results, .. } | Header::Report { results, .. } => {
            results.clear();
            msg.blobs.clear();
        }
        _ => {}
    }
    msg
}

impl Gate {
    /// A gate drawing nonces from the operating system's CSPRNG.
    pub fn new(cfg: GateConfig) -> Self {
        Self::with_nonces(cfg, Box::new(|| auth::nonce().ok()))
    }

    /// A gate with its own nonce source (tests).
    pub fn with_nonces(cfg: GateConfig, nonces: Box<dyn FnMut() -> Option<Nonce> + Send>) -> Self {
        Gate {
            cfg,
            nonces,
            conns: HashMap::new(),
            roles: HashMap::new(),
            log: Limiter::default(),
        }
    }

    /// Decides what to do with `msg` from connection `peer` at `now`.
    pub fn inbound(&mut self, peer: &Bytes, mut msg: Decoded, now: Instant) -> Verdict {
        if !self.conns.contains_key(peer) {
            if self.conns.len() >= PRUNE_AT {
                self.prune(now);
            }
            if self.conns.len() >= MAX_CONNS {
                self.log
                    .warn(now, "too many connections", named(&msg.header));
                return Verdict::Drop;
            }
            self.conns.insert(
                peer.clone(),
                Conn {
                    state: State::Fresh,
                    last: now,
                    logged: false,
                    challenged_at: now,
                },
            );
        }
        if let Header::Hello { worker, .. } = &msg.header {
            if worker.slots > self.cfg.max_slots {
                let reason = format!(
                    "worker advertises {} slots; this dispatcher accepts at most {} (max_worker_slots)",
                    worker.slots, self.cfg.max_slots
                );
                let id = worker.id.clone();
                self.refuse(peer, now, &reason, Some(&id));
                return Verdict::Reply(Header::Refused { reason });
            }
        }
        if let Header::Hello { worker, .. } = &mut msg.header {
            if worker.capacity() > self.cfg.max_slots {
                // Prefetch is a worker's wish, not a need: it gets at most the cap.
                tracing::debug!(worker = %worker.id, capacity = worker.capacity(),
                    max = self.cfg.max_slots, "worker capacity lowered to max_worker_slots");
                worker.capacity = Some(self.cfg.max_slots);
            }
        }
        let state = match self.conns.get_mut(peer) {
            Some(c) => {
                c.last = now;
                c.state.clone()
            }
            None => return Verdict::Drop,
        };
        match state {
            State::Bound { worker } => self.bound(peer, &worker, msg, now),
            State::Challenged { nonce, held } => match msg.header {
                Header::Auth { worker_id, proof } => {
                    self.answer(peer, &nonce, held, &worker_id, &proof, now)
                }
                _ => self.unproven(peer, nonce, msg, now),
            },
            State::Fresh => self.fresh(peer, msg, now),
        }
    }

    /// A message on a connection bound to `worker`.
    fn bound(&mut self, peer: &Bytes, worker: &str, msg: Decoded, now: Instant) -> Verdict {
        match named(&msg.header) {
            Some(_) if matches!(msg.header, Header::Auth { .. }) => Verdict::Drop,
            Some(id) if id == worker => {
                if matches!(msg.header, Header::Hello { .. }) {
                    self.bind(peer, worker, Role::Data);
                }
                Verdict::Pass(msg)
            }
            // A hello for another worker starts the connection over (a proof for that worker
            // when there is a token).
            Some(_) if matches!(msg.header, Header::Hello { .. }) => self.fresh(peer, msg, now),
            Some(id) => {
                let reason = format!("message names worker {id} on a connection bound to {worker}");
                self.refuse(peer, now, &reason, Some(id));
                Verdict::Drop
            }
            // Not a worker message: the state machine logs it as unexpected.
            None => Verdict::Pass(msg),
        }
    }

    /// A message on a connection not bound (yet).
    fn fresh(&mut self, peer: &Bytes, msg: Decoded, now: Instant) -> Verdict {
        let Some(id) = named(&msg.header).map(str::to_owned) else {
            self.refuse(peer, now, "message from an unregistered connection", None);
            return Verdict::Drop;
        };
        if matches!(msg.header, Header::Auth { .. }) {
            self.refuse(peer, now, "auth without a challenge", Some(&id));
            return Verdict::Drop;
        }
        if self.cfg.token.is_some() {
            let Some(nonce) = (self.nonces)() else {
                tracing::error!("no random numbers for a challenge; message dropped");
                return Verdict::Drop;
            };
            if let Some(c) = self.conns.get_mut(peer) {
                c.state = State::Challenged {
                    nonce,
                    held: stripped(msg),
                };
                c.challenged_at = now;
            }
            return Verdict::Reply(Header::Challenge {
                nonce: auth::hex(&nonce),
            });
        }
        let role = Role::of(&msg.header);
        if role == Role::Other && self.cfg.push {
            // A push worker's data connection starts with hello: ask for it.
            return Verdict::Reply(Header::Unknown);
        }
        self.bind(peer, &id, role);
        Verdict::Pass(msg)
    }

    /// Another message on a challenged connection: it replaces the held one, under the same
    /// nonce (a worker may send, e.g., its next heartbeat before its answer arrives; a new nonce
    /// would fail that answer). A peer that never answers is logged once.
    fn unproven(&mut self, peer: &Bytes, nonce: Nonce, msg: Decoded, now: Instant) -> Verdict {
        let Some(id) = named(&msg.header).map(str::to_owned) else {
            return Verdict::Drop;
        };
        let nagging = self.conns.get_mut(peer).is_some_and(|c| {
            c.state = State::Challenged {
                nonce,
                held: stripped(msg),
            };
            let waited = now.saturating_duration_since(c.challenged_at) >= UNPROVEN_LOG_AFTER;
            waited && !c.logged
        });
        if nagging {
            self.refuse(
                peer,
                now,
                "messages without answering the challenge",
                Some(&id),
            );
        }
        Verdict::Reply(Header::Challenge {
            nonce: auth::hex(&nonce),
        })
    }

    /// An `auth` answering the challenge `nonce` that holds `held`.
    fn answer(
        &mut self,
        peer: &Bytes,
        nonce: &Nonce,
        held: Decoded,
        worker_id: &str,
        proof: &str,
        now: Instant,
    ) -> Verdict {
        let claims = named(&held.header) == Some(worker_id);
        let valid = claims
            && self
                .cfg
                .token
                .as_ref()
                .is_some_and(|t| t.verify(nonce, worker_id, proof));
        if !valid {
            if let Some(c) = self.conns.get_mut(peer) {
                c.state = State::Fresh;
            }
            let reason = if claims {
                "authentication failed: wrong token"
            } else {
                "authentication failed: auth names another worker than the challenged message"
            };
            self.refuse(peer, now, reason, Some(worker_id));
            return Verdict::Reply(Header::Refused {
                reason: reason.into(),
            });
        }
        let role = Role::of(&held.header);
        self.bind(peer, worker_id, role);
        tracing::debug!(worker = worker_id, "connection authenticated");
        Verdict::Pass(held)
    }

    /// Binds `peer` to `worker` in `role`; the connection it replaces is forgotten (its next
    /// message starts over).
    fn bind(&mut self, peer: &Bytes, worker: &str, role: Role) {
        // A connection holds one role (a data connection may have started as something else).
        self.roles
            .retain(|(w, r), p| p != peer || (w == worker && *r == role));
        if let Some(old) = self.roles.insert((worker.to_owned(), role), peer.clone()) {
            if old != *peer {
                self.conns.remove(&old);
            }
        }
        if let Some(c) = self.conns.get_mut(peer) {
            c.state = State::Bound {
                worker: worker.to_owned(),
            };
        }
    }

    /// Logs a refusal once per connection (and rate-limited overall).
    fn refuse(&mut self, peer: &Bytes, now: Instant, reason: &str, worker: Option<&str>) {
        let first = self.conns.get_mut(peer).is_some_and(|c| {
            let first = !c.logged;
            c.logged = true;
            first
        });
        if first {
            self.log.warn(now, reason, worker);
        } else {
            tracing::debug!(reason, worker, "peer refused again");
        }
    }

    /// Forgets connections idle for [`IDLE`].
    fn prune(&mut self, now: Instant) {
        self.conns
            .retain(|_, c| now.saturating_duration_since(c.last) < IDLE);
        let conns = &self.conns;
        self.roles.retain(|_, p| conns.contains_key(p));
    }

    /// The worker `peer` is bound to, if any.
    #[cfg(test)]
    fn bound_to(&self, peer: &Bytes) -> Option<&str> {
        match &self.conns.get(peer)?.state {
            State::Bound { worker } => Some(worker),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ResultMeta, TaskRef, WorkerInfo, VERSION};
    use uuid::Uuid;

    const TOKEN: &str = "test-token-0123456789";

    fn token() -> Token {
        Token::parse(std::path::Path::new("/t"), TOKEN.as_bytes()).expect("token")
    }

    fn gate(with_token: bool, push: bool) -> Gate {
        let mut n = 0u8;
        Gate::with_nonces(
            GateConfig {
                token: with_token.then(token),
                max_slots: 64,
                push,
            },
            Box::new(move || {
                n = n.wrapping_add(1);
                Some([n; 32])
            }),
        )
    }

    fn peer(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    fn msg(header: Header) -> Decoded {
        let blobs = vec![Bytes::from_static(b"r"); header.blob_count()];
        Decoded { header, blobs }
    }

    fn hello(id: &str, slots: u32) -> Decoded {
        msg(Header::Hello {
            worker: WorkerInfo {
                id: id.into(),
                slots,
                capacity: None,
                host: "h".into(),
                pid: 1,
                version: "t".into(),
                protocol: VERSION,
                runtime: Default::default(),
            },
            running: vec![],
        })
    }

    fn heartbeat(id: &str) -> Decoded {
        msg(Header::Heartbeat {
            worker_id: id.into(),
            free: 1,
            running: vec![],
        })
    }

    fn report(id: &str) -> Decoded {
        msg(Header::Report {
            worker_id: id.into(),
            results: vec![ResultMeta {
                task: TaskRef {
                    task_id: Uuid::nil(),
                    attempt: 1,
                },
                ok: true,
                cause: String::new(),
            }],
        })
    }

    fn auth(id: &str, proof: String) -> Decoded {
        msg(Header::Auth {
            worker_id: id.into(),
            proof,
        })
    }

    /// The proof for the nonce of a `Challenge` reply.
    fn prove(v: &Verdict, id: &str) -> String {
        let Verdict::Reply(Header::Challenge { nonce }) = v else {
            panic!("expected a challenge, got {v:?}");
        };
        token().prove(&auth::parse_nonce(nonce).expect("nonce"), id)
    }

    fn kind(v: &Verdict) -> String {
        match v {
            Verdict::Pass(d) => format!("pass {}", d.header.kind()),
            Verdict::Reply(h) => format!("reply {}", h.kind()),
            Verdict::Drop => "drop".into(),
        }
    }

    /// One step of a scenario: connection, message, expected verdict kind.
    type Step = (u8, Decoded, &'static str);

    fn run(g: &mut Gate, steps: Vec<Step>) {
        let now = Instant::now();
        for (i, (p, m, want)) in steps.into_iter().enumerate() {
            let v = g.inbound(&peer(p), m, now);
            assert_eq!(kind(&v), want, "step {i}");
        }
    }

    #[test]
    fn without_token_hello_binds_and_other_ids_are_dropped() {
        let cases: Vec<(&str, bool, Vec<Step>)> = vec![
            (
                "push: hello binds; own messages pass; another id dropped",
                true,
                vec![
                    (1, hello("a", 4), "pass hello"),
                    (1, heartbeat("a"), "pass heartbeat"),
                    (1, heartbeat("b"), "drop"),
                    (1, report("b"), "drop"),
                    // A hello for another worker rebinds (no token: as any new connection could).
                    (1, hello("b", 4), "pass hello"),
                    (1, heartbeat("a"), "drop"),
                    (1, heartbeat("b"), "pass heartbeat"),
                ],
            ),
            (
                "push: a fresh connection must start with hello (data) or heartbeat (control)",
                true,
                vec![
                    (1, hello("a", 4), "pass hello"),
                    (2, report("a"), "reply unknown"),
                    (3, heartbeat("a"), "pass heartbeat"),
                    (3, report("b"), "drop"),
                    (3, heartbeat("a"), "pass heartbeat"),
                    (1, report("a"), "pass report"),
                ],
            ),
            (
                "push: re-hello from a new connection rebinds; the old one starts over",
                true,
                vec![
                    (1, hello("a", 4), "pass hello"),
                    (2, hello("a", 4), "pass hello"),
                    (2, report("a"), "pass report"),
                    (1, report("a"), "reply unknown"),
                ],
            ),
            (
                "a new control connection replaces the old one; data stays",
                false,
                vec![
                    (1, hello("a", 4), "pass hello"),
                    (2, heartbeat("a"), "pass heartbeat"),
                    (3, heartbeat("a"), "pass heartbeat"),
                    (1, heartbeat("a"), "pass heartbeat"),
                    (4, report("a"), "pass report"),
                    (4, heartbeat("a"), "pass heartbeat"),
                ],
            ),
            (
                "pull: the report socket binds as secondary; it cannot speak for others",
                false,
                vec![
                    (1, hello("a", 4), "pass hello"),
                    (2, report("a"), "pass report"),
                    (2, report("b"), "drop"),
                    (1, report("b"), "drop"),
                ],
            ),
            (
                "slot cap applies without a token",
                true,
                vec![
                    (1, hello("a", 4_294_967_295), "reply refused"),
                    (1, hello("a", 65), "reply refused"),
                    (1, hello("a", 64), "pass hello"),
                ],
            ),
            (
                "auth without a token or challenge is dropped",
                false,
                vec![(1, auth("a", "00".into()), "drop")],
            ),
        ];
        for (name, push, steps) in cases {
            eprintln!("case: {name}");
            run(&mut gate(false, push), steps);
        }
    }

    #[test]
    fn with_token_nothing_passes_before_a_valid_proof() {
        for push in [true, false] {
            let mut g = gate(true, push);
            let now = Instant::now();
            let (p1, p2) = (peer(1), peer(2));
            // Every worker message of a fresh connection is answered with a challenge.
            for m in [heartbeat("a"), report("a"), hello("a", 4)] {
                let v = g.inbound(&p1, m, now);
                assert!(
                    matches!(v, Verdict::Reply(Header::Challenge { .. })),
                    "{v:?}"
                );
            }
            // Wrong proofs: refused, and the connection starts over.
            let v = g.inbound(&p1, hello("a", 4), now);
            let good = prove(&v, "a");
            let bad = Token::parse(std::path::Path::new("/t"), b"another-token-0123456")
                .expect("t")
                .prove(&[1; 32], "a");
            assert_eq!(kind(&g.inbound(&p1, auth("a", bad), now)), "reply refused");
            assert_eq!(g.bound_to(&p1), None);
            assert_eq!(kind(&g.inbound(&p1, auth("a", good.clone()), now)), "drop");
            // A proof for another connection's nonce does not work here.
            let v1 = g.inbound(&p1, hello("a", 4), now);
            let v2 = g.inbound(&p2, hello("a", 4), now);
            let for_p2 = prove(&v2, "a");
            assert_ne!(prove(&v1, "a"), for_p2);
            assert_eq!(
                kind(&g.inbound(&p1, auth("a", for_p2.clone()), now)),
                "reply refused"
            );
            // Proving another worker id than the held message's is refused.
            let v = g.inbound(&p1, hello("a", 4), now);
            let proof_b = prove(&v, "b");
            assert_eq!(
                kind(&g.inbound(&p1, auth("b", proof_b), now)),
                "reply refused"
            );
            // The right proof releases the held hello; then messages pass.
            let v = g.inbound(&p1, hello("a", 4), now);
            let ok = prove(&v, "a");
            assert_eq!(
                kind(&g.inbound(&p1, auth("a", ok.clone()), now)),
                "pass hello"
            );
            assert_eq!(g.bound_to(&p1), Some("a"));
            assert_eq!(kind(&g.inbound(&p1, heartbeat("a"), now)), "pass heartbeat");
            // Replaying a proof on the bound connection, or another id: dropped.
            assert_eq!(kind(&g.inbound(&p1, auth("a", ok), now)), "drop");
            assert_eq!(kind(&g.inbound(&p1, heartbeat("b"), now)), "drop");
            // A hello for another worker must prove that worker: challenged, held.
            assert_eq!(kind(&g.inbound(&p1, hello("b", 4), now)), "reply challenge");
            assert_eq!(g.bound_to(&p1), None);
            let v = g.inbound(&p1, hello("a", 4), now);
            let again = prove(&v, "a");
            assert_eq!(kind(&g.inbound(&p1, auth("a", again), now)), "pass hello");
            // p2 still challenged: its held hello passes with its own proof.
            assert_eq!(kind(&g.inbound(&p2, auth("a", for_p2), now)), "pass hello");
            // ... and, being a newer hello for "a", it replaced p1.
            assert_eq!(g.bound_to(&p1), None);
        }
    }

    #[test]
    fn a_message_before_the_answer_keeps_the_nonce() {
        let mut g = gate(true, false);
        let now = Instant::now();
        let p = peer(3);
        let first = g.inbound(&p, heartbeat("a"), now);
        // The next heartbeat goes out before the answer: same challenge, newest message held.
        let second = g.inbound(&p, heartbeat("a"), now + Duration::from_millis(250));
        assert_eq!(first, second);
        let proof = prove(&first, "a");
        assert_eq!(
            kind(&g.inbound(&p, auth("a", proof.clone()), now)),
            "pass heartbeat"
        );
        // The answer to the repeated challenge comes on a proven connection: dropped.
        assert_eq!(kind(&g.inbound(&p, auth("a", proof), now)), "drop");
        assert_eq!(g.bound_to(&p), Some("a"));
    }

    #[test]
    fn held_results_are_stripped_and_released_after_the_proof() {
        let mut g = gate(true, false);
        let now = Instant::now();
        let p = peer(7);
        let v = g.inbound(&p, report("a"), now);
        let proof = prove(&v, "a");
        match g.inbound(&p, auth("a", proof), now) {
            Verdict::Pass(Decoded {
                header: Header::Report { worker_id, results },
                blobs,
            }) => {
                assert_eq!(worker_id, "a");
                assert!(results.is_empty() && blobs.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // Bound as a secondary: a hello elsewhere for "a" does not unbind it.
        let q = peer(8);
        let v = g.inbound(&q, hello("a", 4), now);
        let proof = prove(&v, "a");
        assert_eq!(kind(&g.inbound(&q, auth("a", proof), now)), "pass hello");
        assert_eq!(g.bound_to(&p), Some("a"));
        assert_eq!(kind(&g.inbound(&p, report("a"), now)), "pass report");
    }

    #[test]
    fn non_worker_messages_from_fresh_connections_are_dropped() {
        for with_token in [true, false] {
            let mut g = gate(with_token, true);
            run(
                &mut g,
                vec![
                    (1, msg(Header::Ping), "drop"),
                    (1, msg(Header::Unknown), "drop"),
                ],
            );
        }
    }

    #[test]
    fn idle_connections_are_pruned() {
        let mut g = gate(false, true);
        let t0 = Instant::now();
        for i in 0..PRUNE_AT {
            let p = Bytes::from(format!("p{i}"));
            g.inbound(&p, hello(&format!("w{i}"), 1), t0);
        }
        assert_eq!(g.conns.len(), PRUNE_AT);
        let later = t0 + IDLE + Duration::from_secs(1);
        g.inbound(&peer(1), hello("fresh", 1), later);
        assert_eq!(g.conns.len(), 1);
        assert_eq!(g.roles.len(), 1);
    }

    #[test]
    fn capacity_above_max_worker_slots_is_lowered_not_refused() {
        // (slots, advertised capacity, capacity passed on)
        let cases = [
            (4, None, 4),
            (4, Some(8), 8),
            (4, Some(64), 64),
            (4, Some(65), 64),
            (64, Some(1000), 64),
            (4, Some(2), 4), // below slots: slots
        ];
        for (slots, capacity, want) in cases {
            let mut g = gate(false, true);
            let mut h = hello("a", slots);
            if let Header::Hello { worker, .. } = &mut h.header {
                worker.capacity = capacity;
            }
            let v = g.inbound(&peer(1), h, Instant::now());
            let Verdict::Pass(Decoded {
                header: Header::Hello { worker, .. },
                ..
            }) = v
            else {
                panic!("{slots}/{capacity:?}: expected the hello to pass, got {v:?}");
            };
            assert_eq!(worker.capacity(), want, "{slots}/{capacity:?}");
            assert_eq!(worker.slots, slots);
        }
    }
}
