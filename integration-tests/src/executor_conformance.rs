//! Executor conformance: the contract on
//! [`Executor`], checked the same way for every
//! executor and both kinds of task (async and blocking). `tests/executors.rs`
//! runs each case for the async and the thread-pool executor.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;
use sundial::clock::{Clock, SystemClock};
use sundial::event::EventBus;
use sundial::executor::{Executor, ExecutorContext, JobRun, RunDone, SubmitError};
use sundial::run::{RunId, RunState};
use sundial::task::{JobContext, TaskFn};
use sundial::{Event, JobId};
use tokio::sync::mpsc::UnboundedReceiver;

/// Which kind of task a case submits.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// An async task.
    Async,
    /// A blocking task.
    Blocking,
}

/// What a case's task does.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Succeed,
    Fail,
    Panic,
    /// Runs for this long (unless cancelled first).
    Work(Duration),
    /// Waits until its cancellation is signalled (at most 10 s).
    UntilCancelled,
}

/// A started slot as its task saw it: scheduled time, run id, attempt.
type Slot = (DateTime<Utc>, Option<RunId>, u32);

/// What the tasks of a case saw.
#[derive(Debug, Default)]
struct Seen {
    /// Each started slot.
    started: Mutex<Vec<Slot>>,
    finished: AtomicU32,
    cancelled: AtomicBool,
}

