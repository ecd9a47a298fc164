//! Sending to workers without ever blocking the dispatcher loop: one ordered writer per peer.
//!
//! zmq.rs sends wait when a peer's queue is full (a hung worker). Each peer gets a bounded
//! channel and a writer task that sends with a timeout; the loop only `try_send`s. Writers exit
//! after a minute without traffic (pull workers get new identities when they rebuild sockets).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use zeromq::{RouterSendHalf, SocketSend, ZmqMessage};

use crate::protocol::{encode, transfer_allowance, Header};

const QUEUE_PER_PEER: usize = 1024;
/// A send may take this plus its size at the slowest link's rate
/// ([`transfer_allowance`]) before the peer counts as hung.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
const WRITER_IDLE: Duration = Duration::from_secs(60);

/// The dispatcher's sending side.
pub struct Outbound {
    send: RouterSendHalf,
    writers: HashMap<Bytes, mpsc::Sender<(ZmqMessage, Duration)>>,
}

impl Outbound {
    pub fn new(send: RouterSendHalf) -> Self {
        Outbound {
            send,
            writers: HashMap::new(),
        }
    }

    /// Queues `header` + `blobs` for the peer addressed by `envelope` (identity first).
    pub fn send(&mut self, envelope: &[Bytes], header: &Header, blobs: Vec<Bytes>) {
        let Some(peer) = envelope.first().cloned() else {
            return;
        };
        let bytes: u64 = blobs.iter().map(|b| b.len() as u64).sum();
        let limit = SEND_TIMEOUT + transfer_allowance(bytes);
        let mut msg = (encode(envelope, header, blobs), limit);
        for _ in 0..2 {
            let tx = self
                .writers
                .entry(peer.clone())
                .or_insert_with(|| spawn_writer(self.send.clone()));
            match tx.try_send(msg) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(kind = header.kind(), "peer is not reading; message dropped");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(m)) => {
                    // The idle writer exited: start a new one and try once more.
                    self.writers.remove(&peer);
                    msg = m;
                }
            }
        }
    }
}

fn spawn_writer(mut send: RouterSendHalf) -> mpsc::Sender<(ZmqMessage, Duration)> {
    let (tx, mut rx) = mpsc::channel::<(ZmqMessage, Duration)>(QUEUE_PER_PEER);
    tokio::spawn(async move {
        while let Ok(Some((msg, limit))) = tokio::time::timeout(WRITER_IDLE, rx.recv()).await {
            match tokio::time::timeout(limit, send.send(msg)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "send to worker failed (peer gone?)"),
                Err(_) => tracing::warn!("send to worker timed out (peer hung?)"),
            }
        }
    });
    tx
}
