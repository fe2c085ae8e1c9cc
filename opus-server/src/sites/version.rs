//! A served version: where its files come from (a local directory, or a remote store through
//! the disk cache), its manifest when known, and a memory cache of small files.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use axum::http::HeaderValue;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use opus_core::artifact::ArtifactStore;
use opus_core::artifact::pointers::SiteStore;
use opus_core::error::ArtifactError;
use opus_core::model::{ProjectName, VersionName};
use tokio::io::AsyncReadExt;

use super::cache::{CacheError, Fetch, FetchError, SiteCache};

/// Files up to this size are kept in memory once read.
const SMALL_FILE: u64 = 512 * 1024;
/// At most this many bytes of one version are kept in memory.
const CACHE_BUDGET: u64 = 64 * 1024 * 1024;
/// Compressible files smaller than this are not worth gzipping.
const MIN_GZIP: usize = 256;
/// How long a visitor's request waits for the remote store to start sending a file before it is
/// answered 502. The store client's own retries (minutes, with backoff) suit a build storing a
/// version, not a browser waiting for a page.
const STORE_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// The remote store did not start sending a file within [`STORE_ANSWER_WAIT`].
#[derive(Debug, thiserror::Error)]
#[error("the artifact store did not start sending the file within {} s", .0.as_secs())]
struct StoreSilent(Duration);

/// Where a version's files come from.
pub enum Content {
    /// A folder on local disk (the version's folder in a `file://` store, or a test folder).
    Local(PathBuf),
    /// A remote object store (s3, gs, az), read through the site server's disk cache. Needs the
    /// manifest, whose sha256 names each file's cached copy.
    Remote {
        /// Where the files are fetched from.
        artifacts: Arc<dyn RemoteFiles>,
        /// The disk cache.
        cache: SiteCache,
    },
}

/// The result of [`RemoteFiles::file_stream`]: a file's bytes as they arrive.
pub type FileStream = BoxStream<'static, Result<Bytes, ArtifactError>>;

/// Where a remote version's files are fetched from: the artifact stores (opusd, which knows
/// each version's store from the metadata store), or the one store a site replica reads
/// without a metadata store ([`SiteStore`]).
pub trait RemoteFiles: Send + Sync {
    /// The file `path` of `version` of `project`, as a stream of its bytes.
    fn file_stream<'a>(
        &'a self,
        project: &'a ProjectName,
        version: &'a VersionName,
        path: &'a str,
    ) -> BoxFuture<'a, Result<FileStream, ArtifactError>>;
}

impl RemoteFiles for ArtifactStore {
    fn file_stream<'a>(
        &'a self,
        project: &'a ProjectName,
        version: &'a VersionName,
        path: &'a str,
    ) -> BoxFuture<'a, Result<FileStream, ArtifactError>> {
        ArtifactStore::file_stream(self, project, version, path).boxed()
    }
}

impl RemoteFiles for SiteStore {
    fn file_stream<'a>(
        &'a self,
        project: &'a ProjectName,
        version: &'a VersionName,
        path: &'a str,
    ) -> BoxFuture<'a, Result<FileStream, ArtifactError>> {
        SiteStore::file_stream(self, project.as_str(), version.as_str(), path).boxed()
    }
}

/// Why a file of a version could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Reading the version's folder failed.
    Local(std::io::Error),
    /// The disk cache failed: the remote store (see [`OpenError::is_store`]) or the cache's disk.
    Cache(CacheError),
}

impl OpenError {
    /// Whether the remote store is to blame (answered 502) rather than this machine (500).
    pub(crate) fn is_store(&self) -> bool {
        matches!(self, OpenError::Cache(e) if e.is_store())
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Local(e) => e.fmt(f),
            OpenError::Cache(e) => e.fmt(f),
        }
    }
}

/// What the manifest says about one file.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the content, lowercase hex.
    pub sha256: String,
}

/// One deployed version as the site server sees it.
pub struct SiteVersion {
    /// The project, for logs.
    pub project: ProjectName,
    /// The version name, for logs and the `x-opus-version` header.
    pub version: VersionName,
    /// The `x-opus-version` header value, built once.
    pub(crate) version_header: HeaderValue,
    /// Where the version's files come from.
    pub content: Content,
    /// Unknown paths serve `index.html` (opus.yml `spa: true`).
    pub spa: bool,
    /// The manifest (path -> size, sha256), when known; without it files are looked up on disk.
    files: Option<HashMap<String, FileInfo>>,
    /// Small files read so far, with their headers.
    cache: RwLock<HashMap<String, std::sync::Arc<CachedFile>>>,
    /// Bytes held by `cache`.
    cached_bytes: AtomicU64,
    /// The version's redirect and header rules, compiled once (empty for most versions).
    pub(crate) rules: opus_core::site_rules::RuleSet,
}

