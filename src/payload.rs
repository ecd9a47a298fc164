//! Client payloads: base64 text (as Python's `codecs` writes it) holding a dill pickle.

use base64::{DecodeError, Engine};
use thiserror::Error;

use crate::pickle::{self, PickleError};

/// Why a payload string was rejected. The messages are meant for an HTTP 400 `detail`.
#[derive(Debug, Error)]
pub enum PayloadError {
    #[error("payload is not valid base64: {0}")]
    Base64(String),
    #[error(transparent)]
    Pickle(#[from] PickleError),
}

/// Decodes standard, padded base64 text, ignoring ASCII whitespace anywhere: `codecs.encode(...,
/// "base64")` inserts a newline every 76 characters and at the end, and CRLF or spaces are harmless.
/// Empty (or whitespace-only) text decodes to no bytes.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, PayloadError> {
    let alphabet = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    if let Some((at, c)) = text
        .char_indices()
        .find(|&(_, c)| !alphabet(c) && !c.is_ascii_whitespace())
    {
        return Err(PayloadError::Base64(format!(
            "invalid character {c:?} at offset {at}"
        )));
    }
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if compact.len() % 4 != 0 {
        return Err(PayloadError::Base64(format!(
            "bad length: {} base64 characters (without whitespace) is not a multiple of 4",
            compact.len()
        )));
    }
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| PayloadError::Base64(describe(&e, text)))
}

/// Explains a decode error, with offsets into the original text rather than the compacted one.
fn describe(err: &DecodeError, text: &str) -> String {
    let original_offset = |compact_offset: usize| {
        text.bytes()
            .enumerate()
            .filter(|(_, b)| !b.is_ascii_whitespace())
            .nth(compact_offset)
            .map_or(compact_offset, |(i, _)| i)
    };
    // Characters outside the alphabet were rejected already, so an invalid byte is a '='.
    match *err {
        DecodeError::InvalidByte(at, b) => format!(
            "misplaced {:?} at offset {}",
            char::from(b),
            original_offset(at)
        ),
        DecodeError::InvalidLength(n) => format!("bad length: {n} base64 characters"),
        DecodeError::InvalidLastSymbol(at, b) => format!(
            "invalid last character {:?} at offset {} (non-zero unused bits)",
            char::from(b),
            original_offset(at)
        ),
        DecodeError::InvalidPadding => "bad padding".to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `codecs.encode(bytes(range(100)), "base64").decode()`: 76-character lines, trailing newline.
    const CODECS_TEXT: &str =
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\n\
        OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiYw==\n";

    fn err(text: &str) -> String {
        decode_base64(text).unwrap_err().to_string()
    }

    #[test]
    fn accepts_codecs_style_and_whitespace() {
        let want: Vec<u8> = (0..100).collect();
        assert_eq!(decode_base64(CODECS_TEXT).unwrap(), want);
        assert_eq!(decode_base64(&CODECS_TEXT.replace('\n', "")).unwrap(), want);
        assert_eq!(
            decode_base64(&CODECS_TEXT.replace('\n', "\r\n")).unwrap(),
            want
        );
        let spaced: String = encode_base64(&want)
            .chars()
            .flat_map(|c| [c, ' '])
            .collect();
        assert_eq!(decode_base64(&format!("\t {spaced}\n")).unwrap(), want);
        assert_eq!(decode_base64(&encode_base64(&want)).unwrap(), want);
    }

    #[test]
    fn rejects_bad_base64_clearly() {
        assert_eq!(
            err("payload"),
            "payload is not valid base64: bad length: 7 base64 characters (without whitespace) is not a multiple of 4"
        );
        assert_eq!(
            err("QU\nJ$RA=="),
            "payload is not valid base64: invalid character '$' at offset 4"
        );
        assert_eq!(
            err("QUJD\0A=="),
            "payload is not valid base64: invalid character '\\0' at offset 4"
        );
        assert_eq!(
            err("QUJDRA-_"),
            "payload is not valid base64: invalid character '-' at offset 6"
        );
        assert_eq!(
            err("QUJDRé=="),
            "payload is not valid base64: invalid character 'é' at offset 5"
        );
        assert_eq!(
            err("QQ==QUJD"),
            "payload is not valid base64: misplaced '=' at offset 2"
        );
        assert_eq!(
            err("QUJDR==="),
            "payload is not valid base64: misplaced '=' at offset 5"
        );
        assert!(
            err("QUJDRB==").starts_with("payload is not valid base64: invalid last character 'B'")
        );
    }

    #[test]
    fn empty_payload() {
        assert_eq!(decode_base64("").unwrap(), Vec::<u8>::new());
        assert_eq!(decode_base64(" \n").unwrap(), Vec::<u8>::new());
        assert_eq!(
            decode_pickle("").unwrap_err().to_string(),
            "payload is empty"
        );
        assert_eq!(
            decode_pickle("\r\n").unwrap_err().to_string(),
            "payload is empty"
        );
    }

    #[test]
    fn decode_pickle_checks_the_pickle() {
        // `codecs.encode(dill.dumps(None), "base64")`.
        assert_eq!(decode_pickle("gAROLg==\n").unwrap(), b"\x80\x04N.");
        assert_eq!(
            decode_pickle("cGF5bG9hZA==").unwrap_err().to_string(),
            "payload is not a pickle: truncated at offset 1 (PUT at offset 0 needs a newline-terminated argument, none found before the end of the data)"
        );
        assert!(matches!(
            decode_pickle("gARO"),
            Err(PayloadError::Pickle(PickleError::Malformed(_)))
        ));
    }
}
