//! The run policy: which slots of a claimed job start now, which are missed or
//! coalesced, and when the job runs next. A pure function of the trigger, the
//! job's first due slot, the time and the job's options.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::MAX_BACKLOG_RUN_TIMES;
use crate::error::{Error, Result};
use crate::job::{trunc_micros, JobOptions};
use crate::trigger::Trigger;

/// What the run policy decides for one job at one instant.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    /// Slots to start now.
    pub(crate) due: Vec<DateTime<Utc>>,
    /// Slots that missed their grace time, with how late they are.
    pub(crate) missed: Vec<(DateTime<Utc>, Duration)>,
    /// Earlier slots of a coalesced backlog: recorded, not run.
    pub(crate) coalesced: Vec<DateTime<Utc>>,
    /// The next run time after `now` (`None`: the trigger is exhausted, or failed).
    pub(crate) next: Option<DateTime<Utc>>,
    /// The backlog was longer than [`MAX_BACKLOG_RUN_TIMES`]: its tail was skipped.
    pub(crate) truncated: bool,
    /// The trigger failed while the backlog was walked (the job is kept).
    pub(crate) trigger_error: Option<Error>,
}

/// The next fire time strictly after `t`, in whole microseconds (what every store
/// keeps), so that a trigger whose start has sub-microsecond digits cannot yield
/// two slots within one microsecond.
pub(crate) fn next_after(
    trigger: &dyn Trigger,
    t: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let mut prev = t;
    for _ in 0..64 {
        match trigger.next_fire_time(Some(prev), now)? {
            None => return Ok(None),
            Some(n) => {
                let n2 = trunc_micros(n);
                if n2 > t {
                    return Ok(Some(n2));
                }
                if n <= prev {
                    break;
                }
                prev = n;
            }
        }
    }
    Err(Error::Config(format!(
        "trigger {} does not advance past {t}",
        trigger.describe()
    )))
}

