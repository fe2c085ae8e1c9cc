//! `opus.v1.SiteAccessService`: basic auth in front of an environment or a project's previews.
//! The password is hashed here (argon2id, on the blocking pool) and only the hash goes further.

use opus_core::model::{EnvName, ProjectName};
use opus_core::proto::{self, site_access_service_server::SiteAccessService};
use opus_core::store::ProtectionTarget;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::status;
use crate::deploys::Deployer;
use crate::sites::{Credential, ProtectError, hash_password};

/// Implements `SiteAccessService` over the [`Deployer`], which stores and applies protections.
pub(crate) struct SiteAccessApi {
    deployer: Deployer,
}

impl SiteAccessApi {
    pub(crate) fn new(deployer: Deployer) -> Self {
        SiteAccessApi { deployer }
    }
}

/// What a request protects: one environment (production when empty) or all previews.
fn target(env: &str, previews: bool) -> Result<ProtectionTarget, Status> {
    match (previews, env.is_empty()) {
        (true, true) => Ok(ProtectionTarget::Previews),
        (true, false) => Err(Status::invalid_argument(
            "give an environment or --previews, not both",
        )),
        (false, true) => Ok(ProtectionTarget::Env(EnvName::production())),
        (false, false) => EnvName::new(env).map(ProtectionTarget::Env).map_err(status),
    }
}

fn protect_status(e: ProtectError) -> Status {
    match e {
        ProtectError::EmptyPassword => {
            Status::invalid_argument("the password is empty (the password file holds nothing)")
        }
        e => {
            tracing::error!(error = %e, "cannot hash a site password");
            Status::internal(e.to_string())
        }
    }
}

#[tonic::async_trait]
impl SiteAccessService for SiteAccessApi {
    #[instrument(skip_all, fields(project = %req.get_ref().project, env = %req.get_ref().env, previews = req.get_ref().previews))]
    async fn protect(
        &self,
        req: Request<proto::ProtectRequest>,
    ) -> Result<Response<proto::ProtectResponse>, Status> {
        let r = req.into_inner();
        let project = ProjectName::new(r.project.as_str()).map_err(status)?;
        let target = target(&r.env, r.previews)?;
        let password = r.password;
        let phc = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(protect_status)?;
        let credential = Credential::new(&phc).map_err(protect_status)?;
        self.deployer
            .protect(&project, &target, credential)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ProtectResponse {}))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, env = %req.get_ref().env, previews = req.get_ref().previews))]
    async fn unprotect(
        &self,
        req: Request<proto::UnprotectRequest>,
    ) -> Result<Response<proto::UnprotectResponse>, Status> {
        let r = req.into_inner();
        let project = ProjectName::new(r.project.as_str()).map_err(status)?;
        let target = target(&r.env, r.previews)?;
        let removed = self
            .deployer
            .unprotect(&project, &target)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::UnprotectResponse { removed }))
    }
}
