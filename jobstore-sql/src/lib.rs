//! SQL job stores for Sundial: SQLite (embedded, through rusqlite with the
//! bundled library), PostgreSQL and MySQL/MariaDB (through sqlx).
//!
//! One row per job: `id` (primary key), `next_run_time` (microseconds since the
//! Unix epoch, UTC, indexed; NULL when paused), `job` (JSON: task, trigger, args,
//! options), `lease_owner`, `lease_until` (indexed: the earliest due time is read
//! from the two indexes, not from every row), `version`. A table
//! `sundial_schema_versions` records each job table's schema version, so later
//! versions can migrate and older builds refuse a newer schema instead of
//! overwriting it.
//!
//! The run ledger lives in `<table>_runs`, one row per started (or missed,
//! skipped) slot: `run_id` (primary key), `job_id`, `scheduled` (the slot,
//! microseconds), `attempt`, `state` (`running`, `succeeded`, ...), `owner`,
//! `node`, `started`, `finished`, `heartbeat` (microseconds, NULL once the run
//! is over) and `error`. A unique key on (`job_id`, `scheduled`, `attempt`) lets
//! exactly one of several processes start a slot: runs are inserted with
//! `ON CONFLICT DO NOTHING` (`INSERT IGNORE` on MySQL) and only the inserted ones
//! run. The instance count and the lapsed-heartbeat sweep read running runs
//! through an index of running runs only (partial index on (`job_id`,
//! `heartbeat`); MySQL: (`state`, `heartbeat`)); one on `scheduled` serves
//! listing and pruning.
//! Removing jobs keeps their runs. Older schemas (1: no run table, 2: no node
//! table, 3: no lease index) are upgraded in place by `start`.
//!
//! | capability | SQLite | PostgreSQL | MySQL/MariaDB |
//! |---|---|---|---|
//! | persistent | yes | yes | yes |
//! | shared across processes | yes (same file) | yes | yes |
//! | atomic claim | `BEGIN IMMEDIATE` | `FOR UPDATE SKIP LOCKED` | `FOR UPDATE SKIP LOCKED` |
//! | one start per slot | unique key, `ON CONFLICT DO NOTHING` | unique key, `ON CONFLICT DO NOTHING` | unique key, `INSERT IGNORE` |
//! | tested against | bundled SQLite | PostgreSQL 15 | MariaDB 10.11 |

mod ledger;
mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod sqlx_backend;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use sundial_core::job::{JobId, JobRecord, OwnerId, Release, ReleaseOutcome};
use sundial_core::node::NodeRecord;
use sundial_core::redact::redact_url;
use sundial_core::run::{NewRun, RunFinish, RunId, RunInsert, RunQuery, RunRecord};
use sundial_core::store::{
    lease_duration, release_entry, sort_records, update_refused, ChangeNotifier, ChangeStream,
    JobCounts, JobStore, ReleaseItem, StoreCapabilities,
};

use ledger::RunBatch;
pub use schema::Dialect;
use schema::{from_micros, to_micros, valid_table, Row, RunRow, Sql, SCHEMA_VERSION};

/// The default job table name.
pub const DEFAULT_TABLE: &str = "sundial_jobs";

/// How long `start` waits for another process to finish creating or upgrading
/// the schema.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const SCHEMA_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How many rows one multi-row INSERT carries in `add_jobs`.
const INSERT_CHUNK: usize = 200;

/// How many run ids one heartbeat statement carries.
const HEARTBEAT_CHUNK: usize = 500;

/// How many times a ledger transaction is retried after a deadlock or
/// serialization failure.
const CONFLICT_RETRIES: u32 = 8;

/// How many jobs one bulk release statement carries (SQLite allows at most 500
/// terms in a compound SELECT).
fn release_chunk(dialect: Dialect) -> usize {
    match dialect {
        Dialect::Sqlite => 150,
        _ => 500,
    }
}

/// Errors of the SQL stores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite failed.
    #[cfg(feature = "sqlite")]
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL or MySQL failed (connection, query or protocol).
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    #[error("{0}")]
    Sqlx(#[from] sqlx::Error),
    /// The database server could not be reached, or refused the connection.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    #[error("cannot connect to {backend} at {addr}: {}", connect_cause(.source))]
    Connect {
        /// The backend: `postgres` or `mysql`.
        backend: &'static str,
        /// The server's `host:port` (or socket path).
        addr: String,
        /// Why connecting failed.
        source: sqlx::Error,
    },
    /// The table name is not a plain identifier.
    #[error("invalid table name {0:?}: use letters, digits and '_', starting with a letter, at most 48 characters")]
    InvalidTable(String),
    /// The URL's scheme is not one this build supports.
    #[error("unsupported database URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL (password removed).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The table was created by a newer version of Sundial.
    #[error("table '{table}' has schema version {found}, newer than this build supports ({supported}); upgrade Sundial (nothing was changed)")]
    NewerSchema {
        /// The job table.
        table: String,
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A store method was called before `start`.
    #[error("store is not started (call start() or start the scheduler)")]
    NotStarted,
    /// A worker thread failed.
    #[error("background task failed: {0}")]
    Join(String),
    /// Another process held the schema lock for longer than `start` waits.
    #[error("timed out after {0:?} waiting for another process to finish creating or upgrading the schema (lock {1})")]
    SchemaLockTimeout(std::time::Duration, &'static str),
}

impl Error {
    fn is_temporary(&self) -> bool {
        match self {
            #[cfg(feature = "sqlite")]
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            #[cfg(any(feature = "postgres", feature = "mysql"))]
            Error::Sqlx(e) | Error::Connect { source: e, .. } => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Tls(_)
            ),
            Error::Join(_) => true,
            _ => self.is_retryable_conflict(),
        }
    }

    /// The backend an error came from, as far as the error itself tells
    /// (`sql` when it does not).
    fn backend(&self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            Error::Sqlite(_) | Error::Join(_) => "sqlite",
            #[cfg(any(feature = "postgres", feature = "mysql"))]
            Error::Connect { backend, .. } => backend,
            #[cfg(feature = "postgres")]
            Error::Sqlx(sqlx::Error::Database(e))
                if e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some() =>
            {
                "postgres"
            }
            #[cfg(feature = "mysql")]
            Error::Sqlx(sqlx::Error::Database(e))
                if e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .is_some() =>
            {
                "mysql"
            }
            _ => "sql",
        }
    }

    /// A deadlock or serialization failure: retrying the transaction succeeds.
    fn is_retryable_conflict(&self) -> bool {
        match self {
            #[cfg(any(feature = "postgres", feature = "mysql"))]
            Error::Sqlx(sqlx::Error::Database(e)) => e
                .code()
                .is_some_and(|c| c == "40001" || c == "40P01" || c == "1213"),
            #[cfg(feature = "sqlite")]
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DatabaseBusy
            }
            _ => false,
        }
    }

    fn is_unique_violation(&self) -> bool {
        match self {
            #[cfg(feature = "sqlite")]
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::ConstraintViolation
            }
            #[cfg(any(feature = "postgres", feature = "mysql"))]
            Error::Sqlx(sqlx::Error::Database(e)) => {
                e.is_unique_violation()
                    || e.code()
                        .is_some_and(|c| c == "23505" || c == "23000" || c == "1062")
            }
            _ => false,
        }
    }
}

