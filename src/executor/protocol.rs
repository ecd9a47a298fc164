//! Messages exchanged with the Python executor (`python/faas_executor.py`), on top of [`super::frame`].
//!
//! Control messages are one JSON frame each. A task is three frames (JSON [`TaskHeader`], function
//! pickle, arguments pickle); a result is two frames (JSON [`ResultHeader`], pickle or empty).

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

use super::frame::{self, FrameError};
use super::TaskSpec;

/// Messages an executor process sends on its control socket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlEvent {
    /// Start-up finished (dill and the preload modules are imported); reports the versions, and
    /// a reuse process names its private working directory.
    Ready {
        pid: u32,
        python: String,
        #[serde(default)]
        dill: String,
        #[serde(default)]
        workdir: Option<String>,
    },
    /// Start-up failed, e.g. dill is not importable.
    Fatal { error: String },
    /// (zygote) The child for task `seq` was forked.
    Started { seq: u64, pid: i32 },
    /// (zygote) The child for task `seq` was reaped; `status` is the raw wait status.
    Exited { seq: u64, pid: i32, status: i32 },
    /// (zygote) No child could be forked for task `seq`.
    SpawnFailed { seq: u64, error: String },
}

/// The control message asking the zygote to fork a child for task `seq` (`task_id` becomes the
/// child's process title); the task socket travels with it as SCM_RIGHTS ancillary data.
pub fn run_message(seq: u64, task_id: &str) -> Vec<u8> {
    serde_json::json!({"op": "run", "seq": seq, "task_id": task_id})
        .to_string()
        .into_bytes()
}

/// The first frame of a task message.
#[derive(Debug, Serialize)]
pub struct TaskHeader<'a> {
    pub task_id: &'a str,
    pub function_id: &'a str,
}

/// The first frame of a result message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ResultHeader {
    /// The function returned; the payload is the pickled value.
    Ok,
    /// The function raised; the payload is the pickled exception.
    Error { cause: String },
    /// The function raised an exception that does not survive pickling; no payload.
    ForeignError {
        #[serde(rename = "type")]
        type_name: String,
        message: String,
        cause: String,
        detail: String,
    },
    /// The platform failed the task (e.g. `DeserializationError`); no payload.
    Platform { kind: String, detail: String },
}

/// A decoded result message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskResult {
    pub header: ResultHeader,
    pub payload: Vec<u8>,
}

impl TaskResult {
    /// The task ran into one of its resource limits (`ResourceLimitExceeded`).
    pub fn hit_a_limit(&self) -> bool {
        matches!(&self.header, ResultHeader::Platform { kind, .. } if kind == "ResourceLimitExceeded")
    }
}

/// The executor sent something that is not a valid message.
#[derive(Debug, Error)]
pub enum ProtocolError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Parses one control frame.
pub fn parse_event(frame: &[u8]) -> Result<ControlEvent, ProtocolError> {
    Ok(serde_json::from_slice(frame)?)
}

/// Writes a task message.
pub async fn write_task<W: AsyncWrite + Unpin>(w: &mut W, task: &TaskSpec) -> std::io::Result<()> {
    let header = serde_json::to_vec(&TaskHeader {
        task_id: &task.task_id,
        function_id: &task.function_id,
    })?;
    frame::write_frames(w, &[&header, &task.fn_payload, &task.args_payload]).await
}

/// Reads a result message; `Ok(None)` if the stream ends before one starts. A payload of more
/// than `max_payload` bytes is drained, not kept: the result becomes the platform failure
/// `ResultTooLarge` (`max_result_bytes`).
pub async fn read_result<R: AsyncRead + Unpin>(
    r: &mut R,
    max_payload: usize,
) -> Result<Option<TaskResult>, ProtocolError> {
    let Some(head) = frame::read_frame(r).await? else {
        return Ok(None);
    };
    let header: ResultHeader = serde_json::from_slice(&head)?;
    Ok(Some(match frame::read_bounded(r, max_payload).await? {
        frame::Bounded::Body(payload) => TaskResult { header, payload },
        frame::Bounded::Skipped(len) => TaskResult {
            header: ResultHeader::Platform {
                kind: "ResultTooLarge".into(),
                detail: super::classify::too_large(len, max_payload),
            },
            payload: Vec::new(),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_control_events() {
        assert_eq!(
            parse_event(br#"{"op":"exited","seq":3,"pid":42,"status":11}"#).unwrap(),
            ControlEvent::Exited {
                seq: 3,
                pid: 42,
                status: 11
            }
        );
        assert!(parse_event(br#"{"op":"bogus"}"#).is_err());
        assert_eq!(
            run_message(7, "t\"1"),
            br#"{"op":"run","seq":7,"task_id":"t\"1"}"#
        );
        assert_eq!(
            parse_event(br#"{"op":"ready","pid":1,"python":"3.11"}"#).unwrap(),
            ControlEvent::Ready {
                pid: 1,
                python: "3.11".into(),
                dill: String::new(),
                workdir: None
            }
        );
    }

    #[tokio::test]
    async fn reads_results() {
        let bytes = frame::encode(&[
            br#"{"status":"platform","kind":"InvalidTask","detail":"x"}"#,
            b"",
        ])
        .unwrap();
        let r = read_result(&mut bytes.as_slice(), frame::MAX_FRAME)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            r.header,
            ResultHeader::Platform {
                kind: "InvalidTask".into(),
                detail: "x".into()
            }
        );
        let mut empty: &[u8] = &[];
        assert!(read_result(&mut empty, frame::MAX_FRAME)
            .await
            .unwrap()
            .is_none());
        let only_header = frame::encode(&[br#"{"status":"ok"}"#]).unwrap();
        assert!(read_result(&mut only_header.as_slice(), frame::MAX_FRAME)
            .await
            .is_err());
    }
}
