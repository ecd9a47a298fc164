//! Dispatcher pull/push modes against fake workers speaking the protocol over real ZeroMQ sockets.

mod util;

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use faas::config::Mode;
use faas::protocol::{
    decode, encode, Decoded, Header, ResultMeta, TaskMeta, TaskRef, WorkerInfo, VERSION,
};
use faas::store::TaskStatus;
use util::python;
use util::remote::{connect_dealer, send, Env};
use zeromq::{DealerSocket, ReqSocket, Socket, SocketRecv, SocketSend};

fn info(id: &str, slots: u32, protocol: u32) -> WorkerInfo {
    WorkerInfo {
        id: id.into(),
        slots,
        capacity: None,
        host: "test".into(),
        pid: std::process::id(),
        version: "test".into(),
        protocol,
        runtime: Default::default(),
    }
}

async fn recv_dealer(s: &mut DealerSocket) -> Decoded {
    let m = tokio::time::timeout(Duration::from_secs(5), s.recv())
        .await
        .expect("message within 5 s")
        .expect("recv");
    decode(m.into_vec()).expect("decode")
}

/// Receives until a message that is not a ping/ack arrives.
async fn recv_significant(s: &mut DealerSocket) -> Decoded {
    loop {
        let d = recv_dealer(s).await;
        if !matches!(d.header, Header::Ping | Header::Ack { .. }) {
            return d;
        }
    }
}

fn ok_result(env: &Env, t: TaskRef) -> (Header, Vec<Bytes>) {
    env.ok_report("w1", t)
}

