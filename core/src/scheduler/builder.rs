//! Building a scheduler.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Config, Scheduler};
use crate::clock::{Clock, SystemClock};
use crate::error::{BoxError, Error, Result};
use crate::executor::Executor;
use crate::job::{JobDefaults, OwnerId};
use crate::store::JobStore;
use crate::task::{args_check, JobContext, TaskFn, TaskRegistry};
use crate::trigger::{parse_timezone, Trigger, TriggerRegistry};

/// Configures and builds a [`Scheduler`].
#[derive(Debug)]
pub struct SchedulerBuilder {
    pub(crate) timezone: Tz,
    pub(crate) stores: Vec<(String, Arc<dyn JobStore>)>,
    pub(crate) executors: Vec<(String, Arc<dyn Executor>)>,
    pub(crate) defaults: JobDefaults,
    pub(crate) tasks: TaskRegistry,
    pub(crate) triggers: TriggerRegistry,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: Config,
    pub(crate) owner: OwnerId,
    pub(crate) errors: Vec<Error>,
    heartbeat: Option<Duration>,
}

impl Default for SchedulerBuilder {
    fn default() -> Self {
        SchedulerBuilder {
            timezone: Tz::UTC,
            stores: Vec::new(),
            executors: Vec::new(),
            defaults: JobDefaults::default(),
            tasks: TaskRegistry::new(),
            triggers: TriggerRegistry::new(),
            clock: Arc::new(SystemClock),
            config: Config::default(),
            owner: OwnerId::random(),
            errors: Vec::new(),
            heartbeat: None,
        }
    }
}

impl SchedulerBuilder {
    /// Sets the default time zone for triggers created without one (default UTC).
    ///
    /// A cron, interval or calendar trigger without a zone takes this zone when
    /// its job is added, and keeps it when stored: changing the default later
    /// does not move stored jobs until they are declared again (with
    /// `replace_existing`, a job whose trigger now resolves to another zone is
    /// rescheduled). [`Scheduler::job_listing`] shows the default.
    ///
    /// # Errors
    /// [`Error::InvalidTrigger`] naming the zone when it is not an IANA name.
    pub fn timezone(mut self, name: &str) -> Result<Self> {
        self.timezone = parse_timezone(name)?;
        Ok(self)
    }

    /// Adds a job store under `alias` (jobs go to `"default"` unless they name one).
    pub fn jobstore(self, alias: impl Into<String>, store: impl JobStore) -> Self {
        self.jobstore_arc(alias, Arc::new(store))
    }

    /// Adds a shared job store under `alias`.
    pub fn jobstore_arc(mut self, alias: impl Into<String>, store: Arc<dyn JobStore>) -> Self {
        let alias = alias.into();
        if self.stores.iter().any(|(a, _)| *a == alias) {
            self.errors.push(Error::Config(format!(
                "job store alias '{alias}' is used twice"
            )));
        }
        self.stores
            .push((alias, Arc::new(crate::store::Traced(store))));
        self
    }

    /// Adds an executor under `alias`.
    pub fn executor(self, alias: impl Into<String>, executor: impl Executor) -> Self {
        self.executor_arc(alias, Arc::new(executor))
    }

    /// Adds a shared executor under `alias`.
    pub fn executor_arc(mut self, alias: impl Into<String>, executor: Arc<dyn Executor>) -> Self {
        let alias = alias.into();
        if self.executors.iter().any(|(a, _)| *a == alias) {
            self.errors.push(Error::Config(format!(
                "executor alias '{alias}' is used twice"
            )));
        }
        self.executors.push((alias, executor));
        self
    }

    /// Sets the defaults for options a job does not set.
    pub fn job_defaults(mut self, defaults: JobDefaults) -> Self {
        self.defaults = defaults;
        self
    }

