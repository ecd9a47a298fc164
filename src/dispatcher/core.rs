//! Mode-independent task handling: claim a queued task, record its outcome, handle lost tasks.
//!
//! Every write here waits for Redis when it is unavailable ([`Store::retrying`]) rather than
//! failing: a result that finished during an outage is stored when Redis answers again, a claim
//! whose reply was lost is repeated under the same token and returns the same run. Reads of the
//! recovery pass ([`Core::classify_recovered`]) fail instead; the pass is simply run again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use uuid::Uuid;

use super::commit::{GroupCommit, Report};
use crate::executor::{Outcome, TaskSpec};
use crate::pickle::{platform_exception, PlatformError};
use crate::runtime::Runtime;
use crate::store::claims::ClaimOf;
use crate::store::{
    is_value_refused, Claim, Finish, QueueEntry, Recorded, Store, StoreError, TaskStatus,
};

/// Function payloads kept in memory (functions are immutable once registered).
const FN_CACHE_MAX: usize = 4096;

/// One run of a task this dispatcher answers for: the attempt fences its result, and the
/// queue entry is acknowledged when the result is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub task_id: Uuid,
    pub attempt: u32,
    pub entry_id: String,
}

/// A task this dispatcher has moved to RUNNING and must report on.
#[derive(Debug, Clone)]
pub struct Running {
    pub owned: Owned,
    pub function_id: Uuid,
    pub spec: TaskSpec,
}

/// What a delivered queue entry turned into.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// Claimed: run it.
    Run(Running),
    /// The task was already RUNNING when a recovered entry was delivered: the run belonged to a
    /// dispatcher that is gone. Its worker may still report it (remote modes), or it is lost.
    Orphan {
        task_id: Uuid,
        attempt: Option<u32>,
        entry_id: String,
    },
    /// Nothing to run (already settled, malformed, expired); the entry was acknowledged.
    Settled,
}

/// What a claimed entry needs next.
enum Next {
    Ready(Prepared),
    /// Nothing to run: acknowledge the entry.
    Ack,
}

/// What a recovered queue entry turned out to be.
#[derive(Debug, Clone)]
pub enum Recovered {
    /// Still QUEUED: claim and run it as usual.
    Queued(QueueEntry),
    /// RUNNING under a dispatcher that is gone.
    Orphan {
        task_id: Uuid,
        attempt: Option<u32>,
        entry_id: String,
    },
    /// Already settled; the entry was acknowledged.
    Settled,
}

/// Counters for status lines and logs.
#[derive(Debug, Default)]
pub struct Counters {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> [u64; 4] {
        [&self.started, &self.completed, &self.failed, &self.retried]
            .map(|c| c.load(Ordering::Relaxed))
    }
}

/// How often [`summarize`] logs what the tasks came to.
pub const SUMMARY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Logs at info, every [`SUMMARY_EVERY`] in which something happened, how many tasks started,
/// completed, failed and were retried meanwhile (single runs log RUNNING and COMPLETED at debug;
/// FAILED stays info). Runs until aborted.
pub async fn summarize(core: std::sync::Arc<Core>) {
    let mut last = core.counters.snapshot();
    let mut tick = tokio::time::interval(SUMMARY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = core.counters.snapshot();
        if now != last {
            let [started, completed, failed, retried] =
                [0, 1, 2, 3].map(|i| now[i].saturating_sub(last[i]));
            tracing::info!(
                started,
                completed,
                failed,
                retried,
                every_secs = SUMMARY_EVERY.as_secs(),
                "tasks since the last summary"
            );
            last = now;
        }
    }
}

/// Shared state of a dispatcher, whatever its mode.
pub struct Core {
    pub store: Store,
    /// Name recorded as the task's `worker` for local runs and used as the queue consumer.
    pub name: String,
    /// Unique to this process (the lease token): with an entry id, names a claim.
    incarnation: String,
    pub max_retries: u32,
    /// Largest arguments pickle run (`max_payload_bytes`).
    max_payload: usize,
    /// Largest result pickle stored (`max_result_bytes`).
    max_result: usize,
    pub counters: Counters,
    fn_cache: Mutex<HashMap<Uuid, Bytes>>,
    /// Python/dill versions of each executor host (this dispatcher, or a worker), recorded on
    /// the tasks claimed for it.
    runtimes: Mutex<HashMap<String, Runtime>>,
    /// Results of runs are stored through it, many in one call under load.
    commit: GroupCommit,
}

