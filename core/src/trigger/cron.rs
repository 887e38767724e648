//! Cron triggers: APScheduler field form and POSIX crontab form.

use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Timelike, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use super::jitter::{Jitter, JitterSource};
use super::tz::{offset_at, parse_datetime, parse_timezone, resolve_fixed};
use super::{check_range, insert_common, json_object, opt_field, opt_str, opt_u64, Trigger};
use crate::error::{Error, Result};

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

/// An inclusive range with a step, within a field's bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Range {
    first: u32,
    last: u32,
    step: u32,
}

impl Range {
    fn next_value(&self, from: u32) -> Option<u32> {
        if from > self.last {
            return None;
        }
        if from <= self.first {
            return Some(self.first);
        }
        let k = (from - self.first).div_ceil(self.step);
        let v = self.first + k * self.step;
        (v <= self.last).then_some(v)
    }

    fn mask(&self) -> u64 {
        let mut m = 0u64;
        let mut v = self.first;
        while v <= self.last && v < 64 {
            m |= 1 << v;
            v += self.step;
        }
        m
    }
}

/// One expression of the day-of-month field.
#[derive(Clone, Copy, Debug, PartialEq)]
enum DayExpr {
    Range(Range),
    Last,
    Nth { n: u32, weekday: u32 },
    LastWeekday(u32),
}

/// A compiled schedule: what a wall-clock time must look like to fire.
#[derive(Clone, Debug, PartialEq)]
struct Schedule {
    years: Vec<Range>,
    months: u64,
    days: Vec<DayExpr>,
    weeks: u64,
    week_star: bool,
    weekdays: u64,
    hours: u64,
    minutes: u64,
    seconds: u64,
    /// Crontab rule: with both day fields restricted, either may match.
    day_or: bool,
}

fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let m = mask >> from;
    (m != 0).then(|| from + m.trailing_zeros())
}

