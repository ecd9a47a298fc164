//! faas-worker: thin shim over `faas::worker`.

use std::process::ExitCode;

use clap::Parser;
use faas::cli::WorkerArgs;

fn main() -> ExitCode {
    let args = WorkerArgs::parse();
    let check = args.check_config;
    faas::daemon::main(
        "faas-worker",
        faas::daemon::Threads::One,
        check,
        args.into_config(),
        |c| &c.log_level,
        faas::worker::run,
    )
}
