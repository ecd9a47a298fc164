//! The API's request and response bodies: the types the handlers use, which are also what the
//! OpenAPI document describes (derived from them, so the two cannot drift).
//!
//! [`Valid`] reads a JSON body into one of these types with FastAPI-style 422 errors: every
//! missing required field is reported at once (from the type's own schema), then the first
//! value of a wrong type, each with its `loc`.

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::JsonObject;
use crate::runtime::Runtime;
use crate::store::presence::DispatcherPresence;
use crate::store::TaskStatus;

/// `POST /register_function` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterFn {
    /// A name for humans (duplicates are allowed).
    pub name: String,
    /// base64 of a dill pickle of the function (codecs-style line breaks are fine).
    pub payload: String,
}

/// `POST /register_function` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterFnRep {
    pub function_id: Uuid,
}

/// `POST /execute_function` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ExecuteFnReq {
    pub function_id: Uuid,
    /// base64 of a dill pickle of `(args_tuple, kwargs_dict)`.
    pub payload: String,
    /// Optional time limit of the task in seconds (at most the gateway's
    /// `max_task_timeout_secs`); a task that runs longer ends FAILED with `TaskTimeout` (a
    /// `TimeoutError`). Without it, the executor's configured limit applies.
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0)]
    pub timeout: Option<f64>,
}

/// `POST /execute_function` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecuteFnRep {
    pub task_id: Uuid,
}

/// `POST /execute_batch` body: many calls of one function, created in one atomic step.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ExecuteBatchReq {
    pub function_id: Uuid,
    /// One base64 dill pickle of `(args_tuple, kwargs_dict)` per task (at most `max_batch`).
    pub payloads: Vec<String>,
    /// Optional time limit of every task in seconds, as in `/execute_function`.
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0)]
    pub timeout: Option<f64>,
}

/// `POST /execute_batch` answer: the task ids, in the order of the payloads.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecuteBatchRep {
    pub task_ids: Vec<Uuid>,
}

/// `GET /status/{task_id}` and `POST /cancel/{task_id}` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskStatusRep {
    pub task_id: Uuid,
    pub status: TaskStatus,
}

/// `GET /result/{task_id}` answer (and one entry of `POST /wait`'s `done`).
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskResultRep {
    pub task_id: Uuid,
    pub status: TaskStatus,
    /// base64 dill pickle of the return value (COMPLETED) or exception (FAILED); null until
    /// the task ends.
    #[schema(required = true)]
    pub result: Option<String>,
    /// Python and dill versions of the executor that ran the task, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
}

/// When `POST /wait` answers (the names of `concurrent.futures.wait`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReturnWhen {
    /// As soon as at least one task is finished (or unknown).
    #[default]
    FirstCompleted,
    /// When all tasks are finished (or unknown).
    AllCompleted,
}

/// `POST /wait` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct WaitReq {
    /// Tasks to wait for (at most `max_batch`; duplicates are ignored).
    pub task_ids: Vec<Uuid>,
    /// Longest wait in seconds (shortened to the gateway's `max_wait_secs`); 0 answers at once.
    #[serde(default)]
    #[schema(minimum = 0.0)]
    pub timeout: f64,
    #[serde(default)]
    pub return_when: ReturnWhen,
    /// With `FIRST_COMPLETED`: after the first task ended, keep collecting others that end
    /// within this many seconds (default 0) — fewer, fuller answers when following many tasks.
    #[serde(default)]
    #[schema(minimum = 0.0)]
    pub gather: f64,
    /// Tasks the answer that gave `cursor` said were pending, all of them (in any order): only
    /// those that ended since are read again (cheaper than listing them in `task_ids`). Any
    /// other list, or no valid cursor, and they are read like `task_ids`.
    #[serde(default)]
    pub pending: Vec<Uuid>,
    /// The `cursor` of an earlier answer (of this gateway).
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `POST /wait` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct WaitRep {
    /// Finished tasks (COMPLETED or FAILED), with their results.
    pub done: Vec<TaskResultRep>,
    /// Tasks still QUEUED or RUNNING.
    pub pending: Vec<Uuid>,
    /// Ids no task has (never existed, or expired).
    pub unknown: Vec<Uuid>,
    /// Pass it back with the `pending` ids in the next `POST /wait`.
    pub cursor: String,
}

