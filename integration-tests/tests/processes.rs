//! Process-level tests: real scheduler processes on real databases.
//!
//! - two schedulers sharing one PostgreSQL (and one MariaDB) database run every
//!   scheduled run exactly once;
//! - a scheduler killed with SIGKILL is replaced by a new process that continues
//!   its jobs (SQLite file and PostgreSQL), with missed runs coalesced.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::{Child, Command};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sundial::job::{JobId, JobOptions, JobRecord};
use sundial::trigger::{DateTrigger, IntervalTrigger, Trigger};
use sundial::JobStore;
use sundial_integration_tests::support::{
    mongo_url, mysql_url, postgres_url, redis_url, Namespace,
};

fn worker(url: &str, runs: &std::path::Path, seconds: u64, owner: &str, lease_secs: u64) -> Child {
    let lease = lease_secs.to_string();
    Command::new(env!("CARGO_BIN_EXE_sundial-worker"))
        .args([url, runs.to_str().unwrap(), &seconds.to_string()])
        .env("SUNDIAL_OWNER", owner)
        .env("SUNDIAL_LEASE_SECS", &lease)
        .spawn()
        .expect("spawn worker")
}

fn read_runs(path: &std::path::Path) -> Vec<(String, i64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut p = l.split(',');
            (
                p.next().unwrap().to_string(),
                p.next().unwrap().parse().unwrap(),
                p.next().unwrap().to_string(),
            )
        })
        .collect()
}

fn record(id: &str, trigger: &dyn Trigger, next: DateTime<Utc>, coalesce: bool) -> JobRecord {
    // Instance limits are not under test here: with the default of one, a
    // slot whose predecessor ran on the other worker is skipped while that
    // run's outcome is not yet written (which takes seconds on the slow
    // MongoDB test server).
    let options = JobOptions {
        misfire_grace_time: None,
        coalesce,
        max_instances: 10,
        ..JobOptions::default()
    };
    let data = sundial::job::JobData {
        task: "record".into(),
        trigger: trigger.to_json(),
        args: serde_json::Value::Null,
        options,
    };
    JobRecord::new(
        JobId::new(id),
        sundial::job::JobContent::encode(&data),
        Some(next),
    )
}

fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap()
}

