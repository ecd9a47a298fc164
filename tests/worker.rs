//! Integration tests of the worker daemon against a fake dispatcher (`util/zmq.rs`): real ZeroMQ
//! sockets, real executor processes (interpreter from `$FAAS_TEST_PYTHON`), both modes.

mod util;

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use faas::config::{WorkerConfig, WorkerMode};
use faas::protocol::{Header, ResultMeta, TaskMeta, TaskRef, VERSION};
use faas::shutdown::ShutdownTrigger;
use faas::worker::WorkerError;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use util::python;
use util::zmq::{kinds, FakeDispatcher, Msg};

const HB_MS: u64 = 100;
const HB: Duration = Duration::from_millis(HB_MS);
/// Bound for one expected message (generous: two cores, Python processes).
const T: Duration = Duration::from_secs(10);
/// Bound for the first `hello` (the executor pool starts first).
const START: Duration = Duration::from_secs(30);

/// Tests are timing-sensitive; run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Function and argument pickles used by the tests.
struct Pickles {
    double: Bytes,
    args21: Bytes,
    div0: Bytes,
    no_args: Bytes,
    sleep: Bytes,
}

fn pickles() -> &'static Pickles {
    static P: OnceLock<Pickles> = OnceLock::new();
    sleep_args(SLEEP_SECS[0]);
    P.get_or_init(|| {
        let mut p = python::pickles(
            "import time",
            &[
                "lambda x: x * 2",
                "((21,), {})",
                "lambda: 1 / 0",
                "((), {})",
                "lambda s: time.sleep(s) or 'slept'",
            ],
            None,
        )
        .into_iter()
        .map(Bytes::from);
        let mut next = || p.next().expect("pickle");
        Pickles {
            double: next(),
            args21: next(),
            div0: next(),
            no_args: next(),
            sleep: next(),
        }
    })
}

/// The `sleep` durations tests use: their argument pickles are made with the others, in one
/// Python run before any worker starts. Pickling on demand ran Python (150+ ms on a slow machine)
/// between a worker's welcome and the fake dispatcher's first ping, longer than the 300 ms after
/// which the worker gives the dispatcher up, and the test then waited for ever.
const SLEEP_SECS: [f64; 7] = [0.2, 0.3, 0.7, 0.8, 1.0, 2.0, 30.0];

fn sleep_args(secs: f64) -> Bytes {
    static ARGS: OnceLock<Vec<Bytes>> = OnceLock::new();
    let args = ARGS.get_or_init(|| {
        let exprs: Vec<String> = SLEEP_SECS
            .iter()
            .map(|s| format!("(({s},), {{}})"))
            .collect();
        let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
        python::pickles("", &exprs, None)
            .into_iter()
            .map(Bytes::from)
            .collect()
    });
    let i = SLEEP_SECS
        .iter()
        .position(|s| *s == secs)
        .unwrap_or_else(|| panic!("add {secs} to SLEEP_SECS"));
    args[i].clone()
}

/// A task with its two blobs.
struct Task {
    meta: TaskMeta,
    blobs: [Bytes; 2],
}

impl Task {
    fn new(f: &Bytes, args: &Bytes) -> Self {
        Task {
            meta: TaskMeta {
                task: TaskRef {
                    task_id: uuid::Uuid::new_v4(),
                    attempt: 1,
                },
                function_id: uuid::Uuid::new_v4(),
                timeout_ms: None,
            },
            blobs: [f.clone(), args.clone()],
        }
    }

    fn r(&self) -> TaskRef {
        self.meta.task
    }
}

fn tasks(list: &[&Task], acks: Vec<TaskRef>) -> (Header, Vec<Bytes>) {
    let h = Header::Tasks {
        tasks: list.iter().map(|t| t.meta.clone()).collect(),
        acks,
    };
    (h, list.iter().flat_map(|t| t.blobs.clone()).collect())
}

