//! Executor settings (the `[executor]` table of dispatcher.toml and worker.toml): how user
//! functions run, as whom, with which limits; validation and the typed values derived from them.
//!
//! Every limit has a default, chosen next to what other task runners do (see docs/operations.md,
//! "Security model"): a task that hits one ends FAILED with an exception naming it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// How task processes are isolated from each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A warm zygote forks one child per task (default): full isolation, ~2 ms per task.
    #[default]
    Fork,
    /// Long-lived processes run tasks one after another: fastest, no isolation between tasks.
    Reuse,
}

/// Which network executors see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The host's network, like the daemon (default).
    #[default]
    Host,
    /// A network namespace of their own with only a loopback interface (needs CAP_SYS_ADMIN
    /// and CAP_NET_ADMIN).
    None,
}

/// The executor user the package creates (packaging/sysusers.d/faas.conf).
pub const DEFAULT_USER: &str = "faas-exec";

/// Settings of the executor subsystem.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorConfig {
    /// Python interpreter used for executors (must have dill importable).
    pub python: String,
    /// `fork` (a zygote forks a child per task) or `reuse` (long-lived processes).
    pub isolation: Isolation,
    /// User the executors run as; empty means the daemon's own user (development only).
    pub user: String,
    /// `host` or `none` (only a loopback interface).
    pub network: Network,
    /// Extra environment variables of the executors (the rest of the daemon's is not passed on).
    pub env: BTreeMap<String, String>,
    /// Extra import paths, put before the daemon's `PYTHONPATH`.
    pub pythonpath: Vec<PathBuf>,
    /// Modules imported once at executor start (e.g. `numpy`), so tasks need not import them.
    pub preload: Vec<String>,
    /// Per-task wall-clock limit in seconds; 0 means no limit.
    pub task_timeout_secs: f64,
    /// Per-task address-space limit (RLIMIT_AS) in MiB; 0 means no limit.
    pub memory_limit_mb: u64,
    /// Processes and threads of the executor user at once (RLIMIT_NPROC); 0 means no limit.
    pub process_limit: u64,
    /// Open file descriptors per task process (RLIMIT_NOFILE); 0 means the daemon's limit.
    pub open_files_limit: u64,
    /// Largest file a task may write, in MiB (RLIMIT_FSIZE); 0 means no limit.
    pub file_size_limit_mb: u64,
    /// Where private working directories are created; unset means the system's temp directory.
    pub workdir: Option<PathBuf>,
    /// Seconds allowed for an executor to start and import dill before start-up fails.
    pub start_timeout_secs: f64,
    /// Deserialized functions kept per process in `reuse` mode.
    pub function_cache_size: usize,
    /// Tasks admitted per executor process beyond the one it runs: they wait in memory for the
    /// next free process, so a process starts its next task without a round trip to the
    /// dispatcher or the worker's connection. 0 admits only as many tasks as run.
    pub prefetch: u32,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            python: "python3".into(),
            isolation: Isolation::Fork,
            user: DEFAULT_USER.into(),
            network: Network::Host,
            env: BTreeMap::new(),
            pythonpath: Vec::new(),
            preload: Vec::new(),
            task_timeout_secs: 300.0,
            memory_limit_mb: 2048,
            process_limit: 1024,
            open_files_limit: 1024,
            file_size_limit_mb: 1024,
            workdir: None,
            start_timeout_secs: 30.0,
            function_cache_size: 256,
            prefetch: DEFAULT_PREFETCH,
        }
    }
}

/// Off by default: the dispatcher claims a task (QUEUED -> RUNNING) when it reads it, so a task
/// waiting in an executor queue already shows RUNNING, cannot be cancelled as queued, and is
/// failed with `WorkerFailure` rather than re-queued when its dispatcher is killed. 1 (one task
/// waiting per process) is enough to hide the hand-over between two tasks where that is fine.
const DEFAULT_PREFETCH: u32 = 0;
/// Largest `prefetch` accepted.
const MAX_PREFETCH: u32 = 64;

