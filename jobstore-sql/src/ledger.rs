//! The run ledger logic every backend shares: which runs of a batch to insert,
//! which of them the instance limit turns into `skipped`, and what each caller's
//! run became. Backends only run the statements inside their transaction.

use std::collections::{HashMap, HashSet};

use sundial_core::job::OwnerId;
use sundial_core::run::{NewRun, RunFinish, RunInsert, RunState, INTERRUPTED_ERROR};

use crate::schema::{to_micros, RunRow, Sql, RUN_PARAMS};
use crate::Param;

/// How many job ids one running-count query carries.
const COUNT_CHUNK: usize = 500;

/// The runs of one `insert_runs` call, prepared once and reused by every retry
/// of its transaction.
#[derive(Debug)]
pub(crate) struct RunBatch {
    /// The rows as given, in call order.
    rows: Vec<RunRow>,
    /// Each run's given state.
    states: Vec<RunState>,
    /// Each run's instance limit (only for `running` runs).
    limits: Vec<Option<u32>>,
    /// Whether the run repeats the slot key or id of an earlier run of the call
    /// (then it is a duplicate whatever the store holds).
    repeats: Vec<bool>,
    /// The distinct jobs whose running runs must be counted first.
    limited_jobs: Vec<String>,
}

impl RunBatch {
    pub(crate) fn new(runs: &[NewRun]) -> Self {
        let mut keys = HashSet::new();
        let mut ids = HashSet::new();
        let mut limited = HashSet::new();
        let mut batch = RunBatch {
            rows: Vec::with_capacity(runs.len()),
            states: Vec::with_capacity(runs.len()),
            limits: Vec::with_capacity(runs.len()),
            repeats: Vec::with_capacity(runs.len()),
            limited_jobs: Vec::new(),
        };
        for run in runs {
            let rec = &run.record;
            let row = RunRow::from_record(rec);
            let new_key = keys.insert((rec.job_id.as_str(), row.scheduled, rec.attempt));
            let new_id = ids.insert(rec.id.as_str());
            let limit = run.max_instances.filter(|_| rec.state == RunState::Running);
            if limit.is_some() && limited.insert(rec.job_id.as_str()) {
                batch.limited_jobs.push(row.job_id.clone());
            }
            batch.repeats.push(!(new_key && new_id));
            batch.limits.push(limit);
            batch.states.push(rec.state);
            batch.rows.push(row);
        }
        batch
    }

    /// The queries counting the running runs of the limited jobs; each returns
    /// rows of (job id, count).
    /// Statements that lock the job rows of the limited jobs, in id order, so
    /// that concurrent callers count and insert runs of one job one at a time.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub(crate) fn lock_queries(&self, sql: &Sql) -> Vec<(String, Vec<Param>)> {
        let mut jobs = self.limited_jobs.clone();
        jobs.sort();
        jobs.chunks(COUNT_CHUNK)
            .map(|jobs| {
                (
                    sql.lock_jobs(jobs.len()),
                    jobs.iter().map(|j| Param::Text(j.clone())).collect(),
                )
            })
            .collect()
    }

    pub(crate) fn count_queries(&self, sql: &Sql) -> Vec<(String, Vec<Param>)> {
        self.limited_jobs
            .chunks(COUNT_CHUNK)
            .map(|jobs| {
                (
                    sql.count_running(jobs.len()),
                    jobs.iter().map(|j| Param::Text(j.clone())).collect(),
                )
            })
            .collect()
    }

    /// What to insert, given the running counts taken before any insert: the
    /// runs that repeat an earlier one of the call are left out, and a running
    /// run whose job reached its limit becomes `skipped` (no heartbeat,
    /// finished when started).
    pub(crate) fn settle(&self, counts: &HashMap<String, i64>) -> Settled {
        let mut rows = Vec::with_capacity(self.rows.len());
        let mut outcome = Vec::with_capacity(self.rows.len());
        for (i, row) in self.rows.iter().enumerate() {
            if self.repeats[i] {
                outcome.push(None);
                continue;
            }
            let mut row = row.clone();
            let mut state = self.states[i];
            if let Some(max) = self.limits[i] {
                let running = counts.get(&row.job_id).copied().unwrap_or(0);
                if running >= i64::from(max.max(1)) {
                    state = RunState::Skipped;
                    row.state = state.as_str().to_string();
                    row.heartbeat = None;
                    row.finished = row.started;
                }
            }
            outcome.push(Some((row.run_id.clone(), state)));
            rows.push(row);
        }
        // One lock order for every caller: concurrent inserts of overlapping
        // slots wait for each other instead of deadlocking.
        rows.sort_by(|a, b| {
            (a.job_id.as_str(), a.scheduled, a.attempt).cmp(&(
                b.job_id.as_str(),
                b.scheduled,
                b.attempt,
            ))
        });
        Settled { rows, outcome }
    }
}