/// A registered function (`GET /functions[/{id}]`).
#[derive(Debug, Serialize, ToSchema)]
pub struct FunctionRep {
    pub function_id: Uuid,
    pub name: String,
    /// Registration time, Unix milliseconds.
    pub created_ms: u64,
    /// Size of the function's pickle.
    pub size_bytes: u64,
}

/// `GET /functions` answer: one page, in registration order.
#[derive(Debug, Serialize, ToSchema)]
pub struct FunctionsRep {
    pub functions: Vec<FunctionRep>,
    /// Registered functions in all.
    pub total: u64,
    pub offset: usize,
    pub limit: usize,
}

/// `DELETE /functions/{function_id}` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedRep {
    pub function_id: Uuid,
    /// QUEUED tasks of the function that were failed with `FunctionDeleted`.
    pub failed_tasks: u64,
}

/// The gateway's limits, as `GET /info` reports them.
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsRep {
    pub max_body_bytes: usize,
    pub max_wait_secs: f64,
    pub max_waiters: usize,
    pub max_batch: usize,
    pub max_task_timeout_secs: f64,
}

/// `GET /info` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct InfoRep {
    /// faas version of the gateway.
    pub version: String,
    /// Distinct Python/dill versions of the executors of all live dispatchers.
    pub runtimes: Vec<Runtime>,
    /// Live dispatchers with their workers and free slots.
    pub dispatchers: Vec<DispatcherPresence>,
    pub limits: LimitsRep,
}

/// `GET /healthz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthRep {
    /// `ok` or `unavailable`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An error (`{"detail": "..."}`), as FastAPI sends it.
#[derive(Debug, Serialize, ToSchema)]
#[allow(clippy::upper_case_acronyms)]
pub struct HTTPError {
    pub detail: String,
}

/// A 422 answer: one entry per problem.
#[derive(Debug, Serialize, ToSchema)]
#[allow(clippy::upper_case_acronyms)]
pub struct HTTPValidationError {
    pub detail: Vec<ValidationError>,
}

/// One schema problem, FastAPI-style.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationError {
    /// e.g. `missing`, `string_type`, `uuid_parsing`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where: `["body", "function_id"]`, `["path", "task_id"]`, `["query", "wait"]`.
    pub loc: Vec<Value>,
    pub msg: String,
    /// The offending input.
    pub input: Value,
}

/// A JSON body read into `T`, or a 413/422 [`ApiError`].
pub struct Valid<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + PartialSchema> FromRequest<S> for Valid<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonObject(body) = JsonObject::from_request(req, state).await?;
        let mut errors: Vec<Value> = required_fields::<T>()
            .into_iter()
            .filter(|f| !body.contains_key(f))
            .map(|f| {
                ApiError::field(
                    "missing",
                    &["body", &f],
                    "Field required",
                    Value::Object(body.clone()),
                )
            })
            .collect();
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        match serde_path_to_error::deserialize::<_, T>(Value::Object(body.clone())) {
            Ok(v) => Ok(Valid(v)),
            Err(e) => {
                let mut loc = vec![Value::from("body")];
                let mut input = Value::Object(body);
                for seg in e.path().iter() {
                    match seg {
                        serde_path_to_error::Segment::Map { key } => {
                            input = input.get(key.as_str()).cloned().unwrap_or(Value::Null);
                            loc.push(Value::from(key.as_str()));
                        }
                        serde_path_to_error::Segment::Seq { index } => {
                            input = input.get(*index).cloned().unwrap_or(Value::Null);
                            loc.push(Value::from(*index));
                        }
                        _ => {}
                    }
                }
                let msg = e.inner().to_string();
                errors.push(serde_json::json!({
                    "type": error_kind(&msg), "loc": loc, "msg": msg, "input": input,
                }));
                Err(ApiError::Validation(errors))
            }
        }
    }
}

/// The required fields of `T`'s schema.
fn required_fields<T: PartialSchema>() -> Vec<String> {
    match T::schema() {
        RefOr::T(Schema::Object(o)) => o.required,
        _ => Vec::new(),
    }
}

