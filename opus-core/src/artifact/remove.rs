//! Removing versions: on request, by retention, and orphans of interrupted writes.
//!
//! Order: the metadata commit first (record, content index entries and the `version.deleted`
//! event), then the objects. A crash in between leaves orphans, never an index entry or a record
//! naming a deleted object.

use std::collections::{HashMap, HashSet};

use object_store::ObjectStore;
use object_store::path::Path;
use tracing::{info, instrument, warn};

use super::write::delete_objects;
use super::{ArtifactStore, Backend, read::read_manifest};
use crate::error::ArtifactError;
use crate::model::{ProjectName, StoreName, VersionName, VersionRecord};
use crate::store::VersionRemoval;

/// What [`ArtifactStore::remove_orphans`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrphanReport {
    /// `(project, version)` of every orphan version removed.
    pub versions: Vec<(String, String)>,
}

impl ArtifactStore {
    /// Deletes a version: record, index entries and event in one commit, then its objects.
    /// A version an environment points at, or would roll back to, is `VersionProtected`: the
    /// metadata commit refuses it ([`crate::store::MetaStore::remove_version`]), so no deploy can
    /// point at a version being deleted.
    #[instrument(skip(self))]
    pub async fn delete_version(
        &self,
        name: &ProjectName,
        version_name: &VersionName,
        reason: &str,
    ) -> Result<VersionRecord, ArtifactError> {
        let _exclusive = self.inner.delete_lock.write().await;
        let record = self.version(name, version_name)?;
        let (project, version) = (name.as_str(), version_name.as_str());
        let backend = self.backend(&record.store)?;
        let (blobs, scan) = match read_manifest(backend, &record).await {
            Ok(m) => {
                let mut blobs = Vec::with_capacity(m.files.len());
                for f in &m.files {
                    blobs.push((
                        f.sha256.clone(),
                        backend.file_key(project, version, &f.path)?.to_string(),
                    ));
                }
                (blobs, None)
            }
            Err(e) => {
                warn!(error = %e, "manifest unreadable; scanning the content index instead");
                (Vec::new(), Some(backend.files_prefix(project, version)))
            }
        };
        let record = match self.meta().remove_version(
            name,
            version_name,
            &blobs,
            scan.as_deref(),
            reason,
        )? {
            VersionRemoval::Removed(record) => record,
            VersionRemoval::NotFound => {
                return Err(ArtifactError::VersionNotFound {
                    project: project.to_owned(),
                    version: version.to_owned(),
                });
            }
            VersionRemoval::Protected => {
                return Err(ArtifactError::VersionProtected {
                        project: project.to_owned(),
                        version: version.to_owned(),
                        why: "an environment points at it or at the release after it (deploy another version first)".into(),
                    });
            }
        };
        // The removal is durable before any object goes, so a crash never brings back a record
        // whose objects are gone.
        self.meta().flush().await?;
        if let Err(e) = delete_objects(backend, project, version).await {
            warn!(error = %e, "deleting the objects failed; they are removed as orphans on the next start");
        }
        info!(reason, "version deleted");
        Ok(record)
    }

    /// Deletes every version of `project` from every store, for the project's removal: the
    /// records and content index entries in one commit, then the objects, and also the objects
    /// of versions that never committed. No version is protected (the project's environments go
    /// with it). Returns the records removed.
    #[instrument(skip(self))]
    pub async fn delete_project_versions(
        &self,
        name: &ProjectName,
    ) -> Result<Vec<VersionRecord>, ArtifactError> {
        let project = name.as_str();
        let _exclusive = self.inner.delete_lock.write().await;
        let prefixes: Vec<(StoreName, String)> = self
            .inner
            .backends
            .values()
            .map(|b| (b.name.clone(), b.project_prefix(project)))
            .collect();
        let removed = self
            .meta()
            .remove_project_versions(name, &prefixes, "project removed")?;
        // The removal is durable before any object goes (as in `delete_version`).
        self.meta().flush().await?;
        for backend in self.inner.backends.values() {
            let mut versions: HashSet<String> = removed
                .iter()
                .filter(|r| r.store == backend.name)
                .map(|r| r.version.to_string())
                .collect();
            // Versions that never committed, but only names Opus could have written.
            versions.extend(
                stored_versions(backend)
                    .await?
                    .into_iter()
                    .filter(|(p, v)| p == project && VersionName::new(v.as_str()).is_ok())
                    .map(|(_, v)| v),
            );
            for version in versions {
                if self.is_inflight(project, &version) {
                    continue;
                }
                if let Err(e) = delete_objects(backend, project, &version).await {
                    warn!(store = %backend.name, %version, error = %e, "deleting the objects failed; they are removed as orphans on the next start");
                }
            }
            if let Some(root) = &backend.local_root {
                remove_empty_dirs(&root.join(project)).await;
            }
        }
        info!(
            count = removed.len(),
            "every version of the project deleted"
        );
        Ok(removed)
    }

