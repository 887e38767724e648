//! The job routes: list, show, add, modify, pause, resume, run now, remove,
//! next fire times.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use sundial_core::job::{OnInterrupted, RetryPolicy};
use sundial_core::scheduler::{AddOutcome, Job, JobChanges, JobSpec, OnConflict};
use sundial_core::trigger::fire_times;

use crate::error::{ApiError, Body, Params};
use crate::view::{job_json, rfc3339};
use crate::App;

/// The most items one page returns.
pub(crate) const MAX_LIMIT: usize = 1000;

/// The most fire times one preview computes.
pub(crate) const MAX_FIRE_TIMES: usize = 100;

/// Computes fire times off the async runtime: a combining trigger may search
/// long for each.
pub(crate) async fn fire_times_blocking(
    trigger: Box<dyn sundial_core::trigger::Trigger>,
    previous: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    count: usize,
) -> Result<Vec<DateTime<Utc>>, ApiError> {
    let count = count.min(MAX_FIRE_TIMES);
    tokio::task::spawn_blocking(move || fire_times(trigger.as_ref(), previous, now, count))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("fire time search failed: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

/// Reads a field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The longest duration accepted for an option (100 years).
pub(crate) const MAX_SECS: f64 = 100.0 * 365.0 * 86400.0;

fn secs(field: &str, v: f64) -> Result<Duration, ApiError> {
    if !(0.0..=MAX_SECS).contains(&v) {
        return Err(ApiError::invalid(format!(
            "{field} = {v}: give seconds from 0 to {MAX_SECS}"
        )));
    }
    Duration::try_from_secs_f64(v)
        .map_err(|e| ApiError::invalid(format!("{field} = {v}: {e} (give seconds, >= 0)")))
}

fn opt_secs(field: &str, v: Option<f64>) -> Result<Option<Duration>, ApiError> {
    v.map(|v| secs(field, v)).transpose()
}

/// `GET /jobs` filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    state: Option<String>,
    task: Option<String>,
    store: Option<String>,
    text: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

pub(crate) async fn list(
    State(app): State<App>,
    Params(q): Params<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(s) = q.state.as_deref() {
        if !matches!(s, "scheduled" | "paused" | "pending") {
            return Err(ApiError::invalid(format!(
                "state = {s:?}: expected scheduled, paused or pending"
            )));
        }
    }
    let limit = q.limit.unwrap_or(100).min(MAX_LIMIT);
    let offset = q.offset.unwrap_or(0);
    let text = q.text.as_deref().map(str::to_lowercase);
    let listing = app.scheduler.job_listing(q.store.as_deref()).await?;
    let unreadable: Vec<Value> = listing
        .unreadable()
        .iter()
        .map(|u| {
            json!({
                "id": u.id.as_str(),
                "jobstore": u.jobstore,
                "next_run_time": u.next_run_time,
                "reason": u.reason,
            })
        })
        .collect();
    let jobs: Vec<Value> = listing
        .jobs_by_run_time()
        .into_iter()
        .map(job_json)
        .filter(|j| q.state.as_deref().is_none_or(|s| j["state"] == s))
        .filter(|j| q.task.as_deref().is_none_or(|t| j["task"] == t))
        .filter(|j| {
            text.as_deref().is_none_or(|t| {
                ["id", "name", "task"]
                    .iter()
                    .any(|k| j[*k].as_str().is_some_and(|v| v.to_lowercase().contains(t)))
            })
        })
        .collect();
    let total = jobs.len();
    let page: Vec<Value> = jobs.into_iter().skip(offset).take(limit).collect();
    Ok(Json(
        json!({"jobs": page, "total": total, "offset": offset, "limit": limit, "unreadable": unreadable}),
    ))
}

/// Which store to look in (all stores when absent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreQuery {
    store: Option<String>,
}

async fn find(app: &App, id: &str, store: Option<&str>) -> Result<Job, ApiError> {
    app.scheduler
        .get_job(id, store)
        .await?
        .ok_or_else(|| ApiError::job_not_found(id))
}

pub(crate) async fn show(
    State(app): State<App>,
    Path(id): Path<String>,
    Params(q): Params<StoreQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(job_json(&find(&app, &id, q.store.as_deref()).await?)))
}

