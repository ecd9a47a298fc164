//! Lua scripts that make each task transition one atomic step in Redis.
//!
//! Each script may run twice for one call (a reply lost with its connection is retried), and
//! gives the same outcome then: see the notes on each (and on `CREATE_TASKS` in [`super::batch`]).

use std::sync::LazyLock;

use redis::Script;

/// Lua function `faas_claim(task, worker, now_ms, python, dill, token)`: QUEUED → RUNNING, the
/// body of [`CLAIM`] and of each task of [`CLAIM_MANY`] (one definition, one behaviour).
const CLAIM_LUA: &str = r#"
local function faas_claim(task, worker, now, python, dill, token)
  local f = redis.call('HMGET', task, 'status', 'claim', 'attempts', 'function_id', 'args', 'timeout_ms')
  local st = f[1]
  if not st then return {'MISSING'} end
  if st == 'RUNNING' and token ~= '' and f[2] == token then
    return {'RUNNING', f[3], f[4], f[5], f[6] or ''}
  end
  if st ~= 'QUEUED' then return {st} end
  local attempt = tostring((tonumber(f[3]) or 0) + 1)
  redis.call('HSET', task, 'status', 'RUNNING', 'attempts', attempt, 'started_ms', now,
    'worker', worker, 'claim', token, 'python', python, 'dill', dill)
  return {'RUNNING', attempt, f[4], f[5], f[6] or ''}
end
"#;

/// QUEUED → RUNNING. KEYS: task hash. ARGV: worker, now_ms, python, dill, claim token
/// ('' = none). Returns {"RUNNING", attempt, function_id, args, timeout_ms or ""} on success,
/// else {current status} or {"MISSING"}.
/// Again (RUNNING under the same non-empty token): returns the same run.
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{CLAIM_LUA}return faas_claim(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])"
    ))
});

/// [`CLAIM`] for N tasks of one worker in one step. KEYS: task hash × N. ARGV: worker, now_ms,
/// python, dill, then one claim token per task. Returns one [`CLAIM`] reply per task, in order.
/// Again (the reply was lost): every task claimed under its token returns the same run, the
/// others (not QUEUED, missing) answer as they did.
pub static CLAIM_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{CLAIM_LUA}
local out = {{}}
for i = 1, #KEYS do
  out[i] = faas_claim(KEYS[i], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[4 + i])
end
return out
"#
    ))
});

/// Lua function `faas_finish(task, queue, stats, from, attempt, status, result, error, now_ms,
/// ttl_secs, entry_id, group, channel, task_id[, batch])`: the body of [`FINISH`] and of each
/// finish of [`FINISH_MANY`] (one definition, one behaviour). With `batch` (a table of
/// `counts` and `entries`), the counters and the acknowledgement are left for the batch to write
/// once, at its end, in the same script: nothing else reads them in between.
const FINISH_LUA: &str = r#"
local function faas_finish(task, queue, stats, from, attempt, status, result, err, now, ttl, entry, group, channel, id, batch)
  local applied = 0
  local f = redis.call('HMGET', task, 'status', 'attempts', 'created_ms')
  local st, attempts = f[1], f[2]
  if not st then
    applied = -1
  elseif st == from and (attempt == '' or attempts == attempt) then
    redis.call('HSET', task, 'status', status, 'result', result, 'error', err, 'finished_ms', now)
    if tonumber(ttl) > 0 then redis.call('EXPIRE', task, ttl) end
    faas_settled(stats, task, status, err, now, f[3], batch and batch.counts)
    redis.call('PUBLISH', channel, id)
    applied = 1
  elseif st == status and attempt ~= '' and attempts == attempt then
    applied = 2
  end
  if entry ~= '' then
    if batch then
      table.insert(batch.entries, entry)
    else
      redis.call('XACK', queue, group, entry)
      redis.call('XDEL', queue, entry)
    end
  end
  return applied
end
"#;

/// FROM → COMPLETED|FAILED, fenced by the attempt number; also acks and deletes the queue entry.
/// KEYS: task hash, queue stream, stats hash. ARGV: from_status, attempt ('' = any), status,
/// result, error, now_ms, ttl_secs, entry_id ('' = none), group, done channel, task_id.
/// Returns 1 when the transition was applied; 2 when the task already has `status` under this
/// attempt (again, or a report sent twice); 0 when it is in another state or attempt; -1 when
/// there is no such task.
/// An applied transition is counted (see [`super::stats`]) and the id published on the done channel.
pub static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}{FINISH_LUA}return faas_finish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], \
         ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11])",
        *super::stats::SETTLED_LUA
    ))
});

/// Number of ARGV entries per finish of [`FINISH_MANY`].
pub const FINISH_MANY_ARGS: usize = 7;

