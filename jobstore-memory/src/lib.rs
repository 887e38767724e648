//! In-memory job store for Sundial: for tests, development, and jobs that run
//! inline closures. Nothing survives a restart and nothing is shared between
//! processes.
//!
//! | capability | value |
//! |---|---|
//! | persistent | no |
//! | shared across processes | no |

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use foldhash::{HashMap, HashMapExt};
use hashbrown::hash_table::{self, HashTable};
use sundial_core::job::{JobContent, JobId, JobRecord, Lease, OwnerId, Release, ReleaseOutcome};
use sundial_core::node::NodeRecord;
use sundial_core::run::{
    sort_runs, NewRun, RunFinish, RunId, RunInsert, RunQuery, RunRecord, RunState,
    INTERRUPTED_ERROR,
};
use sundial_core::store::{sort_records, update_refused, JobCounts, JobStore, StoreCapabilities};
use sundial_core::{Error, Result};

/// A job as kept in memory: the content text shared with the record it came
/// from (one allocation per job, not copied on claim).
#[derive(Debug, Clone)]
struct Stored {
    content: JobContent,
    next_run_time: NextRun,
    /// Boxed: few jobs are leased at a time, and every map entry would
    /// otherwise carry room for one.
    lease: Option<Box<Lease>>,
    version: u64,
}

impl Stored {
    fn from_record(rec: &JobRecord) -> Stored {
        Stored {
            content: rec.content.clone(),
            next_run_time: NextRun::of(rec.next_run_time),
            lease: rec.lease.clone().map(Box::new),
            version: rec.version,
        }
    }

    fn to_record(&self, id: &JobId) -> JobRecord {
        JobRecord::stored(
            id.clone(),
            self.content.clone(),
            self.next_run_time.get().map(Micros::time),
            self.lease.as_deref().cloned(),
            self.version,
        )
    }
}

/// An instant in whole microseconds, the precision every store keeps: eight
/// bytes in each map entry and index key, where a `DateTime<Utc>` takes twelve
/// (sixteen as an option).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Micros(i64);

impl Micros {
    /// `t` truncated to whole microseconds.
    fn of(t: DateTime<Utc>) -> Micros {
        Micros(t.timestamp_micros())
    }

    /// `t` rounded up to whole microseconds (a lease never lapses early),
    /// within the instants `DateTime<Utc>` can hold.
    fn ceil(t: DateTime<Utc>) -> Micros {
        let m = t.timestamp_micros();
        Micros(if t.timestamp_subsec_nanos().is_multiple_of(1_000) {
            m
        } else {
            m.saturating_add(1)
                .min(DateTime::<Utc>::MAX_UTC.timestamp_micros())
        })
    }

    fn time(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or(if self.0 < 0 {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
    }
}

/// A next run time or none (paused) in eight bytes: `i64::MIN` microseconds
/// lies before any instant `DateTime<Utc>` can hold, so it stands for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NextRun(i64);

impl NextRun {
    fn of(t: Option<DateTime<Utc>>) -> NextRun {
        NextRun(t.map_or(i64::MIN, |t| Micros::of(t).0))
    }

    fn get(self) -> Option<Micros> {
        (self.0 != i64::MIN).then_some(Micros(self.0))
    }
}

/// An index entry: a job's time and id, ordered by time, then by id as
/// `str` orders it (claims take jobs due at the same time by id).
#[derive(Clone, Debug, PartialEq, Eq)]
struct At(Micros, Key);

impl Ord for At {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .cmp(&other.0)
            .then_with(|| cmp_id_bytes(self.1.as_str().as_bytes(), other.1.as_str().as_bytes()))
    }
}

impl PartialOrd for At {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Orders ids as `str` does, inline and eight bytes at a time: jobs added
/// together share their time, so an index insert compares ids all the way
/// down the tree.
fn cmp_id_bytes(a: &[u8], b: &[u8]) -> Ordering {
    let word = |s: &[u8], i: usize| {
        s.get(i..i + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map_or(0, u64::from_be_bytes)
    };
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let (x, y) = (word(a, i), word(b, i));
        if x != y {
            return x.cmp(&y);
        }
        i += 8;
    }
    while i < n {
        if a[i] != b[i] {
            return a[i].cmp(&b[i]);
        }
        i += 1;
    }
    a.len().cmp(&b.len())
}

/// A job id as the memory store keeps it: one shared allocation for the map,
/// the indexes and the records handed out.
type Key = JobId;

/// A job with its id: one allocation per job.
#[derive(Debug)]
struct Entry {
    id: Key,
    stored: Stored,
}

/// Jobs by id. The table holds a pointer per job, so a half-empty table
/// (just past a doubling) costs eight bytes per free bucket, not a whole
/// entry's worth.
#[derive(Debug, Default)]
struct Jobs {
    table: HashTable<Box<Entry>>,
    /// The standard library's SipHash: the table lives as long as the
    /// store and its keys are ids that callers choose (the ledger's maps,
    /// hashed per run, use foldhash).
    hasher: RandomState,
}

impl Jobs {
    fn hash(&self, id: &JobId) -> u64 {
        self.hasher.hash_one(id)
    }

