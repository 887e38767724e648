//! The everyday many-workers case, end to end: four worker processes of one
//! application start at once on a fresh store, each declaring the same 20
//! interval jobs and 200 one-off jobs with `replace_existing`; one is killed
//! with SIGKILL mid-run and restarted (declaring everything again). Every
//! slot runs at most once, no one-off job runs twice or goes missing, and every
//! due interval slot is either run or recorded in the run ledger.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::{Child, Command};

use chrono::{DateTime, Utc};
use sundial::run::RunQuery;
use sundial::JobStore;
use sundial_integration_tests::support::{
    postgres_store, postgres_url, redis_store, redis_url, Namespace,
};

const INTERVALS: i64 = 20;
const ONE_OFFS: i64 = 200;

fn worker(url: &str, runs: &std::path::Path, seconds: u64, owner: &str, base: i64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sundial-worker"))
        .args([url, runs.to_str().unwrap(), &seconds.to_string()])
        .env("SUNDIAL_OWNER", owner)
        .env("SUNDIAL_LEASE_SECS", "5")
        .env("SUNDIAL_DECLARE", format!("{INTERVALS},{ONE_OFFS},{base}"))
        .spawn()
        .expect("spawn worker")
}

fn read_runs(path: &std::path::Path) -> Vec<(String, i64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut p = l.split(',');
            (
                p.next().unwrap().to_string(),
                p.next().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

async fn sleep_until(t: DateTime<Utc>) {
    if let Ok(d) = (t - Utc::now()).to_std() {
        tokio::time::sleep(d).await;
    }
}

async fn workers_declare_and_survive_a_kill(url: &str, store: impl JobStore) {
    let dir = std::env::temp_dir().join(format!("sundial-workers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let runs = dir.join(format!("runs-{}.txt", Namespace::new("w").0));
    let base_ms = (Utc::now() + chrono::Duration::seconds(3)).timestamp_millis();
    let base = DateTime::from_timestamp_millis(base_ms).unwrap();
    let end = base + chrono::Duration::seconds(14);
    let secs_left = |at: DateTime<Utc>| (end - at).num_seconds().max(1) as u64;
    let mut workers: Vec<Child> = (0..4)
        .map(|i| worker(url, &runs, secs_left(Utc::now()), &format!("w{i}"), base_ms))
        .collect();
    sleep_until(base + chrono::Duration::seconds(4)).await;
    workers[1].kill().unwrap(); // SIGKILL
    workers[1].wait().unwrap();
    sleep_until(base + chrono::Duration::seconds(6)).await;
    workers[1] = worker(url, &runs, secs_left(Utc::now()), "w1-restarted", base_ms);
    for (i, w) in workers.iter_mut().enumerate() {
        let status = w.wait().unwrap();
        assert!(status.success(), "worker {i} failed: {status}");
    }

    let seen = read_runs(&runs);
    let mut count: HashMap<(String, i64), usize> = HashMap::new();
    for (job, slot) in &seen {
        *count.entry((job.clone(), *slot)).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "slots run more than once: {twice:?}");

    store.start().await.unwrap();
    let mut recorded: HashMap<(String, i64), String> = HashMap::new();
    for job in (0..INTERVALS)
        .map(|i| format!("i{i}"))
        .chain((0..ONE_OFFS).map(|k| format!("o{k}")))
    {
        for r in store
            .query_runs(&RunQuery::job(job.as_str()).limit(1000))
            .await
            .unwrap()
        {
            recorded.insert(
                (job.clone(), r.scheduled_time.timestamp_micros()),
                r.state.as_str().to_string(),
            );
        }
    }
    // One-off jobs: each ran once, or (killed mid-run) is recorded interrupted.
    for k in 0..ONE_OFFS {
        let id = format!("o{k}");
        let slot = (base + chrono::Duration::milliseconds(50 * k)).timestamp_micros();
        let ran = count.get(&(id.clone(), slot)).copied().unwrap_or(0);
        let state = recorded.get(&(id.clone(), slot)).map(String::as_str);
        assert!(
            ran == 1 || state == Some("interrupted"),
            "one-off {id} ran {ran} times, recorded {state:?}"
        );
        assert!(
            store
                .lookup_job(&sundial::JobId::new(id.as_str()))
                .await
                .unwrap()
                .is_none(),
            "one-off {id} is still stored"
        );
    }
    // Interval jobs: every slot due before the end is run or recorded.
    for i in 0..INTERVALS {
        let id = format!("i{i}");
        for n in 0..=5 {
            let slot = (base + chrono::Duration::seconds(2 * n)).timestamp_micros();
            let key = (id.clone(), slot);
            assert!(
                count.contains_key(&key) || recorded.contains_key(&key),
                "slot {n} of {id} was neither run nor recorded"
            );
        }
    }
    let interval_runs = seen.iter().filter(|(j, _)| j.starts_with('i')).count();
    eprintln!(
        "{} runs ({} interval, {} one-off); ledger states: {:?}",
        seen.len(),
        interval_runs,
        seen.len() - interval_runs,
        recorded
            .values()
            .fold(HashMap::<&str, usize>::new(), |mut m, s| {
                *m.entry(s.as_str()).or_default() += 1;
                m
            })
    );
    let _ = std::fs::remove_file(&runs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_on_postgres_declare_jobs_and_survive_a_kill() {
    let ns = Namespace::new("workers");
    let url = format!("{}#table={}", postgres_url(), ns.0);
    workers_declare_and_survive_a_kill(&url, postgres_store(&ns)).await;
    postgres_store(&ns).drop_table().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_on_redis_declare_jobs_and_survive_a_kill() {
    let ns = Namespace::new("workers");
    let url = format!("{}#prefix={}", redis_url(), ns.0);
    workers_declare_and_survive_a_kill(&url, redis_store(&ns)).await;
    let s = redis_store(&ns);
    s.start().await.unwrap();
    s.purge().await.unwrap();
}

/// Starts a worker whose stderr is captured.
fn quiet_worker(url: &str, runs: &std::path::Path, owner: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sundial-worker"))
        .args([url, runs.to_str().unwrap(), "60"])
        .env("SUNDIAL_OWNER", owner)
        .env("SUNDIAL_LEASE_SECS", "3")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn worker")
}

/// Waits until `worker` is the one registered node of `store`.
async fn wait_registered(store: &sundial::SqlJobStore, worker: &mut Child) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let nodes = store.list_nodes().await.unwrap();
        if nodes.len() == 1 && nodes[0].pid == worker.id() {
            return;
        }
        assert!(
            worker.try_wait().unwrap().is_none(),
            "the worker was refused: {nodes:?}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "never registered: {nodes:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits for a worker that should refuse to start; returns its stderr.
fn refused(mut child: Child) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(
                !status.success(),
                "the duplicate worker exited cleanly: {err}"
            );
            return err;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a worker with a live owner id was not refused");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The node registry across real processes: a second worker started with the
/// owner id of a live one is refused with an error naming the holder; once the
/// holder is killed with SIGKILL, the id is taken over at once (the holder was
/// a process of this host that is gone); a registration from another host is
/// refused until it lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_id_is_refused_while_its_holder_lives() {
    let ns = Namespace::new("owners");
    let url = format!("{}#table={}", postgres_url(), ns.0);
    let store = postgres_store(&ns);
    store.start().await.unwrap();
    let runs = std::env::temp_dir().join(format!("sundial-owners-{}.txt", ns.0));
    let mut first = quiet_worker(&url, &runs, "same");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let holder = loop {
        if let Some(n) = store.list_nodes().await.unwrap().into_iter().next() {
            break n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first worker never registered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(holder.pid, first.id());

    let err = refused(quiet_worker(&url, &runs, "same"));
    assert!(
        err.contains("owner id 'same' is taken") && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );

    first.kill().unwrap();
    first.wait().unwrap();
    let mut next = quiet_worker(&url, &runs, "same");
    wait_registered(&store, &mut next).await;
    next.kill().unwrap();
    next.wait().unwrap();

    // A live registration of a process on another host: refused until it lapses.
    let now = Utc::now();
    let mut elsewhere = sundial::NodeRecord::new(
        sundial::job::OwnerId::new("same"),
        now,
        std::time::Duration::from_secs(3),
    );
    elsewhere.host = "elsewhere".into();
    store
        .remove_node(
            &holder.owner,
            &store.list_nodes().await.unwrap()[0].instance,
        )
        .await
        .unwrap();
    assert!(store.upsert_node(&elsewhere, now).await.unwrap().is_none());
    let err = refused(quiet_worker(&url, &runs, "same"));
    assert!(
        err.contains("owner id 'same' is taken") && err.contains("elsewhere"),
        "{err}"
    );
    sleep_until(elsewhere.expires_at + chrono::Duration::milliseconds(200)).await;
    let mut next = quiet_worker(&url, &runs, "same");
    wait_registered(&store, &mut next).await;
    next.kill().unwrap();
    next.wait().unwrap();
    let _ = std::fs::remove_file(&runs);
    store.drop_table().await.unwrap();
}
