//! Applying and removing an installation: [`Cluster`], [`install`], [`uninstall`].

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{Op, error_chain};
use super::objects::{
    DATA_PVC, InstallObjects, InstallOptions, OPUSD, OPUSD_POD, SITES, TOKEN_KEY, TOKEN_SECRET,
};
use super::{FIELD_MANAGER, KubeError, pod_status};

/// A connection to the API server of a kube-context.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    server: String,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The current kube-context, found the way kubectl finds it: `KUBECONFIG`, else
    /// `~/.kube/config`, else the pod's service account when running inside a cluster.
    pub async fn connect() -> Result<Cluster, KubeError> {
        install_crypto_provider();
        let config = Config::infer().await.map_err(|e| {
            // The kubeconfig failure is the one a user can fix; the in-cluster one only says
            // "not in a pod".
            let detail = match std::error::Error::source(&e) {
                Some(kubeconfig) => error_chain(kubeconfig),
                None => error_chain(&e),
            };
            KubeError::NoContext { detail }
        })?;
        Cluster::from_config(config)
    }

    /// The current context of one kubeconfig file.
    pub async fn from_kubeconfig(path: &Path) -> Result<Cluster, KubeError> {
        install_crypto_provider();
        let no_context = |e: &dyn std::error::Error| KubeError::NoContext {
            detail: format!("{}: {}", path.display(), error_chain(e)),
        };
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| no_context(&e))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| no_context(&e))?;
        Cluster::from_config(config)
    }

    fn from_config(config: Config) -> Result<Cluster, KubeError> {
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_owned();
        let client = Client::try_from(config).map_err(|e| KubeError::Client {
            server: server.clone(),
            detail: error_chain(&e),
        })?;
        Ok(Cluster { client, server })
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The kube client, for callers that need more than this module offers.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Asks the API server for its version: the cheapest call that proves the context works.
    pub async fn version(&self) -> Result<String, KubeError> {
        let op = Op {
            server: &self.server,
            verb: "get",
            resource: "version",
            name: "/version",
            namespace: None,
        };
        let info = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| op.error(e))?;
        Ok(info.git_version)
    }

    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }
}

/// What happened, for the CLI to show as progress on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The API server answered.
    Connected {
        /// Its URL.
        server: String,
        /// Its version (`v1.31.2`).
        version: String,
    },
    /// An object was server-side applied.
    Applied {
        /// Its kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// An object was deleted.
    Deleted {
        /// Its kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// An object to delete was not there.
    Absent {
        /// Its kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// An object that uninstall keeps (the data volume and its namespace, unless `--purge`).
    Kept {
        /// Its kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A namespace that exists but was not created by Opus (no `app.kubernetes.io/managed-by: opus`
    /// label), or that the context may not read: install leaves it as it is, and `--purge` does
    /// not delete it.
    ForeignNamespace {
        /// Its name.
        name: String,
    },
    /// Still waiting for opusd to be ready.
    Waiting {
        /// The state seen (`0/1 ready; opusd-0: ContainerCreating`).
        detail: String,
        /// Time waited so far.
        elapsed: Duration,
    },
    /// opusd is ready.
    Ready,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Connected { server, version } => {
                write!(f, "connected to {server} (Kubernetes {version})")
            }
            Progress::Applied { kind, name } => write!(f, "applied {kind} {name}"),
            Progress::Deleted { kind, name } => write!(f, "deleted {kind} {name}"),
            Progress::Absent { kind, name } => write!(f, "{kind} {name} was not there"),
            Progress::Kept { kind, name } => {
                write!(f, "kept {kind} {name} (delete it with --purge)")
            }
            Progress::ForeignNamespace { name } => write!(
                f,
                "namespace {name} was not created by opus (or cannot be read): left as it is"
            ),
            Progress::Waiting { detail, elapsed } => {
                write!(
                    f,
                    "waiting for opusd to be ready: {detail} ({}s)",
                    elapsed.as_secs()
                )
            }
            Progress::Ready => write!(f, "opusd is ready"),
        }
    }
}

/// How long [`install`] waits for opusd, and how often it looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// Give up after this long (`Duration::ZERO`: do not wait at all).
    pub timeout: Duration,
    /// Time between two looks at the StatefulSet.
    pub interval: Duration,
}

