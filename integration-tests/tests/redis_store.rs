//! Redis-specific behaviour: a corrupted job is reported and skipped, and a
//! scheduler survives its Redis server going away and coming back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use sundial::prelude::*;
use sundial::JobStore;
use sundial_integration_tests::support::{redis_url, Namespace};

type Runs = Arc<Mutex<Vec<(String, DateTime<Utc>)>>>;

fn scheduler(store: Arc<dyn JobStore>, runs: Runs) -> Scheduler {
    Scheduler::builder()
        .jobstore_arc("default", store)
        .executor("default", AsyncExecutor::new())
        .max_idle_sleep(Duration::from_millis(100))
        .store_retry_interval(Duration::from_millis(500))
        .task("record", move |ctx: JobContext, _: ()| {
            let runs = Arc::clone(&runs);
            async move {
                runs.lock()
                    .unwrap()
                    .push((ctx.job_id().to_string(), ctx.scheduled_run_time()));
                Ok::<_, std::io::Error>(())
            }
        })
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_job_is_reported_and_skipped() {
    let ns = Namespace::new("corrupt");
    let store = Arc::new(
        RedisJobStore::from_url(&redis_url())
            .unwrap()
            .with_prefix(&ns.0),
    );
    let runs: Runs = Arc::default();
    let s = scheduler(Arc::clone(&store) as Arc<dyn JobStore>, Arc::clone(&runs));
    let mut events = s.subscribe();
    s.start_paused().await.unwrap();
    let soon = Utc::now() + chrono::Duration::milliseconds(300);
    s.add_job(JobSpec::new("record", DateTrigger::at(soon)).id("broken"))
        .await
        .unwrap();
    s.add_job(JobSpec::new("record", DateTrigger::at(soon)).id("healthy"))
        .await
        .unwrap();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&store.keys()[0])
        .arg("broken")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    s.resume().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut errors = Vec::new();
    while let Some(Some(e)) = events.next().now_or_never() {
        if let Event::JobError { job_id, error, .. } = e {
            errors.push((job_id.to_string(), error));
        }
    }
    assert_eq!(runs.lock().unwrap().len(), 1, "the healthy job ran");
    assert!(
        errors
            .iter()
            .any(|(id, e)| id == "broken" && e.contains("unreadable")),
        "{errors:?}"
    );
    // The corrupted job is kept, shown apart, and can be removed.
    sundial_integration_tests::support::check_listed_unreadable(&s, "broken")
        .await
        .unwrap();
    s.shutdown(true).await.unwrap();
    store.purge().await.unwrap();
}

