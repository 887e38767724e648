//! MongoDB-specific behaviour: a corrupted job document is reported and skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::{FutureExt, StreamExt};
use sundial::prelude::*;
use sundial::JobStore;
use sundial_integration_tests::support::{mongo_url, Namespace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_job_document_is_reported_and_skipped() {
    let ns = Namespace::new("corrupt");
    let store = Arc::new(MongoJobStore::from_url(&mongo_url()).with_collection(&ns.0));
    let runs = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&runs);
    let s = Scheduler::builder()
        .jobstore_arc("default", Arc::clone(&store) as Arc<dyn JobStore>)
        .executor("default", AsyncExecutor::new())
        .max_idle_sleep(Duration::from_millis(100))
        .task("record", move |ctx: JobContext, _: ()| {
            let r = Arc::clone(&r);
            async move {
                r.lock().unwrap().push(ctx.job_id().to_string());
                Ok::<_, std::io::Error>(())
            }
        })
        .build()
        .unwrap();
    let mut events = s.subscribe();
    s.start_paused().await.unwrap();
    let soon = Utc::now() + chrono::Duration::milliseconds(300);
    s.add_job(JobSpec::new("record", DateTrigger::at(soon)).id("broken"))
        .await
        .unwrap();
    s.add_job(JobSpec::new("record", DateTrigger::at(soon)).id("healthy"))
        .await
        .unwrap();
    // Corrupt the stored job by hand: its trigger becomes a number.
    let client = mongodb::Client::with_uri_str(mongo_url()).await.unwrap();
    let coll = client
        .default_database()
        .unwrap()
        .collection::<mongodb::bson::Document>(&ns.0);
    coll.update_one(
        mongodb::bson::doc! { "_id": "broken" },
        mongodb::bson::doc! { "$set": { "job.options": 42 } },
    )
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
    assert_eq!(*runs.lock().unwrap(), vec!["healthy".to_string()]);
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
    store.drop_collection().await.unwrap();
}
