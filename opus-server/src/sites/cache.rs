//! The site server's bounded disk cache for versions kept in remote object stores (s3, gs, az).
//!
//! A remote version's files are fetched on first request into `<data-dir>/site-cache/<sha256>`,
//! named by the content's sha256 from the version's manifest, so versions that share a file share
//! its cached copy (a rollback usually finds its files already there). Every fill is
//! - single-flight: concurrent requests for one content wait for one fetch;
//! - verified: the bytes are hashed while they are written to a temporary file, and only a file
//!   whose size and sha256 match the manifest is renamed into place;
//! - bounded: after a fill, the least recently used files are deleted until the cache holds at
//!   most `--site-cache-size` bytes. A file larger than the whole bound is fetched into an
//!   unnamed temporary file for the one request and not kept.
//!
//! Files found on start (from an earlier opusd) are indexed without reading them, oldest first,
//! and hashed once on their first use; a damaged one is deleted and fetched again. A request that
//! holds a file open keeps reading it when it is evicted meanwhile (Unix unlink semantics).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::BoxStream;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::metrics::Metrics;

/// An error of the remote store, whatever the store is.
pub type FetchError = Box<dyn std::error::Error + Send + Sync>;

/// The bytes of one file as the remote store streams them.
pub type ByteStream = BoxStream<'static, Result<Bytes, FetchError>>;

/// Starts fetching one file from the remote store. Called once per fill (a fill that finds the
/// file already cached does not call it).
pub type Fetch = Arc<dyn Fn() -> BoxFuture<'static, Result<ByteStream, FetchError>> + Send + Sync>;

/// The name of the folder of partial downloads inside the cache folder.
const TMP: &str = "tmp";
/// Files fetched at once by background warming, over all versions (a start with many deployed
/// environments must not open hundreds of connections to the store).
const WARMING_AT_ONCE: usize = 4;

/// Why the cache could not hand out a file.
#[derive(Debug, Clone, Error)]
pub enum CacheError {
    /// The remote store failed (unreachable, denied, the object is missing).
    #[error("fetching content {sha256} from the artifact store failed: {source}")]
    Fetch {
        /// The content asked for.
        sha256: String,
        /// The store's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The store's bytes are not what the manifest says (damaged or replaced in the store).
    #[error(
        "the artifact store's copy of content {sha256} does not match the version's manifest ({detail}); run `opus verify` on the project"
    )]
    Mismatch {
        /// The content asked for.
        sha256: String,
        /// What differs.
        detail: String,
    },
    /// The cache folder could not be written or read (disk full, permissions).
    #[error("site cache I/O on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The fill task ended abnormally (a panic, or the runtime shutting down).
    #[error("filling the site cache failed: {0}")]
    Task(String),
}

impl CacheError {
    /// Whether the remote store is to blame (the site server answers 502), rather than this
    /// machine's disk (500).
    pub fn is_store(&self) -> bool {
        matches!(self, CacheError::Fetch { .. } | CacheError::Mismatch { .. })
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
        move |e| CacheError::Io {
            path: path.to_path_buf(),
            source: Arc::new(e),
        }
    }
}

/// One cached content.
struct Entry {
    /// Its size in bytes.
    size: u64,
    /// When it was last used (the cache's own clock); its key in [`Index::lru`].
    tick: u64,
    /// Whether its bytes were checked against the sha256 since this opusd started.
    verified: bool,
}

/// What the cache holds, in memory.
#[derive(Default)]
struct Index {
    /// By sha256.
    entries: HashMap<String, Entry>,
    /// sha256 by last use, oldest first.
    lru: BTreeMap<u64, String>,
    /// Sum of the entries' sizes.
    bytes: u64,
    /// The clock of last uses.
    tick: u64,
}

