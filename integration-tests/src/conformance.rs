//! The `JobStore` conformance suite: each case checks one rule of the
//! contract documented on [`sundial::store::JobStore`], through the public trait
//! only, so every store runs exactly the same checks.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use sundial::job::{
    JobContent, JobData, JobId, JobOptions, JobRecord, OwnerId, Release, ReleaseOutcome,
};
use sundial::run::{
    NewRun, RunFinish, RunId, RunInsert, RunQuery, RunRecord, RunState, INTERRUPTED_ERROR,
};
use sundial::store::{JobCounts, JobStore, ReleaseItem};
use sundial::Error;

use crate::support::{Namespace, StoreFactory};

/// What a case gets: the store under test and the means to open a second handle.
#[allow(missing_debug_implementations)]
pub struct Ctx {
    /// The factory that opened `store`.
    pub factory: Arc<dyn StoreFactory>,
    /// This case's namespace.
    pub ns: Namespace,
    /// A started handle.
    pub store: Arc<dyn JobStore>,
}

impl Ctx {
    /// Another independent handle on the same data (another "process").
    pub async fn another_handle(&self) -> Result<Arc<dyn JobStore>> {
        self.factory.open(&self.ns).await
    }
}

/// A case's body.
pub type CaseFn = for<'a> fn(&'a Ctx) -> BoxFuture<'a, Result<()>>;

