//! MongoDB job store for Sundial.
//!
//! One document per job:
//!
//! ```text
//! { _id: "<job id>",
//!   job: "<JSON text>",                            // task, trigger, args, options, as the scheduler wrote them
//!   next_run_time: Date, next_run_time_us: Int64,  // absent when paused
//!   lease_owner: "<owner>", lease_until: Date, lease_until_us: Int64, lease_token: "<claim>",
//!   insert_token: "<add_jobs call>",               // set by add_jobs; never read
//!   version: Int64 }
//! ```
//!
//! The job's content is kept as the text the scheduler wrote, not as a
//! document: a BSON document would read arguments shaped like extended JSON
//! (`{"$numberLong": "5"}`, `{"$date": …}`) as BSON values and give them back
//! changed. Documents that an earlier version wrote with a `job` sub-document
//! are read as well (turned back into text).
//!
//! BSON dates hold milliseconds, so the exact microsecond times are kept beside
//! them; queries use both. A partial index on `(next_run_time, _id)` covers only
//! scheduled (unpaused) jobs.
//!
//! `acquire_due` claims a batch without transactions: it reads candidate ids,
//! then one `update_many` re-checks each document's "due and unleased" condition
//! while setting the lease with a fresh claim token (each document update is
//! atomic, so a job can be claimed by one owner only), then reads back the
//! documents carrying its token. `release` updates with a filter on owner and
//! version. `add_jobs` inserts its batch with a per-call `insert_token`; when the
//! insert fails part-way (another process added one of the ids), it deletes only
//! the documents carrying that token; the token is left on success. Only standard
//! MongoDB operations are used.
//!
//! The run ledger lives in `<collection>_runs`, one document per run (see the
//! field list below). A unique index on `(job_id, scheduled_us, attempt)` decides
//! which of several processes starts a slot: runs are inserted with an unordered
//! `insert_many`, and a duplicate-key error for a document means another process
//! recorded that slot first. Lapsed runs are interrupted with one conditional
//! `find_one_and_update` each, so a run is handed to one sweeper only.
//!
//! ```text
//! { _id: "<run id>", job_id, scheduled: Date, scheduled_us: Int64, attempt: Int64,
//!   state: "running" | "succeeded" | ..., owner, node,
//!   started / finished / heartbeat: Date, with started_us / finished_us / heartbeat_us: Int64,
//!   error }                                        // absent fields are unset
//! ```
//!
//! | capability | value |
//! |---|---|
//! | persistent | yes |
//! | shared across processes | yes |
//! | tested against | SecantusDB 0.7.0b3 (MongoDB wire protocol), standalone |

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use sundial_core::job::{JobContent, JobId, JobRecord, Lease, OwnerId, Release, ReleaseOutcome};
use sundial_core::node::NodeRecord;
use sundial_core::redact::redact_url;
use sundial_core::run::{NewRun, RunFinish, RunId, RunInsert, RunQuery, RunRecord};
use sundial_core::store::{
    lease_duration, release_entry, sort_records, update_refused, ChangeStream, JobCounts, JobStore,
    ReleaseItem, StoreCapabilities,
};
use tokio::sync::OnceCell;

mod ledger;

use ledger::{create_run_indexes, RUNS_SUFFIX};

/// The node registry collection is the jobs collection's name plus this.
const NODES_SUFFIX: &str = "_nodes";

/// The collection of per-job run locks is the jobs collection's name plus this.
const LOCKS_SUFFIX: &str = "_runlocks";

/// The default database name (when the URL names none).
pub const DEFAULT_DATABASE: &str = "sundial";
/// The default collection name.
pub const DEFAULT_COLLECTION: &str = "sundial_jobs";

/// The field that marks the documents one `add_jobs` call inserted until it
/// succeeds, so that a failed call removes only its own.
const INSERT_TOKEN: &str = "insert_token";

