//! The site server: serves deployed versions over HTTP, routed by Host.
//!
//! - [`SiteServer`] owns the routing table, an in-memory snapshot ([`SiteTable`]) behind an
//!   `ArcSwap`. A deploy or rollback builds the new [`SiteVersion`] first, commits in the store,
//!   then swaps the table ([`SiteServer::apply`]): the switch is one pointer store, and a request
//!   loads the snapshot once, so it is answered wholly from one version.
//! - [`SiteVersion`] is a version's files ([`Content`]: the version's folder of a `file://`
//!   store, or a remote store read through the [`SiteCache`]), optionally with its manifest
//!   (path -> size, sha256), which gives strong ETags without hashing and existence without `stat`.
//! - [`SiteCache`]: the bounded disk cache of remote versions' files, by sha256 (`cache`).
//! - `connections`: the accept loop, per-connection timeouts and the per-address connection cap
//!   ([`ConnectionLimits`]).
//! - [`CustomDomains`]: the custom host names in the table (`domains`).
//! - [`https::HttpsState`]: ACME HTTP-01 answers, certified hosts and their redirect to HTTPS
//!   (`https`); the TLS listener is `connections::serve_tls`.
//! - `handler`: the HTTP side (Host routing, safe paths, ETag, Range, gzip, SPA fallback, 404.html).
//!
//! Architecture Invariant: the site server never reads the metadata store; what it serves is only
//! what the table says.

mod cache;
mod connections;
mod domains;
mod handler;
pub mod https;
mod policy;
mod protect;
mod rules;
mod version;
mod version_host;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

pub use cache::{CacheError, SiteCache};
pub use connections::ConnectionLimits;
pub use domains::CustomDomains;
pub use policy::{Access, HostPolicy};
pub use protect::{Credential, ProtectError, hash_password};
pub use version::{Content, FileInfo, FileStream, RemoteFiles, SiteVersion};
pub use version_host::{VersionSource, version_host_label, version_label};

use opus_core::model::{ProjectName, VersionName};

use crate::metrics::Metrics;

/// Which site a request asks for: a project's environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SiteKey {
    /// The project.
    pub project: String,
    /// The environment (`production`, `staging`, a preview's branch slug).
    pub env: String,
}

impl SiteKey {
    /// The key of `project`'s environment `env`.
    pub fn new(project: impl Into<String>, env: impl Into<String>) -> SiteKey {
        SiteKey {
            project: project.into(),
            env: env.into(),
        }
    }
}

/// One immutable snapshot of what is deployed where.
#[derive(Default)]
pub struct SiteTable {
    /// The served version of each environment.
    pub sites: HashMap<SiteKey, Arc<SiteVersion>>,
    /// The same, by the host name that reaches it (`web.localhost`, `staging--web.localhost`),
    /// so that routing a request is one lookup with no allocation.
    by_host: HashMap<String, Arc<SiteVersion>>,
    /// What applies to each host besides its content (`X-Robots-Tag`), for hosts where anything
    /// does: a host not listed (production, and custom domains) gets nothing added.
    policies: HashMap<String, HostPolicy>,
    /// The custom domains and the environment each serves (routed through `by_host` too).
    pub domains: Arc<CustomDomains>,
}

impl SiteTable {
    /// A snapshot of `sites` under `domain`. Two sites can reach the same host only through a
    /// name holding `--` from a store made before such names were refused (project
    /// `staging--web`, environment `staging` of `web`); the older project keeps the host, see
    /// [`ProjectAges::older`], whatever order the sites were loaded in.
    fn new(
        sites: HashMap<SiteKey, Arc<SiteVersion>>,
        domain: &str,
        ages: &ProjectAges,
        access: &Access,
        domains: Arc<CustomDomains>,
    ) -> SiteTable {
        let mut owners: HashMap<String, (&SiteKey, &Arc<SiteVersion>)> =
            HashMap::with_capacity(sites.len());
        for (key, version) in &sites {
            match owners.entry(host_of(&key.project, &key.env, domain)) {
                Entry::Vacant(e) => {
                    e.insert((key, version));
                }
                Entry::Occupied(mut e) => {
                    if ages.older(&key.project, &e.get().0.project) {
                        e.insert((key, version));
                    }
                }
            }
        }
        let mut policies =
            policy::of_hosts(owners.iter().map(|(host, (key, _))| (host, *key)), access);
        for (host, policy) in policy::of_custom_domains(domains.routes(), access) {
            policies.entry(host).or_insert(policy);
        }
        let mut by_host = owners
            .into_iter()
            .map(|(host, (_, version))| (host, version.clone()))
            .collect();
        domains.route_into(&sites, &mut by_host);
        SiteTable {
            sites,
            by_host,
            policies,
            domains,
        }
    }
}

