//! The scheduler against a real store whose calls fail at the worst moments:
//! recording started runs fails before reaching the store, or after the store
//! wrote the records but before the reply arrived; releasing claimed jobs and
//! recording outcomes fail the same two ways. Every slot still runs exactly
//! once and every slot is recorded as succeeded: none lost, none twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sundial::prelude::*;
use sundial::run::{RunQuery, RunState};
use sundial::JobStore;
use sundial_integration_tests::faults::{Call, Fault, FaultyStore};
use sundial_integration_tests::support::{postgres_store, redis_store, Namespace};

const INTERVALS: usize = 4;
const ONE_OFFS: i64 = 20;

/// (job id, scheduled time) of each execution.
type Seen = Arc<Mutex<Vec<(String, DateTime<Utc>)>>>;

async fn every_slot_once_through_faults(inner: Arc<dyn JobStore>) {
    use Call::*;
    use Fault::*;
    let faults = [
        (InsertRuns, ReplyLost),
        (ReleaseMany, ReplyLost),
        (InsertRuns, Before),
        (FinishRuns, ReplyLost),
        (ReleaseMany, Before),
        (InsertRuns, ReplyLost),
        (FinishRuns, Before),
        (InsertRuns, ReplyLost),
        (ReleaseMany, ReplyLost),
        (InsertRuns, ReplyLost),
    ];
    let store = Arc::new(FaultyStore::new(inner, faults));
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    let scheduler = Scheduler::builder()
        .jobstore_arc("default", Arc::clone(&store) as Arc<dyn JobStore>)
        .executor("default", AsyncExecutor::new())
        .lease_duration(Duration::from_secs(10))
        .store_retry_interval(Duration::from_millis(100))
        .max_idle_sleep(Duration::from_millis(200))
        .task("record", move |ctx: JobContext, _: ()| {
            s.lock()
                .unwrap()
                .push((ctx.job_id().to_string(), ctx.scheduled_run_time()));
            async { Ok::<_, sundial::BoxError>(()) }
        })
        .build()
        .unwrap();
    scheduler.start().await.unwrap();
    let start = sundial::job::trunc_micros(Utc::now() + chrono::Duration::milliseconds(300));
    for i in 0..INTERVALS {
        let every = IntervalTrigger::builder()
            .seconds(1)
            .start_date(start)
            .build()
            .unwrap();
        scheduler
            .add_job(
                JobSpec::new("record", every)
                    .id(format!("i{i}"))
                    .coalesce(false)
                    .misfire_grace_time(None),
            )
            .await
            .unwrap();
    }
    for k in 0..ONE_OFFS {
        let at = start + chrono::Duration::milliseconds(150 * k);
        scheduler
            .add_job(
                JobSpec::new("record", DateTrigger::at(at))
                    .id(format!("o{k}"))
                    .misfire_grace_time(None)
                    // Half of them are kept until their run ends (to be
                    // rerun if interrupted): they too must end removed.
                    .on_interrupted(if k % 2 == 0 {
                        OnInterrupted::Rerun
                    } else {
                        OnInterrupted::Skip
                    }),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    scheduler.shutdown(true).await.unwrap();
    // The scheduler closed the store: open it again to read the ledger.
    store.start().await.unwrap();
    assert_eq!(
        store.injected().len(),
        faults.len(),
        "not every fault was injected"
    );

    let seen = seen.lock().unwrap().clone();
    let mut count: HashMap<(String, DateTime<Utc>), usize> = HashMap::new();
    for s in &seen {
        *count.entry(s.clone()).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "slots run more than once: {twice:?}");

    let mut ledger: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
    let runs = store
        .query_runs(&RunQuery {
            limit: 10_000,
            ..RunQuery::default()
        })
        .await
        .unwrap();
    for r in &runs {
        assert_eq!(r.state, RunState::Succeeded, "{r:?}");
        assert!(
            count.contains_key(&(r.job_id.to_string(), r.scheduled_time)),
            "recorded as succeeded but never executed: {r:?}"
        );
        ledger
            .entry(r.job_id.to_string())
            .or_default()
            .push(r.scheduled_time);
    }
    assert_eq!(runs.len(), seen.len(), "executions and records differ");
    for k in 0..ONE_OFFS {
        let id = format!("o{k}");
        assert_eq!(
            ledger.get(&id).map(Vec::len),
            Some(1),
            "one-off {id} ran {:?}",
            ledger.get(&id)
        );
        assert!(store
            .lookup_job(&id.as_str().into())
            .await
            .unwrap()
            .is_none());
    }
    for i in 0..INTERVALS {
        let id = format!("i{i}");
        let mut slots = ledger.remove(&id).unwrap_or_default();
        slots.sort();
        let expected: Vec<DateTime<Utc>> = (0..slots.len() as i64)
            .map(|n| start + chrono::Duration::seconds(n))
            .collect();
        assert_eq!(slots, expected, "{id}: a slot is missing");
        assert!(slots.len() >= 4, "{id} ran only {} slots", slots.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slot_runs_once_through_store_faults_on_sqlite() {
    let path = std::env::temp_dir().join(format!("{}.db", Namespace::new("faults").0));
    let store = Arc::new(SqlJobStore::sqlite(&path));
    every_slot_once_through_faults(store).await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slot_runs_once_through_store_faults_on_postgres() {
    let ns = Namespace::new("faults");
    every_slot_once_through_faults(Arc::new(postgres_store(&ns))).await;
    postgres_store(&ns).drop_table().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slot_runs_once_through_store_faults_on_redis() {
    let ns = Namespace::new("faults");
    every_slot_once_through_faults(Arc::new(redis_store(&ns))).await;
    let s = redis_store(&ns);
    s.start().await.unwrap();
    s.purge().await.unwrap();
}
