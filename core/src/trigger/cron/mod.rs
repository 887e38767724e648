//! Cron triggers: APScheduler field form and POSIX crontab form.

use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use super::jitter::{Jitter, JitterSource};
use super::spec::{self, BuiltinSpec, CronField, CronSpec};
use super::tz::{offset_at, parse_timezone, resolve_fixed};
use super::{check_range, read_window, write_window, Trigger};
use crate::error::{Error, Result};

mod parse;
mod schedule;

use parse::{compile_crontab, compile_fields, Fields, Spec};
use schedule::Schedule;

/// How many distinct candidate years a search examines before it declares a
/// cron trigger exhausted. The Gregorian calendar repeats every 400 years, so a
/// schedule with no match in 401 candidate years never matches.
pub const SEARCH_HORIZON_YEARS: u32 = 401;

/// The cron trigger's field names, from the largest unit to the smallest.
pub const FIELD_NAMES: [&str; 8] = [
    "year",
    "month",
    "day",
    "week",
    "day_of_week",
    "hour",
    "minute",
    "second",
];
const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const POSIX_WEEKDAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Fires when the wall-clock time in its zone matches cron fields.
///
/// Build it from APScheduler-style fields with [`CronTrigger::fields`], or from a
/// POSIX crontab line with [`CronTrigger::from_crontab`].
///
/// # DST
/// A schedule whose hour field is restricted (`0 9 * * *`) is a *fixed-time*
/// schedule: a wall time that a spring-forward gap skips fires once, moved
/// forward by the gap's length (02:30 → 03:30 in New York), and a wall time
/// repeated by a fall-back fold fires once, at its first occurrence. A schedule
/// whose hour field starts with `*` (`*/15 * * * *`) follows real time: wall
/// times in a gap do not exist and do not fire, and repeated wall times fire on
/// both occurrences.
///
/// # Differences from APScheduler 3
/// - `from_crontab` uses POSIX day-of-week numbers (0 and 7 are Sunday) and
///   cron's rule that, with both day-of-month and day-of-week restricted, a day
///   matches if **either** does. APScheduler reads 0 as Monday and requires both.
/// - Fixed-time schedules fire once on DST changes (see above); APScheduler can
///   fire twice in a fold, return non-existent wall times, or skip a month.
///
/// # Examples
/// ```
/// use sundial_core::trigger::{CronTrigger, Trigger};
/// use chrono::{TimeZone, Utc};
///
/// let t = CronTrigger::from_crontab("0 9 * * 1-5")?.with_timezone("Asia/Shanghai")?;
/// let now = Utc.with_ymd_and_hms(2026, 3, 6, 0, 0, 0).unwrap(); // Friday 08:00 in Shanghai
/// let next = t.next_fire_time(None, now)?.unwrap();
/// assert_eq!(next.to_rfc3339(), "2026-03-06T01:00:00+00:00");
/// # Ok::<(), sundial_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct CronTrigger {
    spec: Spec,
    schedule: Schedule,
    fixed_time: bool,
    tz: Option<Tz>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    jitter: Jitter,
}

impl PartialEq for CronTrigger {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
            && self.tz == other.tz
            && self.start == other.start
            && self.end == other.end
            && self.jitter == other.jitter
    }
}

/// Builder for a field-form [`CronTrigger`] (APScheduler's `CronTrigger(...)` arguments).
#[derive(Clone, Debug, Default)]
pub struct CronFields {
    fields: Fields,
    timezone: Option<String>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    jitter: Option<u64>,
}

macro_rules! field_setter {
    ($name:ident, $idx:expr, $doc:literal) => {
        #[doc = $doc]
        pub fn $name(mut self, expr: impl ToString) -> Self {
            self.fields.values[$idx] = Some(expr.to_string());
            self
        }
    };
}

impl CronFields {
    field_setter!(year, 0, "Sets the year field (4 digits, 1970-9999).");
    field_setter!(month, 1, "Sets the month field (1-12 or jan-dec).");
    field_setter!(
        day,
        2,
        "Sets the day field (1-31, `last`, `3rd fri`, `last sun`)."
    );
    field_setter!(week, 3, "Sets the ISO week field (1-53).");
    field_setter!(
        day_of_week,
        4,
        "Sets the day-of-week field (0-6 with mon=0, or mon-sun)."
    );
    field_setter!(hour, 5, "Sets the hour field (0-23).");
    field_setter!(minute, 6, "Sets the minute field (0-59).");
    field_setter!(second, 7, "Sets the second field (0-59).");

