//! faas-loadgen binary: parses the command line and runs [`faas_loadgen::main`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match faas_loadgen::main(faas_loadgen::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faas-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
