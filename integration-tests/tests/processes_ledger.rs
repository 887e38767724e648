//! Process-level tests of the run ledger: real scheduler processes on real
//! databases, stopped with SIGSTOP past their lease or killed with SIGKILL while
//! a run is in flight.
//!
//! - a worker frozen past its lease while it holds claims, then thawed, never
//!   starts a slot its peer already started (every slot runs at most once, and
//!   every due slot is accounted for);
//! - a worker killed in the middle of a 10 s run has that run marked
//!   `interrupted` by a live peer within one lease plus one heartbeat.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sundial::job::{JobContent, JobData, JobId, JobOptions, JobRecord};
use sundial::run::{RunQuery, RunState};
use sundial::trigger::{DateTrigger, IntervalTrigger, Trigger};
use sundial::JobStore;
use sundial_integration_tests::conformance::ContentExt;
use sundial_integration_tests::support::{
    mongo_url, mysql_url, postgres_url, redis_url, Namespace,
};

const LEASE_SECS: u64 = 3;

fn worker(url: &str, runs: &std::path::Path, seconds: u64, owner: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sundial-worker"))
        .args([url, runs.to_str().unwrap(), &seconds.to_string()])
        .env("SUNDIAL_OWNER", owner)
        .env("SUNDIAL_LEASE_SECS", LEASE_SECS.to_string())
        .spawn()
        .expect("spawn worker")
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
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

fn job(
    id: &str,
    task: &str,
    trigger: &dyn Trigger,
    next: DateTime<Utc>,
    args: serde_json::Value,
) -> JobRecord {
    let options = JobOptions {
        misfire_grace_time: None,
        coalesce: false,
        max_instances: 5,
        ..JobOptions::default()
    };
    let data = JobData {
        task: task.into(),
        trigger: trigger.to_json(),
        args,
        options,
    };
    JobRecord::new(JobId::new(id), JobContent::encode(&data), Some(next))
}

fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap()
}

fn url_for(base: &str, ns: &Namespace) -> String {
    if base.starts_with("sqlite") {
        return base.to_string();
    }
    let key = if base.starts_with("redis") {
        "prefix"
    } else {
        "table"
    };
    format!("{base}#{key}={}", ns.0)
}

fn runs_file(ns: &Namespace) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("sundial-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}.runs", ns.0))
}

/// Two workers share interval jobs; one is frozen (SIGSTOP) for twice the lease,
/// three times, at moments that fall inside its claim / start / release window
/// often enough, then thawed. No slot may run twice, and every slot due while at
/// least one worker was alive must be recorded in the ledger.
async fn frozen_worker_never_starts_a_slot_twice(base: &str) {
    let ns = Namespace::new("sigstop");
    let url = url_for(base, &ns);
    let store = sundial::store_from_url(&url).unwrap();
    store.start().await.unwrap();
    let t0 = whole_second(Utc::now()) + chrono::Duration::seconds(2);
    let jobs: Vec<JobRecord> = (0..40)
        .map(|i| {
            let every = IntervalTrigger::builder()
                .seconds(1)
                .start_date(t0)
                .build()
                .unwrap();
            job(
                &format!("j{i:02}"),
                "record",
                &every,
                t0,
                serde_json::Value::Null,
            )
        })
        .collect();
    store.add_jobs(&jobs).await.unwrap();
    let runs = runs_file(&ns);
    let seconds = 22;
    let mut a = worker(&url, &runs, seconds, "a");
    let mut b = worker(&url, &runs, seconds, "b");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for i in 0..3u64 {
        let frozen = if i % 2 == 0 { &a } else { &b };
        signal(frozen, "-STOP");
        tokio::time::sleep(Duration::from_secs(2 * LEASE_SECS)).await;
        signal(frozen, "-CONT");
        tokio::time::sleep(Duration::from_millis(700 + 300 * i)).await;
    }
    assert!(a.wait().unwrap().success(), "worker a failed");
    assert!(b.wait().unwrap().success(), "worker b failed");

    let got = read_runs(&runs);
    let mut count: HashMap<(String, i64), Vec<String>> = HashMap::new();
    for (id, t, owner) in &got {
        count
            .entry((id.clone(), *t))
            .or_default()
            .push(owner.clone());
    }
    let twice: Vec<_> = count.iter().filter(|(_, o)| o.len() > 1).collect();
    assert!(twice.is_empty(), "slots run twice: {twice:?}");
    assert!(got.len() > 40 * 8, "only {} runs", got.len());
    // Every slot that ran has exactly one ledger record, which says it ran.
    let ledger = store
        .query_runs(&RunQuery::default().limit(1_000_000))
        .await
        .unwrap();
    let mut by_slot: HashMap<(String, i64), Vec<RunState>> = HashMap::new();
    for r in &ledger {
        by_slot
            .entry((r.job_id.to_string(), r.scheduled_time.timestamp_micros()))
            .or_default()
            .push(r.state);
    }
    for key in count.keys() {
        let states = by_slot.get(key).cloned().unwrap_or_default();
        assert_eq!(states, vec![RunState::Succeeded], "ledger for {key:?}");
    }
    // No slot is lost: between the first and last slot run, every second of
    // every job is in the ledger.
    let first = count.keys().map(|k| k.1).min().unwrap();
    let last = count.keys().map(|k| k.1).max().unwrap() - 2_000_000;
    for j in &jobs {
        let mut t = first;
        while t <= last {
            assert!(
                by_slot.contains_key(&(j.id.to_string(), t)),
                "slot {} at {t} has no ledger record",
                j.id
            );
            t += 1_000_000;
        }
    }
    let _ = std::fs::remove_file(&runs);
}

