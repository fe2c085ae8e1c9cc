//! GitHub pull requests against the real opusd over HTTP: `pull_request` deliveries with GitHub's
//! documented payload fields build the head commit into the preview `pr-<number>`, a newer push
//! supersedes the queued build, closing removes the preview, forks never run unless the base
//! branch's opus.yml allows them and then run with no secrets. No GitHub here: the deliveries are
//! made and signed by the test, as GitHub makes them.

use crate::webhook_post::{post, sign};
use opus_tests::fake_github::{Call, FakeGithub, Scripted};
use opus_tests::{Daemon, GitRepo};
use serde_json::{Value, json};

/// A project `web` on a git repository, with its GitHub webhook URL and secret.
struct Hooked {
    d: Daemon,
    repo: GitRepo,
    url: String,
    secret: String,
}

impl Hooked {
    /// opusd started with `args`, `web` added from a repository whose `main` holds `opus_yml`.
    fn start(args: &[&str], opus_yml: &str) -> Hooked {
        let d = Daemon::start_with(args);
        let repo = GitRepo::init(&d.root.path().join("repo"));
        repo.write("opus.yml", opus_yml);
        repo.write("index.txt", "main\n");
        repo.commit("first");
        d.opus(&["add", "web", &repo.url()]).ok();
        let hook = d.opus(&["hook", "github", "web", "-o", "json"]).json();
        Hooked {
            // Posted straight to opusd, whatever --public-url gives out.
            url: format!("{}/hooks/github/web", d.server),
            secret: hook["secret"].as_str().expect("secret").to_owned(),
            d,
            repo,
        }
    }

    /// Delivers a signed `event`.
    fn deliver(&self, event: &str, delivery: &str, payload: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(payload).expect("JSON");
        post(
            &self.url,
            &[
                ("x-github-event", event.to_owned()),
                ("x-github-delivery", delivery.to_owned()),
                ("x-hub-signature-256", sign(&self.secret, &body)),
                ("content-type", "application/json".to_owned()),
            ],
            body,
        )
    }

    /// Delivers a `pull_request` event and expects 202; returns the build's number.
    fn queued(&self, delivery: &str, payload: &Value) -> u64 {
        let (code, body) = self.deliver("pull_request", delivery, payload);
        assert_eq!(code, 202, "{body}");
        assert_eq!(body["environment"], format!("pr-{}", payload["number"]));
        body["build"].as_u64().expect("a build number")
    }

    /// Commits `text` as index.txt on branch `branch` (made from main when new); returns the sha.
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

    fn log(&self, number: u64) -> String {
        self.d
            .opus(&["logs", &format!("web#{number}")])
            .ok()
            .to_owned()
    }
}

/// A `pull_request` payload in GitHub's documented shape.
fn pull_request(action: &str, number: u64, head_sha: &str, head_repo: &str) -> Value {
    json!({
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "state": if action == "closed" { "closed" } else { "open" },
            "draft": false,
            "labels": [],
            "head": {
                "sha": head_sha,
                "ref": "feature",
                "repo": { "full_name": head_repo }
            },
            "base": {
                "ref": "main",
                "sha": "0000000000000000000000000000000000000000",
                "repo": { "full_name": "acme/web" }
            }
        },
        "repository": { "full_name": "acme/web" },
        "installation": { "id": 42 }
    })
}

/// Steps that serve index.txt as the site.
const SERVE_INDEX: &str = "mkdir -p dist && cp index.txt dist/index.html";

