//! Jobs added before the scheduler starts: kept in order, stored when it starts.

use std::collections::HashSet;
use std::sync::Mutex;

use super::jobs::Upsert;
use super::lock;
use super::spec::{AddOutcome, Decoded, OnConflict};
use crate::error::{Error, Result};
use crate::job::{JobId, JobRecord};

/// A job added before start.
pub(super) struct Pending {
    pub(super) record: Decoded,
    pub(super) jobstore: String,
    pub(super) upsert: Upsert,
}

impl Pending {
    fn is(&self, id: &JobId, jobstore: &str) -> bool {
        self.record.record.id == *id && self.jobstore == jobstore
    }
}

/// Where a job was found: its store's alias, its record, and whether it is
/// still pending (not yet stored).
pub(super) struct Found {
    pub(super) alias: String,
    pub(super) record: JobRecord,
    pub(super) pending: bool,
}

/// The jobs added before start, in the order they were added.
#[derive(Default)]
pub(super) struct PendingJobs(Mutex<List>);

#[derive(Default)]
struct List {
    jobs: Vec<Pending>,
    /// A start has taken the jobs to store them: a job added now would be
    /// left behind, so it is handed back to be stored instead.
    taken: bool,
}

impl PendingJobs {
    /// Adds a job, meeting a pending job with the same id and store as its
    /// `on_conflict` says; returns the pending job kept instead of it, if any.
    /// Hands the job back (`Err`) when a start has taken the pending jobs.
    pub(super) fn add(
        &self,
        job: Pending,
    ) -> std::result::Result<Result<(Decoded, AddOutcome)>, Box<Pending>> {
        let mut list = lock(&self.0);
        if list.taken {
            return Err(Box::new(job));
        }
        Ok(Self::add_to(&mut list.jobs, job))
    }

    fn add_to(list: &mut Vec<Pending>, job: Pending) -> Result<(Decoded, AddOutcome)> {
        let id = &job.record.record.id;
        let mut outcome = AddOutcome::Added;
        if let Some(pos) = list.iter().position(|p| p.is(id, &job.jobstore)) {
            match job.upsert.on_conflict {
                OnConflict::Fail => return Err(Error::ConflictingId { id: id.to_string() }),
                OnConflict::Keep => return Ok((list[pos].record.clone(), AddOutcome::Kept)),
                OnConflict::Replace => {
                    list.remove(pos);
                    outcome = AddOutcome::Replaced;
                }
            }
        }
        let record = job.record.clone();
        list.push(job);
        Ok((record, outcome))
    }

    /// Adds jobs at the end, as they are.
    pub(super) fn extend(&self, jobs: impl IntoIterator<Item = Pending>) {
        lock(&self.0).jobs.extend(jobs);
    }

    /// Adds a batch of new jobs, all or none: an id given twice in it, or
    /// already pending in the same store, fails it. Hands the batch back
    /// (`Err`) when a start has taken the pending jobs.
    pub(super) fn add_all(
        &self,
        jobs: Vec<Pending>,
    ) -> std::result::Result<Result<()>, Vec<Pending>> {
        let mut list = lock(&self.0);
        if list.taken {
            return Err(jobs);
        }
        let mut seen: HashSet<(&str, &JobId)> = list
            .jobs
            .iter()
            .map(|p| (p.jobstore.as_str(), &p.record.record.id))
            .collect();
        if let Some(taken) = jobs
            .iter()
            .find(|p| !seen.insert((p.jobstore.as_str(), &p.record.record.id)))
        {
            return Ok(Err(Error::ConflictingId {
                id: taken.record.record.id.to_string(),
            }));
        }
        list.jobs.extend(jobs);
        Ok(Ok(()))
    }

    /// Takes every pending job out, in order, for a start to store them; jobs
    /// added from now on are handed back until [`PendingJobs::reopen`].
    pub(super) fn take(&self) -> Vec<Pending> {
        let mut list = lock(&self.0);
        list.taken = true;
        std::mem::take(&mut list.jobs)
    }

    /// Whether a start has taken the pending jobs (its stores are started):
    /// jobs added now are stored, not kept pending.
    pub(super) fn is_taken(&self) -> bool {
        lock(&self.0).taken
    }

    /// Keeps jobs pending again: the scheduler is stopped (a start failed, or
    /// it shut down).
    pub(super) fn reopen(&self) {
        lock(&self.0).taken = false;
    }

    /// A pending job by id, in `store` or (without one) in any store.
    pub(super) fn find(&self, id: &JobId, store: Option<&str>) -> Option<Found> {
        lock(&self.0)
            .jobs
            .iter()
            .find(|p| p.record.record.id == *id && store.is_none_or(|s| s == p.jobstore))
            .map(|p| Found {
                alias: p.jobstore.clone(),
                record: p.record.record.clone(),
                pending: true,
            })
    }

    /// Replaces a pending job's record.
    pub(super) fn replace(&self, jobstore: &str, record: &Decoded) {
        if let Some(p) = lock(&self.0)
            .jobs
            .iter_mut()
            .find(|p| p.is(&record.record.id, jobstore))
        {
            p.record = record.clone();
        }
    }

    /// Removes a pending job.
    pub(super) fn remove(&self, jobstore: &str, id: &JobId) {
        lock(&self.0).jobs.retain(|p| !p.is(id, jobstore));
    }

    /// Removes every pending job of a store.
    pub(super) fn remove_store(&self, jobstore: &str) {
        lock(&self.0).jobs.retain(|p| p.jobstore != jobstore);
    }

    /// The pending jobs of a store.
    pub(super) fn of_store(&self, jobstore: &str) -> Vec<Decoded> {
        lock(&self.0)
            .jobs
            .iter()
            .filter(|p| p.jobstore == jobstore)
            .map(|p| p.record.clone())
            .collect()
    }
}

impl std::fmt::Debug for PendingJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = lock(&self.0);
        f.debug_list()
            .entries(list.jobs.iter().map(|p| (&p.jobstore, &p.record.record.id)))
            .finish()
    }
}
