//! Cluster-wide task counters in the [`keys::STATS`] hash, written by the scripts that settle a
//! task, and their snapshot for `/metrics`.
//!
//! Every script that moves a task to COMPLETED or FAILED (the dispatcher's `FINISH`, the
//! gateway's cancel and function deletion) runs [`SETTLED_LUA`]: one counter per outcome
//! (`settled:COMPLETED`, `settled:FAILED:<cause class>`) and a latency histogram of the task's
//! life from `created_ms` to the moment it settled (`latency:<bucket>`, `latency_sum_ms`). Batch
//! creation counts `created`. Counters live in Redis so every gateway reports the same totals,
//! whoever settled the task.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::{keys, Store, StoreError};

/// Upper bounds (milliseconds) of the task latency histogram's buckets; `+Inf` follows.
pub const LATENCY_BUCKETS_MS: [u64; 15] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 10_000, 60_000, 300_000, 3_600_000,
];

/// Most distinct failure causes counted by name; further ones count as `other`.
const MAX_CAUSES: usize = 200;

/// Lua prelude defining `faas_settled(stats_key, task_key, status, error, now_ms[, created_ms,
/// acc])`, to be called by a script right after it settled `task_key`. `created_ms` is the task's
/// field when the caller has read it already (`false` when the task has none; omitted: read
/// here). With `acc` (a table), the counts that are the same for every task of a batch
/// (`settled:COMPLETED` and the latency fields) are added up there and written by
/// `faas_settled_flush(stats_key, acc)` once per batch, not once per task; a failure's cause
/// counter is always written at once (the cap on distinct causes reads the hash).
pub static SETTLED_LUA: LazyLock<String> = LazyLock::new(|| {
    let bounds: Vec<String> = LATENCY_BUCKETS_MS.iter().map(u64::to_string).collect();
    format!(
        r#"
local function faas_count(stats, acc, field, n)
  if acc then
    acc[field] = (acc[field] or 0) + n
  else
    redis.call('HINCRBY', stats, field, n)
  end
end
local function faas_settled(stats, task, status, err, now, created, acc)
  if status == 'COMPLETED' then
    faas_count(stats, acc, 'settled:COMPLETED', 1)
  else
    local field = 'settled:FAILED:' .. (string.match(err or '', '^([%w_%.]+)') or 'unknown')
    if redis.call('HEXISTS', stats, field) == 0 and redis.call('HLEN', stats) > {max} then
      field = 'settled:FAILED:other'
    end
    redis.call('HINCRBY', stats, field, 1)
  end
  if created == nil then created = redis.call('HGET', task, 'created_ms') end
  created = tonumber(created)
  if created then
    local ms = math.max(0, tonumber(now) - created)
    local bucket = '+Inf'
    for _, b in ipairs({{{bounds}}}) do
      if ms <= b then bucket = tostring(b); break end
    end
    faas_count(stats, acc, 'latency:' .. bucket, 1)
    faas_count(stats, acc, 'latency_sum_ms', ms)
  end
end
local function faas_settled_flush(stats, acc)
  for field, n in pairs(acc) do
    redis.call('HINCRBY', stats, field, n)
  end
end
"#,
        max = MAX_CAUSES + LATENCY_BUCKETS_MS.len() + 8,
        bounds = bounds.join(", ")
    )
});

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Tasks accepted by `/execute_function` and batch submission.
    pub created: u64,
    /// Settled tasks by outcome: `("COMPLETED", "")` or `("FAILED", cause class)`.
    pub settled: Vec<((String, String), u64)>,
    /// Count per latency bucket (non-cumulative), in the order of [`LATENCY_BUCKETS_MS`], then +Inf.
    pub latency_buckets: Vec<u64>,
    pub latency_sum_ms: u64,
    /// Entries in the queue stream (queued plus running tasks).
    pub queue_len: u64,
    /// Entries delivered to dispatchers and not yet acknowledged (running, or about to be).
    pub delivered: u64,
}