/// The rows one `insert_runs` transaction writes.
#[derive(Debug)]
pub(crate) struct Settled {
    /// The rows to insert, in slot-key order.
    rows: Vec<RunRow>,
    /// Per run of the call: its id and final state, `None` for a repeat.
    outcome: Vec<Option<(String, RunState)>>,
}

impl Settled {
    /// The insert statements of `chunk` rows each (see [`Sql::insert_runs`]),
    /// with the ids of their rows.
    pub(crate) fn inserts(
        &self,
        sql: &Sql,
        chunk: usize,
        returning: bool,
    ) -> Vec<(String, Vec<Param>, Vec<String>)> {
        self.rows
            .chunks(chunk.max(1))
            .map(|rows| {
                let mut params = Vec::with_capacity(rows.len() * RUN_PARAMS);
                for row in rows {
                    row.push_params(&mut params);
                }
                let ids = rows.iter().map(|r| r.run_id.clone()).collect();
                (sql.insert_runs(rows.len(), returning), params, ids)
            })
            .collect()
    }

    /// What became of each run of the call, given the ids this transaction inserted.
    pub(crate) fn results(&self, inserted: &HashSet<String>) -> Vec<RunInsert> {
        self.outcome
            .iter()
            .map(|o| match o {
                Some((id, state)) if inserted.contains(id) => RunInsert::Inserted(*state),
                _ => RunInsert::Duplicate,
            })
            .collect()
    }
}

/// Turns a selected lapsed run into what the interrupting update stored.
pub(crate) fn mark_interrupted(row: &mut RunRow, now: i64) {
    row.state = RunState::Interrupted.as_str().to_string();
    row.finished = Some(now);
    row.heartbeat = None;
    row.error = Some(INTERRUPTED_ERROR.to_string());
}

/// The parameters of [`Sql::interrupt_runs`] for the selected lapsed rows.
pub(crate) fn interrupt_params(now: i64, rows: &[RunRow]) -> Vec<Param> {
    let mut params = Vec::with_capacity(rows.len() + 2);
    params.push(Param::Int(now));
    params.push(Param::Text(INTERRUPTED_ERROR.to_string()));
    params.extend(rows.iter().map(|r| Param::Text(r.run_id.clone())));
    params
}

/// The statements of `finish_runs`: each statement finishes a set of distinct
/// runs in one bulk update. A run listed twice goes into a later statement, so
/// the list applies in order, as one update per run would.
pub(crate) fn finish_statements(
    sql: &Sql,
    owner: &OwnerId,
    runs: &[RunFinish],
    chunk: usize,
) -> Vec<(String, Vec<Param>)> {
    // Round k holds the k-th finish of each run.
    let mut rounds: Vec<Vec<&RunFinish>> = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for f in runs {
        let k = seen.entry(f.id.as_str()).or_insert(0);
        if rounds.len() <= *k {
            rounds.push(Vec::new());
        }
        rounds[*k].push(f);
        *k += 1;
    }
    let mut statements = Vec::new();
    for mut round in rounds {
        // One lock order for every caller.
        round.sort_by(|a, b| a.id.cmp(&b.id));
        for part in round.chunks(chunk.max(1)) {
            let mut params = Vec::with_capacity(part.len() * 4 + 1);
            for f in part {
                params.push(Param::Text(f.id.to_string()));
                params.push(Param::Text(f.state.as_str().to_string()));
                params.push(Param::Int(to_micros(f.finished_at)));
                params.push(Param::OptText(f.error.clone()));
            }
            params.push(Param::Text(owner.to_string()));
            statements.push((sql.finish_runs(part.len()), params));
        }
    }
    statements
}