impl Index {
    /// Marks `sha256` used now; its `verified` flag, or `None` when it is not cached.
    fn touch(&mut self, sha256: &str) -> Option<bool> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.get_mut(sha256)?;
        self.lru.remove(&entry.tick);
        entry.tick = tick;
        self.lru.insert(tick, sha256.to_owned());
        Some(entry.verified)
    }

    /// Adds (or replaces) `sha256`, used now, then picks least recently used entries to delete
    /// until the cache fits in `limit` (never the one just added). Returns those removed.
    fn insert(&mut self, sha256: &str, size: u64, verified: bool, limit: u64) -> Vec<String> {
        self.remove(sha256);
        self.tick += 1;
        self.entries.insert(
            sha256.to_owned(),
            Entry {
                size,
                tick: self.tick,
                verified,
            },
        );
        self.lru.insert(self.tick, sha256.to_owned());
        self.bytes += size;
        self.evict(limit, 1)
    }

    /// Removes least recently used entries until the cache fits in `limit`, keeping at least the
    /// `keep` newest ones. Returns those removed.
    fn evict(&mut self, limit: u64, keep: usize) -> Vec<String> {
        let mut victims = Vec::new();
        while self.bytes > limit && self.entries.len() > keep {
            let Some((_, oldest)) = self.lru.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= e.size;
            }
            victims.push(oldest);
        }
        victims
    }

    fn remove(&mut self, sha256: &str) {
        if let Some(e) = self.entries.remove(sha256) {
            self.lru.remove(&e.tick);
            self.bytes -= e.size;
        }
    }

    fn mark_verified(&mut self, sha256: &str) {
        if let Some(e) = self.entries.get_mut(sha256) {
            e.verified = true;
        }
    }
}

/// A fill in progress, awaited by every request that wants its content.
type Fill = Shared<BoxFuture<'static, Result<(), CacheError>>>;

struct Inner {
    /// `<data-dir>/site-cache`.
    dir: PathBuf,
    /// `<data-dir>/site-cache/tmp`: downloads in progress.
    tmp: PathBuf,
    /// The bound, in bytes.
    limit: u64,
    index: Mutex<Index>,
    /// Fills in progress, by sha256.
    inflight: Mutex<HashMap<String, Fill>>,
    /// Makes temporary file names unique.
    next_tmp: AtomicU64,
    /// Bounds background warming, over all versions.
    warming: Arc<tokio::sync::Semaphore>,
    metrics: Metrics,
}

