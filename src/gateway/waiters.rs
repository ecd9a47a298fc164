//! Long-polls: requests that wait until tasks settle, woken by the done channel.
//!
//! [`Waiters`] is the registry. A request registers the task ids it waits for *before* it reads
//! their state, then sleeps on its own channel; the one subscription of the gateway
//! (`store::follow::follow`) calls [`Waiters::on_event`] for every settled task, which wakes exactly
//! the requests waiting for it. After a (re)subscription every request is told to re-read all
//! its tasks, since notifications published meanwhile were lost. There is no polling: an idle
//! waiter costs a map entry and a parked future.
//!
//! The number of task ids waited on at once is bounded (`max_waiters`); a request that would
//! exceed it is refused with 503 and `Retry-After` rather than queued (see docs/python.md).
//!
//! The registry also remembers the most recent settled ids ([`RECENT`]) with a sequence number.
//! A `POST /wait` answer carries a [`Cursor`] (this gateway, this subscription, the sequence
//! number when the request registered); a client that asks again about the ids it was told are
//! pending, with that cursor, spares the re-reading of all of them from Redis: only those that
//! settled since (per the remembered ids) are read. The cursor is sealed with a keyed hash of the
//! ids the answer called pending, so it vouches for exactly those: a cursor sent with other ids
//! (a client that lies, or a fuzzer that reuses a cursor), from another gateway, from before a
//! re-subscription, or older than what is remembered, is ignored (everything is read).
//!
//! [`wait`] is the whole algorithm for both `GET /result/{id}?wait=` (one id) and `POST /wait`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::store::follow::{ChannelEvent, ChannelListener};
use crate::store::{Store, StoreError, TaskView};

/// What wakes a registered request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// This task settled.
    Done(Uuid),
    /// Notifications may have been lost: re-read everything.
    Recheck,
}

/// Settled task ids remembered for cursors (about 40 bytes each).
pub const RECENT: usize = 200_000;

/// The registry of waiting requests.
pub struct Waiters {
    inner: Mutex<Inner>,
    max: usize,
    /// Tells cursors of this gateway process from others'.
    instance: u64,
    /// The secret key of cursor seals (random per process).
    seal_key: RandomState,
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
    /// Subscriptions so far (a cursor is valid within one).
    epoch: u64,
    /// Done events so far.
    seq: u64,
    /// Recently settled ids → the sequence number of their event, and the eviction order.
    recent: HashMap<Uuid, u64>,
    order: VecDeque<(u64, Uuid)>,
    /// Events up to this sequence number are forgotten.
    forgotten: u64,
}

/// Where a wait stood: which gateway, which subscription, which event; and the seal of the ids
/// it was handed out with (0 until [`Waiters::seal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    instance: u64,
    epoch: u64,
    seq: u64,
    seal: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:x}.{:x}.{:x}.{:x}",
            self.instance, self.epoch, self.seq, self.seal
        )
    }
}

impl std::str::FromStr for Cursor {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let mut it = s.split('.').map(|p| u64::from_str_radix(p, 16));
        match (it.next(), it.next(), it.next(), it.next(), it.next()) {
            (Some(Ok(instance)), Some(Ok(epoch)), Some(Ok(seq)), Some(Ok(seal)), None) => {
                Ok(Cursor {
                    instance,
                    epoch,
                    seq,
                    seal,
                })
            }
            _ => Err(()),
        }
    }
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
    /// Where the registry stood when this registered.
    cursor: Cursor,
}

impl Waiters {
    /// A registry for at most `max` waited-on task ids.
    pub fn new(max: usize) -> Arc<Waiters> {
        Arc::new(Waiters {
            inner: Mutex::new(Inner::default()),
            max,
            instance: Uuid::new_v4().as_u64_pair().0,
            seal_key: RandomState::new(),
        })
    }

    /// `cursor` sealed for the (distinct) ids an answer calls `pending`, in any order.
    pub fn seal(&self, cursor: Cursor, pending: &[Uuid]) -> Cursor {
        Cursor {
            seal: self.seal_of(&cursor, pending),
            ..cursor
        }
    }

    fn seal_of(&self, c: &Cursor, ids: &[Uuid]) -> u64 {
        // Order-independent: a sum of the ids' keyed hashes, itself hashed with the position.
        let set = ids
            .iter()
            .fold(0u64, |sum, id| sum.wrapping_add(self.seal_key.hash_one(id)));
        self.seal_key.hash_one((c.instance, c.epoch, c.seq, set))
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
        let cursor = self.cursor_at(&inner);
        Ok(Registration {
            waiters: self.clone(),
            key,
            ids: ids.to_vec(),
            rx,
            cursor,
        })
    }

