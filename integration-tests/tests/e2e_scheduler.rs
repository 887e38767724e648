//! End-to-end scheduler tests on a virtual clock (tokio paused time): days of
//! schedule run in milliseconds, and every assertion is about exact instants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use sundial::clock::{Clock, VirtualClock};
use sundial::prelude::*;
use sundial::{JobId, JobStore, SchedulerState};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

type Runs = Arc<Mutex<Vec<(String, DateTime<Utc>)>>>;

struct Harness {
    scheduler: Scheduler,
    runs: Runs,
    clock: Arc<VirtualClock>,
    store: Arc<MemoryJobStore>,
}

fn harness_with(
    start: &str,
    f: impl FnOnce(sundial::SchedulerBuilder) -> sundial::SchedulerBuilder,
) -> Harness {
    let runs: Runs = Arc::default();
    let clock = Arc::new(VirtualClock::new(at(start)));
    let store = Arc::new(MemoryJobStore::new());
    let r = Arc::clone(&runs);
    let builder = Scheduler::builder()
        .clock(Arc::clone(&clock) as Arc<dyn Clock>)
        .jobstore_arc("default", Arc::clone(&store) as Arc<dyn JobStore>)
        .executor("default", AsyncExecutor::new())
        .executor("blocking", ThreadPoolExecutor::new(2))
        .task("record", move |ctx: JobContext, _: ()| {
            let r = Arc::clone(&r);
            async move {
                r.lock()
                    .unwrap()
                    .push((ctx.job_id().to_string(), ctx.scheduled_run_time()));
                Ok::<_, std::io::Error>(())
            }
        })
        .task("sleep", |ctx: JobContext, secs: u64| async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(secs)) => Ok(()),
                _ = ctx.cancelled() => Err("cancelled".to_string()),
            }
        })
        .task("fail", |_ctx: JobContext, msg: String| async move {
            Err::<(), _>(msg)
        })
        .task("panic", |_ctx: JobContext, _: ()| async move {
            if true {
                panic!("boom in task");
            }
            Ok::<_, std::io::Error>(())
        });
    let scheduler = f(builder).build().unwrap();
    Harness {
        scheduler,
        runs,
        clock,
        store,
    }
}

fn harness(start: &str) -> Harness {
    harness_with(start, |b| b)
}

