//! The job model: ids, options, persisted records, leases.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Serialises a shared-string id as a plain string and reads it back.
macro_rules! shared_str_serde {
    ($t:ident) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                Ok($t(std::sync::Arc::from(s.as_ref())))
            }
        }
    };
}
pub(crate) use shared_str_serde;

/// A job's id, unique within its store.
///
/// Cloning is cheap: the text is shared, not copied.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(Arc<str>);
shared_str_serde!(JobId);

impl JobId {
    /// Wraps a string id.
    pub fn new(id: impl Into<String>) -> Self {
        JobId(Arc::from(id.into()))
    }

    /// A fresh random id (32 hex characters).
    pub fn random() -> Self {
        JobId::new(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        JobId(Arc::from(s))
    }
}

impl From<String> for JobId {
    fn from(s: String) -> Self {
        JobId(Arc::from(s))
    }
}

impl From<&JobId> for JobId {
    fn from(s: &JobId) -> Self {
        s.clone()
    }
}

/// `t` plus `d`, saturating at the latest representable instant (a lease or
/// timeout of `Duration::MAX` must not overflow).
pub fn add_saturating(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Cuts an instant to whole microseconds, the precision every store keeps.
pub fn trunc_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Timelike;
    let nanos = t.nanosecond();
    // Within the second, without the round trip through a count of
    // microseconds; a leap second is counted into the next second, as the
    // stores count it.
    if nanos < 1_000_000_000 {
        if let Some(cut) = t.naive_utc().with_nanosecond(nanos - nanos % 1_000) {
            return cut.and_utc();
        }
    }
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Identifies one scheduler instance (process) that holds leases on jobs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnerId(Arc<str>);
shared_str_serde!(OwnerId);

impl OwnerId {
    /// Wraps a string owner id.
    pub fn new(id: impl Into<String>) -> Self {
        OwnerId(Arc::from(id.into()))
    }

    /// A fresh random owner id.
    pub fn random() -> Self {
        OwnerId::new(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let v: Option<f64> = Option::deserialize(d)?;
        match v {
            None => Ok(None),
            Some(x) => Duration::try_from_secs_f64(x)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Per-job settings that shape how runs happen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    /// A human-readable name (defaults to the task name in listings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The executor alias; `None` routes by task kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// How late a run may start and still run (`None`: however late).
    #[serde(default, with = "opt_secs", skip_serializing_if = "Option::is_none")]
    pub misfire_grace_time: Option<Duration>,
    /// Whether a backlog of missed runs collapses into one run.
    #[serde(default = "default_coalesce")]
    pub coalesce: bool,
    /// How many runs of this job may execute at once.
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// Runs longer than this are reported (and cancelled on the async executor).
    #[serde(default, with = "opt_secs", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// How failed and timed-out runs are retried (`None`: not retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// What happens to a slot whose run was interrupted.
    #[serde(default, skip_serializing_if = "OnInterrupted::is_skip")]
    pub on_interrupted: OnInterrupted,
    /// Set when a client asked for a run now: the next run time on the
    /// trigger's own schedule, which the job returns to after that run (so a
    /// one-off job is not used up and a calendar step does not move).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_at: Option<DateTime<Utc>>,
}

impl JobOptions {
    /// Says what is wrong with options that could not be stored and read back
    /// (a duration too long for its JSON form, a jitter outside 0..=1, no
    /// instance allowed).
    pub fn check(&self) -> std::result::Result<(), String> {
        let durations = [
            ("misfire_grace_time", self.misfire_grace_time),
            ("timeout", self.timeout),
            ("retry backoff", self.retry.as_ref().map(|r| r.backoff)),
            (
                "retry max_backoff",
                self.retry.as_ref().map(|r| r.max_backoff),
            ),
        ];
        for (name, d) in durations {
            if let Some(d) = d {
                if Duration::try_from_secs_f64(d.as_secs_f64()).is_err() {
                    return Err(format!(
                        "{name} of {d:?} is too long to store (at most about 584 billion years; leave it unset for no limit)"
                    ));
                }
            }
        }
        if let Some(r) = &self.retry {
            if !(0.0..=1.0).contains(&r.jitter) {
                return Err(format!("retry jitter {} is not between 0 and 1", r.jitter));
            }
        }
        if self.max_instances == 0 {
            return Err("max_instances must be at least 1".into());
        }
        Ok(())
    }
}

/// What happens to a slot whose run was interrupted: its node was killed,
/// froze or lost the store past the run's heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInterrupted {
    /// The run stays recorded as `interrupted` and the slot does not run
    /// again (the task may have done part of its work).
    #[default]
    Skip,
    /// The scheduler that finds the interrupted run starts the slot again as
    /// its next attempt, if it has the job's task; at most the retry policy's
    /// `max_attempts` attempts in all (3 without a policy).
    Rerun,
}

impl OnInterrupted {
    /// Whether this is the default, [`OnInterrupted::Skip`].
    pub fn is_skip(&self) -> bool {
        *self == OnInterrupted::Skip
    }
}

/// Attempts in all of a slot rerun after interruptions, for a job without a retry policy.
pub const DEFAULT_RERUN_ATTEMPTS: u32 = 3;

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Duration::try_from_secs_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// How a failed or timed-out run is retried: as attempt + 1 of the same slot,
/// recorded in the run ledger, after an exponential backoff.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (3: the first run and two retries).
    pub max_attempts: u32,
    /// The delay before the first retry; it doubles for each further retry.
    #[serde(with = "secs")]
    pub backoff: Duration,
    /// The longest delay between two attempts.
    #[serde(with = "secs")]
    pub max_backoff: Duration,
    /// Spread each delay randomly over ±`jitter` of itself (0.0 to 1.0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub jitter: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl RetryPolicy {
    /// Up to `max_attempts` attempts in all, `backoff` before the first retry,
    /// doubling up to one hour, without jitter.
    pub fn new(max_attempts: u32, backoff: Duration) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            backoff,
            max_backoff: Duration::from_secs(3600).max(backoff),
            jitter: 0.0,
        }
    }

    /// Caps the delay between attempts.
    pub fn max_backoff(mut self, cap: Duration) -> Self {
        self.max_backoff = cap;
        self
    }

    /// Spreads each delay over ±`fraction` of itself (clamped to 0.0..=1.0).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Whether a run that failed at `attempt` gets another one.
    pub fn retries_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The delay before the attempt that follows `attempt` (1-based), before jitter.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        self.backoff
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max_backoff)
    }

    /// [`delay_after`](RetryPolicy::delay_after) spread by the jitter, with `unit`
    /// a random number in 0.0..1.0.
    pub fn jittered_delay_after(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.delay_after(attempt).as_secs_f64();
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::try_from_secs_f64((base * factor).max(0.0)).unwrap_or_default()
    }
}

