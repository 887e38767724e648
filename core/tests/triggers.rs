//! Fire-time tables for every trigger, checked by hand against a calendar.
//!
//! Each table lists the instants a trigger must fire at, as RFC 3339 in the
//! trigger's zone, iterating as the scheduler does: `previous = None, now = from`
//! first, then `previous = now = last`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use sundial_core::trigger::*;
use sundial_core::Error;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn fires(t: &dyn Trigger, from: &str, n: usize) -> Vec<String> {
    let tz = t.timezone().unwrap_or(chrono_tz::UTC);
    let mut out = Vec::new();
    let mut prev = None;
    let mut now = at(from);
    for _ in 0..n {
        match t.next_fire_time(prev, now).unwrap() {
            Some(f) => {
                out.push(f.with_timezone(&tz).to_rfc3339());
                prev = Some(f);
                now = f;
            }
            None => break,
        }
    }
    out
}

fn crontab(expr: &str, tz: &str) -> CronTrigger {
    CronTrigger::from_crontab(expr)
        .unwrap()
        .with_timezone(tz)
        .unwrap()
}

#[track_caller]
fn check(t: &dyn Trigger, from: &str, expected: &[&str]) {
    let got = fires(t, from, expected.len() + 1);
    let want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        &got[..want.len().min(got.len())],
        &want[..],
        "trigger {}",
        t.describe()
    );
}

#[track_caller]
fn check_exhausted(t: &dyn Trigger, from: &str, expected: &[&str]) {
    let got = fires(t, from, expected.len() + 1);
    assert_eq!(got, expected, "trigger {} should end", t.describe());
}

#[test]
fn weekday_mornings_in_shanghai() {
    check(
        &crontab("0 9 * * 1-5", "Asia/Shanghai"),
        "2026-03-06T00:00:00+08:00",
        &[
            "2026-03-06T09:00:00+08:00",
            "2026-03-09T09:00:00+08:00",
            "2026-03-10T09:00:00+08:00",
            "2026-03-11T09:00:00+08:00",
            "2026-03-12T09:00:00+08:00",
        ],
    );
}

#[test]
fn new_york_spring_gap_moves_fixed_time_forward() {
    check(
        &crontab("30 2 * * *", "America/New_York"),
        "2026-03-07T00:00:00-05:00",
        &[
            "2026-03-07T02:30:00-05:00",
            "2026-03-08T03:30:00-04:00",
            "2026-03-09T02:30:00-04:00",
        ],
    );
    // 02:30 moves onto 03:30, which is also a fire time: it fires once.
    check(
        &crontab("30 2,3 * * *", "America/New_York"),
        "2026-03-08T00:00:00-05:00",
        &[
            "2026-03-08T03:30:00-04:00",
            "2026-03-09T02:30:00-04:00",
            "2026-03-09T03:30:00-04:00",
        ],
    );
}

#[test]
fn new_york_fold_fires_fixed_time_once() {
    check(
        &crontab("30 1 * * *", "America/New_York"),
        "2026-10-31T00:00:00-04:00",
        &[
            "2026-10-31T01:30:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-02T01:30:00-05:00",
        ],
    );
    // A restricted hour with a minute step is still fixed-time.
    check(
        &crontab("*/20 1 * * *", "America/New_York"),
        "2026-11-01T00:00:00-04:00",
        &[
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:20:00-04:00",
            "2026-11-01T01:40:00-04:00",
            "2026-11-02T01:00:00-05:00",
        ],
    );
}

#[test]
fn every_quarter_hour_keeps_real_time_through_fold_and_gap() {
    check(
        &crontab("*/15 * * * *", "America/New_York"),
        "2026-11-01T00:50:00-04:00",
        &[
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:15:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:45:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:15:00-05:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T01:45:00-05:00",
            "2026-11-01T02:00:00-05:00",
        ],
    );
    check(
        &crontab("*/30 * * * *", "America/New_York"),
        "2026-03-08T01:00:00-05:00",
        &[
            "2026-03-08T01:00:00-05:00",
            "2026-03-08T01:30:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T03:30:00-04:00",
        ],
    );
}

