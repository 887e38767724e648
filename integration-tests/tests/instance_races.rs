//! Store-wide `max_instances` under a race: two handles (two "processes")
//! start runs of the same 60 jobs at the same moment, each job limited to one
//! instance; exactly one run of each job may start. PostgreSQL and
//! MySQL/MariaDB serialise the count and the insert by locking the job's row,
//! MongoDB with a short-lived per-job lock document. (SQLite serialises
//! writers with `BEGIN IMMEDIATE`; Redis runs one script at a time.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sundial::job::{JobId, JobRecord, OwnerId};
use sundial::run::{NewRun, RunInsert, RunQuery, RunRecord, RunState};
use sundial::{JobStore, SqlJobStore};
use sundial_integration_tests::support::{
    mongo_url, mysql_url, postgres_store, postgres_url, Namespace,
};

async fn concurrent_starts_respect_max_instances(base: &str, ns: &Namespace) {
    let url = format!("{base}#table={}", ns.0);
    let open = || async {
        let s = sundial::store_from_url(&url).unwrap();
        s.start().await.unwrap();
        s
    };
    let (a, b) = (open().await, open().await);
    let base: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let jobs: Vec<JobRecord> = (0..60)
        .map(|i| {
            sundial_integration_tests::conformance::record(
                &format!("j{i:02}"),
                "task",
                serde_json::json!({"type": "date", "run_date": "2026-01-01T00:00:00+00:00"}),
                serde_json::Value::Null,
                Some(base),
            )
        })
        .collect();
    a.add_jobs(&jobs).await.unwrap();
    let start = |store: Arc<dyn JobStore>, who: &'static str, offset: i64| async move {
        let mut got = Vec::new();
        for i in 0..60 {
            let rec = RunRecord::running(
                JobId::new(format!("j{i:02}")),
                base + Duration::seconds(offset),
                1,
                OwnerId::new(who),
                base,
                base + Duration::seconds(60),
            );
            let r = store
                .insert_runs(&[NewRun {
                    record: rec,
                    max_instances: Some(1),
                }])
                .await
                .unwrap();
            got.push(r[0]);
        }
        got
    };
    let (x, y) = tokio::join!(
        tokio::spawn(start(Arc::clone(&a), "a", 0)),
        tokio::spawn(start(Arc::clone(&b), "b", 1))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    for i in 0..60 {
        let running = [x[i], y[i]]
            .iter()
            .filter(|r| **r == RunInsert::Inserted(RunState::Running))
            .count();
        assert_eq!(running, 1, "job j{i:02}: {:?} and {:?}", x[i], y[i]);
    }
    let stored = a
        .query_runs(&RunQuery::default().state(RunState::Running).limit(1000))
        .await
        .unwrap();
    assert_eq!(stored.len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_respect_max_instances_on_postgres() {
    let ns = Namespace::new("maxinst");
    concurrent_starts_respect_max_instances(&postgres_url(), &ns).await;
    postgres_store(&ns).drop_table().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_respect_max_instances_on_mariadb() {
    let ns = Namespace::new("maxinst");
    concurrent_starts_respect_max_instances(&mysql_url(), &ns).await;
    SqlJobStore::from_url(&mysql_url())
        .unwrap()
        .with_table(&ns.0)
        .unwrap()
        .drop_table()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_respect_max_instances_on_mongo() {
    let ns = Namespace::new("maxinst");
    concurrent_starts_respect_max_instances(&mongo_url(), &ns).await;
    sundial::MongoJobStore::from_url(&mongo_url())
        .with_collection(&ns.0)
        .drop_collection()
        .await
        .unwrap();
}