// Read when stored content leaves the field out; every build writes it, so
// content written by a later build that omits its defaults stays readable here.
fn default_coalesce() -> bool {
    JobDefaults::default().coalesce
}

fn default_max_instances() -> u32 {
    JobDefaults::default().max_instances
}

impl Default for JobOptions {
    fn default() -> Self {
        let d = JobDefaults::default();
        JobOptions {
            name: None,
            executor: None,
            misfire_grace_time: d.misfire_grace_time,
            coalesce: d.coalesce,
            max_instances: d.max_instances,
            timeout: d.timeout,
            retry: None,
            on_interrupted: OnInterrupted::Skip,
            resume_at: None,
        }
    }
}

/// Scheduler-wide defaults for job options (APScheduler's `job_defaults`).
#[derive(Clone, Debug, PartialEq)]
pub struct JobDefaults {
    /// Default for [`JobOptions::coalesce`] (`true`).
    pub coalesce: bool,
    /// Default for [`JobOptions::max_instances`] (`1`).
    pub max_instances: u32,
    /// Default for [`JobOptions::misfire_grace_time`] (1 second).
    pub misfire_grace_time: Option<Duration>,
    /// Default for [`JobOptions::timeout`] (none).
    pub timeout: Option<Duration>,
}

impl Default for JobDefaults {
    fn default() -> Self {
        JobDefaults {
            coalesce: true,
            max_instances: 1,
            misfire_grace_time: Some(Duration::from_secs(1)),
            timeout: None,
        }
    }
}

