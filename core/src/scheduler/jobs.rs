//! The job API: adding, reading, changing, removing and running jobs.

use super::pending::{Found, Pending};
use super::*;
use crate::store::JobCounts;

/// A change to a job's content and next run time, applied by [`Scheduler::edit`].
pub(super) type Edit<'a> =
    dyn FnMut(&mut JobData, &mut Option<DateTime<Utc>>) -> Result<()> + Send + 'a;

/// How many times a job edit is read and tried again after another writer
/// changed the job first (with a short random pause between tries).
pub(super) const EDIT_TRIES: u32 = 32;

/// A pause of 0–`2^min(tries, 5)` ms before an edit is tried again, so that
/// writers racing on one job spread out.
pub(super) async fn edit_backoff(tries: u32) {
    let max = 1u64 << tries.min(5);
    tokio::time::sleep(std::time::Duration::from_micros(fastrand::u64(
        0..=max * 1000,
    )))
    .await;
}

/// How a prepared job meets a stored job with the same id.
#[derive(Debug, Clone, Default)]
pub(super) struct Upsert {
    pub(super) on_conflict: OnConflict,
    /// Whether the spec set the next run time itself.
    pub(super) explicit_next: bool,
    /// The trigger prepared at a much later `now`: where its JSON differs from
    /// the record's, the value depends on when the job was added (an
    /// interval's start), so a stored trigger may differ there and still be
    /// the same schedule. `None` when the trigger cannot be re-read.
    pub(super) later_trigger: Option<serde_json::Value>,
    /// The job's inline closure, registered once the job is written.
    pub(super) inline: Option<TaskFn>,
}

/// Whether `stored` is the schedule `new` describes, where `later` marks (by
/// differing from `new`) the parts that depend on the time the job was added.
pub(super) fn same_schedule(
    stored: &serde_json::Value,
    new: &serde_json::Value,
    later: &serde_json::Value,
) -> bool {
    use serde_json::Value;
    if new == later {
        return stored == new;
    }
    match (stored, new, later) {
        (Value::Object(s), Value::Object(n), Value::Object(l)) => {
            let null = Value::Null;
            let keys: std::collections::BTreeSet<&String> =
                s.keys().chain(n.keys()).chain(l.keys()).collect();
            keys.into_iter().all(|k| {
                same_schedule(
                    s.get(k).unwrap_or(&null),
                    n.get(k).unwrap_or(&null),
                    l.get(k).unwrap_or(&null),
                )
            })
        }
        (Value::Array(s), Value::Array(n), Value::Array(l)) => {
            s.len() == n.len()
                && n.len() == l.len()
                && s.iter()
                    .zip(n)
                    .zip(l)
                    .all(|((s, n), l)| same_schedule(s, n, l))
        }
        // A value filled in from the time of adding: any stored value matches.
        _ => true,
    }
}

/// A validated job spec, with its trigger prepared and its first run time.
struct Prepared {
    id: JobId,
    task: String,
    trigger: Box<dyn Trigger>,
    args: serde_json::Value,
    options: JobOptions,
    next: Option<DateTime<Utc>>,
    /// The store named in the spec (`None`: the default store).
    jobstore: Option<String>,
    upsert: Upsert,
}

impl Prepared {
    /// The content text, written from the typed trigger (the same text
    /// whichever way the job is added).
    fn content(&self) -> JobContent {
        if let Some(spec) = crate::trigger::builtin_spec(self.trigger.as_ref()) {
            return JobContent::encode_with(&self.task, &spec, &self.args, &self.options);
        }
        let text = self.trigger.to_json_text();
        JobContent::encode_parts(&self.task, &text, &self.args, &self.options)
            // A custom trigger whose text is not JSON is written from its value.
            .unwrap_or_else(|| {
                JobContent::encode(&JobData {
                    task: self.task.clone(),
                    trigger: self.trigger.to_json(),
                    args: self.args.clone(),
                    options: self.options.clone(),
                })
            })
    }

    /// The record and its decoded content.
    fn into_decoded(self) -> (Decoded, String, Upsert, Box<dyn Trigger>) {
        let content = self.content();
        let data = JobData {
            task: self.task,
            trigger: self.trigger.to_json(),
            args: self.args,
            options: self.options,
        };
        let record = Decoded {
            record: JobRecord::new(self.id, content, self.next),
            data,
        };
        let jobstore = self.jobstore.unwrap_or_else(|| DEFAULT_STORE.to_string());
        (record, jobstore, self.upsert, self.trigger)
    }

    /// The record alone (no JSON value built for its trigger).
    fn into_record(self) -> (JobRecord, Upsert) {
        let content = self.content();
        (JobRecord::new(self.id, content, self.next), self.upsert)
    }

