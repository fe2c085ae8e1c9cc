//! `opusd --executor kubernetes` against an HTTP fake of the Kubernetes API server
//! ([`FakeApiServer`]), with the real `opusd runner` run as a local process where a pod would run
//! it: when the fake stores a build's Job, the test reads the Job's environment and starts the
//! runner with it (pointing at opusd's real address), so fetching, steps, upload, logs and the
//! commit all run for real. What the fake cannot show: that a real cluster runs the Job (pulls
//! the images, copies opusd in, reaches opusd through the Service).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opus_core::proto;
use opus_core::proto::runner_service_client::RunnerServiceClient;
use opus_tests::fake_apiserver::{FakeApiServer, Recorded};
use opus_tests::{Daemon, GitRepo, Run, bin};
use serde_json::{Value, json};

pub(crate) const JOBS: &str = "/apis/batch/v1/namespaces/opus/jobs";
const PODS: &str = "/api/v1/namespaces/opus/pods";

fn job_path(project: &str, build: u64) -> String {
    format!("{JOBS}/opus-{project}-{build}")
}

/// A fake API server, and opusd running builds as Jobs in it (looking at Jobs every 50 ms).
pub(crate) struct Cluster {
    pub(crate) fake: FakeApiServer,
    pub(crate) d: Daemon,
    _kubeconfig_dir: tempfile::TempDir,
}

pub(crate) fn cluster_with(args: &[&str]) -> Cluster {
    let fake = FakeApiServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let kubeconfig = kubeconfig.to_str().expect("utf-8 path").to_owned();
    let mut all = vec!["--executor", "kubernetes"];
    all.extend_from_slice(args);
    let d = Daemon::start_with_env(
        &all,
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("OPUS_KUBERNETES_POLL_MS", "50"),
        ],
    );
    Cluster {
        fake,
        d,
        _kubeconfig_dir: dir,
    }
}

pub(crate) fn cluster() -> Cluster {
    cluster_with(&[])
}

/// A git repository with `opus_yml`, added to opusd as `project` by its file:// URL.
pub(crate) fn git_project(d: &Daemon, project: &str, opus_yml: &str) -> GitRepo {
    let repo = GitRepo::init(&d.root.path().join(format!("repo-{project}")));
    repo.write("opus.yml", opus_yml);
    repo.commit("first");
    d.opus(&["add", project, &repo.url()]).ok();
    repo
}

const SITE: &str = "build:\n  image: node:20-test\n  timeout: 5m\n  env: { GREETING: hello }\n  steps:\n    - mkdir -p dist && echo \"<h1>$OPUS_VERSION</h1>\" > dist/index.html\n    - echo \"$GREETING from $OPUS_PROJECT#$OPUS_BUILD ci=$CI key=$API_KEY\"\n    - echo to-stderr >&2\nenvironments:\n  production: { branch: main, auto_deploy: true }\n";