/// A claim on a job by one scheduler, valid until `until`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// Who holds the lease.
    pub owner: OwnerId,
    /// When the lease expires and others may claim the job.
    pub until: DateTime<Utc>,
}

/// A job's content: its task, trigger, arguments and options as one JSON
/// text. Only the scheduler encodes and decodes it; stores keep the text as
/// they get it (MongoDB keeps it as a document).
#[derive(Clone, PartialEq, Eq)]
pub struct JobContent(Arc<str>);

impl JobContent {
    /// Wraps the text a store kept, as it is: a text that does not decode is
    /// reported by the scheduler when it reads the job, never by the store.
    pub fn from_stored(text: impl Into<Arc<str>>) -> Self {
        JobContent(text.into())
    }

    /// Encodes decoded content.
    pub fn encode(data: &JobData) -> Self {
        // A `JobData` holds strings, JSON values and plain options only, all of
        // which serialise without error.
        let text = serde_json::to_string(data).unwrap_or_else(|_| String::from("null"));
        JobContent(text.into())
    }

    /// Encodes content from its parts, the trigger given as its JSON text:
    /// the same JSON as [`JobContent::encode`] of the same parts; `None` when
    /// the trigger's text is not JSON.
    pub(crate) fn encode_parts(
        task: &str,
        trigger: &str,
        args: &Value,
        options: &JobOptions,
    ) -> Option<Self> {
        let trigger = serde_json::from_str::<&serde_json::value::RawValue>(trigger).ok()?;
        Some(Self::encode_with(task, trigger, args, options))
    }

    /// Encodes content from its parts, the trigger given as anything that
    /// serialises as its JSON form (a built-in trigger's spec, or its text).
    pub(crate) fn encode_with<T: Serialize + ?Sized>(
        task: &str,
        trigger: &T,
        args: &Value,
        options: &JobOptions,
    ) -> Self {
        /// [`JobData`]'s fields, borrowed, in its order.
        #[derive(Serialize)]
        struct Parts<'a, T: ?Sized> {
            task: &'a str,
            trigger: &'a T,
            #[serde(skip_serializing_if = "Value::is_null")]
            args: &'a Value,
            #[serde(serialize_with = "options_text")]
            options: &'a JobOptions,
        }
        let parts = Parts {
            task,
            trigger,
            args,
            options,
        };
        // Like `encode`: strings, JSON values, trigger specs and plain
        // options serialise without error.
        // Room for a typical job's content, so that the text is not regrown.
        let mut buf = Vec::with_capacity(256);
        let text = serde_json::to_writer(&mut buf, &parts)
            .ok()
            .and_then(|()| String::from_utf8(buf).ok())
            .unwrap_or_else(|| String::from("null"));
        JobContent(text.into())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared text, for stores that keep it without copying.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }

    /// Decodes the content of job `id`.
    ///
    /// # Errors
    /// [`crate::Error::UnreadableJob`] naming the job and what is wrong when
    /// the text is not the content of a job (edited by hand, or written by a
    /// newer version).
    pub fn decode(&self, id: &JobId) -> crate::Result<JobData> {
        serde_json::from_str(&self.0).map_err(|e| crate::Error::UnreadableJob {
            id: id.to_string(),
            reason: e.to_string(),
        })
    }
}

/// Writes job options as their JSON, reusing the text of the options written
/// last on this thread when they are equal (jobs added together mostly share
/// their options: the defaults).
fn options_text<S: serde::Serializer>(
    options: &&JobOptions,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::Error as _;
    use serde_json::value::RawValue;
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<Option<(JobOptions, Box<RawValue>)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return options.serialize(s);
        };
        if let Some((_, text)) = last.as_ref().filter(|(o, _)| o == *options) {
            return text.serialize(s);
        }
        let text = serde_json::to_string(*options)
            .and_then(RawValue::from_string)
            .map_err(S::Error::custom)?;
        let written = text.serialize(s);
        *last = Some(((*options).clone(), text));
        written
    })
}

