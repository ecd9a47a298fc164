//! Store integration tests against a real redis-server: atomic creation, fenced transitions, queue,
//! batched claims and finishes (and the dispatcher's group commit that sends them).

mod util;

use std::time::Duration;

use faas::runtime::Runtime;
use faas::store::claims::ClaimOf;
use faas::store::stats::Stats;
use faas::store::{keys, Claim, Finish, QueueEntry, QueueReader, Recorded, Store, TaskStatus};
use redis::Commands;
use util::redis::RedisServer;
use uuid::Uuid;

async fn store(r: &RedisServer) -> Store {
    r.store(Duration::from_secs(60)).await
}

/// What [`queued_and_read`] set up.
struct Queued {
    function_id: Uuid,
    task_ids: Vec<Uuid>,
    /// The queue entries of `task_ids`, in order, pending for `reader`'s consumer.
    entries: Vec<QueueEntry>,
    reader: QueueReader,
}

/// Registers function "f" (body `b"fn"`), creates `n` tasks of it (args `b"a"`) in one step, and
/// has consumer `consumer` read the queue: exactly their `n` entries, in order.
async fn queued_and_read(s: &Store, n: usize, consumer: &str) -> Queued {
    let function_id = s.register_function("f", b"fn").await.expect("register");
    let args: Vec<&[u8]> = vec![b"a"; n];
    let task_ids = s
        .create_tasks(&function_id, &args, None)
        .await
        .expect("create")
        .expect("tasks");
    let mut reader = QueueReader::open(s, consumer).await.expect("reader");
    let entries = reader
        .read_new(n + 1, Duration::from_millis(100))
        .await
        .expect("read");
    let read: Vec<Option<Uuid>> = entries.iter().map(|e| e.task_id).collect();
    let want: Vec<Option<Uuid>> = task_ids.iter().copied().map(Some).collect();
    assert_eq!(read, want, "the queue holds exactly the new tasks");
    Queued {
        function_id,
        task_ids,
        entries,
        reader,
    }
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
    let Queued {
        task_ids,
        entries: e,
        reader: mut q,
        ..
    } = queued_and_read(&s, 1, "c1").await;
    let t = task_ids[0];
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

/// Pending entries of consumer group `dispatchers`, by entry id.
fn pending_ids(r: &RedisServer) -> Vec<String> {
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(keys::QUEUE)
        .arg(keys::GROUP)
        .arg("-")
        .arg("+")
        .arg(100)
        .query(&mut r.conn())
        .expect("xpending");
    rows.into_iter().map(|(id, ..)| id).collect()
}

#[tokio::test]
async fn release_requeues_only_tasks_still_queued_and_is_idempotent() {
    let r = RedisServer::start();
    let s = store(&r).await;
    let Queued {
        task_ids: t,
        entries: e,
        reader: mut q,
        ..
    } = queued_and_read(&s, 3, "c1").await;
    // t[1] was claimed meanwhile (say by a dispatcher that adopted its entry), t[2] cancelled.
    assert!(matches!(
        claim(&s, &t[1], "w", "").await,
        Claim::Running { attempt: 1, .. }
    ));
    s.cancel(&t[2], Duration::ZERO, true).await.expect("cancel");
    assert_eq!(s.release(&e).await.expect("release"), 1);
    assert_eq!(
        pending_ids(&r),
        [e[1].entry_id.clone(), e[2].entry_id.clone()],
        "entries of tasks not QUEUED stay pending, for recovery"
    );
    assert_eq!(s.release(&e).await.expect("again"), 0, "nothing twice");
    let again = q
        .read_new(10, Duration::from_millis(100))
        .await
        .expect("read");
    let ids: Vec<Option<Uuid>> = again.iter().map(|e| e.task_id).collect();
    assert_eq!(
        ids,
        [Some(t[0])],
        "only the QUEUED task is back in the queue"
    );
    assert_eq!(
        s.task_status(&t[0]).await.expect("status"),
        Some(TaskStatus::Queued)
    );
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
    assert_eq!(
        live.adopt_orphans_idle(Duration::ZERO)
            .await
            .expect("adopt"),
        1
    );
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
    let _a = queued_and_read(&s, 1, "a").await;
    let lease = faas::dispatcher::lease::acquire(&s, "a")
        .await
        .expect("lease");
    let (stop, shutdown) = faas::shutdown::channel();
    let keeper = tokio::spawn(lease.keep(s.clone(), shutdown));
    let mut b = QueueReader::open(&s, "b").await.expect("reader");
    assert_eq!(
        b.adopt_orphans_idle(Duration::ZERO).await.expect("adopt"),
        0
    );
    // A second dispatcher with the same name is refused while the lease is alive.
    let started = std::time::Instant::now();
    let err = faas::dispatcher::lease::acquire(&s, "a").await;
    assert!(err.is_err(), "same name refused");
    assert!(started.elapsed() >= Duration::from_secs(5));
    stop.trigger();
    keeper.await.expect("keeper released the lease");
    assert_eq!(
        b.adopt_orphans_idle(Duration::ZERO).await.expect("adopt"),
        1
    );
}

/// Taking over a dead dispatcher's entries (issue 8): more than XPENDING's old 10,000 cap are
/// all adopted (paged), none is lost, the dead consumer is deleted only once it has nothing
/// pending, entries idle less than the minimum stay where they are, and an entry a live
/// dispatcher adopted is not taken from it by a second live dispatcher.
#[tokio::test]
async fn takeover_pages_past_ten_thousand_and_never_steals_from_the_living() {
    const N: usize = 12_345;
    let r = RedisServer::start();
    let s = store(&r).await;
    let f = s.register_function("f", b"fn").await.expect("register");
    let args: Vec<Vec<u8>> = (0..N).map(|i| i.to_string().into_bytes()).collect();
    for chunk in args.chunks(1000) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        s.create_tasks(&f, &refs, None)
            .await
            .expect("create")
            .expect("function exists");
    }
    // The dead consumer read everything (no lease: it is dead).
    let mut dead = QueueReader::open(&s, "dead").await.expect("reader");
    let mut read = 0;
    while read < N {
        let got = dead
            .read_new(5000, Duration::from_millis(100))
            .await
            .expect("read");
        assert!(!got.is_empty(), "queue ran dry after {read} entries");
        read += got.len();
    }
    // Idle less than the minimum: nothing is taken, and the consumer is kept.
    let mut a = QueueReader::open(&s, "a").await.expect("reader");
    assert_eq!(
        a.adopt_orphans_idle(Duration::from_secs(3600))
            .await
            .expect("adopt"),
        0
    );
    let mut conn = r.conn();
    let consumers = || -> Vec<String> {
        let mut c = r.conn();
        let v: redis::Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(keys::QUEUE)
            .arg(keys::GROUP)
            .query(&mut c)
            .expect("xinfo");
        let redis::Value::Array(rows) = v else {
            return Vec::new();
        };
        rows.iter()
            .filter_map(|row| match row {
                redis::Value::Array(kv) => kv.chunks(2).find_map(|p| match (&p[0], &p[1]) {
                    (redis::Value::BulkString(k), redis::Value::BulkString(v)) if k == b"name" => {
                        Some(String::from_utf8_lossy(v).into_owned())
                    }
                    _ => None,
                }),
                _ => None,
            })
            .collect()
    };
    assert!(
        consumers().contains(&"dead".to_string()),
        "kept while it has pending entries"
    );
    // Everything is adopted once idle enough, far past 10,000, and the dead consumer is gone.
    assert_eq!(
        a.adopt_orphans_idle(Duration::ZERO).await.expect("adopt"),
        N
    );
    assert!(
        !consumers().contains(&"dead".to_string()),
        "deleted once empty"
    );
    let mut pending = 0;
    loop {
        // Read the adopted entries back in pages (XREADGROUP 0 returns them from the start;
        // acknowledge each page so the next read moves on).
        let page = a.read_pending(2000).await.expect("pending");
        if page.is_empty() {
            break;
        }
        pending += page.len();
        for e in &page {
            s.ack(&e.entry_id).await.expect("ack");
        }
    }
    assert_eq!(pending, N, "every entry adopted exactly once, none lost");

    // A second live dispatcher does not steal entries that `a` adopted a moment ago, even though
    // their original owner is dead and `b` asks for them by that owner's name.
    let t = s
        .create_task(&f, b"x")
        .await
        .expect("create")
        .expect("task");
    let mut dead2 = QueueReader::open(&s, "dead2").await.expect("reader");
    let got = dead2
        .read_new(1, Duration::from_millis(100))
        .await
        .expect("read");
    assert_eq!(got[0].task_id, Some(t));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a.adopt_orphans_idle(Duration::from_millis(200))
            .await
            .expect("adopt"),
        1
    );
    let entry = got[0].entry_id.clone();
    let stolen: redis::Value = redis::cmd("XCLAIM")
        .arg(keys::QUEUE)
        .arg(keys::GROUP)
        .arg("b")
        .arg(faas::store::ADOPT_MIN_IDLE.as_millis() as u64)
        .arg(&entry)
        .arg("JUSTID")
        .query(&mut conn)
        .expect("xclaim");
    assert_eq!(
        stolen,
        redis::Value::Array(vec![]),
        "min-idle protects a fresh claim"
    );
    let mut b = QueueReader::open(&s, "b").await.expect("reader");
    assert_eq!(b.adopt_orphans().await.expect("adopt"), 0);
    let mine = a.read_pending(10).await.expect("pending");
    assert_eq!(
        mine.iter().map(|e| e.task_id).collect::<Vec<_>>(),
        vec![Some(t)]
    );
}

