//! Events and the event bus.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::broadcast;

use crate::job::JobId;
use crate::run::RunId;
use crate::sync::{lock, read, write};

bitflags::bitflags! {
    /// Selects which events a listener receives.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EventMask: u32 {
        /// [`Event::SchedulerStarted`]
        const SCHEDULER_STARTED = 1 << 0;
        /// [`Event::SchedulerShutdown`]
        const SCHEDULER_SHUTDOWN = 1 << 1;
        /// [`Event::SchedulerPaused`]
        const SCHEDULER_PAUSED = 1 << 2;
        /// [`Event::SchedulerResumed`]
        const SCHEDULER_RESUMED = 1 << 3;
        /// [`Event::ExecutorAdded`]
        const EXECUTOR_ADDED = 1 << 4;
        /// [`Event::ExecutorRemoved`]
        const EXECUTOR_REMOVED = 1 << 5;
        /// [`Event::JobStoreAdded`]
        const JOBSTORE_ADDED = 1 << 6;
        /// [`Event::JobStoreRemoved`]
        const JOBSTORE_REMOVED = 1 << 7;
        /// [`Event::AllJobsRemoved`]
        const ALL_JOBS_REMOVED = 1 << 8;
        /// [`Event::JobAdded`]
        const JOB_ADDED = 1 << 9;
        /// [`Event::JobRemoved`]
        const JOB_REMOVED = 1 << 10;
        /// [`Event::JobModified`]
        const JOB_MODIFIED = 1 << 11;
        /// [`Event::JobSubmitted`]
        const JOB_SUBMITTED = 1 << 12;
        /// [`Event::JobMaxInstances`]
        const JOB_MAX_INSTANCES = 1 << 13;
        /// [`Event::JobExecuted`]
        const JOB_EXECUTED = 1 << 14;
        /// [`Event::JobError`]
        const JOB_ERROR = 1 << 15;
        /// [`Event::JobMissed`]
        const JOB_MISSED = 1 << 16;
        /// [`Event::JobTimeout`]
        const JOB_TIMEOUT = 1 << 17;
        /// [`Event::StoreError`]
        const STORE_ERROR = 1 << 18;
        /// [`Event::JobStarted`]
        const JOB_STARTED = 1 << 19;
        /// [`Event::JobInterrupted`]
        const JOB_INTERRUPTED = 1 << 20;
        /// [`Event::JobRetry`]
        const JOB_RETRY = 1 << 21;
        /// [`Event::LeaseLost`]
        const LEASE_LOST = 1 << 22;
        /// Every event.
        const ALL = (1 << 23) - 1;
    }
}

impl EventMask {
    /// Short aliases matching APScheduler's names.
    pub const EXECUTED: EventMask = EventMask::JOB_EXECUTED;
    /// Alias of [`EventMask::JOB_ERROR`].
    pub const ERROR: EventMask = EventMask::JOB_ERROR;
    /// Alias of [`EventMask::JOB_MISSED`].
    pub const MISSED: EventMask = EventMask::JOB_MISSED;
}

