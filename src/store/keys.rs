//! Redis key names and constants of the faas schema (see docs/redis-schema.md).

use uuid::Uuid;

/// Stream holding one entry (`task_id`) per queued task; the durable work queue.
pub const QUEUE: &str = "faas:queue";
/// Consumer group of the dispatchers on [`QUEUE`].
pub const GROUP: &str = "dispatchers";
/// Pub/sub channel on which the id of every new task is published (as the spec asks).
pub const CHANNEL: &str = "tasks";

/// Hash of a registered function: `name`, `payload`, `created_ms`.
pub fn function(id: &Uuid) -> String {
    format!("faas:fn:{id}")
}

/// Hash of a task: see docs/redis-schema.md for its fields.
pub fn task(id: &Uuid) -> String {
    format!("{TASK_PREFIX}{id}")
}

/// Lease key proving that the dispatcher consumer `name` is alive.
pub fn dispatcher_lease(name: &str) -> String {
    format!("faas:dispatcher:{name}")
}

/// Prefix of [`task`] keys, for Lua scripts that find tasks through the queue.
pub const TASK_PREFIX: &str = "faas:task:";
/// Pub/sub channel on which the id of every task that reaches COMPLETED or FAILED is published
/// (by the script that settles it); the gateway's long-polls wait on it.
pub const DONE_CHANNEL: &str = "faas:done";
/// Pub/sub channel on which the id of every RUNNING task that was cancelled is published (by
/// the cancel script, which has already made it FAILED): the dispatcher running it stops it.
pub const CANCEL_CHANNEL: &str = "faas:cancel";
/// Sorted set of registered function ids, scored by registration time (ms).
pub const FUNCTIONS: &str = "faas:functions";
/// Hash of cluster-wide counters (tasks created, settled by outcome, latency buckets).
pub const STATS: &str = "faas:stats";
/// Hash of dispatcher name → JSON snapshot (workers, slots, executor versions), refreshed by
/// every live dispatcher; entries carry their own expiry time.
pub const PRESENCE: &str = "faas:presence";
