//! Parsing cron fields (APScheduler's field form and POSIX crontab lines)
//! into a [`Schedule`].

use super::schedule::{DayExpr, Range, Schedule};
use super::{MONTH_NAMES, POSIX_WEEKDAY_NAMES, WEEKDAY_NAMES};
use crate::error::{Error, Result};

/// Parses a number or a name (names are matched case-insensitively, 3 letters).
pub(super) fn parse_value(
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
pub(super) fn parse_range(
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

pub(super) fn parse_list(
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

pub(super) fn mask_of(ranges: &[Range]) -> u64 {
    ranges.iter().fold(0, |m, r| m | r.mask())
}

pub(super) fn parse_mask(
    field: &str,
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    base: u32,
) -> Result<u64> {
    Ok(mask_of(&parse_list(field, text, min, max, names, base)?))
}

pub(super) fn parse_weekday_name(field: &str, whole: &str, text: &str) -> Result<u32> {
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
pub(super) fn parse_day_field(text: &str) -> Result<Vec<DayExpr>> {
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
pub(super) struct Fields {
    pub(super) values: [Option<String>; 8],
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Spec {
    Fields(Fields),
    Crontab(String),
}

pub(super) fn compile_fields(f: &Fields) -> Result<(Schedule, bool)> {
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
pub(super) fn crontab_weekday_days(field: &str) -> Result<(Option<String>, Vec<DayExpr>)> {
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
pub(super) fn crontab_weekdays(dow_t: &str) -> Result<u64> {
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

pub(super) fn compile_crontab(expr: &str) -> Result<(Schedule, bool)> {
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