/// Something that happened in a scheduler.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The scheduler started.
    SchedulerStarted,
    /// The scheduler shut down.
    SchedulerShutdown,
    /// The scheduler paused processing jobs.
    SchedulerPaused,
    /// The scheduler resumed processing jobs.
    SchedulerResumed,
    /// An executor was added.
    ExecutorAdded {
        /// Its alias.
        alias: String,
    },
    /// An executor was removed.
    ExecutorRemoved {
        /// Its alias.
        alias: String,
    },
    /// A job store was added.
    JobStoreAdded {
        /// Its alias.
        alias: String,
    },
    /// A job store was removed.
    JobStoreRemoved {
        /// Its alias.
        alias: String,
    },
    /// Every job of a store was removed.
    AllJobsRemoved {
        /// The store alias.
        jobstore: String,
    },
    /// A job was added.
    JobAdded {
        /// The job id.
        job_id: JobId,
        /// The store alias.
        jobstore: String,
    },
    /// A job was removed (by request or because its trigger is exhausted).
    JobRemoved {
        /// The job id.
        job_id: JobId,
        /// The store alias.
        jobstore: String,
    },
    /// A job was modified, rescheduled, paused or resumed.
    JobModified {
        /// The job id.
        job_id: JobId,
        /// The store alias.
        jobstore: String,
    },
    /// Runs of a job were handed to an executor.
    JobSubmitted {
        /// The job id.
        job_id: JobId,
        /// The store alias.
        jobstore: String,
        /// The scheduled run times submitted.
        run_times: Vec<DateTime<Utc>>,
    },
    /// Runs were skipped because the job already had `max_instances` running.
    JobMaxInstances {
        /// The job id.
        job_id: JobId,
        /// The store alias.
        jobstore: String,
        /// The scheduled run times skipped.
        run_times: Vec<DateTime<Utc>>,
    },
    /// A run began executing (its slot is recorded in the run ledger).
    JobStarted {
        /// The job id.
        job_id: JobId,
        /// The store alias.
        jobstore: String,
        /// The run's ledger id.
        run_id: Option<RunId>,
        /// The attempt at the slot (1 for the first).
        attempt: u32,
        /// The run's scheduled time.
        scheduled_run_time: DateTime<Utc>,
    },
    /// A run finished successfully.
    JobExecuted {
        /// The job id.
        job_id: JobId,
        /// The store alias.
        jobstore: String,
        /// The run's ledger id.
        run_id: Option<RunId>,
        /// The attempt at the slot (1 for the first).
        attempt: u32,
        /// The run's scheduled time.
        scheduled_run_time: DateTime<Utc>,
        /// How long the run took.
        duration: Duration,
    },
    /// A run failed, panicked, or could not start (unknown task, unreadable job).
    JobError {
        /// The job id.
        job_id: JobId,
        /// The store alias.
        jobstore: String,
        /// The run's ledger id, when a run was started.
        run_id: Option<RunId>,
        /// The run's scheduled time, when a run was attempted.
        scheduled_run_time: Option<DateTime<Utc>>,
        /// What went wrong.
        error: String,
    },
    /// A run was skipped because it started later than its misfire grace time.
    JobMissed {
        /// The job id.
        job_id: JobId,
        /// The store alias.
        jobstore: String,
        /// The run's scheduled time.
        scheduled_run_time: DateTime<Utc>,
    },
    /// A run exceeded the job's timeout.
    JobTimeout {
        /// The job id.
        job_id: JobId,
        /// The store alias.
        jobstore: String,
        /// The run's ledger id.
        run_id: Option<RunId>,
        /// The run's scheduled time.
        scheduled_run_time: DateTime<Utc>,
        /// The timeout that was exceeded.
        timeout: Duration,
    },
    /// A run's owner stopped heartbeating before the run finished (killed,
    /// stalled or cut off from the store); any scheduler on the store reports it.
    JobInterrupted {
        /// The job id.
        job_id: JobId,
        /// The store alias.
        jobstore: String,
        /// The run's ledger id.
        run_id: RunId,
        /// The run's scheduled time.
        scheduled_run_time: DateTime<Utc>,
        /// The node (`host:pid`) that owned the run, if known.
        node: Option<String>,
    },
    /// A failed or timed-out run will be retried as the next attempt of its slot.
    JobRetry {
        /// The job id.
        job_id: JobId,
        /// The store alias.
        jobstore: String,
        /// The ledger id of the attempt that failed.
        run_id: RunId,
        /// The slot being retried.
        scheduled_run_time: DateTime<Utc>,
        /// The attempt that will run (2 for the first retry).
        attempt: u32,
        /// When it will run.
        retry_at: DateTime<Utc>,
    },
    /// A job store call failed; the scheduler backs off and retries.
    StoreError {
        /// The store alias.
        jobstore: String,
        /// What went wrong.
        error: String,
    },
    /// This scheduler's claim on a job lapsed before it handed the job back
    /// (it stalled past its lease and another scheduler took the job); the
    /// slots it started are in the run ledger, so none runs twice.
    LeaseLost {
        /// The job.
        job_id: JobId,
        /// The store alias.
        jobstore: String,
    },
}

