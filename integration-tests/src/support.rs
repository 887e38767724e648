//! Store factories for the conformance suite: one per backend, each giving a
//! test its own namespace (table, file or key prefix) on a real server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sundial::store::JobStore;
use sundial::MemoryJobStore;
use sundial_jobstore_sql::SqlJobStore;

/// A unique name for one test's data (`t_<case>_<8 hex>`), used as table name,
/// file name or key prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Namespace(pub String);

impl Namespace {
    /// A fresh namespace for `case`.
    pub fn new(case: &str) -> Self {
        let short: String = case
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(30)
            .collect();
        let rand = uuid::Uuid::new_v4().simple().to_string();
        Namespace(format!("t_{short}_{}", &rand[..8]))
    }
}

/// Opens handles to one kind of store.
#[async_trait]
pub trait StoreFactory: Send + Sync {
    /// The store's name in trial names (`memory`, `sqlite`, ...).
    fn name(&self) -> &'static str;
    /// Checks that the server is reachable; says why not.
    async fn available(&self) -> Result<(), String>;
    /// Opens a started handle on `ns`; a second call gives an independent
    /// handle (another "process") on the same data.
    async fn open(&self, ns: &Namespace) -> anyhow::Result<Arc<dyn JobStore>>;
    /// Removes the namespace's data (best effort).
    async fn cleanup(&self, ns: &Namespace) -> anyhow::Result<()>;
}

/// The in-memory store (one shared instance per namespace).
#[derive(Default, Debug)]
pub struct MemoryFactory {
    stores: Mutex<HashMap<Namespace, Arc<MemoryJobStore>>>,
}

#[async_trait]
impl StoreFactory for MemoryFactory {
    fn name(&self) -> &'static str {
        "memory"
    }
    async fn available(&self) -> Result<(), String> {
        Ok(())
    }
    async fn open(&self, ns: &Namespace) -> anyhow::Result<Arc<dyn JobStore>> {
        let mut stores = self
            .stores
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let s = stores.entry(ns.clone()).or_default();
        Ok(Arc::clone(s) as Arc<dyn JobStore>)
    }
    async fn cleanup(&self, ns: &Namespace) -> anyhow::Result<()> {
        self.stores
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .remove(ns);
        Ok(())
    }
}

/// SQLite files under the system temp directory.
#[derive(Debug)]
pub struct SqliteFactory;

fn sqlite_path(ns: &Namespace) -> std::path::PathBuf {
    std::env::temp_dir()
        .join("sundial-tests")
        .join(format!("{}.db", ns.0))
}

#[async_trait]
impl StoreFactory for SqliteFactory {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    async fn available(&self) -> Result<(), String> {
        std::fs::create_dir_all(std::env::temp_dir().join("sundial-tests"))
            .map_err(|e| e.to_string())
    }
    async fn open(&self, ns: &Namespace) -> anyhow::Result<Arc<dyn JobStore>> {
        let s = SqlJobStore::sqlite(sqlite_path(ns));
        s.start().await?;
        Ok(Arc::new(s))
    }
    async fn cleanup(&self, ns: &Namespace) -> anyhow::Result<()> {
        let p = sqlite_path(ns);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
        }
        Ok(())
    }
}

