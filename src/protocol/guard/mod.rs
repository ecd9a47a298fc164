//! The transport guard: faas owns the public TCP side of every dispatcher ⇄ worker connection
//! and relays it to the zeromq socket over a Unix socket in a private directory, checking the inbound ZMTP stream with
//! [`zmtp::Inspector`] before a byte reaches the zeromq crate (which reserves whatever frame
//! length a peer announces). A violation drops that connection only. Dispatcher side:
//! [`front`]; worker side: [`connect`]. Documented in docs/protocol.md, "Transport guard".

pub mod zmtp;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use zeromq::{Endpoint, Host, Socket};

pub use zmtp::{Inspector, Limits, Violation};

/// Relay buffer per direction and connection (one allocation per connection, reused).
pub const BUFFER_BYTES: usize = 64 * 1024;
/// Most guarded connections a dispatcher serves at once (pull workers use two each); more are
/// refused at accept.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time a peer has to complete its greeting before the connection is dropped.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(10);
/// A refused peer address is logged at most once per this interval (debug lines otherwise).
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Time the worker's zeromq socket has to reach its one-shot local listener.
const LOCAL_ACCEPT: Duration = Duration::from_secs(5);

/// How a relayed connection ended.
#[derive(Debug)]
enum End {
    Closed,
    Refused(Violation),
    GreetingTimeout,
    Io(io::Error),
}

/// A private directory (mode 0700) for the loopback Unix sockets; removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    /// A fresh directory under `$RUNTIME_DIRECTORY` (systemd), else the temporary directory.
    fn create() -> io::Result<Self> {
        let name = format!("faas-guard-{}", uuid::Uuid::new_v4().simple());
        let runtime = std::env::var_os("RUNTIME_DIRECTORY").map(PathBuf::from);
        let mut last = None;
        for base in runtime.into_iter().chain([std::env::temp_dir()]) {
            let dir = base.join(&name);
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(PrivateDir(dir)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no directory for the guard's socket")))
    }

    fn socket(&self) -> PathBuf {
        self.0.join("zmq.sock")
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The dispatcher's public listener; stops accepting when dropped (relays end with the zeromq
/// socket's connections) and removes the socket's private directory.
pub struct Front {
    /// The public address actually bound.
    pub local: SocketAddr,
    accept: JoinHandle<()>,
    _dir: PrivateDir,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Binds the public listener on `bind`:`port` (`*` means every IPv4 address), binds `socket`
/// on a Unix socket in a private directory and relays every accepted connection to it through
/// an inspector with `limits`. The public bind comes first, so a port in use is reported as such.
pub async fn front<S: Socket>(
    bind: &str,
    port: u16,
    socket: &mut S,
    limits: Limits,
) -> io::Result<Front> {
    let host = if bind == "*" { "0.0.0.0" } else { bind }.to_owned();
    let rt = runtime()?;
    // Bound inside the guard's runtime, so its readiness is driven by the guard's thread.
    let listener = rt
        .spawn(async move { TcpListener::bind((host.as_str(), port)).await })
        .await
        .map_err(io::Error::other)??;
    let local = listener.local_addr()?;
    let dir = PrivateDir::create()?;
    let inner = dir.socket();
    socket
        .bind(&format!("ipc://{}", inner.display()))
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
    let accept = rt.spawn(accept_loop(listener, inner, limits));
    Ok(Front {
        local,
        accept,
        _dir: dir,
    })
}

/// The guard's own runtime (one thread): relays keep moving while a daemon's runtime is busy or
/// stalled, so bytes reach the zeromq socket as soon as they arrive, as without the guard.
fn runtime() -> io::Result<&'static tokio::runtime::Runtime> {
    static RT: LazyLock<io::Result<tokio::runtime::Runtime>> = LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("faas-guard")
            .enable_all()
            .build()
    });
    RT.as_ref()
        .map_err(|e| io::Error::other(format!("guard runtime: {e}")))
}

async fn accept_loop(listener: TcpListener, inner: PathBuf, limits: Limits) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (outer, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a worker connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if once_per_peer(peer.ip()) {
                tracing::warn!(%peer, max = MAX_CONNECTIONS,
                    "too many worker connections; refusing new ones");
            }
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let inner = match UnixStream::connect(&inner).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "zeromq socket unreachable; dropping connection");
                    return;
                }
            };
            finish(peer, relay(outer, inner, limits).await);
        });
    }
}

/// Connects `socket` to `endpoint` (`tcp://host:port`) through a guard: dials the endpoint,
/// then lets the socket reach it through a one-shot Unix socket in a private directory, whose
/// relay inspects what the far side sends.
pub async fn connect<S: Socket>(
    socket: &mut S,
    endpoint: &str,
    limits: Limits,
) -> Result<(), String> {
    let rt = runtime().map_err(|e| e.to_string())?;
    let endpoint = endpoint.to_owned();
    // Streams are created inside the guard's runtime (see [`runtime`]).
    let (outer, peer, dir, local) = rt
        .spawn(async move { dial(&endpoint).await })
        .await
        .map_err(|e| e.to_string())??;
    let path = dir.socket();
    rt.spawn(async move {
        let accepted = tokio::time::timeout(LOCAL_ACCEPT, local.accept()).await;
        // The accepted connection outlives its path: nothing is left on disk.
        drop(local);
        drop(dir);
        match accepted {
            Ok(Ok((inner, _))) => finish(peer, relay(outer, inner, limits).await),
            Ok(Err(e)) => tracing::debug!(error = %e, "guard: local accept failed"),
            Err(_) => tracing::debug!("guard: zeromq socket never connected"),
        }
    });
    socket
        .connect(&format!("ipc://{}", path.display()))
        .await
        .map_err(|e| e.to_string())
}

