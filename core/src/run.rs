//! The run ledger: one record per started slot (job id, scheduled time, attempt).
//!
//! Starting a slot *is* inserting its record: a store keeps a unique key on
//! (job id, scheduled time, attempt), and the scheduler submits only the slots
//! whose insert succeeded. A slot that one process started can therefore never be
//! started again by another, whatever the leases or clocks say.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::{trunc_micros, JobId, OwnerId};

/// Error texts kept in a run record are cut to this many bytes.
pub const MAX_ERROR_LEN: usize = 4096;

/// The id of one run record (32 hex characters).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(Arc<str>);
crate::job::shared_str_serde!(RunId);

impl RunId {
    /// Wraps a string id.
    pub fn new(id: impl Into<String>) -> Self {
        RunId(Arc::from(id.into()))
    }

    /// A fresh unique id; ids made later in this process sort later
    /// (UUIDv7), which keeps store indexes append-mostly.
    pub fn random() -> Self {
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        thread_local! {
            // Seeded from the operating system's randomness once per thread
            // and process (fastrand's own global generator is seeded from the
            // clock): a forked child that inherits this thread's state
            // reseeds instead of repeating its parent's ids.
            static RANDOM: std::cell::RefCell<Option<(u32, fastrand::Rng)>> =
                const { std::cell::RefCell::new(None) };
        }
        let pid = std::process::id();
        let random = RANDOM.with(|r| {
            let mut r = r.borrow_mut();
            match &mut *r {
                Some((seeded_in, rng)) if *seeded_in == pid => rng.u64(..),
                slot => {
                    let mut rng = fastrand::Rng::with_seed(uuid::Uuid::new_v4().as_u64_pair().0);
                    let v = rng.u64(..);
                    *slot = Some((pid, rng));
                    v
                }
            }
        });
        let id = v7_after(&LAST, now_ms, random);
        let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
        RunId(Arc::from(&*id.simple().encode_lower(&mut buf)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Ids a millisecond can hold before the next ones borrow the following
/// millisecond (UUIDv7's 12-bit `rand_a` field, used as a counter).
const V7_PER_MS: u64 = 1 << 12;

/// A UUIDv7 that sorts after every id this `last` state handed out: the
/// millisecond `now_ms` (or the last one used, if the clock went back or
/// its counter is full), a counter within it, and 62 random bits. One
/// atomic update per id and no system call (the random bits come from a
/// thread-local generator seeded from the OS); `last` keeps
/// `millisecond * V7_PER_MS + counter`.
fn v7_after(last: &AtomicU64, now_ms: u64, random: u64) -> uuid::Uuid {
    let now = (now_ms & ((1 << 48) - 1)) * V7_PER_MS;
    let mut cur = last.load(Ordering::Relaxed);
    let next = loop {
        // The next counter value; at a full counter this carries into the
        // next millisecond, as the arithmetic does by itself.
        let next = if now > cur { now } else { cur + 1 };
        match last.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(seen) => cur = seen,
        }
    };
    let (ms, counter) = (next / V7_PER_MS, next % V7_PER_MS);
    let mut bytes = [0u8; 10];
    // rand_a: the counter (the builder puts the version in the top nibble
    // of the first byte); rand_b: random (the variant takes its top bits).
    bytes[..2].copy_from_slice(&(counter as u16).to_be_bytes());
    bytes[2..].copy_from_slice(&random.to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(ms, &bytes).into_uuid()
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Started and not finished; its owner heartbeats it.
    Running,
    /// Finished without error.
    Succeeded,
    /// The task returned an error or panicked.
    Failed,
    /// The task exceeded the job's timeout.
    TimedOut,
    /// The owner stopped heartbeating (killed, stalled or cut off) before the run finished.
    Interrupted,
    /// The slot was later than the job's misfire grace time and did not run.
    Missed,
    /// The job already had `max_instances` runs in progress, so this slot did not run.
    Skipped,
    /// The run was started but could not be handed to an executor (shut down, refused).
    Cancelled,
}

impl RunState {
    /// Every state, in declaration order.
    pub const ALL: [RunState; 8] = [
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::TimedOut,
        RunState::Interrupted,
        RunState::Missed,
        RunState::Skipped,
        RunState::Cancelled,
    ];

    /// The state's stored name: `running`, `succeeded`, `failed`, `timed_out`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed_out",
            RunState::Interrupted => "interrupted",
            RunState::Missed => "missed",
            RunState::Skipped => "skipped",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<RunState> {
        RunState::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the run is over (every state but `running`).
    pub fn is_terminal(self) -> bool {
        self != RunState::Running
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunState {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        RunState::parse(s).ok_or_else(|| {
            crate::Error::Config(format!(
                "unknown run state '{s}' (expected one of: {})",
                RunState::ALL.map(RunState::as_str).join(", ")
            ))
        })
    }
}

/// One run of one slot, as the ledger keeps it (stores build it field by field
/// from what they read back).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id.
    pub id: RunId,
    /// The job the run belongs to.
    pub job_id: JobId,
    /// The slot: the fire time the run is for.
    pub scheduled_time: DateTime<Utc>,
    /// 1 for the first attempt at the slot, 2 for its first retry, ...
    pub attempt: u32,
    /// Where the run stands.
    pub state: RunState,
    /// The scheduler that started (or recorded) the run.
    pub owner: Option<OwnerId>,
    /// Host and process of the owner (`host:pid`), for people reading the history.
    pub node: Option<String>,
    /// When the run was started (recorded); `None` for missed slots.
    pub started_at: Option<DateTime<Utc>>,
    /// When the run reached its terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Until when the owner vouches for a running run; past it, any node marks it interrupted.
    pub heartbeat_until: Option<DateTime<Utc>>,
    /// What went wrong, cut to [`MAX_ERROR_LEN`] bytes.
    pub error: Option<String>,
}

impl RunRecord {
    /// A `running` record for a slot started now by `owner`, vouched for until `heartbeat_until`.
    pub fn running(
        job_id: JobId,
        scheduled_time: DateTime<Utc>,
        attempt: u32,
        owner: OwnerId,
        now: DateTime<Utc>,
        heartbeat_until: DateTime<Utc>,
    ) -> Self {
        let (now, heartbeat_until) = (trunc_micros(now), trunc_micros(heartbeat_until));
        RunRecord {
            id: RunId::random(),
            job_id,
            scheduled_time: trunc_micros(scheduled_time),
            attempt,
            state: RunState::Running,
            owner: Some(owner),
            node: Some(node_name().to_string()),
            started_at: Some(now),
            finished_at: None,
            heartbeat_until: Some(heartbeat_until),
            error: None,
        }
    }

    /// A terminal record (missed, skipped, ...) written by `owner` at `now`.
    pub fn terminal(
        job_id: JobId,
        scheduled_time: DateTime<Utc>,
        attempt: u32,
        state: RunState,
        owner: OwnerId,
        now: DateTime<Utc>,
        error: Option<String>,
    ) -> Self {
        let now = trunc_micros(now);
        RunRecord {
            id: RunId::random(),
            job_id,
            scheduled_time: trunc_micros(scheduled_time),
            attempt,
            state,
            owner: Some(owner),
            node: Some(node_name().to_string()),
            started_at: None,
            finished_at: Some(now),
            heartbeat_until: None,
            error: error.map(truncate_error),
        }
    }

    /// How long the run took, once finished.
    pub fn duration(&self) -> Option<Duration> {
        (self.finished_at? - self.started_at?).to_std().ok()
    }
}

/// A run to insert with [`JobStore::insert_runs`](crate::store::JobStore::insert_runs).
#[derive(Clone, Debug, PartialEq)]
pub struct NewRun {
    /// The record to insert.
    pub record: RunRecord,
    /// For a `running` record: the job's instance limit, counted over the whole store.
    pub max_instances: Option<u32>,
}

/// What [`JobStore::insert_runs`](crate::store::JobStore::insert_runs) did with one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunInsert {
    /// The record was inserted, in this state (`skipped` when the instance limit was reached).
    Inserted(RunState),
    /// A record for the same job, slot and attempt exists: nothing was written.
    Duplicate,
}

/// A run's terminal state, for [`JobStore::finish_runs`](crate::store::JobStore::finish_runs).
#[derive(Clone, Debug, PartialEq)]
pub struct RunFinish {
    /// The run.
    pub id: RunId,
    /// Its terminal state.
    pub state: RunState,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// What went wrong, if anything (cut to [`MAX_ERROR_LEN`] bytes).
    pub error: Option<String>,
}

/// Selects runs for [`JobStore::query_runs`](crate::store::JobStore::query_runs).
#[derive(Clone, Debug, PartialEq)]
pub struct RunQuery {
    /// Only runs of this job.
    pub job_id: Option<JobId>,
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// Only runs scheduled at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// At most this many runs (newest first).
    pub limit: usize,
}

impl Default for RunQuery {
    fn default() -> Self {
        RunQuery {
            job_id: None,
            state: None,
            since: None,
            limit: 100,
        }
    }
}

impl RunQuery {
    /// Runs of one job.
    pub fn job(id: impl Into<JobId>) -> Self {
        RunQuery {
            job_id: Some(id.into()),
            ..RunQuery::default()
        }
    }

    /// Only runs in `state`.
    pub fn state(mut self, state: RunState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only runs scheduled at or after `since`.
    pub fn since(mut self, since: DateTime<Utc>) -> Self {
        self.since = Some(since);
        self
    }

    /// At most `limit` runs.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Whether `run` passes the filters (stores that filter in memory use it).
    pub fn matches(&self, run: &RunRecord) -> bool {
        self.job_id.as_ref().is_none_or(|j| *j == run.job_id)
            && self.state.is_none_or(|s| s == run.state)
            && self.since.is_none_or(|s| run.scheduled_time >= s)
    }
}

/// Sorts runs as `query_runs` returns them: newest slot first, then highest attempt, then id.
pub fn sort_runs(runs: &mut [RunRecord]) {
    runs.sort_by(|a, b| {
        b.scheduled_time
            .cmp(&a.scheduled_time)
            .then(b.attempt.cmp(&a.attempt))
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// Cuts an error text to at most [`MAX_ERROR_LEN`] bytes on a character boundary,
/// with NUL characters (which some databases refuse in text) replaced.
pub fn truncate_error(mut s: String) -> String {
    if s.contains('\0') {
        s = s.replace('\0', "\u{FFFD}");
    }
    if s.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// This process's host name and pid.
pub(crate) fn host_and_pid() -> (&'static str, u32) {
    let name = node_name();
    match name.rsplit_once(':') {
        Some((host, pid)) => (host, pid.parse().unwrap_or(0)),
        None => (name, 0),
    }
}

/// This process as `host:pid`.
pub fn node_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".to_string());
        format!("{host}:{}", std::process::id())
    })
}

/// The error text a run gets when a peer marks it interrupted.
pub const INTERRUPTED_ERROR: &str = "owner stopped heartbeating before the run finished";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_v7_and_sort_in_the_order_they_were_made() {
        let ids: Vec<RunId> = (0..10_000).map(|_| RunId::random()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} then {}", w[0], w[1]);
        }
        let u = uuid::Uuid::parse_str(ids[0].as_str()).expect("a uuid");
        assert_eq!(u.get_version_num(), 7);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(ids[0].as_str().len(), 32);
    }

    #[test]
    fn run_ids_of_two_threads_have_different_random_bits() {
        // The last 14 hex digits are random bits only (the counter and the
        // variant are before them): two generators must not repeat each other.
        let tail = || {
            std::thread::spawn(|| RunId::random().as_str()[18..].to_string())
                .join()
                .expect("thread")
        };
        let (a, b) = (tail(), tail());
        assert_eq!(a.len(), 14);
        assert_ne!(a, b);
    }

    #[test]
    fn v7_ids_stay_ordered_through_a_full_millisecond_and_a_clock_going_back() {
        let last = AtomicU64::new(0);
        let t = 1_800_000_000_000;
        let mut prev = v7_after(&last, t, u64::MAX);
        // Past the counter's capacity in one millisecond, then with the clock
        // a second behind: still increasing, never the same.
        for i in 0..(2 * V7_PER_MS + 10) {
            let now = if i < V7_PER_MS + 5 { t } else { t - 1000 };
            let next = v7_after(&last, now, i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert!(next > prev, "{next} after {prev}");
            assert_eq!(next.get_version_num(), 7);
            prev = next;
        }
        let (secs, _) = prev.get_timestamp().expect("v7 has a time").to_unix();
        assert!(secs * 1000 >= t / 1000 * 1000, "millisecond went back");
        // A later clock reading starts from its own millisecond again.
        let later = v7_after(&last, t + 60_000, 0);
        let (secs, _) = later.get_timestamp().expect("v7 has a time").to_unix();
        assert_eq!(secs, (t + 60_000) / 1000);
    }

    #[test]
    fn states_round_trip_their_names() {
        for s in RunState::ALL {
            assert_eq!(RunState::parse(s.as_str()), Some(s));
            assert_eq!(s.as_str().parse::<RunState>().ok(), Some(s));
        }
        assert!("done".parse::<RunState>().is_err());
    }

    #[test]
    fn nul_characters_are_replaced() {
        assert_eq!(truncate_error("a\0b".into()), "a\u{FFFD}b");
    }

    #[test]
    fn errors_are_cut_on_char_boundaries() {
        let s = "é".repeat(MAX_ERROR_LEN);
        let cut = truncate_error(s);
        assert!(cut.len() <= MAX_ERROR_LEN);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