#[test]
fn day_one_in_new_york_does_not_skip_april() {
    // APScheduler 3 skips 2026-04-01 here (a field carried across the DST change).
    let t = CronTrigger::fields()
        .day(1)
        .timezone("America/New_York")
        .build()
        .unwrap();
    check(
        &t,
        "2026-03-02T00:00:00-05:00",
        &[
            "2026-04-01T00:00:00-04:00",
            "2026-05-01T00:00:00-04:00",
            "2026-06-01T00:00:00-04:00",
        ],
    );
}

#[test]
fn london_gap_and_fold() {
    check(
        &crontab("30 1 * * *", "Europe/London"),
        "2026-03-28T00:00:00+00:00",
        &[
            "2026-03-28T01:30:00+00:00",
            "2026-03-29T02:30:00+01:00",
            "2026-03-30T01:30:00+01:00",
        ],
    );
    check(
        &crontab("15 1 * * *", "Europe/London"),
        "2026-10-24T12:00:00+01:00",
        &["2026-10-25T01:15:00+01:00", "2026-10-26T01:15:00+00:00"],
    );
}

#[test]
fn lord_howe_half_hour_dst() {
    check(
        &crontab("10 2 * * *", "Australia/Lord_Howe"),
        "2026-10-03T00:00:00+10:30",
        &[
            "2026-10-03T02:10:00+10:30",
            "2026-10-04T02:40:00+11:00",
            "2026-10-05T02:10:00+11:00",
        ],
    );
    check(
        &crontab("45 1 * * *", "Australia/Lord_Howe"),
        "2026-04-04T12:00:00+11:00",
        &["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"],
    );
    // Real-time schedule: the repeated half hour fires on both occurrences.
    check(
        &crontab("*/20 * * * *", "Australia/Lord_Howe"),
        "2026-04-05T01:25:00+11:00",
        &[
            "2026-04-05T01:40:00+11:00",
            "2026-04-05T01:40:00+10:30",
            "2026-04-05T02:00:00+10:30",
        ],
    );
}

#[test]
fn leap_days_and_month_ends() {
    check(
        &crontab("0 0 29 2 *", "UTC"),
        "2026-01-01T00:00:00+00:00",
        &[
            "2028-02-29T00:00:00+00:00",
            "2032-02-29T00:00:00+00:00",
            "2036-02-29T00:00:00+00:00",
        ],
    );
    let last = CronTrigger::fields().day("last").hour(12).build().unwrap();
    check(
        &last,
        "2026-02-01T00:00:00+00:00",
        &[
            "2026-02-28T12:00:00+00:00",
            "2026-03-31T12:00:00+00:00",
            "2026-04-30T12:00:00+00:00",
        ],
    );
    check(
        &last,
        "2028-02-01T00:00:00+00:00",
        &["2028-02-29T12:00:00+00:00"],
    );
}

#[test]
fn feb_29_on_a_monday() {
    // Field form: day and day_of_week must both match.
    let t = CronTrigger::fields()
        .month(2)
        .day(29)
        .day_of_week("mon")
        .build()
        .unwrap();
    check(
        &t,
        "2026-01-01T00:00:00+00:00",
        &["2044-02-29T00:00:00+00:00", "2072-02-29T00:00:00+00:00"],
    );
    // Crontab form: either day field matches (POSIX cron).
    check(
        &crontab("0 0 29 2 mon", "UTC"),
        "2026-01-01T00:00:00+00:00",
        &[
            "2026-02-02T00:00:00+00:00",
            "2026-02-09T00:00:00+00:00",
            "2026-02-16T00:00:00+00:00",
            "2026-02-23T00:00:00+00:00",
            "2027-02-01T00:00:00+00:00",
        ],
    );
}

#[test]
fn weekday_positions() {
    let t = CronTrigger::fields()
        .month("feb")
        .day("last fri")
        .build()
        .unwrap();
    check(
        &t,
        "2026-01-01T00:00:00+00:00",
        &[
            "2026-02-27T00:00:00+00:00",
            "2027-02-26T00:00:00+00:00",
            "2028-02-25T00:00:00+00:00",
        ],
    );
    let fifth = CronTrigger::fields().day("5th fri").build().unwrap();
    check(
        &fifth,
        "2026-01-01T00:00:00+00:00",
        &[
            "2026-01-30T00:00:00+00:00",
            "2026-05-29T00:00:00+00:00",
            "2026-07-31T00:00:00+00:00",
        ],
    );
    let third = CronTrigger::fields()
        .day("3rd fri")
        .hour(18)
        .timezone("Europe/London")
        .build()
        .unwrap();
    check(
        &third,
        "2026-03-01T00:00:00+00:00",
        &["2026-03-20T18:00:00+00:00", "2026-04-17T18:00:00+01:00"],
    );
}

