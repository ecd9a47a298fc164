//! Local mode: the dispatcher runs tasks on its own executor pool.
//!
//! The loop owns the systemd watchdog and follows the rule of [`super::pulse`]: it pings between
//! queue reads (whose block is shortened to the ping interval) while the reader shows signs of
//! life, and while it waits for a free executor slot. A failed read never ends the loop: it waits
//! for Redis (at most a second after Redis answers again, it reads again), and runs a recovery
//! pass first, since entries delivered on a lost connection are pending unseen. A drain that times
//! out hands the unfinished runs back (see [`run`]); `STATUS=` comes from [`status`].
//!
//! Each read also takes entries for later, as many as [`ahead`] allows at the recent pace: a
//! process that frees up then starts with one claim (no read), and a stopping dispatcher hands
//! the entries it read ahead back to the queue.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::ahead::{self, Pace};
use super::cancels::{self, LocalStops};
use super::core::{Core, Owned, Prepared};
use super::presence::Presence;
use super::pulse::{pause_after, Outcome, Pulse};
use super::runs::{self, InFlight, Loss, Read};
use crate::executor::{ExecutorPool, Slot};
use crate::notify::{StatusLine, Watchdog};
use crate::shutdown::Shutdown;
use crate::store::presence::WorkerPresence;
use crate::store::{QueueEntry, QueueReader, StoreError};

/// How long one blocking queue read waits before the loop looks around (shutdown, orphans).
const READ_BLOCK: Duration = Duration::from_secs(2);
/// Shortest queue read block (Redis reads `BLOCK 0` as "forever").
const MIN_READ_BLOCK: Duration = Duration::from_millis(5);
/// How often entries of dead dispatchers are looked for.
const ADOPT_EVERY: Duration = Duration::from_secs(10);

/// The local loop's state: what runs where.
struct Local {
    core: Arc<Core>,
    pool: Arc<ExecutorPool>,
    /// Queue entries being run by this process, with the run once the task is claimed.
    in_flight: InFlight,
    /// Stop signals of the runs, fired when their task is cancelled while running.
    stops: LocalStops,
    /// One task per claimed batch (it polls its runs: aborting it aborts them).
    running: JoinSet<()>,
    /// Entries read ahead, not yet claimed (QUEUED; not in `in_flight`), oldest first.
    ahead: VecDeque<QueueEntry>,
    /// How long recent runs took (the read-ahead depth follows it).
    pace: Arc<Pace>,
}

/// Runs the local loop until `shutdown`, then drains running tasks for up to `drain`. Returns
/// the runs that did not finish in time: they were aborted, and the caller hands them back to
/// the queue once the executors are stopped.
pub async fn run(
    core: Arc<Core>,
    pool: Arc<ExecutorPool>,
    mut reader: QueueReader,
    mut shutdown: Shutdown,
    drain: Duration,
) -> Vec<Owned> {
    let mut l = Local {
        core,
        pool,
        in_flight: InFlight::default(),
        stops: LocalStops::default(),
        running: JoinSet::new(),
        ahead: VecDeque::new(),
        pace: Arc::new(Pace::default()),
    };
    let _cancels = cancels::follow(l.core.clone(), l.in_flight.clone(), l.stops.clone());
    let mut wd = Watchdog::from_env();
    let pulse = Arc::new(Pulse::default());
    let status = StatusLine::spawn();
    let reporter = status.is_enabled().then(|| {
        tokio::spawn(status::report(
            status.clone(),
            l.core.clone(),
            l.pool.slots(),
            l.in_flight.clone(),
            pulse.clone(),
        ))
    });
    crate::notify::ready();
    let _presence = Presence::polling(
        l.core.store.clone(),
        l.core.name.clone(),
        "local",
        l.presence(),
    );
    let mut last_recover: Option<tokio::time::Instant> = None;
    loop {
        if pulse.alive() {
            wd.poll();
        }
        while l.running.try_join_next().is_some() {}
        if last_recover.is_none_or(|t| t.elapsed() >= ADOPT_EVERY) {
            let r = l.recover(&mut reader, &shutdown, &mut wd).await;
            let outcome = l.record(&pulse, &reader, r.as_ref().map(drop));
            if outcome == Outcome::Done {
                last_recover = Some(tokio::time::Instant::now());
            } else if !l
                .pause(&pulse, &reader, outcome, &mut wd, &mut shutdown)
                .await
            {
                break;
            }
            continue;
        }
        pulse.waiting();
        let slot = tokio::select! {
            _ = shutdown.wait() => break,
            s = wd.during(l.pool.reserve()) => s,
        };
        pulse.resumed();
        let want = 1 + l.pool.available();
        if !l.ahead.is_empty() {
            let n = want.min(l.ahead.len());
            let entries: Vec<QueueEntry> = l.ahead.drain(..n).collect();
            l.start_on(slot, entries, &mut wd).await;
            continue;
        }
        let depth = ahead::depth(l.pool.slots(), l.pace.average());
        // Back in time for the next watchdog ping (a read is not cancelled midway).
        let block = wd
            .remaining()
            .map_or(READ_BLOCK, |r| r.clamp(MIN_READ_BLOCK, READ_BLOCK));
        let entries = match runs::read_new(&mut reader, want + depth, block, &mut shutdown).await {
            Read::Stopping(entries) => {
                l.ahead.extend(entries);
                break;
            }
            Read::Got(Ok(mut entries)) => {
                l.record(&pulse, &reader, Ok(()));
                if entries.len() > want {
                    l.ahead.extend(entries.drain(want..));
                }
                entries
            }
            Read::Got(Err(e)) => {
                drop(slot);
                let outcome = l.record(&pulse, &reader, Err(&e));
                // Entries delivered on a connection that broke are pending but unseen.
                last_recover = None;
                if !l
                    .pause(&pulse, &reader, outcome, &mut wd, &mut shutdown)
                    .await
                {
                    break;
                }
                continue;
            }
        };
        l.start_on(slot, entries, &mut wd).await;
    }
    l.release_ahead().await;
    status.set(format!(
        "stopping: draining {} running tasks",
        l.in_flight.len()
    ));
    tracing::info!(running = l.in_flight.len(), "draining running tasks");
    let drained = wd
        .during(tokio::time::timeout(drain, async {
            while l.running.join_next().await.is_some() {}
        }))
        .await;
    let mut unfinished = Vec::new();
    if drained.is_err() {
        l.running.abort_all();
        while l.running.join_next().await.is_some() {}
        unfinished = l.in_flight.owned();
        tracing::warn!(
            left = unfinished.len(),
            "drain timeout: stopping executors; unfinished tasks go back to the queue"
        );
    }
    if let Some(r) = reporter {
        r.abort();
    }
    unfinished
}

