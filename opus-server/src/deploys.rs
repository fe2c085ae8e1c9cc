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

use std::sync::Arc;

use opus_core::CoreError;
use opus_core::artifact::ArtifactStore;
use opus_core::model::{EnvName, ProjectName, SITE_HOST_SEPARATOR, VersionName};
use opus_core::store::{EnvironmentRecord, MetaStore, ProtectionTarget, ReleaseReason};
use tracing::instrument;

use crate::metrics::Metrics;
use crate::site_pointers::{PointerPublisher, Target};
use crate::sites::{Access, Credential, ProjectAges, SiteKey, SiteServer, SiteVersion};
use crate::version_loader::VersionLoader;

mod verify_rollback;

/// Changes deployments: store and site table together.
#[derive(Clone)]
pub struct Deployer {
    store: MetaStore,
    artifacts: ArtifactStore,
    sites: Arc<SiteServer>,
    metrics: Metrics,
    /// Loads versions (and keeps the recent ones); also serves version hosts.
    loader: VersionLoader,
    /// Writes the site pointers site replicas follow, after each committed change.
    pointers: Option<PointerPublisher>,
}

impl Deployer {
    /// A deployer over the store, the artifact store and the site server.
    pub fn new(
        store: MetaStore,
        artifacts: ArtifactStore,
        sites: Arc<SiteServer>,
        metrics: Metrics,
    ) -> Deployer {
        let loader = VersionLoader::new(store.clone(), artifacts.clone(), sites.cache().clone());
        sites.set_version_source(Arc::new(loader.clone()));
        Deployer {
            store,
            artifacts,
            sites,
            metrics,
            loader,
            pointers: None,
        }
    }

    /// The same deployer, writing site pointers for site replicas through `pointers` after
    /// every committed change of what an environment serves.
    pub fn with_pointers(mut self, pointers: PointerPublisher) -> Deployer {
        self.pointers = Some(pointers);
        self
    }

