//! opusd as a GitHub App, against the fake GitHub API (no github.com here): the App's JWT is
//! verified by the fake with the public half of an RSA key this test generates; installation
//! tokens are issued by the fake; a private repository is a real git server over HTTP
//! (`git http-backend`) that answers 401 to anything but a live installation token.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::webhook_post::{post, sign};
use opus_tests::fake_github::{Call, FakeGithub, FakeInstallation};
use opus_tests::git_http::{GitHttpServer, command_lines_holding};
use opus_tests::{Daemon, GitRepo};
use serde_json::{Value, json};

const APP_ID: &str = "4242";

/// Whether a password is a live installation token of the fake.
type TokenCheck = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// A new RSA key pair in `dir` (GitHub's PKCS#1 PEM for the private half): (private key file,
/// public key PEM). Never checked in: made by each test.
fn rsa_key(dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
    let key = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048"));
    run(Command::new("openssl")
        .arg("rsa")
        .arg("-in")
        .arg(&key)
        .args(["-pubout", "-out"])
        .arg(&public));
    (key, std::fs::read(&public).expect("public key"))
}

/// A repository as `GET /installation/repositories` lists it.
fn repository(full_name: &str, clone_url: &str, private: bool) -> Value {
    let name = full_name.split('/').nth(1).expect("OWNER/REPO");
    json!({
        "id": 1000 + full_name.len(),
        "name": name,
        "full_name": full_name,
        "private": private,
        "owner": { "login": full_name.split('/').next() },
        "html_url": format!("https://github.com/{full_name}"),
        "url": format!("https://api.github.com/repos/{full_name}"),
        "clone_url": clone_url,
        "default_branch": "main",
    })
}

/// The fake GitHub as App 4242 with installation 42 (`acme/web`, private, on `git_url`, and
/// `acme/My.Docs`) and installation 43 (`other/site`); opusd started as that App.
struct App {
    fake: FakeGithub,
    d: Daemon,
}

impl App {
    fn start(git_url: &str, extra: &[&str]) -> App {
        let (fake, keys, mut args) = app_fake(git_url);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let d = Daemon::start_with(&args);
        // The key was read at start: the test's copy goes now.
        drop(keys);
        App { fake, d }
    }
}

/// The fake GitHub of [`App`], the folder holding the App's key, and opusd's flags making it
/// that App.
fn app_fake(git_url: &str) -> (FakeGithub, tempfile::TempDir, Vec<String>) {
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, public) = rsa_key(keys.path(), "app");
    let fake = FakeGithub::start();
    fake.enable_app(
        4242,
        &public,
        vec![
            FakeInstallation {
                id: 42,
                repositories: vec![
                    repository("acme/web", &format!("{git_url}/acme/web.git"), true),
                    repository("acme/My.Docs", "https://github.com/acme/My.Docs.git", false),
                ],
            },
            FakeInstallation {
                id: 43,
                repositories: vec![repository(
                    "other/site",
                    "https://github.com/other/site.git",
                    true,
                )],
            },
        ],
    );
    let args = vec![
        "--github-api-url".to_owned(),
        fake.url.clone(),
        "--github-app-id".to_owned(),
        APP_ID.to_owned(),
        "--github-app-key-file".to_owned(),
        key.to_str().expect("utf-8").to_owned(),
        "--hook-retry-base-ms".to_owned(),
        "50".to_owned(),
    ];
    (fake, keys, args)
}

/// A bare repository `<root>/acme/web.git` whose main builds `index.html` from `text`.
fn private_repository(root: &Path, text: &str) -> String {
    let work = GitRepo::init(&root.join("work"));
    work.write(
        "opus.yml",
        "build:\n  steps: [\"mkdir -p dist && cp index.txt dist/index.html\"]\nenvironments:\n  production: { branch: main, auto_deploy: true }\n",
    );
    work.write("index.txt", text);
    let sha = work.commit("first");
    let bare = root.join("served").join("acme").join("web.git");
    let out = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&work.dir)
        .arg(&bare)
        .output()
        .expect("git clone --bare");
    assert!(out.status.success());
    sha
}

