//! API errors rendered as FastAPI-compatible JSON bodies (`{"detail": ...}`).

use axum::http::header::RETRY_AFTER;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::store::StoreError;

/// Every way a request can fail, each with its HTTP status.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is well-formed JSON of the right shape, but its payload is unusable.
    BadPayload(String),
    /// 404: unknown function or task id.
    NotFound(&'static str),
    /// 409: the request conflicts with the task's state (e.g. cancelling a finished task).
    Conflict(String),
    /// 413: the body exceeds the configured limit.
    TooLarge(usize),
    /// 413: Redis refused a value of the request as too large (its `proto-max-bulk-len`, set
    /// below the gateway's body limit): sending it again cannot work.
    RefusedByStore(String),
    /// 422: schema errors, as a list of FastAPI-style error objects.
    Validation(Vec<Value>),
    /// 503: Redis is unreachable or failing.
    Unavailable(String),
    /// 503 with `Retry-After`: the gateway is at a configured limit (e.g. `max_waiters`).
    Busy(String),
}

impl ApiError {
    /// One FastAPI-style validation error object.
    pub fn field(kind: &str, loc: &[&str], msg: &str, input: Value) -> Value {
        json!({"type": kind, "loc": loc, "msg": msg, "input": input})
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::NotReplicated { .. } = e {
            tracing::warn!(error = %e, "task not confirmed by enough replicas");
            return ApiError::Unavailable(e.to_string());
        }
        if crate::store::is_value_refused(&e) {
            tracing::warn!(error = %e, "Redis refused a value of a request as too large");
            return ApiError::RefusedByStore(format!(
                "a value of this request is larger than the task store accepts: {e}"
            ));
        }
        // An outage is logged once by the store's health, not once per request.
        if crate::store::is_unavailable(&e) {
            tracing::debug!(error = %e, "store request failed");
        } else {
            tracing::error!(error = %e, "store request failed");
        }
        ApiError::Unavailable(format!("task store unavailable: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, detail) = match self {
            ApiError::BadPayload(m) => (StatusCode::BAD_REQUEST, Value::String(m)),
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, Value::String(what.into())),
            ApiError::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                Value::String(format!(
                    "request body too large: the limit is {limit} bytes"
                )),
            ),
            ApiError::RefusedByStore(m) => (StatusCode::PAYLOAD_TOO_LARGE, Value::String(m)),
            ApiError::Validation(errors) => {
                (StatusCode::UNPROCESSABLE_ENTITY, Value::Array(errors))
            }
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, Value::String(m)),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, Value::String(m)),
            ApiError::Busy(m) => {
                let body = Json(json!({ "detail": m }));
                return (StatusCode::SERVICE_UNAVAILABLE, [(RETRY_AFTER, "1")], body)
                    .into_response();
            }
        };
        (code, Json(json!({ "detail": detail }))).into_response()
    }
}

impl From<super::waiters::WaitError> for ApiError {
    fn from(e: super::waiters::WaitError) -> Self {
        match e {
            super::waiters::WaitError::Full(f) => ApiError::Busy(format!(
                "too many waiting requests: {} task ids are waited on (max_waiters); retry shortly",
                f.max
            )),
            super::waiters::WaitError::Store(e) => e.into(),
        }
    }
}
