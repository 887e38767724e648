//! Runs Sundial's blocking jobs on a rayon thread pool.
//!
//! Blocking code cannot be interrupted: a run that exceeds its job's timeout
//! has its cancellation signalled (tasks can poll
//! [`JobContext::is_cancelled`](sundial_core::task::JobContext::is_cancelled))
//! and is reported as `JobTimeout` when it returns. A panic is reported as `JobError`.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sundial_core::executor::{
    execute_blocking, Executor, ExecutorContext, ExecutorKind, InstanceTracker, JobRun, SubmitError,
};
use sundial_core::job::JobId;
use sundial_core::{Error, Result};
use tokio_util::sync::CancellationToken;

/// Executes blocking jobs on a dedicated rayon pool.
#[derive(Debug)]
pub struct ThreadPoolExecutor {
    threads: usize,
    pool: Mutex<Option<Arc<rayon::ThreadPool>>>,
    /// The context and shutdown signal of the current start, shared by every run.
    ctx: Mutex<Option<Arc<(ExecutorContext, CancellationToken)>>>,
    tracker: Arc<InstanceTracker>,
}

impl ThreadPoolExecutor {
    /// A pool of `threads` worker threads (at least one), created on start.
    pub fn new(threads: usize) -> Self {
        ThreadPoolExecutor {
            threads: threads.max(1),
            pool: Mutex::new(None),
            ctx: Mutex::new(None),
            tracker: InstanceTracker::new(),
        }
    }
}

impl Default for ThreadPoolExecutor {
    /// A pool with one thread per CPU.
    fn default() -> Self {
        Self::new(std::thread::available_parallelism().map_or(4, |n| n.get()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Executor for ThreadPoolExecutor {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Blocking
    }

    fn start(&self, ctx: ExecutorContext) -> Result<()> {
        let mut pool = lock(&self.pool);
        if pool.is_none() {
            let p = rayon::ThreadPoolBuilder::new()
                .num_threads(self.threads)
                .thread_name(|i| format!("sundial-pool-{i}"))
                .build()
                .map_err(|e| Error::Config(format!("cannot start thread pool: {e}")))?;
            *pool = Some(Arc::new(p));
        }
        self.tracker.reopen();
        *lock(&self.ctx) = Some(Arc::new((ctx, CancellationToken::new())));
        Ok(())
    }

    fn submit(&self, run: JobRun) -> Result<(), SubmitError> {
        let (Some(pool), Some(started)) = (lock(&self.pool).clone(), lock(&self.ctx).clone())
        else {
            return Err(SubmitError::NotStarted);
        };
        let guard = self.tracker.try_acquire(&run.job_id, run.max_instances)?;
        pool.spawn(move || {
            let _guard = guard;
            let (ctx, token) = &*started;
            execute_blocking(ctx, &run, token);
        });
        Ok(())
    }

    fn running_instances(&self, job_id: &JobId) -> u32 {
        self.tracker.running(job_id)
    }

    /// Stops accepting runs. With `wait`, returns when running jobs finished;
    /// without, signals their cancellation (blocking code sees it through
    /// [`JobContext::is_cancelled`](sundial_core::task::JobContext::is_cancelled))
    /// and returns at once.
    async fn shutdown(&self, wait: bool) {
        self.tracker.close();
        let token = lock(&self.ctx).as_ref().map(|s| s.1.clone());
        if wait {
            self.tracker.wait_idle().await;
        } else if let Some(t) = token {
            t.cancel();
        }
    }
}
