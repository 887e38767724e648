//! The admin router end to end: every route, every error, both roles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sundial_admin::{router, AdminConfig};
use sundial_core::scheduler::Scheduler;
use sundial_executor_async::AsyncExecutor;
use sundial_jobstore_memory::MemoryJobStore;
use tower::ServiceExt;

const ADMIN: &str = "admin-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";

async fn scheduler() -> Scheduler {
    let s = Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .task("noop", |_ctx, _args: Value| async {
            Ok::<_, std::io::Error>(())
        })
        .task("fail", |_ctx, _args: Value| async {
            Err::<(), _>(std::io::Error::other(
                "<script>alert(1)</script> went wrong",
            ))
        })
        .build()
        .unwrap();
    s.start().await.unwrap();
    s
}

fn config() -> AdminConfig {
    AdminConfig::new().admin_token(ADMIN).viewer_token(VIEWER)
}

async fn call_raw(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, headers, value)
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (ct, bytes) = match body {
        Some(b) => (Some("application/json"), serde_json::to_vec(&b).unwrap()),
        None => (None, Vec::new()),
    };
    let (s, _, v) = call_raw(app, method, uri, token, ct, bytes).await;
    (s, v)
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

fn message(v: &Value) -> &str {
    v["error"]["message"]
        .as_str()
        .unwrap_or("<no error message>")
}

fn hourly(id: &str) -> Value {
    json!({"id": id, "task": "noop", "trigger": {"type": "interval", "hours": 1}})
}

