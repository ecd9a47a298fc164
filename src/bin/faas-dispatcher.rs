//! faas-dispatcher: thin shim over `faas::dispatcher`.

use std::process::ExitCode;

use clap::Parser;
use faas::cli::DispatcherArgs;

fn main() -> ExitCode {
    let args = DispatcherArgs::parse();
    let check = args.check_config;
    faas::daemon::main(
        "faas-dispatcher",
        faas::daemon::Threads::One,
        check,
        args.into_config(),
        |c| &c.log_level,
        faas::dispatcher::run,
    )
}
