//! The job store seam.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::job::{JobId, JobRecord, OwnerId, Release, ReleaseOutcome};
use crate::node::NodeRecord;
use crate::run::{NewRun, RunFinish, RunId, RunInsert, RunQuery, RunRecord};

/// What a store can promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreCapabilities {
    /// Jobs survive a restart of the process (inline closures are refused).
    pub persistent: bool,
    /// Several processes may use the store at once (the scheduler bounds its
    /// idle sleep so that jobs added elsewhere are noticed).
    pub shared: bool,
}

impl StoreCapabilities {
    /// Capabilities of a store that lives in one process's memory.
    pub const IN_MEMORY: StoreCapabilities = StoreCapabilities {
        persistent: false,
        shared: false,
    };

    /// Capabilities of a database shared by several processes.
    pub const SHARED_PERSISTENT: StoreCapabilities = StoreCapabilities {
        persistent: true,
        shared: true,
    };
}

/// How many jobs a store holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Jobs with a next run time.
    pub scheduled: u64,
    /// Paused jobs (no next run time).
    pub paused: u64,
}

/// Persists job records and hands out due work.
///
/// # Contract
/// Every store meets these rules; the conformance suite in
/// `sundial-integration-tests` checks each one against every store.
///
/// - `add_job` inserts a new record with `version` 0 and no lease; an existing id
///   fails with [`Error::ConflictingId`](crate::Error::ConflictingId) and changes nothing.
/// - `add_jobs` inserts several records; it fails with `ConflictingId` if any id
///   exists (in the store or twice in the batch), and then inserts none of them.
/// - `update_job` replaces task, trigger, args, options and `next_run_time` of an
///   existing record, keeps its lease and increments its version, when the
///   stored version equals `job.version` (a compare-and-swap on the version the
///   caller read); otherwise it fails with
///   [`Error::JobChanged`](crate::Error::JobChanged) and changes nothing. A
///   missing id fails with [`Error::JobNotFound`](crate::Error::JobNotFound).
/// - `remove_job` deletes one record (`JobNotFound` if missing); `remove_all_jobs`
///   deletes every record.
/// - `lookup_job` returns the record exactly as stored (every field, times to the
///   microsecond), or `None`.
/// - `get_all_jobs` returns every record ordered by `next_run_time` ascending,
///   paused jobs (`None`) last, ties broken by id.
/// - `get_next_run_time` returns the earliest instant at which `acquire_due` could
///   return a job: the minimum over unpaused jobs of `next_run_time`, or of the
///   lease expiry when a lease ends later. `None` when no job is unpaused.
/// - `acquire_due(now, owner, lease, limit)` atomically claims up to `limit` jobs
///   with `next_run_time <= now` that are unleased or whose lease expired
///   (`until <= now`), in `next_run_time` order (ties by id). Each claimed record
///   gets `lease = { owner, until: now + lease }` and `version + 1`, and is returned
///   as stored after the claim. No job is ever returned to two concurrent callers,
///   across handles and processes. Paused jobs are never returned.
/// - `release(owner, id, version, outcome)` hands a claimed job back. When the job
///   is gone it returns [`ReleaseOutcome::Gone`]. When the lease is not held by
///   `owner` it fails with [`Error::LeaseLost`](crate::Error::LeaseLost) and changes
///   nothing. When the record's version is not `version` (it was updated while
///   claimed) it drops the lease only and returns [`ReleaseOutcome::Superseded`].
///   Otherwise it applies `outcome` (`Reschedule` sets `next_run_time`, `Remove`
///   deletes, `Unclaim` leaves the schedule), drops the lease, increments the
///   version and returns [`ReleaseOutcome::Applied`].
/// - `release_many` behaves as `release` applied to each item in order.
/// - `start` is idempotent (creates schema, loads scripts); `shutdown` releases
///   connections.
/// - `watch_changes` (optional; the default has no channel) yields an item soon
///   after another handle added, updated or released a job with a next run
///   time, so that a sleeping scheduler looks again at once; it need not report
///   the handle's own writes, and may report more changes than happened.
///
/// ## Run ledger
/// - `insert_runs` inserts each run record unless one with the same
///   (job id, scheduled time, attempt) exists, in which case it writes nothing
///   for that run and reports [`RunInsert::Duplicate`]; of two concurrent callers
///   (handles, processes) inserting the same slot exactly one gets `Inserted`.
///   Before inserting a job's `running` runs that carry `max_instances`, the store
///   counts that job's `running` records (those stored before the call); when the
///   count reaches the limit, the runs are stored as `skipped` instead, with no
///   heartbeat and `finished_at = started_at`, and reported `Inserted(Skipped)`.
///   Times are kept to the microsecond; `error` is stored as given.
/// - `finish_runs(owner, ..)` sets state, `finished_at` and `error` and clears the
///   heartbeat of each listed run that `owner` holds and that is `running` or
///   `interrupted`; other runs are left alone. It returns how many it changed.
/// - `heartbeat_runs(owner, ids, until)` sets `heartbeat_until` of each listed
///   `running` run that `owner` holds; it returns how many it changed.
/// - `interrupt_lapsed(now, limit)` marks up to `limit` `running` runs whose
///   `heartbeat_until` is before `now` as `interrupted` (`finished_at = now`,
///   heartbeat cleared, error [`INTERRUPTED_ERROR`](crate::run::INTERRUPTED_ERROR))
///   and returns them as stored; a run is returned to one caller only.
/// - `query_runs` returns the runs that match the query, newest scheduled time
///   first, then highest attempt, at most `limit`.
/// - `prune_runs(before)` deletes runs scheduled before `before` that are not
///   `running`, and returns how many it deleted.
/// - `prune_job_runs(keep, before)` deletes, for each job, the runs that are
///   not `running`, are scheduled before `before`, and are not among the job's
///   `keep` newest runs (by scheduled time, then attempt; running runs count
///   among the newest); it returns how many it deleted.
/// - Removing jobs never removes their runs.
///
/// ## Node registry
/// - `upsert_node(node, now)` stores `node` under its owner id when no record
///   of that owner exists, when the stored record has the same `instance`, or
///   when the stored record's `expires_at` is not after `now`; otherwise it
///   writes nothing and returns the stored record. Of two concurrent callers
///   with different instances for one free owner id, exactly one succeeds.
/// - `list_nodes` returns every stored node record, ordered by owner id.
/// - `remove_node(owner, instance)` deletes the owner's record if its
///   instance matches; `prune_nodes(before)` deletes records whose `expires_at`
///   is before `before`.
///
/// # Errors
/// Backend failures are [`Error::Store`](crate::Error::Store) with
/// [`is_temporary`](crate::Error::is_temporary) set for connection problems, so the
/// scheduler backs off and retries.
#[async_trait]
pub trait JobStore: Send + Sync + fmt::Debug + 'static {
    /// The backend's name for messages: `memory`, `sqlite`, `postgres`, ...
    fn backend(&self) -> &'static str;

    /// What the store can promise.
    fn capabilities(&self) -> StoreCapabilities;

    /// Prepares the store (creates schema, connects); idempotent.
    async fn start(&self) -> Result<()> {
        Ok(())
    }

    /// Releases resources.
    async fn shutdown(&self) -> Result<()> {
        Ok(())
    }

    /// Inserts a new job.
    async fn add_job(&self, job: &JobRecord) -> Result<()>;

    /// Inserts several new jobs, all or none.
    async fn add_jobs(&self, jobs: &[JobRecord]) -> Result<()>;

    /// Replaces an existing job's content and schedule if its version is still
    /// `job.version` (lease kept, version bumped).
    async fn update_job(&self, job: &JobRecord) -> Result<()>;

    /// Deletes one job.
    async fn remove_job(&self, id: &JobId) -> Result<()>;

    /// Deletes every job.
    async fn remove_all_jobs(&self) -> Result<()>;

    /// Reads one job.
    async fn lookup_job(&self, id: &JobId) -> Result<Option<JobRecord>>;

    /// Reads every job, by next run time with paused jobs last.
    async fn get_all_jobs(&self) -> Result<Vec<JobRecord>>;

    /// How many jobs the store holds, scheduled and paused, counted where the
    /// jobs are (the default reads them all: stores override it).
    async fn count_jobs(&self) -> Result<JobCounts> {
        let mut counts = JobCounts::default();
        for job in self.get_all_jobs().await? {
            if job.next_run_time.is_some() {
                counts.scheduled += 1;
            } else {
                counts.paused += 1;
            }
        }
        Ok(counts)
    }

    /// The earliest instant at which a job other than those in `skip` may
    /// become claimable.
    async fn get_next_run_time(&self, skip: &[JobId]) -> Result<Option<DateTime<Utc>>>;

    /// Atomically claims due jobs for `owner`, passing over those in `skip`
    /// (jobs this scheduler cannot run, left for others for a while).
    async fn acquire_due(
        &self,
        now: DateTime<Utc>,
        owner: &OwnerId,
        lease: Duration,
        limit: usize,
        skip: &[JobId],
    ) -> Result<Vec<JobRecord>>;

    /// Hands a claimed job back with its outcome.
    async fn release(
        &self,
        owner: &OwnerId,
        id: &JobId,
        version: u64,
        outcome: Release,
    ) -> Result<ReleaseOutcome>;

    /// Records runs in the ledger, each once per (job, scheduled time, attempt).
    async fn insert_runs(&self, runs: &[NewRun]) -> Result<Vec<RunInsert>>;

    /// Writes the terminal state of runs `owner` holds.
    async fn finish_runs(&self, owner: &OwnerId, runs: &[RunFinish]) -> Result<u64>;

    /// Extends the heartbeat of running runs `owner` holds.
    async fn heartbeat_runs(
        &self,
        owner: &OwnerId,
        ids: &[RunId],
        until: DateTime<Utc>,
    ) -> Result<u64>;

    /// Marks running runs whose heartbeat lapsed as interrupted, and returns them.
    async fn interrupt_lapsed(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<RunRecord>>;

    /// Reads runs, newest first.
    async fn query_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>>;

    /// Deletes finished runs scheduled before `before`.
    async fn prune_runs(&self, before: DateTime<Utc>) -> Result<u64>;

    /// Deletes each job's finished runs scheduled before `before` beyond its
    /// `keep` newest runs.
    async fn prune_job_runs(&self, keep: usize, before: DateTime<Utc>) -> Result<u64>;

    /// Registers `node`, or renews its registration. When another instance
    /// holds a live registration under the same owner id (its `expires_at` is
    /// after `now`), writes nothing and returns that registration.
    async fn upsert_node(
        &self,
        node: &NodeRecord,
        now: DateTime<Utc>,
    ) -> Result<Option<NodeRecord>>;

    /// Every registered node, live or lapsed, ordered by owner id.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>>;

    /// Deletes the registration of `owner` if `instance` holds it.
    async fn remove_node(&self, owner: &OwnerId, instance: &str) -> Result<()>;

    /// Deletes registrations that lapsed before `before`; returns how many.
    async fn prune_nodes(&self, before: DateTime<Utc>) -> Result<u64>;

    /// The store server's clock, for measuring this process's offset to it;
    /// `None` when the store has no clock of its own (in-process stores).
    async fn server_time(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(None)
    }

    /// Hands several claimed jobs back at once (one round trip where the backend
    /// allows); the result has one entry per item, in order, each as `release`
    /// would return it. An outer error means the store failed as a whole.
    async fn release_many(
        &self,
        owner: &OwnerId,
        items: Vec<ReleaseItem>,
    ) -> Result<Vec<Result<ReleaseOutcome>>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let result = self
                .release(owner, &item.id, item.version, item.outcome)
                .await;
            out.push(release_entry(result)?);
        }
        Ok(out)
    }

    /// Subscribes to notices that other processes changed the store's jobs, so
    /// the scheduler wakes at once instead of at its next poll. `Ok(None)` when
    /// the store has no notification channel (the scheduler then polls). The
    /// stream ends when the channel is lost; the scheduler polls and subscribes
    /// again.
    async fn watch_changes(&self) -> Result<Option<ChangeStream>> {
        Ok(None)
    }
}