    /// The record and the parts it was written from (no JSON value built
    /// for its trigger until the job's view asks for one).
    fn into_added(self) -> (JobRecord, AddedParts) {
        let content = self.content();
        let record = JobRecord::new(self.id, content, self.next);
        let parts = AddedParts {
            task: self.task,
            trigger: self.trigger,
            args: self.args,
            options: self.options,
        };
        (record, parts)
    }
}

impl Scheduler {
    /// Validates a job spec and prepares its trigger.
    fn prepared(
        &self,
        spec: JobSpec,
        store: &dyn JobStore,
        now: DateTime<Utc>,
    ) -> Result<Prepared> {
        let JobSpec {
            task,
            mut trigger,
            id,
            args,
            jobstore,
            options: patch,
            next_run_time,
            on_conflict,
        } = spec;
        let id = id.unwrap_or_else(JobId::random);
        let args = args.map_err(|e| {
            Error::InvalidJob(format!("job '{id}': cannot serialize arguments: {e}"))
        })?;
        let d = &self.inner.defaults;
        let mut options = JobOptions {
            misfire_grace_time: d.misfire_grace_time,
            coalesce: d.coalesce,
            max_instances: d.max_instances,
            timeout: d.timeout,
            ..JobOptions::default()
        };
        patch.apply(&mut options);
        options
            .check()
            .map_err(|why| Error::InvalidJob(format!("job '{id}': {why}")))?;
        let (task_name, task_fn) = match task {
            TaskRef::Named(n) => match self.inner.task(&n) {
                Some(f) => (n, Some(f)),
                // A client need not link the task code: the nodes that run
                // the job check the name.
                None if self.is_client() => (n, None),
                None => return Err(Error::UnknownTask { task: n.clone() }),
            },
            TaskRef::Inline(_) if self.is_client() => {
                return Err(Error::InvalidJob(format!(
                    "job '{id}': a client-only scheduler cannot run an inline closure; register the task on the schedulers that run jobs and add the job by task name"
                )))
            }
            TaskRef::Inline(f) => {
                if store.capabilities().persistent {
                    return Err(Error::InvalidJob(format!(
                        "job '{id}': an inline closure cannot be stored in job store '{}' ({}), which persists jobs; register the function with .task(\"name\", ...) on the builder and use JobSpec::new(\"name\", trigger)",
                        jobstore.as_deref().unwrap_or(DEFAULT_STORE),
                        store.backend()
                    )));
                }
                (format!("{INLINE_PREFIX}{id}"), Some(f))
            }
        };
        if let Some(f) = task_fn.as_ref().filter(|_| !self.is_client()) {
            self.inner.executor_for(&options, f)?;
        }
        self.inner.check_args(&task_name, &args)?;
        let later_trigger = (on_conflict == OnConflict::Replace)
            .then(|| self.inner.triggers.parse(&trigger.to_json()).ok())
            .flatten()
            .map(|mut t| {
                t.prepare(now + chrono::Duration::days(1000), self.inner.timezone);
                t.to_json()
            });
        let explicit_next = next_run_time.is_some();
        trigger.prepare(now, self.inner.timezone);
        let next = match next_run_time {
            Some(explicit) => explicit,
            None => match trigger.next_fire_time(None, now)? {
                Some(t) => Some(t),
                None => {
                    return Err(Error::InvalidJob(format!(
                        "job '{id}': trigger {} never fires after {now}",
                        trigger.describe()
                    )))
                }
            },
        };
        let next = next.map(trunc_micros);
        let inline = task_fn.filter(|_| task_name.starts_with(INLINE_PREFIX));
        Ok(Prepared {
            id,
            task: task_name,
            trigger,
            args,
            options,
            next,
            jobstore,
            upsert: Upsert {
                on_conflict,
                explicit_next,
                later_trigger,
                inline,
            },
        })
    }

    /// Stores a prepared job, meeting a stored one with the same id as `upsert`
    /// says; returns the job as stored.
    pub(super) async fn store_job(
        &self,
        record: &Decoded,
        alias: &str,
        upsert: &Upsert,
    ) -> Result<(Decoded, AddOutcome)> {
        // An inline closure is in place before the job can be claimed, and
        // the one before it comes back when the job was not written.
        let previous = upsert
            .inline
            .as_ref()
            .map(|f| self.inner.swap_task(&record.data.task, Some(f.clone())));
        let result = self.write_job(record, alias, upsert).await;
        if let Some(previous) = previous {
            if !matches!(result, Ok((_, AddOutcome::Added | AddOutcome::Replaced))) {
                self.inner.swap_task(&record.data.task, previous);
            }
        }
        result
    }

