//! Writes the site pointers that site replicas (`opusd sites`) follow: after every committed change
//! of what an environment serves, its pointer in the default artifact store
//! (`_opus/sites/<project>/<env>.json`, see [`opus_core::artifact::pointers`]) is rewritten from
//! the metadata store, or deleted when the environment is gone.
//!
//! A pointer is always written from the state the metadata store holds when it is written, one
//! write at a time, so the last write of a pointer reflects the last commit whatever order the
//! changes arrived in. A write that fails does not undo or fail the change (it is committed and
//! served by opusd): it is logged, counted (`opus_site_pointer_failures_total`), kept pending and
//! retried in the background with backoff until the store takes it; on start, every pointer is
//! rewritten and stale ones deleted, so a change a crash cut off before its write is not lost
//! either.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opus_core::CoreError;
use opus_core::artifact::pointers::{POINTER_FORMAT, SitePointer, SiteStore};
use opus_core::error::{ArtifactError, StoreError};
use opus_core::model::{EnvName, ProjectName, StoreName, VersionName};
use opus_core::store::{MetaStore, ProtectionTarget};

use crate::metrics::Metrics;

/// The first wait before a failed write is retried; doubled up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
/// The longest wait between retries.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What to rewrite.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// One environment's pointer.
    Env(String, String),
    /// Every pointer of a project (a password changed, or the project was removed).
    Project(String),
    /// Every pointer (on start).
    All,
}

/// Writes site pointers; cheap to clone.
#[derive(Clone)]
pub struct PointerPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the state is read from.
    store: MetaStore,
    /// Where pointers are written.
    sites: SiteStore,
    /// The sites' own domain: custom domains under it are not served (as `DomainRouter` does).
    domain: String,
    /// One write pass at a time.
    writing: tokio::sync::Mutex<()>,
    /// Targets not written yet (new, or failed and waiting for a retry).
    pending: Mutex<BTreeSet<Target>>,
    /// Whether a retry task is running.
    retrying: Mutex<bool>,
    /// Failure counter.
    metrics: Metrics,
}

impl PointerPublisher {
    /// A publisher reading `store` and writing to `sites`, for sites under `domain`.
    pub fn new(
        store: MetaStore,
        sites: SiteStore,
        domain: &str,
        metrics: Metrics,
    ) -> PointerPublisher {
        PointerPublisher {
            inner: Arc::new(Inner {
                store,
                sites,
                domain: domain.to_owned(),
                writing: tokio::sync::Mutex::new(()),
                pending: Mutex::new(BTreeSet::new()),
                retrying: Mutex::new(false),
                metrics,
            }),
        }
    }

    /// Rewrites `targets` now (after their change was committed). A failure is logged and
    /// retried in the background; the caller's change stands either way. Returns whether
    /// everything pending was written.
    pub async fn publish(&self, targets: impl IntoIterator<Item = Target>) -> bool {
        self.lock_pending().extend(targets);
        if self.write_pending().await {
            return true;
        }
        self.start_retrying();
        false
    }

