//! `opus install` / `opus uninstall` against an HTTP fake of the Kubernetes API server
//! ([`FakeApiServer`]): no real cluster runs on the test machines, so these tests prove which
//! calls are made, with which bodies, and what a user sees when something is missing or refused,
//! not that a real cluster accepts the objects.

use std::time::Duration;

use opus_core::kubernetes::{
    self, Cluster, InstallOptions, KubeError, Progress, UninstallOptions, Wait,
};
use opus_tests::fake_apiserver::{Behaviour, FakeApiServer, Recorded};
use serde_json::json;

const NS: &str = "/api/v1/namespaces/opus";
const SA: &str = "/api/v1/namespaces/opus/serviceaccounts/opusd";
const ROLE: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/opus/roles/opusd";
const BINDING: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/opus/rolebindings/opusd";
const SECRET: &str = "/api/v1/namespaces/opus/secrets/opusd-token";
const PVC: &str = "/api/v1/namespaces/opus/persistentvolumeclaims/opusd-data";
const STS: &str = "/apis/apps/v1/namespaces/opus/statefulsets/opusd";
const SVC: &str = "/api/v1/namespaces/opus/services/opusd";
const POD: &str = "/api/v1/namespaces/opus/pods/opusd-0";

/// The objects in the order `opus install` applies them.
const APPLIED: [&str; 8] = [NS, SA, ROLE, BINDING, SECRET, PVC, STS, SVC];

const FAST: Wait = Wait {
    timeout: Duration::from_secs(10),
    interval: Duration::from_millis(10),
};

async fn connect(fake: &FakeApiServer, dir: &tempfile::TempDir) -> Cluster {
    let kubeconfig = fake.write_kubeconfig(dir.path());
    Cluster::from_kubeconfig(&kubeconfig)
        .await
        .expect("the fake's kubeconfig loads")
}

async fn install(
    cluster: &Cluster,
    wait: Wait,
) -> (Result<kubernetes::Installed, KubeError>, Vec<Progress>) {
    let mut seen = Vec::new();
    let result = kubernetes::install(cluster, &InstallOptions::default(), wait, &mut |p| {
        seen.push(p)
    })
    .await;
    (result, seen)
}

fn patches(requests: &[Recorded]) -> Vec<&Recorded> {
    requests.iter().filter(|r| r.method == "PATCH").collect()
}

#[tokio::test]
async fn fake_apiserver_install_applies_every_object_with_field_manager_opus() {
    let fake = FakeApiServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = connect(&fake, &dir).await;
    let (result, progress) = install(&cluster, FAST).await;
    let installed = result.expect("install succeeds");

    let requests = fake.requests();
    let lines: Vec<String> = requests.iter().map(Recorded::line).collect();
    let mut expected = vec![
        "GET /version".to_owned(),
        format!("GET {SECRET}"),
        format!("GET {NS}"),
    ];
    expected.extend(APPLIED.iter().map(|p| format!("PATCH {p}")));
    expected.push(format!("GET {STS}"));
    assert_eq!(lines, expected);

    for r in patches(&requests) {
        assert_eq!(
            r.query.get("fieldManager").map(String::as_str),
            Some("opus"),
            "{}",
            r.line()
        );
        assert_eq!(
            r.query.get("force").map(String::as_str),
            Some("true"),
            "{}",
            r.line()
        );
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/apply-patch+yaml"),
            "{}",
            r.line()
        );
    }
    for r in &requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some("Bearer fake-token"),
            "the context's credentials: {}",
            r.line()
        );
    }

    // The applied objects are the typed manifests, with the generated token in the Secret.
    assert_eq!(installed.namespace, "opus");
    assert!(installed.token_created && installed.ready);
    assert_eq!(installed.token.len(), 64);
    let secret = fake.object(SECRET).expect("secret stored");
    let encoded = secret["data"]["token"].as_str().expect("token data");
    assert_eq!(decode_base64(encoded), installed.token.as_bytes());
    let sts = fake.object(STS).expect("statefulset stored");
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], json!(kubernetes::default_image()));
    assert_eq!(container["readinessProbe"]["grpc"]["port"], json!(7070));
    assert_eq!(
        sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        json!(true)
    );
    let env = container["env"].as_array().expect("env");
    assert!(
        env.contains(&json!({"name": "OPUS_EXECUTOR", "value": "kubernetes"})),
        "{env:?}"
    );
    assert!(
        env.contains(&json!({"name": "OPUS_TOKEN_FILE", "value": "/etc/opus/token/token"})),
        "{env:?}"
    );
    let pvc = fake.object(PVC).expect("pvc stored");
    assert_eq!(
        pvc["spec"]["resources"]["requests"]["storage"],
        json!("10Gi")
    );
    let svc = fake.object(SVC).expect("service stored");
    let ports: Vec<i64> = svc["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(ports, [7070, 7080]);

    assert!(
        progress
            .iter()
            .any(|p| matches!(p, Progress::Connected { version, .. } if version == "v1.31.0-fake"))
    );
    assert_eq!(
        progress
            .iter()
            .filter(|p| matches!(p, Progress::Applied { .. }))
            .count(),
        8
    );
    assert_eq!(progress.last(), Some(&Progress::Ready));
}