#[tokio::test]
async fn a_router_without_tokens_is_refused_unless_anonymous_is_allowed() {
    let s = scheduler().await;
    let e = router(s.clone(), AdminConfig::new()).unwrap_err();
    assert!(e.to_string().contains("allow_anonymous"), "{e}");
    let e = router(s.clone(), AdminConfig::new().admin_token(" ")).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    let app = router(s.clone(), AdminConfig::new().allow_anonymous()).unwrap();
    let (st, v) = call(&app, Method::POST, "/jobs", None, Some(hourly("a"))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // A token that is given must still be right.
    let (st, _) = call(&app, Method::GET, "/jobs", Some("nope"), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Debug output does not show tokens.
    assert!(!format!("{:?}", config()).contains(ADMIN));
    s.shutdown(false).await.unwrap();
}

#[tokio::test]
async fn tokens_decide_what_a_request_may_do() {
    let s = scheduler().await;
    let app = router(s.clone(), config()).unwrap();
    let (st, h, v) = call_raw(&app, Method::GET, "/jobs", None, None, vec![]).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&v), "unauthorized");
    assert_eq!(h[header::WWW_AUTHENTICATE], "Bearer");
    let (st, v) = call(
        &app,
        Method::GET,
        "/jobs",
        Some("admin-token-012345678"),
        None,
    )
    .await;
    assert_eq!((st, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    assert!(message(&v).contains("not valid"), "{v}");

    let (st, v) = call(&app, Method::GET, "/jobs", Some(VIEWER), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = call(&app, Method::POST, "/jobs", Some(VIEWER), Some(hourly("v"))).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    assert!(s.get_job("v", None).await.unwrap().is_none());
    let (st, _) = call(&app, Method::POST, "/jobs", Some(ADMIN), Some(hourly("v"))).await;
    assert_eq!(st, StatusCode::CREATED);
    for (m, uri) in [
        (Method::POST, "/jobs/v/pause"),
        (Method::POST, "/jobs/v/resume"),
        (Method::POST, "/jobs/v/run"),
        (Method::PATCH, "/jobs/v"),
        (Method::DELETE, "/jobs/v"),
    ] {
        let (st, v) = call(&app, m.clone(), uri, Some(VIEWER), Some(json!({}))).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{m} {uri}: {v}");
    }
    assert!(!s.get_job("v", None).await.unwrap().unwrap().is_paused());
    // Previewing a trigger is a read.
    let (st, v) = call(
        &app,
        Method::POST,
        "/triggers/preview",
        Some(VIEWER),
        Some(json!({"trigger": {"type": "interval", "minutes": 5}, "count": 2})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // The health check needs no token.
    let (st, v) = call(&app, Method::GET, "/healthz", None, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    s.shutdown(false).await.unwrap();
}

#[tokio::test]
async fn jobs_are_added_listed_shown_modified_and_removed() {
    let s = scheduler().await;
    let app = router(s.clone(), config()).unwrap();
    let (st, v) = call(
        &app,
        Method::POST,
        "/jobs",
        Some(ADMIN),
        Some(json!({
            "id": "report", "name": "Daily report", "task": "noop",
            "trigger": {"type": "cron", "hour": "9", "minute": "30", "timezone": "Asia/Shanghai"},
            "args": {"to": "ops@example.com"}, "max_instances": 2, "coalesce": false,
            "misfire_grace_time": null, "timeout": 30, "on_interrupted": "rerun",
            "retry": {"max_attempts": 3, "backoff": 1.5}
        })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["id"], "report");
    assert_eq!(v["state"], "scheduled");
    assert_eq!(v["options"]["max_instances"], 2);
    assert_eq!(v["options"]["retry"]["max_attempts"], 3);
    assert!(
        v["next_run_time_local"]
            .as_str()
            .unwrap()
            .contains("T09:30:00+08:00"),
        "{v}"
    );
    let stored = s.get_job("report", None).await.unwrap().unwrap();
    assert_eq!(stored.options().misfire_grace_time, None);
    assert_eq!(stored.options().timeout, Some(Duration::from_secs(30)));

    for i in 0..5 {
        let (st, _) = call(
            &app,
            Method::POST,
            "/jobs",
            Some(ADMIN),
            Some(hourly(&format!("h{i}"))),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED);
    }
    let (st, v) = call(
        &app,
        Method::GET,
        "/jobs?limit=2&offset=1&task=noop",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["total"], 6);
    assert_eq!(v["jobs"].as_array().unwrap().len(), 2);
    let (_, v) = call(&app, Method::GET, "/jobs?text=DAILY", Some(VIEWER), None).await;
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["jobs"][0]["id"], "report");

    let (st, v) = call(&app, Method::GET, "/jobs/report", Some(VIEWER), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["args"]["to"], "ops@example.com");

    // Options and the trigger change in one request.
    let (st, v) = call(
        &app,
        Method::PATCH,
        "/jobs/report",
        Some(ADMIN),
        Some(
            json!({"name": "Report", "max_instances": 1, "timeout": null,
                    "trigger": {"type": "interval", "minutes": 10}}),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "Report");
    assert_eq!(v["trigger"]["type"], "interval");
    let stored = s.get_job("report", None).await.unwrap().unwrap();
    assert_eq!(stored.options().max_instances, 1);
    assert_eq!(stored.options().timeout, None);
    // A bad trigger in a change writes nothing.
    let (st, v) = call(
        &app,
        Method::PATCH,
        "/jobs/report",
        Some(ADMIN),
        Some(json!({"name": "Lost", "trigger": {"type": "cron", "hour": "25"}})),
    )
    .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_trigger"),
        "{v}"
    );
    assert!(message(&v).contains("hour"), "{v}");
    assert_eq!(
        s.get_job("report", None).await.unwrap().unwrap().name(),
        "Report"
    );

    let (st, v) = call(&app, Method::POST, "/jobs/report/pause", Some(ADMIN), None).await;
    assert_eq!((st, v["state"].as_str()), (StatusCode::OK, Some("paused")));
    let (_, v) = call(&app, Method::GET, "/jobs?state=paused", Some(VIEWER), None).await;
    assert_eq!(v["total"], 1);
    let (st, v) = call(&app, Method::POST, "/jobs/report/resume", Some(ADMIN), None).await;
    assert_eq!(
        (st, v["state"].as_str()),
        (StatusCode::OK, Some("scheduled"))
    );

    let (st, v) = call(
        &app,
        Method::GET,
        "/jobs/report/next?count=3",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let times: Vec<chrono::DateTime<chrono::Utc>> = v["fire_times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(times.len(), 3);
    assert_eq!(times[1] - times[0], chrono::Duration::minutes(10));
    assert_eq!(times[2] - times[1], chrono::Duration::minutes(10));

    let (st, _) = call(&app, Method::DELETE, "/jobs/report", Some(ADMIN), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = call(&app, Method::GET, "/jobs/report", Some(VIEWER), None).await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    for (m, uri) in [
        (Method::DELETE, "/jobs/report"),
        (Method::POST, "/jobs/report/pause"),
        (Method::POST, "/jobs/report/resume"),
        (Method::POST, "/jobs/report/run"),
        (Method::PATCH, "/jobs/report"),
        (Method::GET, "/jobs/report/next"),
        (Method::GET, "/jobs/report/runs"),
    ] {
        let (st, v) = call(
            &app,
            m.clone(),
            uri,
            Some(ADMIN),
            Some(json!({"name": "x"})),
        )
        .await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{m} {uri}"
        );
    }
    s.shutdown(false).await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let s = scheduler().await;
    let app = router(s.clone(), config()).unwrap();
    let post = |body: Value| call(&app, Method::POST, "/jobs", Some(ADMIN), Some(body));
    let (st, _) = post(hourly("dup")).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, v) = post(hourly("dup")).await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "conflict"), "{v}");
    let (st, v) = post(json!({"id": "dup", "task": "noop", "trigger": {"type": "interval", "hours": 2}, "on_conflict": "keep"})).await;
    assert_eq!(st, StatusCode::OK, "kept, not created: {v}");
    assert_eq!(v["trigger"]["hours"], 1, "kept: {v}");
    let (st, v) = post(json!({"id": "swap", "task": "noop", "trigger": {"type": "interval", "hours": 2}, "on_conflict": "keep"})).await;
    assert_eq!(st, StatusCode::CREATED, "no job had the id: {v}");
    let (st, v) = post(json!({"id": "swap", "task": "noop", "trigger": {"type": "interval", "hours": 3}, "on_conflict": "replace"})).await;
    assert_eq!(st, StatusCode::OK, "replaced, not created: {v}");
    assert_eq!(v["trigger"]["hours"], 3, "replaced: {v}");
    let (st, _) = call(&app, Method::DELETE, "/jobs/swap", Some(ADMIN), None).await;
    assert!(st.is_success(), "{st}");

    let (st, v) = post(json!({"task": "noop", "trigger": {"type": "interval", "hours": -1}})).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_trigger"),
        "{v}"
    );
    assert!(message(&v).contains("hours"), "{v}");
    let (st, v) =
        post(json!({"task": "noop", "trigger": {"type": "cron", "day_of_week": "funday"}})).await;
    assert_eq!(code(&v), "invalid_trigger", "{st} {v}");
    assert!(message(&v).contains("day_of_week"), "{v}");
    let (st, v) = post(json!({"task": "noop", "trigger": {"type": "cron", "hour": "9", "timezone": "Mars/Olympus"}})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(message(&v).contains("Mars/Olympus"), "{v}");
    let (st, v) = post(json!({"task": "nope", "trigger": {"type": "interval", "hours": 1}})).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "unknown_task"),
        "{v}"
    );
    let (st, v) =
        post(json!({"task": "noop", "trigger": {"type": "interval", "hours": 1}, "colour": "red"}))
            .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        "{v}"
    );
    assert!(message(&v).contains("colour"), "{v}");
    let (st, v) =
        post(json!({"task": "noop", "trigger": {"type": "interval", "hours": 1}, "timeout": -3}))
            .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        "{v}"
    );
    assert!(message(&v).contains("timeout"), "{v}");
    let (st, v) = post(
        json!({"task": "noop", "trigger": {"type": "interval", "hours": 1}, "store": "elsewhere"}),
    )
    .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "unknown_store"),
        "{v}"
    );
    let (st, v) = post(json!({"trigger": {"type": "interval", "hours": 1}})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(message(&v).contains("task"), "{v}");

    let (st, _, v) = call_raw(
        &app,
        Method::POST,
        "/jobs",
        Some(ADMIN),
        Some("application/json"),
        b"{\"task\": ".to_vec(),
    )
    .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{v}"
    );
    let (st, _, v) = call_raw(
        &app,
        Method::POST,
        "/jobs",
        Some(ADMIN),
        None,
        serde_json::to_vec(&hourly("x")).unwrap(),
    )
    .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_json"),
        "{v}"
    );
    // A 10 MB body is refused without being read whole.
    let mut big = b"{\"task\":\"noop\",\"args\":\"".to_vec();
    big.resize(10 * 1024 * 1024, b'a');
    big.extend_from_slice(b"\",\"trigger\":{\"type\":\"interval\",\"hours\":1}}");
    let (st, _, v) = call_raw(
        &app,
        Method::POST,
        "/jobs",
        Some(ADMIN),
        Some("application/json"),
        big,
    )
    .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        "{v}"
    );

    let (st, v) = call(
        &app,
        Method::GET,
        "/jobs?state=sleeping",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        "{v}"
    );
    let (st, v) = call(&app, Method::GET, "/jobs?limit=many", Some(VIEWER), None).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::BAD_REQUEST, "bad_query"),
        "{v}"
    );
    let (st, v) = call(&app, Method::GET, "/jobs?colour=red", Some(VIEWER), None).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::BAD_REQUEST, "bad_query"),
        "{v}"
    );
    let (st, v) = call(
        &app,
        Method::GET,
        "/runs?state=exploded",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(message(&v).contains("succeeded"), "{v}");
    let (st, v) = call(
        &app,
        Method::GET,
        "/runs?since=yesterday",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(message(&v).contains("yesterday"), "{v}");
    let (st, v) = call(
        &app,
        Method::PATCH,
        "/jobs/dup",
        Some(ADMIN),
        Some(json!({"retry": {"max_attempts": 2, "backoff": 1, "jitter": 3}})),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(message(&v).contains("jitter"), "{v}");
    let (st, v) =
        post(json!({"task": "noop", "trigger": {"type": "interval", "hours": 1}, "timeout": 1e20}))
            .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        "{v}"
    );
    // A change is checked whole: a bad part writes none of it.
    let (st, v) = call(
        &app,
        Method::PATCH,
        "/jobs/dup",
        Some(ADMIN),
        Some(json!({"trigger": {"type": "interval", "hours": 5}, "executor": "nowhere"})),
    )
    .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "unknown_executor"),
        "{v}"
    );
    let (st, v) = call(
        &app,
        Method::PATCH,
        "/jobs/dup",
        Some(ADMIN),
        Some(json!({"trigger": {"type": "interval", "hours": 5}, "max_instances": 0})),
    )
    .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        "{v}"
    );
    let (st, v) = call(&app, Method::GET, "/jobs/dup", Some(VIEWER), None).await;
    assert_eq!(
        (st, &v["trigger"]["hours"], &v["options"]["max_instances"]),
        (StatusCode::OK, &json!(1), &json!(1)),
        "{v}"
    );
    // Changing a paused job's trigger keeps it paused.
    call(&app, Method::POST, "/jobs/dup/pause", Some(ADMIN), None).await;
    let (st, v) = call(
        &app,
        Method::PATCH,
        "/jobs/dup",
        Some(ADMIN),
        Some(json!({"trigger": {"type": "interval", "hours": 5}})),
    )
    .await;
    assert_eq!(
        (st, v["state"].as_str(), &v["trigger"]["hours"]),
        (StatusCode::OK, Some("paused"), &json!(5)),
        "{v}"
    );
    let (st, v) = call(&app, Method::GET, "/nowhere", Some(VIEWER), None).await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "no_route"), "{v}");
    let (st, v) = call(&app, Method::PUT, "/jobs", Some(ADMIN), None).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        "{v}"
    );

    let ids: Vec<String> = s
        .get_jobs(None)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id().to_string())
        .collect();
    assert_eq!(ids, ["dup"], "nothing but the first job was added");
    s.shutdown(false).await.unwrap();
}

