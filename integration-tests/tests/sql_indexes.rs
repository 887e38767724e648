//! The SQL stores' idle poll (the earliest time a job is due) reads indexes,
//! not every row, on a table of many jobs with some of them leased; a table of
//! the previous schema gets the index on start, also when an interrupted
//! upgrade already created it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::Utc;
use sundial::job::OwnerId;
use sundial::sql::Dialect;
use sundial::{JobId, JobStore, SqlJobStore};
use sundial_integration_tests::conformance::record;
use sundial_integration_tests::support::{mysql_url, postgres_url, Namespace};

/// Jobs in the table: enough that a planner prefers an index to a full scan.
const JOBS: usize = 20_000;

/// A SQLite file for `case` in the temporary directory.
fn sqlite_url(case: &str) -> String {
    let dir = std::env::temp_dir().join("sundial-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.db", Namespace::new(case).0));
    format!("sqlite://{}", path.display())
}

fn store(base: &str, ns: &Namespace) -> SqlJobStore {
    SqlJobStore::from_url(base)
        .unwrap()
        .with_table(&ns.0)
        .unwrap()
}

/// Fills the table: most jobs due over the coming days, some paused, the
/// first 100 due now and then claimed (leased).
async fn fill(store: &SqlJobStore) {
    let now = Utc::now();
    let trigger = serde_json::json!({"type": "date", "run_date": "2030-01-01T00:00:00Z"});
    let records: Vec<_> = (0..JOBS)
        .map(|i| {
            let next = match i {
                0..100 => Some(now - chrono::Duration::seconds(1)),
                _ if i % 10 == 0 => None,
                _ => Some(now + chrono::Duration::seconds(i as i64)),
            };
            record(
                &format!("job-{i:06}"),
                "t",
                trigger.clone(),
                serde_json::Value::Null,
                next,
            )
        })
        .collect();
    for chunk in records.chunks(2_000) {
        store.add_jobs(chunk).await.unwrap();
    }
    let claimed = store
        .acquire_due(
            Utc::now(),
            &OwnerId::new("planner"),
            Duration::from_secs(600),
            100,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 100);
}

/// Whether a plan reads the job table only through indexes.
fn uses_indexes_only(dialect: Dialect, table: &str, plan: &[String]) -> bool {
    match dialect {
        // `SCAN t` alone is a full scan; `SCAN t USING INDEX` and `SEARCH t
        // USING INDEX` read an index.
        Dialect::Sqlite => plan
            .iter()
            .filter(|l| l.contains(table))
            .all(|l| l.contains("INDEX")),
        Dialect::Postgres => plan.iter().all(|l| !l.contains("Seq Scan")),
        // Every access to the table names a key and is not a full scan
        // (`ALL`); the derived table of the union is two rows and may be.
        Dialect::MySql => {
            let json: serde_json::Value = serde_json::from_str(&plan.join("\n")).unwrap();
            let mut accesses = Vec::new();
            table_accesses(&json, table, &mut accesses);
            !accesses.is_empty()
                && accesses
                    .iter()
                    .all(|a| a["access_type"] != "ALL" && a["key"].is_string())
        }
    }
}

/// The `table` objects of a MySQL JSON plan that read `name`.
fn table_accesses<'a>(v: &'a serde_json::Value, name: &str, out: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Object(map) => {
            if map.get("table_name").and_then(|n| n.as_str()) == Some(name) {
                out.push(v);
            }
            map.values().for_each(|c| table_accesses(c, name, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|c| table_accesses(c, name, out)),
        _ => {}
    }
}

async fn analyze(store: &SqlJobStore, table: &str) {
    let sql = match store.dialect() {
        Dialect::MySql => format!("ANALYZE TABLE {table}"),
        _ => format!("ANALYZE {table}"),
    };
    store.execute_raw(&sql).await.unwrap();
}

