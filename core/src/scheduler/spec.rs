//! What users hand the scheduler (`JobSpec`, `JobChanges`) and what they get back (`Job`).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::Value;

use crate::error::BoxError;
use crate::job::{JobContent, JobData, JobId, JobOptions, JobRecord, OnInterrupted, RetryPolicy};
use crate::task::{JobContext, TaskFn};
use crate::trigger::Trigger;

/// How a job names the code it runs.
#[derive(Debug)]
pub(crate) enum TaskRef {
    Named(String),
    Inline(TaskFn),
}

/// Everything needed to add a job: task, trigger and options (unset options
/// take the scheduler's [`JobDefaults`](crate::job::JobDefaults)).
///
/// # Examples
/// ```
/// use sundial_core::scheduler::JobSpec;
/// use sundial_core::trigger::CronTrigger;
///
/// #[derive(serde::Serialize)]
/// struct Report { team: String }
///
/// let spec = JobSpec::new("daily_report", CronTrigger::from_crontab("0 9 * * 1-5")?)
///     .id("daily_report")
///     .args(Report { team: "sales".into() })
///     .replace_existing(true);
/// # Ok::<(), sundial_core::Error>(())
/// ```
#[derive(Debug)]
pub struct JobSpec {
    pub(crate) task: TaskRef,
    pub(crate) trigger: Box<dyn Trigger>,
    pub(crate) id: Option<JobId>,
    pub(crate) args: Result<Value, String>,
    pub(crate) jobstore: Option<String>,
    /// The options set; the others take the scheduler's defaults.
    pub(crate) options: OptionsPatch,
    pub(crate) next_run_time: Option<Option<DateTime<Utc>>>,
    pub(crate) on_conflict: OnConflict,
}

/// Job options to set, each `None` when left as it is: what a [`JobSpec`]
/// sets on a new job (over the scheduler's defaults) and a [`JobChanges`] on a
/// stored one.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct OptionsPatch {
    pub(crate) name: Option<Option<String>>,
    pub(crate) executor: Option<Option<String>>,
    pub(crate) misfire_grace_time: Option<Option<Duration>>,
    pub(crate) coalesce: Option<bool>,
    pub(crate) max_instances: Option<u32>,
    pub(crate) timeout: Option<Option<Duration>>,
    pub(crate) retry: Option<Option<RetryPolicy>>,
    pub(crate) on_interrupted: Option<OnInterrupted>,
}

impl OptionsPatch {
    /// Whether nothing is set.
    pub(crate) fn is_empty(&self) -> bool {
        *self == OptionsPatch::default()
    }

    /// Writes what is set into `o`.
    pub(crate) fn apply(self, o: &mut JobOptions) {
        let OptionsPatch {
            name,
            executor,
            misfire_grace_time,
            coalesce,
            max_instances,
            timeout,
            retry,
            on_interrupted,
        } = self;
        if let Some(v) = name {
            o.name = v;
        }
        if let Some(v) = executor {
            o.executor = v;
        }
        if let Some(v) = misfire_grace_time {
            o.misfire_grace_time = v;
        }
        if let Some(v) = coalesce {
            o.coalesce = v;
        }
        if let Some(v) = max_instances {
            o.max_instances = v;
        }
        if let Some(v) = timeout {
            o.timeout = v;
        }
        if let Some(v) = retry {
            o.retry = v;
        }
        if let Some(v) = on_interrupted {
            o.on_interrupted = v;
        }
    }
}

/// The option setters that [`JobSpec`] and [`JobChanges`] share.
macro_rules! option_setters {
    ($t:ty) => {
        impl $t {
            /// Sets a human-readable name (listings show the task name without one).
            pub fn name(mut self, name: impl Into<String>) -> Self {
                self.options.name = Some(Some(name.into()));
                self
            }

            /// How late a run may start and still run (`None`: however late).
            pub fn misfire_grace_time(mut self, grace: Option<Duration>) -> Self {
                self.options.misfire_grace_time = Some(grace);
                self
            }

            /// Whether a backlog of missed runs collapses into one run.
            pub fn coalesce(mut self, coalesce: bool) -> Self {
                self.options.coalesce = Some(coalesce);
                self
            }

            /// How many runs of this job may execute at once, across every
            /// scheduler sharing the store.
            pub fn max_instances(mut self, n: u32) -> Self {
                self.options.max_instances = Some(n);
                self
            }

            /// What happens to a slot whose run was interrupted (default
            /// [`OnInterrupted::Skip`]; [`OnInterrupted::Rerun`] runs it again).
            pub fn on_interrupted(mut self, policy: OnInterrupted) -> Self {
                self.options.on_interrupted = Some(policy);
                self
            }
        }
    };
}

