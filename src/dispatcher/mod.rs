//! Dispatcher: moves queued tasks from Redis to executors (local mode) or workers.
//!
//! Start-up: connect to Redis, take the consumer-name lease, start the executor pool, then
//! recover (adopt entries of dead dispatchers, re-read our own pending entries) and loop on the
//! durable queue. See docs/architecture.md. A Redis outage later never ends the dispatcher: its
//! connections recover by themselves ([`crate::store::conn`]), finished results wait for Redis.
//!
//! systemd: `READY=1` once Redis answered, the lease is held and the executors are warm (local)
//! or the ROUTER is bound (pull/push); the mode loop owns the watchdog (pinged by the rule of
//! [`pulse`]) and the `STATUS=` line.

pub mod ahead;
pub mod cancels;
pub mod commit;
pub mod core;
pub mod lease;
pub mod local;
pub mod presence;
pub mod pulse;
pub mod remote;
pub mod runs;

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
    #[error("token_file: {0}")]
    Token(#[from] crate::protocol::auth::TokenError),
}

/// How long a stopping local dispatcher tries to hand unfinished runs back to the queue.
const HAND_BACK_WAIT: Duration = Duration::from_secs(5);

/// Runs a dispatcher with `cfg` until `shutdown` fires.
pub async fn run(cfg: DispatcherConfig, shutdown: Shutdown) -> Result<(), DispatchError> {
    // Redis must answer at start (else exit: systemd restarts us); later outages are waited out.
    let store = Store::connect(
        &cfg.redis,
        Duration::from_secs(cfg.result_ttl_secs),
        crate::store::STARTUP_WAIT,
    )
    .await?;
    let name = cfg.consumer_name();
    let lease = lease::acquire(&store, &name).await?;
    let core = Arc::new(
        core::Core::new(
            store.clone(),
            name.clone(),
            lease.token.clone(),
            cfg.max_retries,
        )
        .with_size_limits(cfg.max_payload_bytes, cfg.max_result_bytes),
    );
    let summary = tokio::spawn(core::summarize(core.clone()));
    // The lease outlives the drain: released only once nothing of ours is running.
    let (lease_stop, lease_shutdown) = crate::shutdown::channel();
    let keeper = tokio::spawn(lease.keep(store.clone(), lease_shutdown));
    let reader = store.retrying(|| QueueReader::open(&store, &name)).await?;
    let drain = Duration::from_secs_f64(cfg.drain_timeout_secs.max(0.0));
    let result = match cfg.mode {
        Mode::Local => {
            let processes = cfg.local_processes();
            let pool = Arc::new(
                ExecutorPool::start(cfg.executor.clone(), processes)
                    .await?
                    .limit_results(cfg.max_result_bytes),
            );
            core.set_runtime(&name, pool.runtime());
            tracing::info!(name, processes, isolation = ?cfg.executor.isolation, "dispatcher ready (local mode)");
            let unfinished = local::run(core.clone(), pool.clone(), reader, shutdown, drain).await;
            pool.shutdown().await;
            // Only now (no executor runs them any more) may unfinished runs go back to the queue.
            let reason = format!("dispatcher {name} stopped before the task finished");
            let hand_back = async {
                for run in &unfinished {
                    if let Err(e) = core.hand_back(run, &reason).await {
                        tracing::error!(task_id = %run.task_id, attempt = run.attempt, error = %e,
                            "could not hand the task back; the next start settles it");
                    }
                }
            };
            if tokio::time::timeout(HAND_BACK_WAIT, hand_back)
                .await
                .is_err()
            {
                tracing::error!(
                    left = unfinished.len(),
                    "Redis unavailable: unfinished tasks stay RUNNING; the next start settles them"
                );
            }
            Ok(())
        }
        Mode::Pull | Mode::Push => remote::run(core, &cfg, reader, shutdown, drain).await,
    };
    summary.abort();
    lease_stop.trigger();
    let _ = keeper.await;
    result
}