#[test]
fn iso_week_53() {
    let t = CronTrigger::fields()
        .week(53)
        .day_of_week("mon")
        .build()
        .unwrap();
    check(
        &t,
        "2026-01-01T00:00:00+00:00",
        &["2026-12-28T00:00:00+00:00", "2032-12-27T00:00:00+00:00"],
    );
}

#[test]
fn year_field_bounds_end_the_schedule() {
    let t = CronTrigger::fields()
        .year("2027-2028")
        .month(1)
        .day(1)
        .build()
        .unwrap();
    check_exhausted(
        &t,
        "2026-01-01T00:00:00+00:00",
        &["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"],
    );
}

#[test]
fn apscheduler_field_defaults() {
    // hour given: minute and second default to 0, larger fields to `*`.
    let t = CronTrigger::fields().hour(9).build().unwrap();
    check(
        &t,
        "2026-01-01T10:00:00+00:00",
        &["2026-01-02T09:00:00+00:00", "2026-01-03T09:00:00+00:00"],
    );
    // minute given: every hour at that minute.
    let t = CronTrigger::fields().minute("*/30").build().unwrap();
    check(
        &t,
        "2026-01-01T10:10:00+00:00",
        &["2026-01-01T10:30:00+00:00", "2026-01-01T11:00:00+00:00"],
    );
    // weekday names and ranges, APScheduler numbering (mon=0).
    let t = CronTrigger::fields()
        .day_of_week("5-6")
        .hour(8)
        .build()
        .unwrap();
    check(
        &t,
        "2026-03-02T00:00:00+00:00",
        &["2026-03-07T08:00:00+00:00", "2026-03-08T08:00:00+00:00"],
    );
}

#[test]
fn crontab_sunday_is_zero_and_seven() {
    for expr in ["0 10 * * 0", "0 10 * * 7", "0 10 * * sun", "0 10 * * SUN"] {
        check(
            &crontab(expr, "UTC"),
            "2026-03-02T00:00:00+00:00",
            &["2026-03-08T10:00:00+00:00", "2026-03-15T10:00:00+00:00"],
        );
    }
    check(
        &crontab("0 10 * * fri-sun", "UTC"),
        "2026-03-02T00:00:00+00:00",
        &[
            "2026-03-06T10:00:00+00:00",
            "2026-03-07T10:00:00+00:00",
            "2026-03-08T10:00:00+00:00",
        ],
    );
}

#[test]
fn crontab_seconds_and_macros() {
    check(
        &crontab("*/20 0 9 * * *", "UTC"),
        "2026-01-01T00:00:00+00:00",
        &[
            "2026-01-01T09:00:00+00:00",
            "2026-01-01T09:00:20+00:00",
            "2026-01-01T09:00:40+00:00",
            "2026-01-02T09:00:00+00:00",
        ],
    );
    check(
        &crontab("@monthly", "UTC"),
        "2026-01-15T00:00:00+00:00",
        &["2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"],
    );
    check(
        &crontab("@weekly", "UTC"),
        "2026-03-02T00:00:00+00:00",
        &["2026-03-08T00:00:00+00:00"],
    );
    check(
        &crontab("@hourly", "UTC"),
        "2026-03-02T00:30:00+00:00",
        &["2026-03-02T01:00:00+00:00"],
    );
}

#[test]
fn start_and_end_dates() {
    let t = crontab("0 12 * * *", "UTC")
        .with_start_date(at("2026-05-10T00:00:00Z"))
        .unwrap()
        .with_end_date(at("2026-05-12T12:00:00Z"))
        .unwrap();
    check_exhausted(
        &t,
        "2026-01-01T00:00:00+00:00",
        &[
            "2026-05-10T12:00:00+00:00",
            "2026-05-11T12:00:00+00:00",
            "2026-05-12T12:00:00+00:00",
        ],
    );
}

