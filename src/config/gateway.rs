//! Settings of faas-gateway (`gateway.toml`).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything faas-gateway can be told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address the HTTP API listens on.
    pub listen: String,
    /// Redis URL of the task store (`redis://…` or `redis+sentinel://…`).
    pub redis: String,
    /// Replicas that must have a new task before `/execute_function` answers (Redis `WAIT`);
    /// 0 does not wait.
    pub wait_replicas: u32,
    /// Longest wait for those replicas, in milliseconds; fewer by then is a 503.
    pub wait_timeout_ms: u64,
    /// Largest accepted request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Log level when RUST_LOG is unset: error, warn, info, debug, trace.
    pub log_level: String,
    /// Longest wait of one long-poll in seconds (`GET /result/{id}?wait=`, `POST /wait`); longer
    /// requested waits are shortened to it.
    pub max_wait_secs: f64,
    /// Most task ids waited on at once over all long-polls; a request beyond gets 503.
    pub max_waiters: usize,
    /// Most tasks in one batch request (`POST /execute_batch`, `POST /wait`).
    pub max_batch: usize,
    /// Largest per-task `timeout` (seconds) a client may ask for; larger ones get 422.
    pub max_task_timeout_secs: f64,
    /// Seconds the records of tasks settled by the gateway itself (cancelled, function deleted)
    /// are kept; 0 keeps them. The dispatcher's `result_ttl_secs` covers all others.
    pub result_ttl_secs: u64,
    /// Bearer tokens, one per line; when set, every route but /healthz needs one (401 without).
    pub auth_token_file: Option<PathBuf>,
    /// Seconds a client may take to send a request's headers (also the keep-alive idle time).
    pub header_read_timeout_secs: f64,
    /// Seconds a client may take to send a request's body (408 beyond).
    pub body_read_timeout_secs: f64,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Longest function `name` accepted by /register_function, in bytes (400 beyond).
    pub max_name_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:8000".into(),
            redis: super::DEFAULT_REDIS.into(),
            wait_replicas: 0,
            wait_timeout_ms: 1000,
            max_body_bytes: 10 * 1024 * 1024,
            log_level: "info".into(),
            max_wait_secs: 60.0,
            max_waiters: 100_000,
            max_batch: 1000,
            max_task_timeout_secs: 86_400.0,
            result_ttl_secs: 7 * 24 * 3600,
            auth_token_file: None,
            header_read_timeout_secs: 10.0,
            body_read_timeout_secs: 60.0,
            max_connections: 4096,
            max_name_bytes: 256,
        }
    }
}

/// The gateway's limits as typed values (from a validated [`GatewayConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayLimits {
    pub max_body_bytes: NonZeroUsize,
    pub max_wait: Duration,
    pub max_waiters: NonZeroUsize,
    pub max_batch: NonZeroUsize,
    pub max_task_timeout: Duration,
    /// Zero: kept forever.
    pub result_ttl: Duration,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: NonZeroUsize,
    pub max_name_bytes: NonZeroUsize,
}

impl GatewayConfig {
    /// `wait_timeout_ms` as a duration.
    pub fn wait_timeout(&self) -> Duration {
        Duration::from_millis(self.wait_timeout_ms)
    }

    /// The limits, typed. Call on a validated config (invalid values fall back to 1 / zero).
    pub fn limits(&self) -> GatewayLimits {
        let nz = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        let secs = |s: f64| Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO);
        GatewayLimits {
            max_body_bytes: nz(self.max_body_bytes),
            max_wait: secs(self.max_wait_secs),
            max_waiters: nz(self.max_waiters),
            max_batch: nz(self.max_batch),
            max_task_timeout: secs(self.max_task_timeout_secs),
            result_ttl: Duration::from_secs(self.result_ttl_secs),
            header_read_timeout: secs(self.header_read_timeout_secs),
            body_read_timeout: secs(self.body_read_timeout_secs),
            max_connections: nz(self.max_connections),
            max_name_bytes: nz(self.max_name_bytes),
        }
    }
}

impl Default for GatewayLimits {
    fn default() -> Self {
        GatewayConfig::default().limits()
    }
}
