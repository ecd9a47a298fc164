//! Holds this dispatcher's consumer-name lease in Redis for as long as it runs.

use std::path::Path;
use std::time::Duration;

use crate::host::hostname;
use crate::shutdown::Shutdown;
use crate::store::lease::{owner_token, LeaseState};
use crate::store::{Store, StoreError};

/// Lease time-to-live; a crashed dispatcher's tasks can be adopted this long after it died.
pub use crate::store::lease::LEASE_TTL;

/// Why the lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "another dispatcher named {name:?} is running ({holder}); give this one a distinct `name`"
    )]
    Taken { name: String, holder: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A held lease; renew it with [`Lease::keep`].
pub struct Lease {
    pub name: String,
    pub token: String,
}

/// True when `holder` (`host:pid:nonce`) names a process on this host that no longer exists.
fn holder_is_dead_here(holder: &str) -> bool {
    let mut parts = holder.splitn(3, ':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    host == hostname() && pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Takes the lease `name`. A lease left by a dead process on this host is taken over at once;
/// one held by a live process elsewhere is waited for up to one TTL, then refused.
pub async fn acquire(store: &Store, name: &str) -> Result<Lease, LeaseError> {
    let token = owner_token(&hostname());
    let deadline = tokio::time::Instant::now() + LEASE_TTL + Duration::from_secs(1);
    loop {
        match store
            .retrying(|| store.lease(name, &token, LEASE_TTL))
            .await?
        {
            LeaseState::Held => {
                return Ok(Lease {
                    name: name.to_string(),
                    token,
                })
            }
            LeaseState::HeldBy(holder) => {
                if holder_is_dead_here(&holder) {
                    tracing::info!(name, %holder, "taking over the lease of a dead dispatcher");
                    store
                        .retrying(|| store.release_lease(name, &holder))
                        .await?;
                    continue;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(LeaseError::Taken {
                        name: name.to_string(),
                        holder,
                    });
                }
                tracing::info!(name, %holder, "dispatcher name in use; waiting for its lease to expire");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

impl Lease {
    /// Renews the lease every third of its TTL until `shutdown`; then releases it. While Redis
    /// is unavailable it retries as soon as a connection may be attempted, so the lease is
    /// renewed within a second of Redis answering again (an outage longer than the TTL lets it
    /// lapse meanwhile: another dispatcher may then adopt our pending entries).
    pub async fn keep(self, store: Store, mut shutdown: Shutdown) {
        let renew = LEASE_TTL / 3;
        let mut next = tokio::time::Instant::now() + renew;
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep_until(next) => {}
            }
            next = tokio::time::Instant::now() + renew;
            match store.lease(&self.name, &self.token, LEASE_TTL).await {
                Ok(LeaseState::Held) => {}
                Ok(LeaseState::HeldBy(h)) => {
                    tracing::error!(name = %self.name, holder = %h, "lease taken by another dispatcher")
                }
                Err(e) => {
                    // An outage is logged once by the connection's health; anything else here.
                    let wait = if store.health().is_down() {
                        store.conn().retry_in().max(Duration::from_millis(100))
                    } else {
                        tracing::warn!(error = %e, "lease renewal failed; retrying");
                        Duration::from_secs(1)
                    };
                    next = tokio::time::Instant::now() + wait;
                }
            }
        }
        match tokio::time::timeout(
            Duration::from_secs(2),
            store.release_lease(&self.name, &self.token),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not release the lease; it expires by itself")
            }
            Err(_) => tracing::warn!("could not release the lease in time; it expires by itself"),
        }
    }
}
