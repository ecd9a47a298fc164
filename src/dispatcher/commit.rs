//! Group commit of results: many concurrent [`GroupCommit::finish`] callers (each local run or
//! worker report finishes on its own) are coalesced into one [`Store::finish_many`] call.
//!
//! A single committer task drains whatever is queued (at most [`MAX_COUNT`] finishes and about
//! [`MAX_BYTES`] of results) into one script call, and each caller gets its own [`Recorded`].
//! There is no timer: a lone result is written at once; under load the next batch forms by
//! itself while the previous call is in flight.
//!
//! Faults keep the semantics of single finishes: the committer waits out Redis outages
//! ([`Store::retrying`]; the batch is idempotent, so one whose reply was lost is simply sent
//! again), and a batch Redis refuses as a whole (a value above `proto-max-bulk-len` refuses the
//! entire command) or that fails otherwise is retried one finish at a time, so only the offending
//! finish gets the error (the caller turns a refused value into `ResultTooLarge`).

use std::sync::OnceLock;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::store::{Finish, Recorded, Store, StoreError, TaskStatus};

/// Most finishes in one script call.
pub const MAX_COUNT: usize = 512;
/// Results above this many bytes in total close a batch (one larger result goes alone).
pub const MAX_BYTES: usize = 8 << 20;

/// A terminal report, owned (it waits in the committer's queue).
#[derive(Debug, Clone)]
pub struct Report {
    pub task_id: Uuid,
    /// The state the task must be in for the report to apply.
    pub from: TaskStatus,
    /// Attempt number the report belongs to; `None` accepts any.
    pub attempt: Option<u32>,
    pub status: TaskStatus,
    pub result: Vec<u8>,
    pub error: String,
    /// Queue entry to acknowledge in the same step.
    pub entry_id: Option<String>,
}

impl Report {
    fn as_finish(&self) -> Finish<'_> {
        Finish {
            task_id: self.task_id,
            from: self.from,
            attempt: self.attempt,
            status: self.status,
            result: &self.result,
            error: &self.error,
            entry_id: self.entry_id.as_deref(),
        }
    }
}

/// A queued report and where its answer goes.
struct Job {
    report: Report,
    reply: oneshot::Sender<Result<Recorded, StoreError>>,
}

/// The group committer of one dispatcher. Its task starts with the first report.
pub struct GroupCommit {
    store: Store,
    queue: OnceLock<mpsc::UnboundedSender<Job>>,
}

impl GroupCommit {
    pub fn new(store: Store) -> Self {
        GroupCommit {
            store,
            queue: OnceLock::new(),
        }
    }

    /// Applies `report` (in a batch with whatever else is waiting), waiting for Redis while it is
    /// unavailable. Answers as [`Store::finish`] would for this report alone.
    pub async fn finish(&self, report: Report) -> Result<Recorded, StoreError> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(committer(self.store.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let report = match queue.send(Job { report, reply }) {
            Ok(()) => match answer.await {
                Ok(r) => return r,
                // The committer is gone (the runtime is shutting down): nothing to coalesce with.
                Err(_) => None,
            },
            Err(mpsc::error::SendError(job)) => Some(job.report),
        };
        match report {
            Some(report) => finish_one(&self.store, &report).await,
            // The report went to a committer that dropped it: it may or may not be applied, and
            // we no longer hold it. Not reachable while the runtime runs (the committer never
            // ends while a sender lives).
            None => Err(StoreError::Corrupt(
                "the result committer stopped before it answered".into(),
            )),
        }
    }
}

/// One finish alone, waiting for Redis while it is unavailable.
async fn finish_one(store: &Store, report: &Report) -> Result<Recorded, StoreError> {
    let finish = report.as_finish();
    store.retrying(|| store.finish(&finish)).await
}

/// The committer: takes the first waiting report, adds whatever else waits (within the caps),
/// commits them in one call, answers each caller; until every sender is gone.
async fn committer(store: Store, mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(j) => j,
            None => match queue.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        let mut bytes = first.report.result.len();
        let mut batch = vec![first];
        while batch.len() < MAX_COUNT && bytes < MAX_BYTES {
            let Ok(job) = queue.try_recv() else { break };
            let len = job.report.result.len();
            if bytes + len > MAX_BYTES {
                carried = Some(job);
                break;
            }
            bytes += len;
            batch.push(job);
        }
        commit(&store, batch).await;
    }
}

/// Commits `batch` in one call, or one by one when the batch as a whole fails.
async fn commit(store: &Store, batch: Vec<Job>) {
    if batch.len() > 1 {
        let finishes: Vec<Finish<'_>> = batch.iter().map(|j| j.report.as_finish()).collect();
        match store.retrying(|| store.finish_many(&finishes)).await {
            Ok(recorded) => {
                drop(finishes);
                for (job, r) in batch.into_iter().zip(recorded) {
                    let _ = job.reply.send(Ok(r));
                }
                return;
            }
            Err(e) => {
                tracing::debug!(finishes = batch.len(), error = %e,
                    "a batch of results failed as a whole; storing them one by one");
            }
        }
    }
    for job in batch {
        let r = finish_one(store, &job.report).await;
        let _ = job.reply.send(r);
    }
}