/// A file ready to serve from memory.
pub(crate) struct CachedFile {
    /// The content.
    pub body: Bytes,
    /// The gzipped content, when the type compresses and gzip makes it smaller.
    pub gzip: Option<Bytes>,
    /// Strong ETag of `body`.
    pub etag: HeaderValue,
    /// Strong ETag of `gzip`.
    pub etag_gzip: HeaderValue,
    /// The file's headers.
    pub meta: FileMeta,
}

/// Headers that depend only on the path.
#[derive(Clone)]
pub(crate) struct FileMeta {
    /// `content-type`.
    pub content_type: HeaderValue,
    /// `cache-control`.
    pub cache_control: HeaderValue,
    /// Whether gzip may be offered.
    pub compressible: bool,
}

/// A file found in the version: where it lies and how to validate it.
pub(crate) struct Found {
    /// Path inside the version.
    pub rel: String,
    /// Size in bytes.
    pub size: u64,
    /// Strong ETag.
    pub etag: HeaderValue,
}

impl SiteVersion {
    /// A version served from `content`, with its manifest's files when known (a remote version
    /// needs them: without a manifest entry a file is not found).
    pub fn new(
        project: &ProjectName,
        version: &VersionName,
        content: Content,
        spa: bool,
        files: Option<HashMap<String, FileInfo>>,
    ) -> SiteVersion {
        SiteVersion {
            project: project.clone(),
            version: version.clone(),
            version_header: HeaderValue::from_str(version.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            content,
            spa,
            files,
            cache: RwLock::new(HashMap::new()),
            cached_bytes: AtomicU64::new(0),
            rules: opus_core::site_rules::RuleSet::default(),
        }
    }

    /// The same version applying `rules` (its stored `_redirects`, `_headers` and opus.yml
    /// `site:` rules).
    pub fn with_rules(mut self, rules: &opus_core::site_rules::SiteRules) -> SiteVersion {
        self.rules = rules.compile();
        self
    }

    /// The cached file at `rel`, if it was read before.
    pub(crate) fn cached(&self, rel: &str) -> Option<std::sync::Arc<CachedFile>> {
        self.cache.read().ok()?.get(rel).cloned()
    }

    /// Whether the version has a file at `rel`, and its size and ETag. `rel` is already checked
    /// to stay inside the version.
    pub(crate) async fn find(&self, rel: &str) -> Option<Found> {
        if rel.is_empty() {
            return None;
        }
        if let Some(files) = &self.files {
            let info = files.get(rel)?;
            return Some(Found {
                rel: rel.to_owned(),
                size: info.size,
                etag: etag_of_sha(&info.sha256, ""),
            });
        }
        let Content::Local(root) = &self.content else {
            return None;
        };
        let mut path = root.clone();
        path.extend(rel.split('/'));
        // `symlink_metadata`: a symlink is never followed out of the version.
        let meta = tokio::fs::symlink_metadata(&path).await.ok()?;
        if !meta.is_file() {
            return None;
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let etag = HeaderValue::from_str(&format!("\"{:x}-{:x}\"", meta.len(), mtime))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        Some(Found {
            rel: rel.to_owned(),
            size: meta.len(),
            etag,
        })
    }

    /// Opens file `rel` (found before) for reading: from the version's folder, or from the disk
    /// cache (fetched from the remote store first when it is not there).
    pub(crate) async fn open(&self, rel: &str) -> Result<tokio::fs::File, OpenError> {
        match &self.content {
            Content::Local(root) => {
                let mut path = root.clone();
                path.extend(rel.split('/'));
                tokio::fs::File::open(&path).await.map_err(OpenError::Local)
            }
            Content::Remote { artifacts, cache } => {
                let Some(info) = self.files.as_ref().and_then(|f| f.get(rel)) else {
                    return Err(OpenError::Local(std::io::ErrorKind::NotFound.into()));
                };
                let fetch = self.fetch(artifacts, rel);
                cache
                    .open(&info.sha256, info.size, &fetch)
                    .await
                    .map_err(OpenError::Cache)
            }
        }
    }

    /// How the disk cache fetches `rel` of this version from its store.
    fn fetch(&self, artifacts: &Arc<dyn RemoteFiles>, rel: &str) -> Fetch {
        let artifacts = artifacts.clone();
        let (project, version, rel) = (self.project.clone(), self.version.clone(), rel.to_owned());
        Arc::new(move || {
            let artifacts = artifacts.clone();
            let (project, version, rel) = (project.clone(), version.clone(), rel.clone());
            async move {
                let stream = tokio::time::timeout(
                    STORE_ANSWER_WAIT,
                    artifacts.file_stream(&project, &version, &rel),
                )
                .await
                .map_err(|_| Box::new(StoreSilent(STORE_ANSWER_WAIT)) as FetchError)??;
                Ok(stream.map_err(FetchError::from).boxed())
            }
            .boxed()
        })
    }

    /// For a remote version, fetches its files into the disk cache in the background (a few at
    /// once over all versions, `index.html` and `404.html` first), so that the first requests after a deploy or
    /// rollback are answered from disk. A version larger than half the cache is not warmed (it
    /// would only push out other versions' files); its files are fetched as they are asked for.
    pub fn warm(self: &Arc<Self>) {
        let (Content::Remote { cache, .. }, Some(files)) = (&self.content, &self.files) else {
            return;
        };
        let total: u64 = files.values().map(|f| f.size).sum();
        if total > cache.limit() / 2 {
            tracing::info!(project = %self.project, version = %self.version, bytes = total, limit = cache.limit(), "version too large to warm the site cache; files are fetched on request");
            return;
        }
        let mut paths: Vec<String> = files.keys().cloned().collect();
        paths.sort_by_key(|p| (p != "index.html", p != "404.html", p.clone()));
        let site = self.clone();
        let cache = cache.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let failed = futures::stream::iter(paths)
                .map(|rel| {
                    let (site, cache) = (site.clone(), cache.clone());
                    async move {
                        let _slot = cache.warming_slot().await;
                        match site.open(&rel).await {
                            Ok(_) => 0,
                            Err(e) => {
                                tracing::warn!(project = %site.project, version = %site.version, path = %rel, error = %e, "cannot warm the site cache");
                                1
                            }
                        }
                    }
                })
                .buffer_unordered(2)
                .fold(0usize, |n, f| async move { n + f })
                .await;
            tracing::info!(project = %site.project, version = %site.version, failed, elapsed = ?started.elapsed(), "site cache warmed");
        });
    }

