//! Storing a version: files, archive, manifest, then the metadata commit.
//!
//! One pass over the files, in path order: each file is read and hashed on the blocking pool
//! (several at once), then stored (`put`, or `copy` from an object that already holds the same
//! content) by a bounded set of concurrent tasks, and handed to the archive writer. The archive
//! writer groups compressible files into chunks of about 1 MiB, compresses the chunks as separate
//! gzip members on the blocking pool (as many at once as there are CPUs), stores incompressible
//! files in stored members, and streams the members in order to the object store. So hashing,
//! storing and compressing overlap, and storing a site costs about one compression pass of its
//! text spread over every core.

use std::collections::{HashSet, VecDeque};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::Digest;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, info, instrument, warn};

use super::{
    ArchiveInfo, ArtifactStore, Backend, ManifestFile, Origin, VersionManifest, sha256_hex,
};
use crate::archive::{self, ArchiveFile, TAR_END};
use crate::error::{ArchiveError, ArtifactError};
use crate::model::{ProjectName, StoreName, VersionName, VersionRecord};
use crate::store::{MetaStore, SiteOptions};

/// Files read and hashed at once.
const LOADS_AT_ONCE: usize = 8;
/// Objects written or copied at once.
const UPLOADS_AT_ONCE: usize = 16;
/// Input bytes of compressible files per gzip member.
const CHUNK_BYTES: usize = 1 << 20;
/// Compression level of compressible content (gzip's default, so the archive is no larger than
/// `tar czf`'s).
const LEVEL: u32 = 6;

/// Where the bytes of a file to store come from.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// A file on local disk (a build's output, an uploaded blob).
    Disk(PathBuf),
    /// Content already in the store, found through the content index.
    Stored {
        /// Its sha256.
        sha256: String,
    },
}

/// A file to store into a version.
#[derive(Debug, Clone)]
pub(crate) struct PendingFile {
    /// Path inside the version (checked).
    pub(crate) path: String,
    /// Permission bits.
    pub(crate) mode: u32,
    /// Where its bytes are.
    pub(crate) content: Content,
}

/// A file read and hashed, ready to store.
struct Loaded {
    path: String,
    mode: u32,
    data: Bytes,
    sha256: String,
    compressible: bool,
}

/// A version just stored, with what storing it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// The committed record.
    pub record: VersionRecord,
    /// Files written with new bytes.
    pub files_written: u32,
    /// Bytes of those files (what storing the version added, besides its archive and manifest).
    pub bytes_written: u64,
    /// Files copied from content already stored (hard links on local disk).
    pub files_copied: u32,
    /// Bytes of those files.
    pub bytes_copied: u64,
}

/// How one file was stored.
enum Placed {
    Written(u64),
    Copied(u64),
}

impl ArtifactStore {
    /// Stores the folder `dir` as `version` of `project`: files, archive, manifest, then the
    /// metadata commit that makes the version exist (with a `version.stored` event and how the
    /// version is served, `options`).
    ///
    /// Errors: `OutputMissing` naming `dir` when it does not exist; `LinkEscapes` when a symlink in
    /// it points outside it; `VersionExists` when the version exists; `ProjectNotFound`;
    /// `UnknownStore` when `origin.store` is not configured.
    #[instrument(skip_all, fields(project = %project, version = %version, build = origin.build_id))]
    pub async fn store_dir(
        &self,
        project: &ProjectName,
        version: &VersionName,
        dir: &FsPath,
        origin: &Origin,
        options: &SiteOptions,
    ) -> Result<StoredVersion, ArtifactError> {
        let pending = pending_files(dir).await?;
        self.store_files(project, version, pending, origin, options)
            .await
    }

