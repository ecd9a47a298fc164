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
    format!("faas:task:{id}")
}

/// Lease key proving that the dispatcher consumer `name` is alive.
pub fn dispatcher_lease(name: &str) -> String {
    format!("faas:dispatcher:{name}")
}