async fn check_poll_uses_indexes(base: &str) {
    let ns = Namespace::new("poll_plan");
    let s = store(base, &ns);
    s.start().await.unwrap();
    fill(&s).await;
    // Right after a bulk load (no statistics yet), and once analysed.
    for moment in ["before ANALYZE", "after ANALYZE"] {
        if moment == "after ANALYZE" {
            analyze(&s, &ns.0).await;
        }
        let plan = s.explain_next_run_time().await.unwrap();
        assert!(
            uses_indexes_only(s.dialect(), &ns.0, &plan),
            "{:?} plan of the idle poll {moment} reads the whole table:\n{}",
            s.dialect(),
            plan.join("\n")
        );
    }
    // The earliest of the unleased jobs' next run times and the leased ones'
    // lease expiries: jobs 0 to 99 are leased for ten minutes, job 100 is
    // paused, job 101 is due in 101 s.
    let next = s.get_next_run_time(&[]).await.unwrap().unwrap();
    let expected = Utc::now() + chrono::Duration::seconds(101);
    assert!(
        (next - expected).num_seconds().abs() <= 5,
        "earliest due time {next}, expected about {expected}"
    );
    let skip = [JobId::new("job-000101"), JobId::new("job-000102")];
    let next = s.get_next_run_time(&skip).await.unwrap().unwrap();
    let expected = Utc::now() + chrono::Duration::seconds(103);
    assert!(
        (next - expected).num_seconds().abs() <= 5,
        "earliest due time passing over two jobs {next}, expected about {expected}"
    );
    s.drop_table().await.unwrap();
}

#[tokio::test]
async fn sqlite_poll_reads_indexes() {
    check_poll_uses_indexes(&sqlite_url("plan")).await;
}

#[tokio::test]
async fn postgres_poll_reads_indexes() {
    check_poll_uses_indexes(&postgres_url()).await;
}

#[tokio::test]
async fn mariadb_poll_reads_indexes() {
    check_poll_uses_indexes(&mysql_url()).await;
}

/// A version-3 table (no lease index) is upgraded on start; so is one whose
/// upgrade was cut short after creating the index but before recording the
/// version.
async fn check_upgrade_adds_the_lease_index(base: &str) {
    let ns = Namespace::new("lease_index");
    let s = store(base, &ns);
    s.start().await.unwrap();
    s.add_job(&record(
        "keep",
        "t",
        serde_json::json!({"type": "date", "run_date": "2030-01-01T00:00:00Z"}),
        serde_json::Value::Null,
        Some(Utc::now()),
    ))
    .await
    .unwrap();
    s.shutdown().await.unwrap();
    let t = &ns.0;
    let drop = match s.dialect() {
        Dialect::MySql => format!("DROP INDEX {t}_lease_until ON {t}"),
        _ => format!("DROP INDEX {t}_lease_until"),
    };
    let downgrade =
        format!("UPDATE sundial_schema_versions SET version = 3 WHERE table_name = '{t}'");
    s.execute_raw(&drop).await.unwrap();
    s.execute_raw(&downgrade).await.unwrap();
    for round in ["version 3, no index", "version 3, index already there"] {
        let again = store(base, &ns);
        again
            .start()
            .await
            .unwrap_or_else(|e| panic!("{round}: {e}"));
        assert!(
            again
                .lookup_job(&JobId::new("keep"))
                .await
                .unwrap()
                .is_some(),
            "{round}: the job is kept"
        );
        // Creating the index again fails: it is there.
        let recreate = format!("CREATE INDEX {t}_lease_until ON {t} (lease_until)");
        assert!(
            again.execute_raw(&recreate).await.is_err(),
            "{round}: the lease index exists after start"
        );
        again.shutdown().await.unwrap();
        s.execute_raw(&downgrade).await.unwrap();
    }
    s.drop_table().await.unwrap();
}

#[tokio::test]
async fn sqlite_upgrade_adds_the_lease_index() {
    check_upgrade_adds_the_lease_index(&sqlite_url("upgrade")).await;
}

#[tokio::test]
async fn postgres_upgrade_adds_the_lease_index() {
    check_upgrade_adds_the_lease_index(&postgres_url()).await;
}

#[tokio::test]
async fn mariadb_upgrade_adds_the_lease_index() {
    check_upgrade_adds_the_lease_index(&mysql_url()).await;
}
