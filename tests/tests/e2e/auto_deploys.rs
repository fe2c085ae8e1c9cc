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
