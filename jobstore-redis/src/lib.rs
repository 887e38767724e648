//! Redis job store for Sundial.
//!
//! Layout, under a configurable key prefix `P` (default `sundial`; the braces
//! keep every key in one cluster slot):
//!
//! | key | type | content |
//! |---|---|---|
//! | `{P}:jobs` | hash | job id → job JSON (task, trigger, args, options) |
//! | `{P}:nrt` | hash | job id → next run time, microseconds since the epoch (absent: paused) |
//! | `{P}:lease` | hash | job id → `until|owner` |
//! | `{P}:ver` | hash | job id → version |
//! | `{P}:due` | sorted set | job id scored by when it can be claimed (next run time, or lease expiry if later); paused jobs are absent |
//!
//! Adding, updating, claiming (`acquire_due`) and releasing are each one Lua
//! script: atomic, and one round trip for a whole batch.
//!
//! | capability | value |
//! |---|---|
//! | persistent | as configured on the server (see below) |
//! | shared across processes | yes |
//! | tested against | Redis 7.0 |
//!
//! # Durability
//! Sundial writes each change in one script; what survives a Redis restart is
//! Redis's business:
//! - no persistence (`save ""`, `appendonly no`): every job is lost on restart;
//! - RDB snapshots only: changes since the last snapshot are lost;
//! - `appendonly yes` with `appendfsync everysec` (the usual setting): at most
//!   about one second of changes is lost on a crash of the server machine;
//! - `appendonly yes` with `appendfsync always`: nothing acknowledged is lost.
//!
//! A lost `release` only means a job runs again after its lease expires; a lost
//! `add_job` loses the job.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::MultiplexedConnection;
use redis::Script;
use sundial_core::job::{JobId, JobRecord, Lease, OwnerId, Release, ReleaseOutcome};
use sundial_core::store::{lease_duration, sort_records, JobStore, ReleaseItem, StoreCapabilities};
use tokio::sync::Mutex;

const COMMON: &str = include_str!("../lua/common.lua");

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "sundial";

/// Errors of the Redis store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis failed (connection, protocol, script).
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    /// A store method was called before `start`.
    #[error("store is not started (call start() or start the scheduler)")]
    NotStarted,
    /// A script returned something this build does not understand.
    #[error("unexpected reply from a store script: {0}")]
    Protocol(String),
}

impl Error {
    fn is_temporary(&self) -> bool {
        match self {
            Error::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
            }
            Error::NotStarted | Error::Protocol(_) => false,
        }
    }
}

fn core_err(e: Error) -> sundial_core::Error {
    if e.is_temporary() {
        sundial_core::Error::store_temporary("redis", e)
    } else {
        sundial_core::Error::store("redis", e)
    }
}

fn core_redis(e: redis::RedisError) -> sundial_core::Error {
    core_err(Error::Redis(e))
}

#[derive(Debug)]
struct Scripts {
    add: Script,
    update: Script,
    remove: Script,
    acquire: Script,
    release: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Scripts {
            add: s(include_str!("../lua/add.lua")),
            update: s(include_str!("../lua/update.lua")),
            remove: s(include_str!("../lua/remove.lua")),
            acquire: s(include_str!("../lua/acquire.lua")),
            release: s(include_str!("../lua/release.lua")),
        }
    }
}

/// A job store in Redis.
///
/// # Examples
/// ```no_run
/// use sundial_jobstore_redis::RedisJobStore;
/// let store = RedisJobStore::from_url("redis://:password@127.0.0.1:6379/2")?.with_prefix("billing");
/// # Ok::<(), sundial_jobstore_redis::Error>(())
/// ```
pub struct RedisJobStore {
    client: redis::Client,
    prefix: String,
    /// The live connection; dropped after a connection error so the next call reconnects.
    conn: Mutex<Option<MultiplexedConnection>>,
    started: std::sync::atomic::AtomicBool,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisJobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisJobStore")
            .field("prefix", &self.prefix)
            .field(
                "started",
                &self.started.load(std::sync::atomic::Ordering::Relaxed),
            )
            .finish()
    }
}

fn micros(t: DateTime<Utc>) -> String {
    t.timestamp_micros().to_string()
}

fn from_micros(s: &str) -> Option<DateTime<Utc>> {
    s.parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
}

fn parse_lease(s: &str) -> Option<Lease> {
    let (until, owner) = s.split_once('|')?;
    Some(Lease {
        owner: OwnerId::new(owner),
        until: from_micros(until)?,
    })
}

fn record(
    id: &str,
    job: Option<&str>,
    nrt: Option<&str>,
    lease: Option<&str>,
    ver: Option<&str>,
) -> JobRecord {
    let content = match job {
        Some(j) => serde_json::from_str(j).map_err(|e| format!("job JSON is unreadable: {e}")),
        None => Err("job JSON is missing".to_string()),
    };
    JobRecord::from_content_lenient(
        JobId::new(id),
        content,
        nrt.and_then(from_micros),
        lease.and_then(parse_lease),
        ver.and_then(|v| v.parse().ok()).unwrap_or(0),
    )
}

