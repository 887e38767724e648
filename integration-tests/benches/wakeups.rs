//! Cross-process wake-ups: a job added through one store handle (a client-only
//! scheduler, as a web worker) and due 100 ms later, run by a scheduler on
//! another handle. Prints the start lateness (start minus scheduled time).
//!
//! ```sh
//! cargo bench -p sundial-integration-tests --bench wakeups [-- postgres|redis|mysql]
//! ```
//!
//! PostgreSQL and Redis carry change notices; MySQL/MariaDB is polled
//! (`max_idle_sleep`, 5 s by default), shown for comparison with fewer jobs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sundial::prelude::*;
use sundial::JobStore;
use sundial_integration_tests::support::{mysql_url, postgres_url, redis_url, Namespace};

/// (scheduled, started) of each run.
type Starts = Arc<Mutex<Vec<(DateTime<Utc>, DateTime<Utc>)>>>;

fn open(kind: &str, ns: &Namespace) -> Arc<dyn JobStore> {
    let url = match kind {
        "postgres" => format!("{}#table={}", postgres_url(), ns.0),
        "redis" => format!("{}#prefix={}", redis_url(), ns.0),
        _ => format!("{}#table={}", mysql_url(), ns.0),
    };
    store_from_url(&url).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

async fn measure(kind: &str, jobs: usize) {
    let ns = Namespace::new("wakebench");
    let starts: Starts = Arc::default();
    let seen = Arc::clone(&starts);
    let runner = Scheduler::builder()
        .jobstore_arc("default", open(kind, &ns))
        .executor("default", AsyncExecutor::new())
        .task("note", move |ctx: JobContext, _: ()| {
            if let Ok(mut s) = seen.lock() {
                s.push((ctx.scheduled_run_time(), Utc::now()));
            }
            async { Ok::<_, std::io::Error>(()) }
        })
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    runner.start().await.unwrap_or_else(|e| panic!("{e}"));
    let client = Scheduler::builder()
        .jobstore_arc("default", open(kind, &ns))
        .build_client()
        .unwrap_or_else(|e| panic!("{e}"));
    client.start().await.unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SUNDIAL_BENCH_LOCAL=1: the runner adds the jobs itself (no notice needed),
    // which separates the run path's lateness from the notice's.
    let local = std::env::var_os("SUNDIAL_BENCH_LOCAL").is_some();
    let adder = if local { &runner } else { &client };
    for i in 0..jobs {
        let at = Utc::now() + chrono::Duration::milliseconds(100);
        adder
            .add_job(
                JobSpec::new("note", DateTrigger::at(at))
                    .id(format!("w{i}"))
                    .misfire_grace_time(None),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        while starts.lock().map(|s| s.len()).unwrap_or(0) <= i {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    client.shutdown(false).await.ok();
    runner.shutdown(true).await.ok();
    cleanup(kind, &ns).await;
    let mut late: Vec<f64> = starts
        .lock()
        .map(|s| {
            s.iter()
                .map(|(sched, start)| {
                    (*start - *sched).num_microseconds().unwrap_or(0) as f64 / 1000.0
                })
                .collect()
        })
        .unwrap_or_default();
    late.sort_by(f64::total_cmp);
    let pct = |p: f64| late[((late.len() as f64 * p).ceil() as usize).clamp(1, late.len()) - 1];
    let how = if local {
        "same process"
    } else {
        "other handle"
    };
    println!(
        "{kind:<9} {how}  jobs {jobs:>4}  lateness ms: p50 {:>7.2}  p99 {:>7.2}  max {:>7.2}",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
}

/// The notice alone: from another handle's `add_job` returning to the
/// watching handle's stream yielding.
async fn notice_only(kind: &str, n: usize) {
    use futures::StreamExt as _;
    let ns = Namespace::new("wakebench");
    let writer = open(kind, &ns);
    let watcher = open(kind, &ns);
    writer.start().await.unwrap_or_else(|e| panic!("{e}"));
    watcher.start().await.unwrap_or_else(|e| panic!("{e}"));
    let Some(mut notices) = watcher
        .watch_changes()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    else {
        println!("{kind:<9} has no change notices");
        return;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let rec = sundial_integration_tests::conformance::record(
            &format!("n{i}"),
            "note",
            serde_json::json!({"type": "date", "run_date": "2030-01-01T00:00:00Z"}),
            serde_json::Value::Null,
            Some(Utc::now() + chrono::Duration::days(1)),
        );
        writer.add_job(&rec).await.unwrap_or_else(|e| panic!("{e}"));
        let t = std::time::Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(5), notices.next()).await;
        took.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    cleanup(kind, &ns).await;
    took.sort_by(f64::total_cmp);
    println!(
        "{kind:<9} notice only   n {n:>4}  ms: p50 {:>7.2}  p99 {:>7.2}  max {:>7.2}",
        took[n / 2],
        took[(n * 99 / 100).min(n - 1)],
        took[n - 1]
    );
}

/// Drops what a measurement stored.
async fn cleanup(kind: &str, ns: &Namespace) {
    if kind == "redis" {
        if let Ok(s) = RedisJobStore::from_url(&redis_url()) {
            let s = s.with_prefix(&ns.0);
            if s.start().await.is_ok() {
                let _ = s.purge().await;
            }
        }
        return;
    }
    let url = if kind == "postgres" {
        postgres_url()
    } else {
        mysql_url()
    };
    if let Ok(Ok(s)) = SqlJobStore::from_url(&url).map(|s| s.with_table(&ns.0)) {
        let _ = s.drop_table().await;
    }
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    for (kind, jobs) in [("postgres", 200), ("redis", 200), ("mysql", 10)] {
        if filter.is_empty() || filter.iter().any(|f| f == kind) {
            if kind != "mysql" {
                rt.block_on(notice_only(kind, jobs));
            }
            rt.block_on(measure(kind, jobs));
        }
    }
}
