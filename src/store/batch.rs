//! Creating many tasks in one step and reading many task records in one round trip.
//!
//! [`CREATE_TASKS`] is the only way tasks are created (`/execute_function` is a batch of one):
//! it checks the function exists, writes every task hash, appends each to the queue stream,
//! publishes each id on `tasks` (as the specification asks) and counts them, atomically.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use uuid::Uuid;

use super::{keys, Store, StoreError, TaskStatus, TaskView};
use crate::runtime::Runtime;
use crate::time::now_ms;

/// KEYS: fn hash, queue stream, stats hash, task hash × N.
/// ARGV: fn_id, now_ms, channel, timeout_ms ('' = none), then task_id, args for each task.
/// Returns 1, or 0 when the function does not exist (nothing is written then).
static CREATE_TASKS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local name = redis.call('HGET', KEYS[1], 'name')
if not name then return 0 end
local n = #KEYS - 3
for i = 1, n do
  local task, id = KEYS[3 + i], ARGV[3 + 2 * i]
  redis.call('HSET', task, 'function_id', ARGV[1], 'function_name', name, 'args', ARGV[4 + 2 * i],
             'status', 'QUEUED', 'created_ms', ARGV[2], 'attempts', 0)
  if ARGV[4] ~= '' then redis.call('HSET', task, 'timeout_ms', ARGV[4]) end
  redis.call('XADD', KEYS[2], '*', 'task_id', id)
  redis.call('PUBLISH', ARGV[3], id)
end
redis.call('HINCRBY', KEYS[3], 'created', n)
return 1
"#,
    )
});

/// The fields of [`VIEW_FIELDS`] as read.
type ViewRow = (
    Option<String>,
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
);

/// Fields read for a [`TaskView`], in this order.
const VIEW_FIELDS: [&str; 4] = ["status", "result", "python", "dill"];

impl Store {
    /// Creates one QUEUED task per arguments pickle for function `function_id`, each with the
    /// optional per-task `timeout`, in one atomic step. Returns the new ids in order, or `None`
    /// (and writes nothing) when the function does not exist.
    pub async fn create_tasks(
        &self,
        function_id: &Uuid,
        args: &[&[u8]],
        timeout: Option<Duration>,
    ) -> Result<Option<Vec<Uuid>>, StoreError> {
        let ids: Vec<Uuid> = args.iter().map(|_| Uuid::new_v4()).collect();
        let mut inv = CREATE_TASKS.prepare_invoke();
        inv.key(keys::function(function_id))
            .key(keys::QUEUE)
            .key(keys::STATS);
        for id in &ids {
            inv.key(keys::task(id));
        }
        let timeout_ms = timeout.map(|t| t.as_millis().max(1).to_string());
        inv.arg(function_id.to_string())
            .arg(now_ms())
            .arg(keys::CHANNEL)
            .arg(timeout_ms.unwrap_or_default());
        for (id, a) in ids.iter().zip(args) {
            inv.arg(id.to_string()).arg(*a);
        }
        let mut c = self.conn();
        let created: i64 = inv.invoke_async(&mut c).await?;
        Ok((created == 1).then_some(ids))
    }

    /// Status, result and runtime of each task, in one pipelined round trip; `None` for
    /// unknown ids.
    pub async fn task_views(&self, ids: &[Uuid]) -> Result<Vec<Option<TaskView>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new()); // an empty pipeline is an error in Redis
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET").arg(keys::task(id)).arg(&VIEW_FIELDS[..]);
        }
        let mut c = self.conn();
        let rows: Vec<ViewRow> = pipe.query_async(&mut c).await?;
        rows.into_iter().map(view).collect()
    }
}

/// A [`TaskView`] from the fields in [`VIEW_FIELDS`] order.
fn view((status, result, python, dill): ViewRow) -> Result<Option<TaskView>, StoreError> {
    let Some(status) = status else {
        return Ok(None);
    };
    let status: TaskStatus = status.parse().map_err(StoreError::Corrupt)?;
    let runtime = Runtime {
        python: python.unwrap_or_default(),
        dill: dill.unwrap_or_default(),
    };
    Ok(Some(TaskView {
        status,
        result: result.filter(|_| status.is_terminal()),
        runtime: (!runtime.is_unknown()).then_some(runtime),
    }))
}