/// Largest value accepted for the MiB limits (beyond it the byte count overflows).
const MAX_MB: u64 = u64::MAX / (1024 * 1024);

impl ExecutorConfig {
    /// Checks the values serde cannot check; errors name the key (`executor.KEY`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &str, msg: String| Err(ConfigError::invalid(format!("executor.{key}"), msg));
        if self.python.trim().is_empty() {
            return bad("python", "must name an interpreter".into());
        }
        if !(self.task_timeout_secs.is_finite() && (0.0..=1e9).contains(&self.task_timeout_secs)) {
            return bad(
                "task_timeout_secs",
                format!(
                    "must be a number of seconds >= 0, got {}",
                    self.task_timeout_secs
                ),
            );
        }
        if !(self.start_timeout_secs.is_finite()
            && self.start_timeout_secs > 0.0
            && self.start_timeout_secs <= 1e9)
        {
            return bad(
                "start_timeout_secs",
                format!("must be > 0, got {}", self.start_timeout_secs),
            );
        }
        for (key, mb) in [
            ("memory_limit_mb", self.memory_limit_mb),
            ("file_size_limit_mb", self.file_size_limit_mb),
        ] {
            if mb > MAX_MB {
                return bad(key, format!("is too large: {mb}"));
            }
        }
        if self.open_files_limit != 0 && self.open_files_limit < 16 {
            return bad(
                "open_files_limit",
                format!(
                    "must be 0 (no limit) or at least 16 (Python needs a few), got {}",
                    self.open_files_limit
                ),
            );
        }
        if self.prefetch > MAX_PREFETCH {
            return bad(
                "prefetch",
                format!(
                    "must be between 0 and {MAX_PREFETCH}, got {}",
                    self.prefetch
                ),
            );
        }
        if !is_user_name(&self.user) {
            return bad(
                "user",
                format!(
                    "{:?} is not a user name (or empty for the daemon's user)",
                    self.user
                ),
            );
        }
        if let Some(name) = self.env.keys().find(|k| !is_env_name(k)) {
            return bad(
                "env",
                format!("{name:?} is not an environment variable name"),
            );
        }
        if let Some((name, _)) = self.env.iter().find(|(_, v)| v.contains('\0')) {
            return bad("env", format!("the value of {name} contains a NUL byte"));
        }
        if let Some(name) = self.preload.iter().find(|m| !is_module_name(m)) {
            return bad("preload", format!("{name:?} is not a module name"));
        }
        if let Some(p) = self.pythonpath.iter().find(|p| !p.is_absolute()) {
            return bad(
                "pythonpath",
                format!("{} is not an absolute path", p.display()),
            );
        }
        if let Some(p) = self.workdir.as_ref().filter(|p| !p.is_absolute()) {
            return bad(
                "workdir",
                format!("{} is not an absolute path", p.display()),
            );
        }
        Ok(())
    }

    /// The configured per-task timeout (`None` when 0).
    pub fn task_timeout(&self) -> Option<Duration> {
        (self.task_timeout_secs > 0.0)
            .then(|| Duration::try_from_secs_f64(self.task_timeout_secs).ok())
            .flatten()
    }

    /// Tasks admitted per process beyond the running one (`prefetch`).
    pub fn prefetch_per_process(&self) -> usize {
        usize::try_from(self.prefetch).unwrap_or(usize::MAX)
    }

    /// Time allowed for an executor to report readiness.
    pub fn start_timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.start_timeout_secs).unwrap_or(Duration::from_secs(30))
    }

    /// The address-space limit in bytes, if any.
    pub fn memory_limit_bytes(&self) -> Option<u64> {
        (self.memory_limit_mb > 0).then(|| self.memory_limit_mb.saturating_mul(1024 * 1024))
    }

    /// The import path of executors: the configured entries, then the daemon's `PYTHONPATH`.
    pub fn python_path(&self) -> Vec<PathBuf> {
        let mut parts: Vec<PathBuf> = self.pythonpath.clone();
        if let Some(v) = std::env::var_os("PYTHONPATH").filter(|v| !v.is_empty()) {
            // Relative entries meant the daemon's directory; executors work elsewhere.
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
            parts.extend(std::env::split_paths(&v).map(|p| cwd.join(p)));
        }
        parts
    }

    /// [`python_path`](Self::python_path) as a `PYTHONPATH` value.
    pub fn python_path_env(&self) -> Option<OsString> {
        let parts = self.python_path();
        if parts.is_empty() {
            return None;
        }
        std::env::join_paths(parts).ok()
    }
}