fn welcome(heartbeat_ms: u64) -> Header {
    Header::Welcome {
        dispatcher: "fake".into(),
        heartbeat_ms,
        heartbeat_misses: 3,
    }
}

/// A worker running in this process.
struct Worker {
    handle: JoinHandle<Result<(), WorkerError>>,
    trigger: ShutdownTrigger,
}

fn start(mode: WorkerMode, slots: usize, d: &FakeDispatcher) -> Worker {
    util::init_tracing();
    if mode == WorkerMode::Pull {
        d.serve_heartbeats();
    }
    let cfg = util::worker::config(mode, slots, d.endpoint(), "test", HB_MS);
    let (trigger, shutdown) = faas::shutdown::channel();
    Worker {
        // On one thread, as the daemon runs.
        handle: util::on_one_thread(move || faas::worker::run(cfg, shutdown)),
        trigger,
    }
}

fn is_req(m: &Msg) -> bool {
    m.envelope.len() == 2
}

/// Results a `fetch` or `report` carries, with their blobs.
fn results(m: &Msg) -> Vec<(ResultMeta, Bytes)> {
    match &m.header {
        Header::Fetch { results, .. } | Header::Report { results, .. } => results
            .iter()
            .cloned()
            .zip(m.blobs.iter().cloned())
            .collect(),
        _ => vec![],
    }
}

fn refs(m: &Msg) -> Vec<TaskRef> {
    results(m).into_iter().map(|(r, _)| r.task).collect()
}

/// The answer to a `fetch` or `report` that acknowledges nothing.
fn without_acks(m: &Msg) -> Header {
    match &m.header {
        Header::Fetch { .. } => Header::Nothing { acks: vec![] },
        _ => Header::Ack { acks: vec![] },
    }
}

/// Answers like a cooperative dispatcher: welcome, acknowledge every result at once.
async fn answer(d: &FakeDispatcher, m: &Msg) {
    let acks = refs(m);
    match &m.header {
        Header::Hello { .. } => d.reply(m, welcome(HB_MS), vec![]).await,
        Header::Fetch { .. } => d.reply(m, Header::Nothing { acks }, vec![]).await,
        Header::Report { .. } => d.reply(m, Header::Ack { acks }, vec![]).await,
        Header::Bye { .. } if is_req(m) => d.reply(m, Header::Ack { acks }, vec![]).await,
        _ => {}
    }
}

/// Serves the worker (answering everything) until `run` returns; returns its result and all
/// messages seen.
async fn serve_until_stopped(
    d: &mut FakeDispatcher,
    w: Worker,
    limit: Duration,
) -> (Result<(), WorkerError>, Vec<Msg>) {
    let mut handle = w.handle;
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut seen = Vec::new();
    loop {
        tokio::select! {
            r = &mut handle => return (r.expect("worker task"), seen),
            Some(m) = d.try_recv(Duration::from_secs(3600)) => {
                answer(d, &m).await;
                seen.push(m);
            }
            _ = &mut deadline => panic!("worker did not stop within {limit:?}; saw {:?}", kinds(&seen)),
        }
    }
}

/// Triggers shutdown and serves until the worker stopped; asserts it said `bye` and ended Ok.
async fn stop(d: &mut FakeDispatcher, w: Worker) -> Vec<Msg> {
    w.trigger.trigger();
    let (r, seen) = serve_until_stopped(d, w, T).await;
    assert!(r.is_ok(), "run() failed: {r:?}");
    assert!(
        seen.iter().any(|m| m.kind() == "bye"),
        "no bye; saw {:?}",
        kinds(&seen)
    );
    seen
}

