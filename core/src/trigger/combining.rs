//! Combining triggers: all of several (AND) or any of several (OR).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use super::jitter::{Jitter, JitterSource};
use super::spec::{self, BuiltinSpec, CombinedSpec};
use super::{Trigger, TriggerRegistry};
use crate::error::{Error, Result};

/// How many rounds an [`AndTrigger`] tries to make its triggers agree before it gives up.
pub const MAX_AND_ITERATIONS: usize = 10_000;

fn combined_json(
    variant: fn(CombinedSpec) -> BuiltinSpec,
    triggers: &[Box<dyn Trigger>],
    jitter: &Jitter,
) -> Value {
    variant(CombinedSpec {
        triggers: triggers.iter().map(|t| t.to_json()).collect(),
        jitter: jitter.seconds,
    })
    .to_json()
}

fn describe_all(kind: &str, triggers: &[Box<dyn Trigger>]) -> String {
    let parts: Vec<String> = triggers.iter().map(|t| t.describe()).collect();
    format!("{kind}[{}]", parts.join(", "))
}

/// Fires at the earliest instant on which every one of its triggers agrees.
///
/// The search alternates between the triggers and gives up after
/// [`MAX_AND_ITERATIONS`] rounds: [`Trigger::next_fire_time`] then returns an
/// error (the scheduler keeps the job and reports it).
#[derive(Debug)]
pub struct AndTrigger {
    triggers: Vec<Box<dyn Trigger>>,
    jitter: Jitter,
}

/// Fires whenever any of its triggers fires.
#[derive(Debug)]
pub struct OrTrigger {
    triggers: Vec<Box<dyn Trigger>>,
    jitter: Jitter,
}

macro_rules! combinator_common {
    ($ty:ident, $kind:literal) => {
        impl $ty {
            /// Combines `triggers` (at least one).
            ///
            /// # Errors
            /// [`Error::InvalidTrigger`] when `triggers` is empty.
            pub fn new(triggers: Vec<Box<dyn Trigger>>) -> Result<Self> {
                if triggers.is_empty() {
                    return Err(Error::invalid_trigger(
                        "triggers",
                        "[]",
                        concat!("an ", $kind, " trigger needs at least one trigger"),
                    ));
                }
                Ok($ty {
                    triggers,
                    jitter: Jitter::default(),
                })
            }

            /// Adds up to `seconds` of random delay to each fire time.
            pub fn with_jitter(mut self, seconds: u64) -> Self {
                self.jitter.seconds = Some(seconds);
                self
            }

            /// Uses `source` for jitter.
            pub fn with_jitter_source(mut self, source: Arc<dyn JitterSource>) -> Self {
                self.jitter.source = source;
                self
            }

            /// Parses the JSON form; child triggers are parsed with `registry`.
            ///
            /// # Errors
            /// [`Error::InvalidTrigger`] for unknown fields and invalid children.
            pub fn from_json(value: &Value, registry: &TriggerRegistry) -> Result<Self> {
                Self::from_spec(spec::read(value, $kind)?, registry)
            }

            pub(super) fn from_spec(
                spec: CombinedSpec,
                registry: &TriggerRegistry,
            ) -> Result<Self> {
                let children = spec
                    .triggers
                    .iter()
                    .map(|child| registry.parse(child))
                    .collect::<Result<Vec<_>>>()?;
                let mut t = $ty::new(children)?;
                t.jitter.seconds = spec.jitter;
                Ok(t)
            }
        }
    };
}

combinator_common!(AndTrigger, "and");
combinator_common!(OrTrigger, "or");

impl Trigger for AndTrigger {
    fn next_fire_time(
        &self,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        // Round one asks for the next fire after `previous`; later rounds ask
        // each trigger for its first fire at or after the latest candidate.
        let mut target: Option<DateTime<Utc>> = None;
        for _ in 0..MAX_AND_ITERATIONS {
            let mut min: Option<DateTime<Utc>> = None;
            let mut max: Option<DateTime<Utc>> = None;
            for t in &self.triggers {
                let f = match target {
                    None => t.next_fire_time(previous, now)?,
                    Some(at) => t.next_fire_time(None, at)?,
                };
                let Some(f) = f else {
                    return Ok(None);
                };
                min = Some(min.map_or(f, |m| m.min(f)));
                max = Some(max.map_or(f, |m| m.max(f)));
            }
            match (min, max) {
                (Some(a), Some(b)) if a == b => return Ok(Some(self.jitter.apply(a))),
                // A trigger that cannot reach the candidate (a past date) never will.
                (_, Some(b)) if target == Some(b) => return Ok(None),
                (_, Some(b)) => target = Some(b),
                _ => return Ok(None),
            }
        }
        Err(Error::invalid_trigger(
            "and",
            self.describe(),
            format!("the triggers found no common fire time within {MAX_AND_ITERATIONS} rounds"),
        ))
    }

    fn to_json(&self) -> Value {
        combined_json(BuiltinSpec::And, &self.triggers, &self.jitter)
    }

    fn timezone(&self) -> Option<Tz> {
        self.triggers.iter().find_map(|t| t.timezone())
    }

    fn prepare(&mut self, now: DateTime<Utc>, default_timezone: Tz) {
        for t in &mut self.triggers {
            t.prepare(now, default_timezone);
        }
    }

    fn describe(&self) -> String {
        describe_all("and", &self.triggers)
    }
}

impl Trigger for OrTrigger {
    fn next_fire_time(
        &self,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        let mut best: Option<DateTime<Utc>> = None;
        for t in &self.triggers {
            if let Some(f) = t.next_fire_time(previous, now)? {
                best = Some(best.map_or(f, |b| b.min(f)));
            }
        }
        Ok(best.map(|b| self.jitter.apply(b)))
    }

    fn to_json(&self) -> Value {
        combined_json(BuiltinSpec::Or, &self.triggers, &self.jitter)
    }

    fn timezone(&self) -> Option<Tz> {
        self.triggers.iter().find_map(|t| t.timezone())
    }

    fn prepare(&mut self, now: DateTime<Utc>, default_timezone: Tz) {
        for t in &mut self.triggers {
            t.prepare(now, default_timezone);
        }
    }

    fn describe(&self) -> String {
        describe_all("or", &self.triggers)
    }
}
