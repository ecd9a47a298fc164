//! Settings of faas-gateway (`gateway.toml`).

use serde::{Deserialize, Serialize};

/// Everything faas-gateway can be told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address the HTTP API listens on.
    pub listen: String,
    /// Redis URL of the task store.
    pub redis: String,
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
            max_body_bytes: 10 * 1024 * 1024,
            log_level: "info".into(),
        }
    }
}
