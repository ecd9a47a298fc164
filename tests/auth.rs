//! Worker authentication and identity binding against a real dispatcher over real ZeroMQ: fake
//! workers without the token, with a wrong proof, with the right one; a peer speaking for
//! another worker on its own connection; the slot cap; real faas-worker binaries with a token.

mod util;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use faas::config::{DispatcherConfig, Mode};
use faas::protocol::auth::{parse_nonce, Token};
use faas::protocol::{decode, encode, Decoded, Header, ResultMeta, TaskRef, WorkerInfo, VERSION};
use faas::store::TaskStatus;
use util::python;
use util::remote::{connect_dealer, send};
use uuid::Uuid;
use zeromq::{DealerSocket, ReqSocket, Socket, SocketRecv, SocketSend};

const TOKEN: &str = "correct-horse-battery-staple-0123";

/// The shared remote test set-up plus a token file.
struct Env {
    base: util::remote::Env,
    dir: tempfile::TempDir,
}

impl std::ops::Deref for Env {
    type Target = util::remote::Env;
    fn deref(&self) -> &Self::Target {
        &self.base
    }
}

impl Env {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).expect("token file");
        Env {
            base: util::remote::Env::new().await,
            dir,
        }
    }

    fn token_path(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    fn config(&self, mode: Mode, with_token: bool) -> DispatcherConfig {
        DispatcherConfig {
            drain_timeout_secs: 1.0,
            token_file: with_token.then(|| self.token_path()),
            max_worker_slots: 64,
            ..self.base.config(mode, 50)
        }
    }

    async fn status(&self, t: &Uuid) -> Option<TaskStatus> {
        self.store.task_status(t).await.expect("status")
    }
}

fn hello(id: &str, slots: u32) -> Header {
    Header::Hello {
        worker: WorkerInfo {
            id: id.into(),
            slots,
            capacity: None,
            host: "test".into(),
            pid: std::process::id(),
            version: "test".into(),
            protocol: VERSION,
            runtime: Default::default(),
        },
        running: vec![],
    }
}

fn heartbeat(id: &str) -> Header {
    Header::Heartbeat {
        worker_id: id.into(),
        free: 1,
        running: vec![],
    }
}

/// The next message other than ping/ack within `limit`, if any.
async fn next(s: &mut DealerSocket, limit: Duration) -> Option<Decoded> {
    let until = tokio::time::Instant::now() + limit;
    loop {
        let m = tokio::time::timeout_at(until, s.recv()).await.ok()?;
        let d = decode(m.expect("recv").into_vec()).expect("decode");
        if !matches!(d.header, Header::Ping | Header::Ack { .. }) {
            return Some(d);
        }
    }
}

async fn must(s: &mut DealerSocket) -> Header {
    next(s, Duration::from_secs(5))
        .await
        .expect("a message within 5 s")
        .header
}

fn token() -> Token {
    Token::parse(std::path::Path::new("/t"), TOKEN.as_bytes()).expect("token")
}

fn proof_for(challenge: &Header, id: &str, with: &Token) -> Header {
    let Header::Challenge { nonce } = challenge else {
        panic!("expected a challenge, got {challenge:?}");
    };
    Header::Auth {
        worker_id: id.into(),
        proof: with.prove(&parse_nonce(nonce).expect("nonce"), id),
    }
}

