//! The four API routes of the specification (with the `wait` extension of `/result`) plus
//! `/healthz`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::api::{
    self, ExecuteFnRep, ExecuteFnReq, HealthRep, RegisterFn, RegisterFnRep, TaskResultRep,
    TaskStatusRep, Valid,
};
use super::error::ApiError;
use super::extract::path_uuid;
use super::waiters::{self, Until};
use super::AppState;
use crate::payload;
use crate::store::TaskView;

/// Register a function
///
/// `{name, payload}` → `{function_id}`; `payload` is base64 of a dill pickle of the function.
#[utoipa::path(post, path = "/register_function", tag = "functions",
    request_body = RegisterFn,
    responses(
        (status = 200, description = "Registered", body = RegisterFnRep),
        (status = 400, description = "Payload is not base64 or not a pickle, or the name is longer than max_name_bytes", body = api::HTTPError),
        (status = 413, description = "Request body too large", body = api::HTTPError),
        (status = 422, description = "Validation error", body = api::HTTPValidationError),
        (status = 503, description = "Redis unavailable", body = api::HTTPError),
    ))]
pub async fn register_function(
    State(st): State<Arc<AppState>>,
    Valid(body): Valid<RegisterFn>,
) -> Result<Json<RegisterFnRep>, ApiError> {
    let limit = st.limits.max_name_bytes.get();
    if body.name.len() > limit {
        return Err(ApiError::BadPayload(format!(
            "function name too long: {} bytes, the limit is {limit}",
            body.name.len()
        )));
    }
    let bytes = payload::decode_pickle(&body.payload)
        .map_err(|e| ApiError::BadPayload(format!("invalid function payload: {e}")))?;
    let id = st.store.register_function(&body.name, &bytes).await?;
    tracing::debug!(function_id = %id, name = body.name, bytes = bytes.len(), "function registered");
    Ok(Json(RegisterFnRep { function_id: id }))
}

/// Run a function
///
/// `{function_id, payload[, timeout]}` → `{task_id}`. The task is visible to `/status` the
/// moment this answers.
#[utoipa::path(post, path = "/execute_function", tag = "tasks",
    request_body = ExecuteFnReq,
    responses(
        (status = 200, description = "Queued", body = ExecuteFnRep),
        (status = 400, description = "Payload is not base64 or not a pickle", body = api::HTTPError),
        (status = 404, description = "Unknown function", body = api::HTTPError),
        (status = 413, description = "Request body too large", body = api::HTTPError),
        (status = 422, description = "Validation error (also: timeout out of range)", body = api::HTTPValidationError),
        (status = 503, description = "Redis unavailable", body = api::HTTPError),
    ))]
pub async fn execute_function(
    State(st): State<Arc<AppState>>,
    Valid(body): Valid<ExecuteFnReq>,
) -> Result<Json<ExecuteFnRep>, ApiError> {
    let timeout = api::task_timeout(body.timeout, st.limits.max_task_timeout)?;
    let args = payload::decode_pickle(&body.payload)
        .map_err(|e| ApiError::BadPayload(format!("invalid arguments payload: {e}")))?;
    let ids = st
        .store
        .create_tasks(&body.function_id, &[&args], timeout)
        .await?
        .ok_or(ApiError::NotFound("function not found"))?;
    let task_id = ids
        .first()
        .copied()
        .ok_or_else(|| ApiError::Unavailable("task store created no task".into()))?;
    tracing::debug!(task_id = %task_id, function_id = %body.function_id, "task queued");
    Ok(Json(ExecuteFnRep { task_id }))
}

/// A task's status
#[utoipa::path(get, path = "/status/{task_id}", tag = "tasks",
    params(("task_id" = uuid::Uuid, Path, description = "Task id")),
    responses(
        (status = 200, description = "The status", body = TaskStatusRep),
        (status = 404, description = "Unknown task", body = api::HTTPError),
        (status = 422, description = "Validation error", body = api::HTTPValidationError),
        (status = 503, description = "Redis unavailable", body = api::HTTPError),
    ))]
pub async fn status(
    State(st): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Json<TaskStatusRep>, ApiError> {
    let id = path_uuid("task_id", &raw)?;
    let status = st
        .store
        .task_status(&id)
        .await?
        .ok_or(ApiError::NotFound("task not found"))?;
    Ok(Json(TaskStatusRep {
        task_id: id,
        status,
    }))
}

/// A task's status and result
///
/// The result is null until the task ends. With `wait=SECONDS` this is a long-poll: it answers
/// the moment the task ends, or with the current state when the wait runs out.
#[utoipa::path(get, path = "/result/{task_id}", tag = "tasks",
    params(
        ("task_id" = uuid::Uuid, Path, description = "Task id"),
        ("wait" = Option<f64>, Query, minimum = 0.0, description = "Seconds to wait for the task to end (at most the gateway's max_wait_secs; default 0)"),
    ),
    responses(
        (status = 200, description = "The state, with the result once the task ended", body = TaskResultRep),
        (status = 404, description = "Unknown task", body = api::HTTPError),
        (status = 422, description = "Validation error", body = api::HTTPValidationError),
        (status = 503, description = "Redis unavailable, or too many waiting requests (Retry-After)", body = api::HTTPError),
    ))]
pub async fn result(
    State(st): State<Arc<AppState>>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<TaskResultRep>, ApiError> {
    let id = path_uuid("task_id", &raw)?;
    let pairs = api::query_pairs(query.as_deref());
    let wait = api::query_number::<f64>(&pairs, "wait", "float_parsing")?.unwrap_or(0.0);
    let limit = api::wait_secs(&["query", "wait"], wait, st.limits.max_wait)?;
    let mut found = waiters::wait(
        &st.waiters,
        &st.store,
        &[id],
        None,
        Until::Any {
            gather: Duration::ZERO,
        },
        limit,
    )
    .await
    .map_err(ApiError::from)?;
    let view = found
        .views
        .remove(&id)
        .flatten()
        .ok_or(ApiError::NotFound("task not found"))?;
    Ok(Json(result_rep(id, view)))
}

/// The API form of a task's state.
pub fn result_rep(task_id: uuid::Uuid, view: TaskView) -> TaskResultRep {
    TaskResultRep {
        task_id,
        status: view.status,
        result: view.result.map(|r| payload::encode_base64(&r)),
        runtime: view.runtime,
    }
}

/// Health
///
/// 200 when Redis answers, 503 otherwise.
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses(
        (status = 200, description = "Redis reachable", body = HealthRep),
        (status = 503, description = "Redis unreachable", body = HealthRep),
    ))]
pub async fn healthz(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    match st.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(HealthRep {
                status: "ok".into(),
                detail: None,
            }),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthRep {
                status: "unavailable".into(),
                detail: Some(format!("redis: {e}")),
            }),
        ),
    }
}

/// Unknown routes: FastAPI's 404 body.
pub async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"})))
}
