//! Checks before promotion and verification after a deploy (opus.yml `checks:` and
//! `environments.<env>.verify:`), through the real binaries and the real site server: a check
//! runs against the stored version's own URL before production moves; a failing one leaves
//! production where it was, fails the build with the reason and appends `deploy.blocked`; a
//! deploy that fails its verification is rolled back and pinned, with `deploy.rolled_back`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opus_tests::{Daemon, site_with_opus_yml};

/// The build writes `page.html` of the source as its `dist/index.html`.
const BUILD: &str = "build:\n  steps: [\"mkdir -p dist && cp page.html dist/index.html\"]\n";

/// A project `web` whose opus.yml is `BUILD` followed by `rest`, its page `page`.
fn project(d: &Daemon, rest: &str, page: &str) -> PathBuf {
    let dir = site_with_opus_yml(d.root.path(), "web", &format!("{BUILD}{rest}"));
    std::fs::write(dir.join("page.html"), page).expect("write the page");
    d.opus(&["add", "web", dir.to_str().expect("utf-8")]).ok();
    dir
}

/// Builds `web` with `page` as its page; waits for `state` and returns the build's JSON.
fn build(d: &Daemon, dir: &Path, page: &str, state: &str) -> serde_json::Value {
    std::fs::write(dir.join("page.html"), page).expect("write the page");
    let number = d.trigger(&["web"]);
    d.wait_for_state("web", number, state, 60)
}

fn log(d: &Daemon, build: &serde_json::Value) -> String {
    let name = format!("web#{}", build["number"]);
    d.opus(&["logs", &name]).ok().to_owned()
}

/// The events so far, as `opus events -o json` prints them (a JSON object a line).
fn events(d: &Daemon) -> Vec<serde_json::Value> {
    d.opus(&["events", "-o", "json"])
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event as JSON"))
        .collect()
}

fn production(d: &Daemon) -> serde_json::Value {
    d.opus(&["env", "list", "web", "-o", "json"])
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .find(|e| e["name"] == "production")
        .expect("production listed")
}

const ROOT_CHECK: &str =
    "checks:\n  root: { http: { path: /, status: 200, contains: \"<div id=\\\"root\\\">\" } }\n";

#[test]
fn a_passing_http_check_lets_production_move_and_a_failing_one_keeps_it_where_it_was() {
    let d = Daemon::start();
    let dir = project(
        &d,
        &format!(
            "{ROOT_CHECK}environments:\n  production: {{ branch: main, auto_deploy: true }}\n"
        ),
        "",
    );
    let first = build(&d, &dir, "<div id=\"root\">one</div>", "succeeded");
    let first_log = log(&d, &first);
    assert!(
        first_log.contains("1 check(s) against http://")
            && first_log.contains("--v--web.localhost")
            && first_log.contains("[check root] passed"),
        "{first_log}"
    );
    assert_eq!(
        d.get("web.localhost", "/").text(),
        "<div id=\"root\">one</div>"
    );
    let v1 = first["version"].as_str().expect("a version").to_owned();

    let second = build(&d, &dir, "<p>broken</p>", "failed");
    assert_eq!(
        second["reason"],
        format!("check root failed; production stays on {v1}"),
        "{second}"
    );
    // Production still serves the first version; the second is stored and has its own URL.
    assert_eq!(
        d.get("web.localhost", "/").text(),
        "<div id=\"root\">one</div>"
    );
    assert_eq!(production(&d)["version"], v1.as_str());
    let second_log = log(&d, &second);
    assert!(
        second_log.contains("[check root] failed: GET / answered 200 without")
            && second_log.contains("<p>broken</p>"),
        "{second_log}"
    );
    // The check's lines are its own job in the log.
    let name = format!("web#{}", second["number"]);
    let only = d
        .opus(&["logs", &name, "--job", "check root"])
        .ok()
        .to_owned();
    assert!(
        only.contains("failed: GET / answered 200") && !only.contains("stored version"),
        "{only}"
    );
    let blocked = events(&d)
        .into_iter()
        .find(|e| e["type"] == "deploy.blocked")
        .expect("a deploy.blocked event");
    assert_eq!(blocked["payload"]["check"], "root", "{blocked}");
    assert_eq!(
        blocked["payload"]["version"], second["version"],
        "{blocked}"
    );
    assert!(
        blocked["payload"]["output"]
            .as_str()
            .is_some_and(|o| o.contains("<p>broken</p>")),
        "{blocked}"
    );
}