#[test]
fn a_pull_requests_life_opened_synchronize_closed() {
    let yml = format!(
        "build:\n  steps: [\"{SERVE_INDEX}\"]\nenvironments:\n  production: {{ branch: main, auto_deploy: true }}\npull_requests: {{ previews: true }}\n"
    );
    let h = Hooked::start(&[], &yml);
    let first = h.push("feature", "first head\n");
    let n = h.queued("pr-1", &pull_request("opened", 7, &first, "acme/web"));
    let b = h.d.wait_for_state("web", n, "succeeded", 60);
    assert_eq!(b["commit"], first.as_str());
    let version = b["version"].as_str().expect("version");
    assert!(version.starts_with(&format!("pr-7-{n}-")), "{version}");
    let served = h.d.get("pr-7--web.localhost", "/");
    assert_eq!((served.status, served.text()), (200, "first head\n".into()));
    let log = h.log(n);
    assert!(log.contains("#7 (opened) from feature into main"), "{log}");
    assert!(log.contains("building into preview pr-7"), "{log}");
    // Production is not touched by a pull request.
    assert_eq!(h.d.get("web.localhost", "/").status, 404);

    let second = h.push("feature", "second head\n");
    let n2 = h.queued("pr-2", &pull_request("synchronize", 7, &second, "acme/web"));
    h.d.wait_for_state("web", n2, "succeeded", 60);
    assert_eq!(
        h.d.get("pr-7--web.localhost", "/").text(),
        "second head\n",
        "the preview follows the pull request's head"
    );

    let (code, body) = h.deliver(
        "pull_request",
        "pr-3",
        &pull_request("closed", 7, &second, "acme/web"),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["removed_preview"], "pr-7");
    assert_eq!(h.d.get("pr-7--web.localhost", "/").status, 404);
    // Closed again (a new delivery): nothing left to do, and it says so.
    let (code, body) = h.deliver(
        "pull_request",
        "pr-4",
        &pull_request("closed", 7, &second, "acme/web"),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body["nothing_to_do"]
            .as_str()
            .is_some_and(|s| s.contains("no preview pr-7")),
        "{body}"
    );
    assert_eq!(h.d.builds("web").len(), 2);
}

#[test]
fn a_newer_push_supersedes_the_queued_build_and_closing_cancels_what_waits() {
    let gate = tempfile::tempdir().expect("tempdir");
    let release = gate.path().join("release");
    // Builds of main wait for the test's gate: with one slot, pull request builds queue behind.
    let yml = format!(
        "build:\n  steps:\n    - '[ -n \"$OPUS_PULL_REQUEST\" ] || while [ ! -f {} ]; do sleep 0.05; done'\n    - \"{SERVE_INDEX}\"\npull_requests: {{}}\n",
        release.display()
    );
    let h = Hooked::start(&["--max-builds", "1"], &yml);
    let blocker = h.d.trigger(&["web", "main"]);
    h.d.wait_for_state("web", blocker, "running", 30);
    let a = h.push("feature", "a\n");
    let first = h.queued("s-1", &pull_request("opened", 3, &a, "acme/web"));
    let b = h.push("feature", "b\n");
    let second = h.queued("s-2", &pull_request("synchronize", 3, &b, "acme/web"));
    let old = h.d.wait_for_state("web", first, "cancelled", 10);
    assert_eq!(old["reason"], format!("superseded by web#{second}"));
    // Another pull request is other work: not superseded, and cancelled when it is closed.
    let other = h.push("other", "other\n");
    let third = h.queued("s-3", &pull_request("opened", 4, &other, "acme/web"));
    assert_eq!(h.d.build("web", second)["state"], "queued");
    let (code, body) = h.deliver(
        "pull_request",
        "s-4",
        &pull_request("closed", 4, &other, "acme/web"),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["cancelled_builds"], 1, "{body}");
    let closed = h.d.wait_for_state("web", third, "cancelled", 10);
    assert_eq!(closed["reason"], "pull request #4 was closed");

    std::fs::write(&release, "").expect("open the gate");
    h.d.wait_for_state("web", second, "succeeded", 60);
    assert_eq!(h.d.get("pr-3--web.localhost", "/").text(), "b\n");
}

