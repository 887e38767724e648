//! The run ledger end to end, on a virtual clock: every slot is recorded once with
//! its outcome, a slot already in the ledger is never started again, lapsed runs
//! are marked interrupted by a peer, and `max_instances` holds across schedulers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use sundial::clock::{Clock, VirtualClock};
use sundial::job::{JobId, OwnerId};
use sundial::prelude::*;
use sundial::run::{NewRun, RunInsert, RunQuery, RunRecord, RunState};
use sundial::{JobStore, SchedulerBuilder};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// (job id, scheduled time, run id, attempt, start, end) of each execution.
type Seen = Arc<
    Mutex<
        Vec<(
            String,
            DateTime<Utc>,
            String,
            u32,
            DateTime<Utc>,
            DateTime<Utc>,
        )>,
    >,
>;

fn builder(clock: &Arc<VirtualClock>, store: Arc<dyn JobStore>, seen: &Seen) -> SchedulerBuilder {
    let s1 = Arc::clone(seen);
    let s2 = Arc::clone(seen);
    let c1 = Arc::clone(clock);
    let c2 = Arc::clone(clock);
    Scheduler::builder()
        .clock(Arc::clone(clock) as Arc<dyn Clock>)
        .jobstore_arc("default", store)
        .executor("default", AsyncExecutor::new())
        .task("record", move |ctx: JobContext, _: ()| {
            let s = Arc::clone(&s1);
            let now = c1.now();
            async move {
                s.lock().unwrap().push((
                    ctx.job_id().to_string(),
                    ctx.scheduled_run_time(),
                    ctx.run_id().map(|r| r.to_string()).unwrap_or_default(),
                    ctx.attempt(),
                    now,
                    now,
                ));
                Ok::<_, std::io::Error>(())
            }
        })
        .task("sleep", move |ctx: JobContext, secs: u64| {
            let s = Arc::clone(&s2);
            let c = Arc::clone(&c2);
            async move {
                let start = c.now();
                tokio::time::sleep(Duration::from_secs(secs)).await;
                s.lock().unwrap().push((
                    ctx.job_id().to_string(),
                    ctx.scheduled_run_time(),
                    ctx.run_id().map(|r| r.to_string()).unwrap_or_default(),
                    ctx.attempt(),
                    start,
                    c.now(),
                ));
                Ok::<_, std::io::Error>(())
            }
        })
        .task("fail", |_ctx: JobContext, msg: String| async move {
            Err::<(), _>(msg)
        })
}

fn drain(events: &mut futures::stream::BoxStream<'static, Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(Some(e)) = events.next().now_or_never() {
        out.push(e);
    }
    out
}

fn sqlite_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("sundial-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}-{}.db", uuid::Uuid::new_v4().simple()))
}

fn sqlite_store(name: &str) -> Arc<dyn JobStore> {
    Arc::new(SqlJobStore::sqlite(sqlite_path(name)))
}

async fn runs_of(s: &Scheduler, job: &str) -> Vec<RunRecord> {
    let mut r = s
        .runs(&RunQuery::job(job).limit(10_000), None)
        .await
        .unwrap();
    r.reverse();
    r
}