/// A retry policy as JSON: seconds for the delays.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryBody {
    max_attempts: u32,
    backoff: f64,
    max_backoff: Option<f64>,
    jitter: Option<f64>,
}

impl RetryBody {
    fn policy(self) -> Result<RetryPolicy, ApiError> {
        if !(0.0..=1.0).contains(&self.jitter.unwrap_or(0.0)) {
            return Err(ApiError::invalid(format!(
                "retry.jitter = {}: expected 0.0 to 1.0",
                self.jitter.unwrap_or(0.0)
            )));
        }
        let mut p = RetryPolicy::new(self.max_attempts, secs("retry.backoff", self.backoff)?);
        if let Some(cap) = self.max_backoff {
            p = p.max_backoff(secs("retry.max_backoff", cap)?);
        }
        Ok(p.jitter(self.jitter.unwrap_or(0.0)))
    }
}

/// `POST /jobs` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewJob {
    id: Option<String>,
    name: Option<String>,
    task: String,
    trigger: Value,
    #[serde(default)]
    args: Value,
    store: Option<String>,
    executor: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    misfire_grace_time: Option<Option<f64>>,
    coalesce: Option<bool>,
    max_instances: Option<u32>,
    timeout: Option<f64>,
    retry: Option<RetryBody>,
    on_interrupted: Option<OnInterrupted>,
    next_run_time: Option<DateTime<Utc>>,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    on_conflict: Conflict,
}

/// What `POST /jobs` does when the id is taken.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Conflict {
    #[default]
    Fail,
    Replace,
    Keep,
}

pub(crate) async fn add(
    State(app): State<App>,
    Body(body): Body<NewJob>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let trigger = app.scheduler.parse_trigger(&body.trigger)?;
    let mut spec = JobSpec::new_boxed(body.task, trigger)
        .args_json(body.args)
        .on_conflict(match body.on_conflict {
            Conflict::Fail => OnConflict::Fail,
            Conflict::Replace => OnConflict::Replace,
            Conflict::Keep => OnConflict::Keep,
        });
    if let Some(id) = body.id {
        if id.trim().is_empty() {
            return Err(ApiError::invalid("id is empty"));
        }
        spec = spec.id(id);
    }
    if let Some(v) = body.name {
        spec = spec.name(v);
    }
    if let Some(v) = body.store {
        spec = spec.jobstore(v);
    }
    if let Some(v) = body.executor {
        spec = spec.executor(v);
    }
    if let Some(v) = body.misfire_grace_time {
        spec = spec.misfire_grace_time(opt_secs("misfire_grace_time", v)?);
    }
    if let Some(v) = body.coalesce {
        spec = spec.coalesce(v);
    }
    if let Some(v) = body.max_instances {
        spec = spec.max_instances(v);
    }
    if let Some(v) = body.timeout {
        spec = spec.timeout(secs("timeout", v)?);
    }
    if let Some(v) = body.retry {
        spec = spec.retry_policy(v.policy()?);
    }
    if let Some(v) = body.on_interrupted {
        spec = spec.on_interrupted(v);
    }
    if let Some(v) = body.next_run_time {
        spec = spec.next_run_time(v);
    }
    if body.paused {
        spec = spec.paused();
    }
    let (job, outcome) = app.scheduler.add_job_with_outcome(spec).await?;
    // 201 for a new job; 200 when an existing one was replaced or kept.
    let status = match outcome {
        AddOutcome::Added => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    Ok((status, Json(job_json(&job))))
}

/// `PATCH /jobs/{id}` body: each field present is changed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Patch {
    name: Option<String>,
    args: Option<Value>,
    trigger: Option<Value>,
    next_run_time: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "nullable")]
    executor: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    misfire_grace_time: Option<Option<f64>>,
    coalesce: Option<bool>,
    max_instances: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    timeout: Option<Option<f64>>,
    #[serde(default, deserialize_with = "nullable")]
    retry: Option<Option<RetryBody>>,
    on_interrupted: Option<OnInterrupted>,
}

