//! A job store wrapper that injects failures into calls to a real store: a
//! call can fail before reaching the store, or reach it (and be applied) and
//! then fail as if its reply had been lost. Everything else goes straight to
//! the wrapped store.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sundial::job::{JobId, JobRecord, OwnerId, Release, ReleaseOutcome};
use sundial::node::NodeRecord;
use sundial::run::{NewRun, RunFinish, RunId, RunInsert, RunQuery, RunRecord};
use sundial::store::{ChangeStream, JobCounts, JobStore, ReleaseItem, StoreCapabilities};
use sundial::{Error, Result};

/// Which call a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `insert_runs`: recording started slots.
    InsertRuns,
    /// `release_many`: handing claimed jobs back.
    ReleaseMany,
    /// `finish_runs`: recording outcomes.
    FinishRuns,
}

/// What happens to the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call fails without reaching the store.
    Before,
    /// The store applies the call, then the caller sees an error.
    ReplyLost,
}

/// A store whose calls fail as scripted.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn JobStore>,
    script: Mutex<VecDeque<(Call, Fault)>>,
    hit: Mutex<Vec<(Call, Fault)>>,
    held_poll: Mutex<Option<PollHold>>,
}

/// A `get_next_run_time` call that has read the store and waits to answer.
#[derive(Debug, Clone, Default)]
pub struct PollHold {
    /// Notified once the held call has read the store.
    pub read: Arc<tokio::sync::Notify>,
    /// Notify to let the held call answer what it read.
    pub answer: Arc<tokio::sync::Notify>,
}

impl FaultyStore {
    /// Wraps `inner`; the faults are used up in order, each by the next call
    /// of its kind.
    pub fn new(inner: Arc<dyn JobStore>, faults: impl IntoIterator<Item = (Call, Fault)>) -> Self {
        FaultyStore {
            inner,
            script: Mutex::new(faults.into_iter().collect()),
            hit: Mutex::new(Vec::new()),
            held_poll: Mutex::new(None),
        }
    }

    /// Holds the next `get_next_run_time` after it has read the store, until
    /// released: its answer then predates whatever changed meanwhile, as a
    /// slow reply would.
    pub fn hold_next_poll(&self) -> PollHold {
        let hold = PollHold::default();
        *self.held_poll.lock().unwrap_or_else(|p| p.into_inner()) = Some(hold.clone());
        hold
    }

    /// The faults injected so far.
    pub fn injected(&self) -> Vec<(Call, Fault)> {
        self.hit.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The next fault for `call`, if it is the next one scripted for it.
    fn take(&self, call: Call) -> Option<Fault> {
        let mut script = self.script.lock().unwrap_or_else(|p| p.into_inner());
        let pos = script.iter().position(|(c, _)| *c == call)?;
        let (c, f) = script.remove(pos)?;
        self.hit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((c, f));
        Some(f)
    }

    async fn faulty<T>(
        &self,
        call: Call,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.take(call) {
            None => op.await,
            Some(Fault::Before) => Err(injected(call, "before reaching the store")),
            Some(Fault::ReplyLost) => {
                op.await?;
                Err(injected(call, "after the store applied it (reply lost)"))
            }
        }
    }
}

fn injected(call: Call, when: &str) -> Error {
    Error::Store {
        store: "faulty",
        temporary: true,
        source: format!("injected failure of {call:?} {when}").into(),
    }
}

#[async_trait]
impl JobStore for FaultyStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }
    async fn start(&self) -> Result<()> {
        self.inner.start().await
    }
    async fn shutdown(&self) -> Result<()> {
        self.inner.shutdown().await
    }
    async fn watch_changes(&self) -> Result<Option<ChangeStream>> {
        self.inner.watch_changes().await
    }
    async fn add_job(&self, job: &JobRecord) -> Result<()> {
        self.inner.add_job(job).await
    }
    async fn add_jobs(&self, jobs: &[JobRecord]) -> Result<()> {
        self.inner.add_jobs(jobs).await
    }
    async fn update_job(&self, job: &JobRecord) -> Result<()> {
        self.inner.update_job(job).await
    }
    async fn remove_job(&self, id: &JobId) -> Result<()> {
        self.inner.remove_job(id).await
    }
    async fn remove_all_jobs(&self) -> Result<()> {
        self.inner.remove_all_jobs().await
    }
    async fn lookup_job(&self, id: &JobId) -> Result<Option<JobRecord>> {
        self.inner.lookup_job(id).await
    }
    async fn get_all_jobs(&self) -> Result<Vec<JobRecord>> {
        self.inner.get_all_jobs().await
    }
    async fn count_jobs(&self) -> Result<JobCounts> {
        self.inner.count_jobs().await
    }
    async fn get_next_run_time(&self, skip: &[JobId]) -> Result<Option<DateTime<Utc>>> {
        let answer = self.inner.get_next_run_time(skip).await;
        let hold = self
            .held_poll
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(hold) = hold {
            hold.read.notify_one();
            hold.answer.notified().await;
        }
        answer
    }
    async fn acquire_due(
        &self,
        now: DateTime<Utc>,
        owner: &OwnerId,
        lease: Duration,
        limit: usize,
        skip: &[JobId],
    ) -> Result<Vec<JobRecord>> {
        self.inner.acquire_due(now, owner, lease, limit, skip).await
    }
    async fn release(
        &self,
        owner: &OwnerId,
        id: &JobId,
        version: u64,
        outcome: Release,
    ) -> Result<ReleaseOutcome> {
        self.inner.release(owner, id, version, outcome).await
    }
    async fn release_many(
        &self,
        owner: &OwnerId,
        items: Vec<ReleaseItem>,
    ) -> Result<Vec<Result<ReleaseOutcome>>> {
        self.faulty(Call::ReleaseMany, self.inner.release_many(owner, items))
            .await
    }
    async fn insert_runs(&self, runs: &[NewRun]) -> Result<Vec<RunInsert>> {
        self.faulty(Call::InsertRuns, self.inner.insert_runs(runs))
            .await
    }
    async fn finish_runs(&self, owner: &OwnerId, runs: &[RunFinish]) -> Result<u64> {
        self.faulty(Call::FinishRuns, self.inner.finish_runs(owner, runs))
            .await
    }
    async fn heartbeat_runs(
        &self,
        owner: &OwnerId,
        ids: &[RunId],
        until: DateTime<Utc>,
    ) -> Result<u64> {
        self.inner.heartbeat_runs(owner, ids, until).await
    }
    async fn interrupt_lapsed(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<RunRecord>> {
        self.inner.interrupt_lapsed(now, limit).await
    }
    async fn query_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        self.inner.query_runs(query).await
    }
    async fn prune_runs(&self, before: DateTime<Utc>) -> Result<u64> {
        self.inner.prune_runs(before).await
    }
    async fn prune_job_runs(&self, keep: usize, before: DateTime<Utc>) -> Result<u64> {
        self.inner.prune_job_runs(keep, before).await
    }
    async fn upsert_node(
        &self,
        node: &NodeRecord,
        now: DateTime<Utc>,
    ) -> Result<Option<NodeRecord>> {
        self.inner.upsert_node(node, now).await
    }
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.inner.list_nodes().await
    }
    async fn remove_node(&self, owner: &OwnerId, instance: &str) -> Result<()> {
        self.inner.remove_node(owner, instance).await
    }
    async fn prune_nodes(&self, before: DateTime<Utc>) -> Result<u64> {
        self.inner.prune_nodes(before).await
    }
    async fn server_time(&self) -> Result<Option<DateTime<Utc>>> {
        self.inner.server_time().await
    }
}