    /// Sets the IANA time zone the fields are matched in.
    pub fn timezone(mut self, name: impl Into<String>) -> Self {
        self.timezone = Some(name.into());
        self
    }

    /// Sets the earliest possible fire time.
    pub fn start_date(mut self, t: DateTime<Utc>) -> Self {
        self.start = Some(t);
        self
    }

    /// Sets the latest possible fire time.
    pub fn end_date(mut self, t: DateTime<Utc>) -> Self {
        self.end = Some(t);
        self
    }

    /// Adds up to `seconds` of random delay to each fire time.
    pub fn jitter(mut self, seconds: u64) -> Self {
        self.jitter = Some(seconds);
        self
    }

    /// Validates the fields and builds the trigger.
    ///
    /// # Errors
    /// [`Error::InvalidTrigger`] naming the first invalid field.
    pub fn build(self) -> Result<CronTrigger> {
        let tz = self.timezone.as_deref().map(parse_timezone).transpose()?;
        CronTrigger::compile(
            Spec::Fields(self.fields),
            tz,
            self.start,
            self.end,
            self.jitter,
        )
    }
}

impl CronTrigger {
    /// Starts a field-form trigger (APScheduler's `CronTrigger(hour=..., ...)`).
    pub fn fields() -> CronFields {
        CronFields::default()
    }

    /// Parses a crontab expression: 5 fields (`m h dom mon dow`), 6 fields
    /// (seconds first), or a macro (`@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`).
    ///
    /// # Errors
    /// [`Error::InvalidTrigger`] naming the invalid field.
    pub fn from_crontab(expr: &str) -> Result<CronTrigger> {
        CronTrigger::compile(
            Spec::Crontab(expr.trim().to_string()),
            None,
            None,
            None,
            None,
        )
    }

    /// Sets the IANA time zone.
    ///
    /// # Errors
    /// [`Error::InvalidTrigger`] when the zone is unknown.
    pub fn with_timezone(mut self, name: &str) -> Result<Self> {
        self.tz = Some(parse_timezone(name)?);
        Ok(self)
    }

    /// Sets the time zone.
    pub fn with_tz(mut self, tz: Tz) -> Self {
        self.tz = Some(tz);
        self
    }

    /// Sets the earliest possible fire time.
    ///
    /// # Errors
    /// [`Error::InvalidTrigger`] when it is after the end date.
    pub fn with_start_date(mut self, t: DateTime<Utc>) -> Result<Self> {
        check_range(Some(t), self.end)?;
        self.start = Some(t);
        Ok(self)
    }

    /// Sets the latest possible fire time.
    ///
    /// # Errors
    /// [`Error::InvalidTrigger`] when it is before the start date.
    pub fn with_end_date(mut self, t: DateTime<Utc>) -> Result<Self> {
        check_range(self.start, Some(t))?;
        self.end = Some(t);
        Ok(self)
    }

    /// Adds up to `seconds` of random delay to each fire time.
    pub fn with_jitter(mut self, seconds: u64) -> Self {
        self.jitter.seconds = Some(seconds);
        self
    }

    /// Uses `source` for jitter (seeded sources make tests deterministic).
    pub fn with_jitter_source(mut self, source: Arc<dyn JitterSource>) -> Self {
        self.jitter.source = source;
        self
    }

    fn compile(
        spec: Spec,
        tz: Option<Tz>,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        jitter: Option<u64>,
    ) -> Result<CronTrigger> {
        check_range(start, end)?;
        let (schedule, fixed_time) = match &spec {
            Spec::Fields(f) => compile_fields(f)?,
            Spec::Crontab(c) => compile_crontab(c)?,
        };
        Ok(CronTrigger {
            spec,
            schedule,
            fixed_time,
            tz,
            start,
            end,
            jitter: Jitter {
                seconds: jitter,
                ..Jitter::default()
            },
        })
    }

    /// Parses the JSON form (`{"type": "cron", ...}`).
    ///
    /// # Errors
    /// [`Error::InvalidTrigger`] for unknown fields and invalid values.
    pub fn from_json(value: &Value) -> Result<CronTrigger> {
        Self::from_spec(spec::read(value, "cron")?)
    }

    pub(in crate::trigger) fn from_spec(spec: CronSpec) -> Result<CronTrigger> {
        let (tz, start, end) = read_window(
            spec.timezone.as_deref(),
            spec.start_date.as_deref(),
            spec.end_date.as_deref(),
        )?;
        let values = [
            spec.year,
            spec.month,
            spec.day,
            spec.week,
            spec.day_of_week,
            spec.hour,
            spec.minute,
            spec.second,
        ]
        .map(|field| field.map(|CronField(v)| v));
        let cron_spec = match spec.crontab {
            Some(c) if values.iter().any(Option::is_some) => {
                return Err(Error::invalid_trigger(
                    "crontab",
                    c,
                    "give either \"crontab\" or the separate cron fields, not both",
                ))
            }
            Some(c) => Spec::Crontab(c.trim().to_string()),
            None => Spec::Fields(Fields { values }),
        };
        CronTrigger::compile(cron_spec, tz, start, end, spec.jitter)
    }

