//! Where Redis is: one server (`redis://`), or the primary that Redis Sentinels name
//! (`redis+sentinel://`). Parsed once from the configured URL; shown without passwords.
//!
//! ```text
//! redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]
//! redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER_NAME[/DB][?sentinel_password=P[&sentinel_username=U]]
//! ```
//!
//! In a Sentinel URL the user and password are those of the Redis primary (and replicas); the
//! Sentinels themselves are contacted without credentials unless `sentinel_password` (and
//! optionally `sentinel_username`) are given. A Sentinel port defaults to 26379.

use std::fmt;

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, IntoConnectionInfo};

/// Scheme of a Sentinel URL.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";
/// Default port of a Sentinel.
pub const SENTINEL_PORT: u16 = 26379;

/// A parsed Redis location.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// One Redis server, as the `redis` crate understands its URL.
    Direct { url: String },
    /// The primary of `master`, as named by any of `sentinels`.
    Sentinel(SentinelEndpoint),
}

/// The parts of a `redis+sentinel://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelEndpoint {
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
}

impl Endpoint {
    /// Parses a `redis://`, `rediss://`, `unix://` or `redis+sentinel://` URL. The error says
    /// what is wrong, without repeating the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Self, String> {
        match url.strip_prefix(SENTINEL_SCHEME) {
            Some(rest) => parse_sentinel(rest).map(Endpoint::Sentinel),
            None => {
                url.into_connection_info().map_err(|e| e.to_string())?;
                Ok(Endpoint::Direct {
                    url: url.to_string(),
                })
            }
        }
    }

    /// True for a Sentinel endpoint.
    pub fn is_sentinel(&self) -> bool {
        matches!(self, Endpoint::Sentinel(_))
    }
}

impl SentinelEndpoint {
    /// A client that asks the Sentinels for the current primary on every connection, starting
    /// with Sentinel number `first`.
    pub fn client(&self, first: usize) -> redis::RedisResult<SentinelClient> {
        let n = self.sentinels.len().max(1);
        let addrs = self
            .sentinels
            .iter()
            .cycle()
            .skip(first % n)
            .take(self.sentinels.len())
            .map(|(h, p)| ConnectionAddr::Tcp(h.clone(), *p));
        let mut b = SentinelClientBuilder::new(addrs, &self.master, SentinelServerType::Master)?
            .set_client_to_redis_db(self.db);
        if let Some(u) = &self.username {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = &self.password {
            b = b.set_client_to_redis_password(p);
        }
        if let Some(u) = &self.sentinel_username {
            b = b.set_client_to_sentinel_username(u);
        }
        if let Some(p) = &self.sentinel_password {
            b = b.set_client_to_sentinel_password(p);
        }
        b.build()
    }
}

fn parse_sentinel(rest: &str) -> Result<SentinelEndpoint, String> {
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = rest
        .split_once('/')
        .ok_or("a Sentinel URL needs the master name: redis+sentinel://HOST:PORT/MASTER_NAME")?;
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (non_empty(decode(user)?), non_empty(decode(pass)?)),
            None => (non_empty(decode(u)?), None),
        },
    };
    let mut sentinels = Vec::new();
    for h in hosts.split(',') {
        sentinels.push(host_port(h)?);
    }
    let mut parts = path.split('/');
    let master = decode(parts.next().unwrap_or_default())?;
    if master.is_empty() {
        return Err("the master name after the Sentinel addresses is empty".into());
    }
    let db = match parts.next() {
        None | Some("") => 0,
        Some(d) => d
            .parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| format!("database {d:?} is not a number >= 0"))?,
    };
    if parts.any(|p| !p.is_empty()) {
        return Err("expected /MASTER_NAME[/DB] after the Sentinel addresses".into());
    }
    let mut ep = SentinelEndpoint {
        sentinels,
        master,
        db,
        username,
        password,
        sentinel_username: None,
        sentinel_password: None,
    };
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sentinel_password" => ep.sentinel_password = non_empty(decode(v)?),
            "sentinel_username" => ep.sentinel_username = non_empty(decode(v)?),
            other => {
                return Err(format!(
                    "unknown parameter {other:?} (known: sentinel_password, sentinel_username)"
                ))
            }
        }
    }
    Ok(ep)
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// `HOST[:PORT]`, `[V6]:PORT` or `[V6]`.
fn host_port(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("{s:?} is not HOST:PORT");
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    let port = match port {
        None => SENTINEL_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    };
    Ok((host.to_string(), port))
}

