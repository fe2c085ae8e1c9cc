//! Versions stored by a build running elsewhere (`opusd runner` in a Kubernetes Job).
//!
//! The runner has no metadata store, so storing is split in two:
//!
//! 1. The runner writes the objects itself with an [`Uploader`]: files, archive, manifest (the
//!    same writer as [`ArtifactStore::store_dir`], without the content index, so every file is
//!    written; no dedup).
//! 2. opusd, holding the version's [`Reservation`] since before the build started, commits the
//!    metadata when the runner reports success ([`Reservation::commit_uploaded`]), after reading
//!    the manifest from the store (not from the runner) and checking it: its project, version,
//!    build and commit are the ones assigned, its paths are safe, and every object it names exists
//!    with the size it claims.
//!
//! A runner is not trusted with the content index: the digests it wrote are not added to
//! `blob_refs`, so no later build or publish copies content whose digest only a runner vouched
//! for. (Files of those versions are still read, served and verified as any other.)

use std::collections::HashSet;
use std::path::Path as FsPath;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use tracing::{info, instrument, warn};

use super::write::{self, delete_objects, record_of};
use super::{
    ArtifactStore, Backend, InflightGuard, Origin, StoredVersion, VersionManifest, is_sha256_hex,
};
use crate::archive::check_relative_path;
use crate::error::ArtifactError;
use crate::model::{ProjectName, StoreName, VersionName};
use crate::store::SiteOptions;

/// Objects checked at once when a runner's upload is committed.
const CHECKS_AT_ONCE: usize = 16;

/// Writes a version's objects into one object store, with no metadata store: what `opusd runner`
/// uses to upload a build's output. Opening one touches nothing.
pub struct Uploader {
    backend: Backend,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("url", &self.backend.url)
            .finish_non_exhaustive()
    }
}

/// What an [`Uploader`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// The manifest, as stored.
    pub manifest: VersionManifest,
    /// Files written.
    pub files: u32,
    /// Bytes of those files.
    pub bytes: u64,
}

impl Uploader {
    /// The store at `url`, with `settings` (environment-style names such as `AWS_ACCESS_KEY_ID`:
    /// what opusd hands a runner from its own environment) over the process environment and
    /// under the URL's query.
    pub fn open(url: &str, settings: &[(String, String)]) -> Result<Uploader, ArtifactError> {
        Ok(Uploader {
            backend: Backend::from_url_with(&StoreName::default_store(), url, settings)?,
        })
    }

    /// Writes folder `dir` as `version` of `project`: files, archive, manifest. Refuses a version
    /// whose manifest is already in the store (`VersionExists`), so a stored version is never
    /// overwritten; on failure removes what it wrote.
    #[instrument(skip_all, fields(project = %project, version = %version, build = origin.build_id))]
    pub async fn upload_dir(
        &self,
        project: &ProjectName,
        version: &VersionName,
        dir: &FsPath,
        origin: &Origin,
    ) -> Result<Uploaded, ArtifactError> {
        let backend = &self.backend;
        let manifest_key = backend.manifest_key(project.as_str(), version.as_str())?;
        match backend.store.head(&manifest_key).await {
            Ok(_) => {
                return Err(ArtifactError::VersionExists {
                    project: project.to_string(),
                    version: version.to_string(),
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(backend.err(format!("reading {manifest_key}"))(e)),
        }
        let pending = write::pending_files(dir).await?;
        match backend
            .write_objects(None, project, version, pending, origin)
            .await
        {
            Ok(written) => {
                let manifest = written.manifest;
                Ok(Uploaded {
                    files: u32::try_from(manifest.files.len()).unwrap_or(u32::MAX),
                    bytes: manifest.files.iter().map(|f| f.size).sum(),
                    manifest,
                })
            }
            Err(e) => {
                if let Err(c) = delete_objects(backend, project.as_str(), version.as_str()).await {
                    warn!(error = %c, "cleanup of a failed upload failed");
                }
                Err(e)
            }
        }
    }
}

/// A version being produced by a build elsewhere: held by opusd from before the build starts until
/// it ends, so that nothing else stores the same version meanwhile. Dropping it releases the name.
pub struct Reservation {
    artifacts: ArtifactStore,
    _guard: InflightGuard,
    project: ProjectName,
    version: VersionName,
    store: StoreName,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("project", &self.project)
            .field("version", &self.version)
            .field("store", &self.store)
            .finish()
    }
}

impl ArtifactStore {
    /// Reserves `version` of `project` in store `store` for a build that
    /// stores it from elsewhere. `VersionExists` when it is stored, `VersionBusy` when another
    /// build or publish is storing it, `UnknownStore`, `ProjectNotFound`.
    pub fn reserve_version(
        &self,
        project: &ProjectName,
        version: &VersionName,
        store: &StoreName,
    ) -> Result<Reservation, ArtifactError> {
        self.check_store(store)?;
        self.meta().get_project(project)?;
        let guard = self.reserve(project.as_str(), version.as_str())?;
        if self.meta().get_version(project, version)?.is_some() {
            return Err(ArtifactError::VersionExists {
                project: project.to_string(),
                version: version.to_string(),
            });
        }
        Ok(Reservation {
            artifacts: self.clone(),
            _guard: guard,
            project: project.clone(),
            version: version.clone(),
            store: store.clone(),
        })
    }

    /// The URL of a configured store, for a runner to write to.
    pub fn store_url(&self, name: &StoreName) -> Result<String, ArtifactError> {
        Ok(self.backend(name)?.url.clone())
    }
}

impl Reservation {
    /// The reserved version.
    pub fn version(&self) -> &VersionName {
        &self.version
    }

    /// The store it goes to.
    pub fn store(&self) -> &StoreName {
        &self.store
    }

    /// Commits a version a runner uploaded: reads its manifest from the store, checks it against
    /// what was assigned (`origin`) and the objects against it, then commits the record (and the
    /// `version.stored` event, and the version's site options `options`) and flushes. Errors name what is wrong; nothing is committed then.
    #[instrument(skip_all, fields(project = %self.project, version = %self.version, build = origin.build_id))]
    pub async fn commit_uploaded(
        &self,
        origin: &Origin,
        options: &SiteOptions,
    ) -> Result<StoredVersion, ArtifactError> {
        let artifacts = &self.artifacts;
        let backend = artifacts.backend(&self.store)?;
        let (project, version) = (self.project.as_str(), self.version.as_str());
        let _shared = artifacts.inner.delete_lock.read().await;
        let manifest_key = backend.manifest_key(project, version)?;
        let bytes = match backend.store.get(&manifest_key).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(backend.err(format!("reading {manifest_key}")))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ArtifactError::UploadInvalid(format!(
                    "the store {} has no manifest at {manifest_key}: the runner wrote elsewhere \
                     (build pods must reach the same store as opusd; a file:// store on opusd's \
                     disk is not shared with them, use s3://, gs:// or az://)",
                    backend.url
                )));
            }
            Err(e) => return Err(backend.err(format!("reading {manifest_key}"))(e)),
        };
        let manifest: VersionManifest =
            serde_json::from_slice(&bytes).map_err(|e| ArtifactError::ManifestCorrupt {
                key: manifest_key.to_string(),
                detail: e.to_string(),
            })?;
        check_uploaded_manifest(&manifest, &self.project, &self.version, origin)?;

