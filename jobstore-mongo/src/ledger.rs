//! The run ledger: one document per run in `<collection>_runs`.
//!
//! ```text
//! { _id: "<run id>", job_id: "<job id>",
//!   scheduled: Date, scheduled_us: Int64,   // the slot
//!   attempt: Int64, state: "running" | "succeeded" | ...,
//!   owner: "<owner>", node: "host:pid",     // absent when unknown
//!   started: Date, started_us: Int64,       // each time absent when unset
//!   finished: Date, finished_us: Int64,
//!   heartbeat: Date, heartbeat_us: Int64,
//!   error: "<text>" }
//! ```
//!
//! The unique index on `(job_id, scheduled_us, attempt)` is the arbiter of slot
//! starts: of several processes inserting the same slot, the server accepts one
//! document and reports a duplicate key (11000) to the others. Queries compare
//! and sort on the exact `_us` fields; the dates are for people reading the data.

use std::collections::{BTreeSet, HashMap};
use std::future::IntoFuture;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::ErrorKind;
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};
use sundial_core::job::{JobId, OwnerId};
use sundial_core::run::{
    sort_runs, NewRun, RunFinish, RunId, RunInsert, RunQuery, RunRecord, RunState,
    INTERRUPTED_ERROR,
};

use super::{core_err, date, from_micros, micros, mongo, Error};

/// The suffix of the runs collection's name (after the jobs collection's).
pub(crate) const RUNS_SUFFIX: &str = "_runs";

/// The duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// Update statements per `update` command in `finish_runs` (keeps each command
/// well under the 16 MiB message limit even with maximal error texts).
const FINISH_CHUNK: usize = 1000;

/// Candidate rounds of one `interrupt_lapsed` call (a round comes up short only
/// when concurrent sweepers took some of its candidates).
const SWEEP_ROUNDS: usize = 4;

/// Conditional updates `interrupt_lapsed` keeps in flight at once.
const SWEEP_CONCURRENCY: usize = 8;

/// Creates the runs collection's indexes (idempotent: same names and keys).
pub(crate) async fn create_run_indexes(runs: &Collection<Document>) -> Result<(), Error> {
    let indexes = [
        IndexModel::builder()
            .keys(doc! { "job_id": 1, "scheduled_us": 1, "attempt": 1 })
            .options(
                IndexOptions::builder()
                    .name(Some("run_slot".to_string()))
                    .unique(Some(true))
                    .build(),
            )
            .build(),
        IndexModel::builder()
            .keys(doc! { "state": 1, "heartbeat_us": 1 })
            .options(
                IndexOptions::builder()
                    .name(Some("run_state_heartbeat".to_string()))
                    .build(),
            )
            .build(),
        IndexModel::builder()
            .keys(doc! { "scheduled_us": 1 })
            .options(
                IndexOptions::builder()
                    .name(Some("run_scheduled".to_string()))
                    .build(),
            )
            .build(),
    ];
    for index in indexes {
        runs.create_index(index).await?;
    }
    Ok(())
}

fn put_time(d: &mut Document, name: &str, t: Option<DateTime<Utc>>) {
    if let Some(t) = t {
        d.insert(name, date(t));
        d.insert(format!("{name}_us"), micros(t));
    }
}

/// The stored form of a run.
fn to_document(rec: &RunRecord) -> Document {
    let mut d = doc! {
        "_id": rec.id.as_str(),
        "job_id": rec.job_id.as_str(),
        "scheduled": date(rec.scheduled_time),
        "scheduled_us": micros(rec.scheduled_time),
        "attempt": i64::from(rec.attempt),
        "state": rec.state.as_str(),
    };
    if let Some(owner) = &rec.owner {
        d.insert("owner", owner.as_str());
    }
    if let Some(node) = &rec.node {
        d.insert("node", node.as_str());
    }
    put_time(&mut d, "started", rec.started_at);
    put_time(&mut d, "finished", rec.finished_at);
    put_time(&mut d, "heartbeat", rec.heartbeat_until);
    if let Some(error) = &rec.error {
        d.insert("error", error.as_str());
    }
    d
}

