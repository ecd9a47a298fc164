//! Size limits end tasks FAILED, never in a retry loop: arguments over `max_payload_bytes`
//! (PayloadTooLarge), results over `max_result_bytes` in local mode, on a worker, or reported by
//! a worker with a higher limit (ResultTooLarge), and results Redis itself refuses
//! (`proto-max-bulk-len`). Real redis-server, real executors, real ZeroMQ.

mod util;

use std::time::Duration;

use bytes::Bytes;
use faas::config::{DispatcherConfig, Mode, WorkerConfig, WorkerMode};
use faas::protocol::{decode, encode, Header, ResultMeta, WorkerInfo, VERSION};
use faas::store::{Store, TaskStatus};
use util::python;
use util::redis::{free_port, RedisServer};
use uuid::Uuid;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend};

struct Env {
    redis: RedisServer,
    store: Store,
}

impl Env {
    async fn new(redis_args: &[&str]) -> Self {
        let mut args = vec!["--appendonly", "no"];
        args.extend_from_slice(redis_args);
        let redis = RedisServer::start_with(&args);
        let store = redis.store(Duration::from_secs(3600)).await;
        Env { redis, store }
    }

    fn config(&self, mode: Mode) -> DispatcherConfig {
        let mut cfg = DispatcherConfig {
            mode,
            redis: self.redis.url(),
            name: format!("test-{}", self.redis.port),
            port: free_port(),
            drain_timeout_secs: 1.0,
            ..DispatcherConfig::default()
        };
        cfg.local.processes = 1;
        cfg.executor.python = python::python();
        cfg.executor.user = String::new();
        cfg
    }

    fn spawn(&self, cfg: DispatcherConfig) -> util::dispatch::Running {
        util::dispatch::spawn(cfg)
    }

    async fn submit(&self, fn_expr: &str, args: &[u8]) -> Uuid {
        util::dispatch::submit(&self.store, &python::dill(fn_expr), args).await
    }

    /// Waits for `t` to end; its status and the `describe`d result.
    async fn wait(&self, t: &Uuid) -> (TaskStatus, String) {
        util::dispatch::wait_done(&self.store, t, Duration::from_secs(30)).await
    }

    /// The task's attempt count: 1 means it was never retried.
    async fn attempts(&self, t: &Uuid) -> u32 {
        use redis::AsyncCommands;
        let mut c = self.store.conn();
        let a: Option<u32> = c
            .hget(faas::store::keys::task(t), "attempts")
            .await
            .expect("hget");
        a.unwrap_or(0)
    }
}

