//! The site server over a remote store: versions in an in-memory object store (no local path,
//! like s3) deployed through the real [`Deployer`], served through the disk cache, and compared
//! answer by answer with the same version served from local disk.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opus_core::artifact::{ArtifactStore, Origin};
use opus_core::model::{EnvName, Project, ProjectName, Source, StoreName, VersionName};
use opus_core::store::{MetaStore, ReleaseReason, SiteOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::deploys::Deployer;

/// A response: status, lowercase headers, body.
#[derive(Debug, PartialEq)]
struct Resp {
    status: u16,
    headers: std::collections::BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

async fn req(addr: SocketAddr, method: &str, path: &str, extra: &[&str]) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut text =
        format!("{method} {path} HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n");
    for h in extra {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    s.write_all(text.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        // The date changes between two answers; everything else must not.
        .filter(|(k, _)| k != "date")
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn write(root: &std::path::Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, data).expect("write");
}

/// Over a small file, under the memory cache's limit, so it is streamed from disk.
fn big() -> Vec<u8> {
    (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

struct Fixture {
    addr: SocketAddr,
    deployer: Deployer,
    meta: MetaStore,
    artifacts: ArtifactStore,
    metrics: Metrics,
    dir: tempfile::TempDir,
}

/// Project `web` with version `1.0` in store `store` (`""`: local disk; `"mem"`: an in-memory
/// object store, remote as far as the site server can tell), deployed to production, and the
/// site server on port 0 with a site cache of `cache_limit` bytes.
async fn fixture(store: &str, spa: bool, cache_limit: u64) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
    meta.create_project(&Project {
        name: ProjectName::new("web").expect("name"),
        source: Source::Git("https://example.com/web.git".into()),
        branch: "main".into(),
        created_at: SystemTime::now(),
        keep_versions: 0,
    })
    .expect("project");
    let url = format!("file://{}", dir.path().join("artifacts").display());
    let extra = [(
        StoreName::new("mem").expect("name"),
        "memory:///".to_owned(),
    )];
    let artifacts = ArtifactStore::open(meta.clone(), &url, &extra).expect("artifact store");
    let src = dir.path().join("src");
    write(&src, "index.html", b"<html><body>remote home</body></html>");
    write(&src, "404.html", b"<html>custom not found</html>");
    write(
        &src,
        "assets/app.3f9a1c2b.js",
        "console.log('hello');\n".repeat(2000).as_bytes(),
    );
    write(
        &src,
        "assets/copy.js",
        "console.log('hello');\n".repeat(2000).as_bytes(),
    );
    write(&src, "big.bin", &big());
    artifacts
        .store_dir(
            &ProjectName::new("web").expect("name"),
            &VersionName::new("1.0").expect("version"),
            &src,
            &Origin {
                build_id: 1,
                commit: String::new(),
                store: StoreName::or_default(store).expect("store name"),
            },
            &SiteOptions {
                spa,
                ..SiteOptions::default()
            },
        )
        .await
        .expect("store the version");
    let metrics = Metrics::new();
    let cache = SiteCache::load(&dir.path().join("site-cache"), cache_limit, metrics.clone())
        .expect("cache");
    let sites = Arc::new(SiteServer::new("localhost", metrics.clone(), cache));
    let deployer = Deployer::new(
        meta.clone(),
        artifacts.clone(),
        sites.clone(),
        metrics.clone(),
    );
    deployer
        .deploy(
            &ProjectName::new("web").expect("name"),
            &EnvName::production(),
            &VersionName::new("1.0").expect("version"),
            "test",
            ReleaseReason::Deploy,
            false,
        )
        .await
        .expect("deploy");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(sites.run(
        listener,
        ConnectionLimits::default(),
        std::future::pending(),
    ));
    Fixture {
        addr,
        deployer,
        meta,
        artifacts,
        metrics,
        dir,
    }
}

/// Files in the site cache folder.
fn cached_files(f: &Fixture) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(f.dir.path().join("site-cache"))
        .expect("cache dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "tmp")
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_remote_version_answers_exactly_like_a_local_one() {
    let local = fixture("", false, 64 << 20).await;
    let remote = fixture("mem", false, 64 << 20).await;
    assert!(
        remote
            .artifacts
            .local_path(
                &ProjectName::new("web").expect("name"),
                &VersionName::new("1.0").expect("version"),
                "index.html",
            )
            .expect("path")
            .is_none(),
        "the mem store is remote to the site server"
    );
    let etag = req(local.addr, "GET", "/assets/app.3f9a1c2b.js", &[])
        .await
        .header("etag")
        .to_owned();
    let inm = format!("If-None-Match: {etag}");
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        ("GET", "/", vec![]),
        ("HEAD", "/", vec![]),
        ("GET", "/index.html", vec!["Accept-Encoding: gzip"]),
        ("GET", "/assets/app.3f9a1c2b.js", vec![]),
        (
            "GET",
            "/assets/app.3f9a1c2b.js",
            vec!["Accept-Encoding: gzip"],
        ),
        ("GET", "/assets/app.3f9a1c2b.js", vec![inm.as_str()]),
        ("GET", "/assets/copy.js", vec!["Range: bytes=5-30"]),
        ("GET", "/big.bin", vec![]),
        ("GET", "/big.bin", vec!["Range: bytes=100000-100999"]),
        ("GET", "/big.bin", vec!["Range: bytes=-10"]),
        ("GET", "/big.bin", vec!["Range: bytes=2000000-"]),
        ("HEAD", "/big.bin", vec![]),
        ("GET", "/no/such/page", vec![]),
        ("GET", "/missing.js", vec![]),
        ("GET", "/../etc/passwd", vec![]),
    ];
    for (method, path, extra) in &cases {
        let l = req(local.addr, method, path, extra).await;
        let r = req(remote.addr, method, path, extra).await;
        assert_eq!(l, r, "{method} {path} {extra:?}");
    }
    // The answers are the right ones, not just equal ones.
    let home = req(remote.addr, "GET", "/", &[]).await;
    assert_eq!(
        (home.status, &home.body[..]),
        (200, &b"<html><body>remote home</body></html>"[..])
    );
    assert_eq!(home.header("x-opus-version"), "1.0");
    let part = req(
        remote.addr,
        "GET",
        "/big.bin",
        &["Range: bytes=100000-100999"],
    )
    .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, big()[100_000..101_000]);
    assert_eq!(part.header("content-range"), "bytes 100000-100999/1000000");
    let whole = req(remote.addr, "GET", "/big.bin", &[]).await;
    assert_eq!(whole.body, big());
    let gz = req(
        remote.addr,
        "GET",
        "/assets/app.3f9a1c2b.js",
        &["Accept-Encoding: gzip"],
    )
    .await;
    assert_eq!(gz.header("content-encoding"), "gzip");
    let not_modified = req(
        remote.addr,
        "GET",
        "/assets/app.3f9a1c2b.js",
        &[inm.as_str()],
    )
    .await;
    assert_eq!(not_modified.status, 304);
    let missing = req(remote.addr, "GET", "/no/such/page", &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body, b"<html>custom not found</html>");
    assert_eq!(
        req(remote.addr, "GET", "/big.bin", &["Range: bytes=2000000-"])
            .await
            .status,
        416
    );

    // Each content was fetched once (app.js and copy.js are one content), whoever asked first:
    // the requests or the warming after the deploy.
    let contents = 4;
    assert_eq!(remote.metrics.site_cache_fetches.get(), contents);
    assert_eq!(cached_files(&remote).len() as u64, contents);
    assert_eq!(
        local.metrics.site_cache_fetches.get(),
        0,
        "local versions bypass the cache"
    );
    assert!(cached_files(&local).is_empty());
}

#[tokio::test]
async fn a_deploy_warms_the_cache_and_a_redeploy_fetches_nothing() {
    let f = fixture("mem", false, 64 << 20).await;
    let bytes = (1_000_000
        + "console.log('hello');\n".len() * 2000
        + "<html><body>remote home</body></html>".len()
        + "<html>custom not found</html>".len()) as i64;
    // A fill renames its file into place before it indexes it and sets the gauge: wait for both.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cached_files(&f).len() < 4 || f.metrics.site_cache_bytes.get() != bytes {
        assert!(
            std::time::Instant::now() < deadline,
            "warming did not finish: {:?}, {} bytes indexed of {bytes}",
            cached_files(&f),
            f.metrics.site_cache_bytes.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.metrics.site_cache_fetches.get(), 4);
    f.deployer
        .deploy(
            &ProjectName::new("web").expect("name"),
            &EnvName::new("staging").expect("env"),
            &VersionName::new("1.0").expect("version"),
            "test",
            ReleaseReason::Deploy,
            false,
        )
        .await
        .expect("deploy again");
    let r = req(f.addr, "GET", "/big.bin", &[]).await;
    assert_eq!(r.body, big());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        f.metrics.site_cache_fetches.get(),
        4,
        "shared content is not fetched again"
    );
}

#[tokio::test]
async fn spa_fallback_from_a_remote_store() {
    let f = fixture("mem", true, 64 << 20).await;
    let r = req(f.addr, "GET", "/dashboard/settings", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<html><body>remote home</body></html>");
    assert_eq!(req(f.addr, "GET", "/missing.js", &[]).await.status, 404);
}

#[tokio::test]
async fn a_store_failure_is_a_502_that_names_nothing_internal() {
    // A bound smaller than big.bin: it is fetched for each request and never warmed.
    let f = fixture("mem", false, 100_000).await;
    // Behind the site server's back: the environment goes from the store alone (the table still
    // serves it), so the version is no longer protected and can be deleted.
    f.meta
        .remove_environment(
            &ProjectName::new("web").expect("name"),
            &EnvName::production(),
        )
        .expect("remove the environment from the store");
    f.artifacts
        .delete_version(
            &ProjectName::new("web").expect("name"),
            &VersionName::new("1.0").expect("version"),
            "test",
        )
        .await
        .expect("delete the version");
    let r = req(f.addr, "GET", "/big.bin", &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("retry-after"), "5");
    let text = String::from_utf8_lossy(&r.body);
    for internal in ["mem", "memory", "web/", "1.0", "sha", "object", "store"] {
        assert!(!text.contains(internal), "{internal:?} in {text:?}");
    }
    assert!(text.contains("try again"), "{text}");
    let metrics = f.metrics.render();
    assert!(
        metrics.contains("opus_site_requests_total{status=\"502\"} 1"),
        "{metrics}"
    );
}
