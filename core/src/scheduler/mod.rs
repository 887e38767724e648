//! The scheduler: job API, run loop and run modes.

mod builder;
mod components;
mod decoded_cache;
mod jobs;
mod ledger;
mod lifecycle;
mod modes;
mod nodes;
mod passed_over;
mod pending;
mod policy;
mod run_loop;
mod spec;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures::stream::BoxStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use builder::SchedulerBuilder;
pub use modes::BackgroundScheduler;
pub use spec::{AddOutcome, Job, JobChanges, JobListing, JobSpec, OnConflict, UnreadableJob};

use spec::{AddedParts, Decoded};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::event::{Event, EventBus, EventMask, Listener, ListenerId};
use crate::executor::{Executor, ExecutorContext, ExecutorKind, JobRun, RunDone, SubmitError};
use crate::job::{
    trunc_micros, JobContent, JobData, JobDefaults, JobId, JobOptions, JobRecord, OwnerId,
};
use crate::run::{NewRun, RunId, RunInsert, RunQuery, RunRecord, RunState};
use crate::store::{run_order, JobStore, ReleaseItem};
pub(crate) use crate::sync::lock;
use crate::sync::{read, write};
use crate::task::{TaskFn, TaskRegistry};
use crate::trigger::{Trigger, TriggerRegistry};
use spec::TaskRef;

/// The store alias jobs go to when they name none.
pub const DEFAULT_STORE: &str = "default";

/// How far ahead a client's [`Scheduler::run_job_now`] schedules the run.
pub const RUN_REQUEST_LEAD: Duration = Duration::from_secs(2);

/// How many missed run times the loop computes for one job at most; older
/// ones beyond this are skipped with a warning.
pub const MAX_BACKLOG_RUN_TIMES: usize = 1000;

/// Task names given to inline closures start with this.
const INLINE_PREFIX: &str = "__inline__:";

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) lease: Duration,
    pub(crate) max_idle_sleep: Duration,
    /// Whether the application set `max_idle_sleep` (else stores without
    /// change notices are polled more often).
    pub(crate) idle_sleep_set: bool,
    pub(crate) batch_size: usize,
    pub(crate) retry_interval: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) run_retention: Duration,
    /// How many runs of each job are kept past the safety floor.
    pub(crate) runs_per_job: usize,
    /// The largest job arguments accepted, in bytes of JSON.
    pub(crate) max_args_bytes: usize,
    /// Manages jobs in the stores but runs none (no loop, no executors).
    pub(crate) client: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lease: Duration::from_secs(60),
            max_idle_sleep: Duration::from_secs(5),
            idle_sleep_set: false,
            batch_size: 500,
            retry_interval: Duration::from_secs(10),
            heartbeat: Duration::from_secs(20),
            run_retention: Duration::from_secs(7 * 24 * 3600),
            max_args_bytes: DEFAULT_MAX_ARGS_BYTES,
            runs_per_job: 1000,
            client: false,
        }
    }
}

/// How long a run record must outlive its slot to keep guarding it against a
/// late start: ten leases, and at least an hour.
pub(crate) fn slot_guard(lease: Duration) -> Duration {
    lease.saturating_mul(10).max(Duration::from_secs(3600))
}

/// The default limit on a job's arguments: 1 MiB of JSON.
pub const DEFAULT_MAX_ARGS_BYTES: usize = 1 << 20;

/// Counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The scheduler's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulerState {
    /// Not started, or shut down.
    Stopped,
    /// Processing jobs.
    Running,
    /// Started, but not processing jobs.
    Paused,
}

/// The hint of an unknown-alias error: the aliases that are configured.
fn configured<'a>(aliases: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<String> = aliases.map(|a| format!("'{a}'")).collect();
    if list.is_empty() {
        ": none is configured".to_string()
    } else {
        format!(" (configured: {})", list.join(", "))
    }
}

