//! Request parsing with FastAPI-style 422 errors: JSON bodies with typed fields, UUID path params.

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

/// Collects field errors while reading a body, so all of them are reported at once.
#[derive(Default)]
pub struct Fields {
    errors: Vec<Value>,
}

impl Fields {
    /// A required string field.
    pub fn string<'a>(&mut self, body: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
        match body.get(name) {
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                self.errors.push(ApiError::field(
                    "string_type",
                    &["body", name],
                    "Input should be a valid string",
                    other.clone(),
                ));
                None
            }
            None => {
                self.missing(name, body);
                None
            }
        }
    }

    /// A required UUID field (given as a string).
    pub fn uuid(&mut self, body: &Map<String, Value>, name: &str) -> Option<Uuid> {
        match body.get(name) {
            Some(Value::String(s)) => match Uuid::parse_str(s) {
                Ok(u) => Some(u),
                Err(e) => {
                    self.errors.push(uuid_error(&["body", name], s, &e));
                    None
                }
            },
            Some(other) => {
                self.errors.push(ApiError::field(
                    "uuid_type",
                    &["body", name],
                    "UUID input should be a string, bytes or UUID object",
                    other.clone(),
                ));
                None
            }
            None => {
                self.missing(name, body);
                None
            }
        }
    }

    fn missing(&mut self, name: &str, body: &Map<String, Value>) {
        self.errors.push(ApiError::field(
            "missing",
            &["body", name],
            "Field required",
            Value::Object(body.clone()),
        ));
    }

    /// Ok when every field was valid, else the 422 with all collected errors.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

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
