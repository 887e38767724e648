//! The scheduling loop: sleep until the earliest due job, claim due jobs, plan
//! their runs (misfire / coalesce), start each slot by inserting its run record,
//! submit the slots that were started, release.

use foldhash::{HashSet, HashSetExt};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::decoded_cache::{Parsed, RunData};
use super::policy;
pub(crate) use super::policy::next_after;
use super::{lock, Inner, SchedulerState, MAX_BACKLOG_RUN_TIMES};
use crate::error::{Error, Result};
use crate::event::{Event, EventMask};
use crate::executor::{Executor, JobRun, RunDone, SubmitError};
use crate::job::{
    trunc_micros, JobId, JobRecord, OnInterrupted, Release, ReleaseOutcome, RetryPolicy,
};
use crate::run::{NewRun, RunId, RunInsert, RunQuery, RunRecord, RunState};
use crate::store::{JobStore, ReleaseItem};
use crate::task::TaskFn;

fn earliest(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(a.map_or(b, |a| a.min(b)))
}

pub(crate) fn after(now: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    crate::job::add_saturating(now, d)
}

pub(crate) async fn run(inner: Arc<Inner>, stop: CancellationToken) {
    for (alias, store) in inner.stores() {
        spawn_watcher(&inner, alias, store, stop.clone());
    }
    let _watchers = Watchers(Arc::clone(&inner));
    loop {
        if stop.is_cancelled() {
            return;
        }
        inner.pass_started();
        let deadline = if inner.state() == SchedulerState::Running {
            let deadline = inner.process_due().await;
            *lock(&inner.last_pass) = Some(inner.clock.now());
            inner.pass_planned(deadline);
            deadline
        } else {
            None
        };
        let sleep = deadline.map(|d| inner.clock.sleep_until(d));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = inner.wake.notified() => {}
            _ = async { match sleep { Some(s) => s.await, None => std::future::pending().await } } => {}
        }
    }
}

/// Stops the watcher tasks when the loop ends.
struct Watchers(Arc<Inner>);

impl Drop for Watchers {
    fn drop(&mut self) {
        for (_, w) in lock(&self.0.watchers).drain() {
            w.abort();
        }
    }
}

/// Starts watching a shared store for other processes' changes (replacing a
/// watcher of the same alias).
pub(crate) fn spawn_watcher(
    inner: &Arc<Inner>,
    alias: String,
    store: Arc<dyn crate::store::JobStore>,
    stop: CancellationToken,
) {
    if !store.capabilities().shared {
        return;
    }
    let task = tokio::spawn(watch(Arc::clone(inner), alias.clone(), store, stop));
    if let Some(old) = lock(&inner.watchers).insert(alias, task) {
        old.abort();
    }
}

/// Wakes the loop whenever another process changes `store`'s jobs, for as
/// long as the store offers change notices; subscribes again after a lost
/// channel (polling meanwhile).
async fn watch(
    inner: Arc<Inner>,
    alias: String,
    store: Arc<dyn crate::store::JobStore>,
    stop: CancellationToken,
) {
    use futures::StreamExt as _;
    loop {
        match store.watch_changes().await {
            Ok(None) => return,
            Ok(Some(mut changes)) => {
                tracing::debug!(jobstore = %alias, "watching for changes by other processes");
                lock(&inner.watched).insert(alias.clone());
                // What changed while not subscribed is found by looking now.
                inner.wake.notify_one();
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        change = changes.next() => match change {
                            Some(()) => inner.wake.notify_one(),
                            None => break,
                        },
                    }
                }
                lock(&inner.watched).remove(&alias);
                tracing::debug!(jobstore = %alias, "change notices lost; polling until subscribed again");
            }
            Err(e) => {
                tracing::debug!(jobstore = %alias, error = %e, "cannot subscribe to change notices; polling");
            }
        }
        let pause = inner.config.retry_interval.clamp(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(1),
        );
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// A claimed job's parsed content and the task and executor it runs with here.
pub(crate) struct Runnable {
    pub(crate) parsed: Arc<Parsed>,
    pub(crate) task: TaskFn,
    pub(crate) executor: Arc<dyn Executor>,
    /// Whether `parsed` was read now (not kept from an earlier claim).
    pub(crate) fresh: bool,
}