option_setters!(JobSpec);
option_setters!(JobChanges);

/// What [`Scheduler::add_job`](crate::scheduler::Scheduler::add_job) does when a
/// job with the same id is already stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnConflict {
    /// Fail with [`Error::ConflictingId`](crate::Error::ConflictingId).
    #[default]
    Fail,
    /// Keep the stored job untouched and return it ([`JobSpec::if_absent`]).
    Keep,
    /// Replace the stored job's task, args and options; keep its next run time
    /// (and paused state) unless the trigger changed ([`JobSpec::replace_existing`]).
    Replace,
}

/// What [`Scheduler::add_job_with_outcome`](crate::scheduler::Scheduler::add_job_with_outcome) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddOutcome {
    /// No job had the id: the job was added.
    Added,
    /// A job with the id was replaced ([`OnConflict::Replace`]).
    Replaced,
    /// A job with the id was kept as it was ([`OnConflict::Keep`]).
    Kept,
}

impl JobSpec {
    /// A job that runs the registered task `task` on `trigger`.
    pub fn new(task: impl Into<String>, trigger: impl Trigger) -> Self {
        Self::with_task(TaskRef::Named(task.into()), Box::new(trigger))
    }

    /// A job that runs the registered task `task` on a boxed trigger.
    pub fn new_boxed(task: impl Into<String>, trigger: Box<dyn Trigger>) -> Self {
        Self::with_task(TaskRef::Named(task.into()), trigger)
    }

    /// A job that runs an inline async closure (memory stores only: a closure
    /// cannot be persisted).
    pub fn inline<F, Fut, E>(trigger: impl Trigger, f: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let task = TaskFn::from_async("inline", move |ctx, (): ()| f(ctx));
        Self::with_task(TaskRef::Inline(task), Box::new(trigger))
    }

    /// A job that runs an inline blocking closure (memory stores only).
    pub fn inline_blocking<F, E>(trigger: impl Trigger, f: F) -> Self
    where
        F: Fn(JobContext) -> Result<(), E> + Send + Sync + 'static,
        E: Into<BoxError> + 'static,
    {
        let task = TaskFn::from_blocking("inline", move |ctx, (): ()| f(ctx));
        Self::with_task(TaskRef::Inline(task), Box::new(trigger))
    }

    fn with_task(task: TaskRef, trigger: Box<dyn Trigger>) -> Self {
        JobSpec {
            task,
            trigger,
            id: None,
            args: Ok(Value::Null),
            jobstore: None,
            options: OptionsPatch::default(),
            next_run_time: None,
            on_conflict: OnConflict::Fail,
        }
    }

    /// Retries failed and timed-out runs: up to `max_attempts` attempts in all,
    /// `backoff` before the first retry, doubling (capped at one hour).
    pub fn retries(mut self, max_attempts: u32, backoff: Duration) -> Self {
        self.options.retry = Some(Some(RetryPolicy::new(max_attempts, backoff)));
        self
    }

