//! Listing, describing and deleting registered functions.
//!
//! Functions are indexed in the sorted set [`keys::FUNCTIONS`] (by registration time), written
//! together with the function hash. Deleting a function removes both, then walks the queue
//! stream page by page and fails every still-QUEUED task of that function with
//! `FunctionDeleted` ([`FAIL_QUEUED_OF`]). Every task of the function was appended to the stream
//! when it was created, and no new one can be created once the hash is gone, so none is missed;
//! tasks already RUNNING finish (or are retried) with the function the dispatcher holds.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use uuid::Uuid;

use super::{keys, Store, StoreError};
use crate::pickle::{platform_exception, PlatformError};
use crate::time::now_ms;

/// Queue entries examined per call of [`FAIL_QUEUED_OF`] (each call blocks Redis briefly).
const PAGE: usize = 500;

/// One page of the queue: fails QUEUED tasks of a function.
/// KEYS: queue stream, stats hash. ARGV: function_id, start (exclusive after the first page),
/// count, result, error, now_ms, ttl_secs, done channel.
/// Returns {failed, last entry id or '', entries read}.
static FAIL_QUEUED_OF: LazyLock<Script> = LazyLock::new(|| {
    let body = format!(
        r#"
local entries = redis.call('XRANGE', KEYS[1], ARGV[2], '+', 'COUNT', ARGV[3])
local failed, last = 0, ''
for _, e in ipairs(entries) do
  last = e[1]
  local f = e[2]
  for j = 1, #f, 2 do
    if f[j] == 'task_id' then
      local task = '{prefix}' .. f[j + 1]
      local st = redis.call('HMGET', task, 'status', 'function_id')
      if st[1] == 'QUEUED' and st[2] == ARGV[1] then
        redis.call('HSET', task, 'status', 'FAILED', 'result', ARGV[4], 'error', ARGV[5], 'finished_ms', ARGV[6])
        if tonumber(ARGV[7]) > 0 then redis.call('EXPIRE', task, ARGV[7]) end
        faas_settled(KEYS[2], task, 'FAILED', ARGV[5], ARGV[6])
        redis.call('PUBLISH', ARGV[8], f[j + 1])
        failed = failed + 1
      end
    end
  end
end
return {{failed, last, #entries}}
"#,
        prefix = keys::TASK_PREFIX
    );
    Script::new(&format!("{}{body}", *super::stats::SETTLED_LUA))
});

/// Removes a function hash and its index entry. KEYS: fn hash, index. ARGV: function_id.
/// Returns the function's name, or false when it did not exist.
static DELETE_FUNCTION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local name = redis.call('HGET', KEYS[1], 'name')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return name
"#,
    )
});

/// What is known about a registered function (never its body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    pub function_id: Uuid,
    pub name: String,
    pub created_ms: u64,
    /// Size of the function's pickle in bytes.
    pub size_bytes: u64,
}

impl Store {
    /// Up to `limit` functions in registration order, starting at `offset`, and the total count.
    pub async fn functions(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<FunctionInfo>, u64), StoreError> {
        let mut c = self.conn();
        let stop = offset.saturating_add(limit.max(1)) - 1;
        let (ids, total): (Vec<String>, u64) = redis::pipe()
            .zrange(
                keys::FUNCTIONS,
                offset as isize,
                isize::try_from(stop).unwrap_or(isize::MAX),
            )
            .zcard(keys::FUNCTIONS)
            .query_async(&mut c)
            .await?;
        let ids: Vec<Uuid> = ids.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect();
        let infos = self.function_infos(&ids).await?;
        Ok((infos.into_iter().flatten().collect(), total))
    }

    /// One function's description, or `None` when it does not exist.
    pub async fn function_info(&self, id: &Uuid) -> Result<Option<FunctionInfo>, StoreError> {
        Ok(self
            .function_infos(std::slice::from_ref(id))
            .await?
            .pop()
            .flatten())
    }

    async fn function_infos(&self, ids: &[Uuid]) -> Result<Vec<Option<FunctionInfo>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new()); // an empty pipeline is an error in Redis
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(keys::function(id))
                .arg(&["name", "created_ms"][..])
                .cmd("HSTRLEN")
                .arg(keys::function(id))
                .arg("payload");
        }
        let mut c = self.conn();
        let rows: Vec<redis::Value> = pipe.query_async(&mut c).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, pair) in ids.iter().zip(rows.chunks(2)) {
            let fields: (Option<String>, Option<String>) = match pair.first() {
                Some(v) => redis::from_redis_value_ref(v).map_err(corrupt)?,
                None => (None, None),
            };
            let size: u64 = match pair.get(1) {
                Some(v) => redis::from_redis_value_ref(v).map_err(corrupt)?,
                None => 0,
            };
            out.push(fields.0.map(|name| FunctionInfo {
                function_id: *id,
                name,
                created_ms: fields.1.and_then(|s| s.parse().ok()).unwrap_or(0),
                size_bytes: size,
            }));
        }
        Ok(out)
    }

    /// Deletes a function; its QUEUED tasks become FAILED with `FunctionDeleted` (their records
    /// live for `ttl`, 0 = no expiry). Returns `None` when the function did not exist, else the
    /// number of tasks failed.
    pub async fn delete_function(
        &self,
        id: &Uuid,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let mut c = self.conn();
        let name: Option<String> = DELETE_FUNCTION
            .key(keys::function(id))
            .key(keys::FUNCTIONS)
            .arg(id.to_string())
            .invoke_async(&mut c)
            .await?;
        let Some(name) = name else {
            return Ok(None);
        };
        let kind = PlatformError::FunctionDeleted;
        let detail = format!("function {id} ({name}) was deleted before the task ran");
        let pickle = platform_exception(kind, &detail);
        let cause = kind.message(&detail);
        let mut start = "-".to_string();
        let mut failed = 0u64;
        loop {
            let (n, last, read): (u64, String, usize) = FAIL_QUEUED_OF
                .key(keys::QUEUE)
                .key(keys::STATS)
                .arg(id.to_string())
                .arg(&start)
                .arg(PAGE)
                .arg(&pickle)
                .arg(&cause)
                .arg(now_ms())
                .arg(ttl.as_secs())
                .arg(keys::DONE_CHANNEL)
                .invoke_async(&mut c)
                .await?;
            failed += n;
            if read < PAGE || last.is_empty() {
                break;
            }
            start = format!("({last}");
        }
        Ok(Some(failed))
    }
}

fn corrupt(e: redis::ParsingError) -> StoreError {
    StoreError::Corrupt(format!("function record: {e}"))
}