#[test]
fn import_lists_then_adds_and_the_private_clone_uses_the_installation_token() {
    let git_root = tempfile::tempdir().expect("tempdir");
    let sha = private_repository(git_root.path(), "private site\n");
    // Started before the fake exists: its check is set once the fake is up.
    let check: Arc<std::sync::OnceLock<TokenCheck>> = Arc::default();
    let checker = check.clone();
    let git = GitHttpServer::start(
        &git_root.path().join("served"),
        Arc::new(move |user, password| {
            user == "x-access-token" && checker.get().is_some_and(|check| check(password))
        }),
    );
    let app = App::start(&git.url, &[]);
    let _ = check.set(Box::new(app.fake.token_check()));
    let d = &app.d;

    // No argument: the list, nothing added.
    let listed = d.opus(&["github", "import", "-o", "json"]).json();
    let names: Vec<_> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| {
            (
                r["repository"].as_str().unwrap_or("").to_owned(),
                r["import_as"].as_str().unwrap_or("").to_owned(),
                r["installation"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("acme/My.Docs".to_owned(), "my-docs".to_owned(), 42),
            ("acme/web".to_owned(), "web".to_owned(), 42),
            ("other/site".to_owned(), "site".to_owned(), 43),
        ]
    );
    let table = d.opus(&["github", "import"]);
    assert!(table.ok().contains("imports as web"), "{}", table.stdout);
    assert!(
        d.opus(&["list", "-o", "json"])
            .json()
            .as_array()
            .expect("list")
            .is_empty()
    );

    // A name no installation sees: nothing is added, and it says which.
    let refused = d.opus(&["github", "import", "acme/web", "acme/nope"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("acme/nope") && refused.stderr.contains("nothing was imported"),
        "{}",
        refused.stderr
    );
    let bad = d.opus(&["github", "import", "web"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("OWNER/REPO"), "{}", bad.stderr);
    assert!(
        d.opus(&["list", "-o", "json"])
            .json()
            .as_array()
            .expect("list")
            .is_empty()
    );

    let added = d.opus(&["github", "import", "acme/web", "ACME/my.docs"]);
    assert_eq!(
        added.ok(),
        "acme/web: added as web\nacme/My.Docs: added as my-docs\n"
    );
    let again = d.opus(&["github", "import", "acme/web"]);
    assert_eq!(again.ok(), "acme/web: already the project web; skipped\n");
    let project = d.opus(&["list", "-o", "json"]).json();
    let web = project
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["name"] == "web")
        .expect("web")
        .clone();
    assert_eq!(web["source"], format!("{}/acme/web.git", git.url), "{web}");

    // The App authenticated with its JWT (the fake verified it: 200/201, not 401).
    let app_calls: Vec<String> = app
        .fake
        .calls()
        .iter()
        .map(|c| format!("{} {} {}", c.method, c.path, c.answered))
        .collect();
    assert!(
        app_calls.contains(&"GET /app/installations 200".to_owned())
            && app_calls.contains(&"POST /app/installations/42/access_tokens 201".to_owned())
            && app_calls.contains(&"GET /installation/repositories 200".to_owned()),
        "{app_calls:#?}"
    );

    // The build clones the private repository with the installation token.
    let n = d.trigger(&["web"]);
    let build = d.wait_for_state("web", n, "succeeded", 60);
    assert_eq!(
        d.get("web.localhost", "/").text(),
        "private site\n",
        "{build}"
    );
    let seen = git.seen();
    assert!(
        seen.iter().any(|s| !s.accepted && s.credentials.is_none()),
        "the server asked for credentials first: {seen:#?}"
    );
    let tokens = app.fake.issued_tokens();
    let used: Vec<_> = seen
        .iter()
        .filter(|s| s.accepted)
        .filter_map(|s| s.credentials.clone())
        .collect();
    assert!(!used.is_empty(), "{seen:#?}");
    for (user, password) in &used {
        assert_eq!(user, "x-access-token");
        assert!(tokens.contains(password), "{password} was issued by GitHub");
    }
    assert_eq!(
        git.leaks(),
        Vec::<String>::new(),
        "no command line held the token"
    );
    let log = d.opus(&["logs", &format!("web#{n}")]).ok().to_owned();
    for token in &tokens {
        assert!(
            !d.log().contains(token.as_str()),
            "opusd's log holds a token"
        );
        assert!(!log.contains(token.as_str()), "the build log holds a token");
    }
    let askpass = d.data_dir().join("git-askpass");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&askpass)
            .expect("askpass script")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o700);
    for token in &tokens {
        let script = std::fs::read_to_string(&askpass).expect("script");
        assert!(!script.contains(token.as_str()));
    }

    // A revoked token: git is refused, opusd gets a new token and fetches again.
    app.fake.revoke_tokens();
    let issued = app.fake.issued_tokens().len();
    let n = d.trigger(&["web"]);
    d.wait_for_state("web", n, "succeeded", 60);
    assert_eq!(app.fake.issued_tokens().len(), issued + 1);
    let seen = git.seen();
    let last = seen.last().expect("requests");
    assert!(last.accepted, "{seen:#?}");
    assert!(
        seen.iter().any(|s| !s.accepted && s.credentials.is_some()),
        "the revoked token was refused: {seen:#?}"
    );
    assert_eq!(git.leaks(), Vec::<String>::new());

    // Listing with a revoked token: 401, a new token, the list.
    app.fake.revoke_tokens();
    let listed = d.opus(&["github", "import", "-o", "json"]).json();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
    assert_eq!(listed[1]["project"], "web", "{listed}");
    let repo_calls: Vec<u16> = app
        .fake
        .calls()
        .iter()
        .filter(|c| c.path == "/installation/repositories")
        .map(|c| c.answered)
        .collect();
    assert!(
        repo_calls.ends_with(&[401, 200, 401, 200]),
        "{repo_calls:?}"
    );

    // A name already another project's is skipped, saying how to add it anyway.
    d.opus(&["add", "site", "https://example.invalid/site.git"])
        .ok();
    let skipped = d.opus(&["github", "import", "other/site"]);
    assert!(
        skipped.ok().contains("the name site is another project's"),
        "{}",
        skipped.stdout
    );

    // A delivery naming an installation that is not the App's: the clone cannot get a token,
    // and the build fails saying why.
    let hook = d.opus(&["hook", "github", "web", "-o", "json"]).json();
    let secret = hook["secret"].as_str().expect("secret");
    let (code, body) = push(d, secret, "gone-1", &sha, 99);
    assert_eq!(code, 202, "{body}");
    let n = body["build"].as_u64().expect("a build");
    let failed = d.wait_for_state("web", n, "failed", 60);
    let reason = failed["reason"].as_str().unwrap_or_default().to_owned();
    let log = d.opus(&["logs", &format!("web#{n}")]).ok().to_owned();
    assert!(
        (reason + &log).contains("cannot get the GitHub App installation token"),
        "{failed} {log}"
    );
}

