//! Environment locks through the real binaries: `opus env lock` makes every deploy to the
//! environment fail with the lock's reason (by hand and automatic) until `opus env unlock`; a
//! rollback is still allowed, and says the environment is locked.

use opus_tests::{Daemon, site_with_opus_yml};

fn publish(d: &Daemon, version: &str) {
    let dir = d.root.path().join(format!("site-{version}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("index.html"), format!("version {version}")).expect("write");
    d.publish("web", version, &dir);
}

#[test]
fn a_locked_environment_refuses_deploys_by_hand_and_allows_a_rollback() {
    let d = Daemon::start();
    let src = d.root.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    d.opus(&["add", "web", src.to_str().expect("utf-8")]).ok();
    for v in ["1.0", "2.0", "3.0"] {
        publish(&d, v);
    }
    // Nothing deployed yet: nothing to lock.
    let err = d.opus(&["env", "lock", "web", "production", "--reason", "x"]);
    assert!(err.fails(1).contains("production"), "{}", err.stderr);
    d.opus(&["deploy", "web", "1.0"]).ok();
    d.opus(&["deploy", "web", "2.0"]).ok();
    let locked = d.opus(&[
        "env",
        "lock",
        "web",
        "production",
        "--reason",
        "freeze until Monday",
    ]);
    assert!(
        locked
            .ok()
            .contains("locked production of web (freeze until Monday)"),
        "{}",
        locked.stdout
    );
    let refused = d.opus(&["deploy", "web", "3.0"]);
    let err = refused.fails(1);
    assert!(
        err.contains("is locked: freeze until Monday")
            && err.contains("opus env unlock web production"),
        "{err}"
    );
    assert_eq!(d.get("web.localhost", "/").text(), "version 2.0");
    // A rollback goes through and says the environment stays locked.
    let rolled = d.opus(&["rollback", "web"]);
    rolled.ok();
    assert!(
        rolled
            .stderr
            .contains("production is locked (freeze until Monday): a rollback is allowed on a locked environment"),
        "{}",
        rolled.stderr
    );
    assert_eq!(d.get("web.localhost", "/").text(), "version 1.0");
    let listed = d.opus(&["env", "list", "web", "-o", "json"]).json();
    assert_eq!(listed[0]["lock_reason"], "freeze until Monday", "{listed}");
    // A lock needs a reason.
    let bare = d.opus(&["env", "lock", "web", "production", "--reason", " "]);
    assert!(bare.fails(1).contains("needs a reason"), "{}", bare.stderr);

    d.opus(&["env", "unlock", "web", "production"]).ok();
    d.opus(&["deploy", "web", "3.0"]).ok();
    assert_eq!(d.get("web.localhost", "/").text(), "version 3.0");
}

#[test]
fn a_locked_environment_refuses_automatic_deploys_with_the_reason() {
    let d = Daemon::start();
    let dir = site_with_opus_yml(
        d.root.path(),
        "web",
        "build:\n  steps: [\"mkdir -p dist && echo build-$OPUS_BUILD > dist/index.html\"]\nenvironments:\n  production: { branch: main, auto_deploy: true }\n",
    );
    d.opus(&["add", "web", dir.to_str().expect("utf-8")]).ok();
    let first = d.trigger(&["web"]);
    d.wait_for_state("web", first, "succeeded", 30);
    assert_eq!(d.get("web.localhost", "/").text(), "build-1\n");
    d.opus(&["env", "lock", "web", "--reason", "freeze until Monday"])
        .ok();
    let second = d.trigger(&["web"]);
    d.wait_for_state("web", second, "succeeded", 30);
    let log = d.opus(&["logs", &format!("web#{second}")]);
    assert!(
        log.ok()
            .contains("automatic deploy to production failed: environment \"production\" of project \"web\" is locked: freeze until Monday"),
        "{}",
        log.stdout
    );
    assert_eq!(d.get("web.localhost", "/").text(), "build-1\n");
}
