//! The OpenAPI 3.1 document served at `/openapi.json` (written by hand; mirrors the spec's models).

use axum::Json;
use serde_json::{json, Value};

fn uuid_prop(title: &str) -> Value {
    json!({"type": "string", "format": "uuid", "title": title})
}

fn error_responses(codes: &[(&str, &str)]) -> Value {
    let mut m = serde_json::Map::new();
    for (code, why) in codes {
        let schema = if *code == "422" {
            json!({"$ref": "#/components/schemas/HTTPValidationError"})
        } else {
            json!({"$ref": "#/components/schemas/HTTPError"})
        };
        m.insert(
            (*code).into(),
            json!({"description": why, "content": {"application/json": {"schema": schema}}}),
        );
    }
    Value::Object(m)
}

fn op(
    summary: &str,
    body: Option<&str>,
    ok: &str,
    errors: &[(&str, &str)],
    path_param: bool,
) -> Value {
    let mut responses = error_responses(errors);
    if let Value::Object(m) = &mut responses {
        m.insert(
            "200".into(),
            json!({"description": "Successful Response", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{ok}")}}}}),
        );
    }
    let mut o = json!({"summary": summary, "responses": responses});
    if let Some(b) = body {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{b}")}}}});
    }
    if path_param {
        o["parameters"] = json!([{"name": "task_id", "in": "path", "required": true, "schema": uuid_prop("Task Id")}]);
    }
    o
}

/// Builds the document.
pub fn spec() -> Value {
    let bad = ("400", "Payload is not base64 or not a pickle");
    let nf = ("404", "Unknown id");
    let big = ("413", "Request body too large");
    let val = ("422", "Validation Error");
    let down = ("503", "Redis unavailable");
    json!({
        "openapi": "3.1.0",
        "info": {"title": "faas", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Function-as-a-Service for Python: register dill-pickled functions, run them, fetch results."},
        "paths": {
            "/register_function": {"post": op("Register Function", Some("RegisterFn"), "RegisterFnRep", &[bad, big, val, down], false)},
            "/execute_function": {"post": op("Execute Function", Some("ExecuteFnReq"), "ExecuteFnRep", &[bad, nf, big, val, down], false)},
            "/status/{task_id}": {"get": op("Task Status", None, "TaskStatusRep", &[nf, val, down], true)},
            "/result/{task_id}": {"get": op("Task Result", None, "TaskResultRep", &[nf, val, down], true)},
            "/healthz": {"get": {"summary": "Health", "responses": {"200": {"description": "Redis reachable"}, "503": {"description": "Redis unreachable"}}}}
        },
        "components": {"schemas": {
            "RegisterFn": {"type": "object", "title": "RegisterFn", "required": ["name", "payload"],
                "properties": {"name": {"type": "string", "title": "Name"},
                               "payload": {"type": "string", "title": "Payload", "description": "base64 of a dill pickle of the function"}}},
            "RegisterFnRep": {"type": "object", "title": "RegisterFnRep", "required": ["function_id"],
                "properties": {"function_id": uuid_prop("Function Id")}},
            "ExecuteFnReq": {"type": "object", "title": "ExecuteFnReq", "required": ["function_id", "payload"],
                "properties": {"function_id": uuid_prop("Function Id"),
                               "payload": {"type": "string", "title": "Payload", "description": "base64 of a dill pickle of (args_tuple, kwargs_dict)"}}},
            "ExecuteFnRep": {"type": "object", "title": "ExecuteFnRep", "required": ["task_id"],
                "properties": {"task_id": uuid_prop("Task Id")}},
            "TaskStatusRep": {"type": "object", "title": "TaskStatusRep", "required": ["task_id", "status"],
                "properties": {"task_id": uuid_prop("Task Id"),
                               "status": {"type": "string", "enum": ["QUEUED", "RUNNING", "COMPLETED", "FAILED"], "title": "Status"}}},
            "TaskResultRep": {"type": "object", "title": "TaskResultRep", "required": ["task_id", "status", "result"],
                "properties": {"task_id": uuid_prop("Task Id"),
                               "status": {"type": "string", "enum": ["QUEUED", "RUNNING", "COMPLETED", "FAILED"], "title": "Status"},
                               "result": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Result",
                                          "description": "base64 dill pickle of the return value or exception; null until the task ends"}}},
            "HTTPError": {"type": "object", "properties": {"detail": {"type": "string"}}},
            "HTTPValidationError": {"type": "object", "properties": {"detail": {"type": "array", "items": {"type": "object"}}}}
        }}
    })
}

/// `GET /openapi.json`.
pub async fn document() -> Json<Value> {
    Json(spec())
}