/// The environment of a Job's build container, by name.
pub(crate) fn job_env(job: &Value) -> BTreeMap<String, String> {
    job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Runs the Job's command (`/opus/bin/opusd runner`) as a local process: the real opusd binary
/// with the Job's environment, opusd's real address, and a temporary workspace. Returns how it
/// exited.
pub(crate) fn run_job_locally(c: &Cluster, job: &Value, workspace: &Path) -> Run {
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let command: Vec<&str> = container["command"]
        .as_array()
        .expect("command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(command, ["/opus/bin/opusd", "runner"]);
    let mut cmd = Command::new(bin("opusd"));
    cmd.args(&command[1..])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", workspace)
        .env("OPUS_LOG", "info");
    for (name, value) in job_env(job) {
        let value = match name.as_str() {
            "OPUS_RUNNER_SERVER" => c.d.server.clone(),
            "OPUS_RUNNER_WORKSPACE" => workspace.display().to_string(),
            _ => value,
        };
        cmd.env(name, value);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("opusd runner runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub(crate) fn requests_to(fake: &FakeApiServer, method: &str, path: &str) -> Vec<Recorded> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method == method && r.path == path)
        .collect()
}

fn wait_for_job(c: &Cluster, project: &str, build: u64) -> Value {
    c.fake
        .wait_for_object(&job_path(project, build), 30)
        .unwrap_or_else(|| {
            panic!(
                "no Job for {project}#{build} within 30s\nopusd log:\n{}",
                c.d.log()
            )
        })
}

/// Waits for the Job of `project`'s one build and returns it with the build's id, which names
/// the build to the runner API (`OPUS_RUNNER_BUILD`; users see the build's number instead).
pub(crate) fn wait_for_only_job_of(c: &Cluster, project: &str) -> (Value, u64) {
    let prefix = format!("{JOBS}/opus-{project}-");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(path) = c.fake.paths().into_iter().find(|p| p.starts_with(&prefix))
            && let Some(job) = c.fake.object(&path)
        {
            let id = job_env(&job)["OPUS_RUNNER_BUILD"]
                .parse()
                .expect("the build id of the Job");
            return (job, id);
        }
        assert!(
            Instant::now() < deadline,
            "no Job for {project} within 30s\nopusd log:\n{}",
            c.d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A gRPC client of opusd's RunnerService presenting `token` (or none).
async fn runner_client(server: &str) -> RunnerServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(server.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("connects");
    RunnerServiceClient::new(channel)
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header value"),
        );
    }
    req
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn fake_apiserver_runner_local_process_builds_uploads_and_reports_a_git_repo() {
    let c = cluster();
    let d = &c.d;
    git_project(d, "web", SITE);
    d.opus(&["secret", "set", "web", "API_KEY", "--value", "hunter2"])
        .ok();
    let id = d.trigger(&["web"]);
    let job = wait_for_job(&c, "web", id);

    // The Job request: server-side apply by field manager opus, the build image, the runner image,
    // the timeout as activeDeadlineSeconds, labels, and the token in the environment only.
    let applied = requests_to(&c.fake, "PATCH", &job_path("web", id));
    assert_eq!(applied.len(), 1, "one apply");
    assert_eq!(
        applied[0].query.get("fieldManager").map(String::as_str),
        Some("opus")
    );
    assert_eq!(
        applied[0].content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let spec = &job["spec"];
    assert_eq!(spec["activeDeadlineSeconds"], json!(300));
    assert_eq!(spec["backoffLimit"], json!(0));
    let labels = &job["metadata"]["labels"];
    assert_eq!(labels["opus/project"], json!("web"));
    assert_eq!(labels["opus/build"], json!(id.to_string()));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], json!("node:20-test"));
    assert_eq!(
        pod["initContainers"][0]["image"],
        json!(opus_core::kubernetes::default_image())
    );
    let env = job_env(&job);
    let token = env["OPUS_RUNNER_TOKEN"].clone();
    assert_eq!(token.len(), 64, "a random 256-bit token");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(env["OPUS_RUNNER_BUILD"], id.to_string());
    let port = d.server.rsplit(':').next().expect("port");
    assert_eq!(
        env["OPUS_RUNNER_SERVER"],
        format!("http://opusd.opus.svc:{port}"),
        "the Service opus install creates"
    );
    let whole = job.to_string();
    assert_eq!(
        whole.matches(&token).count(),
        1,
        "the token is in the environment only, not in args: {whole}"
    );
    assert!(pod["containers"][0]["args"].is_null());
    assert!(!whole.contains("hunter2"), "secrets are not in the Job");

    // `opus logs -f` follows the build live while the runner runs.
    let mut follow = opus_tests::opus_command(&d.server, None);
    follow
        .args(["logs", &format!("web#{id}"), "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let follower = follow.spawn().expect("opus logs -f starts");

    let workspace = tempfile::tempdir().expect("workspace");
    let ran = run_job_locally(&c, &job, workspace.path());
    assert_eq!(ran.code, 0, "runner: {}\nopusd: {}", ran.stderr, d.log());

    let b = d.wait_for_state("web", id, "succeeded", 30);
    let version = b["version"].as_str().expect("version").to_owned();
    assert!(version.starts_with(&format!("main-{id}-")), "{version}");
    let followed = follower.wait_with_output().expect("follower ends");
    let followed = String::from_utf8_lossy(&followed.stdout).into_owned();
    assert!(
        followed.contains(&format!("hello from web#{id} ci=true key=***")),
        "{followed}"
    );

    // The version is in the object store and listed.
    let index = d
        .data_dir()
        .join("artifacts/web")
        .join(&version)
        .join("index.html");
    assert_eq!(
        std::fs::read_to_string(&index).expect("index.html uploaded"),
        format!("<h1>{version}</h1>\n")
    );
    let listed = d.opus(&["artifacts", "web"]);
    assert!(listed.ok().contains(&version), "{}", listed.stdout);
    let files = d.opus(&["artifacts", "web", &version]);
    assert!(files.ok().contains("index.html"), "{}", files.stdout);

    // Stored like a local build's version, it went through the same step: deployed to production
    // by opus.yml and served.
    let served = d.get("web.localhost", "/");
    assert_eq!(served.status, 200);
    assert_eq!(served.text(), format!("<h1>{version}</h1>\n"));

    // The log has the steps' output (secret masked), stderr, and the story.
    let log = d.opus(&["logs", &format!("web#{id}")]);
    let text = log.ok();
    for expected in [
        "created Job opus-web-",
        "in namespace opus: image node:20-test, time limit 5m",
        &format!("hello from web#{id} ci=true key=***"),
        "to-stderr",
        "checked out",
        &format!("uploaded as version {version}"),
        &format!("stored version {version} in default"),
        "build succeeded",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(!text.contains("hunter2"), "{text}");

    // The token expired with the build: the same runner cannot come back.
    let again = run_job_locally(&c, &job, tempfile::tempdir().expect("dir").path());
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(
        again.stderr.contains(&format!(
            "opusd refused GetAssignment for build {id}: the build token is not valid for build {id}"
        )),
        "{}",
        again.stderr
    );
    runtime().block_on(async {
        let mut client = runner_client(&d.server).await;
        let err = client
            .get_assignment(with_token(
                proto::GetAssignmentRequest { build_id: id },
                Some(&token),
            ))
            .await
            .expect_err("expired");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("has ended"), "{}", err.message());
    });
}

#[test]
fn fake_apiserver_runner_local_process_reports_a_failing_step_and_stores_nothing() {
    let c = cluster();
    let d = &c.d;
    git_project(
        d,
        "web",
        "build:\n  steps: [\"mkdir -p dist && echo x > dist/index.html\", \"echo failing; exit 3\"]\n",
    );
    let id = d.trigger(&["web"]);
    let job = wait_for_job(&c, "web", id);
    // No build.image in opus.yml: the default build image.
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["image"],
        json!("node:20")
    );
    let workspace = tempfile::tempdir().expect("workspace");
    let ran = run_job_locally(&c, &job, workspace.path());
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("build 1 failed: step 2 `echo failing; exit 3` exited with code 3"),
        "{}",
        ran.stderr
    );
    let b = d.wait_for_state("web", id, "failed", 30);
    assert_eq!(
        b["reason"],
        "step 2 `echo failing; exit 3` exited with code 3"
    );
    let log = d.opus(&["logs", &format!("web#{id}")]);
    assert!(log.ok().contains("failing"), "{}", log.stdout);
    assert!(
        !d.data_dir()
            .join("artifacts/web")
            .join(b["version"].as_str().unwrap_or("x"))
            .exists()
    );
}

#[test]
fn fake_apiserver_cancel_deletes_the_job_and_marks_the_build_cancelled() {
    let c = cluster();
    let d = &c.d;
    git_project(d, "web", SITE);
    let id = d.trigger(&["web"]);
    wait_for_job(&c, "web", id);
    d.opus(&["cancel", &format!("web#{id}")]).ok();
    let b = d.wait_for_state("web", id, "cancelled", 20);
    assert_eq!(b["reason"], "cancelled by a user");
    let deletes = requests_to(&c.fake, "DELETE", &job_path("web", id));
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(
        deletes[0]
            .body
            .as_ref()
            .map(|b| b["propagationPolicy"].clone()),
        Some(json!("Background")),
        "the pod goes with the Job"
    );
    assert!(c.fake.object(&job_path("web", id)).is_none());
    let log = d.opus(&["logs", &format!("web#{id}")]);
    assert!(
        log.ok()
            .contains(&format!("deleted Job opus-web-{id} (cancelled)")),
        "{}",
        log.stdout
    );
}

#[test]
fn fake_apiserver_image_pull_backoff_fails_the_build_with_the_reason_and_deletes_the_job() {
    let c = cluster();
    let d = &c.d;
    git_project(d, "web", &SITE.replace("node:20-test", "node:99"));
    let id = d.trigger(&["web"]);
    let job = wait_for_job(&c, "web", id);
    // The kubelet cannot pull the build image.
    let labels = job["spec"]["template"]["metadata"]["labels"].clone();
    c.fake.put(
        &format!("{PODS}/opus-web-{id}-x7k2p"),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": format!("opus-web-{id}-x7k2p"), "namespace": "opus", "labels": labels },
            "spec": { "containers": [{ "name": "build", "image": "node:99" }] },
            "status": {
                "phase": "Pending",
                "containerStatuses": [{
                    "name": "build", "image": "node:99", "imageID": "", "ready": false, "restartCount": 0,
                    "state": { "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image \"node:99\"" } },
                }],
            },
        }),
    );
    let b = d.wait_for_state("web", id, "failed", 20);
    assert_eq!(
        b["reason"],
        "cannot pull image \"node:99\" for container build (ImagePullBackOff: Back-off pulling image \"node:99\")"
    );
    assert_eq!(
        requests_to(&c.fake, "DELETE", &job_path("web", id)).len(),
        1
    );
    // The pods were found by the build's labels.
    let listed = c
        .fake
        .requests()
        .into_iter()
        .find(|r| r.method == "GET" && r.path == PODS)
        .expect("pods listed");
    let selector = listed.query.get("labelSelector").expect("a label selector");
    assert!(
        selector.contains("opus%2Fbuild%3D") || selector.contains("opus/build="),
        "{selector}"
    );
}

#[test]
fn fake_apiserver_deadline_exceeded_fails_the_build_timed_out() {
    let c = cluster();
    let d = &c.d;
    git_project(d, "web", SITE);
    let id = d.trigger(&["web"]);
    wait_for_job(&c, "web", id);
    assert!(c.fake.set_status(
        &job_path("web", id),
        json!({ "failed": 1, "conditions": [{
            "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline",
        }]}),
    ));
    let b = d.wait_for_state("web", id, "failed", 20);
    assert_eq!(b["reason"], "timed out after 300s (build.timeout)");
}

#[test]
fn fake_apiserver_a_job_that_ends_without_a_report_fails_the_build() {
    let c = cluster();
    let d = &c.d;
    git_project(d, "web", SITE);
    let id = d.trigger(&["web"]);
    wait_for_job(&c, "web", id);
    assert!(
        c.fake
            .set_status(&job_path("web", id), json!({ "succeeded": 1 }))
    );
    let b = d.wait_for_state("web", id, "failed", 20);
    assert_eq!(
        b["reason"],
        format!(
            "the build pod exited without reporting to opusd; see `kubectl -n opus logs job/opus-web-{id}`"
        )
    );
}

#[test]
fn fake_apiserver_a_refused_job_fails_the_build_with_the_403() {
    let c = cluster();
    let d = &c.d;
    c.fake.set_behaviour(opus_tests::fake_apiserver::Behaviour {
        forbid: vec![("PATCH".into(), job_path("web", 1))],
        ready_after: Some(0),
        ..Default::default()
    });
    git_project(d, "web", SITE);
    let id = d.trigger(&["web"]);
    assert_eq!(id, 1);
    let b = d.wait_for_state("web", id, "failed", 20);
    let reason = b["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with(
            "cannot create the build's Job: the Kubernetes API refused to patch jobs.batch \"opus-web-1\" in namespace \"opus\" (403 Forbidden"
        ),
        "{reason}"
    );
    assert!(
        reason.contains("kubectl auth can-i patch jobs.batch -n opus"),
        "{reason}"
    );
}