#[test]
fn the_kubernetes_runner_clones_a_private_repository_with_the_installation_token() {
    let git_root = tempfile::tempdir().expect("tempdir");
    let sha = private_repository(git_root.path(), "private site on kubernetes\n");
    let check: Arc<std::sync::OnceLock<TokenCheck>> = Arc::default();
    let checker = check.clone();
    let git = GitHttpServer::start(
        &git_root.path().join("served"),
        Arc::new(move |user, password| {
            user == "x-access-token" && checker.get().is_some_and(|check| check(password))
        }),
    );
    let (fake, keys, args) = app_fake(&git.url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = crate::kubernetes_exec::cluster_with(&args);
    drop(keys);
    let _ = check.set(Box::new(fake.token_check()));
    let d = &c.d;
    d.opus(&["github", "import", "acme/web"]).ok();

    let n = d.trigger(&["web"]);
    let (job, _id) = crate::kubernetes_exec::wait_for_only_job_of(&c, "web");
    let tokens = fake.issued_tokens();
    let whole = job.to_string();
    for token in &tokens {
        assert!(!whole.contains(token.as_str()), "the Job holds no token");
    }
    let workspace = tempfile::tempdir().expect("workspace");
    let ran = crate::kubernetes_exec::run_job_locally(&c, &job, workspace.path());
    assert_eq!(ran.code, 0, "runner: {}\nopusd: {}", ran.stderr, d.log());
    d.wait_for_state("web", n, "succeeded", 60);
    assert_eq!(
        std::fs::read_to_string(workspace.path().join("dist/index.html")).expect("built"),
        "private site on kubernetes\n"
    );

    // The runner's clone asked, then used a token GitHub issued (minted for its assignment).
    let seen = git.seen();
    assert!(
        seen.iter().any(|s| !s.accepted && s.credentials.is_none()),
        "the server asked for credentials first: {seen:#?}"
    );
    let tokens = fake.issued_tokens();
    let used: Vec<_> = seen
        .iter()
        .filter(|s| s.accepted)
        .filter_map(|s| s.credentials.clone())
        .collect();
    assert!(!used.is_empty(), "{seen:#?}");
    for (user, password) in &used {
        assert_eq!(user, "x-access-token");
        assert!(tokens.contains(password), "{password} was issued by GitHub");
    }
    // Nowhere but git's environment: no command line, no log, no file left behind.
    assert_eq!(git.leaks(), Vec::<String>::new(), "no command line held it");
    let log = d.opus(&["logs", &format!("web#{n}")]).ok().to_owned();
    for token in &tokens {
        assert!(
            !ran.stderr.contains(token.as_str()),
            "the runner's log holds a token"
        );
        assert!(
            !ran.stdout.contains(token.as_str()),
            "the runner's output holds a token"
        );
        assert!(
            !d.log().contains(token.as_str()),
            "opusd's log holds a token"
        );
        assert!(!log.contains(token.as_str()), "the build log holds a token");
        let config = std::fs::read_to_string(workspace.path().join(".git/config")).expect("config");
        assert!(
            !config.contains(token.as_str()),
            "the clone's config holds a token"
        );
    }
    assert!(
        !workspace.path().join("git-askpass").exists(),
        "the askpass script is not in the workspace"
    );

    // The project moves to an installation that is not the App's while a Job waits for its
    // runner: opusd cannot get a token for the runner's clone, and the runner stops saying why.
    let n = d.trigger(&["web"]);
    let job = c
        .fake
        .wait_for_object(
            &format!("{}/opus-web-{n}", crate::kubernetes_exec::JOBS),
            30,
        )
        .unwrap_or_else(|| panic!("no Job for web#{n}\nopusd log:\n{}", d.log()));
    let hook = d.opus(&["hook", "github", "web", "-o", "json"]).json();
    let secret = hook["secret"].as_str().expect("secret");
    let (code, body) = push(d, secret, "gone-k8s", &sha, 99);
    assert_eq!(code, 202, "{body}");
    let workspace = tempfile::tempdir().expect("workspace");
    let ran = crate::kubernetes_exec::run_job_locally(&c, &job, workspace.path());
    assert_ne!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("cannot get the GitHub App installation token of project web"),
        "{}",
        ran.stderr
    );
}

