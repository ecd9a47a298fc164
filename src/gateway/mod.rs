//! HTTP gateway: the API routes, the OpenAPI document and its `/docs` page, health, metrics.
//!
//! [`router`] builds the axum app and starts the one subscription to the done channel that wakes
//! long-polls ([`waiters`]); [`app`] wraps it in the hardening layers ([`auth`], [`limits`]).
//! [`serve`] runs it on an already bound listener until the shutdown handle fires (tests bind
//! port 0), draining in-flight requests ([`server`]: header timeout, connection cap).
//! [`notify_ready`] tells systemd the gateway serves and starts its watchdog ([`liveness`]).

mod api;
pub mod auth;
mod docs;
mod error;
mod extract;
mod functions;
mod info;
pub mod limits;
pub mod liveness;
mod metrics;
mod openapi;
mod routes;
pub mod server;
mod tasks;
pub mod waiters;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Extension, Router};
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::{GatewayConfig, GatewayLimits};
use crate::shutdown::Shutdown;
use crate::store::Store;

pub use error::ApiError;

/// Shared state of the request handlers.
pub struct AppState {
    pub store: Store,
    pub limits: GatewayLimits,
    /// Long-polls waiting for tasks to settle.
    pub waiters: Arc<waiters::Waiters>,
    http: metrics::HttpMetrics,
}

/// The API routes and their OpenAPI document, both from the handlers' annotations.
fn api() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(routes::register_function))
        .routes(routes!(routes::execute_function))
        .routes(routes!(tasks::execute_batch))
        .routes(routes!(routes::status))
        .routes(routes!(routes::result))
        .routes(routes!(tasks::wait))
        .routes(routes!(tasks::cancel))
        .routes(routes!(functions::list))
        .routes(routes!(functions::get, functions::delete))
        .routes(routes!(info::info))
        .routes(routes!(metrics::metrics))
        .routes(routes!(routes::healthz))
}

/// The application with all routes, and the subscription that wakes its long-polls (it ends
/// when the application is dropped). Must be called within a tokio runtime.
pub fn router(store: Store, cfg: &GatewayConfig) -> Router {
    let limits = cfg.limits();
    let waiters = waiters::Waiters::new(limits.max_waiters.get());
    tokio::spawn(crate::store::follow::follow(
        store.connector().clone(),
        crate::store::keys::DONE_CHANNEL,
        Arc::downgrade(&waiters),
    ));
    let state = Arc::new(AppState {
        store,
        limits,
        waiters,
        http: metrics::HttpMetrics::default(),
    });
    let (api, doc) = api().split_for_parts();
    let doc = openapi::Document(Arc::new(openapi::with_limits(&doc, &limits)));
    let max_body = limits.max_body_bytes.get();
    api.route("/docs", get(docs::page))
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(Extension(extract::BodyLimit(max_body)))
        .with_state(state)
        .merge(Router::new().route("/openapi.json", get(openapi::document).with_state(doc)))
}

/// [`router`] behind the hardening layers of `cfg` and, when given, bearer tokens: they wrap
/// every route, including those added later.
pub fn app(store: Store, cfg: &GatewayConfig, auth: Option<Arc<auth::Auth>>) -> Router {
    limits::harden(router(store, cfg), &cfg.limits(), auth)
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
    server::serve(listener, app, GatewayLimits::default(), shutdown).await
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
/// serves, then drains in-flight requests. Redis connections recover by themselves
/// ([`crate::store::conn`]); while Redis is unreachable requests get a quick 503.
pub async fn run(cfg: GatewayConfig, shutdown: Shutdown) -> Result<(), GatewayError> {
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
    tracing::info!(listen = %cfg.listen, redis = %store.endpoint(), wait_replicas = cfg.wait_replicas, "gateway ready");
    let probe = auth.as_ref().map(|a| a.probe_header());
    notify_ready(&listener, store.clone(), probe, shutdown.clone()).map_err(GatewayError::Serve)?;
    let app = app(store, &cfg, auth);
    server::serve(listener, app, cfg.limits(), shutdown)
        .await
        .map_err(GatewayError::Serve)?;
    tracing::info!("gateway stopped");
    Ok(())
}
