//! SQLite backend: one rusqlite connection, used from tokio's blocking pool so
//! that no call blocks an async worker thread.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use sundial_core::run::RunInsert;

use crate::ledger::{interrupt_params, RunBatch};
use crate::schema::{Row, RunRow, Sql};
use crate::{schema_statements, schema_step, Applied, Backend, Claim, Error, Param, SchemaStep};

#[derive(Debug)]
pub(crate) struct SqliteBackend {
    path: Option<PathBuf>,
    conn: Arc<Mutex<Option<Connection>>>,
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Int(i) => i.to_sql(),
            Param::OptInt(i) => i.to_sql(),
            Param::Text(s) => s.to_sql(),
            Param::OptText(s) => s.to_sql(),
        }
    }
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        next_run_time: r.get(1)?,
        job: r.get(2)?,
        lease_owner: r.get(3)?,
        lease_until: r.get(4)?,
        version: r.get(5)?,
    })
}

fn read_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        run_id: r.get(0)?,
        job_id: r.get(1)?,
        scheduled: r.get(2)?,
        attempt: r.get(3)?,
        state: r.get(4)?,
        owner: r.get(5)?,
        node: r.get(6)?,
        started: r.get(7)?,
        finished: r.get(8)?,
        heartbeat: r.get(9)?,
        error: r.get(10)?,
    })
}

