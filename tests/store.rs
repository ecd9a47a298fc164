//! Store integration tests against a real redis-server: atomic creation, fenced transitions, queue.

mod util;

use std::time::Duration;

use faas::store::{keys, Claim, Finish, QueueReader, Store, TaskStatus};
use redis::Commands;
use util::redis::RedisServer;
use uuid::Uuid;

async fn store(r: &RedisServer) -> Store {
    r.store(Duration::from_secs(60)).await
}

fn finish<'a>(
    task_id: Uuid,
    attempt: Option<u32>,
    status: TaskStatus,
    result: &'a [u8],
) -> Finish<'a> {
    Finish {
        task_id,
        from: TaskStatus::Running,
        attempt,
        status,
        result,
        error: "",
        entry_id: None,
    }
}

#[tokio::test]
async fn create_task_is_atomic_and_refuses_unknown_functions() {
    let r = RedisServer::start();
    let s = store(&r).await;
    let mut c = r.conn();
    let mut sub = redis::Client::open(r.url())
        .expect("client")
        .get_connection()
        .expect("conn");
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe(keys::CHANNEL).expect("subscribe");

    assert_eq!(
        s.create_task(&Uuid::new_v4(), b"x").await.expect("create"),
        None
    );
    let keys_after: Vec<String> = c.keys("faas:task:*").expect("keys");
    assert!(
        keys_after.is_empty(),
        "nothing stored for an unknown function"
    );
    assert_eq!(s.queue_len().await.expect("xlen"), 0);

    let f = s
        .register_function("double", b"\x80\x04.")
        .await
        .expect("register");
    let t = s
        .create_task(&f, b"args")
        .await
        .expect("create")
        .expect("task id");
    assert_eq!(
        s.task_status(&t).await.expect("status"),
        Some(TaskStatus::Queued)
    );
    let view = s.task_view(&t).await.expect("view").expect("exists");
    assert_eq!(view.result, None);
    assert_eq!(s.queue_len().await.expect("xlen"), 1);
    let name: String = c.hget(keys::task(&t), "function_name").expect("hget");
    assert_eq!(name, "double");
    pubsub
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let msg = pubsub.get_message().expect("published id");
    assert_eq!(msg.get_payload::<String>().expect("payload"), t.to_string());
}

#[tokio::test]
async fn transitions_are_fenced_and_terminal_states_stick() {
    let r = RedisServer::start();
    let s = store(&r).await;
    let f = s.register_function("f", b"fn").await.expect("register");
    let t = s
        .create_task(&f, b"args")
        .await
        .expect("create")
        .expect("task");

    // Finishing a task that is not RUNNING does nothing.
    assert!(!s
        .finish(&finish(t, None, TaskStatus::Completed, b"r"))
        .await
        .expect("finish"));
    let Claim::Running {
        attempt,
        function_id,
        args,
        timeout: None,
    } = s.claim(&t, "w1").await.expect("claim")
    else {
        panic!("expected RUNNING");
    };
    assert_eq!((attempt, function_id, &args[..]), (1, f, &b"args"[..]));
    assert!(matches!(
        s.claim(&t, "w2").await.expect("claim"),
        Claim::NotQueued(TaskStatus::Running)
    ));
    // A report for another attempt is stale.
    assert!(!s
        .finish(&finish(t, Some(2), TaskStatus::Completed, b"r"))
        .await
        .expect("finish"));
    assert!(s
        .finish(&finish(t, Some(1), TaskStatus::Completed, b"r1"))
        .await
        .expect("finish"));
    // Duplicate and late reports never overwrite the terminal state.
    assert!(!s
        .finish(&finish(t, Some(1), TaskStatus::Failed, b"r2"))
        .await
        .expect("finish"));
    assert!(!s
        .finish(&finish(t, None, TaskStatus::Failed, b"r3"))
        .await
        .expect("finish"));
    let view = s.task_view(&t).await.expect("view").expect("exists");
    assert_eq!(view.status, TaskStatus::Completed);
    assert_eq!(view.result.as_deref(), Some(&b"r1"[..]));
    assert!(matches!(
        s.claim(&t, "w3").await.expect("claim"),
        Claim::NotQueued(TaskStatus::Completed)
    ));
    let ttl: i64 = r.conn().ttl(keys::task(&t)).expect("ttl");
    assert!(ttl > 0 && ttl <= 60, "finished tasks expire, ttl={ttl}");
    assert!(matches!(
        s.claim(&Uuid::new_v4(), "w").await.expect("claim"),
        Claim::Missing
    ));
}

