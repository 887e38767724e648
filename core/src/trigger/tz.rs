//! Time-zone helpers: parsing IANA names and turning wall-clock times into instants.

use chrono::{
    DateTime, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

use crate::error::{Error, Result};

/// Parses an IANA time-zone name such as `Asia/Shanghai` or `UTC`.
///
/// # Errors
/// [`Error::InvalidTrigger`] naming the `timezone` field when the name is unknown.
pub fn parse_timezone(name: &str) -> Result<Tz> {
    name.parse::<Tz>().map_err(|_| {
        Error::invalid_trigger(
            "timezone",
            name,
            "unknown time zone (expected an IANA name such as \"Europe/London\" or \"UTC\")",
        )
    })
}

/// The UTC offset in effect at `instant` in `tz`.
pub(crate) fn offset_at(tz: Tz, instant: NaiveDateTime) -> FixedOffset {
    tz.offset_from_utc_datetime(&instant).fix()
}

/// Wall time to instant for a fixed-time schedule: a time in a spring-forward
/// gap moves forward by the gap's length; a time in a fall-back fold takes its
/// first occurrence.
pub(crate) fn resolve_fixed(tz: Tz, naive: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => {
            // Interpret the wall time with the offset in effect before the gap.
            let before = offset_at(tz, naive - chrono::Duration::hours(30));
            (naive - chrono::Duration::seconds(i64::from(before.local_minus_utc()))).and_utc()
        }
    }
}

/// Parses a date-time: RFC 3339 with an offset, or a naive
/// `YYYY-MM-DD[( |T)HH:MM[:SS[.ffffff]]]` read as wall time in `tz`.
pub(crate) fn parse_datetime(field: &str, text: &str, tz: Tz) -> Result<DateTime<Utc>> {
    let t = parse_datetime_any(field, text, tz)?;
    // chrono reads second 60 as a leap second; no zone has one.
    if t.nanosecond() >= 1_000_000_000 {
        return Err(Error::invalid_trigger(
            field,
            text,
            "second 60 does not exist (seconds run from 0 to 59)",
        ));
    }
    Ok(t)
}

fn parse_datetime_any(field: &str, text: &str, tz: Tz) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    const FORMATS: &[&str] = &[
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ];
    for f in FORMATS {
        if let Ok(n) = NaiveDateTime::parse_from_str(text, f) {
            return Ok(resolve_fixed(tz, n));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(resolve_fixed(tz, d.and_time(chrono::NaiveTime::MIN)));
    }
    Err(Error::invalid_trigger(
        field,
        text,
        "expected an RFC 3339 date-time (2026-03-01T09:00:00+08:00) or a wall time (2026-03-01 09:00:00) in the trigger's time zone",
    ))
}

/// Formats an instant as RFC 3339 in `tz` (the offset shows the zone's local time).
pub(crate) fn format_datetime(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).to_rfc3339()
}

/// Parses a calendar date `YYYY-MM-DD`.
pub(crate) fn parse_date(field: &str, text: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| Error::invalid_trigger(field, text, "expected a date YYYY-MM-DD"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn gap_moves_forward_by_gap_length() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let t = resolve_fixed(tz, n("2026-03-08 02:30:00"));
        assert_eq!(format_datetime(t, tz), "2026-03-08T03:30:00-04:00");
        let lh: Tz = "Australia/Lord_Howe".parse().unwrap();
        // Lord Howe springs forward 30 minutes at 02:00 on 2026-10-04.
        let t = resolve_fixed(lh, n("2026-10-04 02:10:00"));
        assert_eq!(format_datetime(t, lh), "2026-10-04T02:40:00+11:00");
    }

    #[test]
    fn fold_takes_first_occurrence() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let t = resolve_fixed(tz, n("2026-11-01 01:30:00"));
        assert_eq!(format_datetime(t, tz), "2026-11-01T01:30:00-04:00");
    }

    #[test]
    fn unknown_zone_is_an_error() {
        let err = parse_timezone("Mars/Base").unwrap_err();
        assert!(err.to_string().contains("Mars/Base"), "{err}");
        assert!(err.to_string().contains("timezone"), "{err}");
    }
}