    /// Rewrites the site pointers of `target` (after its change was committed and flushed). A
    /// failed write does not fail the change: the publisher logs it and retries.
    async fn publish(&self, target: Target) {
        if let Some(p) = &self.pointers {
            p.publish([target]).await;
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
    /// manifest's files, its site options and rules. `VersionNotFound` when the project has no
    /// such version. A remote version starts warming the site cache in the background.
    pub async fn load_version(
        &self,
        project: &ProjectName,
        version: &VersionName,
    ) -> Result<Arc<SiteVersion>, CoreError> {
        self.loader.load(project, version).await
    }

    /// Deploys `version` to `env` (a new release), then serves it. An `Auto` deploy to a pinned
    /// environment fails with `EnvironmentPinned` and changes nothing.
    #[instrument(skip(self), err(Display))]
    pub async fn deploy(
        &self,
        project: &ProjectName,
        env: &EnvName,
        version: &VersionName,
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
        if record.preview {
            self.sites.update_access(&guard, |a| {
                a.preview_envs
                    .insert(SiteKey::new(project.as_str(), env.as_str()));
            });
        }
        self.sites.apply(
            &guard,
            vec![(SiteKey::new(project.as_str(), env.as_str()), Some(site))],
        );
        drop(guard);
        self.flush().await?;
        self.publish(Target::Env(project.to_string(), env.to_string()))
            .await;
        self.metrics
            .deploys
            .with_label_values(&[reason.as_str()])
            .inc();
        Ok(record)
    }

    /// Rolls `env` back (to the release before the current one, or to `to`), pins it, and serves
    /// the version. As with [`Deployer::deploy`], the version is loaded first: one that cannot be
    /// served is refused before anything is committed.
    #[instrument(skip(self), err(Display))]
    pub async fn rollback(
        &self,
        project: &ProjectName,
        env: &EnvName,
        to: Option<&VersionName>,
        actor: &str,
    ) -> Result<EnvironmentRecord, CoreError> {
        // The lock first: the target stays the target until the commit.
        let guard = self.sites.lock().await;
        let target = self.store.rollback_target(project, env, to)?;
        // Usually a recent version, already loaded and warm.
        let site = self.load_version(project, &target.version).await?;
        let record = self.store.rollback(project, env, &target, actor)?;
        self.sites.apply(
            &guard,
            vec![(SiteKey::new(project.as_str(), env.as_str()), Some(site))],
        );
        drop(guard);
        self.flush().await?;
        self.publish(Target::Env(project.to_string(), env.to_string()))
            .await;
        self.metrics.deploys.with_label_values(&["rollback"]).inc();
        Ok(record)
    }

    /// Clears an environment's pin (automatic deploys go to it again); what is served does not
    /// change.
    #[instrument(skip(self), err(Display))]
    pub async fn unpin_environment(
        &self,
        project: &ProjectName,
        env: &EnvName,
    ) -> Result<EnvironmentRecord, CoreError> {
        let record = self.store.unpin_environment(project, env)?;
        self.flush().await?;
        Ok(record)
    }

    /// Locks an environment (`opus env lock`): deploys to it fail with `reason` until
    /// [`Deployer::unlock_environment`]; what is served does not change.
    #[instrument(skip(self), err(Display))]
    pub async fn lock_environment(
        &self,
        project: &ProjectName,
        env: &EnvName,
        reason: &str,
    ) -> Result<EnvironmentRecord, CoreError> {
        let record = self.store.lock_environment(project, env, reason)?;
        self.flush().await?;
        Ok(record)
    }

    /// Unlocks an environment: deploys go to it again.
    #[instrument(skip(self), err(Display))]
    pub async fn unlock_environment(
        &self,
        project: &ProjectName,
        env: &EnvName,
    ) -> Result<EnvironmentRecord, CoreError> {
        let record = self.store.unlock_environment(project, env)?;
        self.flush().await?;
        Ok(record)
    }

    /// Removes an environment and stops serving it.
    #[instrument(skip(self), err(Display))]
    pub async fn remove_environment(
        &self,
        project: &ProjectName,
        env: &EnvName,
    ) -> Result<(), CoreError> {
        let guard = self.sites.lock().await;
        self.store.remove_environment(project, env)?;
        self.sites.apply(
            &guard,
            vec![(SiteKey::new(project.as_str(), env.as_str()), None)],
        );
        drop(guard);
        self.flush().await?;
        self.publish(Target::Env(project.to_string(), env.to_string()))
            .await;
        Ok(())
    }

    /// Exempts a preview from expiry (`opus env keep`), or lets it expire again (`--off`,
    /// `opus env unkeep`); what is served does not change.
    #[instrument(skip(self), err(Display))]
    pub async fn keep_environment(
        &self,
        project: &ProjectName,
        env: &EnvName,
        kept: bool,
    ) -> Result<EnvironmentRecord, CoreError> {
        let record = self.store.keep_environment(project, env, kept)?;
        self.flush().await?;
        Ok(record)
    }

    /// Records how long the preview `env` lives without a deploy (from the opus.yml of the build
    /// that just deployed it; `None`: forever). Environments that are not previews ignore it.
    #[instrument(skip(self), err(Display))]
    pub async fn set_preview_expire(
        &self,
        project: &ProjectName,
        env: &EnvName,
        expire_after: Option<std::time::Duration>,
    ) -> Result<EnvironmentRecord, CoreError> {
        let record = self.store.set_preview_expire(project, env, expire_after)?;
        self.flush().await?;
        Ok(record)
    }

    /// Removes the preview `env` and stops serving it if it has expired by `now` (see
    /// [`MetaStore::expire_preview`]); returns the removed record.
    #[instrument(skip(self), err(Display))]
    pub async fn expire_preview(
        &self,
        project: &ProjectName,
        env: &EnvName,
        now: std::time::SystemTime,
    ) -> Result<Option<EnvironmentRecord>, CoreError> {
        let guard = self.sites.lock().await;
        let removed = self.store.expire_preview(project, env, now)?;
        if removed.is_some() {
            self.sites.apply(
                &guard,
                vec![(SiteKey::new(project.as_str(), env.as_str()), None)],
            );
        }
        drop(guard);
        if removed.is_some() {
            self.flush().await?;
            self.publish(Target::Env(project.to_string(), env.to_string()))
                .await;
        }
        Ok(removed)
    }

    /// Removes a project: stops serving it, deletes its versions from every store, then removes
    /// it from the metadata store with its environments, releases and site options.
    ///
    /// The project record goes last, so a removal that fails part-way (or a crash) leaves the
    /// project listed, and `opus remove` can be run again to finish it.
    #[instrument(skip(self), err(Display))]
    pub async fn remove_project(&self, name: &ProjectName) -> Result<(), CoreError> {
        let guard = self.sites.lock().await;
        self.store.get_project(name)?;
        self.sites.remove_project(&guard, name.as_str());
        self.artifacts.delete_project_versions(name).await?;
        self.store.delete_project(name)?;
        // Last: a removal that fails part-way leaves the project still protected.
        self.store.remove_project_protections(name)?;
        self.sites.update_access(&guard, |a| {
            a.envs.retain(|k, _| k.project != name.as_str());
            a.previews.remove(name.as_str());
        });
        drop(guard);
        self.flush().await?;
        self.publish(Target::Project(name.to_string())).await;
        Ok(())
    }

    /// Makes a committed change durable before the RPC answers (the store otherwise syncs on a
    /// timer, and a crash would forget a deploy the caller was told about). A change that could
    /// not be written (a full disk) is an error for the caller: it was not saved, whatever the
    /// site table serves until the store is reopened.
    async fn flush(&self) -> Result<(), CoreError> {
        self.store.flush().await.map_err(|e| {
            tracing::error!(error = %e, "cannot flush the metadata store after a change of environments");
            CoreError::from(e)
        })
    }

    /// When each project was added, and a warning for each name holding `--` (such names are
    /// refused since; those of older stores keep working, and where two sites reach the same
    /// host the older project keeps it). Projects added later are younger than all of these.
    fn project_ages(&self, envs: &[EnvironmentRecord]) -> Result<ProjectAges, CoreError> {
        let projects = self
            .store
            .map_projects_with_last_build(|p, _| (p.name, p.created_at))?;
        for (name, _) in projects.iter().filter(|(n, _)| n.has_site_host_separator()) {
            tracing::warn!(project = %name, "{}", legacy_name_warning("project"));
        }
        for env in envs.iter().filter(|e| e.name.contains(SITE_HOST_SEPARATOR)) {
            tracing::warn!(project = %env.project, env = %env.name, "{}", legacy_name_warning("environment"));
        }
        Ok(ProjectAges::new(
            projects.into_iter().map(|(n, t)| (String::from(n), t)),
        ))
    }

    /// Fills the site table from the store (on start). Environments whose version cannot be
    /// loaded are logged and left out.
    pub async fn load_all(&self) -> Result<(), CoreError> {
        let envs = self.store.all_environments()?;
        self.sites.set_project_ages(self.project_ages(&envs)?);
        let mut changes = Vec::with_capacity(envs.len());
        let previews: Vec<SiteKey> = envs
            .iter()
            .filter(|e| e.preview)
            .map(|e| SiteKey::new(&e.project, &e.name))
            .collect();
        for env in envs {
            let loaded = match (
                ProjectName::new(env.project.as_str()),
                VersionName::new(env.current.version.as_str()),
            ) {
                (Ok(project), Ok(version)) => self.load_version(&project, &version).await,
                (Err(e), _) | (_, Err(e)) => Err(e.into()),
            };
            match loaded {
                Ok(site) => changes.push((SiteKey::new(&env.project, &env.name), Some(site))),
                Err(e) => tracing::warn!(
                    project = %env.project, env = %env.name, version = %env.current.version, error = %e,
                    "cannot serve a deployed version"
                ),
            }
        }
        let access = self.stored_access(&previews)?;
        let guard = self.sites.lock().await;
        self.sites.update_access(&guard, |a| *a = access);
        self.sites.apply(&guard, changes);
        Ok(())
    }

    /// The passwords in the store, ready for the site server, with the preview environments.
    fn stored_access(&self, previews: &[SiteKey]) -> Result<Access, CoreError> {
        let mut access = Access {
            preview_envs: previews.iter().cloned().collect(),
            ..Access::default()
        };
        for p in self.store.all_protections()? {
            let credential = match Credential::new(&p.phc) {
                Ok(c) => Arc::new(c),
                Err(e) => {
                    // Refusing everyone beats serving a protected site openly.
                    tracing::error!(project = %p.project, error = %e, "a stored site password cannot be read; its site answers 401 until `opus env protect` sets it again");
                    Arc::new(Credential::unusable())
                }
            };
            match p.target {
                ProtectionTarget::Env(env) => {
                    access
                        .envs
                        .insert(SiteKey::new(p.project.as_str(), env.as_str()), credential);
                }
                ProtectionTarget::Previews => {
                    access.previews.insert(p.project.to_string(), credential);
                }
            }
        }
        Ok(access)
    }

    /// Puts `credential` (a password's argon2 hash) in front of `target` of `project`: stored,
    /// then applied to the next request.
    #[instrument(skip(self, credential), err(Display))]
    pub async fn protect(
        &self,
        project: &ProjectName,
        target: &ProtectionTarget,
        credential: Credential,
    ) -> Result<(), CoreError> {
        let guard = self.sites.lock().await;
        self.store
            .set_protection(project, target, credential.phc())?;
        let credential = Arc::new(credential);
        self.sites.update_access(&guard, |a| match target {
            ProtectionTarget::Env(env) => {
                a.envs
                    .insert(SiteKey::new(project.as_str(), env.as_str()), credential);
            }
            ProtectionTarget::Previews => {
                a.previews.insert(project.to_string(), credential);
            }
        });
        drop(guard);
        self.flush().await?;
        self.publish(Target::Project(project.to_string())).await;
        Ok(())
    }

    /// Removes the password in front of `target`; whether there was one.
    #[instrument(skip(self), err(Display))]
    pub async fn unprotect(
        &self,
        project: &ProjectName,
        target: &ProtectionTarget,
    ) -> Result<bool, CoreError> {
        let guard = self.sites.lock().await;
        let removed = self.store.remove_protection(project, target)?;
        self.sites.update_access(&guard, |a| match target {
            ProtectionTarget::Env(env) => {
                a.envs.remove(&SiteKey::new(project.as_str(), env.as_str()));
            }
            ProtectionTarget::Previews => {
                a.previews.remove(project.as_str());
            }
        });
        drop(guard);
        self.flush().await?;
        self.publish(Target::Project(project.to_string())).await;
        Ok(removed)
    }
}

/// The start-up warning for a name from before `--` was refused.
fn legacy_name_warning(kind: &str) -> String {
    format!(
        "this {kind} name holds {SITE_HOST_SEPARATOR:?}, which separates the environment from the project in site hosts, so one of its sites may share a host with another project's; the older project keeps a shared host; new names may not hold {SITE_HOST_SEPARATOR:?}"
    )
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use opus_core::artifact::Origin;
    use opus_core::model::{Project, Source};
    use opus_core::store::SiteOptions;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::sites::SiteCache;

    /// `GET /` of project `web`'s production site.
    async fn home(addr: std::net::SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.expect("read");
        raw
    }

    #[tokio::test]
    async fn a_rollback_to_a_version_that_cannot_load_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
        let web = ProjectName::new("web").expect("name");
        meta.create_project(&Project {
            name: web.clone(),
            source: Source::Git("https://example.com/web.git".into()),
            branch: "main".into(),
            created_at: SystemTime::now(),
            keep_versions: 0,
        })
        .expect("project");
        let files = dir.path().join("artifacts");
        let url = format!("file://{}", files.display());
        let artifacts = ArtifactStore::open(meta.clone(), &url, &[]).expect("artifact store");
        for v in ["1", "2"] {
            let src = dir.path().join("src").join(v);
            std::fs::create_dir_all(&src).expect("mkdir");
            std::fs::write(src.join("index.html"), format!("version {v}")).expect("write");
            let origin = Origin {
                build_id: 1,
                commit: String::new(),
                store: opus_core::model::StoreName::default_store(),
            };
            artifacts
                .store_dir(
                    &web,
                    &opus_core::model::VersionName::new(v).expect("version"),
                    &src,
                    &origin,
                    &SiteOptions::default(),
                )
                .await
                .expect("stored");
        }
        let metrics = Metrics::new();
        let cache = SiteCache::load(&dir.path().join("site-cache"), 1 << 20, metrics.clone())
            .expect("cache");
        let sites = Arc::new(SiteServer::new("localhost", metrics.clone(), cache));
        let deploys = Deployer::new(
            meta.clone(),
            artifacts.clone(),
            sites.clone(),
            metrics.clone(),
        );
        for v in ["1", "2"] {
            deploys
                .deploy(
                    &web,
                    &EnvName::production(),
                    &VersionName::new(v).expect("version"),
                    "test",
                    ReleaseReason::Deploy,
                    false,
                )
                .await
                .expect("deploy");
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(sites.clone().run(
            listener,
            crate::sites::ConnectionLimits::default(),
            std::future::pending(),
        ));
        assert!(home(addr).await.ends_with("version 2"));

        // Version 1's files are gone from the store, and no deployer has it loaded.
        std::fs::remove_dir_all(files.join("web").join("1")).expect("remove files");
        std::fs::remove_file(files.join("web").join("manifest").join("1.json"))
            .expect("remove manifest");
        let fresh = Deployer::new(meta.clone(), artifacts, sites, metrics);
        fresh
            .rollback(&web, &EnvName::production(), None, "test")
            .await
            .expect_err("version 1 cannot be loaded");

        let env = meta.environment(&web, &EnvName::production()).expect("env");
        assert_eq!((env.current.version.as_str(), env.pinned), ("2", false));
        assert_eq!(meta.releases(&web, None, 0).expect("releases").len(), 2);
        assert!(home(addr).await.ends_with("version 2"));
    }
}
