//! A report every weekday at 09:00 Shanghai time, on the thread pool.
//! Prints the job listing and the next fire times, runs the report once now,
//! and exits.
//!
//! ```sh
//! cargo run --example daily_report
//! ```

use std::time::Duration;

use sundial::chrono::Utc;
use sundial::prelude::*;

#[tokio::main]
async fn main() -> Result<()> {
    let scheduler = Scheduler::builder()
        .timezone("Asia/Shanghai")?
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .executor("blocking", ThreadPoolExecutor::new(2))
        .blocking_task("daily_report", |ctx: JobContext, team: String| {
            println!(
                "building the {team} report for {}",
                ctx.scheduled_run_time()
            );
            std::thread::sleep(Duration::from_millis(200)); // the slow, blocking part
            println!("report done");
            Ok::<_, std::io::Error>(())
        })
        .build()?;
    scheduler.start().await?;

    let trigger = CronTrigger::from_crontab("0 9 * * 1-5")?;
    let job = scheduler
        .add_job(
            JobSpec::new("daily_report", trigger.clone())
                .id("daily_report")
                .args("sales")
                .replace_existing(true),
        )
        .await?;
    println!("{}", scheduler.job_listing(None).await?);

    let tz = sundial::chrono_tz::Asia::Shanghai;
    let trigger = trigger.with_tz(tz);
    let mut previous = None;
    let now = Utc::now();
    println!("next runs:");
    for _ in 0..5 {
        let Some(t) = trigger.next_fire_time(previous, now)? else {
            break;
        };
        println!("  {}", t.with_timezone(&tz).to_rfc3339());
        previous = Some(t);
    }

    scheduler.run_job_now(job.id().clone(), None).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    scheduler.shutdown(true).await?;
    Ok(())
}
