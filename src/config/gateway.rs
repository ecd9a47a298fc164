//! Settings of faas-gateway (`gateway.toml`).

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
        }
    }
}

impl GatewayConfig {
    /// `wait_timeout_ms` as a duration.
    pub fn wait_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.wait_timeout_ms)
    }
}