/// Dials `endpoint` and opens the one-shot local listener for the zeromq socket.
async fn dial(endpoint: &str) -> Result<(TcpStream, SocketAddr, PrivateDir, UnixListener), String> {
    let outer = match endpoint.parse::<Endpoint>().map_err(|e| e.to_string())? {
        Endpoint::Tcp(Host::Ipv4(ip), port) => TcpStream::connect((ip, port)).await,
        Endpoint::Tcp(Host::Ipv6(ip), port) => TcpStream::connect((ip, port)).await,
        Endpoint::Tcp(Host::Domain(name), port) => TcpStream::connect((name.as_str(), port)).await,
        other => return Err(format!("{other} is not a tcp:// endpoint")),
    }
    .map_err(|e| e.to_string())?;
    let peer = outer.peer_addr().map_err(|e| e.to_string())?;
    let dir = PrivateDir::create().map_err(|e| format!("guard directory: {e}"))?;
    let local = UnixListener::bind(dir.socket()).map_err(|e| e.to_string())?;
    Ok((outer, peer, dir, local))
}

/// Logs how a relay ended: refusals at warn (once per peer address per [`LOG_EVERY`]).
fn finish(peer: SocketAddr, end: End) {
    let reason = match end {
        End::Closed => return,
        End::Io(e) => {
            tracing::debug!(%peer, error = %e, "guarded connection failed");
            return;
        }
        End::Refused(v) => v.to_string(),
        End::GreetingTimeout => "no ZMTP greeting in time".to_owned(),
    };
    if once_per_peer(peer.ip()) {
        tracing::warn!(%peer, %reason, "dropped a ZeroMQ connection: hostile or broken peer");
    } else {
        tracing::debug!(%peer, %reason, "dropped a ZeroMQ connection");
    }
}

/// True if `ip` was not logged within [`LOG_EVERY`] (and records it now).
fn once_per_peer(ip: IpAddr) -> bool {
    static SEEN: LazyLock<Mutex<HashMap<IpAddr, Instant>>> = LazyLock::new(Default::default);
    let now = Instant::now();
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.len() >= 4096 {
        seen.retain(|_, at| now.duration_since(*at) < LOG_EVERY);
        if seen.len() >= 4096 {
            // A flood from many addresses: stop logging them one by one.
            return false;
        }
    }
    match seen.get(&ip) {
        Some(at) if now.duration_since(*at) < LOG_EVERY => false,
        _ => {
            seen.insert(ip, now);
            true
        }
    }
}

/// Relays `outer` (the network peer) ⇄ `inner` (our zeromq socket) until either side closes,
/// forwarding what `outer` sends only after the inspector has accepted it.
async fn relay(outer: TcpStream, inner: UnixStream, limits: Limits) -> End {
    let _ = outer.set_nodelay(true);
    let (mut outer_rd, mut outer_wr) = outer.into_split();
    let (mut inner_rd, mut inner_wr) = inner.into_split();
    let inbound = async {
        let mut ins = Inspector::new(limits);
        let mut buf = vec![0u8; BUFFER_BYTES];
        let greeting_until = tokio::time::Instant::now() + GREETING_TIMEOUT;
        loop {
            let read = if ins.greeted() {
                outer_rd.read(&mut buf).await
            } else {
                match tokio::time::timeout_at(greeting_until, outer_rd.read(&mut buf)).await {
                    Ok(r) => r,
                    Err(_) => return End::GreetingTimeout,
                }
            };
            let n = match read {
                Ok(0) => return End::Closed,
                Ok(n) => n,
                Err(e) => return End::Io(e),
            };
            if let Err(v) = ins.feed(&buf[..n]) {
                return End::Refused(v);
            }
            if let Err(e) = inner_wr.write_all(&buf[..n]).await {
                return End::Io(e);
            }
        }
    };
    let outbound = async {
        let mut buf = vec![0u8; BUFFER_BYTES];
        loop {
            let n = match inner_rd.read(&mut buf).await {
                Ok(0) => return End::Closed,
                Ok(n) => n,
                Err(e) => return End::Io(e),
            };
            if let Err(e) = outer_wr.write_all(&buf[..n]).await {
                return End::Io(e);
            }
        }
    };
    tokio::select! {
        end = inbound => end,
        end = outbound => end,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn private_dir_is_0700_and_removed_on_drop() {
        let dir = PrivateDir::create().expect("create");
        let path = dir.0.clone();
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(dir.socket().starts_with(&path));
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn refused_peers_are_logged_once_per_interval() {
        let ip: IpAddr = "192.0.2.77".parse().expect("ip");
        assert!(once_per_peer(ip));
        assert!(!once_per_peer(ip));
        assert!(once_per_peer("192.0.2.78".parse().expect("ip")));
    }
}
