//! The API beyond the specification against a real redis-server: long-polls (and their wake-up
//! after the subscription is killed or Redis restarts), batch submit and wait, cancel, per-task
//! timeouts, functions, /info, /metrics, /docs and the generated OpenAPI document. The
//! dispatcher's side is played by the test through the store (claim, finish).

mod util;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use http_body_util::BodyExt;
use redis::Commands;
use serde_json::{json, Value};
use tower::ServiceExt;
use util::redis::RedisServer;
use uuid::Uuid;

use faas::config::GatewayConfig;
use faas::store::presence::{DispatcherPresence, WorkerPresence};
use faas::store::{Claim, Finish, Store, TaskStatus};

/// A minimal valid pickle (`None`, protocol 4).
const NONE_PICKLE: &[u8] = b"\x80\x04N.";

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unb64(text: &str) -> Vec<u8> {
    let compact: String = text.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .expect("base64")
}

struct Api {
    app: axum::Router,
    store: Store,
    redis: RedisServer,
}

impl Api {
    async fn new() -> Self {
        Self::with(GatewayConfig::default()).await
    }

    async fn with(cfg: GatewayConfig) -> Self {
        let redis = RedisServer::start();
        let store = redis.store(Duration::ZERO).await;
        let app = faas::gateway::router(store.clone(), &cfg);
        let api = Api { app, store, redis };
        api.subscribed().await;
        api
    }

    /// Waits until the gateway's done-channel subscription is up (long-polls rely on it).
    async fn subscribed(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("faas:done")
                .query(&mut self.redis.conn())
                .expect("numsub");
            if n.first().is_some_and(|(_, c)| *c > 0) {
                return;
            }
            assert!(Instant::now() < deadline, "gateway never subscribed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn raw(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Vec<u8>, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(
                body.map(|b| Body::from(b.to_string()))
                    .unwrap_or_else(Body::empty),
            )
            .expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, bytes.to_vec(), ctype)
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, bytes, _) = self.raw(method, uri, body).await;
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("non-JSON body {:?}", String::from_utf8_lossy(&bytes)));
        (status, v)
    }

    /// Sends a request in the background (a long-poll); the handle yields status and body.
    fn spawn(
        &self,
        method: &str,
        uri: String,
        body: Option<Value>,
    ) -> tokio::task::JoinHandle<(StatusCode, Value)> {
        let app = self.app.clone();
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(
                body.map(|b| Body::from(b.to_string()))
                    .unwrap_or_else(Body::empty),
            )
            .expect("request");
        tokio::spawn(async move {
            let resp = app.oneshot(req).await.expect("response");
            let status = resp.status();
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }

    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", uri, Some(body)).await
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call("GET", uri, None).await
    }

    async fn function(&self, name: &str) -> String {
        let (code, v) = self
            .post(
                "/register_function",
                json!({"name": name, "payload": b64(NONE_PICKLE)}),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{v}");
        v["function_id"].as_str().expect("id").to_string()
    }

    async fn task(&self, fid: &str) -> Uuid {
        let (code, v) = self
            .post(
                "/execute_function",
                json!({"function_id": fid, "payload": b64(NONE_PICKLE)}),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{v}");
        Uuid::parse_str(v["task_id"].as_str().expect("id")).expect("uuid")
    }

    /// Plays the dispatcher: claims and completes `t` with `result`.
    async fn complete(&self, t: Uuid, result: &[u8]) {
        let Claim::Running { attempt, .. } = self.store.claim(&t, "test").await.expect("claim")
        else {
            panic!("task {t} was not QUEUED");
        };
        let recorded = self
            .store
            .finish(&Finish {
                task_id: t,
                from: TaskStatus::Running,
                attempt: Some(attempt),
                status: TaskStatus::Completed,
                result,
                error: "",
                entry_id: None,
            })
            .await
            .expect("finish");
        assert_eq!(recorded, faas::store::Recorded::Applied);
    }
}

// ---- long-poll ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_answers_when_the_task_ends() {
    let api = Api::new().await;
    let fid = api.function("f").await;
    let t = api.task(&fid).await;
    let started = Instant::now();
    let poll = api.spawn("GET", format!("/result/{t}?wait=20"), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the long-poll answered before the task ended"
    );
    let finished = Instant::now();
    api.complete(t, b"\x80\x04K*.").await;
    let (_, v) = poll.await.expect("join");
    let woke = finished.elapsed();
    assert_eq!(v["status"], "COMPLETED");
    assert_eq!(unb64(v["result"].as_str().expect("result")), b"\x80\x04K*.");
    eprintln!(
        "long-poll woke {woke:?} after the task ended ({:?} in all)",
        started.elapsed()
    );
    assert!(woke < Duration::from_secs(5), "woke after {woke:?}");
}

#[tokio::test]
async fn long_poll_returns_the_current_state_when_the_wait_runs_out() {
    let api = Api::with(GatewayConfig {
        max_wait_secs: 0.3,
        ..Default::default()
    })
    .await;
    let fid = api.function("f").await;
    let t = api.task(&fid).await;
    let started = Instant::now();
    // Asked for 100 s: shortened to max_wait_secs.
    let (code, v) = api.get(&format!("/result/{t}?wait=100")).await;
    let took = started.elapsed();
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v, json!({"task_id": t, "status": "QUEUED", "result": null}));
    assert!(
        took >= Duration::from_millis(250),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
}

#[tokio::test]
async fn long_poll_edge_cases() {
    let api = Api::new().await;
    let unknown = Uuid::new_v4();
    let (code, _) = api.get(&format!("/result/{unknown}?wait=5")).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "unknown ids answer at once");
    let fid = api.function("f").await;
    let t = api.task(&fid).await;
    for bad in ["abc", "-1", "nan"] {
        let (code, v) = api.get(&format!("/result/{t}?wait={bad}")).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "wait={bad}: {v}");
        assert_eq!(v["detail"][0]["loc"], json!(["query", "wait"]));
    }
    api.complete(t, NONE_PICKLE).await;
    let started = Instant::now();
    let (code, v) = api.get(&format!("/result/{t}?wait=30")).await;
    assert_eq!(
        (code, v["status"].clone()),
        (StatusCode::OK, json!("COMPLETED"))
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a finished task answers at once"
    );
}

