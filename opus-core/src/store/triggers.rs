//! Projects' opus.yml `on:` triggers, as the last build of each project's default branch read
//! them ([`MetaStore::set_triggers`]), with what opusd needs to start each build exactly once:
//! the time of the last scheduled run, and for an `after` trigger the next event of the log it
//! has not looked at. A triggered build and that bookkeeping commit in one transaction
//! ([`MetaStore::create_triggered_build`]), so a restart neither repeats nor loses a run.

use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;

use super::{MetaStore, T, Tx, TxResult, be_u64, decode};
use crate::error::StoreError;
use crate::model::{Build, ProjectName};
use crate::recipe::TriggersSpec;
use crate::recipe::triggers::{TriggerCycle, after_cycle};

/// A record that cannot be decoded reads as none (it is written anew); other errors stay.
fn unreadable_as_none(e: StoreError) -> Result<Option<ProjectTriggers>, StoreError> {
    match e {
        StoreError::Corrupt { .. } => Ok(None),
        e => Err(e),
    }
}

/// Held across "read every project's `after`, check for a cycle, store": two projects storing
/// triggers at once could otherwise each close half of a cycle.
static STORING: Mutex<()> = Mutex::new(());

/// A project's triggers as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectTriggers {
    /// The `on:` section.
    pub spec: TriggersSpec,
    /// The commit whose opus.yml last changed them.
    pub commit: String,
    /// When they last changed.
    pub recorded_at: SystemTime,
    /// When the schedule last started a build (or, before its first run, when the schedule was
    /// stored: runs before that are not missed runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled: Option<SystemTime>,
    /// The sequence number of the first event the `after` trigger has not looked at yet.
    #[serde(default)]
    pub after_cursor: u64,
}

/// What a triggered build records with itself ([`MetaStore::create_triggered_build`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerMark {
    /// The schedule ran at this time: the next run is the first occurrence after it.
    Scheduled(SystemTime),
    /// The `after` trigger has looked at every event before this sequence number.
    AfterCursor(u64),
}

/// Why triggers were not stored.
#[derive(Debug, thiserror::Error)]
pub enum SetTriggersError {
    /// The `after` trigger would close a cycle of projects waiting on each other.
    #[error(transparent)]
    Cycle(#[from] TriggerCycle),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Tx<'_> {
    /// Applies `mark` to `project`'s triggers record (nothing when it has none any more).
    fn mark_triggered(&self, project: &str, mark: TriggerMark) -> TxResult<()> {
        let key = project.as_bytes();
        let Some(mut record) = self.get_json::<ProjectTriggers>(T::Triggers, key)? else {
            return Ok(());
        };
        match mark {
            TriggerMark::Scheduled(at) => record.last_scheduled = Some(at),
            TriggerMark::AfterCursor(next) => record.after_cursor = record.after_cursor.max(next),
        }
        self.put_json(T::Triggers, key, &record)
    }
}

impl MetaStore {
    /// Stores `project`'s triggers from the opus.yml of `commit` (an empty `on:` removes them).
    /// A schedule that is new or changed counts from `now`; an `after` trigger that is new looks
    /// at events from the next one on. Refused, storing nothing, when the `after` trigger would
    /// close a cycle.
    pub fn set_triggers(
        &self,
        project: &ProjectName,
        spec: &TriggersSpec,
        commit: &str,
        now: SystemTime,
    ) -> Result<ProjectTriggers, SetTriggersError> {
        // Every build of the default branch comes here: when its `on:` is the stored one (or
        // there is none and none is stored), nothing is written.
        // An unreadable record (a damaged store) is replaced, as if there were none.
        match self.get_triggers(project).or_else(unreadable_as_none)? {
            Some(current) if current.spec == *spec => return Ok(current),
            None if spec.is_empty() => {
                return Ok(ProjectTriggers {
                    spec: TriggersSpec::default(),
                    commit: commit.to_owned(),
                    recorded_at: now,
                    last_scheduled: None,
                    after_cursor: 0,
                });
            }
            _ => {}
        }
        let _storing = STORING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(after) = &spec.after {
            let others = self.all_triggers()?;
            let waits_for = |p: &ProjectName| {
                others
                    .iter()
                    .find(|(name, _)| name == p)
                    .and_then(|(_, t)| t.spec.after.as_ref().map(|a| a.project.clone()))
            };
            if let Some(cycle) = after_cycle(project, &after.project, waits_for) {
                return Err(cycle.into());
            }
        }
        let key = project.as_str().as_bytes();
        Ok(self.transact(|tx| {
            let old = match tx.get_json::<ProjectTriggers>(T::Triggers, key) {
                Err(ConflictableTransactionError::Abort(StoreError::Corrupt { .. })) => None,
                other => other?,
            };
            let next_event = tx
                .tree(T::Counters)
                .get("event_seq")?
                .map_or(0, |v| be_u64(&v))
                + 1;
            let last_scheduled = match (&spec.schedule, &old) {
                (None, _) => None,
                (Some(schedule), Some(old)) if old.spec.schedule.as_ref() == Some(schedule) => {
                    old.last_scheduled.or(Some(now))
                }
                (Some(_), _) => Some(now),
            };
            let after_cursor = match (&spec.after, &old) {
                (None, _) => 0,
                (Some(_), Some(old)) if old.spec.after.is_some() => old.after_cursor,
                (Some(_), _) => next_event,
            };
            let record = ProjectTriggers {
                spec: spec.clone(),
                commit: commit.to_owned(),
                recorded_at: now,
                last_scheduled,
                after_cursor,
            };
            if spec.is_empty() {
                tx.tree(T::Triggers).remove(key)?;
            } else {
                tx.put_json(T::Triggers, key, &record)?;
            }
            Ok(record)
        })?)
    }

