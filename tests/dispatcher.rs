//! Local-mode dispatcher tests: real redis-server, real executor processes, in-process dispatcher.

mod util;

use std::time::{Duration, Instant};

use faas::config::DispatcherConfig;
use faas::store::{keys, Claim, QueueReader, Store, TaskStatus};
use redis::Commands;
use util::python;
use util::redis::RedisServer;
use uuid::Uuid;

struct Env {
    redis: RedisServer,
    store: Store,
}

impl Env {
    async fn new() -> Self {
        let redis = RedisServer::start();
        let store = redis.store(Duration::from_secs(3600)).await;
        Env { redis, store }
    }

    fn config(&self, processes: usize) -> DispatcherConfig {
        let mut cfg = DispatcherConfig {
            redis: self.redis.url(),
            name: format!("test-{}", self.redis.port),
            drain_timeout_secs: 5.0,
            ..DispatcherConfig::default()
        };
        cfg.local.processes = processes;
        cfg.executor.python = python::python();
        cfg.executor.user = String::new();
        cfg
    }

    /// Starts a dispatcher; returns its shutdown trigger and join handle.
    fn spawn(&self, cfg: DispatcherConfig) -> util::dispatch::Running {
        util::dispatch::spawn(cfg)
    }

    async fn submit(&self, fn_expr: &str, args_expr: &str) -> Uuid {
        let (f, a) = (python::dill(fn_expr), python::dill(args_expr));
        util::dispatch::submit(&self.store, &f, &a).await
    }

    async fn wait(&self, t: &Uuid, timeout: Duration) -> (TaskStatus, String) {
        util::dispatch::wait_done(&self.store, t, timeout).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_tasks_queued_before_it_started_and_after() {
    let env = Env::new().await;
    let early: Vec<Uuid> = futures_join(&env, 3, "lambda x: x * 2").await;
    let (stop, handle) = env.spawn(env.config(2));
    for (i, t) in early.iter().enumerate() {
        assert_eq!(
            env.wait(t, Duration::from_secs(30)).await,
            (TaskStatus::Completed, (i * 2).to_string())
        );
    }
    let late = env
        .submit("lambda a, b=1: a + b", "((40,), {'b': 2})")
        .await;
    assert_eq!(
        env.wait(&late, Duration::from_secs(30)).await,
        (TaskStatus::Completed, "42".into())
    );
    let worker: String = env
        .redis
        .conn()
        .hget(keys::task(&late), "worker")
        .expect("worker");
    assert_eq!(worker, format!("test-{}", env.redis.port));
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
    assert_eq!(
        env.store.queue_len().await.expect("xlen"),
        0,
        "all entries acknowledged"
    );
}

async fn futures_join(env: &Env, n: usize, f: &str) -> Vec<Uuid> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(env.submit(f, &format!("(({i},), {{}})")).await);
    }
    out
}

/// Each task announces itself in `dir` (a file named by its process id) and waits up to 20 s
/// for 4 announcements: it answers `True` only if 4 processes ran it at the same time.
const BARRIER_OF_4: &str = "lambda d: (open(f'{d}/{os.getpid()}', 'w').close(), \
     next((True for _ in range(2000) if len(os.listdir(d)) >= 4 or time.sleep(0.01)), False))[1]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_tasks_concurrently() {
    let env = Env::new().await;
    let (stop, handle) = env.spawn(env.config(4));
    let dir = tempfile::tempdir().expect("tempdir");
    let args = format!("(({:?},), {{}})", dir.path().display().to_string());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(env.submit(BARRIER_OF_4, &args).await);
    }
    // Run one after another, the first would give up waiting for the others (False).
    for t in &tasks {
        assert_eq!(
            env.wait(t, Duration::from_secs(60)).await,
            (TaskStatus::Completed, "True".into()),
            "4 tasks on 4 processes did not all run at once"
        );
    }
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_crashes_fail_the_task_not_the_dispatcher() {
    let env = Env::new().await;
    let (stop, handle) = env.spawn(env.config(2));
    let crash = env.submit("lambda: os._exit(3)", "((), {})").await;
    let (status, text) = env.wait(&crash, Duration::from_secs(30)).await;
    assert_eq!(status, TaskStatus::Failed);
    assert!(text.starts_with("ExecutorCrashed"), "{text}");
    let raised = env.submit("lambda: 1 / 0", "((), {})").await;
    let (status, text) = env.wait(&raised, Duration::from_secs(30)).await;
    assert_eq!(status, TaskStatus::Failed);
    assert!(text.starts_with("ZeroDivisionError"), "{text}");
    let ok = env.submit("lambda: 'fine'", "((), {})").await;
    assert_eq!(
        env.wait(&ok, Duration::from_secs(30)).await,
        (TaskStatus::Completed, "'fine'".into())
    );
    let error: String = env
        .redis
        .conn()
        .hget(keys::task(&crash), "error")
        .expect("error");
    assert!(error.starts_with("ExecutorCrashed"), "{error}");
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
}