impl fmt::Debug for JobContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for JobContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JobContent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for JobContent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(JobContent::from_stored)
    }
}

/// A job's content, decoded: what it runs, when, with what, and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobData {
    /// The registered task name the job runs.
    pub task: String,
    /// The trigger's JSON form.
    pub trigger: Value,
    /// The task's arguments as JSON (`null`, left out of the text, for none).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub args: Value,
    /// Run settings.
    pub options: JobOptions,
}

/// A job's content as running it reads it: [`JobData`]'s fields, with the
/// trigger left as its JSON text for [`crate::trigger::TriggerRegistry`] to
/// read without building a JSON value first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunContent<'a> {
    pub(crate) task: String,
    #[serde(borrow)]
    pub(crate) trigger: &'a serde_json::value::RawValue,
    #[serde(default)]
    pub(crate) args: Value,
    #[serde(deserialize_with = "options_read")]
    pub(crate) options: JobOptions,
}

/// Reads job options, reusing the options read last on this thread when
/// their text is the same (jobs run together mostly share their options).
fn options_read<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<JobOptions, D::Error> {
    use serde::de::Error as _;
    use serde_json::value::RawValue;
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<Option<(String, JobOptions)>> = const { RefCell::new(None) };
    }
    let text = <&RawValue>::deserialize(d)?.get();
    LAST.with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return serde_json::from_str(text).map_err(D::Error::custom);
        };
        if let Some((_, options)) = last.as_ref().filter(|(t, _)| t == text) {
            return Ok(options.clone());
        }
        let options: JobOptions = serde_json::from_str(text).map_err(D::Error::custom)?;
        *last = Some((text.to_string(), options.clone()));
        Ok(options)
    })
}

impl JobContent {
    /// Reads the content for running the job; `None` when it does not read,
    /// and [`JobContent::decode`] says why.
    pub(crate) fn for_run(&self) -> Option<RunContent<'_>> {
        serde_json::from_str(&self.0).ok()
    }
}

