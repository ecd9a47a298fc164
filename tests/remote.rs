//! Dispatcher pull/push modes against fake workers speaking the protocol over real ZeroMQ sockets.

mod util;

use std::time::{Duration, Instant};

use bytes::Bytes;
use faas::config::Mode;
use faas::protocol::{decode, encode, Decoded, Header, ResultMeta, TaskRef, WorkerInfo, VERSION};
use faas::store::TaskStatus;
use util::python;
use util::remote::{connect_dealer, send, Env};
use zeromq::{DealerSocket, ReqSocket, Socket, SocketRecv, SocketSend};

fn info(id: &str, slots: u32, protocol: u32) -> WorkerInfo {
    WorkerInfo {
        id: id.into(),
        slots,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_worker_gets_tasks_and_its_results_are_stored() {
    let env = Env::new().await;
    let (stop, handle) = env.spawn(env.config(Mode::Push, 50));
    let mut w = connect_dealer(&env).await;
    send(
        &mut w,
        &Header::Hello {
            worker: info("w1", 2, VERSION),
            running: vec![],
        },
        vec![],
    )
    .await;
    assert!(matches!(
        recv_dealer(&mut w).await.header,
        Header::Welcome {
            heartbeat_ms: 100,
            heartbeat_misses: 50,
            ..
        }
    ));
    let t = env.submit().await;
    let d = recv_significant(&mut w).await;
    let Header::Tasks { tasks, .. } = d.header else {
        panic!("expected tasks, got {:?}", d.header)
    };
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].task.task_id, t);
    assert_eq!(d.blobs.len(), 2);
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
    send(
        &mut w,
        &Header::Hello {
            worker: info("w1", 1, VERSION),
            running: vec![],
        },
        vec![],
    )
    .await;
    recv_dealer(&mut w).await;
    let t = env.submit().await;
    let d = recv_significant(&mut w).await;
    assert!(matches!(d.header, Header::Tasks { .. }));
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
    let Header::Tasks { tasks, .. } = d.header else {
        unreachable!()
    };
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
    send(
        &mut w,
        &Header::Hello {
            worker: info("w1", 4, VERSION),
            running: vec![],
        },
        vec![],
    )
    .await;
    recv_dealer(&mut w).await;
    // Four slots: the first message carries four tasks, and nothing more comes until a result.
    let d = recv_significant(&mut w).await;
    let Header::Tasks { tasks, .. } = d.header else {
        panic!("expected tasks, got {:?}", d.header)
    };
    assert_eq!(
        tasks.len(),
        4,
        "one message with as many tasks as free slots"
    );
    assert_eq!(d.blobs.len(), 8);
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
