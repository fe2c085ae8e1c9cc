//! Builds through the real binaries: triggers, versions, opus.yml errors, failures, timeouts,
//! cancel, concurrency, restart safety, caches, secrets.

use std::time::{Duration, Instant};

use opus_tests::{Daemon, GitRepo, site_with_opus_yml};

const WRITE_DIST: &str = "mkdir -p dist && echo '<h1>hello</h1>' > dist/index.html";

/// The start of build `id`'s record (of project `web`) in `state`, as the store writes it.
fn on_disk(id: u64, state: &str) -> String {
    format!("{{\"id\":{id},\"project\":\"web\",\"state\":\"{state}\"")
}

fn add_site(d: &Daemon, name: &str, opus_yml: &str) -> std::path::PathBuf {
    let dir = site_with_opus_yml(d.root.path(), name, opus_yml);
    d.opus(&["add", name, dir.to_str().expect("utf-8")]).ok();
    dir
}

#[test]
fn a_local_build_runs_its_steps_with_the_environment_and_masks_secrets() {
    let d = Daemon::start();
    add_site(
        &d,
        "web",
        &format!(
            "build:\n  env: {{ NODE_ENV: production }}\n  steps:\n    - echo \"ci=$CI project=$OPUS_PROJECT build=$OPUS_BUILD version=$OPUS_VERSION ref=$OPUS_REF env=$NODE_ENV\"\n    - echo \"token=$NPM_TOKEN\"\n    - {WRITE_DIST}\n"
        ),
    );
    d.opus(&["secret", "set", "web", "NPM_TOKEN", "--value", "hunter2"])
        .ok();
    let out = d.opus(&["trigger", "web", "--wait"]);
    let text = out.ok();
    assert!(
        text.starts_with("web#1\n"),
        "prints the build id first: {text}"
    );
    assert!(
        text.contains("ci=true project=web build=1 version=main-1 ref=main env=production"),
        "{text}"
    );
    assert!(
        text.contains("token=***") && !text.contains("hunter2"),
        "secret masked: {text}"
    );
    assert!(
        out.stderr.contains("web#1 succeeded: version main-1"),
        "{}",
        out.stderr
    );

    let b = d.build("web", 1);
    assert_eq!(b["state"], "succeeded");
    assert_eq!(b["version"], "main-1");
    // The stored log masks too.
    let log = d.opus(&["logs", "web#1"]);
    assert!(log.ok().contains("token=***") && !log.stdout.contains("hunter2"));
    // `opus list` shows the last build.
    let list = d.opus(&["list"]);
    assert!(
        list.ok().contains("web#1") && list.stdout.contains("succeeded"),
        "{}",
        list.stdout
    );
    let json = d.opus(&["list", "-o", "json"]).json();
    assert_eq!(json[0]["last_build"]["state"], "succeeded");
}

#[test]
fn each_project_numbers_its_builds_from_one() {
    let d = Daemon::start();
    let yml = format!(
        "build:\n  steps: [\"echo project=$OPUS_PROJECT build=$OPUS_BUILD\", \"{WRITE_DIST}\"]\n"
    );
    add_site(&d, "web", &yml);
    add_site(&d, "site", &yml);
    for (project, name) in [("web", "web#1"), ("web", "web#2"), ("site", "site#1")] {
        let out = d.opus(&["trigger", project, "--wait"]);
        assert!(out.ok().starts_with(&format!("{name}\n")), "{}", out.stdout);
        assert!(
            out.stderr.contains(&format!("{name} succeeded")),
            "{}",
            out.stderr
        );
    }
    // site#1 is its own build, not web#1: its log, its number in the steps and its version.
    let site = d.opus(&["logs", "site#1"]).ok().to_owned();
    assert!(site.contains("project=site build=1"), "{site}");
    let web = d.opus(&["logs", "web#1"]).ok().to_owned();
    assert!(web.contains("project=web build=1"), "{web}");
    assert_eq!(d.build("site", 1)["version"], "main-1");
    assert_eq!(d.build("web", 2)["version"], "main-2");
    let listed = d.opus(&["builds"]).ok().to_owned();
    for name in ["web#2", "web#1", "site#1"] {
        assert!(listed.contains(name), "{name}: {listed}");
    }
    let versions = d.opus(&["artifacts", "site"]).ok().to_owned();
    assert!(versions.contains("site#1"), "{versions}");
    let err = d.opus(&["cancel", "site#1"]).fails(1).to_owned();
    assert!(err.contains("site#1 has already succeeded"), "{err}");
    let err = d.opus(&["logs", "site#2"]).fails(1).to_owned();
    assert!(err.contains("no build site#2"), "{err}");
}