/// Registers `id` on a new push connection, proving the token.
async fn authenticated_push(env: &Env, id: &str, slots: u32) -> DealerSocket {
    let mut s = connect_dealer(env).await;
    send(&mut s, &hello(id, slots), vec![]).await;
    let c = must(&mut s).await;
    send(&mut s, &proof_for(&c, id, &token()), vec![]).await;
    assert!(matches!(must(&mut s).await, Header::Welcome { .. }));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_peer_without_the_token_gets_nothing_and_stores_nothing() {
    let env = Env::new().await;
    let running = env.spawn(env.config(Mode::Push, true));
    let t = env.submit().await;
    let mut s = connect_dealer(&env).await;
    // hello, heartbeat, a forged report: each is only answered with a challenge.
    send(&mut s, &hello("intruder", 4), vec![]).await;
    assert!(matches!(must(&mut s).await, Header::Challenge { .. }));
    send(&mut s, &heartbeat("intruder"), vec![]).await;
    assert!(matches!(must(&mut s).await, Header::Challenge { .. }));
    let forged = TaskRef {
        task_id: t,
        attempt: 1,
    };
    let (h, blobs) = env.ok_report("intruder", forged);
    send(&mut s, &h, blobs).await;
    assert!(matches!(must(&mut s).await, Header::Challenge { .. }));
    // Nothing else comes: no welcome, no task; the task stays QUEUED.
    let extra = next(&mut s, Duration::from_millis(800)).await;
    assert!(extra.is_none(), "{:?}", extra.map(|d| d.header));
    assert_eq!(env.status(&t).await, Some(TaskStatus::Queued));
    // An `auth` without the token (a guessed proof) is refused.
    send(&mut s, &hello("intruder", 4), vec![]).await;
    let c = must(&mut s).await;
    let wrong = Token::parse(std::path::Path::new("/t"), b"not-the-right-token-at-all").expect("t");
    send(&mut s, &proof_for(&c, "intruder", &wrong), vec![]).await;
    let Header::Refused { reason } = must(&mut s).await else {
        panic!("expected refused")
    };
    assert!(reason.contains("authentication failed"), "{reason}");
    let extra = next(&mut s, Duration::from_millis(500)).await;
    assert!(extra.is_none(), "{:?}", extra.map(|d| d.header));
    assert_eq!(env.status(&t).await, Some(TaskStatus::Queued));
    // A worker with the token gets the task.
    let mut w = authenticated_push(&env, "w1", 1).await;
    let Header::Tasks { tasks, .. } = must(&mut w).await else {
        panic!("expected tasks")
    };
    assert_eq!(tasks[0].task.task_id, t);
    util::dispatch::stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_peer_without_the_token_gets_nothing() {
    let env = Env::new().await;
    let running = env.spawn(env.config(Mode::Pull, true));
    let t = env.submit().await;
    let mut req = ReqSocket::new();
    req.connect(&env.endpoint()).await.expect("connect");
    let fetch = |id: &str| Header::Fetch {
        worker_id: id.into(),
        free: 4,
        results: vec![],
        running: vec![],
    };
    for h in [hello("intruder", 4), fetch("intruder")] {
        let answer = request(&mut req, h).await;
        assert!(matches!(answer, Header::Challenge { .. }), "{answer:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.status(&t).await, Some(TaskStatus::Queued));
    // The proof, on the same REQ socket, releases the held message: only with the token.
    let c = request(&mut req, hello("p1", 1)).await;
    let answer = request(&mut req, proof_for(&c, "p1", &token())).await;
    assert!(matches!(answer, Header::Welcome { .. }), "{answer:?}");
    let Header::Tasks { tasks, .. } = request(&mut req, fetch("p1")).await else {
        panic!("expected tasks")
    };
    assert_eq!(tasks[0].task.task_id, t);
    util::dispatch::stop(running).await;
}

/// One REQ exchange: sends `h`, returns the answer's header.
async fn request(req: &mut ReqSocket, h: Header) -> Header {
    req.send(encode(&[], &h, vec![])).await.expect("send");
    let m = tokio::time::timeout(Duration::from_secs(5), req.recv())
        .await
        .expect("an answer within 5 s")
        .expect("recv");
    decode(m.into_vec()).expect("decode").header
}

/// w1 registers and gets a task; an intruder on its own connection (registered as w2, with the
/// token when there is one) heartbeats and reports as w1: ignored, the task is w1's.
async fn other_workers_id_on_another_connection_is_ignored(with_token: bool) {
    let env = Env::new().await;
    let running = env.spawn(env.config(Mode::Push, with_token));
    let register = |id: &'static str, slots: u32| {
        let env = &env;
        async move {
            if with_token {
                authenticated_push(env, id, slots).await
            } else {
                let mut s = connect_dealer(env).await;
                send(&mut s, &hello(id, slots), vec![]).await;
                assert!(matches!(must(&mut s).await, Header::Welcome { .. }));
                s
            }
        }
    };
    let mut w1 = register("w1", 1).await;
    let t = env.submit().await;
    let Header::Tasks { tasks, .. } = must(&mut w1).await else {
        panic!("expected tasks")
    };
    let run = tasks[0].task;
    // No slots of its own: any task it got would be w1's traffic redirected.
    let mut intruder = register("w2", 0).await;
    send(&mut intruder, &heartbeat("w1"), vec![]).await;
    let (h, blobs) = env.ok_report("w1", run);
    send(&mut intruder, &h, blobs).await;
    // Also from a fresh connection: asked to register (push), not acted on.
    let mut fresh = connect_dealer(&env).await;
    let (h, blobs) = env.ok_report("w1", run);
    send(&mut fresh, &h, blobs).await;
    let answer = must(&mut fresh).await;
    assert!(
        matches!(answer, Header::Unknown | Header::Challenge { .. }),
        "{answer:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.status(&t).await, Some(TaskStatus::Running));
    // The intruder's heartbeat did not redirect w1's traffic: the next task goes to w1.
    let real = Header::Report {
        worker_id: "w1".into(),
        results: vec![ResultMeta {
            task: run,
            ok: true,
            cause: String::new(),
        }],
    };
    let result = Bytes::from(python::dill("'from w1'"));
    send(&mut w1, &real, vec![result]).await;
    env.wait_status(&t, TaskStatus::Completed, Duration::from_secs(5))
        .await;
    let v = env.store.task_view(&t).await.expect("view").expect("task");
    assert_eq!(python::describe(&v.result.expect("result")), "'from w1'");
    let t2 = env.submit().await;
    let Header::Tasks { tasks, .. } = must(&mut w1).await else {
        panic!("expected tasks")
    };
    assert_eq!(tasks[0].task.task_id, t2);
    let got = next(&mut intruder, Duration::from_millis(300)).await;
    assert!(got.is_none(), "{:?}", got.map(|d| d.header));
    util::dispatch::stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_workers_id_is_ignored_without_token() {
    other_workers_id_on_another_connection_is_ignored(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_workers_id_is_ignored_with_token() {
    other_workers_id_on_another_connection_is_ignored(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_with_too_many_slots_is_refused() {
    let env = Env::new().await;
    let running = env.spawn(env.config(Mode::Push, false));
    let t = env.submit().await;
    let mut s = connect_dealer(&env).await;
    send(&mut s, &hello("greedy", u32::MAX), vec![]).await;
    let Header::Refused { reason } = must(&mut s).await else {
        panic!("expected refused")
    };
    assert!(
        reason.contains("4294967295") && reason.contains("max_worker_slots"),
        "{reason}"
    );
    let extra = next(&mut s, Duration::from_millis(500)).await;
    assert!(extra.is_none(), "{:?}", extra.map(|d| d.header));
    assert_eq!(env.status(&t).await, Some(TaskStatus::Queued));
    util::dispatch::stop(running).await;
}

/// A faas-worker process, killed when dropped.
struct WorkerProc(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker_binary(env: &Env, mode: &str, token: Option<&PathBuf>) -> WorkerProc {
    let config_dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faas-worker"));
    cmd.args([mode, "1", &env.endpoint(), "--python", &python::python()])
        .env("FAAS_CONFIG_DIR", config_dir.path())
        .env("FAAS_WORKER_EXECUTOR__USER", "")
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Only the refused worker's few lines are read; a long-running one must not block.
        .stderr(if token.is_none() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    if let Some(t) = token {
        cmd.arg("--token-file").arg(t);
    }
    WorkerProc(cmd.spawn().expect("spawn faas-worker"), config_dir)
}

async fn real_worker_with_token_runs_tasks(mode: Mode) {
    let env = Env::new().await;
    let running = env.spawn(env.config(mode, true));
    let mut w = worker_binary(&env, mode.as_str(), Some(&env.token_path()));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(env.submit().await);
    }
    for t in &tasks {
        env.wait_status(t, TaskStatus::Completed, Duration::from_secs(30))
            .await;
        let v = env.store.task_view(t).await.expect("view").expect("task");
        assert_eq!(python::describe(&v.result.expect("result")), "42");
    }
    // A worker without the token stops with an error and runs nothing.
    let mut bad = worker_binary(&env, mode.as_str(), None);
    let status = tokio::task::spawn_blocking(move || {
        let s = bad.0.wait().expect("wait");
        let mut err = String::new();
        if let Some(mut e) = bad.0.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        (s, err)
    });
    let (code, err) = tokio::time::timeout(Duration::from_secs(20), status)
        .await
        .expect("tokenless worker exits")
        .expect("join");
    assert_eq!(code.code(), Some(1), "{err}");
    assert!(err.contains("token_file"), "{err}");
    assert!(
        w.0.try_wait().expect("try_wait").is_none(),
        "worker still runs"
    );
    // The dispatcher restarts: the worker proves itself again on its new connections.
    util::dispatch::stop(running).await;
    let running = env.spawn(env.config(mode, true));
    let t = env.submit().await;
    env.wait_status(&t, TaskStatus::Completed, Duration::from_secs(30))
        .await;
    util::dispatch::stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_pull_worker_with_token_runs_tasks() {
    real_worker_with_token_runs_tasks(Mode::Pull).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_push_worker_with_token_runs_tasks() {
    real_worker_with_token_runs_tasks(Mode::Push).await;
}
