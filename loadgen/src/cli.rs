//! Command line: options shared by every mode, then one subcommand per measurement.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

/// HTTP load generator for faas: drives the gateway's API with many keep-alive connections and
/// writes one JSON report (latency percentiles, rates, CPU seconds per component).
#[derive(Debug, Parser, Serialize)]
#[command(name = "faas-loadgen", version)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Serialize)]
pub struct Common {
    /// Base URL of the gateway (HTTP/1.1, no TLS).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Concurrent keep-alive connections; in closed loop also the tasks outstanding.
    #[arg(short = 'c', long, global = true, default_value = "64")]
    pub connections: NonZeroUsize,
    /// Threads of the generator's tokio runtime (1: a single-threaded runtime).
    #[arg(long, global = true, default_value = "1")]
    pub threads: NonZeroUsize,
    /// Pin the generator to these CPUs (comma-separated list, e.g. 1).
    #[arg(long, global = true, value_delimiter = ',')]
    pub pin: Vec<usize>,
    /// A component to account CPU for, NAME=PID or NAME=TEXT (processes whose command line
    /// contains TEXT); repeatable. The generator itself is always reported as "loadgen".
    #[arg(long = "cpu", global = true, value_name = "NAME=PID|TEXT")]
    pub cpu: Vec<String>,
    /// Python with dill, used once to pickle the built-in no-op function and `((), {})`.
    #[arg(long, global = true, default_value = "python3")]
    pub python: String,
    /// Base64 dill pickle of the function to register instead of the no-op.
    #[arg(long, global = true)]
    pub function_file: Option<PathBuf>,
    /// Base64 dill pickle of `(args, kwargs)` sent with every task instead of `((), {})`.
    #[arg(long, global = true)]
    pub args_file: Option<PathBuf>,
    /// Write the JSON report here instead of standard output.
    #[arg(short, long, global = true)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// Submit tasks open loop, at --rate or as fast as possible: the gateway's accept rate.
    Submit(SubmitArgs),
    /// GET /result as fast as possible on completed tasks (needs a running dispatcher).
    Read(ReadArgs),
    /// Closed loop: each connection submits a task, collects its result, and repeats.
    Closed(ClosedArgs),
    /// Submit --tasks while no dispatcher runs, print READY, wait for a line on standard input
    /// (the harness starts the dispatcher meanwhile), then time until every task is terminal.
    Drain(DrainArgs),
}

#[derive(Debug, Args, Serialize)]
pub struct SubmitArgs {
    /// Tasks to submit (default 10000 unless --duration is given).
    #[arg(long)]
    pub tasks: Option<u64>,
    /// Stop submitting after this many seconds.
    #[arg(long, value_parser = positive)]
    pub duration: Option<f64>,
    /// Target rate in tasks/s (open loop; latency counts from each task's intended send time).
    /// Without it tasks are sent as fast as the connections allow.
    #[arg(long, value_parser = positive)]
    pub rate: Option<f64>,
    /// Also collect every task's result; the latency then runs to the result seen.
    #[arg(long)]
    pub collect: Option<CollectMode>,
    #[command(flatten)]
    pub collect_opts: CollectOpts,
}

#[derive(Debug, Args, Serialize)]
pub struct ReadArgs {
    /// Distinct tasks submitted and completed first; reads cycle over them.
    #[arg(long, default_value = "1000")]
    pub tasks: u64,
    /// Reads to send (default 50000 unless --duration is given).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Stop reading after this many seconds.
    #[arg(long, value_parser = positive)]
    pub duration: Option<f64>,
}

#[derive(Debug, Args, Serialize)]
pub struct ClosedArgs {
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value = "10", value_parser = positive)]
    pub duration: f64,
    /// Seconds run before measuring (not counted).
    #[arg(long, default_value = "2", value_parser = nonnegative)]
    pub warmup: f64,
    /// How results are collected.
    #[arg(long, default_value = "auto")]
    pub collect: CollectMode,
    #[command(flatten)]
    pub collect_opts: CollectOpts,
}

#[derive(Debug, Args, Serialize)]
pub struct CollectOpts {
    /// Pause between two polls of GET /result when polling.
    #[arg(long, default_value = "1", value_parser = positive)]
    pub poll_interval_ms: f64,
    /// Seconds per long poll (GET /result/{id}?wait=S), when the gateway offers it.
    #[arg(long, default_value = "5", value_parser = positive)]
    pub wait_s: f64,
    /// A task not terminal after this many seconds counts as an error.
    #[arg(long, default_value = "60", value_parser = positive)]
    pub task_timeout_s: f64,
}

#[derive(Debug, Args, Serialize)]
pub struct DrainArgs {
    /// Tasks queued before the dispatcher starts.
    #[arg(long, default_value = "10000")]
    pub tasks: u64,
    /// Redis of the deployment: task states and finish times are read there.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// When the drain clock starts: a line on standard input, or at once (a dispatcher already runs).
    #[arg(long, default_value = "stdin")]
    pub go: Go,
    /// Pause between two polls of the queue's length (and between sweeps over unfinished tasks).
    #[arg(long, default_value = "20", value_parser = positive)]
    pub sweep_interval_ms: f64,
    /// Give up when the queue has not drained after this many seconds.
    #[arg(long, default_value = "900", value_parser = positive)]
    pub timeout_s: f64,
}

/// How task results are awaited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CollectMode {
    /// Long poll when the gateway offers `?wait=`, else poll.
    Auto,
    /// Poll GET /result/{id} every --poll-interval-ms.
    Poll,
    /// Long poll GET /result/{id}?wait=S (fails when the gateway lacks it).
    Wait,
}

/// When the drain clock starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Go {
    Stdin,
    Now,
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

fn nonnegative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..1e9).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number >= 0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn common_options_go_before_or_after_the_mode() {
        let c = Cli::try_parse_from([
            "faas-loadgen",
            "-c",
            "8",
            "drain",
            "--tasks",
            "5",
            "--cpu",
            "gateway=12",
            "--go",
            "now",
        ])
        .unwrap();
        assert_eq!(c.common.connections.get(), 8);
        assert_eq!(c.common.cpu, vec!["gateway=12"]);
        let Command::Drain(d) = c.command else {
            panic!("not drain")
        };
        assert_eq!((d.tasks, d.go), (5, Go::Now));
    }

    #[test]
    fn bad_numbers_are_refused() {
        for args in [
            &["faas-loadgen", "submit", "--rate", "0"][..],
            &["faas-loadgen", "submit", "--duration", "-1"],
            &["faas-loadgen", "closed", "--warmup", "nan"],
            &["faas-loadgen", "-c", "0", "submit"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
