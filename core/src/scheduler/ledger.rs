//! The ledger task: records finished runs, heartbeats running ones, marks runs
//! whose owner stopped heartbeating as interrupted, and prunes old history.

use foldhash::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::run_loop::{after, next_after, Plan};
use super::{lock, Inner, SchedulerState};
use crate::error::Result;
use crate::event::Event;
use crate::executor::RunDone;
use crate::job::{OnInterrupted, DEFAULT_RERUN_ATTEMPTS};
use crate::run::{NewRun, RunFinish, RunId, RunInsert, RunRecord, RunState};
use crate::store::JobStore;

/// How many lapsed runs one sweep marks per store.
const SWEEP_LIMIT: usize = 500;

/// How long outcomes are gathered before they are written.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// How many queued outcomes are written without waiting further.
const FLUSH_BATCH: usize = 500;

/// How often old runs are pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// A started run whose job retries failures: what is needed to start its next attempt.
pub(crate) struct Retry {
    pub(crate) alias: String,
    pub(crate) scheduled: DateTime<Utc>,
    pub(crate) plan: Plan,
}

/// An exhausted one-off job kept until its run ends: store alias, job, slot.
pub(crate) type Held = (String, crate::job::JobId, DateTime<Utc>);

/// Finished runs waiting to be written, per store alias.
pub(crate) type Pending = HashMap<String, Vec<RunFinish>>;

pub(crate) async fn run(
    inner: Arc<Inner>,
    stop: CancellationToken,
    mut rx: UnboundedReceiver<RunDone>,
) {
    let mut next_prune = inner.clock.now();
    // An absolute deadline, kept across wake-ups: finished runs arriving often
    // must not postpone the heartbeat.
    let mut next_tick: Option<DateTime<Utc>> = None;
    loop {
        let now = inner.clock.now();
        if now >= next_prune {
            // Pruning a large history takes a while: on its own task, so that
            // heartbeats are never late for it.
            let pruner = Arc::clone(&inner);
            tokio::spawn(async move {
                let Ok(_one) = pruner.prune_lock.try_lock() else {
                    return;
                };
                pruner.prune(now).await;
                pruner.prune_nodes(now).await;
            });
            next_prune = after(now, PRUNE_EVERY);
        }
        if inner.needs_ticks() {
            next_tick.get_or_insert_with(|| after(now, inner.config.heartbeat));
        } else {
            next_tick = None;
        }
        // Heartbeats first: writing a backlog of outcomes to a slow store must
        // not let this node's running runs lapse.
        if next_tick.is_some_and(|t| t <= now) {
            inner.heartbeat_node().await;
            inner.heartbeat().await;
            inner.sweep().await;
            next_tick = Some(after(now, inner.config.heartbeat));
        }
        let tick = next_tick.map_or(next_prune, |t| t.min(next_prune));
        let sleep = inner.clock.sleep_until(tick);
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                while let Ok(d) = rx.try_recv() {
                    inner.add_finished(d);
                }
                inner.flush_all().await;
                inner.abandon_active().await;
                lock(&inner.retries).clear();
                return;
            }
            msg = rx.recv() => {
                if let Some(d) = msg {
                    // One-off jobs kept until their run ended go once the
                    // outcome is written, so the history never lacks it.
                    let mut ended = Vec::new();
                    run_ended(&inner, d, &mut ended);
                    // Gather what finishes within a few milliseconds into one write
                    // per store (the run loop flushes on its own before it starts
                    // runs, so waiting here never inflates a running count).
                    let gather = inner.clock.sleep_until(after(inner.clock.now(), GATHER));
                    tokio::pin!(gather);
                    loop {
                        while let Ok(d) = rx.try_recv() {
                            run_ended(&inner, d, &mut ended);
                        }
                        if inner.queued_finishes() >= FLUSH_BATCH {
                            break;
                        }
                        tokio::select! {
                            biased;
                            _ = &mut gather => break,
                            _ = stop.cancelled() => break,
                            more = rx.recv() => match more {
                                Some(d) => run_ended(&inner, d, &mut ended),
                                None => break,
                            },
                        }
                    }
                    inner.flush_all().await;
                    for (alias, job, slot) in ended {
                        inner.remove_held(&alias, &job, slot).await;
                    }
                }
            }
            _ = sleep => {
                // Outcomes a store refused earlier are retried on each tick.
                inner.flush_all().await;
            }
        }
    }
}