/// The first `hello`, checked; answered with `welcome`.
async fn registered(d: &mut FakeDispatcher, slots: u32, heartbeat_ms: u64) -> Msg {
    let (hello, _) = d.recv_kind("hello", START).await;
    match &hello.header {
        Header::Hello { worker, running } => {
            assert_eq!(worker.slots, slots);
            assert_eq!(worker.pid, std::process::id());
            assert_eq!(worker.protocol, VERSION);
            assert_eq!(worker.version, env!("CARGO_PKG_VERSION"));
            assert!(worker.id.starts_with("test-"));
            assert!(running.is_empty());
        }
        _ => unreachable!(),
    }
    d.reply(&hello, welcome(heartbeat_ms), vec![]).await;
    hello
}

/// Collects results of `want` tasks, answering everything (results acknowledged).
async fn collect(d: &mut FakeDispatcher, want: &[TaskRef]) -> Vec<(ResultMeta, Bytes)> {
    let deadline = Instant::now() + T;
    let mut got: Vec<(ResultMeta, Bytes)> = Vec::new();
    while !want.iter().all(|t| got.iter().any(|(r, _)| r.task == *t)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = d.recv(left).await;
        for (r, b) in results(&m) {
            if !got.iter().any(|(g, _)| g.task == r.task) {
                got.push((r, b));
            }
        }
        answer(d, &m).await;
    }
    got
}

fn check_double_and_div0(got: &[(ResultMeta, Bytes)], double: &Task, div0: &Task) {
    let (ok, blob) = got
        .iter()
        .find(|(r, _)| r.task == double.r())
        .expect("result");
    assert!(ok.ok, "{ok:?}");
    assert_eq!(python::eval(blob, "v"), "42");
    let (bad, blob) = got
        .iter()
        .find(|(r, _)| r.task == div0.r())
        .expect("result");
    assert!(!bad.ok);
    assert!(bad.cause.starts_with("ZeroDivisionError"), "{}", bad.cause);
    assert!(python::describe(blob).starts_with("ZeroDivisionError"));
}