pub(crate) struct Inner {
    pub(crate) timezone: Tz,
    pub(crate) defaults: JobDefaults,
    pub(crate) config: Config,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) owner: OwnerId,
    pub(crate) triggers: TriggerRegistry,
    pub(crate) events: EventBus,
    tasks: RwLock<TaskRegistry>,
    stores: RwLock<Vec<(String, Arc<dyn JobStore>)>>,
    executors: RwLock<Vec<(String, Arc<dyn Executor>)>>,
    state: Mutex<SchedulerState>,
    pending: pending::PendingJobs,
    pub(crate) wake: Notify,
    /// When the loop will look at the stores next, in microseconds of the
    /// scheduler's clock; `i64::MAX` while it is in a pass (what it read may
    /// predate a change, so every change wakes it) or waits for a change only.
    /// A job added or changed to run at or after this needs no wake-up.
    planned_pass: std::sync::atomic::AtomicI64,
    run: Mutex<Option<(CancellationToken, tokio::task::JoinHandle<()>)>>,
    runtime: Mutex<Option<tokio::runtime::Handle>>,
    pub(crate) store_retry: Mutex<HashMap<String, DateTime<Utc>>>,
    stopped: tokio::sync::watch::Sender<bool>,
    /// Releases a store failed to take, retried on the next pass.
    pub(crate) unreleased: Mutex<HashMap<String, Vec<(ReleaseItem, String)>>>,
    /// A claimed batch per store whose run records could not be confirmed
    /// written, tried again on the next pass.
    pub(crate) unstarted: Mutex<HashMap<String, run_loop::Unstarted>>,
    /// Runs this node started and has not yet recorded as finished, per store.
    pub(crate) active: Mutex<HashMap<String, HashSet<RunId>>>,
    /// Where executors report finished runs (set while started).
    pub(crate) outcomes: Mutex<Option<tokio::sync::mpsc::UnboundedSender<RunDone>>>,
    ledger_task: Mutex<Option<(CancellationToken, tokio::task::JoinHandle<()>)>>,
    /// Finished runs waiting to be written, per store.
    pub(crate) finished: Mutex<ledger::Pending>,
    /// Serialises writes of finished runs.
    pub(crate) flush_lock: tokio::sync::Mutex<()>,
    /// Held while old runs and nodes are pruned (one pass at a time).
    pub(crate) prune_lock: tokio::sync::Mutex<()>,
    /// Started runs whose job retries failures, by run id.
    pub(crate) retries: Mutex<HashMap<RunId, ledger::Retry>>,
    /// Runs of exhausted one-off jobs kept until the run ends: store alias and job.
    pub(crate) held: Mutex<HashMap<RunId, ledger::Held>>,
    /// Jobs this scheduler cannot run, left to other schedulers for a while.
    pub(crate) passed_over: Mutex<passed_over::PassedOver>,
    /// Decoded contents and parsed triggers of claimed jobs.
    pub(crate) decoded: Mutex<decoded_cache::DecodedCache>,
    /// The task watching each shared store for other processes' changes.
    pub(crate) watchers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// The stores whose change notices are being received.
    pub(crate) watched: Mutex<HashSet<String>>,
    /// This scheduler's instance id in node registries (one per scheduler, kept across restarts).
    pub(crate) instance: String,
    /// This scheduler's node registration (set while started, not for clients).
    pub(crate) node: Mutex<Option<crate::node::NodeRecord>>,
    /// Stores whose clock offset was warned about (until it is back in range).
    pub(crate) offset_warned: Mutex<HashSet<String>>,
    /// This clock minus each store server's, where large enough to correct for.
    pub(crate) offsets: Mutex<HashMap<String, chrono::Duration>>,
    /// When the run loop last finished a pass over the stores (this clock).
    pub(crate) last_pass: Mutex<Option<DateTime<Utc>>>,
}

