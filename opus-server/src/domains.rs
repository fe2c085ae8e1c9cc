//! Custom domains: the one writer of the `domains` records, and what keeps the site table's host
//! map in step with them.
//!
//! [`DomainRouter`] checks a host name (valid, not under the sites' own `--domain`), commits it
//! in the metadata store under the site writer lock, then hands the new host map to the site
//! server, so the table follows the commits in order, as deploys do. Whoever needs the set of
//! domains (the certificate manager) follows the site table's
//! ([`crate::sites::SiteServer::watch_domains`]), which also drops a removed project's.

use std::sync::Arc;

use opus_core::CoreError;
use opus_core::domain::{DomainName, DomainRecord};
use opus_core::error::ModelError;
use opus_core::model::{EnvName, ProjectName};
use opus_core::store::{DomainAdded, MetaStore};
use tracing::instrument;

use crate::site_pointers::{PointerPublisher, Target};
use crate::sites::{CustomDomains, SiteKey, SiteServer};

/// Adds, removes and lists custom domains: store and site table together.
#[derive(Clone)]
pub struct DomainRouter {
    store: MetaStore,
    sites: Arc<SiteServer>,
    /// Writes the site pointers site replicas follow (a domain is part of its environment's).
    pointers: Option<PointerPublisher>,
}

impl DomainRouter {
    /// A router over the store and the site server; call [`DomainRouter::load`] before serving.
    pub fn new(store: MetaStore, sites: Arc<SiteServer>) -> DomainRouter {
        DomainRouter {
            store,
            sites,
            pointers: None,
        }
    }

    /// The same router, rewriting the site pointer of a domain's environment after each change.
    pub fn with_pointers(mut self, pointers: PointerPublisher) -> DomainRouter {
        self.pointers = Some(pointers);
        self
    }

    /// Rewrites the pointer of the environment `record` routes to (after the commit).
    async fn publish_pointer(&self, record: &DomainRecord) {
        if let Some(p) = &self.pointers {
            p.publish([Target::Env(record.project.clone(), record.env.clone())])
                .await;
        }
    }

    /// The site server the domains route on.
    pub fn sites(&self) -> &Arc<SiteServer> {
        &self.sites
    }

    /// Checks a host name given for a custom domain.
    pub fn parse(&self, raw: &str) -> Result<DomainName, CoreError> {
        let host = DomainName::new(raw)?;
        let own = self.sites.domain();
        if host.is_under(own) {
            return Err(ModelError::Invalid(format!(
                "{host} is under opusd's own sites domain {own:?}, whose hosts name environments already (<env>--<project>.{own}); a custom domain must be outside it"
            ))
            .into());
        }
        Ok(host)
    }

    /// Routes `raw` to `project`'s environment `env`.
    #[instrument(skip(self), err(Display))]
    pub async fn add(
        &self,
        raw: &str,
        project: &ProjectName,
        env: &EnvName,
    ) -> Result<DomainAdded, CoreError> {
        let host = self.parse(raw)?;
        let guard = self.sites.lock().await;
        let added = self.store.add_domain(&host, project, env)?;
        if matches!(added, DomainAdded::Added(_)) {
            self.publish(&guard)?;
        }
        drop(guard);
        self.flush().await;
        if let DomainAdded::Added(record) = &added {
            self.publish_pointer(record).await;
        }
        Ok(added)
    }

    /// Stops routing `raw`; returns what it was.
    #[instrument(skip(self), err(Display))]
    pub async fn remove(&self, raw: &str) -> Result<DomainRecord, CoreError> {
        // Only a valid name can have been stored; an invalid one is simply not found.
        let host = DomainName::new(raw)?;
        let guard = self.sites.lock().await;
        let removed = self.store.remove_domain(&host)?;
        self.publish(&guard)?;
        drop(guard);
        self.flush().await;
        self.publish_pointer(&removed).await;
        Ok(removed)
    }

    /// The newest change Opus made (or tried) to `host`'s DNS record, if any.
    pub fn dns_status(&self, host: &str) -> Option<opus_core::dns::DnsChange> {
        self.store.dns_status(host).ok().flatten()
    }

    /// The domains, all or `project`'s.
    pub fn list(&self, project: Option<&ProjectName>) -> Result<Vec<DomainRecord>, CoreError> {
        Ok(self.store.list_domains(project)?)
    }

    /// Fills the site table's host map from the store (on start, and after a project removal).
    pub async fn load(&self) -> Result<(), CoreError> {
        let guard = self.sites.lock().await;
        self.publish(&guard)
    }

    /// Reads every domain from the store and swaps the site table's host map. Domains stored by
    /// an opusd with another `--domain` that now fall under it are left out, with a warning:
    /// the environment hosts keep theirs.
    fn publish(&self, guard: &tokio::sync::MutexGuard<'_, ()>) -> Result<(), CoreError> {
        let own = self.sites.domain().to_owned();
        let records = self.store.list_domains(None)?;
        let mut map = Vec::with_capacity(records.len());
        for r in records {
            if r.host.is_under(&own) {
                tracing::warn!(domain = %r.host, sites_domain = %own, "a custom domain under the sites domain is not served; remove it with `opus domain remove`");
                continue;
            }
            map.push((
                r.host.as_str().to_owned(),
                SiteKey::new(r.project.as_str(), r.env.as_str()),
            ));
        }
        self.sites.set_domains(guard, CustomDomains::new(map));
        Ok(())
    }

    /// Makes a committed change durable before the RPC answers.
    async fn flush(&self) {
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "cannot flush the metadata store after a domain change");
        }
    }
}
