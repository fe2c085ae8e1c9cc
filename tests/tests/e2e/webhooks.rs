//! Inbound webhooks: GitHub's signed `ping` and `push`, and the generic trigger with a bearer
//! token, against the real opusd over HTTP.

use crate::webhook_post::{post, sign};
use opus_tests::{Daemon, site_with_opus_yml};
use serde_json::{Value, json};

const BUILD: &str = "build:\n  steps: [\"mkdir -p dist && echo hi > dist/index.html\"]\n";

fn github(url: &str, secret: &str, event: &str, delivery: &str, body: &[u8]) -> (u16, Value) {
    post(
        url,
        &[
            ("x-github-event", event.to_owned()),
            ("x-github-delivery", delivery.to_owned()),
            ("x-hub-signature-256", sign(secret, body)),
            ("content-type", "application/json".to_owned()),
        ],
        body.to_vec(),
    )
}

fn build_count(d: &Daemon) -> usize {
    d.opus(&["builds", "web", "-o", "json"])
        .json()
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn github_push_ping_repeats_and_every_error_answer() {
    let d = Daemon::start();
    let dir = site_with_opus_yml(d.root.path(), "web", BUILD);
    d.opus(&["add", "web", dir.to_str().expect("utf-8")]).ok();
    let hook = d.opus(&["hook", "github", "web", "-o", "json"]).json();
    let url = hook["url"].as_str().expect("url").to_owned();
    let secret = hook["secret"].as_str().expect("secret").to_owned();
    assert_eq!(url, format!("{}/hooks/github/web", d.server));
    assert_eq!(secret.len(), 64);
    // Asking again gives the same secret; --rotate a new one.
    let again = d.opus(&["hook", "github", "web", "-o", "json"]).json();
    assert_eq!(again["secret"], secret.as_str());

    let (code, _) = github(&url, &secret, "ping", "p1", br#"{"zen":"Keep it simple."}"#);
    assert_eq!(code, 200);

    let push = serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "after": "0123456789abcdef0123456789abcdef01234567",
        "head_commit": { "id": "0123456789abcdef0123456789abcdef01234567" },
    }))
    .expect("JSON");
    let (code, body) = github(&url, &secret, "push", "d1", &push);
    assert_eq!(code, 202, "{body}");
    assert!(body["build"].as_u64().is_some(), "{body}");
    // The same delivery again: 200, nothing queued.
    let (code, body) = github(&url, &secret, "push", "d1", &push);
    assert_eq!(code, 200, "{body}");
    assert_eq!(build_count(&d), 1);

    // Wrong or missing signature: 401, nothing queued.
    let (code, _) = github(&url, "not the secret", "push", "d2", &push);
    assert_eq!(code, 401);
    let (code, _) = post(
        &url,
        &[
            ("x-github-event", "push".into()),
            ("x-github-delivery", "d3".into()),
        ],
        push.clone(),
    );
    assert_eq!(code, 401);
    assert_eq!(build_count(&d), 1);

    // Not JSON: 400. An event Opus does not handle: 200. A deleted branch: 200, no build.
    let (code, _) = github(&url, &secret, "push", "d4", b"not json");
    assert_eq!(code, 400);
    let (code, body) = github(&url, &secret, "issues", "d5", b"{}");
    assert_eq!(code, 200, "{body}");
    let deleted = br#"{"ref":"refs/heads/feature","deleted":true}"#;
    let (code, _) = github(&url, &secret, "push", "d6", deleted);
    assert_eq!(code, 200);
    assert_eq!(build_count(&d), 1);

    // Unknown project: the same 401, in the same words, as a wrong signature (no project-name
    // oracle). Over 25 MB: 413.
    let other = url.replace("/web", "/nope");
    let (code, unknown) = github(&other, &secret, "push", "d7", &push);
    assert_eq!(code, 401);
    let (code, wrong) = github(&url, "wrong-secret", "push", "d7", &push);
    assert_eq!(code, 401);
    assert_eq!(unknown, wrong);
    let big = vec![b' '; 26 * 1024 * 1024];
    let (code, _) = post(&url, &[("x-hub-signature-256", "sha256=00".into())], big);
    assert_eq!(code, 413);

    // Rotating the secret makes the old one fail.
    let rotated = d
        .opus(&["hook", "github", "web", "--rotate", "-o", "json"])
        .json();
    assert_ne!(rotated["secret"], secret.as_str());
    let (code, _) = github(&url, &secret, "push", "d8", &push);
    assert_eq!(code, 401);
}