/// The ISO weeks (as a bit mask) that days of month `m` of year `y` fall in.
fn month_weeks(y: i32, m: u32, dim: u32) -> u64 {
    let week = |d: u32| NaiveDate::from_ymd_opt(y, m, d).map_or(0, |x| x.iso_week().week());
    let (first, last) = (week(1), week(dim));
    let range = |a: u32, b: u32| (a..=b).fold(0u64, |acc, w| acc | 1 << w);
    if first <= last {
        range(first, last)
    } else if m == 12 {
        // December ending in next year's week 1; Dec 28 is always in the year's last week.
        range(first, week(28)) | range(1, last)
    } else {
        // January starting in last year's week 52 or 53.
        (1u64 << first) | range(1, last)
    }
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl Schedule {
    fn next_year(&self, from: i32) -> Option<i32> {
        let from = u32::try_from(from).ok()?;
        self.years
            .iter()
            .filter_map(|r| r.next_value(from))
            .min()
            .and_then(|y| i32::try_from(y).ok())
    }

    fn day_mask(&self, y: i32, m: u32, dim: u32, first_weekday: u32) -> u64 {
        let mut mask = 0u64;
        for e in &self.days {
            match *e {
                DayExpr::Range(r) => mask |= r.mask(),
                DayExpr::Last => mask |= 1 << dim,
                DayExpr::Nth { n, weekday } => {
                    let first = 1 + (weekday + 7 - first_weekday) % 7;
                    let day = first + 7 * (n - 1);
                    if day <= dim {
                        mask |= 1 << day;
                    }
                }
                DayExpr::LastWeekday(weekday) => {
                    let last_wd = (first_weekday + dim - 1) % 7;
                    mask |= 1 << (dim - (last_wd + 7 - weekday) % 7);
                }
            }
        }
        let _ = (y, m);
        mask & ((1u64 << (dim + 1)) - 2)
    }

    fn day_matches(&self, day_mask: u64, y: i32, m: u32, d: u32, first_weekday: u32) -> bool {
        let dm = day_mask & (1 << d) != 0;
        let wd = (first_weekday + d - 1) % 7;
        let dw = self.weekdays & (1 << wd) != 0;
        if self.day_or {
            return dm || dw;
        }
        if !(dm && dw) {
            return false;
        }
        if self.week_star {
            return true;
        }
        match NaiveDate::from_ymd_opt(y, m, d) {
            Some(date) => self.weeks & (1 << date.iso_week().week()) != 0,
            None => false,
        }
    }

    fn next_time(&self, h0: u32, m0: u32, s0: u32) -> Option<(u32, u32, u32)> {
        let mut h = next_bit(self.hours, h0)?;
        loop {
            let mstart = if h == h0 { m0 } else { 0 };
            let mut mi = next_bit(self.minutes, mstart);
            while let Some(m) = mi {
                let sstart = if h == h0 && m == m0 { s0 } else { 0 };
                if let Some(s) = next_bit(self.seconds, sstart) {
                    return Some((h, m, s));
                }
                mi = next_bit(self.minutes, m + 1);
            }
            h = next_bit(self.hours, h + 1)?;
        }
    }

    /// The first wall-clock time at or after `from` that matches.
    fn next_naive(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let (mut y, mut m, mut d) = (from.year(), from.month(), from.day());
        let mut time = Some((from.hour(), from.minute(), from.second()));
        let mut years_seen = 0u32;
        let mut current_year = None;
        loop {
            let ny = self.next_year(y)?;
            if ny != y {
                (y, m, d, time) = (ny, 1, 1, None);
            }
            if current_year != Some(y) {
                years_seen += 1;
                if years_seen > SEARCH_HORIZON_YEARS {
                    return None;
                }
                current_year = Some(y);
                // A week field that needs week 53 skips years without one at
                // once; early January may still be in last year's week 53.
                if !self.week_star {
                    let last_week = NaiveDate::from_ymd_opt(y, 12, 28)?.iso_week().week();
                    let mut year_weeks = (1u64 << (last_week + 1)) - 2;
                    let jan1 = NaiveDate::from_ymd_opt(y, 1, 1)?.iso_week();
                    if jan1.year() < y {
                        year_weeks |= 1 << jan1.week();
                    }
                    if self.weeks & year_weeks == 0 {
                        (y, m, d, time) = (y + 1, 1, 1, None);
                        continue;
                    }
                }
            }
            match next_bit(self.months, m) {
                None => {
                    (y, m, d, time) = (y + 1, 1, 1, None);
                    continue;
                }
                Some(nm) if nm != m => (m, d, time) = (nm, 1, None),
                Some(_) => {}
            }
            let dim = days_in_month(y, m);
            let first_weekday = NaiveDate::from_ymd_opt(y, m, 1)?
                .weekday()
                .num_days_from_monday();
            let mask = self.day_mask(y, m, dim, first_weekday);
            // Skip whole months that cannot match: no day-of-month bit, or no
            // ISO week of the month in the week field.
            let impossible = (!self.day_or && mask == 0)
                || (!self.week_star && self.weeks & month_weeks(y, m, dim) == 0);
            let found = if impossible {
                None
            } else {
                (d..=dim).find(|&dd| self.day_matches(mask, y, m, dd, first_weekday))
            };
            match found {
                None => {
                    (m, d, time) = (m + 1, 1, None);
                    if m > 12 {
                        (y, m) = (y + 1, 1);
                    }
                    continue;
                }
                Some(dd) if dd != d => (d, time) = (dd, None),
                Some(_) => {}
            }
            let (h0, m0, s0) = time.unwrap_or((0, 0, 0));
            match self.next_time(h0, m0, s0) {
                Some((h, mi, s)) => return NaiveDate::from_ymd_opt(y, m, d)?.and_hms_opt(h, mi, s),
                None => {
                    (d, time) = (d + 1, None);
                    if d > dim {
                        (m, d) = (m + 1, 1);
                        if m > 12 {
                            (y, m) = (y + 1, 1);
                        }
                    }
                }
            }
        }
    }
}

/// Parses a number or a name (names are matched case-insensitively, 3 letters).
fn parse_value(
    field: &str,
    whole: &str,
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<u32> {
    let v = if let Ok(v) = text.parse::<u32>() {
        v
    } else if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        // position < 12 always fits
        name_base + u32::try_from(i).unwrap_or(0)
    } else {
        let what = if names.is_empty() {
            "a number".to_string()
        } else {
            format!("a number or a name ({})", names.join(", "))
        };
        return Err(Error::invalid_trigger(
            field,
            whole,
            format!("'{text}' is not {what}"),
        ));
    };
    if v < min || v > max {
        return Err(Error::invalid_trigger(
            field,
            whole,
            format!("value {v} is out of range {min}-{max}"),
        ));
    }
    Ok(v)
}

/// Parses one comma-separated part: `*`, `*/n`, `a`, `a-b`, `a-b/n`, `a/n`.
fn parse_range(
    field: &str,
    whole: &str,
    part: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<Range> {
    let (body, step) = match part.split_once('/') {
        Some((b, s)) => {
            let step: u32 = s.trim().parse().map_err(|_| {
                Error::invalid_trigger(field, whole, format!("step '{s}' is not a number"))
            })?;
            if step == 0 {
                return Err(Error::invalid_trigger(
                    field,
                    whole,
                    "step must be greater than 0",
                ));
            }
            (b.trim(), Some(step))
        }
        None => (part.trim(), None),
    };
    let (first, last) = if body == "*" {
        (min, max)
    } else if let Some((a, b)) = body.split_once('-') {
        let a = parse_value(field, whole, a.trim(), min, max, names, name_base)?;
        let b = parse_value(field, whole, b.trim(), min, max, names, name_base)?;
        if a > b {
            return Err(Error::invalid_trigger(
                field,
                whole,
                format!("range start {a} is after range end {b}"),
            ));
        }
        (a, b)
    } else if body.is_empty() {
        return Err(Error::invalid_trigger(field, whole, "empty expression"));
    } else {
        let a = parse_value(field, whole, body, min, max, names, name_base)?;
        (a, if step.is_some() { max } else { a })
    };
    // As APScheduler: a step must fit in the range it steps through.
    if let Some(step) = step {
        if step > last - first {
            return Err(Error::invalid_trigger(
                field,
                whole,
                format!(
                    "step {step} is larger than the range {first}-{last} it steps through ({})",
                    last - first
                ),
            ));
        }
    }
    Ok(Range {
        first,
        last,
        step: step.unwrap_or(1),
    })
}

fn parse_list(
    field: &str,
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<Vec<Range>> {
    if text.trim().is_empty() {
        return Err(Error::invalid_trigger(field, text, "empty expression"));
    }
    text.split(',')
        .map(|p| parse_range(field, text, p.trim(), min, max, names, name_base))
        .collect()
}

fn mask_of(ranges: &[Range]) -> u64 {
    ranges.iter().fold(0, |m, r| m | r.mask())
}

fn parse_mask(
    field: &str,
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    base: u32,
) -> Result<u64> {
    Ok(mask_of(&parse_list(field, text, min, max, names, base)?))
}

fn parse_weekday_name(field: &str, whole: &str, text: &str) -> Result<u32> {
    WEEKDAY_NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(text))
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| {
            Error::invalid_trigger(
                field,
                whole,
                format!("'{text}' is not a weekday name (mon, tue, wed, thu, fri, sat, sun)"),
            )
        })
}

/// Parses the APScheduler day field: numbers, ranges, `last`, `xth weekday`, `last weekday`.
fn parse_day_field(text: &str) -> Result<Vec<DayExpr>> {
    if text.trim().is_empty() {
        return Err(Error::invalid_trigger("day", text, "empty expression"));
    }
    let mut out = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let lower = part.to_ascii_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        match words.as_slice() {
            ["last"] => out.push(DayExpr::Last),
            [pos, wd] => {
                let weekday = parse_weekday_name("day", text, wd)?;
                let e = match *pos {
                    "1st" => DayExpr::Nth { n: 1, weekday },
                    "2nd" => DayExpr::Nth { n: 2, weekday },
                    "3rd" => DayExpr::Nth { n: 3, weekday },
                    "4th" => DayExpr::Nth { n: 4, weekday },
                    "5th" => DayExpr::Nth { n: 5, weekday },
                    "last" => DayExpr::LastWeekday(weekday),
                    other => {
                        return Err(Error::invalid_trigger(
                            "day",
                            text,
                            format!("'{other}' is not a position (1st, 2nd, 3rd, 4th, 5th, last)"),
                        ))
                    }
                };
                out.push(e);
            }
            _ => out.push(DayExpr::Range(parse_range(
                "day",
                text,
                part,
                1,
                31,
                &[],
                0,
            )?)),
        }
    }
    Ok(out)
}

