//! faas-worker: thin shim over `faas::worker`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use faas::cli::{startup, Startup, WorkerArgs};

fn main() -> ExitCode {
    let args = WorkerArgs::parse();
    let check = args.check_config;
    let cfg = match startup("faas-worker", check, args.into_config()) {
        Startup::Run(cfg) => cfg,
        Startup::Exit(code) => return code,
    };
    faas::logging::init(&cfg.log_level);
    match run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(cfg: faas::config::WorkerConfig) -> anyhow::Result<()> {
    let (trigger, shutdown) = faas::shutdown::channel();
    faas::shutdown::on_signals(trigger).context("installing signal handlers")?;
    let mode = cfg.mode.as_str();
    let dispatcher = cfg.dispatcher.clone();
    faas::worker::run(cfg, shutdown)
        .await
        .with_context(|| format!("worker ({mode} mode, dispatcher {dispatcher})"))?;
    tracing::info!("worker stopped");
    Ok(())
}