/// What one claimed job should do in this pass.
#[derive(Clone)]
pub(crate) struct Plan {
    pub(crate) id: JobId,
    pub(crate) version: u64,
    /// The job's decoded content (task name, arguments, options).
    pub(crate) job: Arc<Parsed>,
    pub(crate) task: TaskFn,
    pub(crate) executor: Arc<dyn Executor>,
    /// The attempt the slots start as (1, or more for a retry).
    pub(crate) attempt: u32,
    /// Slots to start now.
    pub(crate) due: Vec<DateTime<Utc>>,
    /// Slots that missed their grace time, with how late they are.
    pub(crate) missed: Vec<(DateTime<Utc>, std::time::Duration)>,
    /// Earlier slots of a coalesced backlog: recorded, not run.
    pub(crate) coalesced: Vec<DateTime<Utc>>,
    pub(crate) outcome: Release,
    /// The job is exhausted but kept (paused) until its run ends, so that an
    /// interruption can still rerun it ([`OnInterrupted::Rerun`]).
    pub(crate) held: bool,
}

/// A claimed batch whose run records are being written: its plans and the
/// exact records (ids included) to insert.
pub(crate) struct Unstarted {
    pub(crate) plans: Vec<Plan>,
    pub(crate) runs: Vec<NewRun>,
    /// When the batch's jobs were claimed (their leases lapse a lease later).
    pub(crate) claimed_at: DateTime<Utc>,
}

impl Plan {
    /// A plan for attempt `attempt` of `rec`'s slots, with no slots yet.
    pub(crate) fn new(rec: JobRecord, run: Runnable, attempt: u32) -> Self {
        Plan {
            id: rec.id,
            version: rec.version,
            job: run.parsed,
            task: run.task,
            executor: run.executor,
            attempt,
            due: Vec::new(),
            missed: Vec::new(),
            coalesced: Vec::new(),
            outcome: Release::Unclaim,
            held: false,
        }
    }

    /// The job's instance limit.
    pub(crate) fn max_instances(&self) -> u32 {
        self.job.data.options.max_instances
    }

    /// The job's retry policy.
    pub(crate) fn retry(&self) -> Option<&RetryPolicy> {
        self.job.data.options.retry.as_ref()
    }

    /// How the job is handed back once its slots are started.
    fn release_item(self) -> (ReleaseItem, String) {
        let task = removal_task(&self.outcome, &self.job.data.task);
        (
            ReleaseItem {
                id: self.id,
                version: self.version,
                outcome: self.outcome,
            },
            task,
        )
    }
}

/// The task name a release hands on: what a removal forgets (an inline
/// closure's registration); no name otherwise.
fn removal_task(outcome: &Release, task: &str) -> String {
    if *outcome == Release::Remove && task.starts_with(super::INLINE_PREFIX) {
        task.to_string()
    } else {
        String::new()
    }
}

enum Step {
    /// Hand the job back at once with this outcome.
    Release(ReleaseItem, String),
    /// The job cannot run here: hand it back (unless it came back unclaimed).
    PassedOver(Option<ReleaseItem>, JobId),
    /// Start these slots, then release.
    Plan(Box<Plan>),
}

/// Full batches in a row of jobs that cannot run here after which a pass
/// stops claiming from a store.
const FRUITLESS_BATCHES: u32 = 20;

/// How long a store whose due jobs cannot run here waits for the next pass.
const STALLED_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the loop may sleep on a shared store without change notices, by
/// default.
const POLL_WITHOUT_NOTICES: std::time::Duration = std::time::Duration::from_secs(1);

impl Inner {
    /// The longest sleep before looking at shared store `alias` again.
    fn idle_poll(&self, alias: &str) -> std::time::Duration {
        if self.config.idle_sleep_set || lock(&self.watched).contains(alias) {
            self.config.max_idle_sleep
        } else {
            self.config.max_idle_sleep.min(POLL_WITHOUT_NOTICES)
        }
    }