impl Event {
    /// The mask bit of this event.
    pub fn mask(&self) -> EventMask {
        match self {
            Event::SchedulerStarted => EventMask::SCHEDULER_STARTED,
            Event::SchedulerShutdown => EventMask::SCHEDULER_SHUTDOWN,
            Event::SchedulerPaused => EventMask::SCHEDULER_PAUSED,
            Event::SchedulerResumed => EventMask::SCHEDULER_RESUMED,
            Event::ExecutorAdded { .. } => EventMask::EXECUTOR_ADDED,
            Event::ExecutorRemoved { .. } => EventMask::EXECUTOR_REMOVED,
            Event::JobStoreAdded { .. } => EventMask::JOBSTORE_ADDED,
            Event::JobStoreRemoved { .. } => EventMask::JOBSTORE_REMOVED,
            Event::AllJobsRemoved { .. } => EventMask::ALL_JOBS_REMOVED,
            Event::JobAdded { .. } => EventMask::JOB_ADDED,
            Event::JobRemoved { .. } => EventMask::JOB_REMOVED,
            Event::JobModified { .. } => EventMask::JOB_MODIFIED,
            Event::JobSubmitted { .. } => EventMask::JOB_SUBMITTED,
            Event::JobMaxInstances { .. } => EventMask::JOB_MAX_INSTANCES,
            Event::JobExecuted { .. } => EventMask::JOB_EXECUTED,
            Event::JobError { .. } => EventMask::JOB_ERROR,
            Event::JobMissed { .. } => EventMask::JOB_MISSED,
            Event::JobTimeout { .. } => EventMask::JOB_TIMEOUT,
            Event::StoreError { .. } => EventMask::STORE_ERROR,
            Event::JobStarted { .. } => EventMask::JOB_STARTED,
            Event::JobInterrupted { .. } => EventMask::JOB_INTERRUPTED,
            Event::JobRetry { .. } => EventMask::JOB_RETRY,
            Event::LeaseLost { .. } => EventMask::LEASE_LOST,
        }
    }

    /// The job the event is about, if any.
    pub fn job_id(&self) -> Option<&JobId> {
        match self {
            Event::JobAdded { job_id, .. }
            | Event::JobRemoved { job_id, .. }
            | Event::JobModified { job_id, .. }
            | Event::JobSubmitted { job_id, .. }
            | Event::JobMaxInstances { job_id, .. }
            | Event::JobExecuted { job_id, .. }
            | Event::JobError { job_id, .. }
            | Event::JobMissed { job_id, .. }
            | Event::JobTimeout { job_id, .. }
            | Event::JobStarted { job_id, .. }
            | Event::JobInterrupted { job_id, .. }
            | Event::JobRetry { job_id, .. }
            | Event::LeaseLost { job_id, .. } => Some(job_id),
            _ => None,
        }
    }
}

/// Receives events (called from the bus's dispatcher thread, never from the scheduler loop).
pub trait Listener: Send + Sync + 'static {
    /// Handles one event.
    fn on_event(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync + 'static> Listener for F {
    fn on_event(&self, event: &Event) {
        self(event)
    }
}

/// Identifies a registered listener, for removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

type ListenerList = Arc<RwLock<Vec<(ListenerId, EventMask, Arc<dyn Listener>)>>>;

