//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the code: every route is
//! registered through [`utoipa_axum`] from its handler's `#[utoipa::path]` attribute, and every
//! schema is derived from the request and response types the handlers use (`api.rs`), so the
//! document cannot drift from what is served. The JSON is rendered once at start-up.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use serde_json::json;

use super::api;
use crate::config::GatewayLimits;

/// The document's fixed parts; the router adds the paths.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "faas",
        description = "Function-as-a-Service for Python: register dill-pickled functions, run them, \
                       fetch results. Payloads are base64 (Python's codecs) of dill pickles.",
    ),
    components(schemas(api::HTTPError, api::HTTPValidationError, api::ValidationError)),
    tags(
        (name = "functions", description = "Register, list and delete functions"),
        (name = "tasks", description = "Run functions and follow their tasks"),
        (name = "service", description = "Health, versions and metrics"),
    )
)]
pub struct ApiDoc;

/// The document with the limits this gateway enforces (from its configuration) written into the
/// schemas they apply to, so that clients and fuzzers see exactly what is accepted.
pub fn with_limits(doc: &utoipa::openapi::OpenApi, limits: &GatewayLimits) -> String {
    let mut v = match serde_json::to_value(doc) {
        Ok(v) => v,
        Err(e) => return format!("{{\"error\": \"{e}\"}}"),
    };
    let max_batch = limits.max_batch.get();
    let max_timeout = limits.max_task_timeout.as_secs_f64();
    let schemas = &mut v["components"]["schemas"];
    for (schema, field, key, value) in [
        ("ExecuteFnReq", "timeout", "maximum", json!(max_timeout)),
        ("ExecuteBatchReq", "timeout", "maximum", json!(max_timeout)),
        ("ExecuteBatchReq", "payloads", "maxItems", json!(max_batch)),
        ("WaitReq", "task_ids", "maxItems", json!(max_batch)),
        // Bytes; a name of that many characters is 400 when they are not all ASCII.
        (
            "RegisterFn",
            "name",
            "maxLength",
            json!(limits.max_name_bytes.get()),
        ),
    ] {
        if let Some(prop) = schemas[schema]["properties"][field].as_object_mut() {
            prop.insert(key.into(), value);
        }
    }
    with_body_answers(&mut v);
    v.to_string()
}

/// The answers of the hardening layers (`super::limits`) to every operation with a body.
fn with_body_answers(doc: &mut serde_json::Value) {
    let error = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPError"}}}});
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for op in paths
        .values_mut()
        .filter_map(|p| p.as_object_mut())
        .flat_map(|p| p.values_mut())
    {
        if op.get("requestBody").is_none() {
            continue;
        }
        if let Some(responses) = op["responses"].as_object_mut() {
            for (code, what) in [
                (
                    "408",
                    "The request body did not arrive within body_read_timeout_secs",
                ),
                ("415", "The request body is not application/json"),
            ] {
                let mut answer = error.clone();
                answer["description"] = json!(what);
                responses.entry(code).or_insert(answer);
            }
        }
    }
}

/// The rendered document.
#[derive(Clone)]
pub struct Document(pub std::sync::Arc<String>);

/// `GET /openapi.json`.
pub async fn document(
    axum::extract::State(doc): axum::extract::State<Document>,
) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "application/json")],
        doc.0.as_str().to_owned(),
    )
}