/// A consumer that takes its lease back between two pages keeps the rest of its entries.
#[tokio::test]
async fn takeover_stops_when_the_owner_returns() {
    let r = RedisServer::start();
    let s = store(&r).await;
    let mut owner = queued_and_read(&s, 1, "owner").await.reader;
    let _lease = faas::dispatcher::lease::acquire(&s, "owner")
        .await
        .expect("lease");
    let mut other = QueueReader::open(&s, "other").await.expect("reader");
    assert_eq!(
        other
            .adopt_orphans_idle(Duration::ZERO)
            .await
            .expect("adopt"),
        0
    );
    assert_eq!(owner.read_pending(10).await.expect("pending").len(), 1);
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

/// A claim as comparable text (attempt, function, args and timeout of a run; else the state).
fn shape(c: &Claim) -> String {
    match c {
        Claim::Running {
            attempt,
            function_id,
            args,
            timeout,
        } => format!("RUNNING {attempt} {function_id} {args:?} {timeout:?}"),
        Claim::NotQueued(st) => format!("{st}"),
        Claim::Missing => "MISSING".into(),
    }
}

/// Five tasks in mixed states: QUEUED, RUNNING under token "other", missing, COMPLETED, QUEUED
/// (with a time limit). Returns their ids, in that order.
async fn mixed_tasks(s: &Store, f: &Uuid) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for args in [&b"a0"[..], b"a1"] {
        ids.push(s.create_task(f, args).await.expect("create").expect("task"));
    }
    assert!(matches!(
        claim(s, &ids[1], "w0", "other").await,
        Claim::Running { .. }
    ));
    ids.push(Uuid::new_v4());
    let done = s
        .create_task(f, b"a3")
        .await
        .expect("create")
        .expect("task");
    assert!(matches!(
        claim(s, &done, "w0", "").await,
        Claim::Running { .. }
    ));
    assert_eq!(
        s.finish(&finish(done, Some(1), TaskStatus::Completed, b"r"))
            .await
            .expect("finish"),
        Recorded::Applied
    );
    ids.push(done);
    let timed = s
        .create_tasks(f, &[b"a4"], Some(Duration::from_millis(1500)))
        .await
        .expect("create")
        .expect("tasks");
    ids.extend(timed);
    ids
}

