//! faas: a Function-as-a-Service platform for Python users (gateway, dispatcher, workers, executors).
//!
//! The binaries in `src/bin/` are thin shims over this library:
//! - [`gateway`] serves the HTTP API and writes functions and tasks to Redis;
//! - [`dispatcher`] takes queued tasks from Redis and runs them (locally or on workers);
//! - [`executor`] runs Python functions in isolated, supervised processes;
//! - [`store`] owns the Redis schema and every state transition of a task;
//! - [`pickle`] validates client payloads and builds the platform's own exception pickles;
//! - [`notify`] and [`logging`] integrate with systemd (sd_notify, journald).

pub mod cli;
pub mod config;
pub mod daemon;
pub mod dispatcher;
pub mod executor;
pub mod gateway;
pub mod host;
pub mod logging;
pub mod notify;
pub mod payload;
pub mod pickle;
pub mod protocol;
pub mod runtime;
pub mod shutdown;
pub mod store;
pub mod time;
pub mod worker;
