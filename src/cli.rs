//! Command-line definitions of the daemons (clap), shared by the binaries and the man pages.
//!
//! Each `into_config` layers the settings (defaults, files, drop-ins, environment; see
//! `crate::config::load`), applies the flags on top and validates the result.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::config::{
    load, ConfigError, DispatcherConfig, GatewayConfig, Mode, Settings, Sources, WorkerConfig,
    WorkerMode, EX_CONFIG,
};

const CONFIG_HELP: &str =
    "TOML config file replacing /etc/faas/NAME.toml (flags given here win over it)";
const CHECK_HELP: &str =
    "Load and validate the configuration, print the effective settings as TOML and exit (78 if invalid)";

/// faas-gateway: the HTTP API of faas.
#[derive(Debug, Parser)]
#[command(
    name = "faas-gateway",
    version,
    about = "HTTP API of the faas Function-as-a-Service platform",
    long_about = "faas-gateway serves the HTTP API of faas: POST /register_function stores a function \
(a base64 dill pickle), POST /execute_function creates a task and queues it in the same Redis \
transaction, so it is visible to GET /status/ID at once, and GET /result/ID returns the status \
and, once the task has finished, its pickled result. Payloads are checked before anything is \
written: one that is not base64 or not a pickle is a 400. Beyond the specification: long-polls \
(GET /result/ID?wait=SECONDS, POST /wait for many tasks), POST /execute_batch, POST /cancel/ID, \
GET and DELETE /functions, GET /info (dispatchers, workers, executors' Python and dill \
versions), GET /metrics (Prometheus) and GET /docs, an interactive page for the API described \
at /openapi.json. The gateway keeps no state of its own; several may share one Redis.",
    after_long_help = "SIGNALS\n  SIGTERM, SIGINT: stop accepting connections, let requests in flight finish, exit.\n\n\
EXIT STATUS\n  0 on a clean stop, 1 on a runtime error (e.g. Redis unreachable at start, address in use), 78 on a configuration error."
)]
pub struct GatewayArgs {
    #[arg(long, value_name = "FILE", help = CONFIG_HELP)]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8000.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Redis URL of the task store, e.g. redis://127.0.0.1:6379 or
    /// redis+sentinel://HOST:PORT,HOST:PORT/MASTER.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[arg(long, help = CHECK_HELP)]
    pub check_config: bool,
}

impl GatewayArgs {
    /// The layered settings of this process with these flags applied, validated.
    pub fn into_config(self) -> Result<GatewayConfig, ConfigError> {
        let sources = Sources::from_process(self.config.clone());
        self.into_config_from(&sources)
    }

    /// Like [`into_config`](Self::into_config), from the given sources.
    pub fn into_config_from(self, sources: &Sources) -> Result<GatewayConfig, ConfigError> {
        let mut cfg: GatewayConfig = load(sources)?;
        if let Some(v) = self.listen {
            cfg.listen = v;
        }
        if let Some(v) = self.redis {
            cfg.redis = v;
        }
        if self.verbose > 0 {
            cfg.log_level = crate::logging::level_from_verbosity(&cfg.log_level, self.verbose);
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// faas-dispatcher: routes queued tasks to executors or workers.
#[derive(Debug, Parser)]
#[command(
    name = "faas-dispatcher",
    version,
    about = "Task dispatcher of the faas Function-as-a-Service platform",
    long_about = "faas-dispatcher takes queued tasks from Redis and runs them, and is the only \
component that writes results. In local mode it runs them on its own executor processes; in pull \
and push modes it binds a ZeroMQ socket and hands them to faas-worker daemons, as many as each \
worker has free slots. Tasks are read from a durable Redis stream with a consumer group, so tasks \
queued while no dispatcher runs are not lost, several dispatchers can share one Redis (with \
distinct names), and the tasks of a dispatcher that died are taken over. A task whose executor \
or worker is lost is re-run up to max_retries times, then FAILED with WorkerFailure. Workers are \
declared dead after heartbeat_misses missed heartbeats.",
    after_long_help = "SIGNALS\n  SIGTERM, SIGINT: stop taking tasks, let running ones finish for drain_timeout_secs, hand the rest back to the queue, exit.\n\n\
EXIT STATUS\n  0 on a clean stop, 1 on a runtime error (e.g. Redis unreachable, port in use, name held by another dispatcher), 78 on a configuration error."
)]
pub struct DispatcherArgs {
    /// Where tasks run: local (own executor pool), pull or push (ZeroMQ workers).
    #[arg(short = 'm', long, value_enum, value_name = "MODE")]
    pub mode: Option<Mode>,
    /// Port the ZeroMQ socket binds in pull and push modes (default 5555).
    #[arg(short = 'p', long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Executor processes in local mode (default: one per CPU).
    #[arg(short = 'w', long = "workers", value_name = "NUM_PROCESSES")]
    pub workers: Option<usize>,
    /// Redis URL of the task store (redis:// or redis+sentinel:// URL).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Consumer name of this dispatcher (default: <hostname>-<mode>).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Python interpreter for executors (needs dill), e.g. /opt/faas/venv/bin/python.
    #[arg(long, value_name = "PATH")]
    pub python: Option<String>,
    /// File holding the shared worker token (token_file); workers must prove they hold it.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    #[arg(long, value_name = "FILE", help = CONFIG_HELP)]
    pub config: Option<PathBuf>,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[arg(long, help = CHECK_HELP)]
    pub check_config: bool,
}

impl DispatcherArgs {
    /// The layered settings of this process with these flags applied, validated.
    pub fn into_config(self) -> Result<DispatcherConfig, ConfigError> {
        let sources = Sources::from_process(self.config.clone());
        self.into_config_from(&sources)
    }