impl Stats {
    /// Parses the stats hash; unknown or malformed fields are ignored.
    pub fn from_hash(hash: &HashMap<String, String>) -> Stats {
        let mut s = Stats {
            latency_buckets: vec![0; LATENCY_BUCKETS_MS.len() + 1],
            ..Stats::default()
        };
        for (k, v) in hash {
            let Ok(n) = v.parse::<u64>() else { continue };
            if k == "created" {
                s.created = n;
            } else if k == "latency_sum_ms" {
                s.latency_sum_ms = n;
            } else if let Some(b) = k.strip_prefix("latency:") {
                let i = if b == "+Inf" {
                    Some(LATENCY_BUCKETS_MS.len())
                } else {
                    b.parse::<u64>()
                        .ok()
                        .and_then(|b| LATENCY_BUCKETS_MS.iter().position(|&x| x == b))
                };
                if let Some(i) = i {
                    s.latency_buckets[i] = n;
                }
            } else if let Some(rest) = k.strip_prefix("settled:") {
                let (status, cause) = rest.split_once(':').unwrap_or((rest, ""));
                s.settled.push(((status.to_string(), cause.to_string()), n));
            }
        }
        s.settled.sort();
        s
    }
}

impl Store {
    /// Reads the counters, the queue length and the number of delivered entries.
    pub async fn stats(&self) -> Result<Stats, StoreError> {
        let mut c = self.conn();
        let (hash, queue_len): (HashMap<String, String>, u64) = redis::pipe()
            .hgetall(keys::STATS)
            .xlen(keys::QUEUE)
            .query_async(&mut c)
            .await?;
        // No stream yet (nothing was ever queued) is an error reply: nothing delivered.
        let groups: redis::Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(keys::QUEUE)
            .query_async(&mut c)
            .await
            .unwrap_or(redis::Value::Nil);
        let mut s = Stats::from_hash(&hash);
        s.queue_len = queue_len;
        s.delivered = group_pending(&groups);
        Ok(s)
    }
}

/// The `pending` count of the dispatchers' group in an `XINFO GROUPS` reply (0 when absent).
fn group_pending(v: &redis::Value) -> u64 {
    let redis::Value::Array(groups) = v else {
        return 0;
    };
    groups
        .iter()
        .filter_map(|g| {
            let fields: Vec<(String, &redis::Value)> = match g {
                redis::Value::Array(kv) => kv
                    .chunks(2)
                    .filter_map(|p| match (p.first(), p.get(1)) {
                        (Some(redis::Value::BulkString(k)), Some(v)) => {
                            Some((String::from_utf8_lossy(k).into_owned(), v))
                        }
                        _ => None,
                    })
                    .collect(),
                redis::Value::Map(kv) => kv
                    .iter()
                    .filter_map(|(k, v)| match k {
                        redis::Value::BulkString(k) => {
                            Some((String::from_utf8_lossy(k).into_owned(), v))
                        }
                        _ => None,
                    })
                    .collect(),
                _ => return None,
            };
            let name = fields.iter().find(|(k, _)| k == "name").map(|(_, v)| *v);
            let is_ours =
                matches!(name, Some(redis::Value::BulkString(n)) if n == keys::GROUP.as_bytes());
            if !is_ours {
                return None;
            }
            fields
                .iter()
                .find(|(k, _)| k == "pending")
                .and_then(|(_, v)| match v {
                    redis::Value::Int(n) => u64::try_from(*n).ok(),
                    _ => None,
                })
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters_and_buckets() {
        let h: HashMap<String, String> = [
            ("created", "7"),
            ("settled:COMPLETED", "4"),
            ("settled:FAILED:TaskTimeout", "2"),
            ("latency:5", "3"),
            ("latency:+Inf", "1"),
            ("latency:6", "9"),
            ("latency_sum_ms", "12"),
            ("junk", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = Stats::from_hash(&h);
        assert_eq!(s.created, 7);
        assert_eq!(
            s.settled,
            vec![
                (("COMPLETED".into(), "".into()), 4),
                (("FAILED".into(), "TaskTimeout".into()), 2)
            ]
        );
        assert_eq!(s.latency_buckets[2], 3);
        assert_eq!(s.latency_buckets[LATENCY_BUCKETS_MS.len()], 1);
        assert_eq!(s.latency_buckets.iter().sum::<u64>(), 4);
        assert_eq!(s.latency_sum_ms, 12);
    }
}
