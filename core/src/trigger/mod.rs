//! Triggers: when a job fires.
//!
//! Every built-in trigger is a plain value that computes fire times with
//! [`Trigger::next_fire_time`] and serializes to a documented JSON shape
//! (`{"type": "cron", ...}`) so that job stores can persist it. See
//! `docs/triggers.md` for the JSON schema of every trigger and for the exact
//! DST rules.
//!
//! | type | built with | JSON `type` |
//! |---|---|---|
//! | one-shot | [`DateTrigger`] | `date` |
//! | elapsed-time interval | [`IntervalTrigger`] | `interval` |
//! | cron fields or crontab | [`CronTrigger`] | `cron` |
//! | calendar steps (months, years) | [`CalendarIntervalTrigger`] | `calendar_interval` |
//! | all / any of several | [`AndTrigger`], [`OrTrigger`] | `and`, `or` |

/// Implements [`Trigger::next_fire_time`] for a trigger whose search cannot
/// fail, from its inherent `next_fire(previous, now) -> Option<DateTime<Utc>>`.
macro_rules! infallible_next_fire_time {
    () => {
        fn next_fire_time(
            &self,
            previous: Option<DateTime<Utc>>,
            now: DateTime<Utc>,
        ) -> crate::error::Result<Option<DateTime<Utc>>> {
            Ok(self.next_fire(previous, now))
        }
    };
}

mod calendar;
mod combining;
mod cron;
mod date;
mod interval;
mod jitter;
mod tz;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use crate::error::{Error, Result};

pub use calendar::CalendarIntervalTrigger;
pub use combining::{AndTrigger, OrTrigger, MAX_AND_ITERATIONS};
pub use cron::{CronFields, CronTrigger, FIELD_NAMES as CRON_FIELD_NAMES, SEARCH_HORIZON_YEARS};
pub use date::DateTrigger;
pub use interval::IntervalTrigger;
pub use jitter::{JitterSource, RandomJitter, SeededJitter};
pub use tz::parse_timezone;

/// Computes the instants at which a job fires.
///
/// # Contract
/// - `next_fire_time(None, now)` is the first fire time at or after `now`
///   (or at the trigger's start, if that is later).
/// - `next_fire_time(Some(previous), now)` is the first fire time strictly after
///   `previous`, even when that is before `now`; the scheduler uses this to
///   count missed runs.
/// - `Ok(None)` means the trigger is exhausted: it never fires again (the
///   scheduler removes the job).
/// - `Err` means the search gave up without an answer (an [`AndTrigger`]
///   whose children never agree within its round limit, say): the scheduler
///   keeps the job, reports the error and tries again later.
/// - The result depends only on the arguments and the trigger's own fields (and
///   on its [`JitterSource`] when jitter is set).
/// - The search is bounded: a trigger that can never fire returns `Ok(None)`
///   after a documented horizon (or an error) instead of looping.
pub trait Trigger: Send + Sync + fmt::Debug + 'static {
    /// The next fire time after `previous` (or from `now` when there is none);
    /// `Ok(None)` when the trigger is exhausted.
    ///
    /// # Errors
    /// The search gave up without finding out whether the trigger fires again.
    fn next_fire_time(
        &self,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>>;

    /// The trigger's JSON form, with its `"type"` tag.
    fn to_json(&self) -> Value;

    /// The time zone the trigger computes in, if it has one.
    fn timezone(&self) -> Option<Tz> {
        None
    }

    /// Fixes what depends on when and where the job is added: the scheduler's
    /// default time zone (for triggers created without one) and an interval's
    /// start. The scheduler calls this once, when the job is added.
    fn prepare(&mut self, _now: DateTime<Utc>, _default_timezone: Tz) {}

    /// A short human-readable description, such as `cron[0 9 * * 1-5, Asia/Shanghai]`.
    fn describe(&self) -> String {
        self.to_json().to_string()
    }
}

impl Trigger for Box<dyn Trigger> {
    fn next_fire_time(
        &self,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        (**self).next_fire_time(previous, now)
    }
    fn to_json(&self) -> Value {
        (**self).to_json()
    }
    fn timezone(&self) -> Option<Tz> {
        (**self).timezone()
    }
    fn prepare(&mut self, now: DateTime<Utc>, default_timezone: Tz) {
        (**self).prepare(now, default_timezone)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Up to `count` fire times of `trigger` as the scheduler would reach them:
/// the first is `next_fire_time(previous, now)`, each later one follows the
/// one before it.
///
/// # Errors
/// The trigger's error when its search gives up.
pub fn fire_times(
    trigger: &dyn Trigger,
    previous: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    count: usize,
) -> Result<Vec<DateTime<Utc>>> {
    let mut out = Vec::with_capacity(count.min(1024));
    let (mut prev, mut now) = (previous, now);
    while out.len() < count {
        match trigger.next_fire_time(prev, now)? {
            // A trigger that does not move forward would repeat forever.
            Some(t) if prev.is_some_and(|p| t <= p) => break,
            Some(t) => {
                out.push(t);
                prev = Some(t);
                now = t;
            }
            None => break,
        }
    }
    Ok(out)
}

/// Builds a custom trigger from its JSON form.
pub type TriggerFactory =
    Arc<dyn Fn(&Value, &TriggerRegistry) -> Result<Box<dyn Trigger>> + Send + Sync>;

/// Turns persisted trigger JSON back into triggers: the built-ins plus custom
/// triggers registered by type name.
#[derive(Clone, Default)]
pub struct TriggerRegistry {
    custom: HashMap<String, TriggerFactory>,
}

impl fmt::Debug for TriggerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.custom.keys().collect();
        names.sort();
        f.debug_struct("TriggerRegistry")
            .field("custom", &names)
            .finish()
    }
}

