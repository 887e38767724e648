//! A small admin API over a scheduler (axum):
//!
//! | method | path | does |
//! |---|---|---|
//! | POST | `/jobs` | add a job: `{"id"?, "task", "trigger": {...}, "args"?, "replace_existing"?}` |
//! | GET | `/jobs` | list jobs |
//! | POST | `/jobs/{id}/pause`, `/resume`, `/run` | pause, resume, run now |
//! | DELETE | `/jobs/{id}` | remove |
//!
//! Errors are JSON `{"error": "..."}`: 404 for an unknown id, 409 for a
//! duplicate id, 400 for a bad trigger or task.
//!
//! ```sh
//! cargo run --example web_admin   # then:
//! curl -XPOST localhost:8080/jobs -H 'content-type: application/json' \
//!   -d '{"id":"hello","task":"log","trigger":{"type":"interval","seconds":5},"args":"hi"}'
//! ```

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use sundial::prelude::*;
use sundial::trigger::trigger_from_json;

#[derive(Debug, Deserialize)]
struct NewJob {
    id: Option<String>,
    task: String,
    trigger: Value,
    #[serde(default)]
    args: Value,
    #[serde(default)]
    replace_existing: bool,
}

struct ApiError(Error);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            Error::JobNotFound { .. } => StatusCode::NOT_FOUND,
            Error::ConflictingId { .. } => StatusCode::CONFLICT,
            Error::InvalidTrigger { .. }
            | Error::InvalidJob(_)
            | Error::UnknownTask { .. }
            | Error::UnknownExecutor { .. }
            | Error::UnknownStore { .. }
            | Error::Serialization { .. } => StatusCode::BAD_REQUEST,
            Error::MaxInstancesReached { .. } => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({"error": self.0.to_string()}))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

fn job_json(job: &Job) -> Value {
    json!({
        "id": job.id(),
        "name": job.name(),
        "task": job.task(),
        "trigger": job.trigger_json(),
        "args": job.args(),
        "next_run_time": job.next_run_time_local().map(|t| t.to_rfc3339()),
        "jobstore": job.jobstore(),
    })
}

async fn add(
    State(s): State<Scheduler>,
    Json(body): Json<NewJob>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let trigger = trigger_from_json(&body.trigger)?;
    let mut spec = JobSpec::new_boxed(body.task, trigger)
        .args_json(body.args)
        .replace_existing(body.replace_existing);
    if let Some(id) = body.id {
        spec = spec.id(id);
    }
    let job = s.add_job(spec).await?;
    Ok((StatusCode::CREATED, Json(job_json(&job))))
}

async fn list(State(s): State<Scheduler>) -> Result<Json<Value>, ApiError> {
    let jobs = s.get_jobs(None).await?;
    Ok(Json(Value::Array(jobs.iter().map(job_json).collect())))
}

async fn pause(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(job_json(&s.pause_job(id, None).await?)))
}

async fn resume(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match s.resume_job(id, None).await? {
        Some(job) => Ok(Json(job_json(&job))),
        None => Ok(Json(json!({"removed": true}))),
    }
}

async fn run(State(s): State<Scheduler>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    s.run_job_now(id, None).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn remove(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.remove_job(id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The admin routes over `scheduler`.
fn router(scheduler: Scheduler) -> Router {
    Router::new()
        .route("/jobs", post(add).get(list))
        .route("/jobs/{id}", axum::routing::delete(remove))
        .route("/jobs/{id}/pause", post(pause))
        .route("/jobs/{id}/resume", post(resume))
        .route("/jobs/{id}/run", post(run))
        .with_state(scheduler)
}

#[tokio::main]
async fn main() -> Result<()> {
    let scheduler = Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .task("log", |ctx: JobContext, msg: Value| async move {
            println!("[{}] {msg}", ctx.job_id());
            Ok::<_, std::io::Error>(())
        })
        .build()?;
    scheduler.start().await?;
    let addr = std::env::var("SUNDIAL_ADMIN_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| Error::Config(format!("bind {addr}: {e}")))?;
    println!("admin API on http://{addr}/jobs");
    axum::serve(listener, router(scheduler.clone()))
        .await
        .map_err(|e| Error::Config(e.to_string()))?;
    scheduler.shutdown(true).await
}
