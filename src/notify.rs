//! systemd service notifications (sd_notify(3)): `READY=1`, `STOPPING=1`, `STATUS=…`, `WATCHDOG=1`.
//!
//! Everything here is a no-op when `NOTIFY_SOCKET` is unset (not started by systemd with
//! `Type=notify`), and a failed notification is logged, never returned: systemd integration must
//! not be able to stop a daemon from serving.
//!
//! - [`ready`] is sent once, when the daemon really serves (each daemon decides when); never
//!   after [`stopping`].
//! - [`Watchdog`] pings at half of `WATCHDOG_USEC`. It is owned by the loop whose liveness
//!   matters, which calls [`Watchdog::poll`] every iteration and selects on [`Watchdog::due`], so a
//!   wedged loop stops the pings and systemd restarts the daemon.
//! - [`StatusLine`] publishes a one-line summary when it changes, at most once per second.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio::time::Instant;

/// Least time between two `STATUS=` notifications.
pub const STATUS_GAP: Duration = Duration::from_secs(1);

static READY_SENT: AtomicBool = AtomicBool::new(false);
static STOPPING_SENT: AtomicBool = AtomicBool::new(false);
static FAILURE_LOGGED: AtomicBool = AtomicBool::new(false);

/// True when the service manager listens (`NOTIFY_SOCKET` is set and not empty).
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty())
}

fn send(state: &[NotifyState<'_>]) {
    if !enabled() {
        return;
    }
    if let Err(e) = sd_notify::notify(state) {
        // Logged loudly once, then quietly: a missing socket would otherwise flood the log.
        if FAILURE_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::debug!(error = %e, "sd_notify failed");
        } else {
            tracing::warn!(error = %e, "sd_notify failed (further failures are logged at debug level)");
        }
    }
}

/// `READY=1`: start-up finished, the daemon serves. Sent at most once, and not while stopping.
pub fn ready() {
    if STOPPING_SENT.load(Ordering::SeqCst) || READY_SENT.swap(true, Ordering::SeqCst) {
        return;
    }
    if enabled() {
        tracing::debug!("notifying systemd: READY=1");
    }
    send(&[NotifyState::Ready]);
}

/// `STOPPING=1`: shutdown began (the drain follows). Sent at most once.
pub fn stopping() {
    if STOPPING_SENT.swap(true, Ordering::SeqCst) {
        return;
    }
    send(&[NotifyState::Stopping]);
}