/// A signed push delivery for `web` from installation `installation` of `sha` on main.
fn push(d: &Daemon, secret: &str, delivery: &str, sha: &str, installation: u64) -> (u16, Value) {
    let payload = json!({
        "ref": "refs/heads/main",
        "after": sha,
        "head_commit": { "id": sha },
        "repository": { "full_name": "acme/web" },
        "installation": { "id": installation },
    });
    let body = serde_json::to_vec(&payload).expect("JSON");
    post(
        &format!("{}/hooks/github/web", d.server),
        &[
            ("x-github-event", "push".to_owned()),
            ("x-github-delivery", delivery.to_owned()),
            ("x-hub-signature-256", sign(secret, &body)),
            ("content-type", "application/json".to_owned()),
        ],
        body,
    )
}

fn lines(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| format!("{} {}", c.line(), c.answered))
        .collect()
}

#[test]
fn statuses_go_with_the_installation_token_kept_until_near_expiry_and_replaced_after_a_401() {
    let app = App::start("http://127.0.0.1:9", &[]);
    let d = &app.d;
    let repo = GitRepo::init(&d.root.path().join("repo"));
    repo.write(
        "opus.yml",
        "build:\n  steps: [\"mkdir -p dist && echo hi > dist/index.html\"]\n",
    );
    let sha = repo.commit("first");
    d.opus(&["add", "web", &repo.url()]).ok();
    let hook = d.opus(&["hook", "github", "web", "-o", "json"]).json();
    let secret = hook["secret"].as_str().expect("secret").to_owned();

    // The delivery names installation 42: the statuses go with its token, asked for once.
    let (code, body) = push(d, &secret, "d-1", &sha, 42);
    assert_eq!(code, 202, "{body}");
    let status = format!("POST /repos/acme/web/statuses/{sha}");
    let calls = app.fake.wait_for(30, "pending and success", |calls| {
        calls.iter().filter(|c| c.path.ends_with(&sha)).count() >= 2
    });
    assert_eq!(
        lines(&calls),
        [
            "POST /app/installations/42/access_tokens 201".to_owned(),
            format!("{status} pending 201"),
            format!("{status} success 201"),
        ]
    );
    let token = app.fake.issued_tokens()[0].clone();
    assert_eq!(
        calls[0]
            .authorization
            .as_deref()
            .map(|a| a.starts_with("Bearer ey")),
        Some(true)
    );
    for call in &calls[1..] {
        assert_eq!(call.authorization, Some(format!("Bearer {token}")));
    }

    // Revoked: the status is refused with 401, a new token is asked for, the status sent again.
    app.fake.revoke_tokens();
    let sha2 = {
        repo.write("index.txt", "two\n");
        repo.commit("two")
    };
    let (code, body) = push(d, &secret, "d-2", &sha2, 42);
    assert_eq!(code, 202, "{body}");
    let calls = app
        .fake
        .wait_for(30, "the second build's success", |calls| {
            calls
                .iter()
                .any(|c| c.path.ends_with(&sha2) && c.body["state"] == "success")
        });
    let status2 = format!("POST /repos/acme/web/statuses/{sha2}");
    assert_eq!(
        lines(&calls[3..]),
        [
            format!("{status2} pending 401"),
            "POST /app/installations/42/access_tokens 201".to_owned(),
            format!("{status2} pending 201"),
            format!("{status2} success 201"),
        ]
    );
    let records = d.opus(&["github", "deliveries", "-o", "json"]).json();
    assert!(
        records
            .as_array()
            .expect("list")
            .iter()
            .all(|r| r["delivery"] == "delivered"),
        "{records}"
    );

    // Tokens that expire within opusd's margin are not kept: one per call.
    app.fake.set_token_lifetime(Duration::from_secs(240));
    app.fake.revoke_tokens();
    let sha3 = {
        repo.write("index.txt", "three\n");
        repo.commit("three")
    };
    let (code, body) = push(d, &secret, "d-3", &sha3, 42);
    assert_eq!(code, 202, "{body}");
    let calls = app.fake.wait_for(30, "the third build's success", |calls| {
        calls
            .iter()
            .any(|c| c.path.ends_with(&sha3) && c.body["state"] == "success")
    });
    let status3 = format!("POST /repos/acme/web/statuses/{sha3}");
    // The first call finds the revoked token (401) and asks for a new one.
    assert_eq!(
        lines(&calls[7..]),
        [
            format!("{status3} pending 401"),
            "POST /app/installations/42/access_tokens 201".to_owned(),
            format!("{status3} pending 201"),
            "POST /app/installations/42/access_tokens 201".to_owned(),
            format!("{status3} success 201"),
        ]
    );
    for token in app.fake.issued_tokens() {
        assert!(!d.log().contains(&token), "opusd's log holds a token");
    }
}