#[test]
fn forks_never_run_unless_allowed_and_then_get_no_secrets() {
    let yml = format!(
        "build:\n  steps:\n    - 'echo \"token=[$DEPLOY_TOKEN]\"'\n    - \"{SERVE_INDEX}\"\npull_requests: {{ previews: true }}\n"
    );
    let h = Hooked::start(&[], &yml);
    h.d.opus(&["secret", "set", "web", "DEPLOY_TOKEN", "--value", "hunter2"])
        .ok();
    // The fork's head is only reachable as GitHub serves it, under refs/pull/<n>/head; its own
    // opus.yml tries to allow forks, which must not count.
    h.push("fork-head", "from a fork\n");
    h.repo.git(&["checkout", "-q", "fork-head"]);
    h.repo.write(
        "opus.yml",
        &yml.replace("{ previews: true }", "{ previews: true, forks: true }"),
    );
    let head = h.repo.commit("allow myself");
    h.repo.git(&["checkout", "-q", "main"]);
    h.repo.git(&["update-ref", "refs/pull/9/head", &head]);
    h.repo.git(&["branch", "-q", "-D", "fork-head"]);

    let refused = h.queued("f-1", &pull_request("opened", 9, &head, "mallory/web"));
    let b = h.d.wait_for_state("web", refused, "cancelled", 60);
    let reason = b["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("skipped: the pull request comes from a fork (mallory/web)"),
        "{reason}"
    );
    let log = h.log(refused);
    assert!(!log.contains("token=["), "no step ran: {log}");
    assert_eq!(h.d.get("pr-9--web.localhost", "/").status, 404);

    // The base branch allows forks: the build runs, with no secrets, and says so.
    h.repo.write(
        "opus.yml",
        &yml.replace("{ previews: true }", "{ previews: true, forks: true }"),
    );
    h.repo.commit("allow forks");
    let allowed = h.queued("f-2", &pull_request("synchronize", 9, &head, "mallory/web"));
    h.d.wait_for_state("web", allowed, "succeeded", 60);
    let log = h.log(allowed);
    assert!(log.contains("token=[]"), "{log}");
    assert!(log.contains("built with no secrets"), "{log}");
    assert!(
        !log.contains("hunter2") && !log.contains("token=[***]"),
        "{log}"
    );
    assert_eq!(h.d.get("pr-9--web.localhost", "/").text(), "from a fork\n");

    // A pull request from the repository itself gets the secrets (masked in the log).
    let own = h.push("own", "own\n");
    let n = h.queued("f-3", &pull_request("opened", 10, &own, "acme/web"));
    h.d.wait_for_state("web", n, "succeeded", 60);
    assert!(h.log(n).contains("token=[***]"));
}

#[test]
fn drafts_wait_for_ready_for_review_and_base_without_pull_requests_skips() {
    let yml = format!("build:\n  steps: [\"{SERVE_INDEX}\"]\npull_requests: {{}}\n");
    let h = Hooked::start(&[], &yml);
    let head = h.push("feature", "draft\n");
    let mut draft = pull_request("opened", 5, &head, "acme/web");
    draft["pull_request"]["draft"] = json!(true);
    let n = h.queued("d-1", &draft);
    let b = h.d.wait_for_state("web", n, "cancelled", 60);
    assert!(
        b["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("skipped: the pull request is a draft")),
        "{b}"
    );
    let n = h.queued(
        "d-2",
        &pull_request("ready_for_review", 5, &head, "acme/web"),
    );
    h.d.wait_for_state("web", n, "succeeded", 60);
    assert_eq!(h.d.get("pr-5--web.localhost", "/").text(), "draft\n");

    // Once main's opus.yml no longer has `pull_requests:`, pull requests do not build.
    h.repo.write(
        "opus.yml",
        &format!("build:\n  steps: [\"{SERVE_INDEX}\"]\n"),
    );
    h.repo.commit("no pull requests");
    let n = h.queued("d-3", &pull_request("synchronize", 5, &head, "acme/web"));
    let b = h.d.wait_for_state("web", n, "cancelled", 60);
    assert!(
        b["reason"]
            .as_str()
            .is_some_and(|r| r.contains("add `pull_requests: { previews: true }`")),
        "{b}"
    );
}

#[test]
fn bad_signatures_unknown_actions_and_malformed_pull_requests() {
    let yml = format!("build:\n  steps: [\"{SERVE_INDEX}\"]\npull_requests: {{}}\n");
    let h = Hooked::start(&[], &yml);
    let head = h.push("feature", "x\n");
    let payload = pull_request("opened", 2, &head, "acme/web");
    let body = serde_json::to_vec(&payload).expect("JSON");
    let good = sign(&h.secret, &body);
    let with_signature = |sig: Option<String>| {
        let mut headers = vec![
            ("x-github-event", "pull_request".to_owned()),
            ("x-github-delivery", "b-1".to_owned()),
        ];
        if let Some(sig) = sig {
            headers.push(("x-hub-signature-256", sig));
        }
        post(&h.url, &headers, body.clone()).0
    };
    // Wrong, missing, truncated: 401, nothing queued.
    assert_eq!(with_signature(Some(sign("not the secret", &body))), 401);
    assert_eq!(with_signature(None), 401);
    assert_eq!(with_signature(Some(good[..good.len() - 2].to_owned())), 401);
    assert_eq!(with_signature(Some("sha256=".to_owned())), 401);
    assert!(h.d.builds("web").is_empty());

    // An action Opus does not act on: 200, ignored, saying why.
    let (code, body) = h.deliver(
        "pull_request",
        "b-2",
        &pull_request("assigned", 2, &head, "acme/web"),
    );
    assert_eq!(code, 200, "{body}");
    let why = body["ignored"].as_str().expect("a reason");
    assert!(
        why.contains("\"assigned\"") && why.contains("opened"),
        "{why}"
    );
    // A payload without the head commit: 400, naming the field.
    let mut broken = pull_request("opened", 2, &head, "acme/web");
    broken["pull_request"]["head"]
        .as_object_mut()
        .expect("head")
        .remove("sha");
    let (code, body) = h.deliver("pull_request", "b-3", &broken);
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("pull_request.head.sha")),
        "{body}"
    );
    assert!(h.d.builds("web").is_empty());
    // The right signature queues it, once: the same delivery again is ignored.
    assert_eq!(with_signature(Some(good.clone())), 202);
    assert_eq!(with_signature(Some(good)), 200);
    assert_eq!(h.d.builds("web").len(), 1);
}

