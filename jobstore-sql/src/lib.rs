//! SQL job stores for Sundial: SQLite (embedded, through rusqlite with the
//! bundled library), PostgreSQL and MySQL/MariaDB (through sqlx).
//!
//! One row per job: `id` (primary key), `next_run_time` (microseconds since the
//! Unix epoch, UTC, indexed; NULL when paused), `job` (JSON: task, trigger, args,
//! options), `lease_owner`, `lease_until`, `version`. A table
//! `sundial_schema_versions` records each job table's schema version, so later
//! versions can migrate and older builds refuse a newer schema instead of
//! overwriting it.
//!
//! | capability | SQLite | PostgreSQL | MySQL/MariaDB |
//! |---|---|---|---|
//! | persistent | yes | yes | yes |
//! | shared across processes | yes (same file) | yes | yes |
//! | atomic claim | `BEGIN IMMEDIATE` | `FOR UPDATE SKIP LOCKED` | `FOR UPDATE SKIP LOCKED` |
//! | tested against | bundled SQLite | PostgreSQL 15 | MariaDB 10.11 |

mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod sqlx_backend;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sundial_core::job::{JobId, JobRecord, OwnerId, Release, ReleaseOutcome};
use sundial_core::store::{
    lease_duration, release_entry, sort_records, JobStore, ReleaseItem, StoreCapabilities,
};

pub use schema::Dialect;
use schema::{from_micros, to_micros, valid_table, Row, Sql, SCHEMA_VERSION};

/// The default job table name.
pub const DEFAULT_TABLE: &str = "sundial_jobs";

/// How many rows one multi-row INSERT carries in `add_jobs`.
const INSERT_CHUNK: usize = 200;

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
            Error::Sqlx(e) => matches!(
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

/// A parameter of a statement.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Int(i64),
    OptInt(Option<i64>),
    Text(String),
}

