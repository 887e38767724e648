//! Built-in metrics served by the admin router on `/metrics` (Prometheus text).
//!
//! ```sh
//! cargo run --example metrics --features metrics,admin   # then: curl localhost:9090/metrics
//! ```

use sundial::admin::{router, AdminConfig};
use sundial::metrics::{install_prometheus, record, Labels};
use sundial::prelude::*;

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
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
    let prometheus = install_prometheus()?;
    record(&scheduler, Labels::PerJob);
    scheduler.start().await?;
    scheduler
        .add_job(JobSpec::new("flaky", IntervalTrigger::builder().seconds(1).build()?).id("flaky"))
        .await?;

    // Metrics only, on loopback: no token needed.
    let app = router(
        scheduler.clone(),
        AdminConfig::new()
            .allow_anonymous()
            .metrics(move || prometheus.render()),
    )?;
    let addr = std::env::var("SUNDIAL_METRICS_ADDR").unwrap_or_else(|_| "127.0.0.1:9090".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("metrics on http://{addr}/metrics");
    axum::serve(listener, app).await?;
    scheduler.shutdown(true).await?;
    Ok(())
}