fn args_of(expr: &str) -> Vec<u8> {
    python::dill(expr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_fails_oversized_arguments_and_results() {
    let env = Env::new(&[]).await;
    let mut cfg = env.config(Mode::Local);
    cfg.max_payload_bytes = 10_000;
    cfg.max_result_bytes = 10_000;
    cfg.max_retries = 3;
    let d = env.spawn(cfg);
    let big_args = env
        .submit("lambda s: len(s)", &args_of("(('x' * 20000,), {})"))
        .await;
    let big_result = env
        .submit("lambda n: 'y' * n", &args_of("((50000,), {})"))
        .await;
    let fine = env
        .submit("lambda n: 'y' * n", &args_of("((100,), {})"))
        .await;
    let (status, text) = env.wait(&big_args).await;
    assert_eq!(status, TaskStatus::Failed);
    assert!(
        text.starts_with("PayloadTooLarge: ") && text.contains("max_payload_bytes"),
        "{text}"
    );
    let (status, text) = env.wait(&big_result).await;
    assert_eq!(status, TaskStatus::Failed);
    assert!(
        text.starts_with("ResultTooLarge: ") && text.contains("max_result_bytes"),
        "{text}"
    );
    // Terminal at once, whatever max_retries says.
    assert_eq!(env.attempts(&big_args).await, 1);
    assert_eq!(env.attempts(&big_result).await, 1);
    assert_eq!(env.wait(&fine).await.0, TaskStatus::Completed);
    util::dispatch::stop(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_redis_refuses_fails_the_task_instead_of_looping() {
    // Redis takes bulk strings of at most 1 MB here; the dispatcher's own limit is higher.
    let env = Env::new(&["--proto-max-bulk-len", "1mb"]).await;
    let mut cfg = env.config(Mode::Local);
    cfg.max_result_bytes = 8 * 1024 * 1024;
    cfg.max_retries = 3;
    let d = env.spawn(cfg);
    let t = env
        .submit("lambda n: b'z' * n", &args_of("((2000000,), {})"))
        .await;
    let (status, text) = env.wait(&t).await;
    assert_eq!(status, TaskStatus::Failed);
    assert!(
        text.starts_with("ResultTooLarge: ") && text.contains("Redis refused"),
        "{text}"
    );
    assert_eq!(env.attempts(&t).await, 1);
    // The dispatcher goes on (its Redis connection was re-established).
    let after = env.submit("lambda n: n + 1", &args_of("((1,), {})")).await;
    assert_eq!(env.wait(&after).await, (TaskStatus::Completed, "2".into()));
    util::dispatch::stop(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_worker_reports_result_too_large_and_payload_limit_holds() {
    let env = Env::new(&[]).await;
    let mut cfg = env.config(Mode::Push);
    cfg.max_payload_bytes = 10_000;
    cfg.heartbeat_interval_ms = 100;
    let endpoint = format!("tcp://127.0.0.1:{}", cfg.port);
    let d = env.spawn(cfg);
    let wcfg = WorkerConfig {
        mode: WorkerMode::Push,
        processes: 1,
        dispatcher: endpoint,
        heartbeat_interval_ms: 100,
        max_result_bytes: 10_000,
        executor: faas::config::ExecutorConfig {
            python: python::python(),
            user: String::new(),
            ..Default::default()
        },
        ..WorkerConfig::default()
    };
    let (wstop, wshutdown) = faas::shutdown::channel();
    let worker = tokio::spawn(faas::worker::run(wcfg, wshutdown));
    let big_result = env
        .submit("lambda n: 'y' * n", &args_of("((50000,), {})"))
        .await;
    let big_args = env
        .submit("lambda s: len(s)", &args_of("(('x' * 20000,), {})"))
        .await;
    let fine = env.submit("lambda n: n * 2", &args_of("((21,), {})")).await;
    let (status, text) = env.wait(&big_result).await;
    assert_eq!(status, TaskStatus::Failed);
    assert!(
        text.starts_with("ResultTooLarge: ") && text.contains("max_result_bytes"),
        "{text}"
    );
    let (status, text) = env.wait(&big_args).await;
    assert_eq!(status, TaskStatus::Failed);
    assert!(text.starts_with("PayloadTooLarge: "), "{text}");
    assert_eq!(env.wait(&fine).await, (TaskStatus::Completed, "42".into()));
    wstop.trigger();
    worker.await.expect("join").expect("worker stops cleanly");
    util::dispatch::stop(d).await;
}

/// A worker with a higher limit than the dispatcher's reports a large result: it is replaced by
/// ResultTooLarge when stored, and acknowledged (no resend loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_above_the_dispatchers_limit_are_replaced() {
    let env = Env::new(&[]).await;
    let mut cfg = env.config(Mode::Push);
    cfg.max_result_bytes = 1000;
    cfg.heartbeat_misses = 50;
    let endpoint = format!("tcp://127.0.0.1:{}", cfg.port);
    let d = env.spawn(cfg);
    let mut w = DealerSocket::new();
    w.connect(&endpoint).await.expect("connect");
    let hello = Header::Hello {
        worker: WorkerInfo {
            id: "big".into(),
            slots: 1,
            capacity: None,
            host: "test".into(),
            pid: 1,
            version: "test".into(),
            protocol: VERSION,
            runtime: Default::default(),
        },
        running: vec![],
    };
    w.send(encode(&[], &hello, vec![])).await.expect("send");
    let t = env.submit("lambda: 1", &args_of("((), {})")).await;
    let run = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .expect("a message")
            .expect("recv");
        if let Header::Tasks { tasks, .. } = decode(m.into_vec()).expect("decode").header {
            break tasks[0].task;
        }
    };
    let report = Header::Report {
        worker_id: "big".into(),
        results: vec![ResultMeta {
            task: run,
            ok: true,
            cause: String::new(),
        }],
    };
    let blob = Bytes::from(python::dill("'q' * 5000"));
    w.send(encode(&[], &report, vec![blob]))
        .await
        .expect("send");
    let (status, text) = env.wait(&t).await;
    assert_eq!(status, TaskStatus::Failed);
    assert!(text.starts_with("ResultTooLarge: "), "{text}");
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .expect("the ack")
            .expect("recv");
        if let Header::Ack { acks } = decode(m.into_vec()).expect("decode").header {
            if acks.contains(&run) {
                break;
            }
        }
    }
    util::dispatch::stop(d).await;
}