#[test]
fn the_public_url_is_the_payload_url_given_out() {
    // Without one, the CLI's own address, with a note that GitHub cannot reach it.
    let d = Daemon::start();
    d.opus(&["add", "web", d.root.path().to_str().expect("utf-8")])
        .ok();
    let out = d.opus(&["hook", "github", "web"]);
    assert!(
        out.ok()
            .contains(&format!("Payload URL:  {}/hooks/github/web", d.server)),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("--public-url"), "{}", out.stderr);

    // The flag, and the environment variable, with a path prefix and a trailing slash.
    let d = Daemon::start_with(&["--public-url", "https://opus.example.com/ci/"]);
    d.opus(&["add", "web", d.root.path().to_str().expect("utf-8")])
        .ok();
    let hook = d.opus(&["hook", "github", "web", "-o", "json"]);
    assert_eq!(
        hook.json()["url"],
        "https://opus.example.com/ci/hooks/github/web"
    );
    assert!(!hook.stderr.contains("--public-url"), "{}", hook.stderr);
    let trigger = d.opus(&["hook", "trigger", "web", "-o", "json"]).json();
    assert_eq!(
        trigger["url"],
        "https://opus.example.com/ci/hooks/trigger/web"
    );
    let d = Daemon::start_with_env(&[], &[("OPUS_PUBLIC_URL", "http://10.1.2.3:7070")]);
    d.opus(&["add", "web", d.root.path().to_str().expect("utf-8")])
        .ok();
    let hook = d.opus(&["hook", "github", "web", "-o", "json"]).json();
    assert_eq!(hook["url"], "http://10.1.2.3:7070/hooks/github/web");

    // Something that is no public URL: opusd says so and does not start.
    let out = std::process::Command::new(opus_tests::bin("opusd"))
        .args(["--public-url", "opus.example.com", "--data-dir"])
        .arg(d.root.path().join("other"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("public_url") && err.contains("opus.example.com"),
        "{err}"
    );
}

/// opusd pointed at a fake GitHub API, with a token, and `web` hooked.
fn with_fake_github(fake: &FakeGithub, extra: &[&str], opus_yml: &str) -> Hooked {
    let mut args = vec![
        "--github-api-url",
        fake.url.as_str(),
        "--public-url",
        "https://opus.example.com",
        "--hook-retry-base-ms",
        "50",
    ];
    args.extend_from_slice(extra);
    let h = Hooked::start(&args, opus_yml);
    let token = h.d.root.path().join("github-token");
    std::fs::write(&token, "ghp_fake_token_for_tests\n").expect("write token");
    let out = h.d.opus(&[
        "github",
        "connect",
        "--token-file",
        token.to_str().expect("utf-8"),
    ]);
    assert!(out.ok().contains(&fake.url), "{}", out.stdout);
    h
}

fn pr_yml() -> String {
    format!("build:\n  steps: [\"{SERVE_INDEX}\"]\npull_requests: {{}}\n")
}

/// The calls for statuses of `sha`, as lines.
fn status_lines(calls: &[Call], sha: &str) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.path.ends_with(sha))
        .map(|c| format!("{} {}", c.body["state"].as_str().unwrap_or("?"), c.answered))
        .collect()
}

