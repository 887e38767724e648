//! SQL text per dialect, and the mapping between rows and job records.

use chrono::{DateTime, Utc};
use sundial_core::job::{JobId, JobRecord, Lease, OwnerId};

/// The schema version this build writes and reads.
pub(crate) const SCHEMA_VERSION: i64 = 1;

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
            job: rec.content_json().to_string(),
            lease_owner: rec.lease.as_ref().map(|l| l.owner.to_string()),
            lease_until: rec.lease.as_ref().map(|l| to_micros(l.until)),
            version: i64::try_from(rec.version).unwrap_or(i64::MAX),
        }
    }

    /// The record; a row whose JSON cannot be read becomes an unreadable placeholder.
    pub(crate) fn into_record(self) -> JobRecord {
        let lease = match (self.lease_owner, self.lease_until) {
            (Some(owner), Some(until)) => Some(Lease {
                owner: OwnerId::new(owner),
                until: from_micros(until),
            }),
            _ => None,
        };
        let content =
            serde_json::from_str(&self.job).map_err(|e| format!("job column is not JSON: {e}"));
        JobRecord::from_content_lenient(
            JobId::new(self.id),
            content,
            self.next_run_time.map(from_micros),
            lease,
            u64::try_from(self.version).unwrap_or(0),
        )
    }
}

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
        (from..from + count)
            .map(|n| self.p(n))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(crate) fn create(&self) -> Vec<String> {
        let t = &self.table;
        let versions = "CREATE TABLE IF NOT EXISTS sundial_schema_versions (table_name VARCHAR(191) PRIMARY KEY, version BIGINT NOT NULL)".to_string();
        match self.dialect {
            Dialect::MySql => vec![
                versions,
                format!(
                    "CREATE TABLE IF NOT EXISTS {t} (id VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY, next_run_time BIGINT NULL, job LONGTEXT NOT NULL, lease_owner VARCHAR(191) NULL, lease_until BIGINT NULL, version BIGINT NOT NULL, INDEX {t}_next_run_time (next_run_time, id)) CHARACTER SET utf8mb4"
                ),
            ],
            _ => vec![
                versions,
                format!(
                    "CREATE TABLE IF NOT EXISTS {t} (id VARCHAR(191) NOT NULL PRIMARY KEY, next_run_time BIGINT NULL, job TEXT NOT NULL, lease_owner VARCHAR(191) NULL, lease_until BIGINT NULL, version BIGINT NOT NULL)"
                ),
                format!("CREATE INDEX IF NOT EXISTS {t}_next_run_time ON {t} (next_run_time, id)"),
            ],
        }
    }

    pub(crate) fn get_version(&self) -> String {
        format!(
            "SELECT version FROM sundial_schema_versions WHERE table_name = {}",
            self.p(1)
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
            "UPDATE {} SET next_run_time = {}, job = {}, version = version + 1 WHERE id = {}",
            self.table,
            self.p(1),
            self.p(2),
            self.p(3)
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

    pub(crate) fn next_run_time(&self) -> String {
        format!(
            "SELECT MIN(CASE WHEN lease_until IS NOT NULL AND lease_until > next_run_time THEN lease_until ELSE next_run_time END) FROM {} WHERE next_run_time IS NOT NULL",
            self.table
        )
    }

    /// Due, claimable rows in run order: parameters now, now, limit.
    pub(crate) fn select_due(&self) -> String {
        let lock = match self.dialect {
            Dialect::Sqlite => "",
            _ => " FOR UPDATE SKIP LOCKED",
        };
        format!(
            "SELECT {COLUMNS} FROM {} WHERE next_run_time <= {} AND (lease_until IS NULL OR lease_until <= {}) ORDER BY next_run_time, id LIMIT {}{lock}",
            self.table,
            self.p(1),
            self.p(2),
            self.p(3)
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

/// Checks a table name: letters, digits and `_`, starting with a letter, at most 48 characters.
pub(crate) fn valid_table(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
