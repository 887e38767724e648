//! The node registry: the scheduler processes that run jobs from a store.
//!
//! Each running scheduler registers itself in every store it uses and renews
//! the registration with its run heartbeats. The registry makes lease owner ids
//! unique (a second live scheduler with the same id is refused at start) and
//! lets operators see which processes share a store, how recently each was
//! heard from and how far its clock is from the store's.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::{add_saturating, trunc_micros, OwnerId};

/// One scheduler process as registered in a job store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeRecord {
    /// The scheduler's lease owner id, unique among the store's live nodes.
    pub owner: OwnerId,
    /// Random per start: tells a live registration from a restart's.
    pub instance: String,
    /// Host name of the process.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Sundial version of the process.
    pub version: String,
    /// When the scheduler started (its clock).
    pub started_at: DateTime<Utc>,
    /// When the node last renewed its registration (its clock).
    pub heartbeat_at: DateTime<Utc>,
    /// When the registration lapses unless renewed (its clock).
    pub expires_at: DateTime<Utc>,
    /// The node's clock minus the store server's, in milliseconds, as last
    /// measured; `None` when the store has no clock of its own.
    pub clock_offset_ms: Option<i64>,
    /// Runs executing on the node at its last heartbeat.
    pub running: u64,
}

impl NodeRecord {
    /// A registration of this process for `owner`, started at `now`, valid for `ttl`.
    pub fn new(owner: OwnerId, now: DateTime<Utc>, ttl: Duration) -> Self {
        let now = trunc_micros(now);
        let (host, pid) = crate::run::host_and_pid();
        NodeRecord {
            owner,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            host: host.to_string(),
            pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: now,
            heartbeat_at: now,
            expires_at: add_saturating(now, ttl),
            clock_offset_ms: None,
            running: 0,
        }
    }

    /// The JSON a store keeps.
    ///
    /// # Errors
    /// [`Error::Serialization`](crate::Error::Serialization) (not expected for this plain struct).
    pub fn to_stored(&self) -> crate::Result<String> {
        serde_json::to_string(self).map_err(|e| crate::Error::serialization("node record", e))
    }

    /// A record from the JSON a store kept; an unreadable one is `None`, with a warning.
    pub fn from_stored(json: &str) -> Option<NodeRecord> {
        match serde_json::from_str(json) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable node registration skipped");
                None
            }
        }
    }

    /// Renews the registration at `now` for `ttl`.
    pub fn renew(&mut self, now: DateTime<Utc>, ttl: Duration) {
        self.heartbeat_at = trunc_micros(now);
        self.expires_at = add_saturating(self.heartbeat_at, ttl);
    }

    /// Whether the registration is still live at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
    }

    /// Whether `other` may replace this stored registration at `now`: it is
    /// the same instance, or this one lapsed.
    pub fn yields_to(&self, other: &NodeRecord, now: DateTime<Utc>) -> bool {
        self.instance == other.instance || !self.is_live(now)
    }
}

/// The clock offset of this process to a store, from one round trip: the
/// local midpoint of the request minus the server's time.
pub fn clock_offset(
    before: DateTime<Utc>,
    server: DateTime<Utc>,
    after: DateTime<Utc>,
) -> chrono::Duration {
    let mid = before + (after - before) / 2;
    mid - server
}