impl Core {
    pub fn new(store: Store, name: String, incarnation: String, max_retries: u32) -> Self {
        Core {
            name,
            incarnation,
            max_retries,
            max_payload: crate::config::DEFAULT_SIZE_LIMIT,
            max_result: crate::config::DEFAULT_SIZE_LIMIT,
            counters: Counters::default(),
            fn_cache: Mutex::new(HashMap::new()),
            runtimes: Mutex::new(HashMap::new()),
            commit: GroupCommit::new(store.clone()),
            store,
        }
    }

    /// Sets `max_payload_bytes` and `max_result_bytes`.
    pub fn with_size_limits(mut self, max_payload: usize, max_result: usize) -> Self {
        self.max_payload = max_payload;
        self.max_result = max_result;
        self
    }

    /// Records the runtime of `worker` (this dispatcher's name in local mode), or forgets it.
    pub fn set_runtime(&self, worker: &str, runtime: Option<Runtime>) {
        let mut m = self.runtimes.lock().unwrap_or_else(|p| p.into_inner());
        match runtime {
            Some(r) => m.insert(worker.to_string(), r),
            None => m.remove(worker),
        };
    }

    fn runtime_of(&self, worker: &str) -> Runtime {
        let m = self.runtimes.lock().unwrap_or_else(|p| p.into_inner());
        m.get(worker).cloned().unwrap_or_default()
    }

    /// Turns a delivered queue entry into a RUNNING task, or settles it when there is nothing
    /// to run. `recovered` marks entries delivered before (to a previous incarnation or to a
    /// dispatcher that died): a RUNNING task among them was lost with that dispatcher.
    pub async fn prepare(
        &self,
        entry: &QueueEntry,
        worker: &str,
        recovered: bool,
    ) -> Result<Prepared, StoreError> {
        let Some(task_id) = entry.task_id else {
            tracing::warn!(entry = %entry.entry_id, "queue entry without a task id; dropped");
            self.ack(&entry.entry_id).await?;
            return Ok(Prepared::Settled);
        };
        let runtime = self.runtime_of(worker);
        let token = self.token(entry);
        let claim = self
            .store
            .retrying(|| self.store.claim_for(&task_id, worker, &runtime, &token))
            .await?;
        match self
            .after_claim(entry, task_id, claim, worker, recovered)
            .await?
        {
            Next::Ready(p) => Ok(p),
            Next::Ack => {
                self.ack(&entry.entry_id).await?;
                Ok(Prepared::Settled)
            }
        }
    }