        let mut keys = Vec::with_capacity(manifest.files.len() + 1);
        for f in &manifest.files {
            keys.push((backend.file_key(project, version, &f.path)?, f.size));
        }
        keys.push((
            backend.archive_key(project, version)?,
            manifest.archive.size,
        ));
        futures::stream::iter(keys.into_iter().map(|(key, size)| async move {
            match backend.store.head(&key).await {
                Ok(meta) if meta.size == size => Ok(()),
                Ok(meta) => Err(ArtifactError::UploadInvalid(format!(
                    "{key} has {} bytes in the store, the manifest says {size}",
                    meta.size
                ))),
                Err(object_store::Error::NotFound { .. }) => Err(ArtifactError::UploadInvalid(
                    format!("{key}, listed in the manifest, is not in the store"),
                )),
                Err(e) => Err(backend.err(format!("reading {key}"))(e)),
            }
        }))
        .buffer_unordered(CHECKS_AT_ONCE)
        .try_collect::<Vec<()>>()
        .await?;

        let options = super::rules::with_file_rules(backend, &manifest, options).await?;
        let record = record_of(&manifest, &backend.name);
        // No content index entries: see the module documentation.
        if !artifacts.meta().commit_version(&record, &[], &options)? {
            return Err(ArtifactError::VersionExists {
                project: project.to_owned(),
                version: version.to_owned(),
            });
        }
        artifacts.meta().flush().await?;
        info!(
            files = record.file_count,
            size = record.size,
            "uploaded version committed"
        );
        Ok(StoredVersion {
            files_written: record.file_count,
            bytes_written: record.size,
            files_copied: 0,
            bytes_copied: 0,
            record,
        })
    }

    /// Removes the objects a runner wrote for this version when the version was not committed (a
    /// failed or cancelled build, an upload that did not check out). Does nothing once committed.
    pub async fn discard(&self) -> Result<(), ArtifactError> {
        let artifacts = &self.artifacts;
        if artifacts
            .meta()
            .get_version(&self.project, &self.version)?
            .is_some()
        {
            return Ok(());
        }
        let backend = artifacts.backend(&self.store)?;
        delete_objects(backend, self.project.as_str(), self.version.as_str()).await
    }
}

/// What a runner's manifest must be: the assigned project, version, build and commit, safe and
/// unique paths, well-formed digests.
fn check_uploaded_manifest(
    manifest: &VersionManifest,
    project: &ProjectName,
    version: &VersionName,
    origin: &Origin,
) -> Result<(), ArtifactError> {
    let invalid = |what: String| Err(ArtifactError::UploadInvalid(what));
    if manifest.project != *project || manifest.version != *version {
        return invalid(format!(
            "the manifest is for {}@{}, not {project}@{version}",
            manifest.project, manifest.version
        ));
    }
    if manifest.build_id != origin.build_id || manifest.commit != origin.commit {
        return invalid(format!(
            "the manifest names build {} at commit {:?}, not build {} at {:?}",
            manifest.build_id, manifest.commit, origin.build_id, origin.commit
        ));
    }
    if !is_sha256_hex(&manifest.archive.sha256) {
        return invalid("the archive's sha256 is not 64 lowercase hex digits".into());
    }
    let mut seen = HashSet::with_capacity(manifest.files.len());
    let mut previous: Option<&str> = None;
    for f in &manifest.files {
        check_relative_path(&f.path)?;
        if previous.is_some_and(|p| p >= f.path.as_str()) || !seen.insert(f.path.as_str()) {
            return invalid(format!(
                "the files are not sorted and unique at {:?}",
                f.path
            ));
        }
        previous = Some(&f.path);
        if !is_sha256_hex(&f.sha256) {
            return invalid(format!(
                "the sha256 of {:?} is not 64 lowercase hex digits",
                f.path
            ));
        }
    }
    Ok(())
}
