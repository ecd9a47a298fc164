//! The transport guard against hostile peers on real TCP sockets: a raw peer that announces a
//! 2^62-byte frame, oversized frames and messages, and broken greetings, sent to a running
//! dispatcher (its library run loop) and by a fake dispatcher to a running worker. Without the
//! guard the zeromq crate aborts the whole test process ("memory allocation failed").

mod util;

use std::time::Duration;

use bytes::Bytes;
use faas::config::{DispatcherConfig, Mode, WorkerMode};
use faas::protocol::{decode, encode, Decoded, Header, ResultMeta, TaskMeta, TaskRef, WorkerInfo};
use faas::store::{Store, TaskStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};
use util::python;
use util::redis::{free_port, RedisServer};
use util::zmq::FakeDispatcher;
use uuid::Uuid;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend};

/// Bound for anything expected to happen "soon" (two shared cores, Python start-ups).
const T: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------ a raw ZMTP peer

/// A valid ZMTP 3.0 greeting (NULL mechanism).
fn greeting(as_server: bool) -> Vec<u8> {
    let mut g = vec![0u8; 64];
    g[0] = 0xFF;
    g[9] = 0x7F;
    g[10] = 3;
    g[12..16].copy_from_slice(b"NULL");
    g[32] = u8::from(as_server);
    g
}

/// A long-frame header announcing `len` bytes (flags: MORE = 1, COMMAND = 4).
fn long_header(flags: u8, len: u64) -> Vec<u8> {
    let mut h = vec![flags | 0b010];
    h.extend_from_slice(&len.to_be_bytes());
    h
}

/// One frame, short or long form as its length needs.
fn frame(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = if body.len() > 255 {
        long_header(flags, body.len() as u64)
    } else {
        vec![flags, body.len() as u8]
    };
    f.extend_from_slice(body);
    f
}

/// The READY command announcing `socket_type`.
fn ready(socket_type: &str) -> Vec<u8> {
    let mut body = vec![5u8];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
    body.extend_from_slice(socket_type.as_bytes());
    frame(0b100, &body)
}

/// The 73 bytes that used to abort a daemon: a greeting and a 2^62-byte frame header.
fn killer() -> Vec<u8> {
    let mut k = greeting(false);
    k.extend(long_header(0, 1 << 62));
    assert_eq!(k.len(), 73);
    k
}

/// A peer speaking ZMTP by hand over a TCP stream.
struct Raw(TcpStream);

impl Raw {
    async fn write(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.expect("write");
    }

    /// Greeting and READY both ways, as a DEALER.
    async fn handshake(&mut self) {
        self.write(&greeting(false)).await;
        self.write(&ready("DEALER")).await;
        let mut g = [0u8; 64];
        timeout(T, self.0.read_exact(&mut g))
            .await
            .expect("greeting in time")
            .expect("greeting");
        assert_eq!((g[0], g[9], g[10]), (0xFF, 0x7F, 3), "peer greeting");
    }

