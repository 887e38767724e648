//! The OpenAPI 3.1 document of the admin API (`GET /openapi.json`).

use axum::Json;
use serde_json::{json, Map, Value};

/// One operation: method, path, summary, whether a viewer may call it, query
/// parameters, and whether it takes a JSON body.
type Op = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    bool,
);

/// Every route the router serves (a test checks each is routed).
pub(crate) const OPERATIONS: &[Op] = &[
    (
        "get",
        "/healthz",
        "Scheduler state, store reachability and age of the last loop pass (no token needed)",
        true,
        &[],
        false,
    ),
    (
        "get",
        "/jobs",
        "List jobs",
        true,
        &["state", "task", "store", "text", "limit", "offset"],
        false,
    ),
    (
        "post",
        "/jobs",
        "Add a job: task name, trigger JSON, args and options",
        false,
        &[],
        true,
    ),
    ("get", "/jobs/{id}", "Show a job", true, &["store"], false),
    (
        "patch",
        "/jobs/{id}",
        "Modify a job's options, args, next run time or trigger",
        false,
        &["store"],
        true,
    ),
    (
        "delete",
        "/jobs/{id}",
        "Remove a job",
        false,
        &["store"],
        false,
    ),
    (
        "post",
        "/jobs/{id}/pause",
        "Pause a job",
        false,
        &["store"],
        false,
    ),
    (
        "post",
        "/jobs/{id}/resume",
        "Resume a job",
        false,
        &["store"],
        false,
    ),
    (
        "post",
        "/jobs/{id}/run",
        "Run a job now (on a client: ask the running nodes to)",
        false,
        &["store"],
        false,
    ),
    (
        "get",
        "/jobs/{id}/runs",
        "A job's run history, newest first",
        true,
        &["state", "since", "limit", "store"],
        false,
    ),
    (
        "get",
        "/jobs/{id}/next",
        "A job's next fire times",
        true,
        &["count", "store"],
        false,
    ),
    (
        "get",
        "/runs",
        "Runs across jobs, newest first",
        true,
        &["job", "state", "since", "limit", "store"],
        false,
    ),
    (
        "post",
        "/triggers/preview",
        "Next fire times of a trigger JSON",
        true,
        &[],
        true,
    ),
    ("get", "/tasks", "Registered task names", true, &[], false),
    (
        "get",
        "/nodes",
        "Schedulers registered in the stores: host, pid, heartbeat, clock offset",
        true,
        &[],
        false,
    ),
    (
        "get",
        "/metrics",
        "Metrics in Prometheus text format (when configured)",
        true,
        &[],
        false,
    ),
    ("get", "/openapi.json", "This document", true, &[], false),
];

/// Builds the document.
pub(crate) fn build() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, viewer, query, body) in OPERATIONS {
        let mut params: Vec<Value> = query
            .iter()
            .map(|q| json!({"name": q, "in": "query", "required": false, "schema": {"type": "string"}}))
            .collect();
        if path.contains("{id}") {
            params.push(
                json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}),
            );
        }
        let mut op = json!({
            "summary": summary,
            "parameters": params,
            "x-role": if *viewer { "viewer" } else { "admin" },
            "responses": {
                "200": {"description": "OK"},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if *body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        if (*method, *path) == ("post", "/jobs") {
            op["responses"]["201"] = json!({"description": "Created: no job had the id"});
            op["responses"]["200"] =
                json!({"description": "A job with the id was replaced or kept (on_conflict)"});
        }
        if *path == "/healthz" {
            op["security"] = json!([]);
        }
        paths.entry(path.to_string()).or_insert_with(|| json!({}))[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sundial admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Manage a Sundial scheduler's jobs and read its run ledger. Viewer tokens may call the operations marked x-role: viewer; admin tokens all."
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "object", "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"}
                    }}}
                }
            }
        }
    })
}

pub(crate) async fn document() -> Json<Value> {
    Json(build())
}