    /// Writes a prepared job as `upsert` says; returns the job as stored and
    /// whether this call's job took effect (added or replaced) or was kept.
    async fn write_job(
        &self,
        job: &Decoded,
        alias: &str,
        upsert: &Upsert,
    ) -> Result<(Decoded, AddOutcome)> {
        let store = self.inner.store(alias)?;
        let id = &job.record.id;
        // A job removed between a failed insert and the lookup: insert again.
        for _ in 0..EDIT_TRIES {
            match store.add_job(&job.record).await {
                Ok(()) => {
                    self.announce_added(id, alias, job.record.next_run_time);
                    return Ok((job.clone(), AddOutcome::Added));
                }
                Err(Error::ConflictingId { .. }) if upsert.on_conflict != OnConflict::Fail => {}
                Err(e) => return Err(e),
            }
            let Some(stored) = store.lookup_job(id).await? else {
                continue;
            };
            if upsert.on_conflict == OnConflict::Keep {
                return Ok((Decoded::decode(stored)?, AddOutcome::Kept));
            }
            // A stored job that cannot be read is replaced whole.
            let stored_data = stored.decode().ok();
            let mut new = job.clone();
            if let Some(stored_data) = stored_data {
                let same = !upsert.explicit_next
                    && upsert.later_trigger.as_ref().is_some_and(|later| {
                        same_schedule(&stored_data.trigger, &new.data.trigger, later)
                    });
                if same {
                    new.data.trigger = stored_data.trigger.clone();
                    new.record.next_run_time = stored.next_run_time;
                    if new.data == stored_data {
                        // Nothing to write; the replacement (an inline closure) applies.
                        return Ok((
                            Decoded {
                                record: stored,
                                data: stored_data,
                            },
                            AddOutcome::Replaced,
                        ));
                    }
                    new = Decoded::encoded(new.record, new.data);
                }
            }
            new.record.lease = stored.lease.clone();
            new.record.version = stored.version;
            match store.update_job(&new.record).await {
                Ok(()) => {}
                // Removed or written meanwhile: look again.
                Err(Error::JobNotFound { .. } | Error::JobChanged { .. }) => continue,
                Err(e) => return Err(e),
            }
            self.announce_added(id, alias, new.record.next_run_time);
            return Ok((new, AddOutcome::Replaced));
        }
        // Every try met another writer in between.
        Err(Error::JobChanged {
            id: id.to_string(),
            read: 0,
        })
    }

    fn announce_added(&self, id: &JobId, alias: &str, due: Option<DateTime<Utc>>) {
        if self.inner.events.wants(EventMask::JOB_ADDED) {
            self.inner.emit(Event::JobAdded {
                job_id: id.clone(),
                jobstore: alias.to_string(),
            });
        }
        self.inner.wake_for(alias, due);
    }

    /// Adds a job. Before [`start`](Scheduler::start) (and while a start is
    /// still opening its stores) the job is kept pending and stored when the
    /// scheduler starts.
    ///
    /// # Errors
    /// [`Error::ConflictingId`] (unless `replace_existing` or `if_absent`),
    /// [`Error::UnknownTask`], [`Error::UnknownStore`], [`Error::UnknownExecutor`],
    /// [`Error::InvalidJob`] (inline closure on a persistent store, trigger that
    /// never fires), store errors.
    pub async fn add_job(&self, spec: JobSpec) -> Result<Job> {
        self.add_job_with_outcome(spec).await.map(|(job, _)| job)
    }

    /// Adds a job as [`add_job`](Scheduler::add_job) does, and says whether it
    /// was added, replaced a job with the same id, or met one that was kept.
    ///
    /// Before [`start`](Scheduler::start) the job is kept pending and the
    /// outcome is against the other pending jobs only: a job with the same id
    /// already in the store is met when the scheduler starts.
    ///
    /// # Errors
    /// As [`add_job`](Scheduler::add_job).
    pub async fn add_job_with_outcome(&self, spec: JobSpec) -> Result<(Job, AddOutcome)> {
        let store = self
            .inner
            .store(spec.jobstore.as_deref().unwrap_or(DEFAULT_STORE))?;
        let now = self.inner.clock.now();
        let mut job = self.prepared(spec, store.as_ref(), now)?;
        // The common case: a new job that fails on a taken id is one insert
        // (into a started store: until a start has taken the pending jobs,
        // jobs are kept pending).
        if job.upsert.on_conflict == OnConflict::Fail
            && job.upsert.inline.is_none()
            && self.inner.pending.is_taken()
        {
            let alias = job
                .jobstore
                .take()
                .unwrap_or_else(|| DEFAULT_STORE.to_string());
            let (record, parts) = job.into_added();
            store.add_job(&record).await?;
            self.announce_added(&record.id, &alias, record.next_run_time);
            let job = Job::added(record, parts, alias, self.inner.timezone);
            return Ok((job, AddOutcome::Added));
        }
        let (record, alias, upsert, trigger) = job.into_decoded();
        // The typed trigger describes the job as added; a job kept instead
        // (another one with the same id) is described from its own trigger.
        let view = |job: Decoded, pending: bool| {
            if job.record.content == record.record.content {
                self.inner
                    .job_view_of(job, &alias, pending, trigger.as_ref())
            } else {
                self.inner.job_view(job, &alias, pending)
            }
        };
        let mut upsert = upsert;
        if !self.inner.pending.is_taken() {
            let job = Pending {
                record: record.clone(),
                jobstore: alias.clone(),
                upsert,
            };
            match self.inner.pending.add(job) {
                Ok(added) => {
                    let (job, outcome) = added?;
                    return Ok((view(job, true), outcome));
                }
                // A start took the pending jobs meanwhile: stored instead.
                Err(back) => upsert = back.upsert,
            }
        }
        let (stored, outcome) = self.store_job(&record, &alias, &upsert).await?;
        Ok((view(stored, false), outcome))
    }