#[tokio::test]
async fn fake_apiserver_second_install_sends_the_same_objects_and_keeps_the_token() {
    let fake = FakeApiServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = connect(&fake, &dir).await;
    let first = install(&cluster, FAST).await.0.expect("first install");
    let first_requests = fake.requests();
    let versions: Vec<_> = APPLIED
        .iter()
        .map(|p| {
            fake.object(p)
                .map(|o| o["metadata"]["resourceVersion"].clone())
        })
        .collect();
    fake.clear_requests();

    let second = install(&cluster, FAST).await.0.expect("second install");
    let second_requests = fake.requests();
    assert_eq!(
        second.token, first.token,
        "the token of the first install is kept"
    );
    assert!(!second.token_created);
    assert_eq!(
        second_requests, first_requests,
        "the same requests, with the same bodies"
    );
    let versions_after: Vec<_> = APPLIED
        .iter()
        .map(|p| {
            fake.object(p)
                .map(|o| o["metadata"]["resourceVersion"].clone())
        })
        .collect();
    assert_eq!(versions_after, versions, "nothing changed");
}

#[tokio::test]
async fn fake_apiserver_install_keeps_a_token_created_by_hand() {
    let fake = FakeApiServer::start();
    // `kubectl create secret generic opusd-token --from-literal=token=hand-made`, as the header of
    // deploy/kubernetes/opus.yaml suggests.
    fake.put(SECRET, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "opusd-token", "namespace": "opus"},
        "data": {"token": "aGFuZC1tYWRl"}}));
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = connect(&fake, &dir).await;
    let installed = install(&cluster, FAST).await.0.expect("install");
    assert_eq!(installed.token, "hand-made");
    assert!(!installed.token_created);
}

