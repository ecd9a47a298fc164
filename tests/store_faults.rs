//! The store's Redis connections under faults, against real redis-servers: a killed connection
//! is replaced unseen, an outage fails calls fast and ends by itself, lost data is recreated,
//! a Sentinel failover is followed, and `wait_replicas` tells when a task is not on a replica;
//! the pub/sub subscription is kept while idle and replaced when Redis freezes.

mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use faas::dispatcher::commit::{GroupCommit, Report};
use faas::store::conn::PROBE_AFTER;
use faas::store::follow::{self, ChannelEvent, ChannelListener};
use faas::store::{
    is_unavailable, keys, Finish, QueueReader, Recorded, Store, StoreError, TaskStatus,
};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tower::ServiceExt;
use util::redis::{RedisServer, Sentinels};
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(600);

async fn task(s: &Store) -> Uuid {
    let f = s.register_function("f", b"fn").await.expect("register");
    s.create_task(&f, b"args")
        .await
        .expect("create")
        .expect("function exists")
}

fn kill_clients(r: &RedisServer) -> i64 {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut r.conn())
        .expect("CLIENT KILL")
}

/// A request handed to the client library just as Redis dies can be left neither sent nor
/// failed by it until the response timeout (5 s; about 1 call in 2,000 made as Redis was killed).
/// A call still unanswered after `PROBE_AFTER` sends a `PING` on its connection: on a live one the
/// call goes on waiting; on one that nothing reads any more the `PING` fails at once, and so does
/// the call. Here the call is one that never ends, on the connection before and after the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_call_is_failed_when_a_probe_finds_its_connection_dead() {
    let mut r = RedisServer::start();
    let s = Store::open(&r.url(), TTL).expect("open");
    s.ping().await.expect("ping");
    let never = |_| std::future::pending::<Result<(), ::redis::RedisError>>();
    let live = tokio::time::timeout(PROBE_AFTER * 4, s.conn().run(never)).await;
    assert!(live.is_err(), "a call on a live connection waits: {live:?}");
    r.kill();
    // The connection's reader sees the end; no call has failed on it yet.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(2), s.conn().run(never))
        .await
        .expect("the probe ends the call")
        .expect_err("Redis is dead");
    let took = start.elapsed();
    assert!(took >= PROBE_AFTER, "{took:?}");
    let e = StoreError::from(e);
    assert!(is_unavailable(&e), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_is_replaced_unseen() {
    let r = RedisServer::start();
    let s = Store::open(&r.url(), TTL).expect("open");
    let mut q = QueueReader::open(&s, "c").await.expect("reader");
    let first = task(&s).await;
    assert_eq!(
        q.read_new(10, Duration::from_millis(50))
            .await
            .expect("read")
            .len(),
        1
    );
    // A blocking read is under way when every connection is killed.
    let reading = tokio::spawn(async move {
        let got = q.read_new(10, Duration::from_millis(1500)).await;
        (q, got)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(kill_clients(&r) >= 2);
    // Calls on the killed shared connection succeed: it is replaced and the call sent again.
    let second = task(&s).await;
    assert_eq!(
        s.task_status(&first).await.expect("status"),
        Some(TaskStatus::Queued)
    );
    let (mut q, got) = reading.await.expect("join");
    let mut ids: Vec<_> = got
        .expect("the blocking read survives")
        .into_iter()
        .collect();
    if ids.is_empty() {
        ids = q
            .read_new(10, Duration::from_millis(200))
            .await
            .expect("read");
    }
    assert_eq!(
        ids.iter().map(|e| e.task_id).collect::<Vec<_>>(),
        vec![Some(second)]
    );
    assert!(!s.health().is_down(), "a killed connection is no outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_calls_fast_and_ends_by_itself() {
    let mut r = RedisServer::start_with(&["--appendonly", "yes"]);
    let s = Store::open(&r.url(), TTL).expect("open");
    let t = task(&s).await;
    r.kill();
    // The first connection attempt (at most the shortest back-off away) finds Redis down.
    let killed = Instant::now();
    while !s.health().is_down() {
        let e = s.ping().await.expect_err("Redis is down");
        assert!(is_unavailable(&e), "{e}");
        assert!(killed.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let since = s.health().outage().expect("outage").since;
    // While Redis is down every call fails at once (the gateway's quick 503).
    for _ in 0..20 {
        let start = Instant::now();
        let e = s.task_status(&t).await.expect_err("still down");
        assert!(is_unavailable(&e), "{e}");
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.health().outage().expect("same outage").since, since);
    r.restart();
    let back = Instant::now();
    // A caller that waits for Redis gets through within about a second (the longest back-off).
    let status = s
        .retrying(|| s.task_status(&t))
        .await
        .expect("Redis is back");
    eprintln!(
        "first call through {:?} after Redis answered again",
        back.elapsed()
    );
    assert!(
        back.elapsed() < Duration::from_secs(5),
        "{:?}",
        back.elapsed()
    );
    assert_eq!(
        status,
        Some(TaskStatus::Queued),
        "kept by the append-only file"
    );
    assert!(!s.health().is_down());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_lost_its_data_gets_its_queue_back() {
    let mut r = RedisServer::start();
    let s = Store::open(&r.url(), TTL).expect("open");
    let mut q = QueueReader::open(&s, "c").await.expect("reader");
    let old = task(&s).await;
    assert_eq!(
        q.read_new(10, Duration::from_millis(50))
            .await
            .expect("read")
            .len(),
        1
    );
    r.restart(); // no persistence: empty
    let e = s.retrying(|| s.ping()).await;
    assert!(e.is_ok());
    // The group is gone: a read recreates it, finds nothing, and the next finds new tasks.
    let mut got = Vec::new();
    for _ in 0..3 {
        match q.read_new(10, Duration::from_millis(50)).await {
            Ok(v) if !v.is_empty() => {
                got = v;
                break;
            }
            Ok(_) => {
                let _ = task(&s).await;
            }
            Err(e) => assert!(is_unavailable(&e), "{e}"),
        }
    }
    assert_eq!(got.len(), 1, "a task queued after the loss is delivered");
    assert_eq!(q.adopt_orphans().await.expect("adopt"), 0);
    // A result for a task Redis forgot is named as such.
    let outcome = s
        .finish(&Finish {
            task_id: old,
            from: TaskStatus::Running,
            attempt: Some(1),
            status: TaskStatus::Completed,
            result: b"r",
            error: "",
            entry_id: None,
        })
        .await
        .expect("finish");
    assert_eq!(outcome, Recorded::Unknown);
}

/// Runs a request against the gateway's router.
async fn execute(app: &axum::Router, function_id: &Uuid) -> (StatusCode, serde_json::Value) {
    let body = serde_json::json!({"function_id": function_id, "payload": "gARLAS4=\n"});
    let req = Request::post("/execute_function")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let code = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (code, serde_json::from_slice(&bytes).expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_replicas_says_when_a_task_is_not_on_a_replica() {
    let primary =
        RedisServer::start_with(&["--appendonly", "no", "--repl-diskless-sync-delay", "0"]);
    let p = primary.port.to_string();
    let mut replica =
        RedisServer::start_with(&["--appendonly", "no", "--replicaof", "127.0.0.1", &p]);
    let s = Store::open(&primary.url(), TTL)
        .expect("open")
        .with_replicas(1, Duration::from_millis(300));
    let f = s.register_function("f", b"fn").await.expect("register");
    // Once the replica is in sync, creations are confirmed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match s.create_task(&f, b"a").await {
            Ok(Some(_)) => break,
            Err(StoreError::NotReplicated { .. }) if Instant::now() < deadline => {}
            other => panic!("{other:?}"),
        }
    }
    let t = task(&s).await;
    let on_replica: Option<String> = redis::cmd("HGET")
        .arg(faas::store::keys::task(&t))
        .arg("status")
        .query(&mut replica.conn())
        .expect("replica");
    assert_eq!(
        on_replica.as_deref(),
        Some("QUEUED"),
        "on the replica when create returns"
    );
    replica.kill();
    let e = s.create_task(&f, b"a").await.expect_err("no replica");
    let StoreError::NotReplicated {
        task_ids,
        acked,
        wanted,
        ..
    } = e
    else {
        panic!("{e}");
    };
    assert_eq!((acked, wanted, task_ids.len()), (0, 1, 1));
    assert_eq!(
        s.task_status(&task_ids[0]).await.expect("status"),
        Some(TaskStatus::Queued),
        "the unconfirmed task is queued all the same"
    );
    // The gateway answers 503 and names the task.
    let app = faas::gateway::router(s.clone(), &faas::config::GatewayConfig::default());
    let (code, body) = execute(&app, &f).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("is queued, but only 0 of 1 Redis replicas"),
        "{detail}"
    );
    let id = detail
        .split_whitespace()
        .nth(1)
        .and_then(|w| Uuid::parse_str(w).ok())
        .expect("task id in the detail");
    assert_eq!(
        s.task_status(&id).await.expect("status"),
        Some(TaskStatus::Queued)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_url_follows_a_failover_and_loses_no_confirmed_task() {
    let mut set = Sentinels::start();
    let s = Store::open(&set.url(), TTL)
        .expect("open")
        .with_replicas(1, Duration::from_millis(1000));
    let mut q = QueueReader::open(&s, "c").await.expect("reader");
    let f = s.register_function("f", b"fn").await.expect("register");
    let mut confirmed = Vec::new();
    for _ in 0..20 {
        confirmed.push(
            s.create_task(&f, b"a")
                .await
                .expect("create")
                .expect("task"),
        );
    }
    let old = set.primary_port().expect("primary");
    assert_eq!(old, set.nodes[0].port);
    set.nodes[0].kill();
    let killed = Instant::now();
    // Without a replica left WAIT cannot be satisfied; the creation itself must go through.
    let s1 = Store::open(&set.url(), TTL).expect("open");
    let after = s1
        .retrying(|| s1.register_function("f2", b"fn"))
        .await
        .expect("the new primary takes writes");
    eprintln!(
        "writes accepted {:?} after the primary died",
        killed.elapsed()
    );
    assert_eq!(set.primary_port(), Some(set.nodes[1].port));
    for t in &confirmed {
        assert_eq!(
            s.retrying(|| s.task_status(t)).await.expect("status"),
            Some(TaskStatus::Queued),
            "a confirmed task survived the failover"
        );
    }
    assert!(s.function_payload(&after).await.expect("read").is_some());
    // The queue reader follows too: it reads the confirmed tasks from the new primary.
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while read < confirmed.len() {
        assert!(
            Instant::now() < deadline,
            "read {read} of {}",
            confirmed.len()
        );
        match q.read_new(100, Duration::from_millis(100)).await {
            Ok(v) => read += v.len(),
            Err(e) => {
                assert!(is_unavailable(&e), "{e}");
                tokio::time::sleep(q.retry_in().max(Duration::from_millis(50))).await;
            }
        }
    }
}

/// `n` tasks claimed through a reader (so each has a pending entry): (task id, entry id).
async fn claimed(s: &Store, n: usize) -> Vec<(Uuid, String)> {
    let f = s.register_function("f", b"fn").await.expect("register");
    let args: Vec<&[u8]> = vec![b"a"; n];
    s.create_tasks(&f, &args, None)
        .await
        .expect("create")
        .expect("function exists");
    let mut q = QueueReader::open(s, "c").await.expect("reader");
    let entries = q
        .read_new(n, Duration::from_millis(100))
        .await
        .expect("read");
    assert_eq!(entries.len(), n);
    let mut out = Vec::new();
    for e in entries {
        let t = e.task_id.expect("task id");
        assert!(matches!(
            s.claim(&t, "w").await.expect("claim"),
            faas::store::Claim::Running { attempt: 1, .. }
        ));
        out.push((t, e.entry_id));
    }
    out
}

fn report(task_id: Uuid, entry_id: &str, result: Vec<u8>) -> Report {
    Report {
        task_id,
        from: TaskStatus::Running,
        attempt: Some(1),
        status: TaskStatus::Completed,
        result,
        error: String::new(),
        entry_id: Some(entry_id.to_string()),
    }
}

/// Holds every write command for `ms` milliseconds (they queue up meanwhile).
fn pause_writes(r: &RedisServer, ms: u64) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("WRITE")
        .query(&mut r.conn())
        .expect("CLIENT PAUSE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_stores_every_result_once_through_a_dropped_connection_and_an_outage() {
    let mut r = RedisServer::start_with(&["--appendonly", "yes"]);
    let s = Store::open(&r.url(), TTL).expect("open");
    let runs = claimed(&s, 40).await;
    let commit = std::sync::Arc::new(GroupCommit::new(s.clone()));
    // The first result's call is held by the pause; the others queue behind it (a batch).
    pause_writes(&r, 400);
    let mut finishing = tokio::task::JoinSet::new();
    for (t, e) in &runs {
        let (commit, rep) = (commit.clone(), report(*t, e, t.as_bytes().to_vec()));
        finishing.spawn(async move { commit.finish(rep).await });
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The connection with a batch in flight is dropped, then Redis is killed and comes back.
    assert!(kill_clients(&r) >= 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.restart();
    while let Some(got) = finishing.join_next().await {
        let got = got.expect("join").expect("stored once Redis answered");
        assert!(
            matches!(got, Recorded::Applied | Recorded::Duplicate),
            "{got:?}"
        );
    }
    for (t, _) in &runs {
        let v = s.task_view(t).await.expect("view").expect("task");
        assert_eq!(v.status, TaskStatus::Completed);
        assert_eq!(v.result.as_deref(), Some(&t.as_bytes()[..]));
    }
    assert_eq!(
        s.queue_len().await.expect("xlen"),
        0,
        "every entry acknowledged"
    );
    let stats = s.stats().await.expect("stats");
    let completed: u64 = stats
        .settled
        .iter()
        .filter(|((st, _), _)| st == "COMPLETED")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(completed, 40, "each result counted exactly once");
}

/// Redis closes a connection that sent a value above `proto-max-bulk-len`. That is no outage:
/// the connection had worked, so it is replaced at once and the next call goes through, however
/// soon it follows (before, it could fall in the back-off after the previous connection attempt
/// and fail at once as "Redis unreachable").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_after_a_refused_value_is_replaced_at_once() {
    let r = RedisServer::start_with(&["--appendonly", "no", "--proto-max-bulk-len", "1mb"]);
    let s = Store::open(&r.url(), TTL).expect("open");
    let f = s.register_function("f", b"fn").await.expect("register");
    for round in 0..3 {
        let e = s
            .register_function("big", &vec![0u8; 2 << 20])
            .await
            .expect_err("refused");
        assert!(faas::store::is_value_refused(&e), "round {round}: {e}");
        let t = s
            .create_task(&f, b"args")
            .await
            .unwrap_or_else(|e| panic!("round {round}: the call after a refusal failed: {e}"));
        assert!(t.is_some());
    }
    assert!(!s.health().is_down(), "a refused value is no outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_redis_refuses_fails_only_its_own_finish_in_a_batch() {
    let r = RedisServer::start_with(&["--appendonly", "no", "--proto-max-bulk-len", "1mb"]);
    let s = Store::open(&r.url(), TTL).expect("open");
    let runs = claimed(&s, 6).await;
    let commit = std::sync::Arc::new(GroupCommit::new(s.clone()));
    pause_writes(&r, 300);
    let mut finishing = Vec::new();
    for (i, (t, e)) in runs.iter().enumerate() {
        // The first goes alone (held by the pause), the rest form one batch with the big one.
        let result = if i == 3 {
            vec![7u8; 2 << 20]
        } else {
            vec![i as u8]
        };
        let (commit, rep) = (commit.clone(), report(*t, e, result));
        finishing.push(tokio::spawn(async move { commit.finish(rep).await }));
        if i == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for (i, f) in finishing.into_iter().enumerate() {
        let got = f.await.expect("join");
        if i == 3 {
            let e = got.expect_err("refused");
            assert!(faas::store::is_value_refused(&e), "{e}");
        } else {
            assert_eq!(got.expect("stored"), Recorded::Applied, "finish {i}");
        }
    }
    let statuses: Vec<_> = {
        let mut v = Vec::new();
        for (t, _) in &runs {
            v.push(s.task_status(t).await.expect("status"));
        }
        v
    };
    let mut want = vec![Some(TaskStatus::Completed); 6];
    want[3] = Some(TaskStatus::Running);
    assert_eq!(statuses, want, "only the refused result is not stored");
}

// ---- the pub/sub subscription (store::follow) ---------------------------------------------

/// A [`ChannelListener`] that forwards every event to the test.
struct Events(mpsc::UnboundedSender<ChannelEvent>);

impl ChannelListener for Events {
    fn on_event(&self, event: ChannelEvent) {
        let _ = self.0.send(event);
    }
}

/// How often the tests' subscriptions are pinged when idle.
const FOLLOW_PING: Duration = Duration::from_millis(200);

/// Follows the done channel of `r`, pinging an idle subscription every [`FOLLOW_PING`], until
/// the first `Subscribed`. The subscription lasts while the returned listener does; its further
/// events arrive on the receiver.
async fn follow_done(r: &RedisServer) -> (Arc<Events>, mpsc::UnboundedReceiver<ChannelEvent>) {
    util::init_tracing();
    let s = Store::open(&r.url(), TTL).expect("open");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let events = Arc::new(Events(tx));
    tokio::spawn(follow::follow_with(
        s.connector().clone(),
        keys::DONE_CHANNEL,
        Arc::downgrade(&events),
        FOLLOW_PING,
    ));
    assert_eq!(
        next_event(&mut rx, Duration::from_secs(10)).await,
        Some(ChannelEvent::Subscribed)
    );
    (events, rx)
}

/// The next event within `limit`, if any.
async fn next_event(
    rx: &mut mpsc::UnboundedReceiver<ChannelEvent>,
    limit: Duration,
) -> Option<ChannelEvent> {
    tokio::time::timeout(limit, rx.recv()).await.ok().flatten()
}

/// Publishes a new task id on the done channel, as the scripts do; returns it.
fn publish_done(r: &RedisServer) -> Uuid {
    let id = Uuid::new_v4();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(keys::DONE_CHANNEL)
        .arg(id.to_string())
        .query(&mut r.conn())
        .expect("PUBLISH");
    id
}

/// The value of `field` in the `section` of the server's `INFO`.
fn info_field(r: &RedisServer, section: &str, field: &str) -> Option<String> {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query(&mut r.conn())
        .expect("INFO");
    let prefix = format!("{field}:");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
}

/// How many PING commands the server has answered.
fn pings_answered(r: &RedisServer) -> u64 {
    info_field(r, "commandstats", "cmdstat_ping")
        .and_then(|v| v.strip_prefix("calls=")?.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// An idle subscription (nothing published for several ping periods) is kept: every ping is
/// answered and none is taken for a lost connection, so there is exactly one `Subscribed` and
/// nothing else; a message published afterwards is delivered on it. (Operators saw "subscription
/// lost; reconnecting" every ping period on an idle system: the pong of a subscribed RESP2
/// connection is an array, which failed to convert.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_subscription_is_kept_and_still_delivers() {
    let r = RedisServer::start();
    let (_listener, mut events) = follow_done(&r).await;
    let before = pings_answered(&r);
    tokio::time::sleep(FOLLOW_PING * 6).await;
    assert!(
        pings_answered(&r) >= before + 2,
        "the idle subscription was pinged"
    );
    let mut idle = Vec::new();
    while let Ok(ev) = events.try_recv() {
        idle.push(ev);
    }
    assert_eq!(idle, [], "nothing happens on an idle subscription");
    let id = publish_done(&r);
    assert_eq!(
        next_event(&mut events, Duration::from_secs(5)).await,
        Some(ChannelEvent::Task(id))
    );
}

/// A Redis that stops answering (SIGSTOP: the TCP connection stays open) is noticed by the
/// unanswered ping: the subscription is given up and, once Redis runs again, made anew
/// (`Subscribed` again), and it delivers. Without the ping the old connection would simply
/// resume and nothing would be reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_noticed_by_the_ping_and_subscribed_again() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let r = RedisServer::start();
    let (_listener, mut events) = follow_done(&r).await;
    let pid: i32 = info_field(&r, "server", "process_id")
        .and_then(|p| p.parse().ok())
        .expect("process_id");
    kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP");
    // Frozen for longer than a ping period plus the wait for its answer.
    tokio::time::sleep(FOLLOW_PING + follow::PING_WAIT + Duration::from_secs(2)).await;
    assert_eq!(
        events.try_recv().ok(),
        None,
        "nothing while Redis is frozen"
    );
    kill(Pid::from_raw(pid), Signal::SIGCONT).expect("SIGCONT");
    assert_eq!(
        next_event(&mut events, Duration::from_secs(10)).await,
        Some(ChannelEvent::Subscribed),
        "the silent connection was replaced"
    );
    let id = publish_done(&r);
    assert_eq!(
        next_event(&mut events, Duration::from_secs(5)).await,
        Some(ChannelEvent::Task(id))
    );
}