/// Schedules jobs and runs them through executors; cheap to clone (all clones
/// drive the same scheduler).
///
/// # Examples
/// ```
/// use sundial_core::scheduler::{JobSpec, Scheduler};
/// use sundial_core::trigger::IntervalTrigger;
/// # use sundial_core::{store::*, executor::*, job::*, run::*, Result};
/// # use chrono::{DateTime, Utc};
/// # #[derive(Debug)] struct S;
/// # #[async_trait::async_trait] impl JobStore for S {
/// #   fn backend(&self) -> &'static str { "doc" }
/// #   fn capabilities(&self) -> StoreCapabilities { StoreCapabilities::IN_MEMORY }
/// #   async fn add_job(&self, _: &JobRecord) -> Result<()> { Ok(()) }
/// #   async fn add_jobs(&self, _: &[JobRecord]) -> Result<()> { Ok(()) }
/// #   async fn update_job(&self, _: &JobRecord) -> Result<()> { Ok(()) }
/// #   async fn remove_job(&self, _: &JobId) -> Result<()> { Ok(()) }
/// #   async fn remove_all_jobs(&self) -> Result<()> { Ok(()) }
/// #   async fn lookup_job(&self, _: &JobId) -> Result<Option<JobRecord>> { Ok(None) }
/// #   async fn get_all_jobs(&self) -> Result<Vec<JobRecord>> { Ok(vec![]) }
/// #   async fn get_next_run_time(&self, _: &[JobId]) -> Result<Option<DateTime<Utc>>> { Ok(None) }
/// #   async fn acquire_due(&self, _: DateTime<Utc>, _: &OwnerId, _: std::time::Duration, _: usize, _: &[JobId]) -> Result<Vec<JobRecord>> { Ok(vec![]) }
/// #   async fn release(&self, _: &OwnerId, _: &JobId, _: u64, _: Release) -> Result<ReleaseOutcome> { Ok(ReleaseOutcome::Gone) }
/// #   async fn insert_runs(&self, r: &[NewRun]) -> Result<Vec<RunInsert>> { Ok(r.iter().map(|_| RunInsert::Duplicate).collect()) }
/// #   async fn finish_runs(&self, _: &OwnerId, _: &[RunFinish]) -> Result<u64> { Ok(0) }
/// #   async fn heartbeat_runs(&self, _: &OwnerId, _: &[RunId], _: DateTime<Utc>) -> Result<u64> { Ok(0) }
/// #   async fn interrupt_lapsed(&self, _: DateTime<Utc>, _: usize) -> Result<Vec<RunRecord>> { Ok(vec![]) }
/// #   async fn query_runs(&self, _: &RunQuery) -> Result<Vec<RunRecord>> { Ok(vec![]) }
/// #   async fn prune_runs(&self, _: DateTime<Utc>) -> Result<u64> { Ok(0) }
/// #   async fn prune_job_runs(&self, _: usize, _: DateTime<Utc>) -> Result<u64> { Ok(0) }
/// #   async fn upsert_node(&self, _: &sundial_core::node::NodeRecord, _: DateTime<Utc>) -> Result<Option<sundial_core::node::NodeRecord>> { Ok(None) }
/// #   async fn list_nodes(&self) -> Result<Vec<sundial_core::node::NodeRecord>> { Ok(vec![]) }
/// #   async fn remove_node(&self, _: &OwnerId, _: &str) -> Result<()> { Ok(()) }
/// #   async fn prune_nodes(&self, _: DateTime<Utc>) -> Result<u64> { Ok(0) }
/// # }
/// # #[derive(Debug)] struct E;
/// # #[async_trait::async_trait] impl Executor for E {
/// #   fn kind(&self) -> ExecutorKind { ExecutorKind::Async }
/// #   fn start(&self, _: ExecutorContext) -> Result<()> { Ok(()) }
/// #   fn submit(&self, _: JobRun) -> Result<(), SubmitError> { Ok(()) }
/// #   fn running_instances(&self, _: &JobId) -> u32 { 0 }
/// #   async fn shutdown(&self, _: bool) {}
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// # let (store, executor) = (S, E);
/// let scheduler = Scheduler::builder()
///     .timezone("Asia/Shanghai")?
///     .jobstore("default", store)
///     .executor("default", executor)
///     .task("ping", |_ctx, _args: ()| async { Ok::<_, std::io::Error>(()) })
///     .build()?;
/// scheduler.start().await?;
/// scheduler
///     .add_job(JobSpec::new("ping", IntervalTrigger::builder().minutes(5).build()?).id("ping"))
///     .await?;
/// scheduler.shutdown(true).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Scheduler {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("state", &self.state())
            .field("owner", &self.inner.owner)
            .field("timezone", &self.inner.timezone)
            .finish()
    }
}

impl Inner {
    /// The loop starts a pass: every change wakes it until it plans its next one.
    pub(crate) fn pass_started(&self) {
        self.planned_pass
            .store(i64::MAX, std::sync::atomic::Ordering::SeqCst);
    }

    /// The loop sleeps until `next` (its clock's time), or until woken.
    pub(crate) fn pass_planned(&self, next: Option<DateTime<Utc>>) {
        let at = next.map_or(i64::MAX, |t| t.timestamp_micros());
        self.planned_pass
            .store(at, std::sync::atomic::Ordering::SeqCst);
    }

    /// Wakes the loop for a job of store `alias` that is now due at `due`
    /// (store time), unless the loop will look by then anyway or the job is
    /// paused. Called after the store was written, so a pass that starts later
    /// sees the job.
    pub(crate) fn wake_for(&self, alias: &str, due: Option<DateTime<Utc>>) {
        let Some(due) = due else {
            return;
        };
        let local = self.to_local(alias, due).timestamp_micros();
        if local < self.planned_pass.load(std::sync::atomic::Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }
}

impl Inner {
    pub(crate) fn state(&self) -> SchedulerState {
        *lock(&self.state)
    }

    pub(crate) fn stores(&self) -> Vec<(String, Arc<dyn JobStore>)> {
        read(&self.stores).clone()
    }

