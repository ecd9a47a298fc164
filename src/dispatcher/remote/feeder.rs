//! Reads the Redis queue for the remote loop: as many entries as the loop's demand says (what
//! workers can take plus the read-ahead), and a periodic recovery pass over pending entries
//! (own and those of dead dispatchers).
//!
//! A failed read never ends the feeder: it waits for Redis (see [`pause_after`]) and runs a
//! recovery pass before the next read, since entries delivered on a lost connection are pending
//! unseen. Its signs of life go to the [`Pulse`] that the event loop checks before pinging the
//! watchdog.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::Event;
use crate::dispatcher::core::{Core, Recovered};
use crate::dispatcher::pulse::{pause_after, Pulse};
use crate::dispatcher::runs::{self, InFlight, Read};
use crate::shutdown::Shutdown;
use crate::store::{QueueReader, StoreError};

const READ_BLOCK: Duration = Duration::from_secs(1);
const RECOVER_EVERY: Duration = Duration::from_secs(10);

/// Runs until shutdown. `demand` says how many tasks the workers can take right now; the loop
/// republishes it after every batch, which is what lets the feeder read again.
pub async fn run(
    core: Arc<Core>,
    mut reader: QueueReader,
    mut demand: watch::Receiver<usize>,
    events: mpsc::Sender<Event>,
    in_flight: InFlight,
    pulse: Arc<Pulse>,
    mut shutdown: Shutdown,
) {
    let mut last_recover: Option<tokio::time::Instant> = None;
    // Records what a read or pass came to; returns how long to wait before the next one.
    let note = |result: Result<(), &StoreError>, reader: &QueueReader| {
        let outcome = pulse.record(result, core.store.health().is_down(), reader.connected());
        pause_after(outcome, reader.retry_in())
    };
    loop {
        if shutdown.is_triggered() {
            return;
        }
        if last_recover.is_none_or(|t| t.elapsed() >= RECOVER_EVERY) {
            let r = recover(&core, &mut reader, &events, &in_flight).await;
            let pause = note(r.as_ref().map(drop), &reader);
            if r.is_ok() {
                last_recover = Some(tokio::time::Instant::now());
            } else {
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            }
        }
        let want = *demand.borrow_and_update();
        if want == 0 {
            pulse.waiting();
            tokio::select! {
                _ = shutdown.wait() => return,
                r = demand.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(RECOVER_EVERY) => {}
            }
            pulse.resumed();
            continue;
        }
        let read = match runs::read_new(&mut reader, want, READ_BLOCK, &mut shutdown).await {
            Read::Got(r) => r,
            // What Redis delivered meanwhile goes to the loop, which hands it back.
            Read::Stopping(entries) => {
                if !entries.is_empty() {
                    for e in &entries {
                        in_flight.begin(&e.entry_id);
                    }
                    let _ = events.send(Event::Entries(entries)).await;
                }
                return;
            }
        };
        match read {
            Ok(entries) if entries.is_empty() => {
                note(Ok(()), &reader);
            }
            Ok(entries) => {
                note(Ok(()), &reader);
                for e in &entries {
                    in_flight.begin(&e.entry_id);
                }
                pulse.waiting();
                if events.send(Event::Entries(entries)).await.is_err() {
                    return;
                }
                // Wait for the loop to account for them before reading more.
                tokio::select! {
                    _ = shutdown.wait() => return,
                    r = demand.changed() => if r.is_err() { return },
                }
                pulse.resumed();
            }
            Err(e) => {
                let pause = note(Err(&e), &reader);
                // Entries delivered on a connection that broke are pending but unseen.
                last_recover = None;
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// A recovery pass: still-QUEUED entries go to the loop as entries, RUNNING ones as orphans;
/// then [`Event::Recovered`] says every run from before is known.
async fn recover(
    core: &Core,
    reader: &mut QueueReader,
    events: &mpsc::Sender<Event>,
    in_flight: &InFlight,
) -> Result<(), StoreError> {
    let mut queued = Vec::new();
    let mut pending = runs::pending(reader, in_flight).await?.into_iter();
    while let Some(entry) = pending.next() {
        let id = entry.entry_id.clone();
        match core.classify_recovered(entry).await {
            Ok(Recovered::Queued(e)) => queued.push(e),
            Ok(Recovered::Orphan {
                task_id,
                attempt,
                entry_id,
            }) => {
                let _ = events
                    .send(Event::Orphan {
                        task_id,
                        attempt,
                        entry_id,
                    })
                    .await;
            }
            Ok(Recovered::Settled) => in_flight.end(&id),
            Err(e) => {
                in_flight.end(&id);
                for rest in pending.chain(queued) {
                    in_flight.end(&rest.entry_id);
                }
                return Err(e);
            }
        }
    }
    if !queued.is_empty() {
        let _ = events.send(Event::Entries(queued)).await;
    }
    let _ = events.send(Event::Recovered).await;
    Ok(())
}
