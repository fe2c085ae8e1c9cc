//! What the site server adds to a host's answers besides content: `X-Robots-Tag: noindex` on
//! everything that is not production, so previews, staging and version hosts stay out of search
//! engines; and the password in front of protected environments and previews.
//!
//! A custom domain is indexed whatever environment it serves (someone chose to put it on the
//! internet), but asks for the password of its environment: see [`of_custom_domains`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::http::HeaderValue;
use axum::response::Response;

use super::protect::Credential;
use super::{PRODUCTION, SiteKey};

/// The `X-Robots-Tag` value of hosts search engines should not index.
const NOINDEX: HeaderValue = HeaderValue::from_static("noindex");

/// What applies to one host.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// Answers carry `X-Robots-Tag: noindex`.
    pub noindex: bool,
    /// Requests must carry this password (basic auth).
    pub auth: Option<Arc<Credential>>,
}

/// Who may see what, as the deployer last set it.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Passwords of single environments.
    pub envs: HashMap<SiteKey, Arc<Credential>>,
    /// Passwords of all previews, by project.
    pub previews: HashMap<String, Arc<Credential>>,
    /// The environments that are previews.
    pub preview_envs: HashSet<SiteKey>,
}

impl Access {
    /// The password in front of `key`: its own, else its project's previews' if it is one.
    fn credential(&self, key: &SiteKey) -> Option<Arc<Credential>> {
        if let Some(c) = self.envs.get(key) {
            return Some(c.clone());
        }
        if self.preview_envs.contains(key) {
            return self.previews.get(&key.project).cloned();
        }
        None
    }
}

impl HostPolicy {
    /// The policy of a version host (`<label>--v--<project>`): never indexed.
    pub(crate) fn version_host(auth: Option<Arc<Credential>>) -> HostPolicy {
        HostPolicy {
            noindex: true,
            auth,
        }
    }

    /// Adds what this policy says to an answer.
    pub(crate) fn apply(&self, resp: &mut Response) {
        if self.noindex {
            resp.headers_mut().insert("x-robots-tag", NOINDEX);
        }
    }
}

/// The policies of the table's hosts, from the site each one serves: every environment but
/// production is `noindex`; protected ones ask for their password.
pub(super) fn of_hosts<'a>(
    hosts: impl Iterator<Item = (&'a String, &'a SiteKey)>,
    access: &Access,
) -> HashMap<String, HostPolicy> {
    hosts
        .filter_map(|(host, key)| {
            let policy = HostPolicy {
                noindex: key.env != PRODUCTION,
                auth: access.credential(key),
            };
            (policy.noindex || policy.auth.is_some()).then(|| (host.clone(), policy))
        })
        .collect()
}

/// The policies of custom domains: never `noindex`, but a protected environment asks for its
/// password on every host that reaches it, its custom domains too.
pub(super) fn of_custom_domains<'a>(
    hosts: impl Iterator<Item = (&'a String, &'a SiteKey)>,
    access: &Access,
) -> impl Iterator<Item = (String, HostPolicy)> {
    hosts.filter_map(|(host, key)| {
        access.credential(key).map(|auth| {
            (
                host.clone(),
                HostPolicy {
                    noindex: false,
                    auth: Some(auth),
                },
            )
        })
    })
}
