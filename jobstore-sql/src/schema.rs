//! SQL text per dialect, and the mapping between rows and job records.

use chrono::{DateTime, Utc};
use sundial_core::job::{JobContent, JobId, JobRecord, Lease, OwnerId};
use sundial_core::run::{RunId, RunRecord, RunState};

use crate::Param;

/// The schema version this build writes and reads: 1 had the job table only, 2
/// added the run ledger table (`<table>_runs`), 3 the node registry
/// (`<table>_nodes`), 4 an index on `lease_until` (for the earliest due time).
pub(crate) const SCHEMA_VERSION: i64 = 4;

/// How many leased rows, earliest lease first, the earliest-due query reads.
pub(crate) const LEASED_SCAN: usize = 100;

/// The SQL dialect a store speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.35 or newer.
    Sqlite,
    /// PostgreSQL 12 or newer.
    Postgres,
    /// MySQL 8 or MariaDB 10.6 or newer.
    MySql,
}

/// One job row as stored.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) id: String,
    pub(crate) next_run_time: Option<i64>,
    pub(crate) job: String,
    pub(crate) lease_owner: Option<String>,
    pub(crate) lease_until: Option<i64>,
    pub(crate) version: i64,
}

pub(crate) fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

impl Row {
    pub(crate) fn from_record(rec: &JobRecord) -> Row {
        Row {
            id: rec.id.to_string(),
            next_run_time: rec.next_run_time.map(to_micros),
            job: rec.content.as_str().to_string(),
            lease_owner: rec.lease.as_ref().map(|l| l.owner.to_string()),
            lease_until: rec.lease.as_ref().map(|l| to_micros(l.until)),
            version: i64::try_from(rec.version).unwrap_or(i64::MAX),
        }
    }

    /// The record, its content kept as stored (the scheduler decodes it).
    pub(crate) fn into_record(self) -> JobRecord {
        let lease = match (self.lease_owner, self.lease_until) {
            (Some(owner), Some(until)) => Some(Lease {
                owner: OwnerId::new(owner),
                until: from_micros(until),
            }),
            _ => None,
        };
        JobRecord::stored(
            JobId::new(self.id),
            JobContent::from_stored(self.job),
            self.next_run_time.map(from_micros),
            lease,
            u64::try_from(self.version).unwrap_or(0),
        )
    }
}

/// One run-ledger row as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunRow {
    pub(crate) run_id: String,
    pub(crate) job_id: String,
    pub(crate) scheduled: i64,
    pub(crate) attempt: i64,
    pub(crate) state: String,
    pub(crate) owner: Option<String>,
    pub(crate) node: Option<String>,
    pub(crate) started: Option<i64>,
    pub(crate) finished: Option<i64>,
    pub(crate) heartbeat: Option<i64>,
    pub(crate) error: Option<String>,
}

impl RunRow {
    pub(crate) fn from_record(rec: &RunRecord) -> RunRow {
        RunRow {
            run_id: rec.id.to_string(),
            job_id: rec.job_id.to_string(),
            scheduled: to_micros(rec.scheduled_time),
            attempt: i64::from(rec.attempt),
            state: rec.state.as_str().to_string(),
            owner: rec.owner.as_ref().map(ToString::to_string),
            node: rec.node.clone(),
            started: rec.started_at.map(to_micros),
            finished: rec.finished_at.map(to_micros),
            heartbeat: rec.heartbeat_until.map(to_micros),
            error: rec.error.clone(),
        }
    }

    /// Appends the row's values in [`RUN_COLUMNS`] order.
    pub(crate) fn push_params(&self, out: &mut Vec<Param>) {
        out.push(Param::Text(self.run_id.clone()));
        out.push(Param::Text(self.job_id.clone()));
        out.push(Param::Int(self.scheduled));
        out.push(Param::Int(self.attempt));
        out.push(Param::Text(self.state.clone()));
        out.push(Param::OptText(self.owner.clone()));
        out.push(Param::OptText(self.node.clone()));
        out.push(Param::OptInt(self.started));
        out.push(Param::OptInt(self.finished));
        out.push(Param::OptInt(self.heartbeat));
        out.push(Param::OptText(self.error.clone()));
    }

