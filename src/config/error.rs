//! Config errors: each one names where the bad setting came from (file, variable or flag) and its key.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// Exit status of a daemon whose configuration is unusable (sysexits `EX_CONFIG`).
pub const EX_CONFIG: u8 = 78;

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A config file or drop-in.
    File(PathBuf),
    /// An environment variable (its name).
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// A position inside a config file, shown as `, line N` after the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Line(pub Option<usize>);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, ", line {n}"),
            None => Ok(()),
        }
    }
}

/// A configuration that cannot be used; the daemons exit with [`EX_CONFIG`] on any of these.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}{line}: TOML syntax error: {message}")]
    Syntax {
        path: PathBuf,
        line: Line,
        message: String,
    },
    #[error("{origin}{line}: unknown key `{key}`{hint}")]
    UnknownKey {
        origin: Origin,
        line: Line,
        key: String,
        /// e.g. "; expected one of `port`, `bind`" (may be empty).
        hint: String,
    },
    #[error("{origin}{line}: bad value for `{key}`: {message}")]
    BadValue {
        origin: Origin,
        line: Line,
        key: String,
        message: String,
    },
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    /// A semantic error about `key` (dotted path, or a flag like `-w`).
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}
