//! Routes beyond the specification for tasks: batch submission, batch wait and cancel.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use uuid::Uuid;

use super::api::{
    self, ExecuteBatchRep, ExecuteBatchReq, ReturnWhen, TaskStatusRep, Valid, WaitRep, WaitReq,
};
use super::error::ApiError;
use super::extract::path_uuid;
use super::routes::result_rep;
use super::waiters::{self, Until};
use super::AppState;
use crate::payload;
use crate::store::cancel::Cancel;
use crate::store::TaskStatus;

/// Run a function on many inputs
///
/// All tasks are created in one atomic step (all or none); the ids come in the order of the
/// payloads.
#[utoipa::path(post, path = "/execute_batch", tag = "tasks",
    request_body = ExecuteBatchReq,
    responses(
        (status = 200, description = "Queued", body = ExecuteBatchRep),
        (status = 400, description = "A payload is not base64 or not a pickle (detail names its index)", body = api::HTTPError),
        (status = 404, description = "Unknown function", body = api::HTTPError),
        (status = 413, description = "Request body too large", body = api::HTTPError),
        (status = 422, description = "Validation error (also: more than max_batch payloads, timeout out of range)", body = api::HTTPValidationError),
        (status = 503, description = "Redis unavailable", body = api::HTTPError),
    ))]
pub async fn execute_batch(
    State(st): State<Arc<AppState>>,
    Valid(body): Valid<ExecuteBatchReq>,
) -> Result<Json<ExecuteBatchRep>, ApiError> {
    check_batch("payloads", body.payloads.len(), st.limits.max_batch.get())?;
    let timeout = api::task_timeout(body.timeout, st.limits.max_task_timeout)?;
    let mut args = Vec::with_capacity(body.payloads.len());
    for (i, text) in body.payloads.iter().enumerate() {
        args.push(
            payload::decode_pickle(text)
                .map_err(|e| ApiError::BadPayload(format!("invalid arguments payload {i}: {e}")))?,
        );
    }
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let task_ids = if refs.is_empty() {
        Vec::new()
    } else {
        st.store
            .create_tasks(&body.function_id, &refs, timeout)
            .await?
            .ok_or(ApiError::NotFound("function not found"))?
    };
    tracing::debug!(function_id = %body.function_id, tasks = task_ids.len(), "batch queued");
    Ok(Json(ExecuteBatchRep { task_ids }))
}

/// Wait for several tasks
///
/// Answers as soon as one of them ended (`FIRST_COMPLETED`) or all did (`ALL_COMPLETED`), or
/// when `timeout` runs out; finished tasks come with their results.
#[utoipa::path(post, path = "/wait", tag = "tasks",
    request_body = WaitReq,
    responses(
        (status = 200, description = "Done, pending and unknown tasks", body = WaitRep),
        (status = 413, description = "Request body too large", body = api::HTTPError),
        (status = 422, description = "Validation error (also: more than max_batch ids)", body = api::HTTPValidationError),
        (status = 503, description = "Redis unavailable, or too many waiting requests (Retry-After)", body = api::HTTPError),
    ))]
