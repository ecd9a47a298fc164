//! Semantic checks of the settings (ranges, addresses, URLs), each error naming its key.

use std::net::SocketAddr;

use super::error::ConfigError;
use super::{DispatcherConfig, GatewayConfig, Mode, Settings, WorkerConfig, MIN_MAX_MESSAGE_BYTES};

/// Shortest heartbeat interval accepted, in milliseconds.
pub const MIN_HEARTBEAT_MS: u64 = 10;
/// Longest `wait_timeout_ms` accepted (a minute).
pub const MAX_WAIT_TIMEOUT_MS: u64 = 60_000;

/// Largest `max_payload_bytes` / `max_result_bytes`: Redis's default `proto-max-bulk-len`.
pub const MAX_SIZE_LIMIT: usize = 512 * 1024 * 1024;

type Check = Result<(), ConfigError>;

impl Settings for GatewayConfig {
    const NAME: &'static str = "gateway";

    fn validate(&self) -> Check {
        host_port("listen", &self.listen)?;
        redis_url("redis", &self.redis)?;
        if !(1..=MAX_WAIT_TIMEOUT_MS).contains(&self.wait_timeout_ms) {
            return Err(ConfigError::invalid(
                "wait_timeout_ms",
                format!(
                    "must be 1-{MAX_WAIT_TIMEOUT_MS} milliseconds, got {}",
                    self.wait_timeout_ms
                ),
            ));
        }
        for (key, value) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_waiters", self.max_waiters),
            ("max_batch", self.max_batch),
            ("max_connections", self.max_connections),
            ("max_name_bytes", self.max_name_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        for (key, value) in [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
        ] {
            seconds(key, value)?;
            if value < 0.001 {
                return Err(ConfigError::invalid(
                    key,
                    format!("must be > 0, got {value}"),
                ));
            }
        }
        if let Some(path) = &self.auth_token_file {
            if !path.is_absolute() {
                return Err(ConfigError::invalid(
                    "auth_token_file",
                    format!("{} is not an absolute path", path.display()),
                ));
            }
        }
        seconds("max_wait_secs", self.max_wait_secs)?;
        seconds("max_task_timeout_secs", self.max_task_timeout_secs)?;
        if self.max_task_timeout_secs == 0.0 {
            return Err(ConfigError::invalid(
                "max_task_timeout_secs",
                "must be more than 0",
            ));
        }
        seconds("result_ttl_secs", self.result_ttl_secs as f64)?;
        log_level("log_level", &self.log_level)
    }
}

impl Settings for DispatcherConfig {
    const NAME: &'static str = "dispatcher";

    fn validate(&self) -> Check {
        redis_url("redis", &self.redis)?;
        if self.name.chars().any(char::is_whitespace) {
            return Err(ConfigError::invalid("name", "must not contain whitespace"));
        }
        seconds("result_ttl_secs", self.result_ttl_secs as f64)?;
        seconds("drain_timeout_secs", self.drain_timeout_secs)?;
        log_level("log_level", &self.log_level)?;
        if !(self.bind == "*" || is_host(&self.bind)) {
            return Err(ConfigError::invalid(
                "bind",
                format!("{:?} is not an IP address or host name", self.bind),
            ));
        }
        if self.port == 0 && self.mode != Mode::Local {
            return Err(ConfigError::invalid("port", "must be 1-65535"));
        }
        heartbeat(self.heartbeat_interval_ms, self.heartbeat_misses)?;
        seconds("task_deadline_secs", self.task_deadline_secs)?;
        token_file(self.token_file.as_deref())?;
        if self.max_worker_slots == 0 {
            return Err(ConfigError::invalid(
                "max_worker_slots",
                "must be at least 1",
            ));
        }
        size_limit("max_payload_bytes", self.max_payload_bytes)?;
        size_limit("max_result_bytes", self.max_result_bytes)?;
        seconds("orphan_grace_secs", self.orphan_grace_secs)?;
        max_message_bytes(self.max_message_bytes)?;
        // A pickle within the size limits must fit through the transport guard, or it would be
        // dropped with its connection and sent again and again.
        fits_in_message(
            "max_payload_bytes",
            self.max_payload_bytes,
            self.max_message_bytes,
        )?;
        fits_in_message(
            "max_result_bytes",
            self.max_result_bytes,
            self.max_message_bytes,
        )?;
        self.executor.validate()
    }
}

impl Settings for WorkerConfig {
    const NAME: &'static str = "worker";