    /// Keeps the newest `keep` versions of `project` and deletes the older ones, except those an
    /// environment points at or would roll back to (so more than `keep` can remain). `keep == 0`
    /// keeps everything. Returns the versions deleted.
    #[instrument(skip(self))]
    pub async fn apply_retention(
        &self,
        project: &ProjectName,
        keep: usize,
    ) -> Result<Vec<VersionName>, ArtifactError> {
        if keep == 0 {
            return Ok(Vec::new());
        }
        let versions = self.list_versions(project)?;
        // Skips reading the manifests of protected versions; the removal itself checks again.
        let protected = self.meta().protected_versions(project)?;
        let mut deleted = Vec::new();
        for record in versions.into_iter().skip(keep) {
            if protected.contains(record.version.as_str()) {
                continue;
            }
            match self
                .delete_version(project, &record.version, "retention")
                .await
            {
                Ok(_) => deleted.push(record.version),
                Err(
                    ArtifactError::VersionNotFound { .. } | ArtifactError::VersionProtected { .. },
                ) => {}
                Err(e) => return Err(e),
            }
        }
        if !deleted.is_empty() {
            info!(count = deleted.len(), keep, "retention deleted versions");
        }
        Ok(deleted)
    }

    /// Removes objects of versions that never committed (opusd stopped while storing them) from
    /// every store. Versions being stored right now are left alone. Run on start.
    #[instrument(skip(self))]
    pub async fn remove_orphans(&self) -> Result<OrphanReport, ArtifactError> {
        // Exclusive: no version commits while the sweep compares objects with records.
        let _exclusive = self.inner.delete_lock.write().await;
        let mut known: HashMap<StoreName, HashSet<(String, String)>> = HashMap::new();
        for r in self.meta().all_versions()? {
            known
                .entry(r.store.clone())
                .or_default()
                .insert((r.project.to_string(), r.version.to_string()));
        }
        let mut report = OrphanReport::default();
        for backend in self.inner.backends.values() {
            let empty = HashSet::new();
            let known = known.get(&backend.name).unwrap_or(&empty);
            for (project, version) in stored_versions(backend).await? {
                if known.contains(&(project.clone(), version.clone()))
                    || self.is_inflight(&project, &version)
                {
                    continue;
                }
                // Only what Opus could have written: a registered project and a valid version
                // name, so a store URL pointing at a folder with other content never loses it.
                let ours = VersionName::new(version.as_str()).is_ok()
                    && ProjectName::new(project.as_str())
                        .is_ok_and(|p| self.meta().get_project(&p).is_ok());
                if !ours {
                    continue;
                }
                info!(store = %backend.name, %project, %version, "removing an orphan version");
                delete_objects(backend, &project, &version).await?;
                report.versions.push((project, version));
            }
        }
        Ok(report)
    }
}

/// Removes the project's folder of a local store and its `archive` and `manifest` folders once
/// they are empty; anything else found there is not Opus's, so it stays (with the folder).
async fn remove_empty_dirs(project_dir: &std::path::Path) {
    for dir in [project_dir.join("archive"), project_dir.join("manifest")] {
        // Fails while not empty or already gone; either way there is nothing to do.
        let _ = tokio::fs::remove_dir(&dir).await;
    }
    let _ = tokio::fs::remove_dir(project_dir).await;
}

/// Every `(project, version)` with an object in `backend`: a files folder, an archive or a
/// manifest, including staging files of interrupted local writes.
async fn stored_versions(backend: &Backend) -> Result<HashSet<(String, String)>, ArtifactError> {
    let mut out = HashSet::new();
    if let Some(root) = &backend.local_root {
        let io = |context: String| move |source| ArtifactError::Io { context, source };
        let projects = match std::fs::read_dir(root) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(format!("cannot read {}", root.display()))(e)),
        };
        for project in projects.flatten() {
            let Some(pname) = project.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(entries) = std::fs::read_dir(project.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                match name.as_str() {
                    "archive" | "manifest" => {
                        let suffix = if name == "archive" {
                            ".tar.gz"
                        } else {
                            ".json"
                        };
                        let Ok(files) = std::fs::read_dir(entry.path()) else {
                            continue;
                        };
                        for f in files.flatten() {
                            let file = f.file_name().to_string_lossy().into_owned();
                            let base = file.split('#').next().unwrap_or_default();
                            if let Some(v) = base.strip_suffix(suffix) {
                                out.insert((pname.clone(), v.to_owned()));
                            }
                        }
                    }
                    _ if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) => {
                        out.insert((pname.clone(), name));
                    }
                    _ => {}
                }
            }
        }
        return Ok(out);
    }
    let root = if backend.prefix.is_empty() {
        None
    } else {
        Some(Path::from(backend.prefix.as_str()))
    };
    let top = backend
        .store
        .list_with_delimiter(root.as_ref())
        .await
        .map_err(backend.err("listing projects"))?;
    for project_prefix in top.common_prefixes {
        let Some(pname) = project_prefix.filename().map(str::to_owned) else {
            continue;
        };
        let inner = backend
            .store
            .list_with_delimiter(Some(&project_prefix))
            .await
            .map_err(backend.err(format!("listing {pname}")))?;
        for sub in inner.common_prefixes {
            let Some(name) = sub.filename().map(str::to_owned) else {
                continue;
            };
            match name.as_str() {
                "archive" | "manifest" => {
                    let suffix = if name == "archive" {
                        ".tar.gz"
                    } else {
                        ".json"
                    };
                    let files = backend
                        .store
                        .list_with_delimiter(Some(&sub))
                        .await
                        .map_err(backend.err(format!("listing {sub}")))?;
                    for f in files.objects {
                        if let Some(v) = f.location.filename().and_then(|n| n.strip_suffix(suffix))
                        {
                            out.insert((pname.clone(), v.to_owned()));
                        }
                    }
                }
                _ => {
                    out.insert((pname.clone(), name));
                }
            }
        }
    }
    Ok(out)
}