/// The bounded, content-addressed disk cache; cheap to clone.
#[derive(Clone)]
pub struct SiteCache {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `s` is a lowercase hex sha256 (so it is safe as a file name).
fn is_sha256(s: &str) -> bool {
    opus_core::artifact::is_sha256_hex(s)
}

impl SiteCache {
    /// Opens the cache in `dir` with a bound of `limit` bytes: empties `dir/tmp`, indexes the
    /// files an earlier opusd left (oldest first, to be verified on first use), deletes anything
    /// else there, and evicts down to the bound.
    pub fn load(dir: &Path, limit: u64, metrics: Metrics) -> std::io::Result<SiteCache> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(TMP);
        match std::fs::remove_dir_all(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(&tmp)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let meta = entry.metadata()?;
            match name.to_str() {
                Some(n) if is_sha256(n) && meta.is_file() => {
                    let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                    found.push((mtime, n.to_owned(), meta.len()));
                }
                Some(TMP) => {}
                _ if meta.is_file() => {
                    // Not ours (or a leftover of an older layout): it would only skew the bound.
                    std::fs::remove_file(entry.path())?;
                }
                _ => {}
            }
        }
        found.sort();
        let mut index = Index::default();
        let mut victims = Vec::new();
        for (_, sha, size) in found {
            victims.extend(index.insert(&sha, size, false, u64::MAX));
        }
        victims.extend(index.evict(limit, 0));
        for v in &victims {
            std::fs::remove_file(dir.join(v))?;
        }
        metrics.site_cache_bytes.set(gauge(index.bytes));
        tracing::info!(
            dir = %dir.display(),
            files = index.entries.len(),
            bytes = index.bytes,
            limit,
            "site cache opened"
        );
        Ok(SiteCache {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                tmp,
                limit,
                index: Mutex::new(index),
                inflight: Mutex::new(HashMap::new()),
                next_tmp: AtomicU64::new(0),
                warming: Arc::new(tokio::sync::Semaphore::new(WARMING_AT_ONCE)),
                metrics,
            }),
        })
    }

    /// The bound, in bytes.
    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// A slot for warming one file in the background; requests never wait for one.
    pub async fn warming_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.warming.clone().acquire_owned().await.ok()
    }

    /// Bytes cached now.
    pub fn bytes(&self) -> u64 {
        lock(&self.inner.index).bytes
    }

    /// Whether `sha256` is cached now (verified or not).
    pub fn contains(&self, sha256: &str) -> bool {
        lock(&self.inner.index).entries.contains_key(sha256)
    }

    /// The content `sha256` (of `size` bytes), open for reading: from the cache, or fetched with
    /// `fetch` first (once, however many requests ask at the same time) and verified.
    pub async fn open(
        &self,
        sha256: &str,
        size: u64,
        fetch: &Fetch,
    ) -> Result<tokio::fs::File, CacheError> {
        if !is_sha256(sha256) {
            return Err(CacheError::Mismatch {
                sha256: sha256.to_owned(),
                detail: "the manifest's sha256 is not 64 lowercase hex digits".into(),
            });
        }
        if size > self.inner.limit {
            return self.inner.uncached(sha256, size, fetch).await;
        }
        let path = self.inner.dir.join(sha256);
        // A cached file can be evicted between the fill and the open (a bound much smaller than
        // the traffic): after two tries the request gets its own uncached copy.
        for _ in 0..2 {
            let state = lock(&self.inner.index).touch(sha256);
            if state == Some(true) {
                match tokio::fs::File::open(&path).await {
                    Ok(f) => {
                        let len = f.metadata().await.map_err(CacheError::io(&path))?.len();
                        if len == size {
                            return Ok(f);
                        }
                        tracing::warn!(path = %path.display(), expected = size, found = len, "a cached file changed size; fetching it again");
                        self.inner.discard(sha256);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        lock(&self.inner.index).remove(sha256);
                    }
                    Err(e) => return Err(CacheError::io(&path)(e)),
                }
            }
            self.fill(sha256, size, fetch).await?;
        }
        self.inner.uncached(sha256, size, fetch).await
    }

    /// Makes `sha256` cached and verified: joins the fill in progress or starts one. The fill
    /// runs in its own task, so a request that gives up does not abort it for the others.
    async fn fill(&self, sha256: &str, size: u64, fetch: &Fetch) -> Result<(), CacheError> {
        let fill = {
            let mut inflight = lock(&self.inner.inflight);
            match inflight.get(sha256) {
                Some(f) => f.clone(),
                None => {
                    let inner = self.inner.clone();
                    let key = sha256.to_owned();
                    let fetch = fetch.clone();
                    let task = tokio::spawn(async move {
                        let result = inner.fill_now(&key, size, &fetch).await;
                        lock(&inner.inflight).remove(&key);
                        result
                    });
                    let fill = async move {
                        task.await
                            .unwrap_or_else(|e| Err(CacheError::Task(e.to_string())))
                    }
                    .boxed()
                    .shared();
                    inflight.insert(sha256.to_owned(), fill.clone());
                    fill
                }
            }
        };
        fill.await
    }
}

