//! What the gates of a deploy keep (opus.yml `checks:` and `verify:`): the `deploy.blocked`
//! event of a version whose checks failed, and each environment's verify policy, which the
//! project's latest stored build decides, so that a deploy by hand is verified as an automatic
//! one is. The rollback a failed verification makes is in `deploys::verify_rollback`.

use serde_json::json;

use super::deploys::env_key;
use super::{MetaStore, T, decode};
use crate::error::StoreError;
use crate::model::{EnvName, Event, EventKind, ProjectName};
use crate::recipe::checks::VerifyPolicy;

/// A check that kept a version from every environment, for the `deploy.blocked` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked<'a> {
    /// The build (`web#12`).
    pub build: &'a str,
    /// The version its checks failed.
    pub version: &'a str,
    /// The check that failed.
    pub check: &'a str,
    /// What failed, in one line.
    pub reason: &'a str,
    /// The end of the check's output.
    pub output: &'a str,
    /// Where each environment the build would have moved stays (`production stays on 1.0.3`).
    pub stays: &'a [String],
}

impl MetaStore {
    /// Appends the `deploy.blocked` event of `blocked` (the environments did not change, so the
    /// event is the whole change).
    pub fn record_deploy_blocked(
        &self,
        project: &ProjectName,
        blocked: &Blocked<'_>,
    ) -> Result<Event, StoreError> {
        let project = project.as_str();
        self.transact(|tx| {
            tx.append_event(
                EventKind::DeployBlocked,
                project,
                json!({
                    "project": project,
                    "build": blocked.build,
                    "version": blocked.version,
                    "check": blocked.check,
                    "reason": blocked.reason,
                    "output": blocked.output,
                    "stays": blocked.stays,
                }),
            )
        })
    }

    /// Keeps (or, with `None`, forgets) the verify policy of `env`: what the opus.yml of the
    /// latest stored build of the environment's branch asks for.
    pub fn set_verify_policy(
        &self,
        project: &ProjectName,
        env: &EnvName,
        policy: Option<&VerifyPolicy>,
    ) -> Result<(), StoreError> {
        let key = env_key(project.as_str(), env.as_str());
        self.transact(|tx| {
            match policy {
                Some(policy) => tx.put_json(T::VerifyPolicies, &key, policy)?,
                None => {
                    tx.tree(T::VerifyPolicies).remove(key.as_slice())?;
                }
            }
            Ok(())
        })
    }

    /// The verify policy of `env`, when the project's latest stored build asked for one.
    pub fn verify_policy(
        &self,
        project: &str,
        env: &str,
    ) -> Result<Option<VerifyPolicy>, StoreError> {
        let key = env_key(project, env);
        match self.tree(T::VerifyPolicies)?.get(&key)? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy(window: u64) -> VerifyPolicy {
        VerifyPolicy {
            checks: Vec::new(),
            window: Duration::from_secs(window),
            every: Duration::from_secs(1),
        }
    }

    #[test]
    fn policies_are_kept_per_environment_and_blocked_events_are_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(&dir.path().join("meta")).expect("open");
        let web = ProjectName::new("web").expect("name");
        let api = ProjectName::new("api").expect("name");
        let prod = EnvName::new("production").expect("name");
        let staging = EnvName::new("staging").expect("name");
        let set = |p: &ProjectName, e: &EnvName, v: Option<VerifyPolicy>| {
            store.set_verify_policy(p, e, v.as_ref()).expect("set");
        };
        set(&web, &prod, Some(policy(5)));
        set(&web, &staging, Some(policy(6)));
        set(&api, &prod, Some(policy(7)));
        set(&web, &staging, Some(policy(8)));
        set(&web, &prod, None);
        assert_eq!(
            store.verify_policy("web", "production").expect("read"),
            None
        );
        assert_eq!(
            store.verify_policy("web", "staging").expect("read"),
            Some(policy(8))
        );
        assert_eq!(
            store.verify_policy("api", "production").expect("read"),
            Some(policy(7))
        );
        let event = store
            .record_deploy_blocked(
                &web,
                &Blocked {
                    build: "web#2",
                    version: "2.0.0",
                    check: "smoke",
                    reason: "status 500, expected 200",
                    output: "HTTP 500",
                    stays: &["production stays on 1.0.3".to_owned()],
                },
            )
            .expect("event");
        assert_eq!(event.kind, EventKind::DeployBlocked);
        assert_eq!(event.payload["check"], "smoke");
        assert_eq!(store.last_event_seq(), event.seq);
    }
}