#[test]
fn impossible_schedules_end_instead_of_looping() {
    let t = CronTrigger::fields().month("feb").day(31).build().unwrap();
    assert_eq!(
        t.next_fire_time(None, at("2026-01-01T00:00:00Z")).unwrap(),
        None
    );
    let t = CronTrigger::fields()
        .month(2)
        .day(30)
        .day_of_week("mon")
        .build()
        .unwrap();
    assert_eq!(
        t.next_fire_time(None, at("2026-01-01T00:00:00Z")).unwrap(),
        None
    );
}

#[test]
fn interval_counts_elapsed_time_across_dst() {
    let t = IntervalTrigger::builder()
        .hours(1)
        .start_date(at("2026-03-08T00:30:00-05:00"))
        .timezone("America/New_York")
        .build()
        .unwrap();
    check(
        &t,
        "2026-03-08T00:00:00-05:00",
        &[
            "2026-03-08T00:30:00-05:00",
            "2026-03-08T01:30:00-05:00",
            "2026-03-08T03:30:00-04:00",
            "2026-03-08T04:30:00-04:00",
        ],
    );
    // Starting late: the first fire is the next point on the start grid.
    check(
        &t,
        "2026-03-08T01:45:00-05:00",
        &["2026-03-08T03:30:00-04:00"],
    );
    let bounded = IntervalTrigger::builder()
        .minutes(10)
        .start_date(at("2026-01-01T00:00:00Z"))
        .end_date(at("2026-01-01T00:20:00Z"))
        .build()
        .unwrap();
    check_exhausted(
        &bounded,
        "2025-12-31T00:00:00Z",
        &[
            "2026-01-01T00:00:00+00:00",
            "2026-01-01T00:10:00+00:00",
            "2026-01-01T00:20:00+00:00",
        ],
    );
}

#[test]
fn interval_without_start_fires_one_interval_after_now() {
    let t = IntervalTrigger::builder().seconds(30).build().unwrap();
    check(
        &t,
        "2026-01-01T00:00:00Z",
        &["2026-01-01T00:00:30+00:00", "2026-01-01T00:01:00+00:00"],
    );
}

#[test]
fn calendar_interval_skips_missing_dates_and_handles_dst() {
    let monthly = CalendarIntervalTrigger::builder()
        .months(1)
        .time(9, 0, 0)
        .start_date(NaiveDate::from_ymd_opt(2026, 1, 31).unwrap())
        .timezone("Europe/London")
        .build()
        .unwrap();
    check(
        &monthly,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-31T09:00:00+00:00",
            "2026-03-31T09:00:00+01:00",
            "2026-05-31T09:00:00+01:00",
            "2026-07-31T09:00:00+01:00",
        ],
    );
    let leap = CalendarIntervalTrigger::builder()
        .years(1)
        .start_date(NaiveDate::from_ymd_opt(2028, 2, 29).unwrap())
        .build()
        .unwrap();
    check(
        &leap,
        "2026-01-01T00:00:00Z",
        &[
            "2028-02-29T00:00:00+00:00",
            "2032-02-29T00:00:00+00:00",
            "2036-02-29T00:00:00+00:00",
        ],
    );
    let gap = CalendarIntervalTrigger::builder()
        .days(1)
        .time(2, 30, 0)
        .start_date(NaiveDate::from_ymd_opt(2026, 3, 7).unwrap())
        .timezone("America/New_York")
        .build()
        .unwrap();
    check(
        &gap,
        "2026-03-01T00:00:00Z",
        &[
            "2026-03-07T02:30:00-05:00",
            "2026-03-08T03:30:00-04:00",
            "2026-03-09T02:30:00-04:00",
        ],
    );
    let fold = CalendarIntervalTrigger::builder()
        .days(1)
        .time(1, 30, 0)
        .start_date(NaiveDate::from_ymd_opt(2026, 10, 31).unwrap())
        .end_date(NaiveDate::from_ymd_opt(2026, 11, 2).unwrap())
        .timezone("America/New_York")
        .build()
        .unwrap();
    check_exhausted(
        &fold,
        "2026-10-01T00:00:00Z",
        &[
            "2026-10-31T01:30:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-02T01:30:00-05:00",
        ],
    );
}

