//! This scheduler's entry in each store's node registry: registered at start
//! (refused when a live scheduler holds the same owner id), renewed with the
//! run heartbeats together with the measured clock offset to the store, and
//! removed at shutdown.

use chrono::{DateTime, Utc};

use super::{lock, Inner};
use crate::error::{Error, Result};
use crate::node::{clock_offset, NodeRecord};
use crate::store::JobStore;

/// Clock offsets to a store above this are warned about.
const OFFSET_WARN_MS: i64 = 1000;

/// Clock offsets to a store at least this large are corrected for: due
/// times, leases and heartbeats are then compared in the store's time.
/// Smaller ones are the measurement's own noise on synchronised clocks.
const OFFSET_CORRECT_MS: i64 = 100;

/// Registrations that lapsed longer ago than this are pruned.
const NODE_RETENTION: chrono::Duration = chrono::Duration::hours(24);

impl Inner {
    /// Registers this scheduler in every store. A live registration of
    /// another scheduler under the same owner id refuses the start (and the
    /// registrations made so far are withdrawn).
    pub(crate) async fn register_node(&self) -> Result<()> {
        let mut me = NodeRecord::new(self.owner.clone(), self.clock.now(), self.config.lease);
        // Kept across restarts of this scheduler: a registration its last run
        // failed to remove is its own.
        me.instance.clone_from(&self.instance);
        *lock(&self.node) = Some(me);
        for (alias, store) in self.stores() {
            let mut held = self.write_node(&alias, store.as_ref()).await;
            if let Ok(Some(other)) = &held {
                if left_by_a_dead_process(other) {
                    tracing::info!(jobstore = %alias, owner = %self.owner, pid = other.pid, "taking over the registration of a process of this host that is gone");
                    held = match store.remove_node(&other.owner, &other.instance).await {
                        Ok(()) => self.write_node(&alias, store.as_ref()).await,
                        Err(e) => Err(e),
                    };
                }
            }
            let err = match held {
                Ok(None) => continue,
                Ok(Some(other)) => Error::DuplicateOwner {
                    owner: self.owner.to_string(),
                    jobstore: alias,
                    host: other.host,
                    pid: other.pid,
                    expires_at: other.expires_at,
                },
                Err(e) => e,
            };
            self.deregister_node().await;
            return Err(err);
        }
        Ok(())
    }

    /// Writes this node's record to `store`, renewed at the store's time with
    /// the clock offset measured just before; returns another instance's live
    /// registration of the same owner id instead, if there is one.
    async fn write_node(&self, alias: &str, store: &dyn JobStore) -> Result<Option<NodeRecord>> {
        let offset = self.measure_offset(alias, store).await;
        let now = self.store_now(alias);
        let running = lock(&self.active).values().map(|s| s.len() as u64).sum();
        let Some(mut rec) = lock(&self.node).clone() else {
            return Ok(None);
        };
        rec.renew(now, self.config.lease);
        rec.clock_offset_ms = offset;
        rec.running = running;
        store.upsert_node(&rec, now).await
    }