fn integer(b: &Bson) -> Option<i64> {
    match b {
        Bson::Int64(v) => Some(*v),
        Bson::Int32(v) => Some(i64::from(*v)),
        _ => None,
    }
}

fn required_str<'a>(d: &'a Document, key: &str) -> Result<&'a str, String> {
    d.get_str(key)
        .map_err(|_| format!("field '{key}' is missing or not a string"))
}

/// A string field that may be absent (or null).
fn optional_str(d: &Document, key: &str) -> Result<Option<String>, String> {
    match d.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "field '{key}' is a {:?}, not a string",
            other.element_type()
        )),
    }
}

/// A time kept as `<name>_us` (exact) or, failing that, as the `<name>` date.
fn optional_time(d: &Document, name: &str) -> Result<Option<DateTime<Utc>>, String> {
    let key = format!("{name}_us");
    match d.get(&key) {
        None | Some(Bson::Null) => {}
        Some(b) => {
            let us = integer(b).ok_or_else(|| format!("field '{key}' is not an integer"))?;
            return from_micros(us)
                .map(Some)
                .ok_or_else(|| format!("field '{key}' is out of range: {us}"));
        }
    }
    match d.get(name) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::DateTime(t)) => DateTime::from_timestamp_millis(t.timestamp_millis())
            .map(Some)
            .ok_or_else(|| format!("field '{name}' is out of range")),
        Some(_) => Err(format!("field '{name}' is not a date")),
    }
}

/// Reads a stored run; says what is wrong with an unreadable one.
fn from_document(d: &Document) -> Result<RunRecord, String> {
    let id = required_str(d, "_id")?;
    let job_id = required_str(d, "job_id")?;
    let scheduled = optional_time(d, "scheduled")?
        .ok_or_else(|| "field 'scheduled_us' is missing".to_string())?;
    let attempt = d
        .get("attempt")
        .and_then(integer)
        .and_then(|a| u32::try_from(a).ok())
        .ok_or_else(|| "field 'attempt' is missing or not a small integer".to_string())?;
    let state_name = required_str(d, "state")?;
    let state =
        RunState::parse(state_name).ok_or_else(|| format!("unknown state '{state_name}'"))?;
    let owner = optional_str(d, "owner")?;
    let node = optional_str(d, "node")?;
    let started_at = optional_time(d, "started")?;
    let finished_at = optional_time(d, "finished")?;
    let heartbeat_until = optional_time(d, "heartbeat")?;
    let error = optional_str(d, "error")?;
    Ok(RunRecord {
        id: RunId::new(id),
        job_id: JobId::new(job_id),
        scheduled_time: scheduled,
        attempt,
        state,
        owner: owner.map(OwnerId::new),
        node,
        started_at,
        finished_at,
        heartbeat_until,
        error,
    })
}

/// Decodes a document, or logs why it cannot be read and gives `None`.
fn decode(runs: &Collection<Document>, d: &Document) -> Option<RunRecord> {
    match from_document(d) {
        Ok(rec) => Some(rec),
        Err(reason) => {
            tracing::warn!(
                collection = %runs.name(),
                run_id = ?d.get("_id"),
                %reason,
                "skipping unreadable run record"
            );
            None
        }
    }
}

fn limit_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// How long a run lock is honoured: a holder that died is taken over after
/// this, so it bounds how long a killed scheduler can hold up a job's runs.
/// Long against the milliseconds a lock is held, and against clock
/// differences between processes (expiry is compared with each caller's
/// clock; schedulers warn from one second of difference to the server on).
const LOCK_TTL: chrono::Duration = chrono::Duration::seconds(10);

