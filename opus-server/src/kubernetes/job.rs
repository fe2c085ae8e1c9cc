//! Builds as Kubernetes Jobs, the pure part: the Job manifest of one build ([`build_job`]) and
//! what a Job's status says about why a build cannot go on ([`job_failure_reason`]; a pod's:
//! [`opus_core::kubernetes::pod_failure_reason`]). [`super::jobs`] creates, reads and deletes
//! the Jobs.
//!
//! The build pod runs `opusd runner` inside any `build.image`, the way Tekton injects its
//! entrypoint: an init container from the opusd image copies the `opusd` binary into an `emptyDir`
//! that the build container mounts and runs. The runner gets everything else (source, steps,
//! environment, secrets) from opusd over gRPC (`RunnerService`) with the build's own token, so the
//! Job carries no secret of the project.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, PodSpec, PodTemplateSpec, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use opus_core::kubernetes::with_message;

/// Label holding the project of a build Job.
pub const PROJECT_LABEL: &str = "opus/project";
/// Label holding the build number of a build Job.
pub const BUILD_LABEL: &str = "opus/build";
/// Label holding the pipeline job of a build Job (absent for a `build:` recipe's one Job).
pub const JOB_LABEL: &str = "opus/job";
/// Where the init container puts the `opusd` binary inside the build pod.
pub const RUNNER_DIR: &str = "/opus/bin";
/// Where the runner checks out the source and runs the steps.
pub const WORKSPACE_DIR: &str = "/workspace";
/// Where `opusd` lives in the opusd image (see deploy/Dockerfile).
pub const OPUSD_IN_IMAGE: &str = "/usr/local/bin/opusd";
/// How long a finished Job (and its pod, with its log) stays for `kubectl logs`.
pub const FINISHED_TTL_SECONDS: i32 = 3600;

/// What the Job of one build needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildJob {
    /// The namespace opusd runs in (`OPUS_KUBERNETES_NAMESPACE`).
    pub namespace: String,
    /// The project (a DNS label).
    pub project: String,
    /// The build number.
    pub build: u64,
    /// `build.image` of opus.yml: what the steps run in.
    pub build_image: String,
    /// The opusd image, which provides the `opusd` binary (`OPUS_RUNNER_IMAGE`).
    pub runner_image: String,
    /// How the runner reaches opusd's API from inside the cluster (`http://opusd.opus.svc:7070`).
    pub server: String,
    /// The build's own short-lived token for `RunnerService`, valid for this build only.
    pub token: String,
    /// `build.timeout`: becomes `activeDeadlineSeconds`, so Kubernetes stops the pod itself.
    pub timeout: Option<Duration>,
    /// The pipeline job this Job runs (`None`: the build's one job, a `build:` recipe).
    pub job: Option<PipelineJob>,
    /// What the runner names itself to opusd with (`OPUS_RUNNER_BUILD`): the build's id for its
    /// one job, a key of its own for a pipeline job (see `Runners::pipeline_key`).
    pub runner: u64,
}

/// One job of a pipeline run as its own Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineJob {
    /// Its name in opus.yml (a DNS label).
    pub name: String,
    /// Its place in the pipeline (0-based, across stages), which keeps Job names apart when
    /// names are cut.
    pub index: usize,
}

/// Which Job: a build's one Job, or one of its pipeline's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef<'a> {
    /// The project.
    pub project: &'a str,
    /// The build id.
    pub build: u64,
    /// The pipeline job, if any.
    pub job: Option<&'a PipelineJob>,
}

impl JobRef<'_> {
    /// The Job's name.
    pub fn name(&self) -> String {
        match self.job {
            None => job_name(self.project, self.build),
            Some(job) => pipeline_job_name(self.project, self.build, job),
        }
    }

    /// The label selector of the Job's pods.
    pub fn selector(&self) -> String {
        let mut selector = format!(
            "{PROJECT_LABEL}={},{BUILD_LABEL}={}",
            self.project, self.build
        );
        if let Some(job) = self.job {
            selector.push_str(&format!(",{JOB_LABEL}={}", job.name));
        }
        selector
    }
}