    fn store(&self, alias: &str) -> Result<Arc<dyn JobStore>> {
        let stores = read(&self.stores);
        stores
            .iter()
            .find(|(a, _)| a == alias)
            .map(|(_, s)| Arc::clone(s))
            .ok_or_else(|| Error::UnknownStore {
                alias: alias.to_string(),
                hint: configured(stores.iter().map(|(a, _)| a)),
            })
    }

    pub(crate) fn task(&self, name: &str) -> Option<TaskFn> {
        read(&self.tasks).get(name).cloned()
    }

    /// Checks a job's arguments against the size limit and its task's argument type.
    pub(crate) fn check_args(&self, task: &str, args: &serde_json::Value) -> Result<()> {
        let mut size = ByteCount(0);
        let _ = serde_json::to_writer(&mut size, args);
        if size.0 > self.config.max_args_bytes {
            return Err(Error::InvalidArgs {
                task: task.to_string(),
                reason: format!(
                    "the arguments are {} bytes of JSON, above the limit of {} bytes (SchedulerBuilder::max_args_size); store large data elsewhere and pass a reference to it",
                    size.0, self.config.max_args_bytes
                ),
            });
        }
        read(&self.tasks)
            .check_args(task, args)
            .map_err(|reason| Error::InvalidArgs {
                task: task.to_string(),
                reason,
            })
    }

    /// The executor a job runs on: its explicit alias, or the first executor
    /// of the task's kind, or `default`, or the first one.
    pub(crate) fn executor_for(
        &self,
        options: &JobOptions,
        task: &TaskFn,
    ) -> Result<Arc<dyn Executor>> {
        let execs = read(&self.executors);
        if let Some(alias) = &options.executor {
            return execs
                .iter()
                .find(|(a, _)| a == alias)
                .map(|(_, e)| Arc::clone(e))
                .ok_or_else(|| Error::UnknownExecutor {
                    alias: alias.clone(),
                    hint: configured(execs.iter().map(|(a, _)| a)),
                });
        }
        let want = if task.is_blocking() {
            ExecutorKind::Blocking
        } else {
            ExecutorKind::Async
        };
        execs
            .iter()
            .find(|(_, e)| e.kind() == want)
            .or_else(|| execs.iter().find(|(a, _)| a == "default"))
            .or_else(|| execs.first())
            .map(|(_, e)| Arc::clone(e))
            .ok_or_else(|| Error::UnknownExecutor {
                alias: "default".into(),
                hint: ": no executor configured".into(),
            })
    }

    pub(crate) fn parse_trigger(&self, data: &JobData) -> Result<Box<dyn Trigger>> {
        self.triggers.parse(&data.trigger)
    }

    pub(crate) fn emit(&self, e: Event) {
        self.events.emit(e);
    }

    /// Puts `f` (or nothing) under the task name `task`; returns what was there.
    pub(crate) fn swap_task(&self, task: &str, f: Option<TaskFn>) -> Option<TaskFn> {
        let mut tasks = write(&self.tasks);
        let before = tasks.get(task).cloned();
        match f {
            Some(f) => tasks.insert(task, f),
            None => {
                tasks.remove(task);
            }
        }
        before
    }

    pub(crate) fn forget_inline(&self, task: &str) {
        if task.starts_with(INLINE_PREFIX) {
            write(&self.tasks).remove(task);
        }
    }

    fn job_view(&self, job: Decoded, jobstore: &str, pending: bool) -> Job {
        match self.triggers.parse(&job.data.trigger) {
            Ok(t) => self.job_view_of(job, jobstore, pending, t.as_ref()),
            Err(e) => {
                let desc = format!("<unreadable trigger: {e}>");
                self.job_view_described(job, jobstore, pending, desc, self.timezone)
            }
        }
    }

    /// A job's view, described by its trigger (already parsed).
    fn job_view_of(&self, job: Decoded, jobstore: &str, pending: bool, t: &dyn Trigger) -> Job {
        let tz = t.timezone().unwrap_or(self.timezone);
        self.job_view_described(job, jobstore, pending, t.describe(), tz)
    }

    fn job_view_described(
        &self,
        job: Decoded,
        jobstore: &str,
        pending: bool,
        desc: String,
        tz: Tz,
    ) -> Job {
        Job::decoded(job, jobstore, pending, desc, tz)
    }
}

impl Scheduler {
    /// Starts configuring a scheduler.
    pub fn builder() -> SchedulerBuilder {
        SchedulerBuilder::default()
    }

