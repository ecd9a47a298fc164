//! HTTP gateway: the four API routes, OpenAPI document and health check.