    /// Adds many jobs to one store in one batch (all or none). Before the
    /// start they are kept pending, as [`add_job`](Scheduler::add_job) keeps
    /// one.
    ///
    /// # Errors
    /// As [`add_job`](Scheduler::add_job); jobs must all name the same store.
    /// `replace_existing` is not supported in a batch.
    pub async fn add_jobs(&self, specs: Vec<JobSpec>) -> Result<Vec<JobId>> {
        let now = self.inner.clock.now();
        // Each job's record is encoded as soon as the job is checked; nothing
        // is stored or kept pending until the whole batch is checked. Until a
        // start has taken the pending jobs (its stores started), jobs are
        // kept pending.
        let stopped = !self.inner.pending.is_taken();
        let mut pending = Vec::new();
        let mut records = Vec::with_capacity(if stopped { 0 } else { specs.len() });
        let mut inlines = Vec::new();
        let mut target: Option<(String, Arc<dyn JobStore>)> = None;
        for spec in specs {
            let a = spec.jobstore.as_deref().unwrap_or(DEFAULT_STORE);
            let store = match &target {
                Some((x, _)) if x != a => {
                    return Err(Error::InvalidJob(format!(
                        "add_jobs: all jobs must go to one store (found '{x}' and '{a}')"
                    )))
                }
                Some((_, store)) => Arc::clone(store),
                None => {
                    let store = self.inner.store(a)?;
                    target = Some((a.to_string(), Arc::clone(&store)));
                    store
                }
            };
            let job = self.prepared(spec, store.as_ref(), now)?;
            if job.upsert.on_conflict != OnConflict::Fail {
                return Err(Error::InvalidJob(
                    "add_jobs does not support replace_existing or if_absent; use add_job".into(),
                ));
            }
            if stopped {
                let (record, jobstore, upsert, _) = job.into_decoded();
                pending.push(Pending {
                    record,
                    jobstore,
                    upsert: Upsert {
                        inline: upsert.inline,
                        ..Upsert::default()
                    },
                });
            } else {
                let task = job.upsert.inline.is_some().then(|| job.task.clone());
                let (record, upsert) = job.into_record();
                inlines.extend(task.zip(upsert.inline));
                records.push(record);
            }
        }
        let Some((alias, store)) = target else {
            return Ok(Vec::new());
        };
        if stopped {
            let ids = pending.iter().map(|p| p.record.record.id.clone()).collect();
            match self.inner.pending.add_all(pending) {
                Ok(added) => return added.map(|()| ids),
                // A start took the pending jobs meanwhile: stored instead.
                Err(batch) => {
                    for p in batch {
                        inlines.extend(p.upsert.inline.map(|f| (p.record.data.task, f)));
                        records.push(p.record.record);
                    }
                }
            }
        }
        let ids: Vec<JobId> = records.iter().map(|r| r.id.clone()).collect();
        // Closures are in place before the jobs can be claimed; the ones
        // before them come back if the batch is refused.
        let previous: Vec<(String, Option<TaskFn>)> = inlines
            .into_iter()
            .map(|(task, f)| {
                let before = self.inner.swap_task(&task, Some(f));
                (task, before)
            })
            .collect();
        let earliest = records.iter().filter_map(|r| r.next_run_time).min();
        if let Err(e) = store.add_jobs(&records).await {
            for (task, before) in previous {
                self.inner.swap_task(&task, before);
            }
            return Err(e);
        }
        if self.inner.events.wants(EventMask::JOB_ADDED) {
            for id in &ids {
                self.inner.emit(Event::JobAdded {
                    job_id: id.clone(),
                    jobstore: alias.clone(),
                });
            }
        }
        self.inner.wake_for(&alias, earliest);
        Ok(ids)
    }