impl Default for Wait {
    fn default() -> Self {
        Wait {
            timeout: Duration::from_secs(300),
            interval: Duration::from_secs(2),
        }
    }
}

/// The result of [`install`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The namespace.
    pub namespace: String,
    /// The API token clients send (`opus --token`).
    pub token: String,
    /// Whether the token was generated now (`false`: an earlier install's token was kept).
    pub token_created: bool,
    /// Whether opusd was seen ready (`false` only when asked not to wait).
    pub ready: bool,
}

impl Installed {
    /// The command that makes the API and the sites reachable from this machine.
    pub fn port_forward_command(&self) -> String {
        format!(
            "kubectl -n {} port-forward svc/{OPUSD} {} {}",
            self.namespace,
            super::objects::API_PORT,
            super::objects::SITES_PORT
        )
    }
}

/// Server-side applies (field manager `opus`, taking over conflicting fields) every object of an
/// installation, keeping the API token of an earlier install, then waits until opusd is ready.
/// Running it twice sends the same objects, so the second run changes nothing. A namespace that
/// exists and was not created by Opus is used as it is, not labelled
/// ([`Progress::ForeignNamespace`]).
pub async fn install(
    cluster: &Cluster,
    options: &InstallOptions,
    wait: Wait,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, KubeError> {
    options.validate()?;
    connected(cluster, progress).await?;
    let ns = options.namespace.as_str();
    let (token, token_created) = match kept_token(cluster, ns).await? {
        Some(token) => (token, false),
        None => (generate_token()?, true),
    };
    let manifests = InstallObjects::new(options, Some(&token));
    apply_all(cluster, &manifests, ns, progress).await?;
    let ready = if wait.timeout.is_zero() {
        false
    } else {
        wait_ready(cluster, ns, wait, progress).await?;
        true
    };
    Ok(Installed {
        namespace: ns.to_owned(),
        token,
        token_created,
        ready,
    })
}

/// Asks the cluster for its version and reports the connection.
async fn connected(cluster: &Cluster, progress: &mut dyn FnMut(Progress)) -> Result<(), KubeError> {
    let version = cluster.version().await?;
    progress(Progress::Connected {
        server: cluster.server.clone(),
        version,
    });
    Ok(())
}

/// The API token of an earlier install, when its Secret holds a non-empty one.
async fn kept_token(cluster: &Cluster, ns: &str) -> Result<Option<String>, KubeError> {
    let secrets: Api<Secret> = cluster.api(ns);
    let existing = get_opt(cluster, &secrets, "secrets", TOKEN_SECRET, Some(ns)).await?;
    Ok(existing
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove(TOKEN_KEY))
        .and_then(|b| String::from_utf8(b.0).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

/// Applies every object of `m`, in dependency order; the namespace only when Opus created it.
async fn apply_all(
    cluster: &Cluster,
    m: &InstallObjects,
    ns: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), KubeError> {
    if namespace_is_ours(cluster, ns).await? {
        let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
        apply(
            cluster,
            &namespaces,
            "namespaces",
            None,
            &m.namespace,
            progress,
        )
        .await?;
    } else {
        progress(Progress::ForeignNamespace {
            name: ns.to_owned(),
        });
    }
    apply(
        cluster,
        &cluster.api::<ServiceAccount>(ns),
        "serviceaccounts",
        Some(ns),
        &m.service_account,
        progress,
    )
    .await?;
    apply(
        cluster,
        &cluster.api::<Role>(ns),
        ROLES,
        Some(ns),
        &m.role,
        progress,
    )
    .await?;
    apply(
        cluster,
        &cluster.api::<RoleBinding>(ns),
        ROLE_BINDINGS,
        Some(ns),
        &m.role_binding,
        progress,
    )
    .await?;
    if let Some(secret) = &m.secret {
        let secrets: Api<Secret> = cluster.api(ns);
        apply(cluster, &secrets, "secrets", Some(ns), secret, progress).await?;
    }
    apply(
        cluster,
        &cluster.api::<PersistentVolumeClaim>(ns),
        "persistentvolumeclaims",
        Some(ns),
        &m.data,
        progress,
    )
    .await?;
    let stateful_sets: Api<StatefulSet> = cluster.api(ns);
    apply(
        cluster,
        &stateful_sets,
        "statefulsets.apps",
        Some(ns),
        &m.stateful_set,
        progress,
    )
    .await?;
    apply(
        cluster,
        &cluster.api::<Service>(ns),
        "services",
        Some(ns),
        &m.service,
        progress,
    )
    .await?;
    if let Some(r) = &m.site_replicas {
        apply(
            cluster,
            &cluster.api::<Deployment>(ns),
            "deployments.apps",
            Some(ns),
            &r.deployment,
            progress,
        )
        .await?;
        apply(
            cluster,
            &cluster.api::<Service>(ns),
            "services",
            Some(ns),
            &r.service,
            progress,
        )
        .await?;
    }
    Ok(())
}

/// What [`uninstall`] removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UninstallOptions {
    /// The namespace of the installation.
    pub namespace: String,
    /// Also delete the data volume and the namespace (and so every build Job left in it).
    pub purge: bool,
}

impl Default for UninstallOptions {
    fn default() -> Self {
        UninstallOptions {
            namespace: super::objects::DEFAULT_NAMESPACE.to_owned(),
            purge: false,
        }
    }
}

/// Deletes what [`install`] applied, newest first. The data volume and the namespace stay unless
/// `purge`, so that installing again finds the projects, builds and versions where they were;
/// even with `purge`, a namespace Opus did not create is not deleted.
/// Objects already gone are reported as [`Progress::Absent`], so uninstalling twice is fine.
pub async fn uninstall(
    cluster: &Cluster,
    options: &UninstallOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), KubeError> {
    super::objects::validate_namespace(&options.namespace)?;
    connected(cluster, progress).await?;
    delete_release(cluster, options.namespace.as_str(), progress).await?;
    if options.purge {
        purge(cluster, options.namespace.as_str(), progress).await
    } else {
        progress(Progress::Kept {
            kind: "PersistentVolumeClaim",
            name: DATA_PVC.to_owned(),
        });
        progress(Progress::Kept {
            kind: "Namespace",
            name: options.namespace.clone(),
        });
        Ok(())
    }
}

/// Roles, as `kubectl auth can-i` spells the resource.
const ROLES: &str = "roles.rbac.authorization.k8s.io";
/// Role bindings, as `kubectl auth can-i` spells the resource.
const ROLE_BINDINGS: &str = "rolebindings.rbac.authorization.k8s.io";

/// Deletes opusd and what it runs as (everything but the data volume and the namespace), newest
/// first.
async fn delete_release(
    cluster: &Cluster,
    namespace: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), KubeError> {
    let n = namespace;
    // Site replicas, when an install added them (nothing is said of them otherwise).
    let deployments: Api<Deployment> = cluster.api(n);
    if get_opt(cluster, &deployments, "deployments.apps", SITES, Some(n))
        .await?
        .is_some()
    {
        delete_in::<Service>(cluster, n, "services", SITES, progress).await?;
        delete_in::<Deployment>(cluster, n, "deployments.apps", SITES, progress).await?;
    }
    delete_in::<Service>(cluster, n, "services", OPUSD, progress).await?;
    delete_in::<StatefulSet>(cluster, n, "statefulsets.apps", OPUSD, progress).await?;
    delete_in::<Secret>(cluster, n, "secrets", TOKEN_SECRET, progress).await?;
    delete_in::<RoleBinding>(cluster, n, ROLE_BINDINGS, OPUSD, progress).await?;
    delete_in::<Role>(cluster, n, ROLES, OPUSD, progress).await?;
    delete_in::<ServiceAccount>(cluster, n, "serviceaccounts", OPUSD, progress).await?;
    Ok(())
}

/// Deletes the data volume, and the namespace when Opus created it.
async fn purge(
    cluster: &Cluster,
    namespace: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), KubeError> {
    delete_in::<PersistentVolumeClaim>(
        cluster,
        namespace,
        "persistentvolumeclaims",
        DATA_PVC,
        progress,
    )
    .await?;
    if namespace_is_ours(cluster, namespace).await? {
        let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
        delete(
            cluster,
            &namespaces,
            "namespaces",
            None,
            namespace,
            progress,
        )
        .await?;
    } else {
        progress(Progress::ForeignNamespace {
            name: namespace.to_owned(),
        });
    }
    Ok(())
}

async fn apply<K>(
    cluster: &Cluster,
    api: &Api<K>,
    resource: &'static str,
    namespace: Option<&str>,
    object: &K,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), KubeError>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let op = Op {
        server: &cluster.server,
        verb: "patch",
        resource,
        name: &name,
        namespace,
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(object))
        .await
        .map_err(|e| op.error(e))?;
    progress(Progress::Applied {
        kind: kind_of::<K>(),
        name,
    });
    Ok(())
}

/// Deletes the `K` named `name` in `namespace`.
async fn delete_in<K>(
    cluster: &Cluster,
    namespace: &str,
    resource: &'static str,
    name: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), KubeError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + fmt::Debug,
{
    delete(
        cluster,
        &cluster.api::<K>(namespace),
        resource,
        Some(namespace),
        name,
        progress,
    )
    .await
}

async fn delete<K>(
    cluster: &Cluster,
    api: &Api<K>,
    resource: &'static str,
    namespace: Option<&str>,
    name: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), KubeError>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug,
{
    let op = Op {
        server: &cluster.server,
        verb: "delete",
        resource,
        name,
        namespace,
    };
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => progress(Progress::Deleted {
            kind: kind_of::<K>(),
            name: name.to_owned(),
        }),
        Err(kube::Error::Api(status)) if status.code == 404 => progress(Progress::Absent {
            kind: kind_of::<K>(),
            name: name.to_owned(),
        }),
        Err(e) => return Err(op.error(e)),
    }
    Ok(())
}

