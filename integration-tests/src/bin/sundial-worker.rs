//! A scheduler process for the process-level tests: runs the scheduler on a
//! store URL for a while and appends every run to a file.
//!
//! ```text
//! sundial-worker <store-url> <runs-file> <seconds>
//! ```
//!
//! Each run appends one line `job_id,scheduled_run_time_micros,owner` with a
//! single `O_APPEND` write, so several workers can share the file. Task `record`
//! writes its line and returns; task `sleep` (args: seconds) writes its line when
//! it starts and then sleeps.
//!
//! With `SUNDIAL_DECLARE=<intervals>,<one-offs>,<base-unix-millis>` the worker
//! declares jobs at start as an application's workers do, each with
//! `replace_existing`: interval jobs `i<n>` every 2 s from the base, and one-off
//! jobs `o<n>` spread over the 10 s after the base (every 50 ms), never missed.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use sundial::prelude::*;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, runs_path, seconds] = &args[..] else {
        return Err("usage: sundial-worker <store-url> <runs-file> <seconds>".into());
    };
    let seconds: u64 = seconds.parse()?;
    let owner =
        std::env::var("SUNDIAL_OWNER").unwrap_or_else(|_| format!("pid{}", std::process::id()));
    let runs = Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(runs_path)?,
    ));
    let me = owner.clone();
    let me2 = owner.clone();
    let runs2 = Arc::clone(&runs);
    let scheduler = Scheduler::builder()
        .jobstore_arc("default", store_from_url(url)?)
        .executor("default", AsyncExecutor::new())
        .lease_duration(Duration::from_secs(
            std::env::var("SUNDIAL_LEASE_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(5),
        ))
        .max_idle_sleep(Duration::from_millis(200))
        .owner_id(owner.clone())
        .task("record", move |ctx: JobContext, _: serde_json::Value| {
            let line = format!(
                "{},{},{}\n",
                ctx.job_id(),
                ctx.scheduled_run_time().timestamp_micros(),
                me
            );
            let runs = Arc::clone(&runs);
            async move {
                let mut f = runs.lock().map_err(|_| "poisoned")?;
                f.write_all(line.as_bytes())?;
                Ok::<_, sundial::BoxError>(())
            }
        })
        .task("sleep", move |ctx: JobContext, secs: u64| {
            let line = format!(
                "{},{},{}\n",
                ctx.job_id(),
                ctx.scheduled_run_time().timestamp_micros(),
                me2
            );
            let runs = Arc::clone(&runs2);
            async move {
                {
                    let mut f = runs.lock().map_err(|_| "poisoned")?;
                    f.write_all(line.as_bytes())?;
                }
                tokio::time::sleep(Duration::from_secs(secs)).await;
                Ok::<_, sundial::BoxError>(())
            }
        })
        .build()?;
    scheduler.add_listener(
        EventMask::JOB_ERROR
            | EventMask::STORE_ERROR
            | EventMask::JOB_MISSED
            | EventMask::JOB_INTERRUPTED,
        |e: &Event| {
            eprintln!("worker event: {e:?}");
        },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        scheduler.start().await?;
        if let Ok(spec) = std::env::var("SUNDIAL_DECLARE") {
            declare(&scheduler, &spec)
                .await
                .map_err(|e| sundial::Error::Config(format!("declaring jobs: {e}")))?;
        }
        eprintln!("worker {owner} started");
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        scheduler.shutdown(true).await
    })?;
    Ok(())
}

/// Declares the jobs `SUNDIAL_DECLARE` asks for, as every worker does at start.
async fn declare(
    scheduler: &Scheduler,
    spec: &str,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let parts: Vec<i64> = spec
        .split(',')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    let [intervals, one_offs, base] = parts[..] else {
        return Err("SUNDIAL_DECLARE=<intervals>,<one-offs>,<base-unix-millis>".into());
    };
    let base = sundial::chrono::DateTime::from_timestamp_millis(base).ok_or("bad base")?;
    for i in 0..intervals {
        let every = IntervalTrigger::builder()
            .seconds(2)
            .start_date(base)
            .build()?;
        scheduler
            .add_job(
                JobSpec::new("record", every)
                    .id(format!("i{i}"))
                    .replace_existing(true),
            )
            .await?;
    }
    for k in 0..one_offs {
        let at = base + sundial::chrono::Duration::milliseconds(50 * k);
        scheduler
            .add_job(
                JobSpec::new("record", DateTrigger::at(at))
                    .id(format!("o{k}"))
                    .misfire_grace_time(None)
                    .replace_existing(true),
            )
            .await?;
    }
    Ok(())
}
