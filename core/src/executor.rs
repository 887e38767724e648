//! The executor seam, and the run logic every executor shares.

use foldhash::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clock::{BoxFuture, Clock};
use crate::error::Result;
use crate::event::{panic_message, Event, EventBus, EventMask};
use crate::job::JobId;
use crate::run::{truncate_error, RunId, RunState};
use crate::sync::lock;
use crate::task::{JobContext, TaskFn, TaskResult};

/// Which kind of task an executor prefers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Runs futures (tokio).
    Async,
    /// Runs blocking functions on threads.
    Blocking,
}

/// One submission: a job's due run times, executed one after another.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JobRun {
    /// The job's id.
    pub job_id: JobId,
    /// The alias of the job's store.
    pub jobstore: String,
    /// The scheduled run times, oldest first.
    pub run_times: Vec<DateTime<Utc>>,
    /// The task to call.
    pub task: TaskFn,
    /// The task's arguments.
    pub args: Value,
    /// The job's instance limit.
    pub max_instances: u32,
    /// The job's per-run timeout.
    pub timeout: Option<Duration>,
    /// The ledger id of each run time (same order as `run_times`; empty outside a scheduler).
    pub run_ids: Vec<RunId>,
    /// The attempt at these slots (1 for the first).
    pub attempt: u32,
}

impl JobRun {
    /// A run of `task` for the given run times.
    pub fn new(
        job_id: JobId,
        jobstore: impl Into<String>,
        run_times: Vec<DateTime<Utc>>,
        task: TaskFn,
        args: Value,
        max_instances: u32,
        timeout: Option<Duration>,
    ) -> Self {
        JobRun {
            job_id,
            jobstore: jobstore.into(),
            run_times,
            task,
            args,
            max_instances,
            timeout,
            run_ids: Vec::new(),
            attempt: 1,
        }
    }

    /// Attaches the ledger ids of the run times (one per run time, same order).
    pub fn with_runs(mut self, run_ids: Vec<RunId>, attempt: u32) -> Self {
        self.run_ids = run_ids;
        self.attempt = attempt;
        self
    }

    fn run_id(&self, i: usize) -> Option<&RunId> {
        self.run_ids.get(i)
    }
}

/// How a run ended, sent by the executor so the scheduler records it in the run ledger.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RunDone {
    /// The alias of the job's store.
    pub jobstore: String,
    /// The job's id.
    pub job_id: JobId,
    /// The run's ledger id.
    pub run_id: RunId,
    /// The run's terminal state.
    pub state: RunState,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// What an executor gets from the scheduler when it starts.
#[derive(Clone, Debug)]
pub struct ExecutorContext {
    /// The executor's alias.
    pub alias: String,
    /// Where run outcomes are reported.
    pub events: EventBus,
    /// The scheduler's clock.
    pub clock: Arc<dyn Clock>,
    /// The runtime that timers and async tasks run on.
    pub runtime: tokio::runtime::Handle,
    /// Where finished runs are reported for the run ledger (`None`: not recorded).
    pub outcomes: Option<tokio::sync::mpsc::UnboundedSender<RunDone>>,
}

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The job already has `max` runs executing.
    #[error("job '{job_id}' already has {max} running instance(s)")]
    MaxInstancesReached {
        /// The job id.
        job_id: JobId,
        /// Its instance limit.
        max: u32,
    },
    /// The executor has not been started.
    #[error("executor is not started")]
    NotStarted,
    /// The executor is shutting down.
    #[error("executor is shut down")]
    ShutDown,
}

