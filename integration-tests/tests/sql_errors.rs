//! SQL stores under bad input: bad URLs, wrong credentials, unreachable hosts,
//! a row corrupted by hand, and a schema newer than the code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use sundial::prelude::*;
use sundial::{JobStore, SqlJobStore};
use sundial_integration_tests::support::{mysql_url, postgres_url, Namespace};

#[test]
fn bad_urls_name_the_problem() {
    let err = SqlJobStore::from_url("oracle://db/x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("oracle://db/x") && err.contains("postgres://"),
        "{err}"
    );
    let err = store_from_url("cassandra://127.0.0.1")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cassandra") && err.contains("supported schemes"),
        "{err}"
    );
    let err = store_from_url("postgres://u:hunter2@db/x#table=bad name")
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid table name"), "{err}");
    let err = SqlJobStore::from_url("postgres://u:hunter2@db/x")
        .unwrap()
        .with_table("x;drop")
        .unwrap_err();
    assert!(!err.to_string().contains("hunter2"));
}

#[tokio::test]
async fn wrong_password_unknown_database_and_unreachable_host_are_clear_errors() {
    let mysql = mysql_url().replace("root@", "root:wrong-password@");
    let err = SqlJobStore::from_url(&mysql)
        .unwrap()
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Store { store: "mysql", .. }), "{err}");
    assert!(err.to_string().contains("Access denied"), "{err}");

    let pg = postgres_url().replace("/test", "/no_such_database");
    let err = SqlJobStore::from_url(&pg)
        .unwrap()
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no_such_database"), "{err}");

    let err = SqlJobStore::from_url("postgres://postgres@127.0.0.1:1/test")
        .unwrap()
        .start()
        .await
        .unwrap_err();
    assert!(
        err.is_temporary(),
        "connection refused should be retried: {err}"
    );
    assert!(
        err.to_string()
            .contains("cannot connect to postgres at 127.0.0.1:1"),
        "{err}"
    );
}

async fn newer_schema_is_refused(base: &str) {
    let ns = Namespace::new("schema");
    let store = SqlJobStore::from_url(base)
        .unwrap()
        .with_table(&ns.0)
        .unwrap();
    store.start().await.unwrap();
    let rec = sundial_integration_tests::conformance::record(
        "keep",
        "t",
        serde_json::json!({"type": "date", "run_date": "2030-01-01T00:00:00Z"}),
        serde_json::Value::Null,
        None,
    );
    store.add_job(&rec).await.unwrap();
    store.shutdown().await.unwrap();
    raw_exec(
        base,
        &format!(
            "UPDATE sundial_schema_versions SET version = 99 WHERE table_name = '{}'",
            ns.0
        ),
    )
    .await;
    let again = SqlJobStore::from_url(base)
        .unwrap()
        .with_table(&ns.0)
        .unwrap();
    let err = again.start().await.unwrap_err().to_string();
    assert!(
        err.contains("schema version 99") && err.contains("newer"),
        "{err}"
    );
    raw_exec(
        base,
        &format!(
            "UPDATE sundial_schema_versions SET version = 1 WHERE table_name = '{}'",
            ns.0
        ),
    )
    .await;
    again.start().await.unwrap();
    assert!(
        again
            .lookup_job(&sundial::JobId::new("keep"))
            .await
            .unwrap()
            .is_some(),
        "nothing overwritten"
    );
    again.drop_table().await.unwrap();
}

/// Changes rows by hand, on a connection outside the store under test.
async fn raw_exec(url: &str, sql: &str) {
    SqlJobStore::from_url(url)
        .unwrap()
        .execute_raw(sql)
        .await
        .unwrap();
}

#[tokio::test]
async fn newer_schema_is_refused_on_postgres_and_mariadb() {
    newer_schema_is_refused(&postgres_url()).await;
    newer_schema_is_refused(&mysql_url()).await;
}

