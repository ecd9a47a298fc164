//! Integration tests of the executor pool with real Python processes (interpreter from
//! `$FAAS_TEST_PYTHON`, see `util/python.rs`).

#[path = "util/python.rs"]
mod python;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use faas::executor::{ExecutorConfig, ExecutorError, ExecutorPool, Isolation, Outcome, TaskSpec};

fn config(isolation: Isolation) -> ExecutorConfig {
    ExecutorConfig {
        python: python::python(),
        isolation,
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
        assert_eq!(pool.available(), 4);
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_slots_can_move_into_spawned_tasks() {
    let pool = pool(Isolation::Fork, 2).await;
    let slot = pool.reserve().await;
    assert_eq!(pool.available(), 1);
    let t = task(OK_TASK, "((1,), {})");
    let out = tokio::spawn(slot.run(t)).await.unwrap();
    python::check(&completed(out), "assert v == {'sum': 2}");
    assert_eq!(pool.available(), 2);
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
    let mut exe = process::spawn(&config(Isolation::Fork), Mode::Zygote)
        .await
        .unwrap();
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
        ..ExecutorConfig::default()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_run_in_the_configured_workdir() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().canonicalize().unwrap();
    for isolation in [Isolation::Fork, Isolation::Reuse] {
        let cfg = ExecutorConfig {
            workdir: Some(workdir.clone()),
            ..config(isolation)
        };
        let pool = ExecutorPool::start(cfg, 1).await.unwrap();
        let r = completed(
            pool.run(task(
                "import os\ndef f():\n    return os.getcwd()",
                "((), {})",
            ))
            .await,
        );
        assert_eq!(
            python::eval(&r, "v"),
            format!("{:?}", workdir.display().to_string()).replace('"', "'")
        );
        pool.shutdown().await;
    }
}
