//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the code: every route is
//! registered through [`utoipa_axum`] from its handler's `#[utoipa::path]` attribute, and every
//! schema is derived from the request and response types the handlers use (`api.rs`), so the
//! document cannot drift from what is served. The JSON is rendered once at start-up.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use super::api;

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
