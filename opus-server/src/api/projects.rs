//! `opus.v1.ProjectService`: the project registry, secrets, webhook keys and outgoing hooks.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use opus_core::hook::{Hook, validate_event_pattern, validate_hook_url};
use opus_core::model::{
    Project, ProjectName, Source, validate_branch, validate_secret_name, validate_secret_value,
};
use opus_core::proto::{self, project_service_server::ProjectService};
use opus_core::store::{KeyKind, NameFilter};
use opus_core::wire;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::status;
use crate::deploys::Deployer;
use crate::hooks;
use crate::scheduler::Scheduler;
use opus_core::store::MetaStore;

/// How long `opus remove` waits for the project's cancelled builds to end before it removes the
/// project anyway (a cancelled step is killed at once; a Job is deleted in a poll or two).
const REMOVE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Implements the project RPCs over the metadata store.
pub(crate) struct ProjectsApi {
    /// The project registry, secrets, webhook keys and hooks.
    store: MetaStore,
    /// Removes a project's environments and versions with the project.
    deployer: Deployer,
    /// Cancels a removed project's builds first.
    scheduler: Scheduler,
    /// The HTTP client `TestHook` posts with (the deliverer's).
    hook_transport: hooks::HttpTransport,
    /// How hook messages link to deployed sites.
    site_links: hooks::SiteLinks,
    /// The whole project list as `ListProjects` last read it, with the store's change count at
    /// that read: while nothing changed, `opus list` costs a copy, not 20,000 records.
    list_cache: Mutex<Option<(u64, Arc<Vec<proto::Project>>)>>,
    /// How the world reaches the API port (`--public-url`): the webhook URLs given out.
    public_url: Option<crate::config::PublicUrl>,
}

impl ProjectsApi {
    pub(crate) fn new(
        store: MetaStore,
        deployer: Deployer,
        scheduler: Scheduler,
        hook_transport: hooks::HttpTransport,
        site_links: hooks::SiteLinks,
    ) -> Self {
        ProjectsApi {
            store,
            deployer,
            scheduler,
            hook_transport,
            site_links,
            list_cache: Mutex::new(None),
            public_url: None,
        }
    }

    /// Gives out webhook URLs under `public_url` (`--public-url`).
    pub(crate) fn with_public_url(self, public_url: Option<crate::config::PublicUrl>) -> Self {
        ProjectsApi { public_url, ..self }
    }

    /// The whole URL of `path` under `--public-url`; empty without one (the client joins the
    /// path with its own server address).
    fn public(&self, path: &str) -> String {
        self.public_url
            .as_ref()
            .map(|u| u.join(path))
            .unwrap_or_default()
    }

    /// Every project with its last build, from the cache when the store has not changed since.
    async fn all_projects(&self) -> Result<Arc<Vec<proto::Project>>, Status> {
        let store = self.store.clone();
        let changes = store.change_count();
        if let Some((at, list)) = self.cached_list()
            && at == changes
        {
            return Ok(list);
        }
        let list = tokio::task::spawn_blocking(move || {
            store.map_projects_with_last_build(|project, last| {
                let mut wire = proto::Project::from(&project);
                wire.last_build = last.as_ref().map(Into::into);
                wire
            })
        })
        .await
        .map_err(|e| Status::internal(format!("listing projects: {e}")))?
        .map_err(status)?;
        let list = Arc::new(list);
        if let Ok(mut cache) = self.list_cache.lock() {
            *cache = Some((changes, list.clone()));
        }
        Ok(list)
    }

    fn cached_list(&self) -> Option<(u64, Arc<Vec<proto::Project>>)> {
        self.list_cache.lock().ok().and_then(|c| c.clone())
    }

    /// A project as the API shows it: with its last build and secret names.
    fn describe(&self, project: &Project) -> Result<proto::Project, Status> {
        let mut out = proto::Project::from(project);
        let store = &self.store;
        out.last_build = store
            .last_build(&project.name)
            .map_err(status)?
            .as_ref()
            .map(Into::into);
        out.secret_names = store.secret_names(&project.name).map_err(status)?;
        Ok(out)
    }
}