#[test]
fn date_trigger_fires_once() {
    let t = DateTrigger::at_local("2026-03-08 02:30:00", "America/New_York").unwrap();
    check_exhausted(&t, "2026-01-01T00:00:00Z", &["2026-03-08T03:30:00-04:00"]);
}

#[test]
fn and_or_combinators() {
    let and = AndTrigger::new(vec![
        Box::new(crontab("0 12 * * *", "UTC")),
        Box::new(crontab("0 * 13 * *", "UTC")),
    ])
    .unwrap();
    check(
        &and,
        "2026-01-01T00:00:00Z",
        &["2026-01-13T12:00:00+00:00", "2026-02-13T12:00:00+00:00"],
    );
    let or = OrTrigger::new(vec![
        Box::new(DateTrigger::at(at("2026-01-01T05:00:00Z"))),
        Box::new(crontab("0 6 * * *", "UTC")),
    ])
    .unwrap();
    check(
        &or,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-01T05:00:00+00:00",
            "2026-01-01T06:00:00+00:00",
            "2026-01-02T06:00:00+00:00",
        ],
    );
}

#[test]
fn and_without_common_time_is_an_error_not_a_hang() {
    let and = AndTrigger::new(vec![
        Box::new(crontab("0 12 * * *", "UTC")),
        Box::new(crontab("0 13 * * *", "UTC")),
    ])
    .unwrap();
    let err = and
        .next_fire_time(None, at("2026-01-01T00:00:00Z"))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTrigger { .. }), "{err}");
    assert!(err.to_string().contains("no common fire time"), "{err}");
}

#[test]
fn seeded_jitter_is_deterministic_and_bounded() {
    let make = || {
        crontab("0 * * * *", "UTC")
            .with_jitter(30)
            .with_jitter_source(Arc::new(SeededJitter::new(7)))
    };
    let a = fires(&make(), "2026-01-01T00:00:00Z", 20);
    let b = fires(&make(), "2026-01-01T00:00:00Z", 20);
    assert_eq!(a, b);
    let mut distinct = std::collections::HashSet::new();
    for (i, f) in a.iter().enumerate() {
        let f = at(f);
        let base = at("2026-01-01T00:00:00Z") + chrono::Duration::hours(i as i64);
        assert!(
            f >= base && f <= base + chrono::Duration::seconds(30),
            "{f} vs {base}"
        );
        distinct.insert(f - base);
    }
    assert!(distinct.len() > 10, "jitter should vary: {distinct:?}");
}

#[test]
fn interval_jitter_keeps_the_grid() {
    let t = IntervalTrigger::builder()
        .minutes(10)
        .start_date(at("2026-01-01T00:00:00Z"))
        .jitter(60)
        .jitter_source(Arc::new(SeededJitter::new(1)))
        .build()
        .unwrap();
    let got = fires(&t, "2026-01-01T00:00:00Z", 50);
    for (i, f) in got.iter().enumerate() {
        let base = at("2026-01-01T00:00:00Z") + chrono::Duration::minutes(10 * i as i64);
        let f = at(f);
        assert!(
            f >= base && f <= base + chrono::Duration::seconds(60),
            "run {i}: {f}"
        );
    }
}