    /// The record, or why the row cannot be read (an unknown state, an attempt
    /// out of range).
    pub(crate) fn into_record(self) -> Result<RunRecord, String> {
        let state = RunState::parse(&self.state)
            .ok_or_else(|| format!("unknown run state {:?}", self.state))?;
        let attempt = u32::try_from(self.attempt)
            .map_err(|_| format!("attempt {} out of range", self.attempt))?;
        Ok(RunRecord {
            id: RunId::new(self.run_id),
            job_id: JobId::new(self.job_id),
            scheduled_time: from_micros(self.scheduled),
            attempt,
            state,
            owner: self.owner.map(OwnerId::new),
            node: self.node,
            started_at: self.started.map(from_micros),
            finished_at: self.finished.map(from_micros),
            heartbeat_until: self.heartbeat.map(from_micros),
            error: self.error,
        })
    }
}

/// The run table's columns, in the order rows are written and read.
pub(crate) const RUN_COLUMNS: &str =
    "run_id, job_id, scheduled, attempt, state, owner, node, started, finished, heartbeat, error";

/// How many values one run row binds.
pub(crate) const RUN_PARAMS: usize = 11;

/// Generates the statements for one table in one dialect.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    pub(crate) dialect: Dialect,
    pub(crate) table: String,
}

pub(crate) const COLUMNS: &str = "id, next_run_time, job, lease_owner, lease_until, version";

impl Sql {
    /// Placeholder number `n` (1-based).
    pub(crate) fn p(&self, n: usize) -> String {
        match self.dialect {
            Dialect::Postgres => format!("${n}"),
            _ => "?".to_string(),
        }
    }