    /// Rewrites every pointer in the background (on start), retrying until the store takes it.
    pub fn publish_all_in_background(&self) {
        let this = self.clone();
        tokio::spawn(async move { this.publish([Target::All]).await });
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, BTreeSet<Target>> {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes what is pending, one pass at a time; failed targets stay pending. Whether nothing
    /// is pending after.
    async fn write_pending(&self) -> bool {
        let _writing = self.inner.writing.lock().await;
        let targets = std::mem::take(&mut *self.lock_pending());
        let mut failed = Vec::new();
        for target in targets {
            if let Err(e) = self.write(&target).await {
                tracing::error!(?target, error = %e, "cannot write a site pointer; site replicas keep serving the previous one until a retry succeeds");
                self.inner.metrics.site_pointer_failures.inc();
                failed.push(target);
            }
        }
        let mut pending = self.lock_pending();
        pending.extend(failed);
        pending.is_empty()
    }

    /// Starts the retry task unless it runs: it writes what is pending with backoff until
    /// nothing is.
    fn start_retrying(&self) {
        {
            let mut running = self
                .inner
                .retrying
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *running {
                return;
            }
            *running = true;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut wait = RETRY_FIRST;
            loop {
                tokio::time::sleep(wait).await;
                if this.write_pending().await {
                    tracing::info!("pending site pointers written");
                    break;
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
            *this
                .inner
                .retrying
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = false;
            // A target failed again between the last pass and clearing the flag: go on.
            if !this.lock_pending().is_empty() {
                this.start_retrying();
            }
        });
    }

    /// Whether any pointer is waiting to be written.
    pub fn has_pending(&self) -> bool {
        !self.lock_pending().is_empty()
    }

    async fn write(&self, target: &Target) -> Result<(), CoreError> {
        match target {
            Target::Env(project, env) => self.write_env(project, env).await,
            Target::Project(project) => self.sync(Some(project)).await,
            Target::All => self.sync(None).await,
        }
    }

    /// Writes one environment's pointer, or deletes it when the environment is gone.
    async fn write_env(&self, project: &str, env: &str) -> Result<(), CoreError> {
        match self.pointer(project, env)? {
            Some(p) => self.inner.sites.put_pointer(&p).await?,
            None => self.inner.sites.delete_pointer(project, env).await?,
        }
        Ok(())
    }

    /// Writes the pointer of every environment (of `project`, or all), and deletes the pointers
    /// of environments that no longer exist.
    async fn sync(&self, project: Option<&str>) -> Result<(), CoreError> {
        let listed = self.inner.sites.list_pointers(project).await?;
        let envs = match project {
            Some(p) => match ProjectName::new(p) {
                Ok(name) => match self.inner.store.environments(&name) {
                    Ok(envs) => envs,
                    Err(StoreError::ProjectNotFound(_)) => Vec::new(),
                    Err(e) => return Err(e.into()),
                },
                Err(_) => Vec::new(),
            },
            None => self.inner.store.all_environments()?,
        };
        let mut live = HashSet::with_capacity(envs.len());
        for env in &envs {
            live.insert(self.inner.sites.pointer_key(&env.project, &env.name)?);
            self.write_env(&env.project, &env.name).await?;
        }
        for stale in listed.into_iter().filter(|s| !live.contains(&s.key)) {
            self.inner.sites.delete(&stale.key).await?;
        }
        Ok(())
    }

    /// The pointer of `project`'s environment `env` as the metadata store has it now; `None`
    /// when the environment (or its project) does not exist.
    fn pointer(&self, project: &str, env: &str) -> Result<Option<SitePointer>, CoreError> {
        let store = &self.inner.store;
        let (Ok(name), Ok(env_name)) = (ProjectName::new(project), EnvName::new(env)) else {
            // Names from before today's rules are served by opusd, not replicas.
            tracing::warn!(
                project,
                env,
                "not a valid project or environment name today; no site pointer"
            );
            return Ok(None);
        };
        let record = match store.environment(&name, &env_name) {
            Ok(r) => r,
            Err(StoreError::EnvironmentNotFound { .. } | StoreError::ProjectNotFound(_)) => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let project_record = match store.get_project(&name) {
            Ok(p) => p,
            Err(StoreError::ProjectNotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let version = VersionName::new(record.current.version.as_str())
            .map_err(|e| CoreError::from(ArtifactError::from(e)))?;
        let version_store = store
            .get_version(&name, &version)?
            .map(|v| v.store)
            .unwrap_or_else(StoreName::default_store);
        let site = store.site_options(&name, &version)?;
        let mut password = None;
        let mut previews_password = None;
        for p in store.all_protections()? {
            if p.project != name {
                continue;
            }
            match p.target {
                ProtectionTarget::Env(e) if e.as_str() == env => password = Some(p.phc),
                ProtectionTarget::Env(_) => {}
                ProtectionTarget::Previews => previews_password = Some(p.phc),
            }
        }
        let domains = store
            .list_domains(Some(&name))?
            .into_iter()
            .filter(|d| d.env == env && !d.host.is_under(&self.inner.domain))
            .map(|d| d.host.as_str().to_owned())
            .collect();
        Ok(Some(SitePointer {
            format: POINTER_FORMAT,
            project: project.to_owned(),
            env: env.to_owned(),
            version: version.to_string(),
            store: version_store.to_string(),
            release: record.current.seq,
            preview: record.preview,
            site,
            password,
            previews_password,
            domains,
            project_created: project_record.created_at,
        }))
    }
}

#[cfg(test)]
mod tests;
