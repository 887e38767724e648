//! Prints nanoseconds per `next_fire_time` call for representative triggers.
//!
//! ```sh
//! cargo bench -p sundial-integration-tests --bench triggers
//! ```

use std::hint::black_box;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use sundial::trigger::{
    AndTrigger, CalendarIntervalTrigger, CronTrigger, IntervalTrigger, OrTrigger, Trigger,
};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn bench(name: &str, t: &dyn Trigger) {
    // Iterate a sequence the way the scheduler does, restarting when exhausted.
    let start = at("2026-01-01T00:00:00Z");
    let iters = 200_000u32;
    let mut prev = None;
    let mut now = start;
    let began = Instant::now();
    for _ in 0..iters {
        match t.next_fire_time(prev, now).ok().flatten() {
            Some(f) => {
                prev = Some(f);
                now = f;
            }
            None => {
                prev = None;
                now = start;
            }
        }
        black_box(prev);
    }
    let ns = began.elapsed().as_nanos() as f64 / f64::from(iters);
    println!("{name:<44} {ns:>9.0} ns/call");
}

fn main() -> sundial::Result<()> {
    let ny = "America/New_York";
    let cases: Vec<(&str, Box<dyn Trigger>)> = vec![
        (
            "crontab */15 * * * * (New York)",
            Box::new(CronTrigger::from_crontab("*/15 * * * *")?.with_timezone(ny)?),
        ),
        (
            "crontab 0 9 * * 1-5 (Shanghai)",
            Box::new(CronTrigger::from_crontab("0 9 * * 1-5")?.with_timezone("Asia/Shanghai")?),
        ),
        (
            "crontab 30 2 * * * (New York, DST gaps)",
            Box::new(CronTrigger::from_crontab("30 2 * * *")?.with_timezone(ny)?),
        ),
        (
            "crontab 0 0 29 2 mon (either day field)",
            Box::new(CronTrigger::from_crontab("0 0 29 2 mon")?),
        ),
        (
            "fields month=2 day=29 dow=mon (sparse)",
            Box::new(
                CronTrigger::fields()
                    .month(2)
                    .day(29)
                    .day_of_week("mon")
                    .build()?,
            ),
        ),
        (
            "fields month=feb day='last fri'",
            Box::new(CronTrigger::fields().month("feb").day("last fri").build()?),
        ),
        (
            "fields day='5th fri' hour=18 (London)",
            Box::new(
                CronTrigger::fields()
                    .day("5th fri")
                    .hour(18)
                    .timezone("Europe/London")
                    .build()?,
            ),
        ),
        (
            "fields week=53 day_of_week=mon",
            Box::new(CronTrigger::fields().week(53).day_of_week("mon").build()?),
        ),
        (
            "crontab * * * * * * (every second)",
            Box::new(CronTrigger::from_crontab("* * * * * *")?),
        ),
        (
            "interval 15 minutes",
            Box::new(
                IntervalTrigger::builder()
                    .minutes(15)
                    .start_date(at("2026-01-01T00:00:00Z"))
                    .build()?,
            ),
        ),
        (
            "calendar_interval 1 month on the 31st (London)",
            Box::new(
                CalendarIntervalTrigger::builder()
                    .months(1)
                    .time(9, 0, 0)
                    .start_date(NaiveDate::from_ymd_opt(2026, 1, 31).unwrap_or_default())
                    .timezone("Europe/London")
                    .build()?,
            ),
        ),
        (
            "and(0 12 * * *, 0 * 13 * *)",
            Box::new(AndTrigger::new(vec![
                Box::new(CronTrigger::from_crontab("0 12 * * *")?),
                Box::new(CronTrigger::from_crontab("0 * 13 * *")?),
            ])?),
        ),
        (
            "or(0 9 * * *, 0 17 * * *)",
            Box::new(OrTrigger::new(vec![
                Box::new(CronTrigger::from_crontab("0 9 * * *")?),
                Box::new(CronTrigger::from_crontab("0 17 * * *")?),
            ])?),
        ),
        (
            "impossible: day=31 month=feb (returns None)",
            Box::new(CronTrigger::fields().month(2).day(31).build()?),
        ),
    ];
    for (name, t) in &cases {
        bench(name, t.as_ref());
    }
    Ok(())
}
