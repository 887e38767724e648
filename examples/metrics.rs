//! A listener that counts executed, failed and missed runs and records run
//! durations, served in Prometheus text format on `/metrics`.
//!
//! ```sh
//! cargo run --example metrics   # then: curl localhost:9090/metrics
//! ```

use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sundial::prelude::*;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    job_id: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job_id: String,
}

fn instrument(scheduler: &Scheduler, registry: &mut Registry) {
    let runs = Family::<RunLabels, Counter>::default();
    let durations = Family::<JobLabels, Histogram>::new_with_constructor(|| {
        Histogram::new(exponential_buckets(0.0001, 4.0, 10))
    });
    registry.register("sundial_job_runs", "Job runs by outcome", runs.clone());
    registry.register(
        "sundial_job_run_duration_seconds",
        "Run durations",
        durations.clone(),
    );
    let mask = EventMask::JOB_EXECUTED
        | EventMask::JOB_ERROR
        | EventMask::JOB_MISSED
        | EventMask::JOB_TIMEOUT;
    scheduler.add_listener(mask, move |event: &Event| {
        let (job_id, outcome) = match event {
            Event::JobExecuted {
                job_id, duration, ..
            } => {
                durations
                    .get_or_create(&JobLabels {
                        job_id: job_id.to_string(),
                    })
                    .observe(duration.as_secs_f64());
                (job_id, "executed")
            }
            Event::JobError { job_id, .. } => (job_id, "error"),
            Event::JobMissed { job_id, .. } => (job_id, "missed"),
            Event::JobTimeout { job_id, .. } => (job_id, "timeout"),
            _ => return,
        };
        runs.get_or_create(&RunLabels {
            job_id: job_id.to_string(),
            outcome: outcome.into(),
        })
        .inc();
    });
}

#[tokio::main]
async fn main() -> Result<()> {
    let scheduler = Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .task("flaky", |ctx: JobContext, _: ()| async move {
            if ctx.scheduled_run_time().timestamp() % 3 == 0 {
                return Err("every third run fails".into());
            }
            Ok::<_, sundial::BoxError>(())
        })
        .build()?;
    let mut registry = Registry::default();
    instrument(&scheduler, &mut registry);
    let registry = Arc::new(Mutex::new(registry));
    scheduler.start().await?;
    scheduler
        .add_job(JobSpec::new("flaky", IntervalTrigger::builder().seconds(1).build()?).id("flaky"))
        .await?;

    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = Arc::clone(&registry);
            async move {
                let mut body = String::new();
                match registry.lock() {
                    Ok(r) => encode(&mut body, &r)
                        .map(|_| body)
                        .unwrap_or_else(|e| format!("# encode error: {e}")),
                    Err(_) => "# registry poisoned".to_string(),
                }
            }
        }),
    );
    let addr = std::env::var("SUNDIAL_METRICS_ADDR").unwrap_or_else(|_| "127.0.0.1:9090".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| Error::Config(format!("bind {addr}: {e}")))?;
    println!("metrics on http://{addr}/metrics");
    axum::serve(listener, app)
        .await
        .map_err(|e| Error::Config(e.to_string()))?;
    scheduler.shutdown(true).await
}
