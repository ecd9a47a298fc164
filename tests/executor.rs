//! Integration tests of the executor pool with real Python processes (interpreter from
//! `$FAAS_TEST_PYTHON`, see `util/python.rs`).

#[path = "util/python.rs"]
mod python;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use faas::executor::{ExecutorConfig, ExecutorError, ExecutorPool, Isolation, Outcome, TaskSpec};

/// Executors as the test's own user (the test interpreter may not be readable by another).
fn config(isolation: Isolation) -> ExecutorConfig {
    ExecutorConfig {
        python: python::python(),
        isolation,
        user: String::new(),
        ..ExecutorConfig::default()
    }
}

async fn pool(isolation: Isolation, slots: usize) -> ExecutorPool {
    ExecutorPool::start(config(isolation), slots)
        .await
        .expect("pool starts")
}

/// A task calling `f` (defined by `setup`) with the arguments pickled from `args`.
fn task(setup: &str, args: &str) -> TaskSpec {
    let p = python::pickles(setup, &["f", args], None);
    spec(&content_id(&p[0]), p[0].clone(), p[1].clone())
}

/// A function id derived from the pickle, so reuse mode's cache never mixes up test functions.
fn content_id(payload: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    payload.hash(&mut h);
    format!("fn-{:016x}", h.finish())
}

fn spec(function_id: &str, fn_payload: Vec<u8>, args_payload: Vec<u8>) -> TaskSpec {
    TaskSpec {
        task_id: format!("t-{}", uuid::Uuid::new_v4()),
        function_id: function_id.into(),
        fn_payload: Bytes::from(fn_payload),
        args_payload: Bytes::from(args_payload),
        timeout: None,
    }
}

fn completed(o: Outcome) -> Vec<u8> {
    match o {
        Outcome::Completed { result } => result,
        Outcome::Failed { cause, .. } => panic!("expected completion, got failure: {cause}"),
    }
}

fn failed(o: Outcome) -> (Vec<u8>, String) {
    match o {
        Outcome::Failed { result, cause } => (result, cause),
        Outcome::Completed { .. } => panic!("expected a failure"),
    }
}

/// Fails with a platform exception whose cause starts with `prefix`; checks the pickle says so too.
fn platform_failure(o: Outcome, prefix: &str) -> String {
    let (result, cause) = failed(o);
    assert!(
        cause.starts_with(prefix),
        "cause {cause:?} should start with {prefix:?}"
    );
    python::check(
        &result,
        &format!("assert isinstance(v, Exception), v\nassert str(v) == {cause:?}, str(v)"),
    );
    cause
}

/// The process is gone entirely (not even a zombie).
fn gone(pid: u32) -> bool {
    !PathBuf::from(format!("/proc/{pid}")).exists()
}

/// The process is gone or a zombie someone else has to reap.
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const PIDS: &str = "import os\ndef f():\n    return (os.getpid(), os.getppid())";

