//! The ledger task: records finished runs, heartbeats running ones, marks runs
//! whose owner stopped heartbeating as interrupted, and prunes old history.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::run_loop::{after, Plan};
use super::{lock, Inner, SchedulerState};
use crate::error::Result;
use crate::event::Event;
use crate::executor::RunDone;
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
            inner.prune(now).await;
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
            inner.heartbeat(now).await;
            inner.sweep(now).await;
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
                    schedule_retry(&inner, &d);
                    inner.add_finished(d);
                    // Gather what finishes within a few milliseconds into one write
                    // per store (the run loop flushes on its own before it starts
                    // runs, so waiting here never inflates a running count).
                    let gather = inner.clock.sleep_until(after(inner.clock.now(), GATHER));
                    tokio::pin!(gather);
                    loop {
                        while let Ok(d) = rx.try_recv() {
                            schedule_retry(&inner, &d);
                            inner.add_finished(d);
                        }
                        if inner.queued_finishes() >= FLUSH_BATCH {
                            break;
                        }
                        tokio::select! {
                            biased;
                            _ = &mut gather => break,
                            _ = stop.cancelled() => break,
                            more = rx.recv() => match more {
                                Some(d) => {
                                    schedule_retry(&inner, &d);
                                    inner.add_finished(d);
                                }
                                None => break,
                            },
                        }
                    }
                    inner.flush_all().await;
                }
            }
            _ = sleep => {
                // Outcomes a store refused earlier are retried on each tick.
                inner.flush_all().await;
            }
        }
    }
}

/// When a failed or timed-out run's job has attempts left, starts the next
/// attempt of the same slot after the policy's backoff.
fn schedule_retry(inner: &Arc<Inner>, done: &RunDone) {
    let Some(retry) = lock(&inner.retries).remove(&done.run_id) else {
        return;
    };
    if !matches!(done.state, RunState::Failed | RunState::TimedOut) {
        return;
    }
    let Some(policy) = retry.plan.retry.clone() else {
        return;
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
}

impl Inner {
    /// Starts attempt `attempt` of a slot: records it, then submits it.
    async fn start_retry(&self, retry: Retry, attempt: u32) {
        if self.state() == SchedulerState::Stopped {
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
        let now = self.clock.now();
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
                    max_instances: Some(plan.max_instances),
                }])
                .await
        }
        .await;
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
        lock(&self.finished)
            .entry(d.jobstore)
            .or_default()
            .push(RunFinish {
                id: d.run_id,
                state: d.state,
                finished_at: d.finished_at,
                error: d.error,
            });
    }

    /// Registers started runs for heartbeating.
    pub(crate) fn track(&self, alias: &str, ids: &[RunId]) {
        lock(&self.active)
            .entry(alias.to_string())
            .or_default()
            .extend(ids.iter().cloned());
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
    async fn heartbeat(&self, now: DateTime<Utc>) {
        let until = after(now, self.config.lease);
        for (alias, store) in self.stores() {
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
    async fn sweep(&self, now: DateTime<Utc>) {
        for (alias, store) in self.stores() {
            if !store.capabilities().shared {
                continue;
            }
            match store.interrupt_lapsed(now, SWEEP_LIMIT).await {
                Ok(runs) => {
                    for r in runs {
                        tracing::warn!(job_id = %r.job_id, run_id = %r.id, scheduled = %r.scheduled_time, node = ?r.node, "run interrupted: its owner stopped heartbeating");
                        self.emit(Event::JobInterrupted {
                            job_id: r.job_id,
                            jobstore: alias.clone(),
                            run_id: r.id,
                            scheduled_run_time: r.scheduled_time,
                            node: r.node,
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(jobstore = %alias, error = %e, "cannot sweep lapsed runs");
                }
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
        for (alias, store) in self.stores() {
            match store.prune_runs(before).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(jobstore = %alias, pruned = n, "pruned old runs"),
                Err(e) => tracing::warn!(jobstore = %alias, error = %e, "cannot prune old runs"),
            }
        }
    }

    /// At shutdown: runs still executing (abandoned by a shutdown without
    /// waiting) are recorded as interrupted rather than left to lapse.
    async fn abandon_active(&self) {
        let now = self.clock.now();
        let active: Vec<(String, Vec<RunId>)> = lock(&self.active)
            .drain()
            .map(|(a, s)| (a, s.into_iter().collect()))
            .collect();
        {
            let mut finished = lock(&self.finished);
            for (alias, ids) in active {
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
    }
}
