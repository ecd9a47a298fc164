//! The configuration of a worker run in the test process: executors as the test's own user on
//! the test Python, fast liveness settings.

use faas::config::{ExecutorConfig, WorkerConfig, WorkerMode};

use super::python;

/// A worker of `mode` with `slots` executor processes, connecting to `endpoint`, its id made of
/// `prefix` and a random suffix, heartbeating every `heartbeat_ms` (three misses).
pub fn config(
    mode: WorkerMode,
    slots: usize,
    endpoint: String,
    prefix: &str,
    heartbeat_ms: u64,
) -> WorkerConfig {
    WorkerConfig {
        mode,
        processes: slots,
        dispatcher: endpoint,
        id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
        heartbeat_interval_ms: heartbeat_ms,
        heartbeat_misses: 3,
        drain_timeout_secs: 5.0,
        executor: ExecutorConfig {
            python: python::python(),
            user: String::new(),
            ..ExecutorConfig::default()
        },
        ..WorkerConfig::default()
    }
}
