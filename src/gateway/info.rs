//! `GET /info`: the gateway's version and limits, and what the live dispatchers published about
//! their workers (slots, free slots, Python and dill versions of the executors).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::api::{self, InfoRep, LimitsRep};
use super::error::ApiError;
use super::AppState;
use crate::runtime::Runtime;

/// Versions and limits
///
/// The gateway's version and limits, and the live dispatchers with their workers, free slots and
/// the executors' Python and dill versions.
#[utoipa::path(get, path = "/info", tag = "service",
    responses(
        (status = 200, description = "The service", body = InfoRep),
        (status = 503, description = "Redis unavailable", body = api::HTTPError),
    ))]
pub async fn info(State(st): State<Arc<AppState>>) -> Result<Json<InfoRep>, ApiError> {
    let dispatchers = st.store.presence().await?;
    let runtimes: BTreeSet<Runtime> = dispatchers
        .iter()
        .flat_map(|d| d.workers.iter().map(|w| w.runtime.clone()))
        .filter(|r| !r.is_unknown())
        .collect();
    let l = &st.limits;
    Ok(Json(InfoRep {
        version: env!("CARGO_PKG_VERSION").into(),
        runtimes: runtimes.into_iter().collect(),
        dispatchers,
        limits: LimitsRep {
            max_body_bytes: l.max_body_bytes.get(),
            max_wait_secs: l.max_wait.as_secs_f64(),
            max_waiters: l.max_waiters.get(),
            max_batch: l.max_batch.get(),
            max_task_timeout_secs: l.max_task_timeout.as_secs_f64(),
        },
    }))
}