async fn get_opt<K>(
    cluster: &Cluster,
    api: &Api<K>,
    resource: &'static str,
    name: &str,
    namespace: Option<&str>,
) -> Result<Option<K>, KubeError>
where
    K: Clone + DeserializeOwned + fmt::Debug,
{
    let op = Op {
        server: &cluster.server,
        verb: "get",
        resource,
        name,
        namespace,
    };
    api.get_opt(name).await.map_err(|e| op.error(e))
}

/// Whether the namespace is Opus's to create, label and delete: it does not exist yet, or it
/// carries the `app.kubernetes.io/managed-by: opus` label of an earlier install. A namespace that
/// someone else made (`default`, a team's namespace), or that the context may not read (a user
/// with rights in that namespace only), is left alone.
async fn namespace_is_ours(cluster: &Cluster, namespace: &str) -> Result<bool, KubeError> {
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let op = Op {
        server: &cluster.server,
        verb: "get",
        resource: "namespaces",
        name: namespace,
        namespace: None,
    };
    match namespaces.get_opt(namespace).await {
        Ok(None) => Ok(true),
        Ok(Some(existing)) => Ok(existing
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/managed-by"))
            .is_some_and(|v| v == FIELD_MANAGER)),
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(false),
        Err(e) => Err(op.error(e)),
    }
}

