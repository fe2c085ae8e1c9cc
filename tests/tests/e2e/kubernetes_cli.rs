//! The real `opus` binary's `install` and `uninstall`, with `KUBECONFIG` pointing at an HTTP fake
//! of the Kubernetes API server ([`FakeApiServer`]); no real cluster runs on the test machines.

use std::path::{Path, PathBuf};
use std::process::Command;

use opus_tests::fake_apiserver::{Behaviour, FakeApiServer, Recorded};
use opus_tests::{Run, bin, run_with_stdin};

const STS: &str = "/apis/apps/v1/namespaces/opus/statefulsets/opusd";

/// `opus <args>` with the given kubeconfig and an empty HOME, so nothing of the machine's own
/// Kubernetes set-up leaks in.
fn opus(kubeconfig: Option<&Path>, home: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(bin("opus"));
    cmd.args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("OPUS_SERVER")
        .env_remove("OPUS_TOKEN");
    if let Some(path) = kubeconfig {
        cmd.env("KUBECONFIG", path);
    }
    run_with_stdin(cmd, "")
}

fn deploy_yaml() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/opus.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn opus_install_dry_run_prints_deploy_kubernetes_opus_yaml_without_a_cluster() {
    let home = tempfile::tempdir().expect("temp dir");
    let run = opus(None, home.path(), &["install", "--dry-run"]);
    assert_eq!(
        run.ok(),
        deploy_yaml(),
        "regenerate with: cargo run -p opus-cli -- install --dry-run > deploy/kubernetes/opus.yaml"
    );
    let custom = opus(
        None,
        home.path(),
        &[
            "install",
            "--dry-run",
            "--namespace",
            "ci",
            "--storage",
            "50Gi",
        ],
    );
    let yaml = custom.ok();
    assert!(
        yaml.contains("  namespace: ci\n") && yaml.contains("storage: 50Gi"),
        "{yaml}"
    );
}

#[test]
fn fake_apiserver_opus_install_twice_changes_nothing_and_keeps_the_token() {
    let fake = FakeApiServer::start();
    let home = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(home.path());

    let first = opus(
        Some(&kubeconfig),
        home.path(),
        &["install", "--output", "json"],
    );
    let first_json = first.json();
    assert!(
        first.stderr.contains("applied StatefulSet opusd"),
        "{}",
        first.stderr
    );
    assert!(first.stderr.contains("opusd is ready"), "{}", first.stderr);
    let token = first_json["token"].as_str().expect("token").to_owned();
    assert_eq!(token.len(), 64);
    assert_eq!(first_json["token_created"], true);
    assert_eq!(
        first_json["port_forward"],
        "kubectl -n opus port-forward svc/opusd 7070 7080"
    );
    let first_requests = fake.requests();
    let patches: Vec<&Recorded> = first_requests
        .iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 8);
    assert!(
        patches
            .iter()
            .all(|r| r.query.get("fieldManager").map(String::as_str) == Some("opus"))
    );
    fake.clear_requests();

    // The original single-dash form, in table output.
    let second = opus(Some(&kubeconfig), home.path(), &["-install"]);
    let text = second.ok();
    assert!(
        text.contains("with the API token of the earlier install"),
        "{text}"
    );
    assert!(
        text.contains("kubectl -n opus port-forward svc/opusd 7070 7080"),
        "{text}"
    );
    assert!(text.contains(&format!("OPUS_TOKEN={token}")), "{text}");
    assert_eq!(
        fake.requests(),
        first_requests,
        "the second install sends the same requests"
    );
}

#[test]
fn fake_apiserver_opus_install_flags_reach_the_objects() {
    let fake = FakeApiServer::start();
    let home = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(home.path());
    let args = [
        "install",
        "--namespace",
        "ci",
        "--image",
        "registry.example/opusd:dev",
        "--storage",
        "50Gi",
        "--store",
        "s3://b/opus",
    ];
    opus(Some(&kubeconfig), home.path(), &args).ok();
    let sts = fake
        .object("/apis/apps/v1/namespaces/ci/statefulsets/opusd")
        .expect("statefulset in ci");
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/opusd:dev");
    assert!(
        container["env"]
            .as_array()
            .expect("env")
            .contains(&serde_json::json!({"name": "OPUS_STORE", "value": "s3://b/opus"}))
    );
    let pvc = fake
        .object("/api/v1/namespaces/ci/persistentvolumeclaims/opusd-data")
        .expect("pvc in ci");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "50Gi");
}

#[test]
fn fake_apiserver_opus_install_without_a_context_says_how_to_set_one() {
    let home = tempfile::tempdir().expect("temp dir");
    let missing = home.path().join("no-such-kubeconfig");
    for kubeconfig in [Some(missing.as_path()), None] {
        let run = opus(kubeconfig, home.path(), &["install"]);
        let stderr = run.fails(1);
        assert!(
            stderr
                .starts_with("opus: no Kubernetes context found: set KUBECONFIG or ~/.kube/config"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(run.stdout.is_empty());
    }
}

#[test]
fn fake_apiserver_opus_install_refused_names_the_resource_and_verb() {
    let fake = FakeApiServer::start_with(Behaviour {
        forbid: vec![("PATCH".into(), STS.into())],
        ready_after: Some(0),
        ..Behaviour::default()
    });
    let home = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(home.path());
    let run = opus(Some(&kubeconfig), home.path(), &["install"]);
    let stderr = run.fails(1);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("opus: the Kubernetes API refused to patch statefulsets.apps \"opusd\" in namespace \"opus\" (403 Forbidden"),
        "{stderr}"
    );
    assert!(
        last.contains("kubectl auth can-i patch statefulsets.apps -n opus"),
        "{stderr}"
    );
}

#[test]
fn fake_apiserver_opus_uninstall_keeps_the_volume_unless_purge() {
    let fake = FakeApiServer::start();
    let home = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(home.path());
    opus(Some(&kubeconfig), home.path(), &["install"]).ok();

    let run = opus(Some(&kubeconfig), home.path(), &["uninstall"]);
    assert!(
        run.ok().contains("its data volume opusd-data stays"),
        "{}",
        run.stdout
    );
    assert_eq!(
        fake.paths(),
        [
            "/api/v1/namespaces/opus",
            "/api/v1/namespaces/opus/persistentvolumeclaims/opusd-data"
        ]
    );

    let purge = opus(
        Some(&kubeconfig),
        home.path(),
        &["uninstall", "--purge", "--output", "json"],
    );
    let json = purge.json();
    assert_eq!(json["kept"], serde_json::json!([]));
    assert_eq!(
        json["deleted"],
        serde_json::json!(["PersistentVolumeClaim/opusd-data", "Namespace/opus"])
    );
    assert!(fake.paths().is_empty());
}
