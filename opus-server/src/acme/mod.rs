//! Automatic HTTPS for custom domains: certificates from an ACME CA (Let's Encrypt by default,
//! or a private one such as step-ca or pebble with `--acme-ca-file`), with instant-acme.
//!
//! - [`CertManager`] follows the custom domains ([`crate::sites::SiteServer::watch_domains`]),
//!   and with Cloudflare the sites' wildcard `*.<domain>` (DNS-01, covering every preview):
//!   orders a certificate for each domain without one, renews each two thirds into its life,
//!   retries failures with exponential backoff (10 s doubling to an hour), and keeps each
//!   domain's [`CertStatus`] for `opus domain list`. Orders never block serving: plain HTTP
//!   keeps working whatever the CA says.
//! - `order`: one order (HTTP-01, answered by the site listener through
//!   [`crate::sites::https::HttpsState`], or TLS-ALPN-01 by the TLS listener through the
//!   resolver, as `--acme-challenge` says).
//! - `files`: the account and the certificates in `<data-dir>/acme`, loaded at start: the local
//!   cache. With a remote artifact store, each certificate is also written to the store
//!   (`_opus/certs/<host>/`, [`opus_core::artifact::ArtifactStore::put_certificate`]) so that
//!   site replicas share it, and before ordering the manager takes a certificate another
//!   opusd stored there when it is not due for renewal.
//! - `resolver`: [`CertResolver`], the TLS listener's SNI -> certificate map, swapped atomically.
//!
//! Architecture Invariant: the manager never reads the metadata store; it learns the domains
//! from the site table and tells the site server only through `HttpsState` and the resolver.

mod files;
mod order;
mod resolver;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use instant_acme::{Account, AccountCredentials, NewAccount};
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use files::{AcmeFiles, LoadedCert};
pub use resolver::{ACME_TLS_ALPN, CertResolver};

use opus_core::artifact::ArtifactStore;

use crate::cloudflare::Cloudflare;
use crate::config::HttpsConfig;
use crate::sites::CustomDomains;
use crate::sites::https::HttpsState;