/// Makes `task` look like it was running on a dispatcher named `ghost` that died.
async fn orphan(env: &Env, task: &Uuid) {
    let mut ghost = QueueReader::open(&env.store, "ghost")
        .await
        .expect("reader");
    let got = ghost
        .read_new(10, Duration::from_millis(200))
        .await
        .expect("read");
    assert_eq!(
        got.iter().map(|e| e.task_id).collect::<Vec<_>>(),
        vec![Some(*task)]
    );
    assert!(matches!(
        env.store.claim(task, "ghost").await.expect("claim"),
        Claim::Running { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_a_dead_dispatcher_fail_with_worker_failure() {
    let env = Env::new().await;
    let t = env.submit("lambda: 'ran'", "((), {})").await;
    orphan(&env, &t).await;
    let (stop, handle) = env.spawn(env.config(1));
    let (status, text) = env.wait(&t, Duration::from_secs(30)).await;
    assert_eq!(status, TaskStatus::Failed);
    assert!(
        text.starts_with("WorkerFailure: WorkerFailure:") || text.starts_with("WorkerFailure:"),
        "{text}"
    );
    assert!(
        text.contains("stopped while the task was running"),
        "{text}"
    );
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
    assert_eq!(env.store.queue_len().await.expect("xlen"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_a_dead_dispatcher_are_retried_when_allowed() {
    let env = Env::new().await;
    let t = env.submit("lambda: 'ran'", "((), {})").await;
    orphan(&env, &t).await;
    let mut cfg = env.config(1);
    cfg.max_retries = 1;
    let (stop, handle) = env.spawn(cfg);
    assert_eq!(
        env.wait(&t, Duration::from_secs(30)).await,
        (TaskStatus::Completed, "'ran'".into())
    );
    let attempts: u32 = env
        .redis
        .conn()
        .hget(keys::task(&t), "attempts")
        .expect("attempts");
    assert_eq!(attempts, 2);
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_read_batch_of_mixed_entries_ends_each_as_alone_and_a_cancel_finds_its_run() {
    let env = Env::new().await;
    // Queued before the dispatcher starts: its first read takes all five in one batch.
    let ok = env.submit("lambda: 'fine'", "((), {})").await;
    let long = env
        .submit("lambda: time.sleep(60) or 'late'", "((), {})")
        .await;
    let missing = env.submit("lambda: 'never'", "((), {})").await;
    let deleted = env.submit("lambda: 'never'", "((), {})").await;
    let settled = env.submit("lambda: 'never'", "((), {})").await;
    let mut c = env.redis.conn();
    let _: () = c.del(keys::task(&missing)).expect("del task");
    let function: String = c.hget(keys::task(&deleted), "function_id").expect("fn");
    let function = Uuid::parse_str(&function).expect("uuid");
    let _: () = c.del(keys::function(&function)).expect("del function");
    assert!(matches!(
        env.store.claim(&settled, "elsewhere").await.expect("claim"),
        Claim::Running { .. }
    ));
    let early = faas::store::Finish {
        task_id: settled,
        from: TaskStatus::Running,
        attempt: Some(1),
        status: TaskStatus::Completed,
        result: b"x",
        error: "",
        entry_id: None,
    };
    env.store.finish(&early).await.expect("finish");
    let (stop, handle) = env.spawn(env.config(5));
    assert_eq!(
        env.wait(&ok, Duration::from_secs(30)).await,
        (TaskStatus::Completed, "'fine'".into())
    );
    let (status, text) = env.wait(&deleted, Duration::from_secs(30)).await;
    assert_eq!(status, TaskStatus::Failed);
    assert!(text.starts_with("InvalidTask"), "{text}");
    util::dispatch::wait_status(
        &env.store,
        &long,
        TaskStatus::Running,
        Duration::from_secs(30),
    )
    .await;
    let cancelled = env
        .store
        .cancel(&long, Duration::from_secs(60), true)
        .await
        .expect("cancel");
    assert_eq!(
        cancelled,
        faas::store::cancel::Cancel::Cancelled(TaskStatus::Running)
    );
    // The run is stopped and its entry acknowledged: nothing left in the queue, nothing running.
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.store.queue_len().await.expect("xlen") > 0 {
        assert!(Instant::now() < deadline, "entries left in the queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, text) = env.wait(&long, Duration::from_secs(1)).await;
    assert_eq!(status, TaskStatus::Failed);
    assert!(text.starts_with("TaskCancelled"), "{text}");
    assert_eq!(
        env.store
            .task_view(&settled)
            .await
            .expect("view")
            .map(|v| v.status),
        Some(TaskStatus::Completed)
    );
    assert_eq!(env.store.task_view(&missing).await.expect("view"), None);
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
}

/// When a run ends, its process's next claim reaches Redis ahead of the run's result: the
/// process waits for the claim, nobody waits for the result (the result is stored right after,
/// in the same round trip or the next). Seen in Redis's own order of commands (`MONITOR`), with
/// one process running tasks read ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_process_is_claimed_for_before_its_last_result_is_stored() {
    let env = Env::new().await;
    let tasks = futures_join(&env, 10, "lambda x: x").await;
    let monitor = util::monitor::Monitor::start(&env.redis);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut cfg = env.config(1);
    cfg.executor.isolation = faas::config::Isolation::Reuse;
    let (stop, handle) = util::dispatch::spawn_on_one_thread(cfg);
    for t in &tasks {
        assert_eq!(
            env.wait(t, Duration::from_secs(30)).await.0,
            TaskStatus::Completed
        );
    }
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
    monitor
        .transitions(&tasks)
        .assert_claims_ahead_of_results(tasks.len());
}