/// Corrupted fields that made the claim script fail (a next run time or a
/// version that is not a number, job JSON deleted) are quarantined instead:
/// the other jobs of the same claim batch run, each bad job is reported once
/// and never claimed again, and updating the job lifts the quarantine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_fields_are_quarantined_and_the_store_keeps_working() {
    let ns = Namespace::new("quarantine");
    let store = Arc::new(
        RedisJobStore::from_url(&redis_url())
            .unwrap()
            .with_prefix(&ns.0),
    );
    let runs: Runs = Arc::default();
    let s = scheduler(Arc::clone(&store) as Arc<dyn JobStore>, Arc::clone(&runs));
    let mut events = s.subscribe();
    s.start_paused().await.unwrap();
    let soon = Utc::now() + chrono::Duration::milliseconds(300);
    for id in ["a", "bad_nrt", "bad_ver", "no_json", "z"] {
        s.add_job(
            JobSpec::new(
                "record",
                IntervalTrigger::every(Duration::from_secs(3600)).unwrap(),
            )
            .id(id)
            .next_run_time(soon),
        )
        .await
        .unwrap();
    }
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let [jobs, nrt, _, ver, _] = store.keys();
    for (key, field, value) in [(&nrt, "bad_nrt", "soon"), (&ver, "bad_ver", "1.5")] {
        let _: () = redis::cmd("HSET")
            .arg(key)
            .arg(field)
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("HDEL")
        .arg(&jobs)
        .arg("no_json")
        .query_async(&mut conn)
        .await
        .unwrap();
    s.resume().unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut errors = Vec::new();
    while let Some(Some(e)) = events.next().now_or_never() {
        if let Event::JobError { job_id, error, .. } = e {
            errors.push((job_id.to_string(), error));
        }
    }
    let mut ran: Vec<String> = runs.lock().unwrap().iter().map(|r| r.0.clone()).collect();
    ran.sort();
    assert_eq!(
        ran,
        ["a", "z"],
        "the healthy jobs of the batch ran, once each"
    );
    errors.sort();
    let ids: Vec<&str> = errors.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["bad_nrt", "bad_ver", "no_json"],
        "each reported once: {errors:?}"
    );
    assert!(
        errors[0]
            .1
            .contains(r#"next run time "soon" is not an integer"#),
        "{errors:?}"
    );
    assert!(
        errors[1].1.contains(r#"version "1.5" is not an integer"#),
        "{errors:?}"
    );
    assert!(errors[2].1.contains("job JSON is missing"), "{errors:?}");
    // Listings show the quarantined jobs apart, with why; `get_job` refuses them.
    let listing = s.job_listing(None).await.unwrap();
    let mut apart: Vec<&str> = listing.unreadable().iter().map(|u| u.id.as_str()).collect();
    apart.sort();
    assert_eq!(apart, ["bad_nrt", "bad_ver", "no_json"], "{listing}");
    assert!(listing
        .unreadable()
        .iter()
        .all(|u| u.reason.starts_with("quarantined: ")));
    assert!(listing.jobs().all(|j| !j.id().as_str().starts_with("bad")));
    assert!(matches!(
        s.get_job("bad_ver", None).await,
        Err(Error::UnreadableJob { .. })
    ));
    assert!(
        store.get_next_run_time(&[]).await.unwrap().unwrap()
            > Utc::now() + chrono::Duration::minutes(50),
        "a quarantined job is still due"
    );

    // Rescheduling the job with a bad version rewrites its fields: it runs.
    s.modify_job(
        "bad_ver",
        None,
        JobChanges::new().next_run_time(Some(Utc::now())),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !runs.lock().unwrap().iter().any(|r| r.0 == "bad_ver") {
        assert!(
            std::time::Instant::now() < deadline,
            "the repaired job never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.shutdown(true).await.unwrap();
    store.start().await.unwrap();
    store.purge().await.unwrap();
}

struct Server {
    child: Child,
}

impl Server {
    fn start(port: u16, dir: &std::path::Path) -> Server {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child }
    }

    fn stop(mut self) {
        // SIGTERM: Redis flushes its append-only file and exits.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_survives_a_redis_outage() {
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let dir = std::env::temp_dir()
        .join("sundial-tests")
        .join(Namespace::new("outage").0);
    std::fs::create_dir_all(&dir).unwrap();
    let server = Server::start(port, &dir);
    let url = format!("redis://127.0.0.1:{port}/0");
    let store: Arc<dyn JobStore> = Arc::new(RedisJobStore::from_url(&url).unwrap());
    let runs: Runs = Arc::default();
    let s = scheduler(Arc::clone(&store), Arc::clone(&runs));
    let mut events = s.subscribe();
    s.start().await.unwrap();
    for i in 0..5 {
        s.add_job(
            JobSpec::new(
                "record",
                IntervalTrigger::builder().seconds(1).build().unwrap(),
            )
            .id(format!("tick{i}"))
            .misfire_grace_time(None)
            .coalesce(true),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = runs.lock().unwrap().len();
    assert!(before >= 5, "jobs ran before the outage: {before}");

    server.stop();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let during = runs.lock().unwrap().len();
    let server = Server::start(port, &dir);
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let after = runs.lock().unwrap().len();

    let mut store_errors = 0;
    while let Some(Some(e)) = events.next().now_or_never() {
        if let Event::StoreError { error, .. } = &e {
            store_errors += 1;
            eprintln!("store error: {error}");
        }
    }
    assert!(store_errors > 0, "the outage was reported");
    assert_eq!(
        s.state(),
        sundial::SchedulerState::Running,
        "the scheduler kept running"
    );
    assert!(
        after >= during + 10,
        "work resumed after the server came back: {during} -> {after}"
    );
    let jobs = s.get_jobs(None).await.unwrap();
    assert_eq!(jobs.len(), 5, "every job is still there");
    let all = runs.lock().unwrap().clone();
    let unique: HashSet<&(String, DateTime<Utc>)> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "no run executed twice");
    s.shutdown(true).await.unwrap();
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The retention sweep finds jobs with runs in `{P}:runjobs`: jobs whose run
/// index predates the set are listed once, and a job whose runs are all
/// pruned leaves it.
#[tokio::test]
async fn the_retention_sweep_reads_the_jobs_with_runs() {
    use sundial::job::{JobId, OwnerId};
    use sundial::run::{NewRun, RunFinish, RunRecord, RunState};

    let ns = Namespace::new("runjobs");
    let p = format!("{{{}}}:", ns.0);
    let store = RedisJobStore::from_url(&redis_url())
        .unwrap()
        .with_prefix(&ns.0);
    store.start().await.unwrap();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let owner = OwnerId::new("o");
    let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
    let runs: Vec<RunRecord> = (0..3)
        .map(|i| RunRecord::running(JobId::new("a"), t(i), 1, owner.clone(), t(i), t(i + 30)))
        .collect();
    let new: Vec<NewRun> = runs
        .iter()
        .map(|r| NewRun {
            record: r.clone(),
            max_instances: None,
        })
        .collect();
    store.insert_runs(&new).await.unwrap();
    let done: Vec<RunFinish> = runs
        .iter()
        .map(|r| RunFinish {
            id: r.id.clone(),
            state: RunState::Succeeded,
            finished_at: t(60),
            error: None,
        })
        .collect();
    store.finish_runs(&owner, &done).await.unwrap();
    let member = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        let key = format!("{p}runjobs");
        async move {
            let yes: bool = redis::cmd("SISMEMBER")
                .arg(key)
                .arg("a")
                .query_async(&mut conn)
                .await
                .unwrap();
            yes
        }
    };
    assert!(member(&mut conn).await, "inserting a run lists its job");
    // As written by a build before the set: the index without the listing.
    let _: () = redis::cmd("DEL")
        .arg(format!("{p}runjobs"))
        .arg(format!("{p}runjobs_listed"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let far = t(1_000_000);
    assert_eq!(store.prune_job_runs(1, far).await.unwrap(), 2);
    assert!(member(&mut conn).await, "the older index was listed");
    assert_eq!(store.prune_runs(far).await.unwrap(), 1);
    assert_eq!(store.prune_job_runs(1, far).await.unwrap(), 0);
    assert!(!member(&mut conn).await, "a job without runs left the set");
    store.purge().await.unwrap();
}