/// How long `insert_runs` waits for another caller's lock on a job.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Locks `jobs` for this call (one document per job, `_id` = job id, unique
/// by nature), all or none: taken in one unordered insert; locks whose holder
/// let them lapse are taken over; when any is held by another caller, the
/// ones taken are given back and all are tried again after a short, jittered
/// pause (holding some while waiting for others could deadlock two callers).
async fn lock_jobs(
    locks: &Collection<Document>,
    jobs: &[&str],
    token: &str,
) -> sundial_core::Result<()> {
    let started = std::time::Instant::now();
    let pending: Vec<&str> = jobs.to_vec();
    let mut pause = 1;
    loop {
        let until = micros(Utc::now() + LOCK_TTL);
        let docs = pending
            .iter()
            .map(|j| doc! { "_id": *j, "token": token, "until": until });
        let contended: Vec<usize> = match locks.insert_many(docs).ordered(false).await {
            Ok(_) => Vec::new(),
            Err(e) => match &*e.kind {
                ErrorKind::InsertMany(f) if f.write_concern_error.is_none() => {
                    let ws = f.write_errors.as_deref().unwrap_or_default();
                    if ws.iter().any(|w| w.code != DUPLICATE_KEY) {
                        return Err(mongo(e));
                    }
                    ws.iter().map(|w| w.index).collect()
                }
                _ => return Err(mongo(e)),
            },
        };
        let mut still = Vec::new();
        for i in contended {
            let Some(job) = pending.get(i) else { continue };
            // A lapsed lock (its holder died mid-call) is taken over.
            let taken = locks
                .update_one(
                    doc! { "_id": *job, "until": { "$lt": micros(Utc::now()) } },
                    doc! { "$set": { "token": token, "until": until } },
                )
                .await
                .map_err(mongo)?;
            if taken.modified_count == 0 {
                still.push(*job);
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        unlock_jobs(locks, jobs, token).await;
        if started.elapsed() > LOCK_WAIT {
            return Err(sundial_core::Error::Store {
                store: "mongodb",
                temporary: true,
                source: format!(
                    "waited {LOCK_WAIT:?} for another scheduler's run lock on job '{}'",
                    still[0]
                )
                .into(),
            });
        }
        let jitter = fastrand::u64(0..=pause);
        tokio::time::sleep(std::time::Duration::from_millis(pause + jitter)).await;
        pause = (pause * 2).min(50);
    }
}

/// Releases this call's locks (a lock left behind lapses on its own).
async fn unlock_jobs(locks: &Collection<Document>, jobs: &[&str], token: &str) {
    if let Err(e) = locks
        .delete_many(doc! { "_id": { "$in": jobs }, "token": token })
        .await
    {
        tracing::warn!(error = %e, "cannot release run locks; they lapse on their own");
    }
}

pub(crate) async fn insert_runs(
    runs: &Collection<Document>,
    locks: &Collection<Document>,
    batch: &[NewRun],
) -> sundial_core::Result<Vec<RunInsert>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    // Jobs whose running runs limit this call: locked, so that concurrent
    // callers count and insert runs of one job one at a time.
    let limited: BTreeSet<&str> = batch
        .iter()
        .filter(|r| r.record.state == RunState::Running && r.max_instances.is_some())
        .map(|r| r.record.job_id.as_str())
        .collect();
    if limited.is_empty() {
        return insert_counted(runs, batch).await;
    }
    let jobs: Vec<&str> = limited.into_iter().collect();
    let token = uuid::Uuid::new_v4().simple().to_string();
    lock_jobs(locks, &jobs, &token).await?;
    let result = insert_counted(runs, batch).await;
    unlock_jobs(locks, &jobs, &token).await;
    result
}

/// Counts the limited jobs' running runs, then inserts the batch (runs over
/// a job's limit as `skipped`).
async fn insert_counted(
    runs: &Collection<Document>,
    batch: &[NewRun],
) -> sundial_core::Result<Vec<RunInsert>> {
    // Running runs per limited job, counted once before this call's inserts.
    let limited: BTreeSet<&str> = batch
        .iter()
        .filter(|r| r.record.state == RunState::Running && r.max_instances.is_some())
        .map(|r| r.record.job_id.as_str())
        .collect();
    let mut running: HashMap<String, usize> = HashMap::new();
    if !limited.is_empty() {
        let jobs: Vec<&str> = limited.into_iter().collect();
        let found: Vec<Document> = runs
            .find(doc! { "job_id": { "$in": jobs }, "state": RunState::Running.as_str() })
            .projection(doc! { "_id": 0, "job_id": 1 })
            .await
            .map_err(mongo)?
            .try_collect()
            .await
            .map_err(mongo)?;
        for d in &found {
            if let Ok(job) = d.get_str("job_id") {
                *running.entry(job.to_string()).or_default() += 1;
            }
        }
    }
    let mut out = Vec::with_capacity(batch.len());
    let mut docs = Vec::with_capacity(batch.len());
    for r in batch {
        let rec = &r.record;
        let full = rec.state == RunState::Running
            && r.max_instances.is_some_and(|max| {
                let n = running.get(rec.job_id.as_str()).copied().unwrap_or(0);
                n >= max.max(1) as usize
            });
        if full {
            let mut skipped = rec.clone();
            skipped.state = RunState::Skipped;
            skipped.heartbeat_until = None;
            skipped.finished_at = skipped.started_at;
            docs.push(to_document(&skipped));
            out.push(RunInsert::Inserted(RunState::Skipped));
        } else {
            docs.push(to_document(rec));
            out.push(RunInsert::Inserted(rec.state));
        }
    }
    if let Err(e) = runs.insert_many(docs).ordered(false).await {
        // Unordered: every document was tried; duplicates are per-document answers.
        let duplicates = match &*e.kind {
            ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => failure
                .write_errors
                .as_ref()
                .filter(|ws| {
                    ws.iter()
                        .all(|w| w.code == DUPLICATE_KEY && w.index < out.len())
                })
                .map(|ws| ws.iter().map(|w| w.index).collect::<Vec<_>>()),
            _ => None,
        };
        let Some(duplicates) = duplicates else {
            return Err(mongo(e));
        };
        for i in duplicates {
            out[i] = RunInsert::Duplicate;
        }
    }
    Ok(out)
}

/// See [`JobStore::finish_runs`](sundial_core::store::JobStore::finish_runs).
pub(crate) async fn finish_runs(
    db: &Database,
    runs: &Collection<Document>,
    owner: &OwnerId,
    finishes: &[RunFinish],
) -> sundial_core::Result<u64> {
    let unfinished = vec![RunState::Running.as_str(), RunState::Interrupted.as_str()];
    let mut total = 0_u64;
    // One `update` command per chunk, its statements applied in order: the same
    // as one `update_one` per finish, in one round trip.
    for chunk in finishes.chunks(FINISH_CHUNK) {
        let updates: Vec<Document> = chunk
            .iter()
            .map(|f| {
                let mut set = doc! {
                    "state": f.state.as_str(),
                    "finished": date(f.finished_at),
                    "finished_us": micros(f.finished_at),
                };
                let mut unset = doc! { "heartbeat": "", "heartbeat_us": "" };
                match &f.error {
                    Some(error) => set.insert("error", error.as_str()),
                    None => unset.insert("error", ""),
                };
                doc! {
                    "q": { "_id": f.id.as_str(), "owner": owner.as_str(), "state": { "$in": &unfinished } },
                    "u": { "$set": set, "$unset": unset },
                }
            })
            .collect();
        let reply = db
            .run_command(doc! {
                "update": runs.name(),
                "updates": updates,
                "ordered": true,
            })
            .await
            .map_err(mongo)?;
        if let Ok(errors) = reply.get_array("writeErrors") {
            if !errors.is_empty() {
                return Err(core_err(Error::Write(format!(
                    "finishing runs: {}",
                    Bson::Array(errors.clone())
                ))));
            }
        }
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(core_err(Error::Write(format!(
                "finishing runs: write concern: {wce}"
            ))));
        }
        let matched = reply.get("n").and_then(integer).ok_or_else(|| {
            core_err(Error::Write(format!(
                "finishing runs: the server's reply has no count: {reply}"
            )))
        })?;
        total += u64::try_from(matched).unwrap_or(0);
    }
    Ok(total)
}

