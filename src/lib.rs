#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;

pub use sundial_core::{
    chrono, chrono_tz, clock, error, event, executor, job, scheduler, store, task, trigger,
    BoxError, Error, Result,
};

pub use sundial_core::event::{Event, EventMask};
pub use sundial_core::job::{JobDefaults, JobId, JobOptions, JobRecord};
pub use sundial_core::scheduler::{
    BackgroundScheduler, Job, JobChanges, JobListing, JobSpec, Scheduler, SchedulerBuilder,
    SchedulerState,
};
pub use sundial_core::store::JobStore;
pub use sundial_core::task::JobContext;
pub use sundial_jobstore_memory::MemoryJobStore;

/// The async executor (tokio).
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub use sundial_executor_async::AsyncExecutor;

/// The thread-pool executor (rayon).
#[cfg(feature = "threadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "threadpool")))]
pub use sundial_executor_threadpool::ThreadPoolExecutor;

/// Everything a typical application needs, in one import.
pub mod prelude {
    #[cfg(feature = "async")]
    pub use crate::AsyncExecutor;
    #[cfg(feature = "threadpool")]
    pub use crate::ThreadPoolExecutor;
    pub use crate::{
        store_from_url, BackgroundScheduler, Error, Event, EventMask, Job, JobChanges, JobContext,
        JobDefaults, JobSpec, MemoryJobStore, Result, Scheduler,
    };
    pub use serde::{Deserialize, Serialize};
    pub use sundial_core::trigger::{
        AndTrigger, CalendarIntervalTrigger, CronTrigger, DateTrigger, IntervalTrigger, OrTrigger,
        Trigger,
    };
}

/// Opens a job store from a URL, so that dev and prod differ by one config value.
///
/// | scheme | store | feature |
/// |---|---|---|
/// | `memory://` | [`MemoryJobStore`] | always |
///
/// # Errors
/// [`Error::UnknownStore`] for an unknown scheme or one whose Cargo feature is off.
///
/// # Examples
/// ```
/// let store = sundial::store_from_url("memory://")?;
/// assert_eq!(store.backend(), "memory");
/// # Ok::<(), sundial::Error>(())
/// ```
pub fn store_from_url(url: &str) -> Result<Arc<dyn JobStore>> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or(url);
    match scheme {
        "memory" => Ok(Arc::new(MemoryJobStore::new())),
        other => Err(Error::UnknownStore {
            alias: other.to_string(),
            hint: format!(" in URL {url:?}: supported schemes are memory://"),
        }),
    }
}
