//! faas-loadgen: an HTTP load generator for the faas gateway, built to not be the bottleneck
//! (hyper HTTP/1.1 keep-alive connections on a small tokio runtime, one task per connection,
//! pre-built request bodies). Modes: `submit` (accept rate, open loop or as fast as possible),
//! `read` (GET /result rate), `closed` (submit + collect with N outstanding), `drain` (time a
//! dispatcher emptying a full queue). Every run writes one JSON report ([`report`]) with latency
//! percentiles and CPU seconds per component read from /proc ([`cpu`]), the generator included.
//!
//! Development tool only: not shipped in the Debian package, not a dependency of `faas`. It uses
//! `faas`'s library for the API's status names and the Redis key names, so they cannot drift.

pub mod cli;
pub mod collect;
pub mod cpu;
mod error;
pub mod hist;
pub mod http;
pub mod payload;
pub mod report;
pub mod run;
pub mod sweep;

use std::io::Write;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use error::Error;

use cli::{Cli, Command};
use report::{Meta, Report};

/// Runs the command line's measurement and writes its report.
pub fn main(cli: Cli) -> Result<(), Error> {
    if !cli.common.pin.is_empty() {
        pin(&cli.common.pin)?;
    }
    let components = cli
        .common
        .cpu
        .iter()
        .map(|s| s.parse())
        .collect::<Result<Vec<cpu::Component>, Error>>()?;
    let payloads = payload::load(
        &cli.common.python,
        cli.common.function_file.as_deref(),
        cli.common.args_file.as_deref(),
    )?;
    let threads = cli.common.threads.get();
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(|e| Error::io("starting the tokio runtime", e))?;
    let report = rt.block_on(measure(&cli, components, &payloads))?;
    let mut text = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::Usage(format!("report serialization: {e}")))?;
    text.push('\n');
    match &cli.common.out {
        Some(p) => std::fs::write(p, text).map_err(|e| Error::io(p.display().to_string(), e)),
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|e| Error::io("standard output", e)),
    }
}

async fn measure(
    cli: &Cli,
    components: Vec<cpu::Component>,
    payloads: &payload::Payloads,
) -> Result<Report, Error> {
    let started = unix_ms();
    let loadavg_start = cpu::loadavg();
    let gw = http::Gateway::resolve(&cli.common.url).await?;
    let function_id = http::Conn::new(gw.clone())
        .register("faas-loadgen", &payloads.function_b64)
        .await?;
    let ctx = run::Ctx {
        gw,
        body: http::execute_body(&function_id, &payloads.args_b64),
        components: Arc::new(components),
        connections: cli.common.connections.get(),
    };
    let (mode, collect, phases) = match &cli.command {
        Command::Submit(a) => match a.collect {
            Some(m) => {
                let (how, info) = run::prepare_collect(&ctx, m, &a.collect_opts).await?;
                ("submit", Some(info), run::submit(&ctx, a, Some(how)).await?)
            }
            None => ("submit", None, run::submit(&ctx, a, None).await?),
        },
        Command::Read(a) => ("read", None, run::read(&ctx, a).await?),
        Command::Closed(a) => {
            let (how, info) = run::prepare_collect(&ctx, a.collect, &a.collect_opts).await?;
            ("closed", Some(info), run::closed(&ctx, a, how).await?)
        }
        Command::Drain(a) => ("drain", None, run::drain(&ctx, a).await?),
    };
    Ok(Report {
        schema: report::SCHEMA,
        tool: "faas-loadgen",
        version: env!("CARGO_PKG_VERSION"),
        mode,
        settings: serde_json::to_value(cli).unwrap_or_default(),
        function_id,
        collect,
        phases,
        meta: Meta {
            started_unix_ms: started,
            finished_unix_ms: unix_ms(),
            loadavg_start,
            loadavg_end: cpu::loadavg(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            threads: cli.common.threads.get(),
            connections: cli.common.connections.get(),
            pinned: cli.common.pin.clone(),
        },
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Restricts the process (and the threads it starts later) to `cpus`.
fn pin(cpus: &[usize]) -> Result<(), Error> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c)
            .map_err(|e| Error::Usage(format!("--pin {c}: {e}")))?;
    }
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| Error::Usage(format!("--pin {cpus:?}: {e}")))
}
