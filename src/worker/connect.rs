//! Reaching the dispatcher: endpoint check, bounded connect attempts with backoff (one info line
//! per outage, not per attempt), and sends that can never block a loop forever.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use zeromq::{Endpoint, Socket, SocketOptions, SocketSend, ZmqMessage};

use super::WorkerError;
use crate::protocol::guard::{self, Limits};

/// Longest single connect attempt (zmq.rs retries refused connections inside it).
const ATTEMPT: Duration = Duration::from_secs(2);
/// Pause after a failed attempt, doubling up to [`MAX_BACKOFF`] (a dispatcher back from a restart
/// is found within a second).
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The dispatcher endpoint plus whether we are currently in an outage (for log lines).
#[derive(Clone, Debug)]
pub(crate) struct Link {
    pub endpoint: String,
    pub worker_id: String,
    /// What the transport guard accepts from the dispatcher.
    limits: Limits,
    outage: Arc<AtomicBool>,
}

impl Link {
    /// Checks that `endpoint` is a valid ZeroMQ endpoint.
    pub fn new(endpoint: &str, worker_id: &str, limits: Limits) -> Result<Self, WorkerError> {
        endpoint
            .parse::<Endpoint>()
            .map_err(|e| WorkerError::Endpoint {
                endpoint: endpoint.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Link {
            endpoint: endpoint.to_owned(),
            worker_id: worker_id.to_owned(),
            limits,
            outage: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Records that the dispatcher is unreachable; logs only the first time per outage.
    pub fn down(&self, reason: &str) {
        if !self.outage.swap(true, Ordering::SeqCst) {
            tracing::info!(worker = %self.worker_id, dispatcher = %self.endpoint, reason,
                "dispatcher unreachable; reconnecting");
        } else {
            tracing::debug!(worker = %self.worker_id, dispatcher = %self.endpoint, reason,
                "dispatcher still unreachable");
        }
    }

    /// Records a successful registration; true if it ended an outage.
    pub fn up(&self) -> bool {
        self.outage.swap(false, Ordering::SeqCst)
    }

    /// A fresh socket connected to the dispatcher; retries with backoff until it succeeds
    /// (callers select on it together with their other events).
    pub fn connect<S: Socket + 'static>(&self) -> impl Future<Output = S> + Send + 'static {
        let link = self.clone();
        async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                let mut opts = SocketOptions::default();
                opts.no_connect_timeout();
                let mut socket = S::with_options(opts);
                let connecting = guard::connect(&mut socket, &link.endpoint, link.limits);
                match tokio::time::timeout(ATTEMPT, connecting).await {
                    Ok(Ok(())) => return socket,
                    Ok(Err(e)) => link.down(&e),
                    Err(_) => link.down("connect timed out"),
                }
                drop(socket);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Sends `msg`, giving up after `limit` (a full peer queue must not stall the worker).
pub(crate) async fn send_within<S: SocketSend>(
    socket: &mut S,
    msg: ZmqMessage,
    limit: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(limit, socket.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("send timed out".into()),
    }
}
