//! opus.yml `on:` triggers: builds that start without a push or a person.
//!
//! Where opusd learns a project's `on:`: opus.yml lives in the repository, so every build of the
//! project's default branch stores the `on:` of the opus.yml it checked out, with that commit
//! ([`record`]; `MetaStore::set_triggers`). A project's triggers therefore take effect from its
//! first build of the default branch on, and a push that changes `on:` changes them when its
//! build reads the file. Builds of other branches, tags and pull requests never change them.
//!
//! - `schedule` ([`schedule`]): a sweep every second builds each project whose cron expression
//!   came due since its last scheduled run; runs missed while opusd was down run once.
//! - `after` ([`after`]): each project's cursor over the event log; a matching event of the
//!   other project queues a build, and the build and the cursor commit together.
//! - `release`: the GitHub webhook (`api::webhooks`) builds a published release's tag.

use opus_core::CoreError;
use opus_core::model::{Build, ProjectName, StoreName, Trigger};
use opus_core::recipe::OpusFile;
use opus_core::store::{MetaStore, SetTriggersError, TriggerMark};

use crate::build::{BuildFailure, FailureKind, Stage};
use crate::logs::BuildLog;
use crate::scheduler::{Scheduler, TriggerRequest};

pub mod after;
pub mod schedule;

/// Where triggered builds go: the scheduler in opusd, a recorder in tests.
pub trait Starter: Send + Sync + 'static {
    /// Queues a build of `project`'s default branch, recording `mark` with it.
    fn start(
        &self,
        project: &ProjectName,
        trigger: Trigger,
        mark: TriggerMark,
    ) -> Result<Build, CoreError>;
}

impl Starter for Scheduler {
    fn start(
        &self,
        project: &ProjectName,
        trigger: Trigger,
        mark: TriggerMark,
    ) -> Result<Build, CoreError> {
        self.trigger_marked(
            TriggerRequest {
                project: project.clone(),
                git_ref: String::new(),
                version: None,
                store: StoreName::default_store(),
                trigger,
            },
            mark,
        )
    }
}

/// Whether `build` reads the triggers of its project: a build of the default branch, not of a
/// tag or a pull request.
pub fn reads_triggers(project_branch: &str, build: &Build) -> bool {
    build.pull_request.is_none() && !build.is_tag && build.branch.as_deref() == Some(project_branch)
}

/// Stores the `on:` of the opus.yml `build` (of the default branch) read, and says so in its
/// log. An `after` trigger that closes a cycle fails the build as an opus.yml error, storing
/// nothing.
pub fn record(
    store: &MetaStore,
    build: &Build,
    spec: &OpusFile,
    log: &BuildLog,
) -> Result<(), BuildFailure> {
    let now = std::time::SystemTime::now();
    match store.set_triggers(&build.project, &spec.on, &build.commit, now) {
        Ok(stored) => {
            if let Some(line) = describe(&stored.spec, now) {
                log.opus("triggers", &line);
            }
            Ok(())
        }
        Err(SetTriggersError::Cycle(cycle)) => Err(BuildFailure::new(
            Stage::Recipe,
            opus_core::error::RecipeError::Invalid {
                line: None,
                column: None,
                message: format!(
                    "on.after: {cycle}; remove the `after` trigger of one of these projects"
                ),
                file: Some("opus.yml".to_owned()),
            },
        )),
        Err(SetTriggersError::Store(e)) => {
            Err(BuildFailure::new(Stage::Recipe, FailureKind::Metadata(e)))
        }
    }
}