    /// Processes every store once; returns when the loop should wake next.
    pub(crate) async fn process_due(&self) -> Option<DateTime<Utc>> {
        let now = self.clock.now();
        let mut next = None;
        for (alias, store) in self.stores() {
            let retry_at = lock(&self.store_retry).get(&alias).copied();
            if let Some(t) = retry_at {
                if t > now {
                    next = earliest(next, t);
                    continue;
                }
            }
            let result = async {
                let stalled = self.process_store(&alias, store.as_ref()).await?;
                let skip = lock(&self.passed_over).skip(&alias, self.clock.now());
                store.get_next_run_time(&skip).await.map(|t| (stalled, t))
            }
            .await;
            match result {
                Ok((stalled, t)) => {
                    lock(&self.store_retry).remove(&alias);
                    if let Some(t) = t {
                        let t = self.to_local(&alias, t);
                        // Due jobs that cannot run here are not claimed again at once.
                        let t = if stalled {
                            t.max(after(now, STALLED_WAIT))
                        } else {
                            t
                        };
                        next = earliest(next, t);
                    }
                    if let Some(t) = lock(&self.passed_over).next_expiry(&alias, self.clock.now()) {
                        next = earliest(next, t);
                    }
                    if store.capabilities().shared {
                        next = earliest(next, after(now, self.idle_poll(&alias)));
                    }
                }
                Err(e) => {
                    // Connection trouble is retried soon; other failures wait longer.
                    let wait = if e.is_temporary() {
                        self.config
                            .retry_interval
                            .min(std::time::Duration::from_secs(1))
                    } else {
                        self.config.retry_interval
                    };
                    let retry = after(now, wait);
                    tracing::error!(jobstore = %alias, error = %e, retry_in = ?wait, "job store failed; retrying later");
                    self.emit(Event::StoreError {
                        jobstore: alias.clone(),
                        error: e.to_string(),
                    });
                    lock(&self.store_retry).insert(alias, retry);
                    next = earliest(next, retry);
                }
            }
        }
        next
    }

    /// Claims and processes a store's due jobs, batch after batch; says whether
    /// it stopped at batches of jobs none of which can run here (then the
    /// store is looked at again a little later, not at once).
    async fn process_store(&self, alias: &str, store: &dyn JobStore) -> Result<bool> {
        // Releases that failed earlier are safe to repeat (owner and version are checked).
        let unfinished = lock(&self.unreleased).remove(alias).unwrap_or_default();
        if !unfinished.is_empty() {
            self.release_all(alias, store, unfinished).await?;
        }
        // Jobs passed over in this call: left out of the next claims even
        // beyond the passed-over list's cap, so that the jobs behind them are
        // reached.
        let mut passed_here: HashSet<JobId> = HashSet::new();
        let mut fruitless = 0;
        // A batch whose run records may or may not have been written: insert
        // the same records again (same run ids) before anything else.
        let unstarted = lock(&self.unstarted).remove(alias);
        if let Some(mut batch) = unstarted {
            let now = self.store_now(alias);
            if after(batch.claimed_at, self.config.lease) <= now {
                // The claims lapsed: other schedulers may have taken the jobs.
                tracing::warn!(jobstore = %alias, jobs = batch.plans.len(), "gave up starting a batch whose run records could not be written for a whole lease; its jobs are claimable again, and records that were written are marked interrupted");
            } else {
                let until = after(now, self.config.lease);
                for r in &mut batch.runs {
                    if r.record.state == RunState::Running {
                        r.record.heartbeat_until = Some(until);
                    }
                }
                self.start_batch(alias, store, batch, true).await?;
            }
        }
        loop {
            if self.state() != SchedulerState::Running {
                return Ok(false);
            }
            let now = self.store_now(alias);
            let mut skip = lock(&self.passed_over).skip(alias, self.clock.now());
            if !passed_here.is_empty() {
                let listed: HashSet<&JobId> = skip.iter().collect();
                let more: Vec<JobId> = passed_here
                    .iter()
                    .filter(|id| !listed.contains(id))
                    .cloned()
                    .collect();
                skip.extend(more);
            }
            let jobs = store
                .acquire_due(
                    now,
                    &self.owner,
                    self.config.lease,
                    self.config.batch_size,
                    &skip,
                )
                .await?;
            let n = jobs.len();
            let mut done = Vec::with_capacity(n);
            let mut plans = Vec::new();
            let mut progressed = false;
            for job in jobs {
                match self.process_job(alias, job, now) {
                    Some(Step::Release(item, task)) => {
                        progressed = true;
                        done.push((item, task));
                    }
                    Some(Step::Plan(p)) => {
                        progressed = true;
                        plans.push(*p);
                    }
                    Some(Step::PassedOver(item, id)) => {
                        // Only a removal uses the task name.
                        done.extend(item.map(|i| (i, String::new())));
                        passed_here.insert(id);
                    }
                    None => {}
                }
            }
            // Jobs that need no run are released even if starting the others fails.
            self.release_all(alias, store, done).await?;
            if !plans.is_empty() {
                let runs = self.new_runs(&plans, now);
                self.start_batch(
                    alias,
                    store,
                    Unstarted {
                        plans,
                        runs,
                        claimed_at: now,
                    },
                    false,
                )
                .await?;
            }
            if n < self.config.batch_size {
                return Ok(false);
            }
            if !progressed {
                fruitless += 1;
                if fruitless >= FRUITLESS_BATCHES {
                    return Ok(true);
                }
            }
        }
    }

