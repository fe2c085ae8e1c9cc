//! Approvals: `environments.<env>.approval: true` in opus.yml.
//!
//! A green build's automatic deploy to such an environment does not happen at once: the build's
//! run ends in `awaiting approval` (`promotion::after_stored` returns the environments, and
//! `build::run` records them with `MetaStore::await_approval`), holding no slot. Its record and
//! its approval record survive a restart. [`Approvals::approve`] then deploys the stored version
//! there (the releases record who approved) and ends the build succeeded; [`Approvals::reject`]
//! ends it failed and no environment moves. Both append to the build's log.
//!
//! The gate order after a version is stored: checks, then approval, then deploy.

use std::collections::BTreeMap;
use std::sync::Arc;

use opus_core::CoreError;
use opus_core::error::StoreError;
use opus_core::model::{Build, EnvName};
use opus_core::recipe::EnvironmentSpec;
use opus_core::store::{ApprovalDecision, EnvironmentRecord, MetaStore, ReleaseReason};
use tracing::{info, instrument};

use crate::deploys::Deployer;
use crate::logs::LogHub;
use crate::promotion::DeployTarget;

/// Whether an automatic deploy to `target` waits for approval: an environment of opus.yml with
/// `approval: true` (previews never wait).
pub fn awaits_approval(
    environments: &BTreeMap<String, EnvironmentSpec>,
    target: &DeployTarget,
) -> bool {
    !target.preview
        && environments
            .get(&target.env)
            .is_some_and(|spec| spec.approval)
}

/// The build's reason (and last log line) while it awaits approval of `environments`.
pub fn waiting_reason(build: &Build, environments: &[EnvName]) -> String {
    let names: Vec<&str> = environments.iter().map(EnvName::as_str).collect();
    format!(
        "awaiting approval for {}: opus approve {}#{}",
        names.join(", "),
        build.project,
        build.number
    )
}

/// Why an approval or rejection did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The build or its record (a build that is not awaiting approval among them).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The deploy to `env` failed (a locked environment, a version that cannot be served): the
    /// build still awaits approval for `env` and the environments after it.
    #[error("cannot deploy {build} to {env}: {source}; the build still awaits approval for {env}")]
    Deploy {
        /// The build (`web#12`).
        build: String,
        /// The environment.
        env: EnvName,
        /// Why.
        #[source]
        source: CoreError,
    },
}

/// What an approval did.
#[derive(Debug)]
pub struct Approved {
    /// The build, succeeded.
    pub build: Build,
    /// The environments it deployed to, as they are now.
    pub environments: Vec<EnvironmentRecord>,
}

/// Approves and rejects builds awaiting approval.
#[derive(Clone)]
pub struct Approvals {
    /// Builds and their approval records.
    store: MetaStore,
    /// The deploys an approval makes.
    deployer: Deployer,
    /// Build logs, where the decision is appended.
    logs: LogHub,
    /// Held across one decision, so two approvals of one build never both deploy.
    deciding: Arc<tokio::sync::Mutex<()>>,
}

/// The actor a decision records: who says they decide, through which door (`api`).
pub fn actor(door: &str, approver: &str) -> String {
    match approver.trim() {
        "" => door.to_owned(),
        name => format!("{name} ({door})"),
    }
}

impl Approvals {
    /// Approvals over the daemon's store, deployer and logs.
    pub fn new(store: MetaStore, deployer: Deployer, logs: LogHub) -> Approvals {
        Approvals {
            store,
            deployer,
            logs,
            deciding: Arc::default(),
        }
    }