/// The first wait after a failed order; it doubles after each further failure.
const RETRY_BASE: Duration = Duration::from_secs(10);
/// The longest wait between two orders of one domain.
const RETRY_CAP: Duration = Duration::from_secs(3600);
/// The longest the manager sleeps without looking again (clock jumps, missed wake-ups).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Why an order or a stored certificate failed; the message is what `opus domain list` shows.
#[derive(Debug, Error)]
pub enum AcmeError {
    /// The ACME server or the connection to it failed.
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    /// The CA refused the order (a failed validation, say).
    #[error("the CA refused the order: {0}")]
    Refused(String),
    /// The CA offered no challenge of the kind opusd answers (`--acme-challenge`).
    #[error("the CA offered no {0} challenge (see --acme-challenge)")]
    NoChallenge(&'static str),
    /// A certificate that cannot be served.
    #[error("unusable certificate: {0}")]
    BadCertificate(String),
    /// The DNS-01 TXT record could not be made through Cloudflare.
    #[error("DNS-01 through Cloudflare: {0}")]
    Dns(#[source] crate::cloudflare::CloudflareError),
    /// A wildcard needs DNS-01, which needs a DNS provider.
    #[error("a wildcard certificate needs DNS-01: set --cloudflare-token-file")]
    NoDnsProvider,
    /// Account credentials that do not decode.
    #[error("the stored ACME account does not decode: {0}")]
    Account(#[from] serde_json::Error),
    /// Reading or writing a file of `<data-dir>/acme`.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Where a domain's certificate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    /// No certificate yet; an order is due or running.
    Pending,
    /// A certificate is served.
    Issued,
    /// The last order failed; the next is scheduled.
    Failed,
}

impl CertState {
    /// The word `opus domain list` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Pending => "pending",
            CertState::Issued => "issued",
            CertState::Failed => "failed",
        }
    }
}

/// A domain's certificate as `opus domain list` shows it.
#[derive(Debug, Clone)]
pub struct CertStatus {
    /// The state.
    pub state: CertState,
    /// The certificate served, if any (it stays served while a renewal fails).
    pub served: Option<(String, SystemTime)>,
    /// Why the last order failed; empty after a success.
    pub last_error: String,
    /// When the next order (or renewal) is due.
    pub next_attempt: SystemTime,
    /// Orders failed in a row, for the backoff.
    failures: u32,
}

impl CertStatus {
    fn pending() -> CertStatus {
        CertStatus {
            state: CertState::Pending,
            served: None,
            last_error: String::new(),
            next_attempt: SystemTime::now(),
            failures: 0,
        }
    }
}

/// Orders, renews and serves the custom domains' certificates.
pub struct CertManager {
    config: HttpsConfig,
    files: AcmeFiles,
    https: Arc<HttpsState>,
    resolver: Arc<CertResolver>,
    status: Mutex<HashMap<String, CertStatus>>,
    /// The ACME account, made or loaded at the first order.
    account: tokio::sync::Mutex<Option<Account>>,
    /// The sites' wildcard (`*.<domain>`), certified by DNS-01 through Cloudflare, when on.
    wildcard: Option<(String, Arc<Cloudflare>)>,
    /// The artifact store certificates are shared through, when it is remote.
    shared: Option<ArtifactStore>,
}

impl CertManager {
    /// A manager over `<data-dir>/acme` with the certificates stored there loaded and served;
    /// with `wildcard` (`*.<domain>` and Cloudflare) it also keeps that wildcard's certificate,
    /// ordered by DNS-01.
    pub fn load(
        config: HttpsConfig,
        data_dir: &std::path::Path,
        https: Arc<HttpsState>,
        wildcard: Option<(String, Arc<Cloudflare>)>,
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let files = AcmeFiles::new(data_dir.join("acme"));
        let manager = CertManager {
            config,
            files,
            https,
            resolver: Arc::new(CertResolver::default()),
            status: Mutex::new(HashMap::new()),
            account: tokio::sync::Mutex::new(None),
            wildcard,
            shared: None,
        };
        let certs = data_dir.join("acme").join("certs");
        if let Ok(entries) = std::fs::read_dir(&certs) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(host) = name.strip_suffix(".pem") else {
                    continue;
                };
                match manager.files.read_cert(host) {
                    Ok(Some(cert)) => manager.serve(host, &cert),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(domain = host, error = %e, "a stored certificate cannot be served; ordering a new one")
                    }
                }
            }
        }
        manager
    }

    /// Shares the certificates through `store` (`_opus/certs/<host>/`): each issued one is
    /// written there, and one found there is taken instead of ordering.
    pub fn with_shared_store(mut self, store: ArtifactStore) -> Self {
        self.shared = Some(store);
        self
    }

    /// The TLS configuration of the site TLS listener: certificates by SNI, HTTP/1.1, and
    /// `acme-tls/1` for TLS-ALPN-01 validation (the connection ends after the handshake).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.resolver.server_config()
    }

    /// The status of `host`'s certificate, if it is a domain the manager follows.
    pub fn status(&self, host: &str) -> Option<CertStatus> {
        self.lock().get(host).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CertStatus>> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves `cert` for `host` and records it.
    fn serve(&self, host: &str, cert: &LoadedCert) {
        self.resolver.insert(host, cert.key.clone());
        self.https
            .set_certified(self.resolver.hosts().into_iter().collect());
        let mut status = self.lock();
        let s = status
            .entry(host.to_owned())
            .or_insert_with(CertStatus::pending);
        s.state = CertState::Issued;
        s.served = Some((cert.issuer.clone(), cert.not_after));
        s.last_error.clear();
        s.failures = 0;
        s.next_attempt = cert.renew_at();
    }

    /// Follows the domains until `stop`: orders what is due, then sleeps until the next due
    /// order or a change of the domains.
    pub async fn run(
        self: Arc<Self>,
        mut domains: watch::Receiver<Arc<CustomDomains>>,
        stop: CancellationToken,
    ) {
        loop {
            let mut hosts: Vec<String> = domains
                .borrow_and_update()
                .hosts()
                .map(str::to_owned)
                .collect();
            if let Some((name, _)) = &self.wildcard {
                hosts.push(name.clone());
            }
            hosts.sort();
            let removed = self.follow(&hosts);
            self.unshare(&removed).await;
            for host in &hosts {
                if stop.is_cancelled() {
                    return;
                }
                if self.is_due(host) {
                    tokio::select! {
                        () = self.attempt(host) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
            let wait = self.next_wait(&hosts);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = domains.changed() => if changed.is_err() { return },
                () = stop.cancelled() => return,
            }
        }
    }

    /// Starts following new hosts and forgets removed ones (their certificates deleted);
    /// returns the removed ones.
    fn follow(&self, hosts: &[String]) -> Vec<String> {
        let wanted: HashSet<&str> = hosts.iter().map(String::as_str).collect();
        let removed: Vec<String> = {
            let mut status = self.lock();
            for h in hosts {
                status.entry(h.clone()).or_insert_with(CertStatus::pending);
            }
            let gone: Vec<String> = status
                .keys()
                .filter(|h| !wanted.contains(h.as_str()))
                .cloned()
                .collect();
            for h in &gone {
                status.remove(h);
            }
            gone
        };
        for h in &removed {
            self.resolver.remove(h);
            self.files.remove_cert(h);
            tracing::info!(domain = %h, "domain removed: its certificate is no longer served");
        }
        if !removed.is_empty() {
            self.https
                .set_certified(self.resolver.hosts().into_iter().collect());
        }
        removed
    }

    /// Deletes removed hosts' certificates from the shared store.
    async fn unshare(&self, removed: &[String]) {
        let Some(store) = &self.shared else {
            return;
        };
        for h in removed {
            if let Err(e) = store.delete_certificate(h).await {
                tracing::warn!(domain = %h, error = %e, "cannot delete a removed domain's certificate from the artifact store");
            }
        }
    }

    /// A certificate of `host` in the shared store that is not due for renewal (another opusd
    /// issued or renewed it), copied into the local cache.
    async fn shared_certificate(&self, host: &str) -> Option<LoadedCert> {
        let store = self.shared.as_ref()?;
        let (key, chain) = match store.certificate(host).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!(domain = host, error = %e, "cannot read the shared certificate; ordering one");
                return None;
            }
        };
        let cert = match LoadedCert::parse(&key, &chain) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(domain = host, error = %e, "the shared certificate cannot be served; ordering one");
                return None;
            }
        };
        if cert.renew_at() <= SystemTime::now() {
            return None;
        }
        if let Err(e) = self.files.write_cert(host, &key, &chain) {
            tracing::warn!(domain = host, error = %e, "cannot cache the shared certificate");
        }
        tracing::info!(domain = host, "certificate taken from the artifact store");
        Some(cert)
    }

    fn is_due(&self, host: &str) -> bool {
        self.lock()
            .get(host)
            .is_some_and(|s| s.next_attempt <= SystemTime::now())
    }

    fn next_wait(&self, hosts: &[String]) -> Duration {
        let now = SystemTime::now();
        let status = self.lock();
        hosts
            .iter()
            .filter_map(|h| status.get(h))
            .map(|s| s.next_attempt.duration_since(now).unwrap_or_default())
            .min()
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP)
    }

    /// One order for `host`; the outcome goes into its status.
    async fn attempt(&self, host: &str) {
        if let Some(cert) = self.shared_certificate(host).await {
            self.serve(host, &cert);
            return;
        }
        tracing::info!(domain = host, directory = %self.config.acme_directory, "ordering a certificate");
        let result = async {
            let account = self.account().await?;
            let responder = order::Responder {
                kind: self.config.challenge,
                https: &self.https,
                resolver: &self.resolver,
                dns: self.wildcard.as_ref().map(|(_, cf)| cf.as_ref()),
                dns_propagation: self.config.dns_propagation,
            };
            let (key, chain) = order::issue(&account, host, &responder).await?;
            let cert = LoadedCert::parse(&key, &chain)?;
            self.files.write_cert(host, &key, &chain)?;
            if let Some(store) = &self.shared
                && let Err(e) = store.put_certificate(host, &key, &chain).await
            {
                tracing::warn!(domain = host, error = %e, "cannot share the certificate through the artifact store; it is served from the data directory");
            }
            Ok::<_, AcmeError>(cert)
        }
        .await;
        match result {
            Ok(cert) => {
                tracing::info!(domain = host, issuer = %cert.issuer, not_after = %humantime::format_rfc3339_seconds(cert.not_after), "certificate issued");
                self.serve(host, &cert);
            }
            Err(e) => {
                let mut status = self.lock();
                let Some(s) = status.get_mut(host) else {
                    return;
                };
                s.failures = s.failures.saturating_add(1);
                let wait = backoff(s.failures);
                s.state = CertState::Failed;
                s.last_error = e.to_string();
                s.next_attempt = SystemTime::now() + wait;
                tracing::warn!(domain = host, error = %e, retry_in = ?wait, "certificate order failed; plain HTTP keeps serving");
            }
        }
    }

    /// The ACME account: loaded from `<data-dir>/acme`, or registered and stored.
    async fn account(&self) -> Result<Account, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let directory = &self.config.acme_directory;
        let builder = match &self.config.acme_ca_file {
            Some(ca) => Account::builder_with_root(ca)?,
            None => Account::builder()?,
        };
        let account = match self.files.read_account(directory)? {
            Some(json) => {
                let credentials: AccountCredentials = serde_json::from_str(&json)?;
                builder.from_credentials(credentials).await?
            }
            None => {
                let contact = self
                    .config
                    .acme_email
                    .as_ref()
                    .map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        directory.clone(),
                        None,
                    )
                    .await?;
                self.files
                    .write_account(directory, &serde_json::to_string(&credentials)?)?;
                tracing::info!(directory = %directory, "registered an ACME account");
                account
            }
        };
        *slot = Some(account.clone());
        Ok(account)
    }
}

/// The wait after `failures` failed orders in a row.
fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    RETRY_BASE.saturating_mul(1 << exp).min(RETRY_CAP)
}

#[cfg(test)]
mod tests;