#[test]
fn multi_line_secrets_and_base64_forms_are_masked_and_short_secrets_refused() {
    let d = Daemon::start();
    add_site(
        &d,
        "web",
        &format!(
            "build:\n  steps:\n    - printf '%s\\n' \"$KEY\"\n    - printf '%s' \"$TOKEN\" | base64\n    - printf '%s' \"$TOKEN\" | base64 | tr '+/' '-_' | tr -d '='\n    - {WRITE_DIST}\n"
        ),
    );
    d.opus_with_stdin(
        &["secret", "set", "web", "KEY"],
        "-----BEGIN KEY-----\nfirst-secret-line\nsecond-secret-line\n-----END KEY-----\n",
    )
    .ok();
    // Base64 "aHVudGVyMj8+eA==": a '+' and padding, so the URL-safe unpadded form differs.
    d.opus(&["secret", "set", "web", "TOKEN", "--value", "hunter2?>x"])
        .ok();
    let out = d.opus(&["trigger", "web", "--wait"]);
    let text = out.ok();
    for clear in [
        "BEGIN KEY",
        "first-secret-line",
        "second-secret-line",
        "END KEY",
        "aHVudGVyMj8+eA==",
        "aHVudGVyMj8-eA",
    ] {
        assert!(!text.contains(clear), "{clear} printed in clear:\n{text}");
    }
    assert!(text.matches("***").count() >= 6, "{text}");
    let log = d.opus(&["logs", "web#1"]);
    assert!(!log.ok().contains("second-secret-line"), "{}", log.stdout);

    let err = d
        .opus(&["secret", "set", "web", "PIN", "--value", "abc"])
        .fails(1)
        .to_owned();
    assert!(
        err.contains("at least 4 characters") && err.contains("mask"),
        "{err}"
    );
    let names = d.opus(&["secret", "list", "web", "-o", "json"]).json();
    assert_eq!(names, serde_json::json!(["KEY", "TOKEN"]));
}

#[test]
fn git_sources_build_tags_branches_and_commits() {
    let d = Daemon::start();
    let repo = GitRepo::init(&d.root.path().join("repo"));
    repo.write(
        "opus.yml",
        &format!("build:\n  steps: [\"{WRITE_DIST}\", \"git log -1 --format=%H\"]\n"),
    );
    let first = repo.commit("first");
    repo.git(&["tag", "1.0.3"]);
    repo.write("README.md", "second\n");
    let second = repo.commit("second");
    d.opus(&["add", "web", &repo.url()]).ok();

    let tag = d.trigger(&["web", "1.0.3"]);
    let b = d.wait_for_state("web", tag, "succeeded", 60);
    assert_eq!(b["version"], "1.0.3");
    assert_eq!(b["commit"], first);

    let latest = d.trigger(&["web"]);
    let b = d.wait_for_state("web", latest, "succeeded", 60);
    assert_eq!(b["commit"], second);
    assert_eq!(b["version"], format!("main-{latest}-{}", &second[..7]));
    assert_eq!(b["branch"], "main");

    let by_commit = d.trigger(&["web", &first[..10], "--version", "hotfix"]);
    let b = d.wait_for_state("web", by_commit, "succeeded", 60);
    assert_eq!(b["version"], "hotfix");
    assert_eq!(b["commit"], first);

    // A new commit is fetched by the next build (the mirror is updated, not re-cloned).
    repo.write("README.md", "third\n");
    let third = repo.commit("third");
    let next = d.trigger(&["web", "main"]);
    assert_eq!(
        d.wait_for_state("web", next, "succeeded", 60)["commit"],
        third
    );
    assert!(d.data_dir().join("git").join("web.git").exists());
    // Workspaces are removed after each build.
    let left: Vec<_> = std::fs::read_dir(d.data_dir().join("work"))
        .expect("work dir")
        .collect();
    assert!(left.is_empty(), "workspaces left: {left:?}");
}