    /// Finds a job: in `store` when given, else in every store (pending jobs included).
    async fn find(&self, id: &JobId, store: Option<&str>) -> Result<Option<Found>> {
        if let Some(found) = self.inner.pending.find(id, store) {
            return Ok(Some(found));
        }
        let stores = match store {
            Some(a) => vec![(a.to_string(), self.inner.store(a)?)],
            None => self.inner.stores(),
        };
        for (alias, s) in stores {
            if let Some(record) = s.lookup_job(id).await? {
                return Ok(Some(Found {
                    alias,
                    record,
                    pending: false,
                }));
            }
        }
        Ok(None)
    }

    async fn find_required(&self, id: &JobId, store: Option<&str>) -> Result<Found> {
        self.find(id, store)
            .await?
            .ok_or_else(|| Error::JobNotFound { id: id.to_string() })
    }

    /// Writes a modified record back (to the pending list or its store).
    async fn write_back(&self, alias: &str, record: Decoded, pending: bool) -> Result<Job> {
        let id = &record.record.id;
        if pending {
            self.inner.pending.replace(alias, &record);
        } else {
            self.inner.store(alias)?.update_job(&record.record).await?;
            self.inner.emit(Event::JobModified {
                job_id: id.clone(),
                jobstore: alias.to_string(),
            });
            self.inner.wake_for(alias, record.record.next_run_time);
        }
        Ok(self.inner.job_view(record, alias, pending))
    }

    /// Looks a job up (`None` if no store has it).
    ///
    /// # Errors
    /// [`Error::UnknownStore`], store errors; [`Error::UnreadableJob`] when
    /// the stored content cannot be decoded.
    pub async fn get_job(&self, id: impl Into<JobId>, store: Option<&str>) -> Result<Option<Job>> {
        let id = id.into();
        match self.find(&id, store).await? {
            Some(Found {
                alias,
                record,
                pending,
            }) => Ok(Some(self.inner.job_view(
                Decoded::readable(record)?,
                &alias,
                pending,
            ))),
            None => Ok(None),
        }
    }

    /// Every job (of one store, or all), by next run time with paused jobs
    /// last; jobs whose stored content cannot be decoded are left out (see
    /// [`JobListing::unreadable`]).
    ///
    /// # Errors
    /// [`Error::UnknownStore`], store errors.
    pub async fn get_jobs(&self, store: Option<&str>) -> Result<Vec<Job>> {
        let listing = self.job_listing(store).await?;
        let mut jobs: Vec<Job> = listing.stores.into_iter().flat_map(|(_, j)| j).collect();
        jobs.sort_by(|a, b| run_order(&a.record, &b.record));
        Ok(jobs)
    }

    /// How many jobs each store holds (by store alias), counted by the stores
    /// themselves without reading the jobs; jobs waiting for the scheduler to
    /// start are counted with their store.
    ///
    /// # Errors
    /// [`Error::UnknownStore`] for an unknown `store`; store errors.
    pub async fn count_jobs(&self, store: Option<&str>) -> Result<Vec<(String, JobCounts)>> {
        let stores = match store {
            Some(a) => vec![(a.to_string(), self.inner.store(a)?)],
            None => self.inner.stores(),
        };
        let mut out = Vec::with_capacity(stores.len());
        for (alias, s) in stores {
            let mut counts = if self.is_running() {
                s.count_jobs().await?
            } else {
                JobCounts::default()
            };
            for pending in self.inner.pending.of_store(&alias) {
                if pending.record.next_run_time.is_some() {
                    counts.scheduled += 1;
                } else {
                    counts.paused += 1;
                }
            }
            out.push((alias, counts));
        }
        Ok(out)
    }

    /// The jobs grouped by store, printable with `Display` (APScheduler's `print_jobs`).
    ///
    /// # Errors
    /// [`Error::UnknownStore`], store errors.
    pub async fn job_listing(&self, store: Option<&str>) -> Result<JobListing> {
        let stores = match store {
            Some(a) => vec![(a.to_string(), self.inner.store(a)?)],
            None => self.inner.stores(),
        };
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for (alias, s) in stores {
            let mut records: Vec<(Decoded, bool)> = self
                .inner
                .pending
                .of_store(&alias)
                .into_iter()
                .map(|d| (d, true))
                .collect();
            if self.is_running() {
                for rec in s.get_all_jobs().await? {
                    let (id, next_run_time) = (rec.id.clone(), rec.next_run_time);
                    match Decoded::readable(rec) {
                        Ok(d) => records.push((d, false)),
                        Err(e) => {
                            tracing::warn!(job_id = %id, jobstore = %alias, error = %e, "stored job is unreadable");
                            unreadable.push(UnreadableJob {
                                id,
                                jobstore: alias.clone(),
                                next_run_time,
                                reason: match e {
                                    Error::UnreadableJob { reason, .. } => reason,
                                    other => other.to_string(),
                                },
                            });
                        }
                    }
                }
            }
            records.sort_by(|a, b| run_order(&a.0.record, &b.0.record));
            let jobs = records
                .into_iter()
                .map(|(r, pending)| self.inner.job_view(r, &alias, pending))
                .collect();
            out.push((alias, jobs));
        }
        Ok(JobListing {
            stores: out,
            unreadable,
            timezone: self.inner.timezone,
        })
    }

