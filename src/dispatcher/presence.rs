//! Publishes this dispatcher's workers, slots and executor runtimes to Redis (see
//! `store::presence`), for the gateway's `GET /info` and `/metrics`.
//!
//! A background task writes a fresh snapshot every [`PERIOD`] and withdraws the entry when the
//! [`Presence`] handle is dropped. Where the snapshot comes from: a function it calls itself
//! ([`Presence::polling`], local mode: the pool and the runs in flight are shared), or what the
//! mode loop last offered ([`Presence::offered`] + [`Presence::offer`], pull/push: the worker
//! registry belongs to the loop; offers are rate-limited, so the loop may offer every iteration).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::store::presence::{DispatcherPresence, WorkerPresence};
use crate::store::Store;
use crate::time::now_ms;

/// How often the snapshot is rewritten; readers treat it as gone after [`LIFETIME`].
pub const PERIOD: Duration = Duration::from_secs(1);
const LIFETIME: Duration = Duration::from_secs(4);

type Shared = Arc<Mutex<Vec<WorkerPresence>>>;

/// The mode loop's handle; dropping it withdraws the entry.
pub struct Presence {
    offered: Shared,
    last: Option<Instant>,
    _stop: oneshot::Sender<()>,
}

impl Presence {
    /// Publishes `source()` for dispatcher `name` in `mode`.
    pub fn polling(
        store: Store,
        name: String,
        mode: &str,
        source: impl Fn() -> Vec<WorkerPresence> + Send + 'static,
    ) -> Presence {
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(write(store, name, mode.to_string(), source, stopped));
        Presence {
            offered: Shared::default(),
            last: None,
            _stop: stop,
        }
    }

    /// Publishes what [`Presence::offer`] was given last.
    pub fn offered(store: Store, name: String, mode: &str) -> Presence {
        let offered = Shared::default();
        let shared = offered.clone();
        let mut p = Presence::polling(store, name, mode, move || lock(&shared).clone());
        p.offered = offered;
        p
    }

    /// Offers a new snapshot, built by `workers` at most once per [`PERIOD`].
    pub fn offer(&mut self, workers: impl FnOnce() -> Vec<WorkerPresence>) {
        if self.last.is_some_and(|t| t.elapsed() < PERIOD) {
            return;
        }
        self.last = Some(Instant::now());
        *lock(&self.offered) = workers();
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Vec<WorkerPresence>> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

async fn write(
    store: Store,
    name: String,
    mode: String,
    source: impl Fn() -> Vec<WorkerPresence>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let snapshot = DispatcherPresence {
            name: name.clone(),
            mode: mode.clone(),
            host: crate::host::hostname(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            workers: source(),
            updated_ms: now,
            expires_ms: now + LIFETIME.as_millis() as u64,
        };
        match store.publish_presence(&snapshot).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "could not publish the dispatcher's presence; retrying");
            }
            Err(_) => {}
        }
    }
    if let Err(e) = store.withdraw_presence(&name).await {
        tracing::debug!(error = %e, "could not withdraw the dispatcher's presence; it expires");
    }
}
