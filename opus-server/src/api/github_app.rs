//! `opus.v1.GithubAppService`: the repositories the GitHub App's installations can see
//! (`GET /app/installations`, then `GET /installation/repositories` with each installation's
//! token), and importing them as projects, each remembered as its installation's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use opus_core::model::{Project, ProjectName, Source};
use opus_core::proto::{self, github_app_service_server::GithubAppService};
use opus_core::store::MetaStore;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::status;
use crate::github::app::{AppError, InstallationTokens, InstalledRepository};

/// Implements the GitHub App RPCs.
pub(crate) struct GithubAppApi {
    /// Projects and their installations.
    store: MetaStore,
    /// The App's tokens; none when opusd is no App.
    tokens: Option<Arc<InstallationTokens>>,
}

impl GithubAppApi {
    pub(crate) fn new(store: MetaStore, tokens: Option<Arc<InstallationTokens>>) -> Self {
        GithubAppApi { store, tokens }
    }

    /// Every repository the installations see, by full name.
    async fn visible(&self) -> Result<BTreeMap<String, InstalledRepository>, Status> {
        let tokens = self.tokens.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "opusd is not a GitHub App: start it with --github-app-id and \
                 --github-app-key-file (or OPUS_GITHUB_APP_ID, OPUS_GITHUB_APP_KEY_FILE)",
            )
        })?;
        let mut out = BTreeMap::new();
        for installation in tokens.installations().await.map_err(github_status)? {
            for repo in tokens
                .repositories(installation)
                .await
                .map_err(github_status)?
            {
                out.entry(repo.full_name.clone()).or_insert(repo);
            }
        }
        Ok(out)
    }

    /// Git URL -> project name, of every git project.
    fn projects_by_source(&self) -> Result<BTreeMap<String, String>, Status> {
        let mut out = BTreeMap::new();
        for name in self.store.project_names(|_| true).map_err(status)? {
            if let Ok(project) = self.store.get_project(&name)
                && let Source::Git(url) = &project.source
            {
                out.insert(url.clone(), name.to_string());
            }
        }
        Ok(out)
    }
}

