//! Library-level tests of the site server against temporary directories, over real HTTP (raw
//! requests, so that paths reach the server exactly as written).

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::handler::{clean_path, is_fingerprinted};
use super::*;

fn pn(name: &str) -> opus_core::model::ProjectName {
    opus_core::model::ProjectName::new(name).expect("project name")
}

fn vn(name: &str) -> opus_core::model::VersionName {
    opus_core::model::VersionName::new(name).expect("version name")
}

/// A response: status, lowercase headers, body.
pub(super) struct Resp {
    pub(super) status: u16,
    pub(super) headers: HashMap<String, String>,
    pub(super) body: Vec<u8>,
}

impl Resp {
    pub(super) fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `GET`-like request `method path` with `Host: host` and extra header lines.
pub(super) async fn req(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    extra: &[&str],
) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
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
    let body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        headers,
        body,
    }
}

pub(super) fn write(root: &std::path::Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::File::create(&p)
        .and_then(|mut f| f.write_all(data))
        .expect("write");
}

/// A site server on port 0 with `web` production served from a temp dir (no manifest), and
/// `app` (SPA, with a manifest) as `staging`.
async fn start() -> (SocketAddr, Arc<SiteServer>, tempfile::TempDir) {
    start_with(ConnectionLimits::default()).await
}

/// [`start`] with the connection limits `limits`.
pub(super) async fn start_with(
    limits: ConnectionLimits,
) -> (SocketAddr, Arc<SiteServer>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = dir.path().join("web");
    write(&web, "index.html", b"<h1>home</h1>");
    write(&web, "about/index.html", b"about");
    write(&web, "docs.html", b"docs");
    write(&web, "404.html", b"custom 404");
    write(
        &web,
        "app.3f9a1c2b.js",
        "console.log(1);".repeat(100).as_bytes(),
    );
    write(&web, "style.css", b"body{}");
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    write(&web, "big.bin", &big);
    let app = dir.path().join("app");
    write(&app, "index.html", b"spa shell");
    write(&app, "main.js", b"js");
    let mut files = HashMap::new();
    for (p, d) in [("index.html", &b"spa shell"[..]), ("main.js", b"js")] {
        files.insert(
            p.to_owned(),
            FileInfo {
                size: d.len() as u64,
                sha256: opus_core::artifact::sha256_hex(d),
            },
        );
    }
    let metrics = Metrics::new();
    let cache =
        SiteCache::load(&dir.path().join("site-cache"), 1 << 20, metrics.clone()).expect("cache");
    let server = Arc::new(SiteServer::new("localhost", metrics, cache));
    {
        let g = server.lock().await;
        server.apply(
            &g,
            vec![
                (
                    SiteKey::new("web", PRODUCTION),
                    Some(Arc::new(SiteVersion::new(
                        &pn("web"),
                        &vn("1.0"),
                        Content::Local(web),
                        false,
                        None,
                    ))),
                ),
                (
                    SiteKey::new("app", "staging"),
                    Some(Arc::new(SiteVersion::new(
                        &pn("app"),
                        &vn("2.0"),
                        Content::Local(app),
                        true,
                        Some(files),
                    ))),
                ),
            ],
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.clone().run(listener, limits, std::future::pending()));
    (addr, server, dir)
}

#[tokio::test]
async fn routes_by_host_and_serves_types_and_cache_headers() {
    let (addr, _s, _d) = start().await;
    let r = req(addr, "GET", "web.localhost:7080", "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "<h1>home</h1>");
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(r.header("cache-control"), "no-cache");
    assert_eq!(r.header("x-opus-version"), "1.0");
    assert!(r.header("etag").starts_with('"'));

    let r = req(addr, "GET", "web.localhost", "/app.3f9a1c2b.js", &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type").starts_with("text/javascript")
            || r.header("content-type")
                .starts_with("application/javascript")
    );
    assert_eq!(
        r.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    let r = req(addr, "GET", "web.localhost", "/style.css", &[]).await;
    assert_eq!(r.header("content-type"), "text/css; charset=utf-8");
    assert_eq!(
        r.header("cache-control"),
        "public, max-age=0, must-revalidate"
    );

    // Pretty URLs: a folder's index.html, and `<path>.html`.
    assert_eq!(
        req(addr, "GET", "web.localhost", "/about/", &[])
            .await
            .text(),
        "about"
    );
    assert_eq!(
        req(addr, "GET", "web.localhost", "/about", &[])
            .await
            .text(),
        "about"
    );
    assert_eq!(
        req(addr, "GET", "web.localhost", "/docs", &[]).await.text(),
        "docs"
    );

    // Other environments: `<env>--<project>.<domain>`.
    let r = req(addr, "GET", "staging--app.localhost", "/", &[]).await;
    assert_eq!(r.text(), "spa shell");
    assert_eq!(r.header("x-opus-version"), "2.0");
}

#[tokio::test]
async fn unknown_hosts_are_plain_404s_naming_nothing_internal() {
    let (addr, _s, _d) = start().await;
    for host in [
        "nope.localhost",
        "web.example.org",
        "localhost",
        "x--web.localhost",
        "a.b.localhost",
        "",
    ] {
        let r = req(addr, "GET", host, "/", &[]).await;
        assert_eq!(r.status, 404, "{host}");
        assert!(!r.text().contains("web"), "{host}: {}", r.text());
    }
}

#[tokio::test]
async fn not_found_uses_404_html_and_spa_falls_back_to_index() {
    let (addr, _s, _d) = start().await;
    let r = req(addr, "GET", "web.localhost", "/missing", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "custom 404");
    assert_eq!(r.header("cache-control"), "no-cache");
    let r = req(addr, "GET", "staging--app.localhost", "/deep/route", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "spa shell");
    // A missing asset in a SPA is still a 404 (no 404.html there: plain).
    let r = req(addr, "GET", "staging--app.localhost", "/missing.js", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "not found\n");
}

#[tokio::test]
async fn etag_conditional_and_gzip() {
    let (addr, _s, _d) = start().await;
    let r = req(addr, "GET", "web.localhost", "/app.3f9a1c2b.js", &[]).await;
    let etag = r.header("etag").to_owned();
    let r = req(
        addr,
        "GET",
        "web.localhost",
        "/app.3f9a1c2b.js",
        &[&format!("If-None-Match: {etag}")],
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), etag);

    let r = req(
        addr,
        "GET",
        "web.localhost",
        "/app.3f9a1c2b.js",
        &["Accept-Encoding: gzip, br"],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), "gzip");
    assert_eq!(r.header("vary"), "accept-encoding");
    assert_ne!(
        r.header("etag"),
        etag,
        "the gzip representation has its own tag"
    );
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut plain)
        .expect("gunzip");
    assert_eq!(plain, "console.log(1);".repeat(100));
    let r = req(
        addr,
        "GET",
        "web.localhost",
        "/app.3f9a1c2b.js",
        &["Accept-Encoding: gzip;q=0"],
    )
    .await;
    assert_eq!(r.header("content-encoding"), "");

    // With a manifest, the ETag comes from the file's sha256.
    let r = req(addr, "GET", "staging--app.localhost", "/main.js", &[]).await;
    let sha = opus_core::artifact::sha256_hex(b"js");
    assert_eq!(r.header("etag"), format!("\"{}\"", &sha[..32]));
}