impl Harness {
    fn runs_of(&self, id: &str) -> Vec<DateTime<Utc>> {
        self.runs
            .lock()
            .unwrap()
            .iter()
            .filter(|(j, _)| j == id)
            .map(|(_, t)| *t)
            .collect()
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

fn drain(events: &mut futures::stream::BoxStream<'static, Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(Some(e)) = events.next().now_or_never() {
        out.push(e);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn weekday_cron_in_shanghai_fires_22_times_in_june() {
    let h = harness_with("2026-06-01T00:00:00+08:00", |b| {
        b.timezone("Asia/Shanghai").unwrap()
    });
    h.scheduler.start().await.unwrap();
    h.scheduler
        .add_job(
            JobSpec::new("record", CronTrigger::from_crontab("0 9 * * 1-5").unwrap()).id("report"),
        )
        .await
        .unwrap();
    h.sleep(Duration::from_secs(30 * 86_400)).await;
    let runs = h.runs_of("report");
    let expected: Vec<DateTime<Utc>> = [
        1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 15, 16, 17, 18, 19, 22, 23, 24, 25, 26, 29, 30,
    ]
    .iter()
    .map(|d| at(&format!("2026-06-{d:02}T09:00:00+08:00")))
    .collect();
    assert_eq!(runs, expected);
    assert_eq!(h.clock.now(), at("2026-07-01T00:00:00+08:00"));
    h.scheduler.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn date_job_runs_once_and_is_removed() {
    let h = harness("2026-01-01T00:00:00Z");
    let mut events = h.scheduler.subscribe();
    h.scheduler.start().await.unwrap();
    h.scheduler
        .add_job(JobSpec::new("record", DateTrigger::at(at("2026-01-01T00:10:00Z"))).id("once"))
        .await
        .unwrap();
    h.sleep(Duration::from_secs(3600)).await;
    assert_eq!(h.runs_of("once"), vec![at("2026-01-01T00:10:00Z")]);
    assert!(h.scheduler.get_job("once", None).await.unwrap().is_none());
    let evs = drain(&mut events);
    let kinds: Vec<EventMask> = evs.iter().map(|e| e.mask()).collect();
    let started = kinds
        .iter()
        .position(|k| *k == EventMask::JOB_STARTED)
        .unwrap();
    let executed = kinds
        .iter()
        .position(|k| *k == EventMask::JOB_EXECUTED)
        .unwrap();
    assert!(started < executed, "{kinds:?}");
    let without_started: Vec<EventMask> = kinds
        .into_iter()
        .filter(|k| *k != EventMask::JOB_STARTED)
        .collect();
    assert_eq!(
        without_started,
        vec![
            EventMask::SCHEDULER_STARTED,
            EventMask::JOB_ADDED,
            EventMask::JOB_SUBMITTED,
            EventMask::JOB_REMOVED,
            EventMask::JOB_EXECUTED,
        ]
    );
    h.scheduler.shutdown(true).await.unwrap();
}

/// The loop sleeps until its next planned pass and is woken only by changes
/// that are due before it: each kind of change due sooner runs on time.
#[tokio::test(start_paused = true)]
async fn changes_due_before_the_planned_pass_wake_the_loop() {
    let h = harness("2026-01-01T00:00:00Z");
    h.scheduler.start().await.unwrap();
    let date = |id: &str, t: &str| JobSpec::new("record", DateTrigger::at(at(t))).id(id);
    h.scheduler
        .add_job(date("late", "2026-01-01T10:00:00Z"))
        .await
        .unwrap();
    h.scheduler
        .add_job(date("moved", "2026-01-01T20:00:00Z"))
        .await
        .unwrap();
    h.sleep(Duration::from_secs(60)).await;
    // One by one, due before the planned pass (10:00).
    h.scheduler
        .add_job(date("soon", "2026-01-01T00:02:00Z"))
        .await
        .unwrap();
    // Due after it: found at 10:00 without a wake-up.
    h.scheduler
        .add_job(date("later", "2026-01-01T11:00:00Z"))
        .await
        .unwrap();
    h.sleep(Duration::from_secs(120)).await;
    assert_eq!(h.runs_of("soon"), vec![at("2026-01-01T00:02:00Z")]);
    // In a batch.
    h.scheduler
        .add_jobs(vec![
            date("batch-late", "2026-01-01T09:00:00Z"),
            date("batch-soon", "2026-01-01T00:04:00Z"),
        ])
        .await
        .unwrap();
    h.sleep(Duration::from_secs(120)).await;
    assert_eq!(h.runs_of("batch-soon"), vec![at("2026-01-01T00:04:00Z")]);
    // A job moved earlier.
    h.scheduler
        .reschedule_job("moved", None, DateTrigger::at(at("2026-01-01T00:06:00Z")))
        .await
        .unwrap();
    h.sleep(Duration::from_secs(120)).await;
    assert_eq!(h.runs_of("moved"), vec![at("2026-01-01T00:06:00Z")]);
    assert!(h.runs_of("late").is_empty() && h.runs_of("later").is_empty());
    h.sleep(Duration::from_secs(12 * 3600)).await;
    assert_eq!(h.runs_of("batch-late"), vec![at("2026-01-01T09:00:00Z")]);
    assert_eq!(h.runs_of("late"), vec![at("2026-01-01T10:00:00Z")]);
    assert_eq!(h.runs_of("later"), vec![at("2026-01-01T11:00:00Z")]);
    h.scheduler.shutdown(true).await.unwrap();
}

/// A job added while the loop is in a pass, after it read the store's next
/// run time and before it planned its sleep, still wakes it: the answer it
/// plans with predates the job.
#[tokio::test(start_paused = true)]
async fn a_job_added_during_a_pass_wakes_the_loop() {
    let store = Arc::new(sundial_integration_tests::faults::FaultyStore::new(
        Arc::new(MemoryJobStore::new()),
        [],
    ));
    let clock = Arc::new(VirtualClock::new(at("2026-01-01T00:00:00Z")));
    let runs: Runs = Arc::default();
    let r = Arc::clone(&runs);
    let scheduler = Scheduler::builder()
        .clock(Arc::clone(&clock) as Arc<dyn Clock>)
        .jobstore_arc("default", Arc::clone(&store) as Arc<dyn JobStore>)
        .executor("default", AsyncExecutor::new())
        .task("record", move |ctx: JobContext, _: ()| {
            r.lock()
                .unwrap()
                .push((ctx.job_id().to_string(), ctx.scheduled_run_time()));
            async { Ok::<_, std::io::Error>(()) }
        })
        .build()
        .unwrap();
    scheduler.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The next pass reads an empty store, then waits to answer.
    let hold = store.hold_next_poll();
    scheduler.wakeup();
    hold.read.notified().await;
    scheduler
        .add_job(JobSpec::new("record", DateTrigger::at(at("2026-01-01T00:01:00Z"))).id("j"))
        .await
        .unwrap();
    hold.answer.notify_one();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let ran: Vec<DateTime<Utc>> = runs.lock().unwrap().iter().map(|(_, t)| *t).collect();
    assert_eq!(ran, vec![at("2026-01-01T00:01:00Z")]);
    scheduler.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn interval_job_keeps_its_rhythm() {
    let h = harness("2026-01-01T00:00:00Z");
    h.scheduler.start().await.unwrap();
    h.scheduler
        .add_job(
            JobSpec::new(
                "record",
                IntervalTrigger::builder().minutes(10).build().unwrap(),
            )
            .id("tick"),
        )
        .await
        .unwrap();
    h.sleep(Duration::from_secs(3601)).await;
    let expected: Vec<_> = (1..=6)
        .map(|i| at("2026-01-01T00:00:00Z") + chrono::Duration::minutes(10 * i))
        .collect();
    assert_eq!(h.runs_of("tick"), expected);
    h.scheduler.shutdown(true).await.unwrap();
}

/// Adds a job whose next run time lies `backlog` in the past, runs the loop, and
/// returns (executed run times, missed run times).
async fn backlog_case(
    every: i64,
    backlog: i64,
    coalesce: bool,
    grace: Option<u64>,
) -> (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) {
    let start = "2026-01-01T12:00:00Z";
    let h = harness(start);
    let now = at(start);
    let mut events = h.scheduler.subscribe();
    h.scheduler.start().await.unwrap();
    let first = now - chrono::Duration::minutes(backlog);
    h.scheduler
        .add_job(
            JobSpec::new(
                "record",
                IntervalTrigger::builder()
                    .minutes(every as u64)
                    .start_date(first)
                    .build()
                    .unwrap(),
            )
            .id("job")
            .next_run_time(first)
            .coalesce(coalesce)
            .misfire_grace_time(grace.map(Duration::from_secs)),
        )
        .await
        .unwrap();
    h.sleep(Duration::from_secs(1)).await;
    let missed = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            Event::JobMissed {
                scheduled_run_time, ..
            } => Some(scheduled_run_time),
            _ => None,
        })
        .collect();
    let runs = h.runs_of("job");
    h.scheduler.shutdown(true).await.unwrap();
    (runs, missed)
}

#[tokio::test(start_paused = true)]
async fn misfire_and_coalesce_matrix() {
    let t = |m: i64| at("2026-01-01T12:00:00Z") - chrono::Duration::minutes(m);
    // Backlog -5m ..= now, one run per minute.
    let (runs, missed) = backlog_case(1, 5, false, None).await;
    assert_eq!(runs, vec![t(5), t(4), t(3), t(2), t(1), t(0)]);
    assert!(missed.is_empty());

    let (runs, missed) = backlog_case(1, 5, false, Some(90)).await;
    assert_eq!(runs, vec![t(1), t(0)]);
    assert_eq!(missed, vec![t(5), t(4), t(3), t(2)]);

    let (runs, missed) = backlog_case(1, 5, true, None).await;
    assert_eq!(runs, vec![t(0)]);
    assert!(missed.is_empty());

    let (runs, missed) = backlog_case(1, 5, true, Some(90)).await;
    assert_eq!(runs, vec![t(0)]);
    assert!(missed.is_empty());

    // Every 10 minutes from -25m: -25, -15, -5 are due; the latest is 5 minutes late.
    let (runs, missed) = backlog_case(10, 25, true, Some(60)).await;
    assert!(runs.is_empty());
    assert_eq!(missed, vec![t(5)]);

    let (runs, missed) = backlog_case(10, 25, false, Some(60)).await;
    assert!(runs.is_empty());
    assert_eq!(missed, vec![t(25), t(15), t(5)]);

    let (runs, missed) = backlog_case(10, 25, false, Some(600)).await;
    assert_eq!(runs, vec![t(5)]);
    assert_eq!(missed, vec![t(25), t(15)]);
}

#[tokio::test(start_paused = true)]
async fn max_instances_skips_overlapping_runs() {
    let h = harness("2026-01-01T00:00:00Z");
    let mut events = h.scheduler.subscribe();
    h.scheduler.start().await.unwrap();
    // Runs every minute and takes 150 s: the runs at 2m and 3m overlap the one at 1m.
    h.scheduler
        .add_job(
            JobSpec::new(
                "sleep",
                IntervalTrigger::builder().minutes(1).build().unwrap(),
            )
            .id("slow")
            .args(150u64)
            .max_instances(1),
        )
        .await
        .unwrap();
    h.sleep(Duration::from_secs(330)).await;
    let evs = drain(&mut events);
    let started: Vec<DateTime<Utc>> = evs
        .iter()
        .filter_map(|e| match e {
            Event::JobSubmitted { run_times, .. } => Some(run_times[0]),
            _ => None,
        })
        .collect();
    let skipped: Vec<DateTime<Utc>> = evs
        .iter()
        .filter_map(|e| match e {
            Event::JobMaxInstances { run_times, .. } => Some(run_times[0]),
            _ => None,
        })
        .collect();
    let m = |i: i64| at("2026-01-01T00:00:00Z") + chrono::Duration::minutes(i);
    assert_eq!(started, vec![m(1), m(4)]);
    assert_eq!(skipped, vec![m(2), m(3), m(5)]);
    h.scheduler.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn max_instances_two_allows_overlap() {
    let h = harness("2026-01-01T00:00:00Z");
    let mut events = h.scheduler.subscribe();
    h.scheduler.start().await.unwrap();
    h.scheduler
        .add_job(
            JobSpec::new(
                "sleep",
                IntervalTrigger::builder().minutes(1).build().unwrap(),
            )
            .id("slow")
            .args(150u64)
            .max_instances(2),
        )
        .await
        .unwrap();
    h.sleep(Duration::from_secs(270)).await;
    let evs = drain(&mut events);
    let submitted = evs
        .iter()
        .filter(|e| matches!(e, Event::JobSubmitted { .. }))
        .count();
    let skipped = evs
        .iter()
        .filter(|e| matches!(e, Event::JobMaxInstances { .. }))
        .count();
    // 1m and 2m run together, 3m is refused (both still running), 4m runs.
    assert_eq!((submitted, skipped), (3, 1));
    h.scheduler.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn jobs_added_before_start_are_pending_then_scheduled() {
    let h = harness("2026-01-01T00:00:00Z");
    h.scheduler
        .add_job(JobSpec::new("record", DateTrigger::at(at("2026-01-01T00:05:00Z"))).id("early"))
        .await
        .unwrap();
    let jobs = h.scheduler.get_jobs(None).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].is_pending());
    assert!(h
        .store
        .lookup_job(&JobId::new("early"))
        .await
        .unwrap()
        .is_none());
    h.scheduler.start().await.unwrap();
    assert!(h
        .store
        .lookup_job(&JobId::new("early"))
        .await
        .unwrap()
        .is_some());
    h.sleep(Duration::from_secs(600)).await;
    assert_eq!(h.runs_of("early"), vec![at("2026-01-01T00:05:00Z")]);
    h.scheduler.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn pause_and_resume_a_job() {
    let h = harness("2026-01-01T00:00:00Z");
    h.scheduler.start().await.unwrap();
    h.scheduler
        .add_job(
            JobSpec::new(
                "record",
                IntervalTrigger::builder().minutes(1).build().unwrap(),
            )
            .id("p"),
        )
        .await
        .unwrap();
    h.sleep(Duration::from_secs(150)).await; // runs at 1m, 2m
    let paused = h.scheduler.pause_job("p", None).await.unwrap();
    assert!(paused.is_paused());
    h.sleep(Duration::from_secs(300)).await; // nothing at 3m..7m
    let resumed = h.scheduler.resume_job("p", None).await.unwrap().unwrap();
    assert_eq!(resumed.next_run_time(), Some(at("2026-01-01T00:08:00Z")));
    h.sleep(Duration::from_secs(120)).await; // 8m, 9m
    let m = |i: i64| at("2026-01-01T00:00:00Z") + chrono::Duration::minutes(i);
    assert_eq!(h.runs_of("p"), vec![m(1), m(2), m(8), m(9)]);
    h.scheduler.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn pause_and_resume_the_scheduler() {
    let h = harness("2026-01-01T00:00:00Z");
    let mut events = h.scheduler.subscribe();
    h.scheduler.start_paused().await.unwrap();
    assert_eq!(h.scheduler.state(), SchedulerState::Paused);
    h.scheduler
        .add_job(
            JobSpec::new(
                "record",
                IntervalTrigger::builder().minutes(1).build().unwrap(),
            )
            .id("j")
            .coalesce(true)
            .misfire_grace_time(None),
        )
        .await
        .unwrap();
    h.sleep(Duration::from_secs(330)).await;
    assert!(h.runs_of("j").is_empty());
    h.scheduler.resume().unwrap();
    h.sleep(Duration::from_millis(10)).await;
    // The backlog 1m..5m coalesces into one run (the latest).
    assert_eq!(h.runs_of("j"), vec![at("2026-01-01T00:05:00Z")]);
    h.scheduler.pause().unwrap();
    let kinds: Vec<EventMask> = drain(&mut events).iter().map(|e| e.mask()).collect();
    assert!(kinds.contains(&EventMask::SCHEDULER_PAUSED));
    assert!(kinds.contains(&EventMask::SCHEDULER_RESUMED));
    h.scheduler.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn exhausted_trigger_removes_the_job() {
    let h = harness("2026-01-01T00:00:00Z");
    h.scheduler.start().await.unwrap();
    h.scheduler
        .add_job(
            JobSpec::new(
                "record",
                IntervalTrigger::builder()
                    .minutes(1)
                    .start_date(at("2026-01-01T00:01:00Z"))
                    .end_date(at("2026-01-01T00:03:00Z"))
                    .build()
                    .unwrap(),
            )
            .id("bounded"),
        )
        .await
        .unwrap();
    h.sleep(Duration::from_secs(600)).await;
    assert_eq!(h.runs_of("bounded").len(), 3);
    assert!(h
        .scheduler
        .get_job("bounded", None)
        .await
        .unwrap()
        .is_none());
    h.scheduler.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_wait_true_waits_for_running_jobs() {
    let h = harness("2026-01-01T00:00:00Z");
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    h.scheduler.start().await.unwrap();
    h.scheduler
        .add_job(JobSpec::inline(
            DateTrigger::at(at("2026-01-01T00:00:01Z")),
            move |_| {
                let d = Arc::clone(&d);
                async move {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    d.store(true, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(())
                }
            },
        ))
        .await
        .unwrap();
    h.sleep(Duration::from_secs(2)).await;
    assert!(!done.load(Ordering::SeqCst));
    h.scheduler.shutdown(true).await.unwrap();
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(h.scheduler.state(), SchedulerState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn shutdown_wait_false_returns_at_once_and_cancels() {
    let h = harness("2026-01-01T00:00:00Z");
    let cancelled = Arc::new(AtomicBool::new(false));
    let c = Arc::clone(&cancelled);
    h.scheduler.start().await.unwrap();
    h.scheduler
        .add_job(JobSpec::inline(
            DateTrigger::at(at("2026-01-01T00:00:01Z")),
            move |ctx| {
                let c = Arc::clone(&c);
                async move {
                    ctx.cancelled().await;
                    c.store(true, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(())
                }
            },
        ))
        .await
        .unwrap();
    h.sleep(Duration::from_secs(2)).await;
    let before = h.clock.now();
    h.scheduler.shutdown(false).await.unwrap();
    assert_eq!(h.clock.now(), before, "shutdown(false) must not wait");
    tokio::task::yield_now().await;
    h.sleep(Duration::from_millis(1)).await;
    assert!(cancelled.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn failing_and_panicking_tasks_become_error_events() {
    let h = harness("2026-01-01T00:00:00Z");
    let mut events = h.scheduler.subscribe();
    h.scheduler.start().await.unwrap();
    let when = DateTrigger::at(at("2026-01-01T00:01:00Z"));
    h.scheduler
        .add_job(JobSpec::new("panic", when.clone()).id("p"))
        .await
        .unwrap();
    h.scheduler
        .add_job(JobSpec::new("fail", when.clone()).id("f").args("disk full"))
        .await
        .unwrap();
    // Arguments are checked when a job is added; a job stored with arguments
    // that no longer fit (its task changed) fails when it runs.
    let stored = sundial_integration_tests::conformance::record(
        "bad-args",
        "fail",
        when.to_json(),
        serde_json::json!(42),
        Some(at("2026-01-01T00:01:00Z")),
    );
    h.store.add_job(&stored).await.unwrap();
    h.sleep(Duration::from_secs(120)).await;
    let errors: Vec<(String, String)> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            Event::JobError { job_id, error, .. } => Some((job_id.to_string(), error)),
            _ => None,
        })
        .collect();
    let find = |id: &str| {
        errors
            .iter()
            .find(|(j, _)| j == id)
            .map(|(_, e)| e.clone())
            .unwrap()
    };
    assert_eq!(find("p"), "task panicked: boom in task");
    assert_eq!(find("f"), "disk full");
    assert!(
        find("bad-args").contains("invalid arguments for task 'fail'"),
        "{}",
        find("bad-args")
    );
    // The scheduler keeps working after a panic.
    assert_eq!(h.scheduler.state(), SchedulerState::Running);
    h.scheduler.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn panicking_listener_does_not_stop_other_listeners() {
    let h = harness("2026-01-01T00:00:00Z");
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    h.scheduler
        .add_listener(EventMask::ALL, |_: &Event| panic!("listener bug"));
    h.scheduler
        .add_listener(EventMask::JOB_EXECUTED, move |_: &Event| {
            c.fetch_add(1, Ordering::SeqCst);
        });
    h.scheduler.start().await.unwrap();
    h.scheduler
        .add_job(
            JobSpec::new(
                "record",
                IntervalTrigger::builder().minutes(1).build().unwrap(),
            )
            .id("j"),
        )
        .await
        .unwrap();
    h.sleep(Duration::from_secs(301)).await;
    h.scheduler.shutdown(true).await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 5);
    assert_eq!(h.runs_of("j").len(), 5);
}

#[tokio::test(start_paused = true)]
async fn unknown_task_in_a_stored_job_is_reported_and_kept() {
    let h = harness("2026-01-01T00:00:00Z");
    let mut events = h.scheduler.subscribe();
    let next = at("2026-01-01T00:01:00Z");
    let record = sundial_integration_tests::conformance::record(
        "orphan",
        "deleted_task",
        serde_json::json!({"type": "interval", "minutes": 1, "start_date": "2026-01-01T00:01:00Z"}),
        serde_json::Value::Null,
        Some(next),
    );
    h.store.add_job(&record).await.unwrap();
    h.scheduler.start().await.unwrap();
    h.scheduler
        .add_job(
            JobSpec::new(
                "record",
                IntervalTrigger::builder().minutes(1).build().unwrap(),
            )
            .id("healthy"),
        )
        .await
        .unwrap();
    h.sleep(Duration::from_secs(150)).await;
    let errors: Vec<String> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            Event::JobError { job_id, error, .. } if job_id.as_str() == "orphan" => Some(error),
            _ => None,
        })
        .collect();
    // Handed back for other schedulers at each claim and passed over here for
    // 1, 2, 4, ... s: reported at 60, 61, 63, 67, 75, 91 and 123 s.
    assert_eq!(
        errors.len(),
        7,
        "reported at each claim, with waits that double: {errors:?}"
    );
    assert!(
        errors[0].contains("unknown task 'deleted_task'"),
        "{}",
        errors[0]
    );
    let kept = h
        .store
        .lookup_job(&JobId::new("orphan"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.next_run_time, Some(next), "the job is untouched");
    assert_eq!(h.runs_of("healthy").len(), 2, "other jobs keep running");
    h.scheduler.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn timeout_cancels_async_runs() {
    let h = harness("2026-01-01T00:00:00Z");
    let mut events = h.scheduler.subscribe();
    h.scheduler.start().await.unwrap();
    h.scheduler
        .add_job(
            JobSpec::new("sleep", DateTrigger::at(at("2026-01-01T00:00:10Z")))
                .id("slow")
                .args(3600u64)
                .timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    h.sleep(Duration::from_secs(60)).await;
    let evs = drain(&mut events);
    let timeouts: Vec<&Event> = evs
        .iter()
        .filter(|e| matches!(e, Event::JobTimeout { .. }))
        .collect();
    assert_eq!(timeouts.len(), 1);
    assert!(
        matches!(timeouts[0], Event::JobTimeout { timeout, .. } if *timeout == Duration::from_secs(5))
    );
    assert!(!evs.iter().any(|e| matches!(e, Event::JobExecuted { .. })));
    h.scheduler.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn run_job_now_keeps_the_schedule() {
    let h = harness("2026-01-01T00:00:00Z");
    h.scheduler.start().await.unwrap();
    h.scheduler
        .add_job(
            JobSpec::new(
                "record",
                IntervalTrigger::builder().hours(1).build().unwrap(),
            )
            .id("hourly"),
        )
        .await
        .unwrap();
    h.scheduler.run_job_now("hourly", None).await.unwrap();
    h.sleep(Duration::from_millis(1)).await;
    assert_eq!(h.runs_of("hourly"), vec![at("2026-01-01T00:00:00Z")]);
    let job = h.scheduler.get_job("hourly", None).await.unwrap().unwrap();
    assert_eq!(job.next_run_time(), Some(at("2026-01-01T01:00:00Z")));
    h.scheduler.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn api_errors() {
    let h = harness("2026-01-01T00:00:00Z");
    let every = || IntervalTrigger::builder().minutes(1).build().unwrap();
    assert!(matches!(
        h.scheduler.shutdown(true).await,
        Err(Error::NotRunning)
    ));
    assert!(matches!(h.scheduler.pause(), Err(Error::NotRunning)));
    assert!(matches!(
        h.scheduler.run_job_now("x", None).await,
        Err(Error::NotRunning)
    ));
    h.scheduler.start().await.unwrap();
    assert!(matches!(
        h.scheduler.start().await,
        Err(Error::AlreadyRunning)
    ));

    h.scheduler
        .add_job(JobSpec::new("record", every()).id("a"))
        .await
        .unwrap();
    let err = h
        .scheduler
        .add_job(JobSpec::new("record", every()).id("a"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ConflictingId { id } if id == "a"),
        "{err}"
    );
    let replaced = h
        .scheduler
        .add_job(
            JobSpec::new("record", every())
                .id("a")
                .name("renamed")
                .replace_existing(true),
        )
        .await
        .unwrap();
    assert_eq!(replaced.name(), "renamed");

    let err = h
        .scheduler
        .add_job(JobSpec::new("nope", every()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownTask { task } if task == "nope"),
        "{err}"
    );
    let err = h
        .scheduler
        .add_job(JobSpec::new("record", every()).jobstore("elsewhere"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownStore { alias, .. } if alias == "elsewhere"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "unknown job store 'elsewhere' (configured: 'default')"
    );
    let err = h
        .scheduler
        .add_job(JobSpec::new("record", every()).executor("gpu"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownExecutor { alias, .. } if alias == "gpu"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "unknown executor 'gpu' (configured: 'default', 'blocking')"
    );
    let err = h
        .scheduler
        .add_job(JobSpec::new("record", DateTrigger::at(at("2025-01-01T00:00:00Z"))).id("past"))
        .await;
    assert!(
        err.is_ok(),
        "a past date runs (or is missed) per misfire rules"
    );
    let ended = CronTrigger::from_crontab("0 0 * * *")
        .unwrap()
        .with_end_date(at("2025-01-01T00:00:00Z"))
        .unwrap();
    let err = h
        .scheduler
        .add_job(JobSpec::new("record", ended))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidJob(m) if m.contains("never fires")),
        "{err}"
    );
    let err = h
        .scheduler
        .add_job(JobSpec::new("record", every()).max_instances(0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidJob(_)));

    // Options that could not be read back once stored are refused, naming
    // the job and the option; nothing is stored, and a change to them is
    // refused the same way.
    let mut nan_jitter = RetryPolicy::new(3, Duration::from_secs(1));
    nan_jitter.jitter = f64::NAN;
    for (spec, says) in [
        (
            JobSpec::new("record", every())
                .id("forever")
                .timeout(Duration::MAX),
            "timeout of",
        ),
        (
            JobSpec::new("record", every())
                .id("forever")
                .misfire_grace_time(Some(Duration::MAX)),
            "misfire_grace_time of",
        ),
        (
            JobSpec::new("record", every())
                .id("forever")
                .retry_policy(nan_jitter.clone()),
            "retry jitter NaN",
        ),
    ] {
        let err = h.scheduler.add_job(spec).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidJob(m) if m.contains("job 'forever'") && m.contains(says)),
            "{err}"
        );
        assert!(h
            .scheduler
            .get_job("forever", None)
            .await
            .unwrap()
            .is_none());
    }
    h.scheduler
        .add_job(JobSpec::new("record", every()).id("kept"))
        .await
        .unwrap();
    let err = h
        .scheduler
        .modify_job("kept", None, JobChanges::new().timeout(Some(Duration::MAX)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidJob(m) if m.contains("job 'kept'") && m.contains("timeout of")),
        "{err}"
    );
    assert_eq!(
        h.scheduler
            .get_job("kept", None)
            .await
            .unwrap()
            .unwrap()
            .options()
            .timeout,
        None
    );

    for err in [
        h.scheduler.remove_job("missing", None).await.unwrap_err(),
        h.scheduler.pause_job("missing", None).await.unwrap_err(),
        h.scheduler.resume_job("missing", None).await.unwrap_err(),
        h.scheduler
            .modify_job("missing", None, JobChanges::new().coalesce(false))
            .await
            .unwrap_err(),
        h.scheduler
            .reschedule_job("missing", None, every())
            .await
            .unwrap_err(),
        h.scheduler.run_job_now("missing", None).await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::JobNotFound { id } if id == "missing"),
            "{err}"
        );
    }
    assert!(matches!(
        h.scheduler.get_jobs(Some("nowhere")).await,
        Err(Error::UnknownStore { .. })
    ));
    assert!(matches!(
        h.scheduler.remove_jobstore("nowhere").await,
        Err(Error::UnknownStore { .. })
    ));
    assert!(matches!(
        h.scheduler.remove_executor("nowhere", true).await,
        Err(Error::UnknownExecutor { .. })
    ));
    h.scheduler.shutdown(true).await.unwrap();
    assert!(matches!(
        h.scheduler.shutdown(true).await,
        Err(Error::NotRunning)
    ));
}

#[tokio::test(start_paused = true)]
async fn builder_errors() {
    let err = Scheduler::builder().build().unwrap_err();
    assert!(matches!(err, Error::UnknownStore { .. }), "{err}");
    let err = Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::UnknownExecutor { .. }), "{err}");
    let err = Scheduler::builder().timezone("Mars/Base").unwrap_err();
    assert!(err.to_string().contains("Mars/Base"));
    let err = Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("used twice"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn modify_reschedule_and_list() {
    let h = harness_with("2026-01-01T00:00:00Z", |b| {
        b.timezone("Asia/Shanghai").unwrap()
    });
    let mut events = h.scheduler.subscribe();
    h.scheduler.start().await.unwrap();
    h.scheduler
        .add_job(
            JobSpec::new("record", CronTrigger::from_crontab("0 9 * * *").unwrap())
                .id("daily")
                .name("Daily report"),
        )
        .await
        .unwrap();
    h.scheduler
        .add_job(
            JobSpec::new(
                "record",
                IntervalTrigger::builder().hours(1).build().unwrap(),
            )
            .id("hourly")
            .paused(),
        )
        .await
        .unwrap();
    let job = h
        .scheduler
        .modify_job(
            "daily",
            None,
            JobChanges::new().max_instances(3).coalesce(false).args(()),
        )
        .await
        .unwrap();
    assert_eq!(job.options().max_instances, 3);
    assert_eq!(job.args(), &serde_json::Value::Null);
    let job = h
        .scheduler
        .reschedule_job(
            "daily",
            None,
            CronTrigger::from_crontab("30 18 * * *").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(job.next_run_time(), Some(at("2026-01-01T18:30:00+08:00")));

    let jobs = h.scheduler.get_jobs(None).await.unwrap();
    assert_eq!(
        jobs.iter().map(|j| j.id().as_str()).collect::<Vec<_>>(),
        vec!["daily", "hourly"]
    );
    let listing = h.scheduler.job_listing(None).await.unwrap().to_string();
    assert!(listing.contains("Jobstore default:"), "{listing}");
    // A cron trigger created without a zone took the scheduler's, which the listing states.
    assert!(
        listing.starts_with("Default time zone: Asia/Shanghai"),
        "{listing}"
    );
    assert!(listing.contains("daily (Daily report) trigger: cron[30 18 * * *, Asia/Shanghai], next run at: 2026-01-01 18:30:00 CST"), "{listing}");
    assert!(
        listing.contains("hourly (record) trigger: interval[hours=1], paused"),
        "{listing}"
    );

    h.scheduler.remove_all_jobs(None).await.unwrap();
    assert!(h.scheduler.get_jobs(None).await.unwrap().is_empty());
    let kinds: Vec<EventMask> = drain(&mut events).iter().map(|e| e.mask()).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventMask::JOB_MODIFIED)
            .count(),
        2
    );
    assert!(kinds.contains(&EventMask::ALL_JOBS_REMOVED));
    h.scheduler.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn stores_and_executors_can_be_added_and_removed_at_runtime() {
    let h = harness("2026-01-01T00:00:00Z");
    let mut events = h.scheduler.subscribe();
    h.scheduler.start().await.unwrap();
    h.scheduler
        .add_jobstore("archive", MemoryJobStore::new())
        .await
        .unwrap();
    assert!(h
        .scheduler
        .add_jobstore("archive", MemoryJobStore::new())
        .await
        .is_err());
    h.scheduler
        .add_executor("extra", AsyncExecutor::new())
        .unwrap();
    h.scheduler
        .add_job(
            JobSpec::new("record", DateTrigger::at(at("2026-01-01T00:01:00Z")))
                .id("arch")
                .jobstore("archive")
                .executor("extra"),
        )
        .await
        .unwrap();
    h.sleep(Duration::from_secs(120)).await;
    assert_eq!(h.runs_of("arch").len(), 1);
    h.scheduler.remove_executor("extra", true).await.unwrap();
    h.scheduler.remove_jobstore("archive").await.unwrap();
    let kinds: Vec<EventMask> = drain(&mut events).iter().map(|e| e.mask()).collect();
    for k in [
        EventMask::JOBSTORE_ADDED,
        EventMask::EXECUTOR_ADDED,
        EventMask::EXECUTOR_REMOVED,
        EventMask::JOBSTORE_REMOVED,
    ] {
        assert!(kinds.contains(&k), "{k:?} missing from {kinds:?}");
    }
    h.scheduler.shutdown(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn blocking_tasks_run_on_the_thread_pool() {
    let ran_on = Arc::new(Mutex::new(None));
    let r = Arc::clone(&ran_on);
    let h = harness_with("2026-01-01T00:00:00Z", move |b| {
        b.blocking_task("blocking", move |_ctx: JobContext, _: ()| {
            *r.lock().unwrap() = std::thread::current().name().map(String::from);
            Ok::<_, std::io::Error>(())
        })
    });
    h.scheduler.start().await.unwrap();
    h.scheduler
        .add_job(JobSpec::new(
            "blocking",
            DateTrigger::at(at("2026-01-01T00:00:01Z")),
        ))
        .await
        .unwrap();
    // The pool runs outside the paused runtime: wait in real time.
    for _ in 0..200 {
        h.sleep(Duration::from_secs(2)).await;
        if ran_on.lock().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let name = ran_on.lock().unwrap().clone().unwrap();
    assert!(name.starts_with("sundial-pool-"), "{name}");
    h.scheduler.shutdown(true).await.unwrap();
}

/// 10,000 jobs with random interval and date triggers: every job fires at
/// exactly the instants arithmetic predicts over two virtual hours.
#[tokio::test(start_paused = true)]
async fn ten_thousand_random_jobs_fire_on_time() {
    let h = harness("2026-01-01T00:00:00Z");
    h.scheduler.start().await.unwrap();
    let t0 = at("2026-01-01T00:00:00Z");
    let end = t0 + chrono::Duration::hours(2);
    let mut rng = fastrand::Rng::with_seed(42);
    let mut expected: std::collections::HashMap<String, Vec<DateTime<Utc>>> = Default::default();
    let mut specs = Vec::new();
    for i in 0..10_000 {
        let id = format!("job{i}");
        let offset = chrono::Duration::seconds(rng.i64(1..3600));
        let (spec, times) = if rng.bool() {
            let every = rng.u64(60..1800);
            let trig = IntervalTrigger::builder()
                .seconds(every)
                .start_date(t0 + offset)
                .build()
                .unwrap();
            let mut times = Vec::new();
            let mut t = t0 + offset;
            while t <= end - chrono::Duration::seconds(1) {
                times.push(t);
                t += chrono::Duration::seconds(every as i64);
            }
            (JobSpec::new("record", trig), times)
        } else {
            (
                JobSpec::new("record", DateTrigger::at(t0 + offset)),
                vec![t0 + offset],
            )
        };
        specs.push(spec.id(id.as_str()).misfire_grace_time(None));
        expected.insert(id, times);
    }
    h.scheduler.add_jobs(specs).await.unwrap();
    h.sleep(Duration::from_secs(7200)).await;
    let mut got: std::collections::HashMap<String, Vec<DateTime<Utc>>> = Default::default();
    for (id, t) in h.runs.lock().unwrap().iter() {
        got.entry(id.clone()).or_default().push(*t);
    }
    let mut wrong = 0;
    for (id, times) in &expected {
        if got.get(id).cloned().unwrap_or_default() != *times {
            wrong += 1;
        }
    }
    assert_eq!(
        wrong, 0,
        "{wrong} of 10000 jobs fired at the wrong instants"
    );
    h.scheduler.shutdown(true).await.unwrap();
}

fn real_time_scheduler(runs: Arc<AtomicUsize>) -> Scheduler {
    Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .task("count", move |_ctx: JobContext, _: ()| {
            let runs = Arc::clone(&runs);
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(())
            }
        })
        .build()
        .unwrap()
}

#[test]
fn background_mode_runs_jobs_for_sync_code() {
    let runs = Arc::new(AtomicUsize::new(0));
    let bg = BackgroundScheduler::start(real_time_scheduler(Arc::clone(&runs))).unwrap();
    let now = Utc::now();
    for ms in [100, 200] {
        bg.add_job(JobSpec::new(
            "count",
            DateTrigger::at(now + chrono::Duration::milliseconds(ms)),
        ))
        .unwrap();
    }
    for _ in 0..100 {
        if runs.load(Ordering::SeqCst) == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert!(bg.get_jobs().unwrap().is_empty());
    bg.shutdown(true).unwrap();
}

#[test]
fn blocking_mode_runs_until_shutdown_is_requested() {
    let runs = Arc::new(AtomicUsize::new(0));
    let scheduler = real_time_scheduler(Arc::clone(&runs));
    let handle = scheduler.clone();
    scheduler.add_listener(EventMask::JOB_EXECUTED, move |_: &Event| {
        handle.request_shutdown()
    });
    let now = Utc::now();
    futures::executor::block_on(scheduler.add_job(JobSpec::new(
        "count",
        DateTrigger::at(now + chrono::Duration::milliseconds(100)),
    )))
    .unwrap();
    scheduler.run_blocking().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(scheduler.state(), SchedulerState::Stopped);
}

/// The thread-pool executor reports a panicking blocking task as an error and
/// a run over its timeout as a timeout (blocking code cannot be interrupted,
/// but its cancellation is signalled).
#[test]
fn thread_pool_reports_panics_and_timeouts() {
    let cancelled_seen = Arc::new(AtomicBool::new(false));
    let c = Arc::clone(&cancelled_seen);
    let scheduler = Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .executor("blocking", ThreadPoolExecutor::new(2))
        .blocking_task(
            "explode",
            |_ctx: JobContext, _: ()| -> Result<(), std::io::Error> { panic!("blocking boom") },
        )
        .blocking_task("slow", move |ctx: JobContext, _: ()| {
            for _ in 0..100 {
                if ctx.is_cancelled() {
                    c.store(true, Ordering::SeqCst);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok::<_, std::io::Error>(())
        })
        .build()
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = Arc::clone(&events);
    scheduler.add_listener(
        EventMask::JOB_ERROR | EventMask::JOB_TIMEOUT | EventMask::JOB_EXECUTED,
        move |ev: &Event| {
            e.lock().unwrap().push(ev.clone());
        },
    );
    let bg = BackgroundScheduler::start(scheduler).unwrap();
    let soon = Utc::now() + chrono::Duration::milliseconds(50);
    bg.add_job(JobSpec::new("explode", DateTrigger::at(soon)).id("explode"))
        .unwrap();
    bg.add_job(
        JobSpec::new("slow", DateTrigger::at(soon))
            .id("slow")
            .timeout(Duration::from_millis(100)),
    )
    .unwrap();
    for _ in 0..200 {
        if events.lock().unwrap().len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bg.shutdown(true).unwrap();
    let evs = events.lock().unwrap().clone();
    assert!(
        evs.iter().any(|e| matches!(e, Event::JobError { job_id, error, .. } if job_id.as_str() == "explode" && error == "task panicked: blocking boom")),
        "{evs:?}"
    );
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::JobTimeout { job_id, .. } if job_id.as_str() == "slow")),
        "{evs:?}"
    );
    assert!(
        cancelled_seen.load(Ordering::SeqCst),
        "the blocking task saw its cancellation"
    );
}

#[tokio::test(start_paused = true)]
async fn arguments_that_do_not_fit_the_task_are_refused_when_added() {
    let h = harness("2026-01-01T00:00:00Z");
    h.scheduler.start().await.unwrap();
    let every = || IntervalTrigger::every(Duration::from_secs(60)).unwrap();
    // `sleep` takes a number of seconds.
    let err = h
        .scheduler
        .add_job(JobSpec::new("sleep", every()).id("s").args("ten"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgs { task, reason } if task == "sleep" && reason.contains("expected u64")),
        "{err}"
    );
    assert!(h.scheduler.get_job("s", None).await.unwrap().is_none());
    #[derive(Serialize)]
    struct Wrong {
        order: u32,
    }
    let err = h
        .scheduler
        .add_job(JobSpec::new("fail", every()).args(Wrong { order: 1 }))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("task 'fail'"), "{err}");
    h.scheduler
        .add_job(JobSpec::new("sleep", every()).id("s").args(10))
        .await
        .unwrap();
    let err = h
        .scheduler
        .modify_job("s", None, JobChanges::new().args(json_args()))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::InvalidArgs { .. }), "{err}");
    assert_eq!(
        h.scheduler
            .get_job("s", None)
            .await
            .unwrap()
            .unwrap()
            .args(),
        &serde_json::json!(10)
    );
}

#[tokio::test(start_paused = true)]
async fn arguments_above_the_size_limit_are_refused_with_their_size() {
    let h = harness_with("2026-01-01T00:00:00Z", |b| b.max_args_size(1000));
    h.scheduler.start().await.unwrap();
    let every = || IntervalTrigger::every(Duration::from_secs(60)).unwrap();
    // 998 characters: 1000 bytes of JSON with the quotes, at the limit.
    h.scheduler
        .add_job(JobSpec::new("fail", every()).id("f").args("x".repeat(998)))
        .await
        .unwrap();
    let err = h
        .scheduler
        .add_job(JobSpec::new("fail", every()).id("g").args("x".repeat(999)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgs { task, reason } if task == "fail" && reason.contains("1001 bytes") && reason.contains("limit of 1000 bytes")),
        "{err}"
    );
    assert!(h.scheduler.get_job("g", None).await.unwrap().is_none());
    let err = h
        .scheduler
        .modify_job("f", None, JobChanges::new().args("y".repeat(2000)))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::InvalidArgs { .. }), "{err}");
    let kept = h.scheduler.get_job("f", None).await.unwrap().unwrap();
    assert_eq!(kept.args(), &serde_json::json!("x".repeat(998)));
}

fn json_args() -> serde_json::Value {
    serde_json::json!({"seconds": 10})
}

#[tokio::test(start_paused = true)]
async fn a_refused_or_kept_inline_job_keeps_the_stored_closure() {
    let h = harness("2026-01-01T00:00:00Z");
    h.scheduler.start().await.unwrap();
    let first = Arc::new(AtomicUsize::new(0));
    let second = Arc::new(AtomicUsize::new(0));
    let every = || IntervalTrigger::every(Duration::from_secs(60)).unwrap();
    let counter = |c: &Arc<AtomicUsize>| {
        let c = Arc::clone(c);
        move |_ctx: JobContext| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, std::io::Error>(()) }
        }
    };
    h.scheduler
        .add_job(JobSpec::inline(every(), counter(&first)).id("x"))
        .await
        .unwrap();
    // A duplicate id is refused, and an if_absent declaration keeps the job:
    // neither replaces nor removes the closure the stored job runs.
    assert!(h
        .scheduler
        .add_job(JobSpec::inline(every(), counter(&second)).id("x"))
        .await
        .is_err());
    h.scheduler
        .add_job(
            JobSpec::inline(every(), counter(&second))
                .id("x")
                .if_absent(),
        )
        .await
        .unwrap();
    h.sleep(Duration::from_secs(130)).await;
    assert_eq!(first.load(Ordering::SeqCst), 2);
    assert_eq!(second.load(Ordering::SeqCst), 0);
    // replace_existing does replace it.
    h.scheduler
        .add_job(
            JobSpec::inline(every(), counter(&second))
                .id("x")
                .replace_existing(true),
        )
        .await
        .unwrap();
    h.sleep(Duration::from_secs(60)).await;
    assert_eq!(first.load(Ordering::SeqCst), 2);
    assert!(second.load(Ordering::SeqCst) >= 1);
    h.scheduler.shutdown(true).await.unwrap();
}

/// Many more due jobs that this scheduler cannot run (their task is not
/// registered here) than one claim batch and the passed-over list hold: the
/// runnable job behind them in run order still runs, and the scheduler keeps
/// answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_behind_many_unrunnable_ones_still_run() {
    let store = Arc::new(MemoryJobStore::new());
    let ran = Arc::new(AtomicBool::new(false));
    let r = Arc::clone(&ran);
    let s = Scheduler::builder()
        .jobstore_arc("default", Arc::clone(&store) as Arc<dyn JobStore>)
        .executor("default", AsyncExecutor::new())
        .task("ok", move |_: JobContext, _: ()| {
            r.store(true, Ordering::SeqCst);
            async { Ok::<_, std::io::Error>(()) }
        })
        .build()
        .unwrap();
    s.start_paused().await.unwrap();
    let due = Utc::now() - chrono::Duration::seconds(30);
    let orphans: Vec<_> = (0..2600)
        .map(|i| {
            sundial_integration_tests::conformance::record(
                &format!("orphan{i:04}"),
                "not_registered_here",
                serde_json::json!({"type": "interval", "seconds": 3600, "start_date": due.to_rfc3339()}),
                serde_json::Value::Null,
                Some(due),
            )
        })
        .collect();
    store.add_jobs(&orphans).await.unwrap();
    s.add_job(
        JobSpec::new("ok", DateTrigger::at(Utc::now()))
            .id("behind")
            .misfire_grace_time(None),
    )
    .await
    .unwrap();
    s.resume().unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        while !ran.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the runnable job never ran");
    // The scheduler still answers while the orphans stay due.
    let listed = tokio::time::timeout(Duration::from_secs(10), s.get_jobs(None))
        .await
        .expect("the scheduler answers")
        .unwrap();
    assert_eq!(listed.len(), 2600);
    tokio::time::timeout(Duration::from_secs(10), s.shutdown(false))
        .await
        .expect("shutdown returns")
        .unwrap();
}

/// A stored job whose trigger text does not read (here a lone surrogate in a
/// string, which reading the trigger as raw text lets through) is reported
/// as an unreadable job, naming it, and a job beside it runs.
#[tokio::test(start_paused = true)]
async fn a_stored_job_with_an_unreadable_trigger_is_reported_by_id() {
    let h = harness("2026-01-01T00:00:00Z");
    let due = at("2026-01-01T00:10:00Z");
    let good = r#"{"task":"record","trigger":{"type":"date","run_date":"2026-01-01T00:10:00+00:00"},"options":{"coalesce":true,"max_instances":1}}"#;
    let bad = good.replace("+00:00\"}", "+00:00\\ud800\"}");
    assert_ne!(good, bad);
    for (id, text) in [("good", good.to_string()), ("bad", bad)] {
        h.store
            .add_job(&sundial::JobRecord::new(
                JobId::new(id),
                sundial::JobContent::from_stored(text),
                Some(due),
            ))
            .await
            .unwrap();
    }
    let mut events = h.scheduler.subscribe();
    h.scheduler.start().await.unwrap();
    h.sleep(Duration::from_secs(3600)).await;
    assert_eq!(h.runs_of("good"), vec![due]);
    assert!(h.runs_of("bad").is_empty());
    let errors: Vec<String> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            Event::JobError { job_id, error, .. } if job_id.as_str() == "bad" => Some(error),
            _ => None,
        })
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("stored job 'bad' is unreadable: ")),
        "{errors:?}"
    );
    h.scheduler.shutdown(true).await.unwrap();
}

/// Adds a batch of `ids` and checks that it is refused for `taken`.
async fn refused_for_id(h: &Harness, ids: &[&str], taken: &str) {
    let batch = ids
        .iter()
        .map(|id| recorded_every_ten_minutes(id))
        .collect();
    let err = h
        .scheduler
        .add_jobs(batch)
        .await
        .expect_err("a conflicting id");
    assert!(
        matches!(&err, Error::ConflictingId { id } if id == taken),
        "{ids:?}: {err}"
    );
}

/// A job `id` of the harness's recording task, every ten minutes.
fn recorded_every_ten_minutes(id: &str) -> JobSpec {
    JobSpec::new(
        "record",
        IntervalTrigger::every(Duration::from_secs(600)).unwrap(),
    )
    .id(id)
}

/// `add_jobs` before the start keeps the jobs pending (listed, decoded) and
/// stores them at the start; `add_job` and `add_jobs` write the same content
/// for the same spec.
#[tokio::test(start_paused = true)]
async fn jobs_added_in_a_batch_before_the_start_are_kept_and_run() {
    let h = harness("2026-01-01T00:00:00Z");
    let due = at("2026-01-01T00:10:00Z");
    let spec = recorded_every_ten_minutes;
    h.scheduler
        .add_jobs(vec![spec("early-a"), spec("early-b")])
        .await
        .unwrap();
    let pending = h.scheduler.get_job("early-a", None).await.unwrap().unwrap();
    assert!(pending.is_pending());
    assert_eq!(
        pending.trigger_json()["seconds"],
        600,
        "{}",
        pending.trigger_json()
    );
    assert_eq!(pending.task(), "record");
    h.scheduler.start().await.unwrap();
    h.sleep(Duration::from_secs(601)).await;
    assert_eq!(h.runs_of("early-a"), vec![due]);
    assert_eq!(h.runs_of("early-b"), vec![due]);

    h.scheduler.add_job(spec("one")).await.unwrap();
    h.scheduler.add_jobs(vec![spec("two")]).await.unwrap();
    let content = |id: &'static str| {
        let store = Arc::clone(&h.store);
        async move {
            store
                .lookup_job(&JobId::new(id))
                .await
                .unwrap()
                .unwrap()
                .content
                .as_str()
                .to_string()
        }
    };
    assert_eq!(content("one").await, content("two").await);
    h.scheduler.shutdown(true).await.unwrap();
}

