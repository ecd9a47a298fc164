//! The embedded Python side (`faas_executor.py` here), how it reaches the interpreter, and the
//! options it is started with.
//!
//! The script is compiled into the binary with `include_str!`, so deployments need no extra file
//! and it always matches the Rust side. It never travels in argv or the environment: the
//! interpreter is started isolated (`python -I`: no working directory, no user site, no
//! `PYTHON*` variables) with a short [`LOADER`] as `-c` program and the control socket's fd
//! number as its only argument. The loader reads two frames from that socket, the script and
//! the [`Options`] (JSON), executes the script as module `faas_executor` (not as `__main__`:
//! users' functions pickled from a client's `__main__` resolve their globals in an otherwise
//! empty `__main__`) and calls its `main`, which replaces the process title with
//! `faas-executor: zygote|reuse` (and `faas-executor: task <id>` in forked children).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ExecutorConfig;

/// Source of the executor script.
pub const SCRIPT: &str = include_str!("faas_executor.py");

/// The `-c` program: loads [`SCRIPT`] from the control socket.
pub const LOADER: &str = include_str!("faas_executor_loader.py");

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

/// The options frame: everything the Python side needs to know about its sandbox and limits.
#[derive(Debug, Serialize)]
pub struct Options<'a> {
    pub mode: &'static str,
    pub preload: &'a [String],
    /// Put first on `sys.path` (`-I` ignores `PYTHONPATH`).
    pub pythonpath: Vec<String>,
    /// Where private working directories are created.
    pub workdir: String,
    pub memory_limit_mb: u64,
    /// RLIMIT_NPROC; 0 when executors share the daemon's user (it would count the daemon's
    /// processes and every other process of that user).
    pub process_limit: u64,
    pub open_files_limit: u64,
    pub file_size_limit_mb: u64,
    pub function_cache_size: usize,
    /// Private directories of lost reuse processes, removed by their replacement.
    pub cleanup: Vec<String>,
}

impl<'a> Options<'a> {
    /// The options of an executor in `mode`.
    pub fn new(
        cfg: &'a ExecutorConfig,
        mode: Mode,
        workdir: &Path,
        process_limit: u64,
        cleanup: &[PathBuf],
    ) -> Self {
        let text = |p: &Path| p.to_string_lossy().into_owned();
        Options {
            mode: mode.as_str(),
            preload: &cfg.preload,
            pythonpath: cfg.python_path().iter().map(|p| text(p)).collect(),
            workdir: text(workdir),
            memory_limit_mb: cfg.memory_limit_mb,
            process_limit,
            open_files_limit: cfg.open_files_limit,
            file_size_limit_mb: cfg.file_size_limit_mb,
            function_cache_size: cfg.function_cache_size,
            cleanup: cleanup.iter().map(|p| text(p)).collect(),
        }
    }
}

/// The arguments after `python`: `-I -c LOADER FD`.
pub fn args(ctrl_fd: i32) -> [String; 4] {
    ["-I".into(), "-c".into(), LOADER.into(), ctrl_fd.to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_short_and_carries_no_source() {
        let argv = args(5).join(" ");
        assert!(argv.len() < 600, "{argv}");
        assert!(!argv.contains("def main"));
        assert!(SCRIPT.contains("def main(ctrl"));
        // The loader leaves room for the longest title it is replaced with.
        assert!(LOADER.len() > "faas-executor: task ".len() + 64);
    }
}