#[tokio::test]
async fn head_and_ranges() {
    let (addr, _s, _d) = start().await;
    let r = req(addr, "HEAD", "web.localhost", "/big.bin", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), "1000000");
    assert!(r.body.is_empty());
    assert_eq!(r.header("accept-ranges"), "bytes");

    for path in ["/big.bin", "/style.css"] {
        let r = req(addr, "GET", "web.localhost", path, &["Range: bytes=1-3"]).await;
        assert_eq!(r.status, 206, "{path}");
        assert_eq!(r.body.len(), 3);
        assert!(
            r.header("content-range").starts_with("bytes 1-3/"),
            "{path}"
        );
        let r = req(
            addr,
            "GET",
            "web.localhost",
            path,
            &["Range: bytes=5000000-"],
        )
        .await;
        assert_eq!(r.status, 416, "{path}");
        assert!(r.header("content-range").starts_with("bytes */"));
    }
    let r = req(
        addr,
        "GET",
        "web.localhost",
        "/big.bin",
        &["Range: bytes=-10"],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), "bytes 999990-999999/1000000");
    let expect: Vec<u8> = (999_990..1_000_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(r.body, expect);
    let r = req(addr, "GET", "web.localhost", "/big.bin", &[]).await;
    assert_eq!(r.body.len(), 1_000_000);
    let r = req(addr, "POST", "web.localhost", "/", &[]).await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn paths_never_escape_the_version() {
    let (addr, _s, d) = start().await;
    // A file next to the version folder that an escape would reach.
    write(d.path(), "secret.txt", b"secret");
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/about/..%2fsecret.txt",
        "/..%5csecret.txt",
        "/%2fetc%2fpasswd",
        "/index.html%00.js",
        "/./index.html",
        "/a\\..\\secret.txt",
    ] {
        let r = req(addr, "GET", "web.localhost", path, &[]).await;
        assert!(r.status == 400 || r.status == 404, "{path}: {}", r.status);
        assert!(!r.text().contains("secret"), "{path}");
    }
    let (rel, dir) = clean_path("/a//b/").expect("ok");
    assert_eq!((rel.as_ref(), dir), ("a/b", true));
    let (rel, dir) = clean_path("/a/b.js").expect("ok");
    assert_eq!((rel.as_ref(), dir), ("a/b.js", false));
    let (rel, dir) = clean_path("/about/").expect("ok");
    assert_eq!((rel.as_ref(), dir), ("about", true));
    assert!(clean_path("/a/%2e/b").is_err());
    assert!(clean_path("/%ff").is_err());
}

