//! The optional pull request comment (`pull_requests: { comment: true }`) against the fake
//! GitHub: one comment per pull request, created on its first preview and edited in place on
//! the next ones, with the preview's URL and the files it changes against production.

use crate::webhook_post::{post, sign};
use opus_tests::fake_github::{Call, FakeGithub};
use opus_tests::{Daemon, GitRepo};
use serde_json::{Value, json};

/// A `pull_request` payload in GitHub's documented shape.
fn pull_request(action: &str, number: u64, head_sha: &str) -> Value {
    json!({
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "draft": false,
            "labels": [],
            "head": { "sha": head_sha, "ref": "feature", "repo": { "full_name": "acme/web" } },
            "base": { "ref": "main", "repo": { "full_name": "acme/web" } }
        },
        "repository": { "full_name": "acme/web" }
    })
}

/// The comment calls among `calls`.
fn comment_calls(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| c.path.contains("/issues/"))
        .collect()
}

#[test]
fn two_pushes_to_a_pull_request_make_one_comment_then_edit_it() {
    let fake = FakeGithub::start();
    let d = Daemon::start_with(&[
        "--github-api-url",
        fake.url.as_str(),
        "--hook-retry-base-ms",
        "50",
    ]);
    let repo = GitRepo::init(&d.root.path().join("repo"));
    repo.write(
        "opus.yml",
        "build:\n  steps: [\"mkdir -p dist && cp *.txt dist/\"]\nenvironments:\n  production: { branch: main, auto_deploy: true }\npull_requests: { comment: true }\n",
    );
    repo.write("index.txt", "main\n");
    repo.write("old.txt", "leaves in the pull request\n");
    repo.commit("first");
    d.opus(&["add", "web", &repo.url()]).ok();
    let secret = d.opus(&["hook", "github", "web", "-o", "json"]).json()["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let token = d.root.path().join("github-token");
    std::fs::write(&token, "ghp_fake_token_for_tests\n").expect("write token");
    d.opus(&[
        "github",
        "connect",
        "--token-file",
        token.to_str().expect("utf-8"),
    ])
    .ok();
    // Production: main's version, built from the CLI (no GitHub call).
    let n = d.trigger(&["web", "main"]);
    d.wait_for_state("web", n, "succeeded", 60);

    let url = format!("{}/hooks/github/web", d.server);
    let deliver = |delivery: &str, payload: &Value| {
        let body = serde_json::to_vec(payload).expect("JSON");
        let (code, answer) = post(
            &url,
            &[
                ("x-github-event", "pull_request".to_owned()),
                ("x-github-delivery", delivery.to_owned()),
                ("x-hub-signature-256", sign(&secret, &body)),
                ("content-type", "application/json".to_owned()),
            ],
            body,
        );
        assert_eq!(code, 202, "{answer}");
        answer["build"].as_u64().expect("a build")
    };
    let commit_on_feature = |text: &str| {
        if repo.git(&["branch", "--list", "feature"]).trim().is_empty() {
            repo.git(&["checkout", "-q", "-b", "feature", "main"]);
        } else {
            repo.git(&["checkout", "-q", "feature"]);
        }
        repo.write("index.txt", text);
        repo.write("new.txt", "added by the pull request\n");
        let _ = std::fs::remove_file(repo.dir.join("old.txt"));
        repo.git(&["add", "-A"]);
        let sha = repo.commit(text);
        repo.git(&["checkout", "-q", "main"]);
        sha
    };

    let first = commit_on_feature("first head, longer than main\n");
    let n1 = deliver("cm-1", &pull_request("opened", 7, &first));
    d.wait_for_state("web", n1, "succeeded", 60);
    let calls = fake.wait_for(30, "the pull request's comment", |c| {
        !comment_calls(c).is_empty()
    });
    let made = comment_calls(&calls);
    assert_eq!(made.len(), 1);
    assert_eq!(
        (made[0].method.as_str(), made[0].path.as_str()),
        ("POST", "/repos/acme/web/issues/7/comments")
    );
    let body = made[0].body["body"].as_str().expect("a body");
    assert!(body.contains("pr-7--web.localhost"), "{body}");
    assert!(body.contains("- added `new.txt`"), "{body}");
    assert!(
        body.contains("- changed `index.txt` (5 B → 29 B)"),
        "{body}"
    );
    assert!(body.contains("- removed `old.txt`"), "{body}");
    assert!(body.contains("| added | 1 |"), "{body}");
    // The comment comes after the preview's deployment is reported.
    let position = |pred: &dyn Fn(&Call) -> bool| calls.iter().position(pred).expect("a call");
    assert!(
        position(&|c: &Call| c.body["state"] == "success" && c.path.contains("/deployments/"))
            < position(&|c: &Call| c.path.contains("/issues/"))
    );

    let second = commit_on_feature("second head\n");
    let n2 = deliver("cm-2", &pull_request("synchronize", 7, &second));
    d.wait_for_state("web", n2, "succeeded", 60);
    let calls = fake.wait_for(30, "the comment edited", |c| comment_calls(c).len() >= 2);
    let comments: Vec<String> = comment_calls(&calls)
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert_eq!(
        comments,
        [
            "POST /repos/acme/web/issues/7/comments",
            "PATCH /repos/acme/web/issues/comments/5001",
        ],
        "one comment, edited in place"
    );
    let edited = comment_calls(&calls)[1].body["body"]
        .as_str()
        .expect("a body")
        .to_owned();
    assert!(
        edited.contains("- changed `index.txt` (5 B → 12 B)"),
        "{edited}"
    );
    assert!(edited.contains("- added `new.txt`"), "{edited}");
}
