//! Deploys, rollbacks, releases, environments and the site server, through the real binaries.

use std::path::PathBuf;

use opus_tests::{Daemon, http};

/// A daemon with project `web` and versions `1.0`, `2.0`, `3.0` published (each `index.html`
/// says its version; `2.0` also has a 404.html).
fn daemon_with_versions() -> Daemon {
    let d = Daemon::start();
    let src = d.root.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    d.opus(&["add", "web", src.to_str().expect("utf-8")]).ok();
    for v in ["1.0", "2.0", "3.0"] {
        let dir = site(&d, v);
        if v == "2.0" {
            std::fs::write(dir.join("404.html"), "gone from 2.0").expect("write");
        }
        d.publish("web", v, &dir);
    }
    d
}

fn site(d: &Daemon, version: &str) -> PathBuf {
    let dir = d.root.path().join(format!("site-{version}"));
    std::fs::create_dir_all(dir.join("assets")).expect("mkdir");
    std::fs::write(dir.join("index.html"), format!("version {version}")).expect("write");
    std::fs::write(
        dir.join("assets").join("app.1a2b3c4d.js"),
        format!("console.log('{version}');").repeat(50),
    )
    .expect("write");
    dir
}

fn served(d: &Daemon, host: &str) -> String {
    d.get(host, "/").text()
}

