//! Opus in Kubernetes: what `opus install` applies and how, and what opusd's kubernetes executor
//! shares with it (the connection, errors, reading a pod's status).
//!
//! The CLI runs `opus install` with no daemon, so the manifests and the apply live here rather
//! than in opus-server. Main types and functions:
//!
//! - [`InstallOptions`] and [`InstallObjects`]: the typed objects of an installation (Namespace,
//!   ServiceAccount, Role and RoleBinding, the token Secret, the data PersistentVolumeClaim, the
//!   opusd StatefulSet and its Service, and with `--site-replicas` the `opusd sites` Deployment
//!   and its Service, `replicas`); [`render_yaml`] is what `opus install --dry-run` prints
//!   and `deploy/kubernetes/opus.yaml` holds.
//! - [`Cluster`]: a connection to the current kube-context ([`Cluster::connect`]).
//! - [`install`] and [`uninstall`]: server-side apply with field manager [`FIELD_MANAGER`], the wait
//!   for readiness, and the removal that keeps the data volume unless asked to purge.
//! - [`pod_failure_reason`] and [`pod_waiting_reason`]: what a pod's status says (the wait for
//!   opusd's pod here; build pods in opusd's kubernetes executor, which owns the build Jobs).
//! - [`KubeError`]: every failure, with a message that says what to do; [`Op`] names the call
//!   that failed.
//!
//! Architecture Invariant: nothing here prints; progress goes to a callback ([`Progress`]) so the
//! CLI decides what the user sees. Unit tests never touch a cluster.

mod error;
mod install;
mod objects;
mod pod_status;
mod replicas;

pub use error::{KubeError, Op};
pub use install::{
    Cluster, Installed, Progress, UninstallOptions, Wait, install, stateful_set_readiness,
    uninstall,
};
pub use objects::{
    API_PORT, DATA_DIR, DATA_PVC, DEFAULT_NAMESPACE, DEFAULT_STORAGE, InstallObjects,
    InstallOptions, OPUSD, OPUSD_POD, SITES, SITES_PORT, SiteReplicas, TOKEN_DIR, TOKEN_KEY,
    TOKEN_SECRET, default_image, labels, render_yaml, validate_namespace,
};
pub use pod_status::{pod_failure_reason, pod_waiting_reason, with_message};

/// The field manager of every server-side apply by Opus (`kubectl get -o yaml --show-managed-fields`
/// shows it as the owner of the fields Opus sets).
pub const FIELD_MANAGER: &str = "opus";