/// GitHub's refusal as a gRPC status a person can act on.
fn github_status(e: AppError) -> Status {
    match e.status() {
        0 | 500.. => Status::unavailable(e.to_string()),
        401 | 403 => Status::failed_precondition(format!(
            "{e} (check --github-app-id and the key file: they must be the App's)"
        )),
        404 => Status::not_found(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

/// The project name a repository is imported under: its name in lower case, every run of
/// characters a DNS label cannot hold made one `-` (so never `--`), trimmed to 63 characters.
pub(crate) fn project_name_for(repository: &str) -> Option<ProjectName> {
    let mut name = String::new();
    for c in repository.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    name.truncate(63);
    let name = name.trim_end_matches('-');
    ProjectName::for_new(name).ok()
}

/// Checks an `OWNER/REPO` argument.
fn check_full_name(text: &str) -> Result<&str, Status> {
    let text = text.trim();
    match text.split_once('/') {
        Some((owner, repo)) if !owner.is_empty() && !repo.is_empty() && !repo.contains('/') => {
            Ok(text)
        }
        _ => Err(Status::invalid_argument(format!(
            "{text:?} is not OWNER/REPO (for example acme/web); `opus github import` with no \
             argument lists what can be imported"
        ))),
    }
}

fn describe(repo: &InstalledRepository, project: Option<&String>) -> proto::GithubRepository {
    proto::GithubRepository {
        full_name: repo.full_name.clone(),
        clone_url: repo.clone_url.clone(),
        default_branch: repo.default_branch.clone().unwrap_or_default(),
        private: repo.private,
        installation: repo.installation,
        project: project.cloned().unwrap_or_default(),
        import_as: project_name_for(&repo.name)
            .map(|n| n.to_string())
            .unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl GithubAppService for GithubAppApi {
    #[instrument(skip_all)]
    async fn list_github_repositories(
        &self,
        _req: Request<proto::ListGithubRepositoriesRequest>,
    ) -> Result<Response<proto::ListGithubRepositoriesResponse>, Status> {
        let visible = self.visible().await?;
        let projects = self.projects_by_source()?;
        let repositories = visible
            .values()
            .map(|repo| describe(repo, projects.get(&repo.clone_url)))
            .collect();
        Ok(Response::new(proto::ListGithubRepositoriesResponse {
            repositories,
        }))
    }

    #[instrument(skip_all)]
    async fn import_github_repositories(
        &self,
        req: Request<proto::ImportGithubRepositoriesRequest>,
    ) -> Result<Response<proto::ImportGithubRepositoriesResponse>, Status> {
        let wanted = req.into_inner().repositories;
        if wanted.is_empty() {
            return Err(Status::invalid_argument(
                "name the repositories to import as OWNER/REPO; `opus github import` with no \
                 argument lists them",
            ));
        }
        let wanted = wanted
            .iter()
            .map(|w| check_full_name(w).map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?;
        let visible = self.visible().await?;
        // GitHub's names are case-insensitive.
        let by_lower: BTreeMap<String, &InstalledRepository> = visible
            .values()
            .map(|r| (r.full_name.to_lowercase(), r))
            .collect();
        let unknown: Vec<&str> = wanted
            .iter()
            .filter(|w| !by_lower.contains_key(&w.to_lowercase()))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(Status::not_found(format!(
                "the GitHub App's installations cannot see {}: install the App on it (or grant \
                 the installation access to it); nothing was imported",
                unknown.join(", ")
            )));
        }
        let mut projects = self.projects_by_source()?;
        let mut results = Vec::new();
        for full_name in &wanted {
            let repo = by_lower[&full_name.to_lowercase()];
            let skipped = |project: String, message: String| proto::ImportedRepository {
                full_name: repo.full_name.clone(),
                project,
                added: false,
                message,
            };
            if let Some(project) = projects.get(&repo.clone_url) {
                results.push(skipped(
                    project.clone(),
                    format!("already the project {project}; skipped"),
                ));
                continue;
            }
            let Some(name) = project_name_for(&repo.name) else {
                results.push(skipped(
                    String::new(),
                    format!(
                        "{:?} makes no valid project name; add it with `opus add NAME {}`",
                        repo.name, repo.clone_url
                    ),
                ));
                continue;
            };
            let source = Source::parse(&repo.clone_url).map_err(status)?;
            let project = Project {
                name: name.clone(),
                source,
                branch: repo
                    .default_branch
                    .clone()
                    .filter(|b| !b.is_empty())
                    .unwrap_or_else(|| "main".to_owned()),
                created_at: SystemTime::now(),
                keep_versions: 0,
            };
            match self
                .store
                .create_github_project(&project, repo.installation)
            {
                Ok(()) => {
                    tracing::info!(project = %name, repository = %repo.full_name, installation = repo.installation, "repository imported");
                    projects.insert(repo.clone_url.clone(), name.to_string());
                    results.push(proto::ImportedRepository {
                        full_name: repo.full_name.clone(),
                        project: name.to_string(),
                        added: true,
                        message: format!("added as {name}"),
                    });
                }
                Err(opus_core::error::StoreError::ProjectExists(_)) => {
                    results.push(skipped(
                        String::new(),
                        format!(
                            "the name {name} is another project's; add it under another name \
                             with `opus add NAME {}`",
                            repo.clone_url
                        ),
                    ));
                }
                Err(e) => return Err(status(e)),
            }
        }
        Ok(Response::new(proto::ImportGithubRepositoriesResponse {
            results,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_name_becomes_a_dns_label() {
        let name = |s: &str| project_name_for(s).map(|n| n.to_string());
        assert_eq!(name("web").as_deref(), Some("web"));
        assert_eq!(name("My.Site--v2").as_deref(), Some("my-site-v2"));
        assert_eq!(name("_docs_").as_deref(), Some("docs"));
        assert_eq!(name(&"a".repeat(80)).map(|n| n.len()), Some(63));
        assert_eq!(name("..."), None);
    }

    #[test]
    fn an_import_names_owner_and_repository() {
        assert_eq!(check_full_name(" acme/web ").expect("valid"), "acme/web");
        for bad in ["web", "/web", "acme/", "acme/web/x"] {
            assert_eq!(
                check_full_name(bad).expect_err(bad).code(),
                tonic::Code::InvalidArgument
            );
        }
    }

    #[test]
    fn github_refusals_map_to_codes_a_person_can_act_on() {
        let refused = |status| AppError::Call {
            call: "GET /app/installations".into(),
            status,
            detail: format!("HTTP {status}"),
        };
        assert_eq!(
            github_status(refused(401)).code(),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(github_status(refused(404)).code(), tonic::Code::NotFound);
        assert_eq!(github_status(refused(502)).code(), tonic::Code::Unavailable);
        assert_eq!(github_status(refused(0)).code(), tonic::Code::Unavailable);
        assert_eq!(
            github_status(refused(422)).code(),
            tonic::Code::FailedPrecondition
        );
    }

    #[tokio::test]
    async fn without_an_app_listing_says_how_to_configure_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(dir.path()).expect("store");
        let api = GithubAppApi::new(store, None);
        let err = api
            .list_github_repositories(Request::new(proto::ListGithubRepositoriesRequest {}))
            .await
            .expect_err("no app");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message().contains("--github-app-id"),
            "{}",
            err.message()
        );
        let err = api
            .import_github_repositories(Request::new(proto::ImportGithubRepositoriesRequest {
                repositories: vec![],
            }))
            .await
            .expect_err("nothing named");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
