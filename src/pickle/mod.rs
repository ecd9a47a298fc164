//! Pickle handling without Python: structural validation of client payloads and the platform's exceptions.

pub mod exception;
pub mod opcodes;
pub mod validate;

pub use exception::{platform_exception, PlatformError};
pub use validate::{validate, PickleError};
