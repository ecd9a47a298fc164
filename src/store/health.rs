//! Whether Redis is reachable, as one daemon sees it: shared by all of its connections, so an
//! outage is logged once when it begins and once when it ends, however many connections notice.
//!
//! Redis is *down* from a failed connection attempt (refused, timed out, authentication failed,
//! no primary known to the Sentinels) or a reply saying it cannot serve us (`LOADING`,
//! `MASTERDOWN`, `NOAUTH`), until a connection attempt or a command succeeds. A dropped connection alone
//! is not an outage: the next attempt decides.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// An ongoing outage.
#[derive(Debug, Clone)]
pub struct Outage {
    pub since: Instant,
    /// The error that began it.
    pub reason: String,
}

impl Outage {
    /// How long it has lasted.
    pub fn duration(&self) -> Duration {
        self.since.elapsed()
    }
}

/// Reachability of one Redis endpoint (see the module docs).
#[derive(Debug)]
pub struct Health {
    /// Where Redis is, for the log lines (password redacted).
    endpoint: String,
    down: AtomicBool,
    /// Outages that ended so far: a connection waiting to retry may go at once when it changed.
    recoveries: AtomicU64,
    outage: Mutex<Option<Outage>>,
}

impl Health {
    pub fn new(endpoint: String) -> Self {
        Health {
            endpoint,
            down: AtomicBool::new(false),
            recoveries: AtomicU64::new(0),
            outage: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Outage>> {
        self.outage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Redis did not answer (or said it cannot serve): begins an outage if none is ongoing.
    pub fn unreachable(&self, reason: &str) {
        let mut o = self.lock();
        if o.is_none() {
            tracing::warn!(redis = %self.endpoint, error = reason,
                "Redis unreachable; retrying with back-off (logged again when it is back)");
            *o = Some(Outage {
                since: Instant::now(),
                reason: reason.to_string(),
            });
            self.down.store(true, Ordering::Release);
        }
    }

    /// Redis answered: ends the outage if one is ongoing. Cheap when there is none.
    pub fn reachable(&self) {
        if !self.down.load(Ordering::Acquire) {
            return;
        }
        if let Some(o) = self.lock().take() {
            self.down.store(false, Ordering::Release);
            self.recoveries.fetch_add(1, Ordering::AcqRel);
            tracing::info!(redis = %self.endpoint, after_secs = format!("{:.1}", o.duration().as_secs_f64()),
                "Redis reachable again");
        }
    }

    /// How many outages ended so far (see [`crate::store::conn`]: a connection still waiting
    /// out its back-off reconnects at once when Redis was found back by another one).
    pub fn recoveries(&self) -> u64 {
        self.recoveries.load(Ordering::Acquire)
    }

    /// True during an outage.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// The ongoing outage, if any.
    pub fn outage(&self) -> Option<Outage> {
        self.lock().clone()
    }

    /// `"redis ok"` or `"redis unreachable for 12 s"`, for status lines.
    pub fn summary(&self) -> String {
        match self.outage() {
            None => "redis ok".into(),
            Some(o) => format!("redis unreachable for {} s", o.duration().as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_begins_once_and_ends_once() {
        let h = Health::new("redis://x".into());
        assert!(!h.is_down());
        assert_eq!(h.summary(), "redis ok");
        h.unreachable("connection refused");
        let first = h.outage().expect("down").since;
        h.unreachable("timed out");
        let o = h.outage().expect("still down");
        assert_eq!((o.since, o.reason.as_str()), (first, "connection refused"));
        assert!(h.is_down());
        assert!(h.summary().starts_with("redis unreachable for "));
        assert_eq!(h.recoveries(), 0);
        h.reachable();
        assert!(!h.is_down() && h.outage().is_none());
        h.reachable();
        assert!(!h.is_down());
        assert_eq!(h.recoveries(), 1);
    }
}
