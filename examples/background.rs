//! Background mode: a synchronous program (no async main) whose jobs run on the
//! scheduler's own threads.
//!
//! ```sh
//! cargo run --example background
//! ```

use std::time::Duration;

use sundial::prelude::*;

fn main() -> Result<()> {
    let scheduler = Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .executor("blocking", ThreadPoolExecutor::new(2))
        .blocking_task("heartbeat", |ctx: JobContext, _: ()| {
            println!("heartbeat at {}", ctx.started_at());
            Ok::<_, std::io::Error>(())
        })
        .build()?;
    let bg = BackgroundScheduler::start(scheduler)?;
    bg.add_job(JobSpec::new("heartbeat", IntervalTrigger::builder().seconds(1).build()?).id("hb"))?;

    // The application's own synchronous work.
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(1100));
        println!("main thread still working ({i})");
    }
    for job in bg.get_jobs()? {
        println!("{job}");
    }
    bg.shutdown(true)
}