    /// Deploys `build`'s version to every environment it awaits (releases by `actor`, reason
    /// deploy) and ends it succeeded.
    #[instrument(skip_all, fields(project = %build.project, number = build.number, actor))]
    pub async fn approve(&self, build: &Build, actor: &str) -> Result<Approved, ApprovalError> {
        let _deciding = self.deciding.lock().await;
        let Some(pending) = self.store.pending_approval(build.id)? else {
            let build = self.store.get_build(build.id)?;
            return Err(ApprovalError::Store(not_awaiting(&build)));
        };
        let name = format!("{}#{}", build.project, build.number);
        let mut deployed = Vec::new();
        for (i, env) in pending.environments.iter().enumerate() {
            let result = self
                .deployer
                .deploy(
                    &pending.project,
                    env,
                    &pending.version,
                    actor,
                    ReleaseReason::Deploy,
                    false,
                )
                .await;
            match result {
                Ok(record) => {
                    self.log(
                        build,
                        &format!(
                            "approved by {actor}: {} is live in {env} ({}), release #{}",
                            pending.version,
                            self.deployer
                                .sites()
                                .url(build.project.as_str(), env.as_str()),
                            record.current.seq
                        ),
                    );
                    deployed.push(record);
                }
                Err(source) => {
                    self.store
                        .keep_awaiting(build.id, &pending.environments[i..])?;
                    self.log(
                        build,
                        &format!("approved by {actor}, but deploying to {env} failed: {source}"),
                    );
                    return Err(ApprovalError::Deploy {
                        build: name,
                        env: env.clone(),
                        source,
                    });
                }
            }
        }
        let decision = ApprovalDecision::Approved {
            by: actor.to_owned(),
        };
        let build = self
            .store
            .decide_approval(build.id, &decision, &pending.environments)?;
        self.log(&build, "build succeeded");
        info!("approved");
        Ok(Approved {
            build,
            environments: deployed,
        })
    }

    /// Ends `build` failed, rejected by `actor` for `reason`; no environment moves.
    #[instrument(skip_all, fields(project = %build.project, number = build.number, actor))]
    pub async fn reject(
        &self,
        build: &Build,
        actor: &str,
        reason: &str,
    ) -> Result<Build, ApprovalError> {
        let _deciding = self.deciding.lock().await;
        let environments = self
            .store
            .pending_approval(build.id)?
            .map(|p| p.environments)
            .unwrap_or_default();
        let decision = ApprovalDecision::Rejected {
            by: actor.to_owned(),
            reason: reason.to_owned(),
        };
        let build = self
            .store
            .decide_approval(build.id, &decision, &environments)?;
        let stays: Vec<String> = environments
            .iter()
            .map(|env| match self.store.environment(&build.project, env) {
                Ok(e) => format!("{env} stays on {}", e.current.version),
                Err(_) => format!("{env} stays empty"),
            })
            .collect();
        self.log(
            &build,
            &format!("build failed: {} ({})", build.reason, stays.join(", ")),
        );
        info!("rejected");
        Ok(build)
    }

    /// Appends an `approval` line to the build's log.
    fn log(&self, build: &Build, text: &str) {
        let masks = self
            .store
            .secrets(&build.project)
            .map(|s| s.into_iter().map(|(_, v)| v).collect())
            .unwrap_or_default();
        match self.logs.open(build.id, masks) {
            Ok(log) => {
                log.opus("approval", text);
                log.finish();
                self.logs.close(build.id);
            }
            Err(e) => {
                tracing::warn!(build = build.id, error = %e, "cannot append to the build log")
            }
        }
    }
}

/// The error for a build that has no approval record: not awaiting approval.
fn not_awaiting(build: &Build) -> StoreError {
    StoreError::NotAwaitingApproval {
        build: format!("{}#{}", build.project, build.number),
        state: build.state.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(yaml: &str) -> BTreeMap<String, EnvironmentSpec> {
        opus_core::recipe::parse(yaml)
            .expect("a valid opus.yml")
            .environments
    }

    #[test]
    fn only_environments_asking_for_approval_wait() {
        let envs = specs(
            "build:\n  steps: [\"true\"]\nenvironments:\n  production: { branch: main, auto_deploy: true, approval: true }\n  staging: { branch: main, auto_deploy: true }\n",
        );
        let target = |env: &str, preview| DeployTarget {
            env: env.into(),
            preview,
        };
        assert!(awaits_approval(&envs, &target("production", false)));
        assert!(!awaits_approval(&envs, &target("staging", false)));
        assert!(!awaits_approval(&envs, &target("production", true)));
        assert!(!awaits_approval(&envs, &target("feature-x", true)));
    }

    #[test]
    fn the_actor_names_the_approver_and_the_door() {
        assert_eq!(actor("api", "ann"), "ann (api)");
        assert_eq!(actor("api", "  "), "api");
    }
}
