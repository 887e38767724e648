//! Raw stored records, fuzzed: random bytes and extreme values written straight
//! into the real servers' rows and hashes (as a hand edit, a bad migration or
//! another program might leave them). Every store call must answer — a value
//! (whose content may not decode, or marked quarantined) or a typed error,
//! never a panic or a hang — and
//! the store must keep serving the healthy jobs beside the damaged ones.
//!
//! `SUNDIAL_FUZZ_CASES` sets the number of damaging writes per store (200 by
//! default).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sundial::job::{JobId, OwnerId};
use sundial::prelude::*;
use sundial::store::ReleaseItem;
use sundial::{JobRecord, JobStore};
use sundial_integration_tests::conformance::record;
use sundial_integration_tests::support::{mysql_url, postgres_url, redis_url, Namespace};

fn cases() -> usize {
    std::env::var("SUNDIAL_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

const JOBS: [&str; 4] = ["f0", "f1", "f2", "f3"];

/// A random text: bytes, numbers at the edges, JSON fragments.
fn junk(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..8) {
        0 => (0..rng.usize(..40))
            .map(|_| char::from(rng.u8(1..=255)))
            .collect(),
        1 => ["", "NaN", "inf", "-inf", "1e309", "-1", "0", "1.5", " 7", "0x10"][rng.usize(..10)]
            .to_string(),
        2 => rng.i64(..).to_string(),
        3 => ["9223372036854775807", "-9223372036854775808", "99999999999999999999"]
            [rng.usize(..3)]
        .to_string(),
        4 => r#"{"task":"record","trigger":{"type":"date","run_date":"2026-01-01T00:00:00Z"},"args":null,"options":{"max_instances":-1}}"#.to_string(),
        5 => r#"{"task":1,"trigger":[],"options":null}"#.to_string(),
        6 => format!(
            r#"{{"task":"record","trigger":{{"type":"interval","seconds":{}}},"args":null,"options":{{}}}}"#,
            rng.i64(..)
        ),
        _ => "\u{0}\u{feff}💥".repeat(rng.usize(..4)),
    }
}

fn job(id: &str, at: DateTime<Utc>) -> JobRecord {
    record(
        id,
        "record",
        sundial::trigger::Trigger::to_json(&DateTrigger::at(at)),
        serde_json::Value::Null,
        Some(at),
    )
}

/// Whether the scheduler would find a record damaged.
fn damaged(r: &JobRecord) -> bool {
    r.quarantined.is_some() || r.decode().is_err()
}

/// Every read and claim path, bounded; errors are answers, panics and hangs
/// are not. Says whether the damage showed (an error or a damaged record).
async fn exercise(store: &dyn JobStore, what: &str) -> bool {
    let owner = OwnerId::new("fuzz");
    let far = DateTime::parse_from_rfc3339("2999-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let answered = tokio::time::timeout(Duration::from_secs(20), async {
        let mut showed = match store.get_all_jobs().await {
            Ok(all) => all.iter().any(damaged),
            Err(_) => true,
        };
        let _ = store.get_next_run_time(&[]).await;
        for id in JOBS {
            let _ = store.lookup_job(&JobId::new(id)).await;
        }
        if let Ok(claimed) = store
            .acquire_due(far, &owner, Duration::from_secs(30), 10, &[])
            .await
        {
            let items: Vec<ReleaseItem> = claimed
                .iter()
                .filter(|r| r.lease.is_some())
                .map(|r| ReleaseItem {
                    id: r.id.clone(),
                    version: r.version,
                    outcome: sundial::job::Release::Unclaim,
                })
                .collect();
            showed |= claimed.iter().any(damaged);
            let _ = store.release_many(&owner, items).await;
        } else {
            showed = true;
        }
        showed
    })
    .await;
    answered.unwrap_or_else(|_| panic!("{what}: no answer within 20 s"))
}

