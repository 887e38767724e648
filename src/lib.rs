#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;

pub use sundial_core::{
    chrono, chrono_tz, clock, error, event, executor, job, node, redact, run, scheduler, store,
    task, trigger, BoxError, Error, Result,
};

pub use sundial_core::event::{Event, EventMask};
pub use sundial_core::job::{
    JobContent, JobData, JobDefaults, JobId, JobOptions, JobRecord, OnInterrupted, RetryPolicy,
};
pub use sundial_core::node::NodeRecord;
pub use sundial_core::run::{RunQuery, RunRecord, RunState};
pub use sundial_core::scheduler::{
    AddOutcome, BackgroundScheduler, Job, JobChanges, JobListing, JobSpec, OnConflict, Scheduler,
    SchedulerBuilder, SchedulerState, UnreadableJob,
};
pub use sundial_core::store::JobStore;
pub use sundial_core::task::JobContext;
pub use sundial_jobstore_memory::MemoryJobStore;

/// SQL job stores (SQLite, PostgreSQL, MySQL/MariaDB).
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql")))
)]
pub use sundial_jobstore_sql::{self as sql, SqlJobStore};

/// The Redis job store.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use sundial_jobstore_redis::{self as redis, RedisJobStore};

/// The MongoDB job store.
#[cfg(feature = "mongo")]
#[cfg_attr(docsrs, doc(cfg(feature = "mongo")))]
pub use sundial_jobstore_mongo::{self as mongo, MongoJobStore};

/// The async executor (tokio).
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub use sundial_executor_async::AsyncExecutor;

#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;

/// The admin HTTP API: [`admin::router`] over a scheduler.
#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub use sundial_admin as admin;

/// The thread-pool executor (rayon).
#[cfg(feature = "threadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "threadpool")))]
pub use sundial_executor_threadpool::ThreadPoolExecutor;

/// serde, for `#[serde(crate = "sundial::serde")]` on job argument types
/// in crates that do not depend on serde themselves.
pub use serde;

/// Everything a typical application needs, in one import.
pub mod prelude {
    #[cfg(feature = "async")]
    pub use crate::AsyncExecutor;
    #[cfg(feature = "mongo")]
    pub use crate::MongoJobStore;
    #[cfg(feature = "redis")]
    pub use crate::RedisJobStore;
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
    pub use crate::SqlJobStore;
    #[cfg(feature = "threadpool")]
    pub use crate::ThreadPoolExecutor;
    pub use crate::{
        store_from_url, BackgroundScheduler, Error, Event, EventMask, Job, JobChanges, JobContext,
        JobDefaults, JobSpec, MemoryJobStore, OnInterrupted, Result, RetryPolicy, Scheduler,
    };
    pub use serde::{Deserialize, Serialize};
    pub use sundial_core::trigger::{
        AndTrigger, CalendarIntervalTrigger, CronTrigger, DateTrigger, IntervalTrigger, OrTrigger,
        Trigger,
    };
}

/// The testing guide (`docs/testing.md`); its examples run as doc tests.
#[cfg(all(doctest, feature = "test-util", feature = "async"))]
#[doc = include_str!("../docs/testing.md")]
pub struct TestingGuide;

