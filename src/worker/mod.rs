//! Worker daemon: runs tasks from a dispatcher (pull or push mode) on its executor pool.
//!
//! [`run`] starts the [`ExecutorPool`], then the mode loop ([`pull`]: two REQ sockets, [`push`]:
//! one DEALER) speaking docs/protocol.md. Both keep the running tasks and an outbox of finished,
//! unacknowledged results ([`state`]), re-send the outbox after every reconnect, rebuild their
//! sockets when the dispatcher goes silent ([`connect`]), and drain on shutdown: `bye`, let running
//! tasks finish (up to `drain_timeout_secs`), report them, kill and hand back (`release`) those
//! still running at the deadline, wait briefly for acks.
//!
//! systemd: the mode loop pings the watchdog; [`systemd`] turns the [`Status`] channel into
//! `READY=1` (executors warm and registered) and `STATUS=` lines.

mod auth;
mod connect;
mod conv;
mod pull;
mod push;
mod session;
mod state;
pub mod systemd;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, watch};

use crate::config::{WorkerConfig, WorkerMode};
use crate::executor::{ExecutorError, ExecutorPool};
use crate::protocol::guard::Limits;
use crate::protocol::{WorkerInfo, VERSION};
use crate::shutdown::Shutdown;

use connect::Link;
use session::{Ctx, Drain, Timing};
use state::State;

/// Why a worker stopped with an error.
#[derive(Debug, Error)]
pub enum WorkerError {
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    #[error("dispatcher refused this worker: {0}")]
    Refused(String),
    #[error("invalid dispatcher endpoint {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("invalid worker configuration: {0}")]
    Config(String),
    #[error("authentication: {0}")]
    Auth(String),
}

/// A snapshot of the worker for status lines (e.g. sd-notify `STATUS=`), published on every
/// change through the channel given to [`run_with_status`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub slots: usize,
    /// Runs held: executing or prefetched (waiting for a process).
    pub running: usize,
    /// Tasks it can still take, as announced to the dispatcher (0 while draining).
    pub free: u32,
    /// Finished results not acknowledged yet.
    pub unacked: usize,
    /// Registered with the dispatcher (a `welcome` arrived on the current connection).
    pub registered: bool,
    /// Shutdown was requested; running tasks are being drained.
    pub draining: bool,
}

/// Tasks this worker holds at once and advertises (`capacity` in `hello`, the `free` of `fetch`
/// and `heartbeat`): its processes plus the tasks queued for one to come free (prefetch). A
/// prefetched task waits in the pool's queue (FIFO) while the dispatcher counts it as sent, so
/// it can wait behind a long task for up to that task's run time; prefetch hides the round
/// trip of a refill for short tasks. It is the pool's own admission
/// ([`ExecutorPool::capacity`]: processes × (1 + `executor.prefetch`); prefetch 0, the default,
/// holds no more tasks than processes).
pub(crate) fn capacity(pool: &ExecutorPool) -> usize {
    pool.capacity()
}

/// Runs a worker with `cfg` until `shutdown` fires.
pub async fn run(cfg: WorkerConfig, shutdown: Shutdown) -> Result<(), WorkerError> {
    let (status, rx) = watch::channel(Status::default());
    let follower = crate::notify::enabled().then(|| {
        tokio::spawn(systemd::follow(
            rx,
            cfg.mode.as_str(),
            cfg.dispatcher.clone(),
        ))
    });
    let result = run_with_status(cfg, shutdown, status).await;
    if let Some(f) = follower {
        f.abort();
    }
    result
}

/// [`run`], publishing a [`Status`] on `status` whenever it changes (readiness is the first
/// publication after the pool started).
pub async fn run_with_status(
    cfg: WorkerConfig,
    shutdown: Shutdown,
    status: watch::Sender<Status>,
) -> Result<(), WorkerError> {
    if !(cfg.drain_timeout_secs.is_finite() && cfg.drain_timeout_secs >= 0.0) {
        return Err(WorkerError::Config(format!(
            "drain_timeout_secs must be >= 0, got {}",
            cfg.drain_timeout_secs
        )));
    }
    let token = cfg
        .token()
        .map_err(|e| WorkerError::Config(format!("token_file: {e}")))?;
    let id = cfg.worker_id();
    let limits = Limits::from_max_message_bytes(cfg.max_message().get());
    let link = Link::new(&cfg.dispatcher, &id, limits)?;
    let slots = cfg.slots();
    let pool = Arc::new(
        ExecutorPool::start(cfg.executor.clone(), slots)
            .await?
            .limit_results(cfg.max_result_bytes),
    );
    let info = WorkerInfo {
        id: id.clone(),
        slots: u32::try_from(slots).unwrap_or(u32::MAX),
        capacity: Some(u32::try_from(capacity(&pool)).unwrap_or(u32::MAX)),
        host: crate::host::hostname(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: VERSION,
        runtime: pool.runtime().unwrap_or_default(),
    };
    let (done_tx, done) = mpsc::unbounded_channel();
    let mut ctx = Ctx {
        info,
        link,
        timing: Timing::new(cfg.heartbeat_interval_ms, cfg.heartbeat_misses),
        state: State::new(&id, pool.clone(), done_tx),
        token,
        done,
        shutdown,
        drain: Drain::default(),
        drain_timeout: Duration::from_secs_f64(cfg.drain_timeout_secs),
        status,
        registered: false,
        release: Vec::new(),
        release_sent: false,
        watchdog: crate::notify::Watchdog::from_env(),
    };
    ctx.publish();
    tracing::info!(worker = %id, dispatcher = %cfg.dispatcher, mode = cfg.mode.as_str(), slots, capacity = ctx.state.capacity(),
        "worker ready");
    let result = match cfg.mode {
        WorkerMode::Push => push::run(&mut ctx).await,
        WorkerMode::Pull => pull::run(&mut ctx).await,
    };
    ctx.state.abort_running();
    pool.shutdown().await;
    ctx.registered = false;
    ctx.publish();
    if result.is_ok() {
        tracing::info!(worker = %id, dispatcher = %cfg.dispatcher, "left dispatcher");
    }
    result
}
