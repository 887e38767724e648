//! Blocking mode: the scheduler runs on the calling thread until shut down, for
//! a process whose only job is scheduling. Here a listener shuts it down after
//! three runs.
//!
//! ```sh
//! cargo run --example blocking
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

use sundial::prelude::*;

fn main() -> Result<()> {
    let scheduler = Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .task("work", |ctx: JobContext, _: ()| async move {
            println!("working at {}", ctx.started_at());
            Ok::<_, std::io::Error>(())
        })
        .build()?;

    // Jobs added before start are stored when the scheduler starts.
    let pending = scheduler.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(e.to_string()))?;
    rt.block_on(
        pending.add_job(
            JobSpec::new("work", IntervalTrigger::builder().seconds(1).build()?).id("work"),
        ),
    )?;
    drop(rt);

    let runs = AtomicUsize::new(0);
    let handle = scheduler.clone();
    scheduler.add_listener(EventMask::JOB_EXECUTED, move |_: &Event| {
        if runs.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
            println!("three runs done, shutting down");
            handle.request_shutdown();
        }
    });
    scheduler.run_blocking()?;
    println!("scheduler stopped");
    Ok(())
}
