//! Loading stored versions for the site server: the files' source (local folder or the site
//! cache), the manifest, the site options and rules. The deployer loads a version before it
//! deploys it; the site server asks for one when a request names a version's own host
//! (`<label>--v--<project>`), through [`crate::sites::VersionSource`].
//!
//! Bounded: the `RECENT_VERSIONS` versions loaded last are kept (with their memory caches), so
//! a rollback to one of them, or a reviewer's next request to a version host, is served warm;
//! older ones are dropped unless an environment still serves them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use opus_core::CoreError;
use opus_core::artifact::ArtifactStore;
use opus_core::model::{ProjectName, VersionName};
use opus_core::store::MetaStore;

use crate::sites::{Content, FileInfo, SiteCache, SiteVersion, VersionSource, version_label};

/// How many loaded versions are kept for reuse.
const RECENT_VERSIONS: usize = 16;

/// Loads versions ready to serve and keeps the recent ones.
#[derive(Clone)]
pub struct VersionLoader {
    store: MetaStore,
    artifacts: ArtifactStore,
    cache: SiteCache,
    /// Versions loaded lately, newest last, reused instead of loading their manifest again.
    recent: Arc<Mutex<VecDeque<Arc<SiteVersion>>>>,
}

impl VersionLoader {
    /// A loader over the store, the artifact store and the site server's disk cache.
    pub fn new(store: MetaStore, artifacts: ArtifactStore, cache: SiteCache) -> VersionLoader {
        VersionLoader {
            store,
            artifacts,
            cache,
            recent: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    /// A version ready to serve: its local folder (or, for a remote store, the site cache), its
    /// manifest's files, its site options and rules. `VersionNotFound` when the project has no
    /// such version. A remote version starts warming the site cache in the background.
    pub async fn load(
        &self,
        project: &ProjectName,
        version: &VersionName,
    ) -> Result<Arc<SiteVersion>, CoreError> {
        if let Ok(recent) = self.recent.lock() {
            if let Some(v) = recent
                .iter()
                .find(|v| &v.project == project && &v.version == version)
            {
                // Its files may have been evicted since; warming a cached file only marks it used.
                v.warm();
                return Ok(v.clone());
            }
        }
        let manifest = self.artifacts.manifest(project, version).await?;
        let content = match self
            .artifacts
            .local_path(project, version, "index.html")?
            .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
        {
            Some(root) => Content::Local(root),
            None => Content::Remote {
                artifacts: Arc::new(self.artifacts.clone()),
                cache: self.cache.clone(),
            },
        };
        let options = self.store.site_options(project, version)?;
        let files: HashMap<String, FileInfo> = manifest
            .files
            .into_iter()
            .map(|f| {
                (
                    f.path,
                    FileInfo {
                        size: f.size,
                        sha256: f.sha256,
                    },
                )
            })
            .collect();
        let loaded = Arc::new(
            SiteVersion::new(project, version, content, options.spa, Some(files))
                .with_rules(&options.rules),
        );
        loaded.warm();
        if let Ok(mut recent) = self.recent.lock() {
            recent.push_back(loaded.clone());
            while recent.len() > RECENT_VERSIONS {
                recent.pop_front();
            }
        }
        Ok(loaded)
    }

    /// The version of `project` whose host label is `label`: the version of that name when its
    /// label is the name itself (the usual case, one lookup), else the one whose label matches
    /// among the project's versions. `None` when there is none, or two (which takes a sha256
    /// prefix collision).
    fn resolve(
        &self,
        project: &ProjectName,
        label: &str,
    ) -> Result<Option<VersionName>, CoreError> {
        if let Ok(name) = VersionName::new(label) {
            if version_label(&name) == label && self.store.get_version(project, &name)?.is_some() {
                return Ok(Some(name));
            }
        }
        let mut found = self
            .store
            .list_versions(project)?
            .into_iter()
            .map(|v| v.version)
            .filter(|v| version_label(v) == label);
        match (found.next(), found.next()) {
            (Some(v), None) => Ok(Some(v)),
            _ => Ok(None),
        }
    }
}

impl VersionSource for VersionLoader {
    fn load<'a>(
        &'a self,
        project: &'a ProjectName,
        label: &'a str,
    ) -> BoxFuture<'a, Option<Arc<SiteVersion>>> {
        async move {
            let version = match self.resolve(project, label) {
                Ok(Some(v)) => v,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(project = %project, label, error = %e, "cannot look up a version for its host");
                    return None;
                }
            };
            match VersionLoader::load(self, project, &version).await {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(project = %project, version = %version, error = %e, "cannot load a version for its host");
                    None
                }
            }
        }
        .boxed()
    }
}
