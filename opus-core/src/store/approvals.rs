//! Approvals: a build whose version waits for an environment with `approval: true`.
//!
//! The build's run ends in [`BuildState::AwaitingApproval`] with a [`PendingApproval`] record
//! (tree `approvals`, by build id) naming the environments it waits for, both in one
//! transaction with the `build.awaiting_approval` event. The record outlives a restart (the
//! build is in no index of unfinished builds, so start-up recovery leaves it alone). Approving
//! or rejecting it ([`MetaStore::decide_approval`]) removes the record and ends the build
//! (succeeded or failed) with its `build.approved` or `build.rejected` event, in one transaction.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{MetaStore, T, abort};
use crate::error::StoreError;
use crate::model::{Build, BuildState, EnvName, EventKind, ProjectName, VersionName};

/// What a build awaiting approval waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingApproval {
    /// The project.
    pub project: ProjectName,
    /// The build's number within its project (`web#12`).
    pub number: u64,
    /// The stored version an approval deploys.
    pub version: VersionName,
    /// The environments (with `approval: true`) not deployed yet.
    pub environments: Vec<EnvName>,
    /// When the build started waiting.
    pub since: SystemTime,
}

/// How an approval ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalDecision {
    /// Approved by `by`: the version was deployed to every environment it waited for.
    Approved {
        /// Who approved (the actor its releases record).
        by: String,
    },
    /// Rejected by `by`: no environment it waited for moves.
    Rejected {
        /// Who rejected.
        by: String,
        /// Why (may be empty).
        reason: String,
    },
}

/// The key of a build's approval record.
fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// The build's name as people write it.
fn name(build: &Build) -> String {
    format!("{}#{}", build.project, build.number)
}

impl MetaStore {
    /// Ends the run of running build `id` awaiting approval of `environments` for its decided
    /// version: state, `reason`, the approval record and the event in one transaction.
    pub fn await_approval(
        &self,
        id: u64,
        environments: &[EnvName],
        reason: &str,
    ) -> Result<Build, StoreError> {
        self.transact(|tx| {
            let mut build = tx.build(id)?;
            let Some(version) = build.version.clone() else {
                return abort(StoreError::Corrupt {
                    key: format!("build {}", name(&build)),
                    detail: "awaiting approval without a decided version".into(),
                });
            };
            build.state = BuildState::AwaitingApproval;
            build.reason = reason.to_owned();
            build.finished_at = Some(SystemTime::now());
            let pending = PendingApproval {
                project: build.project.clone(),
                number: build.number,
                version,
                environments: environments.to_vec(),
                since: SystemTime::now(),
            };
            tx.put_json(T::Approvals, &key(id), &pending)?;
            tx.put_build(&build, EventKind::Build(BuildState::AwaitingApproval))?;
            Ok(build)
        })
    }

    /// What build `id` awaits, when it awaits approval.
    pub fn pending_approval(&self, id: u64) -> Result<Option<PendingApproval>, StoreError> {
        self.get_json(T::Approvals, &key(id))
    }

    /// Narrows what build `id` still awaits to `environments` (after an approval deployed the
    /// others and then met an environment it could not deploy to).
    pub fn keep_awaiting(&self, id: u64, environments: &[EnvName]) -> Result<(), StoreError> {
        self.transact(|tx| {
            let Some(mut pending) = tx.get_json::<PendingApproval>(T::Approvals, &key(id))? else {
                let build = tx.build(id)?;
                return abort(not_awaiting(&build));
            };
            pending.environments = environments.to_vec();
            tx.put_json(T::Approvals, &key(id), &pending)?;
            Ok(())
        })
    }

    /// Ends build `id`, awaiting approval, by `decision`: approved -> succeeded, rejected ->
    /// failed (the reason says who and why). `NotAwaitingApproval` (naming its state) for a
    /// build in any other state.
    pub fn decide_approval(
        &self,
        id: u64,
        decision: &ApprovalDecision,
        environments: &[EnvName],
    ) -> Result<Build, StoreError> {
        self.transact(|tx| {
            let mut build = tx.build(id)?;
            if build.state != BuildState::AwaitingApproval {
                return abort(not_awaiting(&build));
            }
            tx.tree(T::Approvals).remove(&key(id))?;
            let (state, kind, by, why) = match decision {
                ApprovalDecision::Approved { by } => (
                    BuildState::Succeeded,
                    EventKind::BuildApproved,
                    by,
                    format!("approved by {by}"),
                ),
                ApprovalDecision::Rejected { by, reason } if reason.is_empty() => (
                    BuildState::Failed,
                    EventKind::BuildRejected,
                    by,
                    format!("rejected by {by}"),
                ),
                ApprovalDecision::Rejected { by, reason } => (
                    BuildState::Failed,
                    EventKind::BuildRejected,
                    by,
                    format!("rejected by {by}: {reason}"),
                ),
            };
            build.state = state;
            build.reason = why.clone();
            build.finished_at = Some(SystemTime::now());
            tx.put_build(&build, EventKind::Build(state))?;
            let environments: Vec<&str> = environments.iter().map(EnvName::as_str).collect();
            tx.append_event(
                kind,
                build.project.as_str(),
                json!({
                    "number": build.number,
                    "project": build.project,
                    "version": build.version.as_ref().map_or("", VersionName::as_str),
                    "by": by,
                    "environments": environments,
                    "reason": why,
                }),
            )?;
            Ok(build)
        })
    }
}

