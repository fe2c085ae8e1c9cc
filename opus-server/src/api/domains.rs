//! `opus.v1.DomainService`: custom domains and their certificates.

use opus_core::domain::DomainRecord;
use opus_core::model::{EnvName, ProjectName};
use opus_core::proto::{self, domain_service_server::DomainService};
use opus_core::wire::timestamp;
use tonic::{Request, Response, Status};
use tracing::instrument;

use std::sync::Arc;

use super::status;
use crate::acme::{CertManager, CertState};
use crate::domains::DomainRouter;

/// Implements `DomainService` over the [`DomainRouter`] and, with HTTPS on, the certificates.
pub(crate) struct DomainsApi {
    domains: DomainRouter,
    certs: Option<Arc<CertManager>>,
}

impl DomainsApi {
    pub(crate) fn new(domains: DomainRouter, certs: Option<Arc<CertManager>>) -> Self {
        DomainsApi { domains, certs }
    }

    /// The certificate of `host` on the wire (a domain just added is pending).
    fn certificate(&self, host: &str) -> Option<proto::Certificate> {
        let certs = self.certs.as_ref()?;
        let Some(s) = certs.status(host) else {
            return Some(proto::Certificate {
                state: CertState::Pending.as_str().to_owned(),
                ..Default::default()
            });
        };
        Some(proto::Certificate {
            state: s.state.as_str().to_owned(),
            issuer: s
                .served
                .as_ref()
                .map(|(i, _)| i.clone())
                .unwrap_or_default(),
            not_after: s.served.as_ref().map(|(_, t)| timestamp(*t)),
            last_error: s.last_error,
            next_attempt: Some(timestamp(s.next_attempt)),
        })
    }

    /// The newest DNS change of `host`, if Opus made or tried one.
    fn dns(&self, host: &str) -> Option<proto::DnsRoute> {
        let c = self.domains.dns_status(host)?;
        Some(proto::DnsRoute {
            action: c.action.as_str().to_owned(),
            state: c.state.as_str().to_owned(),
            error: c.last_error,
            attempts: c.attempts,
        })
    }

    /// Where `host` is reached: over HTTPS once it has a certificate.
    fn url(&self, host: &str) -> String {
        let sites = self.domains.sites();
        match sites.https() {
            Some(h) if h.is_certified(host) => h.https_url(host, "/"),
            _ => sites.host_url(host),
        }
    }

    /// A domain on the wire, with where it is reached.
    fn domain(&self, d: &DomainRecord) -> proto::Domain {
        proto::Domain {
            domain: d.host.to_string(),
            project: d.project.clone(),
            env: d.env.clone(),
            added_at: Some(timestamp(d.added_at)),
            url: self.url(d.host.as_str()),
            certificate: self.certificate(d.host.as_str()),
            dns: self.dns(d.host.as_str()),
        }
    }
}

#[tonic::async_trait]
impl DomainService for DomainsApi {
    #[instrument(skip_all, fields(project = %req.get_ref().project, domain = %req.get_ref().domain))]
    async fn add_domain(
        &self,
        req: Request<proto::AddDomainRequest>,
    ) -> Result<Response<proto::Domain>, Status> {
        let r = req.into_inner();
        let project = ProjectName::new(&r.project).map_err(status)?;
        let env = if r.env.is_empty() {
            EnvName::production()
        } else {
            EnvName::new(&r.env).map_err(status)?
        };
        let added = self
            .domains
            .add(&r.domain, &project, &env)
            .await
            .map_err(status)?;
        Ok(Response::new(self.domain(added.record())))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project))]
    async fn list_domains(
        &self,
        req: Request<proto::ListDomainsRequest>,
    ) -> Result<Response<proto::ListDomainsResponse>, Status> {
        let r = req.into_inner();
        let project = match r.project.as_str() {
            "" => None,
            p => Some(ProjectName::new(p).map_err(status)?),
        };
        let domains = self.domains.list(project.as_ref()).map_err(status)?;
        Ok(Response::new(proto::ListDomainsResponse {
            domains: domains.iter().map(|d| self.domain(d)).collect(),
        }))
    }

    #[instrument(skip_all, fields(domain = %req.get_ref().domain))]
    async fn remove_domain(
        &self,
        req: Request<proto::RemoveDomainRequest>,
    ) -> Result<Response<proto::Domain>, Status> {
        let removed = self
            .domains
            .remove(&req.into_inner().domain)
            .await
            .map_err(status)?;
        Ok(Response::new(self.domain(&removed)))
    }
}
