//! Lua scripts that make each task transition one atomic step in Redis.
//!
//! Each script may run twice for one call (a reply lost with its connection is retried), and
//! gives the same outcome then: see the notes on each (and on `CREATE_TASKS` in [`super::batch`]).

use std::sync::LazyLock;

use redis::Script;

/// QUEUED → RUNNING. KEYS: task hash. ARGV: worker, now_ms, python, dill, claim token
/// ('' = none). Returns {"RUNNING", attempt, function_id, args, timeout_ms or ""} on success,
/// else {current status} or {"MISSING"}.
/// Again (RUNNING under the same non-empty token): returns the same run.
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'MISSING'} end
if st == 'RUNNING' and ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'claim') == ARGV[5] then
  local f = redis.call('HMGET', KEYS[1], 'attempts', 'function_id', 'args', 'timeout_ms')
  return {'RUNNING', f[1], f[2], f[3], f[4] or ''}
end
if st ~= 'QUEUED' then return {st} end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'RUNNING', 'started_ms', ARGV[2], 'worker', ARGV[1], 'claim', ARGV[5])
redis.call('HSET', KEYS[1], 'python', ARGV[3], 'dill', ARGV[4])
local f = redis.call('HMGET', KEYS[1], 'function_id', 'args', 'timeout_ms')
return {'RUNNING', tostring(attempt), f[1], f[2], f[3] or ''}
"#,
    )
});

/// FROM → COMPLETED|FAILED, fenced by the attempt number; also acks and deletes the queue entry.
/// KEYS: task hash, queue stream, stats hash. ARGV: from_status, attempt ('' = any), status,
/// result, error, now_ms, ttl_secs, entry_id ('' = none), group, done channel, task_id.
/// Returns 1 when the transition was applied; 2 when the task already has `status` under this
/// attempt (again, or a report sent twice); 0 when it is in another state or attempt; -1 when
/// there is no such task.
/// An applied transition is counted (see [`super::stats`]) and the id published on the done channel.
pub static FINISH: LazyLock<Script> = LazyLock::new(|| {
    let body = r#"
local applied = 0
local st = redis.call('HGET', KEYS[1], 'status')
local attempts = redis.call('HGET', KEYS[1], 'attempts')
if not st then
  applied = -1
elseif st == ARGV[1] and (ARGV[2] == '' or attempts == ARGV[2]) then
  redis.call('HSET', KEYS[1], 'status', ARGV[3], 'result', ARGV[4], 'error', ARGV[5], 'finished_ms', ARGV[6])
  if tonumber(ARGV[7]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[7]) end
  faas_settled(KEYS[3], KEYS[1], ARGV[3], ARGV[5], ARGV[6])
  redis.call('PUBLISH', ARGV[10], ARGV[11])
  applied = 1
elseif st == ARGV[3] and ARGV[2] ~= '' and attempts == ARGV[2] then
  applied = 2
end
if ARGV[8] ~= '' then
  redis.call('XACK', KEYS[2], ARGV[9], ARGV[8])
  redis.call('XDEL', KEYS[2], ARGV[8])
end
return applied
"#;
    Script::new(&format!("{}{body}", *super::stats::SETTLED_LUA))
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
