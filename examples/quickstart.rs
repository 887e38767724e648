//! Quickstart: a cron job, an interval job and a one-off job in a SQLite file
//! (`jobs.db`), with a listener that prints every event. Runs for about 12
//! seconds; run it again and the jobs are still there, on the schedule they
//! had: runs that fell due while the program was stopped are caught up once at
//! start (coalesced, no grace limit) instead of being reported missed.
//!
//! ```sh
//! cargo run --example quickstart
//! ```

use std::time::Duration;

use sundial::chrono::Utc;
use sundial::prelude::*;

#[derive(Debug, Serialize, Deserialize)]
struct Greeting {
    to: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let scheduler = Scheduler::builder()
        .timezone("Europe/London")?
        .jobstore("default", SqlJobStore::sqlite("jobs.db"))
        // Catch up once after downtime rather than report each missed run.
        .job_defaults(JobDefaults {
            coalesce: true,
            misfire_grace_time: None,
            ..JobDefaults::default()
        })
        .executor("default", AsyncExecutor::new())
        .executor("blocking", ThreadPoolExecutor::new(2))
        .task("greet", |ctx: JobContext, args: Greeting| async move {
            println!(
                "  [{}] hello, {} (scheduled {})",
                ctx.job_id(),
                args.to,
                ctx.scheduled_run_time()
            );
            Ok::<_, std::io::Error>(())
        })
        .blocking_task("tick", |ctx: JobContext, _: ()| {
            println!(
                "  [{}] tick on {:?}",
                ctx.job_id(),
                std::thread::current().name().unwrap_or("?")
            );
            Ok::<_, std::io::Error>(())
        })
        .build()?;

    scheduler.add_listener(EventMask::ALL, |event: &Event| println!("event: {event:?}"));
    scheduler.start().await?;

    // Every 5 seconds (6-field crontab: seconds first).
    scheduler
        .add_job(
            JobSpec::new("greet", CronTrigger::from_crontab("*/5 * * * * *")?)
                .id("cron-greeting")
                .replace_existing(true)
                .args(Greeting { to: "cron".into() }),
        )
        .await?;
    // Every 3 seconds, on the thread pool.
    scheduler
        .add_job(
            JobSpec::new("tick", IntervalTrigger::builder().seconds(3).build()?)
                .id("ticker")
                .replace_existing(true),
        )
        .await?;
    // Once, 4 seconds from now.
    let when = Utc::now() + sundial::chrono::Duration::seconds(4);
    scheduler
        .add_job(
            JobSpec::new("greet", DateTrigger::at(when))
                .id("one-off")
                .replace_existing(true)
                .args(Greeting {
                    to: "one-off".into(),
                }),
        )
        .await?;

    println!("{}", scheduler.job_listing(None).await?);
    tokio::time::sleep(Duration::from_secs(12)).await;
    println!("{}", scheduler.job_listing(None).await?);
    scheduler.shutdown(true).await?;
    Ok(())
}
