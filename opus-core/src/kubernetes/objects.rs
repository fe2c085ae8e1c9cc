//! The objects `opus install` applies, as typed k8s-openapi values, and their YAML rendering.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, GRPCAction,
    Namespace, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service,
    ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::KubeError;
pub use super::replicas::{SITES, SiteReplicas};

/// The namespace `opus install` uses unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "opus";
/// The size of opusd's volume unless told otherwise.
pub const DEFAULT_STORAGE: &str = "10Gi";
/// The name of the ServiceAccount, Role, RoleBinding, StatefulSet and Service.
pub const OPUSD: &str = "opusd";
/// The Secret holding the API token (key [`TOKEN_KEY`]).
pub const TOKEN_SECRET: &str = "opusd-token";
/// The key of the token in [`TOKEN_SECRET`].
pub const TOKEN_KEY: &str = "token";
/// The PersistentVolumeClaim holding opusd's data directory; `opus uninstall` keeps it.
pub const DATA_PVC: &str = "opusd-data";
/// The one pod of the StatefulSet.
pub const OPUSD_POD: &str = "opusd-0";
/// The API port (gRPC, webhooks, health) inside the pod and on the Service.
pub const API_PORT: i32 = 7070;
/// The site server's port inside the pod and on the Service.
pub const SITES_PORT: i32 = 7080;
/// Where the volume is mounted: opusd's data directory.
pub const DATA_DIR: &str = "/var/lib/opus";
/// Where the token Secret is mounted.
pub const TOKEN_DIR: &str = "/etc/opus/token";
/// The user id opusd runs as (the image's `opus` user).
pub const RUN_AS_USER: i64 = 10001;

/// The image `opus install` runs unless `--image` says otherwise: this release of opusd.
pub fn default_image() -> String {
    format!("ghcr.io/opus-ci/opusd:{}", env!("CARGO_PKG_VERSION"))
}

/// What `opus install` is asked to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// The namespace for every object (created if missing).
    pub namespace: String,
    /// The opusd image; it also provides the `opusd` binary that build pods run.
    pub image: String,
    /// The size of the data volume, a Kubernetes quantity (`10Gi`).
    pub storage: String,
    /// The artifact store URL (`s3://bucket/prefix`); `None` keeps versions on the data volume.
    pub store: Option<String>,
    /// How many site replicas (`opusd sites`) to run beside opusd; 0 for none.
    pub site_replicas: u32,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            image: default_image(),
            storage: DEFAULT_STORAGE.to_owned(),
            store: None,
            site_replicas: 0,
        }
    }
}

