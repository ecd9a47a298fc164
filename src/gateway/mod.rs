//! HTTP gateway: the four API routes, OpenAPI document and health check.
//!
//! [`router`] builds the axum app, [`app`] wraps it in the hardening layers ([`auth`],
//! [`limits`]); [`serve`] runs it on an already bound listener until the shutdown handle fires
//! (tests bind port 0), draining in-flight requests ([`server`]: header timeout, connection
//! cap). [`notify_ready`] tells systemd the gateway serves and starts its watchdog ([`liveness`]).

pub mod auth;
mod error;
mod extract;
pub mod limits;
pub mod liveness;
mod openapi;
mod routes;
pub mod server;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Extension, Router};
use tokio::net::TcpListener;

use crate::config::{GatewayConfig, HttpLimits};
use crate::shutdown::Shutdown;
use crate::store::Store;

pub use error::ApiError;

/// Shared state of the request handlers.
pub struct AppState {
    pub store: Store,
}

/// The application with all routes; `max_body` bytes per request body (413 beyond).
pub fn router(store: Store, max_body: usize) -> Router {
    let state = Arc::new(AppState { store });
    Router::new()
        .route("/register_function", post(routes::register_function))
        .route("/execute_function", post(routes::execute_function))
        .route("/status/{task_id}", get(routes::status))
        .route("/result/{task_id}", get(routes::result))
        .route("/healthz", get(routes::healthz))
        .route("/openapi.json", get(openapi::document))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(Extension(extract::BodyLimit(max_body)))
        .with_state(state)
}

/// [`router`] behind the hardening layers of `limits` and, when given, bearer tokens.
pub fn app(store: Store, limits: &HttpLimits, auth: Option<Arc<auth::Auth>>) -> Router {
    limits::harden(router(store, limits.max_body_bytes.get()), limits, auth)
}

/// Tells systemd `READY=1` (call once Redis answered and `listener` is bound) and starts the
/// liveness task that pings the watchdog and keeps `STATUS=` current (its probe carries
/// `authorization` when tokens are required).
pub fn notify_ready(
    listener: &TcpListener,
    store: Store,
    authorization: Option<String>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tokio::spawn(liveness::run(addr, store, authorization, shutdown));
    crate::notify::status_now(&format!("listening on {addr}, redis ok"));
    crate::notify::ready();
    Ok(())
}

/// Serves `app` on `listener` with the default connection limits until `shutdown` fires, then
/// lets in-flight requests finish.
pub async fn serve(listener: TcpListener, app: Router, shutdown: Shutdown) -> std::io::Result<()> {
    server::serve(listener, app, HttpLimits::default(), shutdown).await
}

/// Why the gateway stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("Redis at {url}: {source}")]
    Redis {
        url: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
    #[error("{0}")]
    Auth(#[from] auth::AuthError),
}

/// Runs a gateway with `cfg` until `shutdown` fires: connects to Redis, binds, reports READY,
/// serves, then drains in-flight requests.
pub async fn run(cfg: GatewayConfig, shutdown: Shutdown) -> Result<(), GatewayError> {
    let redis = |source| GatewayError::Redis {
        url: cfg.redis.clone(),
        source,
    };
    let store = Store::connect(
        &cfg.redis,
        std::time::Duration::ZERO,
        std::time::Duration::from_secs(5),
    )
    .await
    .map_err(redis)?;
    let auth = match &cfg.auth_token_file {
        Some(path) => {
            let auth = Arc::new(auth::Auth::load(path)?);
            auth::reload_on_sighup(auth.clone(), shutdown.clone()).map_err(GatewayError::Serve)?;
            Some(auth)
        }
        None => None,
    };
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| GatewayError::Bind {
            addr: cfg.listen.clone(),
            source,
        })?;
    store.ping().await.map_err(redis)?;
    tracing::info!(listen = %cfg.listen, redis = %cfg.redis, "gateway ready");
    let probe = auth.as_ref().map(|a| a.probe_header());
    notify_ready(&listener, store.clone(), probe, shutdown.clone()).map_err(GatewayError::Serve)?;
    let limits = cfg.http_limits();
    let app = app(store, &limits, auth);
    server::serve(listener, app, limits, shutdown)
        .await
        .map_err(GatewayError::Serve)?;
    tracing::info!("gateway stopped");
    Ok(())
}