    async fn send(&mut self, frames: Vec<Bytes>) {
        let last = frames.len() - 1;
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            out.extend(frame(u8::from(i != last), f));
        }
        self.write(&out).await;
    }

    /// The next message (commands such as READY skipped).
    async fn recv(&mut self) -> Vec<Bytes> {
        let mut msg = Vec::new();
        loop {
            let mut flags = [0u8; 1];
            self.0.read_exact(&mut flags).await.expect("flags");
            let len = if flags[0] & 0b010 != 0 {
                let mut l = [0u8; 8];
                self.0.read_exact(&mut l).await.expect("length");
                u64::from_be_bytes(l) as usize
            } else {
                let mut l = [0u8; 1];
                self.0.read_exact(&mut l).await.expect("length");
                usize::from(l[0])
            };
            let mut body = vec![0u8; len];
            self.0.read_exact(&mut body).await.expect("body");
            if flags[0] & 0b100 != 0 {
                continue;
            }
            msg.push(Bytes::from(body));
            if flags[0] & 0b001 == 0 {
                return msg;
            }
        }
    }

    /// Waits until the other side closes the connection (reading and discarding).
    async fn closed_by_peer(&mut self) {
        let mut buf = [0u8; 4096];
        let closed = timeout(T, async {
            loop {
                match self.0.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the connection stayed open");
    }
}

// ------------------------------------------------------------------ dispatcher side

struct Env {
    redis: RedisServer,
    store: Store,
    port: u16,
    fn_pickle: Vec<u8>,
    args_pickle: Vec<u8>,
    result_pickle: Bytes,
}

impl Env {
    async fn new() -> Self {
        util::init_tracing();
        let redis = RedisServer::start();
        let store = redis.store(Duration::from_secs(3600)).await;
        let mut p = python::pickles("", &["lambda: 1", "((), {})", "'done'"], None);
        Env {
            result_pickle: Bytes::from(p.remove(2)),
            args_pickle: p.remove(1),
            fn_pickle: p.remove(0),
            redis,
            store,
            port: free_port(),
        }
    }

    /// A push dispatcher on the library's run loop.
    fn spawn(
        &self,
        max_message_bytes: u64,
    ) -> (
        faas::shutdown::ShutdownTrigger,
        tokio::task::JoinHandle<Result<(), faas::dispatcher::DispatchError>>,
    ) {
        let cfg = DispatcherConfig {
            mode: Mode::Push,
            redis: self.redis.url(),
            name: format!("guard-{}", self.redis.port),
            port: self.port,
            heartbeat_interval_ms: 100,
            heartbeat_misses: 50,
            drain_timeout_secs: 2.0,
            max_message_bytes,
            ..DispatcherConfig::default()
        };
        let (trigger, shutdown) = faas::shutdown::channel();
        (trigger, tokio::spawn(faas::dispatcher::run(cfg, shutdown)))
    }

    async fn submit(&self) -> Uuid {
        let f = self
            .store
            .register_function("f", &self.fn_pickle)
            .await
            .expect("register");
        self.store
            .create_task(&f, &self.args_pickle)
            .await
            .expect("create")
            .expect("function exists")
    }

    async fn wait_completed(&self, t: &Uuid) {
        let until = Instant::now() + T;
        loop {
            let s = self.store.task_status(t).await.expect("status");
            if s == Some(TaskStatus::Completed) {
                return;
            }
            assert!(Instant::now() < until, "task {t} is {s:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Raw connections get through once the dispatcher listens.
    async fn raw(&self) -> Raw {
        let until = Instant::now() + T;
        loop {
            match TcpStream::connect(("127.0.0.1", self.port)).await {
                Ok(s) => return Raw(s),
                Err(e) if Instant::now() < until => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("dispatcher not listening: {e}"),
            }
        }
    }
}

fn hello(id: &str) -> Header {
    Header::Hello {
        worker: WorkerInfo {
            id: id.into(),
            slots: 1,
            capacity: None,
            host: "test".into(),
            pid: std::process::id(),
            version: "test".into(),
            protocol: faas::protocol::VERSION,
            runtime: Default::default(),
        },
        running: vec![],
    }
}

async fn recv_dealer(s: &mut DealerSocket) -> Decoded {
    let m = timeout(T, s.recv())
        .await
        .expect("message in time")
        .expect("recv");
    decode(m.into_vec()).expect("decode")
}

/// A well-behaved push worker (a real zeromq DEALER) registers, gets a task and reports it;
/// the task ends COMPLETED.
async fn a_real_worker_runs_a_task(env: &Env, id: &str) {
    let mut w = DealerSocket::new();
    timeout(T, w.connect(&format!("tcp://127.0.0.1:{}", env.port)))
        .await
        .expect("connect in time")
        .expect("connect");
    w.send(encode(&[], &hello(id), vec![])).await.expect("send");
    assert!(matches!(
        recv_dealer(&mut w).await.header,
        Header::Welcome { .. }
    ));
    let t = env.submit().await;
    let tasks = loop {
        if let Header::Tasks { tasks, .. } = recv_dealer(&mut w).await.header {
            break tasks;
        }
    };
    assert_eq!(tasks[0].task.task_id, t);
    let report = Header::Report {
        worker_id: id.into(),
        results: vec![ResultMeta {
            task: tasks[0].task,
            ok: true,
            cause: String::new(),
        }],
    };
    w.send(encode(&[], &report, vec![env.result_pickle.clone()]))
        .await
        .expect("send");
    env.wait_completed(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_survives_a_2_62_frame_header_and_broken_greetings() {
    let env = Env::new().await;
    let (stop, handle) = env.spawn(faas::config::DEFAULT_MAX_MESSAGE_BYTES);
    // The 73 bytes, alone and after a full handshake.
    let mut k = env.raw().await;
    k.write(&killer()).await;
    k.closed_by_peer().await;
    let mut k = env.raw().await;
    k.handshake().await;
    k.write(&long_header(0, 1 << 62)).await;
    k.closed_by_peer().await;
    // Not ZMTP, another major version, another mechanism.
    for bad in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        {
            let mut g = greeting(false);
            g[10] = 2;
            g
        },
        {
            let mut g = greeting(false);
            g[12..17].copy_from_slice(b"CURVE");
            g
        },
    ] {
        let mut b = env.raw().await;
        b.write(&bad).await;
        b.closed_by_peer().await;
    }
    assert!(!handle.is_finished(), "the dispatcher is still running");
    a_real_worker_runs_a_task(&env, "w1").await;
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_and_messages_drop_only_their_connection() {
    const MAX: u64 = 4096;
    let env = Env::new().await;
    let (stop, handle) = env.spawn(MAX);
    // A peer whose frame is exactly at the limit stays connected: its next message (a hello)
    // is answered.
    let mut at_limit = env.raw().await;
    at_limit.handshake().await;
    at_limit
        .send(vec![Bytes::from(vec![b'x'; MAX as usize])])
        .await;
    at_limit
        .send(encode(&[], &hello("at-limit"), vec![]).into_vec())
        .await;
    let answer = timeout(T, at_limit.recv()).await.expect("answer in time");
    assert!(matches!(
        decode(answer).expect("decode").header,
        Header::Welcome { .. }
    ));
    // One byte more: dropped, even with the body sent in full.
    let mut over = env.raw().await;
    over.handshake().await;
    let mut f = long_header(0, MAX + 1);
    f.extend(vec![b'x'; MAX as usize + 1]);
    over.write(&f).await;
    over.closed_by_peer().await;
    // Frames within the limit that add up past the message limit (16 × MAX): dropped.
    let mut sum = env.raw().await;
    sum.handshake().await;
    for _ in 0..17 {
        let mut f = long_header(0b001, MAX);
        f.extend(vec![b'y'; MAX as usize]);
        sum.write(&f).await;
    }
    sum.closed_by_peer().await;
    // The at-limit peer and a real worker still work.
    at_limit
        .send(
            encode(
                &[],
                &Header::Bye {
                    worker_id: "at-limit".into(),
                },
                vec![],
            )
            .into_vec(),
        )
        .await;
    a_real_worker_runs_a_task(&env, "w2").await;
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_stalled_greetings_are_dropped_after_the_greeting_timeout() {
    let env = Env::new().await;
    let (stop, handle) = env.spawn(faas::config::DEFAULT_MAX_MESSAGE_BYTES);
    let mut silent = env.raw().await;
    let mut stalled = env.raw().await;
    stalled.write(&greeting(false)[..32]).await;
    let started = Instant::now();
    // `closed_by_peer` waits up to T (10 s) itself; the guard allows 10 s for a greeting.
    tokio::time::sleep(faas::protocol::guard::GREETING_TIMEOUT / 2).await;
    silent.closed_by_peer().await;
    stalled.closed_by_peer().await;
    assert!(
        started.elapsed() >= faas::protocol::guard::GREETING_TIMEOUT,
        "dropped before the greeting timeout"
    );
    a_real_worker_runs_a_task(&env, "w3").await;
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
}

// ------------------------------------------------------------------ worker side

/// A push worker in this process (an abort in it would end the test binary).
fn start_worker(
    port: u16,
) -> (
    faas::shutdown::ShutdownTrigger,
    tokio::task::JoinHandle<Result<(), faas::worker::WorkerError>>,
) {
    util::init_tracing();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let cfg = util::worker::config(WorkerMode::Push, 1, endpoint, "guard", 100);
    let (trigger, shutdown) = faas::shutdown::channel();
    (trigger, tokio::spawn(faas::worker::run(cfg, shutdown)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_survives_a_hostile_dispatcher_and_registers_with_a_real_one() {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, handle) = start_worker(port);
    let accept = || async {
        timeout(Duration::from_secs(40), listener.accept())
            .await
            .expect("the worker (re)connects")
            .expect("accept")
            .0
    };
    // The 73 bytes, right away and after the worker's greeting.
    let mut k = Raw(accept().await);
    k.write(&killer()).await;
    k.closed_by_peer().await;
    let mut k = Raw(accept().await);
    let mut g = [0u8; 64];
    timeout(T, k.0.read_exact(&mut g))
        .await
        .expect("worker greeting in time")
        .expect("worker greeting");
    k.write(&greeting(true)).await;
    k.write(&ready("ROUTER")).await;
    k.write(&long_header(0, 1 << 62)).await;
    k.closed_by_peer().await;
    // A frame just over the default limit.
    let mut k = Raw(accept().await);
    k.write(&greeting(true)).await;
    k.write(&long_header(0, faas::config::DEFAULT_MAX_MESSAGE_BYTES + 1))
        .await;
    k.closed_by_peer().await;
    // Garbage instead of a greeting.
    let mut k = Raw(accept().await);
    k.write(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    k.closed_by_peer().await;
    // Still retrying.
    drop(accept().await);
    drop(listener);
    assert!(!handle.is_finished(), "the worker is still running");

    // A real (fake) dispatcher on the same port: the worker registers and runs a task.
    let mut d = FakeDispatcher::bind(port).await;
    let (hello, _) = d.recv_kind("hello", Duration::from_secs(30)).await;
    d.reply(
        &hello,
        Header::Welcome {
            dispatcher: "fake".into(),
            heartbeat_ms: 100,
            heartbeat_misses: 3,
        },
        vec![],
    )
    .await;
    d.ping_every(&hello, Duration::from_millis(100));
    let mut p = python::pickles("", &["lambda x: x * 2", "((21,), {})"], None);
    let args = Bytes::from(p.remove(1));
    let func = Bytes::from(p.remove(0));
    let task = TaskRef {
        task_id: Uuid::new_v4(),
        attempt: 1,
    };
    let tasks = Header::Tasks {
        tasks: vec![TaskMeta {
            task,
            function_id: Uuid::new_v4(),
            timeout_ms: None,
        }],
        acks: vec![],
    };
    d.reply(&hello, tasks, vec![func, args]).await;
    let (report, _) = d.recv_kind("report", T).await;
    let Header::Report { results, .. } = &report.header else {
        unreachable!()
    };
    assert_eq!(results[0].task, task);
    assert!(results[0].ok, "{}", results[0].cause);
    assert_eq!(python::describe(&report.blobs[0]), "42");
    d.reply(&hello, Header::Ack { acks: vec![task] }, vec![])
        .await;
    stop.trigger();
    timeout(T, handle)
        .await
        .expect("worker stops in time")
        .expect("join")
        .expect("clean stop");
}

/// The faas-worker binary (a separate process, configured like a deployment) fed the 73 bytes
/// twice: it stays up, keeps reconnecting, registers with a dispatcher afterwards and stops
/// cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_process_survives_the_73_bytes() {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config_dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_faas-worker"))
        .env("FAAS_CONFIG_DIR", config_dir.path())
        .env("FAAS_WORKER_MODE", "push")
        .env("FAAS_WORKER_PROCESSES", "1")
        .env("FAAS_WORKER_DISPATCHER", format!("tcp://127.0.0.1:{port}"))
        .env("FAAS_WORKER_EXECUTOR__USER", "")
        .env("FAAS_WORKER_EXECUTOR__PYTHON", python::python())
        .spawn()
        .expect("start faas-worker");
    for _ in 0..2 {
        let (s, _) = timeout(Duration::from_secs(40), listener.accept())
            .await
            .expect("the worker (re)connects")
            .expect("accept");
        let mut k = Raw(s);
        k.write(&killer()).await;
        k.closed_by_peer().await;
    }
    drop(listener);
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "faas-worker died"
    );
    let mut d = FakeDispatcher::bind(port).await;
    let (hello, _) = d.recv_kind("hello", Duration::from_secs(30)).await;
    assert_eq!(hello.kind(), "hello");
    // SIGTERM: a clean stop (exit 0), as a live worker does.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "faas-worker exited with {status}");
}