#[tokio::test]
async fn claim_many_answers_as_single_claims_and_again_the_same() {
    let r = RedisServer::start();
    let s = store(&r).await;
    let f = s.register_function("f", b"fn").await.expect("register");
    let single = mixed_tasks(&s, &f).await;
    let batch = mixed_tasks(&s, &f).await;
    let mut want = Vec::new();
    for (i, t) in single.iter().enumerate() {
        want.push(shape(&claim(&s, t, "w", &format!("tok{i}")).await));
    }
    let tokens: Vec<String> = (0..batch.len()).map(|i| format!("tok{i}")).collect();
    let of: Vec<ClaimOf<'_>> = batch
        .iter()
        .zip(&tokens)
        .map(|(t, token)| ClaimOf { task_id: *t, token })
        .collect();
    let rt = Runtime::default();
    let got: Vec<String> = s
        .claim_many(&of, "w", &rt)
        .await
        .expect("claim_many")
        .iter()
        .map(shape)
        .collect();
    assert_eq!(got, want);
    assert!(
        got[0].starts_with("RUNNING 1 ") && got[4].contains("Some(1.5s)"),
        "{got:?}"
    );
    assert_eq!(&got[1..4], ["RUNNING", "MISSING", "COMPLETED"]);
    // The same batch again (its reply was lost): the same runs, no attempt taken twice.
    let again: Vec<String> = s
        .claim_many(&of, "w", &rt)
        .await
        .expect("claim_many")
        .iter()
        .map(shape)
        .collect();
    assert_eq!(again, want);
    // Another claimer finds them RUNNING.
    let other: Vec<ClaimOf<'_>> = batch
        .iter()
        .map(|t| ClaimOf {
            task_id: *t,
            token: "x",
        })
        .collect();
    let theirs = s.claim_many(&other, "w2", &rt).await.expect("claim_many");
    assert!(matches!(theirs[0], Claim::NotQueued(TaskStatus::Running)));
    assert!(s.claim_many(&[], "w", &rt).await.expect("empty").is_empty());
}

