//! Request parsing with FastAPI-style errors: JSON object bodies (413/422), UUID path params.
//! Typed bodies are read by `api::Valid` on top of [`JsonObject`].

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::ApiError;

/// A JSON object body; rejections become 413 (too large) or 422 (not a JSON object).
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(usize::MAX);
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(limit)
            } else {
                ApiError::Validation(vec![ApiError::field(
                    "body_read",
                    &["body"],
                    &format!("could not read request body: {r}"),
                    Value::Null,
                )])
            }
        })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => Ok(JsonObject(m)),
            Ok(other) => Err(ApiError::Validation(vec![ApiError::field(
                "model_attributes_type",
                &["body"],
                "Input should be a valid dictionary or object to extract fields from",
                other,
            )])),
            Err(e) => Err(ApiError::Validation(vec![ApiError::field(
                "json_invalid",
                &["body", &e.column().to_string()],
                &format!("JSON decode error: {e}"),
                Value::Object(Map::new()),
            )])),
        }
    }
}

/// The configured body limit, stored as a request extension for error messages.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

fn uuid_error(loc: &[&str], input: &str, e: &uuid::Error) -> Value {
    ApiError::field(
        "uuid_parsing",
        loc,
        &format!("Input should be a valid UUID, {e}"),
        Value::String(input.to_string()),
    )
}

/// Parses a UUID path parameter, or a 422 naming it.
pub fn path_uuid(name: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|e| ApiError::Validation(vec![uuid_error(&["path", name], raw, &e)]))
}
