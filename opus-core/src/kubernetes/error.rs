//! [`KubeError`]: everything that can go wrong talking to Kubernetes, each message saying what to do.

use std::time::Duration;

use thiserror::Error;

/// Why `opus install`, `opus uninstall` or a Kubernetes call of opusd failed. Every message names the
/// object and the next step, so that the CLI can print it as it is.
#[derive(Debug, Error)]
pub enum KubeError {
    /// An install option that Kubernetes would refuse (a namespace that is not a DNS label, a storage
    /// size that is not a quantity).
    #[error("invalid {option}: {message}")]
    InvalidOption {
        /// The option, as the CLI spells it (`--namespace`).
        option: &'static str,
        /// What is wrong and what is expected.
        message: String,
    },
    /// Neither a kubeconfig (`KUBECONFIG`, `~/.kube/config`) nor an in-cluster service account.
    #[error(
        "no Kubernetes context found: set KUBECONFIG or ~/.kube/config (for example with \
         `kubectl config use-context <name>`, or your cloud's `get-credentials` command), \
         or run inside a cluster ({detail})"
    )]
    NoContext {
        /// What kube reported for the kubeconfig it tried.
        detail: String,
    },
    /// The client could not be built from the context (bad certificate data, unsupported auth).
    #[error(
        "cannot use the Kubernetes context for {server}: {detail} (check it with `kubectl cluster-info`)"
    )]
    Client {
        /// The API server URL of the context.
        server: String,
        /// kube's message.
        detail: String,
    },
    /// The API server did not answer (wrong address, cluster down, TLS failure).
    #[error(
        "cannot reach the Kubernetes API at {server}: {detail} (is the cluster running and the \
         current context right? check with `kubectl config current-context` and `kubectl cluster-info`)"
    )]
    Unreachable {
        /// The API server URL of the context.
        server: String,
        /// The transport error.
        detail: String,
    },
    /// 401: the context's credentials were not accepted.
    #[error(
        "the Kubernetes API at {server} did not accept the credentials of the current context \
         (401 Unauthorized: {message}); log in again or refresh the context's credentials, then retry"
    )]
    Unauthorized {
        /// The API server URL of the context.
        server: String,
        /// The API server's message.
        message: String,
    },
    /// 403: the context's user may not do this.
    #[error("{}", forbidden_message(verb, resource, name, namespace.as_deref(), message))]
    Forbidden {
        /// The refused verb (`get`, `patch`, `delete`).
        verb: &'static str,
        /// The resource, as `kubectl auth can-i` spells it (`statefulsets.apps`).
        resource: &'static str,
        /// The object's name.
        name: String,
        /// The namespace, for namespaced objects.
        namespace: Option<String>,
        /// The API server's message.
        message: String,
    },
    /// Any other refusal of the API server (422 invalid object, 409 conflict, 5xx).
    #[error("{verb} {resource} {name:?} failed: {message} (HTTP {code})")]
    Api {
        /// The verb.
        verb: &'static str,
        /// The resource.
        resource: &'static str,
        /// The object's name.
        name: String,
        /// The HTTP status code.
        code: u16,
        /// The API server's message.
        message: String,
    },
    /// An answer that is not what the API promises (a body that does not decode).
    #[error("unexpected answer to {verb} {resource} {name:?}: {detail}")]
    Protocol {
        /// The verb.
        verb: &'static str,
        /// The resource.
        resource: &'static str,
        /// The object's name.
        name: String,
        /// What went wrong.
        detail: String,
    },
    /// opusd did not become ready in time. Everything was applied; only the wait gave up.
    #[error(
        "opusd did not become ready within {} ({detail}); everything is applied, so look at \
         `kubectl -n {namespace} describe pod opusd-0` and `kubectl -n {namespace} logs opusd-0`, \
         then run `opus install` again to keep waiting",
        seconds(*waited)
    )]
    NotReady {
        /// The namespace.
        namespace: String,
        /// How long the wait lasted.
        waited: Duration,
        /// The last state seen (`0/1 ready; opusd-0: ImagePullBackOff ...`).
        detail: String,
    },
    /// opusd's pod cannot start (an image that cannot be pulled, a crash loop): waiting longer
    /// would not help. Everything was applied; Kubernetes keeps retrying.
    #[error(
        "opusd cannot start: {reason}; everything is applied and Kubernetes keeps retrying, so fix \
         the cause (for example `opus install --image <an image the cluster can pull>`), see \
         `kubectl -n {namespace} describe pod opusd-0` and `kubectl -n {namespace} logs opusd-0`, \
         then run `opus install` again"
    )]
    PodFailing {
        /// The namespace.
        namespace: String,
        /// What the pod's status says ([`super::pod_failure_reason`]).
        reason: String,
    },
    /// The manifests could not be rendered as YAML.
    #[error("cannot render the manifests as YAML: {0}")]
    Render(String),
    /// The operating system's random number generator failed while generating the API token.
    #[error("cannot generate the API token: {0}")]
    Random(String),
}

