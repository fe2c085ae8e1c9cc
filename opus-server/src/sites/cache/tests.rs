//! Unit tests of the site cache: fills, the bound, LRU eviction, single-flight fills,
//! verification, and what a restart finds.

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::*;

/// A fake remote store holding one content: counts fetches, streams in small chunks after a
/// delay (so that concurrent requests overlap), or fails.
struct Remote {
    data: Bytes,
    fetches: Arc<AtomicUsize>,
}

impl Remote {
    fn new(data: impl Into<Bytes>) -> Remote {
        Remote {
            data: data.into(),
            fetches: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn sha(&self) -> String {
        opus_core::artifact::sha256_hex(&self.data)
    }

    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn count(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// A fetch that serves `served` (the content itself, or something else to play a damaged
    /// store).
    fn fetch_of(&self, served: Bytes) -> Fetch {
        let fetches = self.fetches.clone();
        Arc::new(move || {
            fetches.fetch_add(1, Ordering::SeqCst);
            let served = served.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let chunks: Vec<Result<Bytes, FetchError>> = served
                    .chunks(7)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect();
                Ok(futures::stream::iter(chunks).boxed())
            }
            .boxed()
        })
    }

    fn fetch(&self) -> Fetch {
        self.fetch_of(self.data.clone())
    }

    /// A fetch whose store fails.
    fn failing(&self) -> Fetch {
        let fetches = self.fetches.clone();
        Arc::new(move || {
            fetches.fetch_add(1, Ordering::SeqCst);
            async move { Err::<ByteStream, FetchError>("connection refused".into()) }.boxed()
        })
    }
}

async fn read_all(mut f: tokio::fs::File) -> Vec<u8> {
    let mut out = Vec::new();
    f.read_to_end(&mut out).await.expect("read");
    out
}

fn cache(dir: &Path, limit: u64) -> SiteCache {
    SiteCache::load(dir, limit, Metrics::new()).expect("open the cache")
}

/// Files in the cache folder (not counting the tmp folder), and files in tmp.
fn on_disk(dir: &Path) -> (Vec<String>, usize) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != TMP)
        .collect();
    names.sort();
    let tmp = std::fs::read_dir(dir.join(TMP)).map_or(0, |d| d.count());
    (names, tmp)
}

#[tokio::test]
async fn a_content_is_fetched_once_then_served_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cache(dir.path(), 1 << 20);
    let r = Remote::new("hello, cache".repeat(100));
    let f = c.open(&r.sha(), r.size(), &r.fetch()).await.expect("open");
    assert_eq!(read_all(f).await, r.data);
    let f = c.open(&r.sha(), r.size(), &r.fetch()).await.expect("again");
    assert_eq!(read_all(f).await, r.data);
    assert_eq!(r.count(), 1, "the second open is a hit");
    assert_eq!(c.bytes(), r.size());
    assert_eq!(on_disk(dir.path()), (vec![r.sha()], 0));
}

#[tokio::test]
async fn concurrent_requests_share_one_fetch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cache(dir.path(), 1 << 20);
    let r = Arc::new(Remote::new(vec![7u8; 50_000]));
    let fetch = r.fetch();
    let opens = (0..20).map(|_| {
        let (c, r, fetch) = (c.clone(), r.clone(), fetch.clone());
        tokio::spawn(async move {
            let f = c.open(&r.sha(), r.size(), &fetch).await?;
            Ok::<_, CacheError>(read_all(f).await.len())
        })
    });
    for done in futures::future::join_all(opens).await {
        assert_eq!(done.expect("task").expect("open"), 50_000);
    }
    assert_eq!(r.count(), 1, "twenty concurrent requests, one fetch");
}

#[tokio::test]
async fn the_least_recently_used_content_is_evicted_over_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cache(dir.path(), 250);
    let a = Remote::new(vec![b'a'; 100]);
    let b = Remote::new(vec![b'b'; 100]);
    let d = Remote::new(vec![b'd'; 100]);
    c.open(&a.sha(), 100, &a.fetch()).await.expect("a");
    c.open(&b.sha(), 100, &b.fetch()).await.expect("b");
    // `a` is used again, so `b` is now the least recently used.
    c.open(&a.sha(), 100, &a.fetch()).await.expect("a again");
    c.open(&d.sha(), 100, &d.fetch()).await.expect("d");
    assert!(c.bytes() <= 250, "{} bytes cached", c.bytes());
    assert!(c.contains(&a.sha()) && c.contains(&d.sha()));
    assert!(!c.contains(&b.sha()), "b was evicted");
    let mut expect = vec![a.sha(), d.sha()];
    expect.sort();
    assert_eq!(
        on_disk(dir.path()),
        (expect, 0),
        "evicted files are deleted"
    );
    // An evicted content is fetched again when asked for.
    let f = c.open(&b.sha(), 100, &b.fetch()).await.expect("b again");
    assert_eq!(read_all(f).await, b.data);
    assert_eq!(b.count(), 2);
}

