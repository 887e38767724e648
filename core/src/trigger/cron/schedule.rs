//! The compiled form of a cron schedule (bit masks per field) and the search
//! for its next matching instant.

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};

use super::SEARCH_HORIZON_YEARS;

/// An inclusive range with a step, within a field's bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Range {
    pub(super) first: u32,
    pub(super) last: u32,
    pub(super) step: u32,
}

impl Range {
    pub(super) fn next_value(&self, from: u32) -> Option<u32> {
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

    pub(super) fn mask(&self) -> u64 {
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
pub(super) enum DayExpr {
    Range(Range),
    Last,
    Nth { n: u32, weekday: u32 },
    LastWeekday(u32),
}

/// A compiled schedule: what a wall-clock time must look like to fire.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Schedule {
    pub(super) years: Vec<Range>,
    pub(super) months: u64,
    pub(super) days: Vec<DayExpr>,
    pub(super) weeks: u64,
    pub(super) week_star: bool,
    pub(super) weekdays: u64,
    pub(super) hours: u64,
    pub(super) minutes: u64,
    pub(super) seconds: u64,
    /// Crontab rule: with both day fields restricted, either may match.
    pub(super) day_or: bool,
}

pub(super) fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let m = mask >> from;
    (m != 0).then(|| from + m.trailing_zeros())
}

/// The ISO weeks (as a bit mask) that days of month `m` of year `y` fall in.
pub(super) fn month_weeks(y: i32, m: u32, dim: u32) -> u64 {
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

pub(super) fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl Schedule {
    pub(super) fn next_year(&self, from: i32) -> Option<i32> {
        let from = u32::try_from(from).ok()?;
        self.years
            .iter()
            .filter_map(|r| r.next_value(from))
            .min()
            .and_then(|y| i32::try_from(y).ok())
    }

    pub(super) fn day_mask(&self, y: i32, m: u32, dim: u32, first_weekday: u32) -> u64 {
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

    pub(super) fn day_matches(
        &self,
        day_mask: u64,
        y: i32,
        m: u32,
        d: u32,
        first_weekday: u32,
    ) -> bool {
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

    pub(super) fn next_time(&self, h0: u32, m0: u32, s0: u32) -> Option<(u32, u32, u32)> {
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
    pub(super) fn next_naive(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
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
