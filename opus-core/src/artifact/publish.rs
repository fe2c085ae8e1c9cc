//! Publishing a folder built elsewhere: the store's part of the three-step protocol.
//!
//! 1. [`ArtifactStore::plan_publish`]: the client's manifest (path, size, sha256, mode of every
//!    file) is checked; the answer lists the digests whose content no stored object holds.
//! 2. The client uploads the content of each missing digest; opusd's publish sessions check each
//!    against its digest and size and stage it in a folder, as a file named by its digest.
//! 3. [`ArtifactStore::store_published`]: the version is stored like a build's output, with the
//!    staged content written and content the store already had copied from where it is.
//!
//! A publish whose content is already stored uploads nothing. The sessions between the steps
//! (upload ids, staging folders, expiry) are opusd's, not the store's.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use tracing::{info, instrument};

use super::write::{Content, PendingFile};
use super::{ArtifactStore, ManifestFile, Origin, StoredVersion, is_sha256_hex};
use crate::archive::{check_relative_path, normalize_mode};
use crate::error::ArtifactError;
use crate::model::{ProjectName, StoreName, VersionName};
use crate::store::SiteOptions;

/// A publish checked against the store by [`ArtifactStore::plan_publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishPlan {
    /// The project.
    pub project: ProjectName,
    /// The version to create.
    pub version: VersionName,
    /// The configured store to put it in.
    pub store: StoreName,
    /// Every file, sorted by path.
    pub files: Vec<ManifestFile>,
    /// Digest -> size of the content the client must upload, each once.
    pub missing: BTreeMap<String, u64>,
}

impl ArtifactStore {
    /// Step 1 of publishing: checks the manifest and answers the digests to upload.
    ///
    /// Errors: invalid project or version names (`Model`), `ProjectNotFound`, `VersionExists`,
    /// unsafe paths (`Archive`), `InvalidManifest` for duplicate paths or malformed digests,
    /// `UnknownStore`.
    #[instrument(skip(self, files), fields(files = files.len()))]
    pub fn plan_publish(
        &self,
        project: &str,
        version: &str,
        files: Vec<ManifestFile>,
        store: &StoreName,
    ) -> Result<PublishPlan, ArtifactError> {
        let project = ProjectName::new(project)?;
        let version = VersionName::new(version)?;
        self.check_store(store)?;
        self.meta().get_project(&project)?;
        if self.meta().get_version(&project, &version)?.is_some()
            || self.is_inflight(project.as_str(), version.as_str())
        {
            return Err(ArtifactError::VersionExists {
                project: project.to_string(),
                version: version.to_string(),
            });
        }
        if files.is_empty() {
            return Err(ArtifactError::InvalidManifest(
                "it lists no files; there is nothing to publish".into(),
            ));
        }
        let mut files = files;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            check_relative_path(&f.path)?;
            if i > 0 && files[i - 1].path == f.path {
                return Err(ArtifactError::InvalidManifest(format!(
                    "{:?} is listed twice",
                    f.path
                )));
            }
            if !is_sha256_hex(&f.sha256) {
                return Err(ArtifactError::InvalidManifest(format!(
                    "the sha256 of {:?} is not 64 lowercase hex digits",
                    f.path
                )));
            }
            if let Some(prev) = sizes.insert(f.sha256.clone(), f.size) {
                if prev != f.size {
                    return Err(ArtifactError::InvalidManifest(format!(
                        "sha256 {} is listed with two sizes ({prev} and {})",
                        f.sha256, f.size
                    )));
                }
            }
        }
        let mut missing = BTreeMap::new();
        for (sha, size) in sizes {
            if self.meta().blob_holder(store, &sha)?.is_none() {
                missing.insert(sha, size);
            }
        }
        info!(missing = missing.len(), "publish planned");
        Ok(PublishPlan {
            project,
            version,
            store: store.clone(),
            files,
            missing,
        })
    }

    /// Step 3 of publishing: stores the version (files, archive, manifest, metadata commit), the
    /// content of each missing digest taken from `staged/<sha256>`.
    ///
    /// Errors: `ContentMissing` when a digest asked for is not staged (or content the store had
    /// vanished since); every error of storing a version.
    #[instrument(skip(self, plan), fields(project = %plan.project, version = %plan.version))]
    pub async fn store_published(
        &self,
        plan: &PublishPlan,
        staged: &Path,
    ) -> Result<StoredVersion, ArtifactError> {
        let not_received: Vec<&ManifestFile> = plan
            .files
            .iter()
            .filter(|f| plan.missing.contains_key(&f.sha256) && !staged.join(&f.sha256).is_file())
            .collect();
        if let Some(first) = not_received.first() {
            let count = not_received
                .iter()
                .map(|f| &f.sha256)
                .collect::<HashSet<_>>()
                .len();
            return Err(ArtifactError::ContentMissing {
                count,
                first: first.path.clone(),
            });
        }
        let files = plan
            .files
            .iter()
            .map(|f| PendingFile {
                path: f.path.clone(),
                mode: normalize_mode(f.mode),
                content: if plan.missing.contains_key(&f.sha256) {
                    Content::Disk(staged.join(&f.sha256))
                } else {
                    Content::Stored {
                        sha256: f.sha256.clone(),
                    }
                },
            })
            .collect();
        let origin = Origin {
            build_id: 0,
            commit: String::new(),
            store: plan.store.clone(),
        };
        // A publish carries no opus.yml: the version is served with the default options.
        self.store_files(
            &plan.project,
            &plan.version,
            files,
            &origin,
            &SiteOptions::default(),
        )
        .await
    }
}