impl Inner {
    /// The fill itself: verifies a file left by an earlier opusd, or downloads, verifies, renames
    /// into place and evicts.
    async fn fill_now(&self, sha256: &str, size: u64, fetch: &Fetch) -> Result<(), CacheError> {
        let path = self.dir.join(sha256);
        let verified = lock(&self.index).entries.get(sha256).map(|e| e.verified);
        match verified {
            // Filled by a fill that finished just before this one started.
            Some(true) => return Ok(()),
            Some(false) => match hash_file(&path).await {
                Ok((len, digest)) if len == size && digest == sha256 => {
                    lock(&self.index).mark_verified(sha256);
                    return Ok(());
                }
                Ok((len, digest)) => {
                    tracing::warn!(
                        path = %path.display(), expected_size = size, size = len, sha256 = %digest,
                        "a cached file is damaged; fetching it again"
                    );
                    self.discard(sha256);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    lock(&self.index).remove(sha256);
                }
                Err(e) => return Err(CacheError::io(&path)(e)),
            },
            None => {}
        }
        let tmp = self.download(sha256, size, fetch).await?;
        if let Err(e) = tokio::fs::rename(&tmp.0, &path).await {
            return Err(CacheError::io(&path)(e));
        }
        tmp.disarm();
        let (victims, bytes) = {
            let mut index = lock(&self.index);
            let victims = index.insert(sha256, size, true, self.limit);
            (victims, index.bytes)
        };
        for v in &victims {
            let p = self.dir.join(v);
            if let Err(e) = tokio::fs::remove_file(&p).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %p.display(), error = %e, "cannot delete an evicted cache file");
            }
        }
        self.metrics
            .site_cache_evictions
            .inc_by(victims.len() as u64);
        self.metrics.site_cache_bytes.set(gauge(bytes));
        Ok(())
    }

    /// Deletes a cached file and forgets it.
    fn discard(&self, sha256: &str) {
        lock(&self.index).remove(sha256);
        let _ = std::fs::remove_file(self.dir.join(sha256));
        let bytes = lock(&self.index).bytes;
        self.metrics.site_cache_bytes.set(gauge(bytes));
    }

    /// Fetches `sha256` into a new temporary file, hashing as it writes; the file is deleted
    /// unless the bytes match `size` and `sha256`.
    async fn download(
        &self,
        sha256: &str,
        size: u64,
        fetch: &Fetch,
    ) -> Result<TempFile, CacheError> {
        self.metrics.site_cache_fetches.inc();
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = TempFile(self.tmp.join(format!("{sha256}.{n}")), true);
        let mut file = tokio::fs::File::create(&tmp.0)
            .await
            .map_err(CacheError::io(&tmp.0))?;
        let fetch_err = |e: FetchError| CacheError::Fetch {
            sha256: sha256.to_owned(),
            source: Arc::from(e),
        };
        let mut stream = fetch().await.map_err(fetch_err)?;
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(fetch_err)?;
            len += chunk.len() as u64;
            if len > size {
                return Err(CacheError::Mismatch {
                    sha256: sha256.to_owned(),
                    detail: format!("more than the {size} bytes listed"),
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(CacheError::io(&tmp.0))?;
        }
        file.flush().await.map_err(CacheError::io(&tmp.0))?;
        drop(file);
        if len != size {
            return Err(CacheError::Mismatch {
                sha256: sha256.to_owned(),
                detail: format!("{len} bytes instead of {size}"),
            });
        }
        let digest = hex::encode(hasher.finalize());
        if digest != sha256 {
            return Err(CacheError::Mismatch {
                sha256: sha256.to_owned(),
                detail: format!("the bytes hash to {digest}"),
            });
        }
        Ok(tmp)
    }

    /// A content larger than the whole cache (or one evicted as fast as it is filled): fetched
    /// and verified into a temporary file that is unlinked once open, so it vanishes with the
    /// request.
    async fn uncached(
        &self,
        sha256: &str,
        size: u64,
        fetch: &Fetch,
    ) -> Result<tokio::fs::File, CacheError> {
        let tmp = self.download(sha256, size, fetch).await?;
        let file = tokio::fs::File::open(&tmp.0)
            .await
            .map_err(CacheError::io(&tmp.0))?;
        drop(tmp);
        Ok(file)
    }
}

/// A temporary file, deleted when dropped unless disarmed.
struct TempFile(PathBuf, bool);

impl TempFile {
    fn disarm(mut self) {
        self.1 = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Size and sha256 of a file, read on the blocking pool.
async fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let len = std::io::copy(&mut f, &mut hasher)?;
        Ok((len, hex::encode(hasher.finalize())))
    })
    .await
    .map_err(std::io::Error::other)?
}

fn gauge(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