#[test]
fn trigger_webhook_needs_the_token() {
    let d = Daemon::start();
    let dir = site_with_opus_yml(d.root.path(), "web", BUILD);
    d.opus(&["add", "web", dir.to_str().expect("utf-8")]).ok();
    let t = d.opus(&["hook", "trigger", "web", "-o", "json"]).json();
    let url = t["url"].as_str().expect("url").to_owned();
    let token = t["token"].as_str().expect("token").to_owned();

    let (code, _) = post(&url, &[], b"{}".to_vec());
    assert_eq!(code, 401);
    let (code, _) = post(
        &url,
        &[("authorization", "Bearer nope".into())],
        b"{}".to_vec(),
    );
    assert_eq!(code, 401);
    let auth = [("authorization", format!("Bearer {token}"))];
    let (code, _) = post(&url, &auth, b"[1]".to_vec());
    assert_eq!(code, 400);
    let (code, _) = post(&url, &auth, br#"{"ref": 3}"#.to_vec());
    assert_eq!(code, 400);
    let (code, body) = post(&url, &auth, br#"{"ref":"main","version":"v9"}"#.to_vec());
    assert_eq!(code, 202, "{body}");
    let (code, body) = post(&url, &auth, Vec::new());
    assert_eq!(code, 202, "an empty body builds the default branch: {body}");
    assert_eq!(build_count(&d), 2);
    // The scheme is case-insensitive.
    let lower = [("authorization", format!("bearer {token}"))];
    let (code, body) = post(&url, &lower, Vec::new());
    assert_eq!(code, 202, "{body}");
    // An unknown project answers as a wrong token does.
    let (code, unknown) = post(&url.replace("/web", "/nope"), &auth, Vec::new());
    assert_eq!(code, 401);
    let (_, wrong) = post(&url, &[("authorization", "Bearer nope".into())], Vec::new());
    assert_eq!(unknown, wrong);
}

#[test]
fn github_tag_push_builds_head_commit_as_the_tag_version() {
    let d = Daemon::start();
    let repo = opus_tests::GitRepo::init(&d.root.path().join("repo"));
    repo.write("opus.yml", BUILD);
    let first = repo.commit("first");
    repo.git(&["tag", "2.0.0"]);
    repo.write("README.md", "second\n");
    repo.commit("second");
    d.opus(&["add", "web", &repo.url()]).ok();
    let hook = d.opus(&["hook", "github", "web", "-o", "json"]).json();
    let url = hook["url"].as_str().expect("url").to_owned();
    let secret = hook["secret"].as_str().expect("secret").to_owned();
    let push = serde_json::to_vec(&json!({
        "ref": "refs/tags/2.0.0",
        "after": first,
        "head_commit": { "id": first },
    }))
    .expect("JSON");
    let (code, body) = github(&url, &secret, "push", "t1", &push);
    assert_eq!(code, 202, "{body}");
    let id = body["build"].as_u64().expect("build id");
    let b = d.wait_for_state("web", id, "succeeded", 60);
    assert_eq!(b["version"], "2.0.0");
    assert_eq!(b["commit"], first.as_str());
}

#[test]
fn github_push_builds_a_preview_and_branch_deletion_removes_it() {
    let d = Daemon::start();
    let repo = opus_tests::GitRepo::init(&d.root.path().join("repo"));
    repo.write(
        "opus.yml",
        "build:\n  steps: [\"mkdir -p dist && echo \\\"from $OPUS_REF\\\" > dist/index.html\"]\nenvironments:\n  production: { branch: main, auto_deploy: true }\npreviews: true\n",
    );
    repo.commit("first");
    repo.git(&["checkout", "-q", "-b", "feature-x"]);
    repo.write("feature.txt", "x");
    let commit = repo.commit("feature");
    d.opus(&["add", "web", &repo.url()]).ok();
    let hook = d.opus(&["hook", "github", "web", "-o", "json"]).json();
    let url = hook["url"].as_str().expect("url").to_owned();
    let secret = hook["secret"].as_str().expect("secret").to_owned();

    let push = serde_json::to_vec(&json!({
        "ref": "refs/heads/feature-x",
        "after": commit,
        "head_commit": { "id": commit },
    }))
    .expect("JSON");
    let (code, body) = github(&url, &secret, "push", "p-1", &push);
    assert_eq!(code, 202, "{body}");
    let id = body["build"].as_u64().expect("a build id");
    d.wait_for_state("web", id, "succeeded", 60);
    let served = d.get("feature-x--web.localhost", "/");
    assert_eq!(
        (served.status, served.text().trim()),
        (200, "from feature-x")
    );

    // A production environment deployed by hand is never removed by a branch deletion.
    let version = d.build("web", id)["version"]
        .as_str()
        .expect("version")
        .to_owned();
    d.opus(&["deploy", "web", &version, "--env", "main"]).ok();

    let deleted = |delivery: &str, git_ref: &str| {
        let body = serde_json::to_vec(&json!({
            "ref": git_ref,
            "deleted": true,
            "after": "0000000000000000000000000000000000000000",
        }))
        .expect("JSON");
        github(&url, &secret, "push", delivery, &body)
    };
    let (code, body) = deleted("del-1", "refs/heads/feature-x");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["removed_preview"], "feature-x");
    assert_eq!(d.get("feature-x--web.localhost", "/").status, 404);
    let (code, body) = deleted("del-2", "refs/heads/main");
    assert_eq!(code, 200, "{body}");
    assert!(body.get("removed_preview").is_none(), "{body}");
    assert_eq!(d.get("main--web.localhost", "/").status, 200);
    let envs = d.opus(&["env", "list", "web", "-o", "json"]).json();
    let names: Vec<_> = envs
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["main"]);
    assert_eq!(build_count(&d), 1);
}
