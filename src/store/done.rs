//! Following the done channel: one pub/sub connection that reports every task that settles.
//!
//! The scripts that move a task to COMPLETED or FAILED publish its id on [`keys::DONE_CHANNEL`]
//! in the same atomic step. [`follow`] keeps one subscription alive for a process (the
//! gateway's long-polls fan out from it): it reconnects by itself with bounded back-off after
//! the connection is killed, Redis restarts or stops answering pings, and reports
//! [`DoneEvent::Subscribed`] after every (re)subscription, because whatever was published while
//! it was away is gone: listeners must then re-read the state of what they wait for.
//!
//! [`connect`] is the one place that obtains the connection (plug other discovery, such as
//! Sentinel, in there).

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSub;
use uuid::Uuid;

use super::{keys, StoreError};

/// First pause after a failed connection; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often an idle subscription is pinged, and how long the answer may take: a connection
/// that went silent (half-open TCP, a frozen Redis) is replaced within about their sum.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_WAIT: Duration = Duration::from_secs(2);
/// Longest wait for a connection plus subscription.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// What the subscription reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneEvent {
    /// Subscribed (first time or after a reconnect): anything may have settled meanwhile.
    Subscribed,
    /// This task reached COMPLETED or FAILED.
    Done(Uuid),
}

/// Opens a pub/sub connection subscribed to the done channel.
pub async fn connect(client: &redis::Client) -> Result<PubSub, StoreError> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(keys::DONE_CHANNEL).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(CONNECT_WAIT, attempt).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(StoreError::Corrupt(format!(
            "no pub/sub connection within {CONNECT_WAIT:?}"
        ))),
    }
}

/// Who hears about settled tasks.
pub trait DoneListener: Send + Sync + 'static {
    fn on_event(&self, event: DoneEvent);
}

/// Follows the done channel, passing every event to `listener`, until the listener is dropped.
/// Never returns on its own otherwise: connection failures are retried.
pub async fn follow<L: DoneListener>(client: redis::Client, listener: Weak<L>) {
    let on_event = |ev: DoneEvent| match listener.upgrade() {
        Some(l) => {
            l.on_event(ev);
            true
        }
        None => false,
    };
    let alive = || listener.strong_count() > 0;
    let mut backoff = MIN_BACKOFF;
    let mut outage = false;
    while alive() {
        let pubsub = match connect(&client).await {
            Ok(p) => p,
            Err(e) => {
                if !outage {
                    tracing::warn!(error = %e, "done channel: cannot subscribe; retrying");
                    outage = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if outage {
            tracing::info!("done channel: subscribed again");
        }
        backoff = MIN_BACKOFF;
        if !on_event(DoneEvent::Subscribed) {
            return;
        }
        let (mut sink, mut stream) = pubsub.split();
        let why = loop {
            match tokio::time::timeout(PING_EVERY, stream.next()).await {
                Ok(Some(msg)) => {
                    let id = msg
                        .get_payload::<String>()
                        .ok()
                        .and_then(|s| Uuid::parse_str(&s).ok());
                    match id {
                        Some(id) => {
                            if !on_event(DoneEvent::Done(id)) {
                                return;
                            }
                        }
                        None => {
                            tracing::debug!("done channel: ignored a message that is not a task id")
                        }
                    }
                }
                Ok(None) => break "connection closed".to_string(),
                Err(_) => {
                    if !alive() {
                        return;
                    }
                    let ping = tokio::time::timeout(PING_WAIT, sink.ping::<String>()).await;
                    match ping {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break format!("ping failed: {e}"),
                        Err(_) => break format!("no answer to a ping within {PING_WAIT:?}"),
                    }
                }
            }
        };
        tracing::warn!(reason = %why, "done channel: subscription lost; reconnecting");
        outage = true;
    }
}