/// Claims the two QUEUED tasks of [`mixed_tasks`] through a reader (so they have entries pending)
/// and builds five finishes: applied, stale (RUNNING under another attempt), unknown, duplicate
/// (already COMPLETED under attempt 1), applied FAILED; all but the unknown one ack an entry.
async fn mixed_finishes(s: &Store, f: &Uuid, consumer: &str) -> (Vec<Uuid>, Vec<String>) {
    let ids = mixed_tasks(s, f).await;
    let mut q = QueueReader::open(s, consumer).await.expect("reader");
    let entries = q
        .read_new(100, Duration::from_millis(50))
        .await
        .expect("read");
    let entry_of = |t: &Uuid| {
        entries
            .iter()
            .find(|e| e.task_id == Some(*t))
            .map(|e| e.entry_id.clone())
            .unwrap_or_default()
    };
    for t in [&ids[0], &ids[4]] {
        assert!(matches!(
            claim(s, t, "w", "c").await,
            Claim::Running { attempt: 1, .. }
        ));
    }
    let entry_ids = ids.iter().map(entry_of).collect();
    (ids, entry_ids)
}

fn finishes<'a>(ids: &[Uuid], entries: &'a [String]) -> Vec<Finish<'a>> {
    let entry = |i: usize| Some(entries[i].as_str()).filter(|e| !e.is_empty());
    let attempts = [Some(1), Some(7), Some(1), Some(1), Some(1)];
    let status = [
        TaskStatus::Completed,
        TaskStatus::Completed,
        TaskStatus::Completed,
        TaskStatus::Completed,
        TaskStatus::Failed,
    ];
    (0..ids.len())
        .map(|i| Finish {
            entry_id: entry(i),
            error: if i == 4 { "Boom: no" } else { "" },
            ..finish(ids[i], attempts[i], status[i], b"res")
        })
        .collect()
}