    /// [`Core::prepare`] for many entries of one worker: one claim call for all of them, one
    /// read of the function payloads not in memory, one acknowledgement of the entries with
    /// nothing to run. One answer per entry, in order, each the same as [`Core::prepare`] would
    /// give; when a batched call fails other than by an outage (waited out), its entries are
    /// prepared one by one so that each gets its own answer.
    pub async fn prepare_many(
        &self,
        entries: &[QueueEntry],
        worker: &str,
        recovered: bool,
    ) -> Vec<Result<Prepared, StoreError>> {
        if let [entry] = entries {
            return vec![self.prepare(entry, worker, recovered).await];
        }
        let runtime = self.runtime_of(worker);
        let tokens: Vec<String> = entries.iter().map(|e| self.token(e)).collect();
        let of: Vec<ClaimOf<'_>> = entries
            .iter()
            .zip(&tokens)
            .filter_map(|(e, token)| e.task_id.map(|task_id| ClaimOf { task_id, token }))
            .collect();
        let claims = match self
            .store
            .retrying(|| self.store.claim_many(&of, worker, &runtime))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(entries = entries.len(), error = %e, "batched claim failed; claiming one by one");
                let mut out = Vec::with_capacity(entries.len());
                for entry in entries {
                    out.push(self.prepare(entry, worker, recovered).await);
                }
                return out;
            }
        };
        self.prefetch_functions(&claims).await;
        let mut claims = claims.into_iter();
        let mut out = Vec::with_capacity(entries.len());
        let mut acks = Vec::new();
        for entry in entries {
            let next = match entry.task_id {
                None => {
                    tracing::warn!(entry = %entry.entry_id, "queue entry without a task id; dropped");
                    Ok(Next::Ack)
                }
                Some(task_id) => match claims.next() {
                    Some(claim) => {
                        self.after_claim(entry, task_id, claim, worker, recovered)
                            .await
                    }
                    None => Err(StoreError::Corrupt(format!(
                        "no claim reply for task {task_id}"
                    ))),
                },
            };
            out.push(match next {
                Ok(Next::Ready(p)) => Ok(p),
                Ok(Next::Ack) => {
                    acks.push((out.len(), entry.entry_id.as_str()));
                    Ok(Prepared::Settled)
                }
                Err(e) => Err(e),
            });
        }
        let ids: Vec<&str> = acks.iter().map(|(_, id)| *id).collect();
        if let Err(e) = self.store.retrying(|| self.store.ack_many(&ids)).await {
            tracing::debug!(entries = ids.len(), error = %e, "batched ack failed; acknowledging one by one");
            for (i, id) in acks {
                if let Err(e) = self.ack(id).await {
                    out[i] = Err(e);
                }
            }
        }
        out
    }

    /// The claim token of `entry` (unique per process and entry: a claim repeated under it
    /// returns the same run).
    fn token(&self, entry: &QueueEntry) -> String {
        format!("{}/{}", self.incarnation, entry.entry_id)
    }

    /// Puts the payloads of the claimed runs' functions that are not in memory into the cache,
    /// in one round trip. A failure only means each is read on its own afterwards.
    async fn prefetch_functions(&self, claims: &[Claim]) {
        let mut missing: Vec<Uuid> = {
            let cache = self.cache();
            claims
                .iter()
                .filter_map(|c| match c {
                    Claim::Running { function_id, .. } if !cache.contains_key(function_id) => {
                        Some(*function_id)
                    }
                    _ => None,
                })
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        missing.sort_unstable();
        missing.dedup();
        match self
            .store
            .retrying(|| self.store.function_payloads(&missing))
            .await
        {
            Ok(got) => {
                for (id, payload) in missing.iter().zip(got) {
                    if let Some(p) = payload {
                        self.remember(*id, p);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(functions = missing.len(), error = %e, "batched function read failed; reading one by one")
            }
        }
    }

    /// What a claim's answer comes to for `entry`: a run, an orphan, settled, or an entry to
    /// acknowledge (nothing to run).
    async fn after_claim(
        &self,
        entry: &QueueEntry,
        task_id: Uuid,
        claim: Claim,
        worker: &str,
        recovered: bool,
    ) -> Result<Next, StoreError> {
        match claim {
            Claim::Running {
                attempt,
                function_id,
                args,
                timeout,
            } => {
                let Some(fn_payload) = self.function(&function_id).await? else {
                    self.fail(
                        task_id,
                        TaskStatus::Running,
                        Some(attempt),
                        &entry.entry_id,
                        PlatformError::InvalidTask,
                        &format!("function {function_id} no longer exists"),
                    )
                    .await?;
                    return Ok(Next::Ready(Prepared::Settled));
                };
                if args.len() > self.max_payload {
                    let detail = format!(
                        "the arguments are {} bytes; the limit is {} bytes (max_payload_bytes)",
                        args.len(),
                        self.max_payload
                    );
                    self.fail(
                        task_id,
                        TaskStatus::Running,
                        Some(attempt),
                        &entry.entry_id,
                        PlatformError::PayloadTooLarge,
                        &detail,
                    )
                    .await?;
                    return Ok(Next::Ready(Prepared::Settled));
                }
                self.counters.started.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(task_id = %task_id, function_id = %function_id, attempt, worker, "task RUNNING");
                Ok(Next::Ready(Prepared::Run(Running {
                    owned: Owned {
                        task_id,
                        attempt,
                        entry_id: entry.entry_id.clone(),
                    },
                    function_id,
                    spec: TaskSpec {
                        task_id: task_id.to_string(),
                        function_id: function_id.to_string(),
                        fn_payload,
                        args_payload: args,
                        timeout,
                    },
                })))
            }
            Claim::NotQueued(TaskStatus::Running) if recovered => {
                Ok(Next::Ready(Prepared::Orphan {
                    task_id,
                    attempt: self.current_attempt(&task_id).await?,
                    entry_id: entry.entry_id.clone(),
                }))
            }
            Claim::NotQueued(status) => {
                tracing::debug!(task_id = %task_id, %status, "queue entry for a task that is not queued; acknowledged");
                Ok(Next::Ack)
            }
            Claim::Missing => {
                tracing::warn!(task_id = %task_id, "queued task has no record (expired, or Redis lost it); dropped");
                Ok(Next::Ack)
            }
        }
    }

    /// Sorts a recovered entry (delivered before, never acknowledged) without claiming it:
    /// RUNNING tasks become orphans, QUEUED ones go back to be claimed, the rest are settled.
    pub async fn classify_recovered(&self, entry: QueueEntry) -> Result<Recovered, StoreError> {
        let Some(task_id) = entry.task_id else {
            self.store.ack(&entry.entry_id).await?;
            return Ok(Recovered::Settled);
        };
        match self.store.task_status(&task_id).await? {
            Some(TaskStatus::Queued) => Ok(Recovered::Queued(entry)),
            Some(TaskStatus::Running) => Ok(Recovered::Orphan {
                task_id,
                attempt: self.current_attempt(&task_id).await?,
                entry_id: entry.entry_id,
            }),
            _ => {
                self.store.ack(&entry.entry_id).await?;
                Ok(Recovered::Settled)
            }
        }
    }

    async fn current_attempt(&self, task_id: &Uuid) -> Result<Option<u32>, StoreError> {
        use redis::AsyncCommands;
        let mut c = self.store.conn();
        let a: Option<u32> = c
            .hget(crate::store::keys::task(task_id), "attempts")
            .await?;
        Ok(a)
    }

    /// Acknowledges (and deletes) a queue entry, waiting for Redis if need be.
    async fn ack(&self, entry_id: &str) -> Result<(), StoreError> {
        self.store.retrying(|| self.store.ack(entry_id)).await
    }

    /// The function's pickle, from memory or Redis.
    async fn function(&self, id: &Uuid) -> Result<Option<Bytes>, StoreError> {
        if let Some(b) = self.cache().get(id) {
            return Ok(Some(b.clone()));
        }
        let got = self
            .store
            .retrying(|| self.store.function_payload(id))
            .await?;
        if let Some(b) = &got {
            self.remember(*id, b.clone());
        }
        Ok(got)
    }

    fn remember(&self, id: Uuid, payload: Bytes) {
        let mut cache = self.cache();
        if cache.len() >= FN_CACHE_MAX {
            cache.clear();
        }
        cache.insert(id, payload);
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Bytes>> {
        // A poisoned cache only means a panic elsewhere; the map itself is still consistent.
        self.fn_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the outcome of a run, waiting for Redis if need be.
    pub async fn complete(&self, run: &Owned, outcome: Outcome) -> Result<Recorded, StoreError> {
        self.record(run.task_id, run.attempt, Some(&run.entry_id), outcome)
            .await
    }

    /// Records a worker's result for a run this dispatcher has no entry for (e.g. it restarted
    /// meanwhile). Fenced like any result; the entry is settled when it is recovered.
    pub async fn complete_unowned(
        &self,
        task_id: Uuid,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<Recorded, StoreError> {
        self.record(task_id, attempt, None, outcome).await
    }

    async fn record(
        &self,
        task_id: Uuid,
        attempt: u32,
        entry_id: Option<&str>,
        outcome: Outcome,
    ) -> Result<Recorded, StoreError> {
        // A result above max_result_bytes (a worker with a higher limit) is replaced; one Redis
        // refuses (e.g. above its proto-max-bulk-len) too: never an endless store-and-retry.
        let mut refusable = outcome.result().len() <= self.max_result;
        let mut outcome = outcome.within(self.max_result);
        loop {
            let bytes = outcome.result().len();
            let (status, result, error) = match outcome {
                Outcome::Completed { result } => (TaskStatus::Completed, result, String::new()),
                Outcome::Failed { result, cause } => (TaskStatus::Failed, result, cause),
            };
            let report = Report {
                task_id,
                from: TaskStatus::Running,
                attempt: Some(attempt),
                status,
                result,
                error: error.clone(),
                entry_id: entry_id.map(str::to_string),
            };
            let recorded = match self.commit.finish(report).await {
                Err(e) if refusable && is_value_refused(&e) => {
                    tracing::warn!(task_id = %task_id, attempt, bytes, error = %e,
                        "Redis refused the result; the task ends FAILED with ResultTooLarge");
                    let detail = format!("Redis refused the result of {bytes} bytes ({e})");
                    outcome =
                        crate::executor::classify::platform(PlatformError::ResultTooLarge, &detail);
                    refusable = false;
                    continue;
                }
                other => other?,
            };
            self.log_recorded(task_id, attempt, status, &error, recorded);
            return Ok(recorded);
        }
    }

    fn log_recorded(
        &self,
        task_id: Uuid,
        attempt: u32,
        status: TaskStatus,
        error: &str,
        recorded: Recorded,
    ) {
        match recorded {
            Recorded::Applied => {
                let counter = if status == TaskStatus::Completed {
                    &self.counters.completed
                } else {
                    &self.counters.failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if error.is_empty() {
                    tracing::debug!(task_id = %task_id, attempt, "task COMPLETED");
                } else {
                    tracing::info!(task_id = %task_id, attempt, cause = error, "task FAILED");
                }
            }
            Recorded::Duplicate => {
                tracing::debug!(task_id = %task_id, attempt, "result was already stored")
            }
            Recorded::Stale => {
                tracing::warn!(task_id = %task_id, attempt, "stale result ignored: task already settled")
            }
            Recorded::Unknown => tracing::warn!(task_id = %task_id, attempt,
                "result for a task Redis no longer knows (it expired, or Redis lost its data); dropped"),
        }
    }

    /// Puts a run that was claimed but never delivered (its worker vanished first) back in the
    /// queue, whatever `max_retries` says: it never ran.
    pub async fn undeliverable(&self, run: &Owned, reason: &str) -> Result<(), StoreError> {
        if self
            .store
            .retrying(|| {
                self.store
                    .requeue(&run.task_id, run.attempt, reason, Some(&run.entry_id))
            })
            .await?
        {
            tracing::info!(task_id = %run.task_id, attempt = run.attempt, reason, "task QUEUED again before it ran");
        }
        Ok(())
    }

    /// Puts a run that was stopped on purpose (a graceful stop's drain ran out) back in the queue,
    /// whatever `max_retries` says: it did not fail. Fenced by attempt; `entry_id` (if known) is
    /// acknowledged. Returns true when the task was re-queued.
    pub async fn hand_back(&self, run: &Owned, reason: &str) -> Result<bool, StoreError> {
        let entry = (!run.entry_id.is_empty()).then_some(run.entry_id.as_str());
        let applied = self
            .store
            .retrying(|| self.store.requeue(&run.task_id, run.attempt, reason, entry))
            .await?;
        if applied {
            tracing::info!(task_id = %run.task_id, attempt = run.attempt, reason, "task handed back: QUEUED again");
        } else {
            tracing::debug!(task_id = %run.task_id, attempt = run.attempt, "handed-back task was already settled");
        }
        Ok(applied)
    }

    /// A RUNNING task whose executor or worker was lost: re-queue it while retries remain,
    /// otherwise FAILED with `WorkerFailure`.
    pub async fn lost(
        &self,
        task_id: Uuid,
        attempt: Option<u32>,
        entry_id: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let attempts = attempt.unwrap_or(1);
        if let Some(a) = attempt {
            if a <= self.max_retries
                && self
                    .store
                    .retrying(|| self.store.requeue(&task_id, a, reason, Some(entry_id)))
                    .await?
            {
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(task_id = %task_id, attempt = a, reason, "task lost; re-queued");
                return Ok(());
            }
        }
        let detail = format!("{reason} (attempt {attempts})");
        self.fail(
            task_id,
            TaskStatus::Running,
            attempt,
            entry_id,
            PlatformError::WorkerFailure,
            &detail,
        )
        .await
    }

    /// Settles a task as FAILED with a platform exception.
    pub async fn fail(
        &self,
        task_id: Uuid,
        from: TaskStatus,
        attempt: Option<u32>,
        entry_id: &str,
        kind: PlatformError,
        detail: &str,
    ) -> Result<(), StoreError> {
        let result = platform_exception(kind, detail);
        let cause = kind.message(detail);
        let finish = Finish {
            task_id,
            from,
            attempt,
            status: TaskStatus::Failed,
            result: &result,
            error: &cause,
            entry_id: Some(entry_id),
        };
        match self.store.retrying(|| self.store.finish(&finish)).await? {
            Recorded::Applied => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(task_id = %task_id, attempt = ?attempt, cause, "task FAILED");
            }
            Recorded::Unknown => tracing::warn!(task_id = %task_id, attempt = ?attempt, cause,
                "failed task is no longer known to Redis (expired, or Redis lost its data)"),
            Recorded::Duplicate | Recorded::Stale => {}
        }
        Ok(())
    }
}
