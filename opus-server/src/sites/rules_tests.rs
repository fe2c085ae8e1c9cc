//! The site server applying a version's redirect and header rules, `X-Robots-Tag`, and version
//! hosts, over real HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use opus_core::site_rules::{SiteRules, parse_headers, parse_redirects};

use super::tests::{req, write};
use super::*;

fn pn(name: &str) -> ProjectName {
    ProjectName::new(name).expect("project name")
}

fn vn(name: &str) -> VersionName {
    VersionName::new(name).expect("version name")
}

const REDIRECTS: &str = "\
/home / 301
/old /new 302
/news/* /blog/:splat 301
/p/:id /posts/:id.html 200
/about /elsewhere 301
/docs /elsewhere 301!
/gone/* /404.html 410
/en/* /en/404.html 404
/store id=:id /blog/:id 308
/* /index.html 200
";

const HEADERS: &str = "\
/*
  X-Frame-Options: DENY
/assets/*
  Cache-Control: public, max-age=60
";

/// A version of `web` with files and the rules above.
fn ruled_site(dir: &std::path::Path, version: &str) -> Arc<SiteVersion> {
    let root = dir.join(version);
    write(&root, "index.html", b"home");
    write(&root, "about.html", b"about page");
    write(&root, "docs.html", b"docs page");
    write(&root, "posts/7.html", b"post seven");
    write(&root, "404.html", b"site 404");
    write(&root, "en/404.html", b"english 404");
    write(&root, "assets/app.css", b"body{}");
    write(&root, "_redirects", REDIRECTS.as_bytes());
    write(&root, "_headers", HEADERS.as_bytes());
    let rules = SiteRules {
        redirects: parse_redirects(REDIRECTS, "_redirects").expect("redirects"),
        headers: parse_headers(HEADERS, "_headers").expect("headers"),
    };
    Arc::new(
        SiteVersion::new(&pn("web"), &vn(version), Content::Local(root), false, None)
            .with_rules(&rules),
    )
}

/// Serves versions named in `versions` for their hosts, as the deployer's loader does.
struct Versions(Vec<Arc<SiteVersion>>);

impl VersionSource for Versions {
    fn load<'a>(
        &'a self,
        project: &'a ProjectName,
        label: &'a str,
    ) -> BoxFuture<'a, Option<Arc<SiteVersion>>> {
        let found = self
            .0
            .iter()
            .find(|v| &v.project == project && version_label(&v.version) == label)
            .cloned();
        async move { found }.boxed()
    }
}

/// `web` production and staging (both the ruled version 1), legacy environment `a--v` of
/// `web`, and versions 1, 2 and `1.2.0` reachable at their hosts.
async fn start() -> (SocketAddr, Arc<SiteServer>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = ruled_site(dir.path(), "1");
    let two_root = dir.path().join("2");
    write(&two_root, "index.html", b"version two");
    let two = Arc::new(SiteVersion::new(
        &pn("web"),
        &vn("2"),
        Content::Local(two_root),
        false,
        None,
    ));
    let dotted_root = dir.path().join("1.2.0");
    write(&dotted_root, "index.html", b"dotted");
    let dotted = Arc::new(SiteVersion::new(
        &pn("web"),
        &vn("1.2.0"),
        Content::Local(dotted_root),
        false,
        None,
    ));
    let metrics = Metrics::new();
    let cache =
        SiteCache::load(&dir.path().join("site-cache"), 1 << 20, metrics.clone()).expect("cache");
    let server = Arc::new(SiteServer::new("localhost", metrics, cache));
    server.set_version_source(Arc::new(Versions(vec![one.clone(), two.clone(), dotted])));
    {
        let g = server.lock().await;
        server.apply(
            &g,
            vec![
                (SiteKey::new("web", PRODUCTION), Some(one.clone())),
                (SiteKey::new("web", "staging"), Some(one)),
                (SiteKey::new("web", "a--v"), Some(two)),
            ],
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.clone().run(
        listener,
        ConnectionLimits::default(),
        std::future::pending(),
    ));
    (addr, server, dir)
}

#[tokio::test]
async fn redirect_rules_apply_in_order_with_shadowing_and_force() {
    let (addr, _server, _dir) = start().await;
    let get = |path: &'static str| req(addr, "GET", "web.localhost", path, &[]);
    // (path, status, Location or body)
    let cases: &[(&str, u16, &str)] = &[
        ("/home", 301, "/"),
        ("/old?utm=1", 302, "/new?utm=1"),
        ("/news/2024/05/story", 301, "/blog/2024/05/story"),
        ("/store?id=42", 308, "/blog/42"),
        // A 200 rule serves its target's content at the requested URL.
        ("/p/7", 200, "post seven"),
        // Not forced: the page about.html exists, so the file wins.
        ("/about", 200, "about page"),
        // Forced: the rule wins over docs.html.
        ("/docs", 301, "/elsewhere"),
        // Custom statuses with a page's content.
        ("/gone/thing", 410, "site 404"),
        ("/en/missing", 404, "english 404"),
        // The catch-all rewrite, last: unknown paths serve index.html.
        ("/some/route", 200, "home"),
        // The rules files themselves are never served.
        ("/_redirects", 404, "site 404"),
        ("/_headers", 404, "site 404"),
    ];
    for (path, status, want) in cases {
        let r = get(path).await;
        assert_eq!(r.status, *status, "{path}: {}", r.text());
        if (300..400).contains(status) {
            assert_eq!(r.header("location"), *want, "{path}");
        } else {
            assert_eq!(r.text(), *want, "{path}");
        }
    }
}

#[tokio::test]
async fn header_rules_add_and_replace_headers_by_path() {
    let (addr, _server, _dir) = start().await;
    let r = req(addr, "GET", "web.localhost", "/assets/app.css", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-frame-options"), "DENY");
    assert_eq!(r.header("cache-control"), "public, max-age=60");
    let r = req(addr, "GET", "web.localhost", "/", &[]).await;
    assert_eq!(r.header("x-frame-options"), "DENY");
    assert_eq!(r.header("cache-control"), "no-cache");
}

#[tokio::test]
async fn only_production_is_indexable() {
    let (addr, _server, _dir) = start().await;
    let prod = req(addr, "GET", "web.localhost", "/", &[]).await;
    assert_eq!((prod.status, prod.header("x-robots-tag")), (200, ""));
    for host in [
        "staging--web.localhost",
        "STAGING--web.localhost:80",
        "2--v--web.localhost",
    ] {
        let r = req(addr, "GET", host, "/", &[]).await;
        assert_eq!(
            (r.status, r.header("x-robots-tag")),
            (200, "noindex"),
            "{host}"
        );
    }
    // A 404 of a preview is not indexed either.
    let r = req(addr, "GET", "staging--web.localhost", "/en/x", &[]).await;
    assert_eq!((r.status, r.header("x-robots-tag")), (404, "noindex"));
}

#[tokio::test]
async fn every_version_has_its_own_host_and_environments_keep_theirs() {
    let (addr, server, _dir) = start().await;
    // The listener task records the port too; whichever comes first, it is this one.
    server.set_port(addr.port());
    assert_eq!(
        server.version_url(&pn("web"), &vn("2")),
        format!("http://2--v--web.localhost:{}/", addr.port())
    );
    let label = version_label(&vn("1.2.0"));
    let dotted_host = format!("{label}--v--web.localhost");
    let cases: Vec<(String, u16, &str)> = vec![
        ("2--v--web.localhost".into(), 200, "version two"),
        (dotted_host, 200, "dotted"),
        // Version 1's rules apply at its own host too.
        ("1--v--web.localhost".into(), 200, "home"),
        (
            "9--v--web.localhost".into(),
            404,
            "no site is deployed at this address\n",
        ),
        (
            "2--v--nope.localhost".into(),
            404,
            "no site is deployed at this address\n",
        ),
        (
            "2--v--web.example.com".into(),
            404,
            "no site is deployed at this address\n",
        ),
        // The legacy environment `a--v` keeps its host over version `a`.
        ("a--v--web.localhost".into(), 200, "version two"),
    ];
    for (host, status, body) in cases {
        let r = req(addr, "GET", &host, "/", &[]).await;
        assert_eq!((r.status, r.text().as_str()), (status, body), "{host}");
    }
    let r = req(addr, "GET", "1--v--web.localhost", "/old", &[]).await;
    assert_eq!((r.status, r.header("location")), (302, "/new"));
    let r = req(addr, "POST", "2--v--web.localhost", "/", &[]).await;
    assert_eq!(r.status, 405);
}
