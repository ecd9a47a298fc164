//! Daemon configuration: typed settings with defaults, layered from TOML files, drop-ins and the
//! environment, overridden by flags, validated; see docs/configuration.md.

pub mod dispatcher;
pub mod doc;
pub mod env;
pub mod error;
pub mod executor;
pub mod gateway;
pub mod layer;
pub mod load;
pub mod validate;
pub mod worker;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use dispatcher::{DispatcherConfig, LocalConfig, Mode};
pub use error::{ConfigError, Origin, EX_CONFIG};
pub use executor::{ExecutorConfig, Isolation, Network};
pub use gateway::{GatewayConfig, GatewayLimits};
pub use load::{load, Sources, CONFIG_DIR_ENV, DEFAULT_CONFIG_DIR};
pub use worker::{WorkerConfig, WorkerMode};

/// Default of `max_payload_bytes` and `max_result_bytes` (10 MiB, like the gateway's
/// `max_body_bytes`).
pub const DEFAULT_SIZE_LIMIT: usize = 10 * 1024 * 1024;

/// Redis URL used when nothing else is configured.
pub const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";

/// Default `max_message_bytes` of the dispatcher and the worker (64 MiB): well above the
/// 10 MiB payload and result limits plus framing.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest `max_message_bytes` accepted (protocol headers must fit).
pub const MIN_MAX_MESSAGE_BYTES: u64 = 4096;

/// A validated `max_message_bytes` as a typed value (an invalid 0 falls back to the minimum).
fn max_message(bytes: u64) -> std::num::NonZeroU64 {
    std::num::NonZeroU64::new(bytes.max(MIN_MAX_MESSAGE_BYTES)).unwrap_or(std::num::NonZeroU64::MIN)
}

/// The settings of one daemon.
pub trait Settings: Serialize + DeserializeOwned + Default {
    /// Short name: file `NAME.toml`, drop-ins `NAME.d/`, variables `FAAS_NAME_*`.
    const NAME: &'static str;

    /// Checks what serde cannot: ranges, addresses, URLs.
    fn validate(&self) -> Result<(), ConfigError>;

    /// The settings as TOML, as `--check-config` prints them.
    fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::invalid("*", e.to_string()))
    }
}
