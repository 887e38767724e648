//! PostgreSQL and MySQL/MariaDB backend on a sqlx `AnyPool`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Connection as _, Row as _};
use sundial_core::redact::redact_url;
use sundial_core::run::RunInsert;
use tokio::sync::OnceCell;

use crate::ledger::{interrupt_params, RunBatch};
use crate::schema::{Dialect, Row, RunRow, Sql};
use crate::{
    schema_statements, schema_step, Applied, Backend, Claim, Error, Notices, Param, SchemaStep,
    SCHEMA_LOCK_WAIT,
};

/// How long `start` waits for the server to answer its first connection.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How many rows one multi-row run `INSERT` carries (11 values each).
const RUN_INSERT_CHUNK: usize = 200;

pub(crate) struct SqlxBackend {
    url: Option<String>,
    name: &'static str,
    /// The pool while connected; replaced by a new one when started again after `close`.
    pool: std::sync::RwLock<Option<AnyPool>>,
    /// Serialises connecting.
    connecting: tokio::sync::Mutex<()>,
    /// Whether the server has `INSERT ... RETURNING` (PostgreSQL, MariaDB; not
    /// MySQL), found out on first use.
    returning: OnceCell<bool>,
}

/// A pooled connection that may hold the schema lock: closed when dropped
/// unless released, so that the server drops the lock with the session.
struct SessionLock(Option<PoolConnection<Any>>);

impl SessionLock {
    fn conn(&mut self) -> Result<&mut PoolConnection<Any>, Error> {
        self.0.as_mut().ok_or(Error::NotStarted)
    }

    /// Returns the connection to the pool (the lock was given back).
    fn release(&mut self) {
        self.0.take();
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

/// Takes the schema lock on `conn`, waiting at most [`SCHEMA_LOCK_WAIT`].
async fn lock_schema(conn: &mut PoolConnection<Any>, dialect: Dialect) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + SCHEMA_LOCK_WAIT;
    loop {
        let got = if dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_try_advisory_lock($1)")
                .bind(PG_SCHEMA_LOCK)
                .fetch_one(&mut **conn)
                .await?
                .try_get::<bool, _>(0)?
        } else {
            // Waits up to a second on the server; NULL means an error there.
            sqlx::query("SELECT GET_LOCK(?, 1)")
                .bind(MYSQL_SCHEMA_LOCK)
                .fetch_one(&mut **conn)
                .await?
                .try_get::<Option<i64>, _>(0)?
                == Some(1)
        };
        if got {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let name = if dialect == Dialect::Postgres {
                "pg_advisory_lock(0x73756e6469616c)"
            } else {
                "GET_LOCK('sundial_schema')"
            };
            return Err(Error::SchemaLockTimeout(SCHEMA_LOCK_WAIT, name));
        }
        if dialect == Dialect::Postgres {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// The PostgreSQL advisory lock key serializing schema changes ("sundial" in ASCII).
const PG_SCHEMA_LOCK: i64 = 0x0073_756e_6469_616c;
/// The MySQL named lock serializing schema changes.
const MYSQL_SCHEMA_LOCK: &str = "sundial_schema";

/// Shows the URL without its password.
impl fmt::Debug for SqlxBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlxBackend")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("name", &self.name)
            .field("pool", &self.pool)
            .field("returning", &self.returning)
            .finish_non_exhaustive()
    }
}

fn bind<'q>(
    mut q: Query<'q, Any, AnyArguments<'q>>,
    params: &'q [Param],
) -> Query<'q, Any, AnyArguments<'q>> {
    for p in params {
        q = match p {
            Param::Int(i) => q.bind(*i),
            Param::OptInt(i) => q.bind(*i),
            Param::Text(s) => q.bind(s.as_str()),
            Param::OptText(s) => q.bind(s.as_deref()),
        };
    }
    q
}

fn read_row(r: &AnyRow) -> Result<Row, sqlx::Error> {
    Ok(Row {
        id: r.try_get(0)?,
        next_run_time: r.try_get(1)?,
        // MySQL reports LONGTEXT as BLOB to the Any driver: accept bytes too.
        job: match r.try_get::<String, _>(2) {
            Ok(s) => s,
            Err(_) => String::from_utf8_lossy(&r.try_get::<Vec<u8>, _>(2)?).into_owned(),
        },
        lease_owner: r.try_get(3)?,
        lease_until: r.try_get(4)?,
        version: r.try_get(5)?,
    })
}