#[test]
fn deploy_rollback_and_releases() {
    let d = daemon_with_versions();
    let port = d.sites.rsplit(':').next().expect("port").to_owned();

    let out = d.opus(&["deploy", "web", "1.0"]);
    assert!(
        out.ok().contains(&format!("http://web.localhost:{port}/")),
        "{}",
        out.stdout
    );
    assert_eq!(served(&d, "web.localhost"), "version 1.0");
    // The original form.
    d.opus(&["-deploy", "web", "2.0"]).ok();
    let r = d.get("web.localhost", "/");
    assert_eq!(r.text(), "version 2.0");
    assert_eq!(r.header("x-opus-version"), "2.0");
    assert_eq!(r.header("cache-control"), "no-cache");
    let r = d.get("web.localhost", "/assets/app.1a2b3c4d.js");
    assert_eq!(
        r.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(d.get("web.localhost", "/nope").text(), "gone from 2.0");
    d.opus(&["deploy", "web", "3.0"]).ok();
    assert_eq!(served(&d, "web.localhost"), "version 3.0");

    // Rollback goes to the release before, pins, and says so; a second one goes further back.
    let out = d.opus(&["rollback", "web"]);
    assert!(out.ok().contains("rolled back web@2.0"), "{}", out.stdout);
    assert!(out.stderr.contains("pinned"), "{}", out.stderr);
    assert_eq!(served(&d, "web.localhost"), "version 2.0");
    d.opus(&["-rollback", "web"]).ok();
    assert_eq!(served(&d, "web.localhost"), "version 1.0");
    // Nothing before 1.0.
    let err = d.opus(&["rollback", "web"]).fails(1).to_owned();
    assert!(err.contains("no earlier release"), "{err}");
    // `--to` names a version.
    d.opus(&["rollback", "web", "--to", "3.0"]).ok();
    assert_eq!(served(&d, "web.localhost"), "version 3.0");

    let releases = d.opus(&["releases", "web", "--output", "json"]).json();
    let list = releases.as_array().expect("an array");
    assert_eq!(list.len(), 6);
    assert_eq!(list[0]["seq"], 6);
    assert_eq!(list[0]["version"], "3.0");
    assert_eq!(list[0]["reason"], "rollback");
    assert_eq!(list[0]["env"], "production");
    assert_eq!(list[5]["seq"], 1);
    assert_eq!(list[5]["reason"], "deploy");
    let table = d.opus(&["releases", "web"]).ok().to_owned();
    assert!(table.starts_with("SEQ"), "{table}");

    let envs = d.opus(&["env", "list", "web", "-o", "json"]).json();
    assert_eq!(envs[0]["name"], "production");
    assert_eq!(envs[0]["pinned"], true);
    d.opus(&["env", "unpin", "web"]).ok();
    let envs = d.opus(&["env", "list", "web", "-o", "json"]).json();
    assert_eq!(envs[0]["pinned"], false);
    // A deploy unpins too.
    d.opus(&["rollback", "web"]).ok();
    d.opus(&["deploy", "web", "1.0"]).ok();
    let envs = d.opus(&["env", "list", "web", "-o", "json"]).json();
    assert_eq!(envs[0]["pinned"], false);
}

#[test]
fn previews_and_other_environments_route_by_host() {
    let d = daemon_with_versions();
    d.opus(&["deploy", "web", "1.0"]).ok();
    let out = d.opus(&["deploy", "web", "2.0", "--env", "feature-x"]);
    assert!(
        out.ok().contains("http://feature-x--web.localhost:"),
        "{}",
        out.stdout
    );
    assert_eq!(served(&d, "feature-x--web.localhost"), "version 2.0");
    assert_eq!(served(&d, "web.localhost"), "version 1.0");
    let only = d
        .opus(&["releases", "web", "--env", "feature-x", "-o", "json"])
        .json();
    assert_eq!(only.as_array().map(Vec::len), Some(1));
    d.opus(&["env", "remove", "web", "feature-x"]).ok();
    assert_eq!(d.get("feature-x--web.localhost", "/").status, 404);
    let err = d
        .opus(&["env", "remove", "web", "feature-x"])
        .fails(1)
        .to_owned();
    assert!(err.contains("no environment"), "{err}");
}

#[test]
fn bad_input_gets_the_right_errors() {
    let d = daemon_with_versions();
    // A version that does not exist: NotFound.
    let err = d.opus(&["deploy", "web", "9.9"]).fails(1).to_owned();
    assert!(err.contains("9.9"), "{err}");
    let err = d.opus(&["deploy", "nope", "1.0"]).fails(1).to_owned();
    assert!(err.contains("nope"), "{err}");
    let err = d
        .opus(&["deploy", "web", "1.0", "--env", "Bad_Env"])
        .fails(1)
        .to_owned();
    assert!(err.contains("invalid environment name"), "{err}");
    // Rollback of an environment never deployed, and with no earlier release.
    let err = d.opus(&["rollback", "web"]).fails(1).to_owned();
    assert!(err.contains("no environment"), "{err}");
    d.opus(&["deploy", "web", "1.0"]).ok();
    let err = d.opus(&["rollback", "web"]).fails(1).to_owned();
    assert!(err.contains("no earlier release"), "{err}");
    let err = d
        .opus(&["rollback", "web", "--to", "7.7"])
        .fails(1)
        .to_owned();
    assert!(err.contains("7.7"), "{err}");

    // The gRPC codes.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(d.server.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut c = opus_core::proto::deploy_service_client::DeployServiceClient::new(channel);
        let e = c
            .deploy(opus_core::proto::DeployRequest {
                project: "web".into(),
                version: "9.9".into(),
                env: String::new(),
            })
            .await
            .expect_err("no such version");
        assert_eq!(e.code(), tonic::Code::NotFound);
        let e = c
            .rollback(opus_core::proto::RollbackRequest {
                project: "web".into(),
                env: String::new(),
                to: String::new(),
            })
            .await
            .expect_err("nothing earlier");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().contains("no earlier release"),
            "{}",
            e.message()
        );
    });

    // The site server: unknown hosts, escaping paths, ranges past the end.
    let r = d.get("other.localhost", "/");
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("web"), "{}", r.text());
    for path in [
        "/../meta",
        "/%2e%2e/%2e%2e/meta",
        "/assets%2fapp.1a2b3c4d.js",
        "/index.html%00",
    ] {
        let r = d.get("web.localhost", path);
        assert!(r.status == 400 || r.status == 404, "{path}: {}", r.status);
    }
    let r = http(
        &d.sites,
        "GET",
        "web.localhost",
        "/index.html",
        &["Range: bytes=999-"],
    );
    assert_eq!(r.status, 416);
    let r = http(
        &d.sites,
        "GET",
        "web.localhost",
        "/index.html",
        &["Range: bytes=0-6"],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.text(), "version");
    let etag = d.get("web.localhost", "/").header("etag").to_owned();
    let r = http(
        &d.sites,
        "GET",
        "web.localhost",
        "/",
        &[&format!("If-None-Match: {etag}")],
    );
    assert_eq!(r.status, 304);
    let r = http(&d.sites, "HEAD", "web.localhost", "/", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[test]
fn releases_and_pointers_survive_a_restart() {
    let mut d = daemon_with_versions();
    d.opus(&["deploy", "web", "1.0"]).ok();
    d.opus(&["deploy", "web", "2.0"]).ok();
    d.opus(&["deploy", "web", "3.0", "--env", "staging"]).ok();
    d.opus(&["rollback", "web"]).ok();
    d.restart();
    assert_eq!(served(&d, "web.localhost"), "version 1.0");
    assert_eq!(served(&d, "staging--web.localhost"), "version 3.0");
    let releases = d.opus(&["releases", "web", "-o", "json"]).json();
    assert_eq!(releases.as_array().map(Vec::len), Some(4));
    let envs = d.opus(&["env", "list", "web", "-o", "json"]).json();
    let prod = envs
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "production"))
        .expect("production")
        .clone();
    assert_eq!(prod["pinned"], true);
    // A crash (SIGKILL) keeps them too.
    d.opus(&["deploy", "web", "2.0"]).ok();
    d.kill();
    d.restart();
    assert_eq!(served(&d, "web.localhost"), "version 2.0");
}