/// When each project owning a site was added, to settle two sites that reach one host.
#[derive(Debug, Default)]
pub struct ProjectAges(HashMap<String, SystemTime>);

impl ProjectAges {
    /// The ages of the projects `(name, created_at)`.
    pub fn new(projects: impl IntoIterator<Item = (String, SystemTime)>) -> ProjectAges {
        ProjectAges(projects.into_iter().collect())
    }

    /// Whether project `a` is older than `b`. A project not listed was added after the table was
    /// loaded, so it is younger than every listed one; equal ages fall back to name order, so the
    /// answer never depends on load order.
    fn older(&self, a: &str, b: &str) -> bool {
        let rank = |p: &str| {
            let age = self.0.get(p).copied();
            (age.is_none(), age, p.to_owned())
        };
        rank(a) < rank(b)
    }
}

/// The host name that serves `project`'s environment `env`.
pub(crate) fn host_of(project: &str, env: &str, domain: &str) -> String {
    if env == PRODUCTION {
        format!("{project}.{domain}")
    } else {
        format!("{env}--{project}.{domain}")
    }
}

pub use opus_core::model::PRODUCTION;

/// The site server's state: the routing table and the domain it answers for.
pub struct SiteServer {
    /// The current snapshot; swapped whole on every change.
    table: ArcSwap<SiteTable>,
    /// Serialises writers so that table changes apply in commit order.
    writer: tokio::sync::Mutex<()>,
    /// The domain sites live under (`localhost` by default), lowercase.
    domain: String,
    /// The port sites are reached on when it is not 80, for printed URLs.
    url_port: std::sync::OnceLock<u16>,
    /// Request counters.
    metrics: Metrics,
    /// The disk cache that remote versions are served through.
    cache: SiteCache,
    /// The projects' ages, which settle two sites reaching one host (set once on load).
    ages: std::sync::RwLock<ProjectAges>,
    /// Loads versions for their own hosts (`<label>--v--<project>`); set by the deployer.
    versions: std::sync::RwLock<Option<Arc<dyn VersionSource>>>,
    /// Passwords in front of environments and previews, and which environments are previews;
    /// set by the deployer, read when a table is built.
    access: std::sync::RwLock<Access>,
    /// HTTPS: challenges, certified hosts, redirects (set once when HTTPS is on).
    https: std::sync::OnceLock<Arc<https::HttpsState>>,
    /// The custom domains of the current table, for those that follow them (certificates).
    domains_watch: tokio::sync::watch::Sender<Arc<CustomDomains>>,
}

impl SiteServer {
    /// An empty site server for `domain`, serving remote versions through `cache`.
    pub fn new(domain: &str, metrics: Metrics, cache: SiteCache) -> SiteServer {
        SiteServer {
            table: ArcSwap::from_pointee(SiteTable::default()),
            writer: tokio::sync::Mutex::new(()),
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            url_port: std::sync::OnceLock::new(),
            metrics,
            cache,
            ages: std::sync::RwLock::default(),
            versions: std::sync::RwLock::default(),
            access: std::sync::RwLock::default(),
            https: std::sync::OnceLock::new(),
            domains_watch: tokio::sync::watch::channel(Arc::default()).0,
        }
    }

    /// The custom domains now, and each change after (added, removed, or gone with their
    /// project).
    pub fn watch_domains(&self) -> tokio::sync::watch::Receiver<Arc<CustomDomains>> {
        self.domains_watch.subscribe()
    }

