//! Running a scheduler from synchronous code.

use std::future::Future;

use super::{Job, JobSpec, Scheduler};
use crate::error::{Error, Result};
use crate::job::JobId;

/// A scheduler driven from plain synchronous code: it runs on its own thread
/// pool and runtime; every method blocks until done.
///
/// # Examples
/// ```no_run
/// # fn demo(scheduler: sundial_core::scheduler::Scheduler) -> sundial_core::Result<()> {
/// use sundial_core::scheduler::BackgroundScheduler;
/// let bg = BackgroundScheduler::start(scheduler)?;
/// // ... the application does its work; jobs run in the background ...
/// bg.shutdown(true)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct BackgroundScheduler {
    scheduler: Scheduler,
    runtime: Option<tokio::runtime::Runtime>,
}

fn runtime(threads: usize, name: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the scheduler runtime: {e}")))
}

impl BackgroundScheduler {
    /// Starts `scheduler` on a new two-thread runtime.
    ///
    /// # Errors
    /// The runtime cannot be created, or [`Scheduler::start`] fails.
    pub fn start(scheduler: Scheduler) -> Result<Self> {
        let rt = runtime(2, "sundial")?;
        rt.block_on(scheduler.start())?;
        Ok(BackgroundScheduler {
            scheduler,
            runtime: Some(rt),
        })
    }

    /// The underlying scheduler (for the full async API via [`block_on`](Self::block_on)).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Runs any async scheduler call to completion on the scheduler's runtime.
    ///
    /// # Panics
    /// Only if called after [`shutdown`](Self::shutdown) consumed the runtime,
    /// which the type system prevents.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        match &self.runtime {
            Some(rt) => rt.block_on(f),
            None => unreachable!("runtime is present until shutdown consumes self"),
        }
    }

    /// Adds a job (see [`Scheduler::add_job`]).
    ///
    /// # Errors
    /// As [`Scheduler::add_job`].
    pub fn add_job(&self, spec: JobSpec) -> Result<Job> {
        self.block_on(self.scheduler.add_job(spec))
    }

    /// Removes a job (see [`Scheduler::remove_job`]).
    ///
    /// # Errors
    /// As [`Scheduler::remove_job`].
    pub fn remove_job(&self, id: impl Into<JobId>) -> Result<()> {
        self.block_on(self.scheduler.remove_job(id, None))
    }

    /// Lists jobs (see [`Scheduler::get_jobs`]).
    ///
    /// # Errors
    /// As [`Scheduler::get_jobs`].
    pub fn get_jobs(&self) -> Result<Vec<Job>> {
        self.block_on(self.scheduler.get_jobs(None))
    }

    /// Shuts the scheduler down and stops its runtime.
    ///
    /// # Errors
    /// As [`Scheduler::shutdown`].
    pub fn shutdown(mut self, wait: bool) -> Result<()> {
        let result = self.block_on(self.scheduler.shutdown(wait));
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        result
    }
}

impl Drop for BackgroundScheduler {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            if self.scheduler.is_running() {
                let _ = rt.block_on(self.scheduler.shutdown(false));
            }
            rt.shutdown_background();
        }
    }
}

impl Scheduler {
    /// Runs the scheduler on the calling thread until it is shut down (by a
    /// task, a listener or another thread calling [`request_shutdown`](Scheduler::request_shutdown)).
    ///
    /// # Errors
    /// The runtime cannot be created, or start/shutdown fails.
    pub fn run_blocking(&self) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start the scheduler runtime: {e}")))?;
        rt.block_on(async {
            self.start().await?;
            let mut rx = self.inner.stopped.subscribe();
            let _ = rx.wait_for(|s| *s).await;
            Ok(())
        })
    }

    /// Asks a running scheduler to shut down (waiting for running jobs) without
    /// awaiting it; usable from any thread, sync or async.
    pub fn request_shutdown(&self) {
        let runtime = super::lock(&self.inner.runtime).clone();
        if let Some(rt) = runtime {
            let s = self.clone();
            rt.spawn(async move {
                let _ = s.shutdown(true).await;
            });
        }
    }
}