impl RedisJobStore {
    /// A store on the server at `url` (`redis://[:password@]host[:port][/db]`,
    /// `rediss://` for TLS when the `redis` crate is built with it); connects on start.
    ///
    /// # Errors
    /// [`Error::Redis`] for a malformed URL.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        Ok(Self::from_client(redis::Client::open(url)?))
    }

    /// A store on an existing client.
    pub fn from_client(client: redis::Client) -> Self {
        RedisJobStore {
            client,
            prefix: DEFAULT_PREFIX.to_string(),
            conn: Mutex::new(None),
            started: std::sync::atomic::AtomicBool::new(false),
            scripts: Scripts::new(),
        }
    }

    /// Keeps this store's keys under `prefix` (several job sets can share one database).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The store's keys: jobs, nrt, lease, ver, due.
    pub fn keys(&self) -> [String; 5] {
        let p = &self.prefix;
        ["jobs", "nrt", "lease", "ver", "due"].map(|k| format!("{{{p}}}:{k}"))
    }

    /// The connection, (re)connecting if there is none.
    async fn conn(&self) -> sundial_core::Result<MultiplexedConnection> {
        if !self.started.load(std::sync::atomic::Ordering::Acquire) {
            return Err(core_err(Error::NotStarted));
        }
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Duration::from_secs(10))
                    .set_connection_timeout(Duration::from_secs(5)),
            )
            .await
            .map_err(core_redis)?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Maps an error, dropping the connection when it broke so the next call reconnects.
    async fn check<T>(&self, r: redis::RedisResult<T>) -> sundial_core::Result<T> {
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                let err = Error::Redis(e);
                if err.is_temporary() {
                    self.conn.lock().await.take();
                }
                Err(core_err(err))
            }
        }
    }

    fn invoke<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        for k in self.keys() {
            inv.key(k);
        }
        inv
    }

    async fn add_many(&self, jobs: &[JobRecord]) -> sundial_core::Result<()> {
        let mut inv = self.invoke(&self.scripts.add);
        inv.arg(jobs.len());
        for j in jobs {
            inv.arg(j.id.as_str())
                .arg(j.content_json().to_string())
                .arg(j.next_run_time.map(micros).unwrap_or_default());
        }
        let mut conn = self.conn().await?;
        let reply: Vec<String> = self.check(inv.invoke_async(&mut conn).await).await?;
        match reply.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            [c, id] if c == "conflict" => {
                Err(sundial_core::Error::ConflictingId { id: id.clone() })
            }
            other => Err(core_err(Error::Protocol(format!("{other:?}")))),
        }
    }
}