    /// Stores `files` (sorted by path, paths checked) as a version. See [`ArtifactStore::store_dir`].
    pub(crate) async fn store_files(
        &self,
        project: &ProjectName,
        version: &VersionName,
        files: Vec<PendingFile>,
        origin: &Origin,
        options: &SiteOptions,
    ) -> Result<StoredVersion, ArtifactError> {
        let backend = self.backend(&origin.store)?;
        self.meta().get_project(project)?;
        let exists = || ArtifactError::VersionExists {
            project: project.to_string(),
            version: version.to_string(),
        };
        // Reserve first, then check: a writer that committed before the reservation is seen, and
        // none can start after it, so no two writers ever write the same keys.
        let _guard = self.reserve(project.as_str(), version.as_str())?;
        if self.meta().get_version(project, version)?.is_some() {
            return Err(exists());
        }
        let _shared = self.inner.delete_lock.read().await;
        let started = std::time::Instant::now();
        let result = self
            .write_version(backend, project, version, files, origin, options)
            .await;
        match result {
            Ok(stored) => {
                info!(
                    files = stored.record.file_count,
                    size = stored.record.size,
                    written = stored.bytes_written,
                    copied = stored.bytes_copied,
                    archive = stored.record.archive_size,
                    ms = started.elapsed().as_millis() as u64,
                    "version stored"
                );
                Ok(stored)
            }
            Err(e) => {
                warn!(error = %e, "storing the version failed; removing what was written");
                if !matches!(e, ArtifactError::VersionExists { .. }) {
                    if let Err(c) =
                        delete_objects(backend, project.as_str(), version.as_str()).await
                    {
                        warn!(error = %c, "cleanup failed; the objects are removed as orphans on the next start");
                    }
                }
                Err(e)
            }
        }
    }

    async fn write_version(
        &self,
        backend: &Backend,
        project: &ProjectName,
        version: &VersionName,
        files: Vec<PendingFile>,
        origin: &Origin,
        options: &SiteOptions,
    ) -> Result<StoredVersion, ArtifactError> {
        let written = backend
            .write_objects(Some(self.meta()), project, version, files, origin)
            .await?;
        let options = super::rules::with_file_rules(backend, &written.manifest, options).await?;
        let record = record_of(&written.manifest, &backend.name);
        if !self
            .meta()
            .commit_version(&record, &written.blobs, &options)?
        {
            return Err(ArtifactError::VersionExists {
                project: project.to_string(),
                version: version.to_string(),
            });
        }
        // Durable before anyone is told: a version reported stored survives a crash (sled alone
        // flushes only every half second, and the sweep would take the objects of a lost record).
        self.meta().flush().await?;
        Ok(written.stored(record))
    }
}

/// The objects of a version, written: its manifest, the content index entries to commit, and how
/// each file was placed.
pub(crate) struct Written {
    /// The manifest as stored.
    pub(crate) manifest: VersionManifest,
    /// `(sha256, object key)` of every file, for the content index.
    pub(crate) blobs: Vec<(String, String)>,
    /// How each file was stored.
    placed: Vec<Placed>,
}

impl Written {
    /// What storing cost, with the committed record.
    pub(crate) fn stored(self, record: VersionRecord) -> StoredVersion {
        let mut out = StoredVersion {
            record,
            files_written: 0,
            bytes_written: 0,
            files_copied: 0,
            bytes_copied: 0,
        };
        for p in self.placed {
            match p {
                Placed::Written(n) => {
                    out.files_written += 1;
                    out.bytes_written += n;
                }
                Placed::Copied(n) => {
                    out.files_copied += 1;
                    out.bytes_copied += n;
                }
            }
        }
        out
    }
}

/// The files of the folder `dir` (a build's output, a folder to upload), in path order, ready to
/// store; symlinks that stay inside it are followed.
///
/// Errors: `OutputMissing` when `dir` does not exist, `OutputNotFolder` when it is a file,
/// `LinkEscapes` when a symlink in it points outside it.
pub(crate) async fn pending_files(dir: &FsPath) -> Result<Vec<PendingFile>, ArtifactError> {
    match tokio::fs::metadata(dir).await {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(ArtifactError::OutputNotFolder(dir.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ArtifactError::OutputMissing(dir.to_path_buf()));
        }
        Err(source) => {
            return Err(ArtifactError::Io {
                context: format!("cannot open {}", dir.display()),
                source,
            });
        }
    }
    let root = dir.to_path_buf();
    let files = tokio::task::spawn_blocking(move || archive::collect_files(&root))
        .await
        .map_err(|e| ArtifactError::Task(e.to_string()))??;
    Ok(files
        .into_iter()
        .map(|f| PendingFile {
            path: f.path,
            mode: f.mode,
            content: Content::Disk(f.abs),
        })
        .collect())
}

