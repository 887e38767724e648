//! Sources of randomness for trigger jitter.

use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// Supplies the random delay that a trigger with jitter adds to each fire time.
pub trait JitterSource: Send + Sync + fmt::Debug + 'static {
    /// A delay in `[0, max_micros]` microseconds.
    fn sample_micros(&self, max_micros: u64) -> u64;
}

/// Jitter from a process-wide random generator (the default).
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomJitter;

impl JitterSource for RandomJitter {
    fn sample_micros(&self, max_micros: u64) -> u64 {
        fastrand::u64(0..=max_micros)
    }
}

/// Jitter from a seeded generator, so tests see the same delays every run.
#[derive(Debug)]
pub struct SeededJitter(Mutex<fastrand::Rng>);

impl SeededJitter {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SeededJitter(Mutex::new(fastrand::Rng::with_seed(seed)))
    }
}

impl JitterSource for SeededJitter {
    fn sample_micros(&self, max_micros: u64) -> u64 {
        match self.0.lock() {
            Ok(mut rng) => rng.u64(0..=max_micros),
            Err(poisoned) => poisoned.into_inner().u64(0..=max_micros),
        }
    }
}

/// Jitter settings shared by the triggers that support it.
#[derive(Clone)]
pub(crate) struct Jitter {
    pub(crate) seconds: Option<u64>,
    pub(crate) source: Arc<dyn JitterSource>,
}

impl fmt::Debug for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.seconds)
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Jitter {
            seconds: None,
            source: Arc::new(RandomJitter),
        }
    }
}

impl PartialEq for Jitter {
    fn eq(&self, other: &Self) -> bool {
        self.seconds == other.seconds
    }
}

impl Jitter {
    /// Adds up to `seconds` of random delay to `t`.
    pub(crate) fn apply(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self.seconds {
            Some(s) if s > 0 => {
                let micros = self.source.sample_micros(s.saturating_mul(1_000_000));
                // A jitter of absurd size (read from stored JSON) ends at the
                // end of time instead of overflowing.
                t.checked_add_signed(Duration::microseconds(
                    i64::try_from(micros).unwrap_or(i64::MAX),
                ))
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
            }
            _ => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Always the largest delay.
    #[derive(Debug)]
    struct Largest;

    impl JitterSource for Largest {
        fn sample_micros(&self, max_micros: u64) -> u64 {
            max_micros
        }
    }

    #[test]
    fn an_absurd_jitter_ends_at_the_end_of_time_instead_of_overflowing() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        for seconds in [u64::MAX, 2_709_922_206_892_449_771, 1 << 44] {
            let j = Jitter {
                seconds: Some(seconds),
                source: Arc::new(Largest),
            };
            assert_eq!(j.apply(t), DateTime::<Utc>::MAX_UTC, "{seconds}");
        }
        let j = Jitter {
            seconds: Some(30),
            source: Arc::new(Largest),
        };
        assert_eq!(j.apply(t), t + Duration::seconds(30));
    }
}