#[test]
fn the_switch_is_atomic() {
    let d = daemon_with_versions();
    d.opus(&["deploy", "web", "1.0"]).ok();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sites = d.sites.clone();
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Each answer comes wholly from one version: its header and body agree.
                let r = http(&sites, "GET", "web.localhost", "/", &[]);
                assert_eq!(r.status, 200);
                let version = r.header("x-opus-version").to_owned();
                assert_eq!(r.text(), format!("version {version}"), "a mixed answer");
                let js = http(
                    &sites,
                    "GET",
                    "web.localhost",
                    "/assets/app.1a2b3c4d.js",
                    &[],
                );
                assert_eq!(js.status, 200);
                let v = js.header("x-opus-version").to_owned();
                assert_eq!(js.text(), format!("console.log('{v}');").repeat(50));
                seen += 1;
            }
            seen
        })
    };
    for i in 0..10 {
        let v = ["2.0", "3.0", "1.0"][i % 3];
        d.opus(&["deploy", "web", v]).ok();
        // Once the command has returned, every new request gets the new version.
        assert_eq!(served(&d, "web.localhost"), format!("version {v}"));
        d.opus(&["rollback", "web"]).ok();
        let now = d
            .get("web.localhost", "/")
            .header("x-opus-version")
            .to_owned();
        assert_ne!(now, v, "rollback took effect");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.join().expect("the reader saw no mixed answer");
    assert!(seen > 0);
}

#[test]
fn metrics_and_healthz() {
    let d = daemon_with_versions();
    d.opus(&["deploy", "web", "1.0"]).ok();
    d.get("web.localhost", "/");
    d.get("web.localhost", "/missing.js");
    let host = d.server.trim_start_matches("http://").to_owned();
    let r = http(&d.server, "GET", &host, "/metrics", &[]);
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(
        text.contains("opus_site_requests_total{status=\"200\"}"),
        "{text}"
    );
    assert!(
        text.contains("opus_site_requests_total{status=\"404\"}"),
        "{text}"
    );
    assert!(
        text.contains("opus_deploys_total{reason=\"deploy\"} 1"),
        "{text}"
    );
    assert!(text.contains("opus_builds{state=\"running\"}"), "{text}");
    assert_eq!(
        http(&d.server, "GET", &host, "/healthz", &[]).text(),
        "ok\n"
    );
}