#[test]
fn unknown_projects_and_refs_are_errors_that_say_so() {
    let d = Daemon::start();
    let err = d.opus(&["trigger", "nope"]).fails(1).to_owned();
    assert!(err.contains("no project named \"nope\""), "{err}");

    let repo = GitRepo::init(&d.root.path().join("repo"));
    repo.write(
        "opus.yml",
        &format!("build:\n  steps: [\"{WRITE_DIST}\"]\n"),
    );
    repo.commit("first");
    d.opus(&["add", "web", &repo.url()]).ok();
    let out = d.opus(&["trigger", "web", "no-such-branch", "--wait"]);
    let err = out.fails(1);
    assert!(
        err.contains("\"no-such-branch\" is not a branch, tag or commit"),
        "{err}"
    );

    let err = d
        .opus(&["trigger", "web", "--version", "archive"])
        .fails(1)
        .to_owned();
    assert!(err.contains("reserved"), "{err}");
    let err = d
        .opus(&["-trigger", "web", "latest", "s3-elsewhere"])
        .fails(1)
        .to_owned();
    assert!(
        err.contains("unknown artifact store \"s3-elsewhere\""),
        "{err}"
    );
    // The original form with the default store works.
    let out = d.opus(&["-trigger", "web", "latest", "default"]);
    assert!(out.ok().starts_with("web#"), "{}", out.stdout);

    let site = add_site(
        &d,
        "local",
        &format!("build:\n  steps: [\"{WRITE_DIST}\"]\n"),
    );
    let out = d.opus(&["trigger", "local", "v2", "--wait"]);
    assert!(
        out.fails(1)
            .contains("is a plain folder, not a git repository"),
        "{}",
        out.stderr
    );
    drop(site);
}

#[test]
fn malformed_opus_yml_names_line_and_field() {
    let d = Daemon::start();
    add_site(&d, "syntax", "build:\n  steps: [npm ci\n  output: dist\n");
    let out = d.opus(&["trigger", "syntax", "--wait"]);
    let err = out.fails(1).to_owned();
    assert!(err.contains("opus.yml") && err.contains("line"), "{err}");

    add_site(&d, "types", "build:\n  steps: npm run build\n");
    let out = d.opus(&["trigger", "types", "--wait"]);
    let err = out.fails(1).to_owned();
    assert!(
        err.contains("build.steps") && err.contains("line 2"),
        "{err}"
    );

    let empty = d.root.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    d.opus(&["add", "empty", empty.to_str().expect("utf-8")])
        .ok();
    let out = d.opus(&["trigger", "empty", "--wait"]);
    assert!(out.fails(1).contains("add an opus.yml"), "{}", out.stderr);
}

