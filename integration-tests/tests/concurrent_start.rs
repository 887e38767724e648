//! Many processes starting at the same moment on an empty database, as the
//! workers of a web application do on first deploy: every one of them starts,
//! on every store, and the jobs they all declare exist once.
//!
//! `SUNDIAL_START_ROUNDS` sets the rounds per store (default 20), each with
//! `SUNDIAL_START_PROCESSES` processes (default 8) on a fresh database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use sundial::job::JobId;
use sundial::prelude::*;
use sundial::JobStore;
use sundial_integration_tests::support::{mongo_url, mysql_url, postgres_url, redis_url};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `url` with its database (the last path segment) replaced by `db`.
fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}/{db}{query}", &base[..host_end])
}

/// Starts `n` processes on `url` at the same instant (each waits at a
/// barrier until all are ready); returns the failures.
fn start_all(url: &str, n: usize) -> Vec<String> {
    static ROUND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let barrier = std::env::temp_dir().join(format!(
        "sundial-barrier-{}-{}",
        std::process::id(),
        ROUND.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&barrier).unwrap();
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_sundial-start"))
                .args([url, barrier.to_str().unwrap()])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn sundial-start")
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(&barrier).unwrap().count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the processes did not all get ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::fs::write(barrier.join("go"), b"").unwrap();
    let failures = children
        .into_iter()
        .filter_map(|c| {
            let out = c.wait_with_output().unwrap();
            (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
        })
        .collect();
    let _ = std::fs::remove_dir_all(&barrier);
    failures
}

/// Checks that the declared jobs exist once each in the store at `url`.
async fn check_jobs(url: &str) {
    let store = store_from_url(url).unwrap();
    store.start().await.unwrap();
    let jobs = store.get_all_jobs().await.unwrap();
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    for id in ["shared", "cleanup"] {
        assert!(
            store.lookup_job(&JobId::new(id)).await.unwrap().is_some(),
            "job {id} missing"
        );
    }
    store.shutdown().await.unwrap();
}

/// Runs the rounds: `fresh(round)` makes an empty database and returns its URL,
/// `drop_db(round)` removes it.
fn rounds<F, D>(store: &str, mut fresh: F, mut drop_db: D)
where
    F: FnMut(usize) -> String,
    D: FnMut(usize),
{
    let rounds = env_or("SUNDIAL_START_ROUNDS", 20);
    let n = env_or("SUNDIAL_START_PROCESSES", 8);
    let rt = rt();
    for round in 0..rounds {
        let url = fresh(round);
        let failures = start_all(&url, n);
        assert!(
            failures.is_empty(),
            "{store}, round {round}: {} of {n} processes failed to start:\n{}",
            failures.len(),
            failures.join("\n")
        );
        rt.block_on(check_jobs(&url));
        drop_db(round);
    }
}

fn db_name(store: &str, round: usize) -> String {
    format!("sundial_start_{store}_{}_{round}", std::process::id())
}

/// Runs SQL on the server's `test` database.
fn admin_sql(url: &str, statements: &[String]) {
    rt().block_on(async {
        let store = SqlJobStore::from_url(url).unwrap();
        store.start().await.unwrap();
        for s in statements {
            store.execute_raw(s).await.unwrap();
        }
        store.shutdown().await.unwrap();
    });
}

#[test]
fn postgres_processes_start_together_on_an_empty_database() {
    let url = postgres_url();
    rounds(
        "postgres",
        |r| {
            let db = db_name("pg", r);
            admin_sql(&url, &[format!("CREATE DATABASE {db}")]);
            with_db(&url, &db)
        },
        |r| {
            admin_sql(
                &url,
                &[format!("DROP DATABASE {} WITH (FORCE)", db_name("pg", r))],
            )
        },
    );
}

#[test]
fn mariadb_processes_start_together_on_an_empty_database() {
    let url = mysql_url();
    rounds(
        "mariadb",
        |r| {
            let db = db_name("my", r);
            admin_sql(&url, &[format!("CREATE DATABASE {db}")]);
            with_db(&url, &db)
        },
        |r| admin_sql(&url, &[format!("DROP DATABASE {}", db_name("my", r))]),
    );
}

#[test]
fn sqlite_processes_start_together_on_a_new_file() {
    let dir = std::env::temp_dir().join(format!("sundial-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |r: usize| dir.join(format!("jobs{r}.db"));
    rounds(
        "sqlite",
        |r| format!("sqlite://{}", path(r).display()),
        |r| {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path(r).display()));
            }
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn redis_processes_start_together_on_a_new_prefix() {
    let url = redis_url();
    let prefix = |r: usize| format!("start{}x{r}", std::process::id());
    rounds(
        "redis",
        |r| format!("{url}#prefix={}", prefix(r)),
        |r| {
            rt().block_on(async {
                let s = RedisJobStore::from_url(&url)
                    .unwrap()
                    .with_prefix(prefix(r));
                s.start().await.unwrap();
                s.purge().await.unwrap();
            })
        },
    );
}

#[test]
fn mongo_processes_start_together_on_an_empty_database() {
    let url = mongo_url();
    rounds(
        "mongo",
        |r| with_db(&url, &db_name("mg", r)),
        |r| {
            rt().block_on(async {
                let client = mongodb::Client::with_uri_str(&url).await.unwrap();
                client.database(&db_name("mg", r)).drop().await.unwrap();
            })
        },
    );
}

#[test]
fn database_urls_are_rewritten() {
    assert_eq!(
        with_db("postgres://u@h:5432/test", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        with_db("mongodb://127.0.0.1:27018/sundial_test?w=1", "x"),
        "mongodb://127.0.0.1:27018/x?w=1"
    );
    assert_eq!(with_db("mysql://root@h", "x"), "mysql://root@h/x");
}

/// The schema is created on the connection that holds the lock, so a pool of
/// one connection (handed in by the application) starts on an empty table.
#[test]
fn a_pool_of_one_connection_creates_the_schema() {
    use sundial::sql::Dialect;
    for (url, dialect) in [
        (postgres_url(), Dialect::Postgres),
        (mysql_url(), Dialect::MySql),
    ] {
        rt().block_on(async {
            sqlx::any::install_default_drivers();
            let pool = sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(std::time::Duration::from_secs(5))
                .connect(&url)
                .await
                .unwrap();
            let table = format!("one_conn_{}", std::process::id());
            let store = SqlJobStore::from_pool(pool, dialect)
                .with_table(&table)
                .unwrap();
            tokio::time::timeout(std::time::Duration::from_secs(30), store.start())
                .await
                .unwrap_or_else(|_| panic!("{url}: start hung"))
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(store.get_all_jobs().await.unwrap().is_empty());
            store.drop_table().await.unwrap();
        });
    }
}
