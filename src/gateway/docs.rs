//! `GET /docs`: an interactive page for the API, like FastAPI's. It is one self-contained HTML
//! file written for faas (`docs.html`, no external assets): it loads `/openapi.json`, lists every
//! operation with its parameters and body schema, and can send requests ("Try it").

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

/// The page.
const PAGE: &str = include_str!("docs.html");

/// `GET /docs`.
pub async fn page() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}