/// A batch with one bad job in it (an unknown task, another store, an upsert;
/// once started, an id already stored or given twice) adds none of its jobs,
/// whether the scheduler is started or not, and says what was wrong.
#[tokio::test(start_paused = true)]
async fn a_batch_with_a_bad_job_adds_none() {
    let h = harness("2026-01-01T00:00:00Z");
    let spec = recorded_every_ten_minutes;
    let bad = |i: usize| match i {
        0 => JobSpec::new("no-such-task", DateTrigger::at(at("2026-01-02T00:00:00Z"))).id("bad"),
        1 => spec("bad").jobstore("elsewhere"),
        _ => spec("bad").replace_existing(true),
    };
    let refused = |e: &Error, i: usize| match (i, e) {
        (0, Error::UnknownTask { task }) => task == "no-such-task",
        (1, Error::InvalidJob(why)) => why.contains("all jobs must go to one store"),
        (2, Error::InvalidJob(why)) => why.contains("does not support replace_existing"),
        _ => false,
    };
    for started in [false, true] {
        if started {
            h.scheduler.start().await.unwrap();
        }
        for i in 0..3 {
            let err = h
                .scheduler
                .add_jobs(vec![spec("a"), spec("b"), bad(i), spec("c")])
                .await
                .expect_err("a bad job in the batch");
            assert!(refused(&err, i), "case {i}: {err}");
            assert!(
                h.scheduler.get_jobs(None).await.unwrap().is_empty(),
                "started: {started}, error: {err}"
            );
        }
    }
    // Refused by the store: an id given twice, an id already stored.
    refused_for_id(&h, &["a", "b", "a"], "a").await;
    assert!(h.scheduler.get_jobs(None).await.unwrap().is_empty());
    h.scheduler.add_job(spec("taken")).await.unwrap();
    refused_for_id(&h, &["a", "taken", "b"], "taken").await;
    assert_eq!(h.scheduler.get_jobs(None).await.unwrap().len(), 1);
    let ids = h
        .scheduler
        .add_jobs(vec![spec("a"), spec("b"), spec("c")])
        .await
        .unwrap();
    assert_eq!(ids, ["a", "b", "c"].map(JobId::new));
    assert_eq!(h.scheduler.get_jobs(None).await.unwrap().len(), 4);
    h.scheduler.shutdown(true).await.unwrap();
}

