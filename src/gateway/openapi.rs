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
    ] {
        if let Some(prop) = schemas[schema]["properties"][field].as_object_mut() {
            prop.insert(key.into(), value);
        }
    }
    v.to_string()
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
