//! Optional bearer-token authentication, a layer over the whole router: with `auth_token_file`
//! set, every request except `/healthz` needs `Authorization: Bearer <token>` naming one of the
//! file's tokens (401 with `WWW-Authenticate: Bearer` otherwise).
//!
//! Token file: one token per line (RFC 6750 `b64token` characters), `#` starts a comment line,
//! blank lines are ignored. It is read at start-up (an unreadable or malformed file stops the
//! gateway) and again on SIGHUP (a bad file is logged and the previous tokens stay). Tokens are
//! kept only as SHA-256 digests, and a presented token is compared with every digest in constant
//! time, so neither a token's bytes nor which token matched leak through timing. The gateway's
//! own liveness probe authenticates with a random token that exists only in memory.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::signal::unix::{signal, SignalKind};

use crate::shutdown::Shutdown;

/// The only route reachable without a token (load balancers and monitoring).
pub const PUBLIC_PATH: &str = "/healthz";

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}: not a bearer token (allowed: letters, digits, - . _ ~ + / and trailing =)")]
    Malformed { path: PathBuf, line: usize },
}

type Sha = [u8; 32];

fn digest(token: &[u8]) -> Sha {
    Sha256::digest(token).into()
}

/// RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Parses a token file's text into digests; errors name the line (never the token).
pub fn parse_tokens(path: &Path, text: &str) -> Result<Vec<Sha>, AuthError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !is_b64token(line) {
            return Err(AuthError::Malformed {
                path: path.to_path_buf(),
                line: n + 1,
            });
        }
        out.push(digest(line.as_bytes()));
    }
    Ok(out)
}

/// The accepted tokens, replaceable while requests are served.
#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    tokens: RwLock<Arc<Vec<Sha>>>,
    /// The liveness probe's token (random, in memory only) and its digest.
    probe: (String, Sha),
}

impl Auth {
    /// Reads the token file at `path`.
    pub fn load(path: &Path) -> Result<Auth, AuthError> {
        let mut probe = String::new();
        for _ in 0..2 {
            let _ = write!(probe, "{}", uuid::Uuid::new_v4().simple());
        }
        let probe_digest = digest(probe.as_bytes());
        let auth = Auth {
            path: path.to_path_buf(),
            tokens: RwLock::new(Arc::new(Vec::new())),
            probe: (probe, probe_digest),
        };
        let n = auth.reload()?;
        tracing::info!(path = %path.display(), tokens = n, "bearer-token authentication enabled");
        Ok(auth)
    }

    /// Re-reads the token file; on error the previous tokens stay. Returns the token count.
    pub fn reload(&self) -> Result<usize, AuthError> {
        let read = |source| AuthError::Read {
            path: self.path.clone(),
            source,
        };
        let text = std::fs::read_to_string(&self.path).map_err(read)?;
        let tokens = parse_tokens(&self.path, &text)?;
        if tokens.is_empty() {
            tracing::warn!(path = %self.path.display(), "the token file holds no token: every request but /healthz is refused");
        }
        if let Ok(meta) = std::fs::metadata(&self.path) {
            if meta.permissions().mode() & 0o004 != 0 {
                tracing::warn!(path = %self.path.display(), "the token file is readable by every user (chmod 0640 and chgrp faas)");
            }
        }
        let n = tokens.len();
        *self
            .tokens
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(tokens);
        Ok(n)
    }

    /// Whether `token` is one of the accepted ones (constant time in the token's content).
    pub fn accepts(&self, token: &str) -> bool {
        let presented = digest(token.as_bytes());
        let tokens = self
            .tokens
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let mut found = 0u8;
        for known in tokens.iter().chain(std::iter::once(&self.probe.1)) {
            let diff = known
                .iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            found |= u8::from(std::hint::black_box(diff) == 0);
        }
        found == 1
    }

    /// The `Authorization` header value of the gateway's own liveness probe.
    pub fn probe_header(&self) -> String {
        format!("Bearer {}", self.probe.0)
    }
}

/// What is wrong with a request's credentials.
fn refusal(invalid: bool) -> Response {
    let (challenge, detail) = if invalid {
        (
            "Bearer error=\"invalid_token\"",
            "Invalid authentication credentials",
        )
    } else {
        ("Bearer", "Not authenticated")
    };
    let mut resp = (StatusCode::UNAUTHORIZED, Json(json!({ "detail": detail }))).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    resp
}

/// The middleware: lets `/healthz` and requests with an accepted token through.
pub async fn require_token(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if req.uri().path() == PUBLIC_PATH {
        return next.run(req).await;
    }
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return refusal(false);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match token {
        Some(t) if auth.accepts(t) => next.run(req).await,
        _ => refusal(true),
    }
}

/// Re-reads the token file on every SIGHUP until `shutdown`.
pub fn reload_on_sighup(auth: Arc<Auth>, mut shutdown: Shutdown) -> std::io::Result<()> {
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            match auth.reload() {
                Ok(n) => {
                    tracing::info!(path = %auth.path.display(), tokens = n, "token file reloaded")
                }
                Err(e) => {
                    tracing::error!(error = %e, "token file not reloaded; the previous tokens stay")
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_allow_comments_and_reject_garbage() {
        let p = Path::new("/etc/faas/tokens");
        let ok = parse_tokens(p, "# ops\n\n  abc-DEF_123.~+/==  \n#x\nsecond\n").unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0], digest(b"abc-DEF_123.~+/=="));
        let err = parse_tokens(p, "good\nbad token\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/etc/faas/tokens, line 2: not a bearer token (allowed: letters, digits, - . _ ~ + / and trailing =)"
        );
        assert!(!err.contains("bad token"));
        assert!(parse_tokens(p, "===\n").is_err());
    }

    #[test]
    fn accepts_only_listed_tokens_and_the_probe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "alpha\nbeta\n").unwrap();
        let auth = Auth::load(&path).unwrap();
        assert!(auth.accepts("alpha") && auth.accepts("beta"));
        assert!(!auth.accepts("alph") && !auth.accepts("alphaa") && !auth.accepts(""));
        let probe = auth.probe_header();
        assert!(auth.accepts(probe.strip_prefix("Bearer ").unwrap()));
        std::fs::write(&path, "gamma\n").unwrap();
        assert_eq!(auth.reload().unwrap(), 1);
        assert!(!auth.accepts("alpha") && auth.accepts("gamma"));
        std::fs::write(&path, "not valid\n").unwrap();
        assert!(auth.reload().is_err());
        assert!(
            auth.accepts("gamma"),
            "a bad file keeps the previous tokens"
        );
    }
}