    /// Retries failed and timed-out runs as `policy` says.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.options.retry = Some(Some(policy));
        self
    }

    /// Sets the job id (default: a random id).
    pub fn id(mut self, id: impl Into<JobId>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the task's arguments (serialized to JSON now; errors surface on `add_job`).
    pub fn args<T: Serialize>(mut self, args: T) -> Self {
        self.args = serde_json::to_value(args).map_err(|e| e.to_string());
        self
    }

    /// Sets the task's arguments as raw JSON.
    pub fn args_json(mut self, args: Value) -> Self {
        self.args = Ok(args);
        self
    }

    /// Runs the job on the executor with this alias.
    pub fn executor(mut self, alias: impl Into<String>) -> Self {
        self.options.executor = Some(Some(alias.into()));
        self
    }

    /// Stores the job in the store with this alias (default `"default"`).
    pub fn jobstore(mut self, alias: impl Into<String>) -> Self {
        self.jobstore = Some(alias.into());
        self
    }

    /// Reports (and on the async executor cancels) runs that take longer than this.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(Some(timeout));
        self
    }

    /// Sets the first run time explicitly (default: from the trigger).
    pub fn next_run_time(mut self, t: DateTime<Utc>) -> Self {
        self.next_run_time = Some(Some(t));
        self
    }

    /// Adds the job paused (no next run time).
    pub fn paused(mut self) -> Self {
        self.next_run_time = Some(None);
        self
    }

    /// Replaces a stored job with the same id instead of failing with
    /// `ConflictingId`.
    ///
    /// The job's schedule survives the replacement: when the trigger is the same
    /// as the stored one, the stored next run time (and a pause) is kept, so
    /// restarting an application more often than a job's interval does not keep
    /// pushing the job back. A changed trigger, or an explicit
    /// [`next_run_time`](Self::next_run_time), reschedules it. When nothing
    /// changed, nothing is written. A start time the caller computes from the
    /// clock (`start_date(Utc::now())`) makes the trigger differ on every
    /// start: leave the start out and the scheduler fills it in once.
    pub fn replace_existing(mut self, replace: bool) -> Self {
        self.on_conflict = if replace {
            OnConflict::Replace
        } else {
            OnConflict::Fail
        };
        self
    }

    /// Adds the job only when no job has its id; otherwise leaves the stored job
    /// as it is and returns it. The safe way for several processes to declare the
    /// same jobs at start.
    pub fn if_absent(mut self) -> Self {
        self.on_conflict = OnConflict::Keep;
        self
    }

    /// Sets what happens when a job with the same id exists.
    pub fn on_conflict(mut self, on_conflict: OnConflict) -> Self {
        self.on_conflict = on_conflict;
        self
    }
}

/// Changes to apply with [`Scheduler::modify_job`](crate::scheduler::Scheduler::modify_job).
#[derive(Debug, Default, Clone)]
pub struct JobChanges {
    pub(crate) args: Option<Result<Value, String>>,
    pub(crate) options: OptionsPatch,
    pub(crate) next_run_time: Option<Option<DateTime<Utc>>>,
    pub(crate) trigger: Option<Value>,
}

impl JobChanges {
    /// No changes yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        let JobChanges {
            args,
            options,
            next_run_time,
            trigger,
        } = self;
        args.is_none() && options.is_empty() && next_run_time.is_none() && trigger.is_none()
    }
    /// Replaces the trigger; the next run time is computed from it (a paused
    /// job stays paused). Checked and written together with the other changes.
    pub fn trigger(mut self, trigger: impl crate::trigger::Trigger) -> Self {
        self.trigger = Some(trigger.to_json());
        self
    }
    /// Replaces the trigger with one given as JSON (see [`JobChanges::trigger`]).
    pub fn trigger_json(mut self, trigger: Value) -> Self {
        self.trigger = Some(trigger);
        self
    }
    /// Replaces the arguments.
    pub fn args<T: Serialize>(mut self, args: T) -> Self {
        self.args = Some(serde_json::to_value(args).map_err(|e| e.to_string()));
        self
    }
    /// Moves the job to another executor (`None`: route by task kind).
    pub fn executor(mut self, alias: Option<String>) -> Self {
        self.options.executor = Some(alias);
        self
    }
    /// Changes the timeout (`None`: none).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.timeout = Some(timeout);
        self
    }
    /// Sets the next run time (`None` pauses).
    pub fn next_run_time(mut self, t: Option<DateTime<Utc>>) -> Self {
        self.next_run_time = Some(t);
        self
    }
    /// Changes the retry policy (`None`: no retries).
    pub fn retry_policy(mut self, policy: Option<RetryPolicy>) -> Self {
        self.options.retry = Some(policy);
        self
    }

    /// Applies the changes to job `id`'s content and next run time.
    pub(crate) fn apply(
        self,
        id: &JobId,
        data: &mut JobData,
        next_run_time: &mut Option<DateTime<Utc>>,
    ) -> crate::Result<()> {
        let o: &mut JobOptions = &mut data.options;
        self.options.apply(o);
        if let Some(v) = self.next_run_time {
            *next_run_time = v;
            o.resume_at = None;
        }
        o.check()
            .map_err(|why| crate::Error::InvalidJob(format!("job '{id}': {why}")))?;
        if let Some(a) = self.args {
            data.args = a.map_err(|e| {
                crate::Error::InvalidJob(format!("job '{id}': cannot serialize arguments: {e}"))
            })?;
        }
        Ok(())
    }
}