fn round_trip(t: &dyn Trigger) {
    let json = t.to_json();
    let back = trigger_from_json(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(back.to_json(), json);
    if json.get("jitter").is_some() {
        return; // random delays differ between the two copies
    }
    let now = at("2026-06-01T00:00:00Z");
    let mut a = t.next_fire_time(None, now).unwrap();
    let mut b = back.next_fire_time(None, now).unwrap();
    for _ in 0..5 {
        assert_eq!(a, b, "{json}");
        let Some(x) = a else { break };
        a = t.next_fire_time(Some(x), x).unwrap();
        b = back.next_fire_time(Some(x), x).unwrap();
    }
}

#[test]
fn every_form_round_trips_through_json() {
    round_trip(&DateTrigger::at(at("2026-07-01T12:34:56.789Z")));
    round_trip(&DateTrigger::at_local("2026-07-01 09:00", "Asia/Shanghai").unwrap());
    round_trip(
        &IntervalTrigger::builder()
            .weeks(1)
            .days(2)
            .hours(3)
            .minutes(4)
            .seconds(5)
            .start_date(at("2026-01-01T00:00:00Z"))
            .end_date(at("2027-01-01T00:00:00Z"))
            .timezone("Europe/London")
            .jitter(5)
            .build()
            .unwrap(),
    );
    round_trip(&crontab("0 9 * * 1-5", "Asia/Shanghai"));
    round_trip(
        &CronTrigger::fields()
            .year("2026-2030")
            .month("jan-mar")
            .day("last fri")
            .week("*")
            .day_of_week("*")
            .hour("9-17/2")
            .minute(30)
            .second(15)
            .timezone("America/New_York")
            .start_date(at("2026-02-01T00:00:00Z"))
            .end_date(at("2029-02-01T00:00:00Z"))
            .build()
            .unwrap(),
    );
    round_trip(
        &CalendarIntervalTrigger::builder()
            .years(1)
            .months(2)
            .weeks(1)
            .days(3)
            .time(8, 15, 0)
            .start_date(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap())
            .end_date(NaiveDate::from_ymd_opt(2030, 1, 1).unwrap())
            .timezone("Australia/Lord_Howe")
            .build()
            .unwrap(),
    );
    round_trip(
        &AndTrigger::new(vec![
            Box::new(crontab("0 12 * * *", "UTC")),
            Box::new(OrTrigger::new(vec![Box::new(crontab("0 * 13 * *", "UTC"))]).unwrap()),
        ])
        .unwrap()
        .with_jitter(3),
    );
}

#[test]
fn documented_json_shapes_parse() {
    for v in [
        json!({"type": "cron", "minute": "*/5", "timezone": "Asia/Shanghai"}),
        json!({"type": "cron", "day": "last fri", "hour": "18"}),
        json!({"type": "cron", "hour": 9, "minute": 30}),
        json!({"type": "cron", "crontab": "0 9 * * 1-5", "v": 1}),
        json!({"type": "date", "run_date": "2026-03-01T09:00:00+08:00"}),
        json!({"type": "date", "run_date": "2026-03-01 09:00:00", "timezone": "Asia/Shanghai"}),
        json!({"type": "interval", "minutes": 15, "start_date": "2026-01-01T00:00:00Z"}),
        json!({"type": "calendar_interval", "months": 1, "hour": 9}),
        json!({"type": "or", "triggers": [{"type": "cron", "hour": 1}, {"type": "cron", "hour": 2}]}),
    ] {
        trigger_from_json(&v).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
}

#[track_caller]
fn assert_invalid(result: Result<impl std::fmt::Debug, Error>, field: &str, value: &str) {
    match result {
        Err(Error::InvalidTrigger {
            field: f,
            value: v,
            reason,
        }) => {
            assert_eq!(f, field, "field (reason: {reason})");
            assert!(v.contains(value), "value {v:?} should mention {value:?}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected InvalidTrigger for {field}={value}, got {other:?}"),
    }
}

#[test]
fn bad_input_names_field_value_and_reason() {
    assert_invalid(CronTrigger::fields().hour(25).build(), "hour", "25");
    assert_invalid(
        CronTrigger::fields().day_of_week("funday").build(),
        "day_of_week",
        "funday",
    );
    assert_invalid(CronTrigger::fields().minute("*/0").build(), "minute", "*/0");
    assert_invalid(CronTrigger::fields().hour("5-2").build(), "hour", "5-2");
    assert_invalid(CronTrigger::fields().day(32).build(), "day", "32");
    assert_invalid(
        CronTrigger::fields().day("6th fri").build(),
        "day",
        "6th fri",
    );
    assert_invalid(CronTrigger::from_crontab("* * * *"), "crontab", "* * * *");
    assert_invalid(
        CronTrigger::from_crontab("* * * * * * *"),
        "crontab",
        "* * * * * * *",
    );
    assert_invalid(CronTrigger::from_crontab("0 9 * * 8"), "day_of_week", "8");
    assert_invalid(CronTrigger::from_crontab("@reboot"), "crontab", "@reboot");
    assert_invalid(
        CronTrigger::from_crontab("0 9 * * *").and_then(|t| t.with_timezone("Mars/Base")),
        "timezone",
        "Mars/Base",
    );
    assert_invalid(
        CronTrigger::fields()
            .start_date(at("2026-02-01T00:00:00Z"))
            .end_date(at("2026-01-01T00:00:00Z"))
            .build(),
        "end_date",
        "2026-01-01",
    );
    assert_invalid(IntervalTrigger::builder().build(), "interval", "0");
    assert_invalid(CalendarIntervalTrigger::builder().build(), "interval", "0");
    assert_invalid(
        CalendarIntervalTrigger::builder()
            .days(1)
            .time(24, 0, 0)
            .build(),
        "hour",
        "24",
    );
    assert_invalid(
        trigger_from_json(&json!({"type": "cron", "hour": "9", "minuet": "5"})),
        "minuet",
        "5",
    );
    assert_invalid(
        trigger_from_json(&json!({"type": "cron", "crontab": "0 9 * * *", "hour": "9"})),
        "crontab",
        "0 9",
    );
    assert_invalid(
        trigger_from_json(&json!({"type": "weekly"})),
        "type",
        "weekly",
    );
    assert_invalid(
        trigger_from_json(&json!({"type": "date"})),
        "run_date",
        "null",
    );
    assert_invalid(
        trigger_from_json(&json!({"type": "date", "run_date": "next tuesday"})),
        "run_date",
        "next tuesday",
    );
    assert_invalid(
        trigger_from_json(&json!({"type": "interval", "minutes": -5})),
        "minutes",
        "-5",
    );
    assert_invalid(
        trigger_from_json(&json!({"type": "cron", "hour": "1", "v": 2})),
        "v",
        "2",
    );
    assert_invalid(
        trigger_from_json(&json!({"type": "and", "triggers": []})),
        "triggers",
        "[]",
    );
}

#[test]
fn custom_triggers_register_by_type_name() {
    #[derive(Debug)]
    struct Never;
    impl Trigger for Never {
        fn next_fire_time(
            &self,
            _: Option<DateTime<Utc>>,
            _: DateTime<Utc>,
        ) -> sundial_core::Result<Option<DateTime<Utc>>> {
            Ok(None)
        }
        fn to_json(&self) -> serde_json::Value {
            json!({"type": "never"})
        }
    }
    let mut reg = TriggerRegistry::new();
    reg.register("never", |_, _| Ok(Box::new(Never))).unwrap();
    assert!(reg.register("cron", |_, _| Ok(Box::new(Never))).is_err());
    let t = reg
        .parse(&json!({"type": "or", "triggers": [{"type": "never"}]}))
        .unwrap();
    assert_eq!(t.next_fire_time(None, Utc::now()).unwrap(), None);
}

#[test]
fn a_step_larger_than_its_range_is_an_error_as_in_apscheduler() {
    use serde_json::json;
    for (field, expr) in [
        ("minute", "*/60"),
        ("hour", "*/24"),
        ("second", "0-59/60"),
        ("minute", "10-20/11"),
        ("minute", "50/10"),
        ("day_of_week", "*/7"),
    ] {
        let e = sundial_core::trigger::trigger_from_json(&json!({"type": "cron", field: expr}))
            .expect_err(expr)
            .to_string();
        assert!(
            e.contains(field) && e.contains("larger than the range"),
            "{field}={expr}: {e}"
        );
    }
    for (field, expr) in [
        ("minute", "*/59"),
        ("hour", "*/23"),
        ("minute", "10-20/10"),
        ("minute", "50/9"),
    ] {
        sundial_core::trigger::trigger_from_json(&json!({"type": "cron", field: expr}))
            .unwrap_or_else(|e| panic!("{field}={expr}: {e}"));
    }
    assert!(CronTrigger::from_crontab("*/60 * * * *").is_err());
    // A step that fits still fires on its first value only when that is all there is.
    check(
        &crontab("*/59 * * * *", "UTC"),
        "2026-01-01T00:00:30Z",
        &["2026-01-01T00:59:00+00:00", "2026-01-01T01:00:00+00:00"],
    );
}

#[test]
fn a_date_with_second_60_is_an_error() {
    use serde_json::json;
    for run_date in [
        "2025-01-01 10:00:60",
        "2025-01-01T10:00:60Z",
        "2025-01-01T10:00:60+08:00",
    ] {
        let e = sundial_core::trigger::trigger_from_json(
            &json!({"type": "date", "run_date": run_date}),
        )
        .expect_err(run_date)
        .to_string();
        assert!(
            e.contains("run_date") && e.contains("second 60"),
            "{run_date}: {e}"
        );
    }
    let e = sundial_core::trigger::trigger_from_json(&json!({
        "type": "interval", "minutes": 5, "start_date": "2025-01-01 10:00:60"
    }))
    .unwrap_err()
    .to_string();
    assert!(e.contains("start_date"), "{e}");
}

#[test]
fn crontab_last_day_and_quartz_weekday_days() {
    // L: the last day of each month.
    check(
        &crontab("0 18 L * *", "UTC"),
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-31T18:00:00+00:00",
            "2026-02-28T18:00:00+00:00",
            "2026-03-31T18:00:00+00:00",
        ],
    );
    // 5L: the last Friday.
    check(
        &crontab("0 18 * * 5L", "UTC"),
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-30T18:00:00+00:00",
            "2026-02-27T18:00:00+00:00",
            "2026-03-27T18:00:00+00:00",
        ],
    );
    // 5#3: the third Friday, in the trigger's zone.
    check(
        &crontab("0 9 * * 5#3", "Asia/Shanghai"),
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-16T09:00:00+08:00",
            "2026-02-20T09:00:00+08:00",
            "2026-03-20T09:00:00+08:00",
        ],
    );
    // With the day of month restricted too, either matches (as plain crontab days do).
    check(
        &crontab("0 9 1 * 5L", "UTC"),
        "2026-01-01T12:00:00Z",
        &[
            "2026-01-30T09:00:00+00:00",
            "2026-02-01T09:00:00+00:00",
            "2026-02-27T09:00:00+00:00",
        ],
    );
    // Plain weekdays and a Quartz day: Mondays or the last Friday.
    check(
        &crontab("0 9 * * 1,5L", "UTC"),
        "2026-01-24T00:00:00Z",
        &[
            "2026-01-26T09:00:00+00:00",
            "2026-01-30T09:00:00+00:00",
            "2026-02-02T09:00:00+00:00",
        ],
    );
    for bad in [
        "0 9 * * 5#6",
        "0 9 * * 5#0",
        "0 9 * * 8L",
        "0 9 * * fri#2",
        "0 9 LW * *",
    ] {
        let e = CronTrigger::from_crontab(bad).expect_err(bad).to_string();
        assert!(e.contains("day"), "{bad}: {e}");
    }
}