/// One named case.
#[allow(missing_debug_implementations)]
pub struct Case {
    /// The case name (the contract rule it checks).
    pub name: &'static str,
    /// The check.
    pub run: CaseFn,
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        vec![$(Case { name: stringify!($name), run: |cx: &Ctx| -> BoxFuture<'_, Result<()>> { Box::pin($name(cx)) } }),*]
    };
}

/// Every case, in a fixed order.
pub fn cases() -> Vec<Case> {
    cases![
        add_and_lookup_round_trip_every_field,
        add_conflicting_id_fails,
        add_jobs_is_all_or_nothing,
        update_replaces_content_keeps_lease_and_bumps_version,
        update_or_remove_missing_job_fails,
        remove_and_remove_all,
        get_all_sorted_paused_last_ties_by_id,
        next_run_time_ignores_paused_and_is_none_when_empty,
        count_jobs_counts_scheduled_and_paused,
        next_run_time_waits_for_lease_expiry,
        times_keep_microseconds_far_future_and_epoch,
        acquire_only_due_unleased_in_order_with_limit,
        claims_and_next_run_time_pass_over_skipped_jobs,
        paused_jobs_are_never_acquired,
        acquire_is_exclusive_across_handles,
        expired_lease_is_reacquirable,
        release_by_wrong_owner_is_rejected,
        release_reschedule_clears_lease_and_sets_next_run,
        release_remove_and_unclaim,
        release_after_modification_is_superseded,
        release_of_removed_job_is_gone,
        release_many_matches_release_item_by_item,
        payload_round_trips_opaque,
        every_trigger_type_and_option_round_trips,
        ten_thousand_jobs_drain_in_batches,
        insert_runs_once_per_slot_and_attempt,
        concurrent_slot_starts_have_one_winner,
        max_instances_counts_running_runs_store_wide,
        finish_applies_to_own_unfinished_runs,
        lapsed_heartbeats_are_interrupted_once,
        query_runs_filters_orders_and_limits,
        prune_deletes_old_finished_runs_only,
        prune_works_through_long_histories,
        prune_job_runs_keeps_each_jobs_newest,
        upserts_keep_the_stored_schedule,
        client_scheduler_manages_jobs_and_runs_none,
        one_off_slot_in_the_ledger_is_not_run_again,
        change_notices_reach_other_handles,
        update_with_a_stale_version_changes_nothing,
        concurrent_edits_lose_nothing,
        node_registry_refuses_a_live_owner_id_only,
        node_registration_race_has_one_winner,
        server_clock_is_the_stores_own,
        a_live_owner_id_refuses_a_second_scheduler,
        a_scheduler_starts_again_after_shutdown,
        a_skewed_clock_runs_jobs_on_the_stores_time,
    ]
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn base() -> DateTime<Utc> {
    at("2026-01-01T00:00:00Z")
}

fn mins(n: i64) -> DateTime<Utc> {
    base() + chrono::Duration::minutes(n)
}

/// A plain job due at `next`.
pub fn job(id: &str, next: Option<DateTime<Utc>>) -> JobRecord {
    record(
        id,
        "task",
        json!({"type": "interval", "minutes": 1, "start_date": "2026-01-01T00:00:00+00:00"}),
        json!({"n": 1}),
        next,
    )
}

/// A job of `task` with `trigger` and `args`, default options, due at `next`.
pub fn record(
    id: &str,
    task: &str,
    trigger: Value,
    args: Value,
    next: Option<DateTime<Utc>>,
) -> JobRecord {
    let data = JobData {
        task: task.into(),
        trigger,
        args,
        options: JobOptions::default(),
    };
    JobRecord::new(JobId::new(id), JobContent::encode(&data), next)
}

/// Reading and changing a record's content in tests (stores keep it opaque).
pub trait ContentExt {
    /// The decoded content.
    fn data(&self) -> Result<JobData>;
    /// Changes the content.
    fn edit(&mut self, change: impl FnOnce(&mut JobData)) -> Result<()>;
}

impl ContentExt for JobRecord {
    fn data(&self) -> Result<JobData> {
        Ok(self.decode()?)
    }

    fn edit(&mut self, change: impl FnOnce(&mut JobData)) -> Result<()> {
        let mut data = self.decode()?;
        change(&mut data);
        self.content = JobContent::encode(&data);
        Ok(())
    }
}

/// Whether two records are the same job: equal fields and equal decoded
/// content (a store may keep the content in another form, e.g. a document).
fn same_record(a: &JobRecord, b: &JobRecord) -> Result<bool> {
    Ok(a.id == b.id
        && a.next_run_time == b.next_run_time
        && a.lease == b.lease
        && a.version == b.version
        && a.quarantined == b.quarantined
        && a.data()? == b.data()?)
}

const LEASE: Duration = Duration::from_secs(30);

fn owner(name: &str) -> OwnerId {
    OwnerId::new(name)
}

fn ids(records: &[JobRecord]) -> Vec<String> {
    records.iter().map(|r| r.id.to_string()).collect()
}

/// Adding then looking up returns every field as written (version 0, no lease).
pub async fn add_and_lookup_round_trip_every_field(cx: &Ctx) -> Result<()> {
    let mut j = job("a", Some(at("2026-03-04T05:06:07.123456Z")));
    let options = JobOptions {
        name: Some("Nightly ünïcode".into()),
        executor: Some("blocking".into()),
        misfire_grace_time: Some(Duration::from_millis(1500)),
        coalesce: false,
        max_instances: 7,
        timeout: Some(Duration::from_secs(90)),
        retry: Some(
            sundial::job::RetryPolicy::new(4, Duration::from_millis(2500))
                .max_backoff(Duration::from_secs(60))
                .jitter(0.25),
        ),
        on_interrupted: sundial::OnInterrupted::Rerun,
        resume_at: Some(at("2026-03-05T06:07:08.654321Z")),
    };
    j.edit(|d| d.options = options)?;
    cx.store.add_job(&j).await?;
    let got = cx
        .store
        .lookup_job(&j.id)
        .await?
        .context("job missing after add")?;
    ensure!(
        same_record(&got, &j)?,
        "round trip changed the record:\n{got:#?}\nvs\n{j:#?}"
    );
    ensure!(cx.store.lookup_job(&JobId::new("nope")).await?.is_none());
    Ok(())
}

/// Adding a job whose id exists returns `ConflictingId` and changes nothing.
pub async fn add_conflicting_id_fails(cx: &Ctx) -> Result<()> {
    cx.store.add_job(&job("a", Some(mins(1)))).await?;
    let err = cx
        .store
        .add_job(&job("a", Some(mins(2))))
        .await
        .err()
        .context("second add succeeded")?;
    ensure!(
        matches!(&err, Error::ConflictingId { id } if id == "a"),
        "wrong error: {err}"
    );
    let kept = cx
        .store
        .lookup_job(&JobId::new("a"))
        .await?
        .context("job gone")?;
    ensure!(
        kept.next_run_time == Some(mins(1)),
        "the first job was changed"
    );
    Ok(())
}

/// `add_jobs` with a conflicting id (stored, or twice in the batch) inserts none.
pub async fn add_jobs_is_all_or_nothing(cx: &Ctx) -> Result<()> {
    cx.store.add_job(&job("x", Some(mins(1)))).await?;
    let batch: Vec<JobRecord> = ["b1", "b2", "x", "b3"]
        .iter()
        .map(|i| job(i, Some(mins(2))))
        .collect();
    let err = cx
        .store
        .add_jobs(&batch)
        .await
        .err()
        .context("conflicting batch succeeded")?;
    ensure!(
        matches!(&err, Error::ConflictingId { id } if id == "x"),
        "wrong error: {err}"
    );
    let dup: Vec<JobRecord> = ["c1", "c2", "c1"]
        .iter()
        .map(|i| job(i, Some(mins(2))))
        .collect();
    let err = cx
        .store
        .add_jobs(&dup)
        .await
        .err()
        .context("duplicate batch succeeded")?;
    ensure!(
        matches!(&err, Error::ConflictingId { .. }),
        "wrong error: {err}"
    );
    ensure!(
        ids(&cx.store.get_all_jobs().await?) == vec!["x"],
        "a failed batch left rows behind"
    );
    let ok: Vec<JobRecord> = (0..450)
        .map(|i| job(&format!("ok{i:03}"), Some(mins(3))))
        .collect();
    cx.store.add_jobs(&ok).await?;
    ensure!(cx.store.get_all_jobs().await?.len() == 451);
    Ok(())
}

/// `update_job` replaces content and next run time, keeps the lease, bumps the version.
pub async fn update_replaces_content_keeps_lease_and_bumps_version(cx: &Ctx) -> Result<()> {
    cx.store.add_job(&job("u", Some(mins(1)))).await?;
    let claimed = cx
        .store
        .acquire_due(mins(1), &owner("o1"), LEASE, 10, &[])
        .await?;
    ensure!(claimed.len() == 1);
    let mut changed = claimed[0].clone();
    changed.edit(|d| {
        d.task = "other".into();
        d.args = json!(["new"]);
    })?;
    changed.next_run_time = Some(mins(9));
    changed.lease = None;
    cx.store.update_job(&changed).await?;
    let got = cx.store.lookup_job(&changed.id).await?.context("gone")?;
    ensure!(
        got.data()?.task == "other"
            && got.data()?.args == json!(["new"])
            && got.next_run_time == Some(mins(9))
    );
    ensure!(got.lease == claimed[0].lease, "update dropped the lease");
    ensure!(
        got.version == claimed[0].version + 1,
        "version {} after update",
        got.version
    );
    Ok(())
}

/// Updating or removing a missing job returns `JobNotFound`.
pub async fn update_or_remove_missing_job_fails(cx: &Ctx) -> Result<()> {
    let err = cx
        .store
        .update_job(&job("ghost", None))
        .await
        .err()
        .context("update succeeded")?;
    ensure!(
        matches!(&err, Error::JobNotFound { id } if id == "ghost"),
        "{err}"
    );
    let err = cx
        .store
        .remove_job(&JobId::new("ghost"))
        .await
        .err()
        .context("remove succeeded")?;
    ensure!(
        matches!(&err, Error::JobNotFound { id } if id == "ghost"),
        "{err}"
    );
    Ok(())
}

/// `remove_job` deletes one job; `remove_all_jobs` deletes every job.
pub async fn remove_and_remove_all(cx: &Ctx) -> Result<()> {
    for i in 0..5 {
        cx.store
            .add_job(&job(&format!("r{i}"), Some(mins(i))))
            .await?;
    }
    cx.store.remove_job(&JobId::new("r2")).await?;
    ensure!(ids(&cx.store.get_all_jobs().await?) == vec!["r0", "r1", "r3", "r4"]);
    cx.store.remove_all_jobs().await?;
    ensure!(cx.store.get_all_jobs().await?.is_empty());
    ensure!(cx.store.get_next_run_time(&[]).await?.is_none());
    Ok(())
}

/// `get_all_jobs` orders by next run time, paused jobs last, ties by id.
pub async fn get_all_sorted_paused_last_ties_by_id(cx: &Ctx) -> Result<()> {
    for (id, next) in [
        ("p2", None),
        ("c", Some(mins(5))),
        ("b", Some(mins(5))),
        ("p1", None),
        ("a", Some(mins(9))),
        ("z", Some(mins(1))),
    ] {
        cx.store.add_job(&job(id, next)).await?;
    }
    let got = ids(&cx.store.get_all_jobs().await?);
    ensure!(got == vec!["z", "b", "c", "a", "p1", "p2"], "order {got:?}");
    Ok(())
}

/// `get_next_run_time` ignores paused jobs and is `None` when nothing is scheduled.
pub async fn next_run_time_ignores_paused_and_is_none_when_empty(cx: &Ctx) -> Result<()> {
    ensure!(cx.store.get_next_run_time(&[]).await?.is_none());
    cx.store.add_job(&job("paused", None)).await?;
    ensure!(cx.store.get_next_run_time(&[]).await?.is_none());
    cx.store.add_job(&job("later", Some(mins(7)))).await?;
    cx.store.add_job(&job("sooner", Some(mins(3)))).await?;
    ensure!(cx.store.get_next_run_time(&[]).await? == Some(mins(3)));
    Ok(())
}

/// `count_jobs` counts scheduled and paused jobs, leased ones included.
pub async fn count_jobs_counts_scheduled_and_paused(cx: &Ctx) -> Result<()> {
    let counts = |scheduled, paused| JobCounts { scheduled, paused };
    ensure!(cx.store.count_jobs().await? == counts(0, 0));
    cx.store.add_job(&job("paused", None)).await?;
    cx.store
        .add_jobs(&[job("due", Some(mins(0))), job("later", Some(mins(9)))])
        .await?;
    let claimed = cx
        .store
        .acquire_due(mins(1), &owner("o"), Duration::from_secs(60), 10, &[])
        .await?;
    ensure!(claimed.len() == 1, "claimed {}", claimed.len());
    let got = cx.store.count_jobs().await?;
    ensure!(got == counts(2, 1), "{got:?}");
    cx.store.remove_job(&JobId::new("later")).await?;
    let got = cx.store.count_jobs().await?;
    ensure!(got == counts(1, 1), "{got:?}");
    Ok(())
}

/// A leased job counts from its lease expiry in `get_next_run_time`.
pub async fn next_run_time_waits_for_lease_expiry(cx: &Ctx) -> Result<()> {
    cx.store.add_job(&job("l", Some(mins(1)))).await?;
    cx.store.add_job(&job("m", Some(mins(10)))).await?;
    let claimed = cx
        .store
        .acquire_due(mins(2), &owner("o"), Duration::from_secs(120), 1, &[])
        .await?;
    ensure!(ids(&claimed) == vec!["l"]);
    let next = cx.store.get_next_run_time(&[]).await?;
    ensure!(
        next == Some(mins(4)),
        "expected the lease expiry (00:04), got {next:?}"
    );
    Ok(())
}

/// Times round-trip to the microsecond, including the epoch and far-future dates.
pub async fn times_keep_microseconds_far_future_and_epoch(cx: &Ctx) -> Result<()> {
    let times = [
        at("1970-01-01T00:00:00Z"),
        at("2026-07-01T12:34:56.000001Z"),
        at("2026-07-01T12:34:56.999999Z"),
        at("2999-12-31T23:59:59.123456Z"),
    ];
    for (i, t) in times.iter().enumerate() {
        cx.store.add_job(&job(&format!("t{i}"), Some(*t))).await?;
    }
    for (i, t) in times.iter().enumerate() {
        let got = cx
            .store
            .lookup_job(&JobId::new(format!("t{i}")))
            .await?
            .context("gone")?;
        ensure!(
            got.next_run_time == Some(*t),
            "{:?} became {:?}",
            t,
            got.next_run_time
        );
    }
    ensure!(cx.store.get_next_run_time(&[]).await? == Some(times[0]));
    Ok(())
}

/// `acquire_due` returns only due, unleased jobs, in run order, at most `limit`.
pub async fn acquire_only_due_unleased_in_order_with_limit(cx: &Ctx) -> Result<()> {
    for (id, m) in [("d3", 3), ("d1", 1), ("d2b", 2), ("d2a", 2), ("future", 60)] {
        cx.store.add_job(&job(id, Some(mins(m)))).await?;
    }
    let first = cx
        .store
        .acquire_due(mins(5), &owner("o"), LEASE, 2, &[])
        .await?;
    ensure!(
        ids(&first) == vec!["d1", "d2a"],
        "first batch {:?}",
        ids(&first)
    );
    for r in &first {
        let l = r.lease.as_ref().context("no lease on a claimed record")?;
        ensure!(l.owner == owner("o") && l.until == mins(5) + chrono::Duration::seconds(30));
        ensure!(r.version == 1, "version {}", r.version);
    }
    let second = cx
        .store
        .acquire_due(mins(5), &owner("o"), LEASE, 10, &[])
        .await?;
    ensure!(
        ids(&second) == vec!["d2b", "d3"],
        "second batch {:?}",
        ids(&second)
    );
    ensure!(cx
        .store
        .acquire_due(mins(5), &owner("o"), LEASE, 10, &[])
        .await?
        .is_empty());
    let stored = cx
        .store
        .lookup_job(&JobId::new("d1"))
        .await?
        .context("gone")?;
    ensure!(
        stored.lease == first[0].lease && stored.version == 1,
        "claim not stored"
    );
    Ok(())
}

/// Jobs a scheduler passes over are neither claimed by it nor counted in its
/// next run time, while other jobs and other callers are unaffected; the limit
/// counts only the jobs claimed.
pub async fn claims_and_next_run_time_pass_over_skipped_jobs(cx: &Ctx) -> Result<()> {
    for (id, m) in [("s1", 1), ("s2", 2), ("k3", 3), ("k4", 4)] {
        cx.store.add_job(&job(id, Some(mins(m)))).await?;
    }
    let skip = [JobId::new("s1"), JobId::new("s2"), JobId::new("absent")];
    ensure!(cx.store.get_next_run_time(&skip).await? == Some(mins(3)));
    ensure!(cx.store.get_next_run_time(&skip[..1]).await? == Some(mins(2)));
    let got = cx
        .store
        .acquire_due(mins(5), &owner("o"), LEASE, 1, &skip)
        .await?;
    ensure!(ids(&got) == vec!["k3"], "first claim {:?}", ids(&got));
    // The claimed k3 is now counted at its lease's end.
    let lease_end = mins(5) + chrono::Duration::seconds(30);
    ensure!(cx.store.get_next_run_time(&skip).await? == Some(mins(4)));
    let got = cx
        .store
        .acquire_due(mins(5), &owner("o"), LEASE, 10, &skip)
        .await?;
    ensure!(ids(&got) == vec!["k4"], "second claim {:?}", ids(&got));
    ensure!(cx.store.get_next_run_time(&skip).await? == Some(lease_end));
    ensure!(cx
        .store
        .acquire_due(mins(5), &owner("o"), LEASE, 10, &skip)
        .await?
        .is_empty());
    // Without the skip list, the passed-over jobs are claimable as ever.
    let got = cx
        .another_handle()
        .await?
        .acquire_due(mins(5), &owner("p"), LEASE, 10, &[])
        .await?;
    ensure!(ids(&got) == vec!["s1", "s2"], "other claim {:?}", ids(&got));
    Ok(())
}

/// Paused jobs are never acquired.
pub async fn paused_jobs_are_never_acquired(cx: &Ctx) -> Result<()> {
    cx.store.add_job(&job("paused", None)).await?;
    let got = cx
        .store
        .acquire_due(at("2999-01-01T00:00:00Z"), &owner("o"), LEASE, 10, &[])
        .await?;
    ensure!(got.is_empty(), "acquired {:?}", ids(&got));
    Ok(())
}

/// Concurrent `acquire_due` calls on several handles never hand out a job twice.
pub async fn acquire_is_exclusive_across_handles(cx: &Ctx) -> Result<()> {
    let n = 300;
    let batch: Vec<JobRecord> = (0..n)
        .map(|i| job(&format!("j{i:04}"), Some(mins(i % 7))))
        .collect();
    cx.store.add_jobs(&batch).await?;
    let handles = [Arc::clone(&cx.store), cx.another_handle().await?];
    let mut tasks = Vec::new();
    for (h, store) in handles.iter().enumerate() {
        for w in 0..3 {
            let store = Arc::clone(store);
            let me = owner(&format!("h{h}w{w}"));
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store.acquire_due(mins(10), &me, LEASE, 7, &[]).await?;
                    if got.is_empty() {
                        return Ok::<_, Error>(mine);
                    }
                    mine.extend(got.into_iter().map(|r| r.id.to_string()));
                }
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let unique: HashSet<&String> = all.iter().collect();
    ensure!(
        unique.len() == all.len(),
        "{} jobs handed out twice",
        all.len() - unique.len()
    );
    ensure!(
        all.len() == n as usize,
        "{} of {n} jobs acquired",
        all.len()
    );
    Ok(())
}

/// A job whose lease expired can be acquired again, by another owner.
pub async fn expired_lease_is_reacquirable(cx: &Ctx) -> Result<()> {
    cx.store.add_job(&job("e", Some(mins(1)))).await?;
    ensure!(
        cx.store
            .acquire_due(mins(1), &owner("a"), LEASE, 10, &[])
            .await?
            .len()
            == 1
    );
    ensure!(cx
        .store
        .acquire_due(
            mins(1) + chrono::Duration::seconds(29),
            &owner("b"),
            LEASE,
            10,
            &[]
        )
        .await?
        .is_empty());
    let later = mins(1) + chrono::Duration::seconds(30);
    let got = cx
        .another_handle()
        .await?
        .acquire_due(later, &owner("b"), LEASE, 10, &[])
        .await?;
    ensure!(ids(&got) == vec!["e"], "expired lease not re-acquired");
    ensure!(got[0].lease.as_ref().map(|l| l.owner.clone()) == Some(owner("b")));
    ensure!(got[0].version == 2);
    Ok(())
}

/// `release` by an owner that does not hold the lease fails with `LeaseLost` and changes nothing.
pub async fn release_by_wrong_owner_is_rejected(cx: &Ctx) -> Result<()> {
    cx.store.add_job(&job("w", Some(mins(1)))).await?;
    let a = cx
        .store
        .acquire_due(mins(1), &owner("a"), LEASE, 10, &[])
        .await?;
    // a's lease expires and b claims the job: a is now a stale owner.
    let b = cx
        .store
        .acquire_due(mins(2), &owner("b"), LEASE, 10, &[])
        .await?;
    ensure!(ids(&b) == vec!["w"]);
    let err = cx
        .store
        .release(
            &owner("a"),
            &a[0].id,
            a[0].version,
            Release::Reschedule {
                next_run_time: Some(mins(50)),
            },
        )
        .await
        .err()
        .context("stale release succeeded")?;
    ensure!(
        matches!(&err, Error::LeaseLost { id } if id == "w"),
        "{err}"
    );
    let got = cx
        .store
        .lookup_job(&JobId::new("w"))
        .await?
        .context("gone")?;
    ensure!(
        got.next_run_time == Some(mins(1)) && got.lease == b[0].lease,
        "stale owner changed the job"
    );
    Ok(())
}

/// `Reschedule` sets the next run time, clears the lease and bumps the version.
pub async fn release_reschedule_clears_lease_and_sets_next_run(cx: &Ctx) -> Result<()> {
    cx.store.add_job(&job("r", Some(mins(1)))).await?;
    let c = cx
        .store
        .acquire_due(mins(1), &owner("o"), LEASE, 10, &[])
        .await?;
    let out = cx
        .store
        .release(
            &owner("o"),
            &c[0].id,
            c[0].version,
            Release::Reschedule {
                next_run_time: Some(mins(2)),
            },
        )
        .await?;
    ensure!(out == ReleaseOutcome::Applied, "{out:?}");
    let got = cx
        .store
        .lookup_job(&JobId::new("r"))
        .await?
        .context("gone")?;
    ensure!(
        got.next_run_time == Some(mins(2))
            && got.lease.is_none()
            && got.version == c[0].version + 1
    );
    ensure!(cx.store.get_next_run_time(&[]).await? == Some(mins(2)));
    ensure!(
        ids(&cx
            .store
            .acquire_due(mins(2), &owner("o"), LEASE, 10, &[])
            .await?)
            == vec!["r"]
    );
    Ok(())
}

/// `Remove` deletes the job; `Unclaim` returns it unchanged and claimable.
pub async fn release_remove_and_unclaim(cx: &Ctx) -> Result<()> {
    cx.store.add_job(&job("rm", Some(mins(1)))).await?;
    cx.store.add_job(&job("un", Some(mins(1)))).await?;
    let c = cx
        .store
        .acquire_due(mins(1), &owner("o"), LEASE, 10, &[])
        .await?;
    ensure!(ids(&c) == vec!["rm", "un"]);
    ensure!(
        cx.store
            .release(&owner("o"), &c[0].id, c[0].version, Release::Remove)
            .await?
            == ReleaseOutcome::Applied
    );
    ensure!(
        cx.store
            .release(&owner("o"), &c[1].id, c[1].version, Release::Unclaim)
            .await?
            == ReleaseOutcome::Applied
    );
    ensure!(
        cx.store.lookup_job(&JobId::new("rm")).await?.is_none(),
        "removed job still there"
    );
    let un = cx
        .store
        .lookup_job(&JobId::new("un"))
        .await?
        .context("gone")?;
    ensure!(un.next_run_time == Some(mins(1)) && un.lease.is_none());
    ensure!(
        ids(&cx
            .store
            .acquire_due(mins(1), &owner("p"), LEASE, 10, &[])
            .await?)
            == vec!["un"]
    );
    Ok(())
}

/// A job updated while claimed is `Superseded` on release: the update wins, the lease is dropped.
pub async fn release_after_modification_is_superseded(cx: &Ctx) -> Result<()> {
    cx.store.add_job(&job("s", Some(mins(1)))).await?;
    let c = cx
        .store
        .acquire_due(mins(1), &owner("o"), LEASE, 10, &[])
        .await?;
    let mut modified = c[0].clone();
    modified.next_run_time = Some(mins(30));
    cx.another_handle().await?.update_job(&modified).await?;
    let out = cx
        .store
        .release(
            &owner("o"),
            &c[0].id,
            c[0].version,
            Release::Reschedule {
                next_run_time: Some(mins(2)),
            },
        )
        .await?;
    ensure!(out == ReleaseOutcome::Superseded, "{out:?}");
    let got = cx
        .store
        .lookup_job(&JobId::new("s"))
        .await?
        .context("gone")?;
    ensure!(
        got.next_run_time == Some(mins(30)) && got.lease.is_none(),
        "{got:?}"
    );
    Ok(())
}

/// Releasing a job removed while claimed reports `Gone`.
pub async fn release_of_removed_job_is_gone(cx: &Ctx) -> Result<()> {
    cx.store.add_job(&job("g", Some(mins(1)))).await?;
    let c = cx
        .store
        .acquire_due(mins(1), &owner("o"), LEASE, 10, &[])
        .await?;
    cx.store.remove_job(&JobId::new("g")).await?;
    let out = cx
        .store
        .release(&owner("o"), &c[0].id, c[0].version, Release::Remove)
        .await?;
    ensure!(out == ReleaseOutcome::Gone, "{out:?}");
    Ok(())
}

/// `release_many` gives, per item, what `release` would: applied, superseded, lost, gone.
pub async fn release_many_matches_release_item_by_item(cx: &Ctx) -> Result<()> {
    let n = 320; // more than one bulk chunk
    let batch: Vec<JobRecord> = (0..n)
        .map(|i| job(&format!("m{i:03}"), Some(mins(1))))
        .collect();
    cx.store.add_jobs(&batch).await?;
    let me = owner("me");
    let claimed = cx.store.acquire_due(mins(1), &me, LEASE, n, &[]).await?;
    ensure!(claimed.len() == n);
    // m000: modified while claimed; m001: removed; m002: taken over by another owner.
    let mut modified = claimed[0].clone();
    modified.next_run_time = Some(mins(40));
    cx.store.update_job(&modified).await?;
    cx.store.remove_job(&claimed[1].id).await?;
    let other = cx.another_handle().await?;
    let mut stolen = claimed[2].clone();
    stolen.next_run_time = Some(mins(1));
    other.update_job(&stolen).await?;
    let items: Vec<ReleaseItem> = claimed
        .iter()
        .enumerate()
        .map(|(i, r)| ReleaseItem {
            id: r.id.clone(),
            version: r.version,
            outcome: match i % 3 {
                0 => Release::Reschedule {
                    next_run_time: Some(mins(2)),
                },
                1 => Release::Remove,
                _ => Release::Unclaim,
            },
        })
        .collect();
    let results = cx.store.release_many(&me, items).await?;
    ensure!(results.len() == n);
    ensure!(
        matches!(results[0], Ok(ReleaseOutcome::Superseded)),
        "{:?}",
        results[0]
    );
    ensure!(
        matches!(
            results[1],
            Ok(ReleaseOutcome::Gone) | Ok(ReleaseOutcome::Applied)
        ),
        "{:?}",
        results[1]
    );
    ensure!(
        matches!(results[2], Ok(ReleaseOutcome::Superseded)),
        "{:?}",
        results[2]
    );
    for (i, r) in results.iter().enumerate().skip(3) {
        ensure!(matches!(r, Ok(ReleaseOutcome::Applied)), "item {i}: {r:?}");
    }
    let all = cx.store.get_all_jobs().await?;
    let removed = (3..n).filter(|i| i % 3 == 1).count();
    ensure!(all.len() == n - 1 - removed, "{} jobs left", all.len());
    for r in &all {
        ensure!(r.lease.is_none(), "{} still leased", r.id);
        let i: usize = r.id.as_str()[1..].parse()?;
        let want = match i {
            0 => mins(40),
            _ if i.is_multiple_of(3) => mins(2),
            _ => mins(1),
        };
        ensure!(
            r.next_run_time == Some(want),
            "{}: {:?}",
            r.id,
            r.next_run_time
        );
    }
    // A stale owner's batch is rejected item by item.
    let again = cx
        .store
        .acquire_due(mins(5), &owner("new"), LEASE, 1, &[])
        .await?;
    let stale = cx
        .store
        .release_many(
            &me,
            vec![ReleaseItem {
                id: again[0].id.clone(),
                version: again[0].version,
                outcome: Release::Remove,
            }],
        )
        .await?;
    ensure!(
        matches!(&stale[0], Err(Error::LeaseLost { .. })),
        "{:?}",
        stale[0]
    );
    Ok(())
}

/// Trigger and args JSON round-trip unchanged: unicode, nesting, about 1 MB,
/// maps shaped like MongoDB extended JSON.
pub async fn payload_round_trips_opaque(cx: &Ctx) -> Result<()> {
    let big: String = "x".repeat(1_000_000);
    let mut j = job("payload", Some(mins(1)));
    let args = json!({
        "text": "héllo wörld ✓ 日本語 \u{1F600} \"quotes\" \\ back",
        "nested": {"a": [1, 2.5, null, true, {"b": []}]},
        "big": big,
        "n": i64::MAX,
        // Shaped like MongoDB extended JSON: arguments, not BSON values.
        "long": {"$numberLong": "5"},
        "date": {"$date": "2026-01-01T00:00:00.123456Z"},
        "oid": {"$oid": "0123456789abcdef01234567"},
    });
    j.edit(|d| {
        d.args = args;
        d.trigger = json!({"type": "custom_thing", "payload": {"deep": [[["x"]]]}});
    })?;
    cx.store.add_job(&j).await?;
    let got = cx.store.lookup_job(&j.id).await?.context("gone")?;
    ensure!(got.data()? == j.data()?, "payload changed");
    Ok(())
}

/// Every built-in trigger type and every option value survives the store.
pub async fn every_trigger_type_and_option_round_trips(cx: &Ctx) -> Result<()> {
    let triggers: Vec<Value> = vec![
        json!({"type": "date", "run_date": "2026-03-01T09:00:00+08:00", "timezone": "Asia/Shanghai"}),
        json!({"type": "interval", "hours": 2, "start_date": "2026-01-01T00:00:00+00:00", "jitter": 5}),
        json!({"type": "cron", "crontab": "0 9 * * 1-5", "timezone": "Asia/Shanghai"}),
        json!({"type": "cron", "day": "last fri", "hour": "18", "end_date": "2027-01-01T00:00:00+00:00"}),
        json!({"type": "calendar_interval", "months": 1, "hour": 9, "minute": 0, "second": 0, "start_date": "2026-01-31"}),
        json!({"type": "and", "triggers": [{"type": "cron", "crontab": "0 12 * * *"}, {"type": "cron", "crontab": "0 * 13 * *"}]}),
        json!({"type": "or", "triggers": [{"type": "cron", "hour": "1"}], "jitter": 3}),
    ];
    for (i, trig) in triggers.iter().enumerate() {
        sundial::trigger::trigger_from_json(trig).with_context(|| format!("fixture {trig}"))?;
        let mut j = job(&format!("trig{i}"), Some(mins(i as i64)));
        let options = JobOptions {
            name: (i % 2 == 0).then(|| format!("name {i}")),
            executor: (i % 3 == 0).then(|| "blocking".to_string()),
            misfire_grace_time: (i % 2 == 1).then(|| Duration::from_secs(i as u64)),
            coalesce: i % 2 == 0,
            max_instances: i as u32 + 1,
            timeout: (i % 3 == 1).then(|| Duration::from_millis(250)),
            retry: (i % 4 == 0)
                .then(|| sundial::job::RetryPolicy::new(i as u32 + 2, Duration::from_secs(1))),
            on_interrupted: if i % 2 == 0 {
                sundial::OnInterrupted::Skip
            } else {
                sundial::OnInterrupted::Rerun
            },
            resume_at: (i % 5 == 2).then(|| mins(i as i64 + 60)),
        };
        j.edit(|d| {
            d.trigger = trig.clone();
            d.options = options;
        })?;
        cx.store.add_job(&j).await?;
        let got = cx.store.lookup_job(&j.id).await?.context("gone")?;
        ensure!(same_record(&got, &j)?, "changed:\n{got:#?}\nvs\n{j:#?}");
    }
    Ok(())
}

/// 10,000 jobs drain in batches with none lost and none duplicated.
pub async fn ten_thousand_jobs_drain_in_batches(cx: &Ctx) -> Result<()> {
    let n = 10_000;
    let batch: Vec<JobRecord> = (0..n)
        .map(|i| job(&format!("s{i:05}"), Some(mins(i % 60))))
        .collect();
    cx.store.add_jobs(&batch).await?;
    let mut seen = HashSet::new();
    let me = owner("drain");
    loop {
        let got = cx.store.acquire_due(mins(60), &me, LEASE, 500, &[]).await?;
        if got.is_empty() {
            break;
        }
        ensure!(got.len() <= 500);
        let mut items = Vec::with_capacity(got.len());
        for r in got {
            ensure!(seen.insert(r.id.to_string()), "{} handed out twice", r.id);
            items.push(ReleaseItem {
                id: r.id,
                version: r.version,
                outcome: Release::Remove,
            });
        }
        for result in cx.store.release_many(&me, items).await? {
            ensure!(matches!(result, Ok(ReleaseOutcome::Applied)), "{result:?}");
        }
    }
    ensure!(seen.len() == n as usize, "{} of {n} drained", seen.len());
    ensure!(cx.store.get_all_jobs().await?.is_empty());
    Ok(())
}

// ---- run ledger ----

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// A `running` record for job `job` at slot `slot`, attempt `attempt`, held by `who`.
/// Per-job pruning deletes a job's finished runs past its newest ones, only
/// those scheduled before the limit, never running ones, and frees their
/// slots; jobs with few runs keep them all.
pub async fn prune_job_runs_keeps_each_jobs_newest(cx: &Ctx) -> Result<()> {
    let mut busy: Vec<RunRecord> = (0..10).map(|m| running("busy", mins(m), 1, "o")).collect();
    busy.push(running("busy", mins(3), 2, "o"));
    let still_running = running("busy", mins(-5), 1, "o");
    let quiet: Vec<RunRecord> = (0..2).map(|m| running("quiet", mins(m), 1, "o")).collect();
    let all: Vec<NewRun> = busy
        .iter()
        .chain(&quiet)
        .chain([&still_running])
        .map(|r| new_run(r.clone(), None))
        .collect();
    cx.store.insert_runs(&all).await?;
    let done: Vec<RunFinish> = busy
        .iter()
        .chain(&quiet)
        .map(|r| RunFinish {
            id: r.id.clone(),
            state: RunState::Succeeded,
            finished_at: mins(20),
            error: None,
        })
        .collect();
    cx.store.finish_runs(&owner("o"), &done).await?;
    // Keep 2 per job: busy's 09:00 and 08:00 runs; 07:00 and 06:00 are past
    // the two but not before the limit; the running one is never deleted.
    let n = cx.store.prune_job_runs(2, mins(6)).await?;
    ensure!(n == 7, "pruned {n}, expected 7");
    let left: Vec<(DateTime<Utc>, RunState)> = cx
        .store
        .query_runs(&RunQuery::job("busy"))
        .await?
        .iter()
        .map(|r| (r.scheduled_time, r.state))
        .collect();
    let expected: Vec<(DateTime<Utc>, RunState)> = [9, 8, 7, 6]
        .into_iter()
        .map(|m| (mins(m), RunState::Succeeded))
        .chain([(mins(-5), RunState::Running)])
        .collect();
    ensure!(left == expected, "left {left:?}");
    let quiet_left = cx.store.query_runs(&RunQuery::job("quiet")).await?.len();
    ensure!(quiet_left == 2, "quiet kept {quiet_left}");
    let again = running("busy", mins(0), 1, "o");
    let got = cx.store.insert_runs(&[new_run(again, None)]).await?;
    ensure!(
        got == vec![RunInsert::Inserted(RunState::Running)],
        "slot not freed: {got:?}"
    );
    ensure!(
        cx.store.prune_job_runs(2, mins(6)).await? == 0,
        "a second pass pruned more"
    );
    Ok(())
}

fn running(job: &str, slot: DateTime<Utc>, attempt: u32, who: &str) -> RunRecord {
    RunRecord::running(
        JobId::new(job),
        slot,
        attempt,
        owner(who),
        slot + chrono::Duration::microseconds(1_234),
        slot + secs(30),
    )
}

fn new_run(record: RunRecord, max_instances: Option<u32>) -> NewRun {
    NewRun {
        record,
        max_instances,
    }
}

async fn run_by_id(store: &dyn JobStore, id: &RunId) -> Result<RunRecord> {
    let all = store
        .query_runs(&RunQuery::default().limit(100_000))
        .await?;
    all.into_iter()
        .find(|r| r.id == *id)
        .with_context(|| format!("run {id} not found"))
}

/// Inserting a run records it with every field as given; a second run for the same
/// job, slot and attempt is a duplicate and changes nothing; another attempt is a new run.
pub async fn insert_runs_once_per_slot_and_attempt(cx: &Ctx) -> Result<()> {
    let slot = at("2026-03-04T05:06:07.123456Z");
    let mut first = running("a", slot, 1, "o1");
    first.node = Some("host-α:42".into());
    let got = cx
        .store
        .insert_runs(&[new_run(first.clone(), Some(1))])
        .await?;
    ensure!(
        got == vec![RunInsert::Inserted(RunState::Running)],
        "{got:?}"
    );
    let stored = run_by_id(cx.store.as_ref(), &first.id).await?;
    ensure!(stored == first, "stored {stored:?}\n  wrote {first:?}");

    let again = running("a", slot, 1, "o2");
    let retry = running("a", slot, 2, "o2");
    let other_job = running("b", slot, 1, "o2");
    let got = cx
        .store
        .insert_runs(&[
            new_run(again.clone(), None),
            new_run(retry.clone(), None),
            new_run(other_job, None),
        ])
        .await?;
    ensure!(
        got == vec![
            RunInsert::Duplicate,
            RunInsert::Inserted(RunState::Running),
            RunInsert::Inserted(RunState::Running)
        ],
        "{got:?}"
    );
    ensure!(
        run_by_id(cx.store.as_ref(), &again.id).await.is_err(),
        "a duplicate was stored"
    );
    let stored = run_by_id(cx.store.as_ref(), &first.id).await?;
    ensure!(
        stored.owner == Some(owner("o1")),
        "first run changed: {stored:?}"
    );

    // Terminal records (missed) obey the same key.
    let missed = RunRecord::terminal(
        JobId::new("c"),
        slot,
        1,
        RunState::Missed,
        owner("o1"),
        slot + secs(5),
        None,
    );
    let got = cx
        .store
        .insert_runs(&[new_run(missed.clone(), None), new_run(missed.clone(), None)])
        .await?;
    ensure!(
        got == vec![RunInsert::Inserted(RunState::Missed), RunInsert::Duplicate],
        "{got:?}"
    );
    ensure!(run_by_id(cx.store.as_ref(), &missed.id).await? == missed);
    Ok(())
}

/// Many callers on several handles racing to start the same slots: each slot is
/// started exactly once.
pub async fn concurrent_slot_starts_have_one_winner(cx: &Ctx) -> Result<()> {
    let slots: Vec<DateTime<Utc>> = (0..40).map(mins).collect();
    let handles = [Arc::clone(&cx.store), cx.another_handle().await?];
    let mut tasks = Vec::new();
    for (h, store) in handles.iter().enumerate() {
        for w in 0..3 {
            let store = Arc::clone(store);
            let slots = slots.clone();
            let me = format!("h{h}w{w}");
            tasks.push(tokio::spawn(async move {
                let mut won = Vec::new();
                // Small batches in different orders, so callers interleave.
                let mut order = slots.clone();
                if w % 2 == 1 {
                    order.reverse();
                }
                for chunk in order.chunks(5) {
                    let batch: Vec<NewRun> = chunk
                        .iter()
                        .map(|t| new_run(running("race", *t, 1, &me), None))
                        .collect();
                    let got = store.insert_runs(&batch).await?;
                    for (r, t) in got.iter().zip(chunk) {
                        if *r == RunInsert::Inserted(RunState::Running) {
                            won.push(*t);
                        }
                    }
                }
                Ok::<_, Error>(won)
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let unique: HashSet<&DateTime<Utc>> = all.iter().collect();
    ensure!(
        unique.len() == all.len(),
        "{} slots started twice",
        all.len() - unique.len()
    );
    ensure!(
        all.len() == slots.len(),
        "{} of {} slots started",
        all.len(),
        slots.len()
    );
    let stored = cx
        .store
        .query_runs(&RunQuery::job("race").limit(1000))
        .await?;
    ensure!(
        stored.len() == slots.len(),
        "{} records stored",
        stored.len()
    );
    Ok(())
}

/// `max_instances` counts the job's running records across the whole store: over
/// the limit the run is stored as skipped; runs of one call share the count taken
/// before it.
pub async fn max_instances_counts_running_runs_store_wide(cx: &Ctx) -> Result<()> {
    let other = cx.another_handle().await?;
    let r1 = running("m", mins(1), 1, "o1");
    cx.store
        .insert_runs(&[new_run(r1.clone(), Some(1))])
        .await?;

    let r2 = running("m", mins(2), 1, "o2");
    let got = other.insert_runs(&[new_run(r2.clone(), Some(1))]).await?;
    ensure!(
        got == vec![RunInsert::Inserted(RunState::Skipped)],
        "{got:?}"
    );
    let s = run_by_id(other.as_ref(), &r2.id).await?;
    ensure!(s.state == RunState::Skipped, "{s:?}");
    ensure!(
        s.heartbeat_until.is_none(),
        "skipped run keeps a heartbeat: {s:?}"
    );
    ensure!(s.finished_at == s.started_at, "skipped run times: {s:?}");

    // A limit of 2 leaves room for one more.
    let r3 = running("m", mins(3), 1, "o2");
    let got = other.insert_runs(&[new_run(r3.clone(), Some(2))]).await?;
    ensure!(
        got == vec![RunInsert::Inserted(RunState::Running)],
        "{got:?}"
    );

    // Once the running ones finish, a backlog of three in one call all start.
    let done: Vec<RunFinish> = [&r1, &r3]
        .iter()
        .map(|r| RunFinish {
            id: r.id.clone(),
            state: RunState::Succeeded,
            finished_at: mins(4),
            error: None,
        })
        .collect();
    cx.store.finish_runs(&owner("o1"), &done[..1]).await?;
    other.finish_runs(&owner("o2"), &done[1..]).await?;
    let backlog: Vec<NewRun> = (5..8)
        .map(|i| new_run(running("m", mins(i), 1, "o1"), Some(1)))
        .collect();
    let got = cx.store.insert_runs(&backlog).await?;
    ensure!(
        got == vec![RunInsert::Inserted(RunState::Running); 3],
        "{got:?}"
    );
    // Runs without a limit, and other jobs, are not affected by the count.
    let free = running("m", mins(9), 1, "o1");
    let elsewhere = running("n", mins(9), 1, "o1");
    let got = cx
        .store
        .insert_runs(&[new_run(free, None), new_run(elsewhere, Some(1))])
        .await?;
    ensure!(
        got == vec![RunInsert::Inserted(RunState::Running); 2],
        "{got:?}"
    );
    Ok(())
}

/// `finish_runs` writes the terminal state only for runs the owner holds that are
/// running or interrupted.
pub async fn finish_applies_to_own_unfinished_runs(cx: &Ctx) -> Result<()> {
    let mine = running("f", mins(1), 1, "o1");
    let theirs = running("f", mins(2), 1, "o2");
    cx.store
        .insert_runs(&[new_run(mine.clone(), None), new_run(theirs.clone(), None)])
        .await?;
    let err = "boom ✗".to_string();
    let finish = |r: &RunRecord, state| RunFinish {
        id: r.id.clone(),
        state,
        finished_at: at("2026-01-01T00:10:00.000001Z"),
        error: Some(err.clone()),
    };
    let n = cx
        .store
        .finish_runs(
            &owner("o1"),
            &[
                finish(&mine, RunState::Failed),
                finish(&theirs, RunState::Failed),
            ],
        )
        .await?;
    ensure!(n == 1, "finished {n} runs, expected 1");
    let m = run_by_id(cx.store.as_ref(), &mine.id).await?;
    ensure!(m.state == RunState::Failed, "{m:?}");
    ensure!(m.error.as_deref() == Some("boom ✗"), "{m:?}");
    ensure!(
        m.finished_at == Some(at("2026-01-01T00:10:00.000001Z")),
        "{m:?}"
    );
    ensure!(m.heartbeat_until.is_none(), "{m:?}");
    ensure!(
        m.duration() == Some(std::time::Duration::from_micros(540_000_001 - 1_234)),
        "{:?}",
        m.duration()
    );
    let t = run_by_id(cx.store.as_ref(), &theirs.id).await?;
    ensure!(
        t.state == RunState::Running,
        "another owner's run was finished: {t:?}"
    );
    // A finished run stays finished.
    let n = cx
        .store
        .finish_runs(&owner("o1"), &[finish(&mine, RunState::Succeeded)])
        .await?;
    ensure!(n == 0, "a finished run was finished again");
    let n = cx
        .store
        .finish_runs(
            &owner("o1"),
            &[RunFinish {
                id: RunId::new("no-such-run"),
                state: RunState::Succeeded,
                finished_at: mins(3),
                error: None,
            }],
        )
        .await?;
    ensure!(n == 0, "an unknown run was finished");
    Ok(())
}

/// Heartbeats extend only the owner's running runs; runs whose heartbeat lapsed are
/// marked interrupted exactly once across concurrent sweeps, and their owner can
/// still record how they ended.
pub async fn lapsed_heartbeats_are_interrupted_once(cx: &Ctx) -> Result<()> {
    let base = at("2026-05-01T00:00:00Z");
    let mk = |job: &str, who: &str, hb: i64| {
        let mut r = running(job, base, 1, who);
        r.heartbeat_until = Some(base + secs(hb));
        r
    };
    let a = mk("a", "o1", 10);
    let b = mk("b", "o1", 10);
    let c = mk("c", "o2", 10);
    let d = mk("d", "o2", 100);
    let runs: Vec<NewRun> = [&a, &b, &c, &d]
        .iter()
        .map(|r| new_run((*r).clone(), None))
        .collect();
    cx.store.insert_runs(&runs).await?;

    // o1 extends a (and tries c, which it does not hold).
    let n = cx
        .store
        .heartbeat_runs(&owner("o1"), &[a.id.clone(), c.id.clone()], base + secs(60))
        .await?;
    ensure!(n == 1, "heartbeat changed {n} runs, expected 1");
    let got = run_by_id(cx.store.as_ref(), &a.id).await?;
    ensure!(got.heartbeat_until == Some(base + secs(60)), "{got:?}");

    // At base+20s, b and c lapsed; a and d did not. Two handles sweep at once.
    let other = cx.another_handle().await?;
    let now = base + secs(20);
    let (x, y) = tokio::join!(
        cx.store.interrupt_lapsed(now, 100),
        other.interrupt_lapsed(now, 100)
    );
    let mut swept: Vec<RunRecord> = x?.into_iter().chain(y?).collect();
    swept.sort_by(|p, q| p.job_id.cmp(&q.job_id));
    let jobs: Vec<&str> = swept.iter().map(|r| r.job_id.as_str()).collect();
    ensure!(jobs == ["b", "c"], "interrupted {jobs:?}");
    for r in &swept {
        ensure!(r.state == RunState::Interrupted, "{r:?}");
        ensure!(r.finished_at == Some(now), "{r:?}");
        ensure!(r.heartbeat_until.is_none(), "{r:?}");
        ensure!(r.error.as_deref() == Some(INTERRUPTED_ERROR), "{r:?}");
    }
    ensure!(
        cx.store.interrupt_lapsed(now, 100).await?.is_empty(),
        "runs were interrupted twice"
    );
    // A heartbeat no longer revives an interrupted run...
    let n = cx
        .store
        .heartbeat_runs(&owner("o1"), std::slice::from_ref(&b.id), base + secs(90))
        .await?;
    ensure!(n == 0, "heartbeat revived an interrupted run");
    // ...but its owner may still record how it really ended.
    let n = cx
        .store
        .finish_runs(
            &owner("o1"),
            &[RunFinish {
                id: b.id.clone(),
                state: RunState::Succeeded,
                finished_at: base + secs(25),
                error: None,
            }],
        )
        .await?;
    ensure!(n == 1, "owner could not finish its interrupted run");
    // An interrupted run no longer counts against `max_instances`; a run
    // still running (d) does.
    let next = |job: &str| new_run(running(job, base + secs(30), 1, "o3"), Some(1));
    let got = cx.store.insert_runs(&[next("c"), next("d")]).await?;
    ensure!(
        got == vec![
            RunInsert::Inserted(RunState::Running),
            RunInsert::Inserted(RunState::Skipped)
        ],
        "after the sweep: {got:?}"
    );
    // The limit bounds one sweep.
    let many: Vec<NewRun> = (0..5)
        .map(|i| new_run(mk(&format!("z{i}"), "o3", 1), None))
        .collect();
    cx.store.insert_runs(&many).await?;
    let first = cx.store.interrupt_lapsed(now, 2).await?;
    ensure!(first.len() == 2, "limit 2 swept {}", first.len());
    let rest = cx.store.interrupt_lapsed(now, 100).await?;
    ensure!(rest.len() == 3, "second sweep got {}", rest.len());
    Ok(())
}

/// `query_runs` filters by job, state and time, orders newest first (then highest
/// attempt) and honours the limit.
pub async fn query_runs_filters_orders_and_limits(cx: &Ctx) -> Result<()> {
    let mut batch = Vec::new();
    for i in 0..6 {
        batch.push(new_run(running("q", mins(i), 1, "o"), None));
    }
    batch.push(new_run(running("q", mins(3), 2, "o"), None));
    batch.push(new_run(running("other", mins(10), 1, "o"), None));
    cx.store.insert_runs(&batch).await?;
    let fail = batch[1].record.id.clone();
    cx.store
        .finish_runs(
            &owner("o"),
            &[RunFinish {
                id: fail.clone(),
                state: RunState::Failed,
                finished_at: mins(20),
                error: Some("x".into()),
            }],
        )
        .await?;

    let got = cx.store.query_runs(&RunQuery::job("q")).await?;
    let keys: Vec<(i64, u32)> = got
        .iter()
        .map(|r| ((r.scheduled_time - base()).num_minutes(), r.attempt))
        .collect();
    ensure!(
        keys == [(5, 1), (4, 1), (3, 2), (3, 1), (2, 1), (1, 1), (0, 1)],
        "order {keys:?}"
    );
    let got = cx.store.query_runs(&RunQuery::job("q").limit(2)).await?;
    ensure!(
        got.len() == 2 && got[0].scheduled_time == mins(5),
        "limit {got:?}"
    );
    let got = cx
        .store
        .query_runs(&RunQuery::default().state(RunState::Failed))
        .await?;
    ensure!(got.len() == 1 && got[0].id == fail, "state filter {got:?}");
    let got = cx
        .store
        .query_runs(&RunQuery::job("q").since(mins(4)))
        .await?;
    ensure!(got.len() == 2, "since filter {}", got.len());
    let got = cx.store.query_runs(&RunQuery::default()).await?;
    ensure!(
        got.len() == 8 && got[0].job_id.as_str() == "other",
        "all {}",
        got.len()
    );
    Ok(())
}

/// `prune_runs` deletes runs scheduled before the cut that are finished, keeps
/// running ones; removing jobs keeps their runs.
pub async fn prune_deletes_old_finished_runs_only(cx: &Ctx) -> Result<()> {
    cx.store.add_job(&job("p", Some(mins(0)))).await?;
    let old_done = running("p", mins(0), 1, "o");
    let old_running = running("p", mins(1), 1, "o");
    let new_done = running("p", mins(30), 1, "o");
    cx.store
        .insert_runs(&[
            new_run(old_done.clone(), None),
            new_run(old_running.clone(), None),
            new_run(new_done.clone(), None),
        ])
        .await?;
    let finish = |r: &RunRecord| RunFinish {
        id: r.id.clone(),
        state: RunState::Succeeded,
        finished_at: mins(40),
        error: None,
    };
    cx.store
        .finish_runs(&owner("o"), &[finish(&old_done), finish(&new_done)])
        .await?;
    cx.store.remove_all_jobs().await?;
    let n = cx.store.prune_runs(mins(10)).await?;
    ensure!(n == 1, "pruned {n}, expected 1");
    let left: Vec<RunId> = cx
        .store
        .query_runs(&RunQuery::job("p"))
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    ensure!(
        left == vec![new_done.id.clone(), old_running.id.clone()],
        "left {left:?}"
    );
    // The pruned slot's key is gone with it.
    let again = running("p", mins(0), 1, "o");
    let got = cx.store.insert_runs(&[new_run(again, None)]).await?;
    ensure!(
        got == vec![RunInsert::Inserted(RunState::Running)],
        "{got:?}"
    );
    Ok(())
}

/// Pruning a history longer than one pruning step (1,000 runs on Redis)
/// deletes every old finished run, also when a full step of the oldest runs
/// is still running and kept.
pub async fn prune_works_through_long_histories(cx: &Ctx) -> Result<()> {
    let slot = |i: i64| mins(0) + chrono::Duration::milliseconds(i);
    let runs: Vec<RunRecord> = (0..1_500).map(|i| running("h", slot(i), 1, "o")).collect();
    for chunk in runs.chunks(500) {
        let batch: Vec<NewRun> = chunk.iter().map(|r| new_run(r.clone(), None)).collect();
        cx.store.insert_runs(&batch).await?;
    }
    // The 1,100 oldest keep running; the 400 newest are over.
    let done: Vec<RunFinish> = runs[1_100..]
        .iter()
        .map(|r| RunFinish {
            id: r.id.clone(),
            state: RunState::Succeeded,
            finished_at: mins(5),
            error: None,
        })
        .collect();
    cx.store.finish_runs(&owner("o"), &done).await?;
    let n = cx.store.prune_runs(mins(10)).await?;
    ensure!(n == 400, "pruned {n}, expected the 400 finished runs");
    let left = cx
        .store
        .query_runs(&RunQuery::job("h").limit(10_000))
        .await?;
    ensure!(
        left.len() == 1_100 && left.iter().all(|r| r.state == RunState::Running),
        "left {} runs, {} of them not running",
        left.len(),
        left.iter().filter(|r| r.state != RunState::Running).count()
    );
    // The rest finish: more than one slice of a bounded prune goes at once.
    let done: Vec<RunFinish> = runs[..1_100]
        .iter()
        .map(|r| RunFinish {
            id: r.id.clone(),
            state: RunState::Failed,
            finished_at: mins(6),
            error: None,
        })
        .collect();
    cx.store.finish_runs(&owner("o"), &done).await?;
    let n = cx.store.prune_runs(mins(10)).await?;
    ensure!(n == 1_100, "pruned {n}, expected the other 1,100 runs");
    let left = cx.store.query_runs(&RunQuery::job("h").limit(10)).await?;
    ensure!(
        left.is_empty(),
        "{} runs left after pruning all",
        left.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// The scheduler on the store: behaviours every store must give a scheduler
// (upserts, client-only mode, the ledger's guard of one-off slots).
// ---------------------------------------------------------------------------

/// A clock the case sets by hand.
#[derive(Debug)]
struct HandClock(std::sync::Mutex<DateTime<Utc>>);

impl HandClock {
    fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }
}

impl sundial::clock::Clock for HandClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn sleep_until(&self, _deadline: DateTime<Utc>) -> BoxFuture<'static, ()> {
        Box::pin(futures::future::pending())
    }
}

/// A started client-only scheduler on `store` reading `clock`.
async fn client(store: Arc<dyn JobStore>, clock: &Arc<HandClock>) -> Result<sundial::Scheduler> {
    let s = sundial::Scheduler::builder()
        .jobstore_arc("default", store)
        .clock(Arc::clone(clock) as Arc<dyn sundial::clock::Clock>)
        .build_client()?;
    s.start().await?;
    Ok(s)
}

fn every_minutes(n: u64) -> Result<sundial::trigger::IntervalTrigger> {
    Ok(sundial::trigger::IntervalTrigger::every(
        Duration::from_secs(n * 60),
    )?)
}

/// `replace_existing` keeps the stored next run time (and a pause) while the
/// trigger is the same, writes nothing when nothing changed, and reschedules
/// when the trigger changed; `if_absent` returns the stored job untouched.
pub async fn upserts_keep_the_stored_schedule(cx: &Ctx) -> Result<()> {
    use sundial::{JobSpec, OnConflict};
    let clock = Arc::new(HandClock(std::sync::Mutex::new(base())));
    let a = client(Arc::clone(&cx.store), &clock).await?;
    let b = client(cx.another_handle().await?, &clock).await?;
    let spec = |n: u64| -> Result<JobSpec> {
        Ok(JobSpec::new("cleanup", every_minutes(n)?)
            .id("cleanup")
            .replace_existing(true))
    };
    let first = a.add_job(spec(30)?).await?;
    ensure!(first.next_run_time() == Some(mins(30)), "{first:?}");
    let v0 = cx
        .store
        .lookup_job(&JobId::new("cleanup"))
        .await?
        .context("stored")?
        .version;

    // A restart 20 minutes later declares the same job: nothing moves.
    clock.set(mins(20));
    let again = b.add_job(spec(30)?).await?;
    ensure!(again.next_run_time() == Some(mins(30)), "{again:?}");
    let stored = cx
        .store
        .lookup_job(&JobId::new("cleanup"))
        .await?
        .context("stored")?;
    ensure!(stored.version == v0, "an unchanged job was written again");
    ensure!(stored.next_run_time == Some(mins(30)));

    // New args: written, schedule kept.
    let with_args = b.add_job(spec(30)?.args(json!({"days": 7}))).await?;
    ensure!(with_args.next_run_time() == Some(mins(30)), "{with_args:?}");
    let stored = cx
        .store
        .lookup_job(&JobId::new("cleanup"))
        .await?
        .context("stored")?;
    ensure!(
        stored.data()?.args == json!({"days": 7}) && stored.version > v0,
        "{stored:?}"
    );

    // A paused job stays paused.
    a.pause_job("cleanup", None).await?;
    let paused = b.add_job(spec(30)?.args(json!({"days": 7}))).await?;
    ensure!(paused.is_paused(), "replace resumed a paused job");
    a.resume_job("cleanup", None).await?;

    // A new trigger reschedules from now.
    let changed = b.add_job(spec(60)?).await?;
    ensure!(changed.next_run_time() == Some(mins(80)), "{changed:?}");

    // An explicit next run time wins.
    let explicit = b.add_job(spec(60)?.next_run_time(mins(25))).await?;
    ensure!(explicit.next_run_time() == Some(mins(25)), "{explicit:?}");

    // if_absent: the stored job is returned as it is.
    let kept = b
        .add_job(
            JobSpec::new("other", every_minutes(5)?)
                .id("cleanup")
                .if_absent(),
        )
        .await?;
    ensure!(
        kept.task() == "cleanup" && kept.next_run_time() == Some(mins(25)),
        "{kept:?}"
    );
    let fresh = b
        .add_job(
            JobSpec::new("other", every_minutes(5)?)
                .id("fresh")
                .on_conflict(OnConflict::Keep),
        )
        .await?;
    ensure!(fresh.next_run_time() == Some(mins(25)), "{fresh:?}");
    let err = a
        .add_job(JobSpec::new("other", every_minutes(5)?).id("fresh"))
        .await
        .err()
        .context("a conflicting add succeeded")?;
    ensure!(
        matches!(&err, Error::ConflictingId { id } if id == "fresh"),
        "{err}"
    );
    a.shutdown(false).await?;
    b.shutdown(false).await?;
    Ok(())
}

/// A client-only scheduler adds, modifies, pauses, lists and removes jobs in
/// the store, asks the running nodes for runs, and runs none of them itself,
/// even when they are due.
pub async fn client_scheduler_manages_jobs_and_runs_none(cx: &Ctx) -> Result<()> {
    use sundial::{JobChanges, JobSpec};
    let now = Utc::now();
    let clock = Arc::new(HandClock(std::sync::Mutex::new(now)));
    let c = client(Arc::clone(&cx.store), &clock).await?;
    ensure!(c.is_client() && c.is_running());
    // Task names are the running nodes' business.
    let due = sundial::trigger::DateTrigger::at(now - chrono::Duration::seconds(1));
    c.add_job(JobSpec::new("unknown_here", due).id("due"))
        .await?;
    c.add_job(JobSpec::new("report", every_minutes(10)?).id("report"))
        .await?;
    c.modify_job("report", None, JobChanges::new().name("weekly report"))
        .await?;
    c.pause_job("report", None).await?;
    let listed: Vec<String> = c
        .get_jobs(None)
        .await?
        .iter()
        .map(|j| j.id().to_string())
        .collect();
    ensure!(listed == ["due", "report"], "{listed:?}");
    let report = c.get_job("report", None).await?.context("report")?;
    ensure!(
        report.name() == "weekly report" && report.is_paused(),
        "{report:?}"
    );
    ensure!(c.pause().is_err(), "a client has no loop to pause");
    // A client asks the running nodes to run a job; it runs nothing itself.
    // A paused job is refused; an active one moves just ahead, with its own
    // next run time kept to return to after that run.
    let e = c
        .run_job_now("report", None)
        .await
        .err()
        .context("a paused job was requested")?;
    ensure!(e.to_string().contains("paused"), "{e}");
    let before = c
        .resume_job("report", None)
        .await?
        .and_then(|j| j.next_run_time())
        .context("resumed")?;
    c.run_job_now("report", None).await?;
    let rec = cx
        .store
        .lookup_job(&JobId::new("report"))
        .await?
        .context("report")?;
    ensure!(
        rec.data()?.options.resume_at == Some(before)
            && rec.next_run_time.is_some_and(|t| t < before),
        "{rec:?}"
    );
    // A second request keeps the schedule the first one saved.
    c.run_job_now("report", None).await?;
    let again = cx
        .store
        .lookup_job(&JobId::new("report"))
        .await?
        .context("report")?;
    ensure!(again.data()?.options.resume_at == Some(before), "{again:?}");
    c.run_job_now("due", None).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        cx.store.lookup_job(&JobId::new("due")).await?.is_some(),
        "the due job was taken"
    );
    let runs = c.runs(&RunQuery::default(), None).await?;
    ensure!(runs.is_empty(), "a client ran {runs:?}");
    c.remove_job("due", None).await?;
    ensure!(cx.store.lookup_job(&JobId::new("due")).await?.is_none());
    c.shutdown(false).await?;
    Ok(())
}

/// A one-off job whose slot is in the run ledger is not run again when a
/// restarted process declares it once more with the same id and run time.
pub async fn one_off_slot_in_the_ledger_is_not_run_again(cx: &Ctx) -> Result<()> {
    use sundial::JobSpec;
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let runner = sundial::Scheduler::builder()
        .jobstore_arc("default", Arc::clone(&cx.store))
        .executor("default", sundial::AsyncExecutor::new())
        .max_idle_sleep(Duration::from_millis(50))
        .task("once", move |_: sundial::JobContext, _: Value| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, sundial::BoxError>(()) }
        })
        .build()?;
    runner.start().await?;
    let at = trunc(Utc::now() + chrono::Duration::milliseconds(200));
    let spec = || {
        JobSpec::new("once", sundial::trigger::DateTrigger::at(at))
            .id("once")
            .misfire_grace_time(None)
            .replace_existing(true)
    };
    runner.add_job(spec()).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while runner
        .runs(&RunQuery::job("once"), None)
        .await?
        .first()
        .map(|r| r.state)
        != Some(RunState::Succeeded)
    {
        ensure!(
            std::time::Instant::now() < deadline,
            "the one-off job never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Declared again by another process (a client on another handle).
    let clock = Arc::new(HandClock(std::sync::Mutex::new(Utc::now())));
    let other = client(cx.another_handle().await?, &clock).await?;
    other.add_job(spec()).await?;
    runner.wakeup();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while cx.store.lookup_job(&JobId::new("once")).await?.is_some() {
        ensure!(
            std::time::Instant::now() < deadline,
            "the re-declared job was never settled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let recorded = cx.store.query_runs(&RunQuery::job("once")).await?;
    runner.shutdown(true).await?;
    other.shutdown(false).await?;
    let n = runs.load(std::sync::atomic::Ordering::SeqCst);
    ensure!(n == 1, "the one-off slot ran {n} times");
    ensure!(recorded.len() == 1, "{recorded:?}");
    Ok(())
}

fn trunc(t: DateTime<Utc>) -> DateTime<Utc> {
    sundial::job::trunc_micros(t)
}

/// Stores with a notification channel (PostgreSQL, Redis; MongoDB on a
/// replica set) tell other handles of added and released jobs (PostgreSQL and
/// Redis skip the writing handle itself); the others report no channel, and
/// schedulers poll them.
pub async fn change_notices_reach_other_handles(cx: &Ctx) -> Result<()> {
    use futures::StreamExt as _;
    let backend = cx.store.backend();
    let has_channel = matches!(backend, "postgres" | "redis");
    let Some(mut notices) = cx.store.watch_changes().await? else {
        ensure!(!has_channel, "{backend} has a channel but reports none");
        return Ok(());
    };
    ensure!(
        has_channel || backend == "mongo",
        "{backend} reports a channel: add it to this case and the README"
    );
    // Subscribed once the first notice arrives: wait out a round trip.
    tokio::time::sleep(Duration::from_millis(200)).await;
    cx.store.add_job(&job("own", Some(mins(1)))).await?;
    let own = tokio::time::timeout(Duration::from_millis(500), notices.next()).await;
    // A change stream reports every writer, this handle included.
    if backend != "mongo" {
        ensure!(own.is_err(), "the writing handle heard its own change");
    }
    let other = cx.another_handle().await?;
    other.add_job(&job("theirs", Some(mins(1)))).await?;
    let heard = tokio::time::timeout(Duration::from_secs(5), notices.next()).await;
    ensure!(
        matches!(heard, Ok(Some(()))),
        "no notice of another handle's add"
    );
    // A release that leaves the job scheduled is a change too.
    let claimed = other
        .acquire_due(mins(2), &owner("o"), Duration::from_secs(60), 10, &[])
        .await?;
    ensure!(claimed.len() == 2, "{}", claimed.len());
    let items = claimed
        .iter()
        .map(|r| ReleaseItem {
            id: r.id.clone(),
            version: r.version,
            outcome: Release::Reschedule {
                next_run_time: Some(mins(10)),
            },
        })
        .collect();
    other.release_many(&owner("o"), items).await?;
    let heard = tokio::time::timeout(Duration::from_secs(5), notices.next()).await;
    ensure!(
        matches!(heard, Ok(Some(()))),
        "no notice of another handle's release"
    );
    other.shutdown().await?;
    Ok(())
}

/// `update_job` is a compare-and-swap on the version read: a stale record
/// changes nothing and fails with `JobChanged`.
pub async fn update_with_a_stale_version_changes_nothing(cx: &Ctx) -> Result<()> {
    cx.store.add_job(&job("cas", Some(mins(1)))).await?;
    let read = cx
        .store
        .lookup_job(&JobId::new("cas"))
        .await?
        .context("added")?;
    let mut first = read.clone();
    first.edit(|d| d.args = json!("first"))?;
    cx.store.update_job(&first).await?;
    let mut stale = read.clone();
    stale.edit(|d| d.args = json!("stale"))?;
    stale.next_run_time = Some(mins(7));
    for store in [Arc::clone(&cx.store), cx.another_handle().await?] {
        let err = store
            .update_job(&stale)
            .await
            .err()
            .context("a stale update succeeded")?;
        ensure!(
            matches!(&err, Error::JobChanged { id, read } if id == "cas" && *read == stale.version),
            "{err}"
        );
    }
    let got = cx
        .store
        .lookup_job(&JobId::new("cas"))
        .await?
        .context("gone")?;
    ensure!(
        got.data()?.args == json!("first")
            && got.next_run_time == Some(mins(1))
            && got.version == read.version + 1,
        "{got:?}"
    );
    Ok(())
}

/// Two processes editing one job at once lose neither edit: each edit reads,
/// changes and writes back only if nobody wrote in between, else tries again.
pub async fn concurrent_edits_lose_nothing(cx: &Ctx) -> Result<()> {
    use sundial::{JobChanges, JobSpec};
    let clock = Arc::new(HandClock(std::sync::Mutex::new(base())));
    let a = client(Arc::clone(&cx.store), &clock).await?;
    let b = client(cx.another_handle().await?, &clock).await?;
    a.add_job(JobSpec::new("edited", every_minutes(5)?).id("e"))
        .await?;
    let n = 15;
    let names = async {
        for i in 0..n {
            a.modify_job("e", None, JobChanges::new().name(format!("name{i}")))
                .await?;
        }
        Ok::<_, Error>(())
    };
    let args = async {
        for i in 0..n {
            b.modify_job("e", None, JobChanges::new().args(i)).await?;
        }
        Ok::<_, Error>(())
    };
    let (r1, r2) = tokio::join!(names, args);
    r1?;
    r2?;
    let got = cx
        .store
        .lookup_job(&JobId::new("e"))
        .await?
        .context("gone")?;
    let data = got.data()?;
    ensure!(
        data.options.name.as_deref() == Some(&format!("name{}", n - 1))
            && data.args == json!(n - 1),
        "an edit was lost: {:?} {:?}",
        data.options.name,
        data.args
    );
    ensure!(got.version == 2 * n as u64, "version {}", got.version);
    a.shutdown(false).await?;
    b.shutdown(false).await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Node registry
// ---------------------------------------------------------------------------

fn node(owner_id: &str, now: DateTime<Utc>) -> sundial::node::NodeRecord {
    sundial::node::NodeRecord::new(owner(owner_id), now, Duration::from_secs(30))
}

/// A live registration is refused to another instance of the same owner id
/// and returned as stored; its own instance renews it; once it lapses another
/// instance takes it over; removal and pruning touch only what they should.
pub async fn node_registry_refuses_a_live_owner_id_only(cx: &Ctx) -> Result<()> {
    let t0 = trunc(Utc::now());
    let a = node("n1", t0);
    ensure!(
        cx.store.upsert_node(&a, t0).await?.is_none(),
        "first registration refused"
    );
    ensure!(
        cx.store.list_nodes().await? == vec![a.clone()],
        "not stored as given"
    );

    let other = cx.another_handle().await?;
    let b = node("n1", t0 + secs(1));
    let held = other.upsert_node(&b, t0 + secs(1)).await?;
    ensure!(
        held.as_ref() == Some(&a),
        "a live owner id was not refused: {held:?}"
    );
    ensure!(
        cx.store.list_nodes().await? == vec![a.clone()],
        "a refused registration wrote"
    );

    let mut renewed = a.clone();
    renewed.renew(t0 + secs(10), Duration::from_secs(30));
    renewed.clock_offset_ms = Some(-12);
    renewed.running = 3;
    ensure!(
        cx.store
            .upsert_node(&renewed, t0 + secs(10))
            .await?
            .is_none(),
        "own renewal refused"
    );
    ensure!(
        other.list_nodes().await? == vec![renewed.clone()],
        "renewal not stored"
    );

    // Lapsed at t0 + 40 s: another instance takes the id over.
    ensure!(
        other.upsert_node(&b, t0 + secs(39)).await?.is_some(),
        "taken over before it lapsed"
    );
    ensure!(
        other.upsert_node(&b, t0 + secs(40)).await?.is_none(),
        "a lapsed registration was kept"
    );
    ensure!(cx.store.list_nodes().await? == vec![b.clone()]);

    cx.store.remove_node(&a.owner, &a.instance).await?;
    ensure!(
        cx.store.list_nodes().await? == vec![b.clone()],
        "removed by a stale instance"
    );
    cx.store.remove_node(&b.owner, &b.instance).await?;
    ensure!(cx.store.list_nodes().await?.is_empty(), "not removed");

    let old = node("n2", t0 - secs(3600));
    let live = node("n3", t0);
    cx.store.upsert_node(&old, t0 - secs(3600)).await?;
    cx.store.upsert_node(&live, t0).await?;
    let listed: Vec<String> = cx
        .store
        .list_nodes()
        .await?
        .iter()
        .map(|n| n.owner.to_string())
        .collect();
    ensure!(listed == ["n2", "n3"], "not ordered by owner: {listed:?}");
    let pruned = cx.store.prune_nodes(t0 - secs(60)).await?;
    ensure!(pruned == 1, "pruned {pruned}");
    ensure!(
        cx.store.list_nodes().await? == vec![live],
        "pruned the wrong node"
    );
    Ok(())
}

/// Of eight handles registering one free owner id at once, exactly one wins.
pub async fn node_registration_race_has_one_winner(cx: &Ctx) -> Result<()> {
    let now = trunc(Utc::now());
    let mut handles = Vec::new();
    for _ in 0..8 {
        handles.push(cx.another_handle().await?);
    }
    let attempts = handles.iter().map(|h| {
        let n = node("contended", now);
        async move { h.upsert_node(&n, now).await.map(|held| (n, held)) }
    });
    let results = futures::future::try_join_all(attempts).await?;
    let winners: Vec<_> = results.iter().filter(|(_, held)| held.is_none()).collect();
    ensure!(winners.len() == 1, "{} registrations won", winners.len());
    let winner = &winners[0].0;
    for (_, held) in &results {
        if let Some(h) = held {
            ensure!(h == winner, "a loser was shown {h:?}, not the winner");
        }
    }
    ensure!(cx.store.list_nodes().await? == vec![winner.clone()]);
    Ok(())
}

/// Stores on a server read that server's clock (this machine's clock here,
/// so within a few seconds of it); in-process stores have none.
pub async fn server_clock_is_the_stores_own(cx: &Ctx) -> Result<()> {
    let backend = cx.store.backend();
    let before = Utc::now();
    let server = cx.store.server_time().await?;
    let after = Utc::now();
    match backend {
        "memory" | "sqlite" => ensure!(server.is_none(), "{backend} reported a server clock"),
        _ => {
            let t = server.with_context(|| format!("{backend} has no server clock"))?;
            ensure!(
                t > before - secs(5) && t < after + secs(5),
                "{backend} server time {t} is not near {before}"
            );
        }
    }
    Ok(())
}

/// A clock running ahead of real time by a fixed amount.
#[derive(Debug)]
struct SkewedClock(chrono::Duration);

impl sundial::clock::Clock for SkewedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.0
    }
    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let d = (deadline - self.now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(d))
    }
}

fn runner(store: Arc<dyn JobStore>, owner_id: &str) -> Result<sundial::Scheduler> {
    Ok(sundial::Scheduler::builder()
        .jobstore_arc("default", store)
        .executor("default", sundial::AsyncExecutor::new())
        .owner_id(owner_id)
        .build()?)
}

/// A started scheduler registers itself; a second one with the same owner id
/// (on another handle, as another process would) is refused with an error
/// naming the holder, until the first shuts down. A skewed clock shows as
/// the node's offset to the store.
pub async fn a_live_owner_id_refuses_a_second_scheduler(cx: &Ctx) -> Result<()> {
    let first = sundial::Scheduler::builder()
        .jobstore_arc("default", cx.another_handle().await?)
        .executor("default", sundial::AsyncExecutor::new())
        .owner_id("node-1")
        .clock(Arc::new(SkewedClock(secs(3))) as Arc<dyn sundial::clock::Clock>)
        .build()?;
    first.start().await?;
    let nodes = first.nodes().await?;
    ensure!(nodes.len() == 1, "{nodes:?}");
    let me = &nodes[0];
    ensure!(
        me.owner.as_str() == "node-1" && me.pid == std::process::id(),
        "{me:?}"
    );
    if cx.store.server_time().await?.is_some() {
        let offset = me.clock_offset_ms.context("offset not measured")?;
        ensure!(
            (2000..4000).contains(&offset),
            "a +3 s clock measured {offset} ms off"
        );
    } else {
        ensure!(me.clock_offset_ms.is_none(), "{me:?}");
    }

    let second = runner(cx.another_handle().await?, "node-1")?;
    match second.start().await {
        Err(Error::DuplicateOwner {
            owner, host, pid, ..
        }) => {
            ensure!(
                owner == "node-1" && pid == me.pid && host == me.host,
                "{owner} {host} {pid}"
            );
        }
        other => anyhow::bail!("a second live node-1 was not refused: {other:?}"),
    }
    ensure!(!second.is_running(), "the refused scheduler runs");
    ensure!(
        first.nodes().await?.len() == 1,
        "the refused scheduler is registered"
    );

    first.shutdown(true).await?;
    ensure!(
        cx.store.list_nodes().await?.is_empty(),
        "shutdown left the registration"
    );
    second.start().await?;
    let nodes = second.nodes().await?;
    ensure!(
        nodes.len() == 1 && nodes[0].instance != me.instance,
        "{nodes:?}"
    );
    second.shutdown(true).await?;
    Ok(())
}

/// A scheduler shut down and started again on the same store handle (which
/// the shutdown closed) reconnects and runs jobs.
pub async fn a_scheduler_starts_again_after_shutdown(cx: &Ctx) -> Result<()> {
    use sundial::JobSpec;
    let s = sundial::Scheduler::builder()
        .jobstore_arc("default", cx.another_handle().await?)
        .executor("default", sundial::AsyncExecutor::new())
        .max_idle_sleep(Duration::from_millis(50))
        .task("noop", |_: sundial::JobContext, _: Value| async {
            Ok::<_, sundial::BoxError>(())
        })
        .build()?;
    s.start().await?;
    s.shutdown(true).await?;
    s.start().await.context("second start")?;
    let due = sundial::trigger::DateTrigger::at(Utc::now());
    s.add_job(JobSpec::new("noop", due).id("again")).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let runs = s.runs(&RunQuery::job("again"), None).await?;
        if runs.first().map(|r| r.state) == Some(RunState::Succeeded) {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the job never ran: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(s.nodes().await?.len() == 1, "registered once");
    s.shutdown(true).await?;
    Ok(())
}

/// A scheduler whose clock is 5 s ahead or behind runs a job at its time by
/// the store server's clock (where the store has one): it measures its
/// offset to the server and compares due times in the server's time.
pub async fn a_skewed_clock_runs_jobs_on_the_stores_time(cx: &Ctx) -> Result<()> {
    if cx.store.server_time().await?.is_none() {
        // In-process stores share this process's clock: nothing to correct.
        return Ok(());
    }
    for skew in [5, -5] {
        let started: Arc<std::sync::Mutex<Vec<DateTime<Utc>>>> = Arc::default();
        let seen = Arc::clone(&started);
        let s = sundial::Scheduler::builder()
            .jobstore_arc("default", cx.another_handle().await?)
            .executor("default", sundial::AsyncExecutor::new())
            .clock(Arc::new(SkewedClock(secs(skew))) as Arc<dyn sundial::clock::Clock>)
            .max_idle_sleep(Duration::from_millis(200))
            .task("stamp", move |_: sundial::JobContext, _: Value| {
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Utc::now());
                async { Ok::<_, sundial::BoxError>(()) }
            })
            .build()?;
        let due = trunc(Utc::now() + chrono::Duration::milliseconds(1500));
        let id = format!("skew{skew}");
        let trigger = sundial::trigger::DateTrigger::at(due);
        let rec = record(
            &id,
            "stamp",
            sundial::trigger::Trigger::to_json(&trigger),
            Value::Null,
            Some(due),
        );
        cx.store.add_job(&rec).await?;
        s.start().await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(12);
        let at = loop {
            if let Some(t) = started.lock().unwrap_or_else(|p| p.into_inner()).first() {
                break *t;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "skew {skew} s: the job never ran"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        s.shutdown(true).await?;
        let late = (at - due).num_milliseconds();
        // Uncorrected, the job would run 1.5 s early (clock ahead: at once)
        // or 5 s late (clock behind); the upper bound leaves room for a slow
        // server on a loaded machine.
        ensure!(
            (-50..2500).contains(&late),
            "a clock {skew} s off ran the job {late} ms after its time"
        );
    }
    Ok(())
}