    /// Changes a job's options, arguments or next run time.
    ///
    /// # Errors
    /// [`Error::JobNotFound`], [`Error::UnknownExecutor`], store errors.
    pub async fn modify_job(
        &self,
        id: impl Into<JobId>,
        store: Option<&str>,
        changes: JobChanges,
    ) -> Result<Job> {
        let id = id.into();
        // Only new arguments are checked: a job stored with arguments its task
        // no longer accepts can still be paused, renamed or rescheduled.
        let new_args = changes.args.is_some();
        let now = self.inner.clock.now();
        let trigger = match &changes.trigger {
            Some(json) => {
                let mut t = self.inner.triggers.parse(json)?;
                t.prepare(now, self.inner.timezone);
                let next = t
                    .next_fire_time(None, now)?
                    .map(trunc_micros)
                    .ok_or_else(|| {
                        Error::InvalidJob(format!(
                            "job '{id}': trigger {} never fires after {now}",
                            t.describe()
                        ))
                    })?;
                Some((t.to_json(), next))
            }
            None => None,
        };
        self.edit(&id, store, &mut |data, next_run_time| {
            if let Some((json, next)) = &trigger {
                data.trigger = json.clone();
                data.options.resume_at = None;
                if next_run_time.is_some() {
                    *next_run_time = Some(*next);
                }
            }
            changes.clone().apply(&id, data, next_run_time)?;
            if new_args {
                self.inner.check_args(&data.task, &data.args)?;
            }
            if let Some(task) = self.inner.task(&data.task).filter(|_| !self.is_client()) {
                self.inner.executor_for(&data.options, &task)?;
            }
            Ok(())
        })
        .await
    }

    /// Reads a job, changes it with `change` and writes it back if nobody
    /// wrote it meanwhile; otherwise reads it again and repeats.
    async fn edit(&self, id: &JobId, store: Option<&str>, change: &mut Edit<'_>) -> Result<Job> {
        let mut tries = 0;
        loop {
            let Found {
                alias,
                record: mut rec,
                pending,
            } = self.find_required(id, store).await?;
            let mut data = rec.decode()?;
            change(&mut data, &mut rec.next_run_time)?;
            match self
                .write_back(&alias, Decoded::encoded(rec, data), pending)
                .await
            {
                Err(Error::JobChanged { .. }) if tries < EDIT_TRIES => {
                    tries += 1;
                    edit_backoff(tries).await;
                }
                result => return result,
            }
        }
    }

    /// Replaces a job's trigger and recomputes its next run time from now.
    ///
    /// # Errors
    /// [`Error::JobNotFound`], [`Error::InvalidJob`] when the trigger never fires, store errors.
    pub async fn reschedule_job(
        &self,
        id: impl Into<JobId>,
        store: Option<&str>,
        trigger: impl Trigger,
    ) -> Result<Job> {
        let id = id.into();
        let now = self.inner.clock.now();
        let mut trigger: Box<dyn Trigger> = Box::new(trigger);
        trigger.prepare(now, self.inner.timezone);
        let next = trigger
            .next_fire_time(None, now)?
            .map(trunc_micros)
            .ok_or_else(|| {
                Error::InvalidJob(format!(
                    "job '{id}': trigger {} never fires after {now}",
                    trigger.describe()
                ))
            })?;
        let json = trigger.to_json();
        self.edit(&id, store, &mut |data, next_run_time| {
            data.trigger = json.clone();
            *next_run_time = Some(next);
            data.options.resume_at = None;
            Ok(())
        })
        .await
    }

    /// Pauses a job (it keeps its trigger; no runs until resumed).
    ///
    /// # Errors
    /// [`Error::JobNotFound`], store errors.
    pub async fn pause_job(&self, id: impl Into<JobId>, store: Option<&str>) -> Result<Job> {
        self.modify_job(id, store, JobChanges::new().next_run_time(None))
            .await
    }