/// Errors of the MongoDB store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The driver or server failed.
    #[error("{0}")]
    Mongo(#[from] mongodb::error::Error),
    /// The server could not be reached, or refused the connection.
    #[error("cannot connect to mongo at {hosts}: {source}")]
    Connect {
        /// The servers' `host:port` list from the URL.
        hosts: String,
        /// Why connecting failed.
        source: mongodb::error::Error,
    },
    /// A job could not be converted to or from BSON.
    #[error("job '{id}' cannot be stored as BSON: {reason}")]
    Bson {
        /// The job id.
        id: String,
        /// What failed.
        reason: String,
    },
    /// A store method was called before `start`.
    #[error("store is not started (call start() or start the scheduler)")]
    NotStarted,
    /// The server refused a write of a batch command.
    #[error("write failed: {0}")]
    Write(String),
    /// A batch insert failed part-way, and removing the documents it had
    /// inserted failed too: some of them may remain.
    #[error(
        "{cause}; removing the jobs this call had inserted failed too, some may remain: {rollback}"
    )]
    Rollback {
        /// Why the insert failed.
        cause: String,
        /// Why removing the inserted documents failed.
        rollback: mongodb::error::Error,
    },
}

impl Error {
    fn is_temporary(&self) -> bool {
        match self {
            Error::Mongo(e) | Error::Connect { source: e, .. } => {
                use mongodb::error::ErrorKind;
                matches!(
                    *e.kind,
                    ErrorKind::Io(_)
                        | ErrorKind::ServerSelection { .. }
                        | ErrorKind::ConnectionPoolCleared { .. }
                ) || e.contains_label("RetryableWriteError")
                    || e.contains_label("TransientTransactionError")
            }
            _ => false,
        }
    }

    /// The batch position of the first document a bulk insert refused as a duplicate.
    fn duplicate_index(&self) -> Option<usize> {
        use mongodb::error::ErrorKind;
        match self {
            Error::Mongo(e) => match &*e.kind {
                ErrorKind::InsertMany(i) => i
                    .write_errors
                    .as_ref()?
                    .iter()
                    .find(|w| w.code == 11000)
                    .map(|w| w.index),
                _ => None,
            },
            _ => None,
        }
    }

    fn is_duplicate_key(&self) -> bool {
        match self {
            Error::Mongo(e) => {
                use mongodb::error::{ErrorKind, WriteFailure};
                match &*e.kind {
                    ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
                    ErrorKind::InsertMany(i) => i
                        .write_errors
                        .as_ref()
                        .is_some_and(|ws| ws.iter().any(|w| w.code == 11000)),
                    ErrorKind::Command(c) => c.code == 11000,
                    _ => {
                        e.to_string().contains("E11000") || e.to_string().contains("duplicate key")
                    }
                }
            }
            _ => false,
        }
    }
}

/// A store error of `mongo`, temporary when it is a connection problem.
impl From<Error> for sundial_core::Error {
    fn from(e: Error) -> Self {
        core_err(e)
    }
}

/// Whether `e` means the servers could not be reached or refused the client.
fn is_connect_failure(e: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    matches!(
        *e.kind,
        ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::Authentication { .. }
            | ErrorKind::DnsResolve { .. }
            | ErrorKind::ConnectionPoolCleared { .. }
    )
}

fn core_err(e: Error) -> sundial_core::Error {
    if e.is_temporary() {
        sundial_core::Error::store_temporary("mongo", e)
    } else {
        sundial_core::Error::store("mongo", e)
    }
}

/// Whether the server refused a change stream because it has none (a
/// standalone server: change streams need a replica set).
fn change_streams_unsupported(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        mongodb::error::ErrorKind::Command(c) => matches!(c.code, 40573 | 40324 | 20 | 115),
        _ => false,
    }
}

/// `filter`, narrowed to ids outside `skip`.
fn skipping(mut filter: Document, skip: &[JobId]) -> Document {
    if !skip.is_empty() {
        let ids: Vec<&str> = skip.iter().map(JobId::as_str).collect();
        filter.insert("_id", doc! { "$nin": ids });
    }
    filter
}

fn mongo(e: mongodb::error::Error) -> sundial_core::Error {
    core_err(Error::Mongo(e))
}

fn date(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
}

