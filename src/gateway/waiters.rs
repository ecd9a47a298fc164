//! Long-polls: requests that wait until tasks settle, woken by the done channel.
//!
//! [`Waiters`] is the registry. A request registers the task ids it waits for *before* it reads
//! their state, then sleeps on its own channel; the one subscription of the gateway
//! (`store::done::follow`) calls [`Waiters::on_event`] for every settled task, which wakes exactly
//! the requests waiting for it. After a (re)subscription every request is told to re-read all
//! its tasks, since notifications published meanwhile were lost. There is no polling: an idle
//! waiter costs a map entry and a parked future.
//!
//! The number of task ids waited on at once is bounded (`max_waiters`); a request that would
//! exceed it is refused with 503 and `Retry-After` rather than queued (see docs/python.md).
//!
//! [`wait`] is the whole algorithm for both `GET /result/{id}?wait=` (one id) and `POST /wait`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::store::done::{DoneEvent, DoneListener};
use crate::store::{Store, StoreError, TaskView};

/// What wakes a registered request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// This task settled.
    Done(Uuid),
    /// Notifications may have been lost: re-read everything.
    Recheck,
}

/// The registry of waiting requests.
pub struct Waiters {
    inner: Mutex<Inner>,
    max: usize,
}

#[derive(Default)]
struct Inner {
    /// Task id → keys of the registrations waiting for it.
    by_task: HashMap<Uuid, Vec<u64>>,
    /// Registration key → its wake channel.
    regs: HashMap<u64, mpsc::UnboundedSender<Wake>>,
    /// Task ids registered, over all registrations.
    count: usize,
    next_key: u64,
}

/// The registry is full: `max_waiters` task ids are being waited on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub max: usize,
}

/// One request's registration; dropping it unregisters.
pub struct Registration {
    waiters: Arc<Waiters>,
    key: u64,
    ids: Vec<Uuid>,
    rx: mpsc::UnboundedReceiver<Wake>,
}

