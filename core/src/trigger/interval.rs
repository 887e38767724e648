//! Elapsed-time interval trigger.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use super::jitter::{Jitter, JitterSource};
use super::spec::{self, BuiltinSpec, IntervalSpec};
use super::tz::parse_timezone;
use super::{check_range, read_window, write_window, Trigger};
use crate::error::{Error, Result};

/// Fires every fixed amount of elapsed time (unaffected by DST), from `start_date`.
///
/// Without a start date the first fire is one interval after the job is added
/// (the scheduler fixes the start then, so restarts keep the rhythm).
///
/// # Examples
/// ```
/// use sundial_core::trigger::{IntervalTrigger, Trigger};
/// use chrono::{TimeZone, Utc};
///
/// let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
/// let t = IntervalTrigger::builder().minutes(15).start_date(start).build()?;
/// let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 20, 0).unwrap();
/// assert_eq!(t.next_fire_time(None, now)?, Some(start + chrono::Duration::minutes(30)));
/// # Ok::<(), sundial_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalTrigger {
    parts: [u64; 5],
    interval: Duration,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    tz: Option<Tz>,
    jitter: Jitter,
}

const PART_NAMES: [&str; 5] = ["weeks", "days", "hours", "minutes", "seconds"];
const PART_SECONDS: [u64; 5] = [604_800, 86_400, 3_600, 60, 1];

/// Builder for an [`IntervalTrigger`].
#[derive(Clone, Debug, Default)]
pub struct IntervalBuilder {
    parts: [u64; 5],
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    timezone: Option<String>,
    jitter: Option<u64>,
    source: Option<Arc<dyn JitterSource>>,
}

macro_rules! part_setter {
    ($name:ident, $idx:expr, $doc:literal) => {
        #[doc = $doc]
        pub fn $name(mut self, n: u64) -> Self {
            self.parts[$idx] = n;
            self
        }
    };
}

impl IntervalBuilder {
    part_setter!(weeks, 0, "Adds weeks to the interval.");
    part_setter!(days, 1, "Adds days to the interval.");
    part_setter!(hours, 2, "Adds hours to the interval.");
    part_setter!(minutes, 3, "Adds minutes to the interval.");
    part_setter!(seconds, 4, "Adds seconds to the interval.");

    /// Sets the first fire time.
    pub fn start_date(mut self, t: DateTime<Utc>) -> Self {
        self.start = Some(t);
        self
    }

    /// Sets the latest possible fire time.
    pub fn end_date(mut self, t: DateTime<Utc>) -> Self {
        self.end = Some(t);
        self
    }

    /// Sets the zone used to display times (intervals count elapsed time).
    pub fn timezone(mut self, name: impl Into<String>) -> Self {
        self.timezone = Some(name.into());
        self
    }

    /// Adds up to `seconds` of random delay to each fire time.
    pub fn jitter(mut self, seconds: u64) -> Self {
        self.jitter = Some(seconds);
        self
    }

    /// Uses `source` for jitter.
    pub fn jitter_source(mut self, source: Arc<dyn JitterSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// Validates and builds the trigger.
    ///
    /// # Errors
    /// [`Error::InvalidTrigger`] for a zero interval, an unknown zone or an end before the start.
    pub fn build(self) -> Result<IntervalTrigger> {
        let tz = self.timezone.as_deref().map(parse_timezone).transpose()?;
        let mut t = IntervalTrigger::compile(self.parts, self.start, self.end, tz, self.jitter)?;
        if let Some(s) = self.source {
            t.jitter.source = s;
        }
        Ok(t)
    }
}

impl IntervalTrigger {
    /// Starts building an interval (`IntervalTrigger::builder().minutes(5).build()?`).
    pub fn builder() -> IntervalBuilder {
        IntervalBuilder::default()
    }

    /// An interval of `every` (whole seconds), starting one interval after the job is added.
    ///
    /// # Errors
    /// [`Error::InvalidTrigger`] when `every` is shorter than one second.
    pub fn every(every: std::time::Duration) -> Result<IntervalTrigger> {
        IntervalTrigger::builder().seconds(every.as_secs()).build()
    }