pub async fn wait(
    State(st): State<Arc<AppState>>,
    Valid(body): Valid<WaitReq>,
) -> Result<Json<WaitRep>, ApiError> {
    check_batch(
        "task_ids",
        body.task_ids.len() + body.pending.len(),
        st.limits.max_batch.get(),
    )?;
    let limit = api::wait_secs(&["body", "timeout"], body.timeout, st.limits.max_wait)?;
    let mut seen = HashSet::with_capacity(body.task_ids.len() + body.pending.len());
    let ids: Vec<Uuid> = body
        .task_ids
        .into_iter()
        .filter(|id| seen.insert(*id))
        .collect();
    let pending: Vec<Uuid> = body
        .pending
        .into_iter()
        .filter(|id| seen.insert(*id))
        .collect();
    let known = body
        .cursor
        .as_deref()
        .and_then(|c| c.parse::<waiters::Cursor>().ok())
        .map(|cursor| waiters::Known {
            cursor,
            pending: &pending,
        });
    let ids = if known.is_some() {
        ids
    } else {
        // Without a (readable) cursor, the pending ids are read like the others.
        ids.iter().chain(&pending).copied().collect()
    };
    let gather = api::wait_secs(&["body", "gather"], body.gather, limit)?;
    let until = match body.return_when {
        ReturnWhen::FirstCompleted => Until::Any { gather },
        ReturnWhen::AllCompleted => Until::All,
    };
    let all: Vec<Uuid> = if known.is_some() {
        ids.iter().chain(&pending).copied().collect()
    } else {
        ids.clone()
    };
    let found = waiters::wait(&st.waiters, &st.store, &ids, known, until, limit).await?;
    let mut views = found.views;
    let mut rep = WaitRep {
        done: Vec::new(),
        pending: Vec::new(),
        unknown: Vec::new(),
        cursor: String::new(),
    };
    for id in all {
        match views.remove(&id) {
            // Known pending through the cursor, and nothing says otherwise.
            None => rep.pending.push(id),
            Some(None) => rep.unknown.push(id),
            Some(Some(v)) if v.status.is_terminal() => rep.done.push(result_rep(id, v)),
            Some(Some(_)) => rep.pending.push(id),
        }
    }
    // The cursor vouches for exactly the ids this answer calls pending.
    rep.cursor = st.waiters.seal(found.cursor, &rep.pending).to_string();
    Ok(Json(rep))
}

/// Cancel a task
///
/// A QUEUED or RUNNING task becomes FAILED with `TaskCancelled` at once; a RUNNING task's
/// executor is then killed by the dispatcher running it (locally or on its worker), within
/// about a heartbeat interval. With `running=false` only a QUEUED task is cancelled (a RUNNING
/// one answers 409 and keeps running). A finished task cannot be cancelled (409).
#[utoipa::path(post, path = "/cancel/{task_id}", tag = "tasks",
    params(("task_id" = uuid::Uuid, Path, description = "Task id"),
        ("running" = Option<bool>, Query, description = "Also stop the task if it is RUNNING (default true)")),
    responses(
        (status = 200, description = "Cancelled (it was QUEUED or RUNNING): the task is now FAILED with TaskCancelled", body = TaskStatusRep),
        (status = 404, description = "Unknown task", body = api::HTTPError),
        (status = 409, description = "The task already finished (COMPLETED or FAILED), or is RUNNING and running=false", body = api::HTTPError),
        (status = 422, description = "Validation error", body = api::HTTPValidationError),
        (status = 503, description = "Redis unavailable", body = api::HTTPError),
    ))]
pub async fn cancel(
    State(st): State<Arc<AppState>>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<TaskStatusRep>, ApiError> {
    let id = path_uuid("task_id", &raw)?;
    let pairs = api::query_pairs(query.as_deref());
    let running = api::query_number::<bool>(&pairs, "running", "bool_parsing")?.unwrap_or(true);
    match st.store.cancel(&id, st.limits.result_ttl, running).await? {
        Cancel::Cancelled(was) => {
            tracing::info!(task_id = %id, was = %was, "task cancelled");
            Ok(Json(TaskStatusRep {
                task_id: id,
                status: TaskStatus::Failed,
            }))
        }
        Cancel::Missing => Err(ApiError::NotFound("task not found")),
        Cancel::Refused(TaskStatus::Running) => Err(ApiError::Conflict(
            "task is RUNNING and running=false: left running".into(),
        )),
        Cancel::Refused(s) => Err(ApiError::Conflict(format!(
            "task already finished ({s}); nothing to cancel"
        ))),
    }
}

fn check_batch(field: &str, n: usize, max: usize) -> Result<(), ApiError> {
    if n > max {
        return Err(ApiError::Validation(vec![ApiError::field(
            "too_long",
            &["body", field],
            &format!("List should have at most {max} items (the gateway's max_batch), not {n}"),
            serde_json::Value::from(n),
        )]));
    }
    Ok(())
}
