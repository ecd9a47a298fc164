//! The store's Redis connections under faults, against real redis-servers: a killed connection
//! is replaced unseen, an outage fails calls fast and ends by itself, lost data is recreated,
//! a Sentinel failover is followed, and `wait_replicas` tells when a task is not on a replica.

mod util;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use faas::store::{is_unavailable, Finish, QueueReader, Recorded, Store, StoreError, TaskStatus};
use http_body_util::BodyExt;
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