/// What each backend provides; the job-store logic on top is shared.
#[async_trait]
pub(crate) trait Backend: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    async fn connect(&self) -> Result<(), Error>;
    async fn close(&self);
    async fn execute(&self, sql: String, params: Vec<Param>) -> Result<u64, Error>;
    async fn query_rows(&self, sql: String, params: Vec<Param>) -> Result<Vec<Row>, Error>;
    async fn query_int(&self, sql: String, params: Vec<Param>) -> Result<Option<i64>, Error>;
    async fn query_ids(&self, sql: String, params: Vec<Param>) -> Result<Vec<String>, Error>;
    /// Runs the statements in one transaction (all or none).
    async fn execute_all(&self, statements: Vec<(String, Vec<Param>)>) -> Result<(), Error>;
    /// Runs the statements, then the check query (rows of id, version, lease
    /// owner), in one transaction.
    async fn apply_then_check(
        &self,
        statements: Vec<(String, Vec<Param>)>,
        check: (String, Vec<Param>),
    ) -> Result<Vec<(String, i64, Option<String>)>, Error>;
    /// Selects due rows and claims them in one transaction.
    async fn claim(
        &self,
        sql: &Sql,
        now: i64,
        owner: String,
        until: i64,
        limit: i64,
    ) -> Result<Vec<Row>, Error>;
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
    backend: Box<dyn Backend>,
    sql: Sql,
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
        let redacted = redact(url);
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
            backend,
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

    /// The job table's name.
    pub fn table(&self) -> &str {
        &self.sql.table
    }

    /// The SQL dialect.
    pub fn dialect(&self) -> Dialect {
        self.sql.dialect
    }

    /// Drops the job table (and its schema-version row); for tests and tools.
    ///
    /// # Errors
    /// Database errors.
    pub async fn drop_table(&self) -> Result<(), Error> {
        self.backend.connect().await?;
        let p = self.sql.p(1);
        self.backend
            .execute_all(vec![
                (format!("DROP TABLE IF EXISTS {}", self.sql.table), vec![]),
                (
                    format!("DELETE FROM sundial_schema_versions WHERE table_name = {p}"),
                    vec![Param::Text(self.sql.table.clone())],
                ),
            ])
            .await
    }

    /// Runs one SQL statement as is (for tests and maintenance tools).
    ///
    /// # Errors
    /// Database errors.
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, Error> {
        self.backend.connect().await?;
        self.backend.execute(sql.to_string(), vec![]).await
    }

    fn err(&self, e: Error) -> sundial_core::Error {
        let name = self.backend.name();
        if e.is_temporary() {
            sundial_core::Error::store_temporary(name, e)
        } else {
            sundial_core::Error::store(name, e)
        }
    }

    async fn migrate(&self) -> Result<(), Error> {
        for stmt in self.sql.create() {
            self.backend.execute(stmt, vec![]).await?;
        }
        let table = Param::Text(self.sql.table.clone());
        match self
            .backend
            .query_int(self.sql.get_version(), vec![table.clone()])
            .await?
        {
            None => {
                let insert = self
                    .backend
                    .execute(
                        self.sql.set_version(),
                        vec![table, Param::Int(SCHEMA_VERSION)],
                    )
                    .await;
                match insert {
                    Ok(_) => Ok(()),
                    // Another process recorded it first.
                    Err(e) if e.is_unique_violation() => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Some(v) if v > SCHEMA_VERSION => Err(Error::NewerSchema {
                table: self.sql.table.clone(),
                found: v,
                supported: SCHEMA_VERSION,
            }),
            Some(_) => Ok(()),
        }
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

/// Removes the password from a URL for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
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
        self.migrate().await.map_err(|e| self.err(e))
    }

    async fn shutdown(&self) -> sundial_core::Result<()> {
        self.backend.close().await;
        Ok(())
    }

    async fn add_job(&self, job: &JobRecord) -> sundial_core::Result<()> {
        let row = Row::from_record(job);
        match self
            .backend
            .execute(self.sql.insert(1), insert_params(&[row]))
            .await
        {
            Ok(_) => Ok(()),
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
            Ok(()) => Ok(()),
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
                    Param::Text(row.id),
                ],
            )
            .await
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(sundial_core::Error::JobNotFound {
                id: job.id.to_string(),
            });
        }
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

    async fn get_next_run_time(&self) -> sundial_core::Result<Option<DateTime<Utc>>> {
        let t = self
            .backend
            .query_int(self.sql.next_run_time(), vec![])
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
    ) -> sundial_core::Result<Vec<JobRecord>> {
        let until = now + lease_duration(lease);
        let mut attempt = 0;
        let rows = loop {
            let claimed = self
                .backend
                .claim(
                    &self.sql,
                    to_micros(now),
                    owner.to_string(),
                    to_micros(until),
                    i64::try_from(limit).unwrap_or(i64::MAX),
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
        while !items.is_empty() {
            let rest = items.split_off(items.len().min(release_chunk(self.sql.dialect)));
            out.extend(
                self.release_chunk(owner, std::mem::replace(&mut items, rest))
                    .await?,
            );
        }
        Ok(out)
    }
}

impl SqlJobStore {
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
            statements.push((self.sql.bulk_reschedule(n), resched));
        }
        if !removes.is_empty() {
            let n = removes.len() / 2;
            let mut params = vec![ownerp];
            params.extend(removes);
            statements.push((self.sql.bulk_remove(n), params));
        }
        let check_ids: Vec<Param> = items
            .iter()
            .map(|i| Param::Text(i.id.to_string()))
            .collect();
        let check = (self.sql.release_check(items.len()), check_ids);
        let state = self
            .backend
            .apply_then_check(statements, check)
            .await
            .map_err(|e| self.err(e))?;
        let state: std::collections::HashMap<String, (i64, Option<String>)> =
            state.into_iter().map(|(id, v, o)| (id, (v, o))).collect();
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let now = state.get(it.id.as_str());
            let expected = i64::try_from(it.version).unwrap_or(i64::MAX) + 1;
            let applied = match it.outcome {
                Release::Reschedule { .. } => {
                    now.is_some_and(|(v, o)| *v == expected && o.is_none())
                }
                Release::Remove => now.is_none(),
                Release::Unclaim => false,
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
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/app"),
            "postgres://app:***@db:5432/app"
        );
        assert_eq!(redact("postgres://db/app"), "postgres://db/app");
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
        assert!(my.select_due().ends_with("LIMIT ? FOR UPDATE SKIP LOCKED"));
    }
}
