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
    // Builds as Jobs need a store the build pods reach: said when there is none, not otherwise.
    assert!(custom.stderr.contains("--store s3://"), "{}", custom.stderr);
    let remote = opus(
        None,
        home.path(),
        &["install", "--dry-run", "--store", "s3://bucket/opus"],
    );
    assert!(remote.ok().contains("s3://bucket/opus"));
    assert!(!remote.stderr.contains("note:"), "{}", remote.stderr);
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

/// Kills the child process when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The StatefulSet's container environment, applied to the real `opusd` (ports made 0 and the
/// volume and Secret mounts made temporary directories): opusd must start with it, bound to all
/// interfaces with the token from the file, and answer the gRPC health check its probes make
/// (`grpc.health.v1`, empty service name, no token) on the port the probes use. This runs the
/// binary, not the image: the image itself has not been built here.
#[test]
fn statefulset_environment_starts_a_real_opusd_that_passes_its_grpc_probe() {
    use opus_core::kubernetes::{InstallObjects, InstallOptions, TOKEN_DIR};

    let manifests = InstallObjects::new(&InstallOptions::default(), None);
    let pod = manifests.stateful_set.spec.template.spec.expect("pod spec");
    let container = &pod.containers[0];
    let probe_port = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.grpc.as_ref())
        .map(|g| g.port)
        .expect("a gRPC readiness probe");
    assert_eq!(
        container
            .liveness_probe
            .as_ref()
            .and_then(|p| p.grpc.as_ref())
            .map(|g| g.port),
        Some(probe_port)
    );

    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let token_dir = root.path().join("token");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::create_dir_all(&token_dir).expect("token dir");
    std::fs::write(token_dir.join("token"), "secret-token-of-a-pod\n").expect("token file");

    // In the pod, the kubernetes executor finds the cluster through the service account; here,
    // through a kubeconfig pointing at a fake API server.
    let fake = FakeApiServer::start();
    let kubeconfig = fake.write_kubeconfig(root.path());
    let mut cmd = Command::new(bin("opusd"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBECONFIG", &kubeconfig)
        .current_dir(root.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for var in container.env.iter().flatten() {
        let value = match (var.name.as_str(), var.value.as_deref()) {
            ("OPUS_LISTEN", Some(v)) => {
                assert_eq!(
                    v,
                    format!("0.0.0.0:{probe_port}"),
                    "the probes ask the API port"
                );
                "0.0.0.0:0".to_owned()
            }
            ("OPUS_SITES_LISTEN", Some(_)) => "0.0.0.0:0".to_owned(),
            ("OPUS_DATA_DIR" | "HOME", Some(_)) => data.display().to_string(),
            ("OPUS_TOKEN_FILE", Some(v)) => {
                let file = v
                    .strip_prefix(TOKEN_DIR)
                    .expect("the token file is in the Secret's mount");
                format!("{}{file}", token_dir.display())
            }
            (_, Some(v)) => v.to_owned(),
            // valueFrom: the downward API's namespace.
            (_, None) => "opus".to_owned(),
        };
        cmd.env(&var.name, value);
    }
    let mut child = KillOnDrop(cmd.spawn().expect("opusd starts"));

    let addr_file = data.join("opusd.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let api = loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(api) = v["api"].as_str()
        {
            break api.to_owned();
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            panic!("opusd with the StatefulSet's environment exited ({status}):\n{stderr}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "opusd did not start within 20s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        api.starts_with("0.0.0.0:"),
        "bound to all interfaces, as in a pod: {api}"
    );
    let port = api.rsplit(':').next().unwrap_or_default();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connects");
        // What the kubelet's gRPC probe sends: an empty service name, no token.
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("the health check answers");
        assert_eq!(
            resp.into_inner().status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        // The token comes from the Secret's file, and the executor from the environment.
        let mut system = opus_core::proto::system_service_client::SystemServiceClient::new(channel);
        let anonymous = system
            .get_server_info(opus_core::proto::GetServerInfoRequest {})
            .await
            .expect_err("a token is required");
        assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
        let mut request = tonic::Request::new(opus_core::proto::GetServerInfoRequest {});
        request.metadata_mut().insert(
            "authorization",
            "Bearer secret-token-of-a-pod"
                .parse()
                .expect("header value"),
        );
        let info = system
            .get_server_info(request)
            .await
            .expect("the token from the file works");
        assert_eq!(info.into_inner().executor, "kubernetes");
    });
    drop(child);
}