/// A fake push worker's first exchange: `hello` as `worker` (running nothing), answered by a
/// `welcome`; then `meanwhile` runs (e.g. submits a task: `async {}` when the test queued its
/// tasks before), and the first `tasks` message arrives (pings and acks skipped), with two blob
/// frames per task. Returns the welcome, what `meanwhile` returned and the tasks sent.
async fn hello_and_first_tasks<T>(
    w: &mut DealerSocket,
    worker: WorkerInfo,
    meanwhile: impl Future<Output = T>,
) -> (Header, T, Vec<TaskMeta>) {
    let hello = Header::Hello {
        worker,
        running: vec![],
    };
    send(w, &hello, vec![]).await;
    let welcome = recv_dealer(w).await.header;
    assert!(
        matches!(welcome, Header::Welcome { .. }),
        "expected welcome, got {welcome:?}"
    );
    let got = meanwhile.await;
    let d = recv_significant(w).await;
    let Header::Tasks { tasks, .. } = d.header else {
        panic!("expected tasks, got {:?}", d.header)
    };
    assert_eq!(d.blobs.len(), 2 * tasks.len(), "two blobs per task");
    (welcome, got, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_worker_gets_tasks_and_its_results_are_stored() {
    let env = Env::new().await;
    let (stop, handle) = env.spawn(env.config(Mode::Push, 50));
    let mut w = connect_dealer(&env).await;
    let (welcome, t, tasks) =
        hello_and_first_tasks(&mut w, info("w1", 2, VERSION), env.submit()).await;
    assert!(matches!(
        welcome,
        Header::Welcome {
            heartbeat_ms: 100,
            heartbeat_misses: 50,
            ..
        }
    ));
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].task.task_id, t);
    assert_eq!(
        env.store.task_status(&t).await.expect("status"),
        Some(TaskStatus::Running)
    );
    let (h, blobs) = ok_result(&env, tasks[0].task);
    send(&mut w, &h, blobs).await;
    env.wait_status(&t, TaskStatus::Completed, Duration::from_secs(5))
        .await;
    // The stored result is acknowledged.
    loop {
        if let Header::Ack { acks } = recv_dealer(&mut w).await.header {
            if acks.contains(&tasks[0].task) {
                break;
            }
        }
    }
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_worker_that_goes_silent_loses_its_task_as_worker_failure() {
    let env = Env::new().await;
    let (stop, handle) = env.spawn(env.config(Mode::Push, 3));
    let mut w = connect_dealer(&env).await;
    let (_, t, tasks) = hello_and_first_tasks(&mut w, info("w1", 1, VERSION), env.submit()).await;
    // Silence: no heartbeats. Threshold is 100 ms × 3.
    let took = env
        .wait_status(&t, TaskStatus::Failed, Duration::from_secs(5))
        .await;
    assert!(took < Duration::from_secs(2), "detected after {took:?}");
    let v = env.store.task_view(&t).await.expect("view").expect("task");
    let text = python::describe(&v.result.expect("result"));
    assert!(
        text.starts_with("WorkerFailure: WorkerFailure: worker w1"),
        "{text}"
    );
    // A late result is acknowledged but does not change the task.
    send(
        &mut w,
        &Header::Hello {
            worker: info("w1", 1, VERSION),
            running: vec![],
        },
        vec![],
    )
    .await;
    let (h, blobs) = ok_result(&env, tasks[0].task);
    send(&mut w, &h, blobs).await;
    loop {
        if let Header::Ack { acks } = recv_dealer(&mut w).await.header {
            if acks.contains(&tasks[0].task) {
                break;
            }
        }
    }
    assert_eq!(
        env.store.task_status(&t).await.expect("status"),
        Some(TaskStatus::Failed)
    );
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_workers_are_asked_to_register_and_bad_versions_refused() {
    let env = Env::new().await;
    let (stop, handle) = env.spawn(env.config(Mode::Push, 50));
    let mut w = connect_dealer(&env).await;
    send(
        &mut w,
        &Header::Heartbeat {
            worker_id: "ghost".into(),
            free: 1,
            running: vec![],
        },
        vec![],
    )
    .await;
    assert_eq!(recv_dealer(&mut w).await.header, Header::Unknown);
    send(
        &mut w,
        &Header::Hello {
            worker: info("w9", 1, VERSION + 1),
            running: vec![],
        },
        vec![],
    )
    .await;
    assert!(matches!(
        recv_dealer(&mut w).await.header,
        Header::Refused { .. }
    ));
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_fetch_is_parked_until_work_arrives() {
    let env = Env::new().await;
    let (stop, handle) = env.spawn(env.config(Mode::Pull, 50));
    let mut req = ReqSocket::new();
    tokio::time::timeout(Duration::from_secs(5), req.connect(&env.endpoint()))
        .await
        .expect("connect in time")
        .expect("connect");
    let ask = |h: Header| encode(&[], &h, vec![]);
    req.send(ask(Header::Hello {
        worker: info("p1", 1, VERSION),
        running: vec![],
    }))
    .await
    .expect("send");
    let d = decode(req.recv().await.expect("recv").into_vec()).expect("decode");
    assert!(matches!(d.header, Header::Welcome { .. }));
    // No work: the fetch is answered with `nothing` after about one interval, not at once.
    let started = Instant::now();
    req.send(ask(Header::Fetch {
        running: vec![],
        worker_id: "p1".into(),
        free: 1,
        results: vec![],
    }))
    .await
    .expect("send");
    let d = decode(req.recv().await.expect("recv").into_vec()).expect("decode");
    assert!(matches!(d.header, Header::Nothing { .. }), "{:?}", d.header);
    assert!(started.elapsed() >= Duration::from_millis(50));
    // Work arriving while parked is handed over in the parked answer.
    req.send(ask(Header::Fetch {
        running: vec![],
        worker_id: "p1".into(),
        free: 1,
        results: vec![],
    }))
    .await
    .expect("send");
    let t = env.submit().await;
    let d = decode(req.recv().await.expect("recv").into_vec()).expect("decode");
    let Header::Tasks { tasks, .. } = d.header else {
        panic!("expected tasks, got {:?}", d.header)
    };
    assert_eq!(tasks[0].task.task_id, t);
    // The result rides on the next fetch and is acknowledged later.
    let result = Header::Fetch {
        running: vec![],
        worker_id: "p1".into(),
        free: 1,
        results: vec![ResultMeta {
            task: tasks[0].task,
            ok: true,
            cause: String::new(),
        }],
    };
    req.send(encode(&[], &result, vec![env.result_pickle.clone()]))
        .await
        .expect("send");
    env.wait_status(&t, TaskStatus::Completed, Duration::from_secs(5))
        .await;
    let d = decode(req.recv().await.expect("recv").into_vec()).expect("decode");
    assert_eq!(
        d.header,
        Header::Nothing {
            acks: vec![tasks[0].task]
        }
    );
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_queue_is_sent_in_batches_within_the_credit() {
    let env = Env::new().await;
    let mut queued = Vec::new();
    for _ in 0..6 {
        queued.push(env.submit().await);
    }
    let (stop, handle) = env.spawn(env.config(Mode::Push, 50));
    let mut w = connect_dealer(&env).await;
    // Four slots: the first message carries four tasks, and nothing more comes until a result.
    let (_, (), tasks) = hello_and_first_tasks(&mut w, info("w1", 4, VERSION), async {}).await;
    assert_eq!(
        tasks.len(),
        4,
        "one message with as many tasks as free slots"
    );
    let extra = tokio::time::timeout(Duration::from_millis(500), recv_significant(&mut w)).await;
    assert!(
        extra.is_err(),
        "no task beyond the credit: {:?}",
        extra.map(|d| d.header)
    );
    // One result frees one slot: exactly one more task follows.
    let (h, blobs) = ok_result(&env, tasks[0].task);
    send(&mut w, &h, blobs).await;
    let d = recv_significant(&mut w).await;
    let Header::Tasks { tasks: more, .. } = d.header else {
        panic!("expected tasks, got {:?}", d.header)
    };
    assert_eq!(more.len(), 1);
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
}

async fn hello(w: &mut DealerSocket, id: &str, running: Vec<TaskRef>) {
    let h = Header::Hello {
        worker: info(id, 1, VERSION),
        running,
    };
    send(w, &h, vec![]).await;
}

async fn heartbeat(w: &mut DealerSocket, id: &str, running: Vec<TaskRef>) {
    let h = Header::Heartbeat {
        worker_id: id.into(),
        free: 0,
        running,
    };
    send(w, &h, vec![]).await;
}

/// Receives (for up to `limit`) until `want` matches a message; heartbeats `id` listing
/// `running` every 100 ms meanwhile. Returns the message.
async fn beat_until(
    w: &mut DealerSocket,
    id: &str,
    running: &[TaskRef],
    limit: Duration,
    want: impl Fn(&Header) -> bool,
) -> Option<Decoded> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        heartbeat(w, id, running.to_vec()).await;
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(100), w.recv()).await {
            let d = decode(m.expect("recv").into_vec()).expect("decode");
            if want(&d.header) {
                return Some(d);
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_registers_again_without_its_run_loses_it() {
    let env = Env::new().await;
    // Threshold 500 ms; the fake worker heartbeats every 100 ms, so it is never silent.
    let (stop, handle) = env.spawn(env.config(Mode::Push, 5));
    let mut w = connect_dealer(&env).await;
    hello(&mut w, "w1", vec![]).await;
    assert!(matches!(
        recv_dealer(&mut w).await.header,
        Header::Welcome { .. }
    ));
    let t = env.submit().await;
    let d = beat_until(&mut w, "w1", &[], Duration::from_secs(5), |h| {
        matches!(h, Header::Tasks { .. })
    })
    .await
    .expect("tasks");
    let Header::Tasks { tasks, .. } = d.header else {
        unreachable!()
    };
    let run = tasks[0].task;
    // Listed: kept, however long.
    beat_until(&mut w, "w1", &[run], Duration::from_millis(1200), |_| false).await;
    assert_eq!(
        env.store.task_status(&t).await.expect("status"),
        Some(TaskStatus::Running)
    );
    // "Wrongly declared dead and restarted its connection": hello with an empty running list.
    hello(&mut w, "w1", vec![]).await;
    beat_until(&mut w, "w1", &[], Duration::from_millis(300), |_| false).await;
    env.wait_status(&t, TaskStatus::Failed, Duration::from_secs(5))
        .await;
    let v = env.store.task_view(&t).await.expect("view").expect("task");
    let text = python::describe(&v.result.expect("result"));
    assert!(
        text.starts_with("WorkerFailure:") && text.contains("does not have the task"),
        "{text}"
    );
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_only_from_the_assigned_worker_and_unwanted_runs_are_cancelled() {
    let env = Env::new().await;
    let (stop, handle) = env.spawn(env.config(Mode::Push, 30));
    let mut w1 = connect_dealer(&env).await;
    let (_, t, tasks) = hello_and_first_tasks(&mut w1, info("w1", 1, VERSION), env.submit()).await;
    let run = tasks[0].task;
    let mut w2 = connect_dealer(&env).await;
    hello(&mut w2, "w2", vec![]).await;
    recv_dealer(&mut w2).await;
    // w2 reports w1's run: acknowledged (so it forgets it) but not stored.
    let (mut h, blobs) = ok_result(&env, run);
    if let Header::Report { worker_id, .. } = &mut h {
        *worker_id = "w2".into();
    }
    send(&mut w2, &h, blobs).await;
    let ack = beat_until(
        &mut w2,
        "w2",
        &[],
        Duration::from_secs(5),
        |h| matches!(h, Header::Ack { acks } if acks.contains(&run)),
    )
    .await;
    assert!(ack.is_some(), "the refused result is acknowledged");
    assert_eq!(
        env.store.task_status(&t).await.expect("status"),
        Some(TaskStatus::Running)
    );
    // w2 claims to run it: it is told to cancel it.
    let cancel = beat_until(
        &mut w2,
        "w2",
        &[run],
        Duration::from_secs(5),
        |h| matches!(h, Header::Cancel { tasks } if tasks.contains(&run)),
    )
    .await;
    assert!(
        cancel.is_some(),
        "a run held by the wrong worker is cancelled"
    );
    // The assigned worker's result is stored.
    let (h, blobs) = ok_result(&env, run);
    send(&mut w1, &h, blobs).await;
    env.wait_status(&t, TaskStatus::Completed, Duration::from_secs(5))
        .await;
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
}

/// A worker whose capacity goes beyond its processes (prefetch): it gets that many tasks in one
/// message; a cancel of a prefetched one reaches it; when it dies, every run it held, running or
/// prefetched, fails like a running one (max_retries 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetched_tasks_are_sent_cancelled_and_lost_like_running_ones() {
    let env = Env::new().await;
    let mut queued = Vec::new();
    for _ in 0..4 {
        queued.push(env.submit().await);
    }
    let (stop, handle) = env.spawn(env.config(Mode::Push, 5));
    let mut w = connect_dealer(&env).await;
    let worker = WorkerInfo {
        capacity: Some(3),
        ..info("w1", 1, VERSION)
    };
    let (_, (), tasks) = hello_and_first_tasks(&mut w, worker, async {}).await;
    assert_eq!(
        tasks.len(),
        3,
        "one process plus two prefetched, in one message"
    );
    let held: Vec<TaskRef> = tasks.iter().map(|t| t.task).collect();
    let extra = beat_until(&mut w, "w1", &held, Duration::from_millis(500), |h| {
        matches!(h, Header::Tasks { .. })
    })
    .await;
    assert!(extra.is_none(), "no task beyond the capacity");
    // A user cancels the last (prefetched) one: the worker is told, the task ends cancelled.
    let last = held[2];
    let c = env
        .store
        .cancel(&last.task_id, Duration::from_secs(3600), true)
        .await
        .expect("cancel");
    assert!(
        matches!(
            c,
            faas::store::cancel::Cancel::Cancelled(TaskStatus::Running)
        ),
        "{c:?}"
    );
    let got = beat_until(
        &mut w,
        "w1",
        &held,
        Duration::from_secs(5),
        |h| matches!(h, Header::Cancel { tasks } if tasks.contains(&last)),
    )
    .await;
    assert!(
        got.is_some(),
        "cancel of the prefetched run sent to the worker"
    );
    let v = env
        .store
        .task_view(&last.task_id)
        .await
        .expect("view")
        .expect("task");
    let text = python::describe(&v.result.expect("result"));
    assert!(text.contains("TaskCancelled"), "{text}");
    // The worker dies holding one running and one prefetched run: both fail as lost.
    for t in &held[..2] {
        env.wait_status(&t.task_id, TaskStatus::Failed, Duration::from_secs(5))
            .await;
        let v = env
            .store
            .task_view(&t.task_id)
            .await
            .expect("view")
            .expect("task");
        let text = python::describe(&v.result.expect("result"));
        assert!(text.contains("WorkerFailure"), "{text}");
    }
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
}

/// When a push worker reports a result, the claim of its next task reaches Redis ahead of the
/// result (its process waits for the claim, nobody waits for the result). Seen in Redis's own
/// order of commands (`MONITOR`), with one worker process and a queue read ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reporting_worker_is_claimed_for_before_its_results_are_stored() {
    let env = Env::new().await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        tasks.push(env.submit().await);
    }
    let monitor = util::monitor::Monitor::start(&env.redis);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (stop, handle) = util::dispatch::spawn_on_one_thread(env.config(Mode::Push, 50));
    let mut w = connect_dealer(&env).await;
    let (_, (), mut sent) = hello_and_first_tasks(&mut w, info("w1", 1, VERSION), async {}).await;
    let mut done = 0;
    while done < tasks.len() {
        for t in std::mem::take(&mut sent) {
            let (h, blobs) = ok_result(&env, t.task);
            send(&mut w, &h, blobs).await;
            done += 1;
        }
        if done < tasks.len() {
            let d = recv_significant(&mut w).await;
            if let Header::Tasks { tasks, .. } = d.header {
                sent = tasks;
            }
        }
    }
    for t in &tasks {
        env.wait_status(t, TaskStatus::Completed, Duration::from_secs(10))
            .await;
    }
    stop.trigger();
    handle.await.expect("join").expect("clean stop");
    monitor
        .transitions(&tasks)
        .assert_claims_ahead_of_results(tasks.len());
}