    /// Turns HTTPS on: challenges are answered and certified hosts redirected as `state` says.
    pub fn set_https(&self, state: Arc<https::HttpsState>) {
        let _ = self.https.set(state);
    }

    /// The HTTPS state, when HTTPS is on.
    pub fn https(&self) -> Option<&Arc<https::HttpsState>> {
        self.https.get()
    }

    /// Records when the projects owning sites were added (on load, before the table is filled).
    pub fn set_project_ages(&self, ages: ProjectAges) {
        *self
            .ages
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ages;
    }

    /// A snapshot of `sites` and the custom `domains` with this server's domain and project
    /// ages.
    fn table_of(
        &self,
        sites: HashMap<SiteKey, Arc<SiteVersion>>,
        domains: Arc<CustomDomains>,
    ) -> SiteTable {
        let ages = self
            .ages
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let access = self
            .access
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        SiteTable::new(sites, &self.domain, &ages, &access, domains)
    }

    /// Changes who may see what (`change` edits the [`Access`]), then rebuilds the table so the
    /// change applies to the next request. Call it with the guard of [`Self::lock`] held.
    pub fn update_access(
        &self,
        guard: &tokio::sync::MutexGuard<'_, ()>,
        change: impl FnOnce(&mut Access),
    ) {
        change(
            &mut self
                .access
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.apply(guard, Vec::new());
    }

    /// The password in front of version hosts of `project`: its previews' (a version host shows
    /// what was built, before any environment has it), else production's (a protected site's
    /// versions are not opened by their own hosts); none when neither is protected.
    pub(crate) fn version_host_credential(&self, project: &str) -> Option<Arc<Credential>> {
        let access = self
            .access
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        access
            .previews
            .get(project)
            .or_else(|| access.envs.get(&SiteKey::new(project, PRODUCTION)))
            .cloned()
    }

    /// Replaces the custom domains (a new snapshot, swapped in one store). Call it with the guard
    /// of [`Self::lock`] held, after the change was committed in the store.
    pub fn set_domains(&self, _guard: &tokio::sync::MutexGuard<'_, ()>, domains: CustomDomains) {
        let current = self.table.load();
        let sites = current.sites.clone();
        let domains = Arc::new(domains);
        self.table
            .store(Arc::new(self.table_of(sites, domains.clone())));
        self.domains_watch.send_replace(domains);
    }

    /// The current snapshot (what a request would be served from).
    pub fn snapshot(&self) -> Arc<SiteTable> {
        self.table.load_full()
    }

    /// The disk cache remote versions are served through.
    pub fn cache(&self) -> &SiteCache {
        &self.cache
    }

    /// The domain sites live under.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Records the port the listener is bound to, so that [`SiteServer::url`] names it.
    pub fn set_port(&self, port: u16) {
        let _ = self.url_port.set(port);
    }

    /// The URL that serves `project`'s environment `env`.
    pub fn url(&self, project: &str, env: &str) -> String {
        self.host_url(&host_of(project, env, &self.domain))
    }

    /// The plain HTTP URL of `host` on the site listener.
    pub fn host_url(&self, host: &str) -> String {
        match self.url_port.get() {
            Some(80) | None => format!("http://{host}/"),
            Some(p) => format!("http://{host}:{p}/"),
        }
    }

    /// The URL that serves `version` of `project` whether or not an environment does: its own
    /// immutable host (see `version_host`). The one place this URL is made: `opus artifacts`
    /// shows it, and checks before a promotion fetch it.
    pub fn version_url(&self, project: &ProjectName, version: &VersionName) -> String {
        let host = format!("{}.{}", version_host_label(project, version), self.domain);
        match self.url_port.get() {
            Some(80) | None => format!("http://{host}/"),
            Some(p) => format!("http://{host}:{p}/"),
        }
    }

    /// Sets what loads versions for their own hosts (the deployer's loader).
    pub fn set_version_source(&self, source: Arc<dyn VersionSource>) {
        *self
            .versions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(source);
    }

    /// The version a version host names (`42--v--web.<domain>`), loaded through the version
    /// source; `None` for any other host, or a version that does not exist.
    pub(crate) async fn version_site(&self, host: &str) -> Option<Arc<SiteVersion>> {
        let host = host_without_port(host)
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let label = host.strip_suffix(&self.domain)?.strip_suffix('.')?;
        let (project, version) = version_host::parse_version_host_label(label)?;
        let source = self
            .versions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()?;
        source.load(&project, version).await
    }

    /// What applies to `host` besides its content (nothing for production and custom domains).
    pub(crate) fn policy<'t>(&self, table: &'t SiteTable, host: &str) -> Option<&'t HostPolicy> {
        if table.policies.is_empty() {
            return None;
        }
        let host = host_without_port(host).trim_end_matches('.');
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return table.policies.get(&host.to_ascii_lowercase());
        }
        table.policies.get(host)
    }

    /// Takes the writer lock: callers hold it across "commit in the store, then [`Self::apply`]" so
    /// that the table follows the commits in order.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writer.lock().await
    }

    /// Points `key` at `version` (or stops serving it with `None`): a new snapshot, swapped in one
    /// store. Call it with the guard of [`Self::lock`] held.
    pub fn apply(
        &self,
        _guard: &tokio::sync::MutexGuard<'_, ()>,
        changes: Vec<(SiteKey, Option<Arc<SiteVersion>>)>,
    ) {
        let current = self.table.load();
        let mut sites = current.sites.clone();
        for (key, version) in changes {
            match version {
                Some(v) => {
                    sites.insert(key, v);
                }
                None => {
                    sites.remove(&key);
                }
            }
        }
        self.table
            .store(Arc::new(self.table_of(sites, current.domains.clone())));
    }

    /// Replaces everything the table serves at once: the sites, who may see them, the projects'
    /// ages and the custom domains. A site replica rebuilds its whole table from the store's
    /// pointers this way. Call it with the guard of [`Self::lock`] held.
    pub fn replace(
        &self,
        _guard: &tokio::sync::MutexGuard<'_, ()>,
        sites: HashMap<SiteKey, Arc<SiteVersion>>,
        access: Access,
        ages: ProjectAges,
        domains: CustomDomains,
    ) {
        *self
            .access
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = access;
        *self
            .ages
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ages;
        let domains = Arc::new(domains);
        self.table
            .store(Arc::new(self.table_of(sites, domains.clone())));
        self.domains_watch.send_replace(domains);
    }

    /// Removes every environment of `project` from the table (the project was removed).
    pub fn remove_project(&self, _guard: &tokio::sync::MutexGuard<'_, ()>, project: &str) {
        let current = self.table.load();
        let sites = current
            .sites
            .iter()
            .filter(|(k, _)| k.project != project)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let domains = Arc::new(current.domains.without_project(project));
        self.table
            .store(Arc::new(self.table_of(sites, domains.clone())));
        self.domains_watch.send_replace(domains);
    }

    /// Finds the site a Host header names: `<project>.<domain>` is production,
    /// `<env>--<project>.<domain>` any other environment.
    pub(crate) fn route(&self, table: &SiteTable, host: &str) -> Option<Arc<SiteVersion>> {
        let host = host_without_port(host).trim_end_matches('.');
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return table.by_host.get(&host.to_ascii_lowercase()).cloned();
        }
        table.by_host.get(host).cloned()
    }

    /// Serves sites on an already-bound listener, under `limits`, until `shutdown` completes.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        limits: ConnectionLimits,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        if let Ok(addr) = listener.local_addr() {
            self.set_port(addr.port());
        }
        connections::serve(self, listener, limits, shutdown).await
    }

    /// Serves sites over TLS on an already-bound listener, with certificates from `tls`, under
    /// `limits`, until `shutdown` completes.
    pub async fn run_tls(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        limits: ConnectionLimits,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        if let (Ok(addr), Some(https)) = (listener.local_addr(), self.https()) {
            https.set_tls_port(addr.port());
        }
        connections::serve_tls(self, listener, tls, limits, shutdown).await
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// `host` without a `:port` suffix.
fn host_without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod remote_tests;

#[cfg(test)]
mod connection_tests;

#[cfg(test)]
mod rules_tests;
