//! Task creation that waits for replicas (`wait_replicas`): the script and Redis `WAIT` run on
//! one connection of a small pool, so a failover after `/execute_function` (or a batch submit)
//! answered loses no task.
//!
//! `WAIT` covers the writes made on the connection that sends it, and blocks that connection
//! until enough replicas acknowledged them (or the timeout): it cannot share the multiplexed
//! connection of other requests. Each call takes one of [`POOL`] dedicated connections. A call
//! repeated after a dropped connection runs the script again, which (task already there) only
//! rewrites one field, so the `WAIT` on the new connection still covers the task.

use std::sync::Mutex;
use std::time::Duration;

use redis::ScriptInvocation;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::conn::{Conn, Connector, RESPONSE_TIMEOUT};
use super::StoreError;

/// Connections (hence concurrent task creations) that may wait for replicas at once.
pub const POOL: usize = 8;

pub struct Replicas {
    connector: Connector,
    wanted: u32,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

impl Replicas {
    pub fn new(connector: Connector, wanted: u32, timeout: Duration) -> Self {
        Replicas {
            connector,
            wanted,
            timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(POOL),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `create` (CREATE_TASKS for tasks `ids`), then `WAIT`s. Returns whether the tasks
    /// were created; [`StoreError::NotReplicated`] when fewer than `wanted` replicas confirmed.
    pub async fn create(
        &self,
        ids: &[Uuid],
        create: &ScriptInvocation<'_>,
    ) -> Result<bool, StoreError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Corrupt("replica pool closed".into()))?;
        let conn = self.idle().pop().unwrap_or_else(|| {
            self.connector
                .conn("replicas", RESPONSE_TIMEOUT + self.timeout)
        });
        let timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let wanted = self.wanted;
        let r = conn
            .run(|mut c| async move {
                let created: i64 = create.invoke_async(&mut c).await?;
                if created != 1 {
                    return Ok((false, 0));
                }
                let acked: i64 = redis::cmd("WAIT")
                    .arg(wanted)
                    .arg(timeout_ms)
                    .query_async(&mut c)
                    .await?;
                Ok((true, acked))
            })
            .await;
        self.idle().push(conn);
        let (created, acked) = r?;
        let acked = u32::try_from(acked).unwrap_or(0);
        if created && acked < self.wanted {
            return Err(StoreError::NotReplicated {
                task_ids: ids.to_vec(),
                acked,
                wanted: self.wanted,
                timeout_ms,
            });
        }
        Ok(created)
    }
}
