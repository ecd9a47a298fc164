//! The life of a daemon binary: configuration, logging, runtime, signals, run, exit status.

use std::future::Future;
use std::process::ExitCode;

use crate::cli::{startup, Startup};
use crate::config::{ConfigError, Settings};
use crate::shutdown::{self, Shutdown};

/// The threads a daemon's async runtime runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// One thread for everything: for a pipeline whose steps hand each task to one another
    /// (dispatcher, worker), where a hand-over on one thread is a queue push, while across
    /// threads it is a wake-up of a sleeping thread (profiles of a drain showed the dispatcher
    /// spending a quarter of its time in thread switches; docs/performance.md).
    One,
    /// One per core: for independent requests (gateway).
    PerCore,
}

/// Runs a daemon: `loaded` is its configuration (exit 78 when invalid, or print it and exit 0 when
/// `check`), `log_level` picks the configured level, `run` serves until the [`Shutdown`] fires
/// (SIGTERM/SIGINT) on a runtime of `threads`. Errors are logged with their causes and give exit
/// status 1.
pub fn main<C, E, F, Fut>(
    prog: &str,
    threads: Threads,
    check: bool,
    loaded: Result<C, ConfigError>,
    log_level: impl Fn(&C) -> &str,
    run: F,
) -> ExitCode
where
    C: Settings,
    E: std::error::Error,
    F: FnOnce(C, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let cfg = match startup(prog, check, loaded) {
        Startup::Run(cfg) => cfg,
        Startup::Exit(code) => return code,
    };
    crate::logging::init(log_level(&cfg));
    let mut builder = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        Threads::PerCore => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let (trigger, shutdown) = shutdown::channel();
        if let Err(e) = shutdown::on_signals(trigger) {
            tracing::error!(error = %e, "cannot install signal handlers");
            return false;
        }
        match run(cfg, shutdown).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("{}", chain(&e));
                false
            }
        }
    });
    if outcome {
        tracing::info!("{prog} stopped");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `error: cause: cause…`, skipping causes the message already contains.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_lists_causes_once() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
        #[derive(Debug, thiserror::Error)]
        #[error("outer: inner")]
        struct Repeats(#[source] std::io::Error);
        assert_eq!(
            chain(&Repeats(std::io::Error::other("inner"))),
            "outer: inner"
        );
    }
}