impl Local {
    /// Records what a read or recovery pass came to (see [`Pulse::record`]).
    fn record(
        &self,
        pulse: &Pulse,
        reader: &QueueReader,
        result: Result<(), &StoreError>,
    ) -> Outcome {
        pulse.record(
            result,
            self.core.store.health().is_down(),
            reader.connected(),
        )
    }

    /// Waits after a failed read before the next one (pinging the watchdog meanwhile only while
    /// the reader's sign still counts). False when shutdown came first.
    async fn pause(
        &self,
        pulse: &Pulse,
        reader: &QueueReader,
        outcome: Outcome,
        wd: &mut Watchdog,
        shutdown: &mut Shutdown,
    ) -> bool {
        let nap = tokio::time::sleep(pause_after(outcome, reader.retry_in()));
        if pulse.alive() {
            tokio::select! {
                _ = shutdown.wait() => false,
                _ = wd.during(nap) => true,
            }
        } else {
            tokio::select! {
                _ = shutdown.wait() => false,
                _ = nap => true,
            }
        }
    }

    /// This dispatcher's executor pool as one worker, for `GET /info` and `/metrics`: slots
    /// minus the runs in flight are free.
    fn presence(&self) -> impl Fn() -> Vec<WorkerPresence> + Send + 'static {
        let (name, pool, in_flight) = (
            self.core.name.clone(),
            self.pool.clone(),
            self.in_flight.clone(),
        );
        move || {
            let busy = in_flight.len();
            vec![WorkerPresence {
                id: name.clone(),
                host: crate::host::hostname(),
                slots: u32::try_from(pool.slots()).unwrap_or(u32::MAX),
                free: u32::try_from(pool.slots().saturating_sub(busy)).unwrap_or(u32::MAX),
                runtime: pool.runtime().unwrap_or_default(),
            }]
        }
    }

    /// Adopts entries of dead dispatchers and runs every entry pending for this consumer
    /// that is not already running here.
    async fn recover(
        &mut self,
        reader: &mut QueueReader,
        shutdown: &Shutdown,
        wd: &mut Watchdog,
    ) -> Result<(), StoreError> {
        for entry in runs::pending(reader, &self.in_flight).await? {
            // Read ahead by this loop: it runs them in turn.
            if self.ahead.iter().any(|a| a.entry_id == entry.entry_id) {
                self.in_flight.end(&entry.entry_id);
                continue;
            }
            if shutdown.is_triggered() {
                self.in_flight.end(&entry.entry_id);
                continue;
            }
            let slot = wd.during(self.pool.reserve()).await;
            self.start(vec![(slot, entry)], true);
        }
        Ok(())
    }

    /// Starts `entries` (at least one) on `slot` and on further slots as they free up.
    async fn start_on(&mut self, slot: Slot, entries: Vec<QueueEntry>, wd: &mut Watchdog) {
        let mut slot = Some(slot);
        let mut batch = Vec::with_capacity(entries.len());
        for entry in entries {
            let s = match slot.take() {
                Some(s) => s,
                None => wd.during(self.pool.reserve()).await,
            };
            batch.push((s, entry));
        }
        self.start(batch, false);
    }

    /// Hands the entries read ahead back to the queue (one attempt: if Redis does not answer,
    /// they stay pending here and are recovered like those of any dispatcher that stopped).
    async fn release_ahead(&mut self) {
        let entries: Vec<QueueEntry> = self.ahead.drain(..).collect();
        runs::hand_back(&self.core, &entries).await;
    }

    /// Claims the tasks of `batch` in one step, then runs each on its slot, all in the
    /// background: one task per batch, which polls its runs together (aborting it aborts them).
    fn start(&mut self, batch: Vec<(Slot, QueueEntry)>, recovered: bool) {
        let core = self.core.clone();
        let in_flight = self.in_flight.clone();
        let stops = self.stops.clone();
        let pace = self.pace.clone();
        for (_, entry) in &batch {
            in_flight.begin(&entry.entry_id);
        }
        self.running.spawn(async move {
            let worker = core.name.clone();
            // Registered before the claim: a cancel published right after the claim made the
            // task RUNNING still finds the run.
            let stop: Vec<_> = batch
                .iter()
                .map(|(_, e)| e.task_id.map(|t| stops.register(t)))
                .collect();
            let entries: Vec<QueueEntry> = batch.iter().map(|(_, e)| e.clone()).collect();
            let prepared = core.prepare_many(&entries, &worker, recovered).await;
            let mut runs: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
            for (((slot, entry), stop), prepared) in
                batch.into_iter().zip(stop).zip(prepared)
            {
                let (core, in_flight, pace) = (core.clone(), in_flight.clone(), pace.clone());
                let finish = {
                    let (stops, in_flight) = (stops.clone(), in_flight.clone());
                    move |entry: QueueEntry| {
                        if let Some(t) = &entry.task_id {
                            stops.forget(t);
                        }
                        in_flight.end(&entry.entry_id);
                    }
                };
                match prepared {
                    Ok(Prepared::Run(run)) => {
                        in_flight.own(&run.owned);
                        runs.push(Box::pin(async move {
                            let began = tokio::time::Instant::now();
                            let outcome = match stop {
                                Some(stop) => slot.run_until(run.spec.clone(), stop).await,
                                None => slot.run(run.spec.clone()).await,
                            };
                            pace.observe(began.elapsed());
                            // The process is free: its next claim (started by the loop, which
                            // runs first) goes to Redis ahead of this result.
                            tokio::task::yield_now().await;
                            // Waits for Redis if it is away: the result is stored when it answers again.
                            runs::store(&core, runs::task_ref(&run.owned), Some(&run.owned), outcome, &in_flight).await;
                            finish(entry);
                        }));
                    }
                    Ok(Prepared::Orphan {
                        task_id,
                        attempt,
                        entry_id,
                    }) => {
                        drop(slot);
                        runs.push(Box::pin(async move {
                            // Local runs die with their dispatcher: nobody else can report this one.
                            let reason = format!("dispatcher {} stopped while the task was running", core.name);
                            let lost = Loss::Lost { task_id, attempt, entry_id };
                            runs::settle(&core, vec![lost], &reason, &in_flight).await;
                            finish(entry);
                        }));
                    }
                    Ok(Prepared::Settled) => finish(entry),
                    Err(e) => {
                        tracing::error!(entry = %entry.entry_id, task_id = ?entry.task_id, error = %e, "could not claim task; it stays pending");
                        finish(entry);
                    }
                }
            }
            futures_util::future::join_all(runs).await;
        });
    }
}

