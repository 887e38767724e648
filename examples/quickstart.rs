//! Quickstart: prints the next fire times of a few triggers.

use chrono::Utc;
use sundial::trigger::{CronTrigger, IntervalTrigger, Trigger};

fn main() -> Result<(), sundial::Error> {
    let now = Utc::now();
    let cron = CronTrigger::from_crontab("0 9 * * 1-5")?.with_timezone("Asia/Shanghai")?;
    let interval = IntervalTrigger::builder()
        .minutes(15)
        .start_date(now)
        .build()?;
    for (name, t) in [
        ("weekdays 09:00 Shanghai", &cron as &dyn Trigger),
        ("every 15 minutes", &interval),
    ] {
        let mut prev = None;
        println!("{name}:");
        for _ in 0..3 {
            let Some(next) = t.next_fire_time(prev, now) else {
                break;
            };
            println!(
                "  {}",
                next.with_timezone(&t.timezone().unwrap_or(sundial::chrono_tz::UTC))
                    .to_rfc3339()
            );
            prev = Some(next);
        }
    }
    Ok(())
}
