//! The dispatcher ⇄ worker protocol over ZeroMQ (documented in docs/protocol.md).
//!
//! Every ZeroMQ message is one JSON [`Header`] frame followed by binary blob frames: two per task
//! in [`Header::Tasks`] (function pickle, arguments pickle) and one per result in
//! [`Header::Fetch`] / [`Header::Report`] (the result pickle). Pickles are never base64'd.

pub mod auth;
mod codec;
pub mod guard;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::runtime::Runtime;

pub use codec::{decode, encode, Decoded, ProtocolError};

/// Protocol version spoken by this build; a worker with another version is refused. Version 2
/// added reconciliation (`running` in `fetch`; `running` lists held results too) and `cancel`.
pub const VERSION: u32 = 2;

/// Slowest link a large message is given time for, in bytes per second. Liveness never waits
/// for a message (heartbeats have their own connection), but a message of N bytes may still be
/// on its way N / this seconds after it was sent: sends and requests get that long, and a run
/// sent in a large `tasks` message is not counted missing before it could have arrived.
pub const SLOW_LINK_BYTES_PER_SEC: u64 = 128 * 1024;

/// How long a message with `bytes` of blobs may take to arrive on the slowest link.
pub fn transfer_allowance(bytes: u64) -> std::time::Duration {
    std::time::Duration::from_secs(bytes / SLOW_LINK_BYTES_PER_SEC)
}

/// Who a worker is; sent in [`Header::Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Unique per worker process (`<host>-<pid>-<nonce>`).
    pub id: String,
    /// Concurrent tasks it runs (its executor processes).
    pub slots: u32,
    /// Tasks it holds at once: `slots` plus the tasks it queues for a process to come free
    /// (prefetch). The dispatcher sends it tasks up to this many; absent from older workers,
    /// which mean `slots` (see [`WorkerInfo::capacity`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    pub host: String,
    pub pid: u32,
    /// faas version of the worker binary.
    pub version: String,
    /// Protocol version; must equal [`VERSION`].
    pub protocol: u32,
    /// Python and dill versions of its executors (absent from older workers).
    #[serde(default)]
    pub runtime: Runtime,
}

impl WorkerInfo {
    /// Tasks the worker holds at once: its advertised `capacity`, never below `slots` (an older
    /// worker that sends none holds exactly `slots`).
    pub fn capacity(&self) -> u32 {
        self.capacity.unwrap_or(self.slots).max(self.slots)
    }
}

/// One run of a task: the id plus the attempt number that fences its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskRef {
    pub task_id: Uuid,
    pub attempt: u32,
}

/// A task handed to a worker; followed by two blob frames (function pickle, arguments pickle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMeta {
    #[serde(flatten)]
    pub task: TaskRef,
    pub function_id: Uuid,
    /// The task's own time limit in milliseconds, when it was submitted with one (older
    /// dispatchers never send it; older workers ignore it and apply their configured limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// How a task ended on a worker; followed by one blob frame (the result pickle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultMeta {
    #[serde(flatten)]
    pub task: TaskRef,
    /// True for COMPLETED, false for FAILED.
    pub ok: bool,
    /// One-line failure cause ("" when ok).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cause: String,
}

