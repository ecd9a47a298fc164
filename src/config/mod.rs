//! Daemon configuration: typed settings with defaults, loaded from TOML and overridden by flags.

pub mod dispatcher;
pub mod gateway;
pub mod load;
pub mod worker;

pub use dispatcher::{DispatcherConfig, LocalConfig, Mode};
pub use gateway::GatewayConfig;
pub use load::{load_file, ConfigError};
pub use worker::{WorkerConfig, WorkerMode};

/// Redis URL used when nothing else is configured.
pub const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";