/// A text column; MySQL reports TEXT (and binary-collated) columns as BLOB to
/// the Any driver, so bytes are accepted too.
fn opt_text(r: &AnyRow, i: usize) -> Result<Option<String>, sqlx::Error> {
    match r.try_get::<Option<String>, _>(i) {
        Ok(s) => Ok(s),
        Err(_) => Ok(r
            .try_get::<Option<Vec<u8>>, _>(i)?
            .map(|b| String::from_utf8_lossy(&b).into_owned())),
    }
}

fn text(r: &AnyRow, i: usize) -> Result<String, sqlx::Error> {
    opt_text(r, i)?.ok_or_else(|| sqlx::Error::ColumnDecode {
        index: i.to_string(),
        source: "unexpected NULL".into(),
    })
}

fn read_run(r: &AnyRow) -> Result<RunRow, sqlx::Error> {
    Ok(RunRow {
        run_id: text(r, 0)?,
        job_id: text(r, 1)?,
        scheduled: r.try_get(2)?,
        attempt: r.try_get(3)?,
        state: text(r, 4)?,
        owner: opt_text(r, 5)?,
        node: opt_text(r, 6)?,
        started: r.try_get(7)?,
        finished: r.try_get(8)?,
        heartbeat: r.try_get(9)?,
        error: opt_text(r, 10)?,
    })
}

/// The `host:port` (or socket path) the driver connects to for `url`, without
/// credentials; the redacted URL when the driver cannot read it.
fn server_address(url: &str, name: &str) -> String {
    fn host_port(host: &str, port: u16) -> String {
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }
    #[cfg(feature = "postgres")]
    if name == "postgres" {
        if let Ok(o) = url.parse::<sqlx::postgres::PgConnectOptions>() {
            let port = o.get_port();
            return match o.get_socket() {
                Some(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
                None if o.get_host().starts_with('/') => {
                    format!("{}/.s.PGSQL.{port}", o.get_host())
                }
                None => host_port(o.get_host(), port),
            };
        }
    }
    #[cfg(feature = "mysql")]
    if name == "mysql" {
        if let Ok(o) = url.parse::<sqlx::mysql::MySqlConnectOptions>() {
            return match o.get_socket() {
                Some(path) => path.display().to_string(),
                None => host_port(o.get_host(), o.get_port()),
            };
        }
    }
    let _ = name;
    redact_url(url)
}

/// The run ids among `ids` that are stored (as this transaction sees them).
async fn stored_runs(
    conn: &mut AnyConnection,
    sql: &Sql,
    ids: &[String],
) -> Result<HashSet<String>, Error> {
    let params: Vec<Param> = ids.iter().map(|id| Param::Text(id.clone())).collect();
    let rows = bind(sqlx::query(&sql.existing_runs(ids.len())), &params)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .iter()
        .map(|r| text(r, 0))
        .collect::<Result<HashSet<_>, _>>()?)
}

impl SqlxBackend {
    pub(crate) fn new(url: &str, name: &'static str) -> Self {
        SqlxBackend {
            url: Some(url.to_string()),
            name,
            pool: std::sync::RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            returning: OnceCell::new(),
        }
    }

    pub(crate) fn from_pool(pool: AnyPool, name: &'static str) -> Self {
        SqlxBackend {
            url: None,
            name,
            pool: std::sync::RwLock::new(Some(pool)),
            connecting: tokio::sync::Mutex::new(()),
            returning: OnceCell::new(),
        }
    }

    /// A failure to connect to the server of `url`, naming the server.
    fn connect_error(&self, url: &str, source: sqlx::Error) -> Error {
        Error::Connect {
            backend: self.name,
            addr: server_address(url, self.name),
            source,
        }
    }

    fn pool(&self) -> Result<AnyPool, Error> {
        self.pool
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Error::NotStarted)
    }

    /// Whether inserts can return what they inserted: always on PostgreSQL,
    /// on MariaDB (10.5 and newer) but not on MySQL.
    async fn has_returning(&self, sql: &Sql) -> Result<bool, Error> {
        if sql.dialect != Dialect::MySql {
            return Ok(true);
        }
        let pool = self.pool()?;
        let returning = self
            .returning
            .get_or_try_init(|| async {
                let row = sqlx::query("SELECT VERSION()").fetch_one(&pool).await?;
                Ok::<_, Error>(text(&row, 0)?.contains("MariaDB"))
            })
            .await?;
        Ok(*returning)
    }
}