#[test]
fn fake_apiserver_a_local_directory_source_is_refused_with_what_to_do() {
    let c = cluster();
    let d = &c.d;
    let dir = opus_tests::site_with_opus_yml(d.root.path(), "site", SITE);
    d.opus(&["add", "web", dir.to_str().expect("utf-8")]).ok();
    let id = d.trigger(&["web"]);
    let b = d.wait_for_state("web", id, "failed", 20);
    let reason = b["reason"].as_str().expect("reason");
    assert!(reason.contains("which a build pod cannot read"), "{reason}");
    assert!(reason.contains("--executor local"), "{reason}");
    assert!(c.fake.paths().is_empty(), "no Job");
}

#[test]
fn fake_apiserver_runner_tokens_open_their_own_build_only() {
    let mut c = cluster_with(&["--token", "api-token", "--max-builds", "2"]);
    c.d.token = Some("api-token".into());
    let d = &c.d;
    git_project(d, "web", SITE);
    git_project(d, "docs", SITE);
    // web#1 and docs#1: each project numbers its builds from 1; the runner API names them by
    // opusd's own ids, which differ.
    assert_eq!((d.trigger(&["web"]), d.trigger(&["docs"])), (1, 1));
    let (job_a, a) = wait_for_only_job_of(&c, "web");
    let (job_b, b) = wait_for_only_job_of(&c, "docs");
    assert_ne!(a, b);
    let token_a = job_env(&job_a)["OPUS_RUNNER_TOKEN"].clone();
    let token_b = job_env(&job_b)["OPUS_RUNNER_TOKEN"].clone();
    assert_ne!(token_a, token_b);

    runtime().block_on(async {
        let mut client = runner_client(&d.server).await;
        let assignment = |build: u64, token: Option<&str>| {
            with_token(proto::GetAssignmentRequest { build_id: build }, token)
        };
        // Its own token opens its own build, with the environment the steps get.
        let mine = client
            .get_assignment(assignment(a, Some(&token_a)))
            .await
            .expect("own build")
            .into_inner();
        assert_eq!(mine.build.as_ref().map(|b| (b.id, b.number)), Some((a, 1)));
        assert_eq!(
            mine.env.get("OPUS_PROJECT").map(String::as_str),
            Some("web")
        );
        assert!(mine.source.starts_with("file://"), "{}", mine.source);

        // A wrong token, no token, and the API token are refused.
        for (token, needle) in [
            (Some("0".repeat(64)), "not valid for build"),
            (None, "needs the build's token"),
            (Some("api-token".to_owned()), "not valid for build"),
        ] {
            let err = client
                .get_assignment(assignment(a, token.as_deref()))
                .await
                .expect_err("refused");
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{token:?}");
            assert!(err.message().contains(needle), "{}", err.message());
        }

        // Build A's token does not open build B: not its assignment, logs or end.
        let err = client
            .get_assignment(assignment(b, Some(&token_a)))
            .await
            .expect_err("other build");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(
            err.message()
                .contains(&format!("the build token is not valid for build {b}")),
            "{}",
            err.message()
        );
        let err = client
            .finish_build(with_token(
                proto::FinishBuildRequest {
                    build_id: b,
                    succeeded: false,
                    reason: "forged".into(),
                    manifest_json: String::new(),
                },
                Some(&token_a),
            ))
            .await
            .expect_err("other build");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let line = proto::LogLine {
            step: "step 1".into(),
            text: "forged line".into(),
            stream: "stdout".into(),
            ..Default::default()
        };
        let mut push = with_token(tokio_stream::iter(vec![line]), Some(&token_a));
        push.metadata_mut()
            .insert("opus-build-id", b.to_string().parse().expect("header"));
        let err = client.push_logs(push).await.expect_err("other build");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);

        // A log stream must name its build.
        let line = proto::LogLine {
            text: "unnamed".into(),
            ..Default::default()
        };
        let err = client
            .push_logs(with_token(tokio_stream::iter(vec![line]), Some(&token_a)))
            .await
            .expect_err("no build id");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("opus-build-id"), "{}", err.message());

        // A build token opens no other service.
        let channel = tonic::transport::Endpoint::from_shared(d.server.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("connects");
        let mut projects =
            opus_core::proto::project_service_client::ProjectServiceClient::new(channel);
        let err = projects
            .list_projects(with_token(
                proto::ListProjectsRequest::default(),
                Some(&token_a),
            ))
            .await
            .expect_err("not the API token");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    });
    assert_eq!(d.build("docs", 1)["state"], "running", "build B went on");
    let log = d.opus(&["logs", "docs#1"]);
    assert!(!log.ok().contains("forged"), "{}", log.stdout);
}

