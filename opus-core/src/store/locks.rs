//! Environment locks (`opus env lock web production --reason "freeze until Monday"`): while an
//! environment is locked, every deploy to it, automatic or by hand, fails with the lock's reason
//! (`StoreError::EnvironmentLocked`, checked in the deploy's own transaction); a rollback still
//! goes through, and the lock stays over it. The lock is kept on the environment's record.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::deploys::{EnvironmentRecord, env_key};
use super::{MetaStore, T, abort};
use crate::error::StoreError;
use crate::model::{EnvName, ProjectName};

/// Why and since when an environment is locked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvLock {
    /// What `--reason` said.
    pub reason: String,
    /// When it was locked.
    pub since: SystemTime,
}

impl MetaStore {
    /// Locks `env` with `reason` (a second lock replaces the reason). `EnvironmentNotFound`
    /// when nothing was ever deployed there.
    pub fn lock_environment(
        &self,
        project: &ProjectName,
        env: &EnvName,
        reason: &str,
    ) -> Result<EnvironmentRecord, StoreError> {
        self.set_lock(
            project,
            env,
            Some(EnvLock {
                reason: reason.to_owned(),
                since: SystemTime::now(),
            }),
        )
    }

    /// Unlocks `env` (an unlocked one stays as it is).
    pub fn unlock_environment(
        &self,
        project: &ProjectName,
        env: &EnvName,
    ) -> Result<EnvironmentRecord, StoreError> {
        self.set_lock(project, env, None)
    }

    fn set_lock(
        &self,
        project: &ProjectName,
        env: &EnvName,
        lock: Option<EnvLock>,
    ) -> Result<EnvironmentRecord, StoreError> {
        let (project, env) = (project.as_str(), env.as_str());
        self.transact(|tx| {
            let key = env_key(project, env);
            let Some(mut record) = tx.get_json::<EnvironmentRecord>(T::Environments, &key)? else {
                return abort(StoreError::EnvironmentNotFound {
                    project: project.to_owned(),
                    env: env.to_owned(),
                });
            };
            record.lock = lock.clone();
            tx.put_json(T::Environments, &key, &record)?;
            Ok(record)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::error::StoreError as E;
    use crate::model::{EnvName, ProjectName, VersionName};
    use crate::store::{MetaStore, ReleaseReason, SiteOptions};

    fn pn(s: &str) -> ProjectName {
        ProjectName::new(s).expect("project")
    }
    fn en(s: &str) -> EnvName {
        EnvName::new(s).expect("env")
    }

    #[test]
    fn a_locked_environment_refuses_every_deploy_and_allows_a_rollback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(dir.path()).expect("open");
        store
            .create_project(&crate::store::tests::project("web"))
            .expect("create");
        for v in ["1", "2", "3"] {
            store
                .commit_version(
                    &crate::store::tests::version("web", v),
                    &[],
                    &SiteOptions::default(),
                )
                .expect("version");
        }
        let deploy = |v: &str, reason| {
            store.deploy(
                &pn("web"),
                &en("production"),
                &VersionName::new(v).expect("v"),
                "test",
                reason,
                false,
            )
        };
        assert!(matches!(
            store.lock_environment(&pn("web"), &en("production"), "freeze"),
            Err(E::EnvironmentNotFound { .. })
        ));
        deploy("1", ReleaseReason::Deploy).expect("deploy 1");
        deploy("2", ReleaseReason::Deploy).expect("deploy 2");
        let locked = store
            .lock_environment(&pn("web"), &en("production"), "freeze until Monday")
            .expect("lock");
        assert_eq!(locked.lock.expect("lock").reason, "freeze until Monday");
        for reason in [ReleaseReason::Deploy, ReleaseReason::Auto] {
            let err = deploy("3", reason).expect_err("locked");
            assert!(
                matches!(&err, E::EnvironmentLocked { reason, .. } if reason == "freeze until Monday"),
                "{err}"
            );
            assert!(err.to_string().contains("freeze until Monday"), "{err}");
        }
        // A rollback goes through, and the lock stays (also across a reopen).
        let target = store
            .rollback_target(&pn("web"), &en("production"), None)
            .expect("target");
        let rolled = store
            .rollback(&pn("web"), &en("production"), &target, "test")
            .expect("rollback");
        assert_eq!(rolled.current.version, "1");
        assert!(rolled.lock.is_some());
        drop(store);
        let store = MetaStore::open_waiting(dir.path(), std::time::Duration::from_secs(10))
            .expect("reopen");
        assert!(
            store
                .environment(&pn("web"), &en("production"))
                .expect("env")
                .lock
                .is_some()
        );
        store
            .unlock_environment(&pn("web"), &en("production"))
            .expect("unlock");
        store
            .deploy(
                &pn("web"),
                &en("production"),
                &VersionName::new("3").expect("v"),
                "test",
                ReleaseReason::Deploy,
                false,
            )
            .expect("deploys again");
    }
}