#[test]
fn an_installation_github_refuses_and_an_app_key_github_does_not_know_say_so() {
    let app = App::start("http://127.0.0.1:9", &[]);
    let d = &app.d;
    let repo = GitRepo::init(&d.root.path().join("repo"));
    repo.write(
        "opus.yml",
        "build:\n  steps: [\"mkdir -p dist && echo hi > dist/index.html\"]\n",
    );
    let sha = repo.commit("first");
    d.opus(&["add", "web", &repo.url()]).ok();
    let hook = d.opus(&["hook", "github", "web", "-o", "json"]).json();
    let secret = hook["secret"].as_str().expect("secret").to_owned();
    // Installation 99 is not the App's: GitHub answers 404 and the status fails saying so.
    let (code, body) = push(d, &secret, "x-1", &sha, 99);
    assert_eq!(code, 202, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let records = loop {
        let records = d.opus(&["github", "deliveries", "-o", "json"]).json();
        let over = records
            .as_array()
            .is_some_and(|r| r.len() >= 2 && r.iter().all(|r| r["delivery"] == "failed"));
        if over || std::time::Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let first = &records[0];
    assert_eq!(first["delivery"], "failed", "{records}");
    assert_eq!(first["last_status"], 404, "{records}");
    assert!(
        first["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("/app/installations/99/access_tokens")),
        "{records}"
    );

    // An opusd whose key is not the App's: GitHub refuses its JWT, and import says what to check.
    let other_keys = tempfile::tempdir().expect("tempdir");
    let (other_key, _) = rsa_key(other_keys.path(), "other");
    let other = Daemon::start_with(&[
        "--github-api-url",
        app.fake.url.as_str(),
        "--github-app-id",
        APP_ID,
        "--github-app-key-file",
        other_key.to_str().expect("utf-8"),
    ]);
    let refused = other.opus(&["github", "import"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("401") && refused.stderr.contains("--github-app-id"),
        "{}",
        refused.stderr
    );
    assert!(
        app.fake
            .calls()
            .iter()
            .any(|c| c.path == "/app/installations" && c.answered == 401)
    );
}

#[test]
fn without_an_app_import_says_how_to_make_opusd_one() {
    let d = Daemon::start();
    let out = d.opus(&["github", "import"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("--github-app-id") && out.stderr.contains("--github-app-key-file"),
        "{}",
        out.stderr
    );
}

/// The leak check finds a secret in a command line when one holds it (so its finding none above
/// means something).
#[test]
fn the_command_line_check_sees_a_secret_in_an_argument() {
    let mut child = Command::new("sh")
        .args(["-c", "sleep 30", "ghs_marker_in_argv"])
        .spawn()
        .expect("sh runs");
    // The child may not have exec'd yet (its command line is its parent's until then): look
    // again until it shows, for a while.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut found = command_lines_holding("ghs_marker_in_argv");
    while found.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        found = command_lines_holding("ghs_marker_in_argv");
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        found.iter().any(|line| line.contains("sleep 30")),
        "{found:?}"
    );
}
