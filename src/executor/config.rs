//! Executor settings (`[executor]` table): serde model, validation and derived values.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ExecutorError;

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

/// Settings of the executor subsystem (the `[executor]` table of dispatcher.toml and worker.toml).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorConfig {
    /// Python interpreter used for executors (must have dill importable).
    pub python: String,
    /// `fork` (a zygote forks a child per task) or `reuse` (long-lived processes).
    pub isolation: Isolation,
    /// Extra import paths, prepended to the inherited `PYTHONPATH`.
    pub pythonpath: Vec<PathBuf>,
    /// Modules imported once at executor start (e.g. `numpy`), so tasks need not import them.
    pub preload: Vec<String>,
    /// Per-task wall-clock limit in seconds; 0 means no limit.
    pub task_timeout_secs: f64,
    /// Per-task address-space limit (RLIMIT_AS) in MiB; 0 means no limit.
    pub memory_limit_mb: u64,
    /// Working directory of executor processes; unset means the daemon's own.
    pub workdir: Option<PathBuf>,
    /// Seconds allowed for an executor to start and import dill before start-up fails.
    pub start_timeout_secs: f64,
    /// Deserialized functions kept per process in `reuse` mode.
    pub function_cache_size: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            python: "python3".into(),
            isolation: Isolation::Fork,
            pythonpath: Vec::new(),
            preload: Vec::new(),
            task_timeout_secs: 0.0,
            memory_limit_mb: 0,
            workdir: None,
            start_timeout_secs: 30.0,
            function_cache_size: 256,
        }
    }
}

impl ExecutorConfig {
    /// Checks the values serde cannot check: non-empty interpreter, sane durations and limits.
    pub fn validate(&self) -> Result<(), ExecutorError> {
        let bad = |msg: String| Err(ExecutorError::Config(msg));
        if self.python.trim().is_empty() {
            return bad("executor.python must name an interpreter".into());
        }
        if !(self.task_timeout_secs.is_finite() && self.task_timeout_secs >= 0.0) {
            return bad(format!(
                "executor.task_timeout_secs must be >= 0, got {}",
                self.task_timeout_secs
            ));
        }
        if !(self.start_timeout_secs.is_finite() && self.start_timeout_secs > 0.0) {
            return bad(format!(
                "executor.start_timeout_secs must be > 0, got {}",
                self.start_timeout_secs
            ));
        }
        if self.memory_limit_mb > u64::MAX / (1024 * 1024) {
            return bad(format!(
                "executor.memory_limit_mb is too large: {}",
                self.memory_limit_mb
            ));
        }
        if let Some(name) = self.preload.iter().find(|m| !is_module_name(m)) {
            return bad(format!("executor.preload: {name:?} is not a module name"));
        }
        Ok(())
    }

    /// The configured per-task timeout (`None` when 0).
    pub fn task_timeout(&self) -> Option<Duration> {
        (self.task_timeout_secs > 0.0)
            .then(|| Duration::try_from_secs_f64(self.task_timeout_secs).ok())
            .flatten()
    }

    /// Time allowed for an executor to report readiness.
    pub fn start_timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.start_timeout_secs).unwrap_or(Duration::from_secs(30))
    }

    /// The address-space limit in bytes, if any.
    pub fn memory_limit_bytes(&self) -> Option<u64> {
        (self.memory_limit_mb > 0).then(|| self.memory_limit_mb.saturating_mul(1024 * 1024))
    }

    /// `PYTHONPATH` for executors: the configured entries, then the inherited value.
    pub fn python_path_env(&self) -> Option<OsString> {
        let inherited = std::env::var_os("PYTHONPATH").filter(|v| !v.is_empty());
        let mut parts: Vec<PathBuf> = self.pythonpath.clone();
        if let Some(v) = inherited {
            parts.extend(std::env::split_paths(&v));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_have_no_limits() {
        let cfg = ExecutorConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.task_timeout(), None);
        assert_eq!(cfg.memory_limit_bytes(), None);
    }

    #[test]
    fn toml_roundtrip_and_unknown_fields() {
        let cfg: ExecutorConfig = toml::from_str(
            "isolation = \"reuse\"\ntask_timeout_secs = 1.5\npreload = [\"os.path\"]",
        )
        .unwrap();
        assert_eq!(cfg.isolation, Isolation::Reuse);
        assert_eq!(cfg.task_timeout(), Some(Duration::from_millis(1500)));
        cfg.validate().unwrap();
        assert!(toml::from_str::<ExecutorConfig>("nope = 1").is_err());
    }

    #[test]
    fn rejects_bad_values() {
        let mut cfg = ExecutorConfig {
            task_timeout_secs: -1.0,
            ..Default::default()
        };
        assert!(cfg.validate().is_err());
        cfg.task_timeout_secs = 0.0;
        cfg.preload = vec!["os; import x".into()];
        assert!(cfg.validate().is_err());
        cfg.preload.clear();
        cfg.start_timeout_secs = 0.0;
        assert!(cfg.validate().is_err());
    }
}