    /// One project's triggers, when it has any.
    pub fn get_triggers(
        &self,
        project: &ProjectName,
    ) -> Result<Option<ProjectTriggers>, StoreError> {
        self.get_json(T::Triggers, project.as_str().as_bytes())
    }

    /// Every project that has triggers, in name order. A record that cannot be read (a damaged
    /// store) is logged and left out, so it stops only its own project's triggers, until the
    /// next build of that project's default branch replaces it.
    pub fn all_triggers(&self) -> Result<Vec<(ProjectName, ProjectTriggers)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree(T::Triggers)?.iter() {
            let (k, v) = entry?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let read = decode::<ProjectTriggers>(&k, &v).and_then(|record| {
                ProjectName::new(key.clone())
                    .map(|name| (name, record))
                    .map_err(|e| StoreError::Corrupt {
                        key: key.clone(),
                        detail: e.to_string(),
                    })
            });
            match read {
                Ok(pair) => out.push(pair),
                Err(e) => {
                    tracing::warn!(project = %key, error = %e, "a project's opus.yml triggers cannot be read; its next build of the default branch stores them again")
                }
            }
        }
        Ok(out)
    }

    /// Creates a build (as [`MetaStore::create_build`]) and records `mark` with its project's
    /// triggers in the same transaction.
    pub fn create_triggered_build(
        &self,
        template: &Build,
        mark: TriggerMark,
    ) -> Result<Build, StoreError> {
        let project = template.project.as_str();
        self.create_build_with(template, |tx| tx.mark_triggered(project, mark))
    }

