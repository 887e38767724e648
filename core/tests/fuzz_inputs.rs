//! Bad input, fuzzed: random crontab strings, cron fields, trigger JSON and
//! stored job content. Every case must end within a bound with a value or a
//! typed error — never a panic or a hang.
//!
//! The case budget is `PROPTEST_CASES` (256 by default, as CI runs it); a long
//! run: `PROPTEST_CASES=100000 cargo test -p sundial-core --test fuzz_inputs --release`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value};
use sundial_core::job::{JobContent, JobId};
use sundial_core::trigger::{CronFields, CronTrigger, Trigger, TriggerRegistry};

/// How long one case may take (a debug build on a loaded 2-core machine).
const BOUND: Duration = Duration::from_secs(10);

/// Runs `f` on its own thread; fails the case if it panics or outlasts
/// [`BOUND`].
fn bounded<T: Send + 'static>(
    what: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TestCaseError> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(BOUND) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(TestCaseError::fail(format!("panicked on {what}"))),
        Err(_) => Err(TestCaseError::fail(format!(
            "no answer within {BOUND:?} on {what}"
        ))),
    }
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-29T00:30:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Asks a parsed trigger for a few fire times; each must be later than the last.
fn walk(t: &dyn Trigger) -> Result<(), String> {
    let mut prev = None;
    for _ in 0..5 {
        match t.next_fire_time(prev, now()) {
            Ok(Some(n)) => {
                if prev.is_some_and(|p| n <= p) {
                    return Err(format!("fire time {n} not after {prev:?}"));
                }
                prev = Some(n);
            }
            Ok(None) | Err(_) => break,
        }
    }
    Ok(())
}

/// A crontab-ish field: tokens cron parsers meet, and some they should not.
fn field() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        4 => (0u32..100).prop_map(|n| n.to_string()),
        2 => Just("*".to_string()),
        1 => Just("?".to_string()),
        1 => Just("L".to_string()),
        1 => Just("last".to_string()),
        1 => prop::sample::select(vec!["mon", "FRI", "jan", "dec", "sun", "3rd fri", "last sun", "W"]).prop_map(String::from),
        1 => (-5i64..5_000_000_000).prop_map(|n| n.to_string()),
        1 => "\\PC{0,4}",
    ];
    let sep = prop::sample::select(vec!["", ",", "-", "/", "#", " ", "--", "//"]);
    prop::collection::vec((token, sep), 1..4).prop_map(|parts| {
        parts
            .into_iter()
            .map(|(t, s)| format!("{t}{s}"))
            .collect::<String>()
    })
}

/// A JSON value of bounded depth, with the keys trigger and job JSON use.
fn json() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "type",
        "seconds",
        "minutes",
        "hours",
        "days",
        "weeks",
        "start_date",
        "end_date",
        "timezone",
        "jitter",
        "run_date",
        "expr",
        "triggers",
        "hour",
        "minute",
        "second",
        "day",
        "day_of_week",
        "week",
        "month",
        "year",
        "months",
        "years",
        "task",
        "trigger",
        "args",
        "options",
        "coalesce",
        "max_instances",
        "misfire_grace_time",
        "name",
        "executor",
        "retry",
        "on_interrupted",
        "timeout",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            "date",
            "interval",
            "cron",
            "calendar_interval",
            "and",
            "or",
            "UTC",
            "Europe/London",
            "Mars/Olympus",
            "2026-03-29T01:30:00",
            "2026-13-45T99:99:99Z",
            "9999-12-31T23:59:59Z",
            "1970-01-01T00:00:00Z",
            "*/0 * * * *",
            "skip",
            "rerun",
        ])
        .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<String, Value>>(),
                )
            }),
        ]
    })
}

/// Trigger JSON shaped like the built-in triggers, with random values.
fn trigger_json() -> impl Strategy<Value = Value> {
    let kind = prop::sample::select(vec![
        "date",
        "interval",
        "cron",
        "calendar_interval",
        "and",
        "or",
    ]);
    (kind, json()).prop_map(|(kind, v)| {
        let mut obj = match v {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("triggers".into(), Value::Array(vec![other]));
                m
            }
        };
        obj.insert("type".into(), Value::from(kind));
        Value::Object(obj)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn crontab_strings_parse_or_fail_cleanly(fields in prop::collection::vec(field(), 1..8)) {
        let expr = fields.join(" ");
        let e = expr.clone();
        let walked = bounded(expr.clone(), move || {
            CronTrigger::from_crontab(&e).map(|t| walk(&t))
        })?;
        if let Ok(w) = walked {
            prop_assert!(w.is_ok(), "{expr}: {w:?}");
        }
    }

    #[test]
    fn cron_fields_build_or_fail_cleanly(
        f in prop::collection::vec(prop::option::of(field()), 8),
        tz in prop::sample::select(vec!["UTC", "Europe/London", "America/Santiago", "Australia/Lord_Howe", "Nowhere/Else", ""]),
    ) {
        let what = format!("{f:?} in {tz}");
        let walked = bounded(what.clone(), move || {
            let mut b = CronTrigger::fields().timezone(tz);
            let setters: [fn(_, String) -> _; 8] = [
                |b: CronFields, v| b.year(v),
                |b: CronFields, v| b.month(v),
                |b: CronFields, v| b.day(v),
                |b: CronFields, v| b.week(v),
                |b: CronFields, v| b.day_of_week(v),
                |b: CronFields, v| b.hour(v),
                |b: CronFields, v| b.minute(v),
                |b: CronFields, v| b.second(v),
            ];
            for (set, v) in setters.iter().zip(f) {
                if let Some(v) = v {
                    b = set(b, v);
                }
            }
            b.build().map(|t| walk(&t))
        })?;
        if let Ok(w) = walked {
            prop_assert!(w.is_ok(), "{what}: {w:?}");
        }
    }

    #[test]
    fn trigger_json_parses_or_names_a_field(v in trigger_json()) {
        let what = v.to_string();
        let walked = bounded(what.clone(), move || {
            TriggerRegistry::new().parse(&v).map(|t| {
                let json = t.to_json();
                (walk(t.as_ref()), TriggerRegistry::new().parse(&json).is_ok())
            })
        })?;
        match walked {
            Ok((w, round_trips)) => {
                prop_assert!(w.is_ok(), "{what}: {w:?}");
                prop_assert!(round_trips, "{what}: its own JSON does not parse");
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn stored_job_content_decodes_or_names_the_job(v in json(), cut in 0usize..64) {
        let what = v.to_string();
        let (whole, truncated) = bounded(what.clone(), move || {
            let text = v.to_string();
            let decode = |t: &str| JobContent::from_stored(t).decode(&JobId::new("fuzz"));
            let whole = decode(&text);
            // A decoded content encodes to a text that decodes to the same.
            let whole = whole.map(|d| decode(JobContent::encode(&d).as_str()).ok() == Some(d));
            let cut = text.char_indices().nth(cut).map_or(text.len(), |(i, _)| i);
            (whole, decode(&text[..cut]).err())
        })?;
        match whole {
            Ok(round_trips) => prop_assert!(round_trips, "{}", what),
            Err(e) => prop_assert!(e.to_string().contains("stored job 'fuzz' is unreadable"), "{}", e),
        }
        if let Some(e) = truncated {
            prop_assert!(e.to_string().contains("'fuzz'"), "{}", e);
        }
    }
}