#[async_trait]
impl Backend for SqlxBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn connect(&self) -> Result<(), Error> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        let _one = self.connecting.lock().await;
        if self.pool().is_ok_and(|p| !p.is_closed()) {
            return Ok(());
        }
        let pool = async {
            sqlx::any::install_default_drivers();
            // A pool retries a refused connection until its acquire timeout and
            // then reports only the timeout; one direct connection reports the
            // cause (refused, unknown host, wrong password) at once.
            let first = tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect(url))
                .await
                .unwrap_or_else(|_| {
                    Err(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {CONNECT_TIMEOUT:?}"),
                    )))
                })
                .map_err(|e| self.connect_error(url, e))?;
            if let Err(e) = first.close().await {
                tracing::debug!(error = %e, "closing the first connection failed");
            }
            AnyPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|e| self.connect_error(url, e))
        }
        .await?;
        *self.pool.write().unwrap_or_else(|p| p.into_inner()) = Some(pool);
        Ok(())
    }

    async fn close(&self) {
        if let Ok(p) = self.pool() {
            if self.url.is_some() {
                p.close().await;
            }
        }
    }

    async fn migrate(&self, sql: &Sql) -> Result<SchemaStep, Error> {
        // The lock belongs to this connection's session, and every statement
        // runs on it (a pool of one connection works too). Dropped before the
        // lock is given back (an error, a cancelled start), the connection is
        // closed, which releases the lock.
        let mut conn = SessionLock(Some(self.pool()?.acquire().await?));
        let c = conn.conn()?;
        lock_schema(c, sql.dialect).await?;
        sqlx::query(&sql.create_versions())
            .execute(&mut **c)
            .await?;
        let found: Option<i64> = match bind(
            sqlx::query(&sql.get_version()),
            &[Param::Text(sql.table.clone())],
        )
        .fetch_optional(&mut **c)
        .await?
        {
            Some(r) => r.try_get::<Option<i64>, _>(0)?,
            None => None,
        };
        let step = schema_step(sql, found)?;
        for (stmt, params) in schema_statements(sql, step) {
            match bind(sqlx::query(&stmt), &params).execute(&mut **c).await {
                Ok(_) => {}
                Err(e) if sql.dialect == Dialect::MySql && is_duplicate_key_name(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let unlock = if sql.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(PG_SCHEMA_LOCK)
        } else {
            sqlx::query("SELECT RELEASE_LOCK(?)").bind(MYSQL_SCHEMA_LOCK)
        };
        unlock.fetch_one(&mut **c).await?;
        conn.release();
        Ok(step)
    }

    async fn notify(&self, channel: &str, payload: &str) -> Result<(), Error> {
        if self.name == "postgres" {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(&self.pool()?)
                .await?;
        }
        Ok(())
    }

    async fn listen(&self, channel: &str) -> Result<Option<Notices>, Error> {
        #[cfg(feature = "postgres")]
        if self.name == "postgres" {
            // A pool handed in has no URL to open a listening connection with.
            let Some(url) = &self.url else {
                return Ok(None);
            };
            let mut listener = sqlx::postgres::PgListener::connect(url)
                .await
                .map_err(|e| self.connect_error(url, e))?;
            listener.listen(channel).await?;
            return Ok(Some(futures::StreamExt::boxed(futures::StreamExt::map(
                listener.into_stream(),
                |n| n.map(|n| n.payload().to_string()).map_err(Error::from),
            ))));
        }
        let _ = channel;
        Ok(None)
    }

    async fn execute(&self, sql: String, params: Vec<Param>) -> Result<u64, Error> {
        let r = bind(sqlx::query(&sql), &params)
            .execute(&self.pool()?)
            .await?;
        Ok(r.rows_affected())
    }

    async fn query_rows(&self, sql: String, params: Vec<Param>) -> Result<Vec<Row>, Error> {
        let rows = bind(sqlx::query(&sql), &params)
            .fetch_all(&self.pool()?)
            .await?;
        Ok(rows.iter().map(read_row).collect::<Result<Vec<_>, _>>()?)
    }

    async fn query_int(&self, sql: String, params: Vec<Param>) -> Result<Option<i64>, Error> {
        let row = bind(sqlx::query(&sql), &params)
            .fetch_optional(&self.pool()?)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<Option<i64>, _>(0)?,
            None => None,
        })
    }

    async fn query_pair(
        &self,
        sql: String,
        params: Vec<Param>,
    ) -> Result<(Option<i64>, Option<i64>), Error> {
        let row = bind(sqlx::query(&sql), &params)
            .fetch_optional(&self.pool()?)
            .await?;
        Ok(match row {
            Some(r) => (
                r.try_get::<Option<i64>, _>(0)?,
                r.try_get::<Option<i64>, _>(1)?,
            ),
            None => (None, None),
        })
    }

    async fn query_ids(&self, sql: String, params: Vec<Param>) -> Result<Vec<String>, Error> {
        let rows = bind(sqlx::query(&sql), &params)
            .fetch_all(&self.pool()?)
            .await?;
        Ok(rows
            .iter()
            .map(|r| text(r, 0))
            .collect::<Result<Vec<String>, _>>()?)
    }

    async fn plan(&self, sql: String) -> Result<Vec<String>, Error> {
        let explain = if self.name == "postgres" {
            format!("EXPLAIN {sql}")
        } else {
            format!("EXPLAIN FORMAT=JSON {sql}")
        };
        self.query_ids(explain, Vec::new()).await
    }

    async fn execute_all(&self, statements: Vec<(String, Vec<Param>)>) -> Result<u64, Error> {
        if let [(sql, params)] = statements.as_slice() {
            // One statement is atomic on its own: no round trips to begin
            // and commit a transaction around it.
            let done = bind(sqlx::query(sql), params)
                .execute(&self.pool()?)
                .await?;
            return Ok(done.rows_affected());
        }
        let mut tx = self.pool()?.begin().await?;
        let mut changed = 0;
        for (sql, params) in &statements {
            changed += bind(sqlx::query(sql), params)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn apply_then_check(
        &self,
        statements: Vec<(String, Vec<Param>, u64)>,
        check: (String, Vec<Param>),
    ) -> Result<Applied, Error> {
        let mut tx = self.pool()?.begin().await?;
        let mut all = true;
        for (sql, params, named) in &statements {
            let done = bind(sqlx::query(sql), params).execute(&mut *tx).await?;
            all &= done.rows_affected() == *named;
        }
        if all {
            tx.commit().await?;
            return Ok(Applied::All);
        }
        let rows = bind(sqlx::query(&check.0), &check.1)
            .fetch_all(&mut *tx)
            .await?;
        let state = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        tx.commit().await?;
        Ok(Applied::Checked(state))
    }

    async fn claim(&self, sql: &Sql, claim: Claim) -> Result<Vec<Row>, Error> {
        if sql.dialect == Dialect::Postgres {
            // One statement, one round trip: it picks, locks and claims.
            let mut params = vec![Param::Text(claim.owner.clone()), Param::Int(claim.until)];
            params.extend(claim.select_params());
            let claimed = bind(sqlx::query(&sql.claim_due(claim.skip.len())), &params)
                .fetch_all(&self.pool()?)
                .await?;
            return Ok(claimed
                .iter()
                .map(read_row)
                .collect::<Result<Vec<_>, _>>()?);
        }
        let mut tx = self.pool()?.begin().await?;
        let select = sql.select_due(claim.skip.len());
        let params = claim.select_params();
        let Claim { owner, until, .. } = claim;
        let fetched = bind(sqlx::query(&select), &params)
            .fetch_all(&mut *tx)
            .await?;
        let mut rows = fetched
            .iter()
            .map(read_row)
            .collect::<Result<Vec<_>, _>>()?;
        if !rows.is_empty() {
            let mut params = vec![Param::Text(owner.clone()), Param::Int(until)];
            params.extend(rows.iter().map(|r| Param::Text(r.id.clone())));
            let claim = sql.claim(rows.len());
            bind(sqlx::query(&claim), &params).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        for r in &mut rows {
            r.lease_owner = Some(owner.clone());
            r.lease_until = Some(until);
            r.version += 1;
        }
        Ok(rows)
    }

    async fn query_runs(&self, sql: String, params: Vec<Param>) -> Result<Vec<RunRow>, Error> {
        let rows = bind(sqlx::query(&sql), &params)
            .fetch_all(&self.pool()?)
            .await?;
        Ok(rows.iter().map(read_run).collect::<Result<Vec<_>, _>>()?)
    }

    async fn insert_runs(&self, sql: &Sql, batch: Arc<RunBatch>) -> Result<Vec<RunInsert>, Error> {
        let returning = self.has_returning(sql).await?;
        let mut tx = self.pool()?.begin().await?;
        // Serialise count-then-insert per job across processes: `max_instances`
        // holds even when two nodes start runs of one job at the same moment.
        for (query, params) in batch.lock_queries(sql) {
            bind(sqlx::query(&query), &params)
                .fetch_all(&mut *tx)
                .await?;
        }
        let mut counts = HashMap::new();
        for (query, params) in batch.count_queries(sql) {
            let rows = bind(sqlx::query(&query), &params)
                .fetch_all(&mut *tx)
                .await?;
            for r in &rows {
                counts.insert(text(r, 0)?, r.try_get::<i64, _>(1)?);
            }
        }
        let settled = batch.settle(&counts);
        let mut inserted = HashSet::new();
        for (insert, params, ids) in settled.inserts(sql, RUN_INSERT_CHUNK, returning) {
            if !returning {
                // MySQL: the rows of this chunk stored afterwards, but not
                // before, are the ones this statement inserted.
                let before = stored_runs(&mut tx, sql, &ids).await?;
                bind(sqlx::query(&insert), &params)
                    .execute(&mut *tx)
                    .await?;
                let after = stored_runs(&mut tx, sql, &ids).await?;
                inserted.extend(after.into_iter().filter(|id| !before.contains(id)));
            } else {
                let rows = bind(sqlx::query(&insert), &params)
                    .fetch_all(&mut *tx)
                    .await?;
                for r in &rows {
                    inserted.insert(text(r, 0)?);
                }
            }
        }
        tx.commit().await?;
        Ok(settled.results(&inserted))
    }

    async fn interrupt_lapsed(
        &self,
        sql: &Sql,
        now: i64,
        limit: i64,
    ) -> Result<Vec<RunRow>, Error> {
        let mut tx = self.pool()?.begin().await?;
        // FOR UPDATE SKIP LOCKED: a concurrent sweeper gets other rows or none.
        let params = [Param::Int(now), Param::Int(limit)];
        let fetched = bind(sqlx::query(&sql.select_lapsed()), &params)
            .fetch_all(&mut *tx)
            .await?;
        let rows = fetched
            .iter()
            .map(read_run)
            .collect::<Result<Vec<_>, _>>()?;
        if !rows.is_empty() {
            let params = interrupt_params(now, &rows);
            bind(sqlx::query(&sql.interrupt_runs(rows.len())), &params)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rows)
    }
}

/// Whether MySQL refused to create an index that already exists (error 1061,
/// "Duplicate key name"): MySQL has no `CREATE INDEX IF NOT EXISTS`.
#[cfg(feature = "mysql")]
fn is_duplicate_key_name(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|m| m.number() == 1061)
}

#[cfg(not(feature = "mysql"))]
fn is_duplicate_key_name(_: &sqlx::Error) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::server_address;

    #[test]
    fn server_addresses_have_no_credentials() {
        #[cfg(feature = "postgres")]
        {
            let pg = |url| server_address(url, "postgres");
            assert_eq!(
                pg("postgres://u:s3cret@db.example:5499/app"),
                "db.example:5499"
            );
            assert_eq!(pg("postgresql://u@10.0.0.7/app"), "10.0.0.7:5432");
            assert_eq!(pg("postgres://u@[::1]:6000/app"), "[::1]:6000");
            assert_eq!(
                pg("postgres://u@localhost/app?host=/var/run/postgresql"),
                "/var/run/postgresql/.s.PGSQL.5432"
            );
        }
        #[cfg(feature = "mysql")]
        {
            let my = |url| server_address(url, "mysql");
            assert_eq!(my("mysql://root:s3cret@127.0.0.1:1/test"), "127.0.0.1:1");
            assert_eq!(my("mysql://root@db/test"), "db:3306");
        }
    }
}