/// See [`JobStore::heartbeat_runs`](sundial_core::store::JobStore::heartbeat_runs).
pub(crate) async fn heartbeat_runs(
    runs: &Collection<Document>,
    owner: &OwnerId,
    ids: &[RunId],
    until: DateTime<Utc>,
) -> sundial_core::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = ids.iter().map(RunId::as_str).collect();
    let r = runs
        .update_many(
            doc! {
                "_id": { "$in": ids },
                "owner": owner.as_str(),
                "state": RunState::Running.as_str(),
            },
            doc! { "$set": { "heartbeat": date(until), "heartbeat_us": micros(until) } },
        )
        .await
        .map_err(mongo)?;
    Ok(r.matched_count)
}

/// See [`JobStore::interrupt_lapsed`](sundial_core::store::JobStore::interrupt_lapsed).
pub(crate) async fn interrupt_lapsed(
    runs: &Collection<Document>,
    now: DateTime<Utc>,
    limit: usize,
) -> sundial_core::Result<Vec<RunRecord>> {
    let lapsed = doc! {
        "state": RunState::Running.as_str(),
        "heartbeat_us": { "$lt": micros(now) },
    };
    let update = doc! {
        "$set": {
            "state": RunState::Interrupted.as_str(),
            "finished": date(now),
            "finished_us": micros(now),
            "error": INTERRUPTED_ERROR,
        },
        "$unset": { "heartbeat": "", "heartbeat_us": "" },
    };
    let mut out = Vec::new();
    let mut taken = 0_usize;
    for _ in 0..SWEEP_ROUNDS {
        let want = limit.saturating_sub(taken);
        if want == 0 {
            break;
        }
        let candidates: Vec<Bson> = runs
            .find(lapsed.clone())
            .sort(doc! { "_id": 1 })
            .limit(limit_i64(want))
            .projection(doc! { "_id": 1 })
            .await
            .map_err(mongo)?
            .try_collect::<Vec<Document>>()
            .await
            .map_err(mongo)?
            .into_iter()
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        let found = candidates.len();
        // Each update re-checks the lapse: a run another sweeper (or its owner's
        // heartbeat) got to first no longer matches, so it is returned once.
        let updated: Vec<Option<Document>> = futures::stream::iter(candidates)
            .map(|id| {
                let mut filter = lapsed.clone();
                filter.insert("_id", id);
                runs.find_one_and_update(filter, update.clone())
                    .return_document(ReturnDocument::After)
                    .into_future()
            })
            .buffered(SWEEP_CONCURRENCY)
            .try_collect()
            .await
            .map_err(mongo)?;
        for d in updated.iter().flatten() {
            taken += 1;
            out.extend(decode(runs, d));
        }
        if found < want {
            break;
        }
    }
    Ok(out)
}

