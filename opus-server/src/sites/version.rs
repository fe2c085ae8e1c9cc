//! A served version: a local directory, its manifest when known, and a cache of small files.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use axum::http::HeaderValue;
use bytes::Bytes;

/// Files up to this size are kept in memory once read.
const SMALL_FILE: u64 = 512 * 1024;
/// At most this many bytes of one version are kept in memory.
const CACHE_BUDGET: u64 = 64 * 1024 * 1024;
/// Compressible files smaller than this are not worth gzipping.
const MIN_GZIP: usize = 256;

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
    pub project: String,
    /// The version name, for logs and the `x-opus-version` header.
    pub version: String,
    /// The `x-opus-version` header value, built once.
    pub(crate) version_header: HeaderValue,
    /// The folder holding the version's files; `None` when the version is not available locally
    /// (a remote store without a local cache yet): requests then get 503.
    pub root: Option<PathBuf>,
    /// Unknown paths serve `index.html` (opus.yml `spa: true`).
    pub spa: bool,
    /// The manifest (path -> size, sha256), when known; without it files are looked up on disk.
    files: Option<HashMap<String, FileInfo>>,
    /// Small files read so far, with their headers.
    cache: RwLock<HashMap<String, std::sync::Arc<CachedFile>>>,
    /// Bytes held by `cache`.
    cached_bytes: AtomicU64,
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
    /// A version served from `root`, with its manifest's files when known.
    pub fn new(
        project: &str,
        version: &str,
        root: Option<PathBuf>,
        spa: bool,
        files: Option<HashMap<String, FileInfo>>,
    ) -> SiteVersion {
        SiteVersion {
            project: project.to_owned(),
            version: version.to_owned(),
            version_header: HeaderValue::from_str(version)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            root,
            spa,
            files,
            cache: RwLock::new(HashMap::new()),
            cached_bytes: AtomicU64::new(0),
        }
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
        let path = self.path_of(rel)?;
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

    /// The local path of `rel`.
    pub(crate) fn path_of(&self, rel: &str) -> Option<PathBuf> {
        let mut p = self.root.clone()?;
        p.extend(rel.split('/'));
        Some(p)
    }

    /// Reads `found` into memory when it is small and the budget allows, keeping it for the next
    /// request. `None` means "stream it from disk".
    pub(crate) async fn load_small(
        &self,
        found: &Found,
        meta: FileMeta,
    ) -> std::io::Result<Option<std::sync::Arc<CachedFile>>> {
        if found.size > SMALL_FILE
            || self.cached_bytes.load(Ordering::Relaxed) + found.size > CACHE_BUDGET
        {
            return Ok(None);
        }
        let Some(path) = self.path_of(&found.rel) else {
            return Ok(None);
        };
        let body = Bytes::from(tokio::fs::read(&path).await?);
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
        .map_err(std::io::Error::other)?;
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
