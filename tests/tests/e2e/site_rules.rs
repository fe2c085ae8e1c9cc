//! Redirect and header rules stored with each version, a URL per version, and `X-Robots-Tag`,
//! through the real binaries (raw HTTP with Host headers).

use std::path::PathBuf;

use opus_tests::{Daemon, site_with_opus_yml};

/// A folder for `version` of `web` with `_redirects` and `_headers` sending `/old` to
/// `/<version>-new` with `status`.
fn ruled_site(d: &Daemon, version: &str, status: u16) -> PathBuf {
    let dir = d.root.path().join(format!("site-{version}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("index.html"), format!("version {version}")).expect("write");
    std::fs::write(
        dir.join("_redirects"),
        format!("# moved\n/old /{version}-new {status}\n/docs/* /manual/:splat 301\n"),
    )
    .expect("write");
    std::fs::write(
        dir.join("_headers"),
        format!("/*\n  X-Built-From: {version}\n"),
    )
    .expect("write");
    dir
}

fn add_web(d: &Daemon) {
    let src = d.root.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    d.opus(&["add", "web", src.to_str().expect("utf-8")]).ok();
}

#[test]
fn rules_are_kept_with_each_version_and_a_rollback_restores_them() {
    let d = Daemon::start();
    add_web(&d);
    d.publish("web", "1", &ruled_site(&d, "1", 302));
    d.publish("web", "2", &ruled_site(&d, "2", 301));
    d.opus(&["deploy", "web", "1"]).ok();
    d.opus(&["deploy", "web", "2"]).ok();

    let r = d.get("web.localhost", "/old?ref=mail");
    assert_eq!((r.status, r.header("location")), (301, "/2-new?ref=mail"));
    let r = d.get("web.localhost", "/docs/install/linux");
    assert_eq!(
        (r.status, r.header("location")),
        (301, "/manual/install/linux")
    );
    let r = d.get("web.localhost", "/");
    assert_eq!(
        (r.text().as_str(), r.header("x-built-from")),
        ("version 2", "2")
    );
    // The rules files are read when the version is stored, never served.
    assert_eq!(d.get("web.localhost", "/_redirects").status, 404);

    d.opus(&["rollback", "web"]).ok();
    let r = d.get("web.localhost", "/old");
    assert_eq!((r.status, r.header("location")), (302, "/1-new"));
    assert_eq!(d.get("web.localhost", "/").header("x-built-from"), "1");
}

#[test]
fn a_malformed_rules_file_refuses_the_version_naming_file_and_line() {
    let d = Daemon::start();
    add_web(&d);
    let dir = ruled_site(&d, "1", 302);
    for (file, text, words) in [
        (
            "_redirects",
            "/ok /fine\n/loop /loop 301\n",
            "_redirects line 2: \"/loop\" redirects to itself",
        ),
        (
            "_redirects",
            "/a /b 299\n",
            "_redirects line 1: status 299 is not supported",
        ),
        ("_headers", "/*\n  not a header\n", "_headers line 2:"),
    ] {
        std::fs::write(dir.join(file), text).expect("write");
        let out = d.opus(&["publish", "web", "1", dir.to_str().expect("utf-8")]);
        let err = out.fails(1);
        assert!(err.contains(words), "{err}");
        std::fs::write(dir.join("_redirects"), "/old /1-new 302\n").expect("write");
        std::fs::write(dir.join("_headers"), "/*\n  X-A: 1\n").expect("write");
    }
    let listed = d.opus(&["artifacts", "web", "-o", "json"]).json();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
}

#[test]
fn opus_yml_site_rules_apply_and_a_bad_rules_file_fails_the_build() {
    let d = Daemon::start();
    let src = site_with_opus_yml(
        d.root.path(),
        "src",
        "build:\n  steps: [\"mkdir -p dist && echo home > dist/index.html && cp rules dist/_redirects\"]\nsite:\n  redirects:\n    - /from-yml /to-yml 307\n  headers:\n    /*:\n      Strict-Transport-Security: max-age=63072000\n",
    );
    std::fs::write(src.join("rules"), "/from-file /to-file 302\n").expect("write");
    d.opus(&["add", "web", src.to_str().expect("utf-8")]).ok();
    let id = d.trigger(&["web", "--version", "1"]);
    d.wait_for_state("web", id, "succeeded", 60);
    d.opus(&["deploy", "web", "1"]).ok();
    let r = d.get("web.localhost", "/from-yml");
    assert_eq!((r.status, r.header("location")), (307, "/to-yml"));
    let r = d.get("web.localhost", "/from-file");
    assert_eq!((r.status, r.header("location")), (302, "/to-file"));
    assert_eq!(
        d.get("web.localhost", "/")
            .header("strict-transport-security"),
        "max-age=63072000"
    );

    std::fs::write(src.join("rules"), "# fine\n/x /y 302\n/same /same 308!\n").expect("write");
    let id = d.trigger(&["web", "--version", "2"]);
    let b = d.wait_for_state("web", id, "failed", 60);
    let reason = b["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("_redirects line 3: \"/same\" redirects to itself"),
        "{b}"
    );

    std::fs::write(
        src.join("opus.yml"),
        "build:\n  steps: [\"mkdir -p dist && echo home > dist/index.html\"]\nsite:\n  redirects:\n    - /a /b 999\n",
    )
    .expect("write");
    let id = d.trigger(&["web", "--version", "3"]);
    let b = d.wait_for_state("web", id, "failed", 60);
    let reason = b["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("opus.yml site.redirects line 1: status 999 is not supported"),
        "{b}"
    );
}

#[test]
fn every_version_has_its_own_url_and_only_production_is_indexed() {
    let d = Daemon::start();
    add_web(&d);
    d.publish("web", "1", &ruled_site(&d, "1", 302));
    d.publish("web", "2.0-RC", &ruled_site(&d, "2.0-RC", 302));
    d.opus(&["deploy", "web", "2.0-RC"]).ok();
    d.opus(&["deploy", "web", "1", "--env", "staging"]).ok();
    let port = d.sites.rsplit(':').next().expect("port").to_owned();

    let listed = d.opus(&["artifacts", "web", "-o", "json"]).json();
    let url_of = |v: &str| -> String {
        listed
            .as_array()
            .expect("array")
            .iter()
            .find(|x| x["version"] == v)
            .and_then(|x| x["url"].as_str())
            .unwrap_or_else(|| panic!("no url for {v} in {listed}"))
            .to_owned()
    };
    assert_eq!(url_of("1"), format!("http://1--v--web.localhost:{port}/"));
    let rc = url_of("2.0-RC");
    assert!(
        rc.starts_with("http://2-0-rc-x") && rc.ends_with(&format!("--v--web.localhost:{port}/")),
        "{rc}"
    );
    let table = d.opus(&["artifacts", "web"]).ok().to_owned();
    assert!(table.contains(&url_of("1")), "{table}");

    // Each version's host serves it, deployed or not, never indexed.
    let rc_host = rc
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    for (host, body) in [
        ("1--v--web.localhost".to_owned(), "version 1"),
        (rc_host, "version 2.0-RC"),
    ] {
        let r = d.get(&host, "/");
        assert_eq!((r.status, r.text().as_str()), (200, body), "{host}");
        assert_eq!(r.header("x-robots-tag"), "noindex", "{host}");
    }
    d.publish("web", "3", &ruled_site(&d, "3", 302));
    let r = d.get("3--v--web.localhost", "/old");
    assert_eq!(
        (r.status, r.header("location")),
        (302, "/3-new"),
        "not deployed anywhere"
    );
    assert_eq!(d.get("4--v--web.localhost", "/").status, 404);
    assert_eq!(d.get("1--v--nope.localhost", "/").status, 404);

    let prod = d.get("web.localhost", "/");
    assert_eq!(
        (prod.text().as_str(), prod.header("x-robots-tag")),
        ("version 2.0-RC", "")
    );
    let staging = d.get("staging--web.localhost", "/");
    assert_eq!(
        (staging.text().as_str(), staging.header("x-robots-tag")),
        ("version 1", "noindex")
    );
}