/// The name of a pipeline job's Job: `opus-<project>-<build>-<job>`; when that is longer than a
/// DNS label, the job's name is cut and its index added, and the project shortened as in
/// [`job_name`].
pub fn pipeline_job_name(project: &str, build: u64, job: &PipelineJob) -> String {
    const JOB_ROOM: usize = 24;
    let full = format!("opus-{project}-{build}-{}", job.name);
    if full.len() <= 63 {
        return full;
    }
    let job_part = if job.name.len() <= JOB_ROOM {
        job.name.clone()
    } else {
        let cut = job.name[..JOB_ROOM].trim_end_matches('-');
        format!("{cut}-{}", job.index)
    };
    let suffix = format!("-{build}-{job_part}");
    let room = 63usize.saturating_sub("opus-".len() + suffix.len());
    let project = project
        .get(..room.min(project.len()))
        .unwrap_or(project)
        .trim_end_matches('-');
    format!("opus-{project}{suffix}")
}

/// The name of a build's Job: `opus-<project>-<build>`, the project shortened so that the name
/// stays a DNS label of at most 63 characters (Kubernetes copies it into a label).
pub fn job_name(project: &str, build: u64) -> String {
    let suffix = format!("-{build}");
    let room = 63 - "opus-".len() - suffix.len();
    let project = project
        .get(..room.min(project.len()))
        .unwrap_or(project)
        .trim_end_matches('-');
    format!("opus-{project}{suffix}")
}

