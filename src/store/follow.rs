//! Following a channel of task ids: one pub/sub connection that reports every id published.
//!
//! Two channels carry task ids, each published by a script in the same atomic step as the
//! change it announces: [`super::keys::DONE_CHANNEL`] (a task reached COMPLETED or FAILED; the
//! gateway's long-polls fan out from it) and [`super::keys::CANCEL_CHANNEL`] (a RUNNING task was
//! cancelled; dispatchers stop its run). [`follow`] keeps one subscription alive: it reconnects
//! by itself with bounded back-off after the connection is killed, Redis restarts or stops
//! answering pings, and reports [`ChannelEvent::Subscribed`] after every (re)subscription,
//! because whatever was published while it was away is gone: listeners must then re-read the
//! state of what they wait for.
//!
//! [`connect`] is the one place that obtains the connection: through the store's [`Connector`],
//! so a `redis+sentinel://` URL subscribes on the current primary.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSub;
use redis::Value;
use uuid::Uuid;

use super::{Connector, StoreError};

/// First pause after a failed connection; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often [`follow`] pings an idle subscription, and how long the answer may take: a
/// connection that went silent (half-open TCP, a frozen Redis) is replaced within about their sum.
pub const PING_EVERY: Duration = Duration::from_secs(5);
pub const PING_WAIT: Duration = Duration::from_secs(2);
/// Longest wait for a connection plus subscription.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// What the subscription reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelEvent {
    /// Subscribed (first time or after a reconnect): anything may have been published meanwhile.
    Subscribed,
    /// This task id was published (on the done channel: it reached COMPLETED or FAILED; on the
    /// cancel channel: its run is to be stopped).
    Task(Uuid),
}

/// Opens a pub/sub connection subscribed to `channel`.
pub async fn connect(connector: &Connector, channel: &str) -> Result<PubSub, StoreError> {
    let attempt = async {
        let mut pubsub = connector.client().await?.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(CONNECT_WAIT, attempt).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(StoreError::Corrupt(format!(
            "no pub/sub connection within {CONNECT_WAIT:?}"
        ))),
    }
}

/// Who hears the ids published on a channel.
pub trait ChannelListener: Send + Sync + 'static {
    fn on_event(&self, event: ChannelEvent);
}

/// Follows `channel`, passing every event to `listener`, until the listener is dropped.
/// Never returns on its own otherwise: connection failures are retried.
pub async fn follow<L: ChannelListener>(
    connector: Connector,
    channel: &'static str,
    listener: Weak<L>,
) {
    follow_with(connector, channel, listener, PING_EVERY).await
}

/// [`follow`], pinging an idle subscription every `ping_every` instead of [`PING_EVERY`] (tests
/// use a short period).
pub async fn follow_with<L: ChannelListener>(
    connector: Connector,
    channel: &'static str,
    listener: Weak<L>,
    ping_every: Duration,
) {
    let on_event = |ev: ChannelEvent| match listener.upgrade() {
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
        let pubsub = match connect(&connector, channel).await {
            Ok(p) => p,
            Err(e) => {
                if !outage {
                    tracing::warn!(error = %e, channel, "cannot subscribe; retrying");
                    outage = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if outage {
            tracing::info!(channel, "subscribed again");
        }
        backoff = MIN_BACKOFF;
        if !on_event(ChannelEvent::Subscribed) {
            return;
        }
        let (mut sink, mut stream) = pubsub.split();
        let why = loop {
            match tokio::time::timeout(ping_every, stream.next()).await {
                Ok(Some(msg)) => {
                    let id = msg
                        .get_payload::<String>()
                        .ok()
                        .and_then(|s| Uuid::parse_str(&s).ok());
                    match id {
                        Some(id) => {
                            if !on_event(ChannelEvent::Task(id)) {
                                return;
                            }
                        }
                        None => {
                            tracing::debug!(channel, "ignored a message that is not a task id")
                        }
                    }
                }
                Ok(None) => break "connection closed".to_string(),
                Err(_) => {
                    if !alive() {
                        return;
                    }
                    // Any answer will do. A subscribed RESP2 connection answers the array
                    // ["pong", ""], not "PONG": asking for a string failed every idle ping.
                    let ping = tokio::time::timeout(PING_WAIT, sink.ping::<Value>()).await;
                    match ping {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break format!("ping failed: {e}"),
                        Err(_) => break format!("no answer to a ping within {PING_WAIT:?}"),
                    }
                }
            }
        };
        tracing::warn!(channel, reason = %why, "subscription lost; reconnecting");
        outage = true;
    }
}