/// Runs submitted job runs; `submit` never blocks.
///
/// The contract every executor keeps (the executor conformance suite in
/// `integration-tests` checks it for both built-in executors, with async and
/// blocking tasks):
///
/// - **Before [`start`](Executor::start)** and **after
///   [`shutdown`](Executor::shutdown)**, `submit` refuses with
///   [`SubmitError::NotStarted`] / [`SubmitError::ShutDown`]; `start` after a
///   shutdown makes the executor usable again.
/// - **Each slot** of a [`JobRun`] runs in order and is reported once: a
///   `JobStarted` event before it, then `JobExecuted`, `JobError` (the task's
///   error, or `task panicked: …`) or `JobTimeout`, and a [`RunDone`] on the
///   context's outcome channel for each slot that has a run id. A panic never
///   takes the executor down.
/// - **`max_instances`**: `submit` refuses with
///   [`SubmitError::MaxInstancesReached`] while the job already has that many
///   runs executing here; [`running_instances`](Executor::running_instances)
///   counts them ([`InstanceTracker`] does both).
/// - **Timeout**: a slot still running at its timeout has its
///   [`JobContext`] cancellation signalled and is reported as timed out (an
///   async task is also dropped; blocking code is reported when it returns).
/// - **`shutdown(true)`** refuses new runs and returns once running runs
///   finished; **`shutdown(false)`** returns at once, signals cancellation to
///   running runs, and later slots of a submitted backlog do not start.
///
/// [`execute_async`] and [`execute_blocking`] implement the per-slot part
/// (events, outcomes, timeout, panics) for executor authors.
#[async_trait]
pub trait Executor: Send + Sync + fmt::Debug + 'static {
    /// The kind of task this executor prefers (used to route jobs without an explicit executor).
    fn kind(&self) -> ExecutorKind;

    /// Starts (or starts again) the executor with the scheduler's event sink, clock and runtime.
    fn start(&self, ctx: ExecutorContext) -> Result<()>;

    /// Starts a run in the background, or refuses it; never blocks.
    fn submit(&self, run: JobRun) -> Result<(), SubmitError>;

    /// How many runs of `job_id` are executing.
    fn running_instances(&self, job_id: &JobId) -> u32;

    /// Stops accepting runs; with `wait`, returns once running runs finished,
    /// without, signals their cancellation and returns at once.
    async fn shutdown(&self, wait: bool);
}

/// Counts running instances per job and in total; executors share it.
#[derive(Debug, Default)]
pub struct InstanceTracker {
    running: Mutex<HashMap<JobId, u32>>,
    total: AtomicUsize,
    idle: Notify,
    closed: AtomicBool,
}

/// Holds one running instance; dropping it ends the instance.
#[derive(Debug)]
pub struct InstanceGuard {
    tracker: Arc<InstanceTracker>,
    job_id: JobId,
}

impl InstanceTracker {
    /// A tracker with nothing running.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Claims an instance slot for `job_id`, or says why not.
    pub fn try_acquire(
        self: &Arc<Self>,
        job_id: &JobId,
        max: u32,
    ) -> Result<InstanceGuard, SubmitError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SubmitError::ShutDown);
        }
        let mut running = lock(&self.running);
        let n = running.entry(job_id.clone()).or_insert(0);
        if *n >= max.max(1) {
            return Err(SubmitError::MaxInstancesReached {
                job_id: job_id.clone(),
                max,
            });
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        Ok(InstanceGuard {
            tracker: Arc::clone(self),
            job_id: job_id.clone(),
        })
    }

    /// How many instances of `job_id` are running.
    pub fn running(&self, job_id: &JobId) -> u32 {
        let running = lock(&self.running);
        running.get(job_id).copied().unwrap_or(0)
    }

    /// Refuses further submissions.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Accepts submissions again (after a restart).
    pub fn reopen(&self) {
        self.closed.store(false, Ordering::Release);
    }

    /// Completes when no instance is running.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.total.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        {
            let mut running = lock(&self.tracker.running);
            if let Some(n) = running.get_mut(&self.job_id) {
                *n -= 1;
                if *n == 0 {
                    running.remove(&self.job_id);
                }
            }
        }
        if self.tracker.total.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tracker.idle.notify_waiters();
        }
    }
}

enum Outcome {
    Ok,
    Failed(String),
    Panicked(String),
    TimedOut(Duration),
}

/// The span a run executes in: `sundial.run` with its job, run id, slot and
/// attempt; its `outcome` is recorded when the run ends.
fn run_span(run: &JobRun, i: usize, scheduled: DateTime<Utc>) -> tracing::Span {
    tracing::info_span!(
        "sundial.run",
        job_id = %run.job_id,
        jobstore = %run.jobstore,
        run_id = run.run_id(i).map(RunId::as_str),
        scheduled_time = %scheduled,
        attempt = run.attempt,
        outcome = tracing::field::Empty,
    )
}

