//! opus.yml `on:` triggers through the real binaries: a one-minute cron schedule, another
//! project's deploy (across a restart), a refused cycle of `after` triggers, and signed GitHub
//! `release` deliveries building a real tag.

use std::time::{Duration, Instant};

use crate::webhook_post::{post, sign};
use opus_tests::{Daemon, GitRepo, site_with_opus_yml};
use serde_json::{Value, json};

const STEP: &str = "build:\n  steps: [\"mkdir -p dist && echo hi > dist/index.html\"]\n";

/// Waits until `project` has a build that `trigger` started; returns its number.
fn wait_for_trigger(d: &Daemon, project: &str, trigger: &str, secs: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(b) = d.builds(project).iter().find(|b| b["trigger"] == trigger) {
            return b["number"].as_u64().expect("number");
        }
        assert!(
            Instant::now() < deadline,
            "no {trigger} build of {project} within {secs}s: {:?}\nopusd log:\n{}",
            d.builds(project),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_one_minute_schedule_builds_the_default_branch() {
    let d = Daemon::start();
    let dir = site_with_opus_yml(
        d.root.path(),
        "web",
        &format!("{STEP}on:\n  schedule: \"* * * * *\"\n"),
    );
    d.opus(&["add", "web", dir.to_str().expect("utf-8")]).ok();
    // The first build of the default branch is where opusd reads `on:`.
    let first = d.trigger(&["web"]);
    d.wait_for_state("web", first, "succeeded", 60);
    let log = d.opus(&["logs", &format!("web#{first}")]).ok().to_owned();
    assert!(
        log.contains("sets the project's triggers: schedule \"* * * * *\""),
        "{log}"
    );
    // The next minute starts a build of the default branch (at most a minute away).
    let scheduled = wait_for_trigger(&d, "web", "schedule", 75);
    let b = d.wait_for_state("web", scheduled, "succeeded", 60);
    assert_eq!(b["ref"], "main");
    let table = d.opus(&["builds", "web"]).ok().to_owned();
    assert!(
        table.contains("TRIGGER") && table.contains("schedule") && table.contains("cli"),
        "{table}"
    );
    let shown = d
        .opus(&["builds", &format!("web#{scheduled}")])
        .ok()
        .to_owned();
    assert!(shown.contains("schedule"), "{shown}");
}

#[test]
fn another_projects_deploy_builds_this_one_once_across_a_restart() {
    let mut d = Daemon::start();
    let api = site_with_opus_yml(
        d.root.path(),
        "api",
        &format!("{STEP}environments:\n  production: {{ branch: main, auto_deploy: true }}\n"),
    );
    let web = site_with_opus_yml(
        d.root.path(),
        "web",
        &format!("{STEP}on:\n  after: {{ project: api, event: deploy, env: production }}\n"),
    );
    d.opus(&["add", "api", api.to_str().expect("utf-8")]).ok();
    d.opus(&["add", "web", web.to_str().expect("utf-8")]).ok();
    let first = d.trigger(&["web"]);
    d.wait_for_state("web", first, "succeeded", 60);

    // api's build deploys production, which starts web's build.
    let api1 = d.trigger(&["api"]);
    d.wait_for_state("api", api1, "succeeded", 60);
    let after = wait_for_trigger(&d, "web", "after", 30);
    assert_eq!(after, first + 1);
    d.wait_for_state("web", after, "succeeded", 60);

    // A deploy by hand to another environment starts nothing; the next production deploy,
    // after a restart, starts exactly one build (no event replayed, none lost).
    let version = d.build("api", api1)["version"]
        .as_str()
        .expect("version")
        .to_owned();
    d.opus(&["deploy", "api", &version, "--env", "staging"])
        .ok();
    d.restart();
    let api2 = d.trigger(&["api"]);
    d.wait_for_state("api", api2, "succeeded", 60);
    let next = d.wait_for_state("web", after + 1, "succeeded", 60);
    assert_eq!(next["trigger"], "after");
    let builds = d.builds("web");
    assert_eq!(builds.len(), 3, "{builds:?}");
}

#[test]
fn a_cycle_of_after_triggers_fails_the_build_naming_it() {
    let d = Daemon::start();
    let api = site_with_opus_yml(
        d.root.path(),
        "api",
        &format!("{STEP}on:\n  after: {{ project: web, event: build }}\n"),
    );
    let web = site_with_opus_yml(
        d.root.path(),
        "web",
        &format!("{STEP}on:\n  after: {{ project: api, event: version }}\n"),
    );
    d.opus(&["add", "api", api.to_str().expect("utf-8")]).ok();
    d.opus(&["add", "web", web.to_str().expect("utf-8")]).ok();
    let a = d.trigger(&["api"]);
    d.wait_for_state("api", a, "succeeded", 60);
    let w = d.trigger(&["web"]);
    let failed = d.wait_for_state("web", w, "failed", 60);
    let reason = failed["reason"].as_str().expect("reason");
    assert!(
        reason.contains("after-trigger cycle: web → api → web"),
        "{reason}"
    );
    // Nothing was stored for web: api's version does not start it.
    assert_eq!(d.builds("web").len(), 1);
    // A cron expression that does not parse fails the build naming line and field.
    std::fs::write(
        web.join("opus.yml"),
        format!("{STEP}on:\n  schedule: \"0 3 * * mon-fry\"\n"),
    )
    .expect("write");
    let bad = d.trigger(&["web"]);
    let failed = d.wait_for_state("web", bad, "failed", 60);
    let reason = failed["reason"].as_str().expect("reason");
    assert!(
        reason.contains("on.schedule")
            && reason.contains("line 4")
            && reason.contains("day of week field"),
        "{reason}"
    );
}

fn github(url: &str, secret: &str, event: &str, delivery: &str, body: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(body).expect("JSON");
    post(
        url,
        &[
            ("x-github-event", event.to_owned()),
            ("x-github-delivery", delivery.to_owned()),
            ("x-hub-signature-256", sign(secret, &body)),
            ("content-type", "application/json".to_owned()),
        ],
        body,
    )
}

fn release(action: &str, tag: &str) -> Value {
    json!({ "action": action, "release": { "tag_name": tag, "name": tag } })
}

#[test]
fn a_published_github_release_builds_its_tag() {
    let d = Daemon::start();
    let repo = GitRepo::init(&d.root.path().join("repo"));
    repo.write(
        "opus.yml",
        "build:\n  steps: [\"mkdir -p dist && echo release > dist/index.html\"]\non:\n  release: true\n",
    );
    repo.commit("first");
    repo.git(&["tag", "v1.0.0"]);
    d.opus(&["add", "web", &repo.url()]).ok();
    let hook = d.opus(&["hook", "github", "web", "-o", "json"]).json();
    let url = hook["url"].as_str().expect("url").to_owned();
    let secret = hook["secret"].as_str().expect("secret").to_owned();

    // Before any build of main, opusd does not know the opus.yml asks for releases.
    let (code, body) = github(
        &url,
        &secret,
        "release",
        "r1",
        &release("published", "v1.0.0"),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body["ignored"]
            .as_str()
            .is_some_and(|s| s.contains("on: { release: true }")),
        "{body}"
    );
    let first = d.trigger(&["web"]);
    d.wait_for_state("web", first, "succeeded", 60);

    // Other actions, and malformed deliveries, build nothing.
    let (code, body) = github(
        &url,
        &secret,
        "release",
        "r2",
        &release("created", "v1.0.0"),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body["ignored"]
            .as_str()
            .is_some_and(|s| s.contains("\"created\"") && s.contains("published")),
        "{body}"
    );
    let (code, body) = github(&url, &secret, "release", "r3", &json!({ "release": {} }));
    assert_eq!(code, 400, "{body}");
    let (code, body) = github(
        &url,
        &secret,
        "release",
        "r4",
        &json!({ "action": "published", "release": {} }),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(d.builds("web").len(), 1);

    // Published: the tag builds, version = the tag.
    let (code, body) = github(
        &url,
        &secret,
        "release",
        "r5",
        &release("published", "v1.0.0"),
    );
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["ref"], "refs/tags/v1.0.0");
    let number = body["build"].as_u64().expect("build");
    let b = d.wait_for_state("web", number, "succeeded", 60);
    assert_eq!(b["version"], "v1.0.0");
    assert_eq!(b["trigger"], "release");
    // The same delivery again builds nothing.
    let (code, body) = github(
        &url,
        &secret,
        "release",
        "r5",
        &release("published", "v1.0.0"),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(d.builds("web").len(), 2);
}
