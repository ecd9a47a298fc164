//! Worker authentication primitives shared by both daemons: the shared token (`token_file`),
//! challenge nonces and the proof a worker sends for one (docs/protocol.md "Authentication").
//!
//! proof = HMAC-SHA256(token, [`DOMAIN`] || nonce || worker_id). The nonce is 32 random bytes
//! chosen by the dispatcher per connection, so a proof is bound to that connection's challenge
//! and to the worker id it registers; the token itself never crosses the wire. Proofs are
//! compared in constant time.

use std::fmt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// Domain separator: a proof for this protocol cannot be replayed as any other HMAC use.
pub const DOMAIN: &[u8] = b"faas worker auth v1\0";
/// Bytes in a challenge nonce.
pub const NONCE_BYTES: usize = 32;
/// Shortest token accepted (after trimming), in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Longest token accepted (after trimming), in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// A challenge nonce.
pub type Nonce = [u8; NONCE_BYTES];

/// Why a token file cannot be used.
#[derive(Debug, Error)]
pub enum TokenError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} must hold {MIN_TOKEN_BYTES}-{MAX_TOKEN_BYTES} bytes (surrounding whitespace is ignored), got {len}")]
    Length { path: PathBuf, len: usize },
}

/// The shared secret of dispatcher and workers. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Vec<u8>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The trimmed token of `text`, if its length is acceptable.
    pub fn parse(path: &Path, text: &[u8]) -> Result<Token, TokenError> {
        let trimmed = text.trim_ascii();
        if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&trimmed.len()) {
            return Err(TokenError::Length {
                path: path.to_path_buf(),
                len: trimmed.len(),
            });
        }
        Ok(Token(trimmed.to_vec()))
    }

    /// Reads the token file `path` (the whole file, trimmed, is the token).
    pub fn load(path: &Path) -> Result<Token, TokenError> {
        // Bounded read: a token file is tiny; refuse to slurp a huge file by mistake.
        use std::io::Read;
        let mut buf = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_TOKEN_BYTES as u64 * 2 + 1).read_to_end(&mut buf))
            .map_err(|source| TokenError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        Token::parse(path, &buf)
    }

    fn mac(&self, nonce: &Nonce, worker_id: &str) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(DOMAIN);
        mac.update(nonce);
        mac.update(worker_id.as_bytes());
        mac
    }

    /// The proof for `nonce` and `worker_id`, hex-encoded (as sent in `auth`).
    pub fn prove(&self, nonce: &Nonce, worker_id: &str) -> String {
        hex(&self.mac(nonce, worker_id).finalize().into_bytes())
    }

    /// Whether `proof` (hex) proves the token for `nonce` and `worker_id`; constant time in the
    /// proof's content.
    pub fn verify(&self, nonce: &Nonce, worker_id: &str, proof: &str) -> bool {
        match unhex(proof) {
            Some(bytes) => self.mac(nonce, worker_id).verify_slice(&bytes).is_ok(),
            None => false,
        }
    }
}

/// A fresh random nonce from the operating system's CSPRNG.
pub fn nonce() -> Result<Nonce, getrandom::Error> {
    let mut n = [0u8; NONCE_BYTES];
    getrandom::fill(&mut n)?;
    Ok(n)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses hex (either case); `None` when malformed.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > 1024 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses a hex nonce as sent in `challenge`.
pub fn parse_nonce(s: &str) -> Option<Nonce> {
    unhex(s)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> Token {
        Token::parse(Path::new("/t"), s.as_bytes()).expect("token")
    }

    #[test]
    fn hmac_matches_rfc_4231_construction() {
        // RFC 4231 test case 2 (key "Jefe"), computed through the same Mac the proof uses.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn proof_is_bound_to_token_nonce_and_worker() {
        let t = token("0123456789abcdef-secret");
        let n1 = [1u8; NONCE_BYTES];
        let n2 = [2u8; NONCE_BYTES];
        let p = t.prove(&n1, "w1");
        assert_eq!(p.len(), 64);
        assert!(t.verify(&n1, "w1", &p));
        assert!(t.verify(&n1, "w1", &p.to_uppercase()));
        assert!(!t.verify(&n2, "w1", &p), "other nonce");
        assert!(!t.verify(&n1, "w2", &p), "other worker id");
        assert!(
            !token("0123456789abcdef-other").verify(&n1, "w1", &p),
            "other token"
        );
        assert!(!t.verify(&n1, "w1", &p[..62]), "truncated");
        assert!(!t.verify(&n1, "w1", ""), "empty");
        assert!(!t.verify(&n1, "w1", "zz"), "not hex");
        // The worker id is not just appended to the nonce: "w" + "1" vs nonce boundary.
        let expected = {
            let mut mac =
                <Hmac<Sha256> as Mac>::new_from_slice(b"0123456789abcdef-secret").expect("key");
            mac.update(DOMAIN);
            mac.update(&n1);
            mac.update(b"w1");
            hex(&mac.finalize().into_bytes())
        };
        assert_eq!(p, expected);
    }

    #[test]
    fn token_files_are_trimmed_and_bounded() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("tok");
        std::fs::write(&path, "  0123456789abcdefXYZ \n").expect("write");
        assert_eq!(
            Token::load(&path).expect("load"),
            token("0123456789abcdefXYZ")
        );
        std::fs::write(&path, "short\n").expect("write");
        assert!(matches!(
            Token::load(&path),
            Err(TokenError::Length { len: 5, .. })
        ));
        std::fs::write(&path, "\n \n").expect("write");
        assert!(matches!(
            Token::load(&path),
            Err(TokenError::Length { len: 0, .. })
        ));
        std::fs::write(&path, vec![b'a'; MAX_TOKEN_BYTES * 3]).expect("write");
        assert!(matches!(Token::load(&path), Err(TokenError::Length { .. })));
        assert!(matches!(
            Token::load(&dir.path().join("missing")),
            Err(TokenError::Read { .. })
        ));
        assert_eq!(format!("{:?}", token("0123456789abcdef")), "Token(..)");
    }

    #[test]
    fn nonces_are_random_and_hex_roundtrips() {
        let a = nonce().expect("nonce");
        let b = nonce().expect("nonce");
        assert_ne!(a, b);
        assert_eq!(parse_nonce(&hex(&a)), Some(a));
        assert_eq!(parse_nonce("abcd"), None);
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("0aFF"), Some(vec![0x0a, 0xff]));
    }
}
