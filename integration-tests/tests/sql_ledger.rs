//! SQL-specific ledger mechanics: on PostgreSQL and MySQL/MariaDB the running
//! count and the insert of a job's runs are serialised across processes by
//! locking the job's row, so `max_instances` holds when two nodes start runs of
//! one job at the same moment. (SQLite serialises writers with `BEGIN
//! IMMEDIATE`; Redis runs one script at a time.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sundial::job::{JobId, JobOptions, JobRecord, OwnerId};
use sundial::run::{NewRun, RunInsert, RunQuery, RunRecord, RunState};
use sundial::{JobStore, SqlJobStore};
use sundial_integration_tests::support::{mysql_url, postgres_url, Namespace};

async fn concurrent_starts_respect_max_instances(url: &str) {
    let ns = Namespace::new("maxinst");
    let open = || async {
        let s = SqlJobStore::from_url(url)
            .unwrap()
            .with_table(&ns.0)
            .unwrap();
        s.start().await.unwrap();
        Arc::new(s)
    };
    let (a, b) = (open().await, open().await);
    let base: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let jobs: Vec<JobRecord> = (0..60)
        .map(|i| {
            JobRecord::new(
                JobId::new(format!("j{i:02}")),
                "task",
                serde_json::json!({"type": "date", "run_date": "2026-01-01T00:00:00+00:00"}),
                serde_json::Value::Null,
                JobOptions::default(),
                Some(base),
            )
        })
        .collect();
    a.add_jobs(&jobs).await.unwrap();
    let start = |store: Arc<SqlJobStore>, who: &'static str, offset: i64| async move {
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
    a.drop_table().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_respect_max_instances_on_postgres() {
    concurrent_starts_respect_max_instances(&postgres_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_respect_max_instances_on_mariadb() {
    concurrent_starts_respect_max_instances(&mysql_url()).await;
}