    fn validate(&self) -> Check {
        let Some(rest) = self.dispatcher.strip_prefix("tcp://") else {
            return Err(ConfigError::invalid(
                "dispatcher",
                format!(
                    "{:?} is not a tcp:// endpoint (e.g. tcp://127.0.0.1:5555)",
                    self.dispatcher
                ),
            ));
        };
        host_port("dispatcher", rest)?;
        if self.id.chars().any(char::is_whitespace) {
            return Err(ConfigError::invalid("id", "must not contain whitespace"));
        }
        heartbeat(self.heartbeat_interval_ms, self.heartbeat_misses)?;
        seconds("drain_timeout_secs", self.drain_timeout_secs)?;
        max_message_bytes(self.max_message_bytes)?;
        log_level("log_level", &self.log_level)?;
        token_file(self.token_file.as_deref())?;
        size_limit("max_result_bytes", self.max_result_bytes)?;
        fits_in_message(
            "max_result_bytes",
            self.max_result_bytes,
            self.max_message_bytes,
        )?;
        self.executor.validate()
    }
}

/// A worker token file: an absolute path to a readable file holding an acceptable token.
fn token_file(path: Option<&std::path::Path>) -> Check {
    let Some(path) = path else {
        return Ok(());
    };
    if !path.is_absolute() {
        return Err(ConfigError::invalid(
            "token_file",
            format!("{} is not an absolute path", path.display()),
        ));
    }
    crate::protocol::auth::Token::load(path)
        .map(|_| ())
        .map_err(|e| ConfigError::invalid("token_file", e.to_string()))
}

/// A pickle size limit that one ZeroMQ frame of `max_message_bytes` can carry.
fn fits_in_message(key: &str, value: usize, max_message: u64) -> Check {
    if value as u64 <= max_message {
        return Ok(());
    }
    Err(ConfigError::invalid(
        key,
        format!(
            "{value} is more than max_message_bytes ({max_message}): such pickles could never be \
             sent; lower {key} or raise max_message_bytes"
        ),
    ))
}

/// A size limit in bytes: 1 up to what Redis stores in one value.
fn size_limit(key: &str, value: usize) -> Check {
    if (1..=MAX_SIZE_LIMIT).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be 1-{MAX_SIZE_LIMIT} bytes (Redis stores at most 512 MiB in one value), got {value}"),
        ))
    }
}

fn max_message_bytes(value: u64) -> Check {
    if value < MIN_MAX_MESSAGE_BYTES {
        return Err(ConfigError::invalid(
            "max_message_bytes",
            format!("must be at least {MIN_MAX_MESSAGE_BYTES}, got {value}"),
        ));
    }
    Ok(())
}

fn heartbeat(interval_ms: u64, misses: u32) -> Check {
    if interval_ms < MIN_HEARTBEAT_MS {
        return Err(ConfigError::invalid(
            "heartbeat_interval_ms",
            format!("must be at least {MIN_HEARTBEAT_MS}, got {interval_ms}"),
        ));
    }
    if misses == 0 {
        return Err(ConfigError::invalid(
            "heartbeat_misses",
            "must be at least 1",
        ));
    }
    Ok(())
}

fn seconds(key: &str, value: f64) -> Check {
    if value.is_finite() && (0.0..=1e9).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be a number of seconds >= 0, got {value}"),
        ))
    }
}

fn redis_url(key: &str, url: &str) -> Check {
    crate::store::Endpoint::parse(url).map(drop).map_err(|e| {
        ConfigError::invalid(
            key,
            format!(
                "{:?} is not a Redis URL (redis://HOST:PORT/DB or \
                 redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]): {e}",
                crate::store::endpoint::redact(url)
            ),
        )
    })
}

fn log_level(key: &str, level: &str) -> Check {
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(|_| ())
        .map_err(|e| {
            ConfigError::invalid(
                key,
                format!(
                    "{level:?} is not a level (error, warn, info, debug, trace) or filter: {e}"
                ),
            )
        })
}

/// `HOST:PORT` with an IP address or host name and a non-zero port.
fn host_port(key: &str, addr: &str) -> Check {
    if addr.parse::<SocketAddr>().is_ok_and(|a| a.port() != 0) {
        return Ok(());
    }
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| is_host(host) && port.parse::<u16>().is_ok_and(|p| p != 0));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("{addr:?} is not HOST:PORT (e.g. 127.0.0.1:8000)"),
        ))
    }
}

/// An IP address or a DNS host name.
fn is_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        GatewayConfig::default().validate().unwrap();
        DispatcherConfig::default().validate().unwrap();
        WorkerConfig::default().validate().unwrap();
    }

    #[test]
    fn addresses() {
        assert!(host_port("k", "127.0.0.1:8000").is_ok());
        assert!(host_port("k", "[::1]:8000").is_ok());
        assert!(host_port("k", "localhost:80").is_ok());
        assert!(host_port("k", "localhost").is_err());
        assert!(host_port("k", "a b:80").is_err());
        assert!(host_port("k", "h:0").is_err());
    }

    #[test]
    fn errors_name_keys() {
        let w = WorkerConfig {
            dispatcher: "127.0.0.1:5555".into(),
            ..Default::default()
        };
        assert!(w
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`dispatcher`"));
        let mut d = DispatcherConfig {
            heartbeat_interval_ms: 5,
            ..Default::default()
        };
        let msg = d.validate().unwrap_err().to_string();
        assert!(msg.contains("`heartbeat_interval_ms`"), "{msg}");
        d.heartbeat_interval_ms = 250;
        d.executor.python = " ".into();
        let msg = d.validate().unwrap_err().to_string();
        assert!(msg.contains("`executor.python`"), "{msg}");
        let g = GatewayConfig {
            redis: "http://x".into(),
            ..Default::default()
        };
        assert!(g.validate().unwrap_err().to_string().contains("`redis`"));
        let g = GatewayConfig {
            redis: "redis+sentinel://:pw@h1:26379,h2/faas".into(),
            ..Default::default()
        };
        g.validate().unwrap();
        let g = GatewayConfig {
            redis: "redis+sentinel://:secret@h1:26379".into(),
            ..Default::default()
        };
        let msg = g.validate().unwrap_err().to_string();
        assert!(
            msg.contains("master name") && !msg.contains("secret"),
            "{msg}"
        );
        let g = GatewayConfig {
            wait_timeout_ms: 0,
            ..Default::default()
        };
        assert!(g
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`wait_timeout_ms`"));
    }
}
