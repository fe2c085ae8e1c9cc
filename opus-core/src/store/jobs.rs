//! Events of a pipeline's jobs (`job.started`, `job.succeeded`, `job.failed`, `job.cancelled`,
//! `job.skipped`): the jobs themselves are not records (the build is), so each change is only an
//! event, appended in its own transaction.

use serde_json::Value;

use super::MetaStore;
use crate::error::StoreError;
use crate::model::{Event, EventKind, ProjectName};

impl MetaStore {
    /// Appends the job event `kind` of a build of `project`, with `payload` (build number, job,
    /// stage, and what else the kind says).
    pub fn record_job_event(
        &self,
        kind: EventKind,
        project: &ProjectName,
        payload: Value,
    ) -> Result<Event, StoreError> {
        self.transact(|tx| tx.append_event(kind, project.as_str(), payload.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_event_is_in_the_log_with_its_payload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(dir.path()).expect("open");
        let web = ProjectName::new("web").expect("name");
        let payload = serde_json::json!({ "build": 3, "job": "unit", "stage": "test" });
        let event = store
            .record_job_event(EventKind::JobStarted, &web, payload.clone())
            .expect("append");
        let read = store.events_from(event.seq, 10).expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].kind.as_str(), "job.started");
        assert_eq!(read[0].payload, payload);
        assert_eq!(read[0].project, "web");
    }
}