enum Dispatch {
    Event(Event),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Delivers events to mask-filtered listeners (on a dedicated thread, each call
/// isolated with `catch_unwind`) and to async subscribers (a bounded broadcast
/// channel: a slow subscriber lags and skips, never blocking the scheduler).
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

struct BusInner {
    listeners: ListenerList,
    union: AtomicU32,
    next_id: AtomicU64,
    dispatcher: Mutex<Option<mpsc::Sender<Dispatch>>>,
    broadcast: broadcast::Sender<Event>,
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBus")
            .field(
                "mask",
                &EventMask::from_bits_truncate(self.inner.union.load(Ordering::Relaxed)),
            )
            .field("subscribers", &self.inner.broadcast.receiver_count())
            .finish()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

/// How many events a subscriber may fall behind before it skips some.
pub const SUBSCRIBER_CAPACITY: usize = 4096;

impl EventBus {
    /// An empty bus.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(SUBSCRIBER_CAPACITY);
        EventBus {
            inner: Arc::new(BusInner {
                listeners: Arc::new(RwLock::new(Vec::new())),
                union: AtomicU32::new(0),
                next_id: AtomicU64::new(1),
                dispatcher: Mutex::new(None),
                broadcast: tx,
            }),
        }
    }

    /// Whether anyone would receive an event of this kind (lets callers skip building it).
    pub fn wants(&self, mask: EventMask) -> bool {
        self.inner.union.load(Ordering::Relaxed) & mask.bits() != 0
            || self.inner.broadcast.receiver_count() > 0
    }

    /// Publishes an event; never blocks.
    pub fn emit(&self, event: Event) {
        let bit = event.mask().bits();
        let to_listeners = self.inner.union.load(Ordering::Relaxed) & bit != 0;
        let to_stream = self.inner.broadcast.receiver_count() > 0;
        if !to_listeners && !to_stream {
            // A failure nobody listens for still reaches the logs.
            if let Event::JobError {
                job_id,
                jobstore,
                run_id,
                scheduled_run_time,
                error,
            } = &event
            {
                tracing::error!(
                    job_id = %job_id,
                    jobstore = %jobstore,
                    run_id = ?run_id.as_ref().map(ToString::to_string),
                    scheduled_run_time = ?scheduled_run_time,
                    "job failed: {error}"
                );
            }
            return;
        }
        if to_stream {
            let _ = self.inner.broadcast.send(event.clone());
        }
        if to_listeners {
            if let Some(tx) = lock(&self.inner.dispatcher).as_ref() {
                let _ = tx.send(Dispatch::Event(event));
            }
        }
    }

    /// Registers a listener for the events in `mask`.
    pub fn add_listener(&self, mask: EventMask, listener: impl Listener) -> ListenerId {
        let id = ListenerId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        {
            let mut list = write(&self.inner.listeners);
            list.push((id, mask, Arc::new(listener)));
            self.recompute(&list);
        }
        self.ensure_dispatcher();
        id
    }

    /// Removes a listener; returns whether it was registered.
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        let mut list = write(&self.inner.listeners);
        let before = list.len();
        list.retain(|(i, _, _)| *i != id);
        self.recompute(&list);
        list.len() != before
    }

    /// A stream of every event from now on; a subscriber that falls more than
    /// [`SUBSCRIBER_CAPACITY`] events behind skips the oldest.
    pub fn subscribe(&self) -> BoxStream<'static, Event> {
        let rx = self.inner.broadcast.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((e, rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "event subscriber lagged; events skipped");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }

    /// Waits until listeners have seen every event emitted before this call.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = match lock(&self.inner.dispatcher).as_ref() {
            Some(d) => d.send(Dispatch::Flush(tx)).is_ok(),
            None => false,
        };
        if sent {
            let _ = rx.await;
        }
    }

    fn recompute(&self, list: &[(ListenerId, EventMask, Arc<dyn Listener>)]) {
        let union = list
            .iter()
            .fold(EventMask::empty(), |m, (_, mask, _)| m | *mask);
        self.inner.union.store(union.bits(), Ordering::Relaxed);
    }

    fn ensure_dispatcher(&self) {
        let mut guard = lock(&self.inner.dispatcher);
        if guard.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel::<Dispatch>();
        let listeners = Arc::clone(&self.inner.listeners);
        let spawned = std::thread::Builder::new()
            .name("sundial-events".into())
            .spawn(move || {
                while let Ok(msg) = rx.recv() {
                    match msg {
                        Dispatch::Flush(done) => {
                            let _ = done.send(());
                        }
                        Dispatch::Event(event) => {
                            let snapshot: Vec<_> = read(&listeners)
                                .iter()
                                .filter(|(_, m, _)| m.intersects(event.mask()))
                                .map(|(_, _, l)| Arc::clone(l))
                                .collect();
                            for l in snapshot {
                                if let Err(p) =
                                    catch_unwind(AssertUnwindSafe(|| l.on_event(&event)))
                                {
                                    tracing::error!(
                                        panic = %panic_message(p.as_ref()),
                                        event = ?event.mask(),
                                        "event listener panicked"
                                    );
                                }
                            }
                        }
                    }
                }
            });
        match spawned {
            Ok(_) => *guard = Some(tx),
            Err(e) => tracing::error!(error = %e, "cannot start the event dispatcher thread"),
        }
    }
}

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod log_tests {
    use super::*;
    use std::sync::Mutex;

    /// Collects (level, message) of every event logged.
    #[derive(Default)]
    struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);

    struct Message<'a>(&'a mut String);

    impl tracing::field::Visit for Message<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={value:?} ", field.name()));
        }
    }

    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut text = String::new();
            event.record(&mut Message(&mut text));
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((*event.metadata().level(), text));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    fn failure() -> Event {
        Event::JobError {
            job_id: JobId::new("nightly"),
            jobstore: "default".into(),
            run_id: None,
            scheduled_run_time: None,
            error: "disk full".into(),
        }
    }

    #[test]
    fn a_job_error_nobody_listens_for_is_logged_as_an_error() {
        let capture = Capture::default();
        let seen = Arc::clone(&capture.0);
        tracing::subscriber::with_default(capture, || EventBus::new().emit(failure()));
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        assert!(
            seen.iter()
                .any(|(level, text)| *level == tracing::Level::ERROR
                    && text.contains("nightly")
                    && text.contains("disk full")),
            "{seen:?}"
        );
    }

    #[test]
    fn a_job_error_with_a_listener_is_left_to_it() {
        let capture = Capture::default();
        let seen = Arc::clone(&capture.0);
        let bus = EventBus::new();
        let _stream = bus.subscribe();
        tracing::subscriber::with_default(capture, || bus.emit(failure()));
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        assert!(
            !seen
                .iter()
                .any(|(level, _)| *level == tracing::Level::ERROR),
            "{seen:?}"
        );
    }
}
