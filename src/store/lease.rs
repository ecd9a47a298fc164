//! Dispatcher leases: a TTL'd key per consumer name proves that dispatcher is alive.
//!
//! A second dispatcher with the same name is refused while the lease is held; a dispatcher that
//! died loses its lease after the TTL, and then its queue entries may be adopted by others.

use std::time::Duration;

use redis::Value;

use super::{keys, scripts, Store, StoreError};

/// How long a lease lives without renewal: a dispatcher silent for this long is dead.
pub const LEASE_TTL: Duration = Duration::from_secs(5);

/// Outcome of trying to take a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    Held,
    /// Another process holds it; its owner token.
    HeldBy(String),
}

/// The lease owner token: `host:pid:boot-nonce`.
pub fn owner_token(host: &str) -> String {
    format!(
        "{host}:{}:{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Store {
    /// Takes or renews the lease `name` for `token`.
    pub async fn lease(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<LeaseState, StoreError> {
        let mut c = self.conn();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let v: Value = scripts::LEASE
            .key(keys::dispatcher_lease(name))
            .arg(token)
            .arg(ttl_ms)
            .invoke_async(&mut c)
            .await?;
        match v {
            Value::Int(1) => Ok(LeaseState::Held),
            Value::BulkString(b) => {
                Ok(LeaseState::HeldBy(String::from_utf8_lossy(&b).into_owned()))
            }
            other => Err(StoreError::Corrupt(format!("lease reply {other:?}"))),
        }
    }

    /// Drops the lease if we hold it (on clean shutdown).
    pub async fn release_lease(&self, name: &str, token: &str) -> Result<(), StoreError> {
        let mut c = self.conn();
        let _: i64 = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        )
        .key(keys::dispatcher_lease(name))
        .arg(token)
        .invoke_async(&mut c)
        .await?;
        Ok(())
    }
}