#[tokio::test]
async fn fake_apiserver_install_waits_for_readiness_and_reports_the_pod_state() {
    let fake = FakeApiServer::start_with(Behaviour {
        ready_after: Some(2),
        pod_waiting: Some(("ContainerCreating".into(), String::new())),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = connect(&fake, &dir).await;
    let (result, progress) = install(&cluster, FAST).await;
    assert!(result.expect("install").ready);
    let waits: Vec<String> = progress
        .iter()
        .filter_map(|p| match p {
            Progress::Waiting { detail, .. } => Some(detail.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        waits,
        [
            "0/1 ready; opusd-0: ContainerCreating",
            "0/1 ready; opusd-0: ContainerCreating"
        ]
    );
    let looks = fake
        .requests()
        .iter()
        .filter(|r| r.line() == format!("GET {STS}"))
        .count();
    assert_eq!(looks, 3);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.line() == format!("GET {POD}"))
    );
}

#[tokio::test]
async fn fake_apiserver_install_gives_up_waiting_with_the_reason_and_what_to_look_at() {
    let fake = FakeApiServer::start_with(Behaviour {
        ready_after: None,
        pod_waiting: Some(("ContainerCreating".into(), String::new())),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = connect(&fake, &dir).await;
    let wait = Wait {
        timeout: Duration::from_millis(300),
        interval: Duration::from_millis(20),
    };
    let err = install(&cluster, wait).await.0.expect_err("never ready");
    assert!(matches!(err, KubeError::NotReady { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("opusd did not become ready within "),
        "{text}"
    );
    assert!(
        text.contains("ms (0/1 ready; opusd-0: ContainerCreating); everything is applied"),
        "{text}"
    );
    assert!(
        text.contains("kubectl -n opus describe pod opusd-0"),
        "{text}"
    );
    assert!(text.contains("run `opus install` again"), "{text}");
    // Everything was applied before the wait.
    assert_eq!(patches(&fake.requests()).len(), 8);
}

#[tokio::test]
async fn fake_apiserver_forbidden_apply_names_the_resource_and_the_verb() {
    let fake = FakeApiServer::start_with(Behaviour {
        forbid: vec![("PATCH".into(), STS.into())],
        ready_after: Some(0),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = connect(&fake, &dir).await;
    let err = install(&cluster, FAST).await.0.expect_err("refused");
    let text = err.to_string();
    assert!(
        matches!(
            err,
            KubeError::Forbidden {
                verb: "patch",
                resource: "statefulsets.apps",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(text.starts_with("the Kubernetes API refused to patch statefulsets.apps \"opusd\" in namespace \"opus\" (403 Forbidden: statefulsets \"opusd\" is forbidden: User \"dev\" cannot patch"), "{text}");
    assert!(
        text.contains("kubectl auth can-i patch statefulsets.apps -n opus"),
        "{text}"
    );
    // It stopped there: the Service was not applied.
    assert!(fake.object(SVC).is_none());
}

#[tokio::test]
async fn fake_apiserver_forbidden_secret_read_is_reported_before_anything_is_applied() {
    let fake = FakeApiServer::start_with(Behaviour {
        forbid: vec![("GET".into(), SECRET.into())],
        ready_after: Some(0),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = connect(&fake, &dir).await;
    let text = install(&cluster, FAST)
        .await
        .0
        .expect_err("refused")
        .to_string();
    assert!(
        text.contains("refused to get secrets \"opusd-token\" in namespace \"opus\""),
        "{text}"
    );
    assert!(patches(&fake.requests()).is_empty());
}

#[tokio::test]
async fn fake_apiserver_uninstall_keeps_the_volume_unless_purge() {
    let fake = FakeApiServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = connect(&fake, &dir).await;
    install(&cluster, FAST).await.0.expect("install");
    fake.clear_requests();

    let mut progress = Vec::new();
    kubernetes::uninstall(&cluster, &UninstallOptions::default(), &mut |p| {
        progress.push(p)
    })
    .await
    .expect("uninstall");
    let deletes: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(deletes, [SVC, STS, SECRET, BINDING, ROLE, SA]);
    assert_eq!(
        fake.paths(),
        [NS.to_owned(), PVC.to_owned()],
        "the namespace and the volume stay"
    );
    assert!(progress.contains(&Progress::Kept {
        kind: "PersistentVolumeClaim",
        name: "opusd-data".into()
    }));

    // Installing again finds the volume where it was.
    install(&cluster, FAST).await.0.expect("install again");
    fake.clear_requests();
    let purge = UninstallOptions {
        purge: true,
        ..UninstallOptions::default()
    };
    kubernetes::uninstall(&cluster, &purge, &mut |_| {})
        .await
        .expect("purge");
    let deletes: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(deletes, [SVC, STS, SECRET, BINDING, ROLE, SA, PVC, NS]);
    assert!(fake.paths().is_empty());

    // A second uninstall finds nothing and is fine with that.
    let mut progress = Vec::new();
    kubernetes::uninstall(&cluster, &purge, &mut |p| progress.push(p))
        .await
        .expect("nothing left to delete");
    assert_eq!(
        progress
            .iter()
            .filter(|p| matches!(p, Progress::Absent { .. }))
            .count(),
        8
    );
}

#[tokio::test]
async fn fake_apiserver_missing_kubeconfig_says_how_to_set_a_context() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = Cluster::from_kubeconfig(&dir.path().join("missing"))
        .await
        .expect_err("no kubeconfig");
    assert!(matches!(err, KubeError::NoContext { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("no Kubernetes context found: set KUBECONFIG or ~/.kube/config"),
        "{err}"
    );
}

#[tokio::test]
async fn fake_apiserver_that_is_gone_is_unreachable() {
    let fake = FakeApiServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let url = fake.url.clone();
    drop(fake);
    let cluster = Cluster::from_kubeconfig(&kubeconfig)
        .await
        .expect("kubeconfig loads");
    let err = install(&cluster, FAST).await.0.expect_err("nobody listens");
    assert!(matches!(err, KubeError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot reach the Kubernetes API at {url}")),
        "{text}"
    );
    assert!(text.contains("kubectl cluster-info"), "{text}");
}

/// Standard base64 (what Kubernetes uses for Secret data), decoded.
fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .expect("base64 character") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

#[tokio::test]
async fn fake_apiserver_install_without_waiting_does_not_look_at_the_statefulset() {
    let fake = FakeApiServer::start_with(Behaviour {
        ready_after: None,
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = connect(&fake, &dir).await;
    let no_wait = Wait {
        timeout: Duration::ZERO,
        ..Wait::default()
    };
    let installed = install(&cluster, no_wait).await.0.expect("install");
    assert!(!installed.ready);
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.line() == format!("GET {STS}"))
    );
}

#[tokio::test]
async fn fake_apiserver_install_stops_waiting_at_once_when_opusd_cannot_start() {
    let fake = FakeApiServer::start_with(Behaviour {
        ready_after: None,
        pod_waiting: Some((
            "ImagePullBackOff".into(),
            "Back-off pulling image \"ghcr.io/opus-ci/opusd:0.1.0\"".into(),
        )),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = connect(&fake, &dir).await;
    let started = std::time::Instant::now();
    let err = install(&cluster, Wait::default())
        .await
        .0
        .expect_err("cannot start");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no waiting for the 5 minute timeout"
    );
    assert!(matches!(err, KubeError::PodFailing { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "opusd cannot start: cannot pull image \"opusd\" for container opusd (ImagePullBackOff: \
             Back-off pulling image \"ghcr.io/opus-ci/opusd:0.1.0\")"
        ),
        "{text}"
    );
    assert!(text.contains("opus install --image"), "{text}");
    assert!(
        text.contains("kubectl -n opus describe pod opusd-0"),
        "{text}"
    );
    assert_eq!(patches(&fake.requests()).len(), 8, "everything was applied");
}

#[tokio::test]
async fn fake_apiserver_a_namespace_opus_did_not_create_is_neither_labelled_nor_purged() {
    let fake = FakeApiServer::start();
    fake.put(
        NS,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "opus", "labels": {"team": "web"}}}),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = connect(&fake, &dir).await;
    let (result, progress) = install(&cluster, FAST).await;
    result.expect("install into the existing namespace");
    assert!(progress.contains(&Progress::ForeignNamespace {
        name: "opus".into()
    }));
    let patched: Vec<String> = patches(&fake.requests())
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(patched, APPLIED[1..], "everything but the namespace");
    assert_eq!(
        fake.object(NS).expect("namespace")["metadata"]["labels"],
        json!({"team": "web"})
    );

    let purge = UninstallOptions {
        purge: true,
        ..UninstallOptions::default()
    };
    let mut progress = Vec::new();
    kubernetes::uninstall(&cluster, &purge, &mut |p| progress.push(p))
        .await
        .expect("purge");
    assert!(progress.contains(&Progress::ForeignNamespace {
        name: "opus".into()
    }));
    assert_eq!(
        fake.paths(),
        [NS.to_owned()],
        "the volume is gone, the namespace stays"
    );
}

#[tokio::test]
async fn fake_apiserver_a_namespace_the_context_may_not_read_is_used_as_it_is() {
    let fake = FakeApiServer::start_with(Behaviour {
        forbid: vec![("GET".into(), NS.into()), ("PATCH".into(), NS.into())],
        ready_after: Some(0),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = connect(&fake, &dir).await;
    let (result, progress) = install(&cluster, FAST).await;
    result.expect("a user with rights in the namespace only can install");
    assert!(progress.contains(&Progress::ForeignNamespace {
        name: "opus".into()
    }));
    assert_eq!(patches(&fake.requests()).len(), 7);
}