/// The PostgreSQL URL the tests use (`SUNDIAL_TEST_POSTGRES_URL`).
pub fn postgres_url() -> String {
    std::env::var("SUNDIAL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A PostgreSQL store on the test server whose table is the namespace.
///
/// # Panics
/// When the namespace is not a valid table name.
#[allow(clippy::expect_used)]
pub fn postgres_store(ns: &Namespace) -> SqlJobStore {
    SqlJobStore::from_url(&postgres_url())
        .and_then(|s| s.with_table(&ns.0))
        .expect("postgres store")
}

/// A Redis store on the test server whose key prefix is the namespace.
///
/// # Panics
/// When the test URL is malformed.
#[allow(clippy::expect_used)]
pub fn redis_store(ns: &Namespace) -> sundial::RedisJobStore {
    sundial::RedisJobStore::from_url(&redis_url())
        .expect("redis store")
        .with_prefix(&ns.0)
}

/// The MySQL/MariaDB URL the tests use (`SUNDIAL_TEST_MYSQL_URL`).
pub fn mysql_url() -> String {
    std::env::var("SUNDIAL_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// A PostgreSQL or MySQL server, one table per namespace.
#[derive(Debug)]
pub struct ServerFactory {
    /// `postgres` or `mysql`.
    pub name: &'static str,
    /// Connection URL.
    pub url: String,
}

impl ServerFactory {
    fn store(&self, ns: &Namespace) -> anyhow::Result<SqlJobStore> {
        Ok(SqlJobStore::from_url(&self.url)?.with_table(&ns.0)?)
    }
}

#[async_trait]
impl StoreFactory for ServerFactory {
    fn name(&self) -> &'static str {
        self.name
    }
    async fn available(&self) -> Result<(), String> {
        let s = self
            .store(&Namespace::new("probe"))
            .map_err(|e| e.to_string())?;
        let r = tokio::time::timeout(std::time::Duration::from_secs(15), s.start()).await;
        let out = match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{} at {}: {e}", self.name, self.url)),
            Err(_) => Err(format!(
                "{} at {}: connection timed out",
                self.name, self.url
            )),
        };
        let _ = s.shutdown().await;
        out
    }
    async fn open(&self, ns: &Namespace) -> anyhow::Result<Arc<dyn JobStore>> {
        let s = self.store(ns)?;
        s.start().await?;
        Ok(Arc::new(s))
    }
    async fn cleanup(&self, ns: &Namespace) -> anyhow::Result<()> {
        let s = self.store(ns)?;
        s.drop_table().await?;
        s.shutdown().await?;
        Ok(())
    }
}

/// The Redis URL the tests use (`SUNDIAL_TEST_REDIS_URL`).
pub fn redis_url() -> String {
    std::env::var("SUNDIAL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A Redis server, one key prefix per namespace.
#[derive(Debug)]
pub struct RedisFactory {
    /// Connection URL.
    pub url: String,
}

#[async_trait]
impl StoreFactory for RedisFactory {
    fn name(&self) -> &'static str {
        "redis"
    }
    async fn available(&self) -> Result<(), String> {
        let s = sundial::RedisJobStore::from_url(&self.url).map_err(|e| e.to_string())?;
        match tokio::time::timeout(std::time::Duration::from_secs(10), s.start()).await {
            Ok(Ok(())) => s
                .get_next_run_time(&[])
                .await
                .map(|_| ())
                .map_err(|e| format!("redis at {}: {e}", self.url)),
            Ok(Err(e)) => Err(format!("redis at {}: {e}", self.url)),
            Err(_) => Err(format!("redis at {}: connection timed out", self.url)),
        }
    }
    async fn open(&self, ns: &Namespace) -> anyhow::Result<Arc<dyn JobStore>> {
        let s = sundial::RedisJobStore::from_url(&self.url)?.with_prefix(&ns.0);
        s.start().await?;
        Ok(Arc::new(s))
    }
    async fn cleanup(&self, ns: &Namespace) -> anyhow::Result<()> {
        let s = sundial::RedisJobStore::from_url(&self.url)?.with_prefix(&ns.0);
        s.start().await?;
        // Jobs and the run ledger (removing jobs keeps their runs).
        s.purge().await?;
        Ok(())
    }
}

/// The MongoDB URL the tests use (`SUNDIAL_TEST_MONGO_URL`; `scripts/test.sh`
/// starts a SecantusDB server there).
pub fn mongo_url() -> String {
    std::env::var("SUNDIAL_TEST_MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27018/sundial_test".into())
}

/// A MongoDB server, one collection per namespace.
#[derive(Debug)]
pub struct MongoFactory {
    /// Connection URL.
    pub url: String,
}

#[async_trait]
impl StoreFactory for MongoFactory {
    fn name(&self) -> &'static str {
        "mongo"
    }
    async fn available(&self) -> Result<(), String> {
        let s = sundial::MongoJobStore::from_url(&self.url).with_collection("probe");
        match tokio::time::timeout(std::time::Duration::from_secs(20), s.start()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("mongo at {}: {e}", self.url)),
            Err(_) => Err(format!("mongo at {}: connection timed out", self.url)),
        }
    }
    async fn open(&self, ns: &Namespace) -> anyhow::Result<Arc<dyn JobStore>> {
        let s = sundial::MongoJobStore::from_url(&self.url).with_collection(&ns.0);
        s.start().await?;
        Ok(Arc::new(s))
    }
    async fn cleanup(&self, ns: &Namespace) -> anyhow::Result<()> {
        sundial::MongoJobStore::from_url(&self.url)
            .with_collection(&ns.0)
            .drop_collection()
            .await?;
        Ok(())
    }
}

/// Every store the suite knows, in a fixed order.
pub fn stores() -> Vec<Arc<dyn StoreFactory>> {
    vec![
        Arc::new(MemoryFactory::default()),
        Arc::new(SqliteFactory),
        Arc::new(ServerFactory {
            name: "postgres",
            url: postgres_url(),
        }),
        Arc::new(ServerFactory {
            name: "mysql",
            url: mysql_url(),
        }),
        Arc::new(RedisFactory { url: redis_url() }),
        Arc::new(MongoFactory { url: mongo_url() }),
    ]
}

/// Checks that the stored job `id` could not be decoded and is shown as such:
/// left out of `get_jobs`, listed apart with why, an error that names it
/// from `get_job`, and still in its store, from which it can be removed.
pub async fn check_listed_unreadable(s: &sundial::Scheduler, id: &str) -> anyhow::Result<()> {
    use anyhow::{ensure, Context};
    let jobs = s.get_jobs(None).await?;
    ensure!(
        jobs.iter().all(|j| j.id().as_str() != id),
        "{id} listed as a job"
    );
    let listing = s.job_listing(None).await?;
    let u = listing
        .unreadable()
        .iter()
        .find(|u| u.id.as_str() == id)
        .with_context(|| format!("{id} not listed as unreadable: {listing}"))?;
    ensure!(!u.reason.is_empty(), "{u:?}");
    ensure!(
        listing.to_string().contains(&format!("{id} unreadable:")),
        "{listing}"
    );
    match s.get_job(id, None).await {
        Err(sundial::Error::UnreadableJob { id: i, .. }) if i == id => {}
        other => anyhow::bail!("get_job of an unreadable job: {other:?}"),
    }
    s.remove_job(id, None)
        .await
        .context("an unreadable job cannot be removed")?;
    ensure!(s.get_job(id, None).await?.is_none(), "{id} not removed");
    Ok(())
}

/// Deletes what a measurement or case left in the `kind` store under `ns`
/// (jobs, runs, nodes), through that store's factory; nothing for an unknown kind.
///
/// # Errors
/// The store's cleanup failed.
pub async fn cleanup_store(kind: &str, ns: &Namespace) -> anyhow::Result<()> {
    match stores().into_iter().find(|f| f.name() == kind) {
        Some(factory) => factory.cleanup(ns).await,
        None => Ok(()),
    }
}

/// This process's resident memory in bytes (Linux; 0 where unknown).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}