    fn get_key_value(&self, id: &JobId) -> Option<(&Key, &Stored)> {
        self.table
            .find(self.hash(id), |e| e.id == *id)
            .map(|e| (&e.id, &e.stored))
    }

    fn get(&self, id: &JobId) -> Option<&Stored> {
        self.get_key_value(id).map(|(_, s)| s)
    }

    #[cfg(test)]
    fn contains_key(&self, id: &JobId) -> bool {
        self.get_key_value(id).is_some()
    }

    fn get_mut(&mut self, id: &JobId) -> Option<&mut Stored> {
        let hash = self.hash(id);
        self.table
            .find_mut(hash, |e| e.id == *id)
            .map(|e| &mut e.stored)
    }

    /// Inserts or replaces the job `id`.
    fn insert(&mut self, id: Key, stored: Stored) {
        let hash = self.hash(&id);
        let Jobs { table, hasher } = self;
        match table.entry(hash, |e| e.id == id, |e| hasher.hash_one(&e.id)) {
            hash_table::Entry::Occupied(mut o) => o.get_mut().stored = stored,
            hash_table::Entry::Vacant(v) => {
                v.insert(Box::new(Entry { id, stored }));
            }
        }
    }

    /// Inserts job `id` unless the table has it; says whether it did.
    fn insert_new(&mut self, id: Key, stored: Stored) -> bool {
        let hash = self.hash(&id);
        let Jobs { table, hasher } = self;
        match table.entry(hash, |e| e.id == id, |e| hasher.hash_one(&e.id)) {
            hash_table::Entry::Occupied(_) => false,
            hash_table::Entry::Vacant(v) => {
                v.insert(Box::new(Entry { id, stored }));
                true
            }
        }
    }

    fn remove_entry(&mut self, id: &JobId) -> Option<(Key, Stored)> {
        let hash = self.hash(id);
        let found = self.table.find_entry(hash, |e| e.id == *id).ok()?;
        let entry = found.remove().0;
        let Entry { id, stored } = *entry;
        Some((id, stored))
    }

    fn remove(&mut self, id: &JobId) -> Option<Stored> {
        self.remove_entry(id).map(|(_, s)| s)
    }

    fn reserve(&mut self, additional: usize) {
        let Jobs { table, hasher } = self;
        table.reserve(additional, |e| hasher.hash_one(&e.id));
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn iter(&self) -> impl Iterator<Item = (&Key, &Stored)> {
        self.table.iter().map(|e| (&e.id, &e.stored))
    }

    fn values(&self) -> impl Iterator<Item = &Stored> {
        self.table.iter().map(|e| &e.stored)
    }
}

#[derive(Debug, Default)]
struct State {
    /// By job id; the id's one allocation is shared with the indexes.
    jobs: Jobs,
    /// Claimable (or claimable once due) jobs by next run time.
    due: BTreeSet<At>,
    /// Claimed jobs by lease expiry (rounded up).
    leased: BTreeSet<At>,
}

impl State {
    fn index(&mut self, id: &Key, rec: &Stored) {
        match (&rec.lease, rec.next_run_time.get()) {
            (Some(l), _) => {
                self.leased
                    .insert(At(Micros::ceil(l.until), Key::clone(id)));
            }
            (None, Some(t)) => {
                self.due.insert(At(t, Key::clone(id)));
            }
            (None, None) => {}
        }
    }