/// The error of an `update_job` that wrote nothing: [`Error::JobChanged`](crate::Error::JobChanged)
/// when the job exists (its version moved on), else [`Error::JobNotFound`](crate::Error::JobNotFound).
pub fn update_refused(job: &JobRecord, exists: bool) -> crate::Error {
    if exists {
        crate::Error::JobChanged {
            id: job.id.to_string(),
            read: job.version,
        }
    } else {
        crate::Error::JobNotFound {
            id: job.id.to_string(),
        }
    }
}

/// Notices that a store's jobs changed (see [`JobStore::watch_changes`]).
pub type ChangeStream = futures::stream::BoxStream<'static, ()>;

/// Sends a store's change notices off the write path while started:
/// [`signal`](Self::signal) costs a lock and an atomic operation and coalesces
/// with notices not yet sent; one background task sends them, one at a time.
#[derive(Debug, Default)]
pub struct ChangeNotifier {
    running: std::sync::Mutex<Option<(Arc<tokio::sync::Notify>, tokio::task::JoinHandle<()>)>>,
}

impl ChangeNotifier {
    /// Starts the sending task on the current tokio runtime, unless it runs;
    /// `send` publishes one notice (its errors are the store's to log).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start<F, Fut>(&self, send: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.is_some() {
            return;
        }
        let pending = Arc::new(tokio::sync::Notify::new());
        let wait = Arc::clone(&pending);
        let task = tokio::spawn(async move {
            loop {
                wait.notified().await;
                send().await;
            }
        });
        *running = Some((pending, task));
    }

    /// Asks for a notice to be sent soon (nothing when not started).
    pub fn signal(&self) {
        if let Some((pending, _)) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            pending.notify_one();
        }
    }

    /// Stops the sending task.
    pub fn stop(&self) {
        if let Some((_, task)) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

impl Drop for ChangeNotifier {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One job to hand back with [`JobStore::release_many`].
#[derive(Clone, Debug, PartialEq)]
pub struct ReleaseItem {
    /// The job id.
    pub id: JobId,
    /// The version returned by `acquire_due`.
    pub version: u64,
    /// What to do with the job.
    pub outcome: Release,
}

/// Implements `JobStore` for a type that dereferences to a store, passing
/// every call through `$wrap!(self, "operation", call)`.
macro_rules! forward_store {
    ([$($generics:tt)*] $ty:ty, $wrap:ident) => {
        #[deny(clippy::missing_trait_methods)]
        #[async_trait]
        impl<$($generics)*> JobStore for $ty {
            fn backend(&self) -> &'static str {
                (**self).backend()
            }
            fn capabilities(&self) -> StoreCapabilities {
                (**self).capabilities()
            }
            async fn start(&self) -> Result<()> {
                $wrap!(self, "start", (**self).start())
            }
            async fn shutdown(&self) -> Result<()> {
                $wrap!(self, "shutdown", (**self).shutdown())
            }
            async fn watch_changes(&self) -> Result<Option<ChangeStream>> {
                $wrap!(self, "watch_changes", (**self).watch_changes())
            }
            async fn add_job(&self, job: &JobRecord) -> Result<()> {
                $wrap!(self, "add_job", (**self).add_job(job))
            }
            async fn add_jobs(&self, jobs: &[JobRecord]) -> Result<()> {
                $wrap!(self, "add_jobs", (**self).add_jobs(jobs))
            }
            async fn update_job(&self, job: &JobRecord) -> Result<()> {
                $wrap!(self, "update_job", (**self).update_job(job))
            }
            async fn remove_job(&self, id: &JobId) -> Result<()> {
                $wrap!(self, "remove_job", (**self).remove_job(id))
            }
            async fn remove_all_jobs(&self) -> Result<()> {
                $wrap!(self, "remove_all_jobs", (**self).remove_all_jobs())
            }
            async fn lookup_job(&self, id: &JobId) -> Result<Option<JobRecord>> {
                $wrap!(self, "lookup_job", (**self).lookup_job(id))
            }
            async fn get_all_jobs(&self) -> Result<Vec<JobRecord>> {
                $wrap!(self, "get_all_jobs", (**self).get_all_jobs())
            }
            async fn count_jobs(&self) -> Result<JobCounts> {
                $wrap!(self, "count_jobs", (**self).count_jobs())
            }
            async fn get_next_run_time(&self, skip: &[JobId]) -> Result<Option<DateTime<Utc>>> {
                $wrap!(self, "get_next_run_time", (**self).get_next_run_time(skip))
            }
            async fn acquire_due(
                &self,
                now: DateTime<Utc>,
                owner: &OwnerId,
                lease: Duration,
                limit: usize,
                skip: &[JobId],
            ) -> Result<Vec<JobRecord>> {
                $wrap!(self, "acquire_due", (**self).acquire_due(now, owner, lease, limit, skip))
            }
            async fn release(
                &self,
                owner: &OwnerId,
                id: &JobId,
                version: u64,
                outcome: Release,
            ) -> Result<ReleaseOutcome> {
                $wrap!(self, "release", (**self).release(owner, id, version, outcome))
            }
            async fn release_many(
                &self,
                owner: &OwnerId,
                items: Vec<ReleaseItem>,
            ) -> Result<Vec<Result<ReleaseOutcome>>> {
                $wrap!(self, "release_many", (**self).release_many(owner, items))
            }
            async fn insert_runs(&self, runs: &[NewRun]) -> Result<Vec<RunInsert>> {
                $wrap!(self, "insert_runs", (**self).insert_runs(runs))
            }
            async fn finish_runs(&self, owner: &OwnerId, runs: &[RunFinish]) -> Result<u64> {
                $wrap!(self, "finish_runs", (**self).finish_runs(owner, runs))
            }
            async fn heartbeat_runs(
                &self,
                owner: &OwnerId,
                ids: &[RunId],
                until: DateTime<Utc>,
            ) -> Result<u64> {
                $wrap!(self, "heartbeat_runs", (**self).heartbeat_runs(owner, ids, until))
            }
            async fn interrupt_lapsed(
                &self,
                now: DateTime<Utc>,
                limit: usize,
            ) -> Result<Vec<RunRecord>> {
                $wrap!(self, "interrupt_lapsed", (**self).interrupt_lapsed(now, limit))
            }
            async fn query_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
                $wrap!(self, "query_runs", (**self).query_runs(query))
            }
            async fn prune_runs(&self, before: DateTime<Utc>) -> Result<u64> {
                $wrap!(self, "prune_runs", (**self).prune_runs(before))
            }
            async fn prune_job_runs(&self, keep: usize, before: DateTime<Utc>) -> Result<u64> {
                $wrap!(self, "prune_job_runs", (**self).prune_job_runs(keep, before))
            }
            async fn upsert_node(
                &self,
                node: &NodeRecord,
                now: DateTime<Utc>,
            ) -> Result<Option<NodeRecord>> {
                $wrap!(self, "upsert_node", (**self).upsert_node(node, now))
            }
            async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
                $wrap!(self, "list_nodes", (**self).list_nodes())
            }
            async fn remove_node(&self, owner: &OwnerId, instance: &str) -> Result<()> {
                $wrap!(self, "remove_node", (**self).remove_node(owner, instance))
            }
            async fn prune_nodes(&self, before: DateTime<Utc>) -> Result<u64> {
                $wrap!(self, "prune_nodes", (**self).prune_nodes(before))
            }
            async fn server_time(&self) -> Result<Option<DateTime<Utc>>> {
                $wrap!(self, "server_time", (**self).server_time())
            }
        }
    };
}