    /// Resumes a paused job from now; a job whose trigger has no more fire times is removed
    /// (and `Ok(None)` returned).
    ///
    /// # Errors
    /// [`Error::JobNotFound`], an unreadable stored trigger, store errors.
    pub async fn resume_job(
        &self,
        id: impl Into<JobId>,
        store: Option<&str>,
    ) -> Result<Option<Job>> {
        let id = id.into();
        let mut tries = 0;
        loop {
            let Found {
                alias,
                record: rec,
                pending,
            } = self.find_required(&id, store).await?;
            let mut job = Decoded::decode(rec)?;
            let now = self.inner.clock.now();
            let trigger = self.inner.parse_trigger(&job.data)?;
            match trigger.next_fire_time(None, now)? {
                Some(next) => {
                    job.record.next_run_time = Some(trunc_micros(next));
                    match self.write_back(&alias, job, pending).await {
                        Err(Error::JobChanged { .. }) if tries < EDIT_TRIES => {
                            tries += 1;
                            edit_backoff(tries).await;
                        }
                        result => return result.map(Some),
                    }
                }
                None => {
                    self.remove_job(id, Some(&alias)).await?;
                    return Ok(None);
                }
            }
        }
    }

    /// Removes a job.
    ///
    /// # Errors
    /// [`Error::JobNotFound`], store errors.
    pub async fn remove_job(&self, id: impl Into<JobId>, store: Option<&str>) -> Result<()> {
        let id = id.into();
        let Found {
            alias,
            record: rec,
            pending,
        } = self.find_required(&id, store).await?;
        if pending {
            self.inner.pending.remove(&alias, &id);
        } else {
            self.inner.store(&alias)?.remove_job(&id).await?;
        }
        lock(&self.inner.decoded).forget(&alias, &id);
        // An unreadable job is removed too (it has no closure to forget).
        if let Ok(data) = rec.decode() {
            self.inner.forget_inline(&data.task);
        }
        self.inner.emit(Event::JobRemoved {
            job_id: id,
            jobstore: alias,
        });
        Ok(())
    }

    /// Removes every job (of one store, or of all stores), pending ones included.
    ///
    /// # Errors
    /// [`Error::UnknownStore`], store errors.
    pub async fn remove_all_jobs(&self, store: Option<&str>) -> Result<()> {
        let stores = match store {
            Some(a) => vec![(a.to_string(), self.inner.store(a)?)],
            None => self.inner.stores(),
        };
        for (alias, s) in stores {
            self.inner.pending.remove_store(&alias);
            if self.is_running() {
                s.remove_all_jobs().await?;
            }
            lock(&self.inner.decoded).forget_store(&alias);
            self.inner.emit(Event::AllJobsRemoved { jobstore: alias });
        }
        Ok(())
    }

    /// Runs a job once now, without changing its schedule.
    ///
    /// On a client ([`SchedulerBuilder::build_client`]) the job runs on one of
    /// the schedulers running on the store: its next run time moves to
    /// [`RUN_REQUEST_LEAD`] from now (a store without change notices is polled
    /// every second, so every node sees the change before the slot is due and
    /// the run starts on time, within its misfire grace), and the first node
    /// that holds its task runs that slot like any other; the trigger's later
    /// fire times stay as they were.
    ///
    /// # Errors
    /// [`Error::NotRunning`], [`Error::JobNotFound`], [`Error::UnknownTask`],
    /// [`Error::UnknownExecutor`], [`Error::MaxInstancesReached`]; on a client,
    /// [`Error::InvalidJob`] for a paused job (resume it instead).
    pub async fn run_job_now(&self, id: impl Into<JobId>, store: Option<&str>) -> Result<()> {
        if !self.is_running() {
            return Err(Error::NotRunning);
        }
        let id = id.into();
        if self.is_client() {
            return self.request_run(id, store).await;
        }
        let Found {
            alias, record: rec, ..
        } = self.find_required(&id, store).await?;
        let data = rec.decode()?;
        let task = self
            .inner
            .task(&data.task)
            .ok_or_else(|| Error::UnknownTask {
                task: data.task.clone(),
            })?;
        let executor = self.inner.executor_for(&data.options, &task)?;
        let store = self.inner.store(&alias)?;
        let now = trunc_micros(self.inner.store_now(&alias));
        let record = RunRecord::running(
            rec.id.clone(),
            now,
            1,
            self.inner.owner.clone(),
            now,
            run_loop::after(now, self.inner.config.lease),
        );
        let run_id = record.id.clone();
        let inserted = store
            .insert_runs(&[NewRun {
                record,
                max_instances: Some(data.options.max_instances),
            }])
            .await?;
        match inserted.first() {
            Some(RunInsert::Inserted(RunState::Running)) => {}
            Some(RunInsert::Inserted(_)) => {
                return Err(Error::MaxInstancesReached {
                    id: rec.id.to_string(),
                    max: data.options.max_instances,
                })
            }
            _ => {
                return Err(Error::Config(format!(
                    "job '{}' already has a run recorded at {now}",
                    rec.id
                )))
            }
        }
        self.inner.track(&alias, std::slice::from_ref(&run_id));
        let run = JobRun::new(
            rec.id.clone(),
            alias.clone(),
            vec![now],
            task,
            data.args,
            data.options.max_instances,
            data.options.timeout,
        )
        .with_runs(vec![run_id.clone()], 1);
        let refused = match executor.submit(run) {
            Ok(()) => {
                self.inner.emit(Event::JobSubmitted {
                    job_id: rec.id,
                    jobstore: alias,
                    run_times: vec![now],
                });
                return Ok(());
            }
            Err(SubmitError::MaxInstancesReached { job_id, max }) => (
                RunState::Skipped,
                Error::MaxInstancesReached {
                    id: job_id.to_string(),
                    max,
                },
            ),
            Err(e) => (
                RunState::Cancelled,
                Error::Config(format!("executor refused the run: {e}")),
            ),
        };
        self.inner.record_done(RunDone {
            jobstore: alias,
            job_id: rec.id,
            run_id,
            state: refused.0,
            finished_at: now,
            error: Some(refused.1.to_string()),
        });
        Err(refused.1)
    }