    /// Adds the due-index entries of `count` new jobs. A batch at least a
    /// sixteenth the size of the index is sorted and merged into it in one
    /// pass, cheaper than an ordered insert per job; a smaller one is
    /// inserted entry by entry.
    fn index_due(&mut self, entries: impl Iterator<Item = At>, count: usize) {
        if count >= 64 && self.due.len() / 16 <= count {
            let mut batch: BTreeSet<At> = entries.collect();
            self.due.append(&mut batch);
        } else {
            self.due.extend(entries);
        }
    }

    fn unindex(&mut self, id: &Key, rec: &Stored) {
        if let Some(l) = &rec.lease {
            self.leased
                .remove(&At(Micros::ceil(l.until), Key::clone(id)));
        }
        if let Some(t) = rec.next_run_time.get() {
            self.due.remove(&At(t, Key::clone(id)));
        }
    }
}

/// The run ledger: records by id, with the unique slot key and each job's
/// running runs.
#[derive(Debug, Default)]
struct Ledger {
    runs: HashMap<RunId, RunRecord>,
    slots: HashMap<(JobId, DateTime<Utc>, u32), RunId>,
    /// Each job's running runs: usually one or none, so a short list.
    running: HashMap<JobId, Vec<RunId>>,
}

impl Ledger {
    fn running_count(&self, job: &JobId) -> usize {
        self.running.get(job).map_or(0, Vec::len)
    }

    /// Adds a run of `job` to its running runs.
    fn start_running(&mut self, id: RunId, job: &JobId) {
        let ids = self.running.entry(job.clone()).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    /// Takes a run out of its job's running runs.
    fn stop_running(&mut self, id: &RunId) {
        let Some(job) = self.runs.get(id).map(|r| &r.job_id) else {
            return;
        };
        if let Some(ids) = self.running.get_mut(job) {
            if let Some(at) = ids.iter().position(|r| r == id) {
                ids.swap_remove(at);
            }
            if ids.is_empty() {
                self.running.remove(job);
            }
        }
    }
}

/// Keeps jobs in a hash map with ordered indexes for due and leased jobs.
#[derive(Debug, Default)]
pub struct MemoryJobStore {
    state: Mutex<State>,
    ledger: Mutex<Ledger>,
    nodes: Mutex<BTreeMap<String, NodeRecord>>,
}

impl MemoryJobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NodeRecord>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn fresh(job: &JobRecord) -> Stored {
    let mut rec = Stored::from_record(job);
    rec.lease = None;
    rec.version = 0;
    rec
}

#[async_trait]
impl JobStore for MemoryJobStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::IN_MEMORY
    }

    async fn add_job(&self, job: &JobRecord) -> Result<()> {
        let mut s = self.lock();
        let rec = fresh(job);
        // A fresh record is unclaimed: indexed by its next run time alone.
        let due = rec.next_run_time.get();
        if !s.jobs.insert_new(job.id.clone(), rec) {
            return Err(Error::ConflictingId {
                id: job.id.to_string(),
            });
        }
        if let Some(t) = due {
            s.due.insert(At(t, job.id.clone()));
        }
        Ok(())
    }

    async fn add_jobs(&self, jobs: &[JobRecord]) -> Result<()> {
        let mut s = self.lock();
        s.jobs.reserve(jobs.len());
        for (i, j) in jobs.iter().enumerate() {
            if !s.jobs.insert_new(j.id.clone(), fresh(j)) {
                // All or none: the jobs of this batch inserted so far go
                // (the id is taken by a stored job or an earlier one of the batch).
                for done in &jobs[..i] {
                    s.jobs.remove(&done.id);
                }
                return Err(Error::ConflictingId {
                    id: j.id.to_string(),
                });
            }
        }
        // Fresh records are unclaimed: indexed by their next run times alone.
        let entries = jobs
            .iter()
            .filter_map(|j| Some(At(NextRun::of(j.next_run_time).get()?, j.id.clone())));
        s.index_due(entries, jobs.len());
        Ok(())
    }

