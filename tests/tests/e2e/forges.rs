//! GitLab's and Gitea's (Forgejo's) webhooks against the real opusd over HTTP: merge requests and
//! pull requests build their head commit into the preview `pr-<number>` as GitHub's do, closing
//! removes it, forks follow the same rules, and a wrong or missing token or signature queues
//! nothing. No GitLab or Gitea here: the deliveries are made by the test in the shapes those
//! forges document, with real git repositories behind them.

use crate::webhook_post::post;
use hmac::{Hmac, Mac};
use opus_tests::{Daemon, GitRepo};
use serde_json::{Value, json};
use sha2::Sha256;

/// Steps that serve index.txt as the site.
const SERVE_INDEX: &str = "mkdir -p dist && cp index.txt dist/index.html";

/// A project `web` on a git repository, hooked to one forge.
struct Hooked {
    d: Daemon,
    repo: GitRepo,
    url: String,
    secret: String,
}

impl Hooked {
    /// opusd, `web` from a repository whose `main` holds an opus.yml building pull requests, and
    /// the URL and secret `opus hook <forge>` gives.
    fn start(forge: &str, pull_requests: &str) -> Hooked {
        let d = Daemon::start_with(&[]);
        let repo = GitRepo::init(&d.root.path().join("repo"));
        repo.write(
            "opus.yml",
            &format!(
                "build:\n  steps: [\"{SERVE_INDEX}\"]\nenvironments:\n  production: {{ branch: main, auto_deploy: true }}\npull_requests: {pull_requests}\n"
            ),
        );
        repo.write("index.txt", "main\n");
        repo.commit("first");
        d.opus(&["add", "web", &repo.url()]).ok();
        let hook = d.opus(&["hook", forge, "web", "-o", "json"]).json();
        let url = hook["url"].as_str().expect("url");
        assert!(url.ends_with(&format!("/hooks/{forge}/web")), "{url}");
        let github = d.opus(&["hook", "github", "web", "-o", "json"]).json();
        assert_eq!(
            hook["secret"], github["secret"],
            "one secret for every forge"
        );
        Hooked {
            url: format!("{}/hooks/{forge}/web", d.server),
            secret: hook["secret"].as_str().expect("secret").to_owned(),
            d,
            repo,
        }
    }

    /// Commits `text` as index.txt on `branch` (made from main when new); returns the sha.
    fn push(&self, branch: &str, text: &str) -> String {
        let exists = !self
            .repo
            .git(&["branch", "--list", branch])
            .trim()
            .is_empty();
        if exists {
            self.repo.git(&["checkout", "-q", branch]);
        } else {
            self.repo.git(&["checkout", "-q", "-b", branch, "main"]);
        }
        self.repo.write("index.txt", text);
        let sha = self.repo.commit(text);
        self.repo.git(&["checkout", "-q", "main"]);
        sha
    }

    fn post(&self, headers: &[(&str, String)], payload: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(payload).expect("JSON");
        let mut all = headers.to_vec();
        all.push(("content-type", "application/json".to_owned()));
        post(&self.url, &all, body)
    }
}

/// A GitLab merge request hook in the documented shape.
fn merge_request(action: &str, iid: u64, head: &str, source_project: u64) -> Value {
    json!({
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "project": { "id": 1, "path_with_namespace": "acme/web" },
        "object_attributes": {
            "iid": iid,
            "action": action,
            "state": if action == "close" { "closed" } else { "opened" },
            "source_branch": "feature",
            "target_branch": "main",
            "source_project_id": source_project,
            "target_project_id": 1,
            "source": { "path_with_namespace": if source_project == 1 { "acme/web" } else { "mallory/web" } },
            "target": { "path_with_namespace": "acme/web" },
            "draft": false,
            "last_commit": { "id": head },
            "oldrev": if action == "update" { json!("0000000000000000000000000000000000000001") } else { Value::Null }
        },
        "labels": [],
        "changes": {}
    })
}

