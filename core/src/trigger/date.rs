//! One-shot trigger.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use super::spec::{self, BuiltinSpec, DateSpec};
use super::tz::{format_datetime, parse_datetime, parse_timezone};
use super::Trigger;
use crate::error::Result;

/// Fires once, at `run_date`.
///
/// # Examples
/// ```
/// use sundial_core::trigger::{DateTrigger, Trigger};
/// use chrono::{Duration, Utc};
///
/// let t = DateTrigger::at(Utc::now() + Duration::minutes(15));
/// // Instants are kept in whole microseconds, the precision every store keeps.
/// let at = t.run_date();
/// assert_eq!(at.timestamp_subsec_nanos() % 1_000, 0);
/// assert_eq!(t.next_fire_time(None, Utc::now())?, Some(at));
/// assert_eq!(t.next_fire_time(Some(at), Utc::now())?, None);
/// # Ok::<(), sundial_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct DateTrigger {
    run_date: DateTime<Utc>,
    tz: Option<Tz>,
}

impl DateTrigger {
    /// Fires once at `run_date`, cut to whole microseconds (any zone; the zone is kept for display).
    pub fn at<Z: TimeZone>(run_date: DateTime<Z>) -> Self {
        DateTrigger {
            run_date: crate::job::trunc_micros(run_date.with_timezone(&Utc)),
            tz: None,
        }
    }

    /// Fires once at a wall time in the named zone, such as `2026-03-01 09:00:00`
    /// (RFC 3339 with an offset is accepted too).
    ///
    /// # Errors
    /// [`Error::InvalidTrigger`](crate::Error::InvalidTrigger) for an unknown zone or an unreadable date.
    pub fn at_local(run_date: &str, timezone: &str) -> Result<Self> {
        let tz = parse_timezone(timezone)?;
        Ok(DateTrigger {
            run_date: parse_datetime("run_date", run_date, tz)?,
            tz: Some(tz),
        })
    }

    /// The instant the trigger fires at.
    pub fn run_date(&self) -> DateTime<Utc> {
        self.run_date
    }

    /// Parses the JSON form (`{"type": "date", "run_date": ...}`).
    ///
    /// # Errors
    /// [`Error::InvalidTrigger`](crate::Error::InvalidTrigger) for unknown fields and invalid values.
    pub fn from_json(value: &Value) -> Result<Self> {
        Self::from_spec(spec::read(value, "date")?)
    }

    pub(super) fn from_spec(spec: DateSpec) -> Result<Self> {
        let tz = spec.timezone.as_deref().map(parse_timezone).transpose()?;
        Ok(DateTrigger {
            run_date: parse_datetime("run_date", &spec.run_date, tz.unwrap_or(Tz::UTC))?,
            tz,
        })
    }
}

impl DateTrigger {
    /// The next fire time, `None` when exhausted (see [`Trigger::next_fire_time`]).
    fn next_fire(
        &self,
        previous: Option<DateTime<Utc>>,
        _now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        previous.is_none().then_some(self.run_date)
    }
}

impl DateTrigger {
    /// The trigger's JSON form as its spec.
    pub(crate) fn spec(&self) -> BuiltinSpec {
        BuiltinSpec::Date(DateSpec {
            run_date: format_datetime(self.run_date, self.tz.unwrap_or(Tz::UTC)),
            timezone: self.tz.map(|tz| tz.name().to_string()),
        })
    }
}

impl Trigger for DateTrigger {
    infallible_next_fire_time!();

    spec_json!();

    fn timezone(&self) -> Option<Tz> {
        self.tz
    }

    fn prepare(&mut self, _now: DateTime<Utc>, default_timezone: Tz) {
        if self.tz.is_none() {
            self.tz = Some(default_timezone);
        }
    }

    fn describe(&self) -> String {
        format!(
            "date[{}]",
            format_datetime(self.run_date, self.tz.unwrap_or(Tz::UTC))
        )
    }
}
