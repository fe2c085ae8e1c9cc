//! Expiring previews (opus.yml `previews: { expire: 2s }`): opusd removes a preview that got no
//! deploy for that long (its host answers 404, `opus env list` drops it, a `preview.expired`
//! event says so, its version stays), while a kept one and production stay.

use std::time::{Duration, Instant};

use opus_tests::{Daemon, GitRepo};

/// An opus.yml whose previews expire after `expire`.
fn opus_yml(expire: &str) -> String {
    format!(
        r#"build:
  steps: ["mkdir -p dist && echo \"built from $OPUS_REF\" > dist/index.html"]
environments:
  production: {{ branch: main, auto_deploy: true }}
previews: {{ enabled: true, expire: {expire} }}
"#
    )
}

fn env_names(d: &Daemon) -> Vec<String> {
    d.opus(&["env", "list", "web", "-o", "json"])
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect()
}

/// Builds `branch` (checked out, with opus.yml `yml`) and waits for its success.
fn build_branch(d: &Daemon, repo: &GitRepo, branch: &str, yml: &str) {
    repo.git(&["checkout", "-q", "-B", branch]);
    repo.write("opus.yml", yml);
    repo.write("branch.txt", branch);
    repo.commit(branch);
    let id = d.trigger(&["web", branch]);
    d.wait_for_state("web", id, "succeeded", 60);
}

/// Waits until `env` is no longer listed; panics after `secs`.
fn wait_until_gone(d: &Daemon, env: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while env_names(d).iter().any(|n| n == env) {
        assert!(
            Instant::now() < deadline,
            "{env} was not expired within {secs}s: {:?}\n{}",
            env_names(d),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_idle_preview_expires_and_a_kept_one_and_production_stay() {
    let d = Daemon::start();
    let repo = GitRepo::init(&d.root.path().join("repo"));
    repo.write("opus.yml", &opus_yml("1h"));
    repo.commit("first");
    d.opus(&["add", "web", &repo.url()]).ok();
    build_branch(&d, &repo, "main", &opus_yml("1h"));

    // `keep-me` is kept while its opus.yml says an hour; its next build says 2s, which a kept
    // preview ignores.
    build_branch(&d, &repo, "keep-me", &opus_yml("1h"));
    let kept = d
        .opus(&["env", "keep", "web", "keep-me", "-o", "json"])
        .json();
    assert_eq!(kept["kept"], true);
    build_branch(&d, &repo, "keep-me", &opus_yml("2s"));
    let kept = d
        .opus(&["env", "list", "web", "-o", "json"])
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .find(|e| e["name"] == "keep-me")
        .expect("keep-me listed");
    assert_eq!(kept["kept"], true);
    assert!(kept["expires_at"].is_null(), "{kept}");

    // `feature-x` expires two seconds after its deploy.
    build_branch(&d, &repo, "feature-x", &opus_yml("2s"));
    let version = d
        .opus(&["env", "list", "web", "-o", "json"])
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .find(|e| e["name"] == "feature-x")
        .and_then(|e| e["version"].as_str().map(str::to_owned))
        .expect("feature-x listed with its version");
    assert_eq!(d.get("feature-x--web.localhost", "/").status, 200);
    wait_until_gone(&d, "feature-x", 30);
    assert_eq!(d.get("feature-x--web.localhost", "/").status, 404);
    let events = d.opus(&["events", "-o", "json"]).ok().to_owned();
    assert!(
        events.contains("preview.expired") && events.contains("feature-x"),
        "{events}"
    );
    let artifacts = d.opus(&["artifacts", "web", "-o", "json"]).ok().to_owned();
    assert!(artifacts.contains(&version), "{version}: {artifacts}");

    // The kept preview (older than feature-x) and production stay.
    let names = env_names(&d);
    assert!(
        names.contains(&"keep-me".to_owned()) && names.contains(&"production".to_owned()),
        "{names:?}"
    );
    assert_eq!(d.get("keep-me--web.localhost", "/").status, 200);
    let home = d.get("web.localhost", "/");
    assert_eq!(
        (home.status, home.text().trim().to_owned()),
        (200, "built from main".to_owned())
    );

    // Unkept, it expires too; production still stays.
    let unkept = d
        .opus(&["env", "unkeep", "web", "keep-me", "-o", "json"])
        .json();
    assert_eq!(unkept["kept"], false);
    wait_until_gone(&d, "keep-me", 30);
    assert_eq!(env_names(&d), ["production"]);
}

#[test]
fn keep_needs_an_environment_and_says_production_never_expires() {
    let d = Daemon::start();
    let repo = GitRepo::init(&d.root.path().join("repo"));
    repo.write("opus.yml", &opus_yml("1h"));
    repo.commit("first");
    d.opus(&["add", "web", &repo.url()]).ok();
    let err = d.opus(&["env", "keep", "web", "nope"]).fails(1).to_owned();
    assert!(err.contains("nope"), "{err}");
    build_branch(&d, &repo, "main", &opus_yml("1h"));
    let said = d
        .opus(&["env", "keep", "web", "production", "--off"])
        .ok()
        .to_owned();
    assert!(said.contains("not a preview"), "{said}");
}
