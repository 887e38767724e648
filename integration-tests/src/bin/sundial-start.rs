//! One of many processes starting at the same moment on one store, as the
//! workers of a web application do: for the concurrent-start tests.
//!
//! ```text
//! sundial-start <store-url> <barrier-dir>
//! ```
//!
//! Writes `<barrier-dir>/ready-<pid>`, waits until `<barrier-dir>/go` exists
//! (the test creates it once every process is ready), then starts a paused scheduler on the store (which
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
    let [_, url, barrier] = &args[..] else {
        return Err("usage: sundial-start <store-url> <barrier-dir>".into());
    };
    let barrier = std::path::Path::new(barrier);
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
    std::fs::write(barrier.join(format!("ready-{}", std::process::id())), b"")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !barrier.join("go").exists() {
        if std::time::Instant::now() > deadline {
            return Err("no go signal within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    rt.block_on(async {
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