    async fn update_job(&self, job: &JobRecord) -> Result<()> {
        let mut s = self.lock();
        let (key, old) = match s.jobs.get_key_value(&job.id) {
            Some((key, old)) if old.version == job.version => (Key::clone(key), old.clone()),
            found => return Err(update_refused(job, found.is_some())),
        };
        s.unindex(&key, &old);
        let mut rec = Stored::from_record(job);
        rec.lease = old.lease;
        rec.version = old.version + 1;
        s.index(&key, &rec);
        s.jobs.insert(key, rec);
        Ok(())
    }

    async fn remove_job(&self, id: &JobId) -> Result<()> {
        let mut s = self.lock();
        match s.jobs.remove_entry(id) {
            Some((key, rec)) => {
                s.unindex(&key, &rec);
                Ok(())
            }
            None => Err(Error::JobNotFound { id: id.to_string() }),
        }
    }

    async fn remove_all_jobs(&self) -> Result<()> {
        *self.lock() = State::default();
        Ok(())
    }

    async fn lookup_job(&self, id: &JobId) -> Result<Option<JobRecord>> {
        Ok(self.lock().jobs.get(id).map(|r| r.to_record(id)))
    }

    async fn get_all_jobs(&self) -> Result<Vec<JobRecord>> {
        let mut all: Vec<JobRecord> = self
            .lock()
            .jobs
            .iter()
            .map(|(id, r)| r.to_record(id))
            .collect();
        sort_records(&mut all);
        Ok(all)
    }

    async fn count_jobs(&self) -> Result<JobCounts> {
        let s = self.lock();
        let scheduled = s
            .jobs
            .values()
            .filter(|r| r.next_run_time.get().is_some())
            .count();
        Ok(JobCounts {
            scheduled: scheduled as u64,
            paused: (s.jobs.len() - scheduled) as u64,
        })
    }

    async fn get_next_run_time(&self, skip: &[JobId]) -> Result<Option<DateTime<Utc>>> {
        let s = self.lock();
        let due = s
            .due
            .iter()
            .find(|At(_, id)| !skip.contains(id))
            .map(|At(t, _)| *t);
        let leased = s
            .leased
            .iter()
            .filter(|At(_, id)| !skip.contains(id))
            .filter_map(|At(until, id)| s.jobs.get(id)?.next_run_time.get().map(|n| n.max(*until)))
            .min();
        Ok(match (due, leased) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(Micros::time))
    }

    async fn acquire_due(
        &self,
        now: DateTime<Utc>,
        owner: &OwnerId,
        lease: Duration,
        limit: usize,
        skip: &[JobId],
    ) -> Result<Vec<JobRecord>> {
        let mut s = self.lock();
        // Expired leases make their jobs claimable again (the stale lease stays
        // visible until someone claims the job).
        let now_micros = Micros::of(now);
        while let Some(At(until, id)) = s.leased.first().cloned() {
            if until > now_micros {
                break;
            }
            s.leased.pop_first();
            if let Some(t) = s.jobs.get(&id).and_then(|r| r.next_run_time.get()) {
                s.due.insert(At(t, id));
            }
        }
        let ids: Vec<Key> = s
            .due
            .iter()
            .take_while(|At(t, _)| *t <= now_micros)
            .filter(|At(_, id)| !skip.contains(id))
            .take(limit)
            .map(|At(_, id)| Key::clone(id))
            .collect();
        let until = sundial_core::job::add_saturating(now, lease);
        let mut out = Vec::with_capacity(ids.len());
        let State { jobs, due, leased } = &mut *s;
        for id in ids {
            let Some(rec) = jobs.get_mut(&id) else {
                continue;
            };
            if let Some(t) = rec.next_run_time.get() {
                due.remove(&At(t, Key::clone(&id)));
            }
            rec.lease = Some(Box::new(Lease {
                owner: owner.clone(),
                until,
            }));
            rec.version += 1;
            out.push(rec.to_record(&id));
            leased.insert(At(Micros::ceil(until), id));
        }
        Ok(out)
    }