/// The version record of a manifest stored in `store`.
pub(crate) fn record_of(manifest: &VersionManifest, store: &StoreName) -> VersionRecord {
    VersionRecord {
        project: manifest.project.clone(),
        version: manifest.version.clone(),
        store: store.clone(),
        build_id: manifest.build_id,
        commit: manifest.commit.clone(),
        created_at: manifest.created_at,
        file_count: u32::try_from(manifest.files.len()).unwrap_or(u32::MAX),
        size: manifest.files.iter().map(|f| f.size).sum(),
        archive_size: manifest.archive.size,
        archive_sha256: manifest.archive.sha256.clone(),
    }
}

impl Backend {
    /// Writes the objects of a version (files, archive, manifest, in that order) and nothing
    /// else: the caller commits the metadata. With `index`, content already stored is copied
    /// instead of written again; without it (a runner, which has no metadata store) every file
    /// is written.
    pub(crate) async fn write_objects(
        &self,
        index: Option<&MetaStore>,
        project: &ProjectName,
        version: &VersionName,
        files: Vec<PendingFile>,
        origin: &Origin,
    ) -> Result<Written, ArtifactError> {
        let backend = self;
        let created_at = SystemTime::now();
        let mtime = created_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let archive_key = backend.archive_key(project.as_str(), version.as_str())?;
        let (to_archive, archive_rx) = mpsc::channel::<Loaded>(LOADS_AT_ONCE * 2);

        let files_fut = self.write_files(index, project, version, files, to_archive);
        let archive_fut = write_archive(backend, archive_key, archive_rx, mtime);
        let ((manifest_files, blobs, placed), archive) =
            futures::try_join!(files_fut, archive_fut)?;

        let manifest = VersionManifest {
            project: project.clone(),
            version: version.clone(),
            build_id: origin.build_id,
            commit: origin.commit.clone(),
            created_at,
            archive,
            files: manifest_files,
        };
        let json =
            serde_json::to_vec_pretty(&manifest).map_err(|e| ArtifactError::ManifestCorrupt {
                key: format!("{project}/manifest/{version}.json"),
                detail: e.to_string(),
            })?;
        let manifest_key = backend.manifest_key(project.as_str(), version.as_str())?;
        backend
            .store
            .put(&manifest_key, PutPayload::from(json))
            .await
            .map_err(backend.err(format!("writing {manifest_key}")))?;
        Ok(Written {
            manifest,
            blobs,
            placed,
        })
    }