#[test]
fn a_failing_step_stops_the_build_and_the_log_shows_the_exit_code() {
    let d = Daemon::start();
    add_site(
        &d,
        "web",
        "build:\n  steps: [\"echo one\", \"exit 3\", \"echo never-runs\"]\n",
    );
    let out = d.opus(&["trigger", "web", "--wait"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("one") && !out.stdout.contains("never-runs"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("step 2 `exit 3` exited with code 3"),
        "{}",
        out.stdout
    );
    let b = d.build("web", 1);
    assert_eq!(b["state"], "failed");
    assert_eq!(b["reason"], "step 2 `exit 3` exited with code 3");

    add_site(
        &d,
        "nodist",
        "build:\n  steps: [\"true\"]\n  output: public\n",
    );
    let out = d.opus(&["trigger", "nodist", "--wait"]);
    assert!(
        out.fails(1)
            .contains("output folder \"public\" does not exist"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_step_past_its_timeout_is_killed_with_its_children() {
    let d = Daemon::start();
    let pidfile = d.root.path().join("child.pid");
    add_site(
        &d,
        "slow",
        &format!(
            "build:\n  timeout: 1s\n  steps: [\"sleep 300 & echo $! > {}; wait\"]\n",
            pidfile.display()
        ),
    );
    let started = Instant::now();
    let out = d.opus(&["trigger", "slow", "--wait"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(20));
    let b = d.build("slow", 1);
    assert_eq!(b["state"], "failed");
    assert!(
        b["reason"]
            .as_str()
            .is_some_and(|r| r.contains("timed out after 1s")),
        "{b}"
    );
    let pid = std::fs::read_to_string(&pidfile)
        .expect("pid written")
        .trim()
        .to_owned();
    assert!(
        !process_alive(&pid),
        "the step's child {pid} outlived the timeout"
    );
}

fn process_alive(pid: &str) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn cancel_a_running_and_a_queued_build() {
    let d = Daemon::start_with(&["--max-builds", "1"]);
    let pidfile = d.root.path().join("child.pid");
    add_site(
        &d,
        "web",
        &format!(
            "build:\n  steps: [\"if [ \\\"$OPUS_VERSION\\\" = slow ]; then sleep 300 & echo $! > {}; wait; fi\", \"{WRITE_DIST}\"]\n",
            pidfile.display()
        ),
    );
    let running = d.trigger(&["web", "--version", "slow"]);
    d.wait_for_state("web", running, "running", 30);
    let queued = d.trigger(&["web", "--version", "later"]);
    let b = d.build("web", queued);
    assert_eq!(b["state"], "queued");
    assert!(
        b["reason"]
            .as_str()
            .is_some_and(|r| r.contains("1st, waiting for a free slot (1/1 running)")),
        "{b}"
    );

    d.opus(&["cancel", &format!("web#{queued}")]).ok();
    assert_eq!(d.build("web", queued)["state"], "cancelled");

    d.opus(&["cancel", &format!("web#{running}")]).ok();
    let b = d.wait_for_state("web", running, "cancelled", 30);
    assert!(
        b["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cancelled")),
        "{b}"
    );
    let pid = std::fs::read_to_string(&pidfile)
        .expect("pid written")
        .trim()
        .to_owned();
    assert!(
        !process_alive(&pid),
        "the cancelled step's child {pid} is still running"
    );

    let err = d
        .opus(&["cancel", &format!("web#{running}")])
        .fails(1)
        .to_owned();
    assert!(err.contains("already cancelled"), "{err}");
    let err = d.opus(&["cancel", "api#1"]).fails(1).to_owned();
    assert!(err.contains("no build api#1"), "{err}");
    let err = d
        .opus(&["cancel", &running.to_string()])
        .fails(1)
        .to_owned();
    assert!(err.contains("write its project and number"), "{err}");
}

#[test]
fn trigger_wait_on_a_queued_build_shows_its_place_then_its_log() {
    let d = Daemon::start_with(&["--max-builds", "1"]);
    add_site(
        &d,
        "web",
        &format!(
            "build:\n  steps: [\"case $OPUS_VERSION in slow*) sleep 2;; esac\", \"echo built $OPUS_VERSION\", \"{WRITE_DIST}\"]\n"
        ),
    );
    let slow = d.trigger(&["web", "--version", "slow1"]);
    d.wait_for_state("web", slow, "running", 30);
    let out = d.opus(&["trigger", "web", "--version", "fast", "--wait"]);
    let text = out.ok();
    assert!(
        out.stderr
            .contains("queued: 1st, waiting for a free slot (1/1 running)"),
        "{}",
        out.stderr
    );
    assert!(
        text.contains("built fast") && text.contains("==> build succeeded"),
        "{text}"
    );
    assert!(
        out.stderr.contains("succeeded: version fast"),
        "{}",
        out.stderr
    );
    assert_eq!(d.build("web", slow)["state"], "succeeded");

    // Cancelled while it waits: --wait ends with the build, and fails.
    let slow = d.trigger(&["web", "--version", "slow2"]);
    d.wait_for_state("web", slow, "running", 30);
    let waiter = opus_tests::opus_command(&d.server, d.token.as_deref())
        .args(["trigger", "web", "--version", "later", "--wait"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("opus starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let queued = loop {
        let later = d
            .builds("web")
            .into_iter()
            .find(|b| b["version"] == "later");
        if let Some(b) = later {
            break b["number"].as_u64().expect("number");
        }
        assert!(Instant::now() < deadline, "the build was not queued");
        std::thread::sleep(Duration::from_millis(50));
    };
    d.opus(&["cancel", &format!("web#{queued}")]).ok();
    let out = waiter.wait_with_output().expect("opus ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cancelled by a user"), "{stderr}");
}

#[test]
fn a_newer_trigger_of_the_same_branch_supersedes_the_queued_one() {
    let d = Daemon::start_with(&["--max-builds", "1"]);
    add_site(
        &d,
        "web",
        &format!("build:\n  steps: [\"sleep 1\", \"{WRITE_DIST}\"]\n"),
    );
    let first = d.trigger(&["web"]);
    d.wait_for_state("web", first, "running", 30);
    let second = d.trigger(&["web"]);
    let third = d.trigger(&["web"]);
    let b = d.build("web", second);
    assert_eq!(b["state"], "cancelled");
    assert_eq!(b["reason"], format!("superseded by web#{third}"));
    d.wait_for_state("web", third, "succeeded", 60);
    assert_eq!(d.build("web", first)["state"], "succeeded");
}

#[test]
fn eight_builds_never_run_more_than_two_at_once() {
    let d = Daemon::start_with(&["--max-builds", "2"]);
    let shared = d.root.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    let step = format!(
        "touch {s}/running.$OPUS_BUILD && ls {s} | grep -c '^running' >> {s}/counts.$OPUS_BUILD && sleep 0.3 && rm {s}/running.$OPUS_BUILD",
        s = shared.display()
    );
    add_site(
        &d,
        "web",
        &format!("build:\n  steps: [\"{step}\", \"{WRITE_DIST}\"]\n"),
    );
    let ids: Vec<u64> = (0..8)
        .map(|i| d.trigger(&["web", "--version", &format!("v{i}")]))
        .collect();
    for id in &ids {
        d.wait_for_state("web", *id, "succeeded", 60);
    }
    let mut max = 0;
    for entry in std::fs::read_dir(&shared).expect("read") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        for n in text.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            max = max.max(n);
        }
    }
    assert!((1..=2).contains(&max), "saw {max} builds at once");
}

#[test]
fn sigkill_during_a_build_then_restart_fails_it_and_runs_the_queued_one() {
    let mut d = Daemon::start_with(&["--max-builds", "1"]);
    add_site(
        &d,
        "web",
        &format!(
            "build:\n  steps: [\"if [ \\\"$OPUS_VERSION\\\" = slow ]; then sleep 300; fi\", \"{WRITE_DIST}\"]\n"
        ),
    );
    let running = d.trigger(&["web", "--version", "slow"]);
    d.wait_for_state("web", running, "running", 30);
    let queued = d.trigger(&["web", "--version", "next"]);
    // The crash comes once both builds' records are on disk.
    d.wait_until_on_disk(&on_disk(running, "running"), 30);
    d.wait_until_on_disk(&on_disk(queued, "queued"), 30);
    d.kill();
    d.restart();
    let b = d.wait_for_state("web", running, "failed", 30);
    assert_eq!(b["reason"], "opusd restarted");
    d.wait_for_state("web", queued, "succeeded", 60);
}

#[test]
fn cache_folders_are_kept_between_builds() {
    let d = Daemon::start();
    add_site(
        &d,
        "web",
        &format!(
            "build:\n  cache: [node_modules]\n  steps: [\"if [ -f node_modules/marker ]; then echo cache-hit; else echo cache-miss; fi\", \"mkdir -p node_modules && touch node_modules/marker\", \"{WRITE_DIST}\"]\n"
        ),
    );
    let first = d.opus(&["trigger", "web", "--wait"]);
    assert!(first.ok().contains("cache-miss"), "{}", first.stdout);
    let second = d.opus(&["trigger", "web", "--wait"]);
    assert!(second.ok().contains("cache-hit"), "{}", second.stdout);
}

#[test]
fn logs_follow_a_running_build_to_its_end() {
    let d = Daemon::start();
    add_site(
        &d,
        "web",
        &format!(
            "build:\n  steps: [\"echo start\", \"sleep 1\", \"echo finish\", \"{WRITE_DIST}\"]\n"
        ),
    );
    let id = d.trigger(&["web"]);
    let out = d.opus(&["logs", &format!("web#{id}"), "-f"]);
    let text = out.ok();
    assert!(
        text.contains("start") && text.contains("finish") && text.contains("build succeeded"),
        "{text}"
    );
    let err = d.opus(&["logs", "web#99"]).fails(1).to_owned();
    assert!(err.contains("no build web#99"), "{err}");
    for bad in ["web#x", "99", "#1"] {
        let err = d.opus(&["logs", bad]).fails(1).to_owned();
        assert!(
            err.contains("write its project and number, such as web#12"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn an_output_folder_that_is_a_link_out_of_the_workspace_is_refused() {
    let d = Daemon::start();
    let outside = d.root.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("index.html"), "<h1>not the build's</h1>").expect("write");
    add_site(
        &d,
        "web",
        &format!("build:\n  steps: [\"ln -s {} dist\"]\n", outside.display()),
    );
    let id = d.trigger(&["web"]);
    let b = d.wait_for_state("web", id, "failed", 60);
    let reason = b["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("the output folder \"dist\" leads outside the workspace"),
        "{b}"
    );
    let log = d.opus(&["logs", &format!("web#{id}")]);
    assert!(
        log.ok().contains("leads outside the workspace"),
        "{}",
        log.stdout
    );
    let versions = d.opus(&["artifacts", "web", "-o", "json"]).json();
    assert_eq!(versions.as_array().map(Vec::len), Some(0), "{versions}");
}

#[test]
fn a_build_whose_version_was_committed_before_opusd_died_is_succeeded_on_restart() {
    let mut d = Daemon::start();
    add_site(&d, "web", &format!("build:\n  steps: [\"{WRITE_DIST}\"]\n"));
    let id = d.trigger(&["web"]);
    d.wait_for_state("web", id, "succeeded", 60);
    assert_eq!(d.stop(), 0);
    // The state a kill between the version's commit and the build's outcome leaves.
    {
        let store =
            opus_core::store::MetaStore::open(&d.data_dir().join("meta")).expect("open the store");
        store
            .update_build(id, |b| {
                b.state = opus_core::model::BuildState::Running;
                b.reason.clear();
                b.finished_at = None;
            })
            .expect("back to running");
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(store.flush())
            .expect("flush");
    }
    d.restart();
    let b = d.wait_for_state("web", id, "succeeded", 30);
    assert_eq!(
        b["reason"],
        "opusd restarted after storing the version (automatic deploys did not run)"
    );
    let versions = d.opus(&["artifacts", "web", "-o", "json"]).json();
    assert_eq!(versions.as_array().map(Vec::len), Some(1), "{versions}");
}

#[test]
fn removing_a_project_cancels_its_running_build_first() {
    let d = Daemon::start();
    add_site(
        &d,
        "web",
        &format!("build:\n  steps: [\"sleep 300\", \"{WRITE_DIST}\"]\n"),
    );
    let id = d.trigger(&["web"]);
    d.wait_for_state("web", id, "running", 30);
    let started = Instant::now();
    d.opus(&["remove", "web", "--yes"]).ok();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "remove waited for the build"
    );
    // Ended before the project went: recorded, not left running.
    let all = d.opus(&["builds", "-o", "json", "--limit", "500"]).json();
    let build = all
        .as_array()
        .and_then(|a| a.iter().find(|b| b["number"] == id).cloned())
        .unwrap_or_default();
    assert_eq!(build["state"], "cancelled", "{all}");
    assert_eq!(
        d.opus(&["status", "-o", "json"]).json()["running_builds"],
        0
    );
}

/// The seconds of `==> step N finished in X s` in a printed log.
fn step_seconds(log: &str, step: u32) -> f64 {
    let prefix = format!("==> step {step} finished in ");
    let line = log
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no duration line of step {step} in:\n{log}"));
    line[prefix.len()..]
        .trim_end_matches(" s")
        .parse()
        .unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn each_step_logs_its_duration_and_builds_shows_them() {
    let d = Daemon::start();
    add_site(
        &d,
        "web",
        &format!("build:\n  steps:\n    - sleep 0.4\n    - {WRITE_DIST}\n"),
    );
    let out = d.opus(&["trigger", "web", "--wait"]);
    let log = out.ok().to_owned();
    assert!(step_seconds(&log, 1) >= 0.4, "{log}");
    assert!(step_seconds(&log, 2) < 5.0, "{log}");
    // Each duration line follows its step's output, under opusd's own `==>` prefix.
    let start = log.find("==> $ sleep 0.4").expect("step 1 starts");
    let end = log.find("==> step 1 finished in").expect("step 1 ends");
    assert!(
        start < end && end < log.find("==> $ mkdir").expect("step 2"),
        "{log}"
    );
    // Not a terminal: no status line on stderr, only the outcome.
    assert_eq!(out.stderr, "web#1 succeeded: version main-1\n");
    // The stored log has them too.
    let stored = d.opus(&["logs", "web#1"]).ok().to_owned();
    assert!(step_seconds(&stored, 1) >= 0.4, "{stored}");

    // `opus builds web#1`: the build and a table of its steps with their durations.
    let table = d.opus(&["builds", "web#1"]).ok().to_owned();
    assert!(
        table.starts_with("build    web#1\nstate    succeeded\n"),
        "{table}"
    );
    let step_row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row {name}: {table}"))
            .to_owned()
    };
    assert!(table.contains("\nSTEP    COMMAND"), "{table}");
    let row = step_row("step 1");
    assert!(row.contains("sleep 0.4"), "{row}");
    let took: f64 = row
        .rsplit(' ')
        .next()
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {row:?}"));
    assert!(took >= 0.4, "{row}");
    assert!(step_row("step 2").contains("mkdir -p dist"), "{table}");
    let json = d.opus(&["builds", "web#1", "-o", "json"]).json();
    assert_eq!(json["number"], 1);
    assert_eq!(json["state"], "succeeded");
    assert_eq!(json["steps"][0]["step"], "step 1");
    assert_eq!(json["steps"][0]["command"], "sleep 0.4");
    assert!(
        json["steps"][0]["seconds"]
            .as_f64()
            .is_some_and(|s| s >= 0.4),
        "{json}"
    );
    assert_eq!(json["steps"][1]["command"], WRITE_DIST);
    // Each project numbers its own builds: api has no #1.
    let err = d.opus(&["builds", "api#1"]).fails(1).to_owned();
    assert!(err.contains("no build api#1"), "{err}");

    // A failed step has its duration too; a running one shows how long it has run so far.
    add_site(&d, "slow", "build:\n  steps: [\"exit 3\", \"sleep 30\"]\n");
    let failed = d.opus(&["trigger", "slow", "--wait"]);
    assert!(step_seconds(&failed.stdout, 1) < 5.0, "{}", failed.stdout);
    add_site(&d, "slower", "build:\n  steps: [\"true\", \"sleep 30\"]\n");
    let id = d.trigger(&["slower"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let running = loop {
        let table = d.opus(&["builds", &format!("slower#{id}")]).ok().to_owned();
        // Step 1 shows running too for the moment between its start and its duration line.
        if table
            .lines()
            .any(|l| l.starts_with("step 2") && l.contains("running for"))
        {
            break table;
        }
        assert!(
            Instant::now() < deadline,
            "step 2 never shown running: {table}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let row = running
        .lines()
        .find(|l| l.starts_with("step 2"))
        .unwrap_or_default();
    assert!(
        row.contains("sleep 30") && row.contains("running for"),
        "{running}"
    );
    assert!(
        !running
            .lines()
            .any(|l| l.starts_with("step 1") && l.contains("running")),
        "{running}"
    );
    d.opus(&["cancel", &format!("slower#{id}")]).ok();
    d.wait_for_state("slower", id, "cancelled", 20);
}
