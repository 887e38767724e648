//! Scheduler throughput and latency on the in-memory store with the async
//! executor and a no-op task.
//!
//! ```sh
//! cargo bench -p sundial-integration-tests --bench scheduler
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Timelike, Utc};
use sundial::prelude::*;
use sundial_integration_tests::support::rss_bytes;

fn noop_scheduler(count: Arc<AtomicUsize>) -> Result<Scheduler> {
    Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .task("noop", move |_ctx: JobContext, _: ()| {
            count.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, std::io::Error>(()) }
        })
        .build()
}

fn cpu_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .map(|s| {
            let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
        })
        .unwrap_or(0)
}

fn date_specs(n: usize, at: chrono::DateTime<Utc>) -> Vec<JobSpec> {
    (0..n)
        .map(|i| {
            JobSpec::new("noop", DateTrigger::at(at))
                .id(format!("job-{i}"))
                .misfire_grace_time(None)
        })
        .collect()
}

fn interval_specs(n: usize) -> Result<Vec<JobSpec>> {
    (0..n)
        .map(|i| {
            let every = IntervalTrigger::every(Duration::from_secs(3600))?;
            Ok(JobSpec::new("noop", every).id(format!("job-{i}")))
        })
        .collect()
}

/// (a): interval jobs added to a started, paused scheduler, as one batch and
/// one `add_job` at a time (as a request handler adds them).
async fn add_rate() -> Result<()> {
    for n in [10_000, 100_000] {
        let s = noop_scheduler(Arc::default())?;
        s.start_paused().await?;
        let specs = interval_specs(n)?;
        let t = Instant::now();
        s.add_jobs(specs).await?;
        let batch = t.elapsed();
        s.remove_all_jobs(None).await?;
        let specs = interval_specs(n)?;
        let t = Instant::now();
        for spec in specs {
            s.add_job(spec).await?;
        }
        let single = t.elapsed();
        println!(
            "(a) add {n} interval jobs: add_jobs {:>9.0} jobs/s   add_job {:>9.0} jobs/s",
            n as f64 / batch.as_secs_f64(),
            n as f64 / single.as_secs_f64()
        );
        s.shutdown(false).await?;
    }
    Ok(())
}

async fn fire_rate() -> Result<()> {
    let n = 100_000;
    let count = Arc::new(AtomicUsize::new(0));
    let s = noop_scheduler(Arc::clone(&count))?;
    s.start_paused().await?;
    s.add_jobs(date_specs(n, Utc::now())).await?;
    let t = Instant::now();
    s.resume()?;
    while count.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let e = t.elapsed();
    println!(
        "(b) {n} due date jobs, resume -> all executed: {:.3} s = {:>9.0} executions/s",
        e.as_secs_f64(),
        n as f64 / e.as_secs_f64()
    );
    s.shutdown(true).await
}

