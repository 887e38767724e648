//! One of many processes starting at the same moment on one store, as the
//! workers of a web application do: for the concurrent-start tests.
//!
//! ```text
//! sundial-start <store-url> <start-at-unix-millis>
//! ```
//!
//! Waits until the given instant, starts a paused scheduler on the store (which
//! creates the schema on an empty database), declares two jobs every worker
//! declares (`shared` with `if_absent`, `cleanup` with `replace_existing`), and
//! shuts down. Exits 0 when all of that worked, 1 with the error otherwise.

use std::time::Duration;

use sundial::prelude::*;

fn main() {
    if let Err(e) = run() {
        eprintln!("sundial-start: {e}");
        std::process::exit(1);
    }
}

fn run() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, at] = &args[..] else {
        return Err("usage: sundial-start <store-url> <start-at-unix-millis>".into());
    };
    let at: i64 = at.parse()?;
    let scheduler = Scheduler::builder()
        .jobstore_arc("default", store_from_url(url)?)
        .executor("default", AsyncExecutor::new())
        .task("record", |_: JobContext, _: serde_json::Value| async {
            Ok::<_, sundial::BoxError>(())
        })
        .build()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let wait = at - chrono::Utc::now().timestamp_millis();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
        }
        scheduler.start_paused().await?;
        let hourly = IntervalTrigger::every(Duration::from_secs(3600))?;
        scheduler
            .add_job(JobSpec::new("record", hourly).id("shared").if_absent())
            .await?;
        let half_hourly = IntervalTrigger::every(Duration::from_secs(1800))?;
        scheduler
            .add_job(
                JobSpec::new("record", half_hourly)
                    .id("cleanup")
                    .replace_existing(true),
            )
            .await?;
        scheduler.shutdown(false).await
    })?;
    Ok(())
}