fn is_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
                && chars.all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// `[A-Za-z_][A-Za-z0-9_]*`, the names a shell can set.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A POSIX-ish user name (letters, digits, `_`, `-`, `.`), or empty.
fn is_user_name(name: &str) -> bool {
    name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_limit_everything() {
        let cfg = ExecutorConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.task_timeout(), Some(Duration::from_secs(300)));
        assert_eq!(cfg.memory_limit_bytes(), Some(2048 << 20));
        assert_eq!(cfg.user, DEFAULT_USER);
        assert_eq!(cfg.network, Network::Host);
    }

    #[test]
    fn toml_roundtrip_and_unknown_fields() {
        let cfg: ExecutorConfig = toml::from_str(
            "isolation = \"reuse\"\ntask_timeout_secs = 1.5\npreload = [\"os.path\"]\n\
             network = \"none\"\nuser = \"\"\n[env]\nHTTP_PROXY = \"http://p:3128\"\n",
        )
        .unwrap();
        assert_eq!(cfg.isolation, Isolation::Reuse);
        assert_eq!(cfg.network, Network::None);
        assert_eq!(cfg.task_timeout(), Some(Duration::from_millis(1500)));
        assert_eq!(cfg.env["HTTP_PROXY"], "http://p:3128");
        cfg.validate().unwrap();
        assert!(toml::from_str::<ExecutorConfig>("nope = 1").is_err());
        assert!(toml::from_str::<ExecutorConfig>("network = \"bridge\"").is_err());
    }

    #[test]
    fn rejects_bad_values_naming_the_key() {
        let key = |cfg: ExecutorConfig| cfg.validate().unwrap_err().to_string();
        let d = ExecutorConfig::default;
        let cases = [
            (
                ExecutorConfig {
                    task_timeout_secs: -1.0,
                    ..d()
                },
                "executor.task_timeout_secs",
            ),
            (
                ExecutorConfig {
                    start_timeout_secs: 0.0,
                    ..d()
                },
                "executor.start_timeout_secs",
            ),
            (
                ExecutorConfig {
                    preload: vec!["os; import x".into()],
                    ..d()
                },
                "executor.preload",
            ),
            (
                ExecutorConfig {
                    user: "a b".into(),
                    ..d()
                },
                "executor.user",
            ),
            (
                ExecutorConfig {
                    open_files_limit: 3,
                    ..d()
                },
                "executor.open_files_limit",
            ),
            (
                ExecutorConfig {
                    memory_limit_mb: u64::MAX,
                    ..d()
                },
                "executor.memory_limit_mb",
            ),
            (
                ExecutorConfig {
                    prefetch: 65,
                    ..d()
                },
                "executor.prefetch",
            ),
            (
                ExecutorConfig {
                    pythonpath: vec!["rel".into()],
                    ..d()
                },
                "executor.pythonpath",
            ),
            (
                ExecutorConfig {
                    workdir: Some("tmp".into()),
                    ..d()
                },
                "executor.workdir",
            ),
            (
                ExecutorConfig {
                    env: [("1X".to_string(), "v".to_string())].into(),
                    ..d()
                },
                "executor.env",
            ),
            (
                ExecutorConfig {
                    env: [("X".to_string(), "a\0b".to_string())].into(),
                    ..d()
                },
                "executor.env",
            ),
        ];
        for (cfg, want) in cases {
            let msg = key(cfg);
            assert!(msg.contains(&format!("`{want}`")), "{msg}");
        }
        ExecutorConfig {
            user: String::new(),
            open_files_limit: 0,
            ..d()
        }
        .validate()
        .unwrap();
    }
}
