//! Lua scripts that make each task transition one atomic step in Redis.

use std::sync::LazyLock;

use redis::Script;

/// QUEUED → RUNNING. KEYS: task hash. ARGV: worker, now_ms, python, dill (both optional).
/// Returns {"RUNNING", attempt, function_id, args, timeout_ms or ""} on success, else {current
/// status} or {"MISSING"}.
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'MISSING'} end
if st ~= 'QUEUED' then return {st} end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'RUNNING', 'started_ms', ARGV[2], 'worker', ARGV[1])
if ARGV[3] then redis.call('HSET', KEYS[1], 'python', ARGV[3], 'dill', ARGV[4] or '') end
local f = redis.call('HMGET', KEYS[1], 'function_id', 'args', 'timeout_ms')
return {'RUNNING', tostring(attempt), f[1], f[2], f[3] or ''}
"#,
    )
});

/// FROM → COMPLETED|FAILED, fenced by the attempt number; also acks and deletes the queue entry.
/// KEYS: task hash, queue stream, stats hash. ARGV: from_status, attempt ('' = any), status,
/// result, error, now_ms, ttl_secs, entry_id ('' = none), group, done channel, task_id.
/// Returns 1 when the transition was applied, 0 when the task was not in `from` (or another attempt).
/// An applied transition is counted (see [`super::stats`]) and the id published on the done channel.
pub static FINISH: LazyLock<Script> = LazyLock::new(|| {
    let body = r#"
local applied = 0
local st = redis.call('HGET', KEYS[1], 'status')
if st == ARGV[1] and (ARGV[2] == '' or redis.call('HGET', KEYS[1], 'attempts') == ARGV[2]) then
  redis.call('HSET', KEYS[1], 'status', ARGV[3], 'result', ARGV[4], 'error', ARGV[5], 'finished_ms', ARGV[6])
  if tonumber(ARGV[7]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[7]) end
  faas_settled(KEYS[3], KEYS[1], ARGV[3], ARGV[5], ARGV[6])
  redis.call('PUBLISH', ARGV[10], ARGV[11])
  applied = 1
end
if ARGV[8] ~= '' then
  redis.call('XACK', KEYS[2], ARGV[9], ARGV[8])
  redis.call('XDEL', KEYS[2], ARGV[8])
end
return applied
"#;
    Script::new(&format!("{}{body}", *super::stats::SETTLED_LUA))
});

/// Acknowledges and deletes a queue entry. KEYS: queue stream. ARGV: group, entry_id.
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
/// Returns 1 when requeued, 0 otherwise.
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