/// A FastAPI-like error type for a serde message.
fn error_kind(msg: &str) -> &'static str {
    if msg.contains("UUID") {
        "uuid_parsing"
    } else if msg.contains("expected a string") {
        "string_type"
    } else if msg.contains("expected f64") {
        "float_type"
    } else if msg.contains("expected a sequence") {
        "list_type"
    } else if msg.contains("unknown variant") {
        "enum"
    } else {
        "value_error"
    }
}

/// Checks a per-task `timeout` (seconds): positive, finite, at most `max`.
pub fn task_timeout(
    raw: Option<f64>,
    max: std::time::Duration,
) -> Result<Option<std::time::Duration>, ApiError> {
    let Some(t) = raw else {
        return Ok(None);
    };
    let bad = |kind: &str, msg: String| {
        ApiError::Validation(vec![ApiError::field(
            kind,
            &["body", "timeout"],
            &msg,
            Value::from(t),
        )])
    };
    if !(t.is_finite() && t > 0.0) {
        return Err(bad("greater_than", "Input should be greater than 0".into()));
    }
    if t > max.as_secs_f64() {
        return Err(bad(
            "less_than_equal",
            format!(
                "Input should be less than or equal to {} (the gateway's max_task_timeout_secs)",
                max.as_secs_f64()
            ),
        ));
    }
    Ok(std::time::Duration::try_from_secs_f64(t).ok())
}

/// A non-negative number of seconds from a query or body field named `name`, capped at `max`.
pub fn wait_secs(
    loc: &[&str],
    raw: f64,
    max: std::time::Duration,
) -> Result<std::time::Duration, ApiError> {
    if !(raw.is_finite() && raw >= 0.0) {
        return Err(ApiError::Validation(vec![ApiError::field(
            "greater_than_equal",
            loc,
            "Input should be a number of seconds >= 0",
            Value::from(raw),
        )]));
    }
    Ok(std::time::Duration::try_from_secs_f64(raw)
        .unwrap_or(max)
        .min(max))
}

/// Query parameters as (name, value) pairs, percent-decoded (`+` is a space).
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(b[i + 1]) * 16 + hex(b[i + 2]));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A number from the query, or a 422 naming it.
pub fn query_number<N: std::str::FromStr>(
    pairs: &[(String, String)],
    name: &str,
    kind: &str,
) -> Result<Option<N>, ApiError> {
    match pairs.iter().rev().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => v.trim().parse::<N>().map(Some).map_err(|_| {
            ApiError::Validation(vec![ApiError::field(
                kind,
                &["query", name],
                &format!("Input should be a valid number ({kind})"),
                Value::from(v.as_str()),
            )])
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_fields_come_from_the_schema() {
        assert_eq!(required_fields::<RegisterFn>(), vec!["name", "payload"]);
        assert_eq!(
            required_fields::<ExecuteFnReq>(),
            vec!["function_id", "payload"]
        );
        assert_eq!(required_fields::<WaitReq>(), vec!["task_ids"]);
    }

    #[test]
    fn query_parsing() {
        let p = query_pairs(Some("wait=1.5e%2B0&x&limit=3&q=a+b%zz%4"));
        assert_eq!(p[3], ("q".to_string(), "a b%zz%4".to_string()));
        assert_eq!(
            query_number::<f64>(&p, "wait", "float_parsing").unwrap(),
            Some(1.5)
        );
        assert_eq!(
            query_number::<usize>(&p, "limit", "int_parsing").unwrap(),
            Some(3)
        );
        assert_eq!(
            query_number::<usize>(&p, "offset", "int_parsing").unwrap(),
            None
        );
        assert!(query_number::<usize>(&p, "x", "int_parsing").is_err());
    }

    #[test]
    fn timeouts_are_bounded() {
        let max = std::time::Duration::from_secs(10);
        assert_eq!(task_timeout(None, max).unwrap(), None);
        assert_eq!(
            task_timeout(Some(2.5), max).unwrap(),
            Some(std::time::Duration::from_millis(2500))
        );
        assert!(task_timeout(Some(0.0), max).is_err());
        assert!(task_timeout(Some(11.0), max).is_err());
        assert!(task_timeout(Some(f64::NAN), max).is_err());
        assert_eq!(wait_secs(&["query", "wait"], 99.0, max).unwrap(), max);
        assert_eq!(wait_secs(&["query", "wait"], 1e300, max).unwrap(), max);
        assert!(wait_secs(&["query", "wait"], -1.0, max).is_err());
    }
}
