//! Routes for registered functions: list, describe, delete.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::Json;

use super::api::{self, DeletedRep, FunctionRep, FunctionsRep};
use super::error::ApiError;
use super::extract::path_uuid;
use super::AppState;
use crate::store::functions::FunctionInfo;

/// Largest page of `GET /functions`.
const MAX_PAGE: usize = 1000;

fn rep(f: FunctionInfo) -> FunctionRep {
    FunctionRep {
        function_id: f.function_id,
        name: f.name,
        created_ms: f.created_ms,
        size_bytes: f.size_bytes,
    }
}

/// List functions
///
/// Registered functions, oldest first (by registration time in ms; ties by id), one page at a
/// time.
#[utoipa::path(get, path = "/functions", tag = "functions",
    params(
        ("offset" = Option<usize>, Query, minimum = 0, description = "Functions to skip (default 0)"),
        ("limit" = Option<usize>, Query, minimum = 0, description = "Page size (default 100; 0 counts as 1, more than 1000 as 1000)"),
    ),
    responses(
        (status = 200, description = "One page", body = FunctionsRep),
        (status = 422, description = "Validation error", body = api::HTTPValidationError),
        (status = 503, description = "Redis unavailable", body = api::HTTPError),
    ))]
pub async fn list(
    State(st): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<FunctionsRep>, ApiError> {
    let pairs = api::query_pairs(query.as_deref());
    let offset = api::query_number::<usize>(&pairs, "offset", "int_parsing")?.unwrap_or(0);
    let limit = api::query_number::<usize>(&pairs, "limit", "int_parsing")?
        .unwrap_or(100)
        .clamp(1, MAX_PAGE);
    let (functions, total) = st.store.functions(offset, limit).await?;
    Ok(Json(FunctionsRep {
        functions: functions.into_iter().map(rep).collect(),
        total,
        offset,
        limit,
    }))
}

/// Describe a function
///
/// One registered function (without its body).
#[utoipa::path(get, path = "/functions/{function_id}", tag = "functions",
    params(("function_id" = uuid::Uuid, Path, description = "Function id")),
    responses(
        (status = 200, description = "The function", body = FunctionRep),
        (status = 404, description = "Unknown function", body = api::HTTPError),
        (status = 422, description = "Validation error", body = api::HTTPValidationError),
        (status = 503, description = "Redis unavailable", body = api::HTTPError),
    ))]
pub async fn get(
    State(st): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Json<FunctionRep>, ApiError> {
    let id = path_uuid("function_id", &raw)?;
    let f = st
        .store
        .function_info(&id)
        .await?
        .ok_or(ApiError::NotFound("function not found"))?;
    Ok(Json(rep(f)))
}

/// Delete a function
///
/// Its QUEUED tasks end FAILED with `FunctionDeleted`; running ones finish; new tasks for it get
/// 404.
#[utoipa::path(delete, path = "/functions/{function_id}", tag = "functions",
    params(("function_id" = uuid::Uuid, Path, description = "Function id")),
    responses(
        (status = 200, description = "Deleted", body = DeletedRep),
        (status = 404, description = "Unknown function", body = api::HTTPError),
        (status = 422, description = "Validation error", body = api::HTTPValidationError),
        (status = 503, description = "Redis unavailable", body = api::HTTPError),
    ))]
pub async fn delete(
    State(st): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Json<DeletedRep>, ApiError> {
    let id = path_uuid("function_id", &raw)?;
    let failed = st
        .store
        .delete_function(&id, st.limits.result_ttl)
        .await?
        .ok_or(ApiError::NotFound("function not found"))?;
    tracing::info!(function_id = %id, failed_tasks = failed, "function deleted");
    Ok(Json(DeletedRep {
        function_id: id,
        failed_tasks: failed,
    }))
}
