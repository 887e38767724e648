//! Runs Sundial jobs as tokio tasks.
//!
//! Each run is one task on the scheduler's runtime. Blocking tasks submitted
//! here go to tokio's blocking pool. A run that exceeds its job's timeout is
//! cancelled (its future dropped, its [`JobContext`](sundial_core::task::JobContext)
//! cancellation signalled) and reported as `JobTimeout`; a panic is reported as
//! `JobError`.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sundial_core::executor::{
    execute_async, Executor, ExecutorContext, ExecutorKind, InstanceTracker, JobRun, SubmitError,
};
use sundial_core::job::JobId;
use sundial_core::Result;
use tokio_util::sync::CancellationToken;

/// Executes async jobs on tokio.
#[derive(Debug)]
pub struct AsyncExecutor {
    /// The context and shutdown signal of the current start, shared by every run.
    ctx: Mutex<Option<Arc<(ExecutorContext, CancellationToken)>>>,
    tracker: Arc<InstanceTracker>,
}

impl Default for AsyncExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl AsyncExecutor {
    /// A new executor (started by the scheduler).
    pub fn new() -> Self {
        AsyncExecutor {
            ctx: Mutex::new(None),
            tracker: InstanceTracker::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<(ExecutorContext, CancellationToken)>>> {
        self.ctx.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Executor for AsyncExecutor {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Async
    }

    fn start(&self, ctx: ExecutorContext) -> Result<()> {
        self.tracker.reopen();
        *self.lock() = Some(Arc::new((ctx, CancellationToken::new())));
        Ok(())
    }

    fn submit(&self, run: JobRun) -> Result<(), SubmitError> {
        let Some(started) = self.lock().clone() else {
            return Err(SubmitError::NotStarted);
        };
        let guard = self.tracker.try_acquire(&run.job_id, run.max_instances)?;
        let rt = started.0.runtime.clone();
        rt.spawn(async move {
            let _guard = guard;
            let (ctx, token) = &*started;
            execute_async(ctx, &run, token).await;
        });
        Ok(())
    }

    fn running_instances(&self, job_id: &JobId) -> u32 {
        self.tracker.running(job_id)
    }

    /// Stops accepting runs. With `wait`, returns when running jobs finished;
    /// without, signals their cancellation and returns at once.
    async fn shutdown(&self, wait: bool) {
        self.tracker.close();
        let token = self.lock().as_ref().map(|s| s.1.clone());
        if wait {
            self.tracker.wait_idle().await;
        } else if let Some(t) = token {
            t.cancel();
        }
    }
}
