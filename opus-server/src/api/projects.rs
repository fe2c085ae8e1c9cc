//! `opus.v1.ProjectService`: the project registry and secrets.

use std::time::SystemTime;

use opus_core::model::{Project, ProjectName, Source, validate_branch, validate_secret_name};
use opus_core::proto::{self, project_service_server::ProjectService};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::status;
use crate::AppState;

/// Implements the project RPCs over the metadata store.
pub(crate) struct ProjectsApi {
    state: AppState,
}

impl ProjectsApi {
    pub(crate) fn new(state: AppState) -> Self {
        ProjectsApi { state }
    }

    /// A project as the API shows it: with its last build and secret names.
    fn describe(&self, project: &Project) -> Result<proto::Project, Status> {
        let mut out = proto::Project::from(project);
        let store = &self.state.store;
        out.last_build = store
            .last_build(project.name.as_str())
            .map_err(status)?
            .as_ref()
            .map(Into::into);
        out.secret_names = store.secret_names(project.name.as_str()).map_err(status)?;
        Ok(out)
    }
}

fn unimplemented_yet(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not implemented by this opusd yet"))
}

#[tonic::async_trait]
impl ProjectService for ProjectsApi {
    #[instrument(skip_all, fields(project = %req.get_ref().name))]
    async fn create_project(
        &self,
        req: Request<proto::CreateProjectRequest>,
    ) -> Result<Response<proto::Project>, Status> {
        let req = req.into_inner();
        let name = ProjectName::new(req.name).map_err(status)?;
        let source = Source::parse(&req.source).map_err(status)?;
        let branch = if req.branch.is_empty() {
            "main".to_owned()
        } else {
            req.branch
        };
        validate_branch(&branch).map_err(status)?;
        let project = Project {
            name,
            source,
            branch,
            created_at: SystemTime::now(),
            keep_versions: 0,
        };
        self.state.store.create_project(&project).map_err(status)?;
        tracing::info!(source = %project.source.display(), "project added");
        Ok(Response::new(self.describe(&project)?))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().name))]
    async fn get_project(
        &self,
        req: Request<proto::GetProjectRequest>,
    ) -> Result<Response<proto::Project>, Status> {
        let project = self
            .state
            .store
            .get_project(&req.get_ref().name)
            .map_err(status)?;
        Ok(Response::new(self.describe(&project)?))
    }

    #[instrument(skip_all)]
    async fn list_projects(
        &self,
        req: Request<proto::ListProjectsRequest>,
    ) -> Result<Response<proto::ListProjectsResponse>, Status> {
        let store = &self.state.store;
        let projects = store.list_projects(&req.get_ref().filter).map_err(status)?;
        let mut out = Vec::with_capacity(projects.len());
        for p in &projects {
            let mut wire = proto::Project::from(p);
            wire.last_build = store
                .last_build(p.name.as_str())
                .map_err(status)?
                .as_ref()
                .map(Into::into);
            out.push(wire);
        }
        Ok(Response::new(proto::ListProjectsResponse { projects: out }))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().name))]
    async fn delete_project(
        &self,
        req: Request<proto::DeleteProjectRequest>,
    ) -> Result<Response<proto::DeleteProjectResponse>, Status> {
        let name = ProjectName::new(req.into_inner().name).map_err(status)?;
        self.state
            .deployer
            .remove_project(&name)
            .await
            .map_err(status)?;
        tracing::info!("project removed");
        Ok(Response::new(proto::DeleteProjectResponse {}))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().name))]
    async fn update_project(
        &self,
        req: Request<proto::UpdateProjectRequest>,
    ) -> Result<Response<proto::Project>, Status> {
        let req = req.into_inner();
        if let Some(b) = &req.branch {
            validate_branch(b).map_err(status)?;
        }
        let project = self
            .state
            .store
            .update_project(&req.name, |p| {
                if let Some(b) = &req.branch {
                    p.branch = b.clone();
                }
                if let Some(k) = req.keep_versions {
                    p.keep_versions = k;
                }
            })
            .map_err(status)?;
        Ok(Response::new(self.describe(&project)?))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, secret = %req.get_ref().name))]
    async fn set_secret(
        &self,
        req: Request<proto::SetSecretRequest>,
    ) -> Result<Response<proto::SetSecretResponse>, Status> {
        let req = req.into_inner();
        validate_secret_name(&req.name).map_err(status)?;
        self.state
            .store
            .set_secret(&req.project, &req.name, &req.value)
            .map_err(status)?;
        Ok(Response::new(proto::SetSecretResponse {}))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, secret = %req.get_ref().name))]
    async fn unset_secret(
        &self,
        req: Request<proto::UnsetSecretRequest>,
    ) -> Result<Response<proto::UnsetSecretResponse>, Status> {
        let req = req.into_inner();
        self.state
            .store
            .unset_secret(&req.project, &req.name)
            .map_err(status)?;
        Ok(Response::new(proto::UnsetSecretResponse {}))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project))]
    async fn list_secrets(
        &self,
        req: Request<proto::ListSecretsRequest>,
    ) -> Result<Response<proto::ListSecretsResponse>, Status> {
        let names = self
            .state
            .store
            .secret_names(&req.get_ref().project)
            .map_err(status)?;
        Ok(Response::new(proto::ListSecretsResponse { names }))
    }

    async fn get_github_hook(
        &self,
        _req: Request<proto::GetGithubHookRequest>,
    ) -> Result<Response<proto::GithubHook>, Status> {
        Err(unimplemented_yet("GitHub webhooks"))
    }

    async fn get_trigger_token(
        &self,
        _req: Request<proto::GetTriggerTokenRequest>,
    ) -> Result<Response<proto::TriggerToken>, Status> {
        Err(unimplemented_yet("trigger tokens"))
    }

    async fn add_hook(
        &self,
        _req: Request<proto::AddHookRequest>,
    ) -> Result<Response<proto::Hook>, Status> {
        Err(unimplemented_yet("outgoing hooks"))
    }

    async fn list_hooks(
        &self,
        _req: Request<proto::ListHooksRequest>,
    ) -> Result<Response<proto::ListHooksResponse>, Status> {
        Err(unimplemented_yet("outgoing hooks"))
    }

    async fn remove_hook(
        &self,
        _req: Request<proto::RemoveHookRequest>,
    ) -> Result<Response<proto::RemoveHookResponse>, Status> {
        Err(unimplemented_yet("outgoing hooks"))
    }

    async fn test_hook(
        &self,
        _req: Request<proto::TestHookRequest>,
    ) -> Result<Response<proto::Delivery>, Status> {
        Err(unimplemented_yet("outgoing hooks"))
    }

    async fn list_deliveries(
        &self,
        _req: Request<proto::ListDeliveriesRequest>,
    ) -> Result<Response<proto::ListDeliveriesResponse>, Status> {
        Err(unimplemented_yet("outgoing hooks"))
    }
}
