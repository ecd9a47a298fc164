//! systemd notifications of the real daemons: a `UnixDatagram` bound in a temp dir plays
//! systemd's `NOTIFY_SOCKET`; the binaries run against a private redis-server.

mod util;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faas::store::{Store, TaskStatus};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use util::python;
use util::redis::{free_port, RedisServer};
use uuid::Uuid;

/// `WATCHDOG_USEC` given to the daemons: they must ping every 500 ms.
const WATCHDOG_USEC: u64 = 1_000_000;
const WATCHDOG: Duration = Duration::from_micros(WATCHDOG_USEC);

/// Messages received on the fake notify socket, with arrival times.
type Log = Arc<Mutex<Vec<(Instant, String)>>>;

/// A fake systemd notify socket.
struct NotifySocket {
    path: PathBuf,
    log: Log,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        let log: Log = Arc::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            // Ends with the test process (the socket file goes with the temp dir).
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let now = Instant::now();
                let mut log = sink.lock().expect("log");
                for line in text.lines().filter(|l| !l.is_empty()) {
                    log.push((now, line.to_owned()));
                }
            }
        });
        NotifySocket {
            path,
            log,
            _dir: dir,
        }
    }

    fn lines(&self) -> Vec<(Instant, String)> {
        self.log.lock().expect("log").clone()
    }

    /// Waits for a message satisfying `pred`; returns its arrival time and text.
    fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (Instant, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(hit) = self.lines().into_iter().find(|(_, l)| pred(l)) {
                return hit;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {limit:?}; got {:?}",
                self.lines().iter().map(|(_, l)| l).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `WATCHDOG=1` messages that arrived between `from` and `to`.
    fn pings_between(&self, from: Instant, to: Instant) -> usize {
        self.lines()
            .iter()
            .filter(|(t, l)| *t >= from && *t < to && l == "WATCHDOG=1")
            .count()
    }

    /// The latest `STATUS=` line.
    fn last_status(&self) -> String {
        self.statuses().pop().unwrap_or_default()
    }

    fn has(&self, line: &str) -> bool {
        self.lines().iter().any(|(_, l)| l == line)
    }

    fn statuses(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter_map(|(_, l)| l.strip_prefix("STATUS=").map(str::to_owned))
            .collect()
    }

    /// Checks that `WATCHDOG=1` keeps coming at about half of `WATCHDOG_USEC`, watching for
    /// `window` from now.
    fn assert_watchdog(&self, window: Duration) {
        let from = Instant::now();
        std::thread::sleep(window);
        let pings: Vec<Instant> = self
            .lines()
            .into_iter()
            .filter(|(t, l)| *t >= from && l == "WATCHDOG=1")
            .map(|(t, _)| t)
            .collect();
        let expected = window.as_secs_f64() / (WATCHDOG.as_secs_f64() / 2.0);
        assert!(
            pings.len() as f64 >= expected * 0.5 && pings.len() as f64 <= expected * 1.5 + 1.0,
            "{} pings in {window:?}, expected about {expected:.0}",
            pings.len()
        );
        let mut gaps = pings.windows(2).map(|w| w[1] - w[0]);
        // systemd kills a unit whose pings are WATCHDOG_USEC apart; a loaded machine may delay a
        // ping a little, but never that much.
        assert!(
            gaps.all(|g| g < WATCHDOG),
            "a watchdog gap reached WATCHDOG_USEC"
        );
    }
}

/// A daemon process, killed if the test fails.
struct Daemon {
    child: Child,
    name: &'static str,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(bin: &str, name: &'static str, args: &[&str], notify: Option<&NotifySocket>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("RUST_LOG", "info")
            // Executors as the test's own user (the test interpreter may not be readable by another).
            .env("FAAS_DISPATCHER_EXECUTOR__USER", "")
            .env("FAAS_WORKER_EXECUTOR__USER", "")
            .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        if let Some(n) = notify {
            cmd.env("NOTIFY_SOCKET", &n.path);
        }
        let child = cmd.spawn().expect("spawn daemon");
        Daemon {
            child,
            name,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (within `limit`).
    fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop_cleanly(&mut self, notify: Option<&NotifySocket>) {
        let status = self.terminate(Duration::from_secs(15));
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            self.name,
            self.log()
        );
        if let Some(n) = notify {
            n.wait_for("STOPPING=1", Duration::from_secs(1), |l| l == "STOPPING=1");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const GATEWAY: &str = env!("CARGO_BIN_EXE_faas-gateway");
const DISPATCHER: &str = env!("CARGO_BIN_EXE_faas-dispatcher");
const WORKER: &str = env!("CARGO_BIN_EXE_faas-worker");
const LONG: Duration = Duration::from_secs(20);

async fn store(redis: &RedisServer) -> Store {
    redis.store(Duration::from_secs(600)).await
}

/// Submits `lambda: 6 * 7`.
async fn submit(store: &Store) -> Uuid {
    let f = store
        .register_function("f", &python::dill("lambda: 6 * 7"))
        .await
        .expect("register");
    store
        .create_task(&f, &python::dill("((), {})"))
        .await
        .expect("create")
        .expect("function exists")
}

async fn wait_completed(store: &Store, t: &Uuid, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let v = store.task_view(t).await.expect("view").expect("task");
        if v.status == TaskStatus::Completed {
            return start.elapsed();
        }
        assert!(!v.status.is_terminal(), "task ended {:?}", v.status);
        assert!(
            start.elapsed() < limit,
            "task still {:?} after {limit:?}",
            v.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn gateway_notifies_ready_watchdog_status_and_stopping() {
    let redis = RedisServer::start();
    let n = NotifySocket::bind();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut gw = Daemon::start(
        GATEWAY,
        "gateway",
        &["--listen", &listen, "--redis", &redis.url()],
        Some(&n),
    );
    n.wait_for("READY=1", LONG, |l| l == "READY=1");
    // At READY the port accepts connections and serves.
    assert!(http_get(port, "/healthz").starts_with("HTTP/1.1 200"));
    n.assert_watchdog(Duration::from_millis(2500));
    let (_, status) = n.wait_for("STATUS", Duration::from_secs(2), |l| {
        l.starts_with("STATUS=")
    });
    assert_eq!(status, format!("STATUS=listening on {listen}, redis ok"));
    gw.stop_cleanly(Some(&n));
    assert!(!n.lines().iter().any(|(_, l)| l.starts_with("ERRNO")));
}

#[test]
fn watchdog_usec_without_notify_socket_changes_nothing() {
    let redis = RedisServer::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut gw = Daemon::start(
        GATEWAY,
        "gateway",
        &["--listen", &listen, "--redis", &redis.url()],
        None,
    );
    let deadline = Instant::now() + LONG;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "gateway did not listen:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(http_get(port, "/healthz").starts_with("HTTP/1.1 200"));
    gw.stop_cleanly(None);
    assert!(!gw.log().contains("sd_notify failed"), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_dispatcher_notifies_ready_when_it_runs_tasks() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let n = NotifySocket::bind();
    let py = python::python();
    let name = format!("notify-{}", redis.port);
    let url = redis.url();
    let mut d = Daemon::start(
        DISPATCHER,
        "dispatcher",
        &[
            "-m", "local", "-w", "2", "--redis", &url, "--name", &name, "--python", &py,
        ],
        Some(&n),
    );
    n.wait_for("READY=1", LONG, |l| l == "READY=1");
    // Executors are warm at READY: a task completes at once.
    let t = submit(&store).await;
    let took = wait_completed(&store, &t, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(2),
        "first task took {took:?} after READY"
    );
    n.assert_watchdog(Duration::from_millis(2500));
    n.wait_for(
        "STATUS with the completed task",
        Duration::from_secs(3),
        |l| l == "STATUS=local: 2 processes, 0 busy, 1 completed, 0 failed, queue 0",
    );
    d.stop_cleanly(Some(&n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_dispatcher_and_worker_notify() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let py = python::python();
    let port = free_port();
    let endpoint = format!("tcp://127.0.0.1:{port}");

    // The worker starts first: warm, but not ready while no dispatcher answers.
    let wn = NotifySocket::bind();
    let mut w = Daemon::start(
        WORKER,
        "worker",
        &["push", "2", &endpoint, "--python", &py, "--id", "w-notify"],
        Some(&wn),
    );
    wn.wait_for("waiting STATUS", LONG, |l| {
        l == format!("STATUS=waiting for dispatcher {endpoint}: 0 running, 0 unacked")
    });
    wn.assert_watchdog(Duration::from_millis(2000));
    assert!(!wn.has("READY=1"), "worker READY before it registered");

    let dn = NotifySocket::bind();
    let name = format!("notify-{}", redis.port);
    let url = redis.url();
    let port_s = port.to_string();
    let mut d = Daemon::start(
        DISPATCHER,
        "dispatcher",
        &[
            "-m", "push", "-p", &port_s, "--redis", &url, "--name", &name,
        ],
        Some(&dn),
    );
    dn.wait_for("dispatcher READY=1", LONG, |l| l == "READY=1");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    wn.wait_for("worker READY=1", LONG, |l| l == "READY=1");
    wn.wait_for("registered STATUS", Duration::from_secs(3), |l| {
        l == format!("STATUS=push → {endpoint}: 2 slots, 0 running, 0 unacked")
    });
    dn.wait_for(
        "dispatcher STATUS with the worker",
        Duration::from_secs(3),
        |l| l == "STATUS=push: 1 workers, 2 slots, 2 free, 0 running, backlog 0",
    );
    let t = submit(&store).await;
    wait_completed(&store, &t, Duration::from_secs(5)).await;
    dn.assert_watchdog(Duration::from_millis(2000));
    wn.assert_watchdog(Duration::from_millis(2000));

    w.stop_cleanly(Some(&wn));
    dn.wait_for(
        "dispatcher STATUS without the worker",
        Duration::from_secs(5),
        |l| l.starts_with("STATUS=push: 0 workers"),
    );
    d.stop_cleanly(Some(&dn));
    assert!(dn.statuses().iter().all(|s| !s.contains('\n')));
}

/// The watchdog rule of docs/architecture.md, on a real dispatcher (and worker in push mode):
/// pings go on through a killed connection and a Redis outage (the reader waits for Redis), but
/// stop while the queue reader fails although Redis answers (here: XREADGROUP revoked by ACL),
/// and resume once it reads again. Was: pinging for ever while the reader was stuck.
async fn watchdog_tells_the_truth(mode: &str) {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes"]);
    let store = store(&redis).await;
    let n = NotifySocket::bind();
    let py = python::python();
    let name = format!("truth-{}", redis.port);
    let url = redis.url();
    let port = free_port().to_string();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let mut args = vec![
        "-m", mode, "--redis", &url, "--name", &name, "--python", &py,
    ];
    if mode == "local" {
        args.extend(["-w", "1"]);
    } else {
        args.extend(["-p", &port]);
    }
    let mut d = Daemon::start(DISPATCHER, "dispatcher", &args, Some(&n));
    let _worker = (mode != "local").then(|| {
        Daemon::start(
            WORKER,
            "worker",
            &[mode, "1", &endpoint, "--python", &py, "--id", "w-truth"],
            None,
        )
    });
    n.wait_for("READY=1", LONG, |l| l == "READY=1");
    let t = submit(&store).await;
    wait_completed(&store, &t, LONG).await;
    n.assert_watchdog(Duration::from_millis(1500));

    // Every connection killed: replaced at once, the pings never pause, tasks flow.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut redis.conn())
        .expect("CLIENT KILL");
    assert!(killed >= 2, "killed {killed}");
    let t = submit(&store).await;
    wait_completed(&store, &t, Duration::from_secs(10)).await;
    n.assert_watchdog(Duration::from_millis(1500));

    // The reader fails while Redis answers: the pings stop within the grace (5 s).
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-xreadgroup")
        .query(&mut redis.conn())
        .expect("ACL");
    let revoked = Instant::now();
    n.wait_for("a STATUS naming the failing reader", LONG, |l| {
        l.starts_with("STATUS=") && l.contains("queue reader failing") && l.contains("xreadgroup")
    });
    let grace = Duration::from_secs(5);
    std::thread::sleep(grace + Duration::from_secs(3));
    let silent_from = revoked + grace + Duration::from_secs(1);
    assert_eq!(
        n.pings_between(silent_from, Instant::now()),
        0,
        "the watchdog was pinged while the reader could not read:\n{}",
        d.log()
    );
    assert_eq!(
        d.log().matches("reading the queue failed").count(),
        1,
        "{}",
        d.log()
    );
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("+xreadgroup")
        .query(&mut redis.conn())
        .expect("ACL");
    let restored = Instant::now();
    while n.pings_between(restored, Instant::now()) == 0 {
        assert!(
            restored.elapsed() < Duration::from_secs(5),
            "no ping after the reader reads again:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        d.log().contains("reading the queue works again"),
        "{}",
        d.log()
    );

    // Redis down: the reader provably waits for Redis, the pings go on, the status says so.
    redis.kill();
    n.wait_for("a STATUS saying Redis is unreachable", LONG, |l| {
        l.starts_with("STATUS=") && l.contains("redis unreachable for")
    });
    n.assert_watchdog(Duration::from_millis(2500));
    redis.restart();
    let back = Instant::now();
    let t = submit(&store).await;
    let took = wait_completed(&store, &t, Duration::from_secs(10)).await;
    eprintln!(
        "{mode}: a task submitted when Redis answered again completed {:?} later",
        back.elapsed().max(took)
    );
    n.assert_watchdog(Duration::from_millis(1500));
    assert!(
        !n.last_status().contains("unreachable"),
        "{}",
        n.last_status()
    );
    let log = d.log();
    assert_eq!(log.matches("Redis unreachable;").count(), 1, "{log}");
    assert_eq!(log.matches("Redis reachable again").count(), 1, "{log}");
    d.stop_cleanly(Some(&n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_dispatcher_watchdog_tells_the_truth() {
    watchdog_tells_the_truth("local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_dispatcher_watchdog_tells_the_truth() {
    watchdog_tells_the_truth("push").await;
}