#[test]
fn fingerprints_are_recognised() {
    assert!(is_fingerprinted("app.3f9a1c2b.js"));
    assert!(is_fingerprinted("index-BdX3kV9a.js"));
    assert!(!is_fingerprinted("app.js"));
    assert!(!is_fingerprinted("jquery-min.js"));
    assert!(!is_fingerprinted("index.html"));
}

#[tokio::test]
async fn a_swap_is_atomic_for_new_requests() {
    let (addr, server, d) = start().await;
    let v2 = d.path().join("web2");
    write(&v2, "index.html", b"v2");
    {
        let g = server.lock().await;
        server.apply(
            &g,
            vec![(
                SiteKey::new("web", PRODUCTION),
                Some(Arc::new(SiteVersion::new(
                    &pn("web"),
                    &vn("2.0"),
                    Content::Local(v2),
                    false,
                    None,
                ))),
            )],
        );
    }
    let r = req(addr, "GET", "web.localhost", "/", &[]).await;
    assert_eq!(r.text(), "v2");
    {
        let g = server.lock().await;
        server.apply(&g, vec![(SiteKey::new("web", PRODUCTION), None)]);
    }
    assert_eq!(
        req(addr, "GET", "web.localhost", "/", &[]).await.status,
        404
    );
    assert_eq!(
        server.url("web", "production"),
        format!("http://web.localhost:{}/", addr.port())
    );
    assert_eq!(
        server.url("web", "pr-1"),
        format!("http://pr-1--web.localhost:{}/", addr.port())
    );
}

#[test]
fn a_shared_host_goes_to_the_older_project_whatever_the_load_order() {
    let site = |project: &str| {
        Arc::new(SiteVersion::new(
            &pn(project),
            &vn("1.0"),
            Content::Local(std::path::PathBuf::from("/nonexistent")),
            false,
            None,
        ))
    };
    let t0 = std::time::SystemTime::UNIX_EPOCH;
    let later = t0 + std::time::Duration::from_secs(60);
    // `staging--rb` production and `rb` staging both answer at staging--rb.localhost.
    for (older, younger) in [("staging--rb", "rb"), ("rb", "staging--rb")] {
        let ages = ProjectAges::new([(older.to_owned(), t0), (younger.to_owned(), later)]);
        // Each HashMap iterates in its own random order: many tables cover both orders.
        for _ in 0..32 {
            let mut sites = HashMap::new();
            sites.insert(SiteKey::new("staging--rb", PRODUCTION), site("staging--rb"));
            sites.insert(SiteKey::new("rb", "staging"), site("rb"));
            let table = SiteTable::new(sites, "localhost", &ages, &Access::default());
            assert_eq!(
                table.by_host["staging--rb.localhost"].project.as_str(),
                older,
                "the older project keeps the host"
            );
        }
    }
    // A project unknown to the table (added since it was loaded) is the younger one.
    let ages = ProjectAges::new([("staging--rb".to_owned(), later)]);
    let mut sites = HashMap::new();
    sites.insert(SiteKey::new("staging--rb", PRODUCTION), site("staging--rb"));
    sites.insert(SiteKey::new("rb", "staging"), site("rb"));
    let table = SiteTable::new(sites, "localhost", &ages, &Access::default());
    assert_eq!(
        table.by_host["staging--rb.localhost"].project.as_str(),
        "staging--rb"
    );
}
