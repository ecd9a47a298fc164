//! Settings of faas-worker (`worker.toml`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ExecutorConfig;
use crate::protocol::auth::{Token, TokenError};

/// How a worker gets its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WorkerMode {
    /// Asks the dispatcher for tasks when it has free slots (ZeroMQ REQ).
    #[default]
    Pull,
    /// Receives tasks the dispatcher pushes to it (ZeroMQ DEALER).
    Push,
}

impl WorkerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerMode::Pull => "pull",
            WorkerMode::Push => "push",
        }
    }
}

/// Everything faas-worker can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    pub mode: WorkerMode,
    /// Concurrent executor processes; 0 means one per CPU core.
    pub processes: usize,
    /// ZeroMQ endpoint of the dispatcher, e.g. tcp://10.0.0.5:5555.
    pub dispatcher: String,
    /// Worker id announced to the dispatcher; empty means `<hostname>-<pid>-<random>`.
    pub id: String,
    /// Heartbeat interval in milliseconds until the dispatcher's Welcome says otherwise.
    pub heartbeat_interval_ms: u64,
    /// Missed heartbeats after which the dispatcher is considered gone (the socket is rebuilt).
    pub heartbeat_misses: u32,
    /// Seconds to let running tasks finish on SIGTERM.
    pub drain_timeout_secs: f64,
    /// Largest ZeroMQ frame accepted from the network, in bytes (a multipart message may add up
    /// to 16 times this); larger ones drop that connection before memory is reserved. Must exceed
    /// the largest function, argument or result pickle plus a little framing.
    pub max_message_bytes: u64,
    /// Log level when RUST_LOG is unset.
    pub log_level: String,
    /// Shared secret proven to the dispatcher when it asks (its `token_file`).
    pub token_file: Option<PathBuf>,
    /// Largest result reported, in bytes; a larger one is reported as FAILED (ResultTooLarge).
    pub max_result_bytes: usize,
    pub executor: ExecutorConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            mode: WorkerMode::Pull,
            processes: 0,
            dispatcher: "tcp://127.0.0.1:5555".into(),
            id: String::new(),
            heartbeat_interval_ms: 250,
            heartbeat_misses: 4,
            drain_timeout_secs: 30.0,
            max_message_bytes: super::DEFAULT_MAX_MESSAGE_BYTES,
            log_level: "info".into(),
            token_file: None,
            max_result_bytes: super::DEFAULT_SIZE_LIMIT,
            executor: ExecutorConfig::default(),
        }
    }
}

impl WorkerConfig {
    /// The process count with 0 resolved to the number of CPUs.
    pub fn slots(&self) -> usize {
        crate::host::processes_or_cpus(self.processes)
    }

    /// The token, when `token_file` is set (read now).
    pub fn token(&self) -> Result<Option<Token>, TokenError> {
        self.token_file.as_deref().map(Token::load).transpose()
    }

    /// `max_message_bytes`, typed (call on a validated config).
    pub fn max_message(&self) -> std::num::NonZeroU64 {
        super::max_message(self.max_message_bytes)
    }

    /// The worker id actually used.
    pub fn worker_id(&self) -> String {
        if !self.id.is_empty() {
            return self.id.clone();
        }
        let host = crate::host::hostname();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}-{}", std::process::id(), &nonce[..6])
    }
}