/// Switches the file to write-ahead logging. The switch needs the file to
/// itself and SQLite does not wait for that (no busy handler), so when several
/// processes open a new file at once it is retried for a while.
fn set_wal(c: &Connection) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match c.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl SqliteBackend {
    pub(crate) fn file(path: &Path) -> Self {
        SqliteBackend {
            path: Some(path.to_path_buf()),
            conn: Arc::default(),
        }
    }

    pub(crate) fn memory() -> Self {
        SqliteBackend {
            path: None,
            conn: Arc::default(),
        }
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            match guard.as_mut() {
                Some(c) => f(c),
                None => Err(Error::NotStarted),
            }
        })
        .await
        .map_err(|e| Error::Join(e.to_string()))?
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn connect(&self) -> Result<(), Error> {
        let conn = Arc::clone(&self.conn);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            if guard.is_some() {
                return Ok(());
            }
            let c = match &path {
                Some(p) => Connection::open(p)?,
                None => Connection::open_in_memory()?,
            };
            c.busy_timeout(std::time::Duration::from_secs(10))?;
            set_wal(&c)?;
            c.pragma_update(None, "synchronous", "NORMAL")?;
            *guard = Some(c);
            Ok(())
        })
        .await
        .map_err(|e| Error::Join(e.to_string()))?
    }

    async fn close(&self) {
        let conn = Arc::clone(&self.conn);
        let _ = tokio::task::spawn_blocking(move || {
            conn.lock().unwrap_or_else(|p| p.into_inner()).take();
        })
        .await;
    }

    async fn migrate(&self, sql: &Sql) -> Result<SchemaStep, Error> {
        let sql = sql.clone();
        // One transaction holding the file's write lock; it runs to its end on
        // the blocking pool even if the caller goes away, and rolls back on error.
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(&sql.create_versions())?;
            let found: Option<i64> = tx
                .query_row(&sql.get_version(), [sql.table.as_str()], |r| r.get(0))
                .optional()?;
            let step = schema_step(&sql, found)?;
            for (stmt, params) in schema_statements(&sql, step) {
                tx.execute(&stmt, params_from_iter(params.iter()))?;
            }
            tx.commit()?;
            Ok(step)
        })
        .await
    }

    async fn execute(&self, sql: String, params: Vec<Param>) -> Result<u64, Error> {
        self.with(move |c| {
            let n = c
                .prepare_cached(&sql)?
                .execute(params_from_iter(params.iter()))?;
            Ok(n as u64)
        })
        .await
    }

    async fn query_rows(&self, sql: String, params: Vec<Param>) -> Result<Vec<Row>, Error> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(params.iter()), read_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<Row>>>()?)
        })
        .await
    }

    async fn query_int(&self, sql: String, params: Vec<Param>) -> Result<Option<i64>, Error> {
        self.with(move |c| {
            let v: Option<Option<i64>> = c
                .prepare_cached(&sql)?
                .query_row(params_from_iter(params.iter()), |r| r.get(0))
                .optional()?;
            Ok(v.flatten())
        })
        .await
    }

    async fn query_pair(
        &self,
        sql: String,
        params: Vec<Param>,
    ) -> Result<(Option<i64>, Option<i64>), Error> {
        self.with(move |c| {
            let v: Option<(Option<i64>, Option<i64>)> = c
                .prepare_cached(&sql)?
                .query_row(params_from_iter(params.iter()), |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            Ok(v.unwrap_or_default())
        })
        .await
    }

    async fn query_ids(&self, sql: String, params: Vec<Param>) -> Result<Vec<String>, Error> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let ids = stmt.query_map(params_from_iter(params.iter()), |r| r.get(0))?;
            Ok(ids.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    async fn plan(&self, sql: String) -> Result<Vec<String>, Error> {
        self.with(move |c| {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let lines = stmt.query_map([], |r| r.get(3))?;
            Ok(lines.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    async fn execute_all(&self, statements: Vec<(String, Vec<Param>)>) -> Result<u64, Error> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut changed = 0;
            for (sql, params) in &statements {
                changed += tx
                    .prepare_cached(sql)?
                    .execute(params_from_iter(params.iter()))? as u64;
            }
            tx.commit()?;
            Ok(changed)
        })
        .await
    }

    async fn apply_then_check(
        &self,
        statements: Vec<(String, Vec<Param>, u64)>,
        check: (String, Vec<Param>),
    ) -> Result<Applied, Error> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut all = true;
            for (sql, params, named) in &statements {
                let done = tx
                    .prepare_cached(sql)?
                    .execute(params_from_iter(params.iter()))?;
                all &= done as u64 == *named;
            }
            if all {
                tx.commit()?;
                return Ok(Applied::All);
            }
            let rows = {
                let mut stmt = tx.prepare_cached(&check.0)?;
                let it = stmt.query_map(params_from_iter(check.1.iter()), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
                it.collect::<rusqlite::Result<Vec<_>>>()?
            };
            tx.commit()?;
            Ok(Applied::Checked(rows))
        })
        .await
    }

    async fn claim(&self, sql: &Sql, claim: Claim) -> Result<Vec<Row>, Error> {
        let sql = sql.clone();
        self.with(move |c| {
            let select = sql.select_due(claim.skip.len());
            let select_params = claim.select_params();
            let Claim { owner, until, .. } = claim;
            // BEGIN IMMEDIATE takes the write lock first: other processes on the
            // same file wait, so no row is claimed twice.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut rows: Vec<Row> = {
                let mut stmt = tx.prepare_cached(&select)?;
                let it = stmt.query_map(params_from_iter(select_params.iter()), read_row)?;
                it.collect::<rusqlite::Result<Vec<Row>>>()?
            };
            if !rows.is_empty() {
                let mut params = vec![Param::Text(owner.clone()), Param::Int(until)];
                params.extend(rows.iter().map(|r| Param::Text(r.id.clone())));
                tx.prepare_cached(&sql.claim(rows.len()))?
                    .execute(params_from_iter(params.iter()))?;
            }
            tx.commit()?;
            for r in &mut rows {
                r.lease_owner = Some(owner.clone());
                r.lease_until = Some(until);
                r.version += 1;
            }
            Ok(rows)
        })
        .await
    }

    async fn query_runs(&self, sql: String, params: Vec<Param>) -> Result<Vec<RunRow>, Error> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(params.iter()), read_run)?;
            Ok(rows.collect::<rusqlite::Result<Vec<RunRow>>>()?)
        })
        .await
    }

    async fn insert_runs(&self, sql: &Sql, batch: Arc<RunBatch>) -> Result<Vec<RunInsert>, Error> {
        let sql = sql.clone();
        self.with(move |c| {
            // BEGIN IMMEDIATE: the count and the inserts see no other writer.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut counts = HashMap::new();
            for (query, params) in batch.count_queries(&sql) {
                let mut stmt = tx.prepare_cached(&query)?;
                let rows = stmt.query_map(params_from_iter(params.iter()), |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?;
                for row in rows {
                    let (job, n) = row?;
                    counts.insert(job, n);
                }
            }
            let settled = batch.settle(&counts);
            let mut inserted = HashSet::new();
            // One cached single-row statement per run (cheaper in process than
            // multi-row statements or RETURNING): a change means it was inserted.
            for (insert, params, ids) in settled.inserts(&sql, 1, false) {
                let n = tx
                    .prepare_cached(&insert)?
                    .execute(params_from_iter(params.iter()))?;
                if n > 0 {
                    inserted.extend(ids);
                }
            }
            tx.commit()?;
            Ok(settled.results(&inserted))
        })
        .await
    }

    async fn interrupt_lapsed(
        &self,
        sql: &Sql,
        now: i64,
        limit: i64,
    ) -> Result<Vec<RunRow>, Error> {
        let sql = sql.clone();
        self.with(move |c| {
            // BEGIN IMMEDIATE serialises sweepers: a run is interrupted once.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let rows: Vec<RunRow> = {
                let mut stmt = tx.prepare_cached(&sql.select_lapsed())?;
                let it = stmt.query_map(rusqlite::params![now, limit], read_run)?;
                it.collect::<rusqlite::Result<Vec<RunRow>>>()?
            };
            if !rows.is_empty() {
                tx.prepare_cached(&sql.interrupt_runs(rows.len()))?
                    .execute(params_from_iter(interrupt_params(now, &rows).iter()))?;
            }
            tx.commit()?;
            Ok(rows)
        })
        .await
    }
}
