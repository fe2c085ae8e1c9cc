//! The real thing: a Vite app from a tagged git repository, `npm ci` and `npm run build` with
//! packages from the npm registry, no opus.yml (the package.json recipe).

use std::path::Path;

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

#[test]
fn vite_app_from_a_tagged_git_repository() {
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