/// A stored job record with its content decoded.
#[derive(Clone, Debug)]
pub(crate) struct Decoded {
    pub(crate) record: JobRecord,
    pub(crate) data: JobData,
}

impl Decoded {
    /// Decodes a stored record.
    pub(crate) fn decode(record: JobRecord) -> crate::Result<Decoded> {
        let data = record.decode()?;
        Ok(Decoded { record, data })
    }

    /// Decodes a record for reading: one its store quarantined is as
    /// unreadable as one whose content does not decode.
    pub(crate) fn readable(record: JobRecord) -> crate::Result<Decoded> {
        if let Some(why) = &record.quarantined {
            return Err(crate::Error::UnreadableJob {
                id: record.id.to_string(),
                reason: why.clone(),
            });
        }
        Decoded::decode(record)
    }

    /// A record with the content encoded from `data`.
    pub(crate) fn encoded(mut record: JobRecord, data: JobData) -> Decoded {
        record.content = JobContent::encode(&data);
        Decoded { record, data }
    }
}

/// A job as the scheduler reports it: the stored record, decoded, plus where it lives.
#[derive(Clone)]
pub struct Job {
    pub(crate) record: JobRecord,
    view: View,
    pub(crate) jobstore: String,
    pub(crate) timezone: Tz,
    pub(crate) pending: bool,
}

/// What a [`Job`] knows of its content besides the stored text.
#[derive(Clone, Debug)]
enum View {
    /// Read from a store: decoded, with the trigger described.
    Decoded { data: JobData, description: String },
    /// Just added: its parts and typed trigger, from which the decoded
    /// content and the description are made when first asked for.
    Added {
        parts: std::sync::Arc<AddedParts>,
        data: std::sync::OnceLock<JobData>,
        description: std::sync::OnceLock<String>,
    },
}

// A job is read through `&self` only; what it builds on demand is built
// once (`OnceLock`), so a panic elsewhere leaves nothing half-made to see.
impl std::panic::UnwindSafe for Job {}
impl std::panic::RefUnwindSafe for Job {}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("record", &self.record)
            .field("data", self.data())
            .field("jobstore", &self.jobstore)
            .field("trigger_description", &self.trigger_description())
            .field("timezone", &self.timezone)
            .field("pending", &self.pending)
            .finish()
    }
}

/// The parts of a job as it was added.
#[derive(Debug)]
pub(crate) struct AddedParts {
    pub(crate) task: String,
    pub(crate) trigger: Box<dyn Trigger>,
    pub(crate) args: Value,
    pub(crate) options: JobOptions,
}

impl Job {
    /// A job read from a store, its trigger described as `description`.
    pub(crate) fn decoded(
        job: Decoded,
        jobstore: &str,
        pending: bool,
        description: String,
        timezone: Tz,
    ) -> Job {
        let Decoded { record, data } = job;
        Job {
            record,
            view: View::Decoded { data, description },
            jobstore: jobstore.to_string(),
            timezone,
            pending,
        }
    }

    /// A job just added as `record` from `parts`.
    pub(crate) fn added(
        record: JobRecord,
        parts: AddedParts,
        jobstore: String,
        default_timezone: Tz,
    ) -> Job {
        let timezone = parts.trigger.timezone().unwrap_or(default_timezone);
        Job {
            record,
            view: View::Added {
                parts: std::sync::Arc::new(parts),
                data: std::sync::OnceLock::new(),
                description: std::sync::OnceLock::new(),
            },
            jobstore,
            timezone,
            pending: false,
        }
    }