#[test]
fn fake_apiserver_a_runner_that_claims_success_without_uploading_is_refused() {
    let c = cluster();
    let d = &c.d;
    git_project(d, "web", SITE);
    let id = d.trigger(&["web"]);
    let token = job_env(&wait_for_job(&c, "web", id))["OPUS_RUNNER_TOKEN"].clone();
    runtime().block_on(async {
        let mut client = runner_client(&d.server).await;
        let err = client
            .finish_build(with_token(
                proto::FinishBuildRequest {
                    build_id: id,
                    succeeded: true,
                    reason: String::new(),
                    manifest_json: "{}".into(),
                },
                Some(&token),
            ))
            .await
            .expect_err("nothing was uploaded");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message().contains("has no manifest at web/manifest/"),
            "{}",
            err.message()
        );
    });
    let b = d.wait_for_state("web", id, "failed", 20);
    let reason = b["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with(&format!(
            "storing version {} failed: the uploaded version is refused: the store",
            b["version"].as_str().unwrap_or_default()
        )),
        "{reason}"
    );
    assert!(
        d.opus(&["artifacts", "web", "-o", "json"])
            .json()
            .as_array()
            .is_some_and(|a| a.is_empty())
    );
}

#[test]
fn fake_apiserver_a_runner_failure_without_a_reason_still_fails_the_build_with_one() {
    let c = cluster();
    let d = &c.d;
    git_project(d, "web", SITE);
    let id = d.trigger(&["web"]);
    let token = job_env(&wait_for_job(&c, "web", id))["OPUS_RUNNER_TOKEN"].clone();
    runtime().block_on(async {
        let mut client = runner_client(&d.server).await;
        client
            .finish_build(with_token(
                proto::FinishBuildRequest {
                    build_id: id,
                    succeeded: false,
                    reason: " ".into(),
                    manifest_json: String::new(),
                },
                Some(&token),
            ))
            .await
            .expect("a failure report is accepted");
    });
    let b = d.wait_for_state("web", id, "failed", 20);
    assert_eq!(
        b["reason"],
        "the runner reported a failure without a reason"
    );
}