/// Awaits the call as it is.
macro_rules! plain {
    ($s:ident, $op:literal, $call:expr) => {
        $call.await
    };
}

/// Awaits the call in a `sundial.store` span.
macro_rules! traced {
    ($s:ident, $op:literal, $call:expr) => {
        traced_call($s.0.backend(), $op, $call).await
    };
}

forward_store!([T: JobStore + ?Sized] Arc<T>, plain);
forward_store!([T: JobStore + ?Sized] Box<T>, plain);
forward_store!([] Traced, traced);

/// A store whose every call runs in a `sundial.store` tracing span (at debug
/// level) with the backend, the operation, whether it succeeded and how many
/// rows it returned or changed; the scheduler wraps each store it is given.
#[derive(Clone)]
pub(crate) struct Traced(pub(crate) Arc<dyn JobStore>);

impl fmt::Debug for Traced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::ops::Deref for Traced {
    type Target = dyn JobStore;
    fn deref(&self) -> &(dyn JobStore + 'static) {
        &*self.0
    }
}

/// How many rows a store call returned or changed, where that means something.
trait Rows {
    fn rows(&self) -> Option<u64>;
}

impl Rows for () {
    fn rows(&self) -> Option<u64> {
        None
    }
}

impl Rows for u64 {
    fn rows(&self) -> Option<u64> {
        Some(*self)
    }
}

