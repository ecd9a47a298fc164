//! faas-gateway: thin shim over `faas::gateway`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use faas::cli::{startup, GatewayArgs, Startup};

fn main() -> ExitCode {
    let args = GatewayArgs::parse();
    let check = args.check_config;
    let cfg = match startup("faas-gateway", check, args.into_config()) {
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
async fn run(cfg: faas::config::GatewayConfig) -> anyhow::Result<()> {
    let (trigger, shutdown) = faas::shutdown::channel();
    faas::shutdown::on_signals(trigger).context("installing signal handlers")?;
    let store = faas::store::Store::connect(
        &cfg.redis,
        std::time::Duration::ZERO,
        std::time::Duration::from_secs(5),
    )
    .await
    .with_context(|| format!("connecting to Redis at {}", cfg.redis))?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    store
        .ping()
        .await
        .with_context(|| format!("pinging Redis at {}", cfg.redis))?;
    tracing::info!(listen = %cfg.listen, redis = %cfg.redis, "gateway ready");
    faas::gateway::notify_ready(&listener, store.clone(), shutdown.clone())
        .context("starting the systemd notifications")?;
    let app = faas::gateway::router(store, cfg.max_body_bytes);
    faas::gateway::serve(listener, app, shutdown)
        .await
        .context("serving HTTP")?;
    tracing::info!("gateway stopped");
    Ok(())
}
