//! The one error type of `sundial-core`.

use std::fmt;

/// A boxed error that can cross threads, used as the source of backend and task errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Sundial, in variants users can match on.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job with this id already exists in the target store.
    #[error("conflicting job id '{id}': a job with this id already exists in the store")]
    ConflictingId {
        /// The id that is taken.
        id: String,
    },

    /// No job with this id exists (in the named store, or in any store).
    #[error("job '{id}' not found")]
    JobNotFound {
        /// The id that was looked up.
        id: String,
    },

    /// A stored job's content cannot be decoded (edited by hand, or written by
    /// a newer version): it is never run; replace or remove it.
    #[error("stored job '{id}' is unreadable: {reason}; replace it (add_job with replace_existing) or remove it")]
    UnreadableJob {
        /// The job id.
        id: String,
        /// What is wrong with the stored content.
        reason: String,
    },

    /// A job refers to a task name that is not registered on this scheduler.
    #[error("unknown task '{task}': register it on the scheduler builder with .task() or .blocking_task()")]
    UnknownTask {
        /// The task name.
        task: String,
    },

    /// A job store alias (or URL scheme) is not known.
    #[error("unknown job store '{alias}'{hint}")]
    UnknownStore {
        /// The alias or scheme.
        alias: String,
        /// Extra advice, such as a Cargo feature to enable (may be empty).
        hint: String,
    },

    /// An executor alias is not known.
    #[error("unknown executor '{alias}'{hint}")]
    UnknownExecutor {
        /// The alias.
        alias: String,
        /// Extra advice (may be empty).
        hint: String,
    },

    /// A trigger specification is invalid.
    #[error("invalid trigger: {field} = {value:?}: {reason}")]
    InvalidTrigger {
        /// The field (or JSON key) that is wrong.
        field: String,
        /// The value that was given.
        value: String,
        /// Why it is wrong.
        reason: String,
    },

    /// A job was changed by another writer after the caller read it; nothing
    /// was written.
    #[error("job '{id}' was changed by another writer after it was read (version {read} is stale); nothing was written: read it again")]
    JobChanged {
        /// The job id.
        id: String,
        /// The version the caller read.
        read: u64,
    },

    /// A job's arguments do not fit its task's argument type.
    #[error("invalid arguments for task '{task}': {reason}")]
    InvalidArgs {
        /// The task name.
        task: String,
        /// What does not fit (names the field).
        reason: String,
    },

    /// A job specification (not its trigger) is invalid.
    #[error("invalid job: {0}")]
    InvalidJob(String),

    /// JSON (de)serialization failed.
    #[error("serialization failed: {context}")]
    Serialization {
        /// What was being (de)serialized.
        context: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A job store failed.
    #[error("job store '{store}' failed: {source}")]
    Store {
        /// The backend, such as `memory`, `sqlite` or `postgres`.
        store: &'static str,
        /// Whether retrying later may succeed (a connection problem rather than bad data).
        temporary: bool,
        /// The backend error.
        #[source]
        source: BoxError,
    },

    /// The job's lease is held by another owner or has been lost.
    #[error("lease on job '{id}' is not held by this scheduler")]
    LeaseLost {
        /// The job id.
        id: String,
    },

    /// A job already has its maximum number of runs executing.
    #[error("job '{id}' already has {max} running instance(s)")]
    MaxInstancesReached {
        /// The job id.
        id: String,
        /// Its instance limit.
        max: u32,
    },

    /// Another live scheduler is registered in a store under this scheduler's owner id.
    #[error("owner id '{owner}' is taken in job store '{jobstore}' by a live scheduler ({host}, pid {pid}, registration valid until {expires_at}); give each scheduler its own owner_id(), or wait until that registration lapses")]
    DuplicateOwner {
        /// The owner id.
        owner: String,
        /// The store alias.
        jobstore: String,
        /// Host of the scheduler holding the id.
        host: String,
        /// Its process id.
        pid: u32,
        /// When its registration lapses unless renewed.
        expires_at: chrono::DateTime<chrono::Utc>,
    },

    /// The operation needs a running scheduler.
    #[error("scheduler is not running")]
    NotRunning,

    /// The scheduler is already running.
    #[error("scheduler is already running")]
    AlreadyRunning,

    /// The operation is not possible with this configuration.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// Builds an [`Error::InvalidTrigger`].
    pub fn invalid_trigger(
        field: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidTrigger {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Serialization`].
    pub fn serialization(context: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Serialization {
            context: context.into(),
            source,
        }
    }

    /// Builds a permanent [`Error::Store`].
    pub fn store(store: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Store {
            store,
            temporary: false,
            source: source.into(),
        }
    }

    /// Builds a temporary [`Error::Store`] (the scheduler retries after a back-off).
    pub fn store_temporary(store: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Store {
            store,
            temporary: true,
            source: source.into(),
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Error::Store {
                temporary: true,
                ..
            }
        )
    }
}