fn kind_of<K: kube::Resource<DynamicType = ()>>() -> &'static str {
    // The kinds applied here all have static names; `kind(&())` returns a Cow of a &'static str.
    match K::kind(&()) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "object",
    }
}

/// 32 random bytes from the operating system, as 64 hex digits.
fn generate_token() -> Result<String, KubeError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| KubeError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// Polls the StatefulSet until its pod runs the applied revision and is ready, reporting what the
/// pod waits for (`ContainerCreating`) while it is not, and giving up at once when the pod cannot
/// start (`ImagePullBackOff`, `CrashLoopBackOff`: see [`pod_status::pod_failure_reason`]).
async fn wait_ready(
    cluster: &Cluster,
    ns: &str,
    wait: Wait,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), KubeError> {
    let stateful_sets: Api<StatefulSet> = cluster.api(ns);
    let pods: Api<Pod> = cluster.api(ns);
    let start = Instant::now();
    loop {
        let sts = get_opt(
            cluster,
            &stateful_sets,
            "statefulsets.apps",
            OPUSD,
            Some(ns),
        )
        .await?;
        let (ready, mut detail) = match &sts {
            Some(sts) => stateful_set_readiness(sts),
            None => (false, "the StatefulSet is not there yet".to_owned()),
        };
        if ready {
            progress(Progress::Ready);
            return Ok(());
        }
        // The pod's own state says why (image pull, crash loop); reading it is optional: a user
        // allowed to install but not to read pods still gets the count.
        if let Ok(Some(pod)) = pods.get_opt(OPUSD_POD).await {
            if let Some(reason) = pod_status::pod_failure_reason(&pod) {
                return Err(KubeError::PodFailing {
                    namespace: ns.to_owned(),
                    reason,
                });
            }
            if let Some(reason) = pod_status::pod_waiting_reason(&pod) {
                detail = format!("{detail}; {OPUSD_POD}: {reason}");
            }
        }
        let elapsed = start.elapsed();
        if elapsed >= wait.timeout {
            return Err(KubeError::NotReady {
                namespace: ns.to_owned(),
                waited: elapsed,
                detail,
            });
        }
        progress(Progress::Waiting { detail, elapsed });
        tokio::time::sleep(wait.interval.min(wait.timeout.saturating_sub(elapsed))).await;
    }
}

