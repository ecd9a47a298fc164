//! Awaiting a task's end over HTTP: a long poll (`GET /result/{id}?wait=S`) when the gateway
//! offers it, otherwise polling `GET /result/{id}` at a fixed interval.
//!
//! The long poll is detected without side effects: the gateway's OpenAPI document lists a
//! `wait` parameter on `/result/{task_id}`, or the route rejects a non-numeric `wait` (a gateway
//! without the feature ignores unknown query parameters and answers 200).

use std::time::Duration;

use hyper::Method;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::cli::{CollectMode, CollectOpts};
use crate::error::Error;
use crate::http::{Conn, TaskStatus};

/// How results are awaited in this run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Collect {
    LongPoll { wait_s: f64 },
    Poll { interval: Duration },
}

/// What the report says about collection.
#[derive(Clone, Debug, Serialize)]
pub struct CollectInfo {
    /// "long-poll" or "poll".
    pub method: &'static str,
    /// Why: "openapi", "rejects-bad-wait", "absent" (no long poll found), or "forced".
    pub detected_by: &'static str,
    pub wait_s: Option<f64>,
    pub poll_interval_ms: Option<f64>,
}

/// The outcome of awaiting one task.
#[derive(Clone, Copy, Debug)]
pub struct Ended {
    pub status: TaskStatus,
    /// GET /result requests it took.
    pub requests: u32,
}

/// Finds whether the gateway offers the long poll; `task_id` is any existing task.
pub async fn detect(
    conn: &mut Conn,
    task_id: &Uuid,
    mode: CollectMode,
    opts: &CollectOpts,
) -> Result<(Collect, CollectInfo), Error> {
    let poll = Collect::Poll {
        interval: Duration::from_secs_f64(opts.poll_interval_ms / 1000.0),
    };
    let long = Collect::LongPoll {
        wait_s: opts.wait_s,
    };
    let found = match mode {
        CollectMode::Poll => return Ok((poll, info(poll, "forced"))),
        CollectMode::Wait => return Ok((long, info(long, "forced"))),
        CollectMode::Auto => long_poll_offered(conn, task_id).await?,
    };
    Ok(match found {
        Some(how) => (long, info(long, how)),
        None => (poll, info(poll, "absent")),
    })
}

fn info(c: Collect, detected_by: &'static str) -> CollectInfo {
    match c {
        Collect::LongPoll { wait_s } => CollectInfo {
            method: "long-poll",
            detected_by,
            wait_s: Some(wait_s),
            poll_interval_ms: None,
        },
        Collect::Poll { interval } => CollectInfo {
            method: "poll",
            detected_by,
            wait_s: None,
            poll_interval_ms: Some(interval.as_secs_f64() * 1000.0),
        },
    }
}

async fn long_poll_offered(conn: &mut Conn, task_id: &Uuid) -> Result<Option<&'static str>, Error> {
    let doc = conn.request(Method::GET, "/openapi.json", None).await?;
    if doc.status == 200 {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&doc.body) {
            if openapi_has_wait(&v) {
                return Ok(Some("openapi"));
            }
        }
    }
    let probe = conn
        .request(
            Method::GET,
            &format!("/result/{task_id}?wait=not-a-number"),
            None,
        )
        .await?;
    Ok(matches!(probe.status, 400 | 422).then_some("rejects-bad-wait"))
}

/// Whether an OpenAPI document lists a `wait` parameter on `GET /result/{task_id}`.
pub fn openapi_has_wait(doc: &serde_json::Value) -> bool {
    doc.pointer("/paths/~1result~1{task_id}/get/parameters")
        .and_then(|p| p.as_array())
        .is_some_and(|ps| ps.iter().any(|p| p["name"] == "wait"))
}

/// Awaits the end of `id`; an error when it is not terminal by `deadline`.
pub async fn until_terminal(
    conn: &mut Conn,
    id: &Uuid,
    how: Collect,
    deadline: Instant,
) -> Result<Ended, Error> {
    let mut requests = 0u32;
    loop {
        let wait = match how {
            Collect::LongPoll { wait_s } => {
                let left = deadline.saturating_duration_since(Instant::now());
                Some(wait_s.min(left.as_secs_f64()).max(0.001))
            }
            Collect::Poll { .. } => None,
        };
        let status = conn.status_of(id, wait).await?;
        requests += 1;
        if status.is_terminal() {
            return Ok(Ended { status, requests });
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "task {id} still {status:?} at its deadline"
            )));
        }
        if let Collect::Poll { interval } = how {
            tokio::time::sleep(interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openapi_wait_parameter() {
        let with = json!({"paths": {"/result/{task_id}": {"get": {"parameters": [
            {"name": "task_id", "in": "path"}, {"name": "wait", "in": "query"}]}}}});
        let without = json!({"paths": {"/result/{task_id}": {"get": {"parameters": [
            {"name": "task_id", "in": "path"}]}}}});
        assert!(openapi_has_wait(&with));
        assert!(!openapi_has_wait(&without));
        assert!(!openapi_has_wait(&json!({})));
    }
}