/// The field-form specification as the user wrote it.
#[derive(Clone, Debug, Default, PartialEq)]
struct Fields {
    values: [Option<String>; 8],
}

#[derive(Clone, Debug, PartialEq)]
enum Spec {
    Fields(Fields),
    Crontab(String),
}

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
/// let next = t.next_fire_time(None, now).unwrap();
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
        let mut allowed: Vec<&str> = FIELD_NAMES.to_vec();
        allowed.extend(["crontab", "start_date", "end_date", "timezone", "jitter"]);
        let obj = json_object(value, "cron", &allowed)?;
        let tz = opt_str(obj, "timezone")?.map(parse_timezone).transpose()?;
        let ztz = tz.unwrap_or(Tz::UTC);
        let start = opt_str(obj, "start_date")?
            .map(|s| parse_datetime("start_date", s, ztz))
            .transpose()?;
        let end = opt_str(obj, "end_date")?
            .map(|s| parse_datetime("end_date", s, ztz))
            .transpose()?;
        let jitter = opt_u64(obj, "jitter")?;
        let mut fields = Fields::default();
        let mut any_field = false;
        for (i, name) in FIELD_NAMES.iter().enumerate() {
            fields.values[i] = opt_field(obj, name)?;
            any_field |= fields.values[i].is_some();
        }
        let spec = match opt_str(obj, "crontab")? {
            Some(c) if any_field => {
                return Err(Error::invalid_trigger(
                    "crontab",
                    c,
                    "give either \"crontab\" or the separate cron fields, not both",
                ))
            }
            Some(c) => Spec::Crontab(c.trim().to_string()),
            None => Spec::Fields(fields),
        };
        CronTrigger::compile(spec, tz, start, end, jitter)
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

