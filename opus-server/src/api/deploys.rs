//! `opus.v1.DeployService`: deploy, rollback, release history, environments.

use opus_core::model::{EnvName, ProjectName, VersionName};
use opus_core::proto::{self, deploy_service_server::DeployService};
use opus_core::store::{EnvironmentRecord, Release, ReleaseReason};
use opus_core::wire::timestamp;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::status;
use crate::deploys::Deployer;
use opus_core::store::MetaStore;

/// Implements `DeployService` over the [`crate::deploys::Deployer`].
pub(crate) struct DeploysApi {
    /// Projects and environments as recorded.
    store: MetaStore,
    /// Deploys and rollbacks: the store and the site table together.
    deployer: Deployer,
}

impl DeploysApi {
    pub(crate) fn new(store: MetaStore, deployer: Deployer) -> Self {
        DeploysApi { store, deployer }
    }

    fn environment(&self, e: &EnvironmentRecord) -> proto::Environment {
        proto::Environment {
            project: e.project.clone(),
            name: e.name.clone(),
            current: Some(release(&e.current)),
            pinned: e.pinned,
            preview: e.preview,
            url: self.deployer.sites().url(&e.project, &e.name),
            lock_reason: lock_reason(e),
            kept: e.expiry.kept,
            expires_at: e.expires_at().map(prost_types::Timestamp::from),
        }
    }

    fn response(&self, e: &EnvironmentRecord) -> proto::DeployResponse {
        proto::DeployResponse {
            release: Some(release(&e.current)),
            url: self.deployer.sites().url(&e.project, &e.name),
            pinned: e.pinned,
            lock_reason: lock_reason(e),
        }
    }
}

/// The reason of an environment's lock, empty when it has none.
fn lock_reason(e: &EnvironmentRecord) -> String {
    e.lock
        .as_ref()
        .map(|l| l.reason.clone())
        .unwrap_or_default()
}

/// A release on the wire.
pub(super) fn release(r: &Release) -> proto::Release {
    proto::Release {
        seq: r.seq,
        project: r.project.clone(),
        env: r.env.clone(),
        version: r.version.clone(),
        time: Some(timestamp(r.time)),
        actor: r.actor.clone(),
        reason: match r.reason {
            ReleaseReason::Deploy => proto::ReleaseReason::Deploy,
            ReleaseReason::Rollback => proto::ReleaseReason::Rollback,
            ReleaseReason::Auto => proto::ReleaseReason::Auto,
        } as i32,
    }
}

/// Validates a project name.
fn project(name: &str) -> Result<ProjectName, Status> {
    ProjectName::new(name).map_err(status)
}

/// Validates an environment name; empty means production.
fn env(name: &str) -> Result<EnvName, Status> {
    if name.is_empty() {
        return Ok(EnvName::production());
    }
    EnvName::new(name).map_err(status)
}