impl InstallOptions {
    /// Checks what Kubernetes would otherwise refuse halfway through an install.
    pub fn validate(&self) -> Result<(), KubeError> {
        validate_namespace(&self.namespace)?;
        if self.image.trim().is_empty() || self.image.chars().any(char::is_whitespace) {
            return Err(KubeError::InvalidOption {
                option: "--image",
                message: format!(
                    "{:?} is not an image reference (for example {})",
                    self.image,
                    default_image()
                ),
            });
        }
        if !is_quantity(&self.storage) {
            return Err(KubeError::InvalidOption {
                option: "--storage",
                message: format!(
                    "{:?} is not a Kubernetes quantity (write a number and a unit such as 10Gi, 500Mi or 1Ti)",
                    self.storage
                ),
            });
        }
        if self.site_replicas > 0
            && !self
                .store
                .as_deref()
                .is_some_and(|s| ["s3://", "gs://", "az://"].iter().any(|p| s.starts_with(p)))
        {
            return Err(KubeError::InvalidOption {
                option: "--site-replicas",
                message: "site replicas read versions from a shared object store: add --store s3://bucket/prefix (or gs://, az://)".to_owned(),
            });
        }
        if let Some(store) = &self.store {
            let scheme_ok = ["file://", "s3://", "gs://", "az://"]
                .iter()
                .any(|s| store.starts_with(s));
            if !scheme_ok {
                return Err(KubeError::InvalidOption {
                    option: "--store",
                    message: format!(
                        "{store:?} is not a store URL (use s3://, gs://, az:// or file://)"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Checks that a namespace is a DNS label, as Kubernetes requires.
pub fn validate_namespace(namespace: &str) -> Result<(), KubeError> {
    if crate::model::ProjectName::new(namespace).is_err() {
        return Err(KubeError::InvalidOption {
            option: "--namespace",
            message: format!(
                "{namespace:?} is not a DNS label (lowercase letters, digits and '-', 1 to 63 characters, \
                 starting and ending with a letter or digit)"
            ),
        });
    }
    Ok(())
}

/// A Kubernetes quantity as a storage size: digits, an optional fraction, an optional unit.
fn is_quantity(text: &str) -> bool {
    const UNITS: &[&str] = &[
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
    ];
    let number_end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let mut parts = number.split('.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    !whole.is_empty()
        && parts.next().is_none()
        && fraction.is_none_or(|f| !f.is_empty())
        && UNITS.contains(&unit)
        && number.chars().any(|c| c != '0' && c != '.')
}

/// Every object of an installation, in the order they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallObjects {
    /// The namespace.
    pub namespace: Namespace,
    /// opusd's identity in the cluster.
    pub service_account: ServiceAccount,
    /// What opusd may do: run build Jobs and read their pods and logs, in its namespace only.
    pub role: Role,
    /// Grants [`InstallObjects::role`] to [`InstallObjects::service_account`].
    pub role_binding: RoleBinding,
    /// The API token; `None` when rendering YAML (a token never goes into a file).
    pub secret: Option<Secret>,
    /// opusd's data directory.
    pub data: PersistentVolumeClaim,
    /// opusd itself.
    pub stateful_set: StatefulSet,
    /// The API and sites ports.
    pub service: Service,
    /// The site replicas (`opusd sites`) and their Service, when asked for.
    pub site_replicas: Option<SiteReplicas>,
}

/// The labels every object carries (and the Service selects on).
pub fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), OPUSD.to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), "opus".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            super::FIELD_MANAGER.to_owned(),
        ),
    ])
}

pub(super) fn selector_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_owned(), OPUSD.to_owned())])
}

pub(super) fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels()),
        ..ObjectMeta::default()
    }
}

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

pub(super) fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

impl InstallObjects {
    /// The objects for `options`; `token` fills the Secret (`None` leaves the Secret out).
    pub fn new(options: &InstallOptions, token: Option<&str>) -> InstallObjects {
        let ns = options.namespace.as_str();
        InstallObjects {
            namespace: namespace(ns),
            service_account: ServiceAccount {
                metadata: meta(OPUSD, ns),
                ..ServiceAccount::default()
            },
            role: role(ns),
            role_binding: role_binding(ns),
            secret: token.map(|token| token_secret(ns, token)),
            data: data_claim(options),
            stateful_set: stateful_set(options),
            service: service(ns),
            site_replicas: super::replicas::site_replicas(options),
        }
    }

    /// The objects as one multi-document YAML stream, the way `opus install --dry-run` prints it
    /// and `deploy/kubernetes/opus.yaml` holds it.
    pub fn to_yaml(&self) -> Result<String, KubeError> {
        let mut out = String::new();
        push_doc(&mut out, &self.namespace)?;
        push_doc(&mut out, &self.service_account)?;
        push_doc(&mut out, &self.role)?;
        push_doc(&mut out, &self.role_binding)?;
        if let Some(secret) = &self.secret {
            push_doc(&mut out, secret)?;
        }
        push_doc(&mut out, &self.data)?;
        push_doc(&mut out, &self.stateful_set)?;
        push_doc(&mut out, &self.service)?;
        if let Some(r) = &self.site_replicas {
            push_doc(&mut out, &r.deployment)?;
            push_doc(&mut out, &r.service)?;
        }
        Ok(out)
    }
}

fn push_doc(out: &mut String, object: &impl Serialize) -> Result<(), KubeError> {
    out.push_str("---\n");
    out.push_str(&serde_yaml_ng::to_string(object).map_err(|e| KubeError::Render(e.to_string()))?);
    Ok(())
}