    async fn release(
        &self,
        owner: &OwnerId,
        id: &JobId,
        version: u64,
        outcome: Release,
    ) -> Result<ReleaseOutcome> {
        let mut guard = self.lock();
        let State { jobs, due, leased } = &mut *guard;
        let Some(key) = jobs.get_key_value(id).map(|(k, _)| Key::clone(k)) else {
            return Ok(ReleaseOutcome::Gone);
        };
        let Some(rec) = jobs.get_mut(&key) else {
            return Ok(ReleaseOutcome::Gone);
        };
        let Some(lease) = rec.lease.take_if(|l| l.owner == *owner) else {
            return Err(Error::LeaseLost { id: id.to_string() });
        };
        leased.remove(&At(Micros::ceil(lease.until), Key::clone(&key)));
        // The expired-lease path may have left it in `due` under its run time.
        if let Some(t) = rec.next_run_time.get() {
            due.remove(&At(t, Key::clone(&key)));
        }
        let applied = rec.version == version;
        if applied {
            match outcome {
                Release::Remove => {
                    jobs.remove(&key);
                    return Ok(ReleaseOutcome::Applied);
                }
                Release::Reschedule { next_run_time } => {
                    rec.next_run_time = NextRun::of(next_run_time);
                }
                Release::Unclaim => {}
            }
            rec.version += 1;
        }
        if let Some(t) = rec.next_run_time.get() {
            due.insert(At(t, key));
        }
        Ok(if applied {
            ReleaseOutcome::Applied
        } else {
            ReleaseOutcome::Superseded
        })
    }

    async fn insert_runs(&self, runs: &[NewRun]) -> Result<Vec<RunInsert>> {
        let mut l = self.ledger();
        // Counts are taken before this call's inserts, once per job.
        let mut before: HashMap<JobId, usize> = HashMap::new();
        for r in runs {
            if r.record.state == RunState::Running && r.max_instances.is_some() {
                let job = &r.record.job_id;
                if !before.contains_key(job) {
                    let n = l.running_count(job);
                    before.insert(job.clone(), n);
                }
            }
        }
        let mut out = Vec::with_capacity(runs.len());
        for r in runs {
            let rec = &r.record;
            let key = (rec.job_id.clone(), rec.scheduled_time, rec.attempt);
            if l.slots.contains_key(&key) || l.runs.contains_key(&rec.id) {
                out.push(RunInsert::Duplicate);
                continue;
            }
            let mut rec = rec.clone();
            if rec.state == RunState::Running {
                let full = match (r.max_instances, before.get(&rec.job_id)) {
                    (Some(max), Some(n)) => *n >= max.max(1) as usize,
                    _ => false,
                };
                if full {
                    rec.state = RunState::Skipped;
                    rec.heartbeat_until = None;
                    rec.finished_at = rec.started_at;
                } else {
                    l.start_running(rec.id.clone(), &rec.job_id);
                }
            }
            out.push(RunInsert::Inserted(rec.state));
            l.slots.insert(key, rec.id.clone());
            l.runs.insert(rec.id.clone(), rec);
        }
        Ok(out)
    }

    async fn finish_runs(&self, owner: &OwnerId, runs: &[RunFinish]) -> Result<u64> {
        let mut l = self.ledger();
        let mut n = 0;
        for f in runs {
            let Some(rec) = l.runs.get_mut(&f.id) else {
                continue;
            };
            if rec.owner.as_ref() != Some(owner)
                || !matches!(rec.state, RunState::Running | RunState::Interrupted)
            {
                continue;
            }
            rec.state = f.state;
            rec.finished_at = Some(f.finished_at);
            rec.error = f.error.clone();
            rec.heartbeat_until = None;
            if f.state != RunState::Running {
                l.stop_running(&f.id);
            }
            n += 1;
        }
        Ok(n)
    }