#[tokio::test]
async fn finish_many_answers_as_single_finishes_acks_and_publishes_once() {
    let r = RedisServer::start();
    let s = store(&r).await;
    let f = s.register_function("f", b"fn").await.expect("register");
    let mut sub = redis::Client::open(r.url())
        .expect("client")
        .get_connection()
        .expect("conn");
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe(keys::DONE_CHANNEL).expect("subscribe");
    pubsub
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");

    let (single, single_entries) = mixed_finishes(&s, &f, "c1").await;
    let mut want = Vec::new();
    for fin in finishes(&single, &single_entries) {
        want.push(s.finish(&fin).await.expect("finish"));
    }
    let after_single = s.stats().await.expect("stats");
    let (batch, batch_entries) = mixed_finishes(&s, &f, "c2").await;
    let fins = finishes(&batch, &batch_entries);
    let got = s.finish_many(&fins).await.expect("finish_many");
    // The batch counts exactly what the single finishes counted (it writes its counters once, at
    // its end): the same outcomes, as many latencies.
    let after_batch = s.stats().await.expect("stats");
    let latencies = |st: &Stats| st.latency_buckets.iter().sum::<u64>();
    assert_eq!(
        latencies(&after_batch) - latencies(&after_single),
        latencies(&after_single)
    );
    for ((outcome, n), (outcome_b, n_b)) in after_single.settled.iter().zip(&after_batch.settled) {
        assert_eq!(outcome, outcome_b);
        assert_eq!(*n_b, 2 * n, "{outcome:?}");
    }
    assert_eq!(got, want);
    assert_eq!(
        got,
        [
            Recorded::Applied,
            Recorded::Stale,
            Recorded::Unknown,
            Recorded::Duplicate,
            Recorded::Applied
        ]
    );
    for (a, b) in single.iter().zip(&batch) {
        let (va, vb) = (
            s.task_view(a).await.expect("view"),
            s.task_view(b).await.expect("view"),
        );
        assert_eq!(
            va.map(|v| (v.status, v.result)),
            vb.map(|v| (v.status, v.result))
        );
    }
    // Again (the reply was lost): applied finishes are now duplicates, nothing else changes.
    let again = s.finish_many(&fins).await.expect("finish_many");
    assert_eq!(
        again,
        [
            Recorded::Duplicate,
            Recorded::Stale,
            Recorded::Unknown,
            Recorded::Duplicate,
            Recorded::Duplicate
        ]
    );
    // Every entry named was acknowledged and deleted, by either path.
    let mut c = r.conn();
    let len: usize = c.xlen(keys::QUEUE).expect("xlen");
    assert_eq!(len, 0, "all entries deleted");
    assert_eq!(pending_ids(&r), [""; 0], "all entries acknowledged");
    // Per path one pre-settled task and two applied finishes: each id once on the done channel.
    let mut published = Vec::new();
    while let Ok(msg) = pubsub.get_message() {
        published.push(msg.get_payload::<String>().expect("payload"));
    }
    let mut want_ids: Vec<String> = [
        single[0], single[3], single[4], batch[0], batch[3], batch[4],
    ]
    .iter()
    .map(Uuid::to_string)
    .collect();
    published.sort();
    want_ids.sort();
    assert_eq!(published, want_ids);
    let stats = s.stats().await.expect("stats");
    let settled = |status: &str| {
        stats
            .settled
            .iter()
            .filter(|((st, _), _)| st == status)
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    // Counted once per applied finish: two pre-settled tasks and two completions, two failures.
    assert_eq!((settled("COMPLETED"), settled("FAILED")), (4, 2));
    assert!(s.finish_many(&[]).await.expect("empty").is_empty());
}

#[tokio::test]
async fn ack_many_and_function_payloads_take_one_call_each() {
    let r = RedisServer::start();
    let s = store(&r).await;
    let Queued {
        function_id: f,
        entries: e,
        reader: mut q,
        ..
    } = queued_and_read(&s, 3, "c").await;
    let ids: Vec<&str> = e.iter().map(|e| e.entry_id.as_str()).collect();
    for _ in 0..2 {
        s.ack_many(&ids).await.expect("ack_many");
    }
    assert_eq!(s.queue_len().await.expect("xlen"), 0);
    assert!(q.read_pending(10).await.expect("pending").is_empty());
    let got = s
        .function_payloads(&[f, Uuid::new_v4()])
        .await
        .expect("payloads");
    assert_eq!(got, [Some(bytes::Bytes::from_static(b"fn")), None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_answers_every_caller_across_count_and_byte_caps() {
    use faas::dispatcher::commit::{GroupCommit, Report, MAX_COUNT};
    let r = RedisServer::start();
    let s = store(&r).await;
    let n = MAX_COUNT + 188;
    let Queued {
        task_ids: ids,
        entries,
        ..
    } = queued_and_read(&s, n, "c").await;
    let tokens: Vec<String> = entries.iter().map(|e| e.entry_id.clone()).collect();
    let of: Vec<ClaimOf<'_>> = ids
        .iter()
        .zip(&tokens)
        .map(|(t, token)| ClaimOf { task_id: *t, token })
        .collect();
    let claims = s
        .claim_many(&of, "w", &Runtime::default())
        .await
        .expect("claim");
    assert!(claims
        .iter()
        .all(|c| matches!(c, Claim::Running { attempt: 1, .. })));
    // Everything queues behind the first call (held by the pause): more finishes than one call
    // takes, and a few results of 3 MiB that close a batch by size.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(300)
        .arg("WRITE")
        .query(&mut r.conn())
        .expect("pause");
    let commit = std::sync::Arc::new(GroupCommit::new(s.clone()));
    let mut finishing = Vec::new();
    for (i, (t, e)) in ids.iter().zip(&tokens).enumerate() {
        let result = if i % 100 == 7 {
            vec![1u8; 3 << 20]
        } else {
            i.to_string().into_bytes()
        };
        let report = Report {
            task_id: *t,
            from: TaskStatus::Running,
            attempt: Some(1),
            status: TaskStatus::Completed,
            result,
            error: String::new(),
            entry_id: Some(e.clone()),
        };
        let commit = commit.clone();
        finishing.push(tokio::spawn(async move { commit.finish(report).await }));
    }
    for f in finishing {
        assert_eq!(f.await.expect("join").expect("stored"), Recorded::Applied);
    }
    for (i, t) in ids.iter().enumerate().filter(|(i, _)| i % 100 != 7) {
        let v = s.task_view(t).await.expect("view").expect("task");
        assert_eq!(v.result, Some(i.to_string().into_bytes()), "task {i}");
    }
    assert_eq!(
        s.queue_len().await.expect("xlen"),
        0,
        "every entry acknowledged"
    );
}