impl<T> Rows for Vec<T> {
    fn rows(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}

impl<T> Rows for Option<T> {
    fn rows(&self) -> Option<u64> {
        Some(u64::from(self.is_some()))
    }
}

impl Rows for JobCounts {
    fn rows(&self) -> Option<u64> {
        Some(self.scheduled + self.paused)
    }
}

impl Rows for ReleaseOutcome {
    fn rows(&self) -> Option<u64> {
        None
    }
}

async fn traced_call<T: Rows>(
    backend: &'static str,
    op: &'static str,
    call: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    use tracing::Instrument;
    // Without a subscriber, `log` stands in for tracing when it logs at debug.
    let log_stands_in =
        !tracing::dispatcher::has_been_set() && log::max_level() >= log::Level::Debug;
    // Nobody could record store calls (no subscriber takes debug spans, and
    // `log` would not stand in): no span is built at all.
    if tracing::level_filters::LevelFilter::current() < tracing::Level::DEBUG && !log_stands_in {
        return call.await;
    }
    let span = tracing::debug_span!(
        "sundial.store",
        backend,
        op,
        ok = tracing::field::Empty,
        rows = tracing::field::Empty,
    );
    // Nobody records store calls (no subscriber wants the span, and none is
    // set for `log` to stand in for): no span to enter on every poll.
    if span.is_disabled() && !log_stands_in {
        return call.await;
    }
    let result = call.instrument(span.clone()).await;
    span.record("ok", result.is_ok());
    if let Some(n) = result.as_ref().ok().and_then(Rows::rows) {
        span.record("rows", n);
    }
    result
}

/// Sorts records as `get_all_jobs` must return them: by next run time, paused last, then id.
pub fn sort_records(records: &mut [JobRecord]) {
    records.sort_by(run_order);
}

/// The listing order: by next run time, paused jobs last, ties by id.
pub fn run_order(a: &JobRecord, b: &JobRecord) -> std::cmp::Ordering {
    match (a.next_run_time, b.next_run_time) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.id.cmp(&b.id)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.id.cmp(&b.id),
    }
}

/// Turns one `release` result into a `release_many` entry: a lost lease is that
/// item's result; any other error fails the whole call.
pub fn release_entry(result: Result<ReleaseOutcome>) -> Result<Result<ReleaseOutcome>> {
    match result {
        Err(e @ crate::Error::LeaseLost { .. }) => Ok(Err(e)),
        Err(e) => Err(e),
        Ok(o) => Ok(Ok(o)),
    }
}

/// Converts a lease length to a chrono duration (saturating).
pub fn lease_duration(lease: Duration) -> chrono::Duration {
    chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}