/// The `type` tags of the built-in triggers.
pub const BUILTIN_TRIGGER_TYPES: &[&str] =
    &["date", "interval", "cron", "calendar_interval", "and", "or"];

impl TriggerRegistry {
    /// A registry that knows the built-in triggers only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a custom trigger type; its JSON must carry `"type": name`.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        factory: impl Fn(&Value, &TriggerRegistry) -> Result<Box<dyn Trigger>> + Send + Sync + 'static,
    ) -> Result<()> {
        let name = name.into();
        if BUILTIN_TRIGGER_TYPES.contains(&name.as_str()) || self.custom.contains_key(&name) {
            return Err(Error::invalid_trigger(
                "type",
                &name,
                "a trigger type with this name is already registered",
            ));
        }
        self.custom.insert(name, Arc::new(factory));
        Ok(())
    }

    /// Parses trigger JSON (built-in or registered custom type).
    pub fn parse(&self, value: &Value) -> Result<Box<dyn Trigger>> {
        let Some(obj) = value.as_object() else {
            return Err(Error::invalid_trigger(
                "trigger",
                value,
                "a trigger must be a JSON object with a \"type\" field",
            ));
        };
        let Some(kind) = obj.get("type").and_then(Value::as_str) else {
            return Err(Error::invalid_trigger(
                "type",
                value,
                "missing or non-string \"type\" field",
            ));
        };
        match kind {
            "date" => Ok(Box::new(DateTrigger::from_json(value)?)),
            "interval" => Ok(Box::new(IntervalTrigger::from_json(value)?)),
            "cron" => Ok(Box::new(CronTrigger::from_json(value)?)),
            "calendar_interval" => Ok(Box::new(CalendarIntervalTrigger::from_json(value)?)),
            "and" => Ok(Box::new(AndTrigger::from_json(value, self)?)),
            "or" => Ok(Box::new(OrTrigger::from_json(value, self)?)),
            other => match self.custom.get(other) {
                Some(factory) => factory(value, self),
                None => Err(Error::invalid_trigger(
                    "type",
                    other,
                    format!(
                        "unknown trigger type (built-in types: {}; custom types must be registered)",
                        BUILTIN_TRIGGER_TYPES.join(", ")
                    ),
                )),
            },
        }
    }
}

/// Parses built-in trigger JSON.
pub fn trigger_from_json(value: &Value) -> Result<Box<dyn Trigger>> {
    TriggerRegistry::new().parse(value)
}

/// Splits trigger JSON into its object map after checking the `type` tag and
/// that only `allowed` keys are present.
pub(crate) fn json_object<'a>(
    value: &'a Value,
    kind: &str,
    allowed: &[&str],
) -> Result<&'a serde_json::Map<String, Value>> {
    let obj = value
        .as_object()
        .ok_or_else(|| Error::invalid_trigger(kind, value, "trigger JSON must be an object"))?;
    match obj.get("type").and_then(Value::as_str) {
        Some(t) if t == kind => {}
        _ => {
            return Err(Error::invalid_trigger(
                "type",
                obj.get("type").cloned().unwrap_or(Value::Null),
                format!("expected \"{kind}\""),
            ))
        }
    }
    for key in obj.keys() {
        if key != "type" && key != "v" && !allowed.contains(&key.as_str()) {
            return Err(Error::invalid_trigger(
                key,
                &obj[key],
                format!(
                    "unknown field for a {kind} trigger (allowed: {})",
                    allowed.join(", ")
                ),
            ));
        }
    }
    if let Some(v) = obj.get("v") {
        if v.as_u64() != Some(1) {
            return Err(Error::invalid_trigger(
                "v",
                v,
                "unsupported trigger format version (this build reads version 1)",
            ));
        }
    }
    Ok(obj)
}

/// Reads an optional string field.
pub(crate) fn opt_str<'a>(
    obj: &'a serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Error::invalid_trigger(key, other, "expected a string")),
    }
}

/// Reads an optional non-negative integer field.
pub(crate) fn opt_u64(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<u64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| Error::invalid_trigger(key, v, "expected a non-negative integer")),
    }
}

/// Reads an optional cron field given as a string or an integer.
pub(crate) fn opt_field(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => Err(Error::invalid_trigger(
            key,
            other,
            "expected a string or a non-negative integer",
        )),
    }
}

/// Writes the optional fields shared by cron and interval triggers.
pub(crate) fn insert_common(
    m: &mut serde_json::Map<String, Value>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    tz: Option<Tz>,
    jitter: Option<u64>,
) {
    let zone = tz.unwrap_or(Tz::UTC);
    if let Some(s) = start {
        m.insert("start_date".into(), tz::format_datetime(s, zone).into());
    }
    if let Some(e) = end {
        m.insert("end_date".into(), tz::format_datetime(e, zone).into());
    }
    if let Some(tz) = tz {
        m.insert("timezone".into(), tz.name().into());
    }
    if let Some(j) = jitter {
        m.insert("jitter".into(), j.into());
    }
}

/// Checks that `end` is not before `start`.
pub(crate) fn check_range(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Result<()> {
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            return Err(Error::invalid_trigger(
                "end_date",
                e.to_rfc3339(),
                format!("end_date is before start_date ({})", s.to_rfc3339()),
            ));
        }
    }
    Ok(())
}