fn report(
    ctx: &ExecutorContext,
    run: &JobRun,
    i: usize,
    scheduled: DateTime<Utc>,
    started: DateTime<Utc>,
    outcome: Outcome,
    span: &tracing::Span,
) {
    let run_id = run.run_id(i).cloned();
    let finished_at = ctx.clock.now();
    let (state, error) = match &outcome {
        Outcome::Ok => (RunState::Succeeded, None),
        Outcome::Failed(e) => (RunState::Failed, Some(e.clone())),
        Outcome::Panicked(m) => (RunState::Failed, Some(format!("task panicked: {m}"))),
        Outcome::TimedOut(t) => (
            RunState::TimedOut,
            Some(format!("run exceeded its timeout of {t:?}")),
        ),
    };
    span.record("outcome", state.as_str());
    if let (Some(tx), Some(id)) = (&ctx.outcomes, &run_id) {
        let _ = tx.send(RunDone {
            jobstore: run.jobstore.clone(),
            job_id: run.job_id.clone(),
            run_id: id.clone(),
            state,
            finished_at,
            error: error.map(truncate_error),
        });
    }
    let event = match outcome {
        Outcome::Ok => {
            if !ctx.events.wants(EventMask::JOB_EXECUTED) {
                return;
            }
            Event::JobExecuted {
                job_id: run.job_id.clone(),
                jobstore: run.jobstore.clone(),
                run_id,
                attempt: run.attempt,
                scheduled_run_time: scheduled,
                duration: (finished_at - started).to_std().unwrap_or_default(),
            }
        }
        Outcome::Failed(error) => {
            // Reported as a JobError event; logged as an error when nobody listens.
            tracing::debug!(job_id = %run.job_id, %error, "job run failed");
            Event::JobError {
                job_id: run.job_id.clone(),
                jobstore: run.jobstore.clone(),
                run_id,
                scheduled_run_time: Some(scheduled),
                error,
            }
        }
        Outcome::Panicked(msg) => {
            tracing::error!(job_id = %run.job_id, panic = %msg, "job run panicked");
            Event::JobError {
                job_id: run.job_id.clone(),
                jobstore: run.jobstore.clone(),
                run_id,
                scheduled_run_time: Some(scheduled),
                error: format!("task panicked: {msg}"),
            }
        }
        Outcome::TimedOut(timeout) => {
            tracing::warn!(job_id = %run.job_id, ?timeout, "job run timed out");
            Event::JobTimeout {
                job_id: run.job_id.clone(),
                jobstore: run.jobstore.clone(),
                run_id,
                scheduled_run_time: scheduled,
                timeout,
            }
        }
    };
    ctx.events.emit(event);
}

fn started(ctx: &ExecutorContext, run: &JobRun, i: usize, scheduled: DateTime<Utc>) {
    if ctx.events.wants(EventMask::JOB_STARTED) {
        ctx.events.emit(Event::JobStarted {
            job_id: run.job_id.clone(),
            jobstore: run.jobstore.clone(),
            run_id: run.run_id(i).cloned(),
            attempt: run.attempt,
            scheduled_run_time: scheduled,
        });
    }
}

fn context(
    run: &JobRun,
    i: usize,
    scheduled: DateTime<Utc>,
    started: DateTime<Utc>,
    cancel: CancellationToken,
) -> JobContext {
    JobContext {
        job_id: run.job_id.clone(),
        jobstore: run.jobstore.clone(),
        scheduled_run_time: scheduled,
        started_at: started,
        cancel,
        run_id: run.run_id(i).cloned(),
        attempt: run.attempt,
    }
}

fn deadline(started: DateTime<Utc>, timeout: Duration) -> DateTime<Utc> {
    crate::job::add_saturating(started, timeout)
}