/// A worker is killed while it runs a 10 s job; the live peer marks the run
/// interrupted within one lease plus one heartbeat (plus polling slack). With
/// `rerun`, the job asks for `OnInterrupted::Rerun` and the peer then runs the
/// slot again as attempt 2; without, the slot is not run again.
async fn killed_run_is_interrupted_by_a_peer(base: &str, rerun: bool) {
    let ns = Namespace::new("sigkill");
    let url = url_for(base, &ns);
    let store = sundial::store_from_url(&url).unwrap();
    store.start().await.unwrap();
    let t0 = whole_second(Utc::now()) + chrono::Duration::seconds(3);
    let mut long = job(
        "long",
        "sleep",
        &DateTrigger::at(t0),
        t0,
        serde_json::json!(10),
    );
    if rerun {
        long.edit(|d| d.options.on_interrupted = sundial::OnInterrupted::Rerun)
            .unwrap();
    }
    store.add_job(&long).await.unwrap();
    let runs = runs_file(&ns);
    let mut workers = HashMap::new();
    workers.insert("a".to_string(), worker(&url, &runs, 40, "a"));
    workers.insert("b".to_string(), worker(&url, &runs, 40, "b"));
    // Wait for the run to start and learn who holds it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let holder = loop {
        let r = store.query_runs(&RunQuery::job("long")).await.unwrap();
        if let Some(r) = r.first() {
            assert_eq!(r.state, RunState::Running, "{r:?}");
            break r.owner.clone().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut victim = workers.remove(&holder).unwrap();
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    let killed = Instant::now();
    let limit = Duration::from_secs(LEASE_SECS) + Duration::from_secs(LEASE_SECS) / 3;
    let rec = loop {
        let r = store.query_runs(&RunQuery::job("long")).await.unwrap();
        let first = r.iter().find(|x| x.attempt == 1).unwrap();
        if first.state != RunState::Running {
            break first.clone();
        }
        assert!(
            killed.elapsed() < limit + Duration::from_secs(3),
            "still running {:?} after the kill",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = killed.elapsed();
    assert_eq!(rec.state, RunState::Interrupted, "{rec:?}");
    assert!(
        took <= limit + Duration::from_millis(1500),
        "interrupted after {took:?}; expected within lease + heartbeat ({limit:?})"
    );
    if rerun {
        // The survivor runs the slot again as attempt 2.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = store.query_runs(&RunQuery::job("long")).await.unwrap();
            if r.len() == 2 {
                assert_eq!((r[0].attempt, r[0].state), (2, RunState::Running), "{r:?}");
                assert_ne!(
                    r[0].owner.as_ref().map(|o| o.as_str()),
                    Some(holder.as_str())
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the interrupted slot was not rerun: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while read_runs(&runs).len() < 2 {
            assert!(Instant::now() < deadline, "the rerun never executed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = read_runs(&runs);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_ne!(got[0].2, got[1].2, "rerun by the killed worker? {got:?}");
        // The one-off job is kept, paused, until its rerun ends; then removed.
        let kept = store.lookup_job(&JobId::new("long")).await.unwrap();
        assert!(
            kept.is_some_and(|j| j.next_run_time.is_none()),
            "not kept while rerunning"
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while store
            .lookup_job(&JobId::new("long"))
            .await
            .unwrap()
            .is_some()
        {
            assert!(
                Instant::now() < deadline,
                "the finished one-off job was never removed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = store.query_runs(&RunQuery::job("long")).await.unwrap();
        assert_eq!(
            (r[0].attempt, r[0].state),
            (2, RunState::Succeeded),
            "{r:?}"
        );
    } else {
        // The one-off slot was not run again by the survivor.
        let got = read_runs(&runs);
        assert_eq!(got.len(), 1, "{got:?}");
    }
    for (_, mut w) in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let _ = std::fs::remove_file(&runs);
}

fn sqlite_url(name: &str) -> String {
    let dir = std::env::temp_dir().join("sundial-tests");
    std::fs::create_dir_all(&dir).unwrap();
    format!(
        "sqlite://{}",
        dir.join(format!("{}.db", Namespace::new(name).0)).display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_worker_on_postgres_never_starts_a_slot_twice() {
    frozen_worker_never_starts_a_slot_twice(&postgres_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_worker_on_mariadb_never_starts_a_slot_twice() {
    frozen_worker_never_starts_a_slot_twice(&mysql_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_worker_on_redis_never_starts_a_slot_twice() {
    frozen_worker_never_starts_a_slot_twice(&redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_worker_on_sqlite_never_starts_a_slot_twice() {
    frozen_worker_never_starts_a_slot_twice(&sqlite_url("sigstop")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_run_on_postgres_is_interrupted_by_a_peer() {
    killed_run_is_interrupted_by_a_peer(&postgres_url(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_run_on_mariadb_is_interrupted_by_a_peer() {
    killed_run_is_interrupted_by_a_peer(&mysql_url(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_run_on_redis_is_interrupted_by_a_peer() {
    killed_run_is_interrupted_by_a_peer(&redis_url(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_run_on_mongo_is_interrupted_by_a_peer() {
    killed_run_is_interrupted_by_a_peer(&mongo_url(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_run_on_postgres_is_rerun_by_a_peer_when_asked() {
    killed_run_is_interrupted_by_a_peer(&postgres_url(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_run_on_redis_is_rerun_by_a_peer_when_asked() {
    killed_run_is_interrupted_by_a_peer(&redis_url(), true).await;
}