/// The error for deciding on `build`, which is not awaiting approval.
fn not_awaiting(build: &Build) -> StoreError {
    StoreError::NotAwaitingApproval {
        build: name(build),
        state: match build.state {
            BuildState::AwaitingApproval => "awaiting approval".to_owned(),
            state => state.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Source, Trigger};

    fn open() -> (tempfile::TempDir, MetaStore, Build) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(&dir.path().join("meta")).expect("open");
        let project = crate::model::Project {
            name: ProjectName::new("web").expect("valid"),
            source: Source::Git("https://example.com/web.git".into()),
            branch: "main".into(),
            keep_versions: 0,
            created_at: SystemTime::UNIX_EPOCH,
        };
        store.create_project(&project).expect("project");
        let build = store
            .create_build(&Build {
                id: 0,
                project: project.name.clone(),
                state: BuildState::Queued,
                git_ref: "main".into(),
                commit: String::new(),
                version: Some(VersionName::new("1.0.0").expect("valid")),
                version_pinned: true,
                reason: String::new(),
                trigger: Trigger::Cli,
                store: crate::model::StoreName::default_store(),
                branch: Some("main".into()),
                is_tag: false,
                queued_at: SystemTime::now(),
                started_at: None,
                finished_at: None,
                number: 0,
                pull_request: None,
                github: None,
            })
            .expect("build");
        let build = store
            .update_build(build.id, |b| b.state = BuildState::Running)
            .expect("running");
        (dir, store, build)
    }

    fn production() -> Vec<EnvName> {
        vec![EnvName::production()]
    }

    #[test]
    fn awaiting_leaves_the_unfinished_index_and_keeps_its_record() {
        let (_dir, store, build) = open();
        let waiting = store
            .await_approval(build.id, &production(), "awaiting approval")
            .expect("awaits");
        assert_eq!(waiting.state, BuildState::AwaitingApproval);
        assert!(
            store
                .builds_in_states(&[BuildState::Running, BuildState::Queued])
                .expect("read")
                .is_empty(),
            "start-up recovery must not see it"
        );
        let pending = store
            .pending_approval(build.id)
            .expect("read")
            .expect("pending");
        assert_eq!(pending.environments, production());
        assert_eq!(pending.version.as_str(), "1.0.0");
    }

    #[test]
    fn approving_ends_it_succeeded_with_its_event_once() {
        let (_dir, store, build) = open();
        store
            .await_approval(build.id, &production(), "awaiting")
            .expect("awaits");
        let approved = ApprovalDecision::Approved { by: "ann".into() };
        let done = store
            .decide_approval(build.id, &approved, &production())
            .expect("approved");
        assert_eq!(done.state, BuildState::Succeeded);
        assert_eq!(done.reason, "approved by ann");
        assert!(store.pending_approval(build.id).expect("read").is_none());
        let kinds: Vec<EventKind> = store
            .events_from(0, 100)
            .expect("events")
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert!(kinds.contains(&EventKind::BuildApproved), "{kinds:?}");
        assert!(kinds.contains(&EventKind::Build(BuildState::AwaitingApproval)));
        match store.decide_approval(build.id, &approved, &production()) {
            Err(StoreError::NotAwaitingApproval { build, state }) => {
                assert_eq!(build, "web#1");
                assert_eq!(state, "succeeded");
            }
            other => panic!("a second approval must be refused: {other:?}"),
        }
    }

    #[test]
    fn rejecting_ends_it_failed_saying_who_and_why() {
        let (_dir, store, build) = open();
        store
            .await_approval(build.id, &production(), "awaiting")
            .expect("awaits");
        let done = store
            .decide_approval(
                build.id,
                &ApprovalDecision::Rejected {
                    by: "bob".into(),
                    reason: "broken header".into(),
                },
                &production(),
            )
            .expect("rejected");
        assert_eq!(done.state, BuildState::Failed);
        assert_eq!(done.reason, "rejected by bob: broken header");
    }

    #[test]
    fn a_running_build_cannot_be_decided() {
        let (_dir, store, build) = open();
        let err = store
            .decide_approval(
                build.id,
                &ApprovalDecision::Approved { by: "ann".into() },
                &production(),
            )
            .expect_err("refused");
        assert!(err.to_string().contains("web#1 is running"), "{err}");
        assert!(store.keep_awaiting(build.id, &production()).is_err());
    }
}