    /// Starts a batch and releases its jobs. When recording the runs fails,
    /// the batch keeps its claims and is tried again (`retry`), with the same
    /// run ids, on the next pass: the store may have written the records
    /// without the reply arriving, and only the same ids let this node
    /// recognise them as its own.
    async fn start_batch(
        &self,
        alias: &str,
        store: &dyn JobStore,
        mut batch: Unstarted,
        retry: bool,
    ) -> Result<()> {
        if let Err(e) = self
            .start_runs(alias, store, &mut batch.plans, &batch.runs, retry)
            .await
        {
            lock(&self.unstarted).insert(alias.to_string(), batch);
            return Err(e);
        }
        let done = batch.plans.into_iter().map(Plan::release_item).collect();
        self.release_all(alias, store, done).await
    }

    /// The run records of a batch's plans, in plan order: each plan's due
    /// slots (`running`), then its missed and coalesced slots (`missed`).
    fn new_runs(&self, plans: &[Plan], now: DateTime<Utc>) -> Vec<NewRun> {
        let heartbeat_until = after(now, self.config.lease);
        let mut new_runs = Vec::new();
        for p in plans {
            for t in &p.due {
                new_runs.push(NewRun {
                    record: RunRecord::running(
                        p.id.clone(),
                        *t,
                        1,
                        self.owner.clone(),
                        now,
                        heartbeat_until,
                    ),
                    max_instances: Some(p.max_instances()),
                });
            }
            let missed = |t: DateTime<Utc>, why: String| NewRun {
                record: RunRecord::terminal(
                    p.id.clone(),
                    t,
                    1,
                    RunState::Missed,
                    self.owner.clone(),
                    now,
                    Some(why),
                ),
                max_instances: None,
            };
            for (t, late) in &p.missed {
                new_runs.push(missed(
                    *t,
                    format!("started {late:?} late, past the job's misfire grace time"),
                ));
            }
            if let Some(last) = p.due.last().or(p.missed.last().map(|(t, _)| t)) {
                for t in &p.coalesced {
                    new_runs.push(missed(
                        *t,
                        format!("coalesced: the job coalesces its backlog into one run, at {last}"),
                    ));
                }
            }
        }
        new_runs
    }

    /// Whether the record holding a slot that was reported duplicate is the
    /// one this node tried to write earlier (its reply was lost), and still
    /// `running`.
    async fn is_own_running(&self, store: &dyn JobStore, new: &NewRun) -> Result<bool> {
        let r = &new.record;
        let query = RunQuery {
            job_id: Some(r.job_id.clone()),
            state: None,
            since: Some(r.scheduled_time),
            limit: 1000,
        };
        let found = store.query_runs(&query).await?;
        Ok(found.iter().any(|s| {
            s.id == r.id && s.state == RunState::Running && s.owner.as_ref() == Some(&self.owner)
        }))
    }

