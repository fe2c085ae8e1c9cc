//! Automatic deploys, previews, SPA options and retention from a build's own opus.yml, through
//! the real binaries and a real git repository.

use std::time::Duration;

use opus_tests::{Daemon, GitRepo, site_with_opus_yml};

const OPUS_YML: &str = r#"build:
  steps: ["mkdir -p dist && echo \"built from $OPUS_REF\" > dist/index.html"]
environments:
  production: { branch: main, auto_deploy: true }
  staging: { branch: develop }
previews: true
spa: true
"#;

fn served(d: &Daemon, host: &str, path: &str) -> (u16, String) {
    let r = d.get(host, path);
    (r.status, r.text().trim().to_owned())
}

fn envs(d: &Daemon) -> Vec<serde_json::Value> {
    d.opus(&["env", "list", "web", "-o", "json"])
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn built(d: &Daemon, git_ref: &str) -> u64 {
    let id = d.trigger(&["web", git_ref]);
    d.wait_for_state("web", id, "succeeded", 60);
    id
}

#[test]
fn auto_deploys_previews_and_pins_follow_opus_yml() {
    let d = Daemon::start();
    let repo = GitRepo::init(&d.root.path().join("repo"));
    repo.write("opus.yml", OPUS_YML);
    repo.commit("first");
    d.opus(&["add", "web", &repo.url()]).ok();

    // A build of main goes to production at once, with the opus.yml's SPA fallback.
    let first = built(&d, "main");
    assert_eq!(
        served(&d, "web.localhost", "/"),
        (200, "built from main".into())
    );
    assert_eq!(
        served(&d, "web.localhost", "/some/client/route"),
        (200, "built from main".into())
    );
    let releases = d.opus(&["releases", "web", "-o", "json"]).json();
    assert_eq!(releases[0]["reason"], "auto");
    assert_eq!(releases[0]["env"], "production");
    let log = d.opus(&["logs", &format!("web#{first}")]).ok().to_owned();
    assert!(log.contains("is live in production"), "{log}");

    // Another branch gets its own preview; production stays.
    repo.git(&["checkout", "-q", "-b", "feature/Login_page"]);
    repo.write("page.txt", "login");
    repo.commit("login page");
    built(&d, "feature/Login_page");
    assert_eq!(
        served(&d, "feature-login-page--web.localhost", "/"),
        (200, "built from feature/Login_page".into())
    );
    assert_eq!(
        served(&d, "web.localhost", "/"),
        (200, "built from main".into())
    );
    let preview = envs(&d)
        .into_iter()
        .find(|e| e["name"] == "feature-login-page")
        .expect("a preview environment");
    assert_eq!(preview["preview"], true);

    // A branch an environment names without auto_deploy deploys nowhere, not even to a preview.
    repo.git(&["checkout", "-q", "-b", "develop"]);
    built(&d, "develop");
    assert!(
        envs(&d)
            .iter()
            .all(|e| e["name"] != "staging" && e["name"] != "develop")
    );

    // A rollback pins production: the next main build is stored but not deployed, and its log
    // says why; unpinning resumes automatic deploys.
    repo.git(&["checkout", "-q", "main"]);
    repo.write("opus.yml", &OPUS_YML.replace("built from", "rebuilt from"));
    repo.commit("second");
    built(&d, "main");
    assert_eq!(
        served(&d, "web.localhost", "/"),
        (200, "rebuilt from main".into())
    );
    d.opus(&["rollback", "web"]).ok();
    assert_eq!(
        served(&d, "web.localhost", "/"),
        (200, "built from main".into())
    );
    repo.write("opus.yml", &OPUS_YML.replace("built from", "third from"));
    repo.commit("third");
    let pinned = built(&d, "main");
    assert_eq!(
        served(&d, "web.localhost", "/"),
        (200, "built from main".into())
    );
    let log = d.opus(&["logs", &format!("web#{pinned}")]).ok().to_owned();
    assert!(log.contains("pinned by a rollback"), "{log}");
    d.opus(&["env", "unpin", "web", "production"]).ok();
    built(&d, "main");
    assert_eq!(
        served(&d, "web.localhost", "/"),
        (200, "third from main".into())
    );
}

#[test]
fn a_preview_never_takes_over_an_environment_deployed_by_hand() {
    let d = Daemon::start();
    let repo = GitRepo::init(&d.root.path().join("repo"));
    repo.write("opus.yml", OPUS_YML);
    repo.commit("first");
    d.opus(&["add", "web", &repo.url()]).ok();
    built(&d, "main");
    let version = d.opus(&["artifacts", "web", "-o", "json"]).json()[0]["version"]
        .as_str()
        .expect("a version")
        .to_owned();
    d.opus(&["deploy", "web", &version, "--env", "qa"]).ok();
    repo.git(&["checkout", "-q", "-b", "qa"]);
    repo.write("page.txt", "qa branch");
    repo.commit("qa");
    let id = built(&d, "qa");
    let log = d.opus(&["logs", &format!("web#{id}")]).ok().to_owned();
    assert!(log.contains("is not a preview"), "{log}");
    let qa = envs(&d)
        .into_iter()
        .find(|e| e["name"] == "qa")
        .expect("qa");
    assert_eq!(qa["preview"], false);
    assert_eq!(qa["version"], version.as_str());
}

#[test]
fn retention_from_opus_yml_and_opus_keep() {
    let d = Daemon::start();
    let src = site_with_opus_yml(
        d.root.path(),
        "src",
        "build:\n  steps: [\"mkdir -p dist && echo $OPUS_VERSION > dist/index.html\"]\nretention: 3\n",
    );
    d.opus(&["add", "web", src.to_str().expect("utf-8")]).ok();
    for v in ["v1", "v2", "v3", "v4"] {
        let id = d.trigger(&["web", "--version", v]);
        d.wait_for_state("web", id, "succeeded", 60);
        std::thread::sleep(Duration::from_millis(20));
    }
    let versions = |d: &Daemon| -> Vec<String> {
        d.opus(&["artifacts", "web", "-o", "json"])
            .json()
            .as_array()
            .expect("array")
            .iter()
            .map(|v| v["version"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(versions(&d), ["v4", "v3", "v2"]);

    // The project setting wins over opus.yml and applies at once, but never to a deployed version.
    d.opus(&["deploy", "web", "v2"]).ok();
    let out = d.opus(&["keep", "web", "1"]);
    assert!(out.ok().contains("keeps the newest 1"), "{}", out.stdout);
    assert_eq!(versions(&d), ["v4", "v2"]);
    assert_eq!(d.get("web.localhost", "/").text().trim(), "v2");
    let shown = d.opus(&["keep", "web", "-o", "json"]).json();
    assert_eq!(shown["keep_versions"], 1);
    let out = d.opus(&["keep", "web", "0"]);
    assert!(out.ok().contains("keeps every version"), "{}", out.stdout);

    let err = d.opus(&["keep", "nope", "2"]).fails(1).to_owned();
    assert!(err.contains("nope"), "{err}");
}

/// A package.json without opus.yml whose build script is a plain shell command, and no
/// dependencies: zero config, with no npm registry needed.
const ZERO_CONFIG_PACKAGE: &str = r#"{"name":"app","version":"1.0.0","scripts":{"build":"mkdir -p dist && echo \"built from $OPUS_REF\" > dist/index.html"}}"#;

/// Keeps npm off the network: no registry, no audit, no update check.
const OFFLINE_NPMRC: &str = "offline=true\naudit=false\nfund=false\nupdate-notifier=false\n";

/// The URL the build log names for `host` on this daemon's site listener.
fn site_url(d: &Daemon, host: &str) -> String {
    let port = d.sites.rsplit(':').next().expect("a port");
    format!("http://{host}:{port}/")
}

#[test]
fn without_opus_yml_production_goes_live_from_the_default_branch_and_branches_get_previews() {
    let d = Daemon::start();
    let repo = GitRepo::init(&d.root.path().join("app"));
    repo.write("package.json", ZERO_CONFIG_PACKAGE);
    repo.write(".npmrc", OFFLINE_NPMRC);
    repo.commit("an app without opus.yml");
    d.opus(&["add", "web", &repo.url()]).ok();

    let log = d.opus(&["trigger", "web", "--wait"]).ok().to_owned();
    assert!(
        log.contains("no opus.yml: package.json has a build script: npm install, then npm run build; production deploys from the project's branch, other branches get previews"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "is live in production ({})",
            site_url(&d, "web.localhost")
        )),
        "the log names the site's URL: {log}"
    );
    assert_eq!(
        served(&d, "web.localhost", "/"),
        (200, "built from main".into())
    );
    // No router among the dependencies: not a single-page app, unknown paths are 404s.
    assert_eq!(served(&d, "web.localhost", "/some/route").0, 404);

    // A branch push makes a preview, and production stays.
    repo.git(&["checkout", "-q", "-b", "feature/new-look"]);
    repo.write("look.txt", "new");
    repo.commit("new look");
    let log = d
        .opus(&["trigger", "web", "feature/new-look", "--wait"])
        .ok()
        .to_owned();
    assert!(
        log.contains(&format!(
            "is live in feature-new-look ({})",
            site_url(&d, "feature-new-look--web.localhost")
        )),
        "{log}"
    );
    assert_eq!(
        served(&d, "feature-new-look--web.localhost", "/"),
        (200, "built from feature/new-look".into())
    );
    assert_eq!(
        served(&d, "web.localhost", "/"),
        (200, "built from main".into())
    );

    // A tag deploys nowhere, and the log says how to deploy it.
    repo.git(&["tag", "1.0.0"]);
    let log = d
        .opus(&["trigger", "web", "1.0.0", "--wait"])
        .ok()
        .to_owned();
    assert!(
        log.contains("not deployed: a tag or a commit deploys nowhere by itself; deploy it with `opus deploy web 1.0.0 production`"),
        "{log}"
    );
    assert_eq!(
        served(&d, "web.localhost", "/"),
        (200, "built from main".into())
    );
}

#[test]
fn without_opus_yml_a_router_dependency_with_a_root_index_makes_a_single_page_app() {
    let d = Daemon::start();
    // A plain folder (no git): production follows the project's branch all the same. The router
    // is a local package, so npm installs it without a registry.
    let add = |name: &str, build: &str| {
        let dir = d.root.path().join(name);
        std::fs::create_dir_all(dir.join("vendor/react-router-dom")).expect("mkdir");
        std::fs::write(
            dir.join("vendor/react-router-dom/package.json"),
            r#"{"name":"react-router-dom","version":"6.0.0"}"#,
        )
        .expect("write");
        std::fs::write(
            dir.join("package.json"),
            format!(
                r#"{{"name":"{name}","version":"1.0.0","scripts":{{"build":"{build}"}},"dependencies":{{"react-router-dom":"file:./vendor/react-router-dom"}}}}"#
            ),
        )
        .expect("write");
        std::fs::write(dir.join(".npmrc"), OFFLINE_NPMRC).expect("write");
        d.opus(&["add", name, dir.to_str().expect("utf-8")]).ok();
        d.opus(&["trigger", name, "--wait"]).ok().to_owned()
    };

    let log = add("spa", "mkdir -p dist && echo app > dist/index.html");
    assert!(
        log.contains("a single-page app (a client-side router is a dependency): unknown paths serve index.html"),
        "{log}"
    );
    assert_eq!(served(&d, "spa.localhost", "/"), (200, "app".into()));
    assert_eq!(
        served(&d, "spa.localhost", "/users/42"),
        (200, "app".into()),
        "a client route serves index.html"
    );

    // A router but no index.html at the output's root: nothing to fall back to, so no SPA.
    let log = add(
        "pages",
        "mkdir -p dist/docs && echo docs > dist/docs/index.html",
    );
    assert!(
        log.contains("not a single-page app after all: the output has no index.html at its root"),
        "{log}"
    );
    assert_eq!(
        served(&d, "pages.localhost", "/docs/index.html"),
        (200, "docs".into())
    );
    assert_eq!(served(&d, "pages.localhost", "/users/42").0, 404);

    // A Create React App writes `build`, not `dist`: found once the build has run.
    let log = add("cra", "mkdir -p build && echo cra > build/index.html");
    assert!(log.contains("build: 1 file(s)"), "{log}");
    assert_eq!(served(&d, "cra.localhost", "/"), (200, "cra".into()));
    assert_eq!(
        served(&d, "cra.localhost", "/users/42"),
        (200, "cra".into())
    );
}
