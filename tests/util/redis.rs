//! A private `redis-server` on a free port, killed when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server owned by one test.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl RedisServer {
    /// Starts redis-server (binary from `FAAS_TEST_REDIS_SERVER`, default `redis-server`).
    pub fn start() -> Self {
        let bin = std::env::var("FAAS_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let dir = tempfile::tempdir().expect("tempdir");
        for _ in 0..5 {
            let port = free_port();
            let mut child = spawn(&bin, port, dir.path());
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return RedisServer {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts a new, empty server on the same port after [`Self::kill`] (a Redis restart
    /// without persistence).
    pub fn restart(&mut self) {
        let bin = std::env::var("FAAS_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.child = spawn(&bin, self.port, self._dir.path());
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return;
                }
                if let Ok(Some(_)) = self.child.try_wait() {
                    break; // the port is not free again yet
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on {}",
                self.port
            );
        }
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

fn spawn(bin: &str, port: u16, dir: &std::path::Path) -> Child {
    Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start redis-server (is it installed?)")
}