fn compile_fields(f: &Fields) -> Result<(Schedule, bool)> {
    // APScheduler defaults: fields more significant than the least significant
    // given one are `*`; less significant ones take their minimum, except week
    // and day_of_week which stay `*`.
    let last_given = f.values.iter().rposition(Option::is_some);
    let value = |i: usize| -> String {
        match (&f.values[i], last_given) {
            (Some(v), _) => v.clone(),
            (None, Some(lg)) if i > lg && i != 3 && i != 4 => match i {
                1 | 2 => "1".into(),
                _ => "0".into(),
            },
            _ => "*".into(),
        }
    };
    let years = parse_list("year", &value(0), 1970, 9999, &[], 0)?;
    let months = parse_mask("month", &value(1), 1, 12, &MONTH_NAMES, 1)?;
    let day_text = value(2);
    let days = parse_day_field(&day_text)?;
    let week_text = value(3);
    let week_star = week_text.trim() == "*";
    let weeks = parse_mask("week", &week_text, 1, 53, &[], 0)?;
    let weekdays = parse_mask("day_of_week", &value(4), 0, 6, &WEEKDAY_NAMES, 0)?;
    let hour_text = value(5);
    let hours = parse_mask("hour", &hour_text, 0, 23, &[], 0)?;
    let minutes = parse_mask("minute", &value(6), 0, 59, &[], 0)?;
    let seconds = parse_mask("second", &value(7), 0, 59, &[], 0)?;
    let fixed = !hour_text.trim_start().starts_with('*');
    Ok((
        Schedule {
            years,
            months,
            days,
            weeks,
            week_star,
            weekdays,
            hours,
            minutes,
            seconds,
            day_or: false,
        },
        fixed,
    ))
}

/// Splits a crontab weekday field into its plain part (`None` when nothing is
/// left) and its Quartz-style days: `nL` (the last weekday n of the month) and
/// `n#k` (the k-th weekday n), with POSIX numbers (0 and 7 Sunday).
fn crontab_weekday_days(field: &str) -> Result<(Option<String>, Vec<DayExpr>)> {
    let weekday = |text: &str, part: &str| -> Result<u32> {
        match text.parse::<u32>() {
            // Internally Monday is 0.
            Ok(p) if p <= 7 => Ok((p + 6) % 7),
            _ => Err(Error::invalid_trigger(
                "day_of_week",
                field,
                format!("'{part}': the weekday must be a number from 0 to 7 (0 and 7 are Sunday)"),
            )),
        }
    };
    let mut plain = Vec::new();
    let mut days = Vec::new();
    for part in field.split(',') {
        if let Some(n) = part.strip_suffix(['L', 'l']) {
            days.push(DayExpr::LastWeekday(weekday(n, part)?));
        } else if let Some((n, k)) = part.split_once('#') {
            let n = weekday(n, part)?;
            match k.parse::<u32>() {
                Ok(k @ 1..=5) => days.push(DayExpr::Nth { n: k, weekday: n }),
                _ => {
                    return Err(Error::invalid_trigger(
                        "day_of_week",
                        field,
                        format!("'{part}': the occurrence after # must be 1 to 5"),
                    ))
                }
            }
        } else {
            plain.push(part);
        }
    }
    Ok(((!plain.is_empty()).then(|| plain.join(",")), days))
}