async fn wait_for_runs(app: &Router, uri: &str, n: usize) -> Value {
    for _ in 0..100 {
        let (st, v) = call(app, Method::GET, uri, Some(VIEWER), None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if v["runs"].as_array().unwrap().len() >= n
            && v["runs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["state"] != "running")
        {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {n} finished runs at {uri}");
}

#[tokio::test]
async fn run_now_shows_up_in_the_history_and_failures_keep_their_text() {
    let s = scheduler().await;
    let app = router(s.clone(), config()).unwrap();
    for (id, task) in [("ok", "noop"), ("bad", "fail")] {
        let (st, _) = call(
            &app,
            Method::POST,
            "/jobs",
            Some(ADMIN),
            Some(json!({"id": id, "task": task, "trigger": {"type": "interval", "hours": 1}})),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED);
        let (st, v) = call(
            &app,
            Method::POST,
            &format!("/jobs/{id}/run"),
            Some(ADMIN),
            None,
        )
        .await;
        assert_eq!(
            (st, v["run"].as_str()),
            (StatusCode::ACCEPTED, Some("started")),
            "{v}"
        );
    }
    let v = wait_for_runs(&app, "/jobs/ok/runs", 1).await;
    let run = &v["runs"][0];
    assert_eq!(run["state"], "succeeded", "{v}");
    assert_eq!(run["job_id"], "ok");
    assert_eq!(run["attempt"], 1);
    assert!(run["duration_secs"].as_f64().is_some(), "{v}");
    let v = wait_for_runs(&app, "/runs?state=failed&since=1h", 1).await;
    assert_eq!(v["runs"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["runs"][0]["job_id"], "bad");
    assert!(v["runs"][0]["error"]
        .as_str()
        .unwrap()
        .contains("<script>alert(1)</script> went wrong"));
    let (_, v) = call(
        &app,
        Method::GET,
        "/runs?job=ok&state=failed",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(v["runs"].as_array().unwrap().len(), 0, "{v}");
    let (_, v) = call(&app, Method::GET, "/runs?limit=1", Some(VIEWER), None).await;
    assert_eq!(v["runs"].as_array().unwrap().len(), 1, "{v}");
    // History outlives the job.
    call(&app, Method::DELETE, "/jobs/ok", Some(ADMIN), None).await;
    let (st, v) = call(&app, Method::GET, "/jobs/ok/runs", Some(VIEWER), None).await;
    assert_eq!(
        (st, v["runs"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1)),
        "{v}"
    );
    s.shutdown(false).await.unwrap();
}

#[tokio::test]
async fn tasks_nodes_preview_health_and_metrics() {
    let s = scheduler().await;
    let app = router(
        s.clone(),
        config().metrics(|| "sundial_test_total 3\n".to_string()),
    )
    .unwrap();
    let (st, v) = call(&app, Method::GET, "/tasks", Some(VIEWER), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["tasks"], json!([{"name": "fail"}, {"name": "noop"}]));

    let (st, v) = call(&app, Method::GET, "/nodes", Some(VIEWER), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{v}");
    assert_eq!(nodes[0]["owner"], s.owner_id().as_str());
    assert_eq!(nodes[0]["pid"], std::process::id());
    assert_eq!(nodes[0]["live"], true);

    let (st, v) = call(
        &app,
        Method::POST,
        "/triggers/preview",
        Some(VIEWER),
        Some(
            json!({"trigger": {"type": "cron", "day_of_week": "mon-fri", "hour": "9"},
                    "timezone": "Asia/Shanghai", "from": "2026-12-04T00:00:00Z", "count": 3}),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["timezone"], "Asia/Shanghai");
    // 00:00Z is 08:00 in Shanghai on Friday 4 Dec: that day's 09:00 comes first.
    assert_eq!(
        v["fire_times_local"],
        json!([
            "2026-12-04T09:00:00+08:00",
            "2026-12-07T09:00:00+08:00",
            "2026-12-08T09:00:00+08:00"
        ])
    );
    assert_eq!(v["fire_times"][0], "2026-12-04T01:00:00Z");
    let (st, v) = call(
        &app,
        Method::POST,
        "/triggers/preview",
        Some(VIEWER),
        Some(json!({"trigger": {"type": "date", "run_date": "2026-12-04T10:00:00Z"}, "timezone": "Nowhere/City"})),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(message(&v).contains("Nowhere/City"), "{v}");

    let (st, v) = call(&app, Method::GET, "/metrics", Some(VIEWER), None).await;
    assert_eq!((st, v), (StatusCode::OK, json!("sundial_test_total 3\n")));
    let plain = router(s.clone(), config()).unwrap();
    let (st, v) = call(&plain, Method::GET, "/metrics", Some(VIEWER), None).await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "not_configured"));

    for _ in 0..100 {
        if s.last_pass().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, v) = call(&app, Method::GET, "/healthz", None, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["state"], "running");
    assert_eq!(
        v["stores"],
        json!([{"alias": "default", "reachable": true}])
    );
    assert!(v["last_pass_age_secs"].as_f64().is_some(), "{v}");
    s.shutdown(true).await.unwrap();
    let (st, v) = call(&app, Method::GET, "/healthz", None, None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["state"].as_str()),
        (Some("unhealthy"), Some("stopped"))
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_the_router_nests() {
    let s = scheduler().await;
    let admin = router(s.clone(), config()).unwrap();
    let app = Router::new().nest("/sundial", admin);
    call(
        &app,
        Method::POST,
        "/sundial/jobs",
        Some(ADMIN),
        Some(hourly("j")),
    )
    .await;
    let (st, doc) = call(
        &app,
        Method::GET,
        "/sundial/openapi.json",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 14, "{}", paths.len());
    let mut ops = 0;
    for (path, methods) in paths {
        for (method, op) in methods.as_object().unwrap() {
            let uri = format!("/sundial{}", path.replace("{id}", "j"));
            let m: Method = method.to_uppercase().parse().unwrap();
            // An empty object is a valid body for every JSON route but preview.
            let body = (m != Method::GET && m != Method::DELETE).then(|| json!({}));
            let (st, v) = call(&app, m.clone(), &uri, Some(ADMIN), body).await;
            assert!(
                !matches!(code(&v), "no_route" | "method_not_allowed"),
                "{method} {path} is documented but not routed: {st} {v}"
            );
            let role = op["x-role"].as_str().unwrap();
            if m != Method::GET && path != "/triggers/preview" {
                assert_eq!(role, "admin", "{method} {path}");
            }
            ops += 1;
        }
    }
    assert!(ops >= 17, "{ops}");
    s.shutdown(false).await.unwrap();
}

/// A dashboard request with a cookie and the given origin and host.
async fn ui_post(
    app: &Router,
    uri: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
    body: &str,
) -> (StatusCode, axum::http::HeaderMap) {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::HOST, "ops.test:8080")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    if let Some(o) = origin {
        req = req.header(header::ORIGIN, o);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    (res.status(), res.headers().clone())
}

#[tokio::test]
async fn dashboard_forms_need_the_admin_role_and_the_same_origin() {
    let s = scheduler().await;
    let odd = "odd;token, with spaces é";
    let app = router(s.clone(), config().admin_token(odd)).unwrap();
    call(&app, Method::POST, "/jobs", Some(ADMIN), Some(hourly("j"))).await;
    let same = Some("http://ops.test:8080");
    // Sign-in: a foreign origin is refused; any valid token works, encoded in the cookie.
    let form = |t: &str| {
        format!(
            "token={}",
            t.replace(';', "%3B")
                .replace(',', "%2C")
                .replace(' ', "+")
                .replace('é', "%C3%A9")
        )
    };
    let (st, _) = ui_post(
        &app,
        "/ui/login",
        None,
        Some("http://evil.test"),
        &form(ADMIN),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, h) = ui_post(&app, "/ui/login", None, same, &form(odd)).await;
    assert_eq!(st, StatusCode::SEE_OTHER, "{h:?}");
    let set = h[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/ui;"),
        "{set}"
    );
    assert!(!set.contains(odd), "the token is encoded: {set}");
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    let odd_cookie = set.split(';').next().unwrap().to_string();
    let res = app
        .clone()
        .oneshot(
            Request::get("/ui/jobs")
                .header(header::COOKIE, &odd_cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "signed in with an odd token");

    let admin = format!("sundial_token={ADMIN}");
    let viewer = format!("sundial_token={VIEWER}");
    let pause = "id=j&action=pause";
    for (cookie, origin, want) in [
        (Some(viewer.as_str()), same, StatusCode::FORBIDDEN),
        (Some(admin.as_str()), None, StatusCode::FORBIDDEN),
        (Some(admin.as_str()), Some("null"), StatusCode::FORBIDDEN),
        (
            Some(admin.as_str()),
            Some("http://evil.test"),
            StatusCode::FORBIDDEN,
        ),
        (
            Some(admin.as_str()),
            Some("http://ops.test:9999"),
            StatusCode::FORBIDDEN,
        ),
    ] {
        let (st, _) = ui_post(&app, "/ui/action", cookie, origin, pause).await;
        assert_eq!(st, want, "{cookie:?} {origin:?}");
        assert!(!s.get_job("j", None).await.unwrap().unwrap().is_paused());
    }
    for uri in ["/ui/add", "/ui/edit"] {
        let (st, _) = ui_post(
            &app,
            uri,
            Some(&viewer),
            same,
            "id=j&kind=cron&crontab=0+9+*+*+*&task=noop",
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{uri}");
    }
    // No cookie: sent to sign in.
    let (st, h) = ui_post(&app, "/ui/action", None, same, pause).await;
    assert_eq!(
        (st, h[header::LOCATION].to_str().unwrap()),
        (StatusCode::SEE_OTHER, "login")
    );
    let (st, _) = ui_post(&app, "/ui/action", Some(&admin), same, pause).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    assert!(s.get_job("j", None).await.unwrap().unwrap().is_paused());

    // Behind a proxy: the configured public origin is the one accepted.
    let proxied = router(s.clone(), config().public_origin("https://ops.example.com")).unwrap();
    let resume = "id=j&action=resume";
    let (st, _) = ui_post(&proxied, "/ui/action", Some(&admin), same, resume).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = ui_post(
        &proxied,
        "/ui/action",
        Some(&admin),
        Some("https://ops.example.com"),
        resume,
    )
    .await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    assert!(!s.get_job("j", None).await.unwrap().unwrap().is_paused());
    s.shutdown(false).await.unwrap();
}

/// A stored job whose content cannot be decoded is listed apart with why,
/// refused by `GET /jobs/{id}` with a 409 that names it, and can be deleted.
#[tokio::test]
async fn unreadable_jobs_are_listed_apart_and_can_be_deleted() {
    use std::sync::Arc;
    use sundial_core::job::{JobContent, JobId, JobRecord};
    use sundial_core::store::JobStore;
    let store = Arc::new(MemoryJobStore::new());
    let s = Scheduler::builder()
        .jobstore_arc("default", Arc::clone(&store) as Arc<dyn JobStore>)
        .executor("default", AsyncExecutor::new())
        .task("noop", |_ctx, _args: Value| async {
            Ok::<_, std::io::Error>(())
        })
        .build()
        .unwrap();
    s.start().await.unwrap();
    let app = router(s.clone(), config()).unwrap();
    let (st, _) = call(
        &app,
        Method::POST,
        "/jobs",
        Some(ADMIN),
        Some(hourly("fine")),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    store
        .add_job(&JobRecord::new(
            JobId::new("broken"),
            JobContent::from_stored("{not json"),
            Some(later),
        ))
        .await
        .unwrap();

    let (st, v) = call(&app, Method::GET, "/jobs", Some(VIEWER), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let ids: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(ids, ["fine"], "{v}");
    assert_eq!(v["unreadable"][0]["id"], "broken", "{v}");
    assert_eq!(v["unreadable"][0]["jobstore"], "default", "{v}");
    assert!(
        v["unreadable"][0]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{v}"
    );

    let (st, v) = call(&app, Method::GET, "/jobs/broken", Some(VIEWER), None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(code(&v), "unreadable");
    assert!(message(&v).contains("'broken'"), "{v}");

    let (st, v) = call(&app, Method::DELETE, "/jobs/broken", Some(ADMIN), None).await;
    assert!(st.is_success(), "{st} {v}");
    let (_, v) = call(&app, Method::GET, "/jobs", Some(VIEWER), None).await;
    assert_eq!(v["unreadable"], json!([]), "{v}");
    s.shutdown(false).await.unwrap();
}
