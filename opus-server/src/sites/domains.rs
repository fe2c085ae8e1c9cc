//! Custom domains in the site table: host name -> the environment it serves.
//!
//! The map is part of each [`super::SiteTable`] snapshot, so a request sees the domains and the
//! deployed versions of one moment. The site server never reads the metadata store: whoever
//! changes domains there (`crate::domains::DomainRouter`) hands the new map over
//! ([`super::SiteServer::set_domains`]), and whoever follows them (the certificate manager)
//! watches the table's map ([`super::SiteServer::watch_domains`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::{SiteKey, SiteVersion};

/// Custom host names (lowercase, no trailing dot) and the environment each one serves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomDomains(HashMap<String, SiteKey>);

impl CustomDomains {
    /// The map of `(host, site)` pairs.
    pub fn new(domains: impl IntoIterator<Item = (String, SiteKey)>) -> CustomDomains {
        CustomDomains(domains.into_iter().collect())
    }

    /// The environment `host` serves, if it is a custom domain.
    pub fn site_of(&self, host: &str) -> Option<&SiteKey> {
        self.0.get(host)
    }

    /// Every custom host name.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The hosts that serve `key`.
    pub fn hosts_of<'a>(&'a self, key: &'a SiteKey) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(_, k)| *k == key)
            .map(|(h, _)| h.as_str())
    }

    /// The same map without `project`'s domains.
    pub fn without_project(&self, project: &str) -> CustomDomains {
        CustomDomains(
            self.0
                .iter()
                .filter(|(_, k)| k.project != project)
                .map(|(h, k)| (h.clone(), k.clone()))
                .collect(),
        )
    }

    /// Each custom domain and the environment it serves.
    pub(super) fn routes(&self) -> impl Iterator<Item = (&String, &SiteKey)> {
        self.0.iter()
    }

    /// Adds a route for each custom domain whose environment is deployed. Custom domains are
    /// never under the sites' own domain (refused when added), so they never take a host from
    /// an environment; should one still do so, the environment's own host wins.
    pub(super) fn route_into(
        &self,
        sites: &HashMap<SiteKey, Arc<SiteVersion>>,
        by_host: &mut HashMap<String, Arc<SiteVersion>>,
    ) {
        for (host, key) in &self.0 {
            if let Some(version) = sites.get(key) {
                by_host
                    .entry(host.clone())
                    .or_insert_with(|| version.clone());
            }
        }
    }
}
