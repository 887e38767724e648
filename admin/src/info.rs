//! The read-mostly routes: runs, nodes, tasks, trigger preview, health, metrics.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sundial_core::run::{RunQuery, RunState};
use sundial_core::scheduler::SchedulerState;
use sundial_core::trigger::parse_timezone;

use crate::error::{ApiError, Body, Params};
use crate::jobs::{fire_times_blocking, MAX_LIMIT};
use crate::view::{node_json, parse_since, rfc3339, run_json};
use crate::App;

/// Run history filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunsQuery {
    job: Option<String>,
    state: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    store: Option<String>,
}

async fn query_runs(app: &App, job: Option<String>, q: RunsQuery) -> Result<Value, ApiError> {
    let mut query = RunQuery {
        limit: q.limit.unwrap_or(100).min(MAX_LIMIT),
        ..RunQuery::default()
    };
    query.job_id = job.or(q.job).map(Into::into);
    if let Some(s) = q.state.as_deref() {
        query.state = Some(RunState::parse(s).ok_or_else(|| {
            ApiError::invalid(format!(
                "state = {s:?}: expected one of {}",
                RunState::ALL.map(RunState::as_str).join(", ")
            ))
        })?);
    }
    if let Some(s) = q.since.as_deref() {
        query.since = Some(parse_since(s, Utc::now()).map_err(ApiError::invalid)?);
    }
    let runs = app.scheduler.runs(&query, q.store.as_deref()).await?;
    Ok(json!({"runs": runs.iter().map(run_json).collect::<Vec<_>>()}))
}

pub(crate) async fn runs(
    State(app): State<App>,
    Params(q): Params<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(query_runs(&app, None, q).await?))
}

pub(crate) async fn job_runs(
    State(app): State<App>,
    Path(id): Path<String>,
    Params(q): Params<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.job.is_some() {
        return Err(ApiError::invalid("job: the job is given by the path here"));
    }
    let store = q.store.clone();
    let runs = query_runs(&app, Some(id.clone()), q).await?;
    let none = runs["runs"].as_array().is_none_or(Vec::is_empty);
    if none
        && app
            .scheduler
            .get_job(id.as_str(), store.as_deref())
            .await?
            .is_none()
    {
        // Neither a job nor any history under this id.
        return Err(ApiError::job_not_found(&id));
    }
    Ok(Json(runs))
}

pub(crate) async fn nodes(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    let now = Utc::now();
    let nodes = app.scheduler.nodes().await?;
    Ok(Json(json!({
        "nodes": nodes.iter().map(|n| node_json(n, now)).collect::<Vec<_>>()
    })))
}

pub(crate) async fn tasks(State(app): State<App>) -> Json<Value> {
    let tasks: Vec<Value> = app
        .scheduler
        .task_names()
        .into_iter()
        .map(|name| json!({"name": name}))
        .collect();
    Json(json!({"tasks": tasks}))
}

/// `POST /triggers/preview` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Preview {
    trigger: Value,
    count: Option<usize>,
    from: Option<DateTime<Utc>>,
    timezone: Option<String>,
}

pub(crate) async fn preview(
    State(app): State<App>,
    Body(body): Body<Preview>,
) -> Result<Json<Value>, ApiError> {
    let tz = match body.timezone.as_deref() {
        Some(name) => parse_timezone(name)?,
        None => app.scheduler.timezone(),
    };
    let from = body.from.unwrap_or_else(Utc::now);
    let mut trigger = app.scheduler.parse_trigger(&body.trigger)?;
    trigger.prepare(from, tz);
    let shown_in = trigger.timezone().unwrap_or(tz);
    let description = trigger.describe();
    let times = fire_times_blocking(trigger, None, from, body.count.unwrap_or(10)).await?;
    Ok(Json(json!({
        "description": description,
        "timezone": shown_in.name(),
        "fire_times": times.iter().map(|t| rfc3339(*t)).collect::<Vec<_>>(),
        "fire_times_local": times.iter().map(|t| t.with_timezone(&shown_in).to_rfc3339()).collect::<Vec<_>>(),
    })))
}

/// How long a store may take to answer a health check.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) async fn healthz(State(app): State<App>) -> impl IntoResponse {
    let s = &app.scheduler;
    let state = match s.state() {
        SchedulerState::Running => "running",
        SchedulerState::Paused => "paused",
        SchedulerState::Stopped => "stopped",
    };
    let stores: Vec<Value> = s
        .check_stores(STORE_CHECK_TIMEOUT)
        .await
        .into_iter()
        .map(|(alias, r)| match r {
            Ok(()) => json!({"alias": alias, "reachable": true}),
            Err(e) => {
                // Needs no token: the error text (hosts, paths) goes to the log only.
                tracing::warn!(store = %alias, error = %e, "health check: store unreachable");
                json!({"alias": alias, "reachable": false})
            }
        })
        .collect();
    let healthy = s.is_running() && stores.iter().all(|v| v["reachable"] == true);
    let last = s.last_pass();
    let body = json!({
        "status": if healthy { "ok" } else { "unhealthy" },
        "state": state,
        "client": s.is_client(),
        "owner": s.owner_id().as_str(),
        "stores": stores,
        "last_pass": last.map(rfc3339),
        "last_pass_age_secs": last.map(|t| (Utc::now() - t).num_milliseconds() as f64 / 1000.0),
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

pub(crate) async fn metrics(State(app): State<App>) -> Result<impl IntoResponse, ApiError> {
    let render = app.config.metrics.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "no metrics are configured: pass AdminConfig::metrics(...) (the `metrics` feature of sundial does it)",
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    ))
}