    /// Moves a job's next run time to just ahead of now for the nodes
    /// running the store, remembering its own next run time.
    async fn request_run(&self, id: JobId, store: Option<&str>) -> Result<()> {
        let alias = self.find_required(&id, store).await?.alias;
        // The store's clock, not this client's: the nodes run by it.
        let now = match self.inner.store(&alias)?.server_time().await {
            Ok(Some(t)) => t,
            _ => self.inner.store_now(&alias),
        };
        let slot = trunc_micros(run_loop::after(now, RUN_REQUEST_LEAD));
        self.edit(&id, Some(&alias), &mut |data, next_run_time| {
            let Some(next) = *next_run_time else {
                return Err(Error::InvalidJob(format!(
                    "job '{id}' is paused: resume it (or run it from a scheduler that runs jobs)"
                )));
            };
            if next > slot {
                // A request still pending keeps the schedule it saved.
                let own = data.options.resume_at.filter(|r| *r > slot).unwrap_or(next);
                data.options.resume_at = Some(own);
                *next_run_time = Some(slot);
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Reads the run history of a store (the default store when `store` is
    /// `None`): newest first, filtered by `query`.
    ///
    /// # Errors
    /// [`Error::UnknownStore`]; the store's error.
    pub async fn runs(&self, query: &RunQuery, store: Option<&str>) -> Result<Vec<RunRecord>> {
        let store = self.inner.store(store.unwrap_or(DEFAULT_STORE))?;
        store.query_runs(query).await
    }
}

#[cfg(test)]
mod upsert_tests {
    use super::same_schedule;
    use crate::trigger::{CronTrigger, IntervalTrigger, Trigger};
    use chrono::{DateTime, Utc};
    use chrono_tz::Tz;

    fn prepared(mut t: Box<dyn Trigger>, now: DateTime<Utc>, tz: Tz) -> serde_json::Value {
        t.prepare(now, tz);
        t.to_json()
    }

    fn check(stored: Box<dyn Trigger>, new: impl Fn() -> Box<dyn Trigger>, tz: Tz) -> bool {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let t1 = t0 + chrono::Duration::minutes(20);
        let stored = prepared(stored, t0, Tz::UTC);
        let new_json = prepared(new(), t1, tz);
        let later = prepared(new(), t1 + chrono::Duration::days(1000), tz);
        same_schedule(&stored, &new_json, &later)
    }

    #[test]
    fn an_interval_added_later_is_the_same_schedule() {
        let every = |m: u64| IntervalTrigger::every(std::time::Duration::from_secs(m * 60));
        let new = || Box::new(every(30).unwrap_or_else(|e| panic!("{e}"))) as Box<dyn Trigger>;
        let stored = Box::new(every(30).unwrap_or_else(|e| panic!("{e}")));
        assert!(check(stored, new, Tz::UTC));
        let other = Box::new(every(60).unwrap_or_else(|e| panic!("{e}")));
        assert!(!check(other, new, Tz::UTC));
    }

    #[test]
    fn a_cron_in_another_zone_is_another_schedule() {
        let cron = || {
            Box::new(CronTrigger::from_crontab("0 9 * * 1-5").unwrap_or_else(|e| panic!("{e}")))
                as Box<dyn Trigger>
        };
        assert!(check(cron(), cron, Tz::UTC));
        assert!(!check(cron(), cron, Tz::Asia__Shanghai));
    }
}
