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

/// Implements [`Trigger::to_json`] and [`Trigger::to_json_text`] for a
/// built-in trigger from its inherent `spec() -> BuiltinSpec`.
macro_rules! spec_json {
    () => {
        fn to_json(&self) -> Value {
            self.spec().to_json()
        }

        fn to_json_text(&self) -> String {
            self.spec().to_text()
        }
    };
}

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
pub trait Trigger: std::any::Any + Send + Sync + fmt::Debug {
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

    /// The trigger's JSON form as compact text, as stored in job content.
    ///
    /// It must be the same JSON as [`to_json`](Trigger::to_json) (keys in any
    /// order); the default writes `to_json`, which is all an implementation
    /// needs. The built-in triggers write their text without building a value.
    fn to_json_text(&self) -> String {
        self.to_json().to_string()
    }
}

/// The spec of a single built-in trigger, which serialises as its
/// [`Trigger::to_json_text`] does; `None` for any other trigger.
pub(crate) fn builtin_spec(t: &dyn Trigger) -> Option<BuiltinSpec> {
    let t: &dyn std::any::Any = t;
    if let Some(boxed) = t.downcast_ref::<Box<dyn Trigger>>() {
        builtin_spec(boxed.as_ref())
    } else if let Some(t) = t.downcast_ref::<DateTrigger>() {
        Some(t.spec())
    } else if let Some(t) = t.downcast_ref::<IntervalTrigger>() {
        Some(t.spec())
    } else if let Some(t) = t.downcast_ref::<CronTrigger>() {
        Some(t.spec())
    } else {
        t.downcast_ref::<CalendarIntervalTrigger>()
            .map(|t| t.spec())
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
    fn to_json_text(&self) -> String {
        (**self).to_json_text()
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

    /// Parses trigger JSON text as [`TriggerRegistry::parse`] parses its value.
    pub(crate) fn parse_text(&self, text: &str) -> Result<Box<dyn Trigger>> {
        if let Some(spec) = spec::read_plain_builtin(text) {
            return self.build(spec);
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid_trigger("trigger", text, e.to_string()))?;
        self.parse(&value)
    }

    /// The trigger a built-in spec describes.
    fn build(&self, spec: BuiltinSpec) -> Result<Box<dyn Trigger>> {
        Ok(match spec {
            BuiltinSpec::Date(s) => Box::new(DateTrigger::from_spec(s)?),
            BuiltinSpec::Interval(s) => Box::new(IntervalTrigger::from_spec(s)?),
            BuiltinSpec::Cron(s) => Box::new(CronTrigger::from_spec(s)?),
            BuiltinSpec::CalendarInterval(s) => Box::new(CalendarIntervalTrigger::from_spec(s)?),
            BuiltinSpec::And(s) => Box::new(AndTrigger::from_spec(s, self)?),
            BuiltinSpec::Or(s) => Box::new(OrTrigger::from_spec(s, self)?),
        })
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
            return self.build(spec);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Content written from a built-in trigger's spec is, byte for byte, the
    /// content written from its JSON text, before and after `prepare`; a
    /// boxed built-in is seen through, and a combination is not a spec.
    #[test]
    fn content_from_a_spec_is_the_content_from_its_text() {
        use crate::job::{JobContent, JobOptions};
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let triggers: Vec<Box<dyn Trigger>> = vec![
            Box::new(DateTrigger::at(at("2026-05-01T10:00:00Z"))),
            Box::new(DateTrigger::at_local("2026-03-29 02:30:00", "Europe/Berlin").unwrap()),
            Box::new(IntervalTrigger::every(std::time::Duration::from_secs(90)).unwrap()),
            Box::new(
                IntervalTrigger::builder()
                    .weeks(1)
                    .hours(3)
                    .start_date(at("2026-01-01T00:00:00Z"))
                    .end_date(at("2027-01-01T00:00:00Z"))
                    .jitter(30)
                    .timezone("Asia/Shanghai")
                    .build()
                    .unwrap(),
            ),
            Box::new(CronTrigger::from_crontab("0 9 * * 1-5").unwrap()),
            Box::new(
                CronTrigger::fields()
                    .day("last")
                    .hour("*/6")
                    .second("5")
                    .timezone("America/New_York")
                    .start_date(at("2026-02-01T00:00:00Z"))
                    .jitter(5)
                    .build()
                    .unwrap(),
            ),
            Box::new(
                CalendarIntervalTrigger::builder()
                    .months(1)
                    .time(7, 30, 0)
                    .timezone("Europe/London")
                    .build()
                    .unwrap(),
            ),
            Box::new(Box::new(DateTrigger::at(at("2026-05-01T10:00:00Z"))) as Box<dyn Trigger>),
        ];
        let options = JobOptions {
            name: Some("n \"q\" \u{e9}".into()),
            ..JobOptions::default()
        };
        let args = json!({"a": [1, "x"]});
        let now = at("2026-01-15T12:00:00Z");
        for mut t in triggers {
            for _ in 0..2 {
                let spec = builtin_spec(t.as_ref()).unwrap_or_else(|| panic!("{t:?}"));
                let from_spec = JobContent::encode_with("t", &spec, &args, &options);
                let from_text =
                    JobContent::encode_parts("t", &t.to_json_text(), &args, &options).unwrap();
                assert_eq!(from_spec.as_str(), from_text.as_str(), "{t:?}");
                t.prepare(now, chrono_tz::Asia::Tokyo);
            }
        }
        let or = OrTrigger::new(vec![Box::new(
            IntervalTrigger::every(std::time::Duration::from_secs(60)).unwrap(),
        )])
        .unwrap();
        assert!(builtin_spec(&or).is_none());
    }

    /// `parse_text` gives what `parse` gives for the same JSON: the same
    /// trigger (by its JSON form) or the same error.
    fn same_as_parse(text: &str) {
        let reg = TriggerRegistry::new();
        let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let by_text = reg.parse_text(text).map(|t| t.to_json());
        let by_value = reg.parse(&value).map(|t| t.to_json());
        match (&by_text, &by_value) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{text}"),
            _ => panic!("{text}: parse_text {by_text:?}, parse {by_value:?}"),
        }
    }

    #[test]
    fn text_reads_as_the_value_does() {
        // As this build writes them (the quick path).
        for spec in [
            json!({"type": "date", "run_date": "2030-01-01T00:00:00.5+00:00", "timezone": "Europe/Paris"}),
            json!({"type": "interval", "minutes": 5, "start_date": "2030-01-01T00:00:00+00:00", "jitter": 3}),
            json!({"type": "cron", "crontab": "0 9 * * 1-5", "timezone": "Asia/Shanghai"}),
            json!({"type": "cron", "hour": "9", "day": "last fri"}),
            json!({"type": "calendar_interval", "months": 1, "hour": 9}),
            json!({"type": "cron", "hour": 9, "minute": "*/15", "timezone": null}),
            json!({"type": "and", "triggers": [{"type": "interval", "hours": 1}, {"type": "cron", "hour": "*/2"}]}),
        ] {
            let reg = TriggerRegistry::new();
            let trigger = reg.parse(&spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            let written = trigger.to_json();
            // The text the trigger writes itself is the same JSON, and the
            // quick reading takes it too.
            let own_text = trigger.to_json_text();
            let own: Value =
                serde_json::from_str(&own_text).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(own, written, "{spec}");
            assert_eq!(
                spec::read_plain_builtin(&own_text).is_some(),
                spec["type"] != "and",
                "{own_text}"
            );
            same_as_parse(&own_text);
            let text = written.to_string();
            // The single built-in types take the quick path.
            assert_eq!(
                spec::read_plain_builtin(&text).is_some(),
                spec["type"] != "and",
                "{text}"
            );
            same_as_parse(&text);
            same_as_parse(&spec.to_string());
        }
        // Other layouts and bad input (the slow path, or an error either way).
        for text in [
            r#"{"type":"date","run_date":"2030-01-01T00:00:00+00:00","timezone":null}"#,
            r#"{"type":"interval","minutes":null,"seconds":5}"#,
            r#"{"type":"interval","v":1,"seconds":5}"#,
            r#"{"type":"interval","v":2,"seconds":5}"#,
            r#"{ "type": "interval", "seconds": 5 }"#,
            r#"{"seconds":5,"type":"interval"}"#,
            r#"{"type":"interval","seconds":5,"type":"cron"}"#,
            r#"{"type":"interval","seconds":5,"seconds":6}"#,
            r#"{"type":"interval","minutes":-5}"#,
            r#"{"type":"cron","minuet":"5"}"#,
            r#"{"type":"cron","hour":"25"}"#,
            r#"{"type":"date"}"#,
            r#"{"type":"date","run_date":"2025-01-01 10:00:60"}"#,
            r#"{"type":"da\u0074e","run_date":"2030-01-01T00:00:00+00:00"}"#,
            r#"{"type":"sometimes","seconds":5}"#,
            r#"{"type":"interval"}"#,
            r#"{"type":5}"#,
            r#"{"a":{"type":"interval"},"type":"interval","seconds":5}"#,
            r#"{"type":"interval","seconds":18446744073709551616}"#,
            r#"{"type":"interval","seconds":5.0}"#,
            r#"{"type":"cron","hour":1e3}"#,
            r#"[{"type":"interval","seconds":5}]"#,
            r#"[1,2]"#,
        ] {
            same_as_parse(text);
        }
    }
}
