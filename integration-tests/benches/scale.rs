//! A store holding many jobs: adds `SUNDIAL_SCALE_JOBS` (default 1,000,000)
//! one-off jobs due over the coming days in batches, then times the idle poll
//! (the earliest due time, what a sleeping scheduler asks) and a fire-burst of
//! 10,000 due jobs among them. On the memory store it also reports the
//! resident memory the idle jobs take.
//!
//! ```sh
//! cargo bench -p sundial-integration-tests --bench scale [-- memory|postgres|mysql|redis]
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sundial::prelude::*;
use sundial::JobStore;
use sundial_integration_tests::support::{
    cleanup_store, mysql_url, postgres_url, redis_url, rss_bytes, Namespace,
};

/// Idle jobs in the store (`SUNDIAL_SCALE_JOBS`).
fn idle_jobs() -> usize {
    std::env::var("SUNDIAL_SCALE_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

/// Due jobs fired among them.
const DUE: usize = 10_000;

/// Jobs per `add_jobs` call.
const BATCH: usize = 10_000;

fn store_for(kind: &str, ns: &Namespace) -> Result<Arc<dyn JobStore>> {
    Ok(match kind {
        "memory" => Arc::new(MemoryJobStore::new()),
        "postgres" => store_from_url(&format!("{}#table={}", postgres_url(), ns.0))?,
        "redis" => store_from_url(&format!("{}#prefix={}", redis_url(), ns.0))?,
        _ => store_from_url(&format!("{}#table={}", mysql_url(), ns.0))?,
    })
}

fn specs(from: usize, count: usize, at: impl Fn(usize) -> chrono::DateTime<Utc>) -> Vec<JobSpec> {
    (from..from + count)
        .map(|i| {
            JobSpec::new("noop", DateTrigger::at(at(i)))
                .id(format!("job-{i:07}"))
                .misfire_grace_time(None)
        })
        .collect()
}

async fn run(kind: &str) -> Result<()> {
    let ns = Namespace::new("benchscale");
    let store = store_for(kind, &ns)?;
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    let s = Scheduler::builder()
        .jobstore_arc("default", Arc::clone(&store))
        .executor("default", AsyncExecutor::new())
        .max_idle_sleep(Duration::from_millis(50))
        .task("noop", move |_ctx: JobContext, _: ()| {
            counter.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, std::io::Error>(()) }
        })
        .build()?;
    s.start_paused().await?;
    let rss_empty = rss_bytes();

    // Idle jobs, one a second from tomorrow on; the add rate of the first and
    // of the last tenth shows whether adding slows as the store fills.
    let n = idle_jobs();
    let tomorrow = Utc::now() + chrono::Duration::days(1);
    let tenth = (n / 10).max(1);
    let (mut first, mut last) = (Duration::ZERO, Duration::ZERO);
    let began = Instant::now();
    let mut added = 0;
    while added < n {
        let k = BATCH.min(n - added);
        let batch = specs(added, k, |i| {
            tomorrow + chrono::Duration::seconds(i64::try_from(i).unwrap_or(0))
        });
        let t = Instant::now();
        s.add_jobs(batch).await?;
        let took = t.elapsed();
        if added < tenth {
            first += took;
        }
        if added >= n - tenth {
            last += took;
        }
        added += k;
    }
    let total = began.elapsed();
    let rate = |jobs: usize, d: Duration| jobs as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "{kind:<9} add {n} idle jobs: {:.1} s = {:>8.0} jobs/s (first tenth {:>8.0}/s, last tenth {:>8.0}/s)",
        total.as_secs_f64(),
        rate(n, total),
        rate(tenth, first),
        rate(tenth, last)
    );
    if kind == "memory" {
        let rss = rss_bytes().saturating_sub(rss_empty);
        println!(
            "{kind:<9} resident memory of {n} idle jobs: {:.0} MB = {} bytes/job",
            rss as f64 / 1e6,
            rss / n as u64
        );
    }

    // The idle poll, as a sleeping scheduler asks it.
    let mut polls = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        let next = store.get_next_run_time(&[]).await?;
        polls.push(t.elapsed());
        assert!(next.is_some(), "the store has jobs");
    }
    polls.sort();
    println!(
        "{kind:<9} idle poll over {n} jobs: median {:.3} ms, p99 {:.3} ms",
        polls[polls.len() / 2].as_secs_f64() * 1e3,
        polls[polls.len() * 99 / 100].as_secs_f64() * 1e3
    );

    // A fire-burst among them.
    let now = Utc::now();
    s.add_jobs(specs(n, DUE, |_| now)).await?;
    let t = Instant::now();
    s.resume()?;
    while count.load(Ordering::Relaxed) < DUE {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let e = t.elapsed();
    println!(
        "{kind:<9} fire {DUE} due jobs among {n}: {:.3} s = {:>8.0} executions/s",
        e.as_secs_f64(),
        rate(DUE, e)
    );
    s.shutdown(true).await?;

    cleanup_store(kind, &ns)
        .await
        .map_err(|e| Error::Config(format!("cleaning up {kind} {}: {e}", ns.0)))?;
    Ok(())
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Config(e.to_string()))?;
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    for kind in ["memory", "postgres", "mysql", "redis"] {
        if only.as_deref().is_none_or(|o| o == kind) {
            rt.block_on(run(kind))?;
        }
    }
    Ok(())
}