/// The site URL of `web`'s environment `env` on opusd's site listener.
fn site_url(h: &Hooked, env: &str) -> String {
    let port = h.d.sites.rsplit(':').next().expect("a port");
    let host = if env == "production" {
        "web".to_owned()
    } else {
        format!("{env}--web")
    };
    format!("http://{host}.localhost:{port}/")
}

/// The lines of a deploy's calls: a deployment `id` with its two statuses.
fn deployed(id: u64) -> [String; 3] {
    [
        "POST /repos/acme/web/deployments".to_owned(),
        format!("POST /repos/acme/web/deployments/{id}/statuses in_progress"),
        format!("POST /repos/acme/web/deployments/{id}/statuses success"),
    ]
}

fn inactive(id: u64) -> String {
    format!("POST /repos/acme/web/deployments/{id}/statuses inactive")
}

#[test]
fn commit_statuses_and_deployments_follow_a_pull_requests_life() {
    let fake = FakeGithub::start();
    let h = with_fake_github(&fake, &[], &pr_yml());
    let first = h.push("feature", "one\n");
    let n1 = h.queued("c-1", &pull_request("opened", 7, &first, "acme/web"));
    h.d.wait_for_state("web", n1, "succeeded", 60);
    fake.wait_for(30, "the first deploy and statuses", |c| c.len() >= 5);
    let second = h.push("feature", "two\n");
    let n2 = h.queued("c-2", &pull_request("synchronize", 7, &second, "acme/web"));
    h.d.wait_for_state("web", n2, "succeeded", 60);
    fake.wait_for(30, "the second deploy and statuses", |c| c.len() >= 11);
    let (code, body) = h.deliver(
        "pull_request",
        "c-3",
        &pull_request("closed", 7, &second, "acme/web"),
    );
    assert_eq!(
        (code, &body["removed_preview"]),
        (200, &json!("pr-7")),
        "{body}"
    );
    let calls = fake.wait_for(30, "the removed preview's deployment inactive", |c| {
        c.len() >= 12
    });

    // Exactly these calls, in this order.
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    let mut expected = vec![format!("POST /repos/acme/web/statuses/{first} pending")];
    expected.extend(deployed(1001));
    expected.push(format!("POST /repos/acme/web/statuses/{first} success"));
    expected.push(format!("POST /repos/acme/web/statuses/{second} pending"));
    expected.extend(deployed(1002));
    expected.push(inactive(1001));
    expected.push(format!("POST /repos/acme/web/statuses/{second} success"));
    expected.push(inactive(1002));
    assert_eq!(lines, expected);
    let pending = &calls[0];
    assert_eq!(
        pending.authorization.as_deref(),
        Some("Bearer ghp_fake_token_for_tests")
    );
    assert_eq!(pending.body["context"], "opus/web");
    assert_eq!(pending.body["description"], "queued");
    assert_eq!(
        pending.body["target_url"],
        format!("https://opus.example.com/projects/web/builds/{n1}")
    );
    let success = calls[4].body["description"].as_str().expect("description");
    assert!(
        success.starts_with(&format!("built pr-7-{n1}-")) && success.ends_with(" s"),
        "{success}"
    );
    // The deployments: each head commit to the transient preview, never merged, no contexts.
    for (call, sha) in [(&calls[1], &first), (&calls[6], &second)] {
        assert_eq!(call.body["ref"], sha.as_str(), "{}", call.body);
        assert_eq!(call.body["environment"], "pr-7");
        assert_eq!(call.body["auto_merge"], false);
        assert_eq!(call.body["required_contexts"], json!([]));
        assert_eq!(call.body["transient_environment"], true);
    }
    assert_eq!(calls[3].body["environment_url"], site_url(&h, "pr-7"));
    assert_eq!(calls[2].body.get("environment_url"), None);
    // Nothing more; the token is in no log and no listing.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(fake.calls().len(), 12);
    let deliveries = h.d.opus(&["github", "deliveries", "-o", "json"]).json();
    let states: Vec<_> = deliveries
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["delivery"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(states, ["delivered"; 7]);
    assert!(!h.d.log().contains("ghp_fake_token_for_tests"));
    assert!(!deliveries.to_string().contains("ghp_fake_token_for_tests"));
}

#[test]
fn deploys_by_hand_and_rollbacks_of_github_versions_are_deployments() {
    let fake = FakeGithub::start();
    let mut h = with_fake_github(&fake, &[], &pr_yml());
    let first = h.push("feature", "one\n");
    let n1 = h.queued("d-1", &pull_request("opened", 7, &first, "acme/web"));
    let v1 = h.d.wait_for_state("web", n1, "succeeded", 60)["version"]
        .as_str()
        .expect("version")
        .to_owned();
    let second = h.push("feature", "two\n");
    let n2 = h.queued("d-2", &pull_request("synchronize", 7, &second, "acme/web"));
    let v2 = h.d.wait_for_state("web", n2, "succeeded", 60)["version"]
        .as_str()
        .expect("version")
        .to_owned();
    let before = fake
        .wait_for(30, "the previews' calls", |c| c.len() >= 11)
        .len();

    h.d.opus(&["deploy", "web", &v1]).ok();
    fake.wait_for(30, "the deploy by hand", |c| c.len() >= before + 3);
    // The production deployment's id is kept across a restart.
    h.d.restart();
    h.d.opus(&["deploy", "web", &v2]).ok();
    fake.wait_for(30, "the second deploy", |c| c.len() >= before + 7);
    h.d.opus(&["rollback", "web"]).ok();
    fake.wait_for(30, "the rollback", |c| c.len() >= before + 11);
    // A version GitHub did not build makes no deployment, but retires the one it replaces.
    let dir = h.d.root.path().join("by-hand");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("index.html"), "by hand\n").expect("write");
    h.d.publish("web", "9.9.9", &dir);
    h.d.opus(&["deploy", "web", "9.9.9"]).ok();
    let calls = fake.wait_for(30, "the last deployment inactive", |c| {
        c.len() >= before + 12
    });

    let lines: Vec<String> = calls[before..].iter().map(Call::line).collect();
    let mut expected = deployed(1003).to_vec();
    expected.extend(deployed(1004));
    expected.push(inactive(1003));
    expected.extend(deployed(1005));
    expected.push(inactive(1004));
    expected.push(inactive(1005));
    assert_eq!(lines, expected);
    let deployments: Vec<_> = [0, 3, 7].iter().map(|&i| &calls[before + i].body).collect();
    let shas: Vec<_> = deployments.iter().map(|b| b["ref"].clone()).collect();
    assert_eq!(shas, [json!(first), json!(second), json!(first)]);
    for body in deployments {
        assert_eq!(body["environment"], "production");
        assert_eq!(body["transient_environment"], false);
    }
    assert_eq!(
        calls[before + 5].body["environment_url"],
        site_url(&h, "production")
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(fake.calls().len(), before + 12);
}

#[test]
fn a_status_github_answers_500_three_times_arrives_once() {
    let fake = FakeGithub::start();
    fake.script([500, 500, 500].map(Scripted::status));
    let h = with_fake_github(&fake, &[], &pr_yml());
    let sha = h.push("feature", "x\n");
    let n = h.queued("r-1", &pull_request("opened", 2, &sha, "acme/web"));
    h.d.wait_for_state("web", n, "succeeded", 60);
    let calls = fake.wait_for(30, "the success status", |c| {
        c.iter()
            .any(|c| c.path.ends_with(&sha) && c.body["state"] == "success")
    });
    assert_eq!(
        status_lines(&calls, &sha),
        [
            "pending 500",
            "pending 500",
            "pending 500",
            "pending 201",
            "success 201"
        ]
    );
}

#[test]
fn a_rate_limited_status_waits_for_the_reset_github_names() {
    let fake = FakeGithub::start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    fake.script([Scripted {
        status: 403,
        headers: vec![
            ("x-ratelimit-remaining".into(), "0".into()),
            ("x-ratelimit-reset".into(), (now + 2).to_string()),
        ],
    }]);
    let h = with_fake_github(&fake, &[], &pr_yml());
    let sha = h.push("feature", "x\n");
    let started = std::time::Instant::now();
    let n = h.queued("l-1", &pull_request("opened", 2, &sha, "acme/web"));
    fake.wait_for(10, "the rate-limited attempt", |c| !c.is_empty());
    let deliveries = h.d.opus(&["github", "deliveries", "-o", "json"]).json();
    assert!(
        deliveries[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("rate limited")),
        "{deliveries}"
    );
    let calls = fake.wait_for(30, "the pending status accepted", |c| {
        c.iter().any(|c| c.answered == 201)
    });
    // Backoff alone (50 ms) would have tried at once; GitHub's reset was at least a second away.
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "retried after {:?}",
        started.elapsed()
    );
    assert_eq!(
        status_lines(&calls, &sha)[..2],
        ["pending 403", "pending 201"]
    );
    h.d.wait_for_state("web", n, "succeeded", 60);
}

