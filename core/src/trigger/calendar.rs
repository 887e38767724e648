//! Calendar-interval trigger: wall-clock steps of years, months, weeks and days.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use super::spec::{self, BuiltinSpec, CalendarIntervalSpec};
use super::tz::{parse_date, parse_timezone, resolve_fixed};
use super::Trigger;
use crate::error::{Error, Result};

/// Fires at a fixed wall-clock time on dates a calendar step apart
/// (e.g. every month on the 31st at 09:00 — months without a 31st are skipped).
///
/// DST: a fire time in a spring-forward gap moves forward by the gap's length; a
/// fire time in a fall-back fold fires once, at its first occurrence.
///
/// # Examples
/// ```
/// use sundial_core::trigger::{CalendarIntervalTrigger, Trigger};
/// use chrono::{NaiveDate, TimeZone, Utc};
///
/// let t = CalendarIntervalTrigger::builder()
///     .months(1)
///     .time(9, 0, 0)
///     .start_date(NaiveDate::from_ymd_opt(2026, 1, 31).unwrap())
///     .timezone("Europe/London")
///     .build()?;
/// let first = t.next_fire_time(None, Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap())?.unwrap();
/// let second = t.next_fire_time(Some(first), first)?.unwrap();
/// assert_eq!(second.to_rfc3339(), "2026-03-31T08:00:00+00:00"); // February skipped, BST
/// # Ok::<(), sundial_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CalendarIntervalTrigger {
    years: u32,
    months: u32,
    weeks: u32,
    days: u32,
    time: NaiveTime,
    start: Option<NaiveDate>,
    end: Option<NaiveDate>,
    tz: Option<Tz>,
}

/// Builder for a [`CalendarIntervalTrigger`].
#[derive(Clone, Debug, Default)]
pub struct CalendarIntervalBuilder {
    steps: [u32; 4],
    time: (u32, u32, u32),
    start: Option<NaiveDate>,
    end: Option<NaiveDate>,
    timezone: Option<String>,
}

impl CalendarIntervalBuilder {
    /// Steps this many years.
    pub fn years(mut self, n: u32) -> Self {
        self.steps[0] = n;
        self
    }
    /// Steps this many months.
    pub fn months(mut self, n: u32) -> Self {
        self.steps[1] = n;
        self
    }
    /// Steps this many weeks.
    pub fn weeks(mut self, n: u32) -> Self {
        self.steps[2] = n;
        self
    }
    /// Steps this many days.
    pub fn days(mut self, n: u32) -> Self {
        self.steps[3] = n;
        self
    }
    /// Sets the wall-clock fire time (default 00:00:00).
    pub fn time(mut self, hour: u32, minute: u32, second: u32) -> Self {
        self.time = (hour, minute, second);
        self
    }
    /// Sets the first date (default: the day the job is added).
    pub fn start_date(mut self, d: NaiveDate) -> Self {
        self.start = Some(d);
        self
    }
    /// Sets the last possible date (inclusive).
    pub fn end_date(mut self, d: NaiveDate) -> Self {
        self.end = Some(d);
        self
    }
    /// Sets the IANA time zone.
    pub fn timezone(mut self, name: impl Into<String>) -> Self {
        self.timezone = Some(name.into());
        self
    }
    /// Validates and builds the trigger.
    ///
    /// # Errors
    /// [`Error::InvalidTrigger`] for a zero step, an invalid time, an unknown zone
    /// or an end before the start.
    pub fn build(self) -> Result<CalendarIntervalTrigger> {
        let tz = self.timezone.as_deref().map(parse_timezone).transpose()?;
        CalendarIntervalTrigger::compile(self.steps, self.time, self.start, self.end, tz)
    }
}

impl CalendarIntervalTrigger {
    /// Starts building a calendar interval.
    pub fn builder() -> CalendarIntervalBuilder {
        CalendarIntervalBuilder::default()
    }

    fn compile(
        steps: [u32; 4],
        (h, m, s): (u32, u32, u32),
        start: Option<NaiveDate>,
        end: Option<NaiveDate>,
        tz: Option<Tz>,
    ) -> Result<Self> {
        if steps.iter().all(|&s| s == 0) {
            return Err(Error::invalid_trigger(
                "interval",
                "0",
                "set at least one of years, months, weeks or days",
            ));
        }
        for (name, v, max) in [("hour", h, 23), ("minute", m, 59), ("second", s, 59)] {
            if v > max {
                return Err(Error::invalid_trigger(
                    name,
                    v,
                    format!("value {v} is out of range 0-{max}"),
                ));
            }
        }
        if let (Some(a), Some(b)) = (start, end) {
            if b < a {
                return Err(Error::invalid_trigger(
                    "end_date",
                    b,
                    format!("end_date is before start_date ({a})"),
                ));
            }
        }
        Ok(CalendarIntervalTrigger {
            years: steps[0],
            months: steps[1],
            weeks: steps[2],
            days: steps[3],
            time: NaiveTime::from_hms_opt(h, m, s).unwrap_or(NaiveTime::MIN),
            start,
            end,
            tz,
        })
    }