impl Patch {
    fn changes(self) -> Result<JobChanges, ApiError> {
        let mut c = JobChanges::new();
        if let Some(v) = self.trigger {
            c = c.trigger_json(v);
        }
        if let Some(v) = self.name {
            c = c.name(v);
        }
        if let Some(v) = self.args {
            c = c.args(v);
        }
        if let Some(v) = self.next_run_time {
            c = c.next_run_time(Some(v));
        }
        if let Some(v) = self.executor {
            c = c.executor(v);
        }
        if let Some(v) = self.misfire_grace_time {
            c = c.misfire_grace_time(opt_secs("misfire_grace_time", v)?);
        }
        if let Some(v) = self.coalesce {
            c = c.coalesce(v);
        }
        if let Some(v) = self.max_instances {
            c = c.max_instances(v);
        }
        if let Some(v) = self.timeout {
            c = c.timeout(opt_secs("timeout", v)?);
        }
        if let Some(v) = self.retry {
            c = c.retry_policy(v.map(RetryBody::policy).transpose()?);
        }
        if let Some(v) = self.on_interrupted {
            c = c.on_interrupted(v);
        }
        Ok(c)
    }
}

pub(crate) async fn modify(
    State(app): State<App>,
    Path(id): Path<String>,
    Params(q): Params<StoreQuery>,
    Body(body): Body<Patch>,
) -> Result<Json<Value>, ApiError> {
    let store = q.store.as_deref();
    let changes = body.changes()?;
    let job = if changes.is_empty() {
        find(&app, &id, store).await?
    } else {
        // One checked write: a change that fails validation writes nothing.
        app.scheduler
            .modify_job(id.as_str(), store, changes)
            .await?
    };
    Ok(Json(job_json(&job)))
}

pub(crate) async fn remove(
    State(app): State<App>,
    Path(id): Path<String>,
    Params(q): Params<StoreQuery>,
) -> Result<StatusCode, ApiError> {
    app.scheduler
        .remove_job(id.as_str(), q.store.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn pause(
    State(app): State<App>,
    Path(id): Path<String>,
    Params(q): Params<StoreQuery>,
) -> Result<Json<Value>, ApiError> {
    let job = app
        .scheduler
        .pause_job(id.as_str(), q.store.as_deref())
        .await?;
    Ok(Json(job_json(&job)))
}

pub(crate) async fn resume(
    State(app): State<App>,
    Path(id): Path<String>,
    Params(q): Params<StoreQuery>,
) -> Result<Json<Value>, ApiError> {
    match app
        .scheduler
        .resume_job(id.as_str(), q.store.as_deref())
        .await?
    {
        Some(job) => Ok(Json(job_json(&job))),
        // The trigger had no fire time left: the job is gone.
        None => Ok(Json(json!({"id": id, "removed": true}))),
    }
}

pub(crate) async fn run(
    State(app): State<App>,
    Path(id): Path<String>,
    Params(q): Params<StoreQuery>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    app.scheduler
        .run_job_now(id.as_str(), q.store.as_deref())
        .await?;
    let how = if app.scheduler.is_client() {
        "requested: a scheduler running the store with this task starts it in about two seconds"
    } else {
        "started"
    };
    Ok((StatusCode::ACCEPTED, Json(json!({"id": id, "run": how}))))
}

/// `GET /jobs/{id}/next` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NextQuery {
    count: Option<usize>,
    store: Option<String>,
}

pub(crate) async fn next(
    State(app): State<App>,
    Path(id): Path<String>,
    Params(q): Params<NextQuery>,
) -> Result<Json<Value>, ApiError> {
    let count = q.count.unwrap_or(10).min(MAX_FIRE_TIMES);
    let job = find(&app, &id, q.store.as_deref()).await?;
    let times = match job.next_run_time() {
        Some(first) if count > 0 => {
            let trigger = app.scheduler.parse_trigger(job.trigger_json())?;
            let mut times = vec![first];
            times.extend(fire_times_blocking(trigger, Some(first), first, count - 1).await?);
            times
        }
        _ => Vec::new(),
    };
    let tz = job
        .next_run_time_local()
        .map(|t| t.timezone())
        .unwrap_or(app.scheduler.timezone());
    Ok(Json(json!({
        "id": id,
        "timezone": tz.name(),
        "fire_times": times.iter().map(|t| rfc3339(*t)).collect::<Vec<_>>(),
        "fire_times_local": times.iter().map(|t| t.with_timezone(&tz).to_rfc3339()).collect::<Vec<_>>(),
    })))
}
