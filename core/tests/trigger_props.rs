//! Property tests: random cron specs against an independent brute-force matcher.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Datelike, Duration, LocalResult, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use sundial_core::trigger::{CronTrigger, Trigger};

#[derive(Debug, Clone)]
struct Spec {
    minutes: Vec<u32>,
    hours: Option<Vec<u32>>,
    doms: Option<Vec<u32>>,
    months: Option<Vec<u32>>,
    dows: Option<Vec<u32>>, // POSIX, 0 = Sunday
}

fn list(v: &Option<Vec<u32>>) -> String {
    match v {
        None => "*".into(),
        Some(v) => v
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(","),
    }
}

impl Spec {
    fn crontab(&self) -> String {
        format!(
            "{} {} {} {} {}",
            list(&Some(self.minutes.clone())),
            list(&self.hours),
            list(&self.doms),
            list(&self.months),
            list(&self.dows)
        )
    }

    /// Independent reading of POSIX cron matching for a wall-clock time.
    fn matches(&self, t: chrono::NaiveDateTime) -> bool {
        let inn = |v: &Option<Vec<u32>>, x: u32| v.as_ref().is_none_or(|v| v.contains(&x));
        if t.second() != 0 || !self.minutes.contains(&t.minute()) || !inn(&self.hours, t.hour()) {
            return false;
        }
        if !inn(&self.months, t.month()) {
            return false;
        }
        let dom = inn(&self.doms, t.day());
        let dow = inn(&self.dows, t.weekday().num_days_from_sunday());
        if self.doms.is_some() && self.dows.is_some() {
            dom || dow
        } else {
            dom && dow
        }
    }
}

fn subset(max: u32, lo: u32) -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::btree_set(lo..=max, 1..4).prop_map(|s| s.into_iter().collect())
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        subset(59, 0),
        proptest::option::of(subset(23, 0)),
        proptest::option::weighted(0.3, subset(28, 1)),
        proptest::option::weighted(0.3, subset(12, 1)),
        proptest::option::weighted(0.3, subset(6, 0)),
    )
        .prop_map(|(minutes, hours, doms, months, dows)| Spec {
            minutes,
            hours,
            doms,
            months,
            dows,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// In UTC the trigger returns exactly the minutes a brute-force scan finds.
    #[test]
    fn utc_matches_brute_force(spec in spec(), start_min in 0i64..(2 * 365 * 24 * 60)) {
        let t = CronTrigger::from_crontab(&spec.crontab()).unwrap();
        let from = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(start_min);
        let mut expected = Vec::new();
        let mut m = from;
        let limit = from + Duration::days(800);
        while expected.len() < 3 && m < limit {
            if spec.matches(m.naive_utc()) {
                expected.push(m);
            }
            m += Duration::minutes(1);
        }
        let mut got = Vec::new();
        let mut prev = None;
        let mut now = from;
        while got.len() < expected.len() {
            let Some(f) = t.next_fire_time(prev, now).unwrap() else { break };
            got.push(f);
            prev = Some(f);
            now = f;
        }
        prop_assert_eq!(got, expected, "spec {}", spec.crontab());
    }

    /// In DST zones fire times strictly increase, stay within start/end, and
    /// each matches the spec in the zone (or is a gap time moved forward).
    #[test]
    fn dst_zones_increase_and_match(
        spec in spec(),
        zone in prop::sample::select(vec!["America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata"]),
        start_day in 0i64..730,
        end_days in 30i64..400,
    ) {
        let tz: Tz = zone.parse().unwrap();
        let from = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::days(start_day);
        let end = from + Duration::days(end_days);
        let t = CronTrigger::from_crontab(&spec.crontab()).unwrap()
            .with_tz(tz)
            .with_start_date(from).unwrap()
            .with_end_date(end).unwrap();
        let mut prev: Option<DateTime<Utc>> = None;
        let mut now = from - Duration::days(3);
        for _ in 0..200 {
            let Some(f) = t.next_fire_time(prev, now).unwrap() else { break };
            prop_assert!(f >= from && f <= end, "{} outside start/end", f);
            if let Some(p) = prev {
                prop_assert!(f > p, "not increasing: {} after {}", f, p);
            }
            let wall = f.with_timezone(&tz).naive_local();
            let ok = spec.matches(wall) || {
                // A fixed-time schedule moves a gap time forward by the gap length.
                [30, 60].iter().any(|g| {
                    let shifted = wall - Duration::minutes(*g);
                    matches!(tz.from_local_datetime(&shifted), LocalResult::None) && spec.matches(shifted)
                })
            };
            prop_assert!(ok, "{} ({}) does not match {}", f, wall, spec.crontab());
            prev = Some(f);
            now = f;
        }
    }
}