/// The local dispatcher's `STATUS=` line.
mod status {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use super::InFlight;
    use crate::dispatcher::core::Core;
    use crate::dispatcher::pulse::Pulse;
    use crate::notify::{StatusLine, STATUS_GAP};

    /// Refreshes the line every [`STATUS_GAP`] (the queue depth needs a Redis call, so the loop
    /// does not build it itself). Runs until aborted.
    pub async fn report(
        status: StatusLine,
        core: Arc<Core>,
        processes: usize,
        in_flight: InFlight,
        pulse: Arc<Pulse>,
    ) {
        loop {
            let busy = in_flight.len();
            let health = core.store.health();
            let queue = match health.outage() {
                Some(_) => format!("unknown ({})", health.summary()),
                None => match tokio::time::timeout(Duration::from_secs(1), core.store.queue_len())
                    .await
                {
                    // The stream also holds delivered entries: ours are the busy ones.
                    Ok(Ok(n)) => n.saturating_sub(busy as u64).to_string(),
                    _ => "unknown (no answer from redis)".into(),
                },
            };
            let reader = pulse.status_note();
            let c = &core.counters;
            status.set(format!(
                "local: {processes} processes, {busy} busy, {} completed, {} failed, queue {queue}{reader}",
                c.completed.load(Ordering::Relaxed),
                c.failed.load(Ordering::Relaxed),
            ));
            tokio::time::sleep(STATUS_GAP).await;
        }
    }
}
