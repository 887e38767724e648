//! Change notices across processes: a job added through one store handle (a
//! client-only scheduler, as a web worker would be) and due soon is run by a
//! scheduler on another handle at once, not at that scheduler's next poll.
//! PostgreSQL (`LISTEN/NOTIFY`), Redis (pub/sub) and MongoDB on a replica set
//! (change streams) have a channel; the runner here polls only once a minute,
//! so a run within seconds proves the notice. The MongoDB test server on
//! `SUNDIAL_TEST_MONGO_RS_URL` (default `mongodb://127.0.0.1:27019/sundial_test`,
//! a SecantusDB advertising a one-node replica set) is started by
//! `scripts/services.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sundial::prelude::*;
use sundial::JobStore;
use sundial_integration_tests::support::{postgres_url, redis_url, Namespace};

fn trunc(t: DateTime<Utc>) -> DateTime<Utc> {
    sundial::job::trunc_micros(t)
}

fn mongo_rs_url() -> String {
    std::env::var("SUNDIAL_TEST_MONGO_RS_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27019/sundial_test".into())
}

type Starts = Arc<Mutex<Vec<(String, DateTime<Utc>, DateTime<Utc>)>>>;

/// A runner on one handle (polling at most every `idle`, or at its default)
/// and a client on another; the client adds five jobs one after another, each
/// due 100 ms later, and waits up to `wait` for the runner to start it.
/// A started runner on one store handle (noting each start of task `note`,
/// polling at most every `idle` or at its default) and a started client on
/// another.
async fn runner_and_client(
    open: &impl Fn() -> Arc<dyn JobStore>,
    idle: Option<Duration>,
) -> (Scheduler, Scheduler, Starts) {
    let starts: Starts = Arc::default();
    let seen = Arc::clone(&starts);
    let mut builder = Scheduler::builder()
        .jobstore_arc("default", open())
        .executor("default", AsyncExecutor::new())
        .task("note", move |ctx: JobContext, _: ()| {
            seen.lock().unwrap().push((
                ctx.job_id().to_string(),
                ctx.scheduled_run_time(),
                Utc::now(),
            ));
            async { Ok::<_, sundial::BoxError>(()) }
        });
    if let Some(idle) = idle {
        builder = builder.max_idle_sleep(idle);
    }
    let runner = builder.build().unwrap();
    runner.start().await.unwrap();
    let client = Scheduler::builder()
        .jobstore_arc("default", open())
        .build_client()
        .unwrap();
    client.start().await.unwrap();
    (runner, client, starts)
}

