//! Publishing a folder built elsewhere, in three steps:
//!
//! 1. [`ArtifactStore::begin_publish`]: the client sends the manifest (path, size, sha256, mode of
//!    every file); the answer is the digests whose content no stored object holds.
//! 2. [`ArtifactStore::begin_blob`] / [`BlobUpload`]: the client uploads the content of each
//!    missing digest (several at once); each is staged on local disk and checked against its
//!    digest and size.
//! 3. [`ArtifactStore::commit_publish`]: the version is stored like a build's output, with content
//!    the store already had copied from where it is.
//!
//! A publish whose content is already stored uploads nothing. Sessions live in memory: a restart
//! or an hour without activity forgets them, and the client publishes again.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::Digest;
use tokio::io::AsyncWriteExt;
use tracing::{info, instrument};

use super::write::{Content, PendingFile};
use super::{ArtifactStore, ManifestFile, Origin, StoredVersion, is_sha256_hex, sha256_hex};
use crate::archive::{check_relative_path, normalize_mode};
use crate::error::ArtifactError;
use crate::model::{ProjectName, VersionName};
use crate::store::SiteOptions;

/// Idle time after which a publish is forgotten.
const SESSION_IDLE: Duration = Duration::from_secs(3600);

/// What [`ArtifactStore::begin_publish`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishStarted {
    /// Identifies the publish in the next steps.
    pub upload_id: String,
    /// Digests whose content must be uploaded, each once.
    pub missing: Vec<String>,
}

/// One publish in progress.
struct Session {
    project: ProjectName,
    version: VersionName,
    store: String,
    files: Vec<ManifestFile>,
    /// Digest -> size, of the content to upload.
    missing: HashMap<String, u64>,
    received: HashSet<String>,
    dir: PathBuf,
    touched: Instant,
}

/// The publishes in progress, by upload id.
#[derive(Default)]
pub(crate) struct Sessions {
    map: HashMap<String, Session>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl ArtifactStore {
    fn sessions(&self) -> Result<std::sync::MutexGuard<'_, Sessions>, ArtifactError> {
        self.inner
            .publishes
            .lock()
            .map_err(|_| ArtifactError::Task("publish sessions lock poisoned".into()))
    }

    /// Step 1 of publishing: checks the manifest and answers the digests to upload.
    ///
    /// Errors: invalid project or version names (`Model`), `ProjectNotFound`, `VersionExists`,
    /// unsafe paths (`Archive`), `InvalidManifest` for duplicate paths or malformed digests,
    /// `UnknownStore`.
    #[instrument(skip(self, files), fields(files = files.len()))]
    pub fn begin_publish(
        &self,
        project: &str,
        version: &str,
        files: Vec<ManifestFile>,
        store: &str,
    ) -> Result<PublishStarted, ArtifactError> {
        let project = ProjectName::new(project)?;
        let version = VersionName::new(version)?;
        let store = self.store_name(store)?;
        self.meta().get_project(project.as_str())?;
        if self
            .meta()
            .get_version(project.as_str(), version.as_str())?
            .is_some()
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
        let mut sizes: HashMap<String, u64> = HashMap::new();
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
        let mut missing = HashMap::new();
        for (sha, size) in sizes {
            if self.meta().blob_holder(&store, &sha)?.is_none() {
                missing.insert(sha, size);
            }
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let upload_id = sha256_hex(
            format!("{nanos}-{n}-{}-{project}-{version}", std::process::id()).as_bytes(),
        )[..32]
            .to_owned();
        let dir = self.inner.staging.join(&upload_id);
        std::fs::create_dir_all(&dir).map_err(|source| ArtifactError::Io {
            context: format!("cannot create {}", dir.display()),
            source,
        })?;
        let mut missing_list: Vec<String> = missing.keys().cloned().collect();
        missing_list.sort();
        info!(missing = missing_list.len(), "publish started");
        let mut sessions = self.sessions()?;
        let expired: Vec<String> = sessions
            .map
            .iter()
            .filter(|(_, s)| s.touched.elapsed() > SESSION_IDLE)
            .map(|(k, _)| k.clone())
            .collect();
        for id in expired {
            if let Some(s) = sessions.map.remove(&id) {
                let _ = std::fs::remove_dir_all(&s.dir);
            }
        }
        sessions.map.insert(
            upload_id.clone(),
            Session {
                project,
                version,
                store,
                files,
                missing,
                received: HashSet::new(),
                dir,
                touched: Instant::now(),
            },
        );
        Ok(PublishStarted {
            upload_id,
            missing: missing_list,
        })
    }

    /// Step 2 of publishing: starts receiving the content of digest `sha256`.
    pub async fn begin_blob(
        &self,
        upload_id: &str,
        sha256: &str,
    ) -> Result<BlobUpload, ArtifactError> {
        let (dir, size) = {
            let mut sessions = self.sessions()?;
            let session = sessions
                .map
                .get_mut(upload_id)
                .ok_or_else(|| ArtifactError::UploadNotFound(upload_id.to_owned()))?;
            session.touched = Instant::now();
            let Some(size) = session.missing.get(sha256) else {
                return Err(ArtifactError::ContentMismatch(format!(
                    "sha256 {sha256:?} was not asked for by BeginPublish"
                )));
            };
            (session.dir.clone(), *size)
        };
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{sha256}.part{n}"));
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|source| ArtifactError::Io {
                context: format!("cannot create {}", tmp.display()),
                source,
            })?;
        Ok(BlobUpload {
            store: self.clone(),
            upload_id: upload_id.to_owned(),
            sha256: sha256.to_owned(),
            expected_size: size,
            size: 0,
            hasher: sha2::Sha256::new(),
            file,
            final_path: dir.join(sha256),
            tmp,
        })
    }