#[test]
fn gitlab_merge_requests_build_previews_and_bad_tokens_queue_nothing() {
    let h = Hooked::start("gitlab", "{ previews: true }");
    let gitlab = |token: Option<&str>, key: &str, payload: &Value| {
        let mut headers = vec![
            ("x-gitlab-event", "Merge Request Hook".to_owned()),
            ("idempotency-key", key.to_owned()),
        ];
        if let Some(token) = token {
            headers.push(("x-gitlab-token", token.to_owned()));
        }
        h.post(&headers, payload)
    };
    let first = h.push("feature", "first head\n");
    let opened = merge_request("open", 4, &first, 1);

    // A wrong, missing or truncated token: 401, nothing queued.
    for token in [
        Some("not the secret"),
        None,
        Some(&h.secret[..h.secret.len() - 1]),
    ] {
        let (code, body) = gitlab(token, "k-0", &opened);
        assert_eq!(code, 401, "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("X-Gitlab-Token")),
            "{body}"
        );
    }
    assert!(h.d.builds("web").is_empty());

    // Actions and hooks Opus does not act on: 200, saying why.
    let (code, body) = gitlab(
        Some(&h.secret),
        "k-1",
        &merge_request("approved", 4, &first, 1),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body["ignored"]
            .as_str()
            .is_some_and(|s| s.contains("\"approved\"")),
        "{body}"
    );
    let (code, body) = gitlab(Some(&h.secret), "k-2", &json!({ "object_kind": "note" }));
    assert_eq!(code, 200, "{body}");
    assert!(
        body["ignored"]
            .as_str()
            .is_some_and(|s| s.contains("\"note\"")),
        "{body}"
    );
    assert!(h.d.builds("web").is_empty());

    // Opened: the last commit builds into pr-4; the same delivery again is acted on once.
    let (code, body) = gitlab(Some(&h.secret), "k-3", &opened);
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["environment"], "pr-4");
    let n = body["build"].as_u64().expect("build");
    let b = h.d.wait_for_state("web", n, "succeeded", 60);
    assert_eq!(
        (b["commit"].as_str(), b["trigger"].as_str()),
        (Some(first.as_str()), Some("gitlab"))
    );
    assert_eq!(h.d.get("pr-4--web.localhost", "/").text(), "first head\n");
    let (code, body) = gitlab(Some(&h.secret), "k-3", &opened);
    assert_eq!(code, 200, "{body}");
    assert!(
        body["ignored"]
            .as_str()
            .is_some_and(|s| s.contains("repeated")),
        "{body}"
    );

    // New commits (an update with oldrev): the preview follows.
    let second = h.push("feature", "second head\n");
    let (code, body) = gitlab(
        Some(&h.secret),
        "k-4",
        &merge_request("update", 4, &second, 1),
    );
    assert_eq!(code, 202, "{body}");
    h.d.wait_for_state(
        "web",
        body["build"].as_u64().expect("build"),
        "succeeded",
        60,
    );
    assert_eq!(h.d.get("pr-4--web.localhost", "/").text(), "second head\n");

    // Merged: the preview goes; production was never touched.
    let (code, body) = gitlab(
        Some(&h.secret),
        "k-5",
        &merge_request("merge", 4, &second, 1),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["removed_preview"], "pr-4");
    assert_eq!(h.d.get("pr-4--web.localhost", "/").status, 404);
    assert_eq!(h.d.get("web.localhost", "/").status, 404);

    // A merge request from another project (a fork) does not run: opus.yml allows no forks.
    let fork = h.push("fork-head", "from a fork\n");
    h.repo
        .git(&["update-ref", "refs/merge-requests/9/head", &fork]);
    h.repo.git(&["branch", "-q", "-D", "fork-head"]);
    let (code, body) = gitlab(Some(&h.secret), "k-6", &merge_request("open", 9, &fork, 77));
    assert_eq!(code, 202, "{body}");
    let b = h.d.wait_for_state(
        "web",
        body["build"].as_u64().expect("build"),
        "cancelled",
        60,
    );
    assert!(
        b["reason"].as_str().is_some_and(
            |r| r.starts_with("skipped: the pull request comes from a fork (mallory/web)")
        ),
        "{b}"
    );

    // A push hook builds the branch, and production follows main.
    h.repo.write("index.txt", "pushed\n");
    let sha = h.repo.commit("pushed");
    let (code, body) = h.post(
        &[
            ("x-gitlab-event", "Push Hook".to_owned()),
            ("x-gitlab-token", h.secret.clone()),
        ],
        &json!({
            "object_kind": "push",
            "ref": "refs/heads/main",
            "before": "0000000000000000000000000000000000000000",
            "after": sha,
            "checkout_sha": sha,
            "project": { "id": 1, "path_with_namespace": "acme/web" }
        }),
    );
    assert_eq!(code, 202, "{body}");
    h.d.wait_for_state(
        "web",
        body["build"].as_u64().expect("build"),
        "succeeded",
        60,
    );
    assert_eq!(h.d.get("web.localhost", "/").text(), "pushed\n");
}

/// Gitea's `X-Gitea-Signature`: bare hex HMAC-SHA256 of the body.
fn gitea_signature(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// A Gitea pull_request payload (GitHub's shape, Gitea's action names).
fn gitea_pull_request(action: &str, number: u64, head: &str) -> Value {
    json!({
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "state": if action == "closed" { "closed" } else { "open" },
            "merged": false,
            "labels": [],
            "head": { "sha": head, "ref": "feature", "repo": { "full_name": "acme/web" } },
            "base": { "ref": "main", "repo": { "full_name": "acme/web" } }
        },
        "repository": { "full_name": "acme/web" }
    })
}