/// Why a connection failed, without the generic prefix sqlx puts on I/O errors.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn connect_cause(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(e) => e.to_string(),
        sqlx::Error::Database(e) => e.to_string(),
        sqlx::Error::Tls(e) => format!("TLS failed: {e}"),
        other => other.to_string(),
    }
}

/// A bad URL or table name is [`sundial_core::Error::Config`]; anything else
/// is a store error of the backend (`sqlite`, `postgres`, `mysql`, or `sql`
/// when the error does not tell), temporary when it is a connection problem.
impl From<Error> for sundial_core::Error {
    fn from(e: Error) -> Self {
        core_error(e.backend(), e)
    }
}

/// `e` as an error of the store `store`.
fn core_error(store: &'static str, e: Error) -> sundial_core::Error {
    match e {
        Error::InvalidTable(_) | Error::InvalidUrl { .. } => {
            sundial_core::Error::Config(e.to_string())
        }
        e if e.is_temporary() => sundial_core::Error::store_temporary(store, e),
        e => sundial_core::Error::store(store, e),
    }
}

/// A parameter of a statement.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Int(i64),
    OptInt(Option<i64>),
    Text(String),
    OptText(Option<String>),
}

/// What creating or upgrading the schema found to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SchemaStep {
    /// No schema was recorded: create it.
    Create,
    /// An older version was recorded: upgrade it in place.
    Upgrade(i64),
    /// The schema is current.
    Current,
}

/// Decides from the recorded schema version what to do; refuses a newer one.
pub(crate) fn schema_step(sql: &Sql, found: Option<i64>) -> Result<SchemaStep, Error> {
    match found {
        None => Ok(SchemaStep::Create),
        Some(v) if v > SCHEMA_VERSION => Err(Error::NewerSchema {
            table: sql.table.clone(),
            found: v,
            supported: SCHEMA_VERSION,
        }),
        Some(SCHEMA_VERSION) => Ok(SchemaStep::Current),
        Some(v) => Ok(SchemaStep::Upgrade(v)),
    }
}

/// The statements that carry out `step` (run after `create_versions`, under
/// the schema lock). Version 1 lacks the run table: creating what is missing
/// upgrades it.
pub(crate) fn schema_statements(sql: &Sql, step: SchemaStep) -> Vec<(String, Vec<Param>)> {
    let table = Param::Text(sql.table.clone());
    let record = match step {
        SchemaStep::Current => return Vec::new(),
        SchemaStep::Create => (sql.set_version(), vec![table, Param::Int(SCHEMA_VERSION)]),
        SchemaStep::Upgrade(_) => (
            sql.upgrade_version(),
            vec![
                Param::Int(SCHEMA_VERSION),
                table,
                Param::Int(SCHEMA_VERSION),
            ],
        ),
    };
    let mut out: Vec<(String, Vec<Param>)> =
        sql.create().into_iter().map(|s| (s, Vec::new())).collect();
    out.push(record);
    out
}

/// Change notices as received: their payloads, or the error that ended them.
pub(crate) type Notices = futures::stream::BoxStream<'static, Result<String, Error>>;

/// One claim: up to `limit` due rows at `now`, passing over the `skip` ids,
/// leased to `owner` until `until` (times in microseconds).
pub(crate) struct Claim {
    pub(crate) now: i64,
    pub(crate) owner: String,
    pub(crate) until: i64,
    pub(crate) limit: i64,
    pub(crate) skip: Vec<String>,
}

impl Claim {
    /// The parameters of [`Sql::select_due`].
    pub(crate) fn select_params(&self) -> Vec<Param> {
        let mut params = vec![Param::Int(self.now), Param::Int(self.now)];
        params.extend(self.skip.iter().cloned().map(Param::Text));
        params.push(Param::Int(self.limit));
        params
    }
}

/// What a bulk release did: every statement changed each row it named, or
/// (when some did not) the named rows' state afterwards: id, version, lease owner.
#[derive(Debug)]
pub(crate) enum Applied {
    All,
    Checked(Vec<(String, i64, Option<String>)>),
}

/// What each backend provides; the job-store logic on top is shared.
#[async_trait]
pub(crate) trait Backend: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    async fn connect(&self) -> Result<(), Error>;
    async fn close(&self);
    /// Creates the schema or upgrades it to [`SCHEMA_VERSION`] under a
    /// database-wide lock held on the connection that does the work (released
    /// however the call ends, cancellation included); see [`schema_step`].
    async fn migrate(&self, sql: &Sql) -> Result<SchemaStep, Error>;
    /// Publishes a change notice on `channel` (PostgreSQL `NOTIFY`); a no-op
    /// where the database has no notification channel.
    async fn notify(&self, _channel: &str, _payload: &str) -> Result<(), Error> {
        Ok(())
    }
    /// Listens on `channel` on a connection of its own; `None` where the
    /// database has no notification channel. Items are the notices' payloads.
    async fn listen(&self, _channel: &str) -> Result<Option<Notices>, Error> {
        Ok(None)
    }
    async fn execute(&self, sql: String, params: Vec<Param>) -> Result<u64, Error>;
    async fn query_rows(&self, sql: String, params: Vec<Param>) -> Result<Vec<Row>, Error>;
    async fn query_int(&self, sql: String, params: Vec<Param>) -> Result<Option<i64>, Error>;
    /// The first two columns of the first row, as integers.
    async fn query_pair(
        &self,
        sql: String,
        params: Vec<Param>,
    ) -> Result<(Option<i64>, Option<i64>), Error>;
    async fn query_ids(&self, sql: String, params: Vec<Param>) -> Result<Vec<String>, Error>;
    /// The database's plan for a query, one line per step (SQLite `EXPLAIN
    /// QUERY PLAN`, PostgreSQL `EXPLAIN`, MySQL `EXPLAIN FORMAT=JSON`).
    async fn plan(&self, sql: String) -> Result<Vec<String>, Error>;
    /// Runs the statements in one transaction (all or none); returns the total
    /// of rows they changed.
    async fn execute_all(&self, statements: Vec<(String, Vec<Param>)>) -> Result<u64, Error>;
    /// Runs the statements in one transaction; when each changed exactly the
    /// rows it names (its third element), that is the answer, otherwise the
    /// check query (rows of id, version, lease owner) runs in the same
    /// transaction and its rows are.
    async fn apply_then_check(
        &self,
        statements: Vec<(String, Vec<Param>, u64)>,
        check: (String, Vec<Param>),
    ) -> Result<Applied, Error>;
    /// Selects due rows and claims them atomically (one transaction, or on
    /// PostgreSQL one statement).
    async fn claim(&self, sql: &Sql, claim: Claim) -> Result<Vec<Row>, Error>;
    /// Reads run rows (columns as [`schema::RUN_COLUMNS`]).
    async fn query_runs(&self, sql: String, params: Vec<Param>) -> Result<Vec<RunRow>, Error>;
    /// Inserts a batch of runs in one transaction: first the batch's count
    /// queries, then the settled rows with conflicts ignored; returns what
    /// became of each run.
    async fn insert_runs(&self, sql: &Sql, batch: Arc<RunBatch>) -> Result<Vec<RunInsert>, Error>;
    /// Selects up to `limit` running runs whose heartbeat is before `now` and
    /// marks them interrupted, in one transaction that no concurrent caller
    /// shares rows with; returns the rows as selected (before the update).
    async fn interrupt_lapsed(&self, sql: &Sql, now: i64, limit: i64)
        -> Result<Vec<RunRow>, Error>;
}

