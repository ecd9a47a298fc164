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
    /// Redis URL of the task store.
    pub redis: String,
    /// Largest accepted request body in bytes (413 beyond).
    pub max_body_bytes: usize,
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
    /// Log level when RUST_LOG is unset: error, warn, info, debug, trace.
    pub log_level: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:8000".into(),
            redis: super::DEFAULT_REDIS.into(),
            max_body_bytes: 10 * 1024 * 1024,
            auth_token_file: None,
            header_read_timeout_secs: 10.0,
            body_read_timeout_secs: 60.0,
            max_connections: 1024,
            max_name_bytes: 256,
            log_level: "info".into(),
        }
    }
}

/// The HTTP limits of a validated [`GatewayConfig`], as typed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_body_bytes: NonZeroUsize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: NonZeroUsize,
    pub max_name_bytes: NonZeroUsize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        GatewayConfig::default().http_limits()
    }
}

impl GatewayConfig {
    /// The HTTP limits (call on a validated config; invalid values fall back to the defaults).
    pub fn http_limits(&self) -> HttpLimits {
        let secs = |v: f64, default: u64| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(default))
        };
        let count = |v: usize, default: usize| {
            NonZeroUsize::new(v)
                .or(NonZeroUsize::new(default))
                .unwrap_or(NonZeroUsize::MIN)
        };
        HttpLimits {
            max_body_bytes: count(self.max_body_bytes, 10 * 1024 * 1024),
            header_read_timeout: secs(self.header_read_timeout_secs, 10),
            body_read_timeout: secs(self.body_read_timeout_secs, 60),
            max_connections: count(self.max_connections, 1024),
            max_name_bytes: count(self.max_name_bytes, 256),
        }
    }
}
