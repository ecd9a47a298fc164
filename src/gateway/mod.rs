//! HTTP gateway: the four API routes, OpenAPI document and health check.
//!
//! [`router`] builds the axum app; [`serve`] runs it on an already bound listener until the
//! shutdown handle fires (tests bind port 0), draining in-flight requests. [`notify_ready`] tells
//! systemd the gateway serves and starts its watchdog ([`liveness`]).

mod error;
mod extract;
pub mod liveness;
mod openapi;
mod routes;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Extension, Router};
use tokio::net::TcpListener;

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

/// Tells systemd `READY=1` (call once Redis answered and `listener` is bound) and starts the
/// liveness task that pings the watchdog and keeps `STATUS=` current.
pub fn notify_ready(
    listener: &TcpListener,
    store: Store,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tokio::spawn(liveness::run(addr, store, shutdown));
    crate::notify::status_now(&format!("listening on {addr}, redis ok"));
    crate::notify::ready();
    Ok(())
}

/// Serves `app` on `listener` until `shutdown` fires, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
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
}

/// Runs a gateway with `cfg` until `shutdown` fires: connects to Redis, binds, reports READY,
/// serves, then drains in-flight requests. Redis connections recover by themselves
/// ([`crate::store::conn`]); while Redis is unreachable requests get a quick 503.
pub async fn run(
    cfg: crate::config::GatewayConfig,
    shutdown: Shutdown,
) -> Result<(), GatewayError> {
    let redis = |source| GatewayError::Redis {
        url: crate::store::endpoint::redact(&cfg.redis),
        source,
    };
    // Redis must answer at start (else exit: systemd restarts us); later outages are 503s.
    let store = Store::connect(
        &cfg.redis,
        std::time::Duration::ZERO,
        crate::store::STARTUP_WAIT,
    )
    .await
    .map_err(redis)?
    .with_replicas(cfg.wait_replicas, cfg.wait_timeout());
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| GatewayError::Bind {
            addr: cfg.listen.clone(),
            source,
        })?;
    tracing::info!(listen = %cfg.listen, redis = %store.endpoint(), wait_replicas = cfg.wait_replicas, "gateway ready");
    notify_ready(&listener, store.clone(), shutdown.clone()).map_err(GatewayError::Serve)?;
    let app = router(store, cfg.max_body_bytes);
    serve(listener, app, shutdown)
        .await
        .map_err(GatewayError::Serve)?;
    tracing::info!("gateway stopped");
    Ok(())
}