impl Waiters {
    /// A registry for at most `max` waited-on task ids.
    pub fn new(max: usize) -> Arc<Waiters> {
        Arc::new(Waiters {
            inner: Mutex::new(Inner::default()),
            max,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere leaves the maps consistent (every update is a single step).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Task ids currently waited on.
    pub fn count(&self) -> usize {
        self.lock().count
    }

    /// The configured bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Registers a request waiting for `ids` (distinct).
    pub fn register(self: &Arc<Self>, ids: &[Uuid]) -> Result<Registration, Full> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        if inner.count + ids.len() > self.max {
            return Err(Full { max: self.max });
        }
        let key = inner.next_key;
        inner.next_key += 1;
        inner.count += ids.len();
        inner.regs.insert(key, tx);
        for id in ids {
            inner.by_task.entry(*id).or_default().push(key);
        }
        Ok(Registration {
            waiters: self.clone(),
            key,
            ids: ids.to_vec(),
            rx,
        })
    }

    fn unregister(&self, key: u64, ids: &[Uuid]) {
        let mut inner = self.lock();
        inner.regs.remove(&key);
        inner.count = inner.count.saturating_sub(ids.len());
        for id in ids {
            if let Some(keys) = inner.by_task.get_mut(id) {
                keys.retain(|k| *k != key);
                if keys.is_empty() {
                    inner.by_task.remove(id);
                }
            }
        }
    }
}

impl DoneListener for Waiters {
    fn on_event(&self, event: DoneEvent) {
        let inner = self.lock();
        match event {
            DoneEvent::Done(id) => {
                for key in inner.by_task.get(&id).into_iter().flatten() {
                    if let Some(tx) = inner.regs.get(key) {
                        let _ = tx.send(Wake::Done(id));
                    }
                }
            }
            DoneEvent::Subscribed => {
                for tx in inner.regs.values() {
                    let _ = tx.send(Wake::Recheck);
                }
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.waiters.unregister(self.key, &self.ids);
    }
}

/// When a wait is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// As soon as one task is settled (or unknown).
    Any,
    /// When every task is settled (or unknown).
    All,
}

/// What a wait found: the last state read of every task (`None`: unknown id).
pub type Views = HashMap<Uuid, Option<TaskView>>;

/// Why a wait could not be done.
#[derive(Debug)]
pub enum WaitError {
    Full(Full),
    Store(StoreError),
}

impl From<StoreError> for WaitError {
    fn from(e: StoreError) -> Self {
        WaitError::Store(e)
    }
}

/// Waits up to `limit` for `ids` (distinct) to settle per `until`; returns the state of every
/// id as last read. A zero `limit` reads once and returns.
pub async fn wait(
    waiters: &Arc<Waiters>,
    store: &Store,
    ids: &[Uuid],
    until: Until,
    limit: Duration,
) -> Result<Views, WaitError> {
    if limit.is_zero() || ids.is_empty() {
        return Ok(read(store, ids).await?);
    }
    let deadline = Instant::now() + limit;
    let mut reg = waiters.register(ids).map_err(WaitError::Full)?;
    let mut views = read(store, ids).await?;
    let mut open: HashSet<Uuid> = views
        .iter()
        .filter(|(_, v)| v.as_ref().is_some_and(|v| !v.status.is_terminal()))
        .map(|(id, _)| *id)
        .collect();
    // Redis errors after the first read (a restart, a killed connection) are retried with
    // back-off until the deadline rather than failing the wait: the re-subscription wakes us.
    let mut backoff = Duration::from_millis(50);
    let mut retry_all = false;
    loop {
        let over = match until {
            Until::Any => open.len() < ids.len(),
            Until::All => open.is_empty(),
        };
        if over {
            break;
        }
        let wakes = if retry_all {
            let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            vec![Wake::Recheck]
        } else {
            let first = match tokio::time::timeout_at(deadline, reg.rx.recv()).await {
                Ok(Some(w)) => w,
                // Timed out (or the registry is gone): answer with what we have.
                Ok(None) | Err(_) => break,
            };
            // Take every wake-up already queued, so one read serves them all.
            let mut wakes = vec![first];
            while let Ok(w) = reg.rx.try_recv() {
                wakes.push(w);
            }
            wakes
        };
        let recheck: Vec<Uuid> = if wakes.contains(&Wake::Recheck) {
            open.iter().copied().collect()
        } else {
            wakes
                .iter()
                .filter_map(|w| match w {
                    Wake::Done(id) if open.contains(id) => Some(*id),
                    _ => None,
                })
                .collect()
        };
        if recheck.is_empty() {
            continue;
        }
        match read(store, &recheck).await {
            Ok(got) => {
                retry_all = false;
                backoff = Duration::from_millis(50);
                for (id, view) in got {
                    if view.as_ref().is_none_or(|v| v.status.is_terminal()) {
                        open.remove(&id);
                    }
                    views.insert(id, view);
                }
            }
            Err(e) if Instant::now() >= deadline => return Err(e.into()),
            Err(e) => {
                tracing::debug!(error = %e, "long-poll: reading task states failed; retrying");
                retry_all = true;
            }
        }
    }
    Ok(views)
}

async fn read(store: &Store, ids: &[Uuid]) -> Result<Views, StoreError> {
    let got = store.task_views(ids).await?;
    Ok(ids.iter().copied().zip(got).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_bounded_and_released_on_drop() {
        let w = Waiters::new(3);
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let r1 = w.register(&[a, b]).expect("room for two");
        assert_eq!(w.count(), 2);
        assert_eq!(w.register(&[a, b]).err(), Some(Full { max: 3 }));
        let r2 = w.register(&[a]).expect("room for one");
        assert_eq!(w.count(), 3);
        drop(r1);
        assert_eq!(w.count(), 1);
        drop(r2);
        assert_eq!(w.count(), 0);
        assert!(w.lock().by_task.is_empty() && w.lock().regs.is_empty());
    }

    #[test]
    fn done_wakes_only_its_waiters_and_subscribed_wakes_all() {
        let w = Waiters::new(10);
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let mut ra = w.register(&[a]).expect("register");
        let mut rab = w.register(&[a, b]).expect("register");
        w.on_event(DoneEvent::Done(b));
        assert!(ra.rx.try_recv().is_err());
        assert_eq!(rab.rx.try_recv(), Ok(Wake::Done(b)));
        w.on_event(DoneEvent::Done(a));
        assert_eq!(ra.rx.try_recv(), Ok(Wake::Done(a)));
        assert_eq!(rab.rx.try_recv(), Ok(Wake::Done(a)));
        w.on_event(DoneEvent::Subscribed);
        assert_eq!(ra.rx.try_recv(), Ok(Wake::Recheck));
        assert_eq!(rab.rx.try_recv(), Ok(Wake::Recheck));
        w.on_event(DoneEvent::Done(Uuid::new_v4()));
        assert!(ra.rx.try_recv().is_err() && rab.rx.try_recv().is_err());
    }
}
