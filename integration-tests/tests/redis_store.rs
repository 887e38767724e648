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
    assert_eq!(
        s.get_jobs(None).await.unwrap().len(),
        1,
        "the corrupted job is kept"
    );
    s.shutdown(true).await.unwrap();
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