#[test]
fn fake_apiserver_errors_before_the_job_fail_the_build_without_one() {
    let c = cluster();
    let d = &c.d;
    let repo = git_project(d, "web", SITE);

    // An unknown ref.
    let id = d.trigger(&["web", "no-such-branch"]);
    let b = d.wait_for_state("web", id, "failed", 20);
    assert!(
        b["reason"]
            .as_str()
            .is_some_and(|r| r
                .starts_with("ref \"no-such-branch\" is not a branch, tag or commit of file://")),
        "{b}"
    );

    // A version that is already stored.
    let site = tempfile::tempdir().expect("dir");
    std::fs::write(site.path().join("index.html"), "published").expect("write");
    d.publish("web", "1.0.0", site.path());
    let id = d.trigger(&["web", "--version", "1.0.0"]);
    let b = d.wait_for_state("web", id, "failed", 20);
    assert!(
        b["reason"]
            .as_str()
            .is_some_and(|r| r.contains("1.0.0") && r.contains("exists")),
        "{b}"
    );

    // A malformed opus.yml, read from opusd's mirror: the line and the field.
    repo.write("opus.yml", "build:\n  steps: [make]\n  timeout: soon\n");
    repo.commit("broken");
    let id = d.trigger(&["web"]);
    let b = d.wait_for_state("web", id, "failed", 20);
    let reason = b["reason"].as_str().expect("reason");
    assert!(
        reason.contains("opus.yml") && reason.contains("line 3"),
        "{reason}"
    );

    assert!(
        !c.fake.requests().iter().any(|r| r.path.starts_with(JOBS)),
        "no Job was made for builds that could not start"
    );
}

