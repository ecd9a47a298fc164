//! HTTP hardening of the gateway over real TCP: bearer tokens (and their SIGHUP reload in the
//! real binary), 415 for bodies that are not JSON, the function-name limit, header and body read
//! timeouts, and the connection cap.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use faas::config::{GatewayConfig, GatewayLimits};
use faas::gateway::auth::Auth;
use redis::Commands;
use serde_json::Value;
use util::redis::{free_port, RedisServer};

/// A dill-free valid pickle (`None`), as codecs base64.
fn none_payload() -> String {
    base64::engine::general_purpose::STANDARD.encode(b"\x80\x04N.") + "\n"
}

/// An in-process gateway with `cfg`'s limits on a free port.
struct Gateway {
    port: u16,
    redis: RedisServer,
    trigger: faas::shutdown::ShutdownTrigger,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Gateway {
    async fn start(cfg: GatewayConfig, auth: Option<Arc<Auth>>) -> Gateway {
        let redis = RedisServer::start();
        let store = redis.store(Duration::ZERO).await;
        let limits = cfg.limits();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (trigger, shutdown) = faas::shutdown::channel();
        let app = faas::gateway::app(store, &cfg, auth);
        let handle = tokio::spawn(faas::gateway::server::serve(
            listener, app, limits, shutdown,
        ));
        Gateway {
            port,
            redis,
            trigger,
            handle,
        }
    }

    fn functions(&self) -> usize {
        let keys: Vec<String> = self.redis.conn().keys("faas:fn:*").unwrap();
        keys.len()
    }

    async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("gateway stops")
            .unwrap()
            .unwrap();
    }
}

/// A response: status, headers (lower-cased names), body.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }
}

fn parse(raw: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

/// One request on a fresh connection (`Connection: close`); blocking, run off the runtime.
async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        raw.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    raw.push_str("\r\n");
    raw.push_str(body.unwrap_or(""));
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        parse(&out)
    })
    .await
    .unwrap()
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

fn register_body(name: &str) -> String {
    serde_json::json!({"name": name, "payload": none_payload()}).to_string()
}

