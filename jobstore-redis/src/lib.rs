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
//! | `{P}:due` | sorted set | job id scored by when it can be claimed (next run time, or lease expiry if later); paused and quarantined jobs are absent |
//! | `{P}:quarantine` | hash | job id → why the job was taken out of `due`: a field `acquire_due` found corrupted (a next run time or version that is not an integer, missing job JSON); `update_job` and removal lift it |
//!
//!
//! The run ledger (one record per started slot) lives next to the jobs, under the
//! same prefix and hash tag:
//!
//! | key | type | content |
//! |---|---|---|
//! | `{P}:run:<run id>` | hash | one run: `job_id`, `scheduled`, `attempt`, `state`, `owner`, `node`, `started`, `finished`, `heartbeat` (read only while the run is `running`), `error` (times in microseconds; an absent field is `None`) |
//! | `{P}:slot:<job id>:<scheduled>:<attempt>` | string | the id of the run holding that slot (scheduled time in microseconds); its existence makes a second insert of the slot a duplicate |
//! | `{P}:running:<job id>` | set | ids of the job's `running` runs (counted for `max_instances`) |
//! | `{P}:heartbeats` | sorted set | ids of `running` runs that have a heartbeat, scored by `heartbeat` (for `interrupt_lapsed`) |
//! | `{P}:runs` | sorted set | every run id, scored by scheduled time (for `query_runs` and `prune_runs`) |
//! | `{P}:jobruns:<job id>` | sorted set | the job's run ids, scored by scheduled time (for `query_runs` by job) |
//! | `{P}:runjobs` | set | ids of jobs that have a `jobruns` index (the retention sweep reads it instead of scanning the keyspace; jobs whose index predates it are listed once, marked by `{P}:runjobs_listed`) |
//!
//! The node registry (the schedulers using the store):
//!
//! | key | type | content |
//! |---|---|---|
//! | `{P}:nodes` | hash | owner id → node record JSON |
//! | `{P}:node_leases` | hash | owner id → `expires|instance` (expiry in microseconds), read by the scripts that register and remove nodes |
//!
//! The per-run, per-slot and per-job keys are built inside the scripts from the
//! prefix, so they are not declared as script keys; they share the `{P}` hash tag
//! and therefore the slot of the declared ones. Removing jobs (`remove_job`,
//! `remove_all_jobs`) leaves these keys alone: runs outlive their jobs until
//! `prune_runs` deletes them. [`RedisJobStore::purge`] deletes everything.
//! Sorted-set scores are doubles, exact for whole microseconds between the years
//! 1685 and 2255; the hashes keep every time exactly.
//!
//! Adding, updating, claiming (`acquire_due`) and releasing are each one Lua
//! script: atomic, and one round trip for a whole batch. So is each run-ledger
//! operation (`insert_runs`, `finish_runs`, `heartbeat_runs`, `interrupt_lapsed`,
//! `query_runs`, `prune_runs`): of several processes inserting the same slot,
//! exactly one gets it, and a lapsed run is interrupted for one caller only.
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
use sundial_core::job::{JobContent, JobId, JobRecord, Lease, OwnerId, Release, ReleaseOutcome};
use sundial_core::node::NodeRecord;
use sundial_core::redact::redact_url;
use sundial_core::run::{
    sort_runs, NewRun, RunFinish, RunId, RunInsert, RunQuery, RunRecord, RunState,
    INTERRUPTED_ERROR,
};
use sundial_core::store::{
    lease_duration, sort_records, update_refused, ChangeNotifier, ChangeStream, JobCounts,
    JobStore, ReleaseItem, StoreCapabilities,
};
use tokio::sync::Mutex;

const BULK: &str = include_str!("../lua/bulk.lua");
const COMMON: &str = include_str!("../lua/common.lua");
const LEDGER: &str = include_str!("../lua/ledger.lua");

/// Limits passed to scripts are capped here (Lua numbers are doubles, and no
/// reply holds this many runs anyway).
const MAX_SCRIPT_LIMIT: usize = i32::MAX as usize;

/// How many runs one pruning script call looks at.
const PRUNE_SLICE: usize = 1000;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "sundial";

/// Errors of the Redis store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis failed (connection, protocol, script).
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    /// The server could not be reached.
    #[error("cannot connect to redis at {addr}: {source}")]
    Connect {
        /// The server's `host:port` (or socket path).
        addr: String,
        /// Why connecting failed.
        source: redis::RedisError,
    },
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL (password removed).
        url: String,
        /// What is wrong.
        reason: String,
    },
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
            Error::Redis(e) | Error::Connect { source: e, .. } => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
            }
            Error::InvalidUrl { .. } | Error::NotStarted | Error::Protocol(_) => false,
        }
    }
}

/// A bad URL is [`sundial_core::Error::Config`]; anything else is a store error
/// of `redis`, temporary when it is a connection problem.
impl From<Error> for sundial_core::Error {
    fn from(e: Error) -> Self {
        core_err(e)
    }
}

fn core_err(e: Error) -> sundial_core::Error {
    if let Error::InvalidUrl { .. } = e {
        sundial_core::Error::Config(e.to_string())
    } else if e.is_temporary() {
        sundial_core::Error::store_temporary("redis", e)
    } else {
        sundial_core::Error::store("redis", e)
    }
}