#[test]
fn a_shell_check_gets_the_version_url_and_a_failure_with_no_deploy_yet_says_so() {
    let d = Daemon::start();
    let dir = project(
        &d,
        "checks:\n  smoke: { run: \"echo checking $OPUS_URL && curl -fsS $OPUS_URL | grep hello\" }\nenvironments:\n  production: { branch: main, auto_deploy: true }\n",
        "",
    );
    let failed = build(&d, &dir, "goodbye", "failed");
    assert_eq!(
        failed["reason"], "check smoke failed; production has no version yet",
        "{failed}"
    );
    assert_eq!(d.get("web.localhost", "/").status, 404);
    let ok = build(&d, &dir, "hello", "succeeded");
    let text = log(&d, &ok);
    // The version's own host (a branch build's version, `main-2`, is its own label).
    let version = ok["version"].as_str().expect("a version");
    assert!(
        text.contains(&format!(
            "[check smoke] checking http://{version}--v--web.localhost:"
        )),
        "{text}"
    );
    assert!(text.contains("[check smoke] hello"), "{text}");
    assert_eq!(d.get("web.localhost", "/").text(), "hello");
}

#[test]
fn a_hanging_check_is_ended_at_its_own_timeout() {
    let d = Daemon::start();
    let dir = project(
        &d,
        "checks:\n  hang: { run: \"sleep 600\", timeout: 1s }\nenvironments:\n  production: { branch: main, auto_deploy: true }\n",
        "",
    );
    let started = Instant::now();
    let failed = build(&d, &dir, "x", "failed");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        failed["reason"],
        "check hang failed; production has no version yet"
    );
    let text = log(&d, &failed);
    assert!(
        text.contains("[check hang] failed: timed out after 1s (checks.hang.timeout in opus.yml)"),
        "{text}"
    );
    // Nothing of the check is left running.
    let left = std::process::Command::new("pgrep")
        .args(["-f", "^sleep 600$"])
        .output()
        .expect("pgrep runs");
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[test]
fn a_deploy_that_fails_its_verification_is_rolled_back_and_pinned() {
    let d = Daemon::start();
    let dir = project(
        &d,
        &format!(
            "{ROOT_CHECK}environments:\n  production:\n    branch: main\n    auto_deploy: true\n    verify: {{ checks: [root], for: 60s, every: 200ms }}\n"
        ),
        "",
    );
    let first = build(&d, &dir, "<div id=\"root\">one</div>", "succeeded");
    let v1 = first["version"].as_str().expect("a version").to_owned();
    assert!(
        log(&d, &first).contains("deploys to production are verified by root for 1m"),
        "{}",
        log(&d, &first)
    );
    // The second version fails its checks before promotion: stored, not deployed.
    let second = build(&d, &dir, "<p>broken</p>", "failed");
    let v2 = second["version"].as_str().expect("a version").to_owned();
    assert_eq!(production(&d)["version"], v1.as_str());
    // Deployed by hand, it is verified, found failing, and rolled back.
    d.opus(&["deploy", "web", &v2]).ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    let rolled = loop {
        if let Some(e) = events(&d)
            .into_iter()
            .find(|e| e["type"] == "deploy.rolled_back")
        {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no deploy.rolled_back within 20s\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let p = &rolled["payload"];
    assert_eq!(p["env"], "production", "{rolled}");
    assert_eq!(p["from"], v2.as_str(), "{rolled}");
    assert_eq!(p["to"], v1.as_str(), "{rolled}");
    assert_eq!(p["check"], "root", "{rolled}");
    assert!(
        p["reason"]
            .as_str()
            .is_some_and(|r| r.contains("without \"<div id=\\\"root\\\">\"")),
        "{rolled}"
    );
    assert_eq!(
        d.get("web.localhost", "/").text(),
        "<div id=\"root\">one</div>"
    );
    let env = production(&d);
    assert_eq!(env["version"], v1.as_str(), "{env}");
    assert_eq!(env["pinned"], true, "{env}");
    let releases = d.opus(&["releases", "web", "-o", "json"]).ok().to_owned();
    assert!(releases.contains("verify: check root failed"), "{releases}");
}

#[test]
fn a_verify_naming_an_unknown_check_fails_the_build_with_the_line_and_field() {
    let d = Daemon::start();
    let dir = project(
        &d,
        "checks:\n  smoke: { run: \"true\" }\nenvironments:\n  production:\n    branch: main\n    verify: { checks: [smok] }\n",
        "",
    );
    let failed = build(&d, &dir, "x", "failed");
    let reason = failed["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("opus.yml")
            && reason.contains("environments.production.verify.checks")
            && reason.contains("\"smok\"")
            && reason.contains("line 8"),
        "{reason}"
    );
}

#[test]
fn an_automatic_deploy_is_verified_against_the_environment_and_rolled_back() {
    let d = Daemon::start();
    // The check passes on a version's own host and fails on the environment's.
    let dir = project(
        &d,
        "checks:\n  versioned: { run: \"echo $OPUS_URL | grep -- --v--\" }\nenvironments:\n  production:\n    branch: main\n    auto_deploy: true\n    verify: { checks: [versioned], for: 60s, every: 200ms }\n",
        "",
    );
    let first = build(&d, &dir, "one", "succeeded");
    let v1 = first["version"].as_str().expect("a version").to_owned();
    // The first deploy fails its verification too, but there is nothing to go back to.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d
        .log()
        .contains("verification failed and the rollback could not be made")
    {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(production(&d)["version"], v1.as_str());
    let second = build(&d, &dir, "two", "succeeded");
    let v2 = second["version"].as_str().expect("a version").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while production(&d)["version"] != v1.as_str() {
        assert!(
            Instant::now() < deadline,
            "production was not rolled back to {v1}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(production(&d)["pinned"], true);
    assert_eq!(d.get("web.localhost", "/").text(), "one");
    let rolled = events(&d)
        .into_iter()
        .find(|e| e["type"] == "deploy.rolled_back")
        .expect("a deploy.rolled_back event");
    assert_eq!(rolled["payload"]["from"], v2.as_str(), "{rolled}");
    assert_eq!(rolled["payload"]["check"], "versioned", "{rolled}");
    // Pinned: the next build of the branch does not deploy.
    let third = build(&d, &dir, "three", "succeeded");
    assert!(
        log(&d, &third).contains("pinned by a rollback"),
        "{}",
        log(&d, &third)
    );
    assert_eq!(d.get("web.localhost", "/").text(), "one");
}

/// The pids of processes whose command line is exactly `command`.
fn pids_of(command: &str) -> String {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("^{command}$")])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {secs}s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_verification_opusd_stops_or_is_killed_in_is_abandoned_and_leaves_nothing_running() {
    let mut d = Daemon::start();
    // Quick on a version's own host, hanging on the environment's.
    let dir = project(
        &d,
        "checks:\n  slow: { run: \"echo $OPUS_URL | grep -q -- --v-- || sleep 611\", timeout: 5m }\nenvironments:\n  production:\n    branch: main\n    auto_deploy: true\n    verify: { checks: [slow], for: 10m, every: 1s }\n",
        "",
    );
    let first = build(&d, &dir, "one", "succeeded");
    wait_for("the verification's check runs", 20, || {
        !pids_of("sleep 611").is_empty()
    });
    // Stopped: the window is abandoned, said so, and its check ended.
    assert_eq!(d.stop(), 0);
    assert!(
        d.log()
            .contains("verification abandoned: opusd is stopping"),
        "{}",
        d.log()
    );
    wait_for("the check ends with opusd", 10, || {
        pids_of("sleep 611").is_empty()
    });
    d.restart();
    assert_eq!(production(&d)["version"], first["version"]);
    // Killed: what the check left is ended when opusd starts again.
    build(&d, &dir, "two", "succeeded");
    wait_for("the second verification's check runs", 20, || {
        !pids_of("sleep 611").is_empty()
    });
    d.kill();
    assert!(
        !pids_of("sleep 611").is_empty(),
        "the check outlives a SIGKILL of opusd"
    );
    d.restart();
    wait_for("the restarted opusd ends the check", 20, || {
        pids_of("sleep 611").is_empty()
    });
    assert!(
        d.log()
            .contains("ended the processes of a verification opusd left running"),
        "{}",
        d.log()
    );
}

#[test]
fn a_failed_checks_output_keeps_the_secrets_masked_in_its_event() {
    let d = Daemon::start();
    let dir = project(
        &d,
        "checks:\n  leak: { run: \"echo token=$NPM_TOKEN; exit 1\" }\n",
        "",
    );
    d.opus(&["secret", "set", "web", "NPM_TOKEN", "--value", "hunter2"])
        .ok();
    let failed = build(&d, &dir, "x", "failed");
    assert_eq!(
        failed["reason"],
        "check leak failed; no environment moves to it"
    );
    let blocked = events(&d)
        .into_iter()
        .find(|e| e["type"] == "deploy.blocked")
        .expect("a deploy.blocked event");
    let output = blocked["payload"]["output"].as_str().expect("output");
    assert!(
        output.contains("token=***") && !output.contains("hunter2"),
        "{output}"
    );
    assert!(!log(&d, &failed).contains("hunter2"));
}
