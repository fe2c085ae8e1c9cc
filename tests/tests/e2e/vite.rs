//! The real thing: a Vite app from a tagged git repository, `npm ci` and `npm run build` with
//! packages from the npm registry, no opus.yml (the package.json recipe).
//!
//! It needs the npm registry. When npm cannot reach it, the test fails at once with a message
//! naming the registry (rather than passing without having run, or failing later in `npm ci`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opus_tests::{Daemon, GitRepo};

fn copy_fixture(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("fixture") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name == "node_modules" || name == "dist" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().expect("type").is_dir() {
            copy_fixture(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Panics, naming the registry, unless `npm ping` reaches it within 60 s.
fn require_the_npm_registry() {
    let registry = Command::new("npm")
        .args(["config", "get", "registry"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| panic!("this test needs npm, which cannot run here: {e}"));
    let mut ping = Command::new("npm")
        // One try with a 20 s timeout: npm would otherwise retry a refused connection for a
        // minute and more.
        .args(["ping", "--fetch-retries=0", "--fetch-timeout=20000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("npm ping starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = ping.try_wait().expect("npm ping runs") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = ping.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let reached = status.is_some_and(|s| s.success());
    if !reached {
        let mut why = String::new();
        if let Some(mut err) = ping.stderr.take() {
            use std::io::Read;
            let _ = err.read_to_string(&mut why);
        }
        let _ = ping.wait();
        panic!(
            "npm could not reach the registry {registry} (`npm ping` {}): this test builds a Vite \
             app with packages from it; give the machine access to the registry (or set one with \
             `npm config set registry`)\n{why}",
            if status.is_none() {
                "took over 60 s"
            } else {
                "failed"
            }
        );
    }
}

#[test]
fn vite_app_from_a_tagged_git_repository() {
    require_the_npm_registry();
    let d = Daemon::start();
    let repo = GitRepo::init(&d.root.path().join("vite-app"));
    copy_fixture(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vite-app"),
        &repo.dir,
    );
    let commit = repo.commit("a vite app");
    repo.git(&["tag", "1.0.0"]);
    d.opus(&["add", "app", &repo.url()]).ok();

    let out = d.opus(&["trigger", "app", "1.0.0", "--wait"]);
    let log = out.ok();
    assert!(
        log.contains("no opus.yml: package.json has a build script"),
        "{log}"
    );
    assert!(
        log.contains("$ npm ci") && log.contains("$ npm run build"),
        "{log}"
    );
    assert!(log.contains("vite v7"), "vite ran: {log}");
    assert!(
        log.contains("dist: 3 file(s)"),
        "index.html, one JS and one CSS file: {log}"
    );
    let b = d.build("app", 1);
    assert_eq!(b["state"], "succeeded");
    assert_eq!(b["version"], "1.0.0");
    assert_eq!(b["commit"], commit);
}