    /// Registers an async task: `async fn(JobContext, Args) -> Result<(), E>`,
    /// where `Args` is deserialized from the job's JSON arguments.
    pub fn task<A, F, Fut, E>(mut self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(JobContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.tasks
            .insert_checked(name, TaskFn::from_async(name, f), args_check::<A>());
        self
    }

    /// Registers a blocking task: `fn(JobContext, Args) -> Result<(), E>`.
    pub fn blocking_task<A, F, E>(mut self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(JobContext, A) -> Result<(), E> + Send + Sync + 'static,
        E: Into<BoxError> + 'static,
    {
        self.tasks
            .insert_checked(name, TaskFn::from_blocking(name, f), args_check::<A>());
        self
    }

    /// Registers a custom trigger type for reading stored jobs.
    pub fn trigger_type(
        mut self,
        name: &str,
        factory: impl Fn(&Value, &TriggerRegistry) -> Result<Box<dyn Trigger>> + Send + Sync + 'static,
    ) -> Self {
        if let Err(e) = self.triggers.register(name, factory) {
            self.errors.push(e);
        }
        self
    }

    /// Uses `clock` instead of the system clock (tests use a [`VirtualClock`](crate::clock::VirtualClock)).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long a claim on a due job lasts before other schedulers may take it, and
    /// how long a running run stays vouched for after its last heartbeat (default 60 s).
    pub fn lease_duration(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// How often running runs are heartbeated and lapsed runs swept (default: a
    /// third of the lease). A run whose owner stops is marked interrupted by a peer
    /// within one lease plus one heartbeat.
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.heartbeat = Some(d);
        self
    }

    /// How long finished runs are kept in the run ledger (default 7 days).
    pub fn run_retention(mut self, d: Duration) -> Self {
        self.config.run_retention = d;
        self
    }

    /// How many runs of each job the ledger keeps (default 1,000): older
    /// finished runs of a job beyond this many are pruned, but never runs of
    /// the last ten leases or the last hour, whose records still stop their
    /// slots from running again.
    pub fn run_retention_per_job(mut self, n: usize) -> Self {
        self.config.runs_per_job = n;
        self
    }

    /// The longest the loop sleeps when a store is shared with other processes,
    /// so that jobs they add are noticed. By default 5 s for stores that send
    /// change notices (PostgreSQL, Redis, MongoDB replica sets: the poll is only
    /// a safety net) and 1 s for those that do not (SQLite, MySQL/MariaDB,
    /// standalone MongoDB); setting it applies to all. Unshared stores never poll.
    pub fn max_idle_sleep(mut self, d: Duration) -> Self {
        self.config.max_idle_sleep = d;
        self.config.idle_sleep_set = true;
        self
    }

    /// The largest job arguments accepted by `add_job` and `modify_job`, in
    /// bytes of JSON (default 1 MiB): every claim reads them back from the store.
    pub fn max_args_size(mut self, bytes: usize) -> Self {
        self.config.max_args_bytes = bytes;
        self
    }

    /// How many due jobs one `acquire_due` call claims (default 500).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.config.batch_size = n.max(1);
        self
    }

    /// How long to wait before retrying a store that failed (default 10 s).
    pub fn store_retry_interval(mut self, d: Duration) -> Self {
        self.config.retry_interval = d;
        self
    }

    /// Sets this scheduler's owner id for leases (default: random per scheduler).
    pub fn owner_id(mut self, owner: impl Into<String>) -> Self {
        self.owner = OwnerId::new(owner);
        self
    }

    /// Builds the scheduler (not started).
    ///
    /// # Errors
    /// [`Error::UnknownStore`] / [`Error::UnknownExecutor`] when none is configured,
    /// [`Error::Config`] for duplicate aliases.
    pub fn build(self) -> Result<Scheduler> {
        self.finish(false)
    }

    /// Builds a client-only scheduler: it adds, modifies, pauses, removes and
    /// lists jobs and reads runs in the stores, but runs no jobs (no loop, no
    /// executors needed). For web workers that manage jobs which other
    /// processes run. Tasks need not be registered; registered ones are still
    /// checked when a job names them. Give a client its own store handle: a
    /// handle does not notify itself, so a scheduler sharing the client's
    /// handle sees its jobs at its next poll (or call its `wakeup`).
    ///
    /// # Errors
    /// As [`build`](Self::build), except that no executor is required.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use sundial_core::scheduler::{JobSpec, Scheduler};
    /// use sundial_core::trigger::IntervalTrigger;
    /// # async fn demo(store: impl sundial_core::store::JobStore) -> sundial_core::Result<()> {
    /// let client = Scheduler::builder().jobstore("default", store).build_client()?;
    /// client.start().await?; // connects the stores; runs nothing
    /// let hourly = IntervalTrigger::every(Duration::from_secs(3600))?;
    /// client
    ///     .add_job(JobSpec::new("send_report", hourly).id("report").if_absent())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn build_client(self) -> Result<Scheduler> {
        self.finish(true)
    }

    fn finish(mut self, client: bool) -> Result<Scheduler> {
        self.config.client = client;
        if let Some(e) = self.errors.drain(..).next() {
            return Err(e);
        }
        let lease = self.config.lease;
        let heartbeat = self.heartbeat.unwrap_or(lease / 3);
        if lease.is_zero() || heartbeat.is_zero() {
            return Err(Error::Config(format!(
                "lease_duration ({lease:?}) and heartbeat_interval ({heartbeat:?}) must be greater than zero"
            )));
        }
        if heartbeat.saturating_mul(3) > lease {
            return Err(Error::Config(format!(
                "heartbeat_interval ({heartbeat:?}) must be at most a third of lease_duration ({lease:?}), so that a live node's runs are never taken for lapsed"
            )));
        }
        self.config.heartbeat = heartbeat;
        // The ledger is what stops a slot from running twice: it must outlive any
        // claim by far.
        let min_retention = super::slot_guard(lease);
        if self.config.run_retention < min_retention {
            return Err(Error::Config(format!(
                "run_retention ({:?}) must be at least {min_retention:?} (ten leases, and at least an hour): a pruned run no longer stops its slot from running again",
                self.config.run_retention
            )));
        }
        if self.stores.is_empty() {
            return Err(Error::UnknownStore {
                alias: "default".into(),
                hint: ": no job store configured; add one with .jobstore(\"default\", MemoryJobStore::new())".into(),
            });
        }
        if self.executors.is_empty() && !client {
            return Err(Error::UnknownExecutor {
                alias: "default".into(),
                hint: ": no executor configured; add one with .executor(\"default\", AsyncExecutor::new())".into(),
            });
        }
        Ok(Scheduler::from_builder(self))
    }
}
