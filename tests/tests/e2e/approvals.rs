//! Approvals through the real binaries: `environments.production.approval: true` makes a green
//! build await approval (holding no slot) while staging deploys at once; `opus approve` deploys
//! it and records who approved; `opus reject` fails it and production stays; a build awaiting
//! approval still awaits after opusd is killed, and can be approved then; approving a build that
//! is not awaiting is FailedPrecondition naming its state.

use opus_tests::{Daemon, site_with_opus_yml};

const YML: &str = "build:\n  steps: [\"mkdir -p dist && echo build-$OPUS_BUILD > dist/index.html\"]\nenvironments:\n  production: { branch: main, auto_deploy: true, approval: true }\n  staging: { branch: main, auto_deploy: true }\n";

fn add_web(d: &Daemon) {
    let dir = site_with_opus_yml(d.root.path(), "web", YML);
    d.opus(&["add", "web", dir.to_str().expect("utf-8")]).ok();
}

/// The gRPC code and message of `ApproveBuild` for `web#number`.
fn approve_over_grpc(d: &Daemon, number: u64) -> (tonic::Code, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(d.server.clone())
            .expect("the API's URL")
            .connect()
            .await
            .expect("connect");
        let mut client =
            opus_core::proto::approval_service_client::ApprovalServiceClient::new(channel);
        match client
            .approve_build(opus_core::proto::ApproveBuildRequest {
                project: "web".into(),
                number,
                approver: "eve".into(),
            })
            .await
        {
            Ok(_) => (tonic::Code::Ok, String::new()),
            Err(s) => (s.code(), s.message().to_owned()),
        }
    })
}

#[test]
fn production_awaits_approval_staging_deploys_at_once_and_approve_or_reject_decides() {
    // One slot: a build awaiting approval must not hold it, or the second build never runs.
    let d = Daemon::start_with(&["--max-builds", "1"]);
    add_web(&d);
    let first = d.trigger(&["web"]);
    d.wait_for_state("web", first, "awaiting_approval", 30);
    assert_eq!(d.get("staging--web.localhost", "/").text(), "build-1\n");
    assert_eq!(
        d.get("web.localhost", "/").status,
        404,
        "production moved before the approval"
    );
    let log = d.opus(&["logs", "web#1"]);
    assert!(
        log.ok()
            .contains("awaiting approval for production: opus approve web#1"),
        "{}",
        log.stdout
    );
    let table = d.opus(&["builds", "web"]);
    assert!(table.ok().contains("awaiting approval"), "{}", table.stdout);

    // `--wait` returns once the build awaits approval, green, saying how to approve it.
    let waited = d.opus(&["trigger", "web", "--wait"]);
    waited.ok();
    assert!(
        waited.stderr.contains("opus approve web#2"),
        "{}",
        waited.stderr
    );
    let second = 2;
    d.wait_for_state("web", second, "awaiting_approval", 30);
    let cancel = d.opus(&["cancel", "web#2"]);
    assert!(
        cancel.fails(1).contains("`opus reject web#2` ends it"),
        "{}",
        cancel.stderr
    );
    assert_eq!(d.get("staging--web.localhost", "/").text(), "build-2\n");

    // Approve the first: production goes live with it, and its release names the approver.
    let approved = d.opus(&["approve", "web#1", "--as", "ann"]);
    assert!(
        approved.ok().contains("web#1 approved: "),
        "{}",
        approved.stdout
    );
    assert_eq!(d.get("web.localhost", "/").text(), "build-1\n");
    assert!(
        approved.stdout.contains("by ann (api)"),
        "{}",
        approved.stdout
    );
    let b = d.build("web", first);
    assert_eq!(b["state"], "succeeded", "{b}");
    assert_eq!(b["reason"], "approved by ann (api)", "{b}");
    let releases = d.opus(&["releases", "web", "-o", "json"]).json();
    assert_eq!(releases[0]["actor"], "ann (api)", "{releases}");
    let log = d.opus(&["logs", "web#1"]);
    assert!(
        log.ok().contains("approved by ann (api): "),
        "{}",
        log.stdout
    );

    // Approving it again: FailedPrecondition, naming its state.
    let again = d.opus(&["approve", "web#1"]);
    assert!(
        again
            .fails(1)
            .contains("web#1 is succeeded, not awaiting approval"),
        "{}",
        again.stderr
    );
    let (code, message) = approve_over_grpc(&d, first);
    assert_eq!(code, tonic::Code::FailedPrecondition, "{message}");

    // Reject the second: it fails, production stays on the first.
    let rejected = d.opus(&[
        "reject",
        "web#2",
        "--reason",
        "header broken",
        "--as",
        "bob",
    ]);
    assert!(
        rejected
            .ok()
            .contains("web#2 rejected by bob (api): header broken"),
        "{}",
        rejected.stdout
    );
    let b = d.build("web", second);
    assert_eq!(b["state"], "failed", "{b}");
    assert_eq!(d.get("web.localhost", "/").text(), "build-1\n");
    let log = d.opus(&["logs", "web#2"]);
    assert!(log.ok().contains("production stays on "), "{}", log.stdout);
    let events = d.opus(&["events", "-o", "json"]).ok().to_owned();
    for kind in [
        "build.awaiting_approval",
        "build.approved",
        "build.rejected",
    ] {
        assert!(events.contains(kind), "{kind} missing: {events}");
    }
}

#[test]
fn a_build_awaiting_approval_still_awaits_after_opusd_is_killed_and_can_be_approved() {
    let mut d = Daemon::start();
    add_web(&d);
    let id = d.trigger(&["web"]);
    d.wait_for_state("web", id, "awaiting_approval", 30);
    d.wait_until_on_disk("\"state\":\"awaiting_approval\"", 10);
    d.kill();
    d.restart();
    // Start-up recovery has run once the API answers: it must have left the build alone.
    let b = d.build("web", id);
    assert_eq!(b["state"], "awaiting approval", "{b}");
    d.opus(&["approve", "web#1"]).ok();
    d.wait_for_state("web", id, "succeeded", 10);
    assert_eq!(d.get("web.localhost", "/").text(), "build-1\n");
}

#[test]
fn an_approval_that_cannot_deploy_leaves_the_build_awaiting() {
    let d = Daemon::start();
    add_web(&d);
    let first = d.trigger(&["web"]);
    d.wait_for_state("web", first, "awaiting_approval", 30);
    d.opus(&["approve", "web#1"]).ok();
    let second = d.trigger(&["web"]);
    d.wait_for_state("web", second, "awaiting_approval", 30);
    d.opus(&["env", "lock", "web", "--reason", "freeze until Monday"])
        .ok();
    let refused = d.opus(&["approve", "web#2"]);
    let err = refused.fails(1);
    assert!(
        err.contains("is locked: freeze until Monday")
            && err.contains("still awaits approval for production"),
        "{err}"
    );
    d.wait_for_state("web", second, "awaiting_approval", 1);
    d.opus(&["env", "unlock", "web"]).ok();
    d.opus(&["approve", "web#2"]).ok();
    assert_eq!(d.get("web.localhost", "/").text(), "build-2\n");
}
