//! Built-in metrics: a scheduler's runs, lateness, store errors and jobs,
//! recorded through the [`metrics`](https://docs.rs/metrics) crate.
//!
//! [`record`] feeds whatever global `metrics` recorder the application
//! installed; [`install_prometheus`] installs a Prometheus one and returns the
//! handle whose `render()` the admin router serves on `GET /metrics`:
//!
//! ```no_run
//! # async fn demo(scheduler: sundial::Scheduler) -> sundial::Result<()> {
//! let prometheus = sundial::metrics::install_prometheus()?;
//! sundial::metrics::record(&scheduler, sundial::metrics::Labels::PerJob);
//! # #[cfg(feature = "admin")]
//! let admin = sundial::admin::router(
//!     scheduler.clone(),
//!     sundial::admin::AdminConfig::new()
//!         .admin_token("…")
//!         .metrics(move || prometheus.render()),
//! )?;
//! # Ok(()) }
//! ```
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `sundial_runs_total` | counter | `job`, `outcome` (succeeded, failed, timed_out, interrupted, missed, skipped) |
//! | `sundial_run_duration_seconds` | histogram | `job`, `outcome` |
//! | `sundial_run_lateness_seconds` | histogram | `job`: start minus scheduled time, as the listener sees the start |
//! | `sundial_missed_total` | counter | `job` |
//! | `sundial_retries_total` | counter | `job` |
//! | `sundial_running_runs` | gauge | runs started and not yet finished on this process |
//! | `sundial_store_errors_total` | counter | `store` |
//! | `sundial_leases_lost_total` | counter | `store`: claims that lapsed before the job was handed back |
//! | `sundial_jobs` | gauge | `store`, `state` (scheduled, paused): counted by each store (without reading the jobs; a stored job that cannot be read counts by its next run time) a second after this scheduler adds, changes or removes jobs, and every minute |
//!
//! With [`Labels::Aggregate`] the `job` label is left out, for applications
//! with many short-lived jobs (one series per job id would grow without end).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sundial_core::event::{Event, EventMask, ListenerId};
use sundial_core::run::RunId;
use sundial_core::scheduler::Scheduler;
use sundial_core::{Error, Result};

/// Whether series carry the job id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Labels {
    /// A `job` label with the job id on run metrics.
    PerJob,
    /// No `job` label: one series per outcome.
    Aggregate,
}

/// How often `sundial_jobs` is counted again without a change seen.
const JOBS_REFRESH: Duration = Duration::from_secs(60);
/// The shortest time between two counts of `sundial_jobs`.
const JOBS_RECOUNT_GAP: Duration = Duration::from_secs(1);

/// Bucket bounds (seconds) for durations and lateness.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0, 3600.0,
];

/// Installs a Prometheus recorder as the process's global `metrics` recorder
/// (with histogram buckets for Sundial's metrics) and returns its handle.
///
/// # Errors
/// [`Error::Config`] when a global recorder is already installed.
pub fn install_prometheus() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Prefix("sundial_run_".into()), BUCKETS)
        .map_err(|e| Error::Config(format!("metrics buckets: {e}")))?
        .install_recorder()
        .map_err(|e| Error::Config(format!("cannot install the Prometheus recorder: {e}")))?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("sundial-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        })
        .map_err(|e| Error::Config(format!("cannot start the metrics upkeep thread: {e}")))?;
    Ok(handle)
}

