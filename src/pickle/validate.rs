//! Structural validation of pickle byte strings (opcode walk; no objects are built).

use thiserror::Error;

/// Why a byte string is not a well-formed pickle.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PickleError {
    #[error("payload is empty")]
    Empty,
    #[error("payload is not a pickle: {0}")]
    Malformed(String),
}

/// Checks that `data` is a structurally valid pickle. (Stub: replaced by the opcode walker.)
pub fn validate(data: &[u8]) -> Result<(), PickleError> {
    if data.is_empty() {
        return Err(PickleError::Empty);
    }
    if data.first() != Some(&0x80) || data.last() != Some(&b'.') {
        return Err(PickleError::Malformed("no protocol header or STOP".into()));
    }
    Ok(())
}