/// Whether a StatefulSet has all its replicas ready at the current revision, and a short account.
pub fn stateful_set_readiness(sts: &StatefulSet) -> (bool, String) {
    let wanted = sts.spec.replicas.unwrap_or(1);
    let generation = sts.metadata.generation.unwrap_or(0);
    let Some(status) = &sts.status else {
        return (false, format!("0/{wanted} ready"));
    };
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0) >= generation;
    let rolled =
        status.update_revision.is_none() || status.current_revision == status.update_revision;
    let detail = if observed && ready >= wanted && updated < wanted {
        format!("{ready}/{wanted} ready, {updated}/{wanted} updated")
    } else {
        format!("{ready}/{wanted} ready")
    };
    (
        observed && ready >= wanted && updated >= wanted && rolled,
        detail,
    )
}

/// Selects rustls' ring provider for the process. Both ring (tonic, kube) and aws-lc-rs (the
/// object store's S3 client) are compiled in, so rustls cannot pick one by itself; a provider
/// installed earlier by someone else is kept.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};

    use super::*;

    fn sts(generation: i64, status: Option<StatefulSetStatus>) -> StatefulSet {
        StatefulSet {
            metadata: kube::api::ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: StatefulSetSpec {
                replicas: Some(1),
                ..Default::default()
            },
            status,
        }
    }

    #[test]
    fn readiness_needs_the_observed_generation_ready_and_updated_replicas() {
        assert_eq!(
            stateful_set_readiness(&sts(1, None)),
            (false, "0/1 ready".into())
        );
        let ready = StatefulSetStatus {
            observed_generation: Some(2),
            replicas: 1,
            ready_replicas: Some(1),
            updated_replicas: Some(1),
            current_revision: Some("r2".into()),
            update_revision: Some("r2".into()),
            ..Default::default()
        };
        assert!(stateful_set_readiness(&sts(2, Some(ready.clone()))).0);
        assert!(
            !stateful_set_readiness(&sts(3, Some(ready.clone()))).0,
            "an older generation"
        );
        let rolling = StatefulSetStatus {
            current_revision: Some("r1".into()),
            ..ready.clone()
        };
        assert!(
            !stateful_set_readiness(&sts(2, Some(rolling))).0,
            "still on the old revision"
        );
        let starting = StatefulSetStatus {
            ready_replicas: Some(0),
            ..ready
        };
        assert_eq!(
            stateful_set_readiness(&sts(2, Some(starting))),
            (false, "0/1 ready".into())
        );
    }

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let a = generate_token().expect("token");
        let b = generate_token().expect("token");
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn progress_lines() {
        let line = |p: Progress| p.to_string();
        assert_eq!(
            line(Progress::Applied {
                kind: "StatefulSet",
                name: "opusd".into()
            }),
            "applied StatefulSet opusd"
        );
        assert_eq!(
            line(Progress::Kept {
                kind: "PersistentVolumeClaim",
                name: "opusd-data".into()
            }),
            "kept PersistentVolumeClaim opusd-data (delete it with --purge)"
        );
        assert_eq!(
            line(Progress::Waiting {
                detail: "0/1 ready".into(),
                elapsed: Duration::from_millis(12_500)
            }),
            "waiting for opusd to be ready: 0/1 ready (12s)"
        );
        assert_eq!(
            line(Progress::ForeignNamespace {
                name: "team".into()
            }),
            "namespace team was not created by opus (or cannot be read): left as it is"
        );
    }

    #[test]
    fn port_forward_line() {
        let i = Installed {
            namespace: "ci".into(),
            token: "t".into(),
            token_created: true,
            ready: true,
        };
        assert_eq!(
            i.port_forward_command(),
            "kubectl -n ci port-forward svc/opusd 7070 7080"
        );
    }
}
