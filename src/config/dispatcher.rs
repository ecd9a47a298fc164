//! Settings of faas-dispatcher (`dispatcher.toml`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ExecutorConfig;
use crate::protocol::auth::{Token, TokenError};

/// Where the dispatcher runs tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// On its own executor pool.
    #[default]
    Local,
    /// On workers that ask for tasks (ZeroMQ REQ).
    Pull,
    /// On workers it pushes tasks to (ZeroMQ DEALER/ROUTER).
    Push,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Pull => "pull",
            Mode::Push => "push",
        }
    }
}

/// Local-mode settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    /// Concurrent executor processes; 0 means one per CPU core.
    pub processes: usize,
}

/// Everything faas-dispatcher can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherConfig {
    pub mode: Mode,
    /// Redis URL of the task store.
    pub redis: String,
    /// Consumer name in the queue's consumer group; empty means `<hostname>-<mode>`.
    /// Two dispatchers sharing one Redis need distinct names.
    pub name: String,
    /// Seconds a finished task (and its result) is kept in Redis; 0 keeps it forever.
    pub result_ttl_secs: u64,
    /// How often a task whose executor or worker was lost is re-run before it is FAILED.
    pub max_retries: u32,
    /// Seconds to let running tasks finish on SIGTERM before they are handed back to the queue.
    pub drain_timeout_secs: f64,
    /// Log level when RUST_LOG is unset.
    pub log_level: String,
    /// Address the ZeroMQ socket binds in pull and push modes. Workers on other hosts need a
    /// reachable address here (e.g. 0.0.0.0): set `token_file` then, or anyone who can connect
    /// can take tasks.
    pub bind: String,
    /// Port of the ZeroMQ socket.
    pub port: u16,
    /// Heartbeat interval between dispatcher and workers, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Missed heartbeats after which a worker is declared dead and its tasks handled as lost.
    pub heartbeat_misses: u32,
    /// Seconds a worker may take to report a task's result; 0 means no deadline.
    pub task_deadline_secs: f64,
    /// Shared secret workers must prove they hold (pull and push modes); unset: none needed.
    pub token_file: Option<PathBuf>,
    /// Most slots a worker may advertise; a `hello` with more is refused. A larger capacity
    /// (processes plus prefetch) is lowered to it.
    pub max_worker_slots: u32,
    /// Largest task arguments pickle run, in bytes; larger tasks end FAILED (PayloadTooLarge).
    pub max_payload_bytes: usize,
    /// Largest result stored, in bytes (local mode's executors and workers' reports); larger
    /// ones end the task FAILED (ResultTooLarge).
    pub max_result_bytes: usize,
    /// Seconds a task found RUNNING at start-up (its dispatcher is gone) waits for its worker to
    /// come back and list or report it before it is re-run or FAILED.
    pub orphan_grace_secs: f64,
    /// Largest ZeroMQ frame accepted from the network, in bytes (a multipart message may add up
    /// to 16 times this); larger ones drop that connection before memory is reserved. Must exceed
    /// the largest function, argument or result pickle plus a little framing.
    pub max_message_bytes: u64,
    pub local: LocalConfig,
    pub executor: ExecutorConfig,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            mode: Mode::Local,
            redis: super::DEFAULT_REDIS.into(),
            name: String::new(),
            result_ttl_secs: 7 * 24 * 3600,
            max_retries: 0,
            drain_timeout_secs: 30.0,
            log_level: "info".into(),
            bind: "127.0.0.1".into(),
            port: 5555,
            heartbeat_interval_ms: 250,
            heartbeat_misses: 4,
            task_deadline_secs: 0.0,
            token_file: None,
            max_worker_slots: 1024,
            max_payload_bytes: super::DEFAULT_SIZE_LIMIT,
            max_result_bytes: super::DEFAULT_SIZE_LIMIT,
            orphan_grace_secs: 60.0,
            max_message_bytes: super::DEFAULT_MAX_MESSAGE_BYTES,
            local: LocalConfig::default(),
            executor: ExecutorConfig::default(),
        }
    }
}

impl DispatcherConfig {
    /// The consumer name actually used.
    pub fn consumer_name(&self) -> String {
        if self.name.is_empty() {
            format!("{}-{}", crate::host::hostname(), self.mode.as_str())
        } else {
            self.name.clone()
        }
    }

    /// The worker token, when `token_file` is set (read now).
    pub fn token(&self) -> Result<Option<Token>, TokenError> {
        self.token_file.as_deref().map(Token::load).transpose()
    }

    /// Local-mode process count with 0 resolved to the number of CPUs.
    pub fn local_processes(&self) -> usize {
        crate::host::processes_or_cpus(self.local.processes)
    }

    /// `max_message_bytes`, typed (call on a validated config).
    pub fn max_message(&self) -> std::num::NonZeroU64 {
        super::max_message(self.max_message_bytes)
    }
}
