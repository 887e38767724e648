//! Starting, stopping, pausing and resuming a scheduler, and its event listeners.

use super::*;

impl Scheduler {
    /// Starts processing jobs on the current tokio runtime.
    ///
    /// # Errors
    /// [`Error::AlreadyRunning`]; [`Error::Config`] outside a tokio runtime; a
    /// store's or executor's start error; a pending job that cannot be stored
    /// (it stays pending and the scheduler stays stopped).
    pub async fn start(&self) -> Result<()> {
        self.start_inner(false).await
    }

    /// Starts with job processing paused (call [`resume`](Scheduler::resume) to begin).
    ///
    /// # Errors
    /// As [`start`](Scheduler::start).
    pub async fn start_paused(&self) -> Result<()> {
        self.start_inner(true).await
    }

    async fn start_inner(&self, paused: bool) -> Result<()> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Config(
                "start() must be called inside a tokio runtime; use BackgroundScheduler or run_blocking() from synchronous code".into(),
            )
        })?;
        {
            let mut state = lock(&self.inner.state);
            if *state != SchedulerState::Stopped {
                return Err(Error::AlreadyRunning);
            }
            // Mark as starting so concurrent start() calls fail.
            *state = SchedulerState::Paused;
        }
        if self.is_client() {
            if let Err(e) = self.bring_up(&handle).await {
                self.inner.pending.reopen();
                *lock(&self.inner.state) = SchedulerState::Stopped;
                return Err(e);
            }
            *lock(&self.inner.state) = SchedulerState::Running;
            *lock(&self.inner.runtime) = Some(handle);
            self.inner.stopped.send_replace(false);
            self.inner.emit(Event::SchedulerStarted);
            return Ok(());
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *lock(&self.inner.outcomes) = Some(tx);
        let mut result = self.bring_up(&handle).await;
        if result.is_ok() {
            result = self.inner.register_node().await;
        }
        if let Err(e) = result {
            *lock(&self.inner.outcomes) = None;
            self.inner.pending.reopen();
            *lock(&self.inner.state) = SchedulerState::Stopped;
            return Err(e);
        }
        let ledger_token = CancellationToken::new();
        let ledger_join = handle.spawn(ledger::run(
            Arc::clone(&self.inner),
            ledger_token.clone(),
            rx,
        ));
        *lock(&self.inner.ledger_task) = Some((ledger_token, ledger_join));
        *lock(&self.inner.state) = if paused {
            SchedulerState::Paused
        } else {
            SchedulerState::Running
        };
        *lock(&self.inner.runtime) = Some(handle.clone());
        let token = CancellationToken::new();
        let inner = Arc::clone(&self.inner);
        let join = handle.spawn(run_loop::run(inner, token.clone()));
        *lock(&self.inner.run) = Some((token, join));
        self.inner.stopped.send_replace(false);
        self.inner.emit(Event::SchedulerStarted);
        if paused {
            self.inner.emit(Event::SchedulerPaused);
        }
        Ok(())
    }

    async fn bring_up(&self, handle: &tokio::runtime::Handle) -> Result<()> {
        if !self.is_client() {
            for (alias, e) in read(&self.inner.executors).iter() {
                e.start(self.executor_context(alias, handle))?;
            }
        }
        for (_, s) in self.inner.stores() {
            s.start().await?;
        }
        let mut iter = self.inner.pending.take().into_iter();
        while let Some(p) = iter.next() {
            match self.store_job(&p.record, &p.jobstore, &p.upsert).await {
                // A job declared `if_absent` whose stored copy is unreadable
                // is kept as stored (and reported when claimed), not a
                // reason to refuse to start.
                Err(Error::UnreadableJob { id, reason })
                    if p.upsert.on_conflict == OnConflict::Keep =>
                {
                    tracing::warn!(job_id = %id, jobstore = %p.jobstore, %reason, "stored job kept as it is, though unreadable");
                    continue;
                }
                Err(e) => {
                    self.inner.pending.extend(std::iter::once(p).chain(iter));
                    return Err(e);
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }

    pub(super) fn executor_context(
        &self,
        alias: &str,
        handle: &tokio::runtime::Handle,
    ) -> ExecutorContext {
        ExecutorContext {
            alias: alias.to_string(),
            events: self.inner.events.clone(),
            clock: Arc::clone(&self.inner.clock),
            runtime: handle.clone(),
            outcomes: lock(&self.inner.outcomes).clone(),
        }
    }

    /// Stops the loop, shuts executors down (waiting for running jobs when
    /// `wait`), and closes stores. Listeners have seen every event when it returns.
    ///
    /// # Errors
    /// [`Error::NotRunning`] when not started.
    pub async fn shutdown(&self, wait: bool) -> Result<()> {
        {
            let mut state = lock(&self.inner.state);
            if *state == SchedulerState::Stopped {
                return Err(Error::NotRunning);
            }
            // Jobs added from now on are kept for the next start.
            self.inner.pending.reopen();
            *state = SchedulerState::Stopped;
        }
        let run = lock(&self.inner.run).take();
        if let Some((token, join)) = run {
            token.cancel();
            let _ = join.await;
        }
        let execs: Vec<_> = if self.is_client() {
            Vec::new()
        } else {
            read(&self.inner.executors)
                .iter()
                .map(|(_, e)| Arc::clone(e))
                .collect()
        };
        for e in execs {
            e.shutdown(wait).await;
        }
        // Record what finished (and what was abandoned) before closing the stores.
        *lock(&self.inner.outcomes) = None;
        let ledger = lock(&self.inner.ledger_task).take();
        if let Some((token, join)) = ledger {
            token.cancel();
            let _ = join.await;
        }
        self.inner.deregister_node().await;
        // Claims of a batch still unstarted lapse on their own.
        lock(&self.inner.unstarted).clear();
        for (alias, s) in self.inner.stores() {
            if let Err(e) = s.shutdown().await {
                tracing::warn!(jobstore = %alias, error = %e, "job store shutdown failed");
            }
        }
        self.inner.emit(Event::SchedulerShutdown);
        self.inner.events.flush().await;
        self.inner.stopped.send_replace(true);
        Ok(())
    }

    /// Completes when the scheduler is shut down.
    pub async fn stopped(&self) {
        let mut rx = self.inner.stopped.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Pauses job processing (jobs keep their schedules; missed runs follow misfire rules on resume).
    ///
    /// # Errors
    /// [`Error::NotRunning`] when not started.
    pub fn pause(&self) -> Result<()> {
        self.not_client("pause")?;
        let mut state = lock(&self.inner.state);
        match *state {
            SchedulerState::Stopped => Err(Error::NotRunning),
            SchedulerState::Paused => Ok(()),
            SchedulerState::Running => {
                *state = SchedulerState::Paused;
                drop(state);
                self.inner.emit(Event::SchedulerPaused);
                self.inner.wake.notify_one();
                Ok(())
            }
        }
    }

    /// Resumes job processing.
    ///
    /// # Errors
    /// [`Error::NotRunning`] when not started.
    pub fn resume(&self) -> Result<()> {
        self.not_client("resume")?;
        let mut state = lock(&self.inner.state);
        match *state {
            SchedulerState::Stopped => Err(Error::NotRunning),
            SchedulerState::Running => Ok(()),
            SchedulerState::Paused => {
                *state = SchedulerState::Running;
                drop(state);
                self.inner.emit(Event::SchedulerResumed);
                self.inner.wake.notify_one();
                Ok(())
            }
        }
    }

    /// Wakes the loop to look for due jobs now (e.g. after another process added jobs).
    pub fn wakeup(&self) {
        self.inner.wake.notify_one();
    }

    /// Registers a listener for the events in `mask`. Listeners run on a
    /// dedicated thread; a panicking listener is logged and the others still run.
    pub fn add_listener(&self, mask: EventMask, listener: impl Listener) -> ListenerId {
        self.inner.events.add_listener(mask, listener)
    }

    /// Removes a listener; returns whether it was registered.
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        self.inner.events.remove_listener(id)
    }

    /// An async stream of every event from now on (a lagging subscriber skips events).
    pub fn subscribe(&self) -> BoxStream<'static, Event> {
        self.inner.events.subscribe()
    }

    /// The event bus (for executors and tools).
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }
}