/// `300s`, or `250ms` below a second.
fn seconds(d: Duration) -> String {
    if d.as_secs() >= 1 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn forbidden_message(
    verb: &str,
    resource: &str,
    name: &str,
    namespace: Option<&str>,
    message: &str,
) -> String {
    let (place, can_i) = match namespace {
        Some(ns) => (
            format!(" in namespace {ns:?}"),
            format!("kubectl auth can-i {verb} {resource} -n {ns}"),
        ),
        None => (
            String::new(),
            format!("kubectl auth can-i {verb} {resource}"),
        ),
    };
    format!(
        "the Kubernetes API refused to {verb} {resource} {name:?}{place} (403 Forbidden: {message}); \
         the current context's user needs that permission: ask a cluster admin, or switch context \
         (check with `{can_i}`)"
    )
}

/// What a request was doing, to turn kube's error into a [`KubeError`] that names it.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    /// The API server URL, for transport errors.
    pub server: &'a str,
    /// The verb.
    pub verb: &'static str,
    /// The resource as `kubectl auth can-i` spells it.
    pub resource: &'static str,
    /// The object's name.
    pub name: &'a str,
    /// The namespace, for namespaced objects.
    pub namespace: Option<&'a str>,
}

impl Op<'_> {
    /// Classifies a kube error by HTTP status (401, 403, other) or transport failure.
    pub fn error(&self, e: kube::Error) -> KubeError {
        match e {
            kube::Error::Api(status) => match status.code {
                401 => KubeError::Unauthorized {
                    server: self.server.to_owned(),
                    message: status.message,
                },
                403 => KubeError::Forbidden {
                    verb: self.verb,
                    resource: self.resource,
                    name: self.name.to_owned(),
                    namespace: self.namespace.map(str::to_owned),
                    message: status.message,
                },
                code => KubeError::Api {
                    verb: self.verb,
                    resource: self.resource,
                    name: self.name.to_owned(),
                    code,
                    message: if status.message.is_empty() {
                        status.reason
                    } else {
                        status.message
                    },
                },
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::RustlsTls(_) => {
                KubeError::Unreachable {
                    server: self.server.to_owned(),
                    detail: error_chain(&e),
                }
            }
            kube::Error::Auth(_) => KubeError::Unauthorized {
                server: self.server.to_owned(),
                message: error_chain(&e),
            },
            other => KubeError::Protocol {
                verb: self.verb,
                resource: self.resource,
                name: self.name.to_owned(),
                detail: error_chain(&other),
            },
        }
    }
}

/// An error and its sources on one line, `outer: inner: innermost`, without repeats.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status {
                code,
                message: message.into(),
                reason: "Forbidden".into(),
                ..Default::default()
            }
            .boxed(),
        )
    }

    const OP: Op<'static> = Op {
        server: "https://k8s.example:6443",
        verb: "patch",
        resource: "statefulsets.apps",
        name: "opusd",
        namespace: Some("opus"),
    };

    #[test]
    fn forbidden_names_the_verb_resource_and_the_check_command() {
        let e = OP.error(status(
            403,
            "user \"dev\" cannot patch resource \"statefulsets\"",
        ));
        let text = e.to_string();
        assert!(matches!(e, KubeError::Forbidden { .. }), "{e:?}");
        assert!(
            text.contains("refused to patch statefulsets.apps \"opusd\" in namespace \"opus\""),
            "{text}"
        );
        assert!(
            text.contains("kubectl auth can-i patch statefulsets.apps -n opus"),
            "{text}"
        );
        assert!(text.contains("user \"dev\" cannot patch"), "{text}");
    }

    #[test]
    fn forbidden_on_a_cluster_scoped_object_has_no_namespace() {
        let op = Op {
            resource: "namespaces",
            namespace: None,
            ..OP
        };
        let text = op.error(status(403, "no")).to_string();
        assert!(
            text.contains("refused to patch namespaces \"opusd\" (403"),
            "{text}"
        );
        assert!(
            text.contains("`kubectl auth can-i patch namespaces`"),
            "{text}"
        );
    }

    #[test]
    fn unauthorized_and_other_codes_are_told_apart() {
        assert!(matches!(
            OP.error(status(401, "expired")),
            KubeError::Unauthorized { .. }
        ));
        let e = OP.error(status(422, "spec.replicas: Invalid value"));
        assert_eq!(
            e.to_string(),
            "patch statefulsets.apps \"opusd\" failed: spec.replicas: Invalid value (HTTP 422)"
        );
    }

    #[test]
    fn no_context_says_what_to_set() {
        let e = KubeError::NoContext {
            detail: "failed to read kubeconfig".into(),
        };
        assert!(
            e.to_string()
                .starts_with("no Kubernetes context found: set KUBECONFIG or ~/.kube/config")
        );
    }
}