/// The labels of a build's Job and pod, for finding them by project and build.
pub fn build_labels(project: &str, build: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/part-of".to_owned(), "opus".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            opus_core::kubernetes::FIELD_MANAGER.to_owned(),
        ),
        ("app.kubernetes.io/component".to_owned(), "build".to_owned()),
        (PROJECT_LABEL.to_owned(), project.to_owned()),
        (BUILD_LABEL.to_owned(), build.to_string()),
    ])
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The Job that runs one build: no retries (a failed build is a result, not a glitch), the
/// timeout as `activeDeadlineSeconds`, no service account token in the pod (the runner talks to
/// opusd, not to Kubernetes), and removal an hour after it finishes.
pub fn build_job(spec: &BuildJob) -> Job {
    let name = JobRef {
        project: &spec.project,
        build: spec.build,
        job: spec.job.as_ref(),
    }
    .name();
    let mut labels = build_labels(&spec.project, spec.build);
    if let Some(job) = &spec.job {
        labels.insert(JOB_LABEL.to_owned(), job.name.clone());
    }
    let no_escalation = SecurityContext {
        allow_privilege_escalation: Some(false),
        ..SecurityContext::default()
    };
    let install_runner = Container {
        name: "opus-runner".to_owned(),
        image: Some(spec.runner_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(vec![
            "cp".to_owned(),
            OPUSD_IN_IMAGE.to_owned(),
            format!("{RUNNER_DIR}/opusd"),
        ]),
        volume_mounts: Some(vec![mount("opus-bin", RUNNER_DIR, false)]),
        security_context: Some(no_escalation.clone()),
        ..Container::default()
    };
    let build = Container {
        name: "build".to_owned(),
        image: Some(spec.build_image.clone()),
        command: Some(vec![format!("{RUNNER_DIR}/opusd"), "runner".to_owned()]),
        working_dir: Some(WORKSPACE_DIR.to_owned()),
        env: Some(vec![
            env("OPUS_RUNNER_SERVER", &spec.server),
            env("OPUS_RUNNER_BUILD", &spec.runner.to_string()),
            env("OPUS_RUNNER_TOKEN", &spec.token),
            env("OPUS_RUNNER_WORKSPACE", WORKSPACE_DIR),
        ]),
        volume_mounts: Some(vec![
            mount("opus-bin", RUNNER_DIR, true),
            mount("workspace", WORKSPACE_DIR, false),
        ]),
        security_context: Some(no_escalation),
        // The runner's last words (why it failed) end up in the pod status.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };
    let empty_dir = |name: &str| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(spec.namespace.clone()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: spec
                .timeout
                .map(|t| i64::try_from(t.as_secs().max(1)).unwrap_or(i64::MAX)),
            ttl_seconds_after_finished: Some(FINISHED_TTL_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    init_containers: Some(vec![install_runner]),
                    containers: vec![build],
                    volumes: Some(vec![empty_dir("opus-bin"), empty_dir("workspace")]),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// Why a Job failed, from its `Failed` condition: the deadline (the build's timeout) or anything
/// else Kubernetes reports. `None` while it has not failed.
pub fn job_failure_reason(job: &Job) -> Option<String> {
    let failed = job
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True")?;
    match failed.reason.as_deref() {
        Some("DeadlineExceeded") => {
            let limit = job.spec.as_ref().and_then(|s| s.active_deadline_seconds);
            Some(match limit {
                Some(secs) => format!("timed out after {secs}s (build.timeout)"),
                None => "timed out (build.timeout)".to_owned(),
            })
        }
        reason => Some(with_message(
            reason.unwrap_or("Failed"),
            failed.message.as_deref(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    use super::*;

    fn spec() -> BuildJob {
        BuildJob {
            namespace: "opus".into(),
            project: "web".into(),
            build: 42,
            build_image: "node:20".into(),
            runner_image: "ghcr.io/opus-ci/opusd:0.1.0".into(),
            server: "http://opusd.opus.svc:7070".into(),
            token: "per-build".into(),
            timeout: Some(Duration::from_secs(900)),
            job: None,
            runner: 42,
        }
    }

    #[test]
    fn a_pipeline_job_has_its_own_name_and_label() {
        let unit = PipelineJob {
            name: "unit".into(),
            index: 1,
        };
        let job = build_job(&BuildJob {
            job: Some(unit.clone()),
            runner: 7,
            ..spec()
        });
        assert_eq!(job.metadata.name.as_deref(), Some("opus-web-42-unit"));
        let labels = job.metadata.labels.expect("labels");
        assert_eq!(labels[JOB_LABEL], "unit");
        assert_eq!(labels[BUILD_LABEL], "42");
        let long = PipelineJob {
            name: "a".repeat(63),
            index: 7,
        };
        let name = pipeline_job_name(&"p".repeat(63), u64::MAX >> 1, &long);
        assert!(name.len() <= 63 && name.ends_with("-7"), "{name}");
        assert_eq!(
            JobRef {
                project: "web",
                build: 42,
                job: Some(&unit)
            }
            .selector(),
            "opus/project=web,opus/build=42,opus/job=unit"
        );
    }

    #[test]
    fn the_job_injects_opusd_and_runs_the_runner_in_the_build_image() {
        let job = build_job(&spec());
        assert_eq!(job.metadata.name.as_deref(), Some("opus-web-42"));
        let js = job.spec.expect("job spec");
        assert_eq!(js.backoff_limit, Some(0));
        assert_eq!(js.active_deadline_seconds, Some(900));
        let pod = js.template.spec.expect("pod spec");
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let init = &pod.init_containers.as_ref().expect("init")[0];
        assert_eq!(init.image.as_deref(), Some("ghcr.io/opus-ci/opusd:0.1.0"));
        assert_eq!(
            init.command.as_ref().expect("cmd").join(" "),
            "cp /usr/local/bin/opusd /opus/bin/opusd"
        );
        let build = &pod.containers[0];
        assert_eq!(build.image.as_deref(), Some("node:20"));
        assert_eq!(
            build.command.as_ref().expect("cmd").join(" "),
            "/opus/bin/opusd runner"
        );
        let env: BTreeMap<_, _> = build
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(env["OPUS_RUNNER_BUILD"], "42");
        assert_eq!(env["OPUS_RUNNER_TOKEN"], "per-build");
        assert_eq!(env["OPUS_RUNNER_SERVER"], "http://opusd.opus.svc:7070");
        let labels = job.metadata.labels.expect("labels");
        assert_eq!(labels[PROJECT_LABEL], "web");
        assert_eq!(labels[BUILD_LABEL], "42");
    }

    #[test]
    fn no_timeout_means_no_deadline() {
        let job = build_job(&BuildJob {
            timeout: None,
            ..spec()
        });
        assert_eq!(job.spec.and_then(|s| s.active_deadline_seconds), None);
    }

    #[test]
    fn job_names_stay_dns_labels() {
        let long = "a".repeat(63);
        let name = job_name(&long, u64::MAX);
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("opus-a") && name.ends_with(&format!("-{}", u64::MAX)));
        let dashy = format!("{}-b", "a".repeat(37));
        let name = job_name(&dashy, u64::MAX);
        assert!(!name.contains("--"), "{name}");
    }

    #[test]
    fn the_deadline_is_reported_as_the_build_timeout() {
        let mut job = build_job(&spec());
        assert_eq!(job_failure_reason(&job), None);
        job.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("DeadlineExceeded".into()),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        });
        assert_eq!(
            job_failure_reason(&job).as_deref(),
            Some("timed out after 900s (build.timeout)")
        );
    }
}