/// What a store persists for one job: the opaque content plus what stores
/// index and compare (next run time, lease, version).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobRecord {
    /// The job's id.
    pub id: JobId,
    /// Task, trigger, arguments and options; stores never interpret it.
    pub content: JobContent,
    /// When the job runs next; `None` means paused.
    pub next_run_time: Option<DateTime<Utc>>,
    /// The current claim, if a scheduler holds one.
    pub lease: Option<Lease>,
    /// Bumped by the store on every write; guards `release` against stale writers.
    pub version: u64,
    /// Set by a store that found this record's stored fields corrupted and
    /// took it out of the due set instead of claiming it: why. The scheduler
    /// reports such a record and does not run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<String>,
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn content_from_parts_is_the_json_of_the_decoded_content() {
        let trigger = serde_json::json!({"type": "interval", "seconds": 5, "timezone": "UTC"});
        let options = JobOptions {
            name: Some("n \"q\"".into()),
            ..JobOptions::default()
        };
        for args in [Value::Null, serde_json::json!({"a": [1, "x"]})] {
            let want = JobData {
                task: "t".into(),
                trigger: trigger.clone(),
                args: args.clone(),
                options: options.clone(),
            };
            let parts = JobContent::encode_parts("t", &trigger.to_string(), &args, &options)
                .expect("a JSON trigger");
            let id = JobId::new("j");
            assert_eq!(parts.decode(&id).expect("decodes"), want, "{parts}");
            let whole: Value =
                serde_json::from_str(JobContent::encode(&want).as_str()).expect("JSON");
            let from_parts: Value = serde_json::from_str(parts.as_str()).expect("JSON");
            assert_eq!(from_parts, whole);
            assert!(JobContent::encode_parts("t", "not json", &args, &options).is_none());
        }
    }

    #[test]
    fn instants_are_cut_to_whole_microseconds() {
        for (secs, nanos, want) in [
            (1_800_000_000, 123_456_789, 123_456_000),
            (1_800_000_000, 123_456_000, 123_456_000),
            (1_800_000_000, 999, 0),
            (-1, 999_999_999, 999_999_000),
            (0, 0, 0),
        ] {
            let t = DateTime::from_timestamp(secs, nanos).expect("an instant");
            let cut = trunc_micros(t);
            assert_eq!(
                cut,
                DateTime::from_timestamp(secs, want).expect("an instant")
            );
            assert_eq!(
                cut,
                DateTime::from_timestamp_micros(t.timestamp_micros()).expect("an instant")
            );
        }
        assert_eq!(
            trunc_micros(DateTime::<Utc>::MAX_UTC).timestamp_micros(),
            DateTime::<Utc>::MAX_UTC.timestamp_micros()
        );
        assert_eq!(
            trunc_micros(DateTime::<Utc>::MIN_UTC),
            DateTime::<Utc>::MIN_UTC
        );
        // A leap second reads as the stores keep it: in the next second.
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_789))
            .expect("a leap second")
            .and_utc();
        assert_eq!(
            trunc_micros(leap),
            DateTime::from_timestamp_micros(leap.timestamp_micros()).expect("an instant")
        );
        assert_eq!(
            trunc_micros(leap).to_rfc3339(),
            "2017-01-01T00:00:00.500+00:00"
        );
    }

    #[test]
    fn options_written_and_read_in_turn_each_keep_their_own() {
        let trigger = serde_json::json!({"type": "interval", "seconds": 5});
        let named = |n: &str| JobOptions {
            name: Some(n.into()),
            ..JobOptions::default()
        };
        let slow = JobOptions {
            max_instances: 3,
            timeout: Some(Duration::from_millis(1500)),
            ..JobOptions::default()
        };
        let id = JobId::new("j");
        // Equal options in a row, then different ones, then the first again.
        for options in [
            JobOptions::default(),
            JobOptions::default(),
            named("a"),
            named("a"),
            named("b"),
            slow.clone(),
            JobOptions::default(),
            slow,
            named("a"),
        ] {
            let content =
                JobContent::encode_parts("t", &trigger.to_string(), &Value::Null, &options)
                    .expect("a JSON trigger");
            let text: Value = serde_json::from_str(content.as_str()).expect("JSON");
            assert_eq!(
                text["options"],
                serde_json::to_value(&options).expect("options")
            );
            assert_eq!(
                content.decode(&id).expect("decodes").options,
                options,
                "{content}"
            );
            // Read for a run, through the cache of the options read last.
            let read = content.for_run().map(|c| c.options);
            assert_eq!(read.as_ref(), Some(&options), "{content}");
        }
    }

    #[test]
    fn reading_for_a_run_lets_through_what_only_decoding_rejects() {
        // The trigger kept as raw text is not checked for lone surrogates;
        // the run loop then reads it the full way, which names the job.
        let text = JobContent::from_stored(
            r#"{"task":"t","trigger":{"type":"date","run_date":"x\ud800"},"options":{}}"#,
        );
        assert!(text.for_run().is_some());
        let err = text.decode(&JobId::new("j")).expect_err("a lone surrogate");
        assert!(
            err.to_string().starts_with("stored job 'j' is unreadable"),
            "{err}"
        );
    }

    #[test]
    fn options_left_out_of_stored_content_read_as_the_defaults() {
        let full = JobContent::encode(&JobData {
            task: "t".into(),
            trigger: serde_json::json!({"type": "date", "run_date": "2030-01-01T00:00:00+00:00"}),
            args: Value::Null,
            options: JobOptions::default(),
        });
        assert!(full.as_str().contains("\"coalesce\":true"), "{full}");
        assert!(full.as_str().contains("\"max_instances\":1"), "{full}");
        let short = JobContent::from_stored(
            r#"{"task":"t","trigger":{"type":"date","run_date":"2030-01-01T00:00:00+00:00"},"options":{}}"#,
        );
        let id = JobId::new("j");
        let data = short
            .decode(&id)
            .expect("content without option fields reads");
        assert_eq!(data.options.coalesce, JobDefaults::default().coalesce);
        assert_eq!(
            data.options.max_instances,
            JobDefaults::default().max_instances
        );
        assert_eq!(data.options.misfire_grace_time, None);
        assert_eq!(
            data,
            full.decode(&id)
                .map(|mut d| {
                    d.options.misfire_grace_time = None;
                    d
                })
                .expect("full content reads")
        );
    }

    #[test]
    fn adding_a_huge_duration_saturates_instead_of_panicking() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(add_saturating(t, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            add_saturating(t, Duration::from_secs(60)),
            DateTime::from_timestamp(1_800_000_060, 0).unwrap()
        );
        let n = crate::node::NodeRecord::new(OwnerId::new("n"), t, Duration::MAX);
        assert_eq!(n.expires_at, DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::new(5, Duration::from_secs(10)).max_backoff(Duration::from_secs(30));
        let d: Vec<u64> = (1..=5).map(|a| p.delay_after(a).as_secs()).collect();
        assert_eq!(d, [10, 20, 30, 30, 30]);
        assert!(p.retries_after(4));
        assert!(!p.retries_after(5));
        assert_eq!(p.delay_after(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = RetryPolicy::new(3, Duration::from_secs(10)).jitter(0.5);
        assert_eq!(p.jittered_delay_after(1, 0.0), Duration::from_secs(5));
        assert_eq!(p.jittered_delay_after(1, 1.0), Duration::from_secs(15));
        assert_eq!(p.jittered_delay_after(1, 0.5), Duration::from_secs(10));
        assert_eq!(
            RetryPolicy::new(3, Duration::from_secs(1))
                .jitter(f64::NAN)
                .jitter,
            0.0
        );
    }

    #[test]
    fn options_without_retry_read_as_before() {
        let o: JobOptions =
            serde_json::from_str(r#"{"misfire_grace_time":1.0,"coalesce":true,"max_instances":1}"#)
                .unwrap();
        assert_eq!(o.retry, None);
        let mut o2 = o.clone();
        o2.retry = Some(RetryPolicy::new(3, Duration::from_millis(1500)).jitter(0.25));
        let back: JobOptions = serde_json::from_str(&serde_json::to_string(&o2).unwrap()).unwrap();
        assert_eq!(back, o2);
    }
}

impl JobRecord {
    /// A new, unleased record at version 0.
    pub fn new(id: JobId, content: JobContent, next_run_time: Option<DateTime<Utc>>) -> Self {
        JobRecord {
            id,
            content,
            next_run_time,
            lease: None,
            version: 0,
            quarantined: None,
        }
    }

    /// A record as a store read it back.
    pub fn stored(
        id: JobId,
        content: JobContent,
        next_run_time: Option<DateTime<Utc>>,
        lease: Option<Lease>,
        version: u64,
    ) -> Self {
        JobRecord {
            id,
            content,
            next_run_time,
            lease,
            version,
            quarantined: None,
        }
    }

    /// Decodes the content.
    ///
    /// # Errors
    /// [`crate::Error::UnreadableJob`] when the content cannot be decoded.
    pub fn decode(&self) -> crate::Result<JobData> {
        self.content.decode(&self.id)
    }

    /// The instant from which [`JobStore::acquire_due`](crate::store::JobStore::acquire_due)
    /// could hand this job out: its next run time, or its lease expiry if later.
    /// `None` for a paused job.
    pub fn available_at(&self) -> Option<DateTime<Utc>> {
        let next = self.next_run_time?;
        Some(match &self.lease {
            Some(l) if l.until > next => l.until,
            _ => next,
        })
    }
}

/// How a scheduler hands a claimed job back to its store.
#[derive(Clone, Debug, PartialEq)]
pub enum Release {
    /// Keep the job with a new next run time (`None` pauses it).
    Reschedule {
        /// The next run time.
        next_run_time: Option<DateTime<Utc>>,
    },
    /// Delete the job (its trigger is exhausted).
    Remove,
    /// Give the job back unchanged.
    Unclaim,
}

/// What [`JobStore::release`](crate::store::JobStore::release) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The outcome was written.
    Applied,
    /// The job was modified while claimed: the lease was dropped, the outcome ignored.
    Superseded,
    /// The job no longer exists.
    Gone,
}
