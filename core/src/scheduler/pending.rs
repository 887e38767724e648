//! Jobs added before the scheduler starts: kept in order, stored when it starts.

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
pub(super) struct PendingJobs(Mutex<Vec<Pending>>);

impl PendingJobs {
    /// Adds a job, meeting a pending job with the same id and store as its
    /// `on_conflict` says; returns the pending job kept instead of it, if any.
    pub(super) fn add(&self, job: Pending) -> Result<(Decoded, AddOutcome)> {
        let mut list = lock(&self.0);
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
        lock(&self.0).extend(jobs);
    }

    /// Keeps `jobs` pending if `still` holds while the list is locked (a
    /// start takes the list after it leaves the stopped state, so a batch
    /// kept here is stored by that start); else hands them back.
    pub(super) fn extend_if(
        &self,
        still: impl FnOnce() -> bool,
        jobs: Vec<Pending>,
    ) -> std::result::Result<(), Vec<Pending>> {
        let mut list = lock(&self.0);
        if !still() {
            return Err(jobs);
        }
        list.extend(jobs);
        Ok(())
    }

    /// Takes every pending job out, in order.
    pub(super) fn take(&self) -> Vec<Pending> {
        std::mem::take(&mut *lock(&self.0))
    }

    /// A pending job by id, in `store` or (without one) in any store.
    pub(super) fn find(&self, id: &JobId, store: Option<&str>) -> Option<Found> {
        lock(&self.0)
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
            .iter_mut()
            .find(|p| p.is(&record.record.id, jobstore))
        {
            p.record = record.clone();
        }
    }

    /// Removes a pending job.
    pub(super) fn remove(&self, jobstore: &str, id: &JobId) {
        lock(&self.0).retain(|p| !p.is(id, jobstore));
    }

    /// Removes every pending job of a store.
    pub(super) fn remove_store(&self, jobstore: &str) {
        lock(&self.0).retain(|p| p.jobstore != jobstore);
    }

    /// The pending jobs of a store.
    pub(super) fn of_store(&self, jobstore: &str) -> Vec<Decoded> {
        lock(&self.0)
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
            .entries(list.iter().map(|p| (&p.jobstore, &p.record.record.id)))
            .finish()
    }
}