/// A job store in a MongoDB collection.
///
/// # Examples
/// ```no_run
/// use sundial_jobstore_mongo::MongoJobStore;
/// let store = MongoJobStore::from_url("mongodb://127.0.0.1:27017/app")
///     .with_collection("billing_jobs");
/// ```
#[derive(Debug)]
pub struct MongoJobStore {
    source: Source,
    database: Option<String>,
    collection: String,
    colls: OnceCell<Collections>,
}

/// The collections of a started store.
#[derive(Debug)]
struct Collections {
    db: Database,
    jobs: Collection<Document>,
    runs: Collection<Document>,
    nodes: Collection<Document>,
    /// Short-lived per-job locks that serialise counting and inserting runs.
    locks: Collection<Document>,
}

enum Source {
    Url(String),
    Client(Client),
}

/// Shows the URL without its password (the driver's `Debug` of a client hides
/// its credential).
impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Url(url) => f.debug_tuple("Url").field(&redact_url(url)).finish(),
            Source::Client(client) => f.debug_tuple("Client").field(client).finish(),
        }
    }
}

impl MongoJobStore {
    /// A store on the server at `url` (`mongodb://…`); connects on start. The
    /// database is the URL's, or `sundial`.
    pub fn from_url(url: &str) -> Self {
        MongoJobStore {
            source: Source::Url(url.to_string()),
            database: None,
            collection: DEFAULT_COLLECTION.to_string(),
            colls: OnceCell::new(),
        }
    }

    /// A store on an existing client.
    pub fn from_client(client: Client) -> Self {
        MongoJobStore {
            source: Source::Client(client),
            database: None,
            collection: DEFAULT_COLLECTION.to_string(),
            colls: OnceCell::new(),
        }
    }

    /// Uses database `name`.
    pub fn with_database(mut self, name: impl Into<String>) -> Self {
        self.database = Some(name.into());
        self
    }

    /// Uses collection `name` (several job sets can share one database); the
    /// run ledger goes to `<name>_runs`, the node registry to `<name>_nodes`
    /// and the short-lived locks that serialise run starts of one job to
    /// `<name>_runlocks`.
    pub fn with_collection(mut self, name: impl Into<String>) -> Self {
        self.collection = name.into();
        self
    }

    /// Drops the jobs collection, its run ledger and node registry (tests and tools).
    ///
    /// # Errors
    /// Driver errors.
    pub async fn drop_collection(&self) -> sundial_core::Result<()> {
        self.start().await?;
        self.coll()?.drop().await.map_err(mongo)?;
        self.colls()?.nodes.drop().await.map_err(mongo)?;
        self.colls()?.locks.drop().await.map_err(mongo)?;
        self.runs()?.drop().await.map_err(mongo)
    }

    fn colls(&self) -> sundial_core::Result<&Collections> {
        self.colls.get().ok_or_else(|| core_err(Error::NotStarted))
    }

    fn coll(&self) -> sundial_core::Result<&Collection<Document>> {
        Ok(&self.colls()?.jobs)
    }

    fn runs(&self) -> sundial_core::Result<&Collection<Document>> {
        Ok(&self.colls()?.runs)
    }

    async fn connect(&self) -> Result<Collections, Error> {
        let (client, url_db, hosts) = match &self.source {
            Source::Client(c) => (c.clone(), None, None),
            Source::Url(url) => {
                let mut opts = ClientOptions::parse(url).await?;
                opts.server_selection_timeout = Some(Duration::from_secs(10));
                opts.connect_timeout = Some(Duration::from_secs(5));
                opts.app_name.get_or_insert_with(|| "sundial".into());
                let db = opts.default_database.clone();
                let hosts = opts
                    .hosts
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                (Client::with_options(opts)?, db, Some(hosts))
            }
        };
        let db_name = self
            .database
            .clone()
            .or(url_db)
            .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
        let db = client.database(&db_name);
        let coll = db.collection::<Document>(&self.collection);
        let index = IndexModel::builder()
            .keys(doc! { "next_run_time": 1, "_id": 1 })
            .options(
                IndexOptions::builder()
                    .name(Some("next_run_time_scheduled".to_string()))
                    .partial_filter_expression(Some(doc! { "next_run_time": { "$exists": true } }))
                    .build(),
            )
            .build();
        // The first command: a failure to reach the servers shows here.
        coll.create_index(index).await.map_err(|e| match hosts {
            Some(hosts) if is_connect_failure(&e) => Error::Connect { hosts, source: e },
            _ => Error::Mongo(e),
        })?;
        let lease_index = IndexModel::builder()
            .keys(doc! { "lease_token": 1 })
            .build();
        coll.create_index(lease_index).await?;
        let runs = db.collection::<Document>(&format!("{}{RUNS_SUFFIX}", self.collection));
        create_run_indexes(&runs).await?;
        let nodes = db.collection::<Document>(&format!("{}{NODES_SUFFIX}", self.collection));
        let locks = db.collection::<Document>(&format!("{}{LOCKS_SUFFIX}", self.collection));
        Ok(Collections {
            db,
            jobs: coll,
            runs,
            nodes,
            locks,
        })
    }