    /// Step 3 of publishing: stores the version (files, archive, manifest, metadata commit).
    ///
    /// Errors: `UploadNotFound`; `ContentMissing` when a digest asked for was not uploaded (or
    /// content the store had vanished since); every error of storing a version.
    #[instrument(skip(self))]
    pub async fn commit_publish(&self, upload_id: &str) -> Result<StoredVersion, ArtifactError> {
        let session = self
            .sessions()?
            .map
            .remove(upload_id)
            .ok_or_else(|| ArtifactError::UploadNotFound(upload_id.to_owned()))?;
        let result = self.commit_session(&session).await;
        let _ = tokio::fs::remove_dir_all(&session.dir).await;
        result
    }

    async fn commit_session(&self, session: &Session) -> Result<StoredVersion, ArtifactError> {
        let not_received: Vec<&ManifestFile> = session
            .files
            .iter()
            .filter(|f| {
                session.missing.contains_key(&f.sha256) && !session.received.contains(&f.sha256)
            })
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
        let files = session
            .files
            .iter()
            .map(|f| PendingFile {
                path: f.path.clone(),
                mode: normalize_mode(f.mode),
                content: if session.received.contains(&f.sha256) {
                    Content::Disk(session.dir.join(&f.sha256))
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
            store: session.store.clone(),
        };
        // A publish carries no opus.yml: the version is served with the default options.
        self.store_files(
            &session.project,
            &session.version,
            files,
            &origin,
            &SiteOptions::default(),
        )
        .await
    }
}

/// The content of one digest being uploaded for a publish; see [`ArtifactStore::begin_blob`].
pub struct BlobUpload {
    store: ArtifactStore,
    upload_id: String,
    sha256: String,
    expected_size: u64,
    size: u64,
    hasher: sha2::Sha256,
    file: tokio::fs::File,
    tmp: PathBuf,
    final_path: PathBuf,
}

impl BlobUpload {
    /// Appends bytes; more than the manifest's size for this digest is `ContentMismatch`.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), ArtifactError> {
        self.size += data.len() as u64;
        if self.size > self.expected_size {
            let _ = tokio::fs::remove_file(&self.tmp).await;
            return Err(ArtifactError::ContentMismatch(format!(
                "more than the {} bytes announced for sha256 {}",
                self.expected_size, self.sha256
            )));
        }
        self.hasher.update(data);
        self.file
            .write_all(data)
            .await
            .map_err(|source| ArtifactError::Io {
                context: format!("cannot write {}", self.tmp.display()),
                source,
            })
    }

    /// Checks size and digest and keeps the content for the commit.
    pub async fn finish(mut self) -> Result<(), ArtifactError> {
        let io = |context: String| move |source| ArtifactError::Io { context, source };
        self.file
            .flush()
            .await
            .map_err(io(format!("cannot write {}", self.tmp.display())))?;
        drop(self.file);
        let actual = hex::encode(self.hasher.finalize());
        if self.size != self.expected_size || actual != self.sha256 {
            let _ = tokio::fs::remove_file(&self.tmp).await;
            return Err(ArtifactError::ContentMismatch(format!(
                "expected {} bytes with sha256 {}, received {} bytes with sha256 {actual}",
                self.expected_size, self.sha256, self.size
            )));
        }
        tokio::fs::rename(&self.tmp, &self.final_path)
            .await
            .map_err(io(format!("cannot keep {}", self.final_path.display())))?;
        let mut sessions = self.store.sessions()?;
        match sessions.map.get_mut(&self.upload_id) {
            Some(s) => {
                s.received.insert(self.sha256.clone());
                s.touched = Instant::now();
                Ok(())
            }
            None => Err(ArtifactError::UploadNotFound(self.upload_id.clone())),
        }
    }
}
