//! The embedded Python side (`python/faas_executor.py`) and its command-line arguments.
//!
//! The script is compiled into the binary with `include_str!`, so deployments need no extra file
//! and it always matches the Rust side. It travels in the environment variable
//! `FAAS_EXECUTOR_SOURCE` (keeping `ps` output short) and a one-line [`BOOTSTRAP`] run with
//! `python -c BOOTSTRAP MODE OPTIONS_JSON` executes it as module `faas_executor`, not as
//! `__main__`: users' functions pickled from a client's `__main__` resolve their globals in an
//! otherwise empty `__main__` and cannot clobber the executor's own globals. With `-c`, Python
//! puts the working directory first on `sys.path`, as for a script.

use serde::Serialize;

use super::config::ExecutorConfig;

/// Source of the executor script.
pub const SCRIPT: &str = include_str!("faas_executor.py");

/// Environment variable carrying the control socket's fd number.
pub const FD_ENV: &str = "FAAS_EXECUTOR_FD";

/// Environment variable carrying [`SCRIPT`] (removed by the bootstrap before any user code runs).
pub const SOURCE_ENV: &str = "FAAS_EXECUTOR_SOURCE";

/// Loads the script from [`SOURCE_ENV`] as module `faas_executor` and calls its `main`.
pub const BOOTSTRAP: &str = "import os,sys,types;m=sys.modules['faas_executor']=types.ModuleType('faas_executor');\
m.__file__='faas_executor.py';exec(compile(os.environ.pop('FAAS_EXECUTOR_SOURCE'),m.__file__,'exec'),m.__dict__);\
sys.exit(m.main(sys.argv))";

/// What an executor process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fork one child per task; never run user code itself.
    Zygote,
    /// Run tasks one after another in-process.
    Reuse,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Zygote => "zygote",
            Mode::Reuse => "reuse",
        }
    }
}

#[derive(Serialize)]
struct Options<'a> {
    preload: &'a [String],
    memory_limit_mb: u64,
    function_cache_size: usize,
}

/// The arguments after `python`: `-c BOOTSTRAP MODE OPTIONS_JSON`.
pub fn args(cfg: &ExecutorConfig, mode: Mode) -> Result<Vec<String>, serde_json::Error> {
    let options = serde_json::to_string(&Options {
        preload: &cfg.preload,
        memory_limit_mb: cfg.memory_limit_mb,
        function_cache_size: cfg.function_cache_size,
    })?;
    Ok(vec![
        "-c".into(),
        SCRIPT.into(),
        mode.as_str().into(),
        options,
    ])
}