    fn compile(
        parts: [u64; 5],
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        tz: Option<Tz>,
        jitter: Option<u64>,
    ) -> Result<IntervalTrigger> {
        // Whole microseconds, as stores keep them: a finer start would put two
        // fire times within one stored instant.
        let start = start.map(crate::job::trunc_micros);
        let end = end.map(crate::job::trunc_micros);
        let mut total: u64 = 0;
        for (i, p) in parts.iter().enumerate() {
            total = p
                .checked_mul(PART_SECONDS[i])
                .and_then(|s| total.checked_add(s))
                .filter(|&s| s <= 100 * 366 * 86_400)
                .ok_or_else(|| {
                    Error::invalid_trigger(PART_NAMES[i], p, "interval is longer than 100 years")
                })?;
        }
        if total == 0 {
            return Err(Error::invalid_trigger(
                "interval",
                "0",
                "the interval must be at least one second (set weeks, days, hours, minutes or seconds)",
            ));
        }
        check_range(start, end)?;
        Ok(IntervalTrigger {
            parts,
            interval: Duration::seconds(i64::try_from(total).unwrap_or(i64::MAX)),
            start,
            end,
            tz,
            jitter: Jitter {
                seconds: jitter,
                ..Jitter::default()
            },
        })
    }

    /// The interval length.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Parses the JSON form (`{"type": "interval", "minutes": 5, ...}`).
    ///
    /// # Errors
    /// [`Error::InvalidTrigger`] for unknown fields and invalid values.
    pub fn from_json(value: &Value) -> Result<Self> {
        Self::from_spec(spec::read(value, "interval")?)
    }

    pub(super) fn from_spec(spec: IntervalSpec) -> Result<Self> {
        let (tz, start, end) = read_window(
            spec.timezone.as_deref(),
            spec.start_date.as_deref(),
            spec.end_date.as_deref(),
        )?;
        let parts = [
            spec.weeks,
            spec.days,
            spec.hours,
            spec.minutes,
            spec.seconds,
        ];
        IntervalTrigger::compile(parts, start, end, tz, spec.jitter)
    }
}

impl IntervalTrigger {
    /// The next fire time, `None` when exhausted (see [`Trigger::next_fire_time`]).
    fn next_fire(
        &self,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let i = self.interval.num_microseconds()?;
        // Past the end of time there is no next fire time.
        let next = match (self.start, previous) {
            (None, None) => now.checked_add_signed(self.interval)?,
            (None, Some(p)) => p.checked_add_signed(self.interval)?,
            (Some(s), Some(p)) if p < s => s,
            // Counting on the start grid keeps the rhythm even when `p` was jittered.
            (Some(s), Some(p)) => {
                let k = (p - s).num_microseconds()?.div_euclid(i).checked_add(1)?;
                s.checked_add_signed(Duration::microseconds(k.checked_mul(i)?))?
            }
            (Some(s), None) if now <= s => s,
            (Some(s), None) => {
                let k = (now - s)
                    .num_microseconds()?
                    .checked_add(i - 1)?
                    .div_euclid(i);
                s.checked_add_signed(Duration::microseconds(k.checked_mul(i)?))?
            }
        };
        if self.end.is_some_and(|e| next > e) {
            return None;
        }
        Some(self.jitter.apply(next))
    }
}

impl IntervalTrigger {
    /// The trigger's JSON form as its spec.
    pub(crate) fn spec(&self) -> BuiltinSpec {
        let (timezone, start_date, end_date) = write_window((self.tz, self.start, self.end));
        let [weeks, days, hours, minutes, seconds] = self.parts;
        BuiltinSpec::Interval(IntervalSpec {
            weeks,
            days,
            hours,
            minutes,
            seconds,
            start_date,
            end_date,
            timezone,
            jitter: self.jitter.seconds,
        })
    }
}

impl Trigger for IntervalTrigger {
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
            let start = now + self.interval;
            // Whole seconds keep the persisted start readable.
            self.start = DateTime::from_timestamp(start.timestamp(), 0).or(Some(start));
        }
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (i, name) in PART_NAMES.iter().enumerate() {
            if self.parts[i] != 0 {
                parts.push(format!("{name}={}", self.parts[i]));
            }
        }
        format!("interval[{}]", parts.join(", "))
    }
}