/// `STATUS=<line>` right away (prefer [`StatusLine`], which rate-limits).
pub fn status_now(line: &str) {
    let line = one_line(line);
    send(&[NotifyState::Status(&line)]);
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The watchdog ping interval asked for by systemd: half of `WATCHDOG_USEC` (if it is meant for
/// this process and `NOTIFY_SOCKET` is set), else `None`.
pub fn watchdog_interval() -> Option<Duration> {
    if !enabled() {
        return None;
    }
    sd_notify::watchdog_enabled()
        .map(|d| d / 2)
        .filter(|d| !d.is_zero())
}

/// Sends `WATCHDOG=1` every interval, from whichever loop owns it.
#[derive(Debug)]
pub struct Watchdog {
    every: Option<Duration>,
    next: Instant,
}

impl Watchdog {
    /// A watchdog with the interval systemd asked for (disabled when it asked for none).
    pub fn from_env() -> Self {
        Self::new(watchdog_interval())
    }

    /// A watchdog pinging every `every` (`None`: never). The first [`Watchdog::poll`] pings.
    pub fn new(every: Option<Duration>) -> Self {
        Watchdog {
            every,
            next: Instant::now(),
        }
    }

    /// The ping interval, if the watchdog is enabled.
    pub fn interval(&self) -> Option<Duration> {
        self.every
    }

    /// Time left until the next ping is due (`None` when disabled).
    pub fn remaining(&self) -> Option<Duration> {
        self.every
            .map(|_| self.next.saturating_duration_since(Instant::now()))
    }

    /// Pings if a ping is due; returns true if it pinged. Cheap: call it every loop iteration.
    pub fn poll(&mut self) -> bool {
        let Some(every) = self.every else {
            return false;
        };
        let now = Instant::now();
        if now < self.next {
            return false;
        }
        send(&[NotifyState::Watchdog]);
        self.next = now + every;
        true
    }

    /// Pings now (if enabled), whatever the schedule; for loops that prove liveness per round.
    pub fn ping(&mut self) {
        if let Some(every) = self.every {
            send(&[NotifyState::Watchdog]);
            self.next = Instant::now() + every;
        }
    }

    /// Resolves when the next ping is due (never when disabled). Cancel-safe: select on it.
    pub async fn due(&self) {
        match self.every {
            Some(_) => tokio::time::sleep_until(self.next).await,
            None => std::future::pending().await,
        }
    }

    /// Awaits `fut` while pinging: for waits that are part of the loop's normal work and may be
    /// long (e.g. for a free executor slot while every slot runs a task).
    pub async fn during<F: Future>(&mut self, fut: F) -> F::Output {
        tokio::pin!(fut);
        loop {
            self.poll();
            tokio::select! {
                biased;
                out = &mut fut => return out,
                _ = self.due() => {}
            }
        }
    }
}

/// A daemon's `STATUS=` line: [`StatusLine::set`] stores the latest line; a background task
/// sends it when it changed, at most once per [`STATUS_GAP`]. Inert without `NOTIFY_SOCKET`.
#[derive(Debug, Clone)]
pub struct StatusLine {
    tx: Option<watch::Sender<String>>,
}

impl StatusLine {
    /// Starts the publisher task (needs a tokio runtime) when systemd listens.
    pub fn spawn() -> Self {
        if !enabled() {
            return Self::disabled();
        }
        let (tx, rx) = watch::channel(String::new());
        tokio::spawn(publish(rx));
        StatusLine { tx: Some(tx) }
    }

    /// A status line that is never sent.
    pub fn disabled() -> Self {
        StatusLine { tx: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Sets the line (sent if it differs from the last one).
    pub fn set(&self, line: impl Into<String>) {
        if let Some(tx) = &self.tx {
            let line = line.into();
            tx.send_if_modified(|old| {
                if *old == line {
                    return false;
                }
                *old = line;
                true
            });
        }
    }

    /// Sets the line built by `make`, which only runs when the line is sent at all.
    pub fn set_with(&self, make: impl FnOnce() -> String) {
        if self.is_enabled() {
            self.set(make());
        }
    }
}

async fn publish(mut rx: watch::Receiver<String>) {
    while rx.changed().await.is_ok() {
        let line = rx.borrow_and_update().clone();
        status_now(&line);
        tokio::time::sleep(STATUS_GAP).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn watchdog_pings_once_per_interval() {
        let mut wd = Watchdog::new(Some(MS * 80));
        assert!(wd.poll(), "the first poll pings");
        assert!(!wd.poll());
        assert!(wd.remaining().is_some_and(|r| r > MS * 60));
        let t = Instant::now();
        wd.due().await;
        assert!(t.elapsed() >= MS * 60);
        assert!(wd.poll());
        assert!(!wd.poll());
    }

    #[tokio::test]
    async fn disabled_watchdog_never_pings_nor_wakes() {
        let mut wd = Watchdog::new(None);
        assert!(!wd.poll());
        wd.ping();
        assert_eq!(wd.remaining(), None);
        let woke = tokio::time::timeout(MS * 50, wd.due()).await;
        assert!(woke.is_err());
    }

    #[tokio::test]
    async fn during_returns_the_output_and_keeps_pinging() {
        let mut wd = Watchdog::new(Some(MS * 40));
        let start = Instant::now();
        let out = wd
            .during(async {
                tokio::time::sleep(MS * 150).await;
                7
            })
            .await;
        assert_eq!(out, 7);
        // Pinged at about 0, 40, 80, 120 ms: the last ping was after the start plus 100 ms.
        let next = Instant::now() + wd.remaining().expect("enabled");
        assert!(next >= start + MS * 140, "{:?}", next - start);
    }

    #[test]
    fn status_lines_are_single_lines() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
        let s = StatusLine::disabled();
        s.set_with(|| unreachable!("not built when disabled"));
        assert!(!s.is_enabled());
    }
}
