//! The four API routes of the spec plus `/healthz`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{path_uuid, Fields, JsonObject};
use super::limits::NameLimit;
use super::AppState;
use crate::payload;

/// `POST /register_function {name, payload}` → `{function_id}`.
pub async fn register_function(
    State(st): State<Arc<AppState>>,
    limit: Option<axum::Extension<NameLimit>>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let mut f = Fields::default();
    let name = f.string(&body, "name");
    let text = f.string(&body, "payload");
    f.finish()?;
    let (Some(name), Some(text)) = (name, text) else {
        return Err(ApiError::Validation(Vec::new()));
    };
    let limit = limit.map_or(
        crate::config::HttpLimits::default().max_name_bytes.get(),
        |l| l.0 .0,
    );
    if name.len() > limit {
        return Err(ApiError::BadPayload(format!(
            "function name too long: {} bytes, the limit is {limit}",
            name.len()
        )));
    }
    let bytes = payload::decode_pickle(text)
        .map_err(|e| ApiError::BadPayload(format!("invalid function payload: {e}")))?;
    let id = st.store.register_function(name, &bytes).await?;
    tracing::debug!(function_id = %id, name, bytes = bytes.len(), "function registered");
    Ok(Json(json!({ "function_id": id })))
}

/// `POST /execute_function {function_id, payload}` → `{task_id}`.
pub async fn execute_function(
    State(st): State<Arc<AppState>>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let mut f = Fields::default();
    let function_id = f.uuid(&body, "function_id");
    let text = f.string(&body, "payload");
    f.finish()?;
    let (Some(function_id), Some(text)) = (function_id, text) else {
        return Err(ApiError::Validation(Vec::new()));
    };
    let args = payload::decode_pickle(text)
        .map_err(|e| ApiError::BadPayload(format!("invalid arguments payload: {e}")))?;
    let task_id = st
        .store
        .create_task(&function_id, &args)
        .await?
        .ok_or(ApiError::NotFound("function not found"))?;
    tracing::debug!(task_id = %task_id, function_id = %function_id, "task queued");
    Ok(Json(json!({ "task_id": task_id })))
}

/// `GET /status/{task_id}` → `{task_id, status}`.
pub async fn status(
    State(st): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = path_uuid("task_id", &raw)?;
    let status = st
        .store
        .task_status(&id)
        .await?
        .ok_or(ApiError::NotFound("task not found"))?;
    Ok(Json(json!({ "task_id": id, "status": status.as_str() })))
}

/// `GET /result/{task_id}` → `{task_id, status, result}`; `result` is null until the task ends.
pub async fn result(
    State(st): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = path_uuid("task_id", &raw)?;
    let view = st
        .store
        .task_view(&id)
        .await?
        .ok_or(ApiError::NotFound("task not found"))?;
    let result = view.result.map(|r| payload::encode_base64(&r));
    Ok(Json(
        json!({ "task_id": id, "status": view.status.as_str(), "result": result }),
    ))
}

/// `GET /healthz`: 200 when Redis answers, 503 otherwise.
pub async fn healthz(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    match st.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "detail": format!("redis: {e}")})),
        ),
    }
}

/// Unknown routes: FastAPI's 404 body.
pub async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"})))
}
