//! Stopping runs whose task was cancelled while RUNNING (`POST /cancel`), in every mode.
//!
//! The cancel script makes the task FAILED with `TaskCancelled` and publishes its id on
//! [`keys::CANCEL_CHANNEL`] in the same atomic step. Every dispatcher follows that channel
//! ([`follow`]); the one that has the task in flight stops the run through its [`Stop`]: local
//! mode kills the executor ([`LocalStops`], fed to [`crate::executor::Slot::run_until`]), remote
//! modes send the worker `cancel` (an `Event::Cancel` for the remote loop). The killed run's
//! report then finds the task settled and only acknowledges its queue entry.
//!
//! A cancel can be published between the claim of a run (which made the task RUNNING) and the
//! moment the run is known where it is stopped: local mode registers a run's stop signal before
//! the claim, and remote modes remember recently cancelled ids ([`Recent`]) and check them once
//! the claim is reported to the loop.
//!
//! Ids published while the subscription was away are gone, so after every (re)subscription the
//! runs in flight are checked against Redis: one whose task is COMPLETED or FAILED (cancelled
//! meanwhile, or settled by someone else) is stopped as well; one whose task Redis no longer
//! knows is left to finish (its result is then logged as unknown, as anywhere else).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::core::Core;
use super::runs::InFlight;
use crate::store::follow::{ChannelEvent, ChannelListener};
use crate::store::{keys, TaskStatus};

/// What stopping a run means in a mode.
pub trait Stop: Send + Sync + 'static {
    /// Stops the run of `task_id` here, if there is one (called for every cancelled task of the
    /// cluster; a run this dispatcher does not have is ignored).
    fn stop(&self, task_id: Uuid);
}

/// Task ids cancelled recently (the last [`RECENT_FOR`], at most [`RECENT_MAX`]), for runs
/// whose claim was in flight when the cancel was published.
#[derive(Clone, Default)]
pub struct Recent(Arc<Mutex<HashMap<Uuid, Instant>>>);

/// How long a cancelled id is remembered: longer than any claim takes.
const RECENT_FOR: Duration = Duration::from_secs(60);
/// Most ids remembered (older ones are forgotten first).
const RECENT_MAX: usize = 10_000;

impl Recent {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Instant>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers that `task_id` was cancelled.
    pub fn note(&self, task_id: Uuid) {
        let now = Instant::now();
        let mut m = self.lock();
        if m.len() >= RECENT_MAX {
            m.retain(|_, at| now.duration_since(*at) < RECENT_FOR);
            if m.len() >= RECENT_MAX {
                if let Some(oldest) = m.iter().min_by_key(|(_, at)| **at).map(|(id, _)| *id) {
                    m.remove(&oldest);
                }
            }
        }
        m.insert(task_id, now);
    }

    /// True if `task_id` was cancelled within the last [`RECENT_FOR`].
    pub fn contains(&self, task_id: &Uuid) -> bool {
        self.lock()
            .get(task_id)
            .is_some_and(|at| at.elapsed() < RECENT_FOR)
    }
}

/// Follows the cancel channel for the runs in `in_flight`, stopping them through `stop`, until
/// the returned handle is dropped (the subscription then ends within a ping interval).
#[must_use = "the subscription ends when the handle is dropped"]
pub fn follow<S: Stop>(core: Arc<Core>, in_flight: InFlight, stop: S) -> Arc<impl ChannelListener> {
    let listener = Arc::new(Listener {
        core: core.clone(),
        in_flight,
        stop: Arc::new(stop),
    });
    tokio::spawn(crate::store::follow::follow(
        core.store.connector().clone(),
        keys::CANCEL_CHANNEL,
        Arc::downgrade(&listener),
    ));
    listener
}

struct Listener<S> {
    core: Arc<Core>,
    in_flight: InFlight,
    stop: Arc<S>,
}

impl<S: Stop> ChannelListener for Listener<S> {
    fn on_event(&self, event: ChannelEvent) {
        match event {
            ChannelEvent::Task(id) => self.stop.stop(id),
            ChannelEvent::Subscribed => {
                let (core, runs, stop) =
                    (self.core.clone(), self.in_flight.owned(), self.stop.clone());
                if runs.is_empty() {
                    return;
                }
                tokio::spawn(async move {
                    for run in runs {
                        match core.store.task_status(&run.task_id).await {
                            // A task Redis no longer knows (it lost its data) is not stopped:
                            // its result is reported, and logged as unknown, as usual.
                            Ok(Some(TaskStatus::Running) | None) => {}
                            Ok(Some(_)) => {
                                tracing::info!(task_id = %run.task_id, "task no longer RUNNING (cancelled while unsubscribed?); stopping its run");
                                stop.stop(run.task_id);
                            }
                            // Redis away again: the next subscription checks again.
                            Err(_) => return,
                        }
                    }
                });
            }
        }
    }
}

/// Local mode: one stop signal per run, fired by [`Stop::stop`], awaited by the run.
#[derive(Clone, Default)]
pub struct LocalStops(Arc<Mutex<HashMap<Uuid, oneshot::Sender<()>>>>);

impl LocalStops {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, oneshot::Sender<()>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A signal for the run of `task_id` that completes when it is to be stopped (and never
    /// otherwise); [`Self::forget`] it when the run ends.
    pub fn register(&self, task_id: Uuid) -> impl std::future::Future<Output = ()> + Send {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(task_id, tx);
        async move {
            // A dropped sender (the run was forgotten) must not stop the run.
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn forget(&self, task_id: &Uuid) {
        self.lock().remove(task_id);
    }
}

impl Stop for LocalStops {
    fn stop(&self, task_id: Uuid) {
        if let Some(tx) = self.lock().remove(&task_id) {
            tracing::info!(%task_id, "task cancelled while running here; stopping its run");
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_cancels_are_remembered_and_bounded() {
        let recent = Recent::default();
        let first = Uuid::new_v4();
        recent.note(first);
        assert!(recent.contains(&first));
        assert!(!recent.contains(&Uuid::new_v4()));
        for _ in 0..RECENT_MAX {
            recent.note(Uuid::new_v4());
        }
        assert!(recent.lock().len() <= RECENT_MAX);
        assert!(!recent.contains(&first), "the oldest id made room");
    }

    #[tokio::test]
    async fn a_stop_before_the_run_starts_is_kept() {
        let stops = LocalStops::default();
        let t = Uuid::new_v4();
        let sig = stops.register(t);
        stops.stop(t); // published while the claim was still on its way
        tokio::time::timeout(std::time::Duration::from_secs(1), sig)
            .await
            .expect("the run is stopped as soon as it starts waiting");
    }

    #[tokio::test]
    async fn a_stopped_run_is_signalled_and_others_are_not() {
        let stops = LocalStops::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let sig_a = stops.register(a);
        let sig_b = stops.register(b);
        stops.stop(a);
        stops.stop(Uuid::new_v4()); // not running here: nothing happens
        tokio::time::timeout(std::time::Duration::from_secs(1), sig_a)
            .await
            .expect("a is stopped");
        stops.forget(&b);
        let still = tokio::time::timeout(std::time::Duration::from_millis(50), sig_b).await;
        assert!(still.is_err(), "a forgotten run is never stopped");
    }
}
