//! Every run executes in a `sundial.run` tracing span that names its job, run
//! id, slot and attempt and records its outcome, on both executors; every
//! store call runs in a `sundial.store` span with its operation and rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sundial::prelude::*;
use sundial::run::RunQuery;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event as TraceEvent, Metadata, Subscriber};

type Spans = Arc<Mutex<HashMap<u64, HashMap<String, String>>>>;

/// Keeps every span's name and fields.
struct Capture {
    next: AtomicU64,
    spans: Spans,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = HashMap::from([("name".to_string(), attrs.metadata().name().to_string())]);
        attrs.record(&mut Fields(&mut fields));
        self.spans.lock().unwrap().insert(id, fields);
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(fields) = self.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &TraceEvent<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_has_a_span_with_its_identity_and_outcome() {
    let spans: Spans = Arc::default();
    tracing::subscriber::set_global_default(Capture {
        next: AtomicU64::new(0),
        spans: Arc::clone(&spans),
    })
    .unwrap();
    let s = Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .executor("pool", ThreadPoolExecutor::new(2))
        .task("ok", |_ctx: JobContext, _: ()| async {
            Ok::<_, std::io::Error>(())
        })
        .blocking_task("fails", |_ctx: JobContext, _: ()| {
            Err::<(), _>(std::io::Error::other("disk full"))
        })
        .build()
        .unwrap();
    s.start().await.unwrap();
    let at = DateTrigger::at(chrono::Utc::now());
    s.add_job(JobSpec::new("ok", at.clone()).id("async-ok"))
        .await
        .unwrap();
    s.add_job(JobSpec::new("fails", at).id("pool-fails").executor("pool"))
        .await
        .unwrap();
    let mut runs = Vec::new();
    for _ in 0..100 {
        runs = s.runs(&RunQuery::default(), None).await.unwrap();
        if runs.len() == 2 && runs.iter().all(|r| r.state.is_terminal()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.shutdown(true).await.unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let spans = spans.lock().unwrap();
    for run in &runs {
        let span = spans
            .values()
            .find(|f| f["name"] == "sundial.run" && f.get("run_id") == Some(&run.id.to_string()))
            .unwrap_or_else(|| panic!("no span for run {run:?} in {spans:?}"));
        assert_eq!(span["job_id"], run.job_id.to_string());
        assert_eq!(span["attempt"], "1");
        assert_eq!(span["outcome"], run.state.as_str(), "{span:?}");
        assert_eq!(span["scheduled_time"], run.scheduled_time.to_string());
    }
    // The claim of the two due jobs and the insert of their run records.
    let store_ops: Vec<&HashMap<String, String>> = spans
        .values()
        .filter(|f| f["name"] == "sundial.store")
        .collect();
    for f in &store_ops {
        assert_eq!(f["backend"], "memory", "{f:?}");
        assert!(f.contains_key("ok"), "outcome recorded: {f:?}");
    }
    let claimed: u64 = store_ops
        .iter()
        .filter(|f| f["op"] == "acquire_due")
        .map(|f| f.get("rows").map_or(0, |r| r.parse::<u64>().unwrap()))
        .sum();
    assert_eq!(claimed, 2, "{store_ops:?}");
    assert!(store_ops
        .iter()
        .any(|f| f["op"] == "insert_runs" && f["ok"] == "true"));
    let outcomes: Vec<&str> = runs.iter().map(|r| r.state.as_str()).collect();
    assert!(
        outcomes.contains(&"succeeded") && outcomes.contains(&"failed"),
        "{outcomes:?}"
    );
}