    /// Starts the planned slots of a batch: one `insert_runs` call records every
    /// due and missed slot; only slots whose record was inserted as `running` are
    /// submitted. On a retry, a slot reported duplicate whose record
    /// carries this batch's run id is this node's own earlier write, and runs.
    async fn start_runs(
        &self,
        alias: &str,
        store: &dyn JobStore,
        plans: &mut [Plan],
        new_runs: &[NewRun],
        retry: bool,
    ) -> Result<()> {
        if new_runs.is_empty() {
            return Ok(());
        }
        // Runs this node saw finish must not count against `max_instances`.
        if let Err(e) = self.flush_store(alias, store).await {
            tracing::warn!(jobstore = %alias, error = %e, "finished runs not recorded yet; they may count against max_instances");
        }
        let mut results = store.insert_runs(new_runs).await?;
        if results.len() != new_runs.len() {
            return Err(Error::Config(format!(
                "job store '{alias}' answered {} results for {} runs",
                results.len(),
                new_runs.len()
            )));
        }
        if retry {
            let mut own = Vec::new();
            for (result, new) in results.iter_mut().zip(new_runs) {
                if *result == RunInsert::Duplicate
                    && new.record.state == RunState::Running
                    && self.is_own_running(store, new).await?
                {
                    tracing::info!(job_id = %new.record.job_id, scheduled = %new.record.scheduled_time, "run recorded by an earlier attempt whose reply was lost; starting it");
                    *result = RunInsert::Inserted(RunState::Running);
                    own.push(new.record.id.clone());
                }
            }
            // Written with the first attempt's heartbeat: renewed before they start.
            if !own.is_empty() {
                let until = after(self.store_now(alias), self.config.lease);
                store.heartbeat_runs(&self.owner, &own, until).await?;
            }
        }
        let now = self.store_now(alias);
        let mut outcomes = results.into_iter().zip(new_runs);
        for p in plans.iter_mut() {
            let mut started: Vec<(DateTime<Utc>, RunId)> = Vec::new();
            let mut skipped = Vec::new();
            for (result, new) in outcomes.by_ref().take(p.due.len()) {
                let t = new.record.scheduled_time;
                match result {
                    RunInsert::Inserted(RunState::Running) => {
                        started.push((t, new.record.id.clone()))
                    }
                    RunInsert::Inserted(_) => skipped.push(t),
                    RunInsert::Duplicate => {
                        tracing::info!(job_id = %p.id, scheduled = %t, "slot already started by another scheduler; not running it again");
                    }
                }
            }
            let coalesced = if p.due.is_empty() && p.missed.is_empty() {
                0
            } else {
                p.coalesced.len()
            };
            for (result, new) in outcomes.by_ref().take(p.missed.len()) {
                if result == RunInsert::Inserted(RunState::Missed) {
                    let t = new.record.scheduled_time;
                    tracing::warn!(job_id = %p.id, scheduled = %t, "run missed its grace time");
                    self.emit(Event::JobMissed {
                        job_id: p.id.clone(),
                        jobstore: alias.to_string(),
                        scheduled_run_time: t,
                    });
                }
            }
            // Coalesced slots are history only: no event.
            outcomes.by_ref().take(coalesced).for_each(drop);
            if !skipped.is_empty() {
                tracing::warn!(job_id = %p.id, max = p.max_instances(), "maximum running instances reached; run skipped");
                self.emit(Event::JobMaxInstances {
                    job_id: p.id.clone(),
                    jobstore: alias.to_string(),
                    run_times: skipped,
                });
            }
            if !started.is_empty() {
                self.submit(alias, p, started, now);
            } else if p.held {
                // Nothing of it runs here: nothing to keep the job for.
                p.held = false;
                p.outcome = Release::Remove;
            }
        }
        Ok(())
    }

    /// Hands started slots to the job's executor; slots it refuses are recorded as
    /// skipped or cancelled.
    pub(crate) fn submit(
        &self,
        alias: &str,
        p: &Plan,
        started: Vec<(DateTime<Utc>, RunId)>,
        now: DateTime<Utc>,
    ) {
        let (times, ids): (Vec<_>, Vec<_>) = started.into_iter().unzip();
        self.track(alias, &ids);
        if p.held {
            let mut held = lock(&self.held);
            for (id, t) in ids.iter().zip(&times) {
                held.insert(id.clone(), (alias.to_string(), p.id.clone(), *t));
            }
        }
        if p.retry().is_some_and(|r| r.retries_after(p.attempt)) {
            let mut retries = lock(&self.retries);
            for (id, t) in ids.iter().zip(&times) {
                retries.insert(
                    id.clone(),
                    super::ledger::Retry {
                        alias: alias.to_string(),
                        scheduled: *t,
                        plan: p.clone(),
                    },
                );
            }
        }
        let run = JobRun::new(
            p.id.clone(),
            alias,
            times.clone(),
            p.task.clone(),
            p.job.data.args.clone(),
            p.max_instances(),
            p.job.data.options.timeout,
        )
        .with_runs(ids.clone(), p.attempt);
        let refused = match p.executor.submit(run) {
            Ok(()) => {
                if self.events.wants(EventMask::JOB_SUBMITTED) {
                    self.emit(Event::JobSubmitted {
                        job_id: p.id.clone(),
                        jobstore: alias.to_string(),
                        run_times: times,
                    });
                }
                return;
            }
            Err(SubmitError::MaxInstancesReached { .. }) => {
                tracing::warn!(job_id = %p.id, max = p.max_instances(), "maximum running instances reached; run skipped");
                self.emit(Event::JobMaxInstances {
                    job_id: p.id.clone(),
                    jobstore: alias.to_string(),
                    run_times: times,
                });
                (
                    RunState::Skipped,
                    "maximum running instances reached in this process".to_string(),
                )
            }
            Err(e) => {
                let msg = format!("executor refused the run: {e}");
                self.emit(Event::JobError {
                    job_id: p.id.clone(),
                    jobstore: alias.to_string(),
                    run_id: ids.first().cloned(),
                    scheduled_run_time: times.first().copied(),
                    error: msg.clone(),
                });
                (RunState::Cancelled, msg)
            }
        };
        for id in ids {
            lock(&self.retries).remove(&id);
            self.record_done(RunDone {
                jobstore: alias.to_string(),
                job_id: p.id.clone(),
                run_id: id,
                state: refused.0,
                finished_at: now,
                error: Some(refused.1.clone()),
            });
        }
    }