async fn idle_cost() -> Result<()> {
    let n = 100_000;
    let s = noop_scheduler(Arc::default())?;
    s.start().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes();
    // One `add_job` at a time with default options, as a request handler adds them.
    let tomorrow = Utc::now() + chrono::Duration::days(1);
    for i in 0..n {
        s.add_job(JobSpec::new("noop", DateTrigger::at(tomorrow)).id(format!("job-{i}")))
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_bytes();
    let ticks = cpu_ticks();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_ticks = cpu_ticks() - ticks;
    println!(
        "(c) {n} idle jobs added one by one: {:.0} bytes RSS per job; CPU over 10 s idle: {} ms",
        after.saturating_sub(before) as f64 / n as f64,
        idle_ticks * 10
    );
    s.shutdown(false).await
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn lateness_scheduler(late: Arc<Mutex<Vec<f64>>>) -> Result<Scheduler> {
    Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .task("probe", move |ctx: JobContext, _: ()| {
            let d = (Utc::now() - ctx.scheduled_run_time())
                .num_microseconds()
                .unwrap_or(0);
            if let Ok(mut l) = late.lock() {
                l.push(d as f64 / 1000.0);
            }
            async { Ok::<_, std::io::Error>(()) }
        })
        .build()
}

fn spread_specs(n: usize) -> Vec<JobSpec> {
    let base = Utc::now() + chrono::Duration::milliseconds(500);
    (0..n)
        .map(|i| {
            let at = base + chrono::Duration::microseconds((i as i64) * 10_000_000 / n as i64 + 37);
            JobSpec::new("probe", DateTrigger::at(at)).misfire_grace_time(None)
        })
        .collect()
}

fn report(mode: &str, late: &Mutex<Vec<f64>>) {
    let mut v = late.lock().map(|l| l.clone()).unwrap_or_default();
    let n = v.len();
    let p50 = percentile(&mut v, 0.5);
    let p99 = percentile(&mut v, 0.99);
    let max = percentile(&mut v, 1.0);
    println!("(d) {mode:<10} {n} runs over 10 s: lateness p50 {p50:.3} ms  p99 {p99:.3} ms  max {max:.3} ms");
}

fn lateness_background() -> Result<()> {
    let late = Arc::new(Mutex::new(Vec::new()));
    let bg = BackgroundScheduler::start(lateness_scheduler(Arc::clone(&late))?)?;
    for spec in spread_specs(200) {
        bg.add_job(spec)?;
    }
    std::thread::sleep(Duration::from_millis(11_000));
    bg.shutdown(true)?;
    report("background", &late);
    Ok(())
}

async fn lateness_async() -> Result<()> {
    let late = Arc::new(Mutex::new(Vec::new()));
    let s = lateness_scheduler(Arc::clone(&late))?;
    s.start().await?;
    s.add_jobs(spread_specs(200)).await?;
    tokio::time::sleep(Duration::from_millis(11_000)).await;
    s.shutdown(true).await?;
    report("async", &late);
    Ok(())
}

/// (e): 1,000 interval jobs every second for ten seconds, all starting on
/// the same second: how many ran, how many were missed, and how late.
async fn steady_load() -> Result<()> {
    let n = 1_000;
    let seconds = 10;
    let late = Arc::new(Mutex::new(Vec::with_capacity(n * seconds)));
    let s = lateness_scheduler(Arc::clone(&late))?;
    let missed = Arc::new(AtomicUsize::new(0));
    let m = Arc::clone(&missed);
    s.add_listener(EventMask::JOB_MISSED, move |_: &Event| {
        m.fetch_add(1, Ordering::Relaxed);
    });
    s.start().await?;
    // Every job first runs on a whole second one to two seconds away; the
    // wait ends half a second after the tenth run.
    let start = Utc::now()
        .with_nanosecond(0)
        .map_or_else(Utc::now, |t| t + chrono::Duration::seconds(2));
    let every = Duration::from_secs(1);
    let specs = (0..n)
        .map(|i| {
            let t = IntervalTrigger::builder()
                .seconds(every.as_secs())
                .start_date(start)
                .build()?;
            Ok(JobSpec::new("probe", t).id(format!("job-{i}")))
        })
        .collect::<Result<Vec<_>>>()?;
    for spec in specs {
        s.add_job(spec).await?;
    }
    let end = start + chrono::Duration::milliseconds(seconds as i64 * 1000 - 500);
    tokio::time::sleep((end - Utc::now()).to_std().unwrap_or_default()).await;
    s.shutdown(true).await?;
    let mut v = late.lock().map(|l| l.clone()).unwrap_or_default();
    let runs = v.len();
    println!(
        "(e) {n} interval jobs every 1 s for {seconds} s: {runs} runs (of {}), {} missed, lateness p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        n * seconds,
        missed.load(Ordering::Relaxed),
        percentile(&mut v, 0.5),
        percentile(&mut v, 0.99),
        percentile(&mut v, 1.0)
    );
    Ok(())
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Config(e.to_string()))?;
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let run = |k: &str| only.as_deref().is_none_or(|o| o == k);
    if run("add") {
        rt.block_on(add_rate())?;
    }
    if run("fire") {
        rt.block_on(fire_rate())?;
    }
    if run("idle") {
        // A fresh runtime so earlier allocations do not hide the growth.
        rt.block_on(idle_cost())?;
    }
    if run("lateness") {
        lateness_background()?;
        rt.block_on(lateness_async())?;
    }
    if run("steady") {
        rt.block_on(steady_load())?;
    }
    Ok(())
}