    /// Whether DST changes use fixed-time rules (hour field restricted).
    pub fn is_fixed_time(&self) -> bool {
        self.fixed_time
    }

    /// The first matching instant at or after `start`.
    fn next_at_or_after(&self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tz = self.tz.unwrap_or(Tz::UTC);
        if self.fixed_time {
            let mut wall = start.with_timezone(&tz).naive_local();
            // Each retry skips one fold occurrence; a handful always suffices.
            for _ in 0..8 {
                let n = self.schedule.next_naive(wall)?;
                let t = resolve_fixed(tz, n);
                if t >= start {
                    return Some(t);
                }
                wall = n + Duration::seconds(1);
            }
            None
        } else {
            let mut s = start;
            for _ in 0..8 {
                let off = offset_at(tz, s.naive_utc());
                let wall = s.naive_utc() + Duration::seconds(i64::from(off.local_minus_utc()));
                let n = self.schedule.next_naive(wall)?;
                let t = (n - Duration::seconds(i64::from(off.local_minus_utc()))).and_utc();
                if offset_at(tz, t.naive_utc()) == off {
                    return Some(t);
                }
                s = first_offset_change(tz, s, t);
            }
            None
        }
    }
}

/// The first whole second in `(lo, hi]` whose UTC offset differs from `lo`'s.
fn first_offset_change(tz: Tz, lo: DateTime<Utc>, hi: DateTime<Utc>) -> DateTime<Utc> {
    let off = offset_at(tz, lo.naive_utc());
    let (mut a, mut b) = (lo.timestamp(), hi.timestamp());
    while b - a > 1 {
        let mid = a + (b - a) / 2;
        match DateTime::from_timestamp(mid, 0) {
            Some(m) if offset_at(tz, m.naive_utc()) == off => a = mid,
            _ => b = mid,
        }
    }
    DateTime::from_timestamp(b, 0).unwrap_or(hi)
}

impl CronTrigger {
    /// The next fire time, `None` when exhausted (see [`Trigger::next_fire_time`]).
    fn next_fire(
        &self,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut start = match previous {
            Some(p) => p.checked_add_signed(Duration::microseconds(1))?,
            None => now,
        };
        if let Some(s) = self.start {
            start = start.max(s);
        }
        // Fire times are whole seconds: round up.
        if start.timestamp_subsec_nanos() != 0 {
            start = DateTime::from_timestamp(start.timestamp() + 1, 0)?;
        }
        let next = self.next_at_or_after(start)?;
        if self.end.is_some_and(|e| next > e) {
            return None;
        }
        Some(self.jitter.apply(next))
    }
}

impl CronTrigger {
    /// The trigger's JSON form as its spec.
    pub(crate) fn spec(&self) -> BuiltinSpec {
        let (timezone, start_date, end_date) = write_window((self.tz, self.start, self.end));
        let mut spec = CronSpec {
            start_date,
            end_date,
            timezone,
            jitter: self.jitter.seconds,
            ..CronSpec::default()
        };
        match &self.spec {
            Spec::Crontab(c) => spec.crontab = Some(c.clone()),
            Spec::Fields(f) => {
                let [year, month, day, week, day_of_week, hour, minute, second] =
                    f.values.clone().map(|v| v.map(CronField));
                spec = CronSpec {
                    year,
                    month,
                    day,
                    week,
                    day_of_week,
                    hour,
                    minute,
                    second,
                    ..spec
                };
            }
        }
        BuiltinSpec::Cron(spec)
    }
}

impl Trigger for CronTrigger {
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
        let mut s = String::from("cron[");
        match &self.spec {
            Spec::Crontab(c) => s.push_str(c),
            Spec::Fields(f) => {
                let mut first = true;
                for (i, name) in FIELD_NAMES.iter().enumerate() {
                    if let Some(v) = &f.values[i] {
                        if !first {
                            s.push_str(", ");
                        }
                        first = false;
                        let _ = write!(s, "{name}='{v}'");
                    }
                }
            }
        }
        if let Some(tz) = self.tz {
            let _ = write!(s, ", {}", tz.name());
        }
        s.push(']');
        s
    }
}