#[tokio::test]
async fn waiters_are_bounded() {
    let api = Api::with(GatewayConfig {
        max_waiters: 1,
        ..Default::default()
    })
    .await;
    let fid = api.function("f").await;
    let (t1, t2) = (api.task(&fid).await, api.task(&fid).await);
    let first = api.spawn("GET", format!("/result/{t1}?wait=20"), None);
    // Once the first waiter is registered, the second is refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body, _) = api.raw("GET", "/metrics", None).await;
        if String::from_utf8_lossy(&body).contains("\nfaas_waiters 1\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first waiter never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let req = Request::get(format!("/result/{t2}?wait=5"))
        .body(Body::empty())
        .expect("request");
    let refused = api.app.clone().oneshot(req).await.expect("response");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    let bytes = refused
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    assert!(
        v["detail"]
            .as_str()
            .expect("detail")
            .contains("max_waiters"),
        "{v}"
    );
    // Without a wait there is no waiter: served as ever.
    let (code, _) = api.get(&format!("/result/{t2}")).await;
    assert_eq!(code, StatusCode::OK);
    api.complete(t1, NONE_PICKLE).await;
    assert_eq!(first.await.expect("join").0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_survive_a_killed_subscription_and_a_redis_restart() {
    let mut api = Api::new().await;
    let fid = api.function("f").await;

    // 1. The subscription is killed while a long-poll waits; the task ends meanwhile.
    let t = api.task(&fid).await;
    let poll = api.spawn("GET", format!("/result/{t}?wait=30"), None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The task ends without a notification (as if it was published while the subscription
    // was down): nothing wakes the long-poll...
    let _: () = api
        .redis
        .conn()
        .hset_multiple(
            format!("faas:task:{t}"),
            &[("status", "COMPLETED"), ("result", "\u{80}\u{4}N.")],
        )
        .expect("hset");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "woken without a notification");
    // ...until the subscription is lost and re-established: then every waiter re-reads.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut api.redis.conn())
        .expect("client kill");
    assert_eq!(killed, 1, "one subscription per gateway");
    let started = Instant::now();
    let (_, v) = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("the long-poll was never woken")
        .expect("join");
    assert_eq!(v["status"], "COMPLETED");
    eprintln!(
        "re-checked {:?} after the subscription was killed",
        started.elapsed()
    );
    api.subscribed().await;

    // 2. Redis restarts (empty: no persistence) while a long-poll waits for a new task.
    let t2 = api.task(&fid).await;
    let poll = api.spawn("GET", format!("/result/{t2}?wait=30"), None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.redis.kill();
    api.redis.restart();
    // The task is gone with Redis' data: the re-check after resubscribing says so (404).
    let (code, _) = tokio::time::timeout(Duration::from_secs(20), poll)
        .await
        .expect("the long-poll was never woken after the restart")
        .expect("join");
    assert_eq!(code, StatusCode::NOT_FOUND);
    api.subscribed().await;
    // And new long-polls work on the restarted Redis.
    let fid = api.function("g").await;
    let t3 = api.task(&fid).await;
    let poll = api.spawn("GET", format!("/result/{t3}?wait=30"), None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.complete(t3, NONE_PICKLE).await;
    let (code, _) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("not woken")
        .expect("join");
    assert_eq!(code, StatusCode::OK);
}

// ---- batches ------------------------------------------------------------------------------

#[tokio::test]
async fn batch_submit_is_atomic_and_ordered() {
    let api = Api::with(GatewayConfig {
        max_batch: 5,
        ..Default::default()
    })
    .await;
    let fid = api.function("f").await;
    let payloads: Vec<String> = (0..5).map(|_| b64(NONE_PICKLE)).collect();
    let (code, v) = api
        .post(
            "/execute_batch",
            json!({"function_id": fid, "payloads": payloads}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let ids: Vec<Uuid> = v["task_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|x| Uuid::parse_str(x.as_str().expect("str")).expect("uuid"))
        .collect();
    assert_eq!(ids.len(), 5);
    let len: usize = api.redis.conn().xlen("faas:queue").expect("xlen");
    assert_eq!(len, 5);
    for id in &ids {
        let (code, v) = api.get(&format!("/status/{id}")).await;
        assert_eq!(
            (code, v["status"].clone()),
            (StatusCode::OK, json!("QUEUED"))
        );
    }
    // One bad payload: 400 naming it, and nothing is written.
    let mut bad = payloads.clone();
    bad[3] = "not base64!".into();
    let (code, v) = api
        .post(
            "/execute_batch",
            json!({"function_id": fid, "payloads": bad}),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        v["detail"].as_str().expect("detail").contains("payload 3"),
        "{v}"
    );
    // Too many, unknown function, empty.
    let six: Vec<String> = (0..6).map(|_| b64(NONE_PICKLE)).collect();
    let (code, v) = api
        .post(
            "/execute_batch",
            json!({"function_id": fid, "payloads": six}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (code, _) = api
        .post(
            "/execute_batch",
            json!({"function_id": Uuid::new_v4(), "payloads": payloads}),
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, v) = api
        .post(
            "/execute_batch",
            json!({"function_id": fid, "payloads": []}),
        )
        .await;
    assert_eq!((code, v), (StatusCode::OK, json!({"task_ids": []})));
    let len: usize = api.redis.conn().xlen("faas:queue").expect("xlen");
    assert_eq!(len, 5, "failed batches wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_wait_first_and_all_completed() {
    let api = Api::new().await;
    let fid = api.function("f").await;
    let (a, b) = (api.task(&fid).await, api.task(&fid).await);
    let unknown = Uuid::new_v4();
    // Nothing done: a zero timeout answers at once with everything pending.
    let (code, v) = api
        .post("/wait", json!({"task_ids": [a, b, a], "timeout": 0}))
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        (&v["done"], &v["pending"], &v["unknown"]),
        (&json!([]), &json!([a, b]), &json!([]))
    );
    assert!(v["cursor"].is_string());
    // Unknown ids count as done for FIRST_COMPLETED.
    let (_, v) = api
        .post("/wait", json!({"task_ids": [a, unknown], "timeout": 10}))
        .await;
    assert_eq!(v["unknown"], json!([unknown]));
    assert_eq!(v["pending"], json!([a]));

    let first = api.spawn(
        "POST",
        "/wait".into(),
        Some(json!({"task_ids": [a, b], "timeout": 20})),
    );
    let all = api.spawn(
        "POST",
        "/wait".into(),
        Some(json!({"task_ids": [a, b], "timeout": 20, "return_when": "ALL_COMPLETED"})),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.complete(b, NONE_PICKLE).await;
    let (_, v) = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("FIRST_COMPLETED answers after one task")
        .expect("join");
    assert_eq!(v["done"][0]["task_id"], json!(b));
    assert_eq!(v["done"][0]["status"], "COMPLETED");
    assert_eq!(v["pending"], json!([a]));
    assert!(
        !all.is_finished(),
        "ALL_COMPLETED answered with a task pending"
    );
    api.complete(a, NONE_PICKLE).await;
    let (_, v) = tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .expect("ALL_COMPLETED answers after both")
        .expect("join");
    assert_eq!(v["done"].as_array().expect("done").len(), 2);
    assert_eq!(v["pending"], json!([]));
    // Schema: too many ids, bad ids, bad return_when.
    let api5 = Api::with(GatewayConfig {
        max_batch: 1,
        ..Default::default()
    })
    .await;
    let (code, _) = api5
        .post("/wait", json!({"task_ids": [a, b], "timeout": 0}))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    let (code, v) = api
        .post("/wait", json!({"task_ids": [a, "nope"], "timeout": 0}))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["detail"][0]["loc"], json!(["body", "task_ids", 1]), "{v}");
    let (code, _) = api
        .post("/wait", json!({"task_ids": [a], "return_when": "SOON"}))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_wait_cursor_reads_only_what_was_announced_since() {
    let api = Api::new().await;
    let fid = api.function("f").await;
    let (a, b, c) = (
        api.task(&fid).await,
        api.task(&fid).await,
        api.task(&fid).await,
    );
    let (_, v) = api
        .post("/wait", json!({"task_ids": [a, b, c], "timeout": 0}))
        .await;
    let cursor = v["cursor"].as_str().expect("cursor").to_string();
    assert_eq!(v["pending"], json!([a, b, c]));
    // b ends (and is announced); c's record is changed behind the gateway's back (no
    // announcement): with the cursor only b is re-read, so c still counts as pending.
    api.complete(b, NONE_PICKLE).await;
    let _: () = api
        .redis
        .conn()
        .hset(format!("faas:task:{c}"), "status", "COMPLETED")
        .expect("hset");
    let ask = |cursor: &str| json!({"task_ids": [], "pending": [a, b, c], "cursor": cursor, "timeout": 5});
    // The announcement may still be on its way: ask until it was seen.
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let (code, v) = api.post("/wait", ask(&cursor)).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        if !v["done"].as_array().expect("done").is_empty() {
            break v;
        }
        assert!(Instant::now() < deadline, "b never reported");
    };
    assert_eq!(v["done"][0]["task_id"], json!(b));
    assert_eq!(
        v["pending"],
        json!([a, c]),
        "c was not read: nothing announced it"
    );
    // The cursor vouches only for the ids its answer called pending: sent with others (an id
    // that was never pending, or only some of them), it is ignored and everything is read, so
    // the unknown id is reported unknown rather than pending until the timeout.
    let (a_left, unknown) = (&v["pending"][0], Uuid::new_v4());
    let (_, v) = api
        .post("/wait", json!({"task_ids": [], "pending": [a, c, unknown], "cursor": v["cursor"], "timeout": 5}))
        .await;
    assert_eq!(v["unknown"], json!([unknown]), "{v}");
    assert_eq!(v["done"][0]["task_id"], json!(c), "{v}");
    assert_eq!(&v["pending"][0], a_left);
    // A cursor this gateway cannot vouch for (garbage, another gateway's): everything is read.
    for bad in ["nonsense", "1.2.3.4"] {
        let (_, v) = api.post("/wait", ask(bad)).await;
        let done: Vec<&Value> = v["done"]
            .as_array()
            .expect("done")
            .iter()
            .map(|d| &d["task_id"])
            .collect();
        assert_eq!(done, [&json!(b), &json!(c)], "cursor {bad}");
        assert_eq!(v["pending"], json!([a]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_wait_gathers_tasks_that_end_shortly_after_the_first() {
    let api = Api::new().await;
    let fid = api.function("f").await;
    let (a, b, c) = (
        api.task(&fid).await,
        api.task(&fid).await,
        api.task(&fid).await,
    );
    let started = Instant::now();
    let waiting = api.spawn(
        "POST",
        "/wait".into(),
        Some(json!({"task_ids": [a, b, c], "timeout": 20, "gather": 1.0})),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.complete(a, NONE_PICKLE).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.complete(b, NONE_PICKLE).await;
    let (_, v) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered")
        .expect("join");
    let took = started.elapsed();
    let done: Vec<&Value> = v["done"]
        .as_array()
        .expect("done")
        .iter()
        .map(|d| &d["task_id"])
        .collect();
    assert_eq!(
        done,
        [&json!(a), &json!(b)],
        "b ended within the gathering second"
    );
    assert_eq!(v["pending"], json!([c]));
    assert!(
        took < Duration::from_secs(5),
        "answered after {took:?}: gather is bounded"
    );
    for return_when in ["FIRST_COMPLETED", "ALL_COMPLETED"] {
        let body = json!({"task_ids": [c], "gather": -1, "return_when": return_when});
        let (code, _) = api.post("/wait", body).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{return_when}");
    }
}

// ---- cancel -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_running_finished_and_unknown() {
    let api = Api::new().await;
    let fid = api.function("f").await;
    let t = api.task(&fid).await;
    let poll = api.spawn("GET", format!("/result/{t}?wait=20"), None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (code, v) = api.post(&format!("/cancel/{t}"), json!({})).await;
    assert_eq!(
        (code, v),
        (StatusCode::OK, json!({"task_id": t, "status": "FAILED"}))
    );
    // A waiting long-poll is woken with the TaskCancelled exception.
    let (_, v) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("woken")
        .expect("join");
    assert_eq!(v["status"], "FAILED");
    let text = util::python::describe(&unb64(v["result"].as_str().expect("result")));
    assert!(text.contains("TaskCancelled"), "{text}");
    // The dispatcher finds it settled: nothing runs.
    assert!(matches!(
        api.store.claim(&t, "w").await.expect("claim"),
        Claim::NotQueued(TaskStatus::Failed)
    ));
    // Cancelled again, finished: 409.
    let (code, v) = api.post(&format!("/cancel/{t}"), json!({})).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(
        v["detail"]
            .as_str()
            .expect("detail")
            .contains("already finished"),
        "{v}"
    );
    // Running: FAILED with TaskCancelled at once, its id published on the cancel channel (the
    // dispatcher running it kills the executor), and the run's late result is refused as stale.
    let r = api.task(&fid).await;
    let Claim::Running { attempt, .. } = api.store.claim(&r, "w").await.expect("claim") else {
        panic!("expected RUNNING");
    };
    // With running=false a RUNNING task is left alone (409) and keeps its run.
    let (code, v) = api
        .post(&format!("/cancel/{r}?running=false"), json!({}))
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{v}");
    assert!(
        v["detail"].as_str().expect("detail").contains("RUNNING"),
        "{v}"
    );
    let (code, _) = api
        .post(&format!("/cancel/{r}?running=maybe"), json!({}))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    let mut sub = api.redis.conn();
    let mut pubsub = sub.as_pubsub();
    pubsub
        .subscribe(faas::store::keys::CANCEL_CHANNEL)
        .expect("subscribe");
    let (code, v) = api.post(&format!("/cancel/{r}"), json!({})).await;
    assert_eq!(
        (code, v),
        (StatusCode::OK, json!({"task_id": r, "status": "FAILED"}))
    );
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let msg = pubsub
        .get_message()
        .expect("published on the cancel channel");
    assert_eq!(msg.get_payload::<String>().expect("payload"), r.to_string());
    let (_, v) = api.get(&format!("/result/{r}")).await;
    let text = util::python::describe(&unb64(v["result"].as_str().expect("result")));
    assert!(
        text.contains("TaskCancelled") && text.contains("while running"),
        "{text}"
    );
    let late = api
        .store
        .finish(&Finish {
            task_id: r,
            from: TaskStatus::Running,
            attempt: Some(attempt),
            status: TaskStatus::Completed,
            result: b"late",
            error: "",
            entry_id: None,
        })
        .await
        .expect("finish");
    assert_eq!(
        late,
        faas::store::Recorded::Stale,
        "the cancelled run's result is dropped"
    );
    // Queued cancels are not published there (nothing runs them).
    let q = api.task(&fid).await;
    let (code, _) = api.post(&format!("/cancel/{q}"), json!({})).await;
    assert_eq!(code, StatusCode::OK);
    pubsub
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    assert!(
        pubsub.get_message().is_err(),
        "no cancel message for a queued task"
    );
    let (code, _) = api
        .post(&format!("/cancel/{}", Uuid::new_v4()), json!({}))
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = api.post("/cancel/not-a-uuid", json!({})).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    // The cancelled record expires like any result (gateway result_ttl_secs, default 7 days).
    let ttl: i64 = api.redis.conn().ttl(format!("faas:task:{t}")).expect("ttl");
    assert!(ttl > 6 * 24 * 3600, "ttl {ttl}");
}

// ---- per-task timeout ---------------------------------------------------------------------

#[tokio::test]
async fn per_task_timeouts_are_bounded_and_reach_the_claim() {
    let api = Api::with(GatewayConfig {
        max_task_timeout_secs: 10.0,
        ..Default::default()
    })
    .await;
    let fid = api.function("f").await;
    let (code, v) = api
        .post(
            "/execute_function",
            json!({"function_id": fid, "payload": b64(NONE_PICKLE), "timeout": 2.5}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let t = Uuid::parse_str(v["task_id"].as_str().expect("id")).expect("uuid");
    let Claim::Running { timeout, .. } = api.store.claim(&t, "w").await.expect("claim") else {
        panic!("not claimed");
    };
    assert_eq!(timeout, Some(Duration::from_millis(2500)));
    // Without one: none.
    let u = api.task(&fid).await;
    let Claim::Running { timeout, .. } = api.store.claim(&u, "w").await.expect("claim") else {
        panic!("not claimed");
    };
    assert_eq!(timeout, None);
    for bad in [json!(0), json!(-1), json!(11), json!("5")] {
        let (code, v) = api
            .post(
                "/execute_function",
                json!({"function_id": fid, "payload": b64(NONE_PICKLE), "timeout": bad}),
            )
            .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "timeout {bad}: {v}");
        assert_eq!(v["detail"][0]["loc"], json!(["body", "timeout"]), "{v}");
    }
    // Batches carry it too.
    let (_, v) = api
        .post(
            "/execute_batch",
            json!({"function_id": fid, "payloads": [b64(NONE_PICKLE)], "timeout": 1}),
        )
        .await;
    let b = Uuid::parse_str(v["task_ids"][0].as_str().expect("id")).expect("uuid");
    let Claim::Running { timeout, .. } = api.store.claim(&b, "w").await.expect("claim") else {
        panic!("not claimed");
    };
    assert_eq!(timeout, Some(Duration::from_secs(1)));
}

// ---- functions ----------------------------------------------------------------------------

#[tokio::test]
async fn functions_are_listed_described_and_deleted() {
    let api = Api::new().await;
    let f1 = api.function("first").await;
    // Listed by registration time in ms (ties by id).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let f2 = api.function("second").await;
    let (code, v) = api.get("/functions").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["total"], 2);
    let names: Vec<&str> = v["functions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["first", "second"], "registration order");
    let (_, v) = api.get("/functions?offset=1&limit=1").await;
    assert_eq!(v["functions"][0]["function_id"], json!(f2));
    assert_eq!(
        (v["offset"].clone(), v["limit"].clone()),
        (json!(1), json!(1))
    );
    let (code, _) = api.get("/functions?limit=x").await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    let (code, v) = api.get(&format!("/functions/{f1}")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["name"], "first");
    assert_eq!(v["size_bytes"], NONE_PICKLE.len());

    // Queued tasks of f1 (interleaved with f2's, across several pages of the queue) fail
    // with FunctionDeleted; a running one and f2's are left alone.
    let running = api.task(&f1).await;
    assert!(matches!(
        api.store.claim(&running, "w").await.expect("claim"),
        Claim::Running { .. }
    ));
    let mut mine = Vec::new();
    let mut others = Vec::new();
    for _ in 0..3 {
        let payloads: Vec<String> = (0..400).map(|_| b64(NONE_PICKLE)).collect();
        for (f, into) in [(&f1, &mut mine), (&f2, &mut others)] {
            let (_, v) = api
                .post(
                    "/execute_batch",
                    json!({"function_id": f, "payloads": payloads}),
                )
                .await;
            into.extend(
                v["task_ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|x| x.as_str().expect("id").to_string()),
            );
        }
    }
    let (code, v) = api.call("DELETE", &format!("/functions/{f1}"), None).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"function_id": f1, "failed_tasks": 1200}));
    let (_, v) = api.get(&format!("/result/{}", mine[777])).await;
    assert_eq!(v["status"], "FAILED");
    let text = util::python::describe(&unb64(v["result"].as_str().expect("result")));
    assert!(
        text.contains("FunctionDeleted") && text.contains("first"),
        "{text}"
    );
    let (_, v) = api.get(&format!("/status/{}", others[777])).await;
    assert_eq!(v["status"], "QUEUED");
    let (_, v) = api.get(&format!("/status/{running}")).await;
    assert_eq!(v["status"], "RUNNING");
    // Gone: 404 for everything about it.
    for (method, uri) in [
        ("GET", format!("/functions/{f1}")),
        ("DELETE", format!("/functions/{f1}")),
    ] {
        let (code, _) = api.call(method, &uri, None).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{method} {uri}");
    }
    let (code, _) = api
        .post(
            "/execute_function",
            json!({"function_id": f1, "payload": b64(NONE_PICKLE)}),
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (_, v) = api.get("/functions").await;
    assert_eq!(v["total"], 1);
    let (code, _) = api.call("DELETE", "/functions/zzz", None).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
}

// ---- info and metrics ---------------------------------------------------------------------

fn presence(name: &str, expires_in_ms: i64) -> DispatcherPresence {
    let now = faas::time::now_ms();
    DispatcherPresence {
        name: name.into(),
        mode: "push".into(),
        host: "h".into(),
        pid: 1,
        version: "0".into(),
        workers: vec![WorkerPresence {
            id: format!("{name}-w"),
            host: "h".into(),
            slots: 4,
            free: 3,
            runtime: faas::runtime::Runtime {
                python: "3.11.2".into(),
                dill: "0.3.8".into(),
            },
        }],
        updated_ms: now,
        expires_ms: (now as i64 + expires_in_ms) as u64,
    }
}

#[tokio::test]
async fn info_lists_live_dispatchers_and_runtimes() {
    let api = Api::new().await;
    api.store
        .publish_presence(&presence("live", 5000))
        .await
        .expect("publish");
    api.store
        .publish_presence(&presence("dead", -1))
        .await
        .expect("publish");
    let (code, v) = api.get("/info").await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["dispatchers"].as_array().expect("list").len(), 1);
    assert_eq!(v["dispatchers"][0]["name"], "live");
    assert_eq!(
        v["runtimes"],
        json!([{"python": "3.11.2", "dill": "0.3.8"}])
    );
    assert_eq!(v["limits"]["max_batch"], 1000);
    let left: Vec<String> = api.redis.conn().hkeys("faas:presence").expect("hkeys");
    assert_eq!(left, ["live"], "expired entries are removed");
}

#[tokio::test]
async fn metrics_count_tasks_and_requests_in_prometheus_format() {
    let mut api = Api::new().await;
    api.store
        .publish_presence(&presence("d1", 5000))
        .await
        .expect("publish");
    let fid = api.function("f").await;
    let (t1, _t2, t3) = (
        api.task(&fid).await,
        api.task(&fid).await,
        api.task(&fid).await,
    );
    api.complete(t1, NONE_PICKLE).await;
    let (code, _) = api.post(&format!("/cancel/{t3}"), json!({})).await;
    assert_eq!(code, StatusCode::OK);
    let (code, body, ctype) = api.raw("GET", "/metrics", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = String::from_utf8(body).expect("utf-8");
    for line in [
        "faas_redis_up 1",
        "faas_tasks_created_total 3",
        "faas_tasks_settled_total{status=\"COMPLETED\"} 1",
        "faas_tasks_settled_total{status=\"FAILED\",cause=\"TaskCancelled\"} 1",
        "faas_queue_depth 3",
        "faas_task_duration_seconds_count 2",
        "faas_dispatchers 1",
        "faas_workers{dispatcher=\"d1\",mode=\"push\"} 1",
        "faas_slots{dispatcher=\"d1\"} 4",
        "faas_slots_free{dispatcher=\"d1\"} 3",
        "faas_executor_runtime_info{dispatcher=\"d1\",worker=\"d1-w\",python=\"3.11.2\",dill=\"0.3.8\"} 1",
        "faas_http_request_duration_seconds_count{method=\"POST\",route=\"/execute_function\",code=\"200\"} 3",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    // Every sample line is `name{labels} value` with a numeric value; every family has TYPE.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = l.rsplit_once(' ').expect("sample");
        assert!(value.parse::<f64>().is_ok(), "{l}");
        let name = l.split(['{', ' ']).next().expect("name");
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            text.contains(&format!("# TYPE {family} "))
                || text.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }
    // Redis down: the gateway's own metrics are still served.
    api.redis.kill();
    let (code, body, _) = api.raw("GET", "/metrics", None).await;
    assert_eq!(code, StatusCode::OK);
    let text = String::from_utf8(body).expect("utf-8");
    assert!(
        text.contains("faas_redis_up 0") && text.contains("faas_waiters 0"),
        "{text}"
    );
}

// ---- docs and the OpenAPI document --------------------------------------------------------

#[tokio::test]
async fn openapi_document_covers_every_route_and_docs_page_loads_it() {
    let api = Api::new().await;
    let (code, doc) = api.get("/openapi.json").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut paths: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/cancel/{task_id}",
            "/execute_batch",
            "/execute_function",
            "/functions",
            "/functions/{function_id}",
            "/healthz",
            "/info",
            "/metrics",
            "/register_function",
            "/result/{task_id}",
            "/status/{task_id}",
            "/wait",
        ]
    );
    // Every documented operation is served (not the fallback's 404 "Not Found").
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            let uri = path
                .replace("{task_id}", &Uuid::new_v4().to_string())
                .replace("{function_id}", &Uuid::new_v4().to_string());
            let (code, body, _) = api.raw(&method.to_uppercase(), &uri, Some(json!({}))).await;
            let body = String::from_utf8_lossy(&body);
            assert!(
                !(code == StatusCode::NOT_FOUND && body.contains("\"Not Found\"")),
                "{method} {path} is documented but not routed"
            );
            assert!(code != StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }
    let schema = &doc["components"]["schemas"]["ExecuteFnReq"];
    assert_eq!(schema["required"], json!(["function_id", "payload"]));
    assert!(schema["properties"]["timeout"].is_object());
    let (code, body, ctype) = api.raw("GET", "/docs", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(ctype.starts_with("text/html"));
    let page = String::from_utf8(body).expect("utf-8");
    assert!(page.contains("fetch(\"/openapi.json\")"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external assets"
    );
}
