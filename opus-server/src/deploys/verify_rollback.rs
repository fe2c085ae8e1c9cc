//! The rollback a failed `verify:` check makes (see `crate::verify`): as [`Deployer::rollback`]
//! makes it (to the release before, pinned, under the site writer lock), but committed only
//! while the environment is still on the release that was verified, and with the
//! `deploy.rolled_back` event in its transaction.

use opus_core::CoreError;
use opus_core::model::{EnvName, ProjectName};
use opus_core::store::{EnvironmentRecord, VerifyFailure};
use tracing::instrument;

use super::Deployer;
use crate::sites::SiteKey;

impl Deployer {
    /// Rolls `env` back after `failure`, pins it, and serves the version it goes back to; `None`
    /// when the environment has moved on from the verified release meanwhile (nothing changes).
    #[instrument(skip(self, failure), fields(check = %failure.check), err(Display))]
    pub async fn rollback_after_verify(
        &self,
        project: &ProjectName,
        env: &EnvName,
        actor: &str,
        failure: &VerifyFailure,
    ) -> Result<Option<EnvironmentRecord>, CoreError> {
        let guard = self.sites.lock().await;
        let target = self.store.rollback_target(project, env, None)?;
        let site = self.load_version(project, &target.version).await?;
        let Some(record) = self
            .store
            .rollback_after_verify(project, env, &target, actor, failure)?
        else {
            return Ok(None);
        };
        self.sites.apply(
            &guard,
            vec![(SiteKey::new(project.as_str(), env.as_str()), Some(site))],
        );
        drop(guard);
        self.flush().await?;
        self.metrics.deploys.with_label_values(&["rollback"]).inc();
        Ok(Some(record))
    }
}
