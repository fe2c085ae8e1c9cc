//! Projects and their secrets.

use globset::GlobBuilder;
use serde_json::json;

use super::{MetaStore, T, Tx, TxResult, abort, decode, pair_key, prefix};
use crate::error::{ModelError, StoreError};
use crate::model::{EventKind, Project, ProjectName};

impl Tx<'_> {
    /// Reads a project or aborts with `ProjectNotFound`.
    pub(crate) fn project(&self, name: &str) -> TxResult<Project> {
        match self.get_json(T::Projects, name.as_bytes())? {
            Some(p) => Ok(p),
            None => abort(StoreError::ProjectNotFound(name.to_owned())),
        }
    }
}

/// How `ListProjects` filters: empty matches all, text with `*`, `?` or `[` is a glob, anything
/// else a substring.
pub enum NameFilter {
    /// The empty filter.
    All,
    /// Names containing this text.
    Substring(String),
    /// Names matching this glob.
    Glob(globset::GlobMatcher),
}

impl NameFilter {
    /// Reads a filter as `opus list [FILTER]` takes it; an invalid glob is `Invalid`.
    pub fn parse(filter: &str) -> Result<NameFilter, ModelError> {
        if filter.is_empty() {
            Ok(NameFilter::All)
        } else if filter.contains(['*', '?', '[']) {
            let glob = GlobBuilder::new(filter)
                .literal_separator(false)
                .build()
                .map_err(|e| ModelError::Invalid(format!("invalid filter {filter:?}: {e}")))?;
            Ok(NameFilter::Glob(glob.compile_matcher()))
        } else {
            Ok(NameFilter::Substring(filter.to_owned()))
        }
    }

    /// Whether the project `name` passes.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NameFilter::All => true,
            NameFilter::Substring(s) => name.contains(s.as_str()),
            NameFilter::Glob(g) => g.is_match(name),
        }
    }
}

impl MetaStore {
    /// Registers a project; `AlreadyExists` when the name is taken.
    pub fn create_project(&self, project: &Project) -> Result<(), StoreError> {
        self.transact(|tx| tx.insert_project(project))
    }

    /// One project.
    pub fn get_project(&self, name: &ProjectName) -> Result<Project, StoreError> {
        self.get_json(T::Projects, name.as_str().as_bytes())?
            .ok_or_else(|| StoreError::ProjectNotFound(name.to_string()))
    }

