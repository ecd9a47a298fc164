//! The worker's systemd notifications, driven by its [`Status`] channel.
//!
//! `READY=1` is sent once the executors are warm *and* the worker is registered with its
//! dispatcher (the first `welcome`): only then does it serve. A dispatcher that is down when the
//! worker starts therefore keeps the unit in "activating" with `STATUS=waiting for dispatcher …`
//! (the watchdog is pinged meanwhile: the worker is healthy, it keeps reconnecting); the unit's
//! `TimeoutStartSec=` bounds that wait. Later outages do not take readiness back: the status line
//! says "waiting for dispatcher" again.

use tokio::sync::watch;

use super::Status;
use crate::notify::{self, StatusLine};

/// The `STATUS=` line for `s`: e.g. `push → tcp://10.0.0.5:5555: 4 slots, 1 running, 0 unacked`.
pub fn status_line(s: &Status, mode: &str, dispatcher: &str) -> String {
    let counts = format!("{} running, {} unacked", s.running, s.unacked);
    if s.draining {
        format!("stopping: {counts}")
    } else if s.registered {
        format!("{mode} → {dispatcher}: {} slots, {counts}", s.slots)
    } else {
        format!("waiting for dispatcher {dispatcher}: {counts}")
    }
}

/// Follows `rx` until the worker stops: READY on the first registration, STATUS on changes.
pub async fn follow(mut rx: watch::Receiver<Status>, mode: &'static str, dispatcher: String) {
    let line = StatusLine::spawn();
    loop {
        let s = rx.borrow_and_update().clone();
        line.set(status_line(&s, mode, &dispatcher));
        if s.registered {
            notify::ready();
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let mut s = Status {
            slots: 4,
            running: 1,
            free: 3,
            unacked: 0,
            registered: true,
            draining: false,
        };
        let d = "tcp://127.0.0.1:5555";
        assert_eq!(
            status_line(&s, "push", d),
            "push → tcp://127.0.0.1:5555: 4 slots, 1 running, 0 unacked"
        );
        s.registered = false;
        assert!(status_line(&s, "push", d).starts_with("waiting for dispatcher tcp://"));
        s.draining = true;
        assert_eq!(status_line(&s, "push", d), "stopping: 1 running, 0 unacked");
    }
}