    fn to_document(rec: &JobRecord) -> sundial_core::Result<Document> {
        let job = rec.content.as_str();
        let mut d = doc! {
            "_id": rec.id.as_str(),
            "job": job,
            "version": 0_i64,
        };
        if let Some(t) = rec.next_run_time {
            d.insert("next_run_time", date(t));
            d.insert("next_run_time_us", micros(t));
        }
        Ok(d)
    }

    fn from_document(d: &Document) -> JobRecord {
        let id = d.get_str("_id").unwrap_or_default().to_string();
        // Kept as found: the scheduler reports content it cannot decode.
        let content = match d.get("job") {
            Some(Bson::String(text)) => text.clone(),
            // An earlier version's readable sub-document.
            Some(other) => other.clone().into_relaxed_extjson().to_string(),
            None => String::new(),
        };
        let lease = match (d.get_str("lease_owner"), d.get_i64("lease_until_us")) {
            (Ok(owner), Ok(until)) => from_micros(until).map(|until| Lease {
                owner: OwnerId::new(owner),
                until,
            }),
            _ => None,
        };
        JobRecord::stored(
            JobId::new(id),
            JobContent::from_stored(content),
            d.get_i64("next_run_time_us").ok().and_then(from_micros),
            lease,
            d.get_i64("version")
                .ok()
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(0),
        )
    }

    fn schedule_update(next: Option<DateTime<Utc>>) -> Document {
        match next {
            Some(t) => doc! { "$set": { "next_run_time": date(t), "next_run_time_us": micros(t) } },
            None => doc! { "$unset": { "next_run_time": "", "next_run_time_us": "" } },
        }
    }

    async fn find_all(
        &self,
        filter: Document,
        sort: Document,
    ) -> sundial_core::Result<Vec<Document>> {
        self.coll()?
            .find(filter)
            .sort(sort)
            .await
            .map_err(mongo)?
            .try_collect()
            .await
            .map_err(mongo)
    }
}

fn merge(mut a: Document, b: Document) -> Document {
    for (k, v) in b {
        match (a.get_mut(&k), v) {
            (Some(Bson::Document(existing)), Bson::Document(more)) => existing.extend(more),
            (_, v) => {
                a.insert(k, v);
            }
        }
    }
    a
}