/// Records `scheduler`'s events as metrics (see the module docs) and, when
/// called inside a tokio runtime, keeps `sundial_jobs` counted until the
/// scheduler shuts down. Returns the listener, for [`Scheduler::remove_listener`].
pub fn record(scheduler: &Scheduler, labels: Labels) -> ListenerId {
    let runs: Arc<Mutex<HashMap<RunId, Instant>>> = Arc::default();
    let job = move |id: &sundial_core::job::JobId| match labels {
        Labels::PerJob => vec![("job", id.to_string())],
        Labels::Aggregate => Vec::new(),
    };
    // Runs started on this process, so that every outcome has a duration.
    let start = {
        let runs = Arc::clone(&runs);
        move |run: Option<&RunId>| {
            if let Some(run) = run {
                let mut m = runs.lock().unwrap_or_else(|p| p.into_inner());
                m.insert(run.clone(), Instant::now());
                gauge!("sundial_running_runs").set(m.len() as f64);
            }
        }
    };
    let finish = move |run: Option<&RunId>| {
        let mut m = runs.lock().unwrap_or_else(|p| p.into_inner());
        let began = run.and_then(|r| m.remove(r));
        gauge!("sundial_running_runs").set(m.len() as f64);
        began.map(|t| t.elapsed())
    };
    let listener = scheduler.add_listener(EventMask::ALL, move |event: &Event| {
        let outcome = |id, run: Option<&RunId>, name: &'static str, d: Option<Duration>| {
            let mut l = job(id);
            l.push(("outcome", name.to_string()));
            counter!("sundial_runs_total", &l).increment(1);
            if let Some(d) = d.or_else(|| finish(run)) {
                histogram!("sundial_run_duration_seconds", &l).record(d.as_secs_f64());
            }
        };
        match event {
            Event::JobStarted {
                job_id,
                run_id,
                scheduled_run_time,
                ..
            } => {
                let late = (chrono::Utc::now() - *scheduled_run_time)
                    .to_std()
                    .unwrap_or_default();
                histogram!("sundial_run_lateness_seconds", &job(job_id)).record(late.as_secs_f64());
                start(run_id.as_ref());
            }
            Event::JobExecuted {
                job_id,
                run_id,
                duration,
                ..
            } => {
                finish(run_id.as_ref());
                outcome(job_id, run_id.as_ref(), "succeeded", Some(*duration))
            }
            // Errors outside a run (a job this node cannot run, a trigger
            // that fails) are not runs.
            Event::JobError {
                job_id,
                run_id: Some(run_id),
                ..
            } => outcome(job_id, Some(run_id), "failed", None),
            Event::JobTimeout { job_id, run_id, .. } => {
                outcome(job_id, run_id.as_ref(), "timed_out", None)
            }
            Event::JobInterrupted { job_id, run_id, .. } => {
                outcome(job_id, Some(run_id), "interrupted", None)
            }
            Event::JobMissed { job_id, .. } => {
                counter!("sundial_missed_total", &job(job_id)).increment(1);
                outcome(job_id, None, "missed", None)
            }
            Event::JobMaxInstances {
                job_id, run_times, ..
            } => {
                let mut l = job(job_id);
                l.push(("outcome", "skipped".to_string()));
                counter!("sundial_runs_total", &l).increment(run_times.len() as u64);
            }
            Event::JobRetry { job_id, .. } => {
                counter!("sundial_retries_total", &job(job_id)).increment(1)
            }
            Event::LeaseLost { jobstore, .. } => {
                counter!("sundial_leases_lost_total", "store" => jobstore.clone()).increment(1)
            }
            Event::StoreError { jobstore, .. } => {
                counter!("sundial_store_errors_total", "store" => jobstore.clone()).increment(1)
            }
            _ => {}
        }
    });
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let changed = Arc::new(AtomicBool::new(true));
        let mark = Arc::clone(&changed);
        let mask = EventMask::SCHEDULER_STARTED
            | EventMask::JOB_ADDED
            | EventMask::JOB_REMOVED
            | EventMask::JOB_MODIFIED
            | EventMask::ALL_JOBS_REMOVED
            | EventMask::JOBSTORE_ADDED
            | EventMask::JOBSTORE_REMOVED;
        scheduler.add_listener(mask, move |_: &Event| mark.store(true, Ordering::Relaxed));
        let s = scheduler.clone();
        rt.spawn(async move {
            let mut seen = HashSet::new();
            let mut last = Instant::now();
            let mut was_running = false;
            loop {
                tokio::time::sleep(JOBS_RECOUNT_GAP).await;
                let running = s.is_running();
                if was_running && !running {
                    return;
                }
                was_running |= running;
                if running
                    && (changed.swap(false, Ordering::Relaxed) || last.elapsed() >= JOBS_REFRESH)
                {
                    last = Instant::now();
                    count_jobs(&s, &mut seen).await;
                }
            }
        });
    }
    listener
}

/// Sets `sundial_jobs{store,state}` for both states of every store from the
/// stores' own counts (0 for a store seen before and removed since).
async fn count_jobs(s: &Scheduler, seen: &mut HashSet<(String, &'static str)>) {
    if !s.is_running() {
        return;
    }
    let Ok(per_store) = s.count_jobs(None).await else {
        return;
    };
    let mut counts: HashMap<(String, &'static str), u64> = HashMap::new();
    for (store, n) in per_store {
        counts.insert((store.clone(), "scheduled"), n.scheduled);
        counts.insert((store, "paused"), n.paused);
    }
    for key in seen.iter() {
        counts.entry(key.clone()).or_default();
    }
    for ((store, state), n) in counts {
        seen.insert((store.clone(), state));
        gauge!("sundial_jobs", "store" => store, "state" => state).set(n as f64);
    }
}
