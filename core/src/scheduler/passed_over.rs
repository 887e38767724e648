//! Jobs this scheduler cannot run (unknown task, unreadable record, no such
//! executor): each is handed back at once, so that another scheduler that can
//! run it claims it, and passed over here for a while that doubles each time.

use foldhash::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::job::JobId;

/// How long a job is first passed over.
const FIRST: Duration = Duration::from_secs(1);
/// The longest a job is passed over at once.
const LONGEST: Duration = Duration::from_secs(60);
/// The most ids handed to a store per claim (the earliest to expire are left out).
const MOST: usize = 10_000;

/// One job passed over.
#[derive(Debug, Clone, Copy)]
struct Entry {
    until: DateTime<Utc>,
    times: u32,
}

/// Jobs passed over, per store alias.
#[derive(Debug, Default)]
pub(crate) struct PassedOver {
    stores: HashMap<String, HashMap<JobId, Entry>>,
}

impl PassedOver {
    /// Records that `id` cannot run here at `now`; returns for how long it is
    /// passed over.
    pub(crate) fn pass_over(&mut self, alias: &str, id: &JobId, now: DateTime<Utc>) -> Duration {
        let jobs = self.stores.entry(alias.to_string()).or_default();
        let times = jobs.get(id).map_or(0, |e| e.times);
        let wait = FIRST
            .checked_mul(1u32 << times.min(16))
            .unwrap_or(LONGEST)
            .min(LONGEST);
        jobs.insert(
            id.clone(),
            Entry {
                until: crate::job::add_saturating(now, wait),
                times: times.saturating_add(1),
            },
        );
        wait
    }

    /// Whether no job is passed over.
    pub(crate) fn is_empty(&self) -> bool {
        self.stores.values().all(HashMap::is_empty)
    }

    /// Forgets `id` (it can run here).
    pub(crate) fn forget(&mut self, alias: &str, id: &JobId) {
        if let Some(jobs) = self.stores.get_mut(alias) {
            jobs.remove(id);
        }
    }

    /// The ids of store `alias` passed over at `now`. Entries expired for
    /// longer than the longest wait are forgotten (their backoff starts over).
    pub(crate) fn skip(&mut self, alias: &str, now: DateTime<Utc>) -> Vec<JobId> {
        let Some(jobs) = self.stores.get_mut(alias) else {
            return Vec::new();
        };
        let forget_before = now - chrono::Duration::from_std(LONGEST).unwrap_or_default();
        jobs.retain(|_, e| e.until > forget_before);
        let mut live: Vec<(&JobId, DateTime<Utc>)> = jobs
            .iter()
            .filter(|(_, e)| e.until > now)
            .map(|(id, e)| (id, e.until))
            .collect();
        if live.len() > MOST {
            live.sort_by_key(|(_, until)| std::cmp::Reverse(*until));
            live.truncate(MOST);
        }
        live.into_iter().map(|(id, _)| id.clone()).collect()
    }

    /// When the first job of `alias` passed over at `now` may be claimed here again.
    pub(crate) fn next_expiry(&self, alias: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.stores
            .get(alias)?
            .values()
            .map(|e| e.until)
            .filter(|u| *u > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn waits_double_up_to_a_minute() {
        let mut p = PassedOver::default();
        let id = JobId::new("j");
        let waits: Vec<u64> = (0..9)
            .map(|_| p.pass_over("s", &id, t(0)).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn only_unexpired_ids_of_the_store_are_skipped() {
        let mut p = PassedOver::default();
        p.pass_over("s", &JobId::new("a"), t(0));
        p.pass_over("s", &JobId::new("b"), t(0));
        p.pass_over("s", &JobId::new("b"), t(0)); // 2 s
        p.pass_over("other", &JobId::new("c"), t(0));
        let mut now = p.skip("s", t(0));
        now.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(now, [JobId::new("a"), JobId::new("b")]);
        assert_eq!(p.skip("s", t(1)), [JobId::new("b")]);
        assert_eq!(p.next_expiry("s", t(0)), Some(t(1)));
        assert_eq!(p.next_expiry("s", t(1)), Some(t(2)));
        assert!(p.skip("s", t(2)).is_empty());
        assert_eq!(p.next_expiry("s", t(2)), None);
    }

    #[test]
    fn forgotten_and_long_expired_jobs_start_over() {
        let mut p = PassedOver::default();
        let id = JobId::new("j");
        p.pass_over("s", &id, t(0));
        p.pass_over("s", &id, t(0));
        p.forget("s", &id);
        assert_eq!(p.pass_over("s", &id, t(0)).as_secs(), 1);
        p.skip("s", t(200));
        assert_eq!(p.pass_over("s", &id, t(200)).as_secs(), 1);
    }
}