    /// Where the registry stands now.
    fn cursor(&self) -> Cursor {
        self.cursor_at(&self.lock())
    }

    /// Where the registry stands, per its locked state (not sealed yet).
    fn cursor_at(&self, inner: &Inner) -> Cursor {
        Cursor {
            instance: self.instance,
            epoch: inner.epoch,
            seq: inner.seq,
            seal: 0,
        }
    }

    /// Which of `ids` settled after `cursor`; `None` when the cursor cannot tell (not sealed
    /// for exactly these ids, another gateway, an earlier subscription, or events forgotten
    /// since).
    fn settled_since(&self, cursor: &Cursor, ids: &[Uuid]) -> Option<Vec<Uuid>> {
        if cursor.seal != self.seal_of(cursor, ids) {
            return None;
        }
        let inner = self.lock();
        if cursor.instance != self.instance
            || cursor.epoch != inner.epoch
            || cursor.seq < inner.forgotten
            || cursor.seq > inner.seq
        {
            return None;
        }
        Some(
            ids.iter()
                .filter(|id| inner.recent.get(id).is_some_and(|s| *s > cursor.seq))
                .copied()
                .collect(),
        )
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

impl ChannelListener for Waiters {
    fn on_event(&self, event: ChannelEvent) {
        let mut inner = self.lock();
        match event {
            ChannelEvent::Task(id) => {
                inner.seq += 1;
                let seq = inner.seq;
                inner.recent.insert(id, seq);
                inner.order.push_back((seq, id));
                if inner.order.len() > RECENT {
                    if let Some((old, old_id)) = inner.order.pop_front() {
                        if inner.recent.get(&old_id) == Some(&old) {
                            inner.recent.remove(&old_id);
                        }
                        inner.forgotten = old;
                    }
                }
                for key in inner.by_task.get(&id).into_iter().flatten() {
                    if let Some(tx) = inner.regs.get(key) {
                        let _ = tx.send(Wake::Done(id));
                    }
                }
            }
            ChannelEvent::Subscribed => {
                // Events published while unsubscribed are lost: cursors so far are void.
                inner.epoch += 1;
                inner.recent.clear();
                inner.order.clear();
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
    /// As soon as one task is settled (or unknown), plus up to `gather` to collect more that
    /// end meanwhile (fewer, fuller answers for a client following many tasks).
    Any { gather: Duration },
    /// When every task is settled (or unknown).
    All,
}

/// What a wait found: the last state read of every task (`None`: unknown id; tasks known to be
/// pending through a cursor and not read are absent), and the cursor for the next wait.
pub struct Found {
    pub views: Views,
    pub cursor: Cursor,
}

/// The last state read of every task (`None`: unknown id).
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

/// Tasks a client was told are pending, with the cursor of that answer.
pub struct Known<'a> {
    pub cursor: Cursor,
    pub pending: &'a [Uuid],
}

/// Waits up to `limit` for the tasks `ids` and `known.pending` (all distinct) to settle per
/// `until`; returns the state of every id read. A zero `limit` reads once and returns.
pub async fn wait(
    waiters: &Arc<Waiters>,
    store: &Store,
    ids: &[Uuid],
    known: Option<Known<'_>>,
    until: Until,
    limit: Duration,
) -> Result<Found, WaitError> {
    let known_ids = known.as_ref().map_or(&[][..], |k| k.pending);
    let mut all = ids.to_vec();
    all.extend_from_slice(known_ids);
    let total = all.len();
    let deadline = Instant::now() + limit;
    // Registered before reading, so nothing that settles after the read goes unnoticed. A
    // request that does not wait takes no place among the waiters.
    let (reg, cursor) = if limit.is_zero() || total == 0 {
        (None, waiters.cursor())
    } else {
        let r = waiters.register(&all).map_err(WaitError::Full)?;
        let c = r.cursor;
        (Some(r), c)
    };
    // Known-pending tasks need reading only if they settled since their cursor.
    let mut to_read = ids.to_vec();
    let mut assumed: HashSet<Uuid> = HashSet::new();
    match known
        .as_ref()
        .and_then(|k| waiters.settled_since(&k.cursor, known_ids))
    {
        Some(settled) => {
            assumed = known_ids.iter().copied().collect();
            for id in settled {
                assumed.remove(&id);
                to_read.push(id);
            }
        }
        None => to_read.extend_from_slice(known_ids),
    }
    let mut views = read(store, &to_read).await?;
    let mut open: HashSet<Uuid> = views
        .iter()
        .filter(|(_, v)| v.as_ref().is_some_and(|v| !v.status.is_terminal()))
        .map(|(id, _)| *id)
        .collect();
    open.extend(assumed);
    let Some(mut reg) = reg else {
        return Ok(Found { views, cursor });
    };
    // Redis errors after the first read (a restart, a killed connection) are retried with
    // back-off until the deadline rather than failing the wait: the re-subscription wakes us.
    let mut backoff = Duration::from_millis(50);
    let mut retry_all = false;
    let mut stop_at = deadline;
    let mut gather_until: Option<Instant> = None;
    loop {
        match until {
            Until::All if open.is_empty() => break,
            Until::Any { gather } if open.len() < total => {
                if open.is_empty() || gather.is_zero() {
                    break;
                }
                let until =
                    *gather_until.get_or_insert_with(|| (Instant::now() + gather).min(deadline));
                if Instant::now() >= until {
                    break;
                }
                stop_at = until;
            }
            _ => {}
        }
        let wakes = if retry_all {
            let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            vec![Wake::Recheck]
        } else {
            let first = match tokio::time::timeout_at(stop_at, reg.rx.recv()).await {
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
    Ok(Found { views, cursor })
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
    fn cursors_tell_what_settled_since_and_expire() {
        let w = Waiters::new(10);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        w.on_event(ChannelEvent::Subscribed);
        w.on_event(ChannelEvent::Task(a));
        let cur = w.seal(w.cursor(), &[a, b, c]);
        assert_eq!(cur.to_string().parse::<Cursor>(), Ok(cur));
        assert_eq!(w.settled_since(&cur, &[a, b, c]), Some(vec![]));
        w.on_event(ChannelEvent::Task(b));
        assert_eq!(w.settled_since(&cur, &[a, b, c]), Some(vec![b]));
        assert_eq!(
            w.settled_since(&cur, &[c, a, b]),
            Some(vec![b]),
            "the same ids in another order"
        );
        for ids in [&[a, b][..], &[a, b, c, Uuid::new_v4()], &[a, b, a, c]] {
            assert_eq!(
                w.settled_since(&cur, ids),
                None,
                "ids the cursor was not sealed for: {ids:?}"
            );
        }
        let unsealed = w.cursor();
        assert_eq!(w.settled_since(&unsealed, &[a]), None, "an unsealed cursor");
        let resealed = |c: Cursor| w.seal(c, &[a]);
        let other = resealed(Cursor {
            instance: cur.instance ^ 1,
            ..cur
        });
        assert_eq!(
            w.settled_since(&other, &[a]),
            None,
            "another gateway's cursor"
        );
        let future = resealed(Cursor {
            seq: cur.seq + 99,
            ..cur
        });
        assert_eq!(
            w.settled_since(&future, &[a]),
            None,
            "a cursor from the future"
        );
        let forged = Cursor {
            seq: cur.seq + 1,
            ..cur
        };
        assert_eq!(
            w.settled_since(&forged, &[a, b, c]),
            None,
            "a seal moved to another position"
        );
        let cur = resealed(cur);
        assert_eq!(w.settled_since(&cur, &[a]), Some(vec![]));
        w.on_event(ChannelEvent::Subscribed);
        assert_eq!(
            w.settled_since(&cur, &[a]),
            None,
            "events may have been lost"
        );
        let cur = resealed(w.cursor());
        for _ in 0..RECENT + 1 {
            w.on_event(ChannelEvent::Task(Uuid::new_v4()));
        }
        assert_eq!(
            w.settled_since(&cur, &[a]),
            None,
            "older than what is remembered"
        );
        assert_eq!(w.lock().recent.len(), RECENT);
        for bad in ["1.2.3", "x.1.2.3", "1.2.3.4.5", ""] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn done_wakes_only_its_waiters_and_subscribed_wakes_all() {
        let w = Waiters::new(10);
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let mut ra = w.register(&[a]).expect("register");
        let mut rab = w.register(&[a, b]).expect("register");
        w.on_event(ChannelEvent::Task(b));
        assert!(ra.rx.try_recv().is_err());
        assert_eq!(rab.rx.try_recv(), Ok(Wake::Done(b)));
        w.on_event(ChannelEvent::Task(a));
        assert_eq!(ra.rx.try_recv(), Ok(Wake::Done(a)));
        assert_eq!(rab.rx.try_recv(), Ok(Wake::Done(a)));
        w.on_event(ChannelEvent::Subscribed);
        assert_eq!(ra.rx.try_recv(), Ok(Wake::Recheck));
        assert_eq!(rab.rx.try_recv(), Ok(Wake::Recheck));
        w.on_event(ChannelEvent::Task(Uuid::new_v4()));
        assert!(ra.rx.try_recv().is_err() && rab.rx.try_recv().is_err());
    }
}