/// A job store on SQLite, PostgreSQL or MySQL/MariaDB.
///
/// # Examples
/// ```no_run
/// use sundial_jobstore_sql::SqlJobStore;
/// let dev = SqlJobStore::sqlite("jobs.db");
/// let prod = SqlJobStore::from_url("postgres://app@db/app")?.with_table("billing_jobs")?;
/// # Ok::<(), sundial_jobstore_sql::Error>(())
/// ```
#[derive(Debug)]
pub struct SqlJobStore {
    backend: Arc<dyn Backend>,
    sql: Sql,
    /// Identifies this handle's change notices, so that it skips its own.
    token: String,
    /// Sends change notices while started, where the database has a channel.
    notifier: ChangeNotifier,
}

impl SqlJobStore {
    /// A SQLite store in the file at `path` (created if missing).
    #[cfg(feature = "sqlite")]
    pub fn sqlite(path: impl AsRef<std::path::Path>) -> Self {
        Self::new(
            Box::new(sqlite::SqliteBackend::file(path.as_ref())),
            Dialect::Sqlite,
        )
    }

    /// A SQLite store in memory (one process; gone when dropped).
    #[cfg(feature = "sqlite")]
    pub fn sqlite_in_memory() -> Self {
        Self::new(Box::new(sqlite::SqliteBackend::memory()), Dialect::Sqlite)
    }

    /// A PostgreSQL store (connects on start).
    #[cfg(feature = "postgres")]
    pub fn postgres(url: &str) -> Self {
        Self::new(
            Box::new(sqlx_backend::SqlxBackend::new(url, "postgres")),
            Dialect::Postgres,
        )
    }

    /// A MySQL/MariaDB store (connects on start).
    #[cfg(feature = "mysql")]
    pub fn mysql(url: &str) -> Self {
        Self::new(
            Box::new(sqlx_backend::SqlxBackend::new(url, "mysql")),
            Dialect::MySql,
        )
    }