/// [`FINISH`] for N tasks in one step: each finish is fenced, counted, published and acks its
/// entry exactly as a [`FINISH`] alone would. KEYS: queue stream, stats hash, task hash × N.
/// ARGV: now_ms, ttl_secs, group, done channel, then per task (7 each): from_status, attempt
/// ('' = any), status, result, error, entry_id ('' = none), task_id.
/// Returns one [`FINISH`] reply per task, in order. Again (the reply was lost): each applied
/// finish now answers 2 (or 0 for one with attempt ''), nothing is written or published twice.
pub static FINISH_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{}{FINISH_LUA}
local out = {{}}
local batch = {{counts = {{}}, entries = {{}}}}
for i = 3, #KEYS do
  local a = 4 + (i - 3) * 7
  out[i - 2] = faas_finish(KEYS[i], KEYS[1], KEYS[2], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3],
    ARGV[a + 4], ARGV[a + 5], ARGV[1], ARGV[2], ARGV[a + 6], ARGV[3], ARGV[4], ARGV[a + 7], batch)
end
faas_settled_flush(KEYS[2], batch.counts)
if #batch.entries > 0 then
  redis.call('XACK', KEYS[1], ARGV[3], unpack(batch.entries))
  redis.call('XDEL', KEYS[1], unpack(batch.entries))
end
return out
"#,
        *super::stats::SETTLED_LUA
    ))
});

/// Hands entries read but never claimed back to the queue: each whose task is still QUEUED is
/// acknowledged and deleted, and the task gets a new entry at the queue's end (for any
/// dispatcher). Entries of tasks in any other state stay pending, for the recovery that settles
/// them (a task claimed meanwhile by a dispatcher that adopted the entry keeps its entry).
/// KEYS: queue stream, then task hash × N. ARGV: group, then per task: entry_id, task_id.
/// Returns how many tasks were re-enqueued. Again (the reply was lost): the entries are no
/// longer pending (XACK answers 0), so nothing is enqueued twice.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = 0
for i = 2, #KEYS do
  local entry, id = ARGV[2 * i - 2], ARGV[2 * i - 1]
  if redis.call('HGET', KEYS[i], 'status') == 'QUEUED'
      and redis.call('XACK', KEYS[1], ARGV[1], entry) == 1 then
    redis.call('XDEL', KEYS[1], entry)
    redis.call('XADD', KEYS[1], '*', 'task_id', id)
    n = n + 1
  end
end
return n
"#,
    )
});

/// Acknowledges and deletes a queue entry. KEYS: queue stream. ARGV: group, entry_id. Again: no-op.
pub static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"#,
    )
});

/// RUNNING → QUEUED for a retry, fenced by attempt; re-enqueues and acks the old entry.
/// KEYS: task hash, queue stream. ARGV: attempt, reason, task_id, entry_id ('' = none), group.
/// Returns 1 when requeued, 0 otherwise (again: 0, the task is QUEUED already).
pub static REQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local applied = 0
if redis.call('HGET', KEYS[1], 'status') == 'RUNNING' and redis.call('HGET', KEYS[1], 'attempts') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'status', 'QUEUED', 'error', ARGV[2])
  redis.call('XADD', KEYS[2], '*', 'task_id', ARGV[3])
  applied = 1
end
if ARGV[4] ~= '' then
  redis.call('XACK', KEYS[2], ARGV[5], ARGV[4])
  redis.call('XDEL', KEYS[2], ARGV[4])
end
return applied
"#,
    )
});

/// Moves one page of a dead consumer's pending entries to another consumer, atomically with the
/// check that the dead consumer's lease is still absent (a dispatcher that came back under that
/// name keeps its entries).
/// KEYS: queue stream, lease key of the dead consumer. ARGV: group, new consumer, dead consumer,
/// min_idle_ms, start id (exclusive, '-' for the first page), page size.
/// Returns {-1} when the lease exists again, else {claimed, listed, last listed id or ''}.
/// Only entries idle for at least `min_idle_ms` are listed and claimed (XPENDING IDLE and
/// XCLAIM's min-idle-time): an entry that a live dispatcher claimed or read a moment ago is
/// never taken from it. Again: the claimed entries are no longer the dead consumer's, so a
/// repeated page claims nothing twice.
pub static ADOPT_PAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return {-1} end
local rows = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[4], ARGV[5], '+', ARGV[6], ARGV[3])
if #rows == 0 then return {0, 0, ''} end
local ids = {}
for i, row in ipairs(rows) do ids[i] = row[1] end
local got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[4], unpack(ids))
local claimed = 0
for _, e in ipairs(got) do if e then claimed = claimed + 1 end end
return {claimed, #rows, ids[#ids]}
"#,
    )
});

/// Deletes a consumer from the group only if it has nothing pending and its lease is absent
/// (XGROUP DELCONSUMER drops the consumer's pending entries with it, so it must never run on
/// a consumer that still has some, or on one that came back meanwhile).
/// KEYS: queue stream, lease key. ARGV: group, consumer. Returns 1 when deleted, 0 when kept.
/// Again: the consumer is gone, DELCONSUMER of a missing consumer changes nothing.
pub static FORGET_CONSUMER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local rows = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #rows > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"#,
    )
});

/// Takes or renews the lease of a dispatcher consumer name.
/// KEYS: lease key. ARGV: owner token, ttl_ms. Returns 1 when held by us, else the holder's token.
/// Again: renews again.
pub static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('GET', KEYS[1])
if not cur or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return cur
"#,
    )
});
