//! Drain completion, read from Redis in two steps (docs/redis-schema.md):
//!
//! 1. While the drain runs, one `XLEN faas:queue` per interval: a queue entry is deleted when its
//!    task reaches a terminal state, so an empty queue means the drain is over. One O(1) command
//!    per interval is all the load the generator adds while the dispatcher works (polling
//!    `/status` would add an HTTP request per task and poll to the gateway, and reading every
//!    task record per interval would cost Redis more than the dispatcher's own reads).
//! 2. Then the records: the submitted ids in submission order with a cursor, pipelined `HMGET
//!    faas:task:{id} status started_ms finished_ms`, re-reading from the cursor while a task is
//!    not terminal yet. This is the source of truth (it does not trust step 1), and the finish
//!    times are the records' own `finished_ms`, so the polling interval does not add to the
//!    measured drain time.

use std::time::Duration;

use faas::store::keys;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::Error;

/// Task ids read per pipelined round trip.
const CHUNK: usize = 256;

/// A terminal task's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct End {
    pub completed: bool,
    /// Start of the last attempt (absent if the task failed before running).
    pub started_ms: Option<i64>,
    pub finished_ms: i64,
}

/// One HMGET reply: status, started_ms, finished_ms.
pub type Reply = (Option<String>, Option<String>, Option<String>);

/// The record of a terminal task, or `None` while it is queued or running (or unreadable).
pub fn end_of(r: &Reply) -> Option<End> {
    let completed = match r.0.as_deref() {
        Some("COMPLETED") => true,
        Some("FAILED") => false,
        _ => return None,
    };
    Some(End {
        completed,
        started_ms: r.1.as_deref().and_then(|v| v.parse().ok()),
        finished_ms: r.2.as_deref()?.parse().ok()?,
    })
}

/// What the sweep saw.
#[derive(Clone, Debug, Default)]
pub struct Sweep {
    pub ends: Vec<End>,
    /// Sweeps over the records (each one or more pipelined round trips).
    pub sweeps: u64,
    /// Task records read in all.
    pub reads: u64,
}

/// A connection to the deployment's Redis.
pub async fn connect(redis_url: &str) -> Result<MultiplexedConnection, Error> {
    Ok(redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?)
}

/// Checks the keys this module relies on before a drain: every submitted task has a record, and
/// (`idle`: no dispatcher runs yet) all of them are in the queue. Fails loudly when the schema of
/// docs/redis-schema.md changed, instead of timing a drain that cannot be seen.
pub async fn check_schema(
    con: &mut MultiplexedConnection,
    ids: &[Uuid],
    idle: bool,
) -> Result<(), Error> {
    let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
        return Ok(());
    };
    let replies = read(con, &[*first, *last]).await?;
    if let Some(r) = replies.iter().find(|r| r.0.is_none()) {
        return Err(Error::Usage(format!(
            "no status in faas:task:<id> for a submitted task ({r:?}): the Redis schema \
             (docs/redis-schema.md) is not what faas-loadgen reads"
        )));
    }
    let len: u64 = redis::cmd("XLEN")
        .arg("faas:queue")
        .query_async(con)
        .await?;
    if idle && len < ids.len() as u64 {
        return Err(Error::Usage(format!(
            "faas:queue holds {len} entries for {} queued tasks: is a dispatcher already \
             running, or did the Redis schema (docs/redis-schema.md) change?",
            ids.len()
        )));
    }
    Ok(())
}

/// Waits until the queue stream is empty; returns the number of polls. An error at `deadline`.
pub async fn until_queue_empty(
    con: &mut MultiplexedConnection,
    interval: Duration,
    deadline: Instant,
) -> Result<u64, Error> {
    let mut polls = 0u64;
    loop {
        let len: u64 = redis::cmd("XLEN")
            .arg("faas:queue")
            .query_async(con)
            .await?;
        polls += 1;
        if len == 0 {
            return Ok(polls);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "{len} tasks still queued or running at the drain's deadline"
            )));
        }
        tokio::time::sleep(interval).await;
    }
}

/// Waits until every task in `ids` is terminal and returns their records; an error at `deadline`.
pub async fn until_all_terminal(
    con: &mut MultiplexedConnection,
    ids: &[Uuid],
    interval: Duration,
    deadline: Instant,
) -> Result<Sweep, Error> {
    let mut out = Sweep {
        ends: Vec::with_capacity(ids.len()),
        ..Sweep::default()
    };
    while out.ends.len() < ids.len() {
        out.sweeps += 1;
        // Read chunk after chunk while every task in it is terminal.
        loop {
            let from = out.ends.len();
            let chunk = &ids[from..ids.len().min(from + CHUNK)];
            if chunk.is_empty() {
                break;
            }
            let replies = read(con, chunk).await?;
            out.reads += chunk.len() as u64;
            let before = out.ends.len();
            out.ends.extend(replies.iter().map_while(end_of));
            if out.ends.len() - before < chunk.len() {
                break;
            }
        }
        if out.ends.len() == ids.len() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "{} of {} tasks terminal at the drain's deadline; task {} is not",
                out.ends.len(),
                ids.len(),
                ids[out.ends.len()]
            )));
        }
        tokio::time::sleep(interval).await;
    }
    Ok(out)
}

async fn read(con: &mut MultiplexedConnection, ids: &[Uuid]) -> Result<Vec<Reply>, Error> {
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("HMGET")
            .arg(keys::task(id))
            .arg("status")
            .arg("started_ms")
            .arg("finished_ms");
    }
    Ok(pipe.query_async(con).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: Option<&str>, st: Option<&str>, f: Option<&str>) -> Reply {
        (s.map(Into::into), st.map(Into::into), f.map(Into::into))
    }

    #[test]
    fn terminal_records() {
        let table = [
            (
                r(Some("COMPLETED"), Some("5"), Some("9")),
                Some((true, Some(5), 9)),
            ),
            (r(Some("FAILED"), None, Some("7")), Some((false, None, 7))),
            (r(Some("RUNNING"), Some("5"), None), None),
            (r(Some("QUEUED"), None, None), None),
            (r(None, None, None), None),
            // Terminal but no finish time: not counted (a schema change would show as a timeout).
            (r(Some("COMPLETED"), Some("5"), None), None),
        ];
        for (reply, want) in table {
            let got = end_of(&reply).map(|e| (e.completed, e.started_ms, e.finished_ms));
            assert_eq!(got, want, "{reply:?}");
        }
    }
}