/// The weekday mask (Monday bit 0) of a plain POSIX weekday field.
fn crontab_weekdays(dow_t: &str) -> Result<u64> {
    // `fri-sun` ends on Sunday: read a range-ending `sun` as 7.
    let dow_fixed = dow_t.to_ascii_lowercase().replace("-sun", "-7");
    let posix = parse_mask("day_of_week", &dow_fixed, 0, 7, &POSIX_WEEKDAY_NAMES, 0).map_err(
        |e| match e {
            Error::InvalidTrigger { field, reason, .. } => Error::InvalidTrigger {
                field,
                value: dow_t.to_string(),
                reason,
            },
            other => other,
        },
    )?;
    // POSIX: 0 and 7 are Sunday. Internally Monday is bit 0.
    Ok((0..8u32)
        .filter(|p| posix & (1 << p) != 0)
        .fold(0u64, |m, p| m | 1 << ((p + 6) % 7)))
}

fn compile_crontab(expr: &str) -> Result<(Schedule, bool)> {
    let expanded = match expr.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
        "@monthly" => "0 0 1 * *".to_string(),
        "@weekly" => "0 0 * * 0".to_string(),
        "@daily" | "@midnight" => "0 0 * * *".to_string(),
        "@hourly" => "0 * * * *".to_string(),
        m if m.starts_with('@') => {
            return Err(Error::invalid_trigger(
                "crontab",
                expr,
                "unknown macro (supported: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)",
            ))
        }
        _ => expr.to_string(),
    };
    let parts: Vec<&str> = expanded.split_whitespace().collect();
    let (sec, rest) = match parts.len() {
        5 => ("0", &parts[..]),
        6 => (parts[0], &parts[1..]),
        n => {
            return Err(Error::invalid_trigger(
                "crontab",
                expr,
                format!("expected 5 fields (minute hour day month weekday) or 6 (with seconds first), found {n}"),
            ))
        }
    };
    let (min_t, hour_t, dom_t, mon_t, dow_t) = (rest[0], rest[1], rest[2], rest[3], rest[4]);
    let seconds = parse_mask("second", sec, 0, 59, &[], 0)?;
    let minutes = parse_mask("minute", min_t, 0, 59, &[], 0)?;
    let hours = parse_mask("hour", hour_t, 0, 23, &[], 0)?;
    let mut days: Vec<DayExpr> = Vec::new();
    for part in dom_t.split(',') {
        if part.eq_ignore_ascii_case("l") || part.eq_ignore_ascii_case("last") {
            days.push(DayExpr::Last);
        } else {
            days.push(DayExpr::Range(parse_range(
                "day",
                dom_t,
                part,
                1,
                31,
                &[],
                0,
            )?));
        }
    }
    let months = parse_mask("month", mon_t, 1, 12, &MONTH_NAMES, 1)?;
    // Quartz-style weekday days (`5L` last Friday, `5#3` third Friday) are
    // days of the month; the plain weekdays stay weekdays.
    let (dow_plain, specials) = crontab_weekday_days(dow_t)?;
    let dom_restricted = !dom_t.starts_with('*');
    if !specials.is_empty() {
        if !dom_restricted {
            days.clear();
        }
        days.extend(specials.iter().copied());
    }
    let (weekdays, day_or) = match dow_plain {
        // Only `L` / `#` weekdays: every weekday, and the days above decide.
        None => (0x7f, false),
        Some(plain) => {
            let weekdays = crontab_weekdays(&plain)?;
            let day_or = !plain.starts_with('*') && (dom_restricted || !specials.is_empty());
            (weekdays, day_or)
        }
    };
    Ok((
        Schedule {
            years: vec![Range {
                first: 1970,
                last: 9999,
                step: 1,
            }],
            months,
            days,
            weeks: u64::MAX,
            week_star: true,
            weekdays,
            hours,
            minutes,
            seconds,
            day_or,
        },
        !hour_t.starts_with('*'),
    ))
}

impl Trigger for CronTrigger {
    fn next_fire_time(
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

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), "cron".into());
        match &self.spec {
            Spec::Crontab(c) => {
                m.insert("crontab".into(), c.clone().into());
            }
            Spec::Fields(f) => {
                for (i, name) in FIELD_NAMES.iter().enumerate() {
                    if let Some(v) = &f.values[i] {
                        m.insert((*name).into(), v.clone().into());
                    }
                }
            }
        }
        insert_common(&mut m, self.start, self.end, self.tz, self.jitter.seconds);
        Value::Object(m)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_next_value() {
        let r = Range {
            first: 1970,
            last: 9999,
            step: 4,
        };
        assert_eq!(r.next_value(2026), Some(2026));
        assert_eq!(r.next_value(2027), Some(2030));
        assert_eq!(r.next_value(10_000), None);
    }
}