/// The first frame of every message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Header {
    // ---- worker → dispatcher ----
    /// Registration (first message, and again after [`Header::Unknown`] or a reconnect).
    /// `running` lists the runs the worker holds (running, or finished with the result not yet
    /// acknowledged), so the dispatcher can adopt, keep or cancel them (reconciliation).
    Hello {
        worker: WorkerInfo,
        running: Vec<TaskRef>,
    },
    /// Pull mode: "I can take `free` more tasks" (capacity minus the tasks it holds); carries
    /// finished results. The dispatcher may park the
    /// request until work arrives or the heartbeat interval passes.
    Fetch {
        worker_id: String,
        free: u32,
        results: Vec<ResultMeta>,
        /// The runs the worker holds, as in [`Header::Hello`] (reconciliation).
        #[serde(default)]
        running: Vec<TaskRef>,
    },
    /// Finished results (push mode, and pull mode's report socket). Answered with [`Header::Ack`]
    /// in pull mode; acknowledged in a later message in push mode.
    Report {
        worker_id: String,
        results: Vec<ResultMeta>,
    },
    /// Push mode liveness, every heartbeat interval; `running` as in [`Header::Hello`].
    Heartbeat {
        worker_id: String,
        free: u32,
        running: Vec<TaskRef>,
    },
    /// The worker is stopping: send it no more tasks. Running tasks are still reported.
    Bye { worker_id: String },
    /// The worker's drain ran out: it killed these runs and hands them back. The dispatcher
    /// re-queues each one whose attempt is still current (whatever `max_retries` says: they did
    /// not fail) and answers [`Header::Ack`] listing them.
    Release {
        worker_id: String,
        tasks: Vec<TaskRef>,
    },
    /// Answer to [`Header::Challenge`]: HMAC-SHA256 of the challenge (see [`auth`]), hex. The
    /// dispatcher then acts on the message it held back (or answers [`Header::Ack`]).
    Auth { worker_id: String, proof: String },

    // ---- dispatcher → worker ----
    /// Answer to [`Header::Hello`], with the liveness settings both sides use.
    Welcome {
        dispatcher: String,
        heartbeat_ms: u64,
        heartbeat_misses: u32,
    },
    /// Registration refused (e.g. protocol version mismatch); the worker exits.
    Refused { reason: String },
    /// The dispatcher needs a token (`token_file`): the first message of a connection is held
    /// back until the worker answers with [`Header::Auth`] for this nonce (32 bytes, hex).
    Challenge { nonce: String },
    /// Tasks to run (two blob frames each), plus acknowledgements of stored results.
    Tasks {
        tasks: Vec<TaskMeta>,
        acks: Vec<TaskRef>,
    },
    /// Results stored in Redis (or stale and dropped): the worker may forget them.
    Ack { acks: Vec<TaskRef> },
    /// Pull mode: no work for now (also the dispatcher's heartbeat to a parked worker).
    Nothing { acks: Vec<TaskRef> },
    /// Kill these runs (their executors) and forget them: no result is reported. Sent for runs
    /// the worker holds that the dispatcher does not want (reconciliation, retries, deadlines).
    Cancel { tasks: Vec<TaskRef> },
    /// Push mode: the dispatcher's heartbeat.
    Ping,
    /// The dispatcher does not know this worker (it restarted): send [`Header::Hello`] again.
    Unknown,
}

impl Header {
    /// How many blob frames must follow this header.
    pub fn blob_count(&self) -> usize {
        match self {
            Header::Tasks { tasks, .. } => tasks.len() * 2,
            Header::Fetch { results, .. } | Header::Report { results, .. } => results.len(),
            _ => 0,
        }
    }

    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Header::Hello { .. } => "hello",
            Header::Fetch { .. } => "fetch",
            Header::Report { .. } => "report",
            Header::Heartbeat { .. } => "heartbeat",
            Header::Bye { .. } => "bye",
            Header::Release { .. } => "release",
            Header::Auth { .. } => "auth",
            Header::Welcome { .. } => "welcome",
            Header::Refused { .. } => "refused",
            Header::Challenge { .. } => "challenge",
            Header::Tasks { .. } => "tasks",
            Header::Ack { .. } => "ack",
            Header::Nothing { .. } => "nothing",
            Header::Cancel { .. } => "cancel",
            Header::Ping => "ping",
            Header::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_optional_on_the_wire_and_defaults_to_slots() {
        // A hello from a worker that predates `capacity`.
        let old = r#"{"type":"hello","worker":{"id":"w","slots":3,"host":"h","pid":7,
            "version":"0.1.0","protocol":2},"running":[]}"#;
        let Header::Hello { worker, .. } = serde_json::from_str::<Header>(old).expect("old hello")
        else {
            panic!("not a hello");
        };
        assert_eq!((worker.capacity, worker.capacity()), (None, 3));
        // Without a capacity nothing new goes on the wire (an older dispatcher sees its hello).
        let json = serde_json::to_string(&worker).expect("encode");
        assert!(!json.contains("capacity"), "{json}");
        // With one, it round-trips; below the processes it counts as the processes.
        for (capacity, effective) in [(Some(5), 5), (Some(1), 3)] {
            let w = WorkerInfo {
                capacity,
                ..worker.clone()
            };
            let back: WorkerInfo =
                serde_json::from_str(&serde_json::to_string(&w).expect("encode")).expect("decode");
            assert_eq!(back, w);
            assert_eq!(back.capacity(), effective);
        }
    }
}