/// See [`JobStore::query_runs`](sundial_core::store::JobStore::query_runs).
pub(crate) async fn query_runs(
    runs: &Collection<Document>,
    query: &RunQuery,
) -> sundial_core::Result<Vec<RunRecord>> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let mut filter = Document::new();
    if let Some(job) = &query.job_id {
        filter.insert("job_id", job.as_str());
    }
    if let Some(state) = query.state {
        filter.insert("state", state.as_str());
    }
    if let Some(since) = query.since {
        filter.insert("scheduled_us", doc! { "$gte": micros(since) });
    }
    let docs: Vec<Document> = runs
        .find(filter)
        .sort(doc! { "scheduled_us": -1, "attempt": -1, "_id": 1 })
        .limit(limit_i64(query.limit))
        .await
        .map_err(mongo)?
        .try_collect()
        .await
        .map_err(mongo)?;
    let mut out: Vec<RunRecord> = docs.iter().filter_map(|d| decode(runs, d)).collect();
    sort_runs(&mut out);
    out.truncate(query.limit);
    Ok(out)
}

/// See [`JobStore::prune_runs`](sundial_core::store::JobStore::prune_runs).
pub(crate) async fn prune_job_runs(
    runs: &Collection<Document>,
    keep: usize,
    before: DateTime<Utc>,
) -> sundial_core::Result<u64> {
    // Jobs with more than `keep` runs, then, per job, the runs past its newest `keep`.
    let crowded: Vec<Document> = runs
        .aggregate(vec![
            doc! { "$group": { "_id": "$job_id", "n": { "$sum": 1 } } },
            doc! { "$match": { "n": { "$gt": limit_i64(keep) } } },
        ])
        .await
        .map_err(mongo)?
        .try_collect()
        .await
        .map_err(mongo)?;
    let mut deleted = 0;
    for job in crowded {
        let Ok(job_id) = job.get_str("_id") else {
            continue;
        };
        let old: Vec<Document> = runs
            .find(doc! { "job_id": job_id })
            .sort(doc! { "scheduled_us": -1, "attempt": -1 })
            .skip(u64::try_from(keep).unwrap_or(u64::MAX))
            .projection(doc! { "_id": 1, "scheduled_us": 1, "state": 1 })
            .await
            .map_err(mongo)?
            .try_collect()
            .await
            .map_err(mongo)?;
        let ids: Vec<Bson> = old
            .iter()
            .filter(|d| {
                d.get_str("state") != Ok(RunState::Running.as_str())
                    && d.get("scheduled_us")
                        .and_then(integer)
                        .is_some_and(|t| t < micros(before))
            })
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        for chunk in ids.chunks(1000) {
            let r = runs
                .delete_many(doc! { "_id": { "$in": chunk.to_vec() } })
                .await
                .map_err(mongo)?;
            deleted += r.deleted_count;
        }
    }
    Ok(deleted)
}