#[test]
fn a_status_not_sent_when_opusd_is_killed_is_sent_after_the_restart() {
    let fake = FakeGithub::start();
    let mut h = with_fake_github(&fake, &[], &pr_yml());
    let sha = h.push("feature", "x\n");
    let n = h.queued("k-1", &pull_request("opened", 4, &sha, "acme/web"));
    fake.wait_for(30, "the pending status", |c| c.len() == 1);
    // From now on GitHub fails: the success status cannot get through before the kill.
    fake.script(std::iter::repeat_n(Scripted::status(502), 10_000));
    h.d.wait_for_state("web", n, "succeeded", 60);
    fake.wait_for(30, "a failed attempt of the success status", |c| {
        c.iter()
            .any(|c| c.path.ends_with(&sha) && c.body["state"] == "success")
    });
    h.d.kill();
    fake.clear_script();
    h.d.restart();
    let calls = fake.wait_for(30, "the success status accepted", |c| {
        c.iter()
            .any(|c| c.path.ends_with(&sha) && c.body["state"] == "success" && c.answered == 201)
    });
    let lines = status_lines(&calls, &sha);
    assert_eq!(lines[0], "pending 201");
    assert_eq!(
        lines.iter().filter(|l| *l == "pending 201").count(),
        1,
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("success 201"),
        "{lines:?}"
    );
    assert!(
        lines[1..lines.len() - 1].iter().all(|l| l == "success 502"),
        "{lines:?}"
    );
}