fn token_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("tokens");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_guard_every_route_but_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let path = token_file(dir.path(), "# deploy tokens\nalpha-123\n\nbeta_456==\n");
    let auth = Arc::new(Auth::load(&path).unwrap());
    let gw = Gateway::start(GatewayConfig::default(), Some(auth)).await;
    let task = "/status/00000000-0000-0000-0000-000000000000";

    let health = request(gw.port, "GET", "/healthz", &[], None).await;
    assert_eq!(health.status, 200, "{health:?}");
    // Every route, those added with the long-polls and batches included, and unknown ones.
    for path in [
        task,
        "/result/00000000-0000-0000-0000-000000000000?wait=1",
        "/functions",
        "/info",
        "/metrics",
        "/docs",
        "/openapi.json",
        "/no/such/route",
        "/register_function",
    ] {
        let r = request(gw.port, "GET", path, &[], None).await;
        assert_eq!(r.status, 401, "{path}: {r:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(r.json()["detail"], "Not authenticated");
    }
    for bad in [
        "Bearer alpha",
        "Bearer alpha-1234",
        "Basic YWxwaGEtMTIzOg==",
        "alpha-123",
    ] {
        let r = request(gw.port, "GET", task, &[("Authorization", bad)], None).await;
        assert_eq!(r.status, 401, "{bad}: {r:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\"")
        );
    }
    // A refused request stores nothing.
    let body = register_body("f");
    let r = request(gw.port, "POST", "/register_function", &[JSON], Some(&body)).await;
    assert_eq!(r.status, 401);
    assert_eq!(gw.functions(), 0);
    for good in ["Bearer alpha-123", "bearer beta_456=="] {
        let r = request(gw.port, "GET", task, &[("Authorization", good)], None).await;
        assert_eq!(r.status, 404, "{good}: {r:?}");
        let r = request(
            gw.port,
            "POST",
            "/register_function",
            &[JSON, ("Authorization", good)],
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(gw.functions(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_must_be_json() {
    let gw = Gateway::start(GatewayConfig::default(), None).await;
    let body = register_body("f");
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
    ] {
        let headers: Vec<(&str, &str)> =
            content_type.iter().map(|c| ("Content-Type", *c)).collect();
        let r = request(gw.port, "POST", "/register_function", &headers, Some(&body)).await;
        assert_eq!(r.status, 415, "{content_type:?}: {r:?}");
        assert!(
            r.json()["detail"]
                .as_str()
                .unwrap()
                .starts_with("Unsupported Media Type"),
            "{r:?}"
        );
    }
    assert_eq!(gw.functions(), 0, "nothing stored from a non-JSON body");
    let r = request(
        gw.port,
        "POST",
        "/register_function",
        &[("Content-Type", "application/json; charset=utf-8")],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Bodiless requests need no content type.
    let r = request(gw.port, "GET", "/openapi.json", &[], None).await;
    assert_eq!(r.status, 200);
    // The document says so for every operation with a body.
    let doc = r.json();
    for path in ["/register_function", "/execute_batch", "/wait"] {
        let answers = &doc["paths"][path]["post"]["responses"];
        assert!(
            answers["415"].is_object() && answers["408"].is_object(),
            "{path}: {answers}"
        );
    }
    let name = &doc["components"]["schemas"]["RegisterFn"]["properties"]["name"];
    assert_eq!(name["maxLength"], 256);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_function_names_are_refused() {
    let cfg = GatewayConfig {
        max_name_bytes: 16,
        ..GatewayConfig::default()
    };
    let gw = Gateway::start(cfg, None).await;
    let ok = request(
        gw.port,
        "POST",
        "/register_function",
        &[JSON],
        Some(&register_body(&"n".repeat(16))),
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let long = request(
        gw.port,
        "POST",
        "/register_function",
        &[JSON],
        Some(&register_body(&"é".repeat(9))),
    )
    .await;
    assert_eq!(long.status, 400, "{long:?}");
    assert_eq!(
        long.json()["detail"],
        "function name too long: 18 bytes, the limit is 16"
    );
    assert_eq!(gw.functions(), 1);
    gw.stop().await;
    // The default limit applies when nothing is configured, e.g. a 9 MB name.
    assert_eq!(GatewayLimits::default().max_name_bytes.get(), 256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_bodies_are_cut_off() {
    let cfg = GatewayConfig {
        header_read_timeout_secs: 0.5,
        body_read_timeout_secs: 0.5,
        ..GatewayConfig::default()
    };
    let gw = Gateway::start(cfg, None).await;
    let port = gw.port;
    let (headers_closed, body_answer) = tokio::task::spawn_blocking(move || {
        // Headers that never end: the connection is closed.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
        let started = Instant::now();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let headers_closed = started.elapsed();
        // A body that stops after 10 of 100 bytes: 408.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"POST /register_function HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\": \"")
            .unwrap();
        let mut out = vec![0u8; 4096];
        let n = s.read(&mut out).unwrap();
        (headers_closed, parse(&out[..n]))
    })
    .await
    .unwrap();
    println!("slow headers closed after {headers_closed:?}");
    assert!(
        headers_closed < Duration::from_secs(8),
        "{headers_closed:?}"
    );
    assert_eq!(body_answer.status, 408, "{body_answer:?}");
    assert_eq!(
        body_answer.json()["detail"],
        "request body not received within 0.5 s"
    );
    assert_eq!(gw.functions(), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_one() {
    let cfg = GatewayConfig {
        max_connections: 2,
        ..GatewayConfig::default()
    };
    let gw = Gateway::start(cfg, None).await;
    let port = gw.port;
    let waited = tokio::task::spawn_blocking(move || {
        // Two idle keep-alive connections take both slots.
        let idle: Vec<TcpStream> = (0..2)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap();
                assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
                s
            })
            .collect();
        // A third client connects (the kernel's backlog) but is not served...
        let mut third = TcpStream::connect(("127.0.0.1", port)).unwrap();
        third
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        third
            .set_read_timeout(Some(Duration::from_millis(800)))
            .unwrap();
        let mut buf = [0u8; 1024];
        assert!(third.read(&mut buf).is_err(), "served beyond the cap");
        // ...until a slot frees up.
        let started = Instant::now();
        drop(idle);
        third
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let n = third.read(&mut buf).unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        started.elapsed()
    })
    .await
    .unwrap();
    println!("the waiting client was served {waited:?} after a slot freed");
    gw.stop().await;
}

/// A real faas-gateway process (for SIGHUP).
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gateway did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_token_file() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path(), "old-token\n");
    let conf = dir.path().join("etc");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("gateway.toml"),
        format!("auth_token_file = {:?}\n", tokens.display().to_string()),
    )
    .unwrap();
    let port = free_port();
    let gw = Process(
        Command::new(env!("CARGO_BIN_EXE_faas-gateway"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--redis",
                &redis.url(),
            ])
            .env("FAAS_CONFIG_DIR", &conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port).await;
    let status = |token: &'static str| async move {
        let auth = format!("Bearer {token}");
        request(
            port,
            "GET",
            "/openapi.json",
            &[("Authorization", &auth)],
            None,
        )
        .await
        .status
    };
    assert_eq!(status("old-token").await, 200);
    assert_eq!(status("new-token").await, 401);
    let hup = |p: &Process| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.0.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap()
    };

    std::fs::write(&tokens, "new-token\n").unwrap();
    hup(&gw);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status("new-token").await != 200 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the token file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status("old-token").await, 401);

    // A broken file is refused and the tokens loaded before stay.
    std::fs::write(&tokens, "has a space\n").unwrap();
    hup(&gw);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status("new-token").await, 200);
    assert_eq!(
        request(port, "GET", "/healthz", &[], None).await.status,
        200
    );
}