    /// Reads, hashes and stores every file, feeding each to the archive writer in order. Returns
    /// the manifest entries, the `(sha256, key)` index pairs and how each file was placed.
    async fn write_files(
        &self,
        index: Option<&MetaStore>,
        project: &ProjectName,
        version: &VersionName,
        files: Vec<PendingFile>,
        to_archive: mpsc::Sender<Loaded>,
    ) -> Result<(Vec<ManifestFile>, Vec<(String, String)>, Vec<Placed>), ArtifactError> {
        let backend = self;
        let count = files.len();
        let mut loads = futures::stream::iter(files.into_iter().map(|f| self.load(index, f)))
            .buffered(LOADS_AT_ONCE);
        let uploads_at_once = Arc::new(Semaphore::new(UPLOADS_AT_ONCE));
        let mut uploads: tokio::task::JoinSet<Result<Placed, ArtifactError>> =
            tokio::task::JoinSet::new();
        let mut entries = Vec::with_capacity(count);
        let mut blobs = Vec::with_capacity(count);
        let mut placed = Vec::with_capacity(count);
        let mut seen = HashSet::new();
        while let Some(loaded) = loads.next().await {
            let loaded = loaded?;
            let dest = backend.file_key(project.as_str(), version.as_str(), &loaded.path)?;
            // A content seen earlier in this version is not committed yet: write it again.
            let holder = match index {
                Some(index) if seen.insert(loaded.sha256.clone()) => {
                    index.blob_holder(&backend.name, &loaded.sha256)?
                }
                _ => None,
            };
            entries.push(ManifestFile {
                path: loaded.path.clone(),
                size: loaded.data.len() as u64,
                sha256: loaded.sha256.clone(),
                mode: archive::normalize_mode(loaded.mode),
            });
            blobs.push((loaded.sha256.clone(), dest.to_string()));
            let permit = uploads_at_once
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| ArtifactError::Task(e.to_string()))?;
            let store = backend.store.clone();
            let name = backend.name.clone();
            let data = loaded.data.clone();
            uploads.spawn(async move {
                let _permit = permit;
                place(&name, store.as_ref(), holder, &dest, data).await
            });
            while let Some(done) = uploads.try_join_next() {
                placed.push(done.map_err(|e| ArtifactError::Task(e.to_string()))??);
            }
            if to_archive.send(loaded).await.is_err() {
                // The archive writer stopped: its error is what try_join reports.
                break;
            }
        }
        drop(to_archive);
        while let Some(done) = uploads.join_next().await {
            placed.push(done.map_err(|e| ArtifactError::Task(e.to_string()))??);
        }
        Ok((entries, blobs, placed))
    }

    /// Reads a file's bytes and hashes them on the blocking pool.
    async fn load(
        &self,
        index: Option<&MetaStore>,
        file: PendingFile,
    ) -> Result<Loaded, ArtifactError> {
        let backend = self;
        let PendingFile {
            path,
            mode,
            content,
        } = file;
        match content {
            Content::Disk(abs) => tokio::task::spawn_blocking(move || {
                let data = std::fs::read(&abs).map_err(|source| ArtifactError::Io {
                    context: format!("cannot read {}", abs.display()),
                    source,
                })?;
                let sha256 = sha256_hex(&data);
                let compressible = archive::compressible(&data);
                Ok(Loaded {
                    path,
                    mode,
                    data: Bytes::from(data),
                    sha256,
                    compressible,
                })
            })
            .await
            .map_err(|e| ArtifactError::Task(e.to_string()))?,
            Content::Stored { sha256 } => {
                let holders = match index {
                    Some(index) => index.blob_holders(&backend.name, &sha256)?,
                    None => Vec::new(),
                };
                for holder in holders {
                    let Ok(key) = Path::parse(&holder) else {
                        continue;
                    };
                    let data = match backend.store.get(&key).await {
                        Ok(r) => r
                            .bytes()
                            .await
                            .map_err(backend.err(format!("reading {key}")))?,
                        Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(backend.err(format!("reading {key}"))(e)),
                    };
                    let (data, actual, compressible) = tokio::task::spawn_blocking(move || {
                        let actual = sha256_hex(&data);
                        let compressible = archive::compressible(&data);
                        (data, actual, compressible)
                    })
                    .await
                    .map_err(|e| ArtifactError::Task(e.to_string()))?;
                    if actual != sha256 {
                        warn!(object = %key, "stored content does not match its index entry (run `opus verify`)");
                        continue;
                    }
                    return Ok(Loaded {
                        path,
                        mode,
                        data,
                        sha256,
                        compressible,
                    });
                }
                Err(ArtifactError::ContentMissing {
                    count: 1,
                    first: path,
                })
            }
        }
    }
}

/// Stores one file: a copy of `holder` when there is one (falling back to writing the bytes when
/// the holder vanished), else the bytes.
async fn place(
    store_name: &StoreName,
    store: &dyn ObjectStore,
    holder: Option<String>,
    dest: &Path,
    data: Bytes,
) -> Result<Placed, ArtifactError> {
    let size = data.len() as u64;
    let err = |action: String| {
        let store = store_name.clone();
        move |source| ArtifactError::ObjectStore {
            store,
            action,
            source,
        }
    };
    if let Some(holder) = holder.and_then(|h| Path::parse(h).ok()) {
        match store.copy(&holder, dest).await {
            Ok(()) => return Ok(Placed::Copied(size)),
            Err(e) => {
                debug!(from = %holder, to = %dest, error = %e, "copy failed; writing the bytes instead")
            }
        }
    }
    store
        .put(dest, PutPayload::from(data))
        .await
        .map_err(err(format!("writing {dest}")))?;
    Ok(Placed::Written(size))
}

