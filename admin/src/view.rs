//! The JSON shapes of jobs, runs and nodes, shared with the `sundial` CLI.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use sundial_core::node::NodeRecord;
use sundial_core::run::RunRecord;
use sundial_core::scheduler::Job;

/// A job as the admin API shows it.
pub fn job_json(job: &Job) -> Value {
    let state = if job.is_pending() {
        "pending"
    } else if job.is_paused() {
        "paused"
    } else {
        "scheduled"
    };
    json!({
        "id": job.id(),
        "name": job.name(),
        "task": job.task(),
        "trigger": job.trigger_json(),
        "trigger_description": job.trigger_description(),
        "args": job.args(),
        "store": job.jobstore(),
        "state": state,
        "next_run_time": job.next_run_time().map(rfc3339),
        "next_run_time_local": job.next_run_time_local().map(|t| t.to_rfc3339()),
        "options": options_json(job),
        "version": job.record().version,
    })
}

/// A job's options as the admin API and dashboard show them: every option,
/// a grace time of "however late" (left out of stored content) as null.
pub(crate) fn options_json(job: &Job) -> Value {
    let mut options = serde_json::to_value(job.options()).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut options {
        m.entry("misfire_grace_time").or_insert(Value::Null);
    }
    options
}

/// A run from the ledger, with its duration in seconds.
pub fn run_json(run: &RunRecord) -> Value {
    let mut v = serde_json::to_value(run).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert(
            "duration_secs".into(),
            run.duration()
                .map_or(Value::Null, |d| json!(d.as_secs_f64())),
        );
    }
    v
}

/// A registered node, with whether it is live at `now` and its heartbeat age.
pub fn node_json(node: &NodeRecord, now: DateTime<Utc>) -> Value {
    let mut v = serde_json::to_value(node).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("live".into(), json!(node.is_live(now)));
        let age = (now - node.heartbeat_at).num_milliseconds() as f64 / 1000.0;
        m.insert("heartbeat_age_secs".into(), json!(age));
    }
    v
}

/// An instant as RFC 3339 in UTC with microseconds where there are any.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Parses a `since` value: an RFC 3339 instant, or an age before `now` such as
/// `90s`, `30m`, `1h`, `7d`.
///
/// # Errors
/// A message naming the value and the accepted forms.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || {
        format!(
            "invalid since value {text:?}: give an RFC 3339 instant (2026-12-01T09:00:00Z) or an age such as 90s, 30m, 1h, 7d"
        )
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let age = match unit {
        "s" => Duration::try_seconds(n),
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        _ => None,
    }
    .ok_or_else(bad)?;
    now.checked_sub_signed(age).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_instants_and_ages() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_since("1h", now).unwrap(),
            DateTime::parse_from_rfc3339("2026-12-02T09:00:00Z").unwrap()
        );
        assert_eq!(
            parse_since("2026-12-01T00:00:00+08:00", now).unwrap(),
            DateTime::parse_from_rfc3339("2026-11-30T16:00:00Z").unwrap()
        );
        for bad in ["", "h", "1w", "-1h", "1.5h", "99999999999999d", "yesterday"] {
            let e = parse_since(bad, now).unwrap_err();
            assert!(e.contains("invalid since value"), "{bad}: {e}");
        }
    }
}
