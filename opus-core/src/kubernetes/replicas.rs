//! The site replicas `opus install --site-replicas N` adds: a Deployment running `opusd sites`
//! (only the site server, following what opusd writes into the shared object store, woken by
//! opusd's event stream) and a Service in front of it. The replicas keep their disk cache in an
//! emptyDir: it is a cache, refilled from the store.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::objects::{
    API_PORT, InstallOptions, OPUSD, RUN_AS_USER, SITES_PORT, TOKEN_DIR, TOKEN_KEY, TOKEN_SECRET,
    env, meta, resources, strings,
};

/// The name of the replicas' Deployment and Service (and their pods' `app.kubernetes.io/name`,
/// so that opusd's Service never selects them).
pub const SITES: &str = "opusd-sites";
/// Where a replica keeps its disk cache (an emptyDir).
const CACHE_DIR: &str = "/var/cache/opus-sites";

/// The replicas' objects.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteReplicas {
    /// `opusd sites`, `site_replicas` pods.
    pub deployment: Deployment,
    /// The sites port of every replica.
    pub service: Service,
}

/// The replicas' objects, when `options` asks for any.
pub(super) fn site_replicas(options: &InstallOptions) -> Option<SiteReplicas> {
    if options.site_replicas == 0 {
        return None;
    }
    let ns = options.namespace.as_str();
    Some(SiteReplicas {
        deployment: deployment(options),
        service: service(ns),
    })
}

/// The labels of the replicas' objects: opusd's, with the name replaced.
fn labels() -> BTreeMap<String, String> {
    let mut l = super::objects::labels();
    l.insert("app.kubernetes.io/name".to_owned(), SITES.to_owned());
    l
}

fn selector() -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_owned(), SITES.to_owned())])
}

fn replica_meta(ns: &str) -> ObjectMeta {
    ObjectMeta {
        labels: Some(labels()),
        ..meta(SITES, ns)
    }
}

fn deployment(options: &InstallOptions) -> Deployment {
    let ns = options.namespace.as_str();
    Deployment {
        metadata: replica_meta(ns),
        spec: DeploymentSpec {
            replicas: Some(i32::try_from(options.site_replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(selector()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    // The replicas need no Kubernetes API access.
                    automount_service_account_token: Some(false),
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
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

fn container(options: &InstallOptions) -> Container {
    let ns = options.namespace.as_str();
    let mut env_vars = vec![
        env("OPUS_SITES_LISTEN", &format!("0.0.0.0:{SITES_PORT}")),
        env("OPUS_SITE_CACHE_DIR", CACHE_DIR),
        env("OPUS_API", &format!("http://{OPUSD}.{ns}.svc:{API_PORT}")),
        env("OPUS_TOKEN_FILE", &format!("{TOKEN_DIR}/{TOKEN_KEY}")),
    ];
    if let Some(store) = &options.store {
        env_vars.push(env("OPUS_STORE", store));
    }
    let probe = |delay, period| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("sites".to_owned()),
            ..TCPSocketAction::default()
        }),
        initial_delay_seconds: Some(delay),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    Container {
        name: SITES.to_owned(),
        image: Some(options.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(strings(&["sites"])),
        env: Some(env_vars),
        ports: Some(vec![ContainerPort {
            name: Some("sites".to_owned()),
            container_port: SITES_PORT,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe(1, 5)),
        liveness_probe: Some(probe(10, 20)),
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
        volume_mounts: Some(vec![
            VolumeMount {
                name: "cache".to_owned(),
                mount_path: CACHE_DIR.to_owned(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "token".to_owned(),
                mount_path: TOKEN_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

fn volumes() -> Vec<Volume> {
    vec![
        Volume {
            name: "cache".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
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
    ]
}

fn service(ns: &str) -> Service {
    Service {
        metadata: replica_meta(ns),
        spec: Some(ServiceSpec {
            selector: Some(selector()),
            ports: Some(vec![ServicePort {
                name: Some("sites".to_owned()),
                port: SITES_PORT,
                target_port: Some(IntOrString::String("sites".to_owned())),
                app_protocol: Some("http".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::InstallObjects;

    fn with_replicas(n: u32) -> InstallOptions {
        InstallOptions {
            store: Some("s3://b/opus".into()),
            site_replicas: n,
            ..InstallOptions::default()
        }
    }

    #[test]
    fn no_replicas_unless_asked() {
        assert!(
            InstallObjects::new(&InstallOptions::default(), None)
                .site_replicas
                .is_none()
        );
    }

    #[test]
    fn replicas_run_opusd_sites_on_the_store_woken_by_opusd() {
        let m = InstallObjects::new(&with_replicas(3), None);
        let r = m.site_replicas.expect("replicas");
        let spec = r.deployment.spec;
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.expect("pod");
        let c = &pod.containers[0];
        assert_eq!(c.args.as_deref(), Some(&["sites".to_owned()][..]));
        let env: BTreeMap<_, _> = c
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.as_str(), e.value.as_deref()?)))
            .collect();
        assert_eq!(env["OPUS_STORE"], "s3://b/opus");
        assert_eq!(env["OPUS_API"], "http://opusd.opus.svc:7070");
        assert_eq!(env["OPUS_TOKEN_FILE"], "/etc/opus/token/token");
        assert_eq!(env["OPUS_SITES_LISTEN"], "0.0.0.0:7080");
        // opusd's Service must not select the replicas, nor theirs opusd.
        let sts_selector = m.service.spec.expect("spec").selector.expect("selector");
        let replica_labels = spec
            .template
            .metadata
            .expect("meta")
            .labels
            .expect("labels");
        assert!(
            sts_selector
                .iter()
                .any(|(k, v)| replica_labels.get(k) != Some(v))
        );
        let svc = r.service.spec.expect("spec");
        assert_eq!(svc.selector, Some(selector()));
        assert_eq!(svc.ports.expect("ports")[0].port, SITES_PORT);
    }

    #[test]
    fn replicas_need_a_shared_object_store() {
        for store in [None, Some("file:///data/artifacts")] {
            let options = InstallOptions {
                store: store.map(str::to_owned),
                site_replicas: 2,
                ..InstallOptions::default()
            };
            let err = options.validate().expect_err("refused").to_string();
            assert!(err.starts_with("invalid --site-replicas"), "{err}");
            assert!(err.contains("--store s3://"), "{err}");
        }
        with_replicas(2).validate().expect("valid");
    }

    #[test]
    fn the_yaml_ends_with_the_replicas() {
        let yaml = crate::kubernetes::render_yaml(&with_replicas(2)).expect("renders");
        let kinds: Vec<&str> = yaml
            .lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .collect();
        assert_eq!(&kinds[kinds.len() - 2..], ["Deployment", "Service"]);
        assert!(yaml.contains("name: opusd-sites"));
    }
}