#[tokio::test(start_paused = true)]
async fn every_run_is_recorded_with_its_outcome_and_id() {
    let clock = Arc::new(VirtualClock::new(at("2026-01-01T00:00:00Z")));
    let seen = Seen::default();
    let store = Arc::new(MemoryJobStore::new());
    let s = builder(&clock, store, &seen).build().unwrap();
    let mut events = s.subscribe();
    s.start().await.unwrap();
    let every = IntervalTrigger::builder().seconds(10).build().unwrap();
    s.add_job(JobSpec::new("record", every.clone()).id("ok"))
        .await
        .unwrap();
    s.add_job(
        JobSpec::new("fail", every)
            .id("bad")
            .args("disk <full>".to_string()),
    )
    .await
    .unwrap();
    s.add_job(
        JobSpec::new("sleep", DateTrigger::at(at("2026-01-01T00:00:05Z")))
            .id("slow")
            .args(30u64)
            .timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(35)).await;

    let ok = runs_of(&s, "ok").await;
    let slots: Vec<DateTime<Utc>> = ok.iter().map(|r| r.scheduled_time).collect();
    assert_eq!(
        slots,
        [10, 20, 30].map(|n| at("2026-01-01T00:00:00Z") + secs(n))
    );
    assert!(ok.iter().all(|r| r.state == RunState::Succeeded
        && r.attempt == 1
        && r.owner.as_ref() == Some(s.owner_id())
        && r.node.is_some()
        && r.finished_at.is_some()
        && r.heartbeat_until.is_none()));
    // The task saw the same run ids the ledger holds.
    let seen_ids: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.0 == "ok")
        .map(|e| e.2.clone())
        .collect();
    let ledger_ids: Vec<String> = ok.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(seen_ids, ledger_ids);

    let bad = runs_of(&s, "bad").await;
    assert_eq!(bad.len(), 3);
    assert!(bad
        .iter()
        .all(|r| r.state == RunState::Failed && r.error.as_deref() == Some("disk <full>")));

    let slow = runs_of(&s, "slow").await;
    assert_eq!(slow.len(), 1);
    assert_eq!(slow[0].state, RunState::TimedOut);
    assert_eq!(slow[0].duration(), Some(Duration::from_secs(2)));

    // Events carry the run ids; every execution was announced as started.
    let evs = drain(&mut events);
    let executed: Vec<String> = evs
        .iter()
        .filter_map(|e| match e {
            Event::JobExecuted { job_id, run_id, .. } if job_id.as_str() == "ok" => {
                run_id.as_ref().map(|r| r.to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(executed, ledger_ids);
    let started = evs
        .iter()
        .filter(|e| matches!(e, Event::JobStarted { .. }))
        .count();
    assert_eq!(started, 3 + 3 + 1);

    // Filters work through the scheduler too.
    let failed = s
        .runs(&RunQuery::default().state(RunState::Failed), None)
        .await
        .unwrap();
    assert_eq!(failed.len(), 3);
    s.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_slot_already_in_the_ledger_is_never_started_again() {
    // A peer started the 00:00:10 slot and then stalled (its lease expired
    // before it released the job): the job still says 00:00:10.
    let clock = Arc::new(VirtualClock::new(at("2026-01-01T00:00:00Z")));
    let seen = Seen::default();
    let store = Arc::new(MemoryJobStore::new());
    let s = builder(&clock, Arc::clone(&store) as Arc<dyn JobStore>, &seen)
        .build()
        .unwrap();
    s.start().await.unwrap();
    let slot = at("2026-01-01T00:00:10Z");
    let stalled = RunRecord::running(
        JobId::new("j"),
        slot,
        1,
        OwnerId::new("stalled-peer"),
        slot,
        slot + secs(3600),
    );
    let got = store
        .insert_runs(&[NewRun {
            record: stalled,
            max_instances: None,
        }])
        .await
        .unwrap();
    assert_eq!(got, vec![RunInsert::Inserted(RunState::Running)]);
    s.add_job(
        JobSpec::new(
            "record",
            IntervalTrigger::builder().seconds(10).build().unwrap(),
        )
        .id("j")
        .max_instances(5),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(25)).await;
    let ran: Vec<DateTime<Utc>> = seen.lock().unwrap().iter().map(|e| e.1).collect();
    assert_eq!(ran, vec![at("2026-01-01T00:00:20Z")]);

    // A modification that writes the old fire time back (a stale read at fire
    // time) does not resurrect the slot that already ran.
    let mut rec = store.lookup_job(&JobId::new("j")).await.unwrap().unwrap();
    rec.next_run_time = Some(at("2026-01-01T00:00:20Z"));
    store.update_job(&rec).await.unwrap();
    s.wakeup();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ran: Vec<DateTime<Utc>> = seen.lock().unwrap().iter().map(|e| e.1).collect();
    assert_eq!(
        ran,
        vec![at("2026-01-01T00:00:20Z"), at("2026-01-01T00:00:30Z")]
    );
    s.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn missed_slots_are_recorded_as_missed() {
    let clock = Arc::new(VirtualClock::new(at("2026-01-01T00:00:00Z")));
    let seen = Seen::default();
    let s = builder(&clock, Arc::new(MemoryJobStore::new()), &seen)
        .build()
        .unwrap();
    let mut events = s.subscribe();
    s.start().await.unwrap();
    s.add_job(
        JobSpec::new(
            "record",
            IntervalTrigger::builder()
                .seconds(60)
                .start_date(at("2025-12-31T23:58:00Z"))
                .build()
                .unwrap(),
        )
        .id("late")
        .coalesce(false)
        .misfire_grace_time(Some(Duration::from_secs(30)))
        .next_run_time(at("2025-12-31T23:58:00Z")),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let runs = runs_of(&s, "late").await;
    let states: Vec<(DateTime<Utc>, RunState)> =
        runs.iter().map(|r| (r.scheduled_time, r.state)).collect();
    assert_eq!(
        states,
        vec![
            (at("2025-12-31T23:58:00Z"), RunState::Missed),
            (at("2025-12-31T23:59:00Z"), RunState::Missed),
            (at("2026-01-01T00:00:00Z"), RunState::Succeeded),
        ]
    );
    assert!(runs[0].error.as_deref().unwrap().contains("grace"));
    let missed = drain(&mut events)
        .into_iter()
        .filter(|e| matches!(e, Event::JobMissed { .. }))
        .count();
    assert_eq!(missed, 2);
    s.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_owner_died_is_marked_interrupted_by_a_peer() {
    let clock = Arc::new(VirtualClock::new(at("2026-01-01T00:00:00Z")));
    let seen = Seen::default();
    let store = sqlite_store("interrupted");
    store.start().await.unwrap();
    // The dead node's last heartbeat vouched for its run until 00:00:30.
    let dead = RunRecord::running(
        JobId::new("long"),
        at("2025-12-31T23:59:00Z"),
        1,
        OwnerId::new("dead-node"),
        at("2025-12-31T23:59:00Z"),
        at("2026-01-01T00:00:30Z"),
    );
    store
        .insert_runs(&[NewRun {
            record: dead.clone(),
            max_instances: None,
        }])
        .await
        .unwrap();
    let s = builder(&clock, Arc::clone(&store), &seen)
        .lease_duration(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut events = s.subscribe();
    s.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(runs_of(&s, "long").await[0].state, RunState::Running);
    // Lapsed at 00:00:30; swept within one heartbeat (10 s) after that.
    tokio::time::sleep(Duration::from_secs(21)).await;
    let runs = runs_of(&s, "long").await;
    assert_eq!(runs[0].state, RunState::Interrupted, "{runs:?}");
    let t = runs[0].finished_at.unwrap();
    assert!(
        t > at("2026-01-01T00:00:30Z") && t <= at("2026-01-01T00:00:40Z"),
        "{t}"
    );
    let interrupted: Vec<Event> = drain(&mut events)
        .into_iter()
        .filter(|e| matches!(e, Event::JobInterrupted { .. }))
        .collect();
    assert_eq!(interrupted.len(), 1);
    assert!(matches!(&interrupted[0], Event::JobInterrupted { run_id, .. } if *run_id == dead.id));
    s.shutdown(true).await.unwrap();
}

/// A job with `OnInterrupted::Rerun` has its interrupted slot started again
/// as the next attempt by the scheduler that finds the interruption; jobs
/// with the default (`Skip`) are not rerun, and neither are slots that used
/// up their attempts.
#[tokio::test(start_paused = true)]
async fn interrupted_slots_are_rerun_when_the_job_asks_for_it() {
    let clock = Arc::new(VirtualClock::new(at("2026-01-01T00:00:00Z")));
    let seen = Seen::default();
    let store = sqlite_store("rerun");
    store.start().await.unwrap();
    let slot = at("2025-12-31T23:59:00Z");
    let dead = |job: &str, attempt: u32| {
        RunRecord::running(
            JobId::new(job),
            slot,
            attempt,
            OwnerId::new("dead-node"),
            slot,
            at("2026-01-01T00:00:30Z"),
        )
    };
    let runs: Vec<NewRun> = [("rerun", 1), ("skip", 1), ("used_up", 3)]
        .into_iter()
        .map(|(j, a)| NewRun {
            record: dead(j, a),
            max_instances: None,
        })
        .collect();
    store.insert_runs(&runs).await.unwrap();
    let s = builder(&clock, Arc::clone(&store), &seen)
        .lease_duration(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut events = s.subscribe();
    s.start().await.unwrap();
    let later = || DateTrigger::at(at("2027-01-01T00:00:00Z"));
    for (id, policy) in [
        ("rerun", OnInterrupted::Rerun),
        ("skip", OnInterrupted::Skip),
        ("used_up", OnInterrupted::Rerun),
    ] {
        s.add_job(
            JobSpec::new("record", later())
                .id(id)
                .on_interrupted(policy),
        )
        .await
        .unwrap();
    }
    // A one-off job asking for reruns is kept, paused, while its run may
    // still be interrupted, and removed when the run ends.
    s.add_job(
        JobSpec::new("sleep", DateTrigger::at(at("2026-01-01T00:00:10Z")))
            .id("once")
            .args(5)
            .on_interrupted(OnInterrupted::Rerun),
    )
    .await
    .unwrap();
    // One whose run ends at once (before its job is even released).
    s.add_job(
        JobSpec::new("record", DateTrigger::at(at("2026-01-01T00:00:05Z")))
            .id("quick")
            .on_interrupted(OnInterrupted::Rerun),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        s.get_job("quick", None).await.unwrap().is_none(),
        "a quick one-off was kept"
    );
    let once = s
        .get_job("once", None)
        .await
        .unwrap()
        .expect("kept while running");
    assert!(once.is_paused());
    assert_eq!(runs_of(&s, "once").await[0].state, RunState::Running);
    tokio::time::sleep(Duration::from_secs(33)).await;
    assert!(
        s.get_job("once", None).await.unwrap().is_none(),
        "not removed after its run"
    );
    assert_eq!(runs_of(&s, "once").await[0].state, RunState::Succeeded);
    let rerun = runs_of(&s, "rerun").await;
    assert_eq!(rerun.len(), 2, "{rerun:?}");
    assert_eq!(
        (rerun[0].attempt, rerun[0].state),
        (1, RunState::Interrupted)
    );
    assert_eq!((rerun[1].attempt, rerun[1].state), (2, RunState::Succeeded));
    assert_eq!(rerun[1].scheduled_time, slot);
    assert_eq!(rerun[1].owner.as_ref(), Some(s.owner_id()));
    for job in ["skip", "used_up"] {
        let r = runs_of(&s, job).await;
        assert_eq!(r.len(), 1, "{job}: {r:?}");
        assert_eq!(r[0].state, RunState::Interrupted, "{job}");
    }
    let mut executed: Vec<(String, u32)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|e| (e.0.clone(), e.3))
        .collect();
    executed.sort();
    assert_eq!(
        executed,
        [
            ("once".to_string(), 1),
            ("quick".to_string(), 1),
            ("rerun".to_string(), 2)
        ]
    );
    let events = drain(&mut events);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::JobRemoved { job_id, .. } if job_id.as_str() == "once")),
        "{events:?}"
    );
    let retries: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::JobRetry { .. }))
        .collect();
    assert!(
        matches!(&retries[..], [Event::JobRetry { job_id, attempt: 2, .. }] if job_id.as_str() == "rerun"),
        "{retries:?}"
    );
    s.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn max_instances_holds_across_schedulers_on_one_store() {
    let clock = Arc::new(VirtualClock::new(at("2026-01-01T00:00:00Z")));
    let seen = Seen::default();
    let path = sqlite_path("max-instances");
    let a = builder(&clock, Arc::new(SqlJobStore::sqlite(&path)), &seen)
        .build()
        .unwrap();
    // The same file through a second handle: another process.
    let b = builder(&clock, Arc::new(SqlJobStore::sqlite(&path)), &seen)
        .build()
        .unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    a.add_job(
        JobSpec::new(
            "sleep",
            IntervalTrigger::builder().seconds(60).build().unwrap(),
        )
        .id("long")
        .args(150u64)
        .max_instances(1),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(60 * 8 + 30)).await;
    a.pause().unwrap();
    b.pause().unwrap();
    let runs = runs_of(&a, "long").await;
    a.shutdown(true).await.unwrap();
    b.shutdown(true).await.unwrap();

    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        seen.lock().unwrap().iter().map(|e| (e.4, e.5)).collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "runs overlap: {w:?}");
    }
    let base = at("2026-01-01T00:00:00Z");
    let started: Vec<DateTime<Utc>> = seen.lock().unwrap().iter().map(|e| e.1).collect();
    assert_eq!(
        {
            let mut s = started.clone();
            s.sort();
            s
        },
        [1, 4, 7].map(|m| base + secs(60 * m)).to_vec()
    );
    let skipped: Vec<DateTime<Utc>> = runs
        .iter()
        .filter(|r| r.state == RunState::Skipped)
        .map(|r| r.scheduled_time)
        .collect();
    assert_eq!(
        skipped,
        [2, 3, 5, 6, 8].map(|m| base + secs(60 * m)).to_vec()
    );
}

#[tokio::test(start_paused = true)]
async fn a_sub_microsecond_start_runs_each_slot_once_on_a_persistent_store() {
    let start = at("2026-01-01T00:00:41.480332242Z");
    let clock = Arc::new(VirtualClock::new(at("2026-01-01T00:00:40Z")));
    let seen = Seen::default();
    let s = builder(&clock, sqlite_store("submicro"), &seen)
        .build()
        .unwrap();
    s.start().await.unwrap();
    s.add_job(
        JobSpec::new(
            "record",
            IntervalTrigger::builder()
                .seconds(1)
                .start_date(start)
                .build()
                .unwrap(),
        )
        .id("tick")
        .coalesce(false),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(10_800)).await;
    s.shutdown(true).await.unwrap();
    let mut slots: Vec<DateTime<Utc>> = seen.lock().unwrap().iter().map(|e| e.1).collect();
    slots.sort();
    let expected: Vec<DateTime<Utc>> = (0..10)
        .map(|i| at("2026-01-01T00:00:41.480332Z") + secs(i))
        .collect();
    assert_eq!(slots, expected);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_without_waiting_records_abandoned_runs_as_interrupted() {
    let clock = Arc::new(VirtualClock::new(at("2026-01-01T00:00:00Z")));
    let seen = Seen::default();
    let store = Arc::new(MemoryJobStore::new());
    let s = builder(&clock, Arc::clone(&store) as Arc<dyn JobStore>, &seen)
        .build()
        .unwrap();
    s.start().await.unwrap();
    s.add_job(
        JobSpec::new("sleep", DateTrigger::at(at("2026-01-01T00:00:01Z")))
            .id("cut")
            .args(600u64),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    s.shutdown(false).await.unwrap();
    let runs = store.query_runs(&RunQuery::job("cut")).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].state, RunState::Interrupted);
    assert!(runs[0].error.as_deref().unwrap().contains("shut down"));
}

#[test]
fn a_lease_without_room_for_heartbeats_is_refused() {
    let err = Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .lease_duration(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("greater than zero"), "{err}");
    let err = Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .lease_duration(Duration::from_secs(30))
        .heartbeat_interval(Duration::from_secs(11))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("a third"), "{err}");
    let err = Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .run_retention(Duration::from_secs(60))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("run_retention"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn failed_runs_are_retried_with_backoff_as_new_attempts_of_their_slot() {
    let clock = Arc::new(VirtualClock::new(at("2026-01-01T00:00:00Z")));
    let seen = Seen::default();
    let store = Arc::new(MemoryJobStore::new());
    let s2 = Arc::clone(&seen);
    let c = Arc::clone(&clock);
    let s = builder(&clock, store, &seen)
        .task("flaky", move |ctx: JobContext, fail_until: u32| {
            let s = Arc::clone(&s2);
            let now = c.now();
            async move {
                s.lock().unwrap().push((
                    ctx.job_id().to_string(),
                    ctx.scheduled_run_time(),
                    ctx.run_id().map(|r| r.to_string()).unwrap_or_default(),
                    ctx.attempt(),
                    now,
                    now,
                ));
                if ctx.attempt() < fail_until {
                    Err(format!("attempt {} failed", ctx.attempt()))
                } else {
                    Ok(())
                }
            }
        })
        .build()
        .unwrap();
    let mut events = s.subscribe();
    s.start().await.unwrap();
    let once = DateTrigger::at(at("2026-01-01T00:01:00Z"));
    // Succeeds at the third attempt: retried after 10 s, then 20 s.
    s.add_job(
        JobSpec::new("flaky", once.clone())
            .id("third-time-lucky")
            .args(3u32)
            .retries(5, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    // Never succeeds: three attempts in all, then it stays failed.
    s.add_job(
        JobSpec::new("flaky", once)
            .id("hopeless")
            .args(100u32)
            .retries(3, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;

    let base = at("2026-01-01T00:01:00Z");
    for (job, expect) in [
        (
            "third-time-lucky",
            vec![
                (1, RunState::Failed, 0),
                (2, RunState::Failed, 10),
                (3, RunState::Succeeded, 30),
            ],
        ),
        (
            "hopeless",
            vec![
                (1, RunState::Failed, 0),
                (2, RunState::Failed, 10),
                (3, RunState::Failed, 30),
            ],
        ),
    ] {
        let mut runs = runs_of(&s, job).await;
        runs.sort_by_key(|r| r.attempt);
        let got: Vec<(u32, RunState, i64)> = runs
            .iter()
            .map(|r| {
                assert_eq!(r.scheduled_time, base, "every attempt is for the same slot");
                (
                    r.attempt,
                    r.state,
                    (r.started_at.unwrap() - base).num_seconds(),
                )
            })
            .collect();
        assert_eq!(got, expect, "{job}");
        // The task saw each attempt number.
        let attempts: Vec<u32> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.0 == job)
            .map(|e| e.3)
            .collect();
        assert_eq!(attempts, [1, 2, 3], "{job}");
    }
    let retries: Vec<(String, u32, DateTime<Utc>)> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            Event::JobRetry {
                job_id,
                attempt,
                retry_at,
                ..
            } => Some((job_id.to_string(), attempt, retry_at)),
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), 4, "{retries:?}");
    assert!(retries.contains(&("hopeless".into(), 3, base + secs(30))));
    s.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn busy_nodes_keep_heartbeating_their_long_runs() {
    let clock = Arc::new(VirtualClock::new(at("2026-01-01T00:00:00Z")));
    let seen = Seen::default();
    let s = builder(&clock, sqlite_store("heartbeat"), &seen)
        .lease_duration(Duration::from_secs(30))
        .build()
        .unwrap();
    s.start().await.unwrap();
    s.add_job(
        JobSpec::new("sleep", DateTrigger::at(at("2026-01-01T00:00:01Z")))
            .id("long")
            .args(300u64),
    )
    .await
    .unwrap();
    // Runs finishing every 2 s keep the ledger task busy.
    s.add_job(
        JobSpec::new(
            "record",
            IntervalTrigger::builder().seconds(2).build().unwrap(),
        )
        .id("chatty"),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let long = runs_of(&s, "long").await;
    assert_eq!(long.len(), 1);
    assert_eq!(long[0].state, RunState::Running, "{long:?}");
    let hb = long[0].heartbeat_until.unwrap();
    assert!(
        hb >= at("2026-01-01T00:02:00Z"),
        "heartbeat not extended while other runs finish: {hb}"
    );
    s.shutdown(false).await.unwrap();
}

/// A coalesced backlog runs once, and the slots folded into that run are in
/// the history too (`missed`, "coalesced"), without a `JobMissed` each.
#[tokio::test(start_paused = true)]
async fn coalesced_slots_are_recorded() {
    let clock = Arc::new(VirtualClock::new(at("2026-01-01T00:00:00Z")));
    let seen = Seen::default();
    let store = Arc::new(MemoryJobStore::new());
    let s = builder(&clock, store, &seen).build().unwrap();
    let mut events = s.subscribe();
    s.start_paused().await.unwrap();
    let every = IntervalTrigger::builder()
        .seconds(10)
        .start_date(at("2026-01-01T00:00:10Z"))
        .build()
        .unwrap();
    s.add_job(
        JobSpec::new("record", every)
            .id("c")
            .coalesce(true)
            .misfire_grace_time(None),
    )
    .await
    .unwrap();
    // Down (paused) over five slots, then back.
    tokio::time::sleep(Duration::from_secs(55)).await;
    s.resume().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ran: Vec<DateTime<Utc>> = seen.lock().unwrap().iter().map(|e| e.1).collect();
    assert_eq!(ran, vec![at("2026-01-01T00:00:50Z")]);
    let runs = runs_of(&s, "c").await;
    let states: Vec<(DateTime<Utc>, RunState)> =
        runs.iter().map(|r| (r.scheduled_time, r.state)).collect();
    assert_eq!(
        states,
        vec![
            (at("2026-01-01T00:00:10Z"), RunState::Missed),
            (at("2026-01-01T00:00:20Z"), RunState::Missed),
            (at("2026-01-01T00:00:30Z"), RunState::Missed),
            (at("2026-01-01T00:00:40Z"), RunState::Missed),
            (at("2026-01-01T00:00:50Z"), RunState::Succeeded),
        ]
    );
    assert!(runs[0]
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with("coalesced")));
    assert!(!drain(&mut events)
        .iter()
        .any(|e| matches!(e, Event::JobMissed { .. })));
    s.shutdown(true).await.unwrap();
}

/// The hourly prune keeps at most `run_retention_per_job` runs of a job past
/// the safety floor (an hour here), and every run of the last hour.
#[tokio::test(start_paused = true)]
async fn each_jobs_history_is_cut_to_its_limit_past_the_last_hour() {
    let clock = Arc::new(VirtualClock::new(at("2026-01-01T00:00:00Z")));
    let seen = Seen::default();
    let s = builder(&clock, sqlite_store("per-job"), &seen)
        .lease_duration(Duration::from_secs(30))
        .run_retention_per_job(10)
        .build()
        .unwrap();
    s.start().await.unwrap();
    s.add_job(
        JobSpec::new(
            "record",
            IntervalTrigger::every(Duration::from_secs(60)).unwrap(),
        )
        .id("minutely"),
    )
    .await
    .unwrap();
    // Prunes run at start and every hour: at 03:00 the runs before 02:00 go.
    tokio::time::sleep(Duration::from_secs(3 * 3600 + 30)).await;
    let runs = runs_of(&s, "minutely").await;
    assert!(
        (60..=62).contains(&runs.len()),
        "{} runs kept; expected the last hour's",
        runs.len()
    );
    assert!(
        runs[0].scheduled_time >= at("2026-01-01T02:00:00Z"),
        "{:?}",
        runs[0]
    );
    assert!(seen.lock().unwrap().len() >= 180, "the job stopped running");
    s.shutdown(true).await.unwrap();
}

/// How many `JobError` events outside any run `events` hold for `job`.
fn job_errors(events: &[Event], job: &str) -> usize {
    events
        .iter()
        .filter(
            |e| matches!(e, Event::JobError { job_id, run_id: None, .. } if job_id.as_str() == job),
        )
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_job_this_scheduler_cannot_run_is_handed_to_one_that_can_at_once() {
    let t0 = at("2026-01-01T00:00:00Z");
    let clock = Arc::new(VirtualClock::new(t0));
    let seen = Seen::default();
    let path = sqlite_path("hand-back");
    // `a` is an older build that lacks the task; `b` has it.
    let a = builder(&clock, Arc::new(SqlJobStore::sqlite(&path)), &seen)
        .build()
        .unwrap();
    let s = Arc::clone(&seen);
    let c = Arc::clone(&clock);
    let b = builder(&clock, Arc::new(SqlJobStore::sqlite(&path)), &seen)
        .task("new_task", move |ctx: JobContext, _: ()| {
            let s = Arc::clone(&s);
            let now = c.now();
            async move {
                s.lock().unwrap().push((
                    ctx.job_id().to_string(),
                    ctx.scheduled_run_time(),
                    ctx.run_id().map(|r| r.to_string()).unwrap_or_default(),
                    ctx.attempt(),
                    now,
                    now,
                ));
                Ok::<_, std::io::Error>(())
            }
        })
        .build()
        .unwrap();
    let mut a_events = a.subscribe();
    b.start_paused().await.unwrap();
    b.add_job(
        JobSpec::new(
            "new_task",
            DateTrigger::at(t0 + chrono::Duration::milliseconds(100)),
        )
        .id("new"),
    )
    .await
    .unwrap();
    a.start().await.unwrap();
    // `a` claims the job first and cannot run it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(job_errors(&drain(&mut a_events), "new"), 1);
    b.resume().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    // Run by `b` at once, not after `a`'s lease ran out.
    assert!(
        got[0].4 < t0 + chrono::Duration::seconds(1),
        "started at {}",
        got[0].4
    );
    let runs = runs_of(&b, "new").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].state, RunState::Succeeded);
    assert_eq!(runs[0].owner.as_ref(), Some(b.owner_id()));
    a.shutdown(true).await.unwrap();
    b.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_job_nobody_can_run_is_reported_at_a_slowing_rate_and_kept() {
    let t0 = at("2026-01-01T00:00:00Z");
    let clock = Arc::new(VirtualClock::new(t0));
    let seen = Seen::default();
    let path = sqlite_path("nobody");
    let store: Arc<dyn JobStore> = Arc::new(SqlJobStore::sqlite(&path));
    // A job stored by a build that had the task.
    let old = builder(&clock, Arc::clone(&store), &seen)
        .task("gone_task", |_: JobContext, _: ()| async {
            Ok::<_, std::io::Error>(())
        })
        .build()
        .unwrap();
    old.start_paused().await.unwrap();
    old.add_job(
        JobSpec::new(
            "gone_task",
            IntervalTrigger::builder()
                .seconds(10)
                .start_date(t0)
                .build()
                .unwrap(),
        )
        .id("orphan"),
    )
    .await
    .unwrap();
    old.shutdown(true).await.unwrap();
    let a = builder(&clock, Arc::clone(&store), &seen).build().unwrap();
    let mut events = a.subscribe();
    a.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(130)).await;
    // Reported at 0, 1, 3, 7, 15, 31, 63 and 123 s: not on every pass.
    let errors = job_errors(&drain(&mut events), "orphan");
    assert!((7..=9).contains(&errors), "{errors} reports");
    // Kept, due at its stored time, never recorded as run or missed.
    let kept = store
        .lookup_job(&JobId::new("orphan"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.next_run_time, Some(t0));
    assert!(runs_of(&a, "orphan").await.is_empty());
    a.shutdown(true).await.unwrap();
}