    /// Every project with its newest build, in name order, each passed through `view`: the
    /// records are read and decoded on every core at once (a list of 10,000 projects is 20,000
    /// records), so call it off the async runtime.
    pub fn map_projects_with_last_build<R: Send>(
        &self,
        view: impl Fn(Project, Option<crate::model::Build>) -> R + Sync,
    ) -> Result<Vec<R>, StoreError> {
        let records: Vec<(sled::IVec, sled::IVec)> =
            self.tree(T::Projects)?.iter().collect::<Result<_, _>>()?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_thread = records.len().div_ceil(threads).max(256);
        let one = |(k, v): &(sled::IVec, sled::IVec)| -> Result<R, StoreError> {
            let project: Project = decode(k, v)?;
            let last = self.last_build(&project.name)?;
            Ok(view(project, last))
        };
        let chunks: Vec<Result<Vec<R>, StoreError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = records
                .chunks(per_thread)
                .map(|chunk| scope.spawn(|| chunk.iter().map(one).collect()))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StoreError::Corrupt {
                            key: "projects".into(),
                            detail: "a thread reading projects panicked".into(),
                        })
                    })
                })
                .collect()
        });
        let mut out = Vec::with_capacity(records.len());
        for chunk in chunks {
            out.extend(chunk?);
        }
        Ok(out)
    }

    /// The names of the projects passing `keep`, in name order, read from the keys alone (no
    /// record is decoded): the dashboard pages through 10,000 projects with it. Keys are written
    /// from valid names only; one that is not is skipped.
    pub fn project_names(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<ProjectName>, StoreError> {
        let mut out = Vec::new();
        for key in self.tree(T::Projects)?.iter().keys() {
            let key = key?;
            let name = String::from_utf8_lossy(&key);
            if keep(&name)
                && let Ok(name) = ProjectName::new(name.into_owned())
            {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Number of projects.
    pub fn project_count(&self) -> usize {
        self.tree(T::Projects).map(|t| t.len()).unwrap_or(0)
    }

    /// Applies `change` to a project and stores it, with a `project.updated` event.
    pub fn update_project(
        &self,
        name: &ProjectName,
        change: impl Fn(&mut Project),
    ) -> Result<Project, StoreError> {
        let name = name.as_str();
        self.transact(|tx| {
            let mut project = tx.project(name)?;
            change(&mut project);
            tx.put_json(T::Projects, name.as_bytes(), &project)?;
            tx.append_event(
                EventKind::ProjectUpdated,
                name,
                json!({ "branch": project.branch, "keep_versions": project.keep_versions }),
            )?;
            Ok(project)
        })
    }

    /// Removes a project with its secrets, build index, environments, releases, site options and
    /// release counters (nothing serves it any more, and a project added again under the name
    /// starts from release 1). Its versions are the artifact store's to remove first
    /// ([`crate::artifact::ArtifactStore::delete_project_versions`]). Its build records stay
    /// readable by id and by number (`web#3`) until the build history is pruned, so logs of a
    /// removed project can still be read; its build counter stays too, so a project added again
    /// under that name continues after the removed one's numbers (`web#3` never names two builds,
    /// nor a version name two versions).
    pub fn delete_project(&self, name: &ProjectName) -> Result<(), StoreError> {
        // Collect the keys first: a transaction cannot iterate.
        let secret_keys: Vec<_> = self
            .tree(T::Secrets)?
            .scan_prefix(prefix(name.as_str()))
            .keys()
            .collect::<Result<_, _>>()?;
        let build_keys: Vec<_> = self
            .tree(T::ProjectBuilds)?
            .scan_prefix(prefix(name.as_str()))
            .keys()
            .collect::<Result<_, _>>()?;
        let env_keys: Vec<_> = self
            .tree(T::Environments)?
            .scan_prefix(prefix(name.as_str()))
            .keys()
            .collect::<Result<_, _>>()?;
        let release_keys: Vec<_> = self
            .tree(T::Releases)?
            .scan_prefix(prefix(name.as_str()))
            .keys()
            .collect::<Result<_, _>>()?;
        let option_keys: Vec<_> = self
            .tree(T::SiteOptions)?
            .scan_prefix(prefix(name.as_str()))
            .keys()
            .collect::<Result<_, _>>()?;
        let counter_keys: Vec<_> = self
            .tree(T::Counters)?
            .scan_prefix(super::deploys::release_counter_prefix(name.as_str()))
            .keys()
            .chain(std::iter::once(Ok(sled::IVec::from(
                super::deploys::releases_made_key(name.as_str()).as_bytes(),
            ))))
            .collect::<Result<_, _>>()?;
        let domain_keys = self.domain_keys(name)?;
        let hooks = self.project_hook_ids(name)?;
        let delivery_keys = self.delivery_keys(&hooks)?;
        let (project_keys, github_ids) = self.project_webhook_keys(name.as_str())?;
        self.transact(|tx| {
            tx.project(name.as_str())?;
            tx.remove_project_webhooks(&hooks, &delivery_keys, &project_keys, &github_ids)?;
            tx.tree(T::Projects).remove(name.as_str().as_bytes())?;
            for k in &env_keys {
                tx.tree(T::Environments).remove(k)?;
            }
            for k in &secret_keys {
                tx.tree(T::Secrets).remove(k)?;
            }
            for k in &build_keys {
                tx.tree(T::ProjectBuilds).remove(k)?;
            }
            for k in &release_keys {
                tx.tree(T::Releases).remove(k)?;
            }
            for k in &option_keys {
                tx.tree(T::SiteOptions).remove(k)?;
            }
            for k in &counter_keys {
                tx.tree(T::Counters).remove(k)?;
            }
            tx.tree(T::LastBuilds).remove(name.as_str().as_bytes())?;
            tx.tree(T::GithubInstallations)
                .remove(name.as_str().as_bytes())?;
            tx.remove_domains(&domain_keys)?;
            tx.tree(T::Triggers).remove(name.as_str().as_bytes())?;
            tx.append_event(
                EventKind::ProjectRemoved,
                name.as_str(),
                json!({ "name": name }),
            )?;
            Ok(())
        })
    }

    /// Sets a secret's value. The event names the secret, never its value.
    pub fn set_secret(
        &self,
        project: &ProjectName,
        name: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        let project = project.as_str();
        self.transact(|tx| {
            tx.project(project)?;
            tx.tree(T::Secrets)
                .insert(pair_key(project, name.as_bytes()), value.as_bytes())?;
            tx.append_event(EventKind::SecretSet, project, json!({ "name": name }))?;
            Ok(())
        })
    }

    /// Removes a secret; `SecretNotFound` when there is none by that name.
    pub fn unset_secret(&self, project: &ProjectName, name: &str) -> Result<(), StoreError> {
        let project = project.as_str();
        self.transact(|tx| {
            tx.project(project)?;
            if tx
                .tree(T::Secrets)
                .remove(pair_key(project, name.as_bytes()))?
                .is_none()
            {
                return abort(StoreError::SecretNotFound {
                    project: project.to_owned(),
                    name: name.to_owned(),
                });
            }
            tx.append_event(EventKind::SecretUnset, project, json!({ "name": name }))?;
            Ok(())
        })
    }

    /// A project's secrets, names and values, for the executor only.
    pub fn secrets(&self, project: &ProjectName) -> Result<Vec<(String, String)>, StoreError> {
        let p = prefix(project.as_str());
        let mut out = Vec::new();
        for item in self.tree(T::Secrets)?.scan_prefix(&p) {
            let (k, v) = item?;
            out.push((
                String::from_utf8_lossy(&k[p.len()..]).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
        Ok(out)
    }

    /// The names of a project's secrets (what the API may show).
    pub fn secret_names(&self, project: &ProjectName) -> Result<Vec<String>, StoreError> {
        self.get_project(project)?;
        Ok(self.secrets(project)?.into_iter().map(|(n, _)| n).collect())
    }
}

impl Tx<'_> {
    /// Registers a project and its `project.added` event; `AlreadyExists` when the name is taken.
    pub(super) fn insert_project(&self, project: &Project) -> TxResult<()> {
        let key = project.name.as_str().as_bytes();
        if self.tree(T::Projects).get(key)?.is_some() {
            return abort(StoreError::ProjectExists(project.name.to_string()));
        }
        self.put_json(T::Projects, key, project)?;
        self.append_event(
            EventKind::ProjectAdded,
            project.name.as_str(),
            json!({ "name": project.name, "source": project.source.display(), "branch": project.branch }),
        )?;
        Ok(())
    }
}
