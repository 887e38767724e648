//! The last stretch of a wall-clock sleep, waited on one shared timer thread.
//!
//! tokio's timer wheel has a resolution of one millisecond, and a worker thread
//! parked on it wakes a little later still. [`SystemClock`](super::SystemClock)
//! sleeps on tokio until shortly before a deadline and hands the rest to this
//! module: a single thread that waits on a condition variable with the nearest
//! deadline as its timeout and wakes the waiting task [`SPIN`] ahead of its
//! deadline; the task then yields until the deadline. Both wake-ups are late by
//! 50–150 µs on a virtual machine (the kernel's timer slack, then a parked
//! runtime worker's unpark), so the early wake-up hides them and the spin costs
//! at most [`SPIN`] of CPU per deadline. The thread is started on first use and
//! blocks without a timeout while no sleep is pending, so an idle scheduler
//! costs no CPU.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// How long before its deadline a sleep is woken to yield until the deadline.
const SPIN: Duration = Duration::from_micros(250);

/// Pending sleeps: the waker of each, and their deadlines in order.
#[derive(Default)]
struct Pending {
    next_id: u64,
    wakers: HashMap<u64, Waker>,
    /// Deadlines with the id they belong to; an id no longer in `wakers`
    /// (its future was dropped) is skipped when it comes up.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
}

struct Timer {
    pending: Mutex<Pending>,
    changed: Condvar,
}

static TIMER: OnceLock<Option<Arc<Timer>>> = OnceLock::new();

/// The process's timer, its thread started on first use; `None` if the thread
/// could not be spawned (the caller then yields until its deadline).
fn timer() -> Option<&'static Arc<Timer>> {
    TIMER
        .get_or_init(|| {
            let timer = Arc::new(Timer {
                pending: Mutex::new(Pending::default()),
                changed: Condvar::new(),
            });
            let worker = Arc::clone(&timer);
            match std::thread::Builder::new()
                .name("sundial-timer".into())
                .spawn(move || worker.run())
            {
                Ok(_) => Some(timer),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the timer thread; sleeps yield through their last 2 ms instead");
                    None
                }
            }
        })
        .as_ref()
}

/// The timer if its thread was started (never starts it).
fn started_timer() -> Option<&'static Arc<Timer>> {
    TIMER.get().and_then(Option::as_ref)
}

impl Timer {
    fn run(&self) {
        let mut due: Vec<Waker> = Vec::new();
        let mut pending = lock(&self.pending);
        loop {
            let now = Instant::now();
            while let Some(&Reverse((at, id))) = pending.deadlines.peek() {
                let live = pending.wakers.contains_key(&id);
                if live && at > now {
                    break;
                }
                pending.deadlines.pop();
                if let Some(waker) = pending.wakers.remove(&id).filter(|_| at <= now) {
                    due.push(waker);
                }
            }
            if !due.is_empty() {
                // Woken outside the lock: a woken task that runs at once
                // deregisters without waiting for this thread.
                drop(pending);
                for waker in due.drain(..) {
                    // A waker is the runtime's code: one that panics must not
                    // stop the timer for every later sleep.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
                }
                pending = lock(&self.pending);
                continue;
            }
            pending = match pending.deadlines.peek() {
                None => self
                    .changed
                    .wait(pending)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(&Reverse((at, _))) => {
                    let timeout = at.saturating_duration_since(Instant::now());
                    self.changed
                        .wait_timeout(pending, timeout)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
            };
        }
    }
}

/// Completes at `deadline` (or just after), woken by the timer thread.
pub(crate) struct PreciseSleep {
    deadline: Instant,
    id: Option<u64>,
}

impl PreciseSleep {
    pub(crate) fn until(deadline: Instant) -> Self {
        PreciseSleep { deadline, id: None }
    }
}

impl Future for PreciseSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let now = Instant::now();
        if now >= self.deadline {
            self.deregister();
            return Poll::Ready(());
        }
        let wake_at = self.deadline.checked_sub(SPIN).unwrap_or(self.deadline);
        let timer = match timer() {
            Some(timer) if now < wake_at => timer,
            // The last stretch (or no timer thread): come back as soon as
            // the executor lets us.
            _ => {
                self.deregister();
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        };
        let mut pending = lock(&timer.pending);
        match self.id {
            Some(id) if pending.wakers.contains_key(&id) => {
                if let Some(waker) = pending.wakers.get_mut(&id) {
                    waker.clone_from(cx.waker());
                }
            }
            _ => {
                // First poll (or the timer fired between the checks above).
                let id = pending.next_id;
                pending.next_id += 1;
                pending.wakers.insert(id, cx.waker().clone());
                pending.deadlines.push(Reverse((wake_at, id)));
                self.id = Some(id);
                let earliest = pending.deadlines.peek().map(|Reverse((at, _))| *at);
                drop(pending);
                if earliest == Some(wake_at) {
                    timer.changed.notify_one();
                }
            }
        }
        Poll::Pending
    }
}

impl PreciseSleep {
    fn deregister(&mut self) {
        if let (Some(id), Some(timer)) = (self.id.take(), started_timer()) {
            lock(&timer.pending).wakers.remove(&id);
        }
    }
}

impl Drop for PreciseSleep {
    fn drop(&mut self) {
        self.deregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_at_the_deadline_not_before() {
        for micros in [0u64, 50, 300, 2_000] {
            let deadline = Instant::now() + Duration::from_micros(micros);
            PreciseSleep::until(deadline).await;
            assert!(
                Instant::now() >= deadline,
                "woke before a {micros} µs deadline"
            );
        }
    }

    #[tokio::test]
    async fn sleeps_in_any_order_all_complete() {
        let start = Instant::now();
        let sleeps = [900u64, 100, 500, 300, 700].map(|micros| {
            let deadline = start + Duration::from_micros(micros);
            tokio::spawn(async move {
                PreciseSleep::until(deadline).await;
                Instant::now() >= deadline
            })
        });
        for sleep in sleeps {
            assert!(sleep.await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_dropped_sleep_is_forgotten() {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut sleep = Box::pin(PreciseSleep::until(far));
        let waker = futures::task::noop_waker();
        assert!(sleep
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        let id = sleep.id.expect("registered");
        drop(sleep);
        let timer = started_timer().expect("timer thread");
        assert!(!lock(&timer.pending).wakers.contains_key(&id));
    }

    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl futures::task::ArcWake for Count {
        fn wake_by_ref(this: &Arc<Self>) {
            this.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Count {
        fn get(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn the_timer_wakes_the_latest_waker_only() {
        let (first, second) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let deadline = Instant::now() + SPIN + Duration::from_millis(5);
        let mut sleep = Box::pin(PreciseSleep::until(deadline));
        for count in [&first, &second] {
            let waker = futures::task::waker(Arc::clone(count));
            assert!(sleep
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
        }
        // The timer thread wakes the task about SPIN before the deadline.
        let waited = Instant::now();
        while second.get() == 0 && waited.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!((first.get(), second.get()), (0, 1));
    }
}