fn core_redis(e: redis::RedisError) -> sundial_core::Error {
    core_err(Error::Redis(e))
}

/// What is wrong with a Redis URL, in words, if the `url` crate or a check of
/// its parts finds something. Never quotes the user info.
fn url_problem(url: &str) -> Option<String> {
    let parsed = match url::Url::parse(url) {
        Ok(u) => u,
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            return Some("it does not start with a scheme such as redis://".into())
        }
        Err(url::ParseError::EmptyHost) => return Some("the host name is missing".into()),
        Err(url::ParseError::InvalidPort) => {
            return Some("the port is not a number from 0 to 65535".into())
        }
        Err(e) => return Some(e.to_string()),
    };
    match parsed.scheme() {
        "redis" | "rediss" => {}
        "unix" | "redis+unix" => return None,
        other => {
            return Some(format!(
                "the scheme is {other:?}, not redis, rediss or redis+unix"
            ))
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Some("the host name is missing".into());
    }
    let db = parsed.path().trim_matches('/');
    if !db.is_empty() && db.parse::<i64>().is_err() {
        return Some("the path after the host is not a database number such as /0".into());
    }
    None
}

/// A client error in words: the `redis` crate's description (and detail)
/// without its error kind.
fn plain_reason(e: &redis::RedisError) -> String {
    let text = e.to_string();
    let kind = format!("{:?}", e.kind());
    let description = text
        .split_once(&format!(" - {kind}"))
        .map(|(d, _)| d)
        .or_else(|| text.strip_suffix(&format!("- {kind}")))
        .unwrap_or(&text);
    match e.detail() {
        Some(detail) if description != text => format!("{description}: {detail}"),
        _ => description.to_string(),
    }
}

