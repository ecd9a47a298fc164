//! The load generator's error type: every failure names what was being done.

use thiserror::Error;

/// Why a run failed.
#[derive(Debug, Error)]
pub enum Error {
    /// A command-line value that parsed but cannot be used.
    #[error("{0}")]
    Usage(String),
    /// The gateway's address could not be resolved or connected to.
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    /// The HTTP connection failed (reset, closed, protocol error).
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The gateway answered with an unexpected status code.
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        what: &'static str,
        status: u16,
        body: String,
    },
    /// The gateway's answer was not the JSON expected.
    #[error("{what}: unexpected response: {detail}")]
    Response { what: &'static str, detail: String },
    /// Generating or reading the function and argument payloads failed.
    #[error("payload: {0}")]
    Payload(String),
    /// Reading task states from Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Local I/O (output file, stdin handshake, runtime start).
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A task of the generator itself panicked or was cancelled.
    #[error("{0}")]
    Task(String),
    /// A bound of the run was hit before the work was done.
    #[error("{0}")]
    Timeout(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