#[async_trait]
impl JobStore for MongoJobStore {
    fn backend(&self) -> &'static str {
        "mongo"
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::SHARED_PERSISTENT
    }

    async fn start(&self) -> sundial_core::Result<()> {
        self.colls
            .get_or_try_init(|| self.connect())
            .await
            .map_err(core_err)?;
        Ok(())
    }

    async fn watch_changes(&self) -> sundial_core::Result<Option<ChangeStream>> {
        use futures::StreamExt as _;
        // Inserts, and updates that set a next run time or drop a lease:
        // claims (which only set a lease) wake nobody.
        let pipeline = [doc! { "$match": { "$or": [
            { "operationType": { "$in": ["insert", "replace"] } },
            { "updateDescription.updatedFields.next_run_time_us": { "$exists": true } },
            { "updateDescription.removedFields": "lease_owner" },
        ] } }];
        match self.coll()?.watch().pipeline(pipeline).await {
            Ok(events) => Ok(Some(
                events
                    .take_while(|e| std::future::ready(e.is_ok()))
                    .map(|_| ())
                    .boxed(),
            )),
            // A standalone server has no change streams: the scheduler polls.
            Err(e) if change_streams_unsupported(&e) => Ok(None),
            Err(e) => Err(mongo(e)),
        }
    }

    async fn add_job(&self, job: &JobRecord) -> sundial_core::Result<()> {
        let d = Self::to_document(job)?;
        match self.coll()?.insert_one(d).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = Error::Mongo(e);
                if e.is_duplicate_key() {
                    Err(sundial_core::Error::ConflictingId {
                        id: job.id.to_string(),
                    })
                } else {
                    Err(core_err(e))
                }
            }
        }
    }

    async fn add_jobs(&self, jobs: &[JobRecord]) -> sundial_core::Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut seen = std::collections::HashSet::new();
        for j in jobs {
            if !seen.insert(&j.id) {
                return Err(sundial_core::Error::ConflictingId {
                    id: j.id.to_string(),
                });
            }
        }
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        if let Some(existing) = self
            .coll()?
            .find_one(doc! { "_id": { "$in": &ids } })
            .await
            .map_err(mongo)?
        {
            return Err(sundial_core::Error::ConflictingId {
                id: existing.get_str("_id").unwrap_or_default().to_string(),
            });
        }
        // Every document this call inserts carries its token, so that undoing a
        // failed batch removes only ours, never a job with one of the ids that
        // another process inserted meanwhile (the very conflict that failed it).
        let token = uuid::Uuid::new_v4().simple().to_string();
        let docs = jobs
            .iter()
            .map(|j| {
                let mut d = Self::to_document(j)?;
                d.insert(INSERT_TOKEN, token.as_str());
                Ok(d)
            })
            .collect::<sundial_core::Result<Vec<_>>>()?;
        let coll = self.coll()?;
        let mine = doc! { "_id": { "$in": &ids }, INSERT_TOKEN: token.as_str() };
        if let Err(e) = coll.insert_many(docs).ordered(true).await {
            let e = Error::Mongo(e);
            if let Err(undo) = coll.delete_many(mine).await {
                return Err(core_err(Error::Rollback {
                    cause: e.to_string(),
                    rollback: undo,
                }));
            }
            if e.is_duplicate_key() {
                let id = e
                    .duplicate_index()
                    .and_then(|i| ids.get(i))
                    .or(ids.first())
                    .copied()
                    .unwrap_or_default();
                return Err(sundial_core::Error::ConflictingId { id: id.to_string() });
            }
            return Err(core_err(e));
        }
        // The jobs are in. The token stays (nothing reads it; the next write of
        // the job replaces the document's content fields only): dropping it would
        // cost one more write per job.
        Ok(())
    }

    async fn update_job(&self, job: &JobRecord) -> sundial_core::Result<()> {
        let content = job.content.as_str();
        let update = merge(
            doc! { "$set": { "job": content }, "$inc": { "version": 1_i64 } },
            Self::schedule_update(job.next_run_time),
        );
        let read = i64::try_from(job.version).unwrap_or(i64::MAX);
        let r = self
            .coll()?
            .update_one(doc! { "_id": job.id.as_str(), "version": read }, update)
            .await
            .map_err(mongo)?;
        if r.matched_count == 0 {
            let exists = self
                .coll()?
                .find_one(doc! { "_id": job.id.as_str() })
                .projection(doc! { "_id": 1 })
                .await
                .map_err(mongo)?
                .is_some();
            return Err(update_refused(job, exists));
        }
        Ok(())
    }

    async fn remove_job(&self, id: &JobId) -> sundial_core::Result<()> {
        let r = self
            .coll()?
            .delete_one(doc! { "_id": id.as_str() })
            .await
            .map_err(mongo)?;
        if r.deleted_count == 0 {
            return Err(sundial_core::Error::JobNotFound { id: id.to_string() });
        }
        Ok(())
    }

    async fn remove_all_jobs(&self) -> sundial_core::Result<()> {
        self.coll()?.delete_many(doc! {}).await.map_err(mongo)?;
        Ok(())
    }

    async fn lookup_job(&self, id: &JobId) -> sundial_core::Result<Option<JobRecord>> {
        let d = self
            .coll()?
            .find_one(doc! { "_id": id.as_str() })
            .await
            .map_err(mongo)?;
        Ok(d.as_ref().map(Self::from_document))
    }

    async fn get_all_jobs(&self) -> sundial_core::Result<Vec<JobRecord>> {
        let docs = self.find_all(doc! {}, doc! { "_id": 1 }).await?;
        let mut all: Vec<JobRecord> = docs.iter().map(Self::from_document).collect();
        sort_records(&mut all);
        Ok(all)
    }

    async fn count_jobs(&self) -> sundial_core::Result<JobCounts> {
        let coll = self.coll()?;
        let all = coll.count_documents(doc! {}).await.map_err(mongo)?;
        let paused = coll
            .count_documents(doc! { "next_run_time": { "$exists": false } })
            .await
            .map_err(mongo)?;
        Ok(JobCounts {
            scheduled: all.saturating_sub(paused),
            paused,
        })
    }

    async fn get_next_run_time(
        &self,
        skip: &[JobId],
    ) -> sundial_core::Result<Option<DateTime<Utc>>> {
        let coll = self.coll()?;
        let unleased = coll
            .find_one(skipping(doc! { "next_run_time": { "$exists": true }, "lease_until_us": { "$exists": false } }, skip))
            .sort(doc! { "next_run_time": 1, "next_run_time_us": 1 })
            .await
            .map_err(mongo)?
            .and_then(|d| d.get_i64("next_run_time_us").ok());
        // Claimed jobs are few (in flight): compute max(next run, lease end) for each.
        let leased = self
            .find_all(
                skipping(doc! { "next_run_time": { "$exists": true }, "lease_until_us": { "$exists": true } }, skip),
                doc! { "_id": 1 },
            )
            .await?
            .iter()
            .filter_map(|d| Some(d.get_i64("next_run_time_us").ok()?.max(d.get_i64("lease_until_us").ok()?)))
            .min();
        Ok(match (unleased, leased) {
            (Some(a), Some(b)) => from_micros(a.min(b)),
            (a, b) => a.or(b).and_then(from_micros),
        })
    }

    async fn acquire_due(
        &self,
        now: DateTime<Utc>,
        owner: &OwnerId,
        lease: Duration,
        limit: usize,
        skip: &[JobId],
    ) -> sundial_core::Result<Vec<JobRecord>> {
        let coll = self.coll()?;
        let now_us = micros(now);
        let due = skipping(
            doc! {
                "next_run_time": { "$lte": date(now) },
                "next_run_time_us": { "$lte": now_us },
                "$or": [
                    { "lease_until_us": { "$exists": false } },
                    { "lease_until_us": { "$lte": now_us } },
                ],
            },
            skip,
        );
        let candidates: Vec<Document> = coll
            .find(due.clone())
            .sort(doc! { "next_run_time": 1, "next_run_time_us": 1, "_id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .projection(doc! { "_id": 1 })
            .await
            .map_err(mongo)?
            .try_collect()
            .await
            .map_err(mongo)?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Bson> = candidates
            .iter()
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        let until = now + lease_duration(lease);
        let token = format!("{}:{}", owner.as_str(), uuid::Uuid::new_v4().simple());
        // The ids found are outside `skip`: replacing the `$nin` keeps that.
        let mut filter = due;
        filter.insert("_id", doc! { "$in": ids });
        coll.update_many(
            filter,
            doc! {
                "$set": {
                    "lease_owner": owner.as_str(),
                    "lease_until": date(until),
                    "lease_until_us": micros(until),
                    "lease_token": &token,
                },
                "$inc": { "version": 1_i64 },
            },
        )
        .await
        .map_err(mongo)?;
        let mine = self
            .find_all(
                doc! { "lease_token": &token },
                doc! { "next_run_time_us": 1, "_id": 1 },
            )
            .await?;
        let mut out: Vec<JobRecord> = mine.iter().map(Self::from_document).collect();
        sort_records(&mut out);
        Ok(out)
    }

    async fn release(
        &self,
        owner: &OwnerId,
        id: &JobId,
        version: u64,
        outcome: Release,
    ) -> sundial_core::Result<ReleaseOutcome> {
        let coll = self.coll()?;
        let v = i64::try_from(version).unwrap_or(i64::MAX);
        let mine = doc! { "_id": id.as_str(), "lease_owner": owner.as_str(), "version": v };
        let clear = doc! {
            "$unset": { "lease_owner": "", "lease_until": "", "lease_until_us": "", "lease_token": "" },
        };
        let applied = match outcome {
            Release::Remove => coll.delete_one(mine).await.map_err(mongo)?.deleted_count > 0,
            Release::Unclaim => {
                let update = merge(clear.clone(), doc! { "$inc": { "version": 1_i64 } });
                coll.update_one(mine, update)
                    .await
                    .map_err(mongo)?
                    .matched_count
                    > 0
            }
            Release::Reschedule { next_run_time } => {
                let update = merge(
                    merge(clear.clone(), doc! { "$inc": { "version": 1_i64 } }),
                    Self::schedule_update(next_run_time),
                );
                coll.update_one(mine, update)
                    .await
                    .map_err(mongo)?
                    .matched_count
                    > 0
            }
        };
        if applied {
            return Ok(ReleaseOutcome::Applied);
        }
        let superseded = coll
            .update_one(
                doc! { "_id": id.as_str(), "lease_owner": owner.as_str() },
                clear,
            )
            .await
            .map_err(mongo)?;
        if superseded.matched_count > 0 {
            return Ok(ReleaseOutcome::Superseded);
        }
        let exists = coll
            .find_one(doc! { "_id": id.as_str() })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(mongo)?
            .is_some();
        if exists {
            Err(sundial_core::Error::LeaseLost { id: id.to_string() })
        } else {
            Ok(ReleaseOutcome::Gone)
        }
    }

    async fn release_many(
        &self,
        owner: &OwnerId,
        items: Vec<ReleaseItem>,
    ) -> sundial_core::Result<Vec<sundial_core::Result<ReleaseOutcome>>> {
        // Removals of exhausted jobs go in one delete; the rest are released
        // concurrently over the driver's connection pool.
        let removes: Vec<Document> = items
            .iter()
            .filter(|i| i.outcome == Release::Remove)
            .map(|i| doc! { "_id": i.id.as_str(), "version": i64::try_from(i.version).unwrap_or(i64::MAX) })
            .collect();
        let mut removed_ids = std::collections::HashSet::new();
        if !removes.is_empty() {
            let coll = self.coll()?;
            let before: Vec<Document> = coll
                .find(doc! { "lease_owner": owner.as_str(), "$or": &removes })
                .projection(doc! { "_id": 1 })
                .await
                .map_err(mongo)?
                .try_collect()
                .await
                .map_err(mongo)?;
            coll.delete_many(doc! { "lease_owner": owner.as_str(), "$or": &removes })
                .await
                .map_err(mongo)?;
            removed_ids.extend(
                before
                    .iter()
                    .filter_map(|d| d.get_str("_id").ok().map(str::to_string)),
            );
        }
        let futures = items.into_iter().map(|it| {
            let done = it.outcome == Release::Remove && removed_ids.contains(it.id.as_str());
            async move {
                if done {
                    return Ok(Ok(ReleaseOutcome::Applied));
                }
                release_entry(self.release(owner, &it.id, it.version, it.outcome).await)
            }
        });
        futures::future::try_join_all(futures).await
    }

    async fn insert_runs(&self, runs: &[NewRun]) -> sundial_core::Result<Vec<RunInsert>> {
        let colls = self.colls()?;
        ledger::insert_runs(&colls.runs, &colls.locks, runs).await
    }

    async fn finish_runs(&self, owner: &OwnerId, runs: &[RunFinish]) -> sundial_core::Result<u64> {
        if runs.is_empty() {
            return Ok(0);
        }
        let colls = self.colls()?;
        ledger::finish_runs(&colls.db, &colls.runs, owner, runs).await
    }

    async fn heartbeat_runs(
        &self,
        owner: &OwnerId,
        ids: &[RunId],
        until: DateTime<Utc>,
    ) -> sundial_core::Result<u64> {
        ledger::heartbeat_runs(self.runs()?, owner, ids, until).await
    }

    async fn interrupt_lapsed(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> sundial_core::Result<Vec<RunRecord>> {
        ledger::interrupt_lapsed(self.runs()?, now, limit).await
    }

    async fn query_runs(&self, query: &RunQuery) -> sundial_core::Result<Vec<RunRecord>> {
        ledger::query_runs(self.runs()?, query).await
    }

    async fn prune_runs(&self, before: DateTime<Utc>) -> sundial_core::Result<u64> {
        ledger::prune_runs(self.runs()?, before).await
    }

    async fn prune_job_runs(
        &self,
        keep: usize,
        before: DateTime<Utc>,
    ) -> sundial_core::Result<u64> {
        ledger::prune_job_runs(self.runs()?, keep, before).await
    }

    async fn upsert_node(
        &self,
        node: &NodeRecord,
        now: DateTime<Utc>,
    ) -> sundial_core::Result<Option<NodeRecord>> {
        let nodes = &self.colls()?.nodes;
        let json = node.to_stored()?;
        let owner = node.owner.as_str();
        // Our own or a lapsed registration matches and is replaced; a live one
        // of another instance does not, so the upsert's insert of the same
        // `_id` fails with a duplicate key.
        for _ in 0..3 {
            let written = nodes
                .update_one(
                    doc! {
                        "_id": owner,
                        "$or": [
                            { "instance": &node.instance },
                            { "expires": { "$lte": micros(now) } },
                        ],
                    },
                    doc! { "$set": {
                        "instance": &node.instance,
                        "expires": micros(node.expires_at),
                        "node": &json,
                    } },
                )
                .upsert(true)
                .await;
            match written {
                Ok(_) => return Ok(None),
                Err(e) if Error::Mongo(e.clone()).is_duplicate_key() => {}
                Err(e) => return Err(mongo(e)),
            }
            let held = nodes.find_one(doc! { "_id": owner }).await.map_err(mongo)?;
            if let Some(cur) = held
                .as_ref()
                .and_then(|d| d.get_str("node").ok())
                .and_then(NodeRecord::from_stored)
            {
                if !cur.yields_to(node, now) {
                    return Ok(Some(cur));
                }
            }
        }
        Err(sundial_core::Error::Store {
            store: "mongodb",
            temporary: true,
            source: format!("node registration of owner '{owner}' kept changing under this call")
                .into(),
        })
    }

    async fn list_nodes(&self) -> sundial_core::Result<Vec<NodeRecord>> {
        let docs: Vec<Document> = self
            .colls()?
            .nodes
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(mongo)?
            .try_collect()
            .await
            .map_err(mongo)?;
        Ok(docs
            .iter()
            .filter_map(|d| d.get_str("node").ok().and_then(NodeRecord::from_stored))
            .collect())
    }

    async fn remove_node(&self, owner: &OwnerId, instance: &str) -> sundial_core::Result<()> {
        self.colls()?
            .nodes
            .delete_one(doc! { "_id": owner.as_str(), "instance": instance })
            .await
            .map_err(mongo)?;
        Ok(())
    }

    async fn prune_nodes(&self, before: DateTime<Utc>) -> sundial_core::Result<u64> {
        let r = self
            .colls()?
            .nodes
            .delete_many(doc! { "expires": { "$lt": micros(before) } })
            .await
            .map_err(mongo)?;
        Ok(r.deleted_count)
    }

    async fn server_time(&self) -> sundial_core::Result<Option<DateTime<Utc>>> {
        let reply = self
            .colls()?
            .db
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(mongo)?;
        // `localTime` has millisecond precision; servers without it have no clock to compare.
        Ok(reply
            .get_datetime("localTime")
            .ok()
            .and_then(|t| DateTime::from_timestamp_millis(t.timestamp_millis())))
    }
}