#[test]
fn fake_apiserver_runner_local_process_reports_a_missing_output_folder() {
    let c = cluster();
    let d = &c.d;
    git_project(
        d,
        "web",
        "build:\n  steps: [\"echo no output\"]\n  output: public\n",
    );
    let id = d.trigger(&["web"]);
    let job = wait_for_job(&c, "web", id);
    let workspace = tempfile::tempdir().expect("workspace");
    let ran = run_job_locally(&c, &job, workspace.path());
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    let b = d.wait_for_state("web", id, "failed", 20);
    assert_eq!(
        b["reason"],
        "the output folder \"public\" does not exist after the build (build.output in opus.yml)"
    );
}

#[test]
fn fake_apiserver_api_errors_while_watching_are_logged_and_the_build_goes_on() {
    let c = cluster();
    let d = &c.d;
    c.fake.set_behaviour(opus_tests::fake_apiserver::Behaviour {
        forbid: vec![
            ("GET".into(), job_path("web", 1)),
            ("DELETE".into(), job_path("web", 1)),
        ],
        ready_after: Some(0),
        ..Default::default()
    });
    git_project(d, "web", SITE);
    let id = d.trigger(&["web"]);
    wait_for_job(&c, "web", id);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = d.opus(&["logs", &format!("web#{id}")]);
        if log.ok().contains(&format!(
            "cannot read the state of Job opus-web-{id}: the Kubernetes API refused to get jobs.batch"
        )) {
            // Said once, not at every look.
            assert_eq!(log.stdout.matches("cannot read the state").count(), 1);
            break;
        }
        assert!(Instant::now() < deadline, "{}", log.stdout);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.build("web", id)["state"], "running");
    d.opus(&["cancel", &format!("web#{id}")]).ok();
    d.wait_for_state("web", id, "cancelled", 20);
    let log = d.opus(&["logs", &format!("web#{id}")]);
    assert!(
        log.ok().contains(&format!(
            "cannot delete Job opus-web-{id} (cancelled): the Kubernetes API refused to delete jobs.batch"
        )) && log.stdout.contains("delete it with kubectl"),
        "{}",
        log.stdout
    );
}