#[derive(Debug)]
struct Scripts {
    add: Script,
    update: Script,
    remove: Script,
    acquire: Script,
    release: Script,
    insert_runs: Script,
    finish_runs: Script,
    heartbeat_runs: Script,
    interrupt_lapsed: Script,
    query_runs: Script,
    prune_runs: Script,
    prune_job_runs: Script,
    forget_run_jobs: Script,
    upsert_node: Script,
    remove_node: Script,
    prune_nodes: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{BULK}\n{COMMON}\n{body}"));
        let l = |body: &str| Script::new(&format!("{BULK}\n{LEDGER}\n{body}"));
        Scripts {
            add: s(include_str!("../lua/add.lua")),
            update: s(include_str!("../lua/update.lua")),
            remove: s(include_str!("../lua/remove.lua")),
            acquire: s(include_str!("../lua/acquire.lua")),
            release: s(include_str!("../lua/release.lua")),
            insert_runs: l(include_str!("../lua/insert_runs.lua")),
            finish_runs: l(include_str!("../lua/finish_runs.lua")),
            heartbeat_runs: l(include_str!("../lua/heartbeat_runs.lua")),
            interrupt_lapsed: l(include_str!("../lua/interrupt_lapsed.lua")),
            query_runs: l(include_str!("../lua/query_runs.lua")),
            prune_runs: l(include_str!("../lua/prune_runs.lua")),
            prune_job_runs: l(include_str!("../lua/prune_job_runs.lua")),
            forget_run_jobs: l(include_str!("../lua/forget_run_jobs.lua")),
            upsert_node: Script::new(include_str!("../lua/upsert_node.lua")),
            remove_node: Script::new(include_str!("../lua/remove_node.lua")),
            prune_nodes: Script::new(include_str!("../lua/prune_nodes.lua")),
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
    /// Identifies this handle's change notices, so that it skips its own.
    token: String,
    /// Publishes change notices while started.
    notifier: ChangeNotifier,
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
    // Missing content stays empty: the scheduler reports it as unreadable.
    JobRecord::stored(
        JobId::new(id),
        JobContent::from_stored(job.unwrap_or_default()),
        nrt.and_then(from_micros),
        lease.and_then(parse_lease),
        ver.and_then(|v| v.parse().ok()).unwrap_or(0),
    )
}

/// What a quarantined job is reported with.
fn quarantined(why: &str) -> String {
    format!("quarantined: {why}; update or remove the job")
}

/// An optional script argument: `""` for none, `"=" + value` for a value.
fn opt_arg(v: Option<&str>) -> String {
    v.map(|v| format!("={v}")).unwrap_or_default()
}

/// An optional time as a script argument (see [`opt_arg`]).
fn opt_time(t: Option<DateTime<Utc>>) -> String {
    opt_arg(t.map(micros).as_deref())
}

fn text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Reads a run from its hash fields; says what is wrong with a corrupted one.
fn run_record(id: &str, fields: &HashMap<String, String>) -> Result<RunRecord, String> {
    let field = |name: &str| fields.get(name).map(String::as_str);
    let required = |name: &str| field(name).ok_or_else(|| format!("field {name} is missing"));
    let time = |name: &str| -> Result<Option<DateTime<Utc>>, String> {
        field(name)
            .map(|v| from_micros(v).ok_or_else(|| format!("field {name} is not a time: {v:?}")))
            .transpose()
    };
    let job_id = JobId::new(required("job_id")?);
    let scheduled = required("scheduled")?;
    let scheduled = from_micros(scheduled)
        .ok_or_else(|| format!("field scheduled is not a time: {scheduled:?}"))?;
    let attempt = required("attempt")?;
    let attempt: u32 = attempt
        .parse()
        .map_err(|_| format!("field attempt is not a number: {attempt:?}"))?;
    let state = required("state")?;
    let state = RunState::parse(state).ok_or_else(|| format!("unknown state {state:?}"))?;
    Ok(RunRecord {
        id: RunId::new(id),
        job_id,
        scheduled_time: scheduled,
        attempt,
        state,
        owner: field("owner").map(OwnerId::new),
        node: field("node").map(str::to_string),
        started_at: time("started")?,
        finished_at: time("finished")?,
        // Finishing leaves the field: it means something only while running.
        heartbeat_until: if state == RunState::Running {
            time("heartbeat")?
        } else {
            None
        },
        error: field("error").map(str::to_string),
    })
}

/// Decodes a script's `{id, {field, value, ...}}` list into runs. A run that
/// cannot be read is skipped with a warning; a reply of the wrong shape is an error.
fn decode_runs(reply: redis::Value) -> sundial_core::Result<Vec<RunRecord>> {
    let shape = |what: &str| core_err(Error::Protocol(format!("run list: {what}")));
    let items = match reply {
        redis::Value::Array(items) => items,
        redis::Value::Nil => Vec::new(),
        other => return Err(shape(&format!("{other:?}"))),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let redis::Value::Array(pair) = item else {
            return Err(shape("entry is not a list"));
        };
        let [id, redis::Value::Array(flat)] = pair.as_slice() else {
            return Err(shape("entry is not {id, fields}"));
        };
        let Some(id) = text(id) else {
            tracing::warn!(target: "sundial::store", "skipping a run whose id is not UTF-8");
            continue;
        };
        let mut fields = HashMap::with_capacity(flat.len() / 2);
        let mut unreadable = false;
        for kv in flat.chunks(2) {
            match kv {
                [k, v] => match (text(k), text(v)) {
                    (Some(k), Some(v)) => {
                        fields.insert(k, v);
                    }
                    _ => unreadable = true,
                },
                _ => unreadable = true,
            }
        }
        let rec = if unreadable {
            Err("a field is not UTF-8".to_string())
        } else {
            run_record(&id, &fields)
        };
        match rec {
            Ok(r) => out.push(r),
            Err(e) => tracing::warn!(
                target: "sundial::store",
                run_id = %id,
                "skipping an unreadable run record in redis: {e}"
            ),
        }
    }
    Ok(out)
}

/// Escapes the glob characters of a `SCAN MATCH` pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisJobStore {
    /// A store on the server at `url` (`redis://[:password@]host[:port][/db]`,
    /// `rediss://` for TLS when the `redis` crate is built with it); connects on start.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a malformed URL.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: redact_url(url),
            reason,
        };
        if let Some(reason) = url_problem(url) {
            return Err(invalid(reason));
        }
        let client = redis::Client::open(url).map_err(|e| invalid(plain_reason(&e)))?;
        Ok(Self::from_client(client))
    }

    /// A store on an existing client.
    pub fn from_client(client: redis::Client) -> Self {
        RedisJobStore {
            client,
            prefix: DEFAULT_PREFIX.to_string(),
            conn: Mutex::new(None),
            started: std::sync::atomic::AtomicBool::new(false),
            scripts: Scripts::new(),
            token: OwnerId::random().to_string(),
            notifier: ChangeNotifier::default(),
        }
    }

    /// The pub/sub channel of this prefix's change notices.
    fn channel(&self) -> String {
        format!("{}changes", self.key_prefix())
    }

    /// Asks for a change notice to the other handles.
    fn changed(&self) {
        self.notifier.signal();
    }

    /// Starts publishing change notices on a connection of their own.
    fn start_notifier(&self) {
        let client = self.client.clone();
        let channel = self.channel();
        let token = self.token.clone();
        let conn: std::sync::Arc<Mutex<Option<MultiplexedConnection>>> = std::sync::Arc::default();
        self.notifier.start(move || {
            let (client, channel, token, conn) = (
                client.clone(),
                channel.clone(),
                token.clone(),
                std::sync::Arc::clone(&conn),
            );
            async move {
                let mut guard = conn.lock().await;
                if guard.is_none() {
                    match client.get_multiplexed_async_connection().await {
                        Ok(c) => *guard = Some(c),
                        Err(e) => {
                            tracing::debug!(error = %e, "could not send a change notice");
                            return;
                        }
                    }
                }
                if let Some(c) = guard.as_mut() {
                    let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(&token)
                        .query_async(c)
                        .await;
                    if let Err(e) = sent {
                        tracing::debug!(error = %e, "could not send a change notice");
                        guard.take();
                    }
                }
            }
        });
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

    /// The store's job keys: jobs, nrt, lease, ver, due (the run ledger's keys are
    /// listed in the crate docs).
    pub fn keys(&self) -> [String; 5] {
        let p = &self.prefix;
        ["jobs", "nrt", "lease", "ver", "due"].map(|k| format!("{{{p}}}:{k}"))
    }

    /// The prefix every key of this store starts with: `{P}:`.
    fn key_prefix(&self) -> String {
        format!("{{{}}}:", self.prefix)
    }

    /// Deletes every key of this store, jobs and run ledger alike: each key that
    /// starts with `{P}:` (found with `SCAN`, deleted in batches). Meant for tests
    /// and for retiring a prefix; unlike [`remove_all_jobs`](JobStore::remove_all_jobs),
    /// it also drops the run history. Not atomic: keys written meanwhile may survive.
    /// Note that a prefix containing `}` can share the start of another prefix's keys.
    /// Returns how many keys it deleted.
    ///
    /// # Errors
    /// A store error when Redis fails or the store is not started.
    pub async fn purge(&self) -> sundial_core::Result<u64> {
        let pattern = format!("{}*", glob_escape(&self.key_prefix()));
        let mut conn = self.conn().await?;
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys) = self.scan(&mut conn, cursor, &pattern).await?;
            if !keys.is_empty() {
                let n: u64 = self
                    .check(redis::cmd("DEL").arg(&keys).query_async(&mut conn).await)
                    .await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
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
            .map_err(|e| core_err(self.connect_error(e)))?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// A failure to connect, naming the server.
    fn connect_error(&self, source: redis::RedisError) -> Error {
        Error::Connect {
            addr: self.client.get_connection_info().addr.to_string(),
            source,
        }
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

    /// A ledger script call: keys runs and heartbeats, then the key prefix as first argument.
    fn invoke_ledger<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let p = self.key_prefix();
        let mut inv = script.prepare_invoke();
        inv.key(format!("{p}runs"))
            .key(format!("{p}heartbeats"))
            .arg(p);
        inv
    }

    /// Lists in `{P}:runjobs` the jobs whose run index was written before
    /// that set existed (once per prefix, marked by `{P}:runjobs_listed`), so
    /// that the retention sweep reads the set instead of scanning the keyspace.
    async fn list_run_jobs(&self, conn: &mut MultiplexedConnection) -> sundial_core::Result<()> {
        let p = self.key_prefix();
        let marker = format!("{p}runjobs_listed");
        let listed: bool = self
            .check(redis::cmd("EXISTS").arg(&marker).query_async(conn).await)
            .await?;
        if listed {
            return Ok(());
        }
        let index = format!("{p}jobruns:");
        let pattern = format!("{}*", glob_escape(&index));
        let mut cursor: u64 = 0;
        loop {
            let (next, keys) = self.scan(conn, cursor, &pattern).await?;
            let jobs: Vec<&[u8]> = keys
                .iter()
                .filter_map(|k| k.strip_prefix(index.as_bytes()))
                .collect();
            if !jobs.is_empty() {
                let _: u64 = self
                    .check(
                        redis::cmd("SADD")
                            .arg(format!("{p}runjobs"))
                            .arg(&jobs)
                            .query_async(conn)
                            .await,
                    )
                    .await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let _: () = self
            .check(
                redis::cmd("SET")
                    .arg(&marker)
                    .arg(1)
                    .query_async(conn)
                    .await,
            )
            .await?;
        Ok(())
    }

    /// One `SCAN` step over the keys matching `pattern`.
    async fn scan(
        &self,
        conn: &mut MultiplexedConnection,
        cursor: u64,
        pattern: &str,
    ) -> sundial_core::Result<(u64, Vec<Vec<u8>>)> {
        self.check(
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await,
        )
        .await
    }

    /// A node registry script call: keys nodes and node leases.
    fn invoke_nodes<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let p = self.key_prefix();
        let mut inv = script.prepare_invoke();
        inv.key(format!("{p}nodes")).key(format!("{p}node_leases"));
        inv
    }

    async fn add_many(&self, jobs: &[JobRecord]) -> sundial_core::Result<()> {
        let mut inv = self.invoke(&self.scripts.add);
        inv.arg(jobs.len());
        for j in jobs {
            inv.arg(j.id.as_str())
                .arg(j.content.as_str())
                .arg(j.next_run_time.map(micros).unwrap_or_default());
        }
        let mut conn = self.conn().await?;
        let reply: Vec<String> = self.check(inv.invoke_async(&mut conn).await).await?;
        match reply.as_slice() {
            [ok] if ok == "ok" => {
                self.changed();
                Ok(())
            }
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
            Ok(_) => {
                self.start_notifier();
                Ok(())
            }
            Err(e) => {
                self.started
                    .store(false, std::sync::atomic::Ordering::Release);
                Err(e)
            }
        }
    }

    async fn shutdown(&self) -> sundial_core::Result<()> {
        self.notifier.stop();
        self.conn.lock().await.take();
        Ok(())
    }

    async fn watch_changes(&self) -> sundial_core::Result<Option<ChangeStream>> {
        use futures::StreamExt as _;
        let mut pubsub = self
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| core_err(self.connect_error(e)))?;
        pubsub.subscribe(self.channel()).await.map_err(core_redis)?;
        let token = self.token.clone();
        Ok(Some(
            pubsub
                .into_on_message()
                .filter_map(move |msg| {
                    let own = msg.get_payload::<String>().is_ok_and(|p| p == token);
                    std::future::ready((!own).then_some(()))
                })
                .boxed(),
        ))
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
            .arg(job.content.as_str())
            .arg(job.next_run_time.map(micros).unwrap_or_default())
            .arg(job.version.to_string());
        let mut conn = self.conn().await?;
        let n: i64 = self.check(inv.invoke_async(&mut conn).await).await?;
        if n <= 0 {
            // 0: no such job; -1: its version moved on.
            return Err(update_refused(job, n < 0));
        }
        self.changed();
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
                    .arg(format!("{}quarantine", self.key_prefix()))
                    .query_async(&mut conn)
                    .await,
            )
            .await?;
        Ok(())
    }

    async fn lookup_job(&self, id: &JobId) -> sundial_core::Result<Option<JobRecord>> {
        let [jobs, nrt, lease, ver, _] = self.keys();
        let quarantine = format!("{}quarantine", self.key_prefix());
        let mut conn = self.conn().await?;
        type Field = Option<String>;
        let (j, n, l, v, q): (Field, Field, Field, Field, Field) = self
            .check(
                redis::pipe()
                    .hget(&jobs, id.as_str())
                    .hget(&nrt, id.as_str())
                    .hget(&lease, id.as_str())
                    .hget(&ver, id.as_str())
                    .hget(&quarantine, id.as_str())
                    .query_async(&mut conn)
                    .await,
            )
            .await?;
        if j.is_none() && v.is_none() && q.is_none() {
            return Ok(None);
        }
        let mut rec = record(
            id.as_str(),
            j.as_deref(),
            n.as_deref(),
            l.as_deref(),
            v.as_deref(),
        );
        rec.quarantined = q.map(|why| quarantined(&why));
        Ok(Some(rec))
    }

    async fn get_all_jobs(&self) -> sundial_core::Result<Vec<JobRecord>> {
        let [jobs, nrt, lease, ver, _] = self.keys();
        let quarantine = format!("{}quarantine", self.key_prefix());
        let mut conn = self.conn().await?;
        type Map = HashMap<String, String>;
        let (j, n, l, v, q): (Map, Map, Map, Map, Map) = self
            .check(
                redis::pipe()
                    .hgetall(&jobs)
                    .hgetall(&nrt)
                    .hgetall(&lease)
                    .hgetall(&ver)
                    .hgetall(&quarantine)
                    .query_async(&mut conn)
                    .await,
            )
            .await?;
        // Quarantined jobs are listed too, even one whose job JSON is gone.
        let ids: std::collections::BTreeSet<&String> = j.keys().chain(q.keys()).collect();
        let mut all: Vec<JobRecord> = ids
            .into_iter()
            .map(|id| {
                let mut rec = record(
                    id,
                    j.get(id).map(String::as_str),
                    n.get(id).map(String::as_str),
                    l.get(id).map(String::as_str),
                    v.get(id).map(String::as_str),
                );
                rec.quarantined = q.get(id).map(|why| quarantined(why));
                rec
            })
            .collect();
        sort_records(&mut all);
        Ok(all)
    }

    async fn count_jobs(&self) -> sundial_core::Result<JobCounts> {
        let mut conn = self.conn().await?;
        let [jobs, nrt, ..] = self.keys();
        let (all, scheduled): (u64, u64) = self
            .check(
                redis::pipe()
                    .cmd("HLEN")
                    .arg(jobs)
                    .cmd("HLEN")
                    .arg(nrt)
                    .query_async(&mut conn)
                    .await,
            )
            .await?;
        Ok(JobCounts {
            scheduled,
            paused: all.saturating_sub(scheduled),
        })
    }

    async fn get_next_run_time(
        &self,
        skip: &[JobId],
    ) -> sundial_core::Result<Option<DateTime<Utc>>> {
        let mut conn = self.conn().await?;
        let first: Vec<(String, f64)> = self
            .check(
                redis::cmd("ZRANGE")
                    .arg(&self.keys()[4])
                    .arg(0)
                    .arg(skip.len())
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await,
            )
            .await?;
        // Scores are whole microseconds below 2^53, exact in an f64.
        Ok(first
            .iter()
            .find(|(id, _)| !skip.iter().any(|s| s.as_str() == id))
            .and_then(|(_, s)| DateTime::from_timestamp_micros(*s as i64)))
    }

    async fn acquire_due(
        &self,
        now: DateTime<Utc>,
        owner: &OwnerId,
        lease: Duration,
        limit: usize,
        skip: &[JobId],
    ) -> sundial_core::Result<Vec<JobRecord>> {
        let until = now + lease_duration(lease);
        let mut inv = self.invoke(&self.scripts.acquire);
        inv.arg(micros(now))
            .arg(owner.as_str())
            .arg(micros(until))
            .arg(limit);
        for id in skip {
            inv.arg(id.as_str());
        }
        let mut conn = self.conn().await?;
        let (flat, bad): (Vec<String>, Vec<String>) =
            self.check(inv.invoke_async(&mut conn).await).await?;
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
        // Quarantined records come back marked (and unclaimed), so that the
        // scheduler reports them.
        for c in bad.chunks(2).filter(|c| c.len() == 2) {
            tracing::error!(job_id = %c[0], reason = %c[1], "corrupted job quarantined: it is not claimed until updated or removed");
            let mut rec = JobRecord::stored(
                JobId::new(c[0].as_str()),
                JobContent::from_stored(""),
                None,
                None,
                0,
            );
            rec.quarantined = Some(quarantined(&c[1]));
            out.push(rec);
        }
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
        let wakes = items.iter().any(|i| {
            matches!(
                i.outcome,
                Release::Reschedule {
                    next_run_time: Some(_)
                } | Release::Unclaim
            )
        });
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
        if wakes {
            self.changed();
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

    async fn insert_runs(&self, runs: &[NewRun]) -> sundial_core::Result<Vec<RunInsert>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.invoke_ledger(&self.scripts.insert_runs);
        for r in runs {
            let rec = &r.record;
            inv.arg(rec.id.as_str())
                .arg(rec.job_id.as_str())
                .arg(micros(rec.scheduled_time))
                .arg(rec.attempt)
                .arg(rec.state.as_str())
                .arg(opt_arg(rec.owner.as_ref().map(OwnerId::as_str)))
                .arg(opt_arg(rec.node.as_deref()))
                .arg(opt_time(rec.started_at))
                .arg(opt_time(rec.finished_at))
                .arg(opt_time(rec.heartbeat_until))
                .arg(opt_arg(rec.error.as_deref()))
                .arg(r.max_instances.map(|m| m.to_string()).unwrap_or_default());
        }
        let mut conn = self.conn().await?;
        let words: Vec<String> = self.check(inv.invoke_async(&mut conn).await).await?;
        if words.len() != runs.len() {
            return Err(core_err(Error::Protocol(format!(
                "{} results for {} runs",
                words.len(),
                runs.len()
            ))));
        }
        words
            .iter()
            .map(|w| match w.as_str() {
                "duplicate" => Ok(RunInsert::Duplicate),
                other => RunState::parse(other)
                    .map(RunInsert::Inserted)
                    .ok_or_else(|| core_err(Error::Protocol(format!("insert result {other:?}")))),
            })
            .collect()
    }

    async fn finish_runs(&self, owner: &OwnerId, runs: &[RunFinish]) -> sundial_core::Result<u64> {
        if runs.is_empty() {
            return Ok(0);
        }
        let mut inv = self.invoke_ledger(&self.scripts.finish_runs);
        inv.arg(owner.as_str());
        for f in runs {
            inv.arg(f.id.as_str())
                .arg(f.state.as_str())
                .arg(micros(f.finished_at))
                .arg(opt_arg(f.error.as_deref()));
        }
        let mut conn = self.conn().await?;
        let n: u64 = self.check(inv.invoke_async(&mut conn).await).await?;
        Ok(n)
    }

    async fn heartbeat_runs(
        &self,
        owner: &OwnerId,
        ids: &[RunId],
        until: DateTime<Utc>,
    ) -> sundial_core::Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut inv = self.invoke_ledger(&self.scripts.heartbeat_runs);
        inv.arg(owner.as_str()).arg(micros(until));
        for id in ids {
            inv.arg(id.as_str());
        }
        let mut conn = self.conn().await?;
        let n: u64 = self.check(inv.invoke_async(&mut conn).await).await?;
        Ok(n)
    }

    async fn interrupt_lapsed(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> sundial_core::Result<Vec<RunRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut inv = self.invoke_ledger(&self.scripts.interrupt_lapsed);
        inv.arg(micros(now))
            .arg(limit.min(MAX_SCRIPT_LIMIT))
            .arg(INTERRUPTED_ERROR);
        let mut conn = self.conn().await?;
        let reply: redis::Value = self.check(inv.invoke_async(&mut conn).await).await?;
        decode_runs(reply)
    }

    async fn query_runs(&self, query: &RunQuery) -> sundial_core::Result<Vec<RunRecord>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let mut inv = self.invoke_ledger(&self.scripts.query_runs);
        inv.arg(opt_arg(query.job_id.as_ref().map(JobId::as_str)))
            .arg(query.state.map(RunState::as_str).unwrap_or_default())
            .arg(query.since.map(micros).unwrap_or_default())
            .arg(query.limit.min(MAX_SCRIPT_LIMIT));
        let mut conn = self.conn().await?;
        let reply: redis::Value = self.check(inv.invoke_async(&mut conn).await).await?;
        let mut runs = decode_runs(reply)?;
        // The script filters too; this also guards against a stale index entry.
        runs.retain(|r| query.matches(r));
        sort_runs(&mut runs);
        runs.truncate(query.limit);
        Ok(runs)
    }

    async fn prune_runs(&self, before: DateTime<Utc>) -> sundial_core::Result<u64> {
        let mut conn = self.conn().await?;
        let (mut deleted, mut skip) = (0, 0);
        // A bounded slice per call; the running runs a call keeps are passed
        // over by the next.
        loop {
            let mut inv = self.invoke_ledger(&self.scripts.prune_runs);
            inv.arg(micros(before)).arg(skip).arg(PRUNE_SLICE);
            let (n, seen): (u64, usize) = self.check(inv.invoke_async(&mut conn).await).await?;
            deleted += n;
            skip += seen - usize::try_from(n).unwrap_or(seen);
            if seen < PRUNE_SLICE {
                return Ok(deleted);
            }
        }
    }

    async fn prune_job_runs(
        &self,
        keep: usize,
        before: DateTime<Utc>,
    ) -> sundial_core::Result<u64> {
        let p = self.key_prefix();
        let mut conn = self.conn().await?;
        self.list_run_jobs(&mut conn).await?;
        // The jobs with runs are listed in `{P}:runjobs`: the sweep's cost
        // follows them, not the size of the keyspace.
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, jobs): (u64, Vec<Vec<u8>>) = self
                .check(
                    redis::cmd("SSCAN")
                        .arg(format!("{p}runjobs"))
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await,
                )
                .await?;
            // Most jobs keep fewer runs than the limit: one pipelined count
            // per page picks the few that need a pruning script.
            let mut counts = redis::pipe();
            for job in &jobs {
                let mut key = format!("{p}jobruns:").into_bytes();
                key.extend_from_slice(job);
                counts.cmd("ZCARD").arg(key);
            }
            let sizes: Vec<usize> = if jobs.is_empty() {
                Vec::new()
            } else {
                self.check(counts.query_async(&mut conn).await).await?
            };
            let mut gone = Vec::new();
            for (job, size) in jobs.iter().zip(sizes) {
                if size == 0 {
                    gone.push(job);
                }
                if size <= keep {
                    continue;
                }
                // Past the `keep` newest, a bounded slice per call; what a
                // call keeps (running, too recent) shifts the next slice.
                let mut start = keep;
                loop {
                    let mut inv = self.invoke_ledger(&self.scripts.prune_job_runs);
                    inv.arg(job.as_slice())
                        .arg(start)
                        .arg(PRUNE_SLICE)
                        .arg(micros(before));
                    let (n, seen): (u64, usize) =
                        self.check(inv.invoke_async(&mut conn).await).await?;
                    deleted += n;
                    start += seen - usize::try_from(n).unwrap_or(seen);
                    if seen < PRUNE_SLICE {
                        break;
                    }
                }
            }
            if !gone.is_empty() {
                let mut inv = self.invoke_ledger(&self.scripts.forget_run_jobs);
                for job in gone {
                    inv.arg(job.as_slice());
                }
                let _: u64 = self.check(inv.invoke_async(&mut conn).await).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    async fn upsert_node(
        &self,
        node: &NodeRecord,
        now: DateTime<Utc>,
    ) -> sundial_core::Result<Option<NodeRecord>> {
        let json = node.to_stored()?;
        let mut inv = self.invoke_nodes(&self.scripts.upsert_node);
        inv.arg(node.owner.as_str())
            .arg(&node.instance)
            .arg(micros(node.expires_at))
            .arg(micros(now))
            .arg(json);
        let mut conn = self.conn().await?;
        let held: Option<String> = self.check(inv.invoke_async(&mut conn).await).await?;
        Ok(held.and_then(|j| NodeRecord::from_stored(&j)))
    }

    async fn list_nodes(&self) -> sundial_core::Result<Vec<NodeRecord>> {
        let mut conn = self.conn().await?;
        let all: Vec<(String, String)> = self
            .check(
                redis::cmd("HGETALL")
                    .arg(format!("{}nodes", self.key_prefix()))
                    .query_async(&mut conn)
                    .await,
            )
            .await?;
        let mut nodes: Vec<NodeRecord> = all
            .iter()
            .filter_map(|(_, j)| NodeRecord::from_stored(j))
            .collect();
        nodes.sort_by(|a, b| a.owner.as_str().cmp(b.owner.as_str()));
        Ok(nodes)
    }

    async fn remove_node(&self, owner: &OwnerId, instance: &str) -> sundial_core::Result<()> {
        let mut inv = self.invoke_nodes(&self.scripts.remove_node);
        inv.arg(owner.as_str()).arg(instance);
        let mut conn = self.conn().await?;
        let _: i64 = self.check(inv.invoke_async(&mut conn).await).await?;
        Ok(())
    }

    async fn prune_nodes(&self, before: DateTime<Utc>) -> sundial_core::Result<u64> {
        let mut inv = self.invoke_nodes(&self.scripts.prune_nodes);
        inv.arg(micros(before));
        let mut conn = self.conn().await?;
        let n: u64 = self.check(inv.invoke_async(&mut conn).await).await?;
        Ok(n)
    }

    async fn server_time(&self) -> sundial_core::Result<Option<DateTime<Utc>>> {
        let mut conn = self.conn().await?;
        let (secs, us): (i64, i64) = self
            .check(redis::cmd("TIME").query_async(&mut conn).await)
            .await?;
        Ok(DateTime::from_timestamp_micros(
            secs.saturating_mul(1_000_000).saturating_add(us),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn bulk(s: &str) -> redis::Value {
        redis::Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> redis::Value {
        let flat = fields
            .iter()
            .flat_map(|(k, v)| [bulk(k), bulk(v)])
            .collect();
        redis::Value::Array(vec![bulk(id), redis::Value::Array(flat)])
    }

    const FULL: &[(&str, &str)] = &[
        ("job_id", "a:b"),
        ("scheduled", "1772600767123456"),
        ("attempt", "2"),
        ("state", "running"),
        ("owner", "o1"),
        ("node", "host-α:42"),
        ("started", "1772600767124690"),
        ("heartbeat", "1772600797123456"),
        ("error", ""),
    ];

    #[test]
    fn runs_are_read_field_by_field() {
        let runs = decode_runs(redis::Value::Array(vec![entry("r1", FULL)])).unwrap();
        let [r] = runs.as_slice() else {
            panic!("{runs:?}")
        };
        assert_eq!(r.id, RunId::new("r1"));
        assert_eq!(r.job_id.as_str(), "a:b");
        assert_eq!(r.scheduled_time.timestamp_micros(), 1_772_600_767_123_456);
        assert_eq!(r.attempt, 2);
        assert_eq!(r.state, RunState::Running);
        assert_eq!(r.owner, Some(OwnerId::new("o1")));
        assert_eq!(r.node.as_deref(), Some("host-α:42"));
        assert_eq!(
            r.started_at.map(|t| t.timestamp_micros()),
            Some(1_772_600_767_124_690)
        );
        assert_eq!(r.finished_at, None);
        assert_eq!(
            r.heartbeat_until.map(|t| t.timestamp_micros()),
            Some(1_772_600_797_123_456)
        );
        assert_eq!(r.error.as_deref(), Some(""));
    }

    #[test]
    fn corrupted_runs_are_skipped() {
        fn with(k: &'static str, v: &'static str) -> Vec<(&'static str, &'static str)> {
            FULL.iter()
                .map(|&(fk, fv)| if fk == k { (fk, v) } else { (fk, fv) })
                .collect()
        }
        let bad = [
            with("state", "done"),
            with("attempt", "-1"),
            with("scheduled", "soon"),
            with("started", "99999999999999999999999"),
            FULL.iter()
                .copied()
                .filter(|(k, _)| *k != "job_id")
                .collect(),
        ];
        let mut items: Vec<redis::Value> = bad
            .iter()
            .enumerate()
            .map(|(i, f)| entry(&format!("bad{i}"), f))
            .collect();
        items.push(redis::Value::Array(vec![
            bulk("bad-utf8"),
            redis::Value::Array(vec![
                bulk("node"),
                redis::Value::BulkString(vec![0xff, 0xfe]),
            ]),
        ]));
        items.push(entry("good", FULL));
        let runs = decode_runs(redis::Value::Array(items)).unwrap();
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["good"]);
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(decode_runs(redis::Value::Int(3)).is_err());
        assert!(decode_runs(redis::Value::Array(vec![bulk("x")])).is_err());
        assert!(decode_runs(redis::Value::Array(vec![])).unwrap().is_empty());
    }

    #[test]
    fn optional_arguments_keep_empty_values() {
        assert_eq!(opt_arg(None), "");
        assert_eq!(opt_arg(Some("")), "=");
        assert_eq!(opt_arg(Some("=x")), "==x");
    }

    #[test]
    fn bad_urls_are_explained_without_passwords() {
        for (url, expected) in [
            (
                "redis://user:s3cret@/bad:port:x",
                "the host name is missing",
            ),
            ("redis://u:s3cret@h:notaport/0", "the port is not a number"),
            ("redis://u:s3cret@h/notadb", "not a database number"),
            ("http://u:s3cret@h/0", "the scheme is \"http\""),
            ("127.0.0.1:6379", "does not start with a scheme"),
            (
                "redis://u:s3cret@h/0?protocol=resp9",
                "Invalid protocol version: resp9",
            ),
        ] {
            let err = RedisJobStore::from_url(url).unwrap_err().to_string();
            assert!(err.starts_with("invalid Redis URL \""), "{url}: {err}");
            assert!(err.contains(expected), "{url}: {err}");
            assert!(!err.contains("s3cret"), "{url}: {err}");
            assert!(!err.contains("InvalidClientConfig"), "{url}: {err}");
        }
        assert!(RedisJobStore::from_url("redis://u:s3cret@h:6380/2").is_ok());
        assert!(RedisJobStore::from_url("redis+unix:///tmp/redis.sock").is_ok());
    }

    #[test]
    fn bad_urls_are_configuration_errors() {
        let err = sundial_core::Error::from(RedisJobStore::from_url("redis://h/x").unwrap_err());
        assert!(matches!(err, sundial_core::Error::Config(_)), "{err}");
        let err = sundial_core::Error::from(Error::NotStarted);
        assert!(
            matches!(
                err,
                sundial_core::Error::Store {
                    store: "redis",
                    temporary: false,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn scan_patterns_escape_globs() {
        assert_eq!(glob_escape("{a*b?[c]\\}:"), "{a\\*b\\?\\[c\\]\\\\}:");
    }
}
