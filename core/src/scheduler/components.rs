//! Adding and removing job stores and executors while a scheduler exists.

use super::*;

impl Scheduler {
    /// Adds a job store while the scheduler exists (started stores start now).
    ///
    /// # Errors
    /// [`Error::Config`] when the alias is taken; the store's start error.
    pub async fn add_jobstore(&self, alias: impl Into<String>, store: impl JobStore) -> Result<()> {
        let alias = alias.into();
        if read(&self.inner.stores).iter().any(|(a, _)| *a == alias) {
            return Err(Error::Config(format!(
                "job store alias '{alias}' is already in use"
            )));
        }
        if self.is_running() {
            store.start().await?;
        }
        let store: Arc<dyn JobStore> = Arc::new(crate::store::Traced(Arc::new(store)));
        write(&self.inner.stores).push((alias.clone(), Arc::clone(&store)));
        let stop = lock(&self.inner.run)
            .as_ref()
            .map(|(token, _)| token.clone());
        if let Some(stop) = stop {
            run_loop::spawn_watcher(&self.inner, alias.clone(), store, stop);
        }
        self.inner.emit(Event::JobStoreAdded { alias });
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Removes a job store (its jobs stay in it, unscheduled by this scheduler).
    ///
    /// # Errors
    /// [`Error::UnknownStore`].
    pub async fn remove_jobstore(&self, alias: &str) -> Result<()> {
        let store =
            {
                let mut stores = write(&self.inner.stores);
                let pos = stores.iter().position(|(a, _)| a == alias).ok_or_else(|| {
                    Error::UnknownStore {
                        alias: alias.to_string(),
                        hint: configured(stores.iter().map(|(a, _)| a)),
                    }
                })?;
                stores.remove(pos).1
            };
        if let Some(w) = lock(&self.inner.watchers).remove(alias) {
            w.abort();
        }
        lock(&self.inner.watched).remove(alias);
        lock(&self.inner.decoded).forget_store(alias);
        if self.is_running() {
            if let Err(e) = store.shutdown().await {
                tracing::warn!(jobstore = %alias, error = %e, "job store shutdown failed");
            }
        }
        self.inner.emit(Event::JobStoreRemoved {
            alias: alias.to_string(),
        });
        Ok(())
    }

    /// Adds an executor (started now if the scheduler runs).
    ///
    /// # Errors
    /// [`Error::Config`] when the alias is taken; the executor's start error.
    pub fn add_executor(&self, alias: impl Into<String>, executor: impl Executor) -> Result<()> {
        let alias = alias.into();
        if read(&self.inner.executors).iter().any(|(a, _)| *a == alias) {
            return Err(Error::Config(format!(
                "executor alias '{alias}' is already in use"
            )));
        }
        let runtime = lock(&self.inner.runtime).clone();
        if let (true, Some(h)) = (self.is_running(), runtime) {
            executor.start(self.executor_context(&alias, &h))?;
        }
        write(&self.inner.executors).push((alias.clone(), Arc::new(executor)));
        self.inner.emit(Event::ExecutorAdded { alias });
        Ok(())
    }

    /// Removes an executor, waiting for its running jobs when `wait`.
    ///
    /// # Errors
    /// [`Error::UnknownExecutor`].
    pub async fn remove_executor(&self, alias: &str, wait: bool) -> Result<()> {
        let exec = {
            let mut execs = write(&self.inner.executors);
            let pos = execs.iter().position(|(a, _)| a == alias).ok_or_else(|| {
                Error::UnknownExecutor {
                    alias: alias.to_string(),
                    hint: configured(execs.iter().map(|(a, _)| a)),
                }
            })?;
            execs.remove(pos).1
        };
        exec.shutdown(wait).await;
        self.inner.emit(Event::ExecutorRemoved {
            alias: alias.to_string(),
        });
        Ok(())
    }
}