/// Returns how late each started, in milliseconds.
async fn run_jobs_added_elsewhere(
    open: impl Fn() -> Arc<dyn JobStore>,
    idle: Option<Duration>,
    wait: Duration,
) -> Vec<i64> {
    let (runner, client, starts) = runner_and_client(&open, idle).await;
    // Let the runner subscribe and fall asleep on an empty store.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..5 {
        let at = Utc::now() + chrono::Duration::milliseconds(100);
        client
            .add_job(
                JobSpec::new("note", DateTrigger::at(at))
                    .id(format!("j{i}"))
                    .misfire_grace_time(None),
            )
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + wait;
        while starts.lock().unwrap().len() <= i {
            assert!(
                std::time::Instant::now() < deadline,
                "job j{i}, added elsewhere, was not run within {wait:?}: the runner did not hear of it"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    client.shutdown(false).await.unwrap();
    runner.shutdown(true).await.unwrap();
    let starts = starts.lock().unwrap();
    assert_eq!(starts.len(), 5);
    starts
        .iter()
        .map(|(_, scheduled, started)| (*started - *scheduled).num_milliseconds())
        .collect()
}

async fn woken_by_another_handle(open: impl Fn() -> Arc<dyn JobStore>) {
    let lateness =
        run_jobs_added_elsewhere(open, Some(Duration::from_secs(60)), Duration::from_secs(10))
            .await;
    eprintln!("lateness of jobs added through another handle (ms): {lateness:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notices_wake_other_schedulers() {
    let ns = Namespace::new("wakeups");
    let url = postgres_url();
    let open = || -> Arc<dyn JobStore> {
        Arc::new(
            SqlJobStore::from_url(&url)
                .unwrap()
                .with_table(&ns.0)
                .unwrap(),
        )
    };
    woken_by_another_handle(open).await;
    let s = SqlJobStore::from_url(&url)
        .unwrap()
        .with_table(&ns.0)
        .unwrap();
    s.drop_table().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_notices_wake_other_schedulers() {
    let ns = Namespace::new("wakeups");
    let url = redis_url();
    let open = || -> Arc<dyn JobStore> {
        Arc::new(RedisJobStore::from_url(&url).unwrap().with_prefix(&ns.0))
    };
    woken_by_another_handle(open).await;
    let s = RedisJobStore::from_url(&url).unwrap().with_prefix(&ns.0);
    s.start().await.unwrap();
    s.purge().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_change_streams_wake_other_schedulers() {
    let ns = Namespace::new("wakeups");
    let url = mongo_rs_url();
    let open =
        || -> Arc<dyn JobStore> { Arc::new(MongoJobStore::from_url(&url).with_collection(&ns.0)) };
    let probe = open();
    probe.start().await.unwrap();
    assert!(
        probe.watch_changes().await.unwrap().is_some(),
        "the replica-set test server at {url} offers no change stream"
    );
    woken_by_another_handle(open).await;
    MongoJobStore::from_url(&url)
        .with_collection(&ns.0)
        .drop_collection()
        .await
        .unwrap();
}

/// Without change notices (MariaDB), a scheduler left at its defaults looks
/// again every second: jobs added elsewhere start at most about a second late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_without_notices_is_polled_every_second_by_default() {
    let ns = Namespace::new("polled");
    let url = sundial_integration_tests::support::mysql_url();
    let open = || -> Arc<dyn JobStore> {
        Arc::new(
            SqlJobStore::from_url(&url)
                .unwrap()
                .with_table(&ns.0)
                .unwrap(),
        )
    };
    let late = run_jobs_added_elsewhere(open, None, Duration::from_secs(15)).await;
    eprintln!("lateness on a polled store (ms): {late:?}");
    // Polled every second: none waits for the old 5 s poll.
    assert!(late.iter().all(|ms| *ms < 2500), "{late:?}");
    SqlJobStore::from_url(&url)
        .unwrap()
        .with_table(&ns.0)
        .unwrap()
        .drop_table()
        .await
        .unwrap();
}

/// A client (`sundial jobs run`, the admin API over `sundial serve`) asks the
/// runners to run a job now: the runner starts that one slot on time, within
/// the default one-second misfire grace, and the job keeps its schedule.
async fn run_requested_by_a_client(open: impl Fn() -> Arc<dyn JobStore>, idle: Option<Duration>) {
    let (runner, client, starts) = runner_and_client(&open, idle).await;
    let hourly = IntervalTrigger::every(Duration::from_secs(3600)).unwrap();
    let job = client
        .add_job(JobSpec::new("note", hourly).id("report"))
        .await
        .unwrap();
    let next = job.next_run_time().unwrap();
    // A one-off job next week and a monthly one: a run now must not use up
    // the one nor move the other.
    let next_week = trunc(Utc::now() + chrono::Duration::days(7));
    client
        .add_job(JobSpec::new("note", DateTrigger::at(next_week)).id("once"))
        .await
        .unwrap();
    let monthly = CalendarIntervalTrigger::builder()
        .months(1)
        .build()
        .unwrap();
    let month = client
        .add_job(JobSpec::new("note", monthly).id("monthly"))
        .await
        .unwrap()
        .next_run_time()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Utc::now();
    client.run_job_now("report", None).await.unwrap();
    client.run_job_now("once", None).await.unwrap();
    client.run_job_now("monthly", None).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while starts.lock().unwrap().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the requested run did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in ["report", "once", "monthly"] {
        let runs = client
            .runs(&sundial::run::RunQuery::job(id), None)
            .await
            .unwrap();
        let states: Vec<&str> = runs.iter().map(|r| r.state.as_str()).collect();
        assert_eq!(states, ["succeeded"], "{id}: {runs:?}");
    }
    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 3, "{starts:?}");
    for (id, scheduled, started) in &starts {
        let lead = (*scheduled - asked).num_milliseconds();
        assert!(
            (1000..=3500).contains(&lead),
            "{id}: slot {lead} ms after the request"
        );
        let late = (*started - *scheduled).num_milliseconds();
        assert!(late < 1000, "{id}: started {late} ms late");
    }
    for (id, at) in [("report", next), ("once", next_week), ("monthly", month)] {
        let kept = client.get_job(id, None).await.unwrap();
        let kept = kept.unwrap_or_else(|| panic!("{id} was removed by the requested run"));
        assert_eq!(kept.next_run_time(), Some(at), "{id}: the schedule is kept");
    }
    // A paused job is not run behind the user's back.
    client.pause_job("report", None).await.unwrap();
    let e = client.run_job_now("report", None).await.unwrap_err();
    assert!(e.to_string().contains("paused"), "{e}");
    client.shutdown(false).await.unwrap();
    runner.shutdown(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_run_request_runs_once_on_time_on_postgres() {
    let ns = Namespace::new("runreq");
    let url = postgres_url();
    let open = || -> Arc<dyn JobStore> {
        Arc::new(
            SqlJobStore::from_url(&url)
                .unwrap()
                .with_table(&ns.0)
                .unwrap(),
        )
    };
    run_requested_by_a_client(open, Some(Duration::from_secs(60))).await;
    let s = SqlJobStore::from_url(&url)
        .unwrap()
        .with_table(&ns.0)
        .unwrap();
    s.drop_table().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_run_request_runs_once_on_time_on_polled_mariadb() {
    let ns = Namespace::new("runreq");
    let url = sundial_integration_tests::support::mysql_url();
    let open = || -> Arc<dyn JobStore> {
        Arc::new(
            SqlJobStore::from_url(&url)
                .unwrap()
                .with_table(&ns.0)
                .unwrap(),
        )
    };
    run_requested_by_a_client(open, None).await;
    SqlJobStore::from_url(&url)
        .unwrap()
        .with_table(&ns.0)
        .unwrap()
        .drop_table()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_run_request_runs_once_on_time_on_redis() {
    let ns = Namespace::new("runreq");
    let url = redis_url();
    let open = || -> Arc<dyn JobStore> {
        Arc::new(RedisJobStore::from_url(&url).unwrap().with_prefix(&ns.0))
    };
    run_requested_by_a_client(open, Some(Duration::from_secs(60))).await;
    let s = RedisJobStore::from_url(&url).unwrap().with_prefix(&ns.0);
    s.start().await.unwrap();
    s.purge().await.unwrap();
}