    /// A PostgreSQL or MySQL store on an existing sqlx pool.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub fn from_pool(pool: sqlx::AnyPool, dialect: Dialect) -> Self {
        let name = if dialect == Dialect::Postgres {
            "postgres"
        } else {
            "mysql"
        };
        Self::new(
            Box::new(sqlx_backend::SqlxBackend::from_pool(pool, name)),
            dialect,
        )
    }

    /// A store from a URL: `sqlite://path`, `sqlite::memory:`, `postgres://...`,
    /// `postgresql://...`, `mysql://...`, `mariadb://...`.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a scheme this build (its Cargo features) does not support.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        let redacted = redact_url(url);
        #[allow(unused_variables)]
        let unsupported = |feature: &str| Error::InvalidUrl {
            url: redacted.clone(),
            reason: format!("enable the `{feature}` feature"),
        };
        match scheme {
            "sqlite" => {
                #[cfg(feature = "sqlite")]
                {
                    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
                    if rest.is_empty() || rest == ":memory:" {
                        return Ok(Self::sqlite_in_memory());
                    }
                    Ok(Self::sqlite(rest.split('?').next().unwrap_or(rest)))
                }
                #[cfg(not(feature = "sqlite"))]
                Err(unsupported("sqlite"))
            }
            "postgres" | "postgresql" => {
                #[cfg(feature = "postgres")]
                {
                    Ok(Self::postgres(url))
                }
                #[cfg(not(feature = "postgres"))]
                Err(unsupported("postgres"))
            }
            "mysql" | "mariadb" => {
                #[cfg(feature = "mysql")]
                {
                    Ok(Self::mysql(&url.replacen("mariadb:", "mysql:", 1)))
                }
                #[cfg(not(feature = "mysql"))]
                Err(unsupported("mysql"))
            }
            _ => Err(Error::InvalidUrl {
                url: redacted,
                reason: "expected sqlite://, postgres:// or mysql://".into(),
            }),
        }
    }

    fn new(backend: Box<dyn Backend>, dialect: Dialect) -> Self {
        SqlJobStore {
            backend: Arc::from(backend),
            token: uuid_token(),
            notifier: ChangeNotifier::default(),
            sql: Sql {
                dialect,
                table: DEFAULT_TABLE.to_string(),
            },
        }
    }

    /// Uses `table` for the jobs (several job sets can share a database).
    ///
    /// # Errors
    /// [`Error::InvalidTable`] unless it is a plain identifier.
    pub fn with_table(mut self, table: &str) -> Result<Self, Error> {
        if !valid_table(table) {
            return Err(Error::InvalidTable(table.to_string()));
        }
        self.sql.table = table.to_string();
        Ok(self)
    }

    /// The notification channel of the job table (PostgreSQL).
    fn channel(&self) -> String {
        format!("sundial_{}", self.sql.table)
    }

    /// Asks for a change notice to the other handles.
    fn changed(&self) {
        self.notifier.signal();
    }

    /// The job table's name.
    pub fn table(&self) -> &str {
        &self.sql.table
    }

    /// The SQL dialect.
    pub fn dialect(&self) -> Dialect {
        self.sql.dialect
    }

    /// Drops the job table, its run and node tables and its schema-version row;
    /// for tests and tools.
    ///
    /// # Errors
    /// Database errors.
    pub async fn drop_table(&self) -> Result<(), Error> {
        self.backend.connect().await?;
        let p = self.sql.p(1);
        self.backend
            .execute_all(vec![
                (format!("DROP TABLE IF EXISTS {}", self.sql.runs()), vec![]),
                (format!("DROP TABLE IF EXISTS {}", self.sql.nodes()), vec![]),
                (format!("DROP TABLE IF EXISTS {}", self.sql.table), vec![]),
                (
                    format!("DELETE FROM sundial_schema_versions WHERE table_name = {p}"),
                    vec![Param::Text(self.sql.table.clone())],
                ),
            ])
            .await
            .map(|_| ())
    }

    /// The database's plan for the query that finds the earliest time a job
    /// is due (the scheduler's idle poll), one line per step: the way to check
    /// on a large table that it reads indexes, not every row.
    ///
    /// # Errors
    /// Database errors.
    pub async fn explain_next_run_time(&self) -> Result<Vec<String>, Error> {
        self.backend.connect().await?;
        self.backend.plan(self.sql.next_run_time(0)).await
    }

    /// Runs one SQL statement as is (for tests and maintenance tools).
    ///
    /// # Errors
    /// Database errors.
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, Error> {
        self.backend.connect().await?;
        self.backend.execute(sql.to_string(), vec![]).await
    }

    /// Runs a pruning statement (which deletes at most [`schema::PRUNE_SLICE`]
    /// rows) until a slice comes back short; the rows deleted in all.
    async fn prune_in_slices(&self, sql: String, params: Vec<Param>) -> sundial_core::Result<u64> {
        let mut deleted = 0;
        loop {
            let n = match self.backend.execute(sql.clone(), params.clone()).await {
                Ok(n) => n,
                Err(e) => {
                    if deleted > 0 {
                        tracing::debug!(
                            deleted,
                            "pruning stopped by an error after deleting some runs"
                        );
                    }
                    return Err(self.err(e));
                }
            };
            deleted += n;
            if n < schema::PRUNE_SLICE {
                return Ok(deleted);
            }
        }
    }

    fn err(&self, e: Error) -> sundial_core::Error {
        core_error(self.backend.name(), e)
    }

    /// Creates the schema, or upgrades an older one in place; refuses a newer
    /// one before changing anything. Safe when many processes start at once:
    /// the work runs under a database-wide lock (PostgreSQL advisory lock,
    /// MySQL `GET_LOCK`, SQLite `BEGIN IMMEDIATE`), skipped when the schema is
    /// already current.
    async fn migrate(&self) -> Result<(), Error> {
        let table = Param::Text(self.sql.table.clone());
        if let Ok(Some(SCHEMA_VERSION)) = self
            .backend
            .query_int(self.sql.get_version(), vec![table])
            .await
        {
            return Ok(());
        }
        if let SchemaStep::Upgrade(from) = self.backend.migrate(&self.sql).await? {
            tracing::info!(
                table = %self.sql.table,
                from,
                to = SCHEMA_VERSION,
                "upgraded the job table's schema (added the run ledger and node registry tables and the lease index where missing)"
            );
        }
        Ok(())
    }

    async fn first_conflict(&self, jobs: &[JobRecord]) -> sundial_core::Error {
        let mut seen = std::collections::HashSet::new();
        for j in jobs {
            if !seen.insert(&j.id) {
                return sundial_core::Error::ConflictingId {
                    id: j.id.to_string(),
                };
            }
        }
        for chunk in jobs.chunks(INSERT_CHUNK) {
            let params = chunk
                .iter()
                .map(|j| Param::Text(j.id.to_string()))
                .collect();
            match self
                .backend
                .query_ids(self.sql.existing_ids(chunk.len()), params)
                .await
            {
                Ok(ids) if !ids.is_empty() => {
                    return sundial_core::Error::ConflictingId { id: ids[0].clone() }
                }
                Ok(_) => {}
                Err(e) => return self.err(e),
            }
        }
        sundial_core::Error::ConflictingId {
            id: jobs.first().map(|j| j.id.to_string()).unwrap_or_default(),
        }
    }
}

/// A random id for a handle's change notices.
fn uuid_token() -> String {
    sundial_core::job::OwnerId::random().to_string()
}

/// Whether a release leaves work another scheduler may want at once.
fn wakes_others(outcome: &Release) -> bool {
    matches!(
        outcome,
        Release::Reschedule {
            next_run_time: Some(_)
        } | Release::Unclaim
    )
}

fn insert_params(rows: &[Row]) -> Vec<Param> {
    let mut params = Vec::with_capacity(rows.len() * 3);
    for r in rows {
        params.push(Param::Text(r.id.clone()));
        params.push(Param::OptInt(r.next_run_time));
        params.push(Param::Text(r.job.clone()));
    }
    params
}

