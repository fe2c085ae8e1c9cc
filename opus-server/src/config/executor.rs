//! Where builds run: the [`ExecutorKind`], and the kubernetes executor's settings.

use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use super::{ConfigArgs, ConfigError, FileConfig, duration};
use crate::process_tree::Containment;

/// How often the kubernetes executor asks for the state of a build Job, by default.
pub const DEFAULT_KUBERNETES_POLL: Duration = Duration::from_secs(2);

/// How local builds' processes are kept together: a cgroup each with `--build-cgroups` (or
/// `build_cgroups = true`), else found in /proc [default].
pub(super) fn containment(args: &ConfigArgs, file: &FileConfig) -> Containment {
    if args.build_cgroups || file.build_cgroups == Some(true) {
        Containment::Cgroup
    } else {
        Containment::Sweep
    }
}

/// Where builds run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Child processes of opusd.
    Local,
    /// Kubernetes Jobs, in the current kube-context.
    #[value(alias = "k8s")]
    #[serde(alias = "k8s")]
    Kubernetes,
}

impl ExecutorKind {
    /// The name `--executor` takes and `opus status` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Kubernetes => "kubernetes",
        }
    }
}

/// The service account namespace file of a pod: where opusd runs when it runs in a cluster.
pub(super) const POD_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The build image when opus.yml names none (kubernetes executor).
pub const DEFAULT_BUILD_IMAGE: &str = "node:20";

/// How builds run as Kubernetes Jobs (used by the kubernetes executor only; always resolved, so
/// that `--help` defaults and validation do not depend on the executor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// The namespace of build Jobs.
    pub namespace: String,
    /// The image providing the `opusd` binary to build pods.
    pub runner_image: String,
    /// The URL build pods reach opusd at; `None`: `http://opusd.<namespace>.svc:<bound API port>`,
    /// decided once the API listener is bound.
    pub runner_server_url: Option<String>,
    /// The build image when opus.yml has no `build.image`.
    pub build_image: String,
    /// How often the state of a build's Job is asked for.
    pub poll: Duration,
}

impl KubernetesConfig {
    /// The URL build pods use, given the port the API listens on.
    pub fn server_url(&self, api_port: u16) -> String {
        match &self.runner_server_url {
            Some(url) => url.clone(),
            None => format!(
                "http://{}.{}.svc:{api_port}",
                opus_core::kubernetes::OPUSD,
                self.namespace
            ),
        }
    }
}

/// The executor: flags over the file [default: local].
pub(super) fn executor(args: &ConfigArgs, file: &FileConfig) -> ExecutorKind {
    args.executor
        .or(file.executor)
        .unwrap_or(ExecutorKind::Local)
}

/// The kubernetes executor's settings, each from the flags over the file.
pub(super) fn kubernetes(
    args: &ConfigArgs,
    file: &FileConfig,
) -> Result<KubernetesConfig, ConfigError> {
    let layered =
        |flag: &Option<String>, file: &Option<String>| flag.clone().or_else(|| file.clone());
    resolve_kubernetes(
        layered(&args.kubernetes_namespace, &file.kubernetes_namespace),
        layered(&args.runner_image, &file.runner_image),
        layered(&args.runner_server_url, &file.runner_server_url),
        layered(&args.build_image, &file.build_image),
        duration(
            "kubernetes_poll_ms",
            args.kubernetes_poll_ms.or(file.kubernetes_poll_ms),
            Duration::from_millis,
        )?
        .unwrap_or(DEFAULT_KUBERNETES_POLL),
    )
}

/// The kubernetes executor's settings: the namespace from the setting, else the pod's own
/// namespace, else `opus`; images and URL checked for what Kubernetes would refuse later.
fn resolve_kubernetes(
    namespace: Option<String>,
    runner_image: Option<String>,
    runner_server_url: Option<String>,
    build_image: Option<String>,
    poll: Duration,
) -> Result<KubernetesConfig, ConfigError> {
    let namespace = match namespace {
        Some(ns) => ns.trim().to_owned(),
        None => std::fs::read_to_string(POD_NAMESPACE_FILE)
            .ok()
            .map(|ns| ns.trim().to_owned())
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| opus_core::kubernetes::DEFAULT_NAMESPACE.to_owned()),
    };
    opus_core::kubernetes::validate_namespace(&namespace).map_err(|e| ConfigError::Invalid {
        key: "kubernetes_namespace",
        message: e.to_string(),
    })?;
    let image = |key: &'static str, value: Option<String>, default: String| {
        let value = value.map(|v| v.trim().to_owned()).unwrap_or(default);
        if value.is_empty() || value.chars().any(char::is_whitespace) {
            return Err(ConfigError::Invalid {
                key,
                message: format!("{value:?} is not an image reference (for example node:20)"),
            });
        }
        Ok(value)
    };
    let runner_image = image(
        "runner_image",
        runner_image,
        opus_core::kubernetes::default_image(),
    )?;
    let build_image = image("build_image", build_image, DEFAULT_BUILD_IMAGE.to_owned())?;
    let runner_server_url = match runner_server_url
        .map(|u| u.trim().trim_end_matches('/').to_owned())
    {
        Some(url) => {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
                return Err(ConfigError::Invalid {
                    key: "runner_server_url",
                    message: format!(
                        "{url:?} is not an http:// or https:// URL (for example http://opusd.opus.svc:7070)"
                    ),
                });
            }
            Some(url)
        }
        None => None,
    };
    Ok(KubernetesConfig {
        namespace,
        runner_image,
        runner_server_url,
        build_image,
        poll,
    })
}
