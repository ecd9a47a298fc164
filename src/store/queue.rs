//! The durable task queue: a Redis Stream read through the `dispatchers` consumer group.
//!
//! Each dispatcher is one consumer. An entry stays in the consumer's pending list from delivery
//! until the task's terminal report acknowledges it, so a dispatcher that dies loses nothing: on
//! restart it re-reads its own pending entries, and entries of consumers whose lease expired are
//! claimed by a live dispatcher.
//!
//! The reader has its own connection (a blocking read must not hold up other commands), which
//! recovers by itself like every [`Conn`]. If Redis lost its data, the group is created again
//! on the fly (`NOGROUP`, or no stream at all).

use std::time::Duration;

use redis::Value;
use uuid::Uuid;

use super::{keys, scripts, Conn, Store, StoreError};

/// Longest `BLOCK` of a read (its connection's response timeout allows for it).
pub const MAX_BLOCK: Duration = Duration::from_secs(2);

/// One delivered queue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub entry_id: String,
    /// The task id, or `None` when the entry is malformed or was deleted meanwhile.
    pub task_id: Option<Uuid>,
}

/// A consumer of the queue with its own connection (blocking reads must not share one).
pub struct QueueReader {
    conn: Conn,
    consumer: String,
}

impl QueueReader {
    /// Opens a dedicated connection and makes sure the consumer group exists.
    pub async fn open(store: &Store, consumer: &str) -> Result<Self, StoreError> {
        let mut reader = QueueReader {
            conn: store.queue_conn(),
            consumer: consumer.to_string(),
        };
        reader.ensure_group().await?;
        Ok(reader)
    }

    /// The consumer name of this reader.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// True while the reader's connection is open (see [`Conn::connected`]).
    pub fn connected(&self) -> bool {
        self.conn.connected()
    }

    /// Time until the reader's connection may be attempted again after a failure (see
    /// [`Conn::retry_in`]).
    pub fn retry_in(&self) -> Duration {
        self.conn.retry_in()
    }

