//! Tasks: the named functions that jobs run.

use foldhash::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::clock::BoxFuture;
use crate::error::BoxError;
use crate::job::JobId;
use crate::run::RunId;

/// The result a task returns.
pub type TaskResult = Result<(), BoxError>;

type AsyncFn = dyn Fn(JobContext, Value) -> BoxFuture<'static, TaskResult> + Send + Sync;
type BlockingFn = dyn Fn(JobContext, Value) -> TaskResult + Send + Sync;

/// A registered task, type-erased over its argument type.
#[derive(Clone)]
pub enum TaskFn {
    /// Runs as a future (async executor by default).
    Async(Arc<AsyncFn>),
    /// Runs on a thread (thread-pool executor by default).
    Blocking(Arc<BlockingFn>),
}

impl fmt::Debug for TaskFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskFn::Async(_) => f.write_str("TaskFn::Async"),
            TaskFn::Blocking(_) => f.write_str("TaskFn::Blocking"),
        }
    }
}

impl TaskFn {
    /// Wraps an async function taking typed (JSON-deserialized) arguments.
    pub fn from_async<A, F, Fut, E>(name: &str, f: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(JobContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let name = name.to_string();
        TaskFn::Async(Arc::new(move |ctx, value| {
            match serde_json::from_value::<A>(value) {
                Ok(args) => {
                    let fut = f(ctx, args);
                    Box::pin(async move { fut.await.map_err(Into::into) })
                }
                Err(e) => {
                    let msg = format!("invalid arguments for task '{name}': {e}");
                    Box::pin(async move { Err(msg.into()) })
                }
            }
        }))
    }

    /// Wraps a blocking function taking typed (JSON-deserialized) arguments.
    pub fn from_blocking<A, F, E>(name: &str, f: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(JobContext, A) -> Result<(), E> + Send + Sync + 'static,
        E: Into<BoxError> + 'static,
    {
        let name = name.to_string();
        TaskFn::Blocking(Arc::new(move |ctx, value| {
            match serde_json::from_value::<A>(value) {
                Ok(args) => f(ctx, args).map_err(Into::into),
                Err(e) => Err(format!("invalid arguments for task '{name}': {e}").into()),
            }
        }))
    }

    /// Whether this is a blocking task.
    pub fn is_blocking(&self) -> bool {
        matches!(self, TaskFn::Blocking(_))
    }
}

/// Checks a job's JSON arguments against a task's argument type.
pub type ArgsCheck = Arc<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

/// The check that `value` deserializes as `A`; the error names the field.
pub fn args_check<A: DeserializeOwned>() -> ArgsCheck {
    Arc::new(|value: &Value| A::deserialize(value).map(|_| ()).map_err(|e| e.to_string()))
}

/// Task functions by name.
#[derive(Clone, Default)]
pub struct TaskRegistry {
    tasks: HashMap<String, TaskFn>,
    checks: HashMap<String, ArgsCheck>,
}

impl fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.tasks.keys().collect();
        names.sort();
        f.debug_struct("TaskRegistry")
            .field("tasks", &names)
            .finish()
    }
}

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) a task.
    pub fn insert(&mut self, name: impl Into<String>, task: TaskFn) {
        let name = name.into();
        self.checks.remove(&name);
        self.tasks.insert(name, task);
    }

    /// Registers (or replaces) a task whose arguments `check` accepts or
    /// rejects when a job is added.
    pub fn insert_checked(&mut self, name: impl Into<String>, task: TaskFn, check: ArgsCheck) {
        let name = name.into();
        self.checks.insert(name.clone(), check);
        self.tasks.insert(name, task);
    }

    /// Checks arguments for the task `name`: `Err` with the reason (naming the
    /// field) when they do not fit its argument type; `Ok` when they do or the
    /// task has no check.
    pub fn check_args(&self, name: &str, args: &Value) -> Result<(), String> {
        match self.checks.get(name) {
            Some(check) => check(args),
            None => Ok(()),
        }
    }

    /// Removes a task.
    pub fn remove(&mut self, name: &str) -> Option<TaskFn> {
        self.checks.remove(name);
        self.tasks.remove(name)
    }

    /// Looks a task up.
    pub fn get(&self, name: &str) -> Option<&TaskFn> {
        self.tasks.get(name)
    }

    /// The registered task names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tasks.keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether a task is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.tasks.contains_key(name)
    }
}

/// What a running task knows about its run.
#[derive(Clone, Debug)]
pub struct JobContext {
    pub(crate) job_id: JobId,
    pub(crate) jobstore: String,
    pub(crate) scheduled_run_time: DateTime<Utc>,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) cancel: CancellationToken,
    pub(crate) run_id: Option<RunId>,
    pub(crate) attempt: u32,
}

impl JobContext {
    /// A context for running a task outside a scheduler (tests, tools).
    pub fn new(
        job_id: JobId,
        jobstore: impl Into<String>,
        scheduled_run_time: DateTime<Utc>,
    ) -> Self {
        JobContext {
            job_id,
            jobstore: jobstore.into(),
            scheduled_run_time,
            started_at: scheduled_run_time,
            cancel: CancellationToken::new(),
            run_id: None,
            attempt: 1,
        }
    }

    /// The run's id in the run ledger (`None` outside a scheduler).
    pub fn run_id(&self) -> Option<&RunId> {
        self.run_id.as_ref()
    }

    /// The attempt at this slot: 1 for the first, 2 for the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The job's id.
    pub fn job_id(&self) -> &JobId {
        &self.job_id
    }

    /// The alias of the store the job lives in.
    pub fn jobstore(&self) -> &str {
        &self.jobstore
    }

    /// When this run was scheduled to start.
    pub fn scheduled_run_time(&self) -> DateTime<Utc> {
        self.scheduled_run_time
    }

    /// When this run actually started.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// Whether the run was asked to stop (timeout or shutdown).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the run is asked to stop.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// The cancellation token, for passing into other code.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.cancel
    }
}