/// What follows a run's end: a retry, when the job retries failures and has
/// attempts left; else, for a one-off job kept until its run ended, the job
/// is added to `ended` for removal after the outcome is written. The outcome
/// is queued for the ledger.
fn run_ended(inner: &Arc<Inner>, done: RunDone, ended: &mut Vec<Held>) {
    let retried = schedule_retry(inner, &done);
    let held = lock(&inner.held).remove(&done.run_id);
    ended.extend(held.filter(|_| !retried));
    inner.add_finished(done);
}

/// When a failed or timed-out run's job has attempts left, starts the next
/// attempt of the same slot after the policy's backoff; says whether it did.
fn schedule_retry(inner: &Arc<Inner>, done: &RunDone) -> bool {
    let Some(retry) = lock(&inner.retries).remove(&done.run_id) else {
        return false;
    };
    if !matches!(done.state, RunState::Failed | RunState::TimedOut) {
        return false;
    }
    let Some(policy) = retry.plan.retry().cloned() else {
        return false;
    };
    let attempt = retry.plan.attempt + 1;
    let delay = policy.jittered_delay_after(retry.plan.attempt, fastrand::f64());
    let at = after(done.finished_at, delay);
    tracing::info!(job_id = %done.job_id, scheduled = %retry.scheduled, attempt, retry_at = %at, "run failed; retrying");
    inner.emit(Event::JobRetry {
        job_id: done.job_id.clone(),
        jobstore: retry.alias.clone(),
        run_id: done.run_id.clone(),
        scheduled_run_time: retry.scheduled,
        attempt,
        retry_at: at,
    });
    let inner = Arc::clone(inner);
    let sleep = inner.clock.sleep_until(at);
    tokio::spawn(async move {
        sleep.await;
        inner.start_retry(retry, attempt).await;
    });
    true
}

impl Inner {
    /// Starts attempt `attempt` of a slot: records it, then submits it.
    async fn start_retry(&self, retry: Retry, attempt: u32) {
        if self.state() == SchedulerState::Stopped {
            if retry.plan.held {
                self.remove_held(&retry.alias, &retry.plan.id, retry.scheduled)
                    .await;
            }
            return;
        }
        let Retry {
            alias,
            scheduled,
            mut plan,
        } = retry;
        let Ok(store) = self.store(&alias) else {
            return;
        };
        plan.attempt = attempt;
        let now = self.store_now(&alias);
        let record = RunRecord::running(
            plan.id.clone(),
            scheduled,
            attempt,
            self.owner.clone(),
            now,
            after(now, self.config.lease),
        );
        let id = record.id.clone();
        let inserted = async {
            self.flush_store(&alias, store.as_ref()).await?;
            store
                .insert_runs(&[NewRun {
                    record,
                    max_instances: Some(plan.max_instances()),
                }])
                .await
        }
        .await;
        let started = matches!(
            inserted.as_deref(),
            Ok([RunInsert::Inserted(RunState::Running)] | [RunInsert::Duplicate])
        );
        if plan.held && !started {
            self.remove_held(&alias, &plan.id, scheduled).await;
        }
        match inserted.as_deref() {
            Ok([RunInsert::Inserted(RunState::Running)]) => {
                self.submit(&alias, &plan, vec![(scheduled, id)], now);
            }
            Ok([RunInsert::Inserted(_)]) => {
                tracing::warn!(job_id = %plan.id, attempt, "maximum running instances reached; retry skipped");
                self.emit(Event::JobMaxInstances {
                    job_id: plan.id.clone(),
                    jobstore: alias,
                    run_times: vec![scheduled],
                });
            }
            Ok(_) => {
                tracing::info!(job_id = %plan.id, attempt, "retry already started elsewhere");
            }
            Err(e) => {
                tracing::error!(job_id = %plan.id, attempt, error = %e, "cannot start retry");
                self.emit(Event::StoreError {
                    jobstore: alias,
                    error: e.to_string(),
                });
            }
        }
    }