/// Decides a job's slots at `now`, its first due slot being `first`: every
/// fire time up to `now` (at most [`MAX_BACKLOG_RUN_TIMES`]), coalesced into
/// the last one if the job coalesces, each missed if later than the misfire
/// grace time; then the next fire time after `now` (or the schedule a client's
/// run request saved, `resume_at`).
pub(crate) fn decide(
    trigger: &dyn Trigger,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
    options: &JobOptions,
) -> Decision {
    let mut d = Decision::default();
    let mut run_times = Vec::new();
    let mut next = Some(trunc_micros(first));
    while let Some(t) = next {
        if t > now {
            break;
        }
        if run_times.len() == MAX_BACKLOG_RUN_TIMES {
            d.truncated = true;
            // Skip the rest of the backlog: the first fire time from now on
            // that comes after the last slot kept (a trigger may answer `now`
            // itself, which can be that slot).
            let skipped = match trigger.next_fire_time(None, now) {
                Ok(Some(n)) if trunc_micros(n) > t => Ok(Some(trunc_micros(n))),
                Ok(Some(_)) => next_after(trigger, t, now),
                other => other,
            };
            next = match skipped {
                Ok(n) => n,
                Err(e) => {
                    d.trigger_error = Some(e);
                    None
                }
            };
            break;
        }
        run_times.push(t);
        next = match next_after(trigger, t, now) {
            Ok(n) => n,
            Err(e) => {
                d.trigger_error = Some(e);
                None
            }
        };
    }
    // After a run a client asked for, the job goes back to its own schedule.
    if let Some(resume) = options.resume_at.filter(|r| *r > now) {
        if d.trigger_error.is_none() && !run_times.is_empty() {
            next = Some(resume);
        }
    }
    d.next = next;
    // The slots walked become the due ones (one list in the common case of
    // a single slot).
    let mut due = run_times;
    if options.coalesce && due.len() > 1 {
        if let Some(last) = due.pop() {
            d.coalesced = std::mem::replace(&mut due, vec![last]);
        }
    }
    if let Some(grace) = options.misfire_grace_time {
        due.retain(|&t| {
            let late = (now - t).to_std().unwrap_or_default();
            if late > grace {
                d.missed.push((t, late));
            }
            late <= grace
        });
    }
    d.due = due;
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::{CronTrigger, DateTrigger, IntervalTrigger};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn interval(seconds: u64, start: DateTime<Utc>) -> IntervalTrigger {
        IntervalTrigger::builder()
            .seconds(seconds)
            .start_date(start)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn every_minute() -> IntervalTrigger {
        interval(60, at("2026-01-01T00:00:00Z"))
    }

    fn options(coalesce: bool, grace: Option<u64>) -> JobOptions {
        JobOptions {
            coalesce,
            misfire_grace_time: grace.map(Duration::from_secs),
            ..JobOptions::default()
        }
    }

    #[test]
    fn an_on_time_slot_is_due_and_the_next_follows() {
        let d = decide(
            &every_minute(),
            at("2026-01-01T00:01:00Z"),
            at("2026-01-01T00:01:00.2Z"),
            &options(true, Some(1)),
        );
        assert_eq!(d.due, [at("2026-01-01T00:01:00Z")]);
        assert!(d.missed.is_empty() && d.coalesced.is_empty() && !d.truncated);
        assert_eq!(d.next, Some(at("2026-01-01T00:02:00Z")));
    }

    #[test]
    fn a_backlog_coalesces_into_its_last_slot() {
        let d = decide(
            &every_minute(),
            at("2026-01-01T00:01:00Z"),
            at("2026-01-01T00:05:00.5Z"),
            &options(true, Some(1)),
        );
        assert_eq!(d.due, [at("2026-01-01T00:05:00Z")]);
        assert_eq!(d.coalesced.len(), 4);
        assert!(d.missed.is_empty());
        assert_eq!(d.next, Some(at("2026-01-01T00:06:00Z")));
    }

    #[test]
    fn without_coalescing_each_slot_is_due_or_missed_by_its_lateness() {
        let d = decide(
            &every_minute(),
            at("2026-01-01T00:01:00Z"),
            at("2026-01-01T00:05:30Z"),
            &options(false, Some(90)),
        );
        assert_eq!(
            d.due,
            [at("2026-01-01T00:04:00Z"), at("2026-01-01T00:05:00Z")]
        );
        let missed: Vec<_> = d.missed.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            missed,
            [
                at("2026-01-01T00:01:00Z"),
                at("2026-01-01T00:02:00Z"),
                at("2026-01-01T00:03:00Z")
            ]
        );
        assert_eq!(d.missed[0].1, Duration::from_secs(270));
    }

    #[test]
    fn no_grace_limit_runs_however_late() {
        let d = decide(
            &every_minute(),
            at("2026-01-01T00:01:00Z"),
            at("2026-01-01T05:00:30Z"),
            &options(true, None),
        );
        assert_eq!(d.due, [at("2026-01-01T05:00:00Z")]);
        assert!(d.missed.is_empty());
    }

    #[test]
    fn a_backlog_beyond_the_cap_is_truncated_to_the_next_fire_after_now() {
        let d = decide(
            &interval(1, at("2026-01-01T00:00:00Z")),
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T10:00:00.5Z"),
            &options(false, None),
        );
        assert!(d.truncated);
        assert_eq!(d.due.len(), MAX_BACKLOG_RUN_TIMES);
        assert_eq!(d.next, Some(at("2026-01-01T10:00:01Z")));
    }

    #[test]
    fn a_truncated_backlog_cut_off_at_now_keeps_the_job() {
        // Slots every second from `start`; 1,000 are kept, and the first one
        // cut off is exactly now.
        let start = at("2026-01-01T00:00:00Z");
        let now = start + chrono::Duration::seconds(1000);
        let d = decide(&interval(1, start), start, now, &options(true, None));
        assert!(d.truncated);
        assert_eq!(d.due, [now - chrono::Duration::seconds(1)]);
        assert_eq!(d.next, Some(now + chrono::Duration::seconds(1)));
        assert!(d.trigger_error.is_none());
    }

    #[test]
    fn an_exhausted_trigger_has_no_next() {
        let d = decide(
            &DateTrigger::at(at("2026-01-01T00:01:00Z")),
            at("2026-01-01T00:01:00Z"),
            at("2026-01-01T00:01:00Z"),
            &options(true, Some(1)),
        );
        assert_eq!(d.due, [at("2026-01-01T00:01:00Z")]);
        assert_eq!(d.next, None);
        assert!(d.trigger_error.is_none());
    }

    #[test]
    fn a_future_first_slot_starts_nothing() {
        let d = decide(
            &every_minute(),
            at("2026-01-01T00:03:00Z"),
            at("2026-01-01T00:02:00Z"),
            &options(true, Some(1)),
        );
        assert!(d.due.is_empty() && d.missed.is_empty() && d.coalesced.is_empty());
        assert_eq!(d.next, Some(at("2026-01-01T00:03:00Z")));
    }

    #[test]
    fn a_requested_run_returns_to_the_saved_schedule() {
        let mut o = options(true, Some(1));
        o.resume_at = Some(at("2026-01-08T09:00:00Z"));
        let weekly = CronTrigger::from_crontab("0 9 * * 4").unwrap_or_else(|e| panic!("{e}"));
        let d = decide(
            &weekly,
            at("2026-01-02T12:00:00Z"),
            at("2026-01-02T12:00:00.3Z"),
            &o,
        );
        assert_eq!(d.due, [at("2026-01-02T12:00:00Z")]);
        assert_eq!(d.next, Some(at("2026-01-08T09:00:00Z")));
    }

    #[test]
    fn sub_microsecond_starts_give_one_slot_per_period() {
        let start = at("2026-01-01T00:00:00.480332242Z");
        let t = interval(60, start);
        let d = decide(
            &t,
            trunc_micros(start),
            at("2026-01-01T00:02:30Z"),
            &options(false, None),
        );
        assert_eq!(d.due.len(), 3, "{:?}", d.due);
    }
}