/// Compresses the files arriving on `rx` into the archive at `key`, in order, and returns its size
/// and sha256.
async fn write_archive(
    backend: &Backend,
    key: Path,
    mut rx: mpsc::Receiver<Loaded>,
    mtime: u64,
) -> Result<ArchiveInfo, ArtifactError> {
    let parallel = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let mut out = object_store::buffered::BufWriter::with_capacity(
        backend.store.clone(),
        key.clone(),
        8 << 20,
    );
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let mut pending: VecDeque<JoinHandle<Result<Vec<u8>, ArchiveError>>> = VecDeque::new();
    let mut group: Vec<Loaded> = Vec::new();
    let mut group_bytes = 0usize;
    let spawn = |files: Vec<Loaded>, level: u32, end: bool| {
        tokio::task::spawn_blocking(move || {
            let cap = files.iter().map(|f| f.data.len() + 1024).sum::<usize>() + 1024;
            let mut tar = Vec::with_capacity(cap);
            let entries: Vec<_> = files
                .iter()
                .map(|f| ArchiveFile {
                    path: &f.path,
                    mode: f.mode,
                    data: &f.data,
                })
                .collect();
            archive::append_tar(&mut tar, &entries, mtime)?;
            if end {
                tar.extend_from_slice(&TAR_END);
            }
            archive::gzip_member(&tar, level)
        })
    };
    let mut done = false;
    while !done {
        match rx.recv().await {
            Some(file) if file.compressible => {
                group_bytes += file.data.len();
                group.push(file);
                if group_bytes >= CHUNK_BYTES {
                    pending.push_back(spawn(std::mem::take(&mut group), LEVEL, false));
                    group_bytes = 0;
                }
            }
            Some(file) => {
                if !group.is_empty() {
                    pending.push_back(spawn(std::mem::take(&mut group), LEVEL, false));
                    group_bytes = 0;
                }
                pending.push_back(spawn(vec![file], 0, false));
            }
            None => {
                pending.push_back(spawn(std::mem::take(&mut group), LEVEL, true));
                done = true;
            }
        }
        // Write finished members in order; wait when too many are in flight.
        while let Some(front) = pending.front() {
            if !(done || pending.len() > parallel || front.is_finished()) {
                break;
            }
            let Some(handle) = pending.pop_front() else {
                break;
            };
            let member = handle
                .await
                .map_err(|e| ArtifactError::Task(e.to_string()))??;
            hasher.update(&member);
            size += member.len() as u64;
            out.put(Bytes::from(member))
                .await
                .map_err(backend.err(format!("writing {key}")))?;
        }
    }
    tokio::io::AsyncWriteExt::shutdown(&mut out)
        .await
        .map_err(|source| ArtifactError::Io {
            context: format!("cannot finish {key}"),
            source,
        })?;
    Ok(ArchiveInfo {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Deletes every object of a version: its files, archive and manifest. Missing objects are fine.
pub(crate) async fn delete_objects(
    backend: &Backend,
    project: &str,
    version: &str,
) -> Result<(), ArtifactError> {
    if let Some(root) = &backend.local_root {
        // On local disk, also removes staging files of interrupted writes, which listing hides.
        let dir = root.join(project).join(version);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ArtifactError::Io {
                    context: format!("cannot remove {}", dir.display()),
                    source,
                });
            }
        }
        for (sub, name) in [
            ("archive", format!("{version}.tar.gz")),
            ("manifest", format!("{version}.json")),
        ] {
            remove_local_with_staging(&root.join(project).join(sub), &name).await?;
        }
        return Ok(());
    }
    let prefix = Path::parse(backend.files_prefix(project, version).trim_end_matches('/'))
        .map_err(|e| ArtifactError::BadFileName {
            path: PathBuf::from(project),
            why: e.to_string(),
        })?;
    let locations = backend
        .store
        .list(Some(&prefix))
        .map_ok(|m| m.location)
        .boxed();
    backend
        .store
        .delete_stream(locations)
        .try_collect::<Vec<_>>()
        .await
        .map_err(backend.err(format!("deleting {prefix}/")))?;
    for key in [
        backend.archive_key(project, version)?,
        backend.manifest_key(project, version)?,
    ] {
        match backend.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(backend.err(format!("deleting {key}"))(e)),
        }
    }
    Ok(())
}

/// Removes `dir/name` and any `dir/name#<n>` staging file an interrupted write left.
pub(crate) async fn remove_local_with_staging(
    dir: &FsPath,
    name: &str,
) -> Result<(), ArtifactError> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ArtifactError::Io {
                context: format!("cannot read {}", dir.display()),
                source,
            });
        }
    };
    let staging = format!("{name}#");
    while let Ok(Some(entry)) = entries.next_entry().await {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file == name || file.starts_with(&staging) {
            if let Err(e) = tokio::fs::remove_file(entry.path()).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(ArtifactError::Io {
                        context: format!("cannot remove {}", entry.path().display()),
                        source: e,
                    });
                }
            }
        }
    }
    Ok(())
}
