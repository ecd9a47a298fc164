//! faas-gateway: thin shim over `faas::gateway`.

use std::process::ExitCode;

use clap::Parser;
use faas::cli::GatewayArgs;

fn main() -> ExitCode {
    let args = GatewayArgs::parse();
    let check = args.check_config;
    faas::daemon::main(
        "faas-gateway",
        faas::daemon::Threads::PerCore,
        check,
        args.into_config(),
        |c| &c.log_level,
        faas::gateway::run,
    )
}
