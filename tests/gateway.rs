//! Gateway integration tests: the HTTP contract of DESIGN.md against a real redis-server.

mod util;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use http_body_util::BodyExt;
use redis::Commands;
use serde_json::{json, Value};
use tower::ServiceExt;
use util::redis::RedisServer;

/// A minimal valid pickle (`None`, protocol 4).
const NONE_PICKLE: &[u8] = b"\x80\x04N.";

/// Python's `codecs.encode(data, "base64")`: lines of 76 chars, each ending in a newline.
fn codecs_b64(data: &[u8]) -> String {
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).expect("ascii"));
        out.push('\n');
    }
    out
}

struct Api {
    app: axum::Router,
    redis: RedisServer,
}

impl Api {
    async fn new(max_body: usize) -> Self {
        Api::on(RedisServer::start(), max_body).await
    }

    /// The API on `redis`.
    async fn on(redis: RedisServer, max_body: usize) -> Self {
        let store = redis.store(Duration::ZERO).await;
        Api {
            app: faas::gateway::router(
                store,
                &faas::config::GatewayConfig {
                    max_body_bytes: max_body,
                    ..Default::default()
                },
            ),
            redis,
        }
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Vec<u8>>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let v =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("non-JSON body {bytes:?}"));
        (status, v)
    }

    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", uri, Some(body.to_string().into_bytes()))
            .await
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call("GET", uri, None).await
    }

    fn count(&self, pattern: &str) -> usize {
        let keys: Vec<String> = self.redis.conn().keys(pattern).expect("keys");
        keys.len()
    }
}

