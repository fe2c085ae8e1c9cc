//! Deploys: moves environment pointers in the store and, in the same step, the site table.
//!
//! [`Deployer`] is the one way to change what is deployed (the API and automatic deploys after a
//! build both call it). For each change it holds the site server's writer lock across "commit in
//! the store, then swap the table", so the table follows the commits in order; the RPC returns
//! only after the swap, so once it has returned every new request gets the new version.
//!
//! Architecture Invariant: `Deployer` is the only writer of environments and releases (deploy,
//! rollback, unpin, removal); versions are the artifact store's, which refuses to delete one an
//! environment points at or would roll back to.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use opus_core::CoreError;
use opus_core::artifact::ArtifactStore;
use opus_core::model::ProjectName;
use opus_core::store::{EnvironmentRecord, MetaStore, ReleaseReason};
use tracing::instrument;

use crate::metrics::Metrics;
use crate::sites::{Content, FileInfo, SiteKey, SiteServer, SiteVersion};

/// How many loaded versions are kept for reuse (a rollback to one of them is served from its
/// warm cache at once).
const RECENT_VERSIONS: usize = 16;

/// Changes deployments: store and site table together.
#[derive(Clone)]
pub struct Deployer {
    store: MetaStore,
    artifacts: ArtifactStore,
    sites: Arc<SiteServer>,
    metrics: Metrics,
    /// Versions loaded lately, newest last, reused instead of loading their manifest again.
    recent: Arc<Mutex<VecDeque<Arc<SiteVersion>>>>,
}

impl Deployer {
    /// A deployer over the store, the artifact store and the site server.
    pub fn new(
        store: MetaStore,
        artifacts: ArtifactStore,
        sites: Arc<SiteServer>,
        metrics: Metrics,
    ) -> Deployer {
        Deployer {
            store,
            artifacts,
            sites,
            metrics,
            recent: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    /// The site server this deployer drives.
    pub fn sites(&self) -> &Arc<SiteServer> {
        &self.sites
    }

    /// The artifact store versions are loaded from (and the owner of versions: deleting and
    /// retention go there).
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// A version ready to serve: its local folder (or, for a remote store, the site cache), its
    /// manifest's files and its site options. `VersionNotFound` when the project has no such
    /// version. A remote version starts warming the site cache in the background.
    pub async fn load_version(
        &self,
        project: &str,
        version: &str,
    ) -> Result<Arc<SiteVersion>, CoreError> {
        if let Ok(recent) = self.recent.lock() {
            if let Some(v) = recent
                .iter()
                .find(|v| v.project == project && v.version == version)
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
                artifacts: self.artifacts.clone(),
                cache: self.sites.cache().clone(),
            },
        };
        let spa = self.store.site_options(project, version)?.spa;
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
        let loaded = Arc::new(SiteVersion::new(
            project,
            version,
            content,
            spa,
            Some(files),
        ));
        loaded.warm();
        if let Ok(mut recent) = self.recent.lock() {
            recent.push_back(loaded.clone());
            while recent.len() > RECENT_VERSIONS {
                recent.pop_front();
            }
        }
        Ok(loaded)
    }

    /// Deploys `version` to `env` (a new release), then serves it. An `Auto` deploy to a pinned
    /// environment fails with `EnvironmentPinned` and changes nothing.
    #[instrument(skip(self), err(Display))]
    pub async fn deploy(
        &self,
        project: &str,
        env: &str,
        version: &str,
        actor: &str,
        reason: ReleaseReason,
        preview: bool,
    ) -> Result<EnvironmentRecord, CoreError> {
        // Load first: a version that cannot be served is refused before anything is committed.
        let site = self.load_version(project, version).await?;
        let guard = self.sites.lock().await;
        let record = self
            .store
            .deploy(project, env, version, actor, reason, preview)?;
        self.sites
            .apply(&guard, vec![(SiteKey::new(project, env), Some(site))]);
        drop(guard);
        self.flush().await;
        self.metrics
            .deploys
            .with_label_values(&[reason.as_str()])
            .inc();
        Ok(record)
    }

    /// Rolls `env` back (to the release before the current one, or to `to`), pins it, and serves
    /// the version.
    #[instrument(skip(self), err(Display))]
    pub async fn rollback(
        &self,
        project: &str,
        env: &str,
        to: Option<&str>,
        actor: &str,
    ) -> Result<EnvironmentRecord, CoreError> {
        let guard = self.sites.lock().await;
        let record = self.store.rollback(project, env, to, actor)?;
        // Usually a recent version, already loaded and warm.
        let site = match self.load_version(project, &record.current.version).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(project, env, version = %record.current.version, error = %e, "rolled back in the store but cannot load the version to serve it");
                return Err(e);
            }
        };
        self.sites
            .apply(&guard, vec![(SiteKey::new(project, env), site)]);
        drop(guard);
        self.flush().await;
        self.metrics.deploys.with_label_values(&["rollback"]).inc();
        Ok(record)
    }

    /// Clears an environment's pin (automatic deploys go to it again); what is served does not
    /// change.
    #[instrument(skip(self), err(Display))]
    pub async fn unpin_environment(
        &self,
        project: &str,
        env: &str,
    ) -> Result<EnvironmentRecord, CoreError> {
        let record = self.store.unpin_environment(project, env)?;
        self.flush().await;
        Ok(record)
    }

    /// Removes an environment and stops serving it.
    #[instrument(skip(self), err(Display))]
    pub async fn remove_environment(&self, project: &str, env: &str) -> Result<(), CoreError> {
        let guard = self.sites.lock().await;
        self.store.remove_environment(project, env)?;
        self.sites
            .apply(&guard, vec![(SiteKey::new(project, env), None)]);
        drop(guard);
        self.flush().await;
        Ok(())
    }

    /// Removes a project from the store (with its environments) and stops serving it.
    #[instrument(skip(self), err(Display))]
    pub async fn remove_project(&self, name: &ProjectName) -> Result<(), CoreError> {
        let guard = self.sites.lock().await;
        self.store.delete_project(name)?;
        self.sites.remove_project(&guard, name.as_str());
        Ok(())
    }

    /// Makes a committed change durable before the RPC answers (the store otherwise syncs on a
    /// timer, and a crash would forget a deploy the caller was told about).
    async fn flush(&self) {
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "cannot flush the metadata store after a deploy");
        }
    }

    /// Fills the site table from the store (on start). Environments whose version cannot be
    /// loaded are logged and left out.
    pub async fn load_all(&self) -> Result<(), CoreError> {
        let envs = self.store.all_environments()?;
        let mut changes = Vec::with_capacity(envs.len());
        for env in envs {
            match self.load_version(&env.project, &env.current.version).await {
                Ok(site) => changes.push((SiteKey::new(&env.project, &env.name), Some(site))),
                Err(e) => tracing::warn!(
                    project = %env.project, env = %env.name, version = %env.current.version, error = %e,
                    "cannot serve a deployed version"
                ),
            }
        }
        let guard = self.sites.lock().await;
        self.sites.apply(&guard, changes);
        Ok(())
    }
}
