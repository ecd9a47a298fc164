//! The Python runtime that runs users' functions: interpreter and dill versions.
//!
//! Executors report it when they start (`ready`), workers send it in `hello`, the dispatcher
//! records it on every task it claims and publishes it for `GET /info`; the Python SDK compares
//! it with its own and warns on a mismatch (the first cause of "my function won't deserialize").

use serde::{Deserialize, Serialize};

/// Versions of the executor side, e.g. `{"python": "3.11.2", "dill": "0.3.8"}`.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct Runtime {
    /// Python version of the executors (`platform.python_version()`), "" when unknown.
    #[serde(default)]
    pub python: String,
    /// dill version of the executors, "" when unknown.
    #[serde(default)]
    pub dill: String,
}

impl Runtime {
    /// True when nothing is known.
    pub fn is_unknown(&self) -> bool {
        self.python.is_empty() && self.dill.is_empty()
    }
}