async fn pids_of(pool: &ExecutorPool) -> (u32, u32) {
    let r = completed(pool.run(task(PIDS, "((), {})")).await);
    let text = python::eval(&r, "v");
    let (a, b) = text
        .trim_matches(|c| c == '(' || c == ')')
        .split_once(", ")
        .unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

const OK_TASK: &str = "def f(a, b=1):\n    return {'sum': a + b}";

async fn assert_next_task_ok(pool: &ExecutorPool) {
    let r = completed(pool.run(task(OK_TASK, "((2,), {'b': 3})")).await);
    python::check(&r, "assert v == {'sum': 5}, v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_value_is_a_dill_pickle() {
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let pool = pool(isolation, 1).await;
        assert_next_task_ok(&pool).await;
        // A closure and a lambda defined in the client's __main__ (pickled by value).
        let r = completed(
            pool.run(task(
                "k = 10\nf = lambda x: [x * k, None, 'é']",
                "((4,), {})",
            ))
            .await,
        );
        python::check(&r, "assert v == [40, None, 'é'], v");
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_exception_carries_remote_traceback() {
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let pool = pool(isolation, 1).await;
        let setup = "def inner(x):\n    return x / 0\ndef f(x):\n    return inner(x)";
        let (result, cause) = failed(pool.run(task(setup, "((1,), {})")).await);
        assert_eq!(cause, "ZeroDivisionError: division by zero");
        python::check(
            &result,
            "assert isinstance(v, ZeroDivisionError), type(v)\n\
             assert str(v) == 'division by zero'\n\
             note = ''.join(v.__notes__)\n\
             assert note.startswith('Remote traceback:\\n'), note\n\
             assert 'line 5, in f' in note and 'line 3, in inner' in note and 'ZeroDivisionError: division by zero' in note, note\n\
             assert 'faas_executor' not in note.splitlines()[2], note",
        );
        // A user-defined exception class travels by value.
        let setup = "class Oops(Exception):\n    pass\ndef f():\n    raise Oops('custom', 7)";
        let (result, cause) = failed(pool.run(task(setup, "((), {})")).await);
        assert_eq!(cause, "Oops: ('custom', 7)");
        python::check(
            &result,
            "assert type(v).__name__ == 'Oops' and v.args == ('custom', 7), v",
        );
        assert_next_task_ok(&pool).await;
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpicklable_exception_falls_back_to_platform_exception() {
    let pool = pool(Isolation::Fork, 1).await;
    // Unpickling calls Bad('x-y') and fails: the constructor needs two arguments.
    let setup = "class Bad(Exception):\n    def __init__(self, a, b):\n        super().__init__(f'{a}-{b}')\ndef f():\n    raise Bad('x', 'y')";
    let (result, cause) = failed(pool.run(task(setup, "((), {})")).await);
    assert_eq!(cause, "Bad: x-y");
    python::check(
        &result,
        "s = str(v)\nassert type(v).__name__ == 'Bad', type(v)\n\
         assert s.startswith('Bad: x-y'), s\nassert 'Remote traceback:' in s and 'line 6, in f' in s, s\n\
         assert 'could not be pickled' in s, s",
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_are_classified_and_the_pool_recovers() {
    let cases = [
        (
            "import os\ndef f():\n    os._exit(3)",
            "ExecutorCrashed: task process exited with code 3",
        ),
        (
            "import ctypes\ndef f():\n    return ctypes.string_at(0)",
            "ExecutorCrashed: task process killed by signal 11 (SIGSEGV",
        ),
        (
            "import os\ndef f():\n    os.kill(os.getpid(), 9)",
            "ExecutorCrashed: task process killed by signal 9 (SIGKILL)",
        ),
    ];
    let pool = pool(Isolation::Fork, 2).await;
    let zygote = pool.stats().await.pids;
    for (setup, prefix) in cases {
        platform_failure(pool.run(task(setup, "((), {})")).await, prefix);
        assert_next_task_ok(&pool).await;
    }
    assert_eq!(
        pool.stats().await.pids,
        zygote,
        "task crashes never touch the zygote"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_mode_crash_replaces_the_process() {
    let pool = pool(Isolation::Reuse, 1).await;
    let before = pids_of(&pool).await.0;
    platform_failure(
        pool.run(task("import os\ndef f():\n    os._exit(3)", "((), {})"))
            .await,
        "ExecutorCrashed: executor process exited with code 3",
    );
    platform_failure(
        pool.run(task(
            "import ctypes\ndef f():\n    return ctypes.string_at(0)",
            "((), {})",
        ))
        .await,
        "ExecutorCrashed: executor process killed by signal 11 (SIGSEGV",
    );
    let after = pids_of(&pool).await.0;
    assert_ne!(before, after, "the crashed process was replaced");
    assert!(gone(before), "the crashed process was reaped");
    // sys.exit in reuse mode is just an exception; the process survives it.
    let (_, cause) = failed(
        pool.run(task("import sys\ndef f():\n    sys.exit(5)", "((), {})"))
            .await,
    );
    assert_eq!(cause, "SystemExit: 5");
    assert_eq!(pids_of(&pool).await.0, after);
    assert!(pool.stats().await.restarts >= 1);
    pool.shutdown().await;
    assert!(gone(after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_is_enforced() {
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let cfg = ExecutorConfig {
            memory_limit_mb: 400,
            ..config(isolation)
        };
        let pool = ExecutorPool::start(cfg, 1).await.unwrap();
        let cause = platform_failure(
            pool.run(task(
                "def f():\n    return len(bytearray(1 << 30))",
                "((), {})",
            ))
            .await,
            "ResourceLimitExceeded: ",
        );
        assert!(cause.contains("400 MiB"), "{cause}");
        // Small allocations still work, and so does the next task.
        let r = completed(
            pool.run(task(
                "def f():\n    return len(bytearray(1 << 20))",
                "((), {})",
            ))
            .await,
        );
        python::check(&r, "assert v == 1 << 20");
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_kill_the_task_and_the_pool_recovers() {
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let cfg = ExecutorConfig {
            task_timeout_secs: 0.5,
            ..config(isolation)
        };
        let pool = ExecutorPool::start(cfg, 1).await.unwrap();
        // The task also leaves a grandchild behind in its process group: it must die too.
        let setup = "import subprocess, time\ndef f(path):\n    p = subprocess.Popen(['sleep', '60'])\n    open(path, 'w').write(str(p.pid))\n    time.sleep(30)";
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let started = Instant::now();
        let cause = platform_failure(
            pool.run(task(
                setup,
                &format!("(({:?},), {{}})", pidfile.display().to_string()),
            ))
            .await,
            "TaskTimeout: ",
        );
        let elapsed = started.elapsed();
        assert!(cause.contains("0.5 s"), "{cause}");
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
        let grandchild: u32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
        wait_until("the grandchild is dead", || dead(grandchild)).await;
        assert_next_task_ok(&pool).await;
        // A per-task timeout overrides the configured one.
        let mut t = task(
            "import time\ndef f():\n    time.sleep(1)\n    return 'slept'",
            "((), {})",
        );
        t.timeout = Some(Duration::from_secs(5));
        python::check(&completed(pool.run(t).await), "assert v == 'slept'");
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchildren_die_with_the_task() {
    let pool = pool(Isolation::Fork, 1).await;
    let setup = "import subprocess\ndef f():\n    return subprocess.Popen(['sleep', '60']).pid";
    let r = completed(pool.run(task(setup, "((), {})")).await);
    let pid: u32 = python::eval(&r, "v").parse().unwrap();
    wait_until("the orphaned grandchild is dead", || dead(pid)).await;
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_fail_cleanly() {
    let (_dir, modpath) =
        python::module_dir("faas_test_mod_xyz", "def double(x):\n    return 2 * x\n");
    let by_ref = python::pickles(
        "import faas_test_mod_xyz",
        &["faas_test_mod_xyz.double"],
        Some(&modpath),
    );
    let args = python::pickles("", &["((21,), {})", "[1, 2, 3]", "((1,), [])", "42"], None);
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let pool = pool(isolation, 1).await;
        let cause = platform_failure(
            pool.run(spec("m", by_ref[0].clone(), args[0].clone()))
                .await,
            "DeserializationError: cannot unpickle the function: ModuleNotFoundError",
        );
        assert!(cause.contains("faas_test_mod_xyz"), "{cause}");
        let f = python::pickles("def f(*a, **k):\n    return a", &["f"], None).remove(0);
        platform_failure(
            pool.run(spec("f", f.clone(), b"not a pickle".to_vec()))
                .await,
            "DeserializationError: cannot unpickle the arguments",
        );
        for bad in &args[1..] {
            platform_failure(
                pool.run(spec("f", f.clone(), bad.clone())).await,
                "InvalidTask: ",
            );
        }
        platform_failure(
            pool.run(spec("n", args[3].clone(), args[0].clone())).await,
            "InvalidTask: ",
        );
        platform_failure(
            pool.run(spec("e", Vec::new(), args[0].clone())).await,
            "DeserializationError: ",
        );
        assert_next_task_ok(&pool).await;
        pool.shutdown().await;
    }
    // With the module on the configured pythonpath the same function works.
    let cfg = ExecutorConfig {
        pythonpath: vec![modpath.clone()],
        ..config(Isolation::Fork)
    };
    let pool = ExecutorPool::start(cfg, 1).await.unwrap();
    let r = completed(
        pool.run(spec("m", by_ref[0].clone(), args[0].clone()))
            .await,
    );
    python::check(&r, "assert v == 42");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpicklable_return_value_is_a_serialization_error() {
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let pool = pool(isolation, 1).await;
        let cause = platform_failure(
            pool.run(task(
                "def f():\n    return (i for i in range(3))",
                "((), {})",
            ))
            .await,
            "SerializationError: cannot pickle the return value of type generator",
        );
        assert!(cause.contains("generator"));
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_run_concurrently() {
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let pool = std::sync::Arc::new(pool(isolation, 4).await);
        let t = task(
            "import time\ndef f(i):\n    time.sleep(2)\n    return i",
            "((7,), {})",
        );
        let started = Instant::now();
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                let t = t.clone();
                tokio::spawn(async move { pool.run(t).await })
            })
            .collect();
        for run in runs {
            python::check(&completed(run.await.unwrap()), "assert v == 7");
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(4),
            "{isolation:?}: 4 x sleep(2) on 4 slots took {elapsed:?} (sequential: 8 s)"
        );
        assert_eq!(pool.available(), pool.capacity());
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_slots_can_move_into_spawned_tasks() {
    let pool = pool(Isolation::Fork, 2).await;
    let slot = pool.reserve().await;
    assert_eq!(pool.available(), pool.capacity() - 1);
    let t = task(OK_TASK, "((1,), {})");
    let out = tokio::spawn(slot.run(t)).await.unwrap();
    python::check(&completed(out), "assert v == {'sum': 2}");
    assert_eq!(pool.available(), pool.capacity());
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printing_does_not_corrupt_results() {
    let setup = "import os, sys\ndef f(n):\n    for i in range(n):\n        print('line', i, 'x' * 100)\n        print('err', i, file=sys.stderr)\n    sys.stdout.flush()\n    os.write(1, b'\\x00\\x00\\x00\\x05raw bytes on fd 1')\n    os.write(2, b'\\xff\\xfe')\n    return 'done'";
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let pool = pool(isolation, 1).await;
        for _ in 0..2 {
            let r = completed(pool.run(task(setup, "((20000,), {})")).await);
            python::check(&r, "assert v == 'done'");
        }
        assert_next_task_ok(&pool).await;
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_roundtrip() {
    let pool = pool(Isolation::Fork, 1).await;
    let r = completed(
        pool.run(task(
            "def f(data):\n    return data[::-1] + b'!' * (3 << 20)",
            "((bytes(range(256)) * 40000,), {})",
        ))
        .await,
    );
    python::check(
        &r,
        "assert len(v) == 256 * 40000 + (3 << 20) and v[:2] == bytes([255, 254])",
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_over_the_limit_fail_and_the_executor_stays_usable() {
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let pool = pool(isolation, 1).await.limit_results(100_000);
        let (_, cause) = failed(
            pool.run(task("def f(n):\n    return b'x' * n", "((5_000_000,), {})"))
                .await,
        );
        assert!(
            cause.starts_with("ResultTooLarge: the result is ")
                && cause.contains("the limit is 100000 bytes"),
            "{isolation:?}: {cause}"
        );
        // The oversized payload was drained: the same executor (reuse) runs the next task.
        let r = completed(
            pool.run(task("def f(n):\n    return b'y' * n", "((90_000,), {})"))
                .await,
        );
        python::check(&r, "assert v == b'y' * 90000");
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_everything_and_leaves_no_zombies() {
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let pool = std::sync::Arc::new(pool(isolation, 2).await);
        let executors = pool.stats().await.pids;
        assert!(!executors.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let setup = "import os, time\ndef f(path):\n    open(path + '.tmp', 'w').write(str(os.getpid()))\n    os.rename(path + '.tmp', path)\n    time.sleep(60)";
        let t = task(
            setup,
            &format!("(({:?},), {{}})", pidfile.display().to_string()),
        );
        let running = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(t).await })
        };
        wait_until("the task started", || pidfile.exists()).await;
        let task_pid: u32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
        let started = Instant::now();
        pool.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(5));
        platform_failure(
            running.await.unwrap(),
            "WorkerFailure: the executor pool was shut down",
        );
        for pid in executors.iter().copied().chain([task_pid]) {
            wait_until(&format!("pid {pid} is reaped"), || gone(pid)).await;
        }
        // After shutdown new work fails at once instead of hanging.
        let (_, cause) = failed(pool.run(task(OK_TASK, "((1,), {})")).await);
        assert!(cause.starts_with("WorkerFailure: "), "{cause}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_pool_stops_the_executors() {
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let pool = pool(isolation, 2).await;
        let pids = pool.stats().await.pids;
        drop(pool);
        for pid in pids {
            wait_until(&format!("executor {pid} exits"), || dead(pid)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zygote_exits_when_its_control_socket_closes() {
    use faas::executor::process;
    use faas::executor::script::Mode;
    let launcher = process::Launcher::new(config(Isolation::Fork)).unwrap();
    let mut exe = launcher.spawn(Mode::Zygote, &[]).await.unwrap();
    drop(exe.ctrl);
    let status = tokio::time::timeout(Duration::from_secs(5), exe.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_zygote_is_restarted() {
    let pool = pool(Isolation::Fork, 1).await;
    let (_, zygote) = pids_of(&pool).await;
    assert_eq!(pool.stats().await.pids, vec![zygote]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("the zygote is reaped", || gone(zygote)).await;
    assert_next_task_ok(&pool).await;
    let stats = pool.stats().await;
    assert_eq!(stats.restarts, 1);
    assert_ne!(stats.pids, vec![zygote]);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failures_are_reported() {
    let cfg = ExecutorConfig {
        python: "/nonexistent/python".into(),
        ..config(Isolation::Fork)
    };
    assert!(matches!(
        ExecutorPool::start(cfg, 1).await,
        Err(ExecutorError::Spawn { .. })
    ));
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let cfg = ExecutorConfig {
            preload: vec!["no_such_module_here".into()],
            ..config(isolation)
        };
        let err = ExecutorPool::start(cfg, 1)
            .await
            .err()
            .expect("start fails")
            .to_string();
        assert!(
            err.contains("No module named 'no_such_module_here'"),
            "{err}"
        );
    }
    let cfg = ExecutorConfig {
        preload: vec!["json".into(), "os.path".into()],
        ..config(Isolation::Fork)
    };
    let pool = ExecutorPool::start(cfg, 1).await.unwrap();
    assert_next_task_ok(&pool).await;
    pool.shutdown().await;
    assert!(ExecutorPool::start(config(Isolation::Fork), 0)
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_mode_caches_functions_by_id() {
    let pool = pool(Isolation::Reuse, 1).await;
    let counter = "import itertools\nc = itertools.count()\ndef f():\n    return next(c)";
    let p = python::pickles(counter, &["f", "((), {})"], None);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = completed(pool.run(spec("counter", p[0].clone(), p[1].clone())).await);
        seen.push(python::eval(&r, "v"));
    }
    assert_eq!(
        seen,
        ["0", "1", "2"],
        "the cached function keeps its state between calls"
    );
    pool.shutdown().await;
}

/// Rough per-task overhead of a no-op task; run with `--nocapture` to see the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_task_overhead() {
    let t = task("def f():\n    return None", "((), {})");
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let pool = pool(isolation, 1).await;
        for _ in 0..10 {
            completed(pool.run(t.clone()).await);
        }
        let n = 200;
        let started = Instant::now();
        for _ in 0..n {
            completed(pool.run(t.clone()).await);
        }
        let per_task = started.elapsed() / n;
        println!("per-task overhead ({isolation:?}): {per_task:?}");
        assert!(
            per_task < Duration::from_millis(200),
            "{isolation:?}: {per_task:?}"
        );
        pool.shutdown().await;
    }
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pool_uses_no_cpu() {
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let pool = pool(isolation, 2).await;
        assert_next_task_ok(&pool).await;
        let pids = pool.stats().await.pids;
        let before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let after: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
        assert_eq!(before, after, "{isolation:?}: idle executors consumed CPU");
        pool.shutdown().await;
    }
}

/// The JSON text a task returned (`json.dumps(...)`), parsed.
fn json_value(pickle: &[u8]) -> serde_json::Value {
    let code = "import dill, sys\nsys.stdout.write(dill.loads(sys.stdin.buffer.read()))";
    let text = python::run_python(code, pickle, None);
    serde_json::from_slice(&text).expect("the task returned JSON")
}

/// Returns what a task sees of its surroundings, as JSON.
const SURROUNDINGS: &str = "import json, os, stat, sys, tempfile
def f():
    cwd = os.getcwd()
    return json.dumps({
        'cwd': cwd, 'mode': stat.S_IMODE(os.stat(cwd).st_mode),
        'home': os.environ.get('HOME'), 'tmpdir': tempfile.gettempdir(),
        'isolated': sys.flags.isolated, 'path': sys.path, 'env': dict(os.environ),
        'pid': os.getpid(), 'uid': os.getuid(),
    })";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_isolated_in_private_directories() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let cfg = ExecutorConfig {
            workdir: Some(base.clone()),
            ..config(isolation)
        };
        let pool = ExecutorPool::start(cfg, 1).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..2 {
            let v = json_value(&completed(pool.run(task(SURROUNDINGS, "((), {})")).await));
            let cwd = PathBuf::from(v["cwd"].as_str().unwrap());
            assert_eq!(cwd.parent(), Some(base.as_path()), "{isolation:?}: {v}");
            let prefix = match isolation {
                Isolation::Fork => "faas-task-",
                Isolation::Reuse => "faas-reuse-",
            };
            let name = cwd.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with(prefix), "{name}");
            assert_eq!(v["mode"], 0o700, "private to the executor user");
            assert_eq!(v["home"], v["cwd"]);
            assert_eq!(v["tmpdir"], v["cwd"]);
            // python -I: neither the working directory nor '' is importable.
            assert_eq!(v["isolated"], 1);
            let path: Vec<&str> = v["path"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p.as_str())
                .collect();
            assert!(
                !path.contains(&"") && !path.contains(&cwd.to_str().unwrap()),
                "{path:?}"
            );
            seen.push(cwd);
        }
        match isolation {
            Isolation::Fork => {
                assert_ne!(seen[0], seen[1], "every task gets its own directory");
                for d in &seen {
                    wait_until(&format!("{} is removed", d.display()), || !d.exists()).await;
                }
            }
            Isolation::Reuse => {
                assert_eq!(seen[0], seen[1], "one directory per reuse process");
                pool.shutdown().await;
                assert!(!seen[0].exists(), "removed when the process stops");
            }
        }
        pool.shutdown().await;
    }
    assert_eq!(
        std::fs::read_dir(&base).unwrap().count(),
        0,
        "nothing left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_is_an_allowlist_plus_executor_env() {
    // A secret in the daemon's environment (like FAAS_DISPATCHER_REDIS with a password).
    std::env::set_var("FAAS_TEST_SECRET_TOKEN", "hunter2");
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let cfg = ExecutorConfig {
            env: [("HTTP_PROXY".to_string(), "http://proxy:3128".to_string())].into(),
            ..config(isolation)
        };
        let pool = ExecutorPool::start(cfg, 1).await.unwrap();
        let setup = "import json, os\ndef f():\n    return json.dumps([dict(os.environ), open('/proc/self/environ', 'rb').read().decode(errors='replace')])";
        let v = json_value(&completed(pool.run(task(setup, "((), {})")).await));
        let env = v[0].as_object().unwrap();
        assert_eq!(env["HTTP_PROXY"], "http://proxy:3128");
        assert!(env.contains_key("PATH"));
        for (k, _) in env {
            assert!(
                [
                    "PATH",
                    "HOME",
                    "TMPDIR",
                    "HTTP_PROXY",
                    "LANG",
                    "LANGUAGE",
                    "TZ",
                    "USER",
                    "LOGNAME",
                    "PYTHONPATH"
                ]
                .contains(&k.as_str())
                    || k.starts_with("LC_"),
                "{isolation:?}: {k} is not on the allowlist"
            );
        }
        let raw = v[1].as_str().unwrap();
        assert!(!raw.contains("hunter2") && !raw.contains("FAAS_"), "{raw}");
        pool.shutdown().await;
    }
}

/// `/proc/PID/cmdline` as text (NULs shown as spaces).
fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .replace('\0', " ")
        .trim_end()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_titles_are_short_and_readable() {
    // Regression (issue 12): `ps` showed the whole embedded executor script for every zygote.
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let sleeper = "import os, time\ndef f(path):\n    open(path + '.tmp', 'w').write(str(os.getpid()))\n    os.rename(path + '.tmp', path)\n    time.sleep(30)";
    for (isolation, title) in [
        (Isolation::Fork, "faas-executor: zygote"),
        (Isolation::Reuse, "faas-executor: reuse"),
    ] {
        let pool = std::sync::Arc::new(pool(isolation, 1).await);
        let pids = pool.stats().await.pids;
        for &pid in &pids {
            assert_eq!(cmdline(pid), title);
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
            assert_eq!(comm.trim(), "faas-executor");
        }
        let _ = std::fs::remove_file(&pidfile);
        let t = task(
            sleeper,
            &format!("(({:?},), {{}})", pidfile.display().to_string()),
        );
        let task_id = t.task_id.clone();
        let running = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(t).await })
        };
        wait_until("the task started", || pidfile.exists()).await;
        let task_pid: u32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
        let want = match isolation {
            Isolation::Fork => format!("faas-executor: task {task_id}"),
            Isolation::Reuse => title.to_string(),
        };
        assert_eq!(cmdline(task_pid), want);
        pool.shutdown().await;
        let _ = running.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_end_tasks_with_a_named_cause() {
    let cases = [
        (
            "def f():\n    return [open('/dev/null') for _ in range(100)]",
            "ResourceLimitExceeded: task exceeded the open files limit of 32 (OSError: [Errno 24] Too many open files",
        ),
        (
            "def f():\n    with open('big', 'wb') as out:\n        for _ in range(8):\n            out.write(b'x' * (1 << 20))",
            "ResourceLimitExceeded: task exceeded the file size limit of 1 MiB (OSError: [Errno 27] File too large",
        ),
        (
            "def f():\n    return len(bytearray(1 << 31))",
            "ResourceLimitExceeded: task exceeded the memory limit of 512 MiB (MemoryError)",
        ),
        (
            "import time\ndef f():\n    time.sleep(30)",
            "TaskTimeout: task exceeded its timeout of 1 s",
        ),
    ];
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let cfg = ExecutorConfig {
            open_files_limit: 32,
            file_size_limit_mb: 1,
            memory_limit_mb: 512,
            task_timeout_secs: 1.0,
            ..config(isolation)
        };
        let pool = ExecutorPool::start(cfg, 1).await.unwrap();
        for (setup, cause) in cases {
            platform_failure(pool.run(task(setup, "((), {})")).await, cause);
            assert_next_task_ok(&pool).await;
        }
        pool.shutdown().await;
    }
}

/// A Python that another user can run, with dill (Debian's python3-dill), for the tests that
/// switch users; `None` (with the reason printed) when they cannot run here.
fn sandbox_python() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: switching users needs root (CI runs as root)");
        return None;
    }
    let py =
        std::env::var("FAAS_TEST_SANDBOX_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let ok = std::process::Command::new(&py)
        .args(["-I", "-c", "import dill"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: {py} cannot import dill (apt-get install python3-dill)");
        return None;
    }
    Some(py)
}

fn sandboxed(isolation: Isolation, python: &str) -> ExecutorConfig {
    ExecutorConfig {
        python: python.into(),
        isolation,
        user: "nobody".into(),
        ..ExecutorConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_run_as_the_executor_user_without_privileges() {
    let Some(py) = sandbox_python() else { return };
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let me = std::process::id();
    let probe = format!(
        "import json, os, signal
def f():
    status = dict(l.split(':', 1) for l in open('/proc/self/status'))
    out = {{'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(), 'groups': os.getgroups(),
           'caps': [status[k].strip() for k in ('CapPrm', 'CapEff', 'CapInh', 'CapAmb')],
           'nnp': status['NoNewPrivs'].strip()}}
    for what, act in [('kill', lambda: os.kill({me}, signal.SIGTERM)),
                      ('environ', lambda: open('/proc/{me}/environ', 'rb').read())]:
        try:
            act()
            out[what] = 'allowed'
        except PermissionError as e:
            out[what] = 'denied'
    return json.dumps(out)"
    );
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let pool = ExecutorPool::start(sandboxed(isolation, &py), 1)
            .await
            .unwrap();
        let v = json_value(&completed(pool.run(task(&probe, "((), {})")).await));
        assert_eq!(v["uid"], nobody.uid.as_raw(), "{isolation:?}: {v}");
        assert_eq!(v["euid"], nobody.uid.as_raw());
        assert_eq!(v["gid"], nobody.gid.as_raw());
        assert_eq!(
            v["groups"],
            serde_json::json!([nobody.gid.as_raw()]),
            "no supplementary groups of the daemon"
        );
        for cap in v["caps"].as_array().unwrap() {
            assert_eq!(cap, "0000000000000000", "{v}");
        }
        assert_eq!(v["nnp"], "1");
        assert_eq!(v["kill"], "denied", "user code cannot signal the daemon");
        assert_eq!(v["environ"], "denied", "nor read its environment");
        // The zygote and the task are the executor user's; timeouts still kill them.
        for pid in pool.stats().await.pids {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let uid_line = status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .unwrap()
                .to_string();
            assert!(
                uid_line
                    .split_whitespace()
                    .skip(1)
                    .all(|u| u == nobody.uid.to_string()),
                "{uid_line}"
            );
        }
        let mut t = task("import time\ndef f():\n    time.sleep(30)", "((), {})");
        t.timeout = Some(Duration::from_millis(500));
        platform_failure(pool.run(t).await, "TaskTimeout: ");
        assert_next_task_ok(&pool).await;
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_limit_contains_a_fork_bomb() {
    let Some(py) = sandbox_python() else { return };
    let bomb = "import os\ndef f():\n    while True:\n        os.fork()";
    let threads = "import threading, time\ndef f():\n    for _ in range(10000):\n        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()";
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let cfg = ExecutorConfig {
            process_limit: 64,
            ..sandboxed(isolation, &py)
        };
        let pool = ExecutorPool::start(cfg, 1).await.unwrap();
        for setup in [bomb, threads] {
            let started = Instant::now();
            platform_failure(
                pool.run(task(setup, "((), {})")).await,
                "ResourceLimitExceeded: task exceeded the process limit of 64",
            );
            println!("{isolation:?}: contained in {:?}", started.elapsed());
            // Whatever the bomb left is killed with the task's process group.
            assert_next_task_ok(&pool).await;
        }
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_none_leaves_only_loopback() {
    let Some(py) = sandbox_python() else { return };
    // Something listening on the host's loopback (like Redis): unreachable from the namespace.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = format!(
        "import json, socket
def f():
    out = {{'interfaces': [n for _, n in socket.if_nameindex()]}}
    try:
        socket.create_connection(('127.0.0.1', {port}), timeout=2).close()
        out['host_port'] = 'connected'
    except OSError as e:
        out['host_port'] = type(e).__name__
    srv = socket.create_server(('127.0.0.1', 0))
    socket.create_connection(srv.getsockname(), timeout=2).close()
    out['own_loopback'] = 'works'
    return json.dumps(out)"
    );
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let cfg = ExecutorConfig {
            network: faas::executor::Network::None,
            ..sandboxed(isolation, &py)
        };
        let pool = ExecutorPool::start(cfg, 1).await.unwrap();
        let v = json_value(&completed(pool.run(task(&probe, "((), {})")).await));
        assert_eq!(
            v["interfaces"],
            serde_json::json!(["lo"]),
            "{isolation:?}: {v}"
        );
        assert_eq!(v["host_port"], "ConnectionRefusedError");
        assert_eq!(v["own_loopback"], "works");
        pool.shutdown().await;
    }
    drop(listener);
}

// ---------------------------------------------------------------------------------------------
// Admission beyond the processes (executor.prefetch): the shared in-memory queue.

/// A task that writes its pid to `path` (atomically), then sleeps `secs` and returns `tag`.
fn blocking_task(path: &std::path::Path, secs: f64, tag: &str) -> TaskSpec {
    let setup = "import os, time\ndef f(path, secs, tag):\n    open(path + '.tmp', 'w').write(str(os.getpid()))\n    os.rename(path + '.tmp', path)\n    time.sleep(secs)\n    return tag";
    task(
        setup,
        &format!(
            "(({:?}, {secs}, {tag:?}), {{}})",
            path.display().to_string()
        ),
    )
}

fn spawn_run(pool: &std::sync::Arc<ExecutorPool>, t: TaskSpec) -> tokio::task::JoinHandle<Outcome> {
    let slot_pool = pool.clone();
    tokio::spawn(async move { slot_pool.run(t).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_admits_processes_times_one_plus_prefetch() {
    for (prefetch, want) in [(0, 2), (1, 4), (3, 8)] {
        let cfg = ExecutorConfig {
            prefetch,
            ..config(Isolation::Reuse)
        };
        let pool = ExecutorPool::start(cfg, 2).await.unwrap();
        assert_eq!(pool.slots(), 2);
        assert_eq!(pool.capacity(), want);
        assert_eq!(pool.available(), want);
        assert_eq!(pool.stats().await.pids.len(), 2, "processes stay = slots");
        pool.shutdown().await;
    }
}

/// A pool of `slots` processes admitting `prefetch` more tasks per process.
async fn prefetching_pool(isolation: Isolation, slots: usize, prefetch: u32) -> ExecutorPool {
    let cfg = ExecutorConfig {
        prefetch,
        ..config(isolation)
    };
    let pool = ExecutorPool::start(cfg, slots).await.expect("pool starts");
    assert_eq!(pool.capacity(), slots * (1 + prefetch as usize));
    pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_admits_only_as_many_tasks_as_run() {
    let pool = pool(Isolation::Reuse, 2).await;
    assert_eq!((pool.slots(), pool.capacity()), (2, 2));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cancelled_while_queued_never_runs() {
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let pool = std::sync::Arc::new(prefetching_pool(isolation, 1, 1).await);
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first");
        let queued = dir.path().join("queued");
        let running = spawn_run(&pool, blocking_task(&first, 2.0, "first"));
        wait_until("the first task runs", || first.exists()).await;
        // Admitted (prefetch 1) but waiting: the only process is busy.
        let slot = pool.reserve().await;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let t = blocking_task(&queued, 0.0, "queued");
        let waiting = tokio::spawn(slot.run_until(t, async {
            let _ = stop_rx.await;
        }));
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop_tx.send(()).unwrap();
        platform_failure(
            waiting.await.unwrap(),
            "TaskCancelled: the run was cancelled before it started",
        );
        python::check(&completed(running.await.unwrap()), "assert v == 'first'");
        assert_next_task_ok(&pool).await;
        assert!(!queued.exists(), "{isolation:?}: the cancelled task ran");
        assert_eq!(pool.available(), pool.capacity());
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_fails_queued_tasks() {
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let pool = std::sync::Arc::new(prefetching_pool(isolation, 1, 1).await);
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first");
        let queued = dir.path().join("queued");
        let running = spawn_run(&pool, blocking_task(&first, 60.0, "first"));
        wait_until("the first task runs", || first.exists()).await;
        let waiting = spawn_run(&pool, blocking_task(&queued, 0.0, "queued"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        pool.shutdown().await;
        platform_failure(
            running.await.unwrap(),
            "WorkerFailure: the executor pool was shut down",
        );
        platform_failure(waiting.await.unwrap(), "WorkerFailure: ");
        assert!(!queued.exists(), "{isolation:?}: the queued task ran");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_queued_behind_a_crash_or_timeout_still_run() {
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let pool = std::sync::Arc::new(prefetching_pool(isolation, 1, 2).await);
        let dir = tempfile::tempdir().unwrap();
        let crash_flag = dir.path().join("crash");
        let crash = task(
            "import os, time\ndef f(path):\n    open(path, 'w').write('x')\n    time.sleep(0.3)\n    os.kill(os.getpid(), 9)",
            &format!("(({:?},), {{}})", crash_flag.display().to_string()),
        );
        let mut hang = task("import time\ndef f():\n    time.sleep(60)", "((), {})");
        hang.timeout = Some(Duration::from_millis(500));
        let crashing = spawn_run(&pool, crash);
        wait_until("the crashing task runs", || crash_flag.exists()).await;
        let timing_out = spawn_run(&pool, hang);
        // Queued behind both: its timeout counts from its own start, not from its admission.
        let mut behind = task(
            "import time\ndef f():\n    time.sleep(0.3)\n    return 'behind'",
            "((), {})",
        );
        behind.timeout = Some(Duration::from_millis(1000));
        let behind = spawn_run(&pool, behind);
        platform_failure(crashing.await.unwrap(), "ExecutorCrashed: ");
        platform_failure(timing_out.await.unwrap(), "TaskTimeout: ");
        python::check(&completed(behind.await.unwrap()), "assert v == 'behind'");
        assert_next_task_ok(&pool).await;
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_task_does_not_wait_behind_a_long_one() {
    let pool = std::sync::Arc::new(prefetching_pool(Isolation::Reuse, 2, 2).await);
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("long");
    let long_run = spawn_run(&pool, blocking_task(&long, 60.0, "long"));
    wait_until("the long task runs", || long.exists()).await;
    // Every one of these runs on the other process while the long one blocks its own.
    for i in 0..5 {
        let short = dir.path().join(format!("short{i}"));
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            pool.run(blocking_task(&short, 0.0, "short")),
        )
        .await
        .expect("a short task never waits for the long one");
        python::check(&completed(out), "assert v == 'short'");
    }
    pool.shutdown().await;
    platform_failure(long_run.await.unwrap(), "WorkerFailure: ");
}

/// The zygote's children: (pid, command line).
fn children_of(pid: u32) -> Vec<(u32, String)> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) else {
        return Vec::new();
    };
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .map(|p| (p, cmdline(p)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_ahead_keeps_a_spare_and_a_spare_killed_unused_is_replaced_silently() {
    let pool = pool(Isolation::Fork, 1).await;
    let (task_pid, zygote) = pids_of(&pool).await;
    let spare = || {
        let kids = children_of(zygote);
        (kids.len() == 1).then(|| kids[0].0)
    };
    wait_until("one spare child waits", || spare().is_some()).await;
    let first = spare().unwrap();
    assert_ne!(
        first, task_pid,
        "the task's child is gone; a new spare waits"
    );
    for _ in 0..2 {
        let victim = spare().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_until("the dead spare is reaped", || gone(victim)).await;
        // The next task runs (on a fresh spare), and nothing was reported for the dead one.
        let (pid, parent) = pids_of(&pool).await;
        assert_eq!(parent, zygote);
        assert_ne!(pid, victim);
    }
    let stats = pool.stats().await;
    assert_eq!(stats.pids, vec![zygote]);
    assert_eq!(stats.restarts, 0);
    pool.shutdown().await;
}