#[test]
fn a_deploy_cut_by_a_kill_goes_on_with_the_same_deployment_after_the_restart() {
    let fake = FakeGithub::start();
    // GitHub takes the deployment, then fails its statuses until opusd is killed.
    fake.script_deployment_statuses(std::iter::repeat_n(Scripted::status(502), 10_000));
    let mut h = with_fake_github(&fake, &[], &pr_yml());
    let sha = h.push("feature", "x\n");
    let n = h.queued("m-1", &pull_request("opened", 5, &sha, "acme/web"));
    h.d.wait_for_state("web", n, "succeeded", 60);
    fake.wait_for(30, "a failed in_progress attempt", |c| {
        c.iter().any(|c| c.answered == 502)
    });
    let deliveries = h.d.opus(&["github", "deliveries", "-o", "json"]).json();
    assert_eq!(deliveries[0]["state"], "in_progress", "{deliveries}");
    assert_eq!(deliveries[0]["delivery"], "pending", "{deliveries}");
    h.d.kill();
    fake.clear_script();
    h.d.restart();
    let calls = fake.wait_for(30, "the build's success status", |c| {
        c.iter()
            .any(|c| c.path.ends_with(&sha) && c.body["state"] == "success")
    });
    let lines: Vec<String> = calls
        .iter()
        .map(|c| format!("{} {}", c.line(), c.answered))
        .filter(|l| !l.contains(" 502"))
        .collect();
    assert_eq!(
        lines,
        [
            format!("POST /repos/acme/web/statuses/{sha} pending 201"),
            "POST /repos/acme/web/deployments 201".to_owned(),
            "POST /repos/acme/web/deployments/1001/statuses in_progress 201".to_owned(),
            "POST /repos/acme/web/deployments/1001/statuses success 201".to_owned(),
            format!("POST /repos/acme/web/statuses/{sha} success 201"),
        ],
        "one deployment, its statuses sent after the restart"
    );
    assert!(
        calls
            .iter()
            .filter(|c| c.answered == 502)
            .all(|c| c.line() == "POST /repos/acme/web/deployments/1001/statuses in_progress"),
        "only in_progress failed"
    );
}
