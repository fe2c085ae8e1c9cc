//! The rollback that a failed `verify:` check makes (opus.yml `environments.<env>.verify`): a
//! rollback as `opus rollback` makes it (pinned), committed only while the environment is still
//! on the release that was being verified, with a `deploy.rolled_back` event in the same
//! transaction saying why.

use serde_json::json;

use super::{EnvironmentRecord, NewRelease, ReleaseReason, RollbackTarget, env_key};
use crate::error::StoreError;
use crate::model::{EnvName, EventKind, ProjectName};
use crate::store::{MetaStore, T};

/// Why a verification rolls an environment back: the release it verified and the check that
/// failed, for the `deploy.rolled_back` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The release being verified (its sequence number in the environment).
    pub release: u64,
    /// The version it had deployed.
    pub version: String,
    /// The check that failed.
    pub check: String,
    /// What failed, in one line.
    pub reason: String,
    /// The end of the check's output.
    pub output: String,
}

impl MetaStore {
    /// Rolls `env` back to `target` (from [`MetaStore::rollback_target`]) and pins it, with a
    /// `deploy.rolled_back` event, if it is still on the release `failure` verified; `None`
    /// (nothing changed) when another release has been made since: that one is verified on its
    /// own. The caller keeps the environment from changing in between (the deployer holds the
    /// site writer lock).
    pub fn rollback_after_verify(
        &self,
        project: &ProjectName,
        env: &EnvName,
        target: &RollbackTarget,
        actor: &str,
        failure: &VerifyFailure,
    ) -> Result<Option<EnvironmentRecord>, StoreError> {
        let (project, env) = (project.as_str(), env.as_str());
        self.transact(|tx| {
            let current =
                tx.get_json::<EnvironmentRecord>(T::Environments, &env_key(project, env))?;
            if current.is_none_or(|c| c.current.seq != failure.release) {
                return Ok(None);
            }
            tx.project(project)?;
            tx.version_exists(project, target.version.as_str())?;
            let record = tx.release(&NewRelease {
                project,
                env,
                version: target.version.as_str(),
                actor,
                reason: ReleaseReason::Rollback,
                restores: target.restores,
                pinned: true,
                preview: target.preview,
            })?;
            tx.append_event(
                EventKind::DeployRolledBack,
                project,
                json!({
                    "project": project,
                    "env": env,
                    "from": failure.version,
                    "from_release": failure.release,
                    "to": target.version.as_str(),
                    "release": record.current.seq,
                    "check": failure.check,
                    "reason": failure.reason,
                    "output": failure.output,
                    "pinned": true,
                }),
            )?;
            Ok(Some(record))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VersionName;
    use crate::store::SiteOptions;

    fn failure(release: u64) -> VerifyFailure {
        VerifyFailure {
            release,
            version: "2".into(),
            check: "smoke".into(),
            reason: "GET / answered 500, expected 200".into(),
            output: "HTTP 500".into(),
        }
    }

    #[test]
    fn a_verified_release_is_rolled_back_and_pinned_but_a_newer_one_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(dir.path()).expect("open");
        store
            .create_project(&crate::store::tests::project("web"))
            .expect("create");
        let (web, prod) = (
            ProjectName::new("web").expect("name"),
            EnvName::new("production").expect("name"),
        );
        for v in ["1", "2", "3"] {
            store
                .commit_version(
                    &crate::store::tests::version("web", v),
                    &[],
                    &SiteOptions::default(),
                )
                .expect("version");
        }
        let deploy = |v: &str| {
            store
                .deploy(
                    &web,
                    &prod,
                    &VersionName::new(v).expect("v"),
                    "test",
                    ReleaseReason::Deploy,
                    false,
                )
                .expect("deploy")
        };
        deploy("1");
        let second = deploy("2");
        // Verification of release 2 failed, but release 3 came first: nothing changes.
        deploy("3");
        let target = store.rollback_target(&web, &prod, None).expect("target");
        let stale = store
            .rollback_after_verify(&web, &prod, &target, "verify", &failure(second.current.seq))
            .expect("no error");
        assert_eq!(stale, None);
        assert_eq!(
            store.environment(&web, &prod).expect("env").current.version,
            "3"
        );
        // Verification of release 3 failed: back to 2, pinned, with the event.
        let third = store.environment(&web, &prod).expect("env").current.seq;
        let record = store
            .rollback_after_verify(
                &web,
                &prod,
                &target,
                "verify: check smoke failed",
                &failure(third),
            )
            .expect("no error")
            .expect("rolled back");
        assert_eq!(record.current.version, "2");
        assert!(record.pinned);
        let events = store.events_from(0, 100).expect("events");
        let last = events.last().expect("an event");
        assert_eq!(last.kind, EventKind::DeployRolledBack);
        assert_eq!(last.payload["to"], "2");
        assert_eq!(last.payload["check"], "smoke");
        let before = &events[events.len() - 2];
        assert_eq!(before.kind, EventKind::EnvironmentRolledBack);
    }
}