#[tokio::test]
async fn requeue_is_fenced_and_reenqueues() {
    let r = RedisServer::start();
    let s = store(&r).await;
    let f = s.register_function("f", b"fn").await.expect("register");
    let t = s
        .create_task(&f, b"a")
        .await
        .expect("create")
        .expect("task");
    let mut q = QueueReader::open(s.client(), "c1").await.expect("reader");
    let e = q
        .read_new(10, Duration::from_millis(100))
        .await
        .expect("read");
    assert_eq!(e.len(), 1);
    assert!(matches!(
        s.claim(&t, "w").await.expect("claim"),
        Claim::Running { attempt: 1, .. }
    ));
    assert!(!s
        .requeue(&t, 2, "lost", Some(&e[0].entry_id))
        .await
        .expect("requeue wrong attempt"));
    // The old entry was acknowledged anyway; requeue again with the right attempt has no entry.
    assert!(s.requeue(&t, 1, "lost", None).await.expect("requeue"));
    assert_eq!(
        s.task_status(&t).await.expect("status"),
        Some(TaskStatus::Queued)
    );
    let e2 = q
        .read_new(10, Duration::from_millis(100))
        .await
        .expect("read");
    assert_eq!(e2.len(), 1);
    assert_eq!(e2[0].task_id, Some(t));
    assert!(matches!(
        s.claim(&t, "w").await.expect("claim"),
        Claim::Running { attempt: 2, .. }
    ));
}

#[tokio::test]
async fn queue_keeps_unacked_entries_pending_and_adopts_orphans() {
    let r = RedisServer::start();
    let s = store(&r).await;
    let f = s.register_function("f", b"fn").await.expect("register");
    // Tasks queued before any consumer group exists are still delivered.
    let t1 = s
        .create_task(&f, b"a")
        .await
        .expect("create")
        .expect("task");
    let t2 = s
        .create_task(&f, b"a")
        .await
        .expect("create")
        .expect("task");
    let mut dead = QueueReader::open(s.client(), "dead").await.expect("reader");
    let got = dead
        .read_new(1, Duration::from_millis(100))
        .await
        .expect("read");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].task_id, Some(t1));
    // Not acknowledged: it is re-read as pending by the same consumer.
    let pend = dead.read_pending(10).await.expect("pending");
    assert_eq!(
        pend.iter().map(|e| e.task_id).collect::<Vec<_>>(),
        vec![Some(t1)]
    );
    // Another consumer sees only the second task as new, and adopts the first (no lease held).
    let mut live = QueueReader::open(s.client(), "live").await.expect("reader");
    let got2 = live
        .read_new(10, Duration::from_millis(100))
        .await
        .expect("read");
    assert_eq!(
        got2.iter().map(|e| e.task_id).collect::<Vec<_>>(),
        vec![Some(t2)]
    );
    assert_eq!(live.adopt_orphans().await.expect("adopt"), 1);
    let pend = live.read_pending(10).await.expect("pending");
    assert_eq!(pend.len(), 2);
    // Acknowledged entries are gone from the stream.
    s.ack(&got2[0].entry_id).await.expect("ack");
    assert_eq!(live.read_pending(10).await.expect("pending").len(), 1);
    assert_eq!(s.queue_len().await.expect("xlen"), 1);
}

#[tokio::test]
async fn live_leases_protect_entries_from_adoption() {
    let r = RedisServer::start();
    let s = store(&r).await;
    let f = s.register_function("f", b"fn").await.expect("register");
    s.create_task(&f, b"a")
        .await
        .expect("create")
        .expect("task");
    let mut a = QueueReader::open(s.client(), "a").await.expect("reader");
    assert_eq!(
        a.read_new(1, Duration::from_millis(100))
            .await
            .expect("read")
            .len(),
        1
    );
    let lease = faas::dispatcher::lease::acquire(&s, "a")
        .await
        .expect("lease");
    let (stop, shutdown) = faas::shutdown::channel();
    let keeper = tokio::spawn(lease.keep(s.clone(), shutdown));
    let mut b = QueueReader::open(s.client(), "b").await.expect("reader");
    assert_eq!(b.adopt_orphans().await.expect("adopt"), 0);
    // A second dispatcher with the same name is refused while the lease is alive.
    let started = std::time::Instant::now();
    let err = faas::dispatcher::lease::acquire(&s, "a").await;
    assert!(err.is_err(), "same name refused");
    assert!(started.elapsed() >= Duration::from_secs(5));
    stop.trigger();
    keeper.await.expect("keeper released the lease");
    assert_eq!(b.adopt_orphans().await.expect("adopt"), 1);
}