/// What `opus install --dry-run` prints: a header saying how to use it, then the objects, without
/// the token Secret (a token never goes into a file; the header says how to create it).
pub fn render_yaml(options: &InstallOptions) -> Result<String, KubeError> {
    options.validate()?;
    let ns = &options.namespace;
    let header = format!(
        "# Opus: opusd in namespace {ns:?}, as `opus install --dry-run` renders it.\n\
         # `opus install` applies the same objects (server-side apply, field manager \"opus\") plus the\n\
         # Secret {TOKEN_SECRET:?} with a generated API token, and waits until opusd is ready.\n\
         # To apply this file with kubectl instead, create the token first:\n\
         #   kubectl create namespace {ns}\n\
         #   kubectl -n {ns} create secret generic {TOKEN_SECRET} --from-literal={TOKEN_KEY}=\"$(openssl rand -hex 32)\"\n\
         #   kubectl apply --server-side --field-manager=opus -f opus.yaml\n"
    );
    Ok(header + &InstallObjects::new(options, None).to_yaml()?)
}

/// The namespace itself, labelled like every object.
fn namespace(ns: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(ns.to_owned()),
            labels: Some(labels()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// What opusd may do in its namespace: run build Jobs and read their pods and logs.
fn role(ns: &str) -> Role {
    Role {
        metadata: meta(OPUSD, ns),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(strings(&["batch"])),
                resources: Some(strings(&["jobs"])),
                // `patch`: build Jobs are created by server-side apply.
                verbs: strings(&["create", "patch", "get", "list", "watch", "delete"]),
                ..PolicyRule::default()
            },
            PolicyRule {
                api_groups: Some(strings(&[""])),
                resources: Some(strings(&["pods"])),
                verbs: strings(&["get", "list", "watch"]),
                ..PolicyRule::default()
            },
            PolicyRule {
                api_groups: Some(strings(&[""])),
                resources: Some(strings(&["pods/log"])),
                verbs: strings(&["get"]),
                ..PolicyRule::default()
            },
        ]),
    }
}

/// Grants the [`role`] to opusd's ServiceAccount.
fn role_binding(ns: &str) -> RoleBinding {
    RoleBinding {
        metadata: meta(OPUSD, ns),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: OPUSD.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: OPUSD.to_owned(),
            namespace: Some(ns.to_owned()),
            ..Subject::default()
        }]),
    }
}

