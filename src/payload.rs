//! Client payloads: base64 text (as Python's `codecs` writes it) holding a dill pickle.

use base64::Engine;
use thiserror::Error;

use crate::pickle::{self, PickleError};

/// Why a payload string was rejected.
#[derive(Debug, Error)]
pub enum PayloadError {
    #[error("payload is not valid base64: {0}")]
    Base64(String),
    #[error(transparent)]
    Pickle(#[from] PickleError),
}

/// Decodes base64 text, ignoring ASCII whitespace (codecs inserts a newline every 76 chars).
pub fn decode_base64(text: &str) -> Result<Vec<u8>, PayloadError> {
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| PayloadError::Base64(e.to_string()))
}

/// Decodes a payload and checks that it is a pickle.
pub fn decode_pickle(text: &str) -> Result<Vec<u8>, PayloadError> {
    let bytes = decode_base64(text)?;
    pickle::validate(&bytes)?;
    Ok(bytes)
}

/// Encodes bytes as standard base64 (no line breaks; `codecs.decode(..., "base64")` accepts it).
pub fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
