//! Core of Sundial: triggers, the job model, the store and executor seams, the
//! event bus and the scheduler.
//!
//! Most users depend on the `sundial` facade crate, which re-exports this crate.

pub mod clock;
pub mod error;
pub mod event;
pub mod executor;
pub mod job;
pub mod node;
pub mod redact;
pub mod run;
pub mod scheduler;
pub mod store;
mod sync;
pub mod task;
pub mod trigger;

pub use error::{BoxError, Error, Result};

pub use chrono;
pub use chrono_tz;
