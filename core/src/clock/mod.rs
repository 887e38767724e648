//! Time as the scheduler sees it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The scheduler's source of time: what time it is, and sleeping until an instant.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;

    /// Completes at (or just after) `deadline`.
    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()>;

    /// Whether the clock follows real time (possibly skewed), so that its
    /// offset to a store server's clock means something.
    fn is_real_time(&self) -> bool {
        true
    }
}

mod precise;

/// Wall-clock time; sleeps on tokio's timer and finishes the last stretch on a
/// shared high-resolution timer thread, so runs start within a fraction of a
/// millisecond of their time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// How long before a deadline [`SystemClock`] stops sleeping on tokio's timer
/// (whose resolution is one millisecond) and waits on the precise timer thread.
const PRECISE_TAIL: std::time::Duration = std::time::Duration::from_millis(2);

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            loop {
                let remaining = match (deadline - Utc::now()).to_std() {
                    Ok(d) if !d.is_zero() => d,
                    _ => return,
                };
                if remaining > PRECISE_TAIL {
                    tokio::time::sleep(remaining - PRECISE_TAIL).await;
                } else {
                    precise::PreciseSleep::until(std::time::Instant::now() + remaining).await;
                }
            }
        })
    }
}

/// A clock that starts at a chosen instant and runs on tokio's clock.
///
/// Under a runtime with paused time (`#[tokio::test(start_paused = true)]`, with
/// tokio's `test-util` feature), time jumps ahead whenever every task is idle, so
/// a year of schedule runs in milliseconds. [`advance`](VirtualClock::advance)
/// moves it by hand.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    origin: DateTime<Utc>,
    base: tokio::time::Instant,
}

impl VirtualClock {
    /// A clock that reads `start` now (must be called inside a tokio runtime).
    pub fn new(start: DateTime<Utc>) -> Self {
        VirtualClock {
            origin: start,
            base: tokio::time::Instant::now(),
        }
    }

    /// Moves paused time forward by `d` (tokio `test-util` only).
    #[cfg(feature = "test-util")]
    pub async fn advance(&self, d: std::time::Duration) {
        tokio::time::advance(d).await;
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.base;
        self.origin + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let offset = (deadline - self.origin).to_std().unwrap_or_default();
        let at = self.base + offset;
        Box::pin(tokio::time::sleep_until(at))
    }

    fn is_real_time(&self) -> bool {
        false
    }
}