#[tokio::test]
async fn roundtrip_of_the_four_routes() {
    let api = Api::new(1 << 20).await;
    let (code, v) = api
        .post(
            "/register_function",
            json!({"name": "double", "payload": codecs_b64(NONE_PICKLE)}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let fid = v["function_id"].as_str().expect("function_id").to_string();
    assert!(uuid::Uuid::parse_str(&fid).is_ok());

    let (code, v) = api
        .post(
            "/execute_function",
            json!({"function_id": fid, "payload": codecs_b64(NONE_PICKLE)}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let tid = v["task_id"].as_str().expect("task_id").to_string();

    // Visible the instant execute returns; /result answers while pending.
    let (code, v) = api.get(&format!("/status/{tid}")).await;
    assert_eq!(
        (code, v),
        (StatusCode::OK, json!({"task_id": tid, "status": "QUEUED"}))
    );
    let (code, v) = api.get(&format!("/result/{tid}")).await;
    assert_eq!(
        (code, v),
        (
            StatusCode::OK,
            json!({"task_id": tid, "status": "QUEUED", "result": null})
        )
    );
}

#[tokio::test]
async fn invalid_payloads_are_400_and_store_nothing() {
    let api = Api::new(1 << 20).await;
    for payload in [
        "payload",
        "",
        "!!!!",
        &codecs_b64(b"not a pickle at all"),
        &codecs_b64(b"\x80\x04N"),
    ] {
        let (code, v) = api
            .post(
                "/register_function",
                json!({"name": "x", "payload": payload}),
            )
            .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "payload {payload:?}: {v}");
        assert!(
            v["detail"].as_str().expect("detail").contains("payload"),
            "{v}"
        );
    }
    assert_eq!(api.count("faas:*"), 0);

    let (_, v) = api
        .post(
            "/register_function",
            json!({"name": "f", "payload": codecs_b64(NONE_PICKLE)}),
        )
        .await;
    let fid = v["function_id"].as_str().expect("id").to_string();
    let (code, v) = api
        .post(
            "/execute_function",
            json!({"function_id": fid, "payload": "bm90IGEgcGlja2xl"}),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(api.count("faas:task:*"), 0);
    assert_eq!(api.count("faas:queue"), 0);
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let api = Api::new(1 << 20).await;
    let unknown = uuid::Uuid::new_v4();
    let (code, v) = api
        .post(
            "/execute_function",
            json!({"function_id": unknown, "payload": codecs_b64(NONE_PICKLE)}),
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(api.count("faas:task:*"), 0);
    for route in ["status", "result"] {
        let (code, v) = api.get(&format!("/{route}/{unknown}")).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{v}");
        assert!(v["detail"].is_string());
    }
    let (code, _) = api.get("/no/such/route").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn schema_errors_are_422_with_fastapi_bodies() {
    let api = Api::new(1 << 20).await;
    let cases = [
        ("/register_function", json!({"name": "x"}), "payload"),
        ("/register_function", json!({"payload": "AAAA"}), "name"),
        (
            "/register_function",
            json!({"name": 3, "payload": "AAAA"}),
            "name",
        ),
        (
            "/execute_function",
            json!({"function_id": "not-a-uuid", "payload": "AAAA"}),
            "function_id",
        ),
        (
            "/execute_function",
            json!({"payload": "AAAA"}),
            "function_id",
        ),
    ];
    for (uri, body, field) in cases {
        let (code, v) = api.post(uri, body.clone()).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{uri} {body}: {v}");
        let errors = v["detail"].as_array().expect("detail list");
        assert!(
            errors.iter().any(|e| e["loc"] == json!(["body", field])),
            "{uri} {body}: {v}"
        );
    }
    let (code, v) = api
        .call("POST", "/register_function", Some(b"{not json".to_vec()))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["detail"][0]["type"], "json_invalid");
    let (code, v) = api
        .call("POST", "/register_function", Some(b"[1]".to_vec()))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    for route in ["status", "result"] {
        let (code, v) = api.get(&format!("/{route}/12345")).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["detail"][0]["loc"], json!(["path", "task_id"]));
    }
    assert_eq!(api.count("faas:*"), 0);
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let api = Api::new(4096).await;
    let big = "A".repeat(8192);
    let (code, v) = api
        .post("/register_function", json!({"name": "x", "payload": big}))
        .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["detail"].as_str().expect("detail").contains("4096"));
    assert_eq!(api.count("faas:*"), 0);
}

/// A value Redis refuses by its size (`proto-max-bulk-len` below the gateway's body limit) is a
/// 413 naming the store's refusal, not a 503 telling the client to try again: sending it again
/// cannot work. The gateway goes on serving.
#[tokio::test]
async fn a_value_redis_refuses_is_413_not_503() {
    let redis = RedisServer::start_with(&["--appendonly", "no", "--proto-max-bulk-len", "1mb"]);
    let api = Api::on(redis, 8 << 20).await;
    let n = 3 << 19;
    let mut big = b"\x80\x04B".to_vec();
    big.extend_from_slice(&u32::try_from(n).expect("size").to_le_bytes());
    big.resize(big.len() + n, b'x');
    big.push(b'.');
    let (code, v) = api
        .post(
            "/register_function",
            json!({"name": "big", "payload": codecs_b64(&big)}),
        )
        .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .expect("detail")
            .contains("larger than the task store accepts"),
        "{v}"
    );
    assert_eq!(api.count("faas:fn:*"), 0);
    let (code, v) = api
        .post(
            "/register_function",
            json!({"name": "small", "payload": codecs_b64(NONE_PICKLE)}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn openapi_and_health() {
    let mut api = Api::new(1 << 20).await;
    let (code, v) = api.get("/openapi.json").await;
    assert_eq!(code, StatusCode::OK);
    for p in [
        "/register_function",
        "/execute_function",
        "/status/{task_id}",
        "/result/{task_id}",
    ] {
        assert!(v["paths"][p].is_object(), "{p} documented");
    }
    let (code, v) = api.get("/healthz").await;
    assert_eq!((code, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    api.redis.kill();
    let (code, _) = api.get("/healthz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let (code, v) = api.get(&format!("/status/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{v}");
}