#[async_trait]
impl JobStore for SqlJobStore {
    fn backend(&self) -> &'static str {
        self.backend.name()
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::SHARED_PERSISTENT
    }

    async fn start(&self) -> sundial_core::Result<()> {
        self.backend.connect().await.map_err(|e| self.err(e))?;
        self.migrate().await.map_err(|e| self.err(e))?;
        if self.sql.dialect == Dialect::Postgres {
            let backend = Arc::clone(&self.backend);
            let channel = self.channel();
            let token = self.token.clone();
            self.notifier.start(move || {
                let backend = Arc::clone(&backend);
                let channel = channel.clone();
                let token = token.clone();
                async move {
                    if let Err(e) = backend.notify(&channel, &token).await {
                        tracing::debug!(error = %e, "could not send a change notice");
                    }
                }
            });
        }
        Ok(())
    }

    async fn shutdown(&self) -> sundial_core::Result<()> {
        self.notifier.stop();
        self.backend.close().await;
        Ok(())
    }

    async fn watch_changes(&self) -> sundial_core::Result<Option<ChangeStream>> {
        let Some(notices) = self
            .backend
            .listen(&self.channel())
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(None);
        };
        let token = self.token.clone();
        Ok(Some(
            notices
                .take_while(|n| std::future::ready(n.is_ok()))
                .filter_map(move |n| {
                    std::future::ready(match n {
                        Ok(payload) if payload != token => Some(()),
                        _ => None,
                    })
                })
                .boxed(),
        ))
    }

    async fn add_job(&self, job: &JobRecord) -> sundial_core::Result<()> {
        let row = Row::from_record(job);
        match self
            .backend
            .execute(self.sql.insert(1), insert_params(&[row]))
            .await
        {
            Ok(_) => {
                self.changed();
                Ok(())
            }
            Err(e) if e.is_unique_violation() => Err(sundial_core::Error::ConflictingId {
                id: job.id.to_string(),
            }),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn add_jobs(&self, jobs: &[JobRecord]) -> sundial_core::Result<()> {
        let rows: Vec<Row> = jobs.iter().map(Row::from_record).collect();
        let statements = rows
            .chunks(INSERT_CHUNK)
            .map(|c| (self.sql.insert(c.len()), insert_params(c)))
            .collect();
        match self.backend.execute_all(statements).await {
            Ok(_) => {
                self.changed();
                Ok(())
            }
            Err(e) if e.is_unique_violation() => Err(self.first_conflict(jobs).await),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn update_job(&self, job: &JobRecord) -> sundial_core::Result<()> {
        let row = Row::from_record(job);
        let n = self
            .backend
            .execute(
                self.sql.update(),
                vec![
                    Param::OptInt(row.next_run_time),
                    Param::Text(row.job),
                    Param::Text(row.id.clone()),
                    Param::Int(row.version),
                ],
            )
            .await
            .map_err(|e| self.err(e))?;
        if n == 0 {
            let exists = self
                .backend
                .query_int(self.sql.exists(), vec![Param::Text(row.id)])
                .await
                .map_err(|e| self.err(e))?
                .unwrap_or(0);
            return Err(update_refused(job, exists > 0));
        }
        self.changed();
        Ok(())
    }

    async fn remove_job(&self, id: &JobId) -> sundial_core::Result<()> {
        let n = self
            .backend
            .execute(self.sql.delete(), vec![Param::Text(id.to_string())])
            .await
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(sundial_core::Error::JobNotFound { id: id.to_string() });
        }
        Ok(())
    }

    async fn remove_all_jobs(&self) -> sundial_core::Result<()> {
        self.backend
            .execute(self.sql.delete_all(), vec![])
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    async fn lookup_job(&self, id: &JobId) -> sundial_core::Result<Option<JobRecord>> {
        let rows = self
            .backend
            .query_rows(self.sql.select_one(), vec![Param::Text(id.to_string())])
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.into_iter().next().map(Row::into_record))
    }

    async fn get_all_jobs(&self) -> sundial_core::Result<Vec<JobRecord>> {
        let rows = self
            .backend
            .query_rows(self.sql.select_all(), vec![])
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.into_iter().map(Row::into_record).collect())
    }

    async fn count_jobs(&self) -> sundial_core::Result<JobCounts> {
        // One statement, so both counts are of the same moment.
        let (all, scheduled) = self
            .backend
            .query_pair(
                format!(
                    "SELECT COUNT(*), COUNT(next_run_time) FROM {}",
                    self.sql.table
                ),
                vec![],
            )
            .await
            .map_err(|e| self.err(e))?;
        let count = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        let (all, scheduled) = (count(all), count(scheduled));
        Ok(JobCounts {
            scheduled,
            paused: all.saturating_sub(scheduled),
        })
    }

    async fn get_next_run_time(
        &self,
        skip: &[JobId],
    ) -> sundial_core::Result<Option<DateTime<Utc>>> {
        let ids = skip
            .iter()
            .chain(skip)
            .map(|id| Param::Text(id.to_string()))
            .collect();
        let t = self
            .backend
            .query_int(self.sql.next_run_time(skip.len()), ids)
            .await
            .map_err(|e| self.err(e))?;
        Ok(t.map(from_micros))
    }

    async fn acquire_due(
        &self,
        now: DateTime<Utc>,
        owner: &OwnerId,
        lease: Duration,
        limit: usize,
        skip: &[JobId],
    ) -> sundial_core::Result<Vec<JobRecord>> {
        let until = now + lease_duration(lease);
        let mut attempt = 0;
        let skip: Vec<String> = skip.iter().map(JobId::to_string).collect();
        let rows = loop {
            let claimed = self
                .backend
                .claim(
                    &self.sql,
                    Claim {
                        now: to_micros(now),
                        owner: owner.to_string(),
                        until: to_micros(until),
                        limit: i64::try_from(limit).unwrap_or(i64::MAX),
                        skip: skip.clone(),
                    },
                )
                .await;
            match claimed {
                Ok(rows) => break rows,
                // Concurrent claimers can deadlock on MySQL's gap locks; the
                // transaction rolled back, so trying again is safe.
                Err(e) if e.is_retryable_conflict() && attempt < 5 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "claim conflicted; retrying");
                    tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
                }
                Err(e) => return Err(self.err(e)),
            }
        };
        let mut out: Vec<JobRecord> = rows.into_iter().map(Row::into_record).collect();
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
        let idp = Param::Text(id.to_string());
        let ownerp = Param::Text(owner.to_string());
        let versionp = Param::Int(i64::try_from(version).unwrap_or(i64::MAX));
        let wakes = wakes_others(&outcome);
        let (sql, params) = match outcome {
            Release::Reschedule { next_run_time } => (
                self.sql.release_reschedule(),
                vec![
                    Param::OptInt(next_run_time.map(to_micros)),
                    idp.clone(),
                    ownerp.clone(),
                    versionp,
                ],
            ),
            Release::Remove => (
                self.sql.release_remove(),
                vec![idp.clone(), ownerp.clone(), versionp],
            ),
            Release::Unclaim => (
                self.sql.release_unclaim(),
                vec![idp.clone(), ownerp.clone(), versionp],
            ),
        };
        let n = self
            .backend
            .execute(sql, params)
            .await
            .map_err(|e| self.err(e))?;
        if n > 0 {
            if wakes {
                self.changed();
            }
            return Ok(ReleaseOutcome::Applied);
        }
        // Not applied: modified while claimed (drop our lease), claimed by someone else, or gone.
        let n = self
            .backend
            .execute(self.sql.release_superseded(), vec![idp.clone(), ownerp])
            .await
            .map_err(|e| self.err(e))?;
        if n > 0 {
            return Ok(ReleaseOutcome::Superseded);
        }
        let exists = self
            .backend
            .query_int(self.sql.exists(), vec![idp])
            .await
            .map_err(|e| self.err(e))?
            .unwrap_or(0);
        if exists > 0 {
            Err(sundial_core::Error::LeaseLost { id: id.to_string() })
        } else {
            Ok(ReleaseOutcome::Gone)
        }
    }

    async fn release_many(
        &self,
        owner: &OwnerId,
        mut items: Vec<ReleaseItem>,
    ) -> sundial_core::Result<Vec<sundial_core::Result<ReleaseOutcome>>> {
        let mut out = Vec::with_capacity(items.len());
        let wakes = items.iter().any(|i| wakes_others(&i.outcome));
        while !items.is_empty() {
            let rest = items.split_off(items.len().min(release_chunk(self.sql.dialect)));
            out.extend(
                self.release_chunk(owner, std::mem::replace(&mut items, rest))
                    .await?,
            );
        }
        if wakes {
            self.changed();
        }
        Ok(out)
    }

    async fn insert_runs(&self, runs: &[NewRun]) -> sundial_core::Result<Vec<RunInsert>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let batch = Arc::new(RunBatch::new(runs));
        self.retrying("insert_runs", || {
            self.backend.insert_runs(&self.sql, Arc::clone(&batch))
        })
        .await
    }

    async fn finish_runs(&self, owner: &OwnerId, runs: &[RunFinish]) -> sundial_core::Result<u64> {
        if runs.is_empty() {
            return Ok(0);
        }
        let statements =
            ledger::finish_statements(&self.sql, owner, runs, release_chunk(self.sql.dialect));
        self.retrying("finish_runs", || {
            self.backend.execute_all(statements.clone())
        })
        .await
    }

    async fn heartbeat_runs(
        &self,
        owner: &OwnerId,
        ids: &[RunId],
        until: DateTime<Utc>,
    ) -> sundial_core::Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut sorted: Vec<&RunId> = ids.iter().collect();
        sorted.sort();
        let statements: Vec<(String, Vec<Param>)> = sorted
            .chunks(HEARTBEAT_CHUNK)
            .map(|chunk| {
                let mut params = Vec::with_capacity(chunk.len() + 2);
                params.push(Param::Int(to_micros(until)));
                params.push(Param::Text(owner.to_string()));
                params.extend(chunk.iter().map(|id| Param::Text(id.to_string())));
                (self.sql.heartbeat_runs(chunk.len()), params)
            })
            .collect();
        self.retrying("heartbeat_runs", || async {
            match statements.as_slice() {
                // One statement needs no transaction of its own.
                [(sql, params)] => self.backend.execute(sql.clone(), params.clone()).await,
                _ => self.backend.execute_all(statements.clone()).await,
            }
        })
        .await
    }

    async fn interrupt_lapsed(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> sundial_core::Result<Vec<RunRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = to_micros(now);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .retrying("interrupt_lapsed", || {
                self.backend.interrupt_lapsed(&self.sql, now, limit)
            })
            .await?;
        Ok(self.records(rows.into_iter().map(|mut row| {
            ledger::mark_interrupted(&mut row, now);
            row
        })))
    }

    async fn query_runs(&self, query: &RunQuery) -> sundial_core::Result<Vec<RunRecord>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let mut params = Vec::new();
        if let Some(job) = &query.job_id {
            params.push(Param::Text(job.to_string()));
        }
        if let Some(state) = query.state {
            params.push(Param::Text(state.as_str().to_string()));
        }
        if let Some(since) = query.since {
            params.push(Param::Int(to_micros(since)));
        }
        params.push(Param::Int(i64::try_from(query.limit).unwrap_or(i64::MAX)));
        let sql = self.sql.query_runs(
            query.job_id.is_some(),
            query.state.is_some(),
            query.since.is_some(),
        );
        let rows = self
            .backend
            .query_runs(sql, params)
            .await
            .map_err(|e| self.err(e))?;
        Ok(self.records(rows))
    }

    async fn prune_runs(&self, before: DateTime<Utc>) -> sundial_core::Result<u64> {
        self.prune_in_slices(self.sql.prune_runs(), vec![Param::Int(to_micros(before))])
            .await
    }

    async fn prune_job_runs(
        &self,
        keep: usize,
        before: DateTime<Utc>,
    ) -> sundial_core::Result<u64> {
        let params = vec![
            Param::Int(i64::try_from(keep).unwrap_or(i64::MAX)),
            Param::Int(to_micros(before)),
        ];
        self.prune_in_slices(self.sql.prune_job_runs(), params)
            .await
    }

    async fn upsert_node(
        &self,
        node: &NodeRecord,
        now: DateTime<Utc>,
    ) -> sundial_core::Result<Option<NodeRecord>> {
        let json = node.to_stored()?;
        let owner = node.owner.to_string();
        let expires = to_micros(node.expires_at);
        // Renew our own (or a lapsed) row; else insert; a row that appeared
        // meanwhile is another live instance's, unless it lapsed in between.
        for _ in 0..3 {
            let renewed = self
                .backend
                .execute(
                    self.sql.renew_node(),
                    vec![
                        Param::Text(node.instance.clone()),
                        Param::Int(expires),
                        Param::Text(json.clone()),
                        Param::Text(owner.clone()),
                        Param::Text(node.instance.clone()),
                        Param::Int(to_micros(now)),
                    ],
                )
                .await
                .map_err(|e| self.err(e))?;
            if renewed > 0 {
                return Ok(None);
            }
            let inserted = self
                .backend
                .execute(
                    self.sql.insert_node(),
                    vec![
                        Param::Text(owner.clone()),
                        Param::Text(node.instance.clone()),
                        Param::Int(expires),
                        Param::Text(json.clone()),
                    ],
                )
                .await;
            match inserted {
                Ok(_) => return Ok(None),
                Err(e) if e.is_unique_violation() => {}
                Err(e) => return Err(self.err(e)),
            }
            let held = self
                .backend
                .query_ids(self.sql.select_node(), vec![Param::Text(owner.clone())])
                .await
                .map_err(|e| self.err(e))?;
            if let Some(cur) = held.first().and_then(|j| NodeRecord::from_stored(j)) {
                if !cur.yields_to(node, now) {
                    return Ok(Some(cur));
                }
            }
        }
        Err(sundial_core::Error::Store {
            store: self.backend.name(),
            temporary: true,
            source: format!("node registration of owner '{owner}' kept changing under this call")
                .into(),
        })
    }

    async fn list_nodes(&self) -> sundial_core::Result<Vec<NodeRecord>> {
        let rows = self
            .backend
            .query_ids(self.sql.select_nodes(), Vec::new())
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .filter_map(|j| NodeRecord::from_stored(j))
            .collect())
    }

    async fn remove_node(&self, owner: &OwnerId, instance: &str) -> sundial_core::Result<()> {
        self.backend
            .execute(
                self.sql.delete_node(),
                vec![
                    Param::Text(owner.to_string()),
                    Param::Text(instance.to_string()),
                ],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn prune_nodes(&self, before: DateTime<Utc>) -> sundial_core::Result<u64> {
        self.backend
            .execute(self.sql.prune_nodes(), vec![Param::Int(to_micros(before))])
            .await
            .map_err(|e| self.err(e))
    }

    async fn server_time(&self) -> sundial_core::Result<Option<DateTime<Utc>>> {
        let Some(sql) = self.sql.server_time() else {
            return Ok(None);
        };
        let us = self
            .backend
            .query_int(sql.to_string(), Vec::new())
            .await
            .map_err(|e| self.err(e))?;
        Ok(us.map(from_micros))
    }
}

impl SqlJobStore {
    /// Runs `op` (one whole transaction), again after a deadlock or
    /// serialization failure: the transaction rolled back, so retrying is safe.
    async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> sundial_core::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable_conflict() && attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "{what} conflicted; retrying");
                    tokio::time::sleep(Duration::from_millis(2 * u64::from(attempt))).await;
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    /// Run records from rows; a row that cannot be read (unknown state, ...)
    /// is left out with a warning.
    fn records(&self, rows: impl IntoIterator<Item = RunRow>) -> Vec<RunRecord> {
        rows.into_iter()
            .filter_map(|row| {
                let id = row.run_id.clone();
                match row.into_record() {
                    Ok(rec) => Some(rec),
                    Err(why) => {
                        tracing::warn!(
                            table = %self.sql.runs(),
                            run_id = %id,
                            "skipping unreadable run row: {why}"
                        );
                        None
                    }
                }
            })
            .collect()
    }

    /// Releases one chunk with at most two statements and one check query in a
    /// single transaction; items the bulk statements did not apply go through
    /// `release` one by one, which tells superseded, lost and gone apart.
    async fn release_chunk(
        &self,
        owner: &OwnerId,
        items: Vec<ReleaseItem>,
    ) -> sundial_core::Result<Vec<sundial_core::Result<ReleaseOutcome>>> {
        let ownerp = Param::Text(owner.to_string());
        let ver = |v: u64| Param::Int(i64::try_from(v).unwrap_or(i64::MAX));
        let mut resched = Vec::new();
        let mut removes = Vec::new();
        for it in &items {
            match &it.outcome {
                Release::Reschedule { next_run_time } => {
                    resched.push(Param::Text(it.id.to_string()));
                    resched.push(Param::OptInt(next_run_time.map(to_micros)));
                    resched.push(ver(it.version));
                }
                Release::Remove => {
                    removes.push(Param::Text(it.id.to_string()));
                    removes.push(ver(it.version));
                }
                Release::Unclaim => {}
            }
        }
        let mut statements = Vec::new();
        if !resched.is_empty() {
            let n = resched.len() / 3;
            resched.push(ownerp.clone());
            statements.push((self.sql.bulk_reschedule(n), resched, n as u64));
        }
        if !removes.is_empty() {
            let n = removes.len() / 2;
            let mut params = vec![ownerp];
            params.extend(removes);
            statements.push((self.sql.bulk_remove(n), params, n as u64));
        }
        let check_ids: Vec<Param> = items
            .iter()
            .map(|i| Param::Text(i.id.to_string()))
            .collect();
        let check = (self.sql.release_check(items.len()), check_ids);
        let state = match self
            .backend
            .apply_then_check(statements, check)
            .await
            .map_err(|e| self.err(e))?
        {
            // Each reschedule and removal changed its row: ids are primary
            // keys, so a repeated id could only have made a count fall short.
            Applied::All => None,
            Applied::Checked(rows) => Some(
                rows.into_iter()
                    .map(|(id, v, o)| (id, (v, o)))
                    .collect::<std::collections::HashMap<String, (i64, Option<String>)>>(),
            ),
        };
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let expected = i64::try_from(it.version).unwrap_or(i64::MAX) + 1;
            let applied = match (&it.outcome, &state) {
                (Release::Unclaim, _) => false,
                (_, None) => true,
                (Release::Reschedule { .. }, Some(state)) => state
                    .get(it.id.as_str())
                    .is_some_and(|(v, o)| *v == expected && o.is_none()),
                (Release::Remove, Some(state)) => !state.contains_key(it.id.as_str()),
            };
            if applied {
                out.push(Ok(ReleaseOutcome::Applied));
            } else {
                let result = self.release(owner, &it.id, it.version, it.outcome).await;
                out.push(release_entry(result)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked() {
        assert!(valid_table("sundial_jobs"));
        assert!(valid_table("t_crud_1a2b3c4d"));
        assert!(!valid_table("jobs; DROP TABLE x"));
        assert!(!valid_table("1jobs"));
        assert!(!valid_table(""));
    }

    #[test]
    fn passwords_are_redacted() {
        let err = SqlJobStore::from_url("oracle://app:s3cret@db:5432/app?password=s3cret")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("oracle://app:***@db:5432/app?password=***"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn placeholders_follow_the_dialect() {
        let pg = Sql {
            dialect: Dialect::Postgres,
            table: "t".into(),
        };
        assert_eq!(pg.insert(2), "INSERT INTO t (id, next_run_time, job, lease_owner, lease_until, version) VALUES ($1, $2, $3, NULL, NULL, 0), ($4, $5, $6, NULL, NULL, 0)");
        let my = Sql {
            dialect: Dialect::MySql,
            table: "t".into(),
        };
        assert!(my.select_due(0).ends_with("(lease_until IS NULL OR lease_until <= ?) ORDER BY next_run_time, id LIMIT ? FOR UPDATE SKIP LOCKED"));
        // Passed-over ids come before the limit, in parameter order.
        assert!(pg.select_due(2).ends_with(
            "AND id NOT IN ($3, $4) ORDER BY next_run_time, id LIMIT $5 FOR UPDATE SKIP LOCKED"
        ));
        // PostgreSQL claims in one statement, its ids picked once.
        assert_eq!(
            pg.claim_due(1),
            format!("UPDATE t SET lease_owner = $1, lease_until = $2, version = version + 1 WHERE id = ANY(ARRAY(SELECT id FROM t WHERE next_run_time <= $3 AND (lease_until IS NULL OR lease_until <= $4) AND id NOT IN ($5) ORDER BY next_run_time, id LIMIT $6 FOR UPDATE SKIP LOCKED)) RETURNING {}", schema::COLUMNS)
        );
        // The passed-over ids, once for each half of the union.
        let poll = pg.next_run_time(1);
        assert!(
            poll.contains("lease_until IS NULL AND id NOT IN ($1) ORDER BY next_run_time LIMIT 1"),
            "{poll}"
        );
        assert!(
            poll.ends_with(
                "next_run_time IS NOT NULL AND id NOT IN ($2) ORDER BY lease_until LIMIT 100) AS leased) AS earliest"
            ),
            "{poll}"
        );
    }

    #[test]
    fn ledger_identifiers_fit_every_dialect() {
        let longest = "t".repeat(48);
        assert!(valid_table(&longest));
        for dialect in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
            let sql = Sql {
                dialect,
                table: longest.clone(),
            };
            for stmt in sql.create() {
                for word in stmt.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    // PostgreSQL cuts names at 63 bytes, MySQL refuses more than 64.
                    assert!(word.len() <= 63, "{word} in {stmt}");
                }
            }
        }
    }

    #[test]
    fn run_statements_follow_the_dialect() {
        let pg = Sql {
            dialect: Dialect::Postgres,
            table: "t".into(),
        };
        assert!(pg
            .insert_runs(2, true)
            .ends_with("($12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22) ON CONFLICT DO NOTHING RETURNING run_id"));
        assert_eq!(
            pg.query_runs(true, false, true),
            format!("SELECT {} FROM t_runs WHERE job_id = $1 AND scheduled >= $2 ORDER BY scheduled DESC, attempt DESC LIMIT $3", schema::RUN_COLUMNS)
        );
        let my = Sql {
            dialect: Dialect::MySql,
            table: "t".into(),
        };
        assert!(my
            .insert_runs(1, false)
            .starts_with("INSERT IGNORE INTO t_runs "));
        assert!(my.insert_runs(1, false).ends_with("?)"));
        assert!(my.insert_runs(1, true).ends_with("?) RETURNING run_id"));
        assert!(my
            .select_lapsed()
            .ends_with("LIMIT ? FOR UPDATE SKIP LOCKED"));
    }

    #[cfg(feature = "sqlite")]
    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[cfg(feature = "sqlite")]
    fn run(job: &str, minute: i64) -> NewRun {
        let slot = DateTime::from_timestamp(minute * 60, 0).unwrap();
        NewRun {
            record: RunRecord::running(
                JobId::new(job),
                slot,
                1,
                OwnerId::new("o"),
                slot,
                slot + chrono::Duration::seconds(30),
            ),
            max_instances: None,
        }
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn older_tables_are_upgraded_in_place() {
        block_on(async {
            let store = SqlJobStore::sqlite_in_memory();
            store.start().await.unwrap();
            let job = JobRecord::new(
                JobId::new("keep"),
                sundial_core::job::JobContent::from_stored(r#"{"task":"t"}"#),
                None,
            );
            store.add_job(&job).await.unwrap();
            // What a version-1 build left behind: the job table only.
            store
                .execute_raw("DROP TABLE sundial_jobs_runs")
                .await
                .unwrap();
            store
                .execute_raw("DROP TABLE sundial_jobs_nodes")
                .await
                .unwrap();
            store
                .execute_raw("UPDATE sundial_schema_versions SET version = 1")
                .await
                .unwrap();
            store.start().await.unwrap();
            let version = store
                .backend
                .query_int(
                    store.sql.get_version(),
                    vec![Param::Text(DEFAULT_TABLE.into())],
                )
                .await
                .unwrap();
            assert_eq!(version, Some(SCHEMA_VERSION));
            assert!(store.lookup_job(&job.id).await.unwrap().is_some());
            let got = store.insert_runs(&[run("keep", 1)]).await.unwrap();
            assert_eq!(
                got,
                vec![RunInsert::Inserted(sundial_core::run::RunState::Running)]
            );
            assert!(store.list_nodes().await.unwrap().is_empty());

            // Version 2 had the run table but no node registry.
            store
                .execute_raw("DROP TABLE sundial_jobs_nodes")
                .await
                .unwrap();
            store
                .execute_raw("UPDATE sundial_schema_versions SET version = 2")
                .await
                .unwrap();
            store.start().await.unwrap();
            assert_eq!(
                store.query_runs(&RunQuery::default()).await.unwrap().len(),
                1
            );
            assert!(store.list_nodes().await.unwrap().is_empty());

            // A newer version is refused before anything is created.
            store
                .execute_raw("DROP TABLE sundial_jobs_runs")
                .await
                .unwrap();
            store
                .execute_raw("UPDATE sundial_schema_versions SET version = 5")
                .await
                .unwrap();
            let err = store.start().await.unwrap_err().to_string();
            assert!(err.contains("schema version 5"), "{err}");
            assert!(
                store.query_runs(&RunQuery::default()).await.is_err(),
                "the run table was created"
            );
        });
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn unreadable_run_rows_are_skipped() {
        block_on(async {
            let store = SqlJobStore::sqlite_in_memory();
            store.start().await.unwrap();
            store
                .insert_runs(&[run("a", 1), run("b", 2)])
                .await
                .unwrap();
            store
                .execute_raw("UPDATE sundial_jobs_runs SET state = 'exploded' WHERE job_id = 'a'")
                .await
                .unwrap();
            let got = store.query_runs(&RunQuery::default()).await.unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].job_id.as_str(), "b");
            let now = DateTime::from_timestamp(3600, 0).unwrap();
            let swept = store.interrupt_lapsed(now, 10).await.unwrap();
            assert_eq!(swept.len(), 1);
            assert_eq!(swept[0].job_id.as_str(), "b");
        });
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_run_listed_twice_is_finished_in_list_order() {
        use sundial_core::run::RunState;
        block_on(async {
            let store = SqlJobStore::sqlite_in_memory();
            store.start().await.unwrap();
            let a = run("a", 1);
            store.insert_runs(std::slice::from_ref(&a)).await.unwrap();
            let finish = |state| RunFinish {
                id: a.record.id.clone(),
                state,
                finished_at: DateTime::from_timestamp(600, 0).unwrap(),
                error: None,
            };
            let owner = OwnerId::new("o");
            let n = store
                .finish_runs(
                    &owner,
                    &[finish(RunState::Interrupted), finish(RunState::Succeeded)],
                )
                .await
                .unwrap();
            assert_eq!(n, 2);
            let n = store
                .finish_runs(
                    &owner,
                    &[finish(RunState::Failed), finish(RunState::Failed)],
                )
                .await
                .unwrap();
            assert_eq!(n, 0);
            let got = store.query_runs(&RunQuery::job("a")).await.unwrap();
            assert_eq!(got[0].state, RunState::Succeeded);
        });
    }
}