    fn queued_finishes(&self) -> usize {
        lock(&self.finished).values().map(Vec::len).sum()
    }

    fn add_finished(&self, d: RunDone) {
        // Executors read this scheduler's clock; the ledger keeps the store's.
        let finished_at = self.to_store(&d.jobstore, d.finished_at);
        lock(&self.finished)
            .entry(d.jobstore)
            .or_default()
            .push(RunFinish {
                id: d.run_id,
                state: d.state,
                finished_at,
                error: d.error,
            });
    }

    /// Registers started runs for heartbeating.
    pub(crate) fn track(&self, alias: &str, ids: &[RunId]) {
        let mut active = lock(&self.active);
        let runs = match active.get_mut(alias) {
            Some(runs) => runs,
            None => active.entry(alias.to_string()).or_default(),
        };
        runs.extend(ids.iter().cloned());
    }

    /// Queues a run's terminal state for the ledger.
    pub(crate) fn record_done(&self, done: RunDone) {
        if let Some(tx) = lock(&self.outcomes).as_ref() {
            let _ = tx.send(done);
        }
    }

    /// Whether the ledger task must wake periodically: runs to heartbeat, or a
    /// shared store whose lapsed runs this node helps to sweep.
    fn needs_ticks(&self) -> bool {
        lock(&self.active).values().any(|s| !s.is_empty())
            || self.stores().iter().any(|(_, s)| s.capabilities().shared)
    }

    /// Writes the queued finishes of one store; on failure they stay queued.
    ///
    /// The run loop calls it before starting runs, so that a job's finished runs
    /// no longer count against its `max_instances`.
    pub(crate) async fn flush_store(&self, alias: &str, store: &dyn JobStore) -> Result<()> {
        let _serial = self.flush_lock.lock().await;
        let list = match lock(&self.finished).remove(alias) {
            Some(l) if !l.is_empty() => l,
            _ => return Ok(()),
        };
        match store.finish_runs(&self.owner, &list).await {
            Ok(_) => {
                let mut active = lock(&self.active);
                if let Some(set) = active.get_mut(alias) {
                    for f in &list {
                        set.remove(&f.id);
                    }
                }
                Ok(())
            }
            Err(e) if e.is_temporary() => {
                // Keep them, oldest first, ahead of any that arrived meanwhile.
                let mut finished = lock(&self.finished);
                let slot = finished.entry(alias.to_string()).or_default();
                let newer = std::mem::replace(slot, list);
                slot.extend(newer);
                Err(e)
            }
            Err(e) => {
                // A permanent failure must not block the store: write the runs
                // one by one and give up on those the store refuses.
                tracing::warn!(jobstore = %alias, error = %e, "store refused a batch of finished runs; writing them one by one");
                for f in list {
                    let one = std::slice::from_ref(&f);
                    if let Err(e) = store.finish_runs(&self.owner, one).await {
                        tracing::error!(jobstore = %alias, run_id = %f.id, error = %e, "cannot record how the run ended");
                    }
                    if let Some(set) = lock(&self.active).get_mut(alias) {
                        set.remove(&f.id);
                    }
                }
                Ok(())
            }
        }
    }

    /// Writes queued finishes of every store; those a store could not take stay queued.
    async fn flush_all(&self) {
        for (alias, store) in self.stores() {
            if let Err(e) = self.flush_store(&alias, store.as_ref()).await {
                tracing::warn!(jobstore = %alias, error = %e, "cannot record finished runs yet; retrying");
            }
        }
        // Runs of stores that were removed cannot be recorded any more.
        let aliases: HashSet<String> = self.stores().into_iter().map(|(a, _)| a).collect();
        lock(&self.finished).retain(|a, _| aliases.contains(a));
    }

