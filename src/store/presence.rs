//! What live dispatchers publish about themselves for `GET /info` and `/metrics`: their
//! workers, slots, free slots and executor runtimes.
//!
//! Every dispatcher rewrites its entry in the [`keys::PRESENCE`] hash about once a second; an
//! entry carries its own expiry time (a hash field cannot have a TTL), readers skip expired
//! entries and delete them, and a dispatcher removes its entry when it stops.

use serde::{Deserialize, Serialize};

use super::{keys, Store, StoreError};
use crate::runtime::Runtime;
use crate::time::now_ms;

/// One dispatcher's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DispatcherPresence {
    /// Consumer name of the dispatcher.
    pub name: String,
    /// local, pull or push.
    pub mode: String,
    pub host: String,
    pub pid: u32,
    /// faas version of the dispatcher.
    pub version: String,
    /// The executors it runs tasks on: itself in local mode, its workers otherwise.
    pub workers: Vec<WorkerPresence>,
    /// When this snapshot was written (Unix ms).
    pub updated_ms: u64,
    /// When it is stale unless rewritten (Unix ms).
    pub expires_ms: u64,
}

/// One worker (or the local pool) of a dispatcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerPresence {
    pub id: String,
    pub host: String,
    /// Tasks it runs at once.
    pub slots: u32,
    /// Slots free right now.
    pub free: u32,
    /// Python and dill versions of its executors.
    pub runtime: Runtime,
}

impl Store {
    /// Writes (or refreshes) a dispatcher's snapshot.
    pub async fn publish_presence(&self, p: &DispatcherPresence) -> Result<(), StoreError> {
        let json = serde_json::to_string(p).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut c = self.conn();
        let _: i64 = redis::cmd("HSET")
            .arg(keys::PRESENCE)
            .arg(&p.name)
            .arg(json)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Removes a dispatcher's snapshot (it is stopping).
    pub async fn withdraw_presence(&self, name: &str) -> Result<(), StoreError> {
        let mut c = self.conn();
        let _: i64 = redis::cmd("HDEL")
            .arg(keys::PRESENCE)
            .arg(name)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Snapshots of the live dispatchers, by name; expired and unreadable entries are deleted.
    pub async fn presence(&self) -> Result<Vec<DispatcherPresence>, StoreError> {
        let mut c = self.conn();
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(keys::PRESENCE)
            .query_async(&mut c)
            .await?;
        let now = now_ms();
        let mut live = Vec::new();
        let mut stale = Vec::new();
        for (name, json) in all {
            match serde_json::from_str::<DispatcherPresence>(&json) {
                Ok(p) if p.expires_ms > now => live.push(p),
                _ => stale.push(name),
            }
        }
        if !stale.is_empty() {
            let _: i64 = redis::cmd("HDEL")
                .arg(keys::PRESENCE)
                .arg(&stale)
                .query_async(&mut c)
                .await?;
        }
        live.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(live)
    }
}