#[test]
fn week_53_includes_the_january_days_of_last_years_week_53() {
    use serde_json::json;
    // 2027-01-01..03 are in 2026-W53; 2033-01-01..02 in 2032-W53.
    let t = sundial_core::trigger::trigger_from_json(
        &json!({"type": "cron", "week": "53", "hour": "0", "timezone": "UTC"}),
    )
    .unwrap();
    check(
        t.as_ref(),
        "2026-12-25T00:00:00Z",
        &[
            "2026-12-28T00:00:00+00:00",
            "2026-12-29T00:00:00+00:00",
            "2026-12-30T00:00:00+00:00",
            "2026-12-31T00:00:00+00:00",
            "2027-01-01T00:00:00+00:00",
            "2027-01-02T00:00:00+00:00",
            "2027-01-03T00:00:00+00:00",
            "2032-12-27T00:00:00+00:00",
        ],
    );
    check(
        t.as_ref(),
        "2032-12-31T12:00:00Z",
        &[
            "2033-01-01T00:00:00+00:00",
            "2033-01-02T00:00:00+00:00",
            "2037-12-28T00:00:00+00:00",
        ],
    );
    // Year 2027 and week 53: only its first three days.
    let t = sundial_core::trigger::trigger_from_json(
        &json!({"type": "cron", "year": "2027", "week": "53", "hour": "0", "timezone": "UTC"}),
    )
    .unwrap();
    check_exhausted(
        t.as_ref(),
        "2026-06-01T00:00:00Z",
        &[
            "2027-01-01T00:00:00+00:00",
            "2027-01-02T00:00:00+00:00",
            "2027-01-03T00:00:00+00:00",
        ],
    );
}