/// Percent-decoding, as URLs carry reserved characters of passwords.
fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a %-escape is not two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %-escape is not UTF-8".to_string())
}

/// The URL with any password replaced by `***` (for logs and status lines).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let Some((userinfo, hosts)) = authority.rsplit_once('@') else {
        return redact_query(url);
    };
    let user = userinfo.split_once(':').map_or("", |(u, _)| u);
    redact_query(&format!("{scheme}://{user}:***@{hosts}{tail}"))
}

fn redact_query(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.contains("password") => format!("{k}=***"),
            _ => p.to_string(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Direct { url } => f.write_str(&redact(url)),
            Endpoint::Sentinel(s) => {
                let hosts: Vec<String> = s
                    .sentinels
                    .iter()
                    .map(|(h, p)| {
                        if h.contains(':') {
                            format!("[{h}]:{p}")
                        } else {
                            format!("{h}:{p}")
                        }
                    })
                    .collect();
                write!(
                    f,
                    "{SENTINEL_SCHEME}{}{}/{}/{}",
                    if s.password.is_some() { ":***@" } else { "" },
                    hosts.join(","),
                    s.master,
                    s.db
                )
            }
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel(url: &str) -> SentinelEndpoint {
        match Endpoint::parse(url) {
            Ok(Endpoint::Sentinel(s)) => s,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn sentinel_urls() {
        let s = sentinel("redis+sentinel://10.0.0.1:26379,10.0.0.2,[::1]:5000/mymaster");
        assert_eq!(
            s.sentinels,
            vec![
                ("10.0.0.1".to_string(), 26379),
                ("10.0.0.2".to_string(), 26379),
                ("::1".to_string(), 5000)
            ]
        );
        assert_eq!((s.master.as_str(), s.db), ("mymaster", 0));
        assert_eq!((s.username, s.password), (None, None));

        let s = sentinel("redis+sentinel://:p%40ss@h:1/m/3?sentinel_password=sp");
        assert_eq!(s.password.as_deref(), Some("p@ss"));
        assert_eq!(s.username, None);
        assert_eq!(s.db, 3);
        assert_eq!(s.sentinel_password.as_deref(), Some("sp"));
        let s = sentinel("redis+sentinel://u:p@h/m/");
        assert_eq!((s.username.as_deref(), s.db), (Some("u"), 0));
    }

    #[test]
    fn bad_sentinel_urls_say_why() {
        for (url, why) in [
            ("redis+sentinel://h:1", "master name"),
            ("redis+sentinel://h:1/", "empty"),
            ("redis+sentinel://h:0/m", "HOST:PORT"),
            ("redis+sentinel://h:x/m", "HOST:PORT"),
            ("redis+sentinel://,h/m", "HOST:PORT"),
            ("redis+sentinel://h/m/x", "database"),
            ("redis+sentinel://h/m/1/2", "MASTER_NAME"),
            ("redis+sentinel://h/m?tls=1", "unknown parameter"),
            ("redis+sentinel://:%zz@h/m", "hex"),
        ] {
            let err = Endpoint::parse(url).expect_err(url);
            assert!(err.contains(why), "{url}: {err}");
        }
        assert!(Endpoint::parse("http://x").is_err());
        assert!(!Endpoint::parse("redis://127.0.0.1:6379/2")
            .expect("direct")
            .is_sentinel());
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("redis://:secret@10.0.0.7:6379/0"),
            "redis://:***@10.0.0.7:6379/0"
        );
        assert_eq!(redact("redis://u:secret@h"), "redis://u:***@h");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        let url = "redis+sentinel://:secret@h1,h2:5/m/1?sentinel_password=s2";
        let shown = Endpoint::parse(url).expect("parse").to_string();
        assert_eq!(shown, "redis+sentinel://:***@h1:26379,h2:5/m/1");
        assert_eq!(
            redact(url),
            "redis+sentinel://:***@h1,h2:5/m/1?sentinel_password=***"
        );
    }
}
