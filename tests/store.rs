//! Store integration tests against a real redis-server: atomic creation, fenced transitions, queue.

mod util;

use std::time::Duration;

use faas::runtime::Runtime;
use faas::store::{keys, Claim, Finish, QueueReader, Recorded, Store, TaskStatus};
use redis::Commands;
use util::redis::RedisServer;
use uuid::Uuid;

async fn store(r: &RedisServer) -> Store {
    r.store(Duration::from_secs(60)).await
}

/// Claims `t` for `worker` under claim token `token` (no runtime).
async fn claim(s: &Store, t: &Uuid, worker: &str, token: &str) -> Claim {
    s.claim_for(t, worker, &Runtime::default(), token)
        .await
        .expect("claim")
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
    assert_eq!(
        s.finish(&finish(t, None, TaskStatus::Completed, b"r"))
            .await
            .expect("finish"),
        Recorded::Stale
    );
    let Claim::Running {
        attempt,
        function_id,
        args,
        timeout: None,
    } = claim(&s, &t, "w1", "tok1").await
    else {
        panic!("expected RUNNING");
    };
    assert_eq!((attempt, function_id, &args[..]), (1, f, &b"args"[..]));
    // The same claim again (its reply was lost) returns the same run...
    let Claim::Running {
        attempt: again,
        args: args_again,
        ..
    } = claim(&s, &t, "w1", "tok1").await
    else {
        panic!("a repeated claim returns the run");
    };
    assert_eq!((again, &args_again[..]), (1, &b"args"[..]));
    // ...any other claim finds it RUNNING.
    for token in ["tok2", ""] {
        assert!(matches!(
            claim(&s, &t, "w2", token).await,
            Claim::NotQueued(TaskStatus::Running)
        ));
    }
    // A report for another attempt is stale.
    let report = |attempt, status, result: &'static [u8]| {
        let s = s.clone();
        async move {
            s.finish(&finish(t, attempt, status, result))
                .await
                .expect("finish")
        }
    };
    assert_eq!(
        report(Some(2), TaskStatus::Completed, b"r").await,
        Recorded::Stale
    );
    assert_eq!(
        report(Some(1), TaskStatus::Completed, b"r1").await,
        Recorded::Applied
    );
    // The same report again changes nothing and says so; late and other reports are stale.
    assert_eq!(
        report(Some(1), TaskStatus::Completed, b"r1").await,
        Recorded::Duplicate
    );
    assert_eq!(
        report(Some(1), TaskStatus::Failed, b"r2").await,
        Recorded::Stale
    );
    assert_eq!(
        report(None, TaskStatus::Failed, b"r3").await,
        Recorded::Stale
    );
    // A report for a task Redis does not know is named as such.
    assert_eq!(
        s.finish(&finish(
            Uuid::new_v4(),
            Some(1),
            TaskStatus::Completed,
            b"r"
        ))
        .await
        .expect("finish"),
        Recorded::Unknown
    );
    let view = s.task_view(&t).await.expect("view").expect("exists");
    assert_eq!(view.status, TaskStatus::Completed);
    assert_eq!(view.result.as_deref(), Some(&b"r1"[..]));
    assert!(matches!(
        claim(&s, &t, "w1", "tok1").await,
        Claim::NotQueued(TaskStatus::Completed)
    ));
    let ttl: i64 = r.conn().ttl(keys::task(&t)).expect("ttl");
    assert!(ttl > 0 && ttl <= 60, "finished tasks expire, ttl={ttl}");
    assert!(matches!(
        claim(&s, &Uuid::new_v4(), "w", "t").await,
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
    let mut q = QueueReader::open(&s, "c1").await.expect("reader");
    let e = q
        .read_new(10, Duration::from_millis(100))
        .await
        .expect("read");
    assert_eq!(e.len(), 1);
    assert!(matches!(
        claim(&s, &t, "w", "").await,
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
        claim(&s, &t, "w", "").await,
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
    let mut dead = QueueReader::open(&s, "dead").await.expect("reader");
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
    let mut live = QueueReader::open(&s, "live").await.expect("reader");
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
    let mut a = QueueReader::open(&s, "a").await.expect("reader");
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
    let mut b = QueueReader::open(&s, "b").await.expect("reader");
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

/// Every script may run twice for one call (a reply lost with its connection is sent again):
/// the second run changes nothing.
#[tokio::test]
async fn scripts_run_twice_change_nothing() {
    let r = RedisServer::start();
    let s = store(&r).await;
    let f = s.register_function("f", b"fn").await.expect("register");
    let id = Uuid::new_v4();
    let mut c = r.conn();
    let create = || {
        let mut inv = faas::store::batch::CREATE_TASKS.key(keys::function(&f));
        inv.key(keys::QUEUE)
            .key(keys::STATS)
            .key(keys::task(&id))
            .arg(f.to_string())
            .arg(1)
            .arg(keys::CHANNEL)
            .arg("")
            .arg(id.to_string())
            .arg(&b"args"[..]);
        inv
    };
    for _ in 0..2 {
        let created: i64 = create().invoke(&mut c).expect("create");
        assert_eq!(created, 1);
    }
    let len: usize = c.xlen(keys::QUEUE).expect("xlen");
    assert_eq!(len, 1, "one queue entry");
    assert_eq!(
        s.task_status(&id).await.expect("status"),
        Some(TaskStatus::Queued)
    );

    let mut q = QueueReader::open(&s, "c").await.expect("reader");
    let e = q
        .read_new(1, Duration::from_millis(50))
        .await
        .expect("read");
    assert!(matches!(
        claim(&s, &id, "w", "tok").await,
        Claim::Running { attempt: 1, .. }
    ));
    for _ in 0..2 {
        s.requeue(&id, 1, "lost", Some(&e[0].entry_id))
            .await
            .expect("requeue");
    }
    assert_eq!(
        s.task_status(&id).await.expect("status"),
        Some(TaskStatus::Queued)
    );
    let len: usize = c.xlen(keys::QUEUE).expect("xlen");
    assert_eq!(len, 1, "the old entry acknowledged, one new entry");
    for _ in 0..2 {
        s.ack(&e[0].entry_id).await.expect("ack");
    }
}
