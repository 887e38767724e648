//! The scheduling loop: sleep until the earliest due job, claim due jobs,
//! apply misfire / coalesce / max-instances rules, submit, release.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{lock, Inner, SchedulerState, MAX_BACKLOG_RUN_TIMES};
use crate::error::{Error, Result};
use crate::event::{Event, EventMask};
use crate::executor::{JobRun, SubmitError};
use crate::job::{JobId, JobRecord, Release, ReleaseOutcome};
use crate::store::{JobStore, ReleaseItem};

fn earliest(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn after(now: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

pub(crate) async fn run(inner: Arc<Inner>, stop: CancellationToken) {
    loop {
        if stop.is_cancelled() {
            return;
        }
        let deadline = if inner.state() == SchedulerState::Running {
            inner.process_due().await
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

impl Inner {
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
                self.process_store(&alias, store.as_ref(), now).await?;
                store.get_next_run_time().await
            }
            .await;
            match result {
                Ok(t) => {
                    lock(&self.store_retry).remove(&alias);
                    if let Some(t) = t {
                        next = earliest(next, t);
                    }
                    if store.capabilities().shared {
                        next = earliest(next, after(now, self.config.max_idle_sleep));
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

    async fn process_store(
        &self,
        alias: &str,
        store: &dyn JobStore,
        now: DateTime<Utc>,
    ) -> Result<()> {
        loop {
            if self.state() != SchedulerState::Running {
                return Ok(());
            }
            let jobs = store
                .acquire_due(now, &self.owner, self.config.lease, self.config.batch_size)
                .await?;
            let n = jobs.len();
            let mut done = Vec::with_capacity(n);
            for job in jobs {
                if let Some(item) = self.process_job(alias, job, now) {
                    done.push(item);
                }
            }
            self.release_all(alias, store, done).await?;
            if n < self.config.batch_size {
                return Ok(());
            }
        }
    }

    fn job_error(&self, alias: &str, rec: &JobRecord, error: String) {
        tracing::error!(job_id = %rec.id, jobstore = %alias, %error, "cannot run job; it stays stored and is retried when its lease expires");
        self.emit(Event::JobError {
            job_id: rec.id.clone(),
            jobstore: alias.to_string(),
            scheduled_run_time: rec.next_run_time,
            error,
        });
    }

    /// Handles one claimed job. A job that cannot run here (unknown task,
    /// unreadable trigger, missing executor) is reported and left claimed: it
    /// is untouched and becomes claimable again when the lease expires.
    fn process_job(
        &self,
        alias: &str,
        rec: JobRecord,
        now: DateTime<Utc>,
    ) -> Option<(ReleaseItem, String)> {
        if let Some(reason) = rec.unreadable_reason() {
            self.job_error(alias, &rec, format!("stored job is unreadable: {reason}"));
            return None;
        }
        let Some(task) = self.task(&rec.task) else {
            self.job_error(
                alias,
                &rec,
                Error::UnknownTask {
                    task: rec.task.clone(),
                }
                .to_string(),
            );
            return None;
        };
        let trigger = match self.parse_trigger(&rec) {
            Ok(t) => t,
            Err(e) => {
                self.job_error(alias, &rec, format!("stored trigger is unreadable: {e}"));
                return None;
            }
        };
        let executor = match self.executor_for(&rec.options, &task) {
            Ok((_, e)) => e,
            Err(e) => {
                self.job_error(alias, &rec, e.to_string());
                return None;
            }
        };
        let Some(first) = rec.next_run_time else {
            return Some((
                ReleaseItem {
                    id: rec.id,
                    version: rec.version,
                    outcome: Release::Unclaim,
                },
                rec.task,
            ));
        };

        // Every run time in (.., now], capped; then the first fire after now.
        let mut run_times = Vec::new();
        let mut next = Some(first);
        while let Some(t) = next {
            if t > now {
                break;
            }
            if run_times.len() == MAX_BACKLOG_RUN_TIMES {
                tracing::warn!(job_id = %rec.id, cap = MAX_BACKLOG_RUN_TIMES, "backlog of missed runs truncated");
                // Skip the rest of the backlog: the first fire time after now.
                next = trigger
                    .try_next_fire_time(None, now)
                    .ok()
                    .flatten()
                    .filter(|n| *n > t);
                break;
            }
            run_times.push(t);
            next = match trigger.try_next_fire_time(Some(t), now) {
                Ok(n) => n,
                Err(e) => {
                    self.job_error(alias, &rec, format!("trigger failed: {e}"));
                    None
                }
            };
        }

        let candidates: Vec<DateTime<Utc>> = match (rec.options.coalesce, run_times.last()) {
            (true, Some(last)) => vec![*last],
            _ => run_times,
        };
        let mut due = Vec::with_capacity(candidates.len());
        for t in candidates {
            let late = (now - t).to_std().unwrap_or_default();
            match rec.options.misfire_grace_time {
                Some(grace) if late > grace => {
                    tracing::warn!(job_id = %rec.id, scheduled = %t, ?late, "run missed its grace time");
                    self.emit(Event::JobMissed {
                        job_id: rec.id.clone(),
                        jobstore: alias.to_string(),
                        scheduled_run_time: t,
                    });
                }
                _ => due.push(t),
            }
        }
        if !due.is_empty() && !self.lease_still_safe(&rec) {
            // The claim took so long that the lease is (nearly) over: another
            // scheduler may take the job now, so this one must not run it.
            tracing::warn!(job_id = %rec.id, "lease expired before the job could be submitted; leaving it to the next claim");
            return None;
        }
        if !due.is_empty() {
            let run = JobRun::new(
                rec.id.clone(),
                alias,
                due.clone(),
                task,
                rec.args.clone(),
                rec.options.max_instances,
                rec.options.timeout,
            );
            match executor.submit(run) {
                Ok(()) => {
                    if self.events.wants(EventMask::JOB_SUBMITTED) {
                        self.emit(Event::JobSubmitted {
                            job_id: rec.id.clone(),
                            jobstore: alias.to_string(),
                            run_times: due,
                        });
                    }
                }
                Err(SubmitError::MaxInstancesReached { .. }) => {
                    tracing::warn!(job_id = %rec.id, max = rec.options.max_instances, "maximum running instances reached; run skipped");
                    self.emit(Event::JobMaxInstances {
                        job_id: rec.id.clone(),
                        jobstore: alias.to_string(),
                        run_times: due,
                    });
                }
                Err(e) => self.job_error(alias, &rec, format!("executor refused the run: {e}")),
            }
        }

        let outcome = match next {
            Some(n) => Release::Reschedule {
                next_run_time: Some(n),
            },
            None => Release::Remove,
        };
        Some((
            ReleaseItem {
                id: rec.id,
                version: rec.version,
                outcome,
            },
            rec.task,
        ))
    }

    /// Whether the claim on `rec` has at least a third of the lease left, so that
    /// submitting now cannot overlap another scheduler's claim.
    fn lease_still_safe(&self, rec: &JobRecord) -> bool {
        let Some(lease) = &rec.lease else {
            return true;
        };
        let margin =
            chrono::Duration::from_std(self.config.lease / 3).unwrap_or(chrono::Duration::zero());
        self.clock.now() + margin < lease.until
    }

    /// Hands a batch of processed jobs back to the store in one call.
    async fn release_all(
        &self,
        alias: &str,
        store: &dyn JobStore,
        done: Vec<(ReleaseItem, String)>,
    ) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let (items, tasks): (Vec<ReleaseItem>, Vec<String>) = done.into_iter().unzip();
        let removing: Vec<(JobId, bool)> = items
            .iter()
            .map(|i| (i.id.clone(), i.outcome == Release::Remove))
            .collect();
        let results = store.release_many(&self.owner, items).await?;
        for ((result, (id, removed)), task) in results.into_iter().zip(removing).zip(tasks) {
            match result {
                Ok(ReleaseOutcome::Applied) if removed => {
                    self.forget_inline(&task);
                    self.emit(Event::JobRemoved {
                        job_id: id,
                        jobstore: alias.to_string(),
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job_id = %id, error = %e, "lease lost before release (another scheduler took the job)");
                }
            }
        }
        Ok(())
    }
}