    /// Extends the heartbeat of this node's running runs, one call per store.
    async fn heartbeat(&self) {
        for (alias, store) in self.stores() {
            let until = after(self.store_now(&alias), self.config.lease);
            let ids: Vec<RunId> = match lock(&self.active).get(&alias) {
                Some(set) if !set.is_empty() => set.iter().cloned().collect(),
                _ => continue,
            };
            match store.heartbeat_runs(&self.owner, &ids, until).await {
                Ok(n) if (n as usize) < ids.len() => {
                    tracing::warn!(jobstore = %alias, running = ids.len(), extended = n, "some running runs were already marked interrupted (this node stalled past its heartbeat)");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(jobstore = %alias, error = %e, "cannot heartbeat running runs");
                }
            }
        }
    }

    /// Marks runs whose owner stopped heartbeating as interrupted.
    async fn sweep(&self) {
        for (alias, store) in self.stores() {
            if !store.capabilities().shared {
                continue;
            }
            let now = self.store_now(&alias);
            match store.interrupt_lapsed(now, SWEEP_LIMIT).await {
                Ok(runs) => {
                    for r in runs {
                        tracing::warn!(job_id = %r.job_id, run_id = %r.id, scheduled = %r.scheduled_time, node = ?r.node, "run interrupted: its owner stopped heartbeating");
                        self.emit(Event::JobInterrupted {
                            job_id: r.job_id.clone(),
                            jobstore: alias.clone(),
                            run_id: r.id.clone(),
                            scheduled_run_time: r.scheduled_time,
                            node: r.node.clone(),
                        });
                        self.rerun_interrupted(&alias, store.as_ref(), &r).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(jobstore = %alias, error = %e, "cannot sweep lapsed runs");
                }
            }
        }
    }

    /// Starts an interrupted run's slot again as its next attempt, when its
    /// job asks for it ([`OnInterrupted::Rerun`]), has attempts left and can
    /// run here.
    async fn rerun_interrupted(&self, alias: &str, store: &dyn JobStore, run: &RunRecord) {
        if self.config.client || self.state() == SchedulerState::Stopped {
            return;
        }
        let (rec, data) = match store.lookup_job(&run.job_id).await {
            Ok(Some(rec)) => match rec.decode() {
                Ok(data) if data.options.on_interrupted == OnInterrupted::Rerun => (rec, data),
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(job_id = %run.job_id, error = %e, "the interrupted run's job is unreadable; not rerunning it");
                    return;
                }
            },
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(job_id = %run.job_id, error = %e, "cannot read the interrupted run's job; not rerunning it");
                return;
            }
        };
        let now = self.store_now(alias);
        // A one-off job kept (paused) until its run ends: removed once the
        // slot is settled.
        let held = rec.next_run_time.is_none()
            && self
                .parse_trigger(&data)
                .is_ok_and(|t| matches!(next_after(t.as_ref(), run.scheduled_time, now), Ok(None)));
        let max = data
            .options
            .retry
            .as_ref()
            .map_or(DEFAULT_RERUN_ATTEMPTS, |p| p.max_attempts);
        if run.attempt >= max {
            tracing::warn!(job_id = %run.job_id, scheduled = %run.scheduled_time, attempt = run.attempt, "interrupted run not rerun: no attempts left");
            if held {
                self.remove_held(alias, &rec.id, run.scheduled_time).await;
            }
            return;
        }
        let runnable = match self.runnable(alias, &rec) {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(job_id = %run.job_id, scheduled = %run.scheduled_time, reason = %why, "interrupted run not rerun: it cannot run on this scheduler");
                if held {
                    self.remove_held(alias, &rec.id, run.scheduled_time).await;
                }
                return;
            }
        };
        let attempt = run.attempt + 1;
        self.emit(Event::JobRetry {
            job_id: run.job_id.clone(),
            jobstore: alias.to_string(),
            run_id: run.id.clone(),
            scheduled_run_time: run.scheduled_time,
            attempt,
            retry_at: now,
        });
        let mut plan = Plan::new(rec, runnable, attempt);
        plan.held = held;
        let retry = Retry {
            alias: alias.to_string(),
            scheduled: run.scheduled_time,
            plan,
        };
        self.start_retry(retry, attempt).await;
    }

    /// Removes a one-off job that was kept while its run at `slot` could
    /// still be rerun: paused, or not yet released (still at its slot); a job
    /// rescheduled since then is left alone.
    pub(crate) async fn remove_held(
        &self,
        alias: &str,
        id: &crate::job::JobId,
        slot: DateTime<Utc>,
    ) {
        let Ok(store) = self.store(alias) else {
            return;
        };
        let removed = async {
            match store.lookup_job(id).await? {
                Some(rec) if rec.next_run_time.is_none_or(|t| t <= slot) => {
                    store.remove_job(id).await?;
                    // An unreadable job has no inline closure to forget.
                    Ok(Some(rec.decode().map(|d| d.task).unwrap_or_default()))
                }
                _ => Ok(None),
            }
        }
        .await;
        match removed {
            Ok(Some(task)) => {
                self.forget_inline(&task);
                self.emit(Event::JobRemoved {
                    job_id: id.clone(),
                    jobstore: alias.to_string(),
                });
            }
            Ok(None) | Err(crate::Error::JobNotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(job_id = %id, jobstore = %alias, error = %e, "cannot remove the finished one-off job; it stays paused");
            }
        }
    }

    /// Deletes finished runs older than the retention period.
    async fn prune(&self, now: DateTime<Utc>) {
        let Ok(keep) = chrono::Duration::from_std(self.config.run_retention) else {
            return;
        };
        let Some(before) = now.checked_sub_signed(keep) else {
            return;
        };
        // Runs newer than this still guard their slots against a late start.
        let floor = chrono::Duration::from_std(super::slot_guard(self.config.lease))
            .ok()
            .and_then(|d| now.checked_sub_signed(d));
        for (alias, store) in self.stores() {
            match store.prune_runs(before).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(jobstore = %alias, pruned = n, "pruned old runs"),
                Err(e) => tracing::warn!(jobstore = %alias, error = %e, "cannot prune old runs"),
            }
            let Some(floor) = floor else {
                continue;
            };
            match store.prune_job_runs(self.config.runs_per_job, floor).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(jobstore = %alias, pruned = n, "pruned runs beyond each job's limit")
                }
                Err(e) => {
                    tracing::warn!(jobstore = %alias, error = %e, "cannot prune runs beyond each job's limit")
                }
            }
        }
    }

    /// At shutdown: runs still executing (abandoned by a shutdown without
    /// waiting) are recorded as interrupted rather than left to lapse.
    async fn abandon_active(&self) {
        let active: Vec<(String, Vec<RunId>)> = lock(&self.active)
            .drain()
            .map(|(a, s)| (a, s.into_iter().collect()))
            .collect();
        {
            let mut finished = lock(&self.finished);
            for (alias, ids) in active {
                let now = self.store_now(&alias);
                let list = finished.entry(alias).or_default();
                for id in ids {
                    list.push(RunFinish {
                        id,
                        state: RunState::Interrupted,
                        finished_at: now,
                        error: Some("the scheduler shut down before the run finished".into()),
                    });
                }
            }
        }
        self.flush_all().await;
        lock(&self.active).clear();
        lock(&self.finished).clear();
        // Abandoned runs are not rerun: kept one-off jobs go now.
        let held: Vec<Held> = lock(&self.held).drain().map(|(_, v)| v).collect();
        for (alias, job, slot) in held {
            self.remove_held(&alias, &job, slot).await;
        }
    }
}