/// After the damage: a healthy job is added, found and claimed, and every
/// damaged job can be removed.
async fn still_serves(store: &dyn JobStore) {
    for id in JOBS {
        let _ = store.remove_job(&JobId::new(id)).await;
    }
    let now = Utc::now();
    store.add_job(&job("healthy", now)).await.unwrap();
    let got = store
        .acquire_due(
            now + chrono::Duration::seconds(1),
            &OwnerId::new("after"),
            Duration::from_secs(30),
            100,
            &[],
        )
        .await
        .unwrap();
    assert!(
        got.iter().any(|r| r.id.as_str() == "healthy"),
        "the healthy job was not claimed: {:?}",
        got.iter().map(|r| r.id.as_str()).collect::<Vec<_>>()
    );
    for r in store.get_all_jobs().await.unwrap() {
        assert!(
            JOBS.contains(&r.id.as_str()) || r.id.as_str() == "healthy",
            "{r:?}"
        );
    }
}

async fn seed(store: &dyn JobStore) {
    for id in JOBS {
        store
            .add_job(&job(id, Utc::now() - chrono::Duration::seconds(5)))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_redis_fields_never_panic_or_stop_the_store() {
    let ns = Namespace::new("fuzzrows");
    let store = Arc::new(
        RedisJobStore::from_url(&redis_url())
            .unwrap()
            .with_prefix(&ns.0),
    );
    store.start().await.unwrap();
    seed(store.as_ref()).await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = store.keys();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut showed = 0;
    for case in 0..cases() {
        let id = JOBS[rng.usize(..JOBS.len())];
        let which = rng.usize(..keys.len());
        let key = &keys[which];
        let value = junk(&mut rng);
        let cmd = if which == 4 {
            // The due set is a sorted set: a random score.
            let score = [f64::MAX, -1.0, 0.0, 1e300, f64::MIN][rng.usize(..5)];
            let mut c = redis::cmd("ZADD");
            c.arg(key).arg(score).arg(id);
            c
        } else if rng.bool() {
            let mut c = redis::cmd("HSET");
            c.arg(key).arg(id).arg(value.as_bytes());
            c
        } else {
            let mut c = redis::cmd("HDEL");
            c.arg(key).arg(id);
            c
        };
        let _: redis::RedisResult<()> = cmd.query_async(&mut conn).await;
        if exercise(
            store.as_ref(),
            &format!("case {case}: {key} {id} = {value:?}"),
        )
        .await
        {
            showed += 1;
        }
    }
    assert!(
        showed > cases() / 10,
        "the damage showed in {showed} cases only"
    );
    still_serves(store.as_ref()).await;
}

/// Writes damaged rows into a SQL store's table through `exec`, then checks it.
async fn sql_rows_case<F, Fut>(store: Arc<SqlJobStore>, mut exec: F)
where
    F: FnMut(String, Vec<Option<String>>, Vec<Option<i64>>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    store.start().await.unwrap();
    seed(store.as_ref()).await;
    let table = store.table().to_string();
    let mut rng = fastrand::Rng::with_seed(11);
    let (mut written, mut showed) = (0, 0);
    for case in 0..cases() {
        let id = JOBS[rng.usize(..JOBS.len())].to_string();
        let (sql, texts, ints) = match rng.u8(..4) {
            0 => (
                format!("UPDATE {table} SET job = ? WHERE id = ?"),
                vec![Some(junk(&mut rng)), Some(id)],
                vec![],
            ),
            1 => (
                format!("UPDATE {table} SET next_run_time = ? WHERE id = ?"),
                vec![Some(id)],
                vec![
                    [
                        Some(i64::MAX),
                        Some(i64::MIN),
                        Some(-1),
                        None,
                        Some(rng.i64(..)),
                    ][rng.usize(..5)],
                ],
            ),
            2 => (
                format!("UPDATE {table} SET version = ? WHERE id = ?"),
                vec![Some(id)],
                vec![Some([i64::MIN, -1, i64::MAX, rng.i64(..)][rng.usize(..4)])],
            ),
            _ => (
                format!("UPDATE {table} SET lease_owner = ?, lease_until = ? WHERE id = ?"),
                vec![Some(junk(&mut rng)), Some(id)],
                vec![[Some(i64::MAX), Some(i64::MIN), None][rng.usize(..3)]],
            ),
        };
        let what = format!("case {case}: {sql} {texts:?} {ints:?}");
        if exec(sql, texts, ints).await {
            written += 1;
        }
        if exercise(store.as_ref(), &what).await {
            showed += 1;
        }
    }
    assert!(
        written > cases() / 2,
        "only {written} damaging writes landed"
    );
    assert!(
        showed > cases() / 10,
        "the damage showed in {showed} cases only"
    );
    still_serves(store.as_ref()).await;
}

/// Binds the texts and ints in statement order: the int columns come first
/// in every statement above except the job update (texts only), and the id
/// always last.
fn order(sql: &str, texts: &[Option<String>], ints: &[Option<i64>]) -> Vec<Param> {
    let mut out = Vec::new();
    if sql.contains("lease_owner") {
        out.push(Param::Text(texts[0].clone()));
        out.push(Param::Int(ints[0]));
        out.push(Param::Text(texts[1].clone()));
    } else {
        out.extend(ints.iter().map(|i| Param::Int(*i)));
        out.extend(texts.iter().map(|t| Param::Text(t.clone())));
    }
    out
}

#[derive(Debug)]
enum Param {
    Text(Option<String>),
    Int(Option<i64>),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_sqlite_rows_never_panic_or_stop_the_store() {
    let path = std::env::temp_dir()
        .join("sundial-tests")
        .join(format!("fuzzrows-{}.db", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let store = Arc::new(SqlJobStore::sqlite(&path));
    let conn = Arc::new(std::sync::Mutex::new(
        rusqlite::Connection::open(&path).unwrap(),
    ));
    sql_rows_case(store, |sql, texts, ints| {
        let conn = Arc::clone(&conn);
        async move {
            let params = order(&sql, &texts, &ints);
            let values: Vec<rusqlite::types::Value> = params
                .into_iter()
                .map(|p| match p {
                    Param::Text(Some(t)) => rusqlite::types::Value::Text(t),
                    Param::Int(Some(i)) => rusqlite::types::Value::Integer(i),
                    _ => rusqlite::types::Value::Null,
                })
                .collect();
            let c = conn.lock().unwrap();
            c.busy_timeout(Duration::from_secs(5)).unwrap();
            // NOT NULL columns refuse a NULL: that write simply does not happen.
            c.execute(&sql, rusqlite::params_from_iter(values))
                .is_ok_and(|n| n > 0)
        }
    })
    .await;
}

async fn sqlx_case(url: String, placeholder: fn(usize) -> String, table: &str) {
    let store = Arc::new(
        SqlJobStore::from_url(&url)
            .unwrap()
            .with_table(table)
            .unwrap(),
    );
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sql_rows_case(store, |sql, texts, ints| {
        let pool = pool.clone();
        async move {
            let params = order(&sql, &texts, &ints);
            let mut n = 0;
            let sql: String = sql
                .chars()
                .map(|c| {
                    if c == '?' {
                        n += 1;
                        placeholder(n)
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            let mut q = sqlx::query(&sql);
            for p in params {
                q = match p {
                    Param::Text(t) => q.bind(t),
                    Param::Int(i) => q.bind(i),
                };
            }
            // A value the column refuses (NUL bytes, invalid UTF-8 for
            // PostgreSQL, NULL in a NOT NULL column) simply is not written.
            q.execute(&pool).await.is_ok_and(|r| r.rows_affected() > 0)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_postgres_rows_never_panic_or_stop_the_store() {
    let ns = Namespace::new("fuzzrows");
    sqlx_case(postgres_url(), |n| format!("${n}"), &ns.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_mariadb_rows_never_panic_or_stop_the_store() {
    let ns = Namespace::new("fuzzrows");
    sqlx_case(mysql_url(), |_| "?".to_string(), &ns.0).await;
}
