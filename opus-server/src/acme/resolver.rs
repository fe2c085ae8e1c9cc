//! The TLS listener's certificates: SNI host name -> certificate, swapped whole on every change,
//! so a renewal takes effect for the next handshake and never touches a connection; and the
//! TLS-ALPN-01 challenge certificates (RFC 8737), served only to a client that asks for the
//! `acme-tls/1` protocol.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Picks the certificate of the host a client names (SNI): its own, else the wildcard
/// certificate of its parent domain (`*.preview.acme.com` for `pr-1--web.preview.acme.com`);
/// none for an unknown host, which ends the handshake.
#[derive(Debug, Default)]
pub struct CertResolver {
    certs: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// Pending TLS-ALPN-01 challenges: host -> the self-signed challenge certificate.
    challenges: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

pub use crate::sites::https::ACME_TLS_ALPN;

impl CertResolver {
    /// Answers `host`'s TLS-ALPN-01 challenge with `key` until [`CertResolver::withdraw`].
    pub fn publish_challenge(&self, host: &str, key: Arc<CertifiedKey>) {
        self.challenges.rcu(|c| {
            let mut c = HashMap::clone(c);
            c.insert(host.to_owned(), key.clone());
            c
        });
    }

    /// Stops answering `host`'s TLS-ALPN-01 challenge.
    pub fn withdraw(&self, host: &str) {
        self.challenges.rcu(|c| {
            let mut c = HashMap::clone(c);
            c.remove(host);
            c
        });
    }

    /// Serves `key` for `host` from the next handshake on.
    pub fn insert(&self, host: &str, key: Arc<CertifiedKey>) {
        self.certs.rcu(|c| {
            let mut c = HashMap::clone(c);
            c.insert(host.to_owned(), key.clone());
            c
        });
    }

    /// Stops serving `host`.
    pub fn remove(&self, host: &str) {
        self.certs.rcu(|c| {
            let mut c = HashMap::clone(c);
            c.remove(host);
            c
        });
    }

    /// The hosts with a certificate.
    pub fn hosts(&self) -> Vec<String> {
        self.certs.load().keys().cloned().collect()
    }

    /// The TLS configuration of a site TLS listener serving this resolver's certificates:
    /// certificates by SNI, HTTP/1.1, and `acme-tls/1` for TLS-ALPN-01 validation (the
    /// connection ends after the handshake; with no challenge published, the handshake fails).
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello
            .server_name()?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            return self.challenges.load().get(&name).cloned();
        }
        let certs = self.certs.load();
        certs.get(&name).cloned().or_else(|| {
            // A wildcard certificate covers the names one label under its domain.
            let (_, parent) = name.split_once('.')?;
            certs.get(&format!("*.{parent}")).cloned()
        })
    }
}
