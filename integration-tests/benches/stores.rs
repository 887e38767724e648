//! Persistent stores: add 10,000 jobs, and fire 10,000 due one-off jobs with
//! one and with two schedulers sharing the store (`SUNDIAL_BENCH_SCHEDULERS`,
//! e.g. `1,2,4`, sets the counts).
//!
//! ```sh
//! cargo bench -p sundial-integration-tests --bench stores [-- sqlite|postgres|mysql|redis|mongo]
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sundial::prelude::*;
use sundial_integration_tests::support::{
    cleanup_store, mongo_url, mysql_url, postgres_url, redis_url, Namespace,
};

/// How many schedulers share the store in each fire-burst
/// (`SUNDIAL_BENCH_SCHEDULERS`, comma-separated, default `1,2`).
fn scheduler_counts() -> Vec<usize> {
    std::env::var("SUNDIAL_BENCH_SCHEDULERS")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|c| c.trim().parse().ok())
                .filter(|c| *c > 0)
                .collect()
        })
        .filter(|c: &Vec<usize>| !c.is_empty())
        .unwrap_or_else(|| vec![1, 2])
}

/// Jobs per measurement (`SUNDIAL_BENCH_JOBS`, default 10,000).
fn n() -> usize {
    std::env::var("SUNDIAL_BENCH_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

fn url_for(kind: &str, ns: &Namespace) -> String {
    match kind {
        "sqlite" => {
            let dir = std::env::temp_dir().join("sundial-bench");
            let _ = std::fs::create_dir_all(&dir);
            format!("sqlite://{}", dir.join(format!("{}.db", ns.0)).display())
        }
        "postgres" => format!("{}#table={}", postgres_url(), ns.0),
        "redis" => format!("{}#prefix={}", redis_url(), ns.0),
        "mongo" => format!("{}#table={}", mongo_url(), ns.0),
        _ => format!("{}#table={}", mysql_url(), ns.0),
    }
}

fn scheduler(url: &str, count: Arc<AtomicUsize>) -> Result<Scheduler> {
    Scheduler::builder()
        .jobstore_arc("default", store_from_url(url)?)
        .executor("default", AsyncExecutor::new())
        .max_idle_sleep(Duration::from_millis(50))
        .task("noop", move |_ctx: JobContext, _: ()| {
            count.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, std::io::Error>(()) }
        })
        .build()
}

fn specs(at: chrono::DateTime<Utc>) -> Vec<JobSpec> {
    (0..n())
        .map(|i| {
            JobSpec::new("noop", DateTrigger::at(at))
                .id(format!("job-{i:05}"))
                .misfire_grace_time(None)
        })
        .collect()
}

async fn run(kind: &str) -> Result<()> {
    // Add rate.
    let ns = Namespace::new("benchadd");
    let url = url_for(kind, &ns);
    let s = scheduler(&url, Arc::default())?;
    s.start_paused().await?;
    let t = Instant::now();
    s.add_jobs(specs(Utc::now() + chrono::Duration::days(1)))
        .await?;
    let add = t.elapsed();
    s.shutdown(false).await?;
    cleanup(kind, &ns).await?;
    println!(
        "{kind:<9} add {} jobs (add_jobs): {:>8.0} jobs/s",
        n(),
        n() as f64 / add.as_secs_f64()
    );

    for schedulers in scheduler_counts() {
        let ns = Namespace::new("benchfire");
        let url = url_for(kind, &ns);
        let count = Arc::new(AtomicUsize::new(0));
        let seed = scheduler(&url, Arc::clone(&count))?;
        seed.start_paused().await?;
        seed.add_jobs(specs(Utc::now())).await?;
        let mut all = vec![seed];
        for _ in 1..schedulers {
            let other = scheduler(&url, Arc::clone(&count))?;
            other.start_paused().await?;
            all.push(other);
        }
        let t = Instant::now();
        for s in &all {
            s.resume()?;
        }
        while count.load(Ordering::Relaxed) < n() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let e = t.elapsed();
        println!(
            "{kind:<9} fire {} due jobs, {schedulers} scheduler(s): {:.3} s = {:>8.0} executions/s",
            n(),
            e.as_secs_f64(),
            n() as f64 / e.as_secs_f64()
        );
        for s in all {
            s.shutdown(true).await?;
        }
        cleanup(kind, &ns).await?;
    }
    Ok(())
}

/// Deletes everything a measurement left in the store (jobs, runs, nodes), so
/// that leftovers of one run do not slow the next.
async fn cleanup(kind: &str, ns: &Namespace) -> Result<()> {
    if kind == "sqlite" {
        let path = std::env::temp_dir()
            .join("sundial-bench")
            .join(format!("{}.db", ns.0));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        return Ok(());
    }
    cleanup_store(kind, ns)
        .await
        .map_err(|e| Error::Config(format!("cleaning up {kind} {}: {e}", ns.0)))
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Config(e.to_string()))?;
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    for kind in ["sqlite", "postgres", "mysql", "redis", "mongo"] {
        if only.as_deref().is_none_or(|o| o == kind) {
            rt.block_on(run(kind))?;
        }
    }
    Ok(())
}
