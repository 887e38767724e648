//! Decoded contents of claimed jobs, with their parsed triggers: a job that
//! runs again with the same stored content is not decoded or parsed again.

use foldhash::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::job::{JobContent, JobData, JobId, JobOptions};
use crate::trigger::Trigger;

/// The most jobs kept; the cache starts over when it is full.
const MOST: usize = 10_000;

/// What running a job reads of its content besides the trigger.
#[derive(Debug)]
pub(crate) struct RunData {
    /// The registered task name.
    pub(crate) task: String,
    /// The task's arguments as JSON.
    pub(crate) args: Value,
    /// Run settings.
    pub(crate) options: JobOptions,
}

impl From<JobData> for RunData {
    fn from(d: JobData) -> Self {
        RunData {
            task: d.task,
            args: d.args,
            options: d.options,
        }
    }
}

/// A job's content, decoded, and its trigger, parsed.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// The stored text this was decoded from.
    content: JobContent,
    /// The decoded content.
    pub(crate) data: RunData,
    /// The trigger of `data`.
    pub(crate) trigger: Arc<dyn Trigger>,
}

impl Parsed {
    /// The content `content` decoded as `data`, with its trigger parsed.
    pub(crate) fn new(content: JobContent, data: RunData, trigger: Box<dyn Trigger>) -> Arc<Self> {
        Arc::new(Parsed {
            content,
            data,
            trigger: Arc::from(trigger),
        })
    }
}

/// Parsed job contents by job id (and store alias), each valid while the
/// stored text is the same.
#[derive(Debug, Default)]
pub(crate) struct DecodedCache {
    stores: HashMap<String, HashMap<JobId, Arc<Parsed>>>,
    len: usize,
}

impl DecodedCache {
    /// The parsed content of job `id` in store `alias` if `content` is the
    /// text it was decoded from.
    pub(crate) fn get(&self, alias: &str, id: &JobId, content: &JobContent) -> Option<Arc<Parsed>> {
        let hit = self.stores.get(alias)?.get(id)?;
        let same = Arc::ptr_eq(hit.content.as_arc(), content.as_arc())
            || hit.content.as_str() == content.as_str();
        same.then(|| Arc::clone(hit))
    }

    /// Keeps a parsed content.
    pub(crate) fn put(&mut self, alias: &str, id: &JobId, parsed: Arc<Parsed>) {
        if self.len >= MOST {
            self.stores.clear();
            self.len = 0;
        }
        let jobs = match self.stores.get_mut(alias) {
            Some(jobs) => jobs,
            None => self.stores.entry(alias.to_string()).or_default(),
        };
        if jobs.insert(id.clone(), parsed).is_none() {
            self.len += 1;
        }
    }

    /// Forgets a job (removed, or its store is gone).
    pub(crate) fn forget(&mut self, alias: &str, id: &JobId) {
        if let Some(jobs) = self.stores.get_mut(alias) {
            if jobs.remove(id).is_some() {
                self.len -= 1;
            }
        }
    }

    /// Forgets every job of a store.
    pub(crate) fn forget_store(&mut self, alias: &str) {
        if let Some(jobs) = self.stores.remove(alias) {
            self.len -= jobs.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobOptions;
    use crate::trigger::IntervalTrigger;

    fn data(task: &str) -> JobData {
        JobData {
            task: task.into(),
            trigger: serde_json::json!({"type": "interval", "seconds": 1}),
            args: serde_json::Value::Null,
            options: JobOptions::default(),
        }
    }

    fn trigger() -> Box<dyn Trigger> {
        Box::new(
            IntervalTrigger::every(std::time::Duration::from_secs(1))
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    #[test]
    fn serves_only_the_same_text_of_the_same_job_and_store() {
        let mut c = DecodedCache::default();
        let id = JobId::new("j");
        let text = JobContent::encode(&data("a"));
        c.put(
            "s",
            &id,
            Parsed::new(text.clone(), data("a").into(), trigger()),
        );
        assert!(c.get("s", &id, &text).is_some(), "same Arc");
        let copy = JobContent::from_stored(text.as_str().to_string());
        assert!(c.get("s", &id, &copy).is_some(), "equal text");
        assert!(
            c.get("s", &id, &JobContent::encode(&data("b"))).is_none(),
            "changed text"
        );
        assert!(c.get("t", &id, &text).is_none(), "other store");
        assert!(c.get("s", &JobId::new("k"), &text).is_none(), "other job");
        c.forget("s", &id);
        assert!(c.get("s", &id, &text).is_none(), "forgotten");
        c.put(
            "s",
            &id,
            Parsed::new(text.clone(), data("a").into(), trigger()),
        );
        c.forget_store("s");
        assert!(c.get("s", &id, &text).is_none(), "store forgotten");
    }

    #[test]
    fn starts_over_when_full() {
        let mut c = DecodedCache::default();
        let text = JobContent::encode(&data("a"));
        for i in 0..=MOST {
            let parsed = Parsed::new(text.clone(), data("a").into(), trigger());
            c.put("s", &JobId::new(i.to_string()), parsed);
        }
        assert_eq!(c.len, 1);
    }
}