// ---------------------------------------------------------------- 1. tasks and results

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_runs_tasks_and_hands_in_results() {
    let _serial = SERIAL.lock().await;
    let p = pickles();
    let mut d = FakeDispatcher::bind(0).await;
    let w = start(WorkerMode::Pull, 2, &d);
    registered(&mut d, 2, HB_MS).await;
    let (f, _) = d.recv_kind("fetch", T).await;
    assert!(matches!(&f.header, Header::Fetch { free: 2, results, .. } if results.is_empty()));
    let double = Task::new(&p.double, &p.args21);
    let div0 = Task::new(&p.div0, &p.no_args);
    let (h, blobs) = tasks(&[&double, &div0], vec![]);
    d.reply(&f, h, blobs).await;
    let got = collect(&mut d, &[double.r(), div0.r()]).await;
    check_double_and_div0(&got, &double, &div0);
    stop(&mut d, w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_runs_tasks_and_reports_results() {
    let _serial = SERIAL.lock().await;
    let p = pickles();
    let mut d = FakeDispatcher::bind(0).await;
    let w = start(WorkerMode::Push, 2, &d);
    let hello = registered(&mut d, 2, HB_MS).await;
    assert_eq!(hello.envelope.len(), 1, "push mode uses a DEALER");
    d.ping_every(&hello, HB);
    let double = Task::new(&p.double, &p.args21);
    let div0 = Task::new(&p.div0, &p.no_args);
    let (h, blobs) = tasks(&[&double, &div0], vec![]);
    d.reply(&hello, h, blobs).await;
    let got = collect(&mut d, &[double.r(), div0.r()]).await;
    check_double_and_div0(&got, &double, &div0);
    stop(&mut d, w).await;
}

// ---------------------------------------------------------------- 2. pull: fetch discipline

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_fetches_only_for_free_slots_or_liveness_and_resends_until_acked() {
    let _serial = SERIAL.lock().await;
    let p = pickles();
    let mut d = FakeDispatcher::bind(0).await;
    let w = start(WorkerMode::Pull, 1, &d);
    registered(&mut d, 1, HB_MS).await;
    let (f, _) = d.recv_kind("fetch", T).await;
    let slow = Task::new(&p.sleep, &sleep_args(0.8));
    let (h, blobs) = tasks(&[&slow], vec![]);
    d.reply(&f, h, blobs).await;

    // While the only slot is busy: nothing but liveness fetches{free: 0}, about every interval.
    let mut liveness: Vec<Instant> = Vec::new();
    // Fetches asking for work without the result: only when the result went out on the report
    // socket (the task finished while a liveness fetch was out), whichever arrives here first.
    // Until the result arrives, on a fetch or a report, nothing is acknowledged.
    let mut free_without_result = 0;
    let carrier = loop {
        let m = d.recv(T).await;
        match &m.header {
            Header::Fetch { free, results, .. } if results.is_empty() => {
                if *free == 0 {
                    liveness.push(m.at);
                } else {
                    free_without_result += 1;
                }
                d.reply(&m, Header::Nothing { acks: vec![] }, vec![]).await;
            }
            Header::Fetch { .. } | Header::Report { .. } => break m,
            other => panic!("unexpected {}", other.kind()),
        }
    };
    assert!(
        free_without_result == 0 || carrier.kind() == "report",
        "{free_without_result} fetches with free slots while the only slot was busy"
    );
    assert!(
        (3..=12).contains(&liveness.len()),
        "{} liveness fetches in 0.8 s",
        liveness.len()
    );
    for pair in liveness.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= HB * 7 / 10, "liveness fetches {gap:?} apart");
    }

    // A fetch carrying the result asks for work again.
    if let Header::Fetch { free, .. } = &carrier.header {
        assert_eq!(*free, 1);
    }
    assert_eq!(refs(&carrier), vec![slow.r()]);
    let (r, blob) = results(&carrier).remove(0);
    assert!(r.ok);
    assert_eq!(python::eval(&blob, "v"), "'slept'");

    // Not acknowledged → sent again one interval later, on whichever socket is free then.
    d.reply(&carrier, without_acks(&carrier), vec![]).await;
    let answered = Instant::now();
    let again = loop {
        let m = d.recv(T).await;
        if !refs(&m).is_empty() {
            break m;
        }
        d.reply(&m, without_acks(&m), vec![]).await;
    };
    assert_eq!(refs(&again), vec![slow.r()], "un-acked result sent again");
    let gap = again.at - answered;
    assert!(
        gap >= HB * 7 / 10,
        "sent again {gap:?} after an answer without its ack"
    );

    // Acknowledged → forgotten.
    answer(&d, &again).await;
    let quiet = Instant::now() + HB * 3;
    while let Some(m) = d
        .try_recv(quiet.saturating_duration_since(Instant::now()))
        .await
    {
        assert!(
            refs(&m).is_empty(),
            "acked result sent again: {:?}",
            m.header
        );
        answer(&d, &m).await;
    }
    stop(&mut d, w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_reports_while_a_fetch_is_parked_and_again_an_interval_after_no_ack() {
    let _serial = SERIAL.lock().await;
    let p = pickles();
    let mut d = FakeDispatcher::bind(0).await;
    let w = start(WorkerMode::Pull, 2, &d);
    // A long interval so the parked fetch does not time out while the task runs.
    let interval = Duration::from_millis(1000);
    registered(&mut d, 2, interval.as_millis() as u64).await;
    let (f, _) = d.recv_kind("fetch", T).await;
    let quick = Task::new(&p.sleep, &sleep_args(0.2));
    let (h, blobs) = tasks(&[&quick], vec![]);
    d.reply(&f, h, blobs).await;
    let (parked, _) = d.recv_kind("fetch", T).await;
    assert!(matches!(&parked.header, Header::Fetch { free: 1, results, .. } if results.is_empty()));
    let report = d.recv(T).await;
    assert_eq!(report.kind(), "report", "result while the fetch is parked");
    assert_ne!(
        report.envelope[0], parked.envelope[0],
        "on the other socket"
    );
    assert_eq!(refs(&report), vec![quick.r()]);

    // Answered at once without the ack, as a dispatcher still storing the result does: sent
    // again one interval later, not in a tight loop (it was, about 1,400 times a second).
    let answered = Instant::now();
    d.reply(&report, Header::Ack { acks: vec![] }, vec![]).await;
    let again = d.recv(T).await;
    assert_eq!(again.kind(), "report", "{:?}", again.header);
    assert_eq!(refs(&again), vec![quick.r()], "sent again, not lost");
    let gap = again.at - answered;
    assert!(
        gap >= interval * 7 / 10,
        "sent again {gap:?} after an answer without its ack"
    );
    d.reply(
        &again,
        Header::Ack {
            acks: vec![quick.r()],
        },
        vec![],
    )
    .await;
    d.reply(&parked, Header::Nothing { acks: vec![] }, vec![])
        .await;
    let next = d.recv(T).await;
    assert!(
        matches!(&next.header, Header::Fetch { free: 2, results, .. } if results.is_empty()),
        "acked on the report socket, so not sent again: {:?}",
        next.header
    );
    d.reply(&next, Header::Nothing { acks: vec![] }, vec![])
        .await;
    stop(&mut d, w).await;
}

// ---------------------------------------------------------------- 3. push: heartbeats, unknown

/// A registered push worker (2 slots, pinged every interval) that was just sent `task`.
async fn push_worker_with(d: &mut FakeDispatcher, task: &Task) -> (Worker, Msg) {
    let w = start(WorkerMode::Push, 2, d);
    let hello = registered(d, 2, HB_MS).await;
    d.ping_every(&hello, HB);
    let (h, blobs) = tasks(&[task], vec![]);
    d.reply(&hello, h, blobs).await;
    (w, hello)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_heartbeats_and_resends_results_after_unknown_until_acked() {
    let _serial = SERIAL.lock().await;
    let p = pickles();
    let mut d = FakeDispatcher::bind(0).await;
    let slow = Task::new(&p.sleep, &sleep_args(0.7));
    let (w, hello) = push_worker_with(&mut d, &slow).await;

    let mut beats: Vec<Instant> = Vec::new();
    let report = loop {
        let m = d.recv(T).await;
        match &m.header {
            // Sent before the `tasks` message was processed.
            Header::Heartbeat { running, .. } if beats.is_empty() && running.is_empty() => {}
            Header::Heartbeat { free, running, .. } => {
                assert_eq!((*free, running.clone()), (1, vec![slow.r()]));
                beats.push(m.at);
            }
            Header::Report { .. } => break m,
            other => panic!("unexpected {}", other.kind()),
        }
    };
    assert!(
        (4..=10).contains(&beats.len()),
        "{} heartbeats in 0.7 s",
        beats.len()
    );
    for pair in beats.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= HB * 7 / 10 && gap <= HB * 3,
            "heartbeats {gap:?} apart"
        );
    }
    assert_eq!(refs(&report), vec![slow.r()]);

    // Not acked; the dispatcher "restarted": hello again (listing the held result), then the
    // result once more.
    for _ in 0..2 {
        d.reply(&hello, Header::Unknown, vec![]).await;
        let (again, _) = d.recv_kind("hello", T).await;
        assert!(
            matches!(&again.header, Header::Hello { running, .. } if running == &vec![slow.r()])
        );
        d.reply(&again, welcome(HB_MS), vec![]).await;
        let (resent, _) = d.recv_kind("report", T).await;
        assert_eq!(refs(&resent), vec![slow.r()]);
    }
    d.reply(
        &hello,
        Header::Ack {
            acks: vec![slow.r()],
        },
        vec![],
    )
    .await;
    d.reply(&hello, Header::Unknown, vec![]).await;
    let (again, _) = d.recv_kind("hello", T).await;
    d.reply(&again, welcome(HB_MS), vec![]).await;
    let deadline = Instant::now() + HB * 5;
    while let Some(m) = d
        .try_recv(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        match &m.header {
            Header::Heartbeat { free, running, .. } => assert_eq!((*free, running.len()), (2, 0)),
            other => panic!("acked result must not be reported again ({})", other.kind()),
        }
    }
    stop(&mut d, w).await;
}

// ---------------------------------------------------------------- 4. dispatcher restart

async fn reconnects_after_dispatcher_restart(mode: WorkerMode) {
    let p = pickles();
    let mut d = FakeDispatcher::bind(0).await;
    let port = d.port;
    let w = start(mode, 2, &d);
    let hello = registered(&mut d, 2, HB_MS).await;
    let long = Task::new(&p.sleep, &sleep_args(2.0));
    let short = Task::new(&p.sleep, &sleep_args(0.3));
    let (h, blobs) = tasks(&[&long, &short], vec![]);
    match mode {
        WorkerMode::Push => {
            d.ping_every(&hello, HB);
            d.reply(&hello, h, blobs).await;
        }
        WorkerMode::Pull => {
            let (f, _) = d.recv_kind("fetch", T).await;
            d.reply(&f, h, blobs).await;
        }
    }
    // Close only once the worker holds both (its heartbeat or fetch lists them).
    let deadline = Instant::now() + T;
    loop {
        let m = d
            .recv(deadline.saturating_duration_since(Instant::now()))
            .await;
        let held = match &m.header {
            Header::Heartbeat { running, .. } | Header::Fetch { running, .. } => running.clone(),
            _ => vec![],
        };
        if m.kind() == "fetch" {
            d.reply(&m, Header::Nothing { acks: vec![] }, vec![]).await;
        }
        if held.contains(&long.r()) && held.contains(&short.r()) {
            break;
        }
    }
    d.close().await;
    // `short` finishes while the dispatcher is away.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut d = FakeDispatcher::bind(port).await;
    if mode == WorkerMode::Pull {
        d.serve_heartbeats();
    }
    let back = Instant::now();
    let (hello, _) = d.recv_kind("hello", T).await;
    assert!(
        hello.at - back < Duration::from_secs(3),
        "hello {:?} after the restart",
        hello.at - back
    );
    // Both are held: `long` runs, `short`'s result waits for its ack.
    match &hello.header {
        Header::Hello { running, .. } => {
            let mut want = vec![long.r(), short.r()];
            want.sort_by_key(|t| (t.task_id, t.attempt));
            assert_eq!(running, &want);
        }
        _ => unreachable!(),
    }
    d.reply(&hello, welcome(HB_MS), vec![]).await;
    if mode == WorkerMode::Push {
        d.ping_every(&hello, HB);
    }
    let got = collect(&mut d, &[short.r()]).await;
    assert!(got[0].0.ok);
    let got = collect(&mut d, &[long.r()]).await;
    assert!(got.iter().any(|(r, _)| r.task == long.r() && r.ok));
    stop(&mut d, w).await;
}

// Two threads: the pull worker opens three guarded connections at once, and on the test's single
// thread (shared with the fake dispatcher) its first `hello` sometimes missed the 300 ms budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_reconnects_after_dispatcher_restart() {
    let _serial = SERIAL.lock().await;
    reconnects_after_dispatcher_restart(WorkerMode::Pull).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_reconnects_after_dispatcher_restart() {
    let _serial = SERIAL.lock().await;
    reconnects_after_dispatcher_restart(WorkerMode::Push).await;
}

// ---------------------------------------------------------------- 5. graceful stop

async fn graceful_stop_reports_running_task(mode: WorkerMode) {
    let p = pickles();
    let mut d = FakeDispatcher::bind(0).await;
    let w = start(mode, 1, &d);
    let hello = registered(&mut d, 1, HB_MS).await;
    let slow = Task::new(&p.sleep, &sleep_args(1.0));
    let (h, blobs) = tasks(&[&slow], vec![]);
    match mode {
        WorkerMode::Push => {
            d.ping_every(&hello, HB);
            d.reply(&hello, h, blobs).await;
        }
        WorkerMode::Pull => {
            let (f, _) = d.recv_kind("fetch", T).await;
            d.reply(&f, h, blobs).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    let seen = stop(&mut d, w).await;
    let bye = seen.iter().position(|m| m.kind() == "bye").expect("bye");
    let result = seen
        .iter()
        .position(|m| refs(m).contains(&slow.r()))
        .expect("the running task's result is still reported");
    assert!(bye < result, "bye first: {:?}", kinds(&seen));
    assert!(results(&seen[result])[0].0.ok);
    assert!(stopping.elapsed() < Duration::from_secs(4));
    let after_bye = &seen[bye..];
    assert!(
        after_bye.iter().all(|m| match &m.header {
            Header::Fetch { free, .. } | Header::Heartbeat { free, .. } => *free == 0,
            _ => true,
        }),
        "no free slots announced after bye: {:?}",
        after_bye.iter().map(|m| &m.header).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_graceful_stop_reports_running_task() {
    let _serial = SERIAL.lock().await;
    graceful_stop_reports_running_task(WorkerMode::Pull).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_graceful_stop_reports_running_task() {
    let _serial = SERIAL.lock().await;
    graceful_stop_reports_running_task(WorkerMode::Push).await;
}

// ---------------------------------------------------------------- 6. refused

async fn refused_ends_run_with_error(mode: WorkerMode) {
    let mut d = FakeDispatcher::bind(0).await;
    let w = start(mode, 1, &d);
    let (hello, _) = d.recv_kind("hello", START).await;
    let reason = "protocol 1 is not supported";
    d.reply(
        &hello,
        Header::Refused {
            reason: reason.into(),
        },
        vec![],
    )
    .await;
    let r = tokio::time::timeout(T, w.handle)
        .await
        .expect("run() returns")
        .expect("worker task");
    assert!(
        matches!(&r, Err(WorkerError::Refused(why)) if why == reason),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_refused_ends_run_with_error() {
    let _serial = SERIAL.lock().await;
    refused_ends_run_with_error(WorkerMode::Pull).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_refused_ends_run_with_error() {
    let _serial = SERIAL.lock().await;
    refused_ends_run_with_error(WorkerMode::Push).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_endpoint_is_an_error() {
    let (_trigger, shutdown) = faas::shutdown::channel();
    let cfg = WorkerConfig {
        dispatcher: "not an endpoint".into(),
        ..WorkerConfig::default()
    };
    let r = faas::worker::run(cfg, shutdown).await;
    assert!(matches!(r, Err(WorkerError::Endpoint { .. })), "{r:?}");
}

// ---------------------------------------------------------------- 5. cancel

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_cancel_kills_the_run_and_frees_its_slot() {
    let _serial = SERIAL.lock().await;
    let p = pickles();
    let mut d = FakeDispatcher::bind(0).await;
    let long = Task::new(&p.sleep, &sleep_args(30.0));
    let (w, hello) = push_worker_with(&mut d, &long).await;
    loop {
        let m = d.recv(T).await;
        if matches!(&m.header, Header::Heartbeat { running, .. } if running.contains(&long.r())) {
            break;
        }
    }
    d.reply(
        &hello,
        Header::Cancel {
            tasks: vec![long.r()],
        },
        vec![],
    )
    .await;
    // The run is forgotten (never reported) and its slot is free again.
    loop {
        let m = d.recv(T).await;
        match &m.header {
            Header::Heartbeat { free, running, .. } if running.is_empty() => {
                assert_eq!(*free, 2);
                break;
            }
            Header::Heartbeat { .. } => {}
            other => panic!("unexpected {} after cancel", other.kind()),
        }
    }
    let quick = Task::new(&p.double, &p.args21);
    let (h, blobs) = tasks(&[&quick], vec![]);
    d.reply(&hello, h, blobs).await;
    let got = collect(&mut d, &[quick.r()]).await;
    assert!(
        got.iter().all(|(r, _)| r.task != long.r()),
        "a cancelled run is never reported"
    );
    stop(&mut d, w).await;
}

/// Runs beyond the processes wait for one (prefetch): the worker lists them as held, a cancel
/// of a waiting run drops it before it starts (never reported), and the others run in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_runs_waiting_for_a_process_are_held_listed_and_cancellable() {
    let _serial = SERIAL.lock().await;
    let p = pickles();
    let mut d = FakeDispatcher::bind(0).await;
    let w = start(WorkerMode::Push, 1, &d);
    let hello = registered(&mut d, 1, HB_MS).await;
    let Header::Hello { worker, .. } = &hello.header else {
        unreachable!()
    };
    assert!(worker.capacity() >= 1, "{worker:?}");
    d.ping_every(&hello, HB);
    let long = Task::new(&p.sleep, &sleep_args(30.0));
    let waiting = Task::new(&p.double, &p.args21);
    let next = Task::new(&p.double, &p.args21);
    let (h, blobs) = tasks(&[&long, &waiting, &next], vec![]);
    d.reply(&hello, h, blobs).await;
    let all = [long.r(), waiting.r(), next.r()];
    loop {
        let m = d.recv(T).await;
        if matches!(&m.header, Header::Heartbeat { running, free, .. }
            if all.iter().all(|t| running.contains(t)) && *free == 0)
        {
            break;
        }
    }
    // Cancel the first waiting run, then the long one: the last one runs and is reported.
    let cancel = |t: TaskRef| Header::Cancel { tasks: vec![t] };
    d.reply(&hello, cancel(waiting.r()), vec![]).await;
    loop {
        let m = d.recv(T).await;
        if let Header::Heartbeat { running, .. } = &m.header {
            if !running.contains(&waiting.r()) {
                assert!(running.contains(&long.r()) && running.contains(&next.r()));
                break;
            }
        }
        assert!(refs(&m).is_empty(), "nothing finished yet: {m:?}");
    }
    d.reply(&hello, cancel(long.r()), vec![]).await;
    let got = collect(&mut d, &[next.r()]).await;
    assert!(
        got.iter()
            .all(|(r, _)| r.task != waiting.r() && r.task != long.r()),
        "cancelled runs are never reported"
    );
    stop(&mut d, w).await;
}

/// A run that times out frees its process for the run queued behind it, which then completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_a_timeout_frees_the_process_for_the_run_queued_behind() {
    let _serial = SERIAL.lock().await;
    let p = pickles();
    let mut d = FakeDispatcher::bind(0).await;
    let w = start(WorkerMode::Push, 1, &d);
    let hello = registered(&mut d, 1, HB_MS).await;
    d.ping_every(&hello, HB);
    let mut slow = Task::new(&p.sleep, &sleep_args(30.0));
    slow.meta.timeout_ms = Some(300);
    let behind = Task::new(&p.double, &p.args21);
    let (h, blobs) = tasks(&[&slow, &behind], vec![]);
    d.reply(&hello, h, blobs).await;
    let got = collect(&mut d, &[slow.r(), behind.r()]).await;
    let (timed_out, _) = got
        .iter()
        .find(|(r, _)| r.task == slow.r())
        .expect("result");
    assert!(
        !timed_out.ok && timed_out.cause.contains("TaskTimeout"),
        "{timed_out:?}"
    );
    let (ok, blob) = got
        .iter()
        .find(|(r, _)| r.task == behind.r())
        .expect("result");
    assert!(ok.ok, "{ok:?}");
    assert_eq!(python::eval(blob, "v"), "42");
    stop(&mut d, w).await;
}