    async fn heartbeat_runs(
        &self,
        owner: &OwnerId,
        ids: &[RunId],
        until: DateTime<Utc>,
    ) -> Result<u64> {
        let mut l = self.ledger();
        let mut n = 0;
        for id in ids {
            if let Some(rec) = l.runs.get_mut(id) {
                if rec.state == RunState::Running && rec.owner.as_ref() == Some(owner) {
                    rec.heartbeat_until = Some(until);
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    async fn interrupt_lapsed(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<RunRecord>> {
        let mut l = self.ledger();
        let mut lapsed: Vec<RunId> = l
            .running
            .values()
            .flatten()
            .filter(|id| {
                l.runs
                    .get(*id)
                    .is_some_and(|r| r.heartbeat_until.is_some_and(|h| h < now))
            })
            .cloned()
            .collect();
        lapsed.sort();
        lapsed.truncate(limit);
        let mut out = Vec::with_capacity(lapsed.len());
        for id in lapsed {
            l.stop_running(&id);
            if let Some(rec) = l.runs.get_mut(&id) {
                rec.state = RunState::Interrupted;
                rec.finished_at = Some(now);
                rec.heartbeat_until = None;
                rec.error = Some(INTERRUPTED_ERROR.to_string());
                out.push(rec.clone());
            }
        }
        Ok(out)
    }

    async fn query_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        let mut out: Vec<RunRecord> = self
            .ledger()
            .runs
            .values()
            .filter(|r| query.matches(r))
            .cloned()
            .collect();
        sort_runs(&mut out);
        out.truncate(query.limit);
        Ok(out)
    }

    async fn prune_runs(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut guard = self.ledger();
        let Ledger { runs, slots, .. } = &mut *guard;
        let old: Vec<RunId> = runs
            .values()
            .filter(|r| r.scheduled_time < before && r.state != RunState::Running)
            .map(|r| r.id.clone())
            .collect();
        for id in &old {
            if let Some(r) = runs.remove(id) {
                slots.remove(&(r.job_id, r.scheduled_time, r.attempt));
            }
        }
        Ok(old.len() as u64)
    }

    async fn prune_job_runs(&self, keep: usize, before: DateTime<Utc>) -> Result<u64> {
        let mut guard = self.ledger();
        let Ledger { runs, slots, .. } = &mut *guard;
        let mut by_job: HashMap<&JobId, Vec<&RunRecord>> = HashMap::new();
        for r in runs.values() {
            by_job.entry(&r.job_id).or_default().push(r);
        }
        let mut old = Vec::new();
        for list in by_job.values_mut().filter(|l| l.len() > keep) {
            list.sort_by_key(|r| std::cmp::Reverse((r.scheduled_time, r.attempt)));
            old.extend(
                list[keep..]
                    .iter()
                    .filter(|r| r.scheduled_time < before && r.state != RunState::Running)
                    .map(|r| r.id.clone()),
            );
        }
        for id in &old {
            if let Some(r) = runs.remove(id) {
                slots.remove(&(r.job_id, r.scheduled_time, r.attempt));
            }
        }
        Ok(old.len() as u64)
    }

    async fn upsert_node(
        &self,
        node: &NodeRecord,
        now: DateTime<Utc>,
    ) -> Result<Option<NodeRecord>> {
        let mut nodes = self.nodes();
        match nodes.get(node.owner.as_str()) {
            Some(cur) if !cur.yields_to(node, now) => Ok(Some(cur.clone())),
            _ => {
                nodes.insert(node.owner.to_string(), node.clone());
                Ok(None)
            }
        }
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        Ok(self.nodes().values().cloned().collect())
    }

    async fn remove_node(&self, owner: &OwnerId, instance: &str) -> Result<()> {
        let mut nodes = self.nodes();
        if nodes
            .get(owner.as_str())
            .is_some_and(|n| n.instance == instance)
        {
            nodes.remove(owner.as_str());
        }
        Ok(())
    }

    async fn prune_nodes(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut nodes = self.nodes();
        let n = nodes.len();
        nodes.retain(|_, v| v.expires_at >= before);
        Ok((n - nodes.len()) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_order_ids_as_strings_do() {
        let ids = [
            "",
            "a",
            "ab",
            "abcdefg",
            "abcdefgh",
            "abcdefgi",
            "abcdefgh0",
            "abcdefghabcdefgh",
            "abcdefghabcdefgha",
            "abcdefghabcdefgb",
            "job-9",
            "job-10",
            "job-100000",
            "job-99999",
            "Job-1",
            "é",
            "e\u{301}",
            "日本",
            "\u{0}",
            "\u{7f}",
            "\u{80}",
            "zzzzzzzzzzzzzzzzzzzzz",
        ];
        for a in ids {
            for b in ids {
                for (ta, tb) in [(0, 0), (0, 1), (1, 0)] {
                    let x = At(Micros(ta), JobId::new(a));
                    let y = At(Micros(tb), JobId::new(b));
                    assert_eq!(x.cmp(&y), (ta, a).cmp(&(tb, b)), "{ta} {a:?} vs {tb} {b:?}");
                    assert_eq!(x == y, (ta, a) == (tb, b));
                }
            }
        }
    }

    #[test]
    fn the_due_index_takes_small_and_large_batches_in_order() {
        let entry = |t: i64, i: usize| At(Micros(t), JobId::new(format!("job-{i}")));
        let mut state = State::default();
        let mut want = Vec::new();
        // A few jobs one at a time, then batches that are merged (at least 64
        // and a sixteenth of the index) and one that is inserted entry by entry.
        for (from, n, times) in [(0, 5, 3), (5, 100, 4), (105, 2_000, 7), (2_105, 100, 5)] {
            let batch: Vec<At> = (from..from + n)
                .map(|i| entry((i % times) as i64, i))
                .collect();
            want.extend(batch.iter().cloned());
            state.index_due(batch.into_iter(), n);
        }
        want.sort();
        assert_eq!(state.due.len(), 2_205);
        assert!(state.due.iter().eq(want.iter()));
    }

    fn stored(version: u64) -> Stored {
        Stored {
            content: JobContent::from_stored("{}"),
            next_run_time: NextRun::of(None),
            lease: None,
            version,
        }
    }

    #[test]
    fn job_table_inserts_replaces_finds_and_removes_by_id() {
        let mut jobs = Jobs::default();
        jobs.reserve(3);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            jobs.insert(JobId::new(id), stored(i as u64));
        }
        // Replacing keeps one entry per id, and the id first stored.
        let first = jobs.get_key_value(&JobId::new("b")).map(|(k, _)| k.clone());
        jobs.insert(JobId::new("b"), stored(7));
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs.get(&JobId::new("b")).map(|s| s.version), Some(7));
        assert_eq!(
            jobs.get_key_value(&JobId::new("b")).map(|(k, _)| k.clone()),
            first
        );
        if let Some(s) = jobs.get_mut(&JobId::new("c")) {
            s.version = 9;
        }
        let mut all: Vec<(String, u64)> = jobs
            .iter()
            .map(|(k, s)| (k.to_string(), s.version))
            .collect();
        all.sort();
        assert_eq!(all, [("a".into(), 0), ("b".into(), 7), ("c".into(), 9)]);
        let (id, s) = jobs.remove_entry(&JobId::new("a")).expect("a is stored");
        assert_eq!((id.as_str(), s.version), ("a", 0));
        assert!(jobs.remove(&JobId::new("a")).is_none());
        assert!(!jobs.contains_key(&JobId::new("a")));
        assert!(jobs.contains_key(&JobId::new("c")));
        assert_eq!(jobs.values().count(), 2);
    }

    #[test]
    fn instants_keep_whole_microseconds_and_leases_round_up() {
        let whole = DateTime::from_timestamp(1_800_000_000, 123_456_000).unwrap_or_default();
        let finer = DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap_or_default();
        assert_eq!(Micros::of(whole).time(), whole);
        assert_eq!(Micros::of(finer).time(), whole);
        assert_eq!(Micros::ceil(whole), Micros::of(whole));
        assert_eq!(Micros::ceil(finer).0, Micros::of(whole).0 + 1);
    }

    #[test]
    fn a_next_run_time_of_none_is_paused_and_every_instant_is_kept() {
        assert_eq!(NextRun::of(None).get(), None);
        for t in [
            DateTime::<Utc>::MIN_UTC,
            DateTime::UNIX_EPOCH,
            DateTime::<Utc>::MAX_UTC,
        ] {
            let kept = NextRun::of(Some(t)).get().map(Micros::time);
            assert_eq!(
                kept,
                Some(DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or_default())
            );
        }
        // Rounding up the last instant stays within range (and never wraps to 1970).
        let last = Micros::of(DateTime::<Utc>::MAX_UTC);
        assert_eq!(Micros::ceil(DateTime::<Utc>::MAX_UTC), last);
        assert_eq!(Micros(last.0 + 1).time(), DateTime::<Utc>::MAX_UTC);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<Stored>(), 40);
    }
}