/// The build log's line about the triggers stored: "on: schedule \"0 3 * * *\" (next run
/// ...), after api's deploy to production, GitHub releases"; `None` for no triggers.
fn describe(spec: &opus_core::recipe::TriggersSpec, now: std::time::SystemTime) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(schedule) = &spec.schedule {
        let next = schedule
            .next_after(now)
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_else(|| "never".to_owned());
        parts.push(format!(
            "schedule {:?} (UTC; next run {next})",
            schedule.as_str()
        ));
    }
    if let Some(after) = &spec.after {
        let env = after
            .env
            .as_ref()
            .map(|e| format!(" to {e}"))
            .unwrap_or_default();
        parts.push(format!("after {}'s {}{env}", after.project, after.event));
    }
    if spec.release {
        parts.push("published GitHub releases".to_owned());
    }
    (!parts.is_empty()).then(|| {
        format!(
            "this build of the default branch sets the project's triggers: {}",
            parts.join(", ")
        )
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::SystemTime;

    use opus_core::model::{BuildState, Project, Source};

    use super::*;

    /// A queued build of `project`'s `main`, as a trigger asks for it.
    pub(crate) fn template(project: &ProjectName) -> Build {
        Build {
            id: 0,
            number: 0,
            project: project.clone(),
            state: BuildState::Queued,
            git_ref: "main".into(),
            commit: String::new(),
            version: None,
            version_pinned: false,
            reason: String::new(),
            trigger: Trigger::Cli,
            store: StoreName::default_store(),
            branch: None,
            is_tag: false,
            queued_at: SystemTime::now(),
            started_at: None,
            finished_at: None,
            pull_request: None,
            github: None,
        }
    }

    /// Queues builds straight into the store, as the scheduler does (without running them);
    /// refuses while `failing` is set.
    pub(crate) struct Recorder {
        pub(crate) store: MetaStore,
        pub(crate) failing: AtomicBool,
    }

    impl Starter for Recorder {
        fn start(
            &self,
            project: &ProjectName,
            trigger: Trigger,
            mark: TriggerMark,
        ) -> Result<Build, CoreError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(
                    opus_core::error::ModelError::Invalid("refused by the test".into()).into(),
                );
            }
            let template = Build {
                trigger,
                ..template(project)
            };
            Ok(self.store.create_triggered_build(&template, mark)?)
        }
    }

    /// A store with project `web` whose opus.yml says `on: { schedule: <cron> }`, stored at `at`.
    pub(crate) fn store_with(dir: &std::path::Path, on: &str, at: SystemTime) -> MetaStore {
        let store = MetaStore::open(&dir.join("meta")).expect("meta");
        for name in ["web", "api"] {
            store
                .create_project(&Project {
                    name: ProjectName::new(name).expect("name"),
                    source: Source::Git(format!("https://example.com/{name}.git")),
                    branch: "main".into(),
                    created_at: SystemTime::now(),
                    keep_versions: 0,
                })
                .expect("project");
        }
        let spec = opus_core::recipe::parse(&format!("build:\n  steps: [make]\non: {on}\n"))
            .expect("opus.yml")
            .on;
        store
            .set_triggers(&ProjectName::new("web").expect("name"), &spec, "c1", at)
            .expect("triggers");
        store
    }

    pub(crate) fn scheduled(store: &MetaStore, trigger: Trigger) -> usize {
        store
            .list_builds(&Default::default())
            .expect("builds")
            .iter()
            .filter(|b| b.trigger == trigger)
            .count()
    }

    /// Reopens the store at `dir` (made by [`store_with`]) with `web`'s triggers record replaced
    /// by bytes that are no record.
    pub(crate) fn corrupted(dir: &std::path::Path, store: MetaStore) -> MetaStore {
        drop(store);
        {
            let db = sled::open(dir.join("meta")).expect("sled");
            db.open_tree("triggers")
                .expect("tree")
                .insert("web", b"not a record".to_vec())
                .expect("insert");
            db.flush().expect("flush");
        }
        MetaStore::open_waiting(&dir.join("meta"), std::time::Duration::from_secs(10))
            .expect("reopen")
    }

    #[test]
    fn an_unreadable_triggers_record_starts_nothing_until_a_build_replaces_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with(
            dir.path(),
            "{ schedule: \"* * * * *\", after: { project: api, event: build } }",
            SystemTime::UNIX_EPOCH,
        );
        let store = corrupted(dir.path(), store);
        let starter = Recorder {
            store: store.clone(),
            failing: AtomicBool::new(false),
        };
        assert!(schedule::sweep(&store, &starter, SystemTime::now()).is_empty());
        assert!(after::pass(&store, &starter).started.is_empty());
        assert_eq!(scheduled(&store, Trigger::Schedule), 0);
        assert!(store.all_triggers().expect("the others").is_empty());
        // The next build of the default branch stores them again.
        let spec =
            opus_core::recipe::parse("build:\n  steps: [make]\non: { schedule: \"* * * * *\" }\n")
                .expect("opus.yml")
                .on;
        let web = ProjectName::new("web").expect("name");
        let stored = SystemTime::now();
        store
            .set_triggers(&web, &spec, "c2", stored)
            .expect("replaced");
        let later = stored + std::time::Duration::from_secs(61);
        assert_eq!(schedule::sweep(&store, &starter, later).len(), 1);
    }
}
