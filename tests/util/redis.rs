//! A private `redis-server` on a free port, killed when dropped; and Redis Sentinel set-ups.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server owned by one test.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    /// Extra arguments it was started with (kept for [`RedisServer::restart`]).
    extra: Vec<String>,
    dir: tempfile::TempDir,
}

fn bin() -> String {
    std::env::var("FAAS_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// Spawns redis-server on `port` with `extra` arguments and waits until it accepts
/// connections; `None` if it exited first (port taken meanwhile).
fn spawn(port: u16, dir: &std::path::Path, extra: &[String]) -> Option<Child> {
    let mut child = Command::new(bin())
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start redis-server (is it installed?)");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A TCP port on 127.0.0.1 that was free a moment ago, and never handed out before in this
/// process: tests run side by side, and a port one of them freed (a Redis it killed and will
/// restart there, the old primary its Sentinels keep probing) must not become another's.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

impl RedisServer {
    /// Starts redis-server (binary from `FAAS_TEST_REDIS_SERVER`, default `redis-server`),
    /// without persistence.
    pub fn start() -> Self {
        Self::start_with(&["--appendonly", "no"])
    }

    /// Starts redis-server with `extra` arguments (e.g. `--appendonly yes`).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(port, dir.path(), &extra) {
                return RedisServer {
                    child,
                    port,
                    extra,
                    dir,
                };
            }
        }
        panic!("redis-server did not start");
    }

    /// Starts it again (after [`RedisServer::kill`], or kills it first) on the same port and
    /// directory, with the same arguments: empty unless it persists its data.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = spawn(self.port, self.dir.path(), &self.extra) {
                self.child = child;
                return;
            }
            // The port is not free again yet.
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (to test behaviour while Redis is down).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A faas store on this server; finished tasks expire after `result_ttl`.
    pub async fn store(&self, result_ttl: std::time::Duration) -> faas::store::Store {
        faas::store::Store::connect(&self.url(), result_ttl, Duration::from_secs(2))
            .await
            .expect("connect to test redis")
    }

    /// A synchronous connection for assertions.
    pub fn conn(&self) -> ::redis::Connection {
        ::redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to test redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis primary, one replica and three Sentinels on loopback ports, for failover tests.
pub struct Sentinels {
    pub nodes: Vec<RedisServer>,
    sentinels: Vec<Child>,
    pub sentinel_ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

/// Master name the Sentinels monitor.
pub const MASTER: &str = "faas";

/// Sentinel `down-after-milliseconds`, as in `tests/python/faas_stack.py`. Not 1000: at a
/// failover's end each Sentinel resets its record of the new primary and counts it down unless a
/// PONG arrives within down-after of that reset, though Sentinel paces reconnects at 1 s; with
/// the failover's "down" votes still valid (5 s), one late PONG started a second failover at
/// once. 3000 ms leaves two seconds of slack; a failover then takes about 4.4 s.
pub const DOWN_AFTER_MS: u32 = 3000;

impl Sentinels {
    /// Starts node 0 (primary), node 1 (its replica) and three Sentinels, and waits until the
    /// Sentinels know each other and the replica.
    pub fn start() -> Self {
        let no_delay = ["--appendonly", "no", "--repl-diskless-sync-delay", "0"];
        let primary = RedisServer::start_with(&no_delay);
        let p = primary.port.to_string();
        let mut replica_args = no_delay.to_vec();
        replica_args.extend(["--replicaof", "127.0.0.1", &p]);
        let replica = RedisServer::start_with(&replica_args);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sentinels = Vec::new();
        let mut sentinel_ports = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {p} 2\n\
                     sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n\
                     sentinel failover-timeout {MASTER} 5000\n",
                    dir.path().display()
                ),
            )
            .expect("sentinel.conf");
            let child = Command::new(bin())
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start sentinel");
            sentinels.push(child);
            sentinel_ports.push(port);
        }
        let s = Sentinels {
            nodes: vec![primary, replica],
            sentinels,
            sentinel_ports,
            _dir: dir,
        };
        s.wait_ready();
        s
    }

    /// `redis+sentinel://` URL of the set.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    fn sentinel(&self, port: u16) -> Option<::redis::Connection> {
        ::redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .and_then(|c| c.get_connection())
            .ok()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.sentinel_ports.iter().all(|p| {
                let Some(mut c) = self.sentinel(*p) else {
                    return false;
                };
                let info: Vec<String> = ::redis::cmd("SENTINEL")
                    .arg("MASTER")
                    .arg(MASTER)
                    .query(&mut c)
                    .unwrap_or_default();
                let get = |k: &str| {
                    info.chunks(2)
                        .find(|kv| kv[0] == k)
                        .map(|kv| kv[1].clone())
                        .unwrap_or_default()
                };
                get("num-other-sentinels") == "2" && get("num-slaves") == "1"
            });
            let synced = ::redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut self.nodes[1].conn())
                .is_ok_and(|i| i.contains("master_link_status:up"));
            if ready && synced {
                return;
            }
            assert!(Instant::now() < deadline, "Sentinels not ready in time");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port the Sentinels name as primary now.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinel_ports.iter().find_map(|p| {
            let mut c = self.sentinel(*p)?;
            let addr: Vec<String> = ::redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER)
                .query(&mut c)
                .ok()?;
            addr.get(1)?.parse().ok()
        })
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for c in &mut self.sentinels {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
