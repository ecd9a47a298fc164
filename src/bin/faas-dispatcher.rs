//! faas-dispatcher: thin shim over `faas::dispatcher`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use faas::cli::{startup, DispatcherArgs, Startup};

fn main() -> ExitCode {
    let args = DispatcherArgs::parse();
    let check = args.check_config;
    let cfg = match startup("faas-dispatcher", check, args.into_config()) {
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
async fn run(cfg: faas::config::DispatcherConfig) -> anyhow::Result<()> {
    let (trigger, shutdown) = faas::shutdown::channel();
    faas::shutdown::on_signals(trigger).context("installing signal handlers")?;
    let mode = cfg.mode.as_str();
    faas::dispatcher::run(cfg, shutdown)
        .await
        .with_context(|| format!("dispatcher ({mode} mode)"))?;
    tracing::info!("dispatcher stopped");
    Ok(())
}