#[test]
fn gitea_and_forgejo_pull_requests_build_previews_and_bad_signatures_queue_nothing() {
    let h = Hooked::start("gitea", "{ previews: true }");
    let deliver =
        |prefix: &str, event: &str, delivery: &str, sig: Option<String>, payload: &Value| {
            let body = serde_json::to_vec(payload).expect("JSON");
            let mut headers = vec![
                ("x-gitea-event", event.to_owned()),
                ("x-gitea-delivery", delivery.to_owned()),
                ("content-type", "application/json".to_owned()),
            ];
            if prefix == "forgejo" {
                headers = vec![
                    ("x-forgejo-event", event.to_owned()),
                    ("x-forgejo-delivery", delivery.to_owned()),
                    ("content-type", "application/json".to_owned()),
                ];
            }
            if let Some(sig) = sig {
                let name = if prefix == "forgejo" {
                    "x-forgejo-signature"
                } else {
                    "x-gitea-signature"
                };
                headers.push((name, sig));
            }
            post(&h.url, &headers, body)
        };
    let signed = |event: &str, delivery: &str, payload: &Value| {
        let body = serde_json::to_vec(payload).expect("JSON");
        deliver(
            "gitea",
            event,
            delivery,
            Some(gitea_signature(&h.secret, &body)),
            payload,
        )
    };
    let first = h.push("feature", "first head\n");
    let opened = gitea_pull_request("opened", 6, &first);
    let body = serde_json::to_vec(&opened).expect("JSON");
    let good = gitea_signature(&h.secret, &body);

    // Wrong, missing, truncated, or GitHub's prefixed form: 401, nothing queued.
    for sig in [
        Some(gitea_signature("not the secret", &body)),
        None,
        Some(good[..good.len() - 2].to_owned()),
        Some(format!("sha256={good}")),
    ] {
        let (code, answer) = deliver("gitea", "pull_request", "g-0", sig, &opened);
        assert_eq!(code, 401, "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("X-Gitea-Signature")),
            "{answer}"
        );
    }
    assert!(h.d.builds("web").is_empty());

    // An action Opus does not act on, and an event it does not handle: 200, saying why.
    let (code, answer) = signed(
        "pull_request",
        "g-1",
        &gitea_pull_request("label_updated", 6, &first),
    );
    assert_eq!(code, 200, "{answer}");
    assert!(
        answer["ignored"]
            .as_str()
            .is_some_and(|s| s.contains("\"label_updated\"")),
        "{answer}"
    );
    let (code, answer) = signed("issues", "g-2", &json!({ "action": "opened" }));
    assert_eq!(code, 200, "{answer}");
    assert!(
        answer["ignored"]
            .as_str()
            .is_some_and(|s| s.contains("\"issues\"")),
        "{answer}"
    );
    assert!(h.d.builds("web").is_empty());

    // Opened: built into pr-6.
    let (code, answer) = deliver("gitea", "pull_request", "g-3", Some(good), &opened);
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["environment"], "pr-6");
    let b = h.d.wait_for_state(
        "web",
        answer["build"].as_u64().expect("build"),
        "succeeded",
        60,
    );
    assert_eq!(
        (b["commit"].as_str(), b["trigger"].as_str()),
        (Some(first.as_str()), Some("gitea"))
    );
    assert_eq!(h.d.get("pr-6--web.localhost", "/").text(), "first head\n");

    // Forgejo's headers, Gitea's "synchronized": the preview follows the new head.
    let second = h.push("feature", "second head\n");
    let sync = gitea_pull_request("synchronized", 6, &second);
    let sync_body = serde_json::to_vec(&sync).expect("JSON");
    let (code, answer) = deliver(
        "forgejo",
        "pull_request",
        "g-4",
        Some(gitea_signature(&h.secret, &sync_body)),
        &sync,
    );
    assert_eq!(code, 202, "{answer}");
    h.d.wait_for_state(
        "web",
        answer["build"].as_u64().expect("build"),
        "succeeded",
        60,
    );
    assert_eq!(h.d.get("pr-6--web.localhost", "/").text(), "second head\n");

    // Closed: the preview goes.
    let (code, answer) = signed(
        "pull_request",
        "g-5",
        &gitea_pull_request("closed", 6, &second),
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["removed_preview"], "pr-6");
    assert_eq!(h.d.get("pr-6--web.localhost", "/").status, 404);

    // A push builds main into production.
    h.repo.write("index.txt", "pushed\n");
    let sha = h.repo.commit("pushed");
    let (code, answer) = signed(
        "push",
        "g-6",
        &json!({ "ref": "refs/heads/main", "after": sha, "repository": { "full_name": "acme/web" } }),
    );
    assert_eq!(code, 202, "{answer}");
    h.d.wait_for_state(
        "web",
        answer["build"].as_u64().expect("build"),
        "succeeded",
        60,
    );
    assert_eq!(h.d.get("web.localhost", "/").text(), "pushed\n");
}