#[tokio::test]
async fn an_open_file_survives_its_eviction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cache(dir.path(), 150);
    let a = Remote::new(vec![b'a'; 100]);
    let b = Remote::new(vec![b'b'; 100]);
    let held = c.open(&a.sha(), 100, &a.fetch()).await.expect("a");
    c.open(&b.sha(), 100, &b.fetch()).await.expect("b");
    assert!(!c.contains(&a.sha()), "a was evicted");
    assert_eq!(
        read_all(held).await,
        a.data,
        "a request reading it still gets every byte"
    );
}

#[tokio::test]
async fn a_content_larger_than_the_bound_is_served_but_not_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cache(dir.path(), 1000);
    let big = Remote::new(vec![b'x'; 5000]);
    let f = c.open(&big.sha(), 5000, &big.fetch()).await.expect("big");
    assert_eq!(read_all(f).await, big.data);
    assert_eq!(c.bytes(), 0);
    assert_eq!(
        on_disk(dir.path()),
        (vec![], 0),
        "nothing kept, no temporary file left"
    );
}

#[tokio::test]
async fn a_damaged_store_copy_is_refused_and_not_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cache(dir.path(), 1 << 20);
    let r = Remote::new("the real bytes");
    for served in ["the fake bytes", "short", "the real bytes and more"] {
        let err = c
            .open(&r.sha(), r.size(), &r.fetch_of(Bytes::from(served)))
            .await
            .expect_err("a mismatch");
        assert!(matches!(err, CacheError::Mismatch { .. }), "{err}");
        assert!(err.is_store());
        assert!(err.to_string().contains("opus verify"), "{err}");
    }
    assert_eq!(on_disk(dir.path()), (vec![], 0));
    assert_eq!(c.bytes(), 0);
}

#[tokio::test]
async fn a_store_failure_is_reported_and_retried_on_the_next_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cache(dir.path(), 1 << 20);
    let r = Remote::new("content");
    let err = c
        .open(&r.sha(), r.size(), &r.failing())
        .await
        .expect_err("the store is down");
    assert!(err.is_store(), "{err}");
    assert!(err.to_string().contains("connection refused"), "{err}");
    let f = c
        .open(&r.sha(), r.size(), &r.fetch())
        .await
        .expect("store back");
    assert_eq!(read_all(f).await, r.data);
    assert_eq!(r.count(), 2, "a failed fill is not remembered");
}

#[tokio::test]
async fn a_damaged_cached_file_is_fetched_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Remote::new("good content!");
    {
        let c = cache(dir.path(), 1 << 20);
        c.open(&r.sha(), r.size(), &r.fetch()).await.expect("fill");
    }
    // Same size, different bytes: only hashing can tell. Found on the next start, it is
    // verified on first use, found damaged, and fetched again.
    std::fs::write(dir.path().join(r.sha()), "bad content!!").expect("damage");
    let c = cache(dir.path(), 1 << 20);
    assert!(c.contains(&r.sha()), "indexed on start");
    let f = c.open(&r.sha(), r.size(), &r.fetch()).await.expect("open");
    assert_eq!(read_all(f).await, r.data);
    assert_eq!(r.count(), 2, "fetched again");
    assert_eq!(
        std::fs::read(dir.path().join(r.sha())).expect("cached"),
        r.data
    );

    // A file whose size changed while opusd runs is noticed on open.
    std::fs::write(dir.path().join(r.sha()), "truncated").expect("damage");
    let f = c.open(&r.sha(), r.size(), &r.fetch()).await.expect("open");
    assert_eq!(read_all(f).await, r.data);
    assert_eq!(r.count(), 3);
}

#[tokio::test]
async fn a_restart_keeps_good_files_and_applies_a_smaller_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Remote::new(vec![b'a'; 100]);
    let b = Remote::new(vec![b'b'; 100]);
    {
        let c = cache(dir.path(), 1000);
        c.open(&a.sha(), 100, &a.fetch()).await.expect("a");
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.open(&b.sha(), 100, &b.fetch()).await.expect("b");
    }
    // Set a's time well before b's, as if it had been filled long ago.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join(a.sha()))
        .and_then(|f| f.set_modified(old))
        .expect("set mtime");
    std::fs::write(dir.path().join("stray.txt"), "not a cache file").expect("stray");
    std::fs::write(dir.path().join(TMP).join("partial"), "half a download").expect("partial");

    let c = cache(dir.path(), 150);
    assert_eq!(
        on_disk(dir.path()),
        (vec![b.sha()], 0),
        "oldest evicted, strays removed"
    );
    let f = c.open(&b.sha(), 100, &b.fetch()).await.expect("b");
    assert_eq!(read_all(f).await, b.data);
    assert_eq!(
        b.count(),
        1,
        "a good file from the last run is not fetched again"
    );
}

#[tokio::test]
async fn a_manifest_sha_that_is_not_hex_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cache(dir.path(), 1 << 20);
    let r = Remote::new("x");
    let err = c
        .open("../../etc/passwd", 1, &r.fetch())
        .await
        .expect_err("refused");
    assert!(err.is_store(), "{err}");
    assert_eq!(r.count(), 0);
}
