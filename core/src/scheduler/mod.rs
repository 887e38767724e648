//! The scheduler: job API, run loop and run modes.

mod builder;
mod decoded_cache;
mod ledger;
mod modes;
mod nodes;
mod passed_over;
mod policy;
mod run_loop;
mod spec;

use std::collections::{HashMap, HashSet};
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
pub use spec::{Job, JobChanges, JobListing, JobSpec, OnConflict, UnreadableJob};

use spec::Decoded;

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

struct Pending {
    record: Decoded,
    jobstore: String,
    upsert: Upsert,
}

/// A change to a job's content and next run time, applied by [`Scheduler::edit`].
type Edit<'a> = dyn FnMut(&mut JobData, &mut Option<DateTime<Utc>>) -> Result<()> + Send + 'a;

/// How many times a job edit is read and tried again after another writer
/// changed the job first (with a short random pause between tries).
const EDIT_TRIES: u32 = 32;

/// A pause of 0–`2^min(tries, 5)` ms before an edit is tried again, so that
/// writers racing on one job spread out.
async fn edit_backoff(tries: u32) {
    let max = 1u64 << tries.min(5);
    tokio::time::sleep(std::time::Duration::from_micros(fastrand::u64(
        0..=max * 1000,
    )))
    .await;
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

/// How a prepared job meets a stored job with the same id.
#[derive(Debug, Clone, Default)]
struct Upsert {
    on_conflict: OnConflict,
    /// Whether the spec set the next run time itself.
    explicit_next: bool,
    /// The trigger prepared at a much later `now`: where its JSON differs from
    /// the record's, the value depends on when the job was added (an
    /// interval's start), so a stored trigger may differ there and still be
    /// the same schedule. `None` when the trigger cannot be re-read.
    later_trigger: Option<serde_json::Value>,
    /// The job's inline closure, registered once the job is written.
    inline: Option<TaskFn>,
}

/// Whether `stored` is the schedule `new` describes, where `later` marks (by
/// differing from `new`) the parts that depend on the time the job was added.
fn same_schedule(
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
    pending: Mutex<Vec<Pending>>,
    pub(crate) wake: Notify,
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
    pub(crate) watched: Mutex<std::collections::HashSet<String>>,
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
    ) -> Result<(String, Arc<dyn Executor>)> {
        let execs = read(&self.executors);
        if let Some(alias) = &options.executor {
            return execs
                .iter()
                .find(|(a, _)| a == alias)
                .map(|(a, e)| (a.clone(), Arc::clone(e)))
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
            .map(|(a, e)| (a.clone(), Arc::clone(e)))
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
        let Decoded { record, data } = job;
        let (desc, tz) = match self.triggers.parse(&data.trigger) {
            Ok(t) => (t.describe(), t.timezone().unwrap_or(self.timezone)),
            Err(e) => (format!("<unreadable trigger: {e}>"), self.timezone),
        };
        Job {
            record,
            data,
            jobstore: jobstore.to_string(),
            trigger_description: desc,
            timezone: tz,
            pending,
        }
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
                pending: Mutex::new(Vec::new()),
                wake: Notify::new(),
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
                watched: Mutex::new(std::collections::HashSet::new()),
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

    /// Starts processing jobs on the current tokio runtime.
    ///
    /// # Errors
    /// [`Error::AlreadyRunning`]; [`Error::Config`] outside a tokio runtime; a
    /// store's or executor's start error; a pending job that cannot be stored
    /// (it stays pending and the scheduler stays stopped).
    pub async fn start(&self) -> Result<()> {
        self.start_inner(false).await
    }

    /// Starts with job processing paused (call [`resume`](Scheduler::resume) to begin).
    ///
    /// # Errors
    /// As [`start`](Scheduler::start).
    pub async fn start_paused(&self) -> Result<()> {
        self.start_inner(true).await
    }

    async fn start_inner(&self, paused: bool) -> Result<()> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Config(
                "start() must be called inside a tokio runtime; use BackgroundScheduler or run_blocking() from synchronous code".into(),
            )
        })?;
        {
            let mut state = lock(&self.inner.state);
            if *state != SchedulerState::Stopped {
                return Err(Error::AlreadyRunning);
            }
            // Mark as starting so concurrent start() calls fail.
            *state = SchedulerState::Paused;
        }
        if self.is_client() {
            if let Err(e) = self.bring_up(&handle).await {
                *lock(&self.inner.state) = SchedulerState::Stopped;
                return Err(e);
            }
            *lock(&self.inner.state) = SchedulerState::Running;
            *lock(&self.inner.runtime) = Some(handle);
            self.inner.stopped.send_replace(false);
            self.inner.emit(Event::SchedulerStarted);
            return Ok(());
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *lock(&self.inner.outcomes) = Some(tx);
        let mut result = self.bring_up(&handle).await;
        if result.is_ok() {
            result = self.inner.register_node().await;
        }
        if let Err(e) = result {
            *lock(&self.inner.outcomes) = None;
            *lock(&self.inner.state) = SchedulerState::Stopped;
            return Err(e);
        }
        let ledger_token = CancellationToken::new();
        let ledger_join = handle.spawn(ledger::run(
            Arc::clone(&self.inner),
            ledger_token.clone(),
            rx,
        ));
        *lock(&self.inner.ledger_task) = Some((ledger_token, ledger_join));
        *lock(&self.inner.state) = if paused {
            SchedulerState::Paused
        } else {
            SchedulerState::Running
        };
        *lock(&self.inner.runtime) = Some(handle.clone());
        let token = CancellationToken::new();
        let inner = Arc::clone(&self.inner);
        let join = handle.spawn(run_loop::run(inner, token.clone()));
        *lock(&self.inner.run) = Some((token, join));
        self.inner.stopped.send_replace(false);
        self.inner.emit(Event::SchedulerStarted);
        if paused {
            self.inner.emit(Event::SchedulerPaused);
        }
        Ok(())
    }

    async fn bring_up(&self, handle: &tokio::runtime::Handle) -> Result<()> {
        if !self.is_client() {
            for (alias, e) in read(&self.inner.executors).iter() {
                e.start(self.executor_context(alias, handle))?;
            }
        }
        for (_, s) in self.inner.stores() {
            s.start().await?;
        }
        let pending: Vec<Pending> = std::mem::take(&mut *lock(&self.inner.pending));
        let mut iter = pending.into_iter();
        while let Some(p) = iter.next() {
            match self.store_job(&p.record, &p.jobstore, &p.upsert).await {
                // A job declared `if_absent` whose stored copy is unreadable
                // is kept as stored (and reported when claimed), not a
                // reason to refuse to start.
                Err(Error::UnreadableJob { id, reason })
                    if p.upsert.on_conflict == OnConflict::Keep =>
                {
                    tracing::warn!(job_id = %id, jobstore = %p.jobstore, %reason, "stored job kept as it is, though unreadable");
                    continue;
                }
                Err(e) => {
                    let mut back = lock(&self.inner.pending);
                    back.push(p);
                    back.extend(iter);
                    return Err(e);
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }

    fn executor_context(&self, alias: &str, handle: &tokio::runtime::Handle) -> ExecutorContext {
        ExecutorContext {
            alias: alias.to_string(),
            events: self.inner.events.clone(),
            clock: Arc::clone(&self.inner.clock),
            runtime: handle.clone(),
            outcomes: lock(&self.inner.outcomes).clone(),
        }
    }

    /// Stops the loop, shuts executors down (waiting for running jobs when
    /// `wait`), and closes stores. Listeners have seen every event when it returns.
    ///
    /// # Errors
    /// [`Error::NotRunning`] when not started.
    pub async fn shutdown(&self, wait: bool) -> Result<()> {
        {
            let mut state = lock(&self.inner.state);
            if *state == SchedulerState::Stopped {
                return Err(Error::NotRunning);
            }
            *state = SchedulerState::Stopped;
        }
        let run = lock(&self.inner.run).take();
        if let Some((token, join)) = run {
            token.cancel();
            let _ = join.await;
        }
        let execs: Vec<_> = if self.is_client() {
            Vec::new()
        } else {
            read(&self.inner.executors)
                .iter()
                .map(|(_, e)| Arc::clone(e))
                .collect()
        };
        for e in execs {
            e.shutdown(wait).await;
        }
        // Record what finished (and what was abandoned) before closing the stores.
        *lock(&self.inner.outcomes) = None;
        let ledger = lock(&self.inner.ledger_task).take();
        if let Some((token, join)) = ledger {
            token.cancel();
            let _ = join.await;
        }
        self.inner.deregister_node().await;
        // Claims of a batch still unstarted lapse on their own.
        lock(&self.inner.unstarted).clear();
        for (alias, s) in self.inner.stores() {
            if let Err(e) = s.shutdown().await {
                tracing::warn!(jobstore = %alias, error = %e, "job store shutdown failed");
            }
        }
        self.inner.emit(Event::SchedulerShutdown);
        self.inner.events.flush().await;
        self.inner.stopped.send_replace(true);
        Ok(())
    }

    /// Completes when the scheduler is shut down.
    pub async fn stopped(&self) {
        let mut rx = self.inner.stopped.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Pauses job processing (jobs keep their schedules; missed runs follow misfire rules on resume).
    ///
    /// # Errors
    /// [`Error::NotRunning`] when not started.
    pub fn pause(&self) -> Result<()> {
        self.not_client("pause")?;
        let mut state = lock(&self.inner.state);
        match *state {
            SchedulerState::Stopped => Err(Error::NotRunning),
            SchedulerState::Paused => Ok(()),
            SchedulerState::Running => {
                *state = SchedulerState::Paused;
                drop(state);
                self.inner.emit(Event::SchedulerPaused);
                self.inner.wake.notify_one();
                Ok(())
            }
        }
    }

    /// Resumes job processing.
    ///
    /// # Errors
    /// [`Error::NotRunning`] when not started.
    pub fn resume(&self) -> Result<()> {
        self.not_client("resume")?;
        let mut state = lock(&self.inner.state);
        match *state {
            SchedulerState::Stopped => Err(Error::NotRunning),
            SchedulerState::Running => Ok(()),
            SchedulerState::Paused => {
                *state = SchedulerState::Running;
                drop(state);
                self.inner.emit(Event::SchedulerResumed);
                self.inner.wake.notify_one();
                Ok(())
            }
        }
    }

    /// Wakes the loop to look for due jobs now (e.g. after another process added jobs).
    pub fn wakeup(&self) {
        self.inner.wake.notify_one();
    }

    /// Registers a listener for the events in `mask`. Listeners run on a
    /// dedicated thread; a panicking listener is logged and the others still run.
    pub fn add_listener(&self, mask: EventMask, listener: impl Listener) -> ListenerId {
        self.inner.events.add_listener(mask, listener)
    }

    /// Removes a listener; returns whether it was registered.
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        self.inner.events.remove_listener(id)
    }

    /// An async stream of every event from now on (a lagging subscriber skips events).
    pub fn subscribe(&self) -> BoxStream<'static, Event> {
        self.inner.events.subscribe()
    }

    /// The event bus (for executors and tools).
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// Builds the record for a job spec, validating task, executor and trigger.
    fn prepare(
        &self,
        spec: JobSpec,
        store: &dyn JobStore,
        now: DateTime<Utc>,
    ) -> Result<(Decoded, String, Upsert)> {
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
        let jobstore = jobstore.unwrap_or_else(|| DEFAULT_STORE.to_string());
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
                        "job '{id}': an inline closure cannot be stored in job store '{jobstore}' ({}), which persists jobs; register the function with .task(\"name\", ...) on the builder and use JobSpec::new(\"name\", trigger)",
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
            None => match trigger.try_next_fire_time(None, now)? {
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
        let data = JobData {
            task: task_name,
            trigger: trigger.to_json(),
            args,
            options,
        };
        let record = Decoded::encoded(JobRecord::new(id, JobContent::from_stored(""), next), data);
        let upsert = Upsert {
            on_conflict,
            explicit_next,
            later_trigger,
            inline,
        };
        Ok((record, jobstore, upsert))
    }

    /// Stores a prepared job, meeting a stored one with the same id as `upsert`
    /// says; returns the job as stored.
    async fn store_job(&self, record: &Decoded, alias: &str, upsert: &Upsert) -> Result<Decoded> {
        // An inline closure is in place before the job can be claimed, and
        // the one before it comes back when the job was not written.
        let previous = upsert
            .inline
            .as_ref()
            .map(|f| self.inner.swap_task(&record.data.task, Some(f.clone())));
        let result = self.write_job(record, alias, upsert).await;
        if let Some(previous) = previous {
            if !matches!(result, Ok((_, true))) {
                self.inner.swap_task(&record.data.task, previous);
            }
        }
        result.map(|(stored, _)| stored)
    }

    /// Writes a prepared job as `upsert` says; returns the job as stored and
    /// whether this call's job took effect (added or replaced, not kept).
    async fn write_job(
        &self,
        job: &Decoded,
        alias: &str,
        upsert: &Upsert,
    ) -> Result<(Decoded, bool)> {
        let store = self.inner.store(alias)?;
        let id = &job.record.id;
        // A job removed between a failed insert and the lookup: insert again.
        for _ in 0..EDIT_TRIES {
            match store.add_job(&job.record).await {
                Ok(()) => {
                    self.announce_added(id, alias);
                    return Ok((job.clone(), true));
                }
                Err(Error::ConflictingId { .. }) if upsert.on_conflict != OnConflict::Fail => {}
                Err(e) => return Err(e),
            }
            let Some(stored) = store.lookup_job(id).await? else {
                continue;
            };
            if upsert.on_conflict == OnConflict::Keep {
                return Ok((Decoded::decode(stored)?, false));
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
                            true,
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
            self.announce_added(id, alias);
            return Ok((new, true));
        }
        // Every try met another writer in between.
        Err(Error::JobChanged {
            id: id.to_string(),
            read: 0,
        })
    }

    fn announce_added(&self, id: &JobId, alias: &str) {
        self.inner.emit(Event::JobAdded {
            job_id: id.clone(),
            jobstore: alias.to_string(),
        });
        self.inner.wake.notify_one();
    }

    /// Adds a job. Before [`start`](Scheduler::start) the job is kept pending and
    /// stored when the scheduler starts.
    ///
    /// # Errors
    /// [`Error::ConflictingId`] (unless `replace_existing` or `if_absent`),
    /// [`Error::UnknownTask`], [`Error::UnknownStore`], [`Error::UnknownExecutor`],
    /// [`Error::InvalidJob`] (inline closure on a persistent store, trigger that
    /// never fires), store errors.
    pub async fn add_job(&self, spec: JobSpec) -> Result<Job> {
        let alias = spec
            .jobstore
            .clone()
            .unwrap_or_else(|| DEFAULT_STORE.to_string());
        let store = self.inner.store(&alias)?;
        let now = self.inner.clock.now();
        let (record, alias, upsert) = self.prepare(spec, store.as_ref(), now)?;
        if self.state() == SchedulerState::Stopped {
            let mut pending = lock(&self.inner.pending);
            if let Some(pos) = pending
                .iter()
                .position(|p| p.record.record.id == record.record.id && p.jobstore == alias)
            {
                match upsert.on_conflict {
                    OnConflict::Fail => {
                        return Err(Error::ConflictingId {
                            id: record.record.id.to_string(),
                        })
                    }
                    OnConflict::Keep => {
                        let kept = pending[pos].record.clone();
                        drop(pending);
                        return Ok(self.inner.job_view(kept, &alias, true));
                    }
                    OnConflict::Replace => {
                        pending.remove(pos);
                    }
                }
            }
            pending.push(Pending {
                record: record.clone(),
                jobstore: alias.clone(),
                upsert,
            });
            drop(pending);
            return Ok(self.inner.job_view(record, &alias, true));
        }
        let stored = self.store_job(&record, &alias, &upsert).await?;
        Ok(self.inner.job_view(stored, &alias, false))
    }

    /// Adds many jobs to one store in one batch (all or none).
    ///
    /// # Errors
    /// As [`add_job`](Scheduler::add_job); jobs must all name the same store.
    /// `replace_existing` is not supported in a batch.
    pub async fn add_jobs(&self, specs: Vec<JobSpec>) -> Result<Vec<JobId>> {
        let now = self.inner.clock.now();
        let mut records = Vec::with_capacity(specs.len());
        let mut inlines = Vec::with_capacity(specs.len());
        let mut alias: Option<String> = None;
        for spec in specs {
            let a = spec
                .jobstore
                .clone()
                .unwrap_or_else(|| DEFAULT_STORE.to_string());
            match &alias {
                Some(x) if *x != a => {
                    return Err(Error::InvalidJob(format!(
                        "add_jobs: all jobs must go to one store (found '{x}' and '{a}')"
                    )))
                }
                _ => alias = Some(a.clone()),
            }
            let store = self.inner.store(&a)?;
            let (record, _, upsert) = self.prepare(spec, store.as_ref(), now)?;
            if upsert.on_conflict != OnConflict::Fail {
                return Err(Error::InvalidJob(
                    "add_jobs does not support replace_existing or if_absent; use add_job".into(),
                ));
            }
            inlines.push(upsert.inline.map(|f| (record.data.task.clone(), f)));
            records.push(record);
        }
        let Some(alias) = alias else {
            return Ok(Vec::new());
        };
        let ids: Vec<JobId> = records.iter().map(|r| r.record.id.clone()).collect();
        if self.state() == SchedulerState::Stopped {
            let mut pending = lock(&self.inner.pending);
            for (record, inline) in records.into_iter().zip(inlines) {
                pending.push(Pending {
                    record,
                    jobstore: alias.clone(),
                    upsert: Upsert {
                        inline: inline.map(|(_, f)| f),
                        ..Upsert::default()
                    },
                });
            }
            return Ok(ids);
        }
        let store = self.inner.store(&alias)?;
        // Closures are in place before the jobs can be claimed; the ones
        // before them come back if the batch is refused.
        let previous: Vec<(String, Option<TaskFn>)> = inlines
            .into_iter()
            .flatten()
            .map(|(task, f)| {
                let before = self.inner.swap_task(&task, Some(f));
                (task, before)
            })
            .collect();
        let records: Vec<JobRecord> = records.into_iter().map(|r| r.record).collect();
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
        self.inner.wake.notify_one();
        Ok(ids)
    }

    /// Finds a job: in `store` when given, else in every store (pending jobs included).
    async fn find(
        &self,
        id: &JobId,
        store: Option<&str>,
    ) -> Result<Option<(String, JobRecord, bool)>> {
        {
            let pending = lock(&self.inner.pending);
            if let Some(p) = pending
                .iter()
                .find(|p| p.record.record.id == *id && store.is_none_or(|s| s == p.jobstore))
            {
                return Ok(Some((p.jobstore.clone(), p.record.record.clone(), true)));
            }
        }
        let stores = match store {
            Some(a) => vec![(a.to_string(), self.inner.store(a)?)],
            None => self.inner.stores(),
        };
        for (alias, s) in stores {
            if let Some(r) = s.lookup_job(id).await? {
                return Ok(Some((alias, r, false)));
            }
        }
        Ok(None)
    }

    async fn find_required(
        &self,
        id: &JobId,
        store: Option<&str>,
    ) -> Result<(String, JobRecord, bool)> {
        self.find(id, store)
            .await?
            .ok_or_else(|| Error::JobNotFound { id: id.to_string() })
    }

    /// Writes a modified record back (to the pending list or its store).
    async fn write_back(&self, alias: &str, record: Decoded, pending: bool) -> Result<Job> {
        let id = &record.record.id;
        if pending {
            let mut list = lock(&self.inner.pending);
            if let Some(p) = list
                .iter_mut()
                .find(|p| p.record.record.id == *id && p.jobstore == alias)
            {
                p.record = record.clone();
            }
        } else {
            self.inner.store(alias)?.update_job(&record.record).await?;
            self.inner.emit(Event::JobModified {
                job_id: id.clone(),
                jobstore: alias.to_string(),
            });
            self.inner.wake.notify_one();
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
            Some((alias, rec, pending)) => Ok(Some(self.inner.job_view(
                Decoded::readable(rec)?,
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
            let mut records: Vec<(Decoded, bool)> = {
                let pending = lock(&self.inner.pending);
                pending
                    .iter()
                    .filter(|p| p.jobstore == alias)
                    .map(|p| (p.record.clone(), true))
                    .collect()
            };
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
                    .try_next_fire_time(None, now)?
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
            let (alias, mut rec, pending) = self.find_required(id, store).await?;
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
            .try_next_fire_time(None, now)?
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
            let (alias, rec, pending) = self.find_required(&id, store).await?;
            let mut job = Decoded::decode(rec)?;
            let now = self.inner.clock.now();
            let trigger = self.inner.parse_trigger(&job.data)?;
            match trigger.try_next_fire_time(None, now)? {
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
        let (alias, rec, pending) = self.find_required(&id, store).await?;
        if pending {
            lock(&self.inner.pending)
                .retain(|p| !(p.record.record.id == id && p.jobstore == alias));
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
            lock(&self.inner.pending).retain(|p| p.jobstore != alias);
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
        let (alias, rec, _) = self.find_required(&id, store).await?;
        let data = rec.decode()?;
        let task = self
            .inner
            .task(&data.task)
            .ok_or_else(|| Error::UnknownTask {
                task: data.task.clone(),
            })?;
        let (_, executor) = self.inner.executor_for(&data.options, &task)?;
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
        let (alias, _, _) = self.find_required(&id, store).await?;
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

    /// Adds a job store while the scheduler exists (started stores start now).
    ///
    /// # Errors
    /// [`Error::Config`] when the alias is taken; the store's start error.
    pub async fn add_jobstore(&self, alias: impl Into<String>, store: impl JobStore) -> Result<()> {
        let alias = alias.into();
        if read(&self.inner.stores).iter().any(|(a, _)| *a == alias) {
            return Err(Error::Config(format!(
                "job store alias '{alias}' is already in use"
            )));
        }
        if self.is_running() {
            store.start().await?;
        }
        let store: Arc<dyn JobStore> = Arc::new(crate::store::Traced(Arc::new(store)));
        write(&self.inner.stores).push((alias.clone(), Arc::clone(&store)));
        let stop = lock(&self.inner.run)
            .as_ref()
            .map(|(token, _)| token.clone());
        if let Some(stop) = stop {
            run_loop::spawn_watcher(&self.inner, alias.clone(), store, stop);
        }
        self.inner.emit(Event::JobStoreAdded { alias });
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Removes a job store (its jobs stay in it, unscheduled by this scheduler).
    ///
    /// # Errors
    /// [`Error::UnknownStore`].
    pub async fn remove_jobstore(&self, alias: &str) -> Result<()> {
        let store =
            {
                let mut stores = write(&self.inner.stores);
                let pos = stores.iter().position(|(a, _)| a == alias).ok_or_else(|| {
                    Error::UnknownStore {
                        alias: alias.to_string(),
                        hint: configured(stores.iter().map(|(a, _)| a)),
                    }
                })?;
                stores.remove(pos).1
            };
        if let Some(w) = lock(&self.inner.watchers).remove(alias) {
            w.abort();
        }
        lock(&self.inner.watched).remove(alias);
        lock(&self.inner.decoded).forget_store(alias);
        if self.is_running() {
            if let Err(e) = store.shutdown().await {
                tracing::warn!(jobstore = %alias, error = %e, "job store shutdown failed");
            }
        }
        self.inner.emit(Event::JobStoreRemoved {
            alias: alias.to_string(),
        });
        Ok(())
    }

    /// Adds an executor (started now if the scheduler runs).
    ///
    /// # Errors
    /// [`Error::Config`] when the alias is taken; the executor's start error.
    pub fn add_executor(&self, alias: impl Into<String>, executor: impl Executor) -> Result<()> {
        let alias = alias.into();
        if read(&self.inner.executors).iter().any(|(a, _)| *a == alias) {
            return Err(Error::Config(format!(
                "executor alias '{alias}' is already in use"
            )));
        }
        let runtime = lock(&self.inner.runtime).clone();
        if let (true, Some(h)) = (self.is_running(), runtime) {
            executor.start(self.executor_context(&alias, &h))?;
        }
        write(&self.inner.executors).push((alias.clone(), Arc::new(executor)));
        self.inner.emit(Event::ExecutorAdded { alias });
        Ok(())
    }

    /// Removes an executor, waiting for its running jobs when `wait`.
    ///
    /// # Errors
    /// [`Error::UnknownExecutor`].
    pub async fn remove_executor(&self, alias: &str, wait: bool) -> Result<()> {
        let exec = {
            let mut execs = write(&self.inner.executors);
            let pos = execs.iter().position(|(a, _)| a == alias).ok_or_else(|| {
                Error::UnknownExecutor {
                    alias: alias.to_string(),
                    hint: configured(execs.iter().map(|(a, _)| a)),
                }
            })?;
            execs.remove(pos).1
        };
        exec.shutdown(wait).await;
        self.inner.emit(Event::ExecutorRemoved {
            alias: alias.to_string(),
        });
        Ok(())
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