/// Executes every run time of `run` as futures on the current runtime (blocking
/// tasks go to `spawn_blocking`). A timeout cancels the run; a panic becomes an
/// error event.
pub async fn execute_async(ctx: &ExecutorContext, run: &JobRun, shutdown: &CancellationToken) {
    for (i, &scheduled) in run.run_times.iter().enumerate() {
        if shutdown.is_cancelled() {
            // The executor is shutting down: later slots of the backlog do not start.
            break;
        }
        let span = run_span(run, i, scheduled);
        started(ctx, run, i, scheduled);
        let started = ctx.clock.now();
        let cancel = shutdown.child_token();
        let jc = context(run, i, scheduled, started, cancel.clone());
        let fut: BoxFuture<'static, TaskResult> = match &run.task {
            TaskFn::Async(f) => f(jc, run.args.clone()),
            TaskFn::Blocking(f) => {
                let f = Arc::clone(f);
                let args = run.args.clone();
                let span = span.clone();
                Box::pin(async move {
                    match tokio::task::spawn_blocking(move || {
                        span.in_scope(|| catch_unwind(AssertUnwindSafe(|| f(jc, args))))
                    })
                    .await
                    {
                        Ok(Ok(r)) => r,
                        Ok(Err(p)) => std::panic::resume_unwind(p),
                        Err(e) => Err(format!("blocking task could not run: {e}").into()),
                    }
                })
            }
        };
        let guarded = AssertUnwindSafe(fut.instrument(span.clone())).catch_unwind();
        let result = match run.timeout {
            Some(t) => {
                tokio::select! {
                    r = guarded => Some(r),
                    _ = ctx.clock.sleep_until(deadline(started, t)) => None,
                }
            }
            None => Some(guarded.await),
        };
        let outcome = match result {
            None => {
                cancel.cancel();
                Outcome::TimedOut(run.timeout.unwrap_or_default())
            }
            Some(Ok(Ok(()))) => Outcome::Ok,
            Some(Ok(Err(e))) => Outcome::Failed(e.to_string()),
            Some(Err(p)) => Outcome::Panicked(panic_message(p.as_ref())),
        };
        report(ctx, run, i, scheduled, started, outcome, &span);
    }
}

/// Executes every run time of `run` on the calling (non-runtime) thread; async
/// tasks are driven with the context's runtime handle. A run that exceeds its
/// timeout has its cancellation signalled and is reported as timed out;
/// `shutdown` cancelled signals every running run and starts no later slot.
pub fn execute_blocking(ctx: &ExecutorContext, run: &JobRun, shutdown: &CancellationToken) {
    for (i, &scheduled) in run.run_times.iter().enumerate() {
        if shutdown.is_cancelled() {
            // The executor is shutting down: later slots of the backlog do not start.
            break;
        }
        let span = run_span(run, i, scheduled);
        let _entered = span.enter();
        started(ctx, run, i, scheduled);
        let started = ctx.clock.now();
        let cancel = shutdown.child_token();
        let timer = run.timeout.map(|t| {
            let token = cancel.clone();
            let sleep = ctx.clock.sleep_until(deadline(started, t));
            ctx.runtime.spawn(async move {
                sleep.await;
                token.cancel();
            })
        });
        let jc = context(run, i, scheduled, started, cancel.clone());
        let result = catch_unwind(AssertUnwindSafe(|| match &run.task {
            TaskFn::Blocking(f) => f(jc, run.args.clone()),
            TaskFn::Async(f) => {
                // The task's code before its first await may use the runtime
                // (tokio::spawn, timers) as on the async executor.
                let fut = {
                    let _rt = ctx.runtime.enter();
                    f(jc, run.args.clone())
                };
                ctx.runtime.block_on(fut)
            }
        }));
        if let Some(timer) = timer {
            timer.abort();
        }
        let timed_out = run.timeout.is_some_and(|t| {
            (cancel.is_cancelled() && !shutdown.is_cancelled())
                || ctx.clock.now() > deadline(started, t)
        });
        let outcome = match result {
            _ if timed_out => Outcome::TimedOut(run.timeout.unwrap_or_default()),
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Err(p) => Outcome::Panicked(panic_message(p.as_ref())),
        };
        report(ctx, run, i, scheduled, started, outcome, &span);
    }
}
