//! Shutdown signalling: SIGTERM/SIGINT become a watch channel every loop can select on.
//!
//! The first signal also tells systemd `STOPPING=1` (see [`crate::notify`]), so `systemctl status`
//! shows the drain rather than a daemon that stopped answering.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// A cloneable handle that resolves once shutdown was requested.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The sending side: `trigger()` asks every [`Shutdown`] holder to stop.
#[derive(Clone, Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// A new trigger/handle pair.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    /// A new handle observing this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    /// True once shutdown was requested.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when shutdown is requested (immediately if it already was).
    pub async fn wait(&mut self) {
        // An Err means every trigger was dropped: treat that as shutdown too.
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

/// Triggers `trigger` (and sends `STOPPING=1`) on the first SIGTERM or SIGINT. Returns an error if
/// handlers cannot be set.
pub fn on_signals(trigger: ShutdownTrigger) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
        }
        crate::notify::stopping();
        trigger.trigger();
    });
    Ok(())
}
