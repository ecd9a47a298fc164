//! Lua scripts that make each task transition one atomic step in Redis.
//!
//! Each script may run twice for one call (a reply lost with its connection is retried), and
//! gives the same outcome then: see the notes on each.

use std::sync::LazyLock;

use redis::Script;

/// Creates a task for an existing function, enqueues it and publishes its id.
/// KEYS: fn hash, task hash, queue stream. ARGV: task_id, fn_id, args, now_ms, channel.
/// Returns 1, or 0 when the function does not exist (nothing is written then).
/// Again (the task exists): rewrites its `function_id` unchanged, so that a `WAIT` after it
/// covers the task, and returns 1.
pub static CREATE_TASK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'function_id', ARGV[2])
  return 1
end
local name = redis.call('HGET', KEYS[1], 'name')
if not name then return 0 end
redis.call('HSET', KEYS[2], 'function_id', ARGV[2], 'function_name', name, 'args', ARGV[3],
           'status', 'QUEUED', 'created_ms', ARGV[4], 'attempts', 0)
redis.call('XADD', KEYS[3], '*', 'task_id', ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[1])
return 1
"#,
    )
});

/// QUEUED → RUNNING. KEYS: task hash. ARGV: worker, now_ms, claim token ('' = none).
/// Returns {"RUNNING", attempt, function_id, args} on success, else {current status} or {"MISSING"}.
/// Again (RUNNING under the same non-empty token): returns the same run.
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'MISSING'} end
if st == 'RUNNING' and ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'claim') == ARGV[3] then
  local f = redis.call('HMGET', KEYS[1], 'attempts', 'function_id', 'args')
  return {'RUNNING', f[1], f[2], f[3]}
end
if st ~= 'QUEUED' then return {st} end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'RUNNING', 'started_ms', ARGV[2], 'worker', ARGV[1], 'claim', ARGV[3])
local f = redis.call('HMGET', KEYS[1], 'function_id', 'args')
return {'RUNNING', tostring(attempt), f[1], f[2]}
"#,
    )
});

/// FROM → COMPLETED|FAILED, fenced by the attempt number; also acks and deletes the queue entry.
/// KEYS: task hash, queue stream. ARGV: from_status, attempt ('' = any), status, result, error,
/// now_ms, ttl_secs, entry_id ('' = none), group.
/// Returns 1 when the transition was applied; 2 when the task already has `status` under this
/// attempt (again, or a report sent twice); 0 when it is in another state or attempt; -1 when
/// there is no such task.
pub static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local applied = 0
local st = redis.call('HGET', KEYS[1], 'status')
local attempts = redis.call('HGET', KEYS[1], 'attempts')
if not st then
  applied = -1
elseif st == ARGV[1] and (ARGV[2] == '' or attempts == ARGV[2]) then
  redis.call('HSET', KEYS[1], 'status', ARGV[3], 'result', ARGV[4], 'error', ARGV[5], 'finished_ms', ARGV[6])
  if tonumber(ARGV[7]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[7]) end
  applied = 1
elseif st == ARGV[3] and ARGV[2] ~= '' and attempts == ARGV[2] then
  applied = 2
end
if ARGV[8] ~= '' then
  redis.call('XACK', KEYS[2], ARGV[9], ARGV[8])
  redis.call('XDEL', KEYS[2], ARGV[8])
end
return applied
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