    /// Creates the consumer group (and the stream) unless it exists.
    async fn ensure_group(&mut self) -> Result<(), StoreError> {
        // Start at 0 so that tasks queued before any dispatcher ever ran are delivered too.
        let r: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys::QUEUE)
            .arg(keys::GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn)
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads up to `count` new entries, waiting at most `block` (capped at [`MAX_BLOCK`]) for
    /// the first one.
    pub async fn read_new(
        &mut self,
        count: usize,
        block: Duration,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let block_ms = u64::try_from(block.min(MAX_BLOCK).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.read(">", count, Some(block_ms)).await
    }

    /// Reads up to `count` entries already delivered to this consumer and not yet acknowledged.
    pub async fn read_pending(&mut self, count: usize) -> Result<Vec<QueueEntry>, StoreError> {
        self.read("0", count, None).await
    }

    async fn read(
        &mut self,
        id: &str,
        count: usize,
        block_ms: Option<u64>,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(keys::GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(keys::QUEUE).arg(id);
        let reply: Value = match cmd.query_async(&mut self.conn).await {
            Ok(v) => v,
            // The group vanishes with the stream (FLUSHDB, a Redis restarted without its data):
            // recreate it; the next read finds whatever is queued by then.
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!("the queue's consumer group is gone (did Redis lose its data?); creating it again");
                self.ensure_group().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        parse_read_reply(reply)
    }

    /// Moves the pending entries of consumers that no longer hold a lease to this consumer.
    /// Returns how many entries were claimed; they are then read with [`Self::read_pending`].
    ///
    /// Safe against live dispatchers: each page is listed and claimed in one script that first
    /// checks the dead consumer's lease is still absent; only entries idle for [`ADOPT_MIN_IDLE`]
    /// are taken (so an entry another dispatcher adopted a moment ago is not stolen back);
    /// pending entries are paged without a cap; and a consumer is forgotten only once it has
    /// nothing pending (checked in the same script as the deletion).
    pub async fn adopt_orphans(&mut self) -> Result<usize, StoreError> {
        self.adopt_orphans_idle(ADOPT_MIN_IDLE).await
    }

    /// [`Self::adopt_orphans`] with an explicit minimum idle time (tests use zero).
    pub async fn adopt_orphans_idle(&mut self, min_idle: Duration) -> Result<usize, StoreError> {
        let consumers: Value = match redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(keys::QUEUE)
            .arg(keys::GROUP)
            .query_async(&mut self.conn)
            .await
        {
            Ok(v) => v,
            // No stream or no group (Redis lost its data): nobody to adopt from.
            Err(e) if e.code() == Some("NOGROUP") || is_no_such_key(&e) => {
                self.ensure_group().await?;
                return Ok(0);
            }
            Err(e) => return Err(e.into()),
        };
        let min_idle_ms = u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX);
        let mut claimed = 0;
        for (name, pending) in parse_consumers(&consumers) {
            if name == self.consumer {
                continue;
            }
            let lease = keys::dispatcher_lease(&name);
            let mut took = 0;
            let mut cursor = "-".to_string();
            let mut done = false;
            // It holds its lease: alive, its pending entries are its own.
            let mut alive = false;
            // A consumer with nothing pending is only forgotten (below).
            while pending > 0 && !done {
                let page: Vec<Value> = scripts::ADOPT_PAGE
                    .key(keys::QUEUE)
                    .key(&lease)
                    .arg(keys::GROUP)
                    .arg(&self.consumer)
                    .arg(&name)
                    .arg(min_idle_ms)
                    .arg(&cursor)
                    .arg(ADOPT_PAGE_SIZE)
                    .invoke_async(&mut self.conn)
                    .await?;
                let (n, listed, last) = match page.as_slice() {
                    [Value::Int(n), Value::Int(listed), last] => (*n, *listed, as_string(last)),
                    // {-1}: the consumer holds its lease again; leave it alone.
                    _ => {
                        alive = true;
                        done = true;
                        continue;
                    }
                };
                took += usize::try_from(n).unwrap_or(0);
                match last {
                    Some(last) if listed > 0 && !last.is_empty() => cursor = format!("({last}"),
                    _ => done = true,
                }
            }
            if took > 0 {
                tracing::warn!(from = %name, entries = took, "adopted tasks of a dispatcher whose lease expired");
            }
            claimed += took;
            let forgotten: i64 = scripts::FORGET_CONSUMER
                .key(keys::QUEUE)
                .key(&lease)
                .arg(keys::GROUP)
                .arg(&name)
                .invoke_async(&mut self.conn)
                .await?;
            if forgotten == 0 && pending > 0 && !alive {
                tracing::info!(consumer = %name, "a dead dispatcher still has pending entries (not idle long enough yet); kept for the next recovery pass");
            }
        }
        Ok(claimed)
    }
}

/// Entries listed and claimed per script call when adopting a dead consumer's entries.
const ADOPT_PAGE_SIZE: usize = 1000;

/// Minimum idle time of an entry adopted from a dead consumer: a lease's TTL. A live dispatcher
/// renews its lease three times per TTL, so its consumer is never "dead"; this bound protects
/// entries that another live dispatcher adopted (or re-read) within that time.
pub const ADOPT_MIN_IDLE: Duration = super::lease::LEASE_TTL;

/// `ERR no such key`, which XINFO answers for a stream that does not exist.
fn is_no_such_key(e: &redis::RedisError) -> bool {
    e.code() == Some("ERR") && e.detail().is_some_and(|d| d.contains("no such key"))
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Parses `[[stream, [[id, [field, value, ...] | nil], ...]]]` (or nil on timeout).
fn parse_read_reply(reply: Value) -> Result<Vec<QueueEntry>, StoreError> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(s) => s,
        other => return Err(StoreError::Corrupt(format!("XREADGROUP reply: {other:?}"))),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut pair) = stream else {
            continue;
        };
        let Some(Value::Array(entries)) = pair.pop() else {
            continue;
        };
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let Some(entry_id) = parts.first().and_then(as_string) else {
                continue;
            };
            let task_id = match parts.get(1) {
                Some(Value::Array(fields)) => fields
                    .chunks(2)
                    .find(|kv| kv.first().and_then(as_string).as_deref() == Some("task_id"))
                    .and_then(|kv| kv.get(1).and_then(as_string))
                    .and_then(|s| Uuid::parse_str(&s).ok()),
                _ => None,
            };
            out.push(QueueEntry { entry_id, task_id });
        }
    }
    Ok(out)
}

/// Parses XINFO CONSUMERS into (name, pending) pairs.
fn parse_consumers(v: &Value) -> Vec<(String, i64)> {
    let Value::Array(rows) = v else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|row| {
            let Value::Array(kv) = row else { return None };
            let mut name = None;
            let mut pending = 0;
            for pair in kv.chunks(2) {
                match (pair.first().and_then(as_string).as_deref(), pair.get(1)) {
                    (Some("name"), Some(v)) => name = as_string(v),
                    (Some("pending"), Some(Value::Int(n))) => pending = *n,
                    _ => {}
                }
            }
            name.map(|n| (n, pending))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_entries_and_deleted_ones() {
        let id = Uuid::new_v4();
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(keys::QUEUE),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("task_id"), bulk(&id.to_string())]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let got = parse_read_reply(reply).expect("parse");
        assert_eq!(
            got,
            vec![
                QueueEntry {
                    entry_id: "1-0".into(),
                    task_id: Some(id)
                },
                QueueEntry {
                    entry_id: "2-0".into(),
                    task_id: None
                }
            ]
        );
        assert!(parse_read_reply(Value::Nil).expect("nil").is_empty());
    }

    #[test]
    fn parses_consumers() {
        let v = Value::Array(vec![Value::Array(vec![
            bulk("name"),
            bulk("d1"),
            bulk("pending"),
            Value::Int(3),
        ])]);
        assert_eq!(parse_consumers(&v), vec![("d1".to_string(), 3)]);
    }
}