pub(crate) async fn prune_runs(
    runs: &Collection<Document>,
    before: DateTime<Utc>,
) -> sundial_core::Result<u64> {
    let r = runs
        .delete_many(doc! {
            "scheduled_us": { "$lt": micros(before) },
            "state": { "$ne": RunState::Running.as_str() },
        })
        .await
        .map_err(mongo)?;
    Ok(r.deleted_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn documents_round_trip_every_field() {
        let slot = at("2026-03-04T05:06:07.123456Z");
        let mut rec = RunRecord::running(
            JobId::new("a"),
            slot,
            3,
            OwnerId::new("o"),
            slot + chrono::Duration::microseconds(7),
            slot + chrono::Duration::seconds(30),
        );
        rec.error = Some("boom ✗".into());
        assert_eq!(from_document(&to_document(&rec)).unwrap(), rec);

        let missed = RunRecord::terminal(
            JobId::new("b"),
            slot,
            1,
            RunState::Missed,
            OwnerId::new("o"),
            slot,
            None,
        );
        let d = to_document(&missed);
        assert!(!d.contains_key("started_us") && !d.contains_key("heartbeat"));
        assert_eq!(from_document(&d).unwrap(), missed);
    }

    #[test]
    fn unreadable_documents_say_why() {
        let slot = at("2026-03-04T05:06:07Z");
        let rec = RunRecord::terminal(
            JobId::new("b"),
            slot,
            1,
            RunState::Failed,
            OwnerId::new("o"),
            slot,
            None,
        );
        let good = to_document(&rec);
        let mut bad_state = good.clone();
        bad_state.insert("state", "exploded");
        assert!(from_document(&bad_state).unwrap_err().contains("exploded"));
        let mut bad_attempt = good.clone();
        bad_attempt.insert("attempt", -1_i64);
        assert!(from_document(&bad_attempt).is_err());
        let mut bad_owner = good.clone();
        bad_owner.insert("owner", 5_i32);
        assert!(from_document(&bad_owner).is_err());
        let mut no_slot = good.clone();
        no_slot.remove("scheduled_us");
        no_slot.remove("scheduled");
        assert!(from_document(&no_slot).is_err());
        // A document written by hand with dates only is read to the millisecond.
        let mut dates_only = good;
        dates_only.remove("scheduled_us");
        dates_only.remove("finished_us");
        assert_eq!(from_document(&dates_only).unwrap(), rec);
    }
}