#[test]
fn fake_apiserver_a_job_deleted_outside_opus_fails_the_build() {
    let c = cluster();
    let d = &c.d;
    git_project(d, "web", SITE);
    let id = d.trigger(&["web"]);
    wait_for_job(&c, "web", id);
    assert!(c.fake.remove(&job_path("web", id)));
    let b = d.wait_for_state("web", id, "failed", 20);
    assert_eq!(
        b["reason"],
        format!("the Job opus-web-{id} was deleted outside Opus")
    );
}

#[test]
fn fake_apiserver_a_job_kubernetes_never_ends_is_deleted_past_opusds_own_deadline() {
    let c = cluster();
    let d = &c.d;
    git_project(d, "web", &SITE.replace("timeout: 5m", "timeout: 1s"));
    let id = d.trigger(&["web"]);
    let job = wait_for_job(&c, "web", id);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], json!(1));
    let b = d.wait_for_state("web", id, "failed", 20);
    assert_eq!(
        b["reason"],
        format!(
            "timed out: the Job opus-web-{id} did not end within 2s (build.timeout, and as long again up to a minute)"
        )
    );
    assert_eq!(
        requests_to(&c.fake, "DELETE", &job_path("web", id)).len(),
        1
    );
}

#[test]
fn fake_apiserver_restart_deletes_the_jobs_of_builds_that_were_running() {
    let mut c = cluster();
    git_project(&c.d, "web", SITE);
    let id = c.d.trigger(&["web"]);
    wait_for_job(&c, "web", id);
    // Once the build's running record is on disk, a crash.
    c.d.wait_until_on_disk(
        &format!("{{\"id\":{id},\"project\":\"web\",\"state\":\"running\""),
        30,
    );
    c.d.kill();
    c.d.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.fake.object(&job_path("web", id)).is_some() {
        assert!(
            Instant::now() < deadline,
            "the Job was not deleted:\n{}",
            c.d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let deletes = requests_to(&c.fake, "DELETE", &job_path("web", id));
    assert_eq!(deletes.len(), 1);
    let b = c.d.build("web", id);
    assert_eq!(b["state"], "failed");
    assert_eq!(b["reason"], "opusd restarted");
}

#[test]
fn opusd_with_the_kubernetes_executor_and_no_context_refuses_to_start() {
    let root = tempfile::tempdir().expect("temp dir");
    let out = Command::new(bin("opusd"))
        .args([
            "--executor",
            "kubernetes",
            "--listen",
            "127.0.0.1:0",
            "--sites-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root.path())
        .env("KUBECONFIG", root.path().join("missing-kubeconfig"))
        .current_dir(root.path())
        .stdin(Stdio::null())
        .output()
        .expect("opusd runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("opusd: --executor kubernetes: no Kubernetes context found: set KUBECONFIG or ~/.kube/config"),
        "{stderr}"
    );
}
