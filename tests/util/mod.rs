//! Shared helpers of the integration tests: a private redis-server per test, Python pickles.
#![allow(dead_code)]

pub mod dispatch;
pub mod monitor;
pub mod python;
pub mod redis;
pub mod remote;
pub mod worker;
pub mod zmq;

/// Test log output (`RUST_LOG` or faas at debug), captured per test; once per process.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "faas=debug".into()),
        )
        .try_init();
}