async fn two_schedulers_run_everything_once(base_url: &str, worker_seconds: u64) {
    let ns = Namespace::new("twoproc");
    let key = if base_url.starts_with("redis") {
        "prefix"
    } else {
        "table"
    };
    let url = format!("{base_url}#{key}={}", ns.0);
    let store = sundial::store_from_url(&url).unwrap();
    store.start().await.unwrap();
    let t0 = whole_second(Utc::now()) + chrono::Duration::seconds(3);
    let mut expected: Vec<(String, i64)> = Vec::new();
    let mut records = Vec::new();
    for i in 0..2000 {
        let at = t0 + chrono::Duration::microseconds(i * 1500);
        let id = format!("once{i:04}");
        records.push(record(&id, &DateTrigger::at(at), at, false));
        expected.push((id, at.timestamp_micros()));
    }
    for i in 0..50 {
        let trig = IntervalTrigger::builder()
            .seconds(1)
            .start_date(t0)
            .end_date(t0 + chrono::Duration::seconds(5))
            .build()
            .unwrap();
        let id = format!("every{i:02}");
        for k in 0..6 {
            expected.push((
                id.clone(),
                (t0 + chrono::Duration::seconds(k)).timestamp_micros(),
            ));
        }
        records.push(record(&id, &trig, t0, false));
    }
    store.add_jobs(&records).await.unwrap();
    let dir = std::env::temp_dir().join("sundial-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let runs = dir.join(format!("{}.runs", ns.0));
    // A lease long enough for a batch on the slowest test server.
    let lease = if url.starts_with("mongodb") { 30 } else { 5 };
    let mut a = worker(&url, &runs, worker_seconds, "worker-a", lease);
    let mut b = worker(&url, &runs, worker_seconds, "worker-b", lease);
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    let got = read_runs(&runs);
    let mut counts: HashMap<(String, i64), usize> = HashMap::new();
    let mut by_owner: HashMap<String, usize> = HashMap::new();
    for (id, t, owner) in &got {
        *counts.entry((id.clone(), *t)).or_default() += 1;
        *by_owner.entry(owner.clone()).or_default() += 1;
    }
    let dups = counts.values().filter(|c| **c > 1).count();
    let missing = expected.iter().filter(|k| !counts.contains_key(*k)).count();
    let unexpected = counts.keys().filter(|k| !expected.contains(k)).count();
    let first_missing: Vec<&(String, i64)> = expected
        .iter()
        .filter(|k| !counts.contains_key(*k))
        .take(5)
        .collect();
    assert_eq!(
        (dups, missing, unexpected),
        (0, 0, 0),
        "runs by owner: {by_owner:?}; t0 {}; first missing {first_missing:?}",
        t0.timestamp_micros()
    );
    assert_eq!(got.len(), 2300);
    assert!(
        by_owner.len() == 2,
        "both schedulers should take work: {by_owner:?}"
    );
    assert!(
        store.get_all_jobs().await.unwrap().is_empty(),
        "exhausted jobs are removed"
    );
    let _ = std::fs::remove_file(&runs);
    if base_url.starts_with("redis") || base_url.starts_with("mongodb") {
        store.remove_all_jobs().await.unwrap();
    } else {
        let sql = sundial_jobstore_sql::SqlJobStore::from_url(base_url)
            .unwrap()
            .with_table(&ns.0)
            .unwrap();
        sql.drop_table().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_postgres_run_every_run_exactly_once() {
    two_schedulers_run_everything_once(&postgres_url(), 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_mariadb_run_every_run_exactly_once() {
    two_schedulers_run_everything_once(&mysql_url(), 12).await;
}

async fn restart_after_sigkill(url: &str, cleanup: impl FnOnce()) {
    let ns = Namespace::new("restart");
    let store = sundial::store_from_url(url).unwrap();
    store.start().await.unwrap();
    let t0 = whole_second(Utc::now()) + chrono::Duration::seconds(2);
    let every = IntervalTrigger::builder()
        .seconds(1)
        .start_date(t0)
        .build()
        .unwrap();
    store
        .add_jobs(&[
            record("every", &every, t0, true),
            record(
                "once",
                &DateTrigger::at(t0 + chrono::Duration::seconds(6)),
                t0 + chrono::Duration::seconds(6),
                true,
            ),
        ])
        .await
        .unwrap();
    let dir = std::env::temp_dir().join("sundial-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let runs = dir.join(format!("{}.runs", ns.0));
    let mut a = worker(url, &runs, 60, "first", 5);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();
    let killed_at = Utc::now();
    assert!(
        store
            .lookup_job(&JobId::new("every"))
            .await
            .unwrap()
            .is_some(),
        "job lost by SIGKILL"
    );
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let restarted_at = Utc::now();
    let mut b = worker(url, &runs, 4, "second", 5);
    assert!(b.wait().unwrap().success());
    let got = read_runs(&runs);
    let first: Vec<i64> = got
        .iter()
        .filter(|r| r.2 == "first" && r.0 == "every")
        .map(|r| r.1)
        .collect();
    let second: Vec<i64> = got
        .iter()
        .filter(|r| r.2 == "second" && r.0 == "every")
        .map(|r| r.1)
        .collect();
    assert!(!first.is_empty(), "first process ran nothing");
    assert!(second.len() >= 3, "second process continued: {second:?}");
    // The backlog from the downtime ran once (coalesced): the first run of the
    // new process is the latest fire time before it started, and none of the
    // fire times between the two processes' runs ran.
    let last_first = *first.iter().max().unwrap();
    let backlog_run = second[0];
    // The new process starts its store first (on the slow MongoDB test server,
    // creating the job and run-ledger indexes takes seconds).
    let start_slack = if url.starts_with("mongodb") {
        5_000_000
    } else {
        1_500_000
    };
    assert!(
        backlog_run <= restarted_at.timestamp_micros() + start_slack,
        "first run of the new process at {backlog_run}, restarted at {restarted_at}"
    );
    assert!(
        backlog_run - last_first > 3_000_000,
        "downtime fire times ran one by one: {first:?} then {second:?}"
    );
    for w in second.windows(2) {
        assert_eq!(
            w[1] - w[0],
            1_000_000,
            "after the backlog the rhythm continues: {second:?}"
        );
    }
    // The one-off job due during the downtime ran exactly once, in the new process.
    let once: Vec<&(String, i64, String)> = got.iter().filter(|r| r.0 == "once").collect();
    assert_eq!(once.len(), 1, "{once:?}");
    assert!(killed_at < restarted_at);
    let _ = std::fs::remove_file(&runs);
    cleanup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_scheduler_on_sqlite_is_continued_by_a_new_process() {
    let dir = std::env::temp_dir().join("sundial-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.db", Namespace::new("restart").0));
    let url = format!("sqlite://{}", path.display());
    restart_after_sigkill(&url, || {
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", path.display()));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_scheduler_on_postgres_is_continued_by_a_new_process() {
    let ns = Namespace::new("restartpg");
    let url = format!("{}#table={}", postgres_url(), ns.0);
    restart_after_sigkill(&url, || {}).await;
    let sql = sundial_jobstore_sql::SqlJobStore::from_url(&postgres_url())
        .unwrap()
        .with_table(&ns.0)
        .unwrap();
    sql.drop_table().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_redis_run_every_run_exactly_once() {
    two_schedulers_run_everything_once(&redis_url(), 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_scheduler_on_redis_is_continued_by_a_new_process() {
    let ns = Namespace::new("restartredis");
    let url = format!("{}#prefix={}", redis_url(), ns.0);
    restart_after_sigkill(&url, || {}).await;
    let store = sundial::store_from_url(&url).unwrap();
    store.start().await.unwrap();
    store.remove_all_jobs().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_mongo_run_every_run_exactly_once() {
    // The test server (SecantusDB, written in Python) is much slower than MongoDB,
    // and every run costs two more writes for the run ledger.
    two_schedulers_run_everything_once(&mongo_url(), 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_scheduler_on_mongo_is_continued_by_a_new_process() {
    let ns = Namespace::new("restartmongo");
    let url = format!("{}#table={}", mongo_url(), ns.0);
    restart_after_sigkill(&url, || {}).await;
    sundial::MongoJobStore::from_url(&mongo_url())
        .with_collection(&ns.0)
        .drop_collection()
        .await
        .unwrap();
}