    /// Parses the JSON form (`{"type": "calendar_interval", "months": 1, ...}`).
    ///
    /// # Errors
    /// [`Error::InvalidTrigger`] for unknown fields and invalid values.
    pub fn from_json(value: &Value) -> Result<Self> {
        Self::from_spec(spec::read(value, "calendar_interval")?)
    }

    pub(super) fn from_spec(spec: CalendarIntervalSpec) -> Result<Self> {
        let tz = spec.timezone.as_deref().map(parse_timezone).transpose()?;
        let start = spec
            .start_date
            .map(|s| parse_date("start_date", &s))
            .transpose()?;
        let end = spec
            .end_date
            .map(|s| parse_date("end_date", &s))
            .transpose()?;
        Self::compile(
            [spec.years, spec.months, spec.weeks, spec.days],
            (spec.hour, spec.minute, spec.second),
            start,
            end,
            tz,
        )
    }

    /// The next date after `d`: add years and months (skipping dates that do
    /// not exist), then weeks and days.
    fn step(&self, d: NaiveDate) -> Option<NaiveDate> {
        let mut next = d;
        if self.years != 0 || self.months != 0 {
            let (mut y, mut m) = (d.year(), d.month0());
            let mut found = None;
            for _ in 0..400 {
                let total = m + self.months;
                y = y.checked_add(i32::try_from(self.years + total / 12).ok()?)?;
                m = total % 12;
                if let Some(date) = NaiveDate::from_ymd_opt(y, m + 1, d.day()) {
                    found = Some(date);
                    break;
                }
            }
            next = found?;
        }
        next.checked_add_signed(Duration::days(
            i64::from(self.weeks) * 7 + i64::from(self.days),
        ))
    }

    fn fire_at(&self, d: NaiveDate, tz: Tz) -> DateTime<Utc> {
        resolve_fixed(tz, d.and_time(self.time))
    }
}

impl CalendarIntervalTrigger {
    /// The next fire time, `None` when exhausted (see [`Trigger::next_fire_time`]).
    fn next_fire(
        &self,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let tz = self.tz.unwrap_or(Tz::UTC);
        let mut date = match previous {
            Some(p) => {
                let mut d = self.step(p.with_timezone(&tz).date_naive())?;
                // A gap-shifted previous fire keeps its date; step until strictly later.
                while self.fire_at(d, tz) <= p {
                    d = self.step(d)?;
                }
                d
            }
            None => {
                let mut d = self
                    .start
                    .unwrap_or_else(|| now.with_timezone(&tz).date_naive());
                let whole_days = self.years == 0 && self.months == 0;
                let step_days = i64::from(self.weeks) * 7 + i64::from(self.days);
                if whole_days && step_days > 0 {
                    // Jump close to `now` instead of stepping one by one.
                    let today = now.with_timezone(&tz).date_naive();
                    let behind = (today - d).num_days() - 1;
                    if behind > step_days {
                        d = d.checked_add_signed(Duration::days(behind / step_days * step_days))?;
                    }
                }
                let mut guard = 0u32;
                while self.fire_at(d, tz) < now {
                    d = self.step(d)?;
                    guard += 1;
                    if guard > 200_000 {
                        return None;
                    }
                }
                d
            }
        };
        if let Some(start) = self.start {
            while date < start {
                date = self.step(date)?;
            }
        }
        if self.end.is_some_and(|e| date > e) {
            return None;
        }
        Some(self.fire_at(date, tz))
    }
}

impl CalendarIntervalTrigger {
    /// The trigger's JSON form as its spec.
    pub(crate) fn spec(&self) -> BuiltinSpec {
        use chrono::Timelike;
        BuiltinSpec::CalendarInterval(CalendarIntervalSpec {
            years: self.years,
            months: self.months,
            weeks: self.weeks,
            days: self.days,
            hour: self.time.hour(),
            minute: self.time.minute(),
            second: self.time.second(),
            start_date: self.start.map(|d| d.to_string()),
            end_date: self.end.map(|d| d.to_string()),
            timezone: self.tz.map(|tz| tz.name().to_string()),
        })
    }
}

impl Trigger for CalendarIntervalTrigger {
    infallible_next_fire_time!();

    spec_json!();

    fn timezone(&self) -> Option<Tz> {
        self.tz
    }

    fn prepare(&mut self, now: DateTime<Utc>, default_timezone: Tz) {
        if self.tz.is_none() {
            self.tz = Some(default_timezone);
        }
        if self.start.is_none() {
            let tz = self.tz.unwrap_or(default_timezone);
            self.start = Some(now.with_timezone(&tz).date_naive());
        }
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (name, v) in [
            ("years", self.years),
            ("months", self.months),
            ("weeks", self.weeks),
            ("days", self.days),
        ] {
            if v != 0 {
                parts.push(format!("{name}={v}"));
            }
        }
        parts.push(format!("time={}", self.time));
        format!("calendar_interval[{}]", parts.join(", "))
    }
}