/// Opens a job store from a URL, so that dev and prod differ by one config value.
///
/// | scheme | store | feature |
/// |---|---|---|
/// | `memory://` | [`MemoryJobStore`] | always |
/// | `sqlite://path/to/jobs.db`, `sqlite::memory:` | SQLite | `sqlite` (default) |
/// | `postgres://…`, `postgresql://…` | PostgreSQL | `postgres` |
/// | `mysql://…`, `mariadb://…` | MySQL / MariaDB | `mysql` |
/// | `redis://…`, `rediss://…` | Redis | `redis` |
/// | `mongodb://…`, `mongodb+srv://…` | MongoDB | `mongo` |
///
/// Add `#table=name` to use another job table than `sundial_jobs` (SQL) or
/// another collection (MongoDB), or `#prefix=name` for another Redis key prefix
/// than `sundial`. Each is refused where it does not apply, as is any other
/// fragment.
///
/// # Errors
/// [`Error::UnknownStore`] for an unknown scheme or one whose Cargo feature is
/// off (the message names the feature), [`Error::Config`] for a malformed URL,
/// a fragment the store does not take, or a bad table name.
///
/// # Examples
/// ```
/// let store = sundial::store_from_url("memory://")?;
/// assert_eq!(store.backend(), "memory");
/// # Ok::<(), sundial::Error>(())
/// ```
pub fn store_from_url(url: &str) -> Result<Arc<dyn JobStore>> {
    let (url, fragment) = match url.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (url, None),
    };
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or(url);
    // `#table=` names a SQL table or a MongoDB collection, `#prefix=` a Redis
    // key prefix; anything else is refused rather than ignored.
    let wants = match scheme {
        "redis" | "rediss" => Some("prefix"),
        "memory" => None,
        _ => Some("table"),
    };
    let table = match fragment {
        None => None,
        Some(f) => {
            let (key, value) = f.split_once('=').unwrap_or((f, ""));
            match wants {
                Some(w) if w == key && !value.is_empty() => Some(value),
                _ => {
                    let takes = match wants {
                        Some(w) => format!("takes only #{w}=name"),
                        None => "takes no fragment".to_string(),
                    };
                    return Err(Error::Config(format!(
                        "store URL fragment '#{f}': a {scheme} URL {takes}"
                    )));
                }
            }
        }
    };
    #[cfg(not(any(
        feature = "sqlite",
        feature = "postgres",
        feature = "mysql",
        feature = "redis",
        feature = "mongo"
    )))]
    let _ = table;
    let feature = |f: &str| Error::UnknownStore {
        alias: scheme.to_string(),
        hint: format!(" (URL scheme): enable the `{f}` feature of the `sundial` crate"),
    };
    match scheme {
        "memory" => Ok(Arc::new(MemoryJobStore::new())),
        "sqlite" if !cfg!(feature = "sqlite") => Err(feature("sqlite")),
        "postgres" | "postgresql" if !cfg!(feature = "postgres") => Err(feature("postgres")),
        "mysql" | "mariadb" if !cfg!(feature = "mysql") => Err(feature("mysql")),
        "redis" | "rediss" if !cfg!(feature = "redis") => Err(feature("redis")),
        "mongodb" | "mongodb+srv" if !cfg!(feature = "mongo") => Err(feature("mongo")),
        #[cfg(feature = "mongo")]
        "mongodb" | "mongodb+srv" => {
            let mut store = MongoJobStore::from_url(url);
            if let Some(c) = table {
                store = store.with_collection(c);
            }
            Ok(Arc::new(store))
        }
        #[cfg(feature = "redis")]
        "redis" | "rediss" => {
            let mut store = RedisJobStore::from_url(url)?;
            if let Some(p) = table {
                store = store.with_prefix(p);
            }
            Ok(Arc::new(store))
        }
        #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
        "sqlite" | "postgres" | "postgresql" | "mysql" | "mariadb" => {
            let mut store = SqlJobStore::from_url(url)?;
            if let Some(t) = table {
                store = store.with_table(t)?;
            }
            Ok(Arc::new(store))
        }
        other => Err(Error::UnknownStore {
            alias: other.to_string(),
            hint: format!(
                " in URL {:?}: supported schemes are memory, sqlite, postgres, mysql, redis, mongodb",
                sundial_core::redact::redact_url(url)
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::store_from_url;

    /// `#table=` goes with SQL and MongoDB URLs, `#prefix=` with Redis URLs;
    /// the other one, an empty name or any other fragment is a clear error.
    #[test]
    fn url_fragments_are_refused_where_they_do_not_apply() {
        let refused = |url: &str, says: &str| {
            let err = store_from_url(url)
                .err()
                .unwrap_or_else(|| panic!("{url} accepted"));
            assert!(
                matches!(err, crate::Error::Config(_)) && err.to_string().contains(says),
                "{url}: {err}"
            );
        };
        refused("redis://127.0.0.1/0#table=jobs", "takes only #prefix=name");
        refused("postgres://h/db#prefix=jobs", "takes only #table=name");
        refused("mongodb://h/db#prefix=jobs", "takes only #table=name");
        refused("sqlite::memory:#tables=jobs", "takes only #table=name");
        refused("sqlite::memory:#table=", "takes only #table=name");
        refused("memory://#table=jobs", "takes no fragment");
        assert!(store_from_url("sqlite::memory:#table=my_jobs").is_ok());
        assert!(store_from_url("redis://127.0.0.1/0#prefix=app").is_ok());
    }

    /// Whatever stores this build has, a URL's password shows neither in the
    /// error (unknown scheme, feature off, bad URL) nor in the store's `Debug`.
    #[test]
    fn store_urls_never_show_passwords() {
        for url in [
            "postgres://user:s3cr3t-pw@host/db",
            "postgresql://user@host/db?password=s3cr3t-pw",
            "mysql://u:s3cr3t-pw@h/db",
            "mariadb://u:s3cr3t-pw@h/db",
            "redis://:s3cr3t-pw@h:6379/0",
            "redis://user:s3cr3t-pw@h",
            "rediss://user:s3cr3t-pw@h:notaport",
            "mongodb://u:s3cr3t-pw@h/db",
            "mongodb+srv://u:s3cr3t-pw@h/db",
            "oracle://u:s3cr3t-pw@h/db?token=s3cr3t-pw",
            "u:s3cr3t-pw@h/db",
        ] {
            let shown = match store_from_url(url) {
                Ok(store) => format!("{store:?}"),
                Err(e) => e.to_string(),
            };
            assert!(!shown.contains("s3cr3t-pw"), "{url}: {shown}");
        }
    }
}
