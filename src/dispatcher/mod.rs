//! Dispatcher: moves queued tasks from Redis to executors (local mode) or workers.
//!
//! Start-up: connect to Redis, take the consumer-name lease, start the executor pool, then
//! recover (adopt entries of dead dispatchers, re-read our own pending entries) and loop on the
//! durable queue. See docs/architecture.md.
//!
//! systemd: `READY=1` once Redis answered, the lease is held and the executors are warm (local)
//! or the ROUTER is bound (pull/push); the mode loop owns the watchdog and the `STATUS=` line.

pub mod core;
pub mod lease;
pub mod local;
pub mod presence;
pub mod remote;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::config::{DispatcherConfig, Mode};
use crate::executor::{ExecutorError, ExecutorPool};
use crate::shutdown::Shutdown;
use crate::store::{QueueReader, Store, StoreError};

/// Why a dispatcher stopped with an error.
#[derive(Debug, Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    #[error("cannot bind {endpoint}: {message}")]
    Bind { endpoint: String, message: String },
}

/// Runs a dispatcher with `cfg` until `shutdown` fires.
pub async fn run(cfg: DispatcherConfig, shutdown: Shutdown) -> Result<(), DispatchError> {
    let store = Store::connect(
        &cfg.redis,
        Duration::from_secs(cfg.result_ttl_secs),
        Duration::from_secs(5),
    )
    .await?;
    store.ping().await?;
    let name = cfg.consumer_name();
    let lease = lease::acquire(&store, &name).await?;
    // The lease outlives the drain: released only once nothing of ours is running.
    let (lease_stop, lease_shutdown) = crate::shutdown::channel();
    let keeper = tokio::spawn(lease.keep(store.clone(), lease_shutdown));
    let core = Arc::new(core::Core::new(
        store.clone(),
        name.clone(),
        cfg.max_retries,
    ));
    let reader = QueueReader::open(store.client(), &name).await?;
    let drain = Duration::from_secs_f64(cfg.drain_timeout_secs.max(0.0));
    let result = match cfg.mode {
        Mode::Local => {
            let processes = cfg.local_processes();
            let pool = Arc::new(ExecutorPool::start(cfg.executor.clone(), processes).await?);
            core.set_runtime(&name, pool.runtime());
            tracing::info!(name, processes, isolation = ?cfg.executor.isolation, "dispatcher ready (local mode)");
            let r = local::run(core.clone(), pool.clone(), reader, shutdown, drain).await;
            pool.shutdown().await;
            // Only now (no executor runs them any more) may unfinished runs go back to the queue.
            let reason = format!("dispatcher {name} stopped before the task finished");
            for run in r.as_deref().unwrap_or_default() {
                if let Err(e) = core.hand_back(run, &reason).await {
                    tracing::error!(task_id = %run.task_id, attempt = run.attempt, error = %e,
                        "could not hand the task back; the next start settles it");
                }
            }
            r.map(drop)
        }
        Mode::Pull | Mode::Push => remote::run(core, &cfg, reader, shutdown, drain).await,
    };
    lease_stop.trigger();
    let _ = keeper.await;
    result
}