#[tonic::async_trait]
impl DeployService for DeploysApi {
    #[instrument(skip_all, fields(project = %req.get_ref().project, version = %req.get_ref().version, env = %req.get_ref().env))]
    async fn deploy(
        &self,
        req: Request<proto::DeployRequest>,
    ) -> Result<Response<proto::DeployResponse>, Status> {
        let r = req.into_inner();
        let project = project(&r.project)?;
        let env = env(&r.env)?;
        EnvName::for_new(env.as_str()).map_err(status)?;
        let version = VersionName::new(r.version).map_err(status)?;
        self.store.get_project(&project).map_err(status)?;
        let record = self
            .deployer
            .deploy(
                &project,
                &env,
                &version,
                "api",
                ReleaseReason::Deploy,
                false,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(self.response(&record)))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, env = %req.get_ref().env, to = %req.get_ref().to))]
    async fn rollback(
        &self,
        req: Request<proto::RollbackRequest>,
    ) -> Result<Response<proto::DeployResponse>, Status> {
        let r = req.into_inner();
        let project = project(&r.project)?;
        let env = env(&r.env)?;
        let to = if r.to.is_empty() {
            None
        } else {
            Some(VersionName::new(r.to).map_err(status)?)
        };
        let record = self
            .deployer
            .rollback(&project, &env, to.as_ref(), "api")
            .await
            .map_err(status)?;
        Ok(Response::new(self.response(&record)))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, env = %req.get_ref().env))]
    async fn list_releases(
        &self,
        req: Request<proto::ListReleasesRequest>,
    ) -> Result<Response<proto::ListReleasesResponse>, Status> {
        let r = req.into_inner();
        let project = project(&r.project)?;
        self.store.get_project(&project).map_err(status)?;
        let env = if r.env.is_empty() {
            None
        } else {
            Some(env(&r.env)?)
        };
        let releases = self
            .store
            .releases(&project, env.as_ref(), r.limit as usize)
            .map_err(status)?;
        Ok(Response::new(proto::ListReleasesResponse {
            releases: releases.iter().map(release).collect(),
        }))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, env = %req.get_ref().env))]
    async fn get_environment(
        &self,
        req: Request<proto::GetEnvironmentRequest>,
    ) -> Result<Response<proto::Environment>, Status> {
        let r = req.into_inner();
        let (project, env) = (project(&r.project)?, env(&r.env)?);
        let record = self.store.environment(&project, &env).map_err(status)?;
        Ok(Response::new(self.environment(&record)))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project))]
    async fn list_environments(
        &self,
        req: Request<proto::ListEnvironmentsRequest>,
    ) -> Result<Response<proto::ListEnvironmentsResponse>, Status> {
        let project = project(&req.into_inner().project)?;
        self.store.get_project(&project).map_err(status)?;
        let envs = self.store.environments(&project).map_err(status)?;
        Ok(Response::new(proto::ListEnvironmentsResponse {
            environments: envs.iter().map(|e| self.environment(e)).collect(),
        }))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, env = %req.get_ref().env))]
    async fn remove_environment(
        &self,
        req: Request<proto::RemoveEnvironmentRequest>,
    ) -> Result<Response<proto::RemoveEnvironmentResponse>, Status> {
        let r = req.into_inner();
        let (project, env) = (project(&r.project)?, env(&r.env)?);
        self.deployer
            .remove_environment(&project, &env)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::RemoveEnvironmentResponse {}))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, env = %req.get_ref().env))]
    async fn unpin_environment(
        &self,
        req: Request<proto::UnpinEnvironmentRequest>,
    ) -> Result<Response<proto::Environment>, Status> {
        let r = req.into_inner();
        let (project, env) = (project(&r.project)?, env(&r.env)?);
        let record = self
            .deployer
            .unpin_environment(&project, &env)
            .await
            .map_err(status)?;
        Ok(Response::new(self.environment(&record)))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, env = %req.get_ref().env))]
    async fn lock_environment(
        &self,
        req: Request<proto::LockEnvironmentRequest>,
    ) -> Result<Response<proto::Environment>, Status> {
        let r = req.into_inner();
        let (project, env) = (project(&r.project)?, env(&r.env)?);
        let reason = r.reason.trim();
        if reason.is_empty() {
            return Err(Status::invalid_argument(
                "a lock needs a reason, which every refused deploy says (--reason \"freeze until Monday\")",
            ));
        }
        let record = self
            .deployer
            .lock_environment(&project, &env, reason)
            .await
            .map_err(status)?;
        Ok(Response::new(self.environment(&record)))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, env = %req.get_ref().env))]
    async fn unlock_environment(
        &self,
        req: Request<proto::UnlockEnvironmentRequest>,
    ) -> Result<Response<proto::Environment>, Status> {
        let r = req.into_inner();
        let (project, env) = (project(&r.project)?, env(&r.env)?);
        let record = self
            .deployer
            .unlock_environment(&project, &env)
            .await
            .map_err(status)?;
        Ok(Response::new(self.environment(&record)))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, env = %req.get_ref().env, kept = req.get_ref().kept))]
    async fn keep_environment(
        &self,
        req: Request<proto::KeepEnvironmentRequest>,
    ) -> Result<Response<proto::Environment>, Status> {
        let r = req.into_inner();
        let (project, env) = (project(&r.project)?, env(&r.env)?);
        let record = self
            .deployer
            .keep_environment(&project, &env, r.kept)
            .await
            .map_err(status)?;
        Ok(Response::new(self.environment(&record)))
    }
}