    /// This process's clock minus the store server's, in milliseconds; warns
    /// when it exceeds a second (due times and heartbeats are compared across
    /// processes' clocks).
    async fn measure_offset(&self, alias: &str, store: &dyn JobStore) -> Option<i64> {
        if !self.clock.is_real_time() {
            return None;
        }
        let before = self.clock.now();
        let server = match store.server_time().await {
            Ok(Some(t)) => t,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(jobstore = %alias, error = %e, "cannot read the store's clock");
                return None;
            }
        };
        let after = self.clock.now();
        let offset = clock_offset(before, server, after);
        let ms = offset.num_milliseconds();
        // A slow round trip leaves the server's time uncertain by half of it:
        // such a measurement is shown but not used for correcting.
        if (after - before).num_milliseconds() <= OFFSET_CORRECT_MS {
            let mut offsets = lock(&self.offsets);
            if ms.abs() >= OFFSET_CORRECT_MS {
                offsets.insert(alias.to_string(), offset);
            } else if ms.abs() < OFFSET_CORRECT_MS / 2 {
                // Between the two bounds the correction stays as it was, so
                // that it does not flip on and off around one value.
                offsets.remove(alias);
            }
        }
        let mut warned = lock(&self.offset_warned);
        if ms.abs() > OFFSET_WARN_MS {
            if warned.insert(alias.to_string()) {
                tracing::warn!(jobstore = %alias, offset_ms = ms, "this process's clock is more than a second off the store server's; keep clocks synchronised (NTP): the scheduler corrects for the offset it measures, but time-based triggers added here start from this clock");
            }
        } else if warned.remove(alias) {
            tracing::info!(jobstore = %alias, offset_ms = ms, "clock back within a second of the store server's");
        }
        Some(ms)
    }

    /// The current time in `alias`'s clock: this scheduler's clock corrected
    /// by the offset last measured to the store's server, when that offset
    /// is large enough to matter.
    pub(crate) fn store_now(&self, alias: &str) -> DateTime<Utc> {
        self.to_store(alias, self.clock.now())
    }

    /// The offset corrected for on `alias` (zero when none is).
    fn offset(&self, alias: &str) -> chrono::Duration {
        lock(&self.offsets).get(alias).copied().unwrap_or_default()
    }

    /// A time in this scheduler's clock converted to `alias`'s clock.
    pub(crate) fn to_store(&self, alias: &str, t: DateTime<Utc>) -> DateTime<Utc> {
        t.checked_sub_signed(self.offset(alias)).unwrap_or(t)
    }

    /// A time in `alias`'s clock converted to this scheduler's clock.
    pub(crate) fn to_local(&self, alias: &str, t: DateTime<Utc>) -> DateTime<Utc> {
        t.checked_add_signed(self.offset(alias)).unwrap_or(t)
    }

    /// Renews this node's registration in every store.
    pub(crate) async fn heartbeat_node(&self) {
        if lock(&self.node).is_none() {
            return;
        }
        for (alias, store) in self.stores() {
            match self.write_node(&alias, store.as_ref()).await {
                Ok(None) => {}
                Ok(Some(other)) => {
                    tracing::error!(jobstore = %alias, owner = %self.owner, other_host = %other.host, other_pid = other.pid, "another live scheduler registered this owner id after this one's registration lapsed (was this process frozen?); leases and runs of the two cannot be told apart: give each scheduler its own owner id");
                }
                Err(e) => {
                    tracing::warn!(jobstore = %alias, error = %e, "cannot renew this node's registration");
                }
            }
        }
    }

    /// Withdraws this node's registration from every store.
    pub(crate) async fn deregister_node(&self) {
        let Some(rec) = lock(&self.node).take() else {
            return;
        };
        for (alias, store) in self.stores() {
            if let Err(e) = store.remove_node(&rec.owner, &rec.instance).await {
                tracing::warn!(jobstore = %alias, error = %e, "cannot remove this node's registration; it lapses on its own");
            }
        }
    }

    /// Deletes registrations that lapsed a day ago or more.
    pub(crate) async fn prune_nodes(&self, now: DateTime<Utc>) {
        let before = now - NODE_RETENTION;
        for (alias, store) in self.stores() {
            if let Err(e) = store.prune_nodes(before).await {
                tracing::warn!(jobstore = %alias, error = %e, "cannot prune lapsed node registrations");
            }
        }
    }

    /// The nodes registered in every store, one entry per scheduler instance
    /// (the most recently renewed where several stores list it).
    pub(crate) async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        let mut out: Vec<NodeRecord> = Vec::new();
        for (alias, store) in self.stores() {
            // Stores that no other process reads are not renewed by the
            // heartbeat: bring this node's record up to date first.
            if !store.capabilities().shared {
                let _ = self.write_node(&alias, store.as_ref()).await;
            }
            for n in store.list_nodes().await? {
                match out
                    .iter_mut()
                    .find(|o| o.owner == n.owner && o.instance == n.instance)
                {
                    Some(o) if o.heartbeat_at < n.heartbeat_at => *o = n,
                    Some(_) => {}
                    None => out.push(n),
                }
            }
        }
        out.sort_by(|a, b| a.owner.as_str().cmp(b.owner.as_str()));
        Ok(out)
    }
}

/// Whether a registration was left by a process of this host that no longer
/// runs (killed, crashed), so that its owner id can be taken over at once rather than
/// after the registration lapses. Only on systems with `/proc`; elsewhere a
/// registration is assumed live until it lapses.
fn left_by_a_dead_process(node: &NodeRecord) -> bool {
    let (host, pid) = crate::run::host_and_pid();
    node.host == host
        && node.pid != pid
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{}", node.pid)).exists()
}