    fn list(&self, from: usize, count: usize) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(count * 6);
        for n in from..from + count {
            if n > from {
                out.push_str(", ");
            }
            match self.dialect {
                Dialect::Postgres => {
                    let _ = write!(out, "${n}");
                }
                _ => out.push('?'),
            }
        }
        out
    }

    /// Creates the table of schema versions (shared by every job table).
    pub(crate) fn create_versions(&self) -> String {
        "CREATE TABLE IF NOT EXISTS sundial_schema_versions (table_name VARCHAR(191) PRIMARY KEY, version BIGINT NOT NULL)".to_string()
    }

    /// Creates the job table, the run table and their indexes (idempotent).
    pub(crate) fn create(&self) -> Vec<String> {
        let t = &self.table;
        let mut statements = match self.dialect {
            Dialect::MySql => vec![format!(
                "CREATE TABLE IF NOT EXISTS {t} (id VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY, next_run_time BIGINT NULL, job LONGTEXT NOT NULL, lease_owner VARCHAR(191) NULL, lease_until BIGINT NULL, version BIGINT NOT NULL, INDEX {t}_next_run_time (next_run_time, id)) CHARACTER SET utf8mb4"
            )],
            _ => vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {t} (id VARCHAR(191) NOT NULL PRIMARY KEY, next_run_time BIGINT NULL, job TEXT NOT NULL, lease_owner VARCHAR(191) NULL, lease_until BIGINT NULL, version BIGINT NOT NULL)"
                ),
                format!("CREATE INDEX IF NOT EXISTS {t}_next_run_time ON {t} (next_run_time, id)"),
            ],
        };
        // Leased rows only: few at any time, whatever the table's size.
        statements.push(match self.dialect {
            // MySQL has no `IF NOT EXISTS` here: an index already there
            // (a repeated upgrade) is an error the migration passes over.
            Dialect::MySql => format!("CREATE INDEX {t}_lease_until ON {t} (lease_until)"),
            _ => format!(
                "CREATE INDEX IF NOT EXISTS {t}_lease_until ON {t} (lease_until) WHERE lease_until IS NOT NULL"
            ),
        });
        statements.extend(self.create_runs());
        statements.push(self.create_nodes());
        statements
    }

    /// The node registry table of this job table.
    pub(crate) fn nodes(&self) -> String {
        format!("{}_nodes", self.table)
    }

    /// Creates the node registry table (idempotent): one row per owner id, the
    /// record as JSON beside the two columns that decide a takeover.
    pub(crate) fn create_nodes(&self) -> String {
        let n = self.nodes();
        match self.dialect {
            Dialect::MySql => format!(
                "CREATE TABLE IF NOT EXISTS {n} (owner VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY, instance VARCHAR(64) NOT NULL, expires BIGINT NOT NULL, node TEXT NOT NULL) CHARACTER SET utf8mb4"
            ),
            _ => format!(
                "CREATE TABLE IF NOT EXISTS {n} (owner VARCHAR(191) NOT NULL PRIMARY KEY, instance VARCHAR(64) NOT NULL, expires BIGINT NOT NULL, node TEXT NOT NULL)"
            ),
        }
    }

    /// Renews a node's own or lapsed registration: parameters instance,
    /// expires, node, owner, instance, now.
    pub(crate) fn renew_node(&self) -> String {
        format!(
            "UPDATE {} SET instance = {}, expires = {}, node = {} WHERE owner = {} AND (instance = {} OR expires <= {})",
            self.nodes(),
            self.p(1),
            self.p(2),
            self.p(3),
            self.p(4),
            self.p(5),
            self.p(6)
        )
    }

    /// Registers a node: parameters owner, instance, expires, node.
    pub(crate) fn insert_node(&self) -> String {
        format!(
            "INSERT INTO {} (owner, instance, expires, node) VALUES ({})",
            self.nodes(),
            self.list(1, 4)
        )
    }

    /// One node's record: parameter owner.
    pub(crate) fn select_node(&self) -> String {
        format!(
            "SELECT node FROM {} WHERE owner = {}",
            self.nodes(),
            self.p(1)
        )
    }

    /// Every node's record.
    pub(crate) fn select_nodes(&self) -> String {
        format!("SELECT node FROM {} ORDER BY owner", self.nodes())
    }

    /// Deletes a node's registration: parameters owner, instance.
    pub(crate) fn delete_node(&self) -> String {
        format!(
            "DELETE FROM {} WHERE owner = {} AND instance = {}",
            self.nodes(),
            self.p(1),
            self.p(2)
        )
    }

    /// Deletes registrations lapsed before a time: parameter before.
    pub(crate) fn prune_nodes(&self) -> String {
        format!("DELETE FROM {} WHERE expires < {}", self.nodes(), self.p(1))
    }

    /// The server's clock in microseconds since the epoch; `None` for SQLite,
    /// which runs in the calling process.
    pub(crate) fn server_time(&self) -> Option<&'static str> {
        match self.dialect {
            Dialect::Sqlite => None,
            Dialect::Postgres => {
                Some("SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)")
            }
            Dialect::MySql => Some("SELECT CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)"),
        }
    }

    /// The run ledger table of this job table.
    pub(crate) fn runs(&self) -> String {
        format!("{}_runs", self.table)
    }

    /// Creates the run table and its indexes (idempotent). The unique key on
    /// (job_id, scheduled, attempt) is what lets one process only start a slot.
    /// The instance count (running runs of a job) and the lapsed-heartbeat
    /// sweep read running runs only, which are few: SQLite and PostgreSQL index
    /// just those (a partial index on (job_id, heartbeat), cheap to maintain as
    /// runs start and finish), MySQL, without partial indexes, indexes (state,
    /// heartbeat). `scheduled` serves listing and pruning. Index names are the
    /// table name plus at most 15 characters: 63 at most for a 48-character
    /// table name.
    pub(crate) fn create_runs(&self) -> Vec<String> {
        let r = self.runs();
        match self.dialect {
            Dialect::MySql => vec![format!(
                "CREATE TABLE IF NOT EXISTS {r} (run_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY, job_id VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, scheduled BIGINT NOT NULL, attempt BIGINT NOT NULL, state VARCHAR(16) NOT NULL, owner VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL, node VARCHAR(255) NULL, started BIGINT NULL, finished BIGINT NULL, heartbeat BIGINT NULL, error TEXT NULL, UNIQUE KEY {r}_slot (job_id, scheduled, attempt), INDEX {r}_state (state, heartbeat), INDEX {r}_scheduled (scheduled)) CHARACTER SET utf8mb4"
            )],
            _ => vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {r} (run_id VARCHAR(64) NOT NULL PRIMARY KEY, job_id VARCHAR(191) NOT NULL, scheduled BIGINT NOT NULL, attempt BIGINT NOT NULL, state VARCHAR(16) NOT NULL, owner VARCHAR(191) NULL, node VARCHAR(255) NULL, started BIGINT NULL, finished BIGINT NULL, heartbeat BIGINT NULL, error TEXT NULL, CONSTRAINT {r}_slot UNIQUE (job_id, scheduled, attempt))"
                ),
                format!("CREATE INDEX IF NOT EXISTS {r}_running ON {r} (job_id, heartbeat) WHERE state = 'running'"),
                format!("CREATE INDEX IF NOT EXISTS {r}_scheduled ON {r} (scheduled)"),
            ],
        }
    }

    pub(crate) fn get_version(&self) -> String {
        format!(
            "SELECT version FROM sundial_schema_versions WHERE table_name = {}",
            self.p(1)
        )
    }

    /// Raises a table's recorded version: parameters version, table, version.
    pub(crate) fn upgrade_version(&self) -> String {
        format!(
            "UPDATE sundial_schema_versions SET version = {} WHERE table_name = {} AND version < {}",
            self.p(1),
            self.p(2),
            self.p(3)
        )
    }

    pub(crate) fn set_version(&self) -> String {
        format!(
            "INSERT INTO sundial_schema_versions (table_name, version) VALUES ({}, {})",
            self.p(1),
            self.p(2)
        )
    }

    pub(crate) fn insert(&self, rows: usize) -> String {
        let values = (0..rows)
            .map(|i| format!("({}, NULL, NULL, 0)", self.list(i * 3 + 1, 3)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {} (id, next_run_time, job, lease_owner, lease_until, version) VALUES {values}",
            self.table
        )
    }

    pub(crate) fn existing_ids(&self, n: usize) -> String {
        format!(
            "SELECT id FROM {} WHERE id IN ({})",
            self.table,
            self.list(1, n)
        )
    }

    pub(crate) fn update(&self) -> String {
        format!(
            "UPDATE {} SET next_run_time = {}, job = {}, version = version + 1 WHERE id = {} AND version = {}",
            self.table,
            self.p(1),
            self.p(2),
            self.p(3),
            self.p(4)
        )
    }

    pub(crate) fn delete(&self) -> String {
        format!("DELETE FROM {} WHERE id = {}", self.table, self.p(1))
    }

    pub(crate) fn delete_all(&self) -> String {
        format!("DELETE FROM {}", self.table)
    }

    pub(crate) fn select_one(&self) -> String {
        format!(
            "SELECT {COLUMNS} FROM {} WHERE id = {}",
            self.table,
            self.p(1)
        )
    }

    pub(crate) fn select_all(&self) -> String {
        format!(
            "SELECT {COLUMNS} FROM {} ORDER BY CASE WHEN next_run_time IS NULL THEN 1 ELSE 0 END, next_run_time, id",
            self.table
        )
    }

    /// The earliest time a job can be claimed (its next run time, or its lease's
    /// expiry if later), passing over `skip` ids: parameters the ids, twice.
    /// Unleased rows are read in next-run-time order from its index, leased
    /// ones in lease order from the `lease_until` index (the first
    /// [`LEASED_SCAN`] of them), so the cost does not grow with the number of
    /// jobs, and the plan does not depend on the table's statistics (a table
    /// filled a moment ago has none yet). Past that many leased rows the answer
    /// is still exact unless every one of the first of them was rescheduled
    /// past its lease (then it may be late; the scheduler polls at least every
    /// `max_idle_sleep` anyway).
    pub(crate) fn next_run_time(&self, skip: usize) -> String {
        let t = &self.table;
        format!(
            "SELECT MIN(due) FROM (SELECT (SELECT next_run_time FROM {t} WHERE next_run_time IS NOT NULL AND lease_until IS NULL{} ORDER BY next_run_time LIMIT 1) AS due UNION ALL SELECT MIN(CASE WHEN lease_until > next_run_time THEN lease_until ELSE next_run_time END) FROM (SELECT next_run_time, lease_until FROM {t} WHERE lease_until IS NOT NULL AND next_run_time IS NOT NULL{} ORDER BY lease_until LIMIT {LEASED_SCAN}) AS leased) AS earliest",
            self.not_in(1, skip),
            self.not_in(1 + skip, skip)
        )
    }

    /// ` AND id NOT IN (...)` over `count` parameters from `from` on, or
    /// nothing when `count` is 0.
    fn not_in(&self, from: usize, count: usize) -> String {
        if count == 0 {
            return String::new();
        }
        format!(" AND id NOT IN ({})", self.list(from, count))
    }

    /// Due, claimable rows in run order, passing over `skip` ids: parameters
    /// now, now, the ids, limit.
    pub(crate) fn select_due(&self, skip: usize) -> String {
        let lock = match self.dialect {
            Dialect::Sqlite => "",
            _ => " FOR UPDATE SKIP LOCKED",
        };
        format!(
            "SELECT {COLUMNS} FROM {} WHERE next_run_time <= {} AND (lease_until IS NULL OR lease_until <= {}){} ORDER BY next_run_time, id LIMIT {}{lock}",
            self.table,
            self.p(1),
            self.p(2),
            self.not_in(3, skip),
            self.p(3 + skip)
        )
    }

    /// Claims due, claimable rows in run order and returns them, in one
    /// statement (PostgreSQL): parameters owner, until, now, now, the ids
    /// passed over, limit. The ids are picked into an array first, so that
    /// the locking subquery runs once and the limit holds.
    #[cfg(any(feature = "postgres", feature = "mysql", test))]
    pub(crate) fn claim_due(&self, skip: usize) -> String {
        format!(
            "UPDATE {t} SET lease_owner = {}, lease_until = {}, version = version + 1 WHERE id = ANY(ARRAY(SELECT id FROM {t} WHERE next_run_time <= {} AND (lease_until IS NULL OR lease_until <= {}){} ORDER BY next_run_time, id LIMIT {} FOR UPDATE SKIP LOCKED)) RETURNING {COLUMNS}",
            self.p(1),
            self.p(2),
            self.p(3),
            self.p(4),
            self.not_in(5, skip),
            self.p(5 + skip),
            t = self.table,
        )
    }

    /// Claims `n` rows: parameters owner, until, then the ids.
    pub(crate) fn claim(&self, n: usize) -> String {
        format!(
            "UPDATE {} SET lease_owner = {}, lease_until = {}, version = version + 1 WHERE id IN ({})",
            self.table,
            self.p(1),
            self.p(2),
            self.list(3, n)
        )
    }

    /// Applies a reschedule: parameters next_run_time, id, owner, version.
    pub(crate) fn release_reschedule(&self) -> String {
        format!(
            "UPDATE {} SET next_run_time = {}, lease_owner = NULL, lease_until = NULL, version = version + 1 WHERE id = {} AND lease_owner = {} AND version = {}",
            self.table,
            self.p(1),
            self.p(2),
            self.p(3),
            self.p(4)
        )
    }

    /// Gives a job back unchanged: parameters id, owner, version.
    pub(crate) fn release_unclaim(&self) -> String {
        format!(
            "UPDATE {} SET lease_owner = NULL, lease_until = NULL, version = version + 1 WHERE id = {} AND lease_owner = {} AND version = {}",
            self.table,
            self.p(1),
            self.p(2),
            self.p(3)
        )
    }

    /// Deletes a released job: parameters id, owner, version.
    pub(crate) fn release_remove(&self) -> String {
        format!(
            "DELETE FROM {} WHERE id = {} AND lease_owner = {} AND version = {}",
            self.table,
            self.p(1),
            self.p(2),
            self.p(3)
        )
    }

    /// Drops the lease of a job modified while claimed: parameters id, owner.
    pub(crate) fn release_superseded(&self) -> String {
        format!(
            "UPDATE {} SET lease_owner = NULL, lease_until = NULL WHERE id = {} AND lease_owner = {}",
            self.table,
            self.p(1),
            self.p(2)
        )
    }

    /// Reschedules `n` claimed jobs in one statement: parameters (id, next_run_time,
    /// version) per job, then the owner.
    pub(crate) fn bulk_reschedule(&self, n: usize) -> String {
        let t = &self.table;
        let owner = self.p(3 * n + 1);
        let set = "next_run_time = v.nrt, lease_owner = NULL, lease_until = NULL, version = {t}.version + 1";
        let set = set.replace("{t}", t);
        match self.dialect {
            Dialect::Postgres => {
                let values = (0..n)
                    .map(|i| {
                        format!(
                            "({}::varchar, {}::bigint, {}::bigint)",
                            self.p(3 * i + 1),
                            self.p(3 * i + 2),
                            self.p(3 * i + 3)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("UPDATE {t} SET {set} FROM (VALUES {values}) AS v(id, nrt, ver) WHERE {t}.id = v.id AND {t}.version = v.ver AND {t}.lease_owner = {owner}")
            }
            Dialect::Sqlite => {
                let rows = (0..n)
                    .map(|_| "SELECT ? AS id, ? AS nrt, ? AS ver")
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ");
                format!("UPDATE {t} SET {set} FROM ({rows}) AS v WHERE {t}.id = v.id AND {t}.version = v.ver AND {t}.lease_owner = ?")
            }
            Dialect::MySql => {
                let rows = (0..n)
                    .map(|_| "SELECT ? AS id, ? AS nrt, ? AS ver")
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ");
                let set = set
                    .replace("next_run_time", &format!("{t}.next_run_time"))
                    .replace("lease_owner = NULL", &format!("{t}.lease_owner = NULL"))
                    .replace("lease_until = NULL", &format!("{t}.lease_until = NULL"))
                    .replace(", version =", &format!(", {t}.version ="));
                format!("UPDATE {t} JOIN ({rows}) AS v ON {t}.id = v.id SET {set} WHERE {t}.version = v.ver AND {t}.lease_owner = ?")
            }
        }
    }

    /// Deletes `n` claimed jobs in one statement: parameters owner, then (id, version) per job.
    pub(crate) fn bulk_remove(&self, n: usize) -> String {
        let pairs = (0..n)
            .map(|i| format!("({}, {})", self.p(2 * i + 2), self.p(2 * i + 3)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "DELETE FROM {} WHERE lease_owner = {} AND (id, version) IN ({pairs})",
            self.table,
            self.p(1)
        )
    }

    /// The state that tells whether a bulk release applied: id, version, lease owner.
    pub(crate) fn release_check(&self, n: usize) -> String {
        format!(
            "SELECT id, version, lease_owner FROM {} WHERE id IN ({})",
            self.table,
            self.list(1, n)
        )
    }

    pub(crate) fn exists(&self) -> String {
        format!(
            "SELECT COUNT(*) FROM {} WHERE id = {}",
            self.table,
            self.p(1)
        )
    }
}

impl Sql {
    /// Running-run counts of `n` jobs: rows of (job_id, count).
    /// Locks the rows of `n` jobs (PostgreSQL and MySQL; SQLite's `BEGIN
    /// IMMEDIATE` already serialises writers).
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub(crate) fn lock_jobs(&self, n: usize) -> String {
        format!(
            "SELECT id FROM {} WHERE id IN ({}) ORDER BY id FOR UPDATE",
            self.table,
            self.list(1, n)
        )
    }

    pub(crate) fn count_running(&self, n: usize) -> String {
        let r = self.runs();
        // Past 200 values MySQL estimates an IN list from index statistics and
        // may walk each job's whole history through the slot key instead.
        let hint = match self.dialect {
            Dialect::MySql => format!(" FORCE INDEX ({r}_state)"),
            _ => String::new(),
        };
        format!(
            "SELECT job_id, COUNT(*) FROM {r}{hint} WHERE state = 'running' AND job_id IN ({}) GROUP BY job_id",
            self.list(1, n)
        )
    }

    /// Inserts `n` runs, skipping any whose slot key or id exists; with
    /// `returning` it returns the ids it inserted (PostgreSQL, MariaDB). SQLite
    /// runs it row by row and reads the change count; MySQL has no `RETURNING`,
    /// so callers compare [`existing_runs`](Self::existing_runs) before and after.
    pub(crate) fn insert_runs(&self, n: usize, returning: bool) -> String {
        let values = (0..n)
            .map(|i| format!("({})", self.list(i * RUN_PARAMS + 1, RUN_PARAMS)))
            .collect::<Vec<_>>()
            .join(", ");
        let r = self.runs();
        let returning = if returning { " RETURNING run_id" } else { "" };
        match self.dialect {
            // INSERT IGNORE also turns other errors (too long values, ...) into
            // warnings; what was inserted is read back either way.
            Dialect::MySql => {
                format!("INSERT IGNORE INTO {r} ({RUN_COLUMNS}) VALUES {values}{returning}")
            }
            _ => format!(
                "INSERT INTO {r} ({RUN_COLUMNS}) VALUES {values} ON CONFLICT DO NOTHING{returning}"
            ),
        }
    }

    /// Which of `n` run ids are stored.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub(crate) fn existing_runs(&self, n: usize) -> String {
        format!(
            "SELECT run_id FROM {} WHERE run_id IN ({})",
            self.runs(),
            self.list(1, n)
        )
    }

    /// Finishes `n` distinct runs the owner holds that are running or
    /// interrupted: parameters (run id, state, finished, error) per run, then
    /// the owner.
    pub(crate) fn finish_runs(&self, n: usize) -> String {
        let r = self.runs();
        let unfinished = format!("{r}.state IN ('running', 'interrupted')");
        let rows = || vec!["SELECT ? AS id, ? AS st, ? AS fin, ? AS err"; n].join(" UNION ALL ");
        match self.dialect {
            Dialect::Postgres => {
                let values = (0..n)
                    .map(|i| {
                        format!(
                            "({}::varchar, {}::varchar, {}::bigint, {}::text)",
                            self.p(4 * i + 1),
                            self.p(4 * i + 2),
                            self.p(4 * i + 3),
                            self.p(4 * i + 4)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let owner = self.p(4 * n + 1);
                format!("UPDATE {r} SET state = v.st, finished = v.fin, error = v.err, heartbeat = NULL FROM (VALUES {values}) AS v(id, st, fin, err) WHERE {r}.run_id = v.id AND {r}.owner = {owner} AND {unfinished}")
            }
            Dialect::Sqlite => format!(
                "UPDATE {r} SET state = v.st, finished = v.fin, error = v.err, heartbeat = NULL FROM ({}) AS v WHERE {r}.run_id = v.id AND {r}.owner = ? AND {unfinished}",
                rows()
            ),
            Dialect::MySql => format!(
                "UPDATE {r} JOIN ({}) AS v ON {r}.run_id = v.id SET {r}.state = v.st, {r}.finished = v.fin, {r}.error = v.err, {r}.heartbeat = NULL WHERE {r}.owner = ? AND {unfinished}",
                rows()
            ),
        }
    }

    /// Extends `n` runs' heartbeat: parameters until, owner, then the ids.
    pub(crate) fn heartbeat_runs(&self, n: usize) -> String {
        format!(
            "UPDATE {} SET heartbeat = {} WHERE owner = {} AND state = 'running' AND run_id IN ({})",
            self.runs(),
            self.p(1),
            self.p(2),
            self.list(3, n)
        )
    }

    /// Running runs whose heartbeat lapsed, locked (skipping rows others hold)
    /// where the dialect has row locks: parameters now, limit.
    pub(crate) fn select_lapsed(&self) -> String {
        let r = self.runs();
        let (from, lock) = match self.dialect {
            // Without the hint SQLite walks the whole table in run_id order
            // rather than sort the few running runs.
            Dialect::Sqlite => (format!("{r} INDEXED BY {r}_running"), ""),
            _ => (r, " FOR UPDATE SKIP LOCKED"),
        };
        format!(
            "SELECT {RUN_COLUMNS} FROM {from} WHERE state = 'running' AND heartbeat < {} ORDER BY run_id LIMIT {}{lock}",
            self.p(1),
            self.p(2)
        )
    }

    /// Marks `n` running runs interrupted: parameters now, error, then the ids.
    pub(crate) fn interrupt_runs(&self, n: usize) -> String {
        format!(
            "UPDATE {} SET state = 'interrupted', finished = {}, heartbeat = NULL, error = {} WHERE state = 'running' AND run_id IN ({})",
            self.runs(),
            self.p(1),
            self.p(2),
            self.list(3, n)
        )
    }

    /// Lists runs newest first; parameters in order: the job id, state and
    /// since bound when the flag is set, then the limit.
    pub(crate) fn query_runs(&self, job: bool, state: bool, since: bool) -> String {
        let mut n = 0;
        let mut next = || {
            n += 1;
            self.p(n)
        };
        let mut filters = Vec::new();
        if job {
            filters.push(format!("job_id = {}", next()));
        }
        if state {
            filters.push(format!("state = {}", next()));
        }
        if since {
            filters.push(format!("scheduled >= {}", next()));
        }
        let filter = if filters.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", filters.join(" AND "))
        };
        // Within one job (scheduled, attempt) is unique, so the id tie-break
        // is left out: the slot key's index then yields the order (MySQL would
        // sort all the job's runs otherwise).
        let order = if job {
            "scheduled DESC, attempt DESC"
        } else {
            "scheduled DESC, attempt DESC, run_id"
        };
        format!(
            "SELECT {RUN_COLUMNS} FROM {}{filter} ORDER BY {order} LIMIT {}",
            self.runs(),
            next()
        )
    }

    /// Deletes finished runs scheduled before a time: parameter before.
    /// Deletes each job's finished runs scheduled before a time beyond its
    /// newest ones: parameters keep, before. The window function makes MySQL
    /// materialise the derived table, which lets it delete from the table it
    /// reads.
    /// Deletes up to [`PRUNE_SLICE`] finished runs beyond each job's newest `$1`
    /// and scheduled before `$2`. Each slice ranks the whole table again: the
    /// sweep is periodic and usually finds less than one slice to delete.
    pub(crate) fn prune_job_runs(&self) -> String {
        let r = self.runs();
        let ranked = format!(
            "SELECT run_id FROM (SELECT run_id, scheduled, state, ROW_NUMBER() OVER (PARTITION BY job_id ORDER BY scheduled DESC, attempt DESC) AS n FROM {r}) ranked WHERE n > {} AND scheduled < {} AND state <> 'running' LIMIT {PRUNE_SLICE}",
            self.p(1),
            self.p(2)
        );
        match self.dialect {
            Dialect::MySql => {
                format!("DELETE {r} FROM {r} JOIN ({ranked}) old ON {r}.run_id = old.run_id")
            }
            _ => format!("DELETE FROM {r} WHERE run_id IN ({ranked})"),
        }
    }

    /// Deletes up to [`PRUNE_SLICE`] finished runs scheduled before `$1`, oldest first.
    pub(crate) fn prune_runs(&self) -> String {
        let r = self.runs();
        let old = format!("scheduled < {} AND state <> 'running'", self.p(1));
        match self.dialect {
            Dialect::MySql => {
                format!("DELETE FROM {r} WHERE {old} ORDER BY scheduled, run_id LIMIT {PRUNE_SLICE}")
            }
            _ => format!(
                "DELETE FROM {r} WHERE run_id IN (SELECT run_id FROM {r} WHERE {old} ORDER BY scheduled LIMIT {PRUNE_SLICE})"
            ),
        }
    }
}

/// How many runs one pruning statement deletes at most: a sweep deletes in
/// slices of this size, each its own short transaction, so that it never holds
/// locks on a long history at once.
pub(crate) const PRUNE_SLICE: u64 = 1_000;

/// Checks a table name: letters, digits and `_`, starting with a letter, at most 48 characters.
pub(crate) fn valid_table(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