    fn job_error(&self, alias: &str, rec: &JobRecord, error: String) {
        tracing::error!(job_id = %rec.id, jobstore = %alias, %error, "job failed to schedule; it stays stored");
        self.emit(Event::JobError {
            job_id: rec.id.clone(),
            jobstore: alias.to_string(),
            run_id: None,
            scheduled_run_time: rec.next_run_time,
            error,
        });
    }

    /// A stored job's decoded content and trigger, and the task and executor
    /// it runs with on this scheduler; or why it cannot run here.
    pub(crate) fn runnable(
        &self,
        alias: &str,
        rec: &JobRecord,
    ) -> std::result::Result<Runnable, String> {
        if let Some(reason) = &rec.quarantined {
            return Err(format!("stored job is unreadable: {reason}"));
        }
        let (parsed, fresh) = self.parsed(alias, rec)?;
        let data = &parsed.data;
        let task = self.task(&data.task).ok_or_else(|| {
            Error::UnknownTask {
                task: data.task.clone(),
            }
            .to_string()
        })?;
        let executor = self
            .executor_for(&data.options, &task)
            .map_err(|e| e.to_string())?;
        Ok(Runnable {
            parsed,
            task,
            executor,
            fresh,
        })
    }

    /// A stored job's content, decoded, with its trigger parsed: from the
    /// cache while the stored text is the same (then not `fresh`); a fresh
    /// one is for the caller to keep in the cache or not.
    fn parsed(
        &self,
        alias: &str,
        rec: &JobRecord,
    ) -> std::result::Result<(Arc<Parsed>, bool), String> {
        if let Some(p) = lock(&self.decoded).get(alias, &rec.id, &rec.content) {
            return Ok((p, false));
        }
        // The quick way reads the trigger from its text; whatever it cannot
        // read goes the full way, which also says what is wrong.
        let quick = rec.content.for_run().and_then(|c| {
            let trigger = self.triggers.parse_text(c.trigger.get()).ok()?;
            let data = RunData {
                task: c.task,
                args: c.args,
                options: c.options,
            };
            Some((data, trigger))
        });
        let (data, trigger) = match quick {
            Some(read) => read,
            None => {
                let data = rec.decode().map_err(|e| e.to_string())?;
                let trigger = self
                    .parse_trigger(&data)
                    .map_err(|e| format!("stored trigger is unreadable: {e}"))?;
                (data.into(), trigger)
            }
        };
        Ok((Parsed::new(rec.content.clone(), data, trigger), true))
    }

    /// Reports a claimed job that cannot run here and hands it back at once,
    /// so that a scheduler that can run it claims it; this one passes it over
    /// for a while that doubles each time (up to a minute).
    fn pass_over(&self, alias: &str, rec: JobRecord, why: String) -> Option<Step> {
        let wait = lock(&self.passed_over).pass_over(alias, &rec.id, self.clock.now());
        tracing::error!(job_id = %rec.id, jobstore = %alias, error = %why, retry_here_in = ?wait, "cannot run job here; handed back for other schedulers");
        self.emit(Event::JobError {
            job_id: rec.id.clone(),
            jobstore: alias.to_string(),
            run_id: None,
            scheduled_run_time: rec.next_run_time,
            error: why,
        });
        // A quarantined record comes back unclaimed: nothing to hand back.
        let item = rec.lease.as_ref().map(|_| ReleaseItem {
            id: rec.id.clone(),
            version: rec.version,
            outcome: Release::Unclaim,
        });
        Some(Step::PassedOver(item, rec.id))
    }