#[async_trait]
impl JobStore for RedisJobStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::SHARED_PERSISTENT
    }

    async fn start(&self) -> sundial_core::Result<()> {
        self.started
            .store(true, std::sync::atomic::Ordering::Release);
        match self.conn().await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.started
                    .store(false, std::sync::atomic::Ordering::Release);
                Err(e)
            }
        }
    }

    async fn shutdown(&self) -> sundial_core::Result<()> {
        self.conn.lock().await.take();
        Ok(())
    }

    async fn add_job(&self, job: &JobRecord) -> sundial_core::Result<()> {
        self.add_many(std::slice::from_ref(job)).await
    }

    async fn add_jobs(&self, jobs: &[JobRecord]) -> sundial_core::Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.add_many(jobs).await
    }

    async fn update_job(&self, job: &JobRecord) -> sundial_core::Result<()> {
        let mut inv = self.invoke(&self.scripts.update);
        inv.arg(job.id.as_str())
            .arg(job.content_json().to_string())
            .arg(job.next_run_time.map(micros).unwrap_or_default());
        let mut conn = self.conn().await?;
        let n: i64 = self.check(inv.invoke_async(&mut conn).await).await?;
        if n == 0 {
            return Err(sundial_core::Error::JobNotFound {
                id: job.id.to_string(),
            });
        }
        Ok(())
    }

    async fn remove_job(&self, id: &JobId) -> sundial_core::Result<()> {
        let mut inv = self.invoke(&self.scripts.remove);
        inv.arg(id.as_str());
        let mut conn = self.conn().await?;
        let n: i64 = self.check(inv.invoke_async(&mut conn).await).await?;
        if n == 0 {
            return Err(sundial_core::Error::JobNotFound { id: id.to_string() });
        }
        Ok(())
    }

    async fn remove_all_jobs(&self) -> sundial_core::Result<()> {
        let mut conn = self.conn().await?;
        let _: () = self
            .check(
                redis::cmd("DEL")
                    .arg(&self.keys()[..])
                    .query_async(&mut conn)
                    .await,
            )
            .await?;
        Ok(())
    }

    async fn lookup_job(&self, id: &JobId) -> sundial_core::Result<Option<JobRecord>> {
        let [jobs, nrt, lease, ver, _] = self.keys();
        let mut conn = self.conn().await?;
        let (j, n, l, v): (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = self
            .check(
                redis::pipe()
                    .hget(&jobs, id.as_str())
                    .hget(&nrt, id.as_str())
                    .hget(&lease, id.as_str())
                    .hget(&ver, id.as_str())
                    .query_async(&mut conn)
                    .await,
            )
            .await?;
        if j.is_none() && v.is_none() {
            return Ok(None);
        }
        Ok(Some(record(
            id.as_str(),
            j.as_deref(),
            n.as_deref(),
            l.as_deref(),
            v.as_deref(),
        )))
    }

    async fn get_all_jobs(&self) -> sundial_core::Result<Vec<JobRecord>> {
        let [jobs, nrt, lease, ver, _] = self.keys();
        let mut conn = self.conn().await?;
        type Map = HashMap<String, String>;
        let (j, n, l, v): (Map, Map, Map, Map) = self
            .check(
                redis::pipe()
                    .hgetall(&jobs)
                    .hgetall(&nrt)
                    .hgetall(&lease)
                    .hgetall(&ver)
                    .query_async(&mut conn)
                    .await,
            )
            .await?;
        let mut all: Vec<JobRecord> = j
            .iter()
            .map(|(id, job)| {
                record(
                    id,
                    Some(job),
                    n.get(id).map(String::as_str),
                    l.get(id).map(String::as_str),
                    v.get(id).map(String::as_str),
                )
            })
            .collect();
        sort_records(&mut all);
        Ok(all)
    }

    async fn get_next_run_time(&self) -> sundial_core::Result<Option<DateTime<Utc>>> {
        let mut conn = self.conn().await?;
        let first: Vec<(String, f64)> = self
            .check(
                redis::cmd("ZRANGE")
                    .arg(&self.keys()[4])
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await,
            )
            .await?;
        // Scores are whole microseconds below 2^53, exact in an f64.
        Ok(first
            .first()
            .and_then(|(_, s)| DateTime::from_timestamp_micros(*s as i64)))
    }

    async fn acquire_due(
        &self,
        now: DateTime<Utc>,
        owner: &OwnerId,
        lease: Duration,
        limit: usize,
    ) -> sundial_core::Result<Vec<JobRecord>> {
        let until = now + lease_duration(lease);
        let mut inv = self.invoke(&self.scripts.acquire);
        inv.arg(micros(now))
            .arg(owner.as_str())
            .arg(micros(until))
            .arg(limit);
        let mut conn = self.conn().await?;
        let flat: Vec<String> = self.check(inv.invoke_async(&mut conn).await).await?;
        let lease_text = format!("{}|{}", micros(until), owner.as_str());
        let mut out: Vec<JobRecord> = flat
            .chunks(4)
            .filter(|c| c.len() == 4)
            .map(|c| {
                record(
                    &c[0],
                    Some(&c[1]),
                    Some(&c[2]),
                    Some(&lease_text),
                    Some(&c[3]),
                )
            })
            .collect();
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
        let item = ReleaseItem {
            id: id.clone(),
            version,
            outcome,
        };
        let mut results = self.release_many(owner, vec![item]).await?;
        results
            .pop()
            .unwrap_or_else(|| Err(core_err(Error::Protocol("empty release reply".into()))))
    }

    async fn release_many(
        &self,
        owner: &OwnerId,
        items: Vec<ReleaseItem>,
    ) -> sundial_core::Result<Vec<sundial_core::Result<ReleaseOutcome>>> {
        let mut inv = self.invoke(&self.scripts.release);
        inv.arg(owner.as_str());
        for it in &items {
            let (kind, nrt) = match &it.outcome {
                Release::Reschedule { next_run_time } => {
                    ("R", next_run_time.map(micros).unwrap_or_default())
                }
                Release::Remove => ("D", String::new()),
                Release::Unclaim => ("U", String::new()),
            };
            inv.arg(it.id.as_str()).arg(it.version).arg(kind).arg(nrt);
        }
        let mut conn = self.conn().await?;
        let words: Vec<String> = self.check(inv.invoke_async(&mut conn).await).await?;
        if words.len() != items.len() {
            return Err(core_err(Error::Protocol(format!(
                "{} results for {} jobs",
                words.len(),
                items.len()
            ))));
        }
        Ok(words
            .iter()
            .zip(items)
            .map(|(w, it)| match w.as_str() {
                "applied" => Ok(ReleaseOutcome::Applied),
                "superseded" => Ok(ReleaseOutcome::Superseded),
                "gone" => Ok(ReleaseOutcome::Gone),
                _ => Err(sundial_core::Error::LeaseLost {
                    id: it.id.to_string(),
                }),
            })
            .collect())
    }
}