/// The Secret holding the API token.
fn token_secret(ns: &str, token: &str) -> Secret {
    Secret {
        metadata: meta(TOKEN_SECRET, ns),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_owned(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// The claim of opusd's data directory, of the size `options` asks for.
fn data_claim(options: &InstallOptions) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(DATA_PVC, options.namespace.as_str()),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(strings(&["ReadWriteOnce"])),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(options.storage.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The Service in front of opusd's API and sites ports.
fn service(ns: &str) -> Service {
    Service {
        metadata: meta(OPUSD, ns),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels()),
            ports: Some(vec![
                ServicePort {
                    name: Some("api".to_owned()),
                    port: API_PORT,
                    target_port: Some(IntOrString::String("api".to_owned())),
                    app_protocol: Some("grpc".to_owned()),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("sites".to_owned()),
                    port: SITES_PORT,
                    target_port: Some(IntOrString::String("sites".to_owned())),
                    app_protocol: Some("http".to_owned()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// opusd itself: one replica of [`pod_spec`], selected by [`selector_labels`].
fn stateful_set(options: &InstallOptions) -> StatefulSet {
    let mut pod_labels = labels();
    pod_labels.extend(selector_labels());
    StatefulSet {
        metadata: meta(OPUSD, options.namespace.as_str()),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(OPUSD.to_owned()),
            selector: LabelSelector {
                match_labels: Some(selector_labels()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(options)),
            },
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

/// opusd's pod: its ServiceAccount, a non-root security context, the container and its volumes.
fn pod_spec(options: &InstallOptions) -> PodSpec {
    PodSpec {
        service_account_name: Some(OPUSD.to_owned()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            fs_group: Some(RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container(options)],
        volumes: Some(volumes()),
        ..PodSpec::default()
    }
}

/// The opusd container: image, configuration by environment, ports, probes, resources, and a
/// locked-down security context.
fn container(options: &InstallOptions) -> Container {
    Container {
        name: OPUSD.to_owned(),
        image: Some(options.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        env: Some(env_vars(options)),
        ports: Some(vec![
            ContainerPort {
                name: Some("api".to_owned()),
                container_port: API_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("sites".to_owned()),
                container_port: SITES_PORT,
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(grpc_probe(2, 5)),
        liveness_probe: Some(grpc_probe(10, 20)),
        resources: Some(resources()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(strings(&["ALL"])),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts()),
        ..Container::default()
    }
}

/// opusd's configuration, as `OPUS_*` environment variables.
fn env_vars(options: &InstallOptions) -> Vec<EnvVar> {
    let ns = options.namespace.as_str();
    let mut env_vars = vec![
        env("OPUS_LISTEN", &format!("0.0.0.0:{API_PORT}")),
        env("OPUS_SITES_LISTEN", &format!("0.0.0.0:{SITES_PORT}")),
        env("OPUS_DATA_DIR", DATA_DIR),
        env("OPUS_TOKEN_FILE", &format!("{TOKEN_DIR}/{TOKEN_KEY}")),
        env("OPUS_EXECUTOR", "kubernetes"),
        env("OPUS_RUNNER_IMAGE", &options.image),
        // Build pods reach opusd through the Service.
        env(
            "OPUS_RUNNER_SERVER_URL",
            &format!("http://{OPUSD}.{ns}.svc:{API_PORT}"),
        ),
        EnvVar {
            name: "OPUS_KUBERNETES_NAMESPACE".to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.namespace".to_owned(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        env("HOME", DATA_DIR),
    ];
    if let Some(store) = &options.store {
        env_vars.push(env("OPUS_STORE", store));
    }
    env_vars
}

/// A probe asking opusd's gRPC health service.
fn grpc_probe(initial_delay: i32, period: i32) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: API_PORT,
            ..GRPCAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// The container's requests and memory limit.
pub(super) fn resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".to_owned())),
            ("memory".to_owned(), Quantity("64Mi".to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity("1Gi".to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

/// Where the [`volumes`] appear in the container: data, the token (read-only), and /tmp.
fn volume_mounts() -> Vec<VolumeMount> {
    vec![
        VolumeMount {
            name: "data".to_owned(),
            mount_path: DATA_DIR.to_owned(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "token".to_owned(),
            mount_path: TOKEN_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        },
    ]
}

/// The pod's volumes: the data claim, the token Secret, and an empty /tmp (the root filesystem
/// is read-only).
fn volumes() -> Vec<Volume> {
    vec![
        Volume {
            name: "data".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: DATA_PVC.to_owned(),
                ..PersistentVolumeClaimVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "token".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(TOKEN_SECRET.to_owned()),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_name_this_release() {
        let options = InstallOptions::default();
        options.validate().expect("defaults are valid");
        assert_eq!(options.namespace, "opus");
        assert_eq!(options.storage, "10Gi");
        assert!(
            options
                .image
                .ends_with(&format!(":{}", env!("CARGO_PKG_VERSION")))
        );
    }

    #[test]
    fn quantities() {
        for ok in ["10Gi", "500Mi", "1Ti", "1.5Gi", "1000000", "2G"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in [
            "", "Gi", "10 Gi", "10GB", "-1Gi", "0", "1..5Gi", "1.Gi", "ten",
        ] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn bad_options_name_the_flag() {
        let bad = |f: fn(&mut InstallOptions)| {
            let mut o = InstallOptions::default();
            f(&mut o);
            o.validate().expect_err("invalid").to_string()
        };
        assert!(bad(|o| o.namespace = "Opus_CI".into()).starts_with("invalid --namespace"));
        assert!(bad(|o| o.storage = "10GB".into()).starts_with("invalid --storage"));
        assert!(bad(|o| o.image = "".into()).starts_with("invalid --image"));
        assert!(bad(|o| o.store = Some("ftp://x".into())).starts_with("invalid --store"));
    }

    #[test]
    fn the_pod_runs_non_root_with_grpc_probes_and_env_config() {
        let m = InstallObjects::new(
            &InstallOptions {
                store: Some("s3://b/p".into()),
                ..InstallOptions::default()
            },
            None,
        );
        let pod = m.stateful_set.spec.template.spec.expect("pod spec");
        assert_eq!(
            pod.security_context
                .as_ref()
                .and_then(|s| s.run_as_non_root),
            Some(true)
        );
        let c = &pod.containers[0];
        let probe = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.grpc.as_ref())
            .expect("grpc probe");
        assert_eq!(probe.port, API_PORT);
        assert!(c.liveness_probe.as_ref().is_some_and(|p| p.grpc.is_some()));
        assert!(c.resources.as_ref().is_some_and(|r| r.requests.is_some()));
        let env: BTreeMap<_, _> = c
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.as_str(), e.value.as_deref()?)))
            .collect();
        assert_eq!(env["OPUS_LISTEN"], "0.0.0.0:7070");
        assert_eq!(env["OPUS_SITES_LISTEN"], "0.0.0.0:7080");
        assert_eq!(env["OPUS_DATA_DIR"], DATA_DIR);
        assert_eq!(env["OPUS_TOKEN_FILE"], "/etc/opus/token/token");
        assert_eq!(env["OPUS_EXECUTOR"], "kubernetes");
        assert_eq!(env["OPUS_RUNNER_SERVER_URL"], "http://opusd.opus.svc:7070");
        assert_eq!(env["OPUS_STORE"], "s3://b/p");
    }

    #[test]
    fn the_role_allows_jobs_pods_and_logs_only() {
        let m = InstallObjects::new(&InstallOptions::default(), None);
        let resources: Vec<String> = m
            .role
            .rules
            .iter()
            .flatten()
            .flat_map(|r| r.resources.clone().unwrap_or_default())
            .collect();
        assert_eq!(resources, ["jobs", "pods", "pods/log"]);
        // The kubernetes executor applies Jobs (server-side apply is a patch), reads their pods
        // and deletes them.
        let jobs = &m.role.rules.as_ref().expect("rules")[0];
        for verb in ["patch", "get", "list", "delete"] {
            assert!(jobs.verbs.iter().any(|v| v == verb), "{verb}");
        }
    }

    #[test]
    fn yaml_has_every_object_but_the_secret_and_is_stable() {
        let yaml = render_yaml(&InstallOptions::default()).expect("renders");
        assert_eq!(
            yaml,
            render_yaml(&InstallOptions::default()).expect("renders")
        );
        let kinds: Vec<&str> = yaml
            .lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "PersistentVolumeClaim",
                "StatefulSet",
                "Service"
            ]
        );
        assert_eq!(
            yaml.matches("\n---\n").count() + usize::from(yaml.starts_with("---\n")),
            7,
            "{yaml}"
        );
        for doc in yaml.split("---\n").skip(1) {
            let value: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(doc).expect("each document parses");
            assert!(value.get("apiVersion").is_some(), "{doc}");
        }
    }

    #[test]
    fn the_secret_holds_the_token() {
        let m = InstallObjects::new(&InstallOptions::default(), Some("abc"));
        let secret = m.secret.clone().expect("secret");
        assert_eq!(secret.data.expect("data")[TOKEN_KEY].0, b"abc");
        assert!(m.to_yaml().expect("yaml").contains("kind: Secret"));
    }
}

/// `deploy/kubernetes/opus.yaml` is what `opus install --dry-run` prints with default options.
#[cfg(test)]
mod deploy_file {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn deploy_manifest_matches_install_dry_run() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/opus.yaml");
        let expected = render_yaml(&InstallOptions::default()).expect("renders");
        if std::env::var_os("OPUS_UPDATE_DEPLOY").is_some() {
            std::fs::write(&path, &expected).expect("write deploy/kubernetes/opus.yaml");
        }
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        if actual != expected {
            let diff: Vec<String> = expected
                .lines()
                .zip(actual.lines().chain(std::iter::repeat("<missing>")))
                .enumerate()
                .filter(|(_, (e, a))| e != a)
                .take(10)
                .map(|(i, (e, a))| format!("line {}: expected {e:?}, found {a:?}", i + 1))
                .collect();
            panic!(
                "deploy/kubernetes/opus.yaml differs from `opus install --dry-run`:\n{}\n({} lines expected, {} found)\n\
                 regenerate it with\n  cargo run -p opus-cli -- install --dry-run > deploy/kubernetes/opus.yaml\n\
                 or\n  OPUS_UPDATE_DEPLOY=1 cargo test -p opus-core deploy_manifest",
                diff.join("\n"),
                expected.lines().count(),
                actual.lines().count()
            );
        }
    }
}