/// Jobs added while the scheduler starts, in a batch or one at a time, end
/// up stored: never left pending by a start that took the pending jobs
/// before they were kept, nor sent to a store that the start has not opened
/// yet (a SQLite file, created and migrated by the start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_added_while_the_scheduler_starts_are_stored() {
    let dir = std::env::temp_dir().join(format!("sundial-adding-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for round in 0..6u64 {
        let path = dir.join(format!("round-{round}.db"));
        let _ = std::fs::remove_file(&path);
        let scheduler = Scheduler::builder()
            .jobstore("default", SqlJobStore::sqlite(&path))
            .executor("default", AsyncExecutor::new())
            .task("noop", |_: JobContext, _: ()| async {
                Ok::<_, std::io::Error>(())
            })
            .build()
            .unwrap();
        let tomorrow = Utc::now() + chrono::Duration::days(1);
        let spec =
            move |i: usize| JobSpec::new("noop", DateTrigger::at(tomorrow)).id(format!("job-{i}"));
        let batch = 2_000 * (round as usize + 1);
        let specs: Vec<JobSpec> = (0..batch).map(spec).collect();
        let in_batch = {
            let s = scheduler.clone();
            tokio::spawn(async move { s.add_jobs(specs).await.map(|ids| ids.len()) })
        };
        let one_by_one = {
            let s = scheduler.clone();
            tokio::spawn(async move {
                for i in batch..batch + 300 {
                    s.add_job(spec(i)).await?;
                    tokio::task::yield_now().await;
                }
                Ok::<_, Error>(300)
            })
        };
        tokio::time::sleep(Duration::from_micros(300 * round)).await;
        scheduler.start().await.unwrap();
        assert_eq!(in_batch.await.unwrap().unwrap(), batch, "round {round}");
        assert_eq!(one_by_one.await.unwrap().unwrap(), 300, "round {round}");
        let jobs = scheduler.get_jobs(None).await.unwrap();
        assert_eq!(jobs.len(), batch + 300, "round {round}");
        assert!(
            jobs.iter().all(|j| !j.is_pending()),
            "round {round}: jobs left pending"
        );
        scheduler.shutdown(false).await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Before the start, a batch is all or none against the pending jobs too: an
/// id given twice, or already pending in the same store, fails it.
#[tokio::test(start_paused = true)]
async fn a_batch_before_the_start_is_refused_on_a_pending_id() {
    let h = harness("2026-01-01T00:00:00Z");
    let spec = recorded_every_ten_minutes;
    refused_for_id(&h, &["a", "b", "a"], "a").await;
    h.scheduler.add_job(spec("p")).await.unwrap();
    refused_for_id(&h, &["x", "p"], "p").await;
    let pending = h.scheduler.get_jobs(None).await.unwrap();
    assert_eq!(pending.len(), 1);
    h.scheduler
        .add_jobs(vec![spec("x"), spec("y")])
        .await
        .unwrap();
    h.scheduler.start().await.unwrap();
    assert_eq!(h.scheduler.get_jobs(None).await.unwrap().len(), 3);
    h.scheduler.shutdown(true).await.unwrap();
}

/// The job `add_job` returns (its decoded content and trigger description
/// made from the typed trigger only when asked for) reads as the job read
/// back from the store (its `Debug` output too), and the stored content is
/// the JSON of the decoded content it hands out, for every built-in trigger,
/// for a combination of them (written the way other trigger types are) and
/// for a job added with `if_absent` (the general path).
#[tokio::test(start_paused = true)]
async fn the_job_add_job_returns_reads_as_the_job_stored() {
    let h = harness("2026-01-01T00:00:00Z");
    h.scheduler.start_paused().await.unwrap();
    let specs: Vec<JobSpec> = vec![
        JobSpec::new("record", DateTrigger::at(at("2026-01-01T00:10:00Z"))).id("date"),
        JobSpec::new(
            "record",
            DateTrigger::at_local("2026-03-29 02:30:00", "Europe/Berlin").unwrap(),
        )
        .id("date-berlin"),
        JobSpec::new(
            "record",
            IntervalTrigger::builder()
                .minutes(90)
                .timezone("Asia/Shanghai")
                .build()
                .unwrap(),
        )
        .id("interval")
        .name("every \"ninety\" minutes")
        .max_instances(3)
        .misfire_grace_time(None),
        JobSpec::new(
            "record",
            CronTrigger::from_crontab("0 9 * * 1-5")
                .unwrap()
                .with_timezone("America/New_York")
                .unwrap(),
        )
        .id("cron"),
        JobSpec::new(
            "record",
            CalendarIntervalTrigger::builder()
                .months(1)
                .time(7, 30, 0)
                .build()
                .unwrap(),
        )
        .id("calendar"),
        JobSpec::new(
            "sleep",
            OrTrigger::new(vec![
                Box::new(CronTrigger::from_crontab("0 6 * * *").unwrap()),
                Box::new(IntervalTrigger::every(Duration::from_secs(7200)).unwrap()),
            ])
            .unwrap(),
        )
        .id("or")
        .args(5u64),
        JobSpec::new("record", DateTrigger::at(at("2026-01-01T00:20:00Z")))
            .id("absent")
            .if_absent(),
    ];
    for spec in specs {
        let added = h.scheduler.add_job(spec).await.unwrap();
        let id = added.id().clone();
        let stored = h
            .scheduler
            .get_job(id.clone(), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(added.task(), stored.task(), "{id}");
        assert_eq!(added.name(), stored.name(), "{id}");
        assert_eq!(added.args(), stored.args(), "{id}");
        assert_eq!(added.options(), stored.options(), "{id}");
        assert_eq!(
            added.trigger_description(),
            stored.trigger_description(),
            "{id}"
        );
        assert_eq!(
            added.next_run_time_local(),
            stored.next_run_time_local(),
            "{id}"
        );
        assert_eq!(added.to_string(), stored.to_string(), "{id}");
        assert_eq!(added.is_pending(), stored.is_pending(), "{id}");
        assert_eq!(added.record(), stored.record(), "{id}");
        assert_eq!(added.trigger_json(), stored.trigger_json(), "{id}");
        assert_eq!(added.data(), stored.data(), "{id}");
        let content: serde_json::Value =
            serde_json::from_str(stored.record().content.as_str()).unwrap();
        assert_eq!(
            content,
            serde_json::to_value(stored.data()).unwrap(),
            "{id}"
        );
    }
    h.scheduler.shutdown(true).await.unwrap();
}

/// An inline closure is registered while its job lives: a one-off job's
/// closure is forgotten once the job ran and was removed, and a recurring
/// inline job keeps its own.
#[tokio::test(start_paused = true)]
async fn an_inline_closure_is_forgotten_when_its_job_is_removed() {
    let h = harness("2026-01-01T00:00:00Z");
    h.scheduler.start().await.unwrap();
    let registered = |s: &Scheduler| s.task_names();
    let before = registered(&h.scheduler);
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = |n: &Arc<AtomicUsize>| {
        let n = Arc::clone(n);
        move |_ctx: JobContext| {
            let n = Arc::clone(&n);
            async move {
                n.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(())
            }
        }
    };
    h.scheduler
        .add_job(
            JobSpec::inline(DateTrigger::at(at("2026-01-01T00:00:05Z")), counter(&ran)).id("once"),
        )
        .await
        .unwrap();
    h.scheduler
        .add_job(
            JobSpec::inline(
                IntervalTrigger::every(Duration::from_secs(60)).unwrap(),
                counter(&ran),
            )
            .id("every"),
        )
        .await
        .unwrap();
    assert_eq!(registered(&h.scheduler).len(), before.len() + 2);
    h.sleep(Duration::from_secs(61)).await;
    assert_eq!(ran.load(Ordering::SeqCst), 2);
    assert!(h.scheduler.get_job("once", None).await.unwrap().is_none());
    let after = registered(&h.scheduler);
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert!(after.iter().any(|n| n.ends_with("every")), "{after:?}");
    h.scheduler.shutdown(true).await.unwrap();
}