    fn from_builder(b: SchedulerBuilder) -> Self {
        let (stopped, _) = tokio::sync::watch::channel(true);
        Scheduler {
            inner: Arc::new(Inner {
                timezone: b.timezone,
                defaults: b.defaults,
                config: b.config,
                clock: b.clock,
                owner: b.owner,
                triggers: b.triggers,
                events: EventBus::new(),
                tasks: RwLock::new(b.tasks),
                stores: RwLock::new(b.stores),
                executors: RwLock::new(b.executors),
                state: Mutex::new(SchedulerState::Stopped),
                pending: pending::PendingJobs::default(),
                wake: Notify::new(),
                planned_pass: std::sync::atomic::AtomicI64::new(i64::MAX),
                run: Mutex::new(None),
                runtime: Mutex::new(None),
                store_retry: Mutex::new(HashMap::new()),
                stopped,
                unreleased: Mutex::new(HashMap::new()),
                unstarted: Mutex::new(HashMap::new()),
                active: Mutex::new(HashMap::new()),
                outcomes: Mutex::new(None),
                ledger_task: Mutex::new(None),
                finished: Mutex::new(HashMap::new()),
                flush_lock: tokio::sync::Mutex::new(()),
                prune_lock: tokio::sync::Mutex::new(()),
                retries: Mutex::new(HashMap::new()),
                held: Mutex::new(HashMap::new()),
                passed_over: Mutex::new(passed_over::PassedOver::default()),
                decoded: Mutex::new(decoded_cache::DecodedCache::default()),
                watchers: Mutex::new(HashMap::new()),
                watched: Mutex::new(HashSet::new()),
                instance: uuid::Uuid::new_v4().simple().to_string(),
                node: Mutex::new(None),
                offset_warned: Mutex::new(HashSet::new()),
                offsets: Mutex::new(HashMap::new()),
                last_pass: Mutex::new(None),
            }),
        }
    }

    /// The current state.
    pub fn state(&self) -> SchedulerState {
        self.inner.state()
    }

    /// Whether the scheduler is started (running or paused).
    pub fn is_running(&self) -> bool {
        self.state() != SchedulerState::Stopped
    }

    /// Whether this is a client-only scheduler
    /// ([`SchedulerBuilder::build_client`]): it manages jobs but runs none.
    pub fn is_client(&self) -> bool {
        self.inner.config.client
    }

    fn not_client(&self, what: &str) -> Result<()> {
        if self.is_client() {
            return Err(Error::Config(format!(
                "{what}(): this scheduler was built with build_client() and runs no jobs; the schedulers running on the same store do"
            )));
        }
        Ok(())
    }

    /// The schedulers registered in this scheduler's stores (this one
    /// included while it runs), with their host, pid, last heartbeat, expiry
    /// and clock offset to the store; lapsed registrations are kept for a day.
    ///
    /// # Errors
    /// A store's error.
    pub async fn nodes(&self) -> Result<Vec<crate::node::NodeRecord>> {
        self.inner.nodes().await
    }

    /// Builds a trigger from its JSON form with this scheduler's registry
    /// (built-in and registered custom types), as it would be stored.
    ///
    /// # Errors
    /// [`Error::InvalidTrigger`] naming the field that is wrong.
    pub fn parse_trigger(&self, json: &serde_json::Value) -> Result<Box<dyn Trigger>> {
        self.inner.triggers.parse(json)
    }

    /// Asks every job store for its earliest next run time (bounded by
    /// `timeout`) and reports, per store alias, whether it answered.
    pub async fn check_stores(&self, timeout: Duration) -> Vec<(String, Result<()>)> {
        let mut out = Vec::new();
        for (alias, store) in self.inner.stores() {
            let result = match tokio::time::timeout(timeout, store.get_next_run_time(&[])).await {
                Ok(r) => r.map(|_| ()),
                Err(_) => Err(Error::Store {
                    store: "timeout",
                    temporary: true,
                    source: format!("no answer within {timeout:?}").into(),
                }),
            };
            out.push((alias, result));
        }
        out
    }

    /// The names of the registered tasks, sorted.
    pub fn task_names(&self) -> Vec<String> {
        read(&self.inner.tasks).names()
    }

    /// When the run loop last finished a pass over the stores (`None` before
    /// the first pass, and always on a client).
    pub fn last_pass(&self) -> Option<DateTime<Utc>> {
        *lock(&self.inner.last_pass)
    }

    /// This scheduler's lease owner id.
    pub fn owner_id(&self) -> &OwnerId {
        &self.inner.owner
    }

    /// The default time zone for triggers.
    pub fn timezone(&self) -> Tz {
        self.inner.timezone
    }

    /// The scheduler's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }
}
