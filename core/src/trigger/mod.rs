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
mod spec;
mod tz;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use crate::error::{Error, Result};
use spec::BuiltinSpec;

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
        if let Some(spec) = spec::read_builtin(kind, value)? {
            return Ok(match spec {
                BuiltinSpec::Date(s) => Box::new(DateTrigger::from_spec(s)?),
                BuiltinSpec::Interval(s) => Box::new(IntervalTrigger::from_spec(s)?),
                BuiltinSpec::Cron(s) => Box::new(CronTrigger::from_spec(s)?),
                BuiltinSpec::CalendarInterval(s) => {
                    Box::new(CalendarIntervalTrigger::from_spec(s)?)
                }
                BuiltinSpec::And(s) => Box::new(AndTrigger::from_spec(s, self)?),
                BuiltinSpec::Or(s) => Box::new(OrTrigger::from_spec(s, self)?),
            });
        }
        match self.custom.get(kind) {
            Some(factory) => factory(value, self),
            None => Err(Error::invalid_trigger(
                "type",
                kind,
                format!(
                    "unknown trigger type (built-in types: {}; custom types must be registered)",
                    BUILTIN_TRIGGER_TYPES.join(", ")
                ),
            )),
        }
    }
}

/// Parses built-in trigger JSON.
pub fn trigger_from_json(value: &Value) -> Result<Box<dyn Trigger>> {
    TriggerRegistry::new().parse(value)
}

/// The zone, start and end of an interval or cron trigger, read from their
/// JSON strings (the instants in the trigger's zone unless they carry an offset).
pub(crate) type Window = (Option<Tz>, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Reads [`Window`] from the JSON fields `timezone`, `start_date`, `end_date`.
pub(crate) fn read_window(
    timezone: Option<&str>,
    start_date: Option<&str>,
    end_date: Option<&str>,
) -> Result<Window> {
    let tz = timezone.map(parse_timezone).transpose()?;
    let zone = tz.unwrap_or(Tz::UTC);
    let start = start_date
        .map(|s| tz::parse_datetime("start_date", s, zone))
        .transpose()?;
    let end = end_date
        .map(|s| tz::parse_datetime("end_date", s, zone))
        .transpose()?;
    Ok((tz, start, end))
}

/// Writes a [`Window`] as the JSON strings `timezone`, `start_date`, `end_date`.
pub(crate) fn write_window(
    (tz, start, end): Window,
) -> (Option<String>, Option<String>, Option<String>) {
    let zone = tz.unwrap_or(Tz::UTC);
    (
        tz.map(|tz| tz.name().to_string()),
        start.map(|s| tz::format_datetime(s, zone)),
        end.map(|e| tz::format_datetime(e, zone)),
    )
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