fn task(kind: Kind, behaviour: Behaviour, seen: &Arc<Seen>) -> TaskFn {
    let seen = Arc::clone(seen);
    let note = move |ctx: &JobContext| {
        seen_of(&seen)
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((
                ctx.scheduled_run_time(),
                ctx.run_id().cloned(),
                ctx.attempt(),
            ));
        Arc::clone(&seen)
    };
    match kind {
        Kind::Async => TaskFn::from_async("task", move |ctx: JobContext, (): ()| {
            let seen = note(&ctx);
            // A watcher outlives the task's future (which a timeout drops), so
            // the signal is seen either way.
            let watcher = (Arc::clone(&seen), ctx.clone());
            tokio::spawn(async move {
                watcher.1.cancelled().await;
                watcher.0.cancelled.store(true, Ordering::SeqCst);
            });
            async move {
                let r = match behaviour {
                    Behaviour::Succeed => Ok(()),
                    Behaviour::Fail => Err("disk full".to_string()),
                    Behaviour::Panic => panic!("boom"),
                    Behaviour::Work(d) => {
                        tokio::select! {
                            _ = tokio::time::sleep(d) => {}
                            _ = ctx.cancelled() => seen.cancelled.store(true, Ordering::SeqCst),
                        }
                        Ok(())
                    }
                    Behaviour::UntilCancelled => {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                            _ = ctx.cancelled() => seen.cancelled.store(true, Ordering::SeqCst),
                        }
                        Ok(())
                    }
                };
                seen.finished.fetch_add(1, Ordering::SeqCst);
                r
            }
        }),
        Kind::Blocking => TaskFn::from_blocking("task", move |ctx: JobContext, (): ()| {
            let seen = note(&ctx);
            let until = |limit: Duration| {
                let t0 = Instant::now();
                while t0.elapsed() < limit {
                    if ctx.is_cancelled() {
                        seen.cancelled.store(true, Ordering::SeqCst);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            };
            let r = match behaviour {
                Behaviour::Succeed => Ok(()),
                Behaviour::Fail => Err("disk full".to_string()),
                Behaviour::Panic => panic!("boom"),
                Behaviour::Work(d) => {
                    until(d);
                    Ok(())
                }
                Behaviour::UntilCancelled => {
                    until(Duration::from_secs(10));
                    Ok(())
                }
            };
            seen.finished.fetch_add(1, Ordering::SeqCst);
            r
        }),
    }
}

fn seen_of(s: &Arc<Seen>) -> &Seen {
    s
}

/// An executor under test, with what it reports.
#[derive(Debug)]
pub struct Bench {
    exec: Arc<dyn Executor>,
    events: EventBus,
    outcomes: UnboundedReceiver<RunDone>,
    kind: Kind,
}

impl Bench {
    /// Starts `exec` on the current runtime; its tasks are of `kind`.
    pub fn start(exec: Arc<dyn Executor>, kind: Kind) -> Result<Bench> {
        let events = EventBus::new();
        let (tx, outcomes) = tokio::sync::mpsc::unbounded_channel();
        exec.start(context(&events, tx))?;
        Ok(Bench {
            exec,
            events,
            outcomes,
            kind,
        })
    }

    fn run(&self, job: &str, slots: usize, behaviour: Behaviour, seen: &Arc<Seen>) -> JobRun {
        self.run_with(job, slots, behaviour, seen, 1, None)
    }

    fn run_with(
        &self,
        job: &str,
        slots: usize,
        behaviour: Behaviour,
        seen: &Arc<Seen>,
        max_instances: u32,
        timeout: Option<Duration>,
    ) -> JobRun {
        let base = trunc(Utc::now());
        let times = (0..slots)
            .map(|i| base - chrono::Duration::seconds((slots - i) as i64))
            .collect();
        let ids = (0..slots).map(|_| RunId::random()).collect();
        JobRun::new(
            JobId::new(job),
            "default",
            times,
            task(self.kind, behaviour, seen),
            serde_json::Value::Null,
            max_instances,
            timeout,
        )
        .with_runs(ids, 2)
    }

    /// The next `n` outcomes, within 10 s.
    async fn outcomes(&mut self, n: usize) -> Result<Vec<RunDone>> {
        let mut out = Vec::new();
        while out.len() < n {
            let o = tokio::time::timeout(Duration::from_secs(10), self.outcomes.recv())
                .await
                .with_context(|| format!("{} of {n} outcomes within 10 s", out.len()))?
                .context("outcome channel closed")?;
            out.push(o);
        }
        Ok(out)
    }
}

fn context(events: &EventBus, tx: tokio::sync::mpsc::UnboundedSender<RunDone>) -> ExecutorContext {
    ExecutorContext {
        alias: "default".into(),
        events: events.clone(),
        clock: Arc::new(SystemClock) as Arc<dyn Clock>,
        runtime: tokio::runtime::Handle::current(),
        outcomes: Some(tx),
    }
}

fn trunc(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The next event, within 10 s.
async fn next_event(events: &mut BoxStream<'static, Event>) -> Result<Event> {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .context("no event within 10 s")?
        .context("event stream ended")
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        if Instant::now() > deadline {
            bail!("not within 10 s: {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// A submission before `start` is refused as not started.
pub async fn refuses_runs_before_start(exec: Arc<dyn Executor>, kind: Kind) -> Result<()> {
    let seen = Arc::default();
    let run = JobRun::new(
        JobId::new("early"),
        "default",
        vec![Utc::now()],
        task(kind, Behaviour::Succeed, &seen),
        serde_json::Value::Null,
        1,
        None,
    );
    ensure!(
        exec.submit(run).err() == Some(SubmitError::NotStarted),
        "a run was accepted before start"
    );
    Ok(())
}

/// Every slot of a run starts in order with its own run id and attempt, and is
/// reported once: `JobStarted`, then `JobExecuted`, and one outcome.
pub async fn runs_each_slot_in_order_and_reports_it(
    exec: Arc<dyn Executor>,
    kind: Kind,
) -> Result<()> {
    let mut b = Bench::start(exec, kind)?;
    let mut events = b.events.subscribe();
    let seen: Arc<Seen> = Arc::default();
    let run = b.run("slots", 3, Behaviour::Succeed, &seen);
    let (times, ids) = (run.run_times.clone(), run.run_ids.clone());
    b.exec.submit(run)?;
    let outcomes = b.outcomes(3).await?;
    ensure!(
        outcomes
            .iter()
            .map(|o| (&o.run_id, o.state))
            .eq(ids.iter().map(|i| (i, RunState::Succeeded))),
        "{outcomes:?}"
    );
    let started = seen
        .started
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let expected: Vec<_> = times
        .iter()
        .zip(&ids)
        .map(|(t, i)| (*t, Some(i.clone()), 2))
        .collect();
    ensure!(started == expected, "{started:?}");
    let mut order = Vec::new();
    while order.len() < 6 {
        let e = next_event(&mut events).await?;
        match e {
            Event::JobStarted { run_id, .. } => order.push(("started", run_id)),
            Event::JobExecuted { run_id, .. } => order.push(("executed", run_id)),
            _ => {}
        }
    }
    let want: Vec<_> = ids
        .iter()
        .flat_map(|i| [("started", Some(i.clone())), ("executed", Some(i.clone()))])
        .collect();
    ensure!(order == want, "{order:?}");
    b.exec.shutdown(true).await;
    Ok(())
}

/// A failing and a panicking task are reported as failed with their message,
/// and the executor keeps running the next run.
pub async fn failures_and_panics_are_reported_and_the_executor_carries_on(
    exec: Arc<dyn Executor>,
    kind: Kind,
) -> Result<()> {
    let mut b = Bench::start(exec, kind)?;
    let mut events = b.events.subscribe();
    let seen = Arc::default();
    b.exec.submit(b.run("fails", 1, Behaviour::Fail, &seen))?;
    let failed = b.outcomes(1).await?;
    b.exec.submit(b.run("panics", 1, Behaviour::Panic, &seen))?;
    let panicked = b.outcomes(1).await?;
    b.exec
        .submit(b.run("after", 1, Behaviour::Succeed, &seen))?;
    let after = b.outcomes(1).await?;
    ensure!(
        failed[0].state == RunState::Failed && failed[0].error.as_deref() == Some("disk full"),
        "{failed:?}"
    );
    ensure!(
        panicked[0].state == RunState::Failed
            && panicked[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("task panicked: boom")),
        "{panicked:?}"
    );
    ensure!(after[0].state == RunState::Succeeded, "{after:?}");
    let mut errors = Vec::new();
    while errors.len() < 2 {
        let e = next_event(&mut events).await?;
        if let Event::JobError { job_id, error, .. } = e {
            errors.push((job_id.to_string(), error));
        }
    }
    ensure!(
        errors[0] == ("fails".to_string(), "disk full".to_string())
            && errors[1].0 == "panics"
            && errors[1].1.contains("boom"),
        "{errors:?}"
    );
    b.exec.shutdown(true).await;
    Ok(())
}

/// A job at its instance limit is refused until its run ends; the running
/// count says so.
pub async fn max_instances_refuses_while_the_job_runs(
    exec: Arc<dyn Executor>,
    kind: Kind,
) -> Result<()> {
    let mut b = Bench::start(exec, kind)?;
    let seen: Arc<Seen> = Arc::default();
    let job = JobId::new("limited");
    let slow = Behaviour::Work(Duration::from_millis(400));
    b.exec
        .submit(b.run_with("limited", 1, slow, &seen, 1, None))?;
    eventually("the first run is counted", || {
        b.exec.running_instances(&job) == 1
    })
    .await?;
    match b
        .exec
        .submit(b.run_with("limited", 1, Behaviour::Succeed, &seen, 1, None))
    {
        Err(SubmitError::MaxInstancesReached { job_id, max }) if job_id == job && max == 1 => {}
        other => bail!("a second instance over the limit: {other:?}"),
    }
    // A limit of two admits a second run of the same job.
    b.exec
        .submit(b.run_with("limited", 1, slow, &seen, 2, None))?;
    let done = b.outcomes(2).await?;
    ensure!(
        done.iter().all(|o| o.state == RunState::Succeeded),
        "{done:?}"
    );
    eventually("nothing is counted once both ended", || {
        b.exec.running_instances(&job) == 0
    })
    .await?;
    b.exec
        .submit(b.run_with("limited", 1, Behaviour::Succeed, &seen, 1, None))?;
    b.outcomes(1).await?;
    b.exec.shutdown(true).await;
    Ok(())
}

/// A slot still running at its timeout is reported as timed out and has its
/// cancellation signalled.
pub async fn a_timeout_is_reported_and_signalled(
    exec: Arc<dyn Executor>,
    kind: Kind,
) -> Result<()> {
    let mut b = Bench::start(exec, kind)?;
    let mut events = b.events.subscribe();
    let seen: Arc<Seen> = Arc::default();
    b.exec.submit(b.run_with(
        "slow",
        1,
        Behaviour::UntilCancelled,
        &seen,
        1,
        Some(Duration::from_millis(150)),
    ))?;
    let done = b.outcomes(1).await?;
    ensure!(done[0].state == RunState::TimedOut, "{done:?}");
    eventually("the task saw its cancellation", || {
        seen.cancelled.load(Ordering::SeqCst)
    })
    .await?;
    let timed_out = loop {
        let e = next_event(&mut events).await?;
        if let Event::JobTimeout { timeout, .. } = e {
            break timeout;
        }
    };
    ensure!(timed_out == Duration::from_millis(150), "{timed_out:?}");
    b.exec.shutdown(true).await;
    Ok(())
}

/// `shutdown(true)` returns once the running run finished, and refuses new
/// runs from then on.
pub async fn shutdown_with_wait_waits_for_running_runs(
    exec: Arc<dyn Executor>,
    kind: Kind,
) -> Result<()> {
    let b = Bench::start(exec, kind)?;
    let seen: Arc<Seen> = Arc::default();
    b.exec.submit(b.run(
        "long",
        1,
        Behaviour::Work(Duration::from_millis(400)),
        &seen,
    ))?;
    eventually("the run started", || {
        !seen
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    })
    .await?;
    b.exec.shutdown(true).await;
    ensure!(
        seen.finished.load(Ordering::SeqCst) == 1 && !seen.cancelled.load(Ordering::SeqCst),
        "shutdown(true) returned before the run finished, or cancelled it"
    );
    ensure!(
        b.exec
            .submit(b.run("late", 1, Behaviour::Succeed, &seen))
            .err()
            == Some(SubmitError::ShutDown),
        "a run was accepted after shutdown"
    );
    Ok(())
}

/// `shutdown(false)` returns at once, signals cancellation to the running run,
/// and the later slots of its backlog do not start.
pub async fn shutdown_without_wait_cancels_and_returns_at_once(
    exec: Arc<dyn Executor>,
    kind: Kind,
) -> Result<()> {
    let b = Bench::start(exec, kind)?;
    let seen: Arc<Seen> = Arc::default();
    b.exec
        .submit(b.run("backlog", 3, Behaviour::UntilCancelled, &seen))?;
    eventually("the first slot started", || {
        !seen
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    })
    .await?;
    let t0 = Instant::now();
    b.exec.shutdown(false).await;
    ensure!(
        t0.elapsed() < Duration::from_secs(1),
        "shutdown(false) took {:?}",
        t0.elapsed()
    );
    eventually("the running slot saw its cancellation", || {
        seen.cancelled.load(Ordering::SeqCst)
    })
    .await?;
    eventually("the running slot ended", || {
        seen.finished.load(Ordering::SeqCst) == 1
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = seen.started.lock().unwrap_or_else(|p| p.into_inner()).len();
    ensure!(
        started == 1,
        "{started} slots started; later slots must not start"
    );
    Ok(())
}

/// After a shutdown, `start` makes the executor run again.
pub async fn starts_again_after_shutdown(exec: Arc<dyn Executor>, kind: Kind) -> Result<()> {
    let b = Bench::start(Arc::clone(&exec), kind)?;
    b.exec.shutdown(true).await;
    drop(b);
    let mut b = Bench::start(exec, kind)?;
    let seen = Arc::default();
    b.exec
        .submit(b.run("again", 1, Behaviour::Succeed, &seen))?;
    let done = b.outcomes(1).await?;
    ensure!(done[0].state == RunState::Succeeded, "{done:?}");
    b.exec.shutdown(true).await;
    Ok(())
}