    /// Plans one claimed job. A job that cannot run here (unknown task,
    /// unreadable record or trigger, missing executor) is handed back.
    fn process_job(&self, alias: &str, rec: JobRecord, now: DateTime<Utc>) -> Option<Step> {
        let run = match self.runnable(alias, &rec) {
            Ok(r) => r,
            Err(e) => return self.pass_over(alias, rec, e),
        };
        let parsed = Arc::clone(&run.parsed);
        let (data, trigger) = (&parsed.data, &parsed.trigger);
        {
            let mut passed = lock(&self.passed_over);
            if !passed.is_empty() {
                passed.forget(alias, &rec.id);
            }
        }
        let Some(first) = rec.next_run_time.map(trunc_micros) else {
            return Some(Step::Release(
                ReleaseItem {
                    id: rec.id,
                    version: rec.version,
                    outcome: Release::Unclaim,
                },
                data.task.clone(),
            ));
        };

        let decision = policy::decide(trigger.as_ref(), first, now, &data.options);
        if decision.truncated {
            tracing::warn!(job_id = %rec.id, cap = MAX_BACKLOG_RUN_TIMES, "backlog of missed runs truncated");
        }
        let trigger_failed = decision.trigger_error.is_some();
        if let Some(e) = &decision.trigger_error {
            // The job is kept: only an exhausted trigger (`Ok(None)`) removes it.
            self.job_error(alias, &rec, format!("trigger failed: {e}"));
        }
        let policy::Decision {
            due,
            missed,
            coalesced,
            next,
            ..
        } = decision;
        // An exhausted job whose interrupted run is to be rerun is kept,
        // paused, until the run ends (only another process can find it
        // interrupted).
        let held = next.is_none()
            && !trigger_failed
            && !due.is_empty()
            && data.options.on_interrupted == OnInterrupted::Rerun
            && self.store(alias).is_ok_and(|s| s.capabilities().shared);
        let outcome = match next {
            Some(n) => Release::Reschedule {
                next_run_time: Some(n),
            },
            None if trigger_failed => Release::Reschedule {
                next_run_time: Some(trunc_micros(after(now, self.config.retry_interval))),
            },
            None if held => Release::Reschedule {
                next_run_time: None,
            },
            None => Release::Remove,
        };
        // A job that runs again keeps its parsed content for its next claim.
        match (outcome == Release::Remove, run.fresh) {
            (true, false) => lock(&self.decoded).forget(alias, &rec.id),
            (false, true) => lock(&self.decoded).put(alias, &rec.id, Arc::clone(&parsed)),
            _ => {}
        }
        let mut plan = Plan::new(rec, run, 1);
        plan.due = due;
        plan.missed = missed;
        plan.coalesced = coalesced;
        plan.outcome = outcome;
        plan.held = held;
        Some(Step::Plan(Box::new(plan)))
    }

    /// Hands a batch of processed jobs back to the store in one call; when the
    /// store fails, the batch is kept and retried on the next pass.
    async fn release_all(
        &self,
        alias: &str,
        store: &dyn JobStore,
        done: Vec<(ReleaseItem, String)>,
    ) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let items: Vec<ReleaseItem> = done.iter().map(|(i, _)| i.clone()).collect();
        let results = match store.release_many(&self.owner, items).await {
            Ok(r) => r,
            Err(e) => {
                lock(&self.unreleased)
                    .entry(alias.to_string())
                    .or_default()
                    .extend(done);
                return Err(e);
            }
        };
        for (result, (item, task)) in results.into_iter().zip(done) {
            match result {
                Ok(ReleaseOutcome::Applied) if item.outcome == Release::Remove => {
                    self.forget_inline(&task);
                    self.emit(Event::JobRemoved {
                        job_id: item.id,
                        jobstore: alias.to_string(),
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job_id = %item.id, error = %e, "lease lost before release (another scheduler took the job)");
                    if matches!(e, Error::LeaseLost { .. }) {
                        self.emit(Event::LeaseLost {
                            job_id: item.id,
                            jobstore: alias.to_string(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
