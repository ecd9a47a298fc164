//! Command-line definitions of the daemons (clap), shared by the binaries and the man pages.

use std::path::PathBuf;

use clap::Parser;

use crate::config::{
    load_file, ConfigError, DispatcherConfig, GatewayConfig, Mode, WorkerConfig, WorkerMode,
};

/// faas-gateway: the HTTP API of faas.
#[derive(Debug, Parser)]
#[command(
    name = "faas-gateway",
    version,
    about = "HTTP API of the faas Function-as-a-Service platform"
)]
pub struct GatewayArgs {
    /// TOML config file (flags given here win over it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8000.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Redis URL of the task store, e.g. redis://127.0.0.1:6379.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl GatewayArgs {
    /// The config file with these flags applied on top.
    pub fn into_config(self) -> Result<GatewayConfig, ConfigError> {
        let mut cfg: GatewayConfig = load_file(self.config.as_deref())?;
        if let Some(v) = self.listen {
            cfg.listen = v;
        }
        if let Some(v) = self.redis {
            cfg.redis = v;
        }
        if self.verbose > 0 {
            cfg.log_level = crate::logging::level_from_verbosity(&cfg.log_level, self.verbose);
        }
        Ok(cfg)
    }
}

/// faas-dispatcher: routes queued tasks to executors or workers.
#[derive(Debug, Parser)]
#[command(
    name = "faas-dispatcher",
    version,
    about = "Task dispatcher of the faas Function-as-a-Service platform"
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
    /// Redis URL of the task store.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Consumer name of this dispatcher (default: <hostname>-<mode>).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Python interpreter for executors (needs dill), e.g. /opt/faas/venv/bin/python.
    #[arg(long, value_name = "PATH")]
    pub python: Option<String>,
    /// TOML config file (flags given here win over it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl DispatcherArgs {
    /// The config file with these flags applied on top.
    pub fn into_config(self) -> Result<DispatcherConfig, ConfigError> {
        let mut cfg: DispatcherConfig = load_file(self.config.as_deref())?;
        if let Some(v) = self.mode {
            cfg.mode = v;
        }
        if let Some(v) = self.workers {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    key: "-w".into(),
                    message: "needs at least 1 process".into(),
                });
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
        if self.verbose > 0 {
            cfg.log_level = crate::logging::level_from_verbosity(&cfg.log_level, self.verbose);
        }
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
    /// TOML config file (arguments given here win over it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl WorkerArgs {
    /// The config file with these arguments applied on top.
    pub fn into_config(self) -> Result<WorkerConfig, ConfigError> {
        let mut cfg: WorkerConfig = load_file(self.config.as_deref())?;
        if let Some(v) = self.mode {
            cfg.mode = v;
        }
        if let Some(v) = self.processes {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    key: "NUM_PROCESSES".into(),
                    message: "needs at least 1 process".into(),
                });
            }
            cfg.processes = v;
        }
        if let Some(v) = self.dispatcher {
            cfg.dispatcher = v;
        }
        if let Some(v) = self.id {
            cfg.id = v;
        }
        if let Some(v) = self.python {
            cfg.executor.python = v;
        }
        if self.verbose > 0 {
            cfg.log_level = crate::logging::level_from_verbosity(&cfg.log_level, self.verbose);
        }
        Ok(cfg)
    }
}
