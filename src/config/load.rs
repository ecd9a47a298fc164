//! Finding and layering a daemon's config: defaults, `NAME.toml`, `NAME.d/*.toml`, environment.
//!
//! Command-line flags go on top of the result (see `crate::cli`), then [`Settings::validate`].

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use toml::Table;

use super::error::ConfigError;
use super::{env, layer, Settings};

/// Directory of the config files when `FAAS_CONFIG_DIR` is unset.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/faas";
/// Environment variable that moves the config directory.
pub const CONFIG_DIR_ENV: &str = "FAAS_CONFIG_DIR";

/// Everything a daemon's settings are layered from, except its flags.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Config directory holding `NAME.toml` and `NAME.d/`.
    pub dir: PathBuf,
    /// `--config FILE`: replaces `<dir>/NAME.toml` and must exist.
    pub file: Option<PathBuf>,
    /// Environment variables (name, value).
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// The sources of this process: `FAAS_CONFIG_DIR` (or /etc/faas) and the environment.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
            .collect();
        Self::from_env(file, env)
    }

    /// Sources for the given environment (the config directory is taken from it too).
    pub fn from_env(file: Option<PathBuf>, env: Vec<(String, String)>) -> Self {
        let dir = env
            .iter()
            .find(|(k, v)| k == CONFIG_DIR_ENV && !v.is_empty())
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR));
        Sources { dir, file, env }
    }

    /// The files to read for `daemon`, lowest precedence first: the main file (if any), then
    /// the drop-ins `<dir>/NAME.d/*.toml` in lexical order of their names (hidden files skipped).
    pub fn files(&self, daemon: &str) -> Result<Vec<PathBuf>, ConfigError> {
        let mut files = Vec::new();
        match &self.file {
            Some(explicit) => files.push(explicit.clone()),
            None => {
                let main = self.dir.join(format!("{daemon}.toml"));
                if main.exists() {
                    files.push(main);
                }
            }
        }
        let dropins = self.dir.join(format!("{daemon}.d"));
        let entries = match std::fs::read_dir(&dropins) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(files),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: dropins,
                    source,
                })
            }
        };
        let mut found = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|source| ConfigError::Read {
                    path: dropins.clone(),
                    source,
                })?
                .path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.extension() == Some(OsStr::new("toml")) && !name.starts_with('.') {
                found.push(path);
            }
        }
        found.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        files.extend(found);
        Ok(files)
    }
}

/// The serialized defaults of `T` (every key that has a value by default).
pub fn defaults_table<T: Settings>() -> Table {
    Table::try_from(T::default()).unwrap_or_default()
}

/// Layers defaults, files and environment into `T` (not yet validated: flags come next).
pub fn load<T: Settings>(sources: &Sources) -> Result<T, ConfigError> {
    let mut merged = Table::new();
    for path in sources.files(T::NAME)? {
        layer::merge(&mut merged, read_file::<T>(&path)?);
    }
    let env_layer = env::layer::<T>(T::NAME, &sources.env, &defaults_table::<T>())?;
    layer::merge(&mut merged, env_layer);
    layer::finish(merged)
}

/// Reads one config file as a checked table.
pub fn read_file<T: Settings>(path: &Path) -> Result<Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    layer::parse_file::<T>(path, &text)
}