async fn corrupted_row_is_reported_and_skipped(url: &str, table: &str) {
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = Arc::clone(&runs);
    let store = SqlJobStore::from_url(url)
        .unwrap()
        .with_table(table)
        .unwrap();
    let scheduler = Scheduler::builder()
        .jobstore("default", store)
        .executor("default", AsyncExecutor::new())
        .max_idle_sleep(Duration::from_millis(100))
        .task("count", move |_ctx: JobContext, _: ()| {
            let r = Arc::clone(&r);
            async move {
                r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, std::io::Error>(())
            }
        })
        .build()
        .unwrap();
    let mut events = scheduler.subscribe();
    scheduler.start_paused().await.unwrap();
    let soon = scheduler.clock().now() + chrono::Duration::milliseconds(300);
    scheduler
        .add_job(JobSpec::new("count", DateTrigger::at(soon)).id("broken"))
        .await
        .unwrap();
    scheduler
        .add_job(JobSpec::new("count", DateTrigger::at(soon)).id("healthy"))
        .await
        .unwrap();
    SqlJobStore::from_url(url)
        .unwrap()
        .execute_raw(&format!(
            "UPDATE {table} SET job = '{{not json' WHERE id = 'broken'"
        ))
        .await
        .unwrap();
    scheduler.resume().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut errors = Vec::new();
    while let Some(Some(e)) = events.next().now_or_never() {
        if let Event::JobError { job_id, error, .. } = e {
            errors.push((job_id.to_string(), error));
        }
    }
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the healthy job ran"
    );
    assert!(
        errors
            .iter()
            .any(|(id, e)| id == "broken" && e.contains("unreadable")),
        "{errors:?}"
    );
    // A process that declares the same job `if_absent` at start keeps the
    // stored (unreadable) job and starts all the same.
    let declaring = Scheduler::builder()
        .jobstore(
            "default",
            SqlJobStore::from_url(url)
                .unwrap()
                .with_table(table)
                .unwrap(),
        )
        .executor("default", AsyncExecutor::new())
        .task("count", |_ctx: JobContext, _: ()| async {
            Ok::<_, std::io::Error>(())
        })
        .build()
        .unwrap();
    declaring
        .add_job(
            JobSpec::new("count", DateTrigger::at(soon))
                .id("broken")
                .if_absent(),
        )
        .await
        .unwrap();
    declaring
        .start_paused()
        .await
        .expect("an unreadable stored job stops a start");
    assert!(matches!(
        declaring.get_job("broken", None).await,
        Err(Error::UnreadableJob { .. })
    ));
    declaring.shutdown(true).await.unwrap();
    // The corrupted job is kept, shown apart, and can be removed.
    sundial_integration_tests::support::check_listed_unreadable(&scheduler, "broken")
        .await
        .unwrap();
    scheduler.shutdown(true).await.unwrap();
    SqlJobStore::from_url(url)
        .unwrap()
        .with_table(table)
        .unwrap()
        .drop_table()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_row_is_reported_and_skipped_on_sqlite_and_postgres() {
    let dir = std::env::temp_dir().join("sundial-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.db", Namespace::new("corrupt").0));
    corrupted_row_is_reported_and_skipped(&format!("sqlite://{}", path.display()), "jobs").await;
    let _ = std::fs::remove_file(&path);
    corrupted_row_is_reported_and_skipped(&postgres_url(), &Namespace::new("corrupt").0).await;
}

#[tokio::test]
async fn inline_closures_are_refused_by_persistent_stores() {
    let dir = std::env::temp_dir().join("sundial-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.db", Namespace::new("inline").0));
    let s = Scheduler::builder()
        .jobstore("default", SqlJobStore::sqlite(&path))
        .executor("default", AsyncExecutor::new())
        .build()
        .unwrap();
    s.start().await.unwrap();
    let err = s
        .add_job(JobSpec::inline(
            DateTrigger::at(chrono::Utc::now()),
            |_ctx| async { Ok::<_, std::io::Error>(()) },
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidJob(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("sqlite") && msg.contains("register"), "{msg}");
    assert!(s.get_jobs(None).await.unwrap().is_empty());
    s.shutdown(true).await.unwrap();
    let _ = std::fs::remove_file(&path);
}
