//! A fake dispatcher for worker tests: a ZeroMQ ROUTER on 127.0.0.1 speaking docs/protocol.md
//! through `faas::protocol::{encode, decode}`.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use faas::protocol::{decode, encode, Header};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zeromq::{RouterSendHalf, RouterSocket, Socket, SocketRecv, SocketSend};

/// One message from a worker, with the envelope to answer it on.
#[derive(Debug, Clone)]
pub struct Msg {
    /// `[identity]` (DEALER) or `[identity, ""]` (REQ).
    pub envelope: Vec<Bytes>,
    pub header: Header,
    pub blobs: Vec<Bytes>,
    pub at: Instant,
}

impl Msg {
    pub fn kind(&self) -> &'static str {
        self.header.kind()
    }
}

/// Longest a fake dispatcher receives for: a test whose worker keeps talking without ever
/// sending what the test waits for fails then instead of looping until CI's time runs out.
const LIFETIME: Duration = Duration::from_secs(60);

/// The fake dispatcher.
pub struct FakeDispatcher {
    pub port: u16,
    /// Receiving ends [`LIFETIME`] after this.
    born: Instant,
    tx: Arc<Mutex<RouterSendHalf>>,
    rx: mpsc::UnboundedReceiver<Msg>,
    reader: JoinHandle<()>,
    pinger: Option<JoinHandle<()>>,
    /// Heartbeats are answered with `ping` by the reader and not passed on (see
    /// [`FakeDispatcher::serve_heartbeats`]).
    serve_heartbeats: Arc<AtomicBool>,
}

impl FakeDispatcher {
    /// Binds 127.0.0.1:`port` (0: any free port), retrying a little while a just-closed port
    /// is still busy.
    pub async fn bind(port: u16) -> Self {
        let deadline = Instant::now() + Duration::from_secs(5);
        let (socket, endpoint) = loop {
            let mut socket = RouterSocket::new();
            match socket.bind(&format!("tcp://127.0.0.1:{port}")).await {
                Ok(ep) => break (socket, ep),
                Err(e) if Instant::now() < deadline => {
                    eprintln!("bind {port}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot bind fake dispatcher on {port}: {e}"),
            }
        };
        let port = match endpoint {
            zeromq::Endpoint::Tcp(_, p) => p,
            other => panic!("unexpected endpoint {other}"),
        };
        let (tx, mut rx_half) = socket.split();
        let tx = Arc::new(Mutex::new(tx));
        let (msg_tx, rx) = mpsc::unbounded_channel();
        let serve_heartbeats = Arc::new(AtomicBool::new(false));
        let (serve, answer) = (serve_heartbeats.clone(), tx.clone());
        let reader = tokio::spawn(async move {
            while let Ok(m) = rx_half.recv().await {
                let mut frames = m.into_vec();
                let id = frames.remove(0);
                let mut envelope = vec![id];
                if frames.first().is_some_and(|f| f.is_empty()) {
                    envelope.push(frames.remove(0));
                }
                let d = decode(frames).expect("worker sent a valid message");
                if serve.load(Ordering::SeqCst) && matches!(d.header, Header::Heartbeat { .. }) {
                    send(&answer, &envelope, &Header::Ping, vec![]).await;
                    continue;
                }
                let msg = Msg {
                    envelope,
                    header: d.header,
                    blobs: d.blobs,
                    at: Instant::now(),
                };
                if msg_tx.send(msg).is_err() {
                    return;
                }
            }
        });
        FakeDispatcher {
            port,
            born: Instant::now(),
            tx,
            rx,
            reader,
            pinger: None,
            serve_heartbeats,
        }
    }

    /// Answers heartbeats with `ping` (as a dispatcher does, on the connection they came on)
    /// without passing them to the test: for pull workers, whose control socket the tests do
    /// not follow.
    pub fn serve_heartbeats(&self) {
        self.serve_heartbeats.store(true, Ordering::SeqCst);
    }

    pub fn endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The next message; panics after `limit`.
    pub async fn recv(&mut self, limit: Duration) -> Msg {
        match tokio::time::timeout(self.within(limit), self.rx.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) => panic!("fake dispatcher reader ended"),
            Err(_) => panic!("no message from the worker within {limit:?}"),
        }
    }

    /// The next message, or `None` after `limit`.
    pub async fn try_recv(&mut self, limit: Duration) -> Option<Msg> {
        tokio::time::timeout(self.within(limit), self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// `limit`, cut to what is left of the fake's [`LIFETIME`] (panics once it is over).
    fn within(&self, limit: Duration) -> Duration {
        let left = (self.born + LIFETIME).saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the test talked to its worker for over {LIFETIME:?}"
        );
        limit.min(left)
    }

    /// The next message of `kind`, skipping (and returning) others seen before it.
    pub async fn recv_kind(&mut self, kind: &str, limit: Duration) -> (Msg, Vec<Msg>) {
        let deadline = Instant::now() + limit;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = match tokio::time::timeout(self.within(left), self.rx.recv()).await {
                Ok(Some(m)) => m,
                _ => panic!("no {kind} within {limit:?}; saw {:?}", kinds(&skipped)),
            };
            if m.kind() == kind {
                return (m, skipped);
            }
            skipped.push(m);
        }
    }

    /// Answers `to` (its envelope) with `header` and `blobs`.
    pub async fn reply(&self, to: &Msg, header: Header, blobs: Vec<Bytes>) {
        send(&self.tx, &to.envelope, &header, blobs).await;
    }

    /// Sends `ping` to `to`'s peer every `every` (push mode liveness) until stopped.
    pub fn ping_every(&mut self, to: &Msg, every: Duration) {
        self.stop_pinging();
        let tx = self.tx.clone();
        let envelope = to.envelope.clone();
        self.pinger = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                send(&tx, &envelope, &Header::Ping, vec![]).await;
            }
        }));
    }

    pub fn stop_pinging(&mut self) {
        if let Some(p) = self.pinger.take() {
            p.abort();
        }
    }

    /// Closes the socket and its port (a dispatcher crash).
    pub async fn close(mut self) {
        if let Some(p) = self.pinger.take() {
            p.abort();
            let _ = p.await;
        }
        self.reader.abort();
        let _ = (&mut self.reader).await;
        // Dropping both halves stops the listener and closes the connections.
        drop(self);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for FakeDispatcher {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(p) = self.pinger.take() {
            p.abort();
        }
    }
}

async fn send(tx: &Mutex<RouterSendHalf>, envelope: &[Bytes], header: &Header, blobs: Vec<Bytes>) {
    let msg = encode(envelope, header, blobs);
    let mut tx = tx.lock().await;
    // A vanished peer is the worker's business; tests notice through what arrives.
    if let Err(e) = tx.send(msg).await {
        eprintln!("fake dispatcher: send {} failed: {e}", header.kind());
    }
}

pub fn kinds(msgs: &[Msg]) -> Vec<&'static str> {
    msgs.iter().map(Msg::kind).collect()
}