    /// Records that `project`'s `after` trigger has looked at every event before `next` (none of
    /// them started a build).
    pub fn advance_after_cursor(&self, project: &ProjectName, next: u64) -> Result<(), StoreError> {
        self.transact(|tx| tx.mark_triggered(project.as_str(), TriggerMark::AfterCursor(next)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{Project, Source};
    use crate::recipe::parse;

    fn store_with(dir: &std::path::Path, names: &[&str]) -> MetaStore {
        let store = MetaStore::open(&dir.join("meta")).expect("open");
        for n in names {
            store
                .create_project(&Project {
                    name: ProjectName::new(*n).expect("name"),
                    source: Source::Git(format!("https://example.com/{n}.git")),
                    branch: "main".into(),
                    created_at: SystemTime::now(),
                    keep_versions: 0,
                })
                .expect("project");
        }
        store
    }

    fn on(yaml: &str) -> TriggersSpec {
        parse(&format!("build:\n  steps: [make]\non:\n{yaml}"))
            .expect("opus.yml")
            .on
    }

    fn name(s: &str) -> ProjectName {
        ProjectName::new(s).expect("name")
    }

    #[test]
    fn a_cycle_is_refused_and_nothing_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with(dir.path(), &["web", "api", "db"]);
        let now = SystemTime::now();
        store
            .set_triggers(
                &name("api"),
                &on("  after: { project: web, event: deploy }\n"),
                "c1",
                now,
            )
            .expect("api after web");
        let err = store
            .set_triggers(
                &name("web"),
                &on("  after: { project: api, event: build }\n"),
                "c2",
                now,
            )
            .expect_err("web after api closes the cycle");
        assert_eq!(err.to_string(), "after-trigger cycle: web → api → web");
        assert_eq!(store.get_triggers(&name("web")).expect("read"), None);
        store
            .set_triggers(
                &name("db"),
                &on("  after: { project: api, event: version }\n"),
                "c3",
                now,
            )
            .expect("db after api");
        let err = store
            .set_triggers(
                &name("web"),
                &on("  after: { project: db, event: version }\n"),
                "c4",
                now,
            )
            .expect_err("a longer cycle");
        assert_eq!(err.to_string(), "after-trigger cycle: web → db → api → web");
    }

    #[test]
    fn bookkeeping_survives_a_new_opus_yml_and_goes_with_an_empty_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with(dir.path(), &["web", "api"]);
        let t0 = SystemTime::now();
        let spec = on("  schedule: \"0 3 * * *\"\n  after: { project: api, event: build }\n");
        let first = store
            .set_triggers(&name("web"), &spec, "c1", t0)
            .expect("set");
        assert_eq!(first.last_scheduled, Some(t0));
        let cursor = first.after_cursor;
        assert_eq!(cursor, store.last_event_seq() + 1);
        // A build records its mark with itself.
        let template = crate::store::tests::build("web");
        let ran = t0 + Duration::from_secs(3600);
        store
            .create_triggered_build(&template, TriggerMark::Scheduled(ran))
            .expect("build");
        store
            .create_triggered_build(&template, TriggerMark::AfterCursor(cursor + 5))
            .expect("build");
        // The same opus.yml read again (a later build) keeps both, and writes nothing.
        let changes = store.change_count();
        let again = store
            .set_triggers(&name("web"), &spec, "c2", t0 + Duration::from_secs(7200))
            .expect("set");
        assert_eq!(again.last_scheduled, Some(ran));
        assert_eq!(again.after_cursor, cursor + 5);
        assert_eq!(again.commit, "c1", "the commit that last changed them");
        assert_eq!(store.change_count(), changes);
        // An `after` trigger changed keeps its cursor.
        let moved = store
            .set_triggers(
                &name("web"),
                &on("  schedule: \"0 3 * * *\"\n  after: { project: api, event: version }\n"),
                "c3",
                t0,
            )
            .expect("set");
        assert_eq!(moved.after_cursor, cursor + 5);
        assert_eq!(moved.last_scheduled, Some(ran));
        // A changed schedule counts from now.
        let later = t0 + Duration::from_secs(9000);
        let changed = store
            .set_triggers(
                &name("web"),
                &on("  schedule: \"0 4 * * *\"\n"),
                "c3",
                later,
            )
            .expect("set");
        assert_eq!(changed.last_scheduled, Some(later));
        store
            .set_triggers(&name("web"), &TriggersSpec::default(), "c4", later)
            .expect("cleared");
        assert_eq!(store.get_triggers(&name("web")).expect("read"), None);
        assert!(store.all_triggers().expect("all").is_empty());
    }

    #[test]
    fn removing_a_project_removes_its_triggers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with(dir.path(), &["web"]);
        store
            .set_triggers(
                &name("web"),
                &on("  release: true\n"),
                "c1",
                SystemTime::now(),
            )
            .expect("set");
        assert_eq!(store.all_triggers().expect("all").len(), 1);
        store.delete_project(&name("web")).expect("removed");
        assert!(store.all_triggers().expect("all").is_empty());
    }
}