    /// Reads `found` into memory when it is small and the budget allows, keeping it for the next
    /// request. `None` means "stream it from disk".
    pub(crate) async fn load_small(
        &self,
        found: &Found,
        meta: FileMeta,
    ) -> Result<Option<std::sync::Arc<CachedFile>>, OpenError> {
        if found.size > SMALL_FILE
            || self.cached_bytes.load(Ordering::Relaxed) + found.size > CACHE_BUDGET
        {
            return Ok(None);
        }
        let mut file = self.open(&found.rel).await?;
        let mut body = Vec::with_capacity(usize::try_from(found.size).unwrap_or(0));
        file.read_to_end(&mut body)
            .await
            .map_err(OpenError::Local)?;
        let body = Bytes::from(body);
        let compressible = meta.compressible;
        let (body, gzip) = tokio::task::spawn_blocking(move || {
            let gz = if compressible && body.len() >= MIN_GZIP {
                gzip(&body).filter(|g| g.len() < body.len())
            } else {
                None
            };
            (body, gz)
        })
        .await
        .map_err(|e| OpenError::Local(std::io::Error::other(e)))?;
        let etag = found.etag.clone();
        let etag_gzip = gzip_etag(&etag);
        let size = body.len() as u64 + gzip.as_ref().map_or(0, |g| g.len() as u64);
        let file = std::sync::Arc::new(CachedFile {
            body,
            gzip,
            etag,
            etag_gzip,
            meta,
        });
        if let Ok(mut cache) = self.cache.write() {
            if !cache.contains_key(&found.rel) {
                cache.insert(found.rel.clone(), file.clone());
                self.cached_bytes.fetch_add(size, Ordering::Relaxed);
            }
        }
        Ok(Some(file))
    }
}

/// The strong ETag of a content by its sha256.
fn etag_of_sha(sha256: &str, suffix: &str) -> HeaderValue {
    let short = &sha256[..sha256.len().min(32)];
    HeaderValue::from_str(&format!("\"{short}{suffix}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// The ETag of the gzipped representation: different bytes, so a different strong tag.
pub(crate) fn gzip_etag(etag: &HeaderValue) -> HeaderValue {
    let s = etag.to_str().unwrap_or("\"0\"");
    let inner = s.trim_matches('"');
    HeaderValue::from_str(&format!("\"{inner}-gz\"")).unwrap_or_else(|_| etag.clone())
}

fn gzip(data: &[u8]) -> Option<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(data).ok()?;
    enc.finish().ok().map(Bytes::from)
}