    /// Like [`into_config`](Self::into_config), from the given sources.
    pub fn into_config_from(self, sources: &Sources) -> Result<DispatcherConfig, ConfigError> {
        let mut cfg: DispatcherConfig = load(sources)?;
        if let Some(v) = self.mode {
            cfg.mode = v;
        }
        if let Some(v) = self.workers {
            if v == 0 {
                return Err(ConfigError::invalid("-w", "needs at least 1 process"));
            }
            cfg.local.processes = v;
        }
        if let Some(v) = self.redis {
            cfg.redis = v;
        }
        if let Some(v) = self.name {
            cfg.name = v;
        }
        if let Some(v) = self.python {
            cfg.executor.python = v;
        }
        if let Some(v) = self.port {
            cfg.port = v;
        }
        if let Some(v) = self.token_file {
            cfg.token_file = Some(v);
        }
        if self.verbose > 0 {
            cfg.log_level = crate::logging::level_from_verbosity(&cfg.log_level, self.verbose);
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// faas-worker: runs tasks it gets from a dispatcher on its own executor processes.
#[derive(Debug, Parser)]
#[command(
    name = "faas-worker",
    version,
    about = "Worker daemon of the faas Function-as-a-Service platform",
    long_about = "faas-worker connects to a faas-dispatcher running in the same mode and runs the tasks it \
gets on NUM_PROCESSES executor processes (fork-per-task isolation by default). It never talks to \
Redis. It registers on connect, heartbeats, keeps finished results until the dispatcher \
acknowledges them, and survives dispatcher restarts: it rebuilds its socket, registers again with \
the tasks it is still running, and re-sends results that finished meanwhile.",
    after_long_help = "SIGNALS\n  SIGTERM, SIGINT: say bye, take no more tasks, finish running ones for drain_timeout_secs, report them, exit.\n\n\
EXIT STATUS\n  0 on a clean stop, 1 on a runtime error (e.g. refused by the dispatcher), 78 on a configuration error."
)]
pub struct WorkerArgs {
    /// pull (ask the dispatcher for tasks) or push (receive pushed tasks); must match the dispatcher.
    #[arg(value_enum, value_name = "MODE")]
    pub mode: Option<WorkerMode>,
    /// Executor processes, i.e. tasks run at once (default: one per CPU).
    #[arg(value_name = "NUM_PROCESSES")]
    pub processes: Option<usize>,
    /// Dispatcher endpoint, e.g. tcp://127.0.0.1:5555.
    #[arg(value_name = "DISPATCHER_URL")]
    pub dispatcher: Option<String>,
    /// Worker id announced to the dispatcher (default: <hostname>-<pid>-<random>).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Python interpreter for executors (needs dill).
    #[arg(long, value_name = "PATH")]
    pub python: Option<String>,
    /// File holding the token to prove to the dispatcher (token_file).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    #[arg(long, value_name = "FILE", help = CONFIG_HELP)]
    pub config: Option<PathBuf>,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[arg(long, help = CHECK_HELP)]
    pub check_config: bool,
}

impl WorkerArgs {
    /// The layered settings of this process with these arguments applied, validated.
    pub fn into_config(self) -> Result<WorkerConfig, ConfigError> {
        let sources = Sources::from_process(self.config.clone());
        self.into_config_from(&sources)
    }

    /// Like [`into_config`](Self::into_config), from the given sources.
    pub fn into_config_from(self, sources: &Sources) -> Result<WorkerConfig, ConfigError> {
        let mut cfg: WorkerConfig = load(sources)?;
        if let Some(v) = self.mode {
            cfg.mode = v;
        }
        if let Some(v) = self.processes {
            if v == 0 {
                return Err(ConfigError::invalid(
                    "NUM_PROCESSES",
                    "needs at least 1 process",
                ));
            }
            cfg.processes = v;
        }
        if let Some(v) = self.dispatcher {
            cfg.dispatcher = v;
        }
        if let Some(v) = self.id {
            cfg.id = v;
        }
        if let Some(v) = self.token_file {
            cfg.token_file = Some(v);
        }
        if let Some(v) = self.python {
            cfg.executor.python = v;
        }
        if self.verbose > 0 {
            cfg.log_level = crate::logging::level_from_verbosity(&cfg.log_level, self.verbose);
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// What a daemon's `main` does after loading its settings.
#[derive(Debug)]
pub enum Startup<T> {
    /// Run with these settings.
    Run(T),
    /// Exit now with this status (`--check-config` done, or a config error already reported).
    Exit(ExitCode),
}

/// Handles the outcome of `into_config` for daemon `prog`: on an error, prints it to stderr and
/// exits 78 (EX_CONFIG); with `--check-config`, prints the effective settings to stdout and exits 0.
pub fn startup<T: Settings>(prog: &str, check: bool, loaded: Result<T, ConfigError>) -> Startup<T> {
    let fail = |e: ConfigError| {
        let error = crate::logging::stderr_prefix(crate::logging::Priority::Error);
        eprintln!("{error}{prog}: {e}");
        Startup::Exit(ExitCode::from(EX_CONFIG))
    };
    match loaded {
        Err(e) => fail(e),
        Ok(cfg) if check => match cfg.to_toml() {
            Ok(text) => {
                print!("{text}");
                Startup::Exit(ExitCode::SUCCESS)
            }
            Err(e) => fail(e),
        },
        Ok(cfg) => Startup::Run(cfg),
    }
}
