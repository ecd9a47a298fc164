//! Worker daemon: runs tasks from a dispatcher (pull or push mode) on its executor pool.

use thiserror::Error;

use crate::config::WorkerConfig;
use crate::executor::ExecutorError;
use crate::shutdown::Shutdown;

/// Why a worker stopped with an error.
#[derive(Debug, Error)]
pub enum WorkerError {
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    #[error("dispatcher refused this worker: {0}")]
    Refused(String),
    #[error("invalid dispatcher endpoint {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
}

/// Runs a worker with `cfg` until `shutdown` fires.
pub async fn run(cfg: WorkerConfig, shutdown: Shutdown) -> Result<(), WorkerError> {
    let _ = (cfg, shutdown);
    Err(WorkerError::Refused("not implemented".into()))
}
