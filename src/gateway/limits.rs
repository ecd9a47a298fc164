//! HTTP hardening applied as layers over the whole router (so routes added later are covered):
//! bearer tokens ([`super::auth`]), JSON-only request bodies (415) and a deadline for reading a
//! request body (408). Header read timeouts and the connection cap live in [`super::server`];
//! the function-name limit is checked by `/register_function` itself.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use http_body::{Frame, SizeHint};
use serde_json::json;
use tokio::time::{Instant, Sleep};

use super::auth::{self, Auth};
use crate::config::GatewayLimits;

/// Wraps `router` in the hardening layers (outermost first: auth, JSON bodies, body deadline).
pub fn harden(router: Router, limits: &GatewayLimits, auth: Option<Arc<Auth>>) -> Router {
    let deadline = limits.body_read_timeout;
    let router = router
        .layer(middleware::from_fn_with_state(deadline, body_deadline))
        .layer(middleware::from_fn(require_json));
    match auth {
        Some(auth) => router.layer(middleware::from_fn_with_state(auth, auth::require_token)),
        None => router,
    }
}

/// Whether the request carries a body (a declared non-zero length or a chunked one).
fn has_body(headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim() != "0");
    length.unwrap_or_else(|| headers.contains_key(header::TRANSFER_ENCODING))
}

/// `application/json` or a `+json` type, parameters (charset) ignored.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|mime| mime == "application/json" || mime.ends_with("+json"))
}

/// 415 for a body that is not declared JSON: a web page can make a browser POST `text/plain`
/// (or a typeless blob) to the API without a CORS preflight, but not `application/json`.
pub async fn require_json(req: Request, next: Next) -> Response {
    if has_body(req.headers()) && !is_json(req.headers()) {
        let detail = "Unsupported Media Type: the request body must be JSON (Content-Type: application/json)";
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(json!({ "detail": detail })),
        )
            .into_response();
    }
    next.run(req).await
}

/// Gives the request's body until `deadline` (from the start of the request) to arrive; a
/// handler whose body read was cut off is answered 408, whatever it answered itself.
pub async fn body_deadline(State(deadline): State<Duration>, req: Request, next: Next) -> Response {
    let expired = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = Body::new(DeadlineBody {
        inner: body,
        sleep: Box::pin(tokio::time::sleep_until(Instant::now() + deadline)),
        expired: expired.clone(),
    });
    let resp = next.run(Request::from_parts(parts, body)).await;
    if expired.load(Ordering::SeqCst) {
        let detail = format!(
            "request body not received within {} s",
            deadline.as_secs_f64()
        );
        return (
            StatusCode::REQUEST_TIMEOUT,
            Json(json!({ "detail": detail })),
        )
            .into_response();
    }
    resp
}

/// The error a body read fails with once the deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("request body not received in time")]
pub struct BodyTimeout;

/// A request body that fails with [`BodyTimeout`] once its deadline passed.
struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::SeqCst);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
        ] {
            assert!(is_json(&headers(&[(header::CONTENT_TYPE, ok)])), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
        ] {
            assert!(!is_json(&headers(&[(header::CONTENT_TYPE, bad)])), "{bad}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn bodies_are_declared_by_length_or_chunking() {
        assert!(has_body(&headers(&[(header::CONTENT_LENGTH, "12")])));
        assert!(!has_body(&headers(&[(header::CONTENT_LENGTH, "0")])));
        assert!(has_body(&headers(&[(
            header::TRANSFER_ENCODING,
            "chunked"
        )])));
        assert!(!has_body(&HeaderMap::new()));
    }
}
