//! MongoDB-specific behaviour: a corrupted job document is reported and skipped;
//! a batch insert that loses a race for an id removes only its own documents.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::{FutureExt, StreamExt};
use sundial::prelude::*;
use sundial::{JobId, JobRecord, JobStore};
use sundial_integration_tests::conformance::{job, ContentExt};
use sundial_integration_tests::support::{mongo_url, Namespace};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

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
    // Corrupt the stored job by hand: its content is no longer JSON.
    let client = mongodb::Client::with_uri_str(mongo_url()).await.unwrap();
    let coll = client
        .default_database()
        .unwrap()
        .collection::<mongodb::bson::Document>(&ns.0);
    coll.update_one(
        mongodb::bson::doc! { "_id": "broken" },
        mongodb::bson::doc! { "$set": { "job": "{not json" } },
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
    // The corrupted job is kept, shown apart, and can be removed.
    sundial_integration_tests::support::check_listed_unreadable(&s, "broken")
        .await
        .unwrap();
    s.shutdown(true).await.unwrap();
    store.drop_collection().await.unwrap();
}

/// A TCP proxy in front of the MongoDB test server that, once armed, holds back
/// the next `insert` command until released: a deterministic window between a
/// client's checks and its insert.
struct InsertGate {
    url: String,
    armed: Arc<AtomicBool>,
    seen: Arc<Notify>,
    release: Arc<Semaphore>,
}

impl InsertGate {
    async fn start() -> InsertGate {
        let url = mongo_url();
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, upstream) = match authority.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h.to_string()),
            None => (String::new(), authority.to_string()),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sep = if path.contains('?') { '&' } else { '?' };
        let gate = InsertGate {
            url: format!("{scheme}://{userinfo}{addr}/{path}{sep}directConnection=true"),
            armed: Arc::new(AtomicBool::new(false)),
            seen: Arc::new(Notify::new()),
            release: Arc::new(Semaphore::new(0)),
        };
        let (armed, seen, release) = (
            Arc::clone(&gate.armed),
            Arc::clone(&gate.seen),
            Arc::clone(&gate.release),
        );
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (armed, seen, release) =
                    (Arc::clone(&armed), Arc::clone(&seen), Arc::clone(&release));
                tokio::spawn(async move {
                    let (mut client_rx, mut client_tx) = client.into_split();
                    let (mut server_rx, mut server_tx) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
                    });
                    loop {
                        // One wire message: its length (little-endian i32) first.
                        let mut len = [0u8; 4];
                        if client_rx.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let n = usize::try_from(i32::from_le_bytes(len)).unwrap();
                        let mut msg = len.to_vec();
                        msg.resize(n, 0);
                        if client_rx.read_exact(&mut msg[4..]).await.is_err() {
                            return;
                        }
                        // OP_MSG (2013) whose body section's first key is "insert".
                        let is_insert = msg.get(12..16) == Some(&2013_i32.to_le_bytes()[..])
                            && msg.get(26..33) == Some(&b"insert\0"[..]);
                        if is_insert && armed.swap(false, Ordering::SeqCst) {
                            seen.notify_one();
                            release.acquire().await.unwrap().forget();
                        }
                        if server_tx.write_all(&msg).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        gate
    }

    /// Holds back the next `insert` command.
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Waits until the held `insert` arrived.
    async fn held(&self) {
        self.seen.notified().await;
    }

    /// Lets the held `insert` through.
    fn release(&self) {
        self.release.add_permits(1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_jobs_losing_a_race_removes_only_its_own_documents() {
    let ns = Namespace::new("addjobsrace");
    let a = MongoJobStore::from_url(&mongo_url()).with_collection(&ns.0);
    a.start().await.unwrap();
    let gate = InsertGate::start().await;
    let b = Arc::new(MongoJobStore::from_url(&gate.url).with_collection(&ns.0));
    b.start().await.unwrap();

    let next = Some(Utc::now() + chrono::Duration::hours(1));
    let mut x_of_a = job("x", next);
    x_of_a
        .edit(|d| d.args = serde_json::json!({ "written_by": "a" }))
        .unwrap();
    let batch: Vec<JobRecord> = ["y", "x", "z"].iter().map(|id| job(id, next)).collect();

    // B checks that none of its ids exists, then sends its insert, which the
    // gate holds until A has stored "x": B's insert stores "y", fails on "x".
    gate.arm();
    let b2 = Arc::clone(&b);
    let adding = tokio::spawn(async move { b2.add_jobs(&batch).await });
    tokio::time::timeout(Duration::from_secs(10), gate.held())
        .await
        .expect("B's insert reaches the gate");
    a.add_job(&x_of_a).await.unwrap();
    gate.release();
    let err = adding.await.unwrap().unwrap_err();

    let x = a
        .lookup_job(&JobId::new("x"))
        .await
        .unwrap()
        .expect("A's job x is kept");
    assert_eq!(x.decode().unwrap(), x_of_a.decode().unwrap());
    for id in ["y", "z"] {
        assert!(
            a.lookup_job(&JobId::new(id)).await.unwrap().is_none(),
            "{id} of the failed batch is left behind"
        );
    }
    assert!(
        matches!(&err, Error::ConflictingId { id } if id == "x"),
        "{err}"
    );

    // A successful batch (whose documents keep their token) reads back as written.
    let more: Vec<JobRecord> = ["p", "q"].iter().map(|id| job(id, next)).collect();
    b.add_jobs(&more).await.unwrap();
    for j in &more {
        let got = a.lookup_job(&j.id).await.unwrap().unwrap();
        assert_eq!(got.decode().unwrap(), j.decode().unwrap());
    }
    assert_eq!(a.get_all_jobs().await.unwrap().len(), 3);
    a.drop_collection().await.unwrap();
}

/// A job document that an earlier version wrote (content as a sub-document,
/// not as text) is read as the same job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_documents_of_earlier_versions_are_read() {
    let ns = Namespace::new("olddoc");
    let store = MongoJobStore::from_url(&mongo_url()).with_collection(&ns.0);
    store.start().await.unwrap();
    let client = mongodb::Client::with_uri_str(mongo_url()).await.unwrap();
    let coll = client
        .default_database()
        .unwrap()
        .collection::<mongodb::bson::Document>(&ns.0);
    coll.insert_one(mongodb::bson::doc! {
        "_id": "old",
        "job": {
            "task": "record",
            "trigger": {"type": "date", "run_date": "2030-01-01T00:00:00+00:00"},
            "args": {"n": 1, "ratio": 0.5},
            "options": {"misfire_grace_time": 1.0, "coalesce": true, "max_instances": 1},
        },
        "version": 3_i64,
    })
    .await
    .unwrap();
    let rec = store
        .lookup_job(&JobId::new("old"))
        .await
        .unwrap()
        .expect("the old document is found");
    let data = rec.decode().unwrap();
    assert_eq!(data.task, "record");
    assert_eq!(data.args, serde_json::json!({"n": 1, "ratio": 0.5}));
    assert_eq!(
        data.options.misfire_grace_time,
        Some(Duration::from_secs(1))
    );
    assert_eq!(rec.version, 3);
    store.drop_collection().await.unwrap();
}