#[tonic::async_trait]
impl ProjectService for ProjectsApi {
    #[instrument(skip_all, fields(project = %req.get_ref().name))]
    async fn create_project(
        &self,
        req: Request<proto::CreateProjectRequest>,
    ) -> Result<Response<proto::Project>, Status> {
        let req = req.into_inner();
        let name = ProjectName::for_new(req.name).map_err(status)?;
        // opusd decides what a local folder is (a git repository or a plain folder): it is opusd
        // that reads it at build time, as its own user, from its own view of the filesystem.
        let source = Source::parse(&req.source).map_err(status)?;
        let branch = match (req.branch.is_empty(), source.local_repository()) {
            (false, _) => req.branch,
            // A repository on this machine builds the branch it has checked out.
            (true, Some(repo)) => crate::source::current_branch(repo)
                .await
                .unwrap_or_else(|| "main".to_owned()),
            (true, None) => "main".to_owned(),
        };
        validate_branch(&branch).map_err(status)?;
        let project = Project {
            name,
            source,
            branch,
            created_at: SystemTime::now(),
            keep_versions: 0,
        };
        self.store.create_project(&project).map_err(status)?;
        tracing::info!(source = %project.source.display(), "project added");
        Ok(Response::new(self.describe(&project)?))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().name))]
    async fn get_project(
        &self,
        req: Request<proto::GetProjectRequest>,
    ) -> Result<Response<proto::Project>, Status> {
        let name = ProjectName::new(req.get_ref().name.as_str()).map_err(status)?;
        let project = self.store.get_project(&name).map_err(status)?;
        Ok(Response::new(self.describe(&project)?))
    }

    #[instrument(skip_all)]
    async fn list_projects(
        &self,
        req: Request<proto::ListProjectsRequest>,
    ) -> Result<Response<proto::ListProjectsResponse>, Status> {
        let filter = NameFilter::parse(&req.get_ref().filter)
            .map_err(|e| status(opus_core::CoreError::from(e)))?;
        let brief = req.get_ref().brief;
        let all = self.all_projects().await?;
        let out: Vec<proto::Project> = all
            .iter()
            .filter(|p| filter.matches(&p.name))
            .map(|p| if brief { brief_project(p) } else { p.clone() })
            .collect();
        Ok(Response::new(proto::ListProjectsResponse { projects: out }))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().name))]
    async fn delete_project(
        &self,
        req: Request<proto::DeleteProjectRequest>,
    ) -> Result<Response<proto::DeleteProjectResponse>, Status> {
        let name = ProjectName::new(req.into_inner().name).map_err(status)?;
        // Its builds first: a build must not store a version of a project that is gone.
        let left = self
            .scheduler
            .cancel_project(&name, REMOVE_WAIT)
            .await
            .map_err(status)?;
        if !left.is_empty() {
            tracing::warn!(builds = ?left, "removing the project while cancelled builds are still ending");
        }
        // Refuses an unknown name before touching any folder.
        self.store.get_project(&name).map_err(status)?;
        // The folders first: if removing one fails, the project is still there to remove again.
        self.scheduler
            .remove_project_files(&name)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        self.deployer.remove_project(&name).await.map_err(status)?;
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
        let name = ProjectName::new(req.name.as_str()).map_err(status)?;
        let project = self
            .store
            .update_project(&name, |p| {
                if let Some(b) = &req.branch {
                    p.branch = b.clone();
                }
                if let Some(k) = req.keep_versions {
                    p.keep_versions = k;
                }
            })
            .map_err(status)?;
        if req.keep_versions.is_some() {
            // A new limit applies at once, not only after the next version.
            let keep = crate::promotion::keep_count(&project, None);
            self.deployer
                .artifacts()
                .apply_retention(&project.name, keep)
                .await
                .map_err(status)?;
        }
        Ok(Response::new(self.describe(&project)?))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, secret = %req.get_ref().name))]
    async fn set_secret(
        &self,
        req: Request<proto::SetSecretRequest>,
    ) -> Result<Response<proto::SetSecretResponse>, Status> {
        let req = req.into_inner();
        validate_secret_name(&req.name).map_err(status)?;
        validate_secret_value(&req.value).map_err(status)?;
        let project = ProjectName::new(req.project).map_err(status)?;
        self.store
            .set_secret(&project, &req.name, &req.value)
            .map_err(status)?;
        Ok(Response::new(proto::SetSecretResponse {}))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, secret = %req.get_ref().name))]
    async fn unset_secret(
        &self,
        req: Request<proto::UnsetSecretRequest>,
    ) -> Result<Response<proto::UnsetSecretResponse>, Status> {
        let req = req.into_inner();
        let project = ProjectName::new(req.project).map_err(status)?;
        self.store
            .unset_secret(&project, &req.name)
            .map_err(status)?;
        Ok(Response::new(proto::UnsetSecretResponse {}))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project))]
    async fn list_secrets(
        &self,
        req: Request<proto::ListSecretsRequest>,
    ) -> Result<Response<proto::ListSecretsResponse>, Status> {
        let project = ProjectName::new(req.get_ref().project.as_str()).map_err(status)?;
        let names = self.store.secret_names(&project).map_err(status)?;
        Ok(Response::new(proto::ListSecretsResponse { names }))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, rotate = req.get_ref().rotate))]
    async fn get_github_hook(
        &self,
        req: Request<proto::GetGithubHookRequest>,
    ) -> Result<Response<proto::GithubHook>, Status> {
        let req = req.into_inner();
        let project = ProjectName::new(req.project.as_str()).map_err(status)?;
        let forge = opus_core::forge::Forge::from_name(&req.forge).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown forge {:?}: github, gitlab or gitea",
                req.forge
            ))
        })?;
        let secret = self
            .store
            .ensure_project_key(&project, KeyKind::GithubSecret, req.rotate, &random_key()?)
            .map_err(status)?;
        let path = forge.hook_path(&req.project);
        Ok(Response::new(proto::GithubHook {
            url: self.public(&path),
            path,
            secret,
        }))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, rotate = req.get_ref().rotate))]
    async fn get_trigger_token(
        &self,
        req: Request<proto::GetTriggerTokenRequest>,
    ) -> Result<Response<proto::TriggerToken>, Status> {
        let req = req.into_inner();
        let project = ProjectName::new(req.project.as_str()).map_err(status)?;
        let token = self
            .store
            .ensure_project_key(&project, KeyKind::TriggerToken, req.rotate, &random_key()?)
            .map_err(status)?;
        let path = format!("/hooks/trigger/{}", req.project);
        Ok(Response::new(proto::TriggerToken {
            url: self.public(&path),
            path,
            token,
        }))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, url = %req.get_ref().url))]
    async fn add_hook(
        &self,
        req: Request<proto::AddHookRequest>,
    ) -> Result<Response<proto::Hook>, Status> {
        let req = req.into_inner();
        if req.all_projects != req.project.is_empty() {
            return Err(Status::invalid_argument(
                "name a project, or ask for all projects (`opus hook add --all <URL>`), not both",
            ));
        }
        validate_hook_url(&req.url).map_err(status)?;
        let mut events = Vec::new();
        for e in req.events.iter().flat_map(|e| e.split(',')) {
            let e = e.trim();
            if !e.is_empty() {
                validate_event_pattern(e).map_err(status)?;
                events.push(e.to_owned());
            }
        }
        let format = proto::HookFormat::try_from(req.format)
            .map_err(|_| Status::invalid_argument(format!("unknown hook format {}", req.format)))?;
        let hook = Hook {
            id: 0,
            project: req.project,
            url: req.url,
            events,
            format: wire::hook_format(format),
            secret: Some(req.secret).filter(|s| !s.is_empty()),
            enabled: true,
            created_at: SystemTime::now(),
        };
        let hook = self.store.add_hook(&hook).map_err(status)?;
        tracing::info!(hook = hook.id, "hook added");
        Ok(Response::new(proto::Hook::from(&hook)))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project))]
    async fn list_hooks(
        &self,
        req: Request<proto::ListHooksRequest>,
    ) -> Result<Response<proto::ListHooksResponse>, Status> {
        let project = req.into_inner().project;
        let store = &self.store;
        let project = if project.is_empty() {
            None
        } else {
            let name = ProjectName::new(project).map_err(status)?;
            store.get_project(&name).map_err(status)?;
            Some(name)
        };
        let hooks = store.list_hooks(project.as_ref()).map_err(status)?;
        Ok(Response::new(proto::ListHooksResponse {
            hooks: hooks.iter().map(Into::into).collect(),
        }))
    }

    #[instrument(skip_all, fields(hook = %req.get_ref().id))]
    async fn remove_hook(
        &self,
        req: Request<proto::RemoveHookRequest>,
    ) -> Result<Response<proto::RemoveHookResponse>, Status> {
        let id = hook_id(&req.get_ref().id)?;
        self.store.remove_hook(id).map_err(status)?;
        tracing::info!("hook removed");
        Ok(Response::new(proto::RemoveHookResponse {}))
    }

    #[instrument(skip_all, fields(hook = %req.get_ref().id))]
    async fn test_hook(
        &self,
        req: Request<proto::TestHookRequest>,
    ) -> Result<Response<proto::Delivery>, Status> {
        let id = hook_id(&req.get_ref().id)?;
        let store = &self.store;
        let hook = store.get_hook(id).map_err(status)?;
        let delivery = hooks::test_hook(store, &self.hook_transport, &self.site_links, &hook)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::Delivery::from(&delivery)))
    }

    #[instrument(skip_all, fields(hook = %req.get_ref().hook_id))]
    async fn list_deliveries(
        &self,
        req: Request<proto::ListDeliveriesRequest>,
    ) -> Result<Response<proto::ListDeliveriesResponse>, Status> {
        let req = req.into_inner();
        let id = hook_id(&req.hook_id)?;
        let deliveries = self
            .store
            .list_deliveries(id, req.limit as usize)
            .map_err(status)?;
        Ok(Response::new(proto::ListDeliveriesResponse {
            deliveries: deliveries.iter().map(Into::into).collect(),
        }))
    }
}

/// A hook id as the API carries it (a decimal number).
fn hook_id(text: &str) -> Result<u64, Status> {
    text.trim().trim_start_matches('#').parse().map_err(|_| {
        Status::invalid_argument(format!(
            "invalid hook id {text:?}: hook ids are numbers (see `opus hook list`)"
        ))
    })
}

/// 32 random bytes as hex: a webhook secret or trigger token.
fn random_key() -> Result<String, Status> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        tracing::error!(error = %e, "the system random source failed");
        Status::internal(format!(
            "cannot generate a secret: the system random source failed ({e})"
        ))
    })?;
    Ok(hex::encode(bytes))
}

/// A listed project whose last build carries only what `opus list` shows (`brief`).
fn brief_project(p: &proto::Project) -> proto::Project {
    proto::Project {
        name: p.name.clone(),
        source: p.source.clone(),
        branch: p.branch.clone(),
        created_at: p.created_at,
        keep_versions: p.keep_versions,
        last_build: p.last_build.as_ref().map(|b| proto::Build {
            id: b.id,
            number: b.number,
            project: b.project.clone(),
            state: b.state,
            version: b.version.clone(),
            queued_at: b.queued_at,
            ..Default::default()
        }),
        secret_names: Vec::new(),
    }
}