    /// The job id.
    pub fn id(&self) -> &JobId {
        &self.record.id
    }
    /// The job's name (the task name if none was given).
    pub fn name(&self) -> &str {
        self.options().name.as_deref().unwrap_or(self.task())
    }
    /// The task name.
    pub fn task(&self) -> &str {
        match &self.view {
            View::Decoded { data, .. } => &data.task,
            View::Added { parts, .. } => &parts.task,
        }
    }
    /// The arguments as JSON.
    pub fn args(&self) -> &Value {
        match &self.view {
            View::Decoded { data, .. } => &data.args,
            View::Added { parts, .. } => &parts.args,
        }
    }
    /// The run settings.
    pub fn options(&self) -> &JobOptions {
        match &self.view {
            View::Decoded { data, .. } => &data.options,
            View::Added { parts, .. } => &parts.options,
        }
    }
    /// The next run time (`None`: paused).
    pub fn next_run_time(&self) -> Option<DateTime<Utc>> {
        self.record.next_run_time
    }
    /// The next run time in the trigger's zone.
    pub fn next_run_time_local(&self) -> Option<DateTime<Tz>> {
        self.record
            .next_run_time
            .map(|t| t.with_timezone(&self.timezone))
    }
    /// Whether the job is paused.
    pub fn is_paused(&self) -> bool {
        self.record.next_run_time.is_none()
    }
    /// The trigger's JSON form (for a job just added, made from its trigger
    /// when first asked for).
    pub fn trigger_json(&self) -> &Value {
        &self.data().trigger
    }
    /// A short description of the trigger (for a job just added, made from
    /// its trigger when first asked for).
    pub fn trigger_description(&self) -> &str {
        match &self.view {
            View::Decoded { description, .. } => description,
            View::Added {
                parts, description, ..
            } => description.get_or_init(|| parts.trigger.describe()),
        }
    }
    /// The alias of the store holding the job.
    pub fn jobstore(&self) -> &str {
        &self.jobstore
    }
    /// Whether the job waits for the scheduler to start before it is stored.
    pub fn is_pending(&self) -> bool {
        self.pending
    }
    /// The stored record (its content as the store keeps it).
    pub fn record(&self) -> &JobRecord {
        &self.record
    }
    /// The decoded content: task, trigger, arguments and options (for a job
    /// just added, made from its parts when first asked for).
    pub fn data(&self) -> &JobData {
        match &self.view {
            View::Decoded { data, .. } => data,
            View::Added { parts, data, .. } => data.get_or_init(|| JobData {
                task: parts.task.clone(),
                trigger: parts.trigger.to_json(),
                args: parts.args.clone(),
                options: parts.options.clone(),
            }),
        }
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) trigger: {}, ",
            self.id(),
            self.name(),
            self.trigger_description()
        )?;
        match self.next_run_time_local() {
            Some(t) => write!(f, "next run at: {}", t.format("%Y-%m-%d %H:%M:%S %Z")),
            None => f.write_str("paused"),
        }
    }
}

/// A stored job whose content cannot be decoded (edited by hand, or written
/// by a newer version): listed apart, never run; replace or remove it.
#[derive(Clone, Debug, PartialEq)]
pub struct UnreadableJob {
    /// The job id.
    pub id: JobId,
    /// The alias of the store holding the job.
    pub jobstore: String,
    /// The stored next run time (`None`: paused).
    pub next_run_time: Option<DateTime<Utc>>,
    /// What is wrong with the stored content.
    pub reason: String,
}

/// All jobs, grouped by store, for printing (APScheduler's `print_jobs`).
#[derive(Clone, Debug)]
pub struct JobListing {
    pub(crate) stores: Vec<(String, Vec<Job>)>,
    pub(crate) unreadable: Vec<UnreadableJob>,
    pub(crate) timezone: Tz,
}

impl JobListing {
    /// Stored jobs whose content cannot be decoded, which the listing leaves out.
    pub fn unreadable(&self) -> &[UnreadableJob] {
        &self.unreadable
    }

    /// The jobs of every store, in listing order.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.stores.iter().flat_map(|(_, jobs)| jobs.iter())
    }

    /// The jobs of every store together, by next run time with paused jobs
    /// last (the order of [`Scheduler::get_jobs`](crate::scheduler::Scheduler::get_jobs)).
    pub fn jobs_by_run_time(&self) -> Vec<&Job> {
        let mut jobs: Vec<&Job> = self.jobs().collect();
        jobs.sort_by(|a, b| crate::store::run_order(&a.record, &b.record));
        jobs
    }

    /// The scheduler's default time zone, which triggers created without one use.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }
}

impl fmt::Display for JobListing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Default time zone: {} (triggers created without a zone use it)",
            self.timezone
        )?;
        for (alias, jobs) in &self.stores {
            writeln!(f, "Jobstore {alias}:")?;
            if jobs.is_empty() {
                writeln!(f, "    No scheduled jobs")?;
            }
            for job in jobs {
                let pending = if job.pending { " [pending]" } else { "" };
                writeln!(f, "    {job}{pending}")?;
            }
            for u in self.unreadable.iter().filter(|u| u.jobstore == *alias) {
                writeln!(f, "    {} unreadable: {}", u.id, u.reason)?;
            }
        }
        Ok(())
    }
}
