//! `opus.v1.ApprovalService`: approve or reject a build awaiting approval (see
//! [`crate::approval`]).

use opus_core::model::ProjectName;
use opus_core::proto::{self, approval_service_server::ApprovalService};
use opus_core::store::MetaStore;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::deploys::release;
use super::status;
use crate::approval::{ApprovalError, Approvals, actor};
use crate::deploys::Deployer;

/// Implements `ApprovalService` over [`Approvals`].
pub(crate) struct ApprovalsApi {
    /// Builds, by project and number.
    store: MetaStore,
    /// Where environments are served (for the URLs answered).
    deployer: Deployer,
    /// The decisions.
    approvals: Approvals,
}

impl ApprovalsApi {
    pub(crate) fn new(store: MetaStore, deployer: Deployer, approvals: Approvals) -> Self {
        ApprovalsApi {
            store,
            deployer,
            approvals,
        }
    }

    fn build(&self, project: &str, number: u64) -> Result<opus_core::model::Build, Status> {
        let project = ProjectName::new(project).map_err(status)?;
        self.store.build_by_number(&project, number).map_err(status)
    }
}

/// An approval's failure as a gRPC status: the store's code, or the failed deploy's code with
/// the whole message (which says the build still awaits approval).
fn approval_status(e: ApprovalError) -> Status {
    let message = e.to_string();
    match e {
        ApprovalError::Store(e) => status(e),
        ApprovalError::Deploy { source, .. } => Status::new(status(source).code(), message),
    }
}

#[tonic::async_trait]
impl ApprovalService for ApprovalsApi {
    #[instrument(skip_all, fields(project = %req.get_ref().project, number = req.get_ref().number))]
    async fn approve_build(
        &self,
        req: Request<proto::ApproveBuildRequest>,
    ) -> Result<Response<proto::ApprovalResponse>, Status> {
        let r = req.into_inner();
        let build = self.build(&r.project, r.number)?;
        let approved = self
            .approvals
            .approve(&build, &actor("api", &r.approver))
            .await
            .map_err(approval_status)?;
        Ok(Response::new(proto::ApprovalResponse {
            build: Some(proto::Build::from(&approved.build)),
            releases: approved
                .environments
                .iter()
                .map(|e| release(&e.current))
                .collect(),
            urls: approved
                .environments
                .iter()
                .map(|e| self.deployer.sites().url(&e.project, &e.name))
                .collect(),
        }))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, number = req.get_ref().number))]
    async fn reject_build(
        &self,
        req: Request<proto::RejectBuildRequest>,
    ) -> Result<Response<proto::ApprovalResponse>, Status> {
        let r = req.into_inner();
        let build = self.build(&r.project, r.number)?;
        let rejected = self
            .approvals
            .reject(&build, &actor("api", &r.approver), r.reason.trim())
            .await
            .map_err(approval_status)?;
        Ok(Response::new(proto::ApprovalResponse {
            build: Some(proto::Build::from(&rejected)),
            releases: Vec::new(),
            urls: Vec::new(),
        }))
    }
}
