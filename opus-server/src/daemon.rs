//! The daemon as one value: [`Daemon::open`] assembles its parts from a [`Config`] (one small
//! function per part: store, artifact store, sites, Kubernetes, hooks, logs, scheduler), and
//! [`Daemon::run`] serves on already-bound [`Listeners`] until a shutdown future completes or a
//! listener fails, then stops the scheduler and flushes the store, whichever way it ends.
//!
//! Architecture Invariant: once the metadata store is open, no path out of `open` or `run` skips
//! the flush, and once the scheduler has started, none skips its shutdown. The scheduler starts
//! last in `open`, after every part that can fail.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use opus_core::artifact::ArtifactStore;
use opus_core::error::StoreError;
use opus_core::model::BuildState;
use opus_core::store::MetaStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Config, ExecutorKind};
use crate::process_tree::{self, Containment};
use crate::{
    ServeError, acme, api, build, deploys, domains, github, health, hooks, kubernetes, logs,
    metrics, runners, scheduler, site_pointers, sites, source,
};

/// The two listeners of an opusd, bound before anything else starts, so that tests bind port 0
/// and learn the addresses without waiting.
#[derive(Debug)]
pub struct Listeners {
    /// The gRPC API, webhooks, `/healthz` and `/metrics`.
    pub api: TcpListener,
    /// The site server.
    pub sites: TcpListener,
}

impl Listeners {
    /// Binds the site listener at `sites` beside an API listener bound by the caller.
    pub async fn with_api(api: TcpListener, sites: SocketAddr) -> Result<Listeners, ServeError> {
        let sites = TcpListener::bind(sites)
            .await
            .map_err(|source| ServeError::SitesListen {
                addr: sites,
                source,
            })?;
        Ok(Listeners { api, sites })
    }

    /// The addresses the listeners are bound to: `(api, sites)`.
    pub fn addresses(&self) -> Result<(SocketAddr, SocketAddr), ServeError> {
        let addr = |l: &TcpListener| l.local_addr().map_err(ServeError::LocalAddr);
        Ok((addr(&self.api)?, addr(&self.sites)?))
    }
}

/// How hook messages are sent, shared by the deliverer and `TestHook`.
#[derive(Clone)]
pub(crate) struct HookParts {
    /// How failed deliveries are retried.
    pub(crate) policy: hooks::RetryPolicy,
    /// The HTTP client hooks are posted with.
    pub(crate) transport: hooks::HttpTransport,
    /// How hook messages link to deployed sites.
    pub(crate) links: hooks::SiteLinks,
}

/// A running opusd's parts. Each gRPC service is given the few of them it needs
/// ([`crate::api`]).
pub struct Daemon {
    /// The resolved configuration; `listen` and `sites_listen` are the bound addresses.
    pub(crate) config: Arc<Config>,
    /// When this opusd started (for uptime).
    pub(crate) started_at: SystemTime,
    /// The metadata store: flushed on every way out.
    pub(crate) store: MetaStore,
    /// The artifact stores (versions: files, archives, manifests).
    pub(crate) artifacts: ArtifactStore,
    /// The Prometheus metrics.
    pub(crate) metrics: metrics::Metrics,
    /// The site server: routes by Host to deployed versions.
    site_server: Arc<sites::SiteServer>,
    /// Deploys and rollbacks: the store and the site table together.
    pub(crate) deployer: deploys::Deployer,
    /// Custom domains: the store and the site table's host map together.
    pub(crate) domains: domains::DomainRouter,
    /// The sites' HTTPS (certificates and the bound TLS listener), when it is on.
    pub(crate) https: Option<HttpsParts>,
    /// Cloudflare (DNS routes, DNS-01), when a token is configured.
    cloudflare: Option<Arc<crate::cloudflare::Cloudflare>>,
    /// Builds running elsewhere (Kubernetes Jobs) and their tokens.
    pub(crate) runners: runners::Runners,
    /// Build logs.
    pub(crate) logs: logs::LogHub,
    /// How hook messages are sent.
    pub(crate) hooks: HookParts,
    /// The build queue: shut down on every way out of `run`.
    pub(crate) scheduler: scheduler::Scheduler,
    /// Disk health (`/healthz`, free space for `opus status`); its watch reopens the store
    /// once a full disk has room again.
    pub(crate) health: health::Health,
    /// The GitHub App's installation tokens, when opusd is configured as one.
    pub(crate) github_app: Option<Arc<github::app::InstallationTokens>>,
    /// Installation tokens as git credentials (with the askpass script), when opusd is an App:
    /// the runner API hands them to runners for their clone.
    pub(crate) git_credentials: Option<Arc<github::askpass::GitCredentials>>,
}

impl Daemon {
    /// Opens every part of the daemon from `config`, whose `listen` and `sites_listen` must be
    /// the addresses actually bound ([`Listeners::addresses`]). Nothing is served yet. On an
    /// error, what was opened is closed again (the store flushed).
    pub async fn open(config: Config) -> Result<Daemon, ServeError> {
        config.check_security(config.listen)?;
        let store = open_store(&config.data_dir)?;
        match Daemon::open_parts(config, store.clone()).await {
            Ok(daemon) => Ok(daemon),
            Err(e) => {
                flush(&store).await;
                Err(e)
            }
        }
    }

    /// The parts over an open store, the scheduler last.
    async fn open_parts(config: Config, store: MetaStore) -> Result<Daemon, ServeError> {
        let artifacts = open_artifacts(&config, &store)?;
        let metrics = metrics::Metrics::new();
        let site_server = open_site_server(&config, &metrics)?;
        let pointers = site_pointers::PointerPublisher::new(
            store.clone(),
            artifacts
                .site_store()
                .map_err(|e| ServeError::Sites(e.into()))?,
            site_server.domain(),
            metrics.clone(),
        );
        let deployer = deploys::Deployer::new(
            store.clone(),
            artifacts.clone(),
            site_server.clone(),
            metrics.clone(),
        )
        .with_pointers(pointers.clone());
        deployer.load_all().await.map_err(ServeError::Sites)?;
        pointers.publish_all_in_background();
        let domains =
            domains::DomainRouter::new(store.clone(), site_server.clone()).with_pointers(pointers);
        domains.load().await.map_err(ServeError::Sites)?;
        let cloudflare = match &config.cloudflare {
            Some(c) => Some(Arc::new(
                crate::cloudflare::Cloudflare::new(c, config.hook_retry.timeout)
                    .map_err(ServeError::Cloudflare)?,
            )),
            None => None,
        };
        let https = match &config.https {
            Some(c) => Some(
                HttpsParts::open(c, &config, &site_server, cloudflare.clone(), &artifacts).await?,
            ),
            None => None,
        };
        let runners = runners::Runners::default();
        let kubernetes = connect_kubernetes(&config, &store, &runners).await?;
        let hooks = hook_parts(&config)?;
        let (github_app, git_credentials) = github_app(&config, &store, &hooks)?;
        let (logs, scheduler) = start_builds(
            &config,
            &store,
            &artifacts,
            &deployer,
            kubernetes,
            &metrics,
            git_credentials.clone(),
        )?;
        let health = health::Health::new(store.clone(), &config.data_dir, &config.store);
        Ok(Daemon {
            health,
            config: Arc::new(config),
            started_at: SystemTime::now(),
            store,
            artifacts,
            metrics,
            site_server,
            deployer,
            domains,
            https,
            cloudflare,
            runners,
            logs,
            hooks,
            scheduler,
            github_app,
            git_credentials,
        })
    }

    /// Serves the API and the sites on `listeners` until `shutdown` completes or either of them
    /// fails; then stops accepting, lets in-flight calls finish, gives running builds the
    /// shutdown grace, and flushes the store. Returns the API's error, if it failed.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        // One stop for both listeners: the signal, or either of them ending.
        let stop = CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => on_signal.cancel(),
                () = on_signal.cancelled() => {}
            }
        });
        let sites_stop = stop.clone();
        let site_server = self.site_server.clone();
        let limits = self.config.site_connections;
        let sites_task = tokio::spawn(async move {
            let result = site_server
                .run(
                    listeners.sites,
                    limits,
                    sites_stop.clone().cancelled_owned(),
                )
                .await;
            sites_stop.cancel();
            result
        });
        let https_task = self
            .https
            .as_ref()
            .map(|h| h.start(self.site_server.clone(), limits, stop.clone()));
        let health_watch = CancellationToken::new();
        tokio::spawn(self.health.clone().watch(health_watch.clone()));
        // The preview expiry sweep stops with the health watch (before the store's last flush).
        tokio::spawn(crate::preview_expiry::watch(
            self.store.clone(),
            self.deployer.clone(),
            crate::preview_expiry::SWEEP_EVERY,
            crate::preview_expiry::system_clock(),
            health_watch.clone(),
        ));
        // opus.yml `on:` triggers stop with the health watch too, before the scheduler does.
        let starter: std::sync::Arc<dyn crate::triggers::Starter> =
            std::sync::Arc::new(self.scheduler.clone());
        tokio::spawn(crate::triggers::schedule::watch(
            self.store.clone(),
            starter.clone(),
            crate::triggers::schedule::SWEEP_EVERY,
            crate::triggers::schedule::system_clock(),
            health_watch.clone(),
        ));
        tokio::spawn(crate::triggers::after::watch(
            self.store.clone(),
            starter,
            health_watch.clone(),
        ));
        // Verification after deploys (opus.yml `verify:`) stops as soon as opusd is told to
        // (before the site server stops: a check must not fail for that), and is waited for
        // (its checks' processes end before opusd does).
        let verifier = tokio::spawn(
            crate::verify::Verifier::new(
                self.store.clone(),
                self.deployer.clone(),
                self.config.data_dir.join("verify"),
            )
            .watch(stop.clone()),
        );
        let deliverer = hooks::Deliverer::start(
            self.store.clone(),
            self.hooks.transport.clone(),
            self.hooks.policy.clone(),
            self.hooks.links.clone(),
        );
        let github = github::StatusOutbox::start(
            self.store.clone(),
            self.config.github_api_url.clone(),
            self.hooks.policy.clone(),
            self.config.public_url.clone(),
            self.site_server.clone(),
            self.github_app.clone(),
            self.artifacts.clone(),
        );
        let dns_routes = self.cloudflare.as_ref().map(|cf| {
            crate::cloudflare::DnsRoutes::start(
                self.store.clone(),
                cf.clone(),
                self.hooks.policy.clone(),
                self.config.domain.clone(),
            )
        });
        write_address_file(
            &self.config.data_dir,
            self.config.listen,
            self.config.sites_listen,
            self.https.as_ref().map(|h| h.addr),
        );
        info!(api = %self.config.listen, sites = %self.config.sites_listen, data_dir = %self.config.data_dir.display(), "opusd started");

        let api_result = api::run(listeners.api, &self, stop.clone()).await;
        // An API that failed stops the sites too.
        stop.cancel();
        match sites_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the site server failed"),
            Err(e) => tracing::error!(error = %e, "the site server task failed"),
        }
        if let Some(task) = https_task {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "the HTTPS site server failed"),
                Err(e) => tracing::error!(error = %e, "the HTTPS site server task failed"),
            }
        }
        deliverer.stop();
        github.stop();
        drop(dns_routes);
        health_watch.cancel();
        if let Err(e) = verifier.await {
            tracing::error!(error = %e, "the verification task failed");
        }
        self.close().await;
        api_result
    }

    /// Stops the scheduler (running builds get the shutdown grace) and flushes the store.
    async fn close(self) {
        info!("shutting down: no new builds start");
        self.scheduler.shutdown(self.config.shutdown_grace).await;
        flush(&self.store).await;
        info!("opusd stopped");
    }
}

/// The GitHub App's installation tokens (API calls go with the hooks' timeout) and, with them,
/// git's credentials (the askpass script written into the data dir), when opusd is an App.
#[allow(clippy::type_complexity)]
fn github_app(
    config: &Config,
    store: &MetaStore,
    hooks: &HookParts,
) -> Result<
    (
        Option<Arc<github::app::InstallationTokens>>,
        Option<Arc<github::askpass::GitCredentials>>,
    ),
    ServeError,
> {
    let Some(key) = config.github_app.clone() else {
        return Ok((None, None));
    };
    info!(
        app_id = key.app_id,
        "authenticating to GitHub as a GitHub App"
    );
    let tokens = Arc::new(github::app::InstallationTokens::new(
        key,
        config.github_api_url.clone(),
        hooks.policy.timeout,
    ));
    let credentials =
        github::askpass::GitCredentials::install(&config.data_dir, tokens.clone(), store.clone())
            .map_err(data_dir_error(config.data_dir.join("git-askpass")))?;
    Ok((Some(tokens), Some(Arc::new(credentials))))
}

/// The build log hub, and the scheduler over a fresh `<data-dir>/work`. Runs last in
/// [`Daemon::open`]: once the scheduler has started, only [`Daemon::run`] stops it.
fn start_builds(
    config: &Config,
    store: &MetaStore,
    artifacts: &ArtifactStore,
    deployer: &deploys::Deployer,
    kubernetes: Option<kubernetes::KubeExecutor>,
    metrics: &metrics::Metrics,
    git_credentials: Option<Arc<github::askpass::GitCredentials>>,
) -> Result<(logs::LogHub, scheduler::Scheduler), ServeError> {
    let data_dir = &config.data_dir;
    let logs = logs::LogHub::new(data_dir.join("logs"), config.log_limit)
        .map_err(data_dir_error(data_dir.join("logs")))?;
    let context = build::BuildContext {
        work_dir: data_dir.join("work"),
        cache_dir: data_dir.join("cache"),
        logs: logs.clone(),
        sources: source::SourceFetcher::new(data_dir.join("git")).with_credentials(git_credentials),
        store_names: artifacts
            .stores()
            .into_iter()
            .map(|(name, _)| name)
            .collect(),
        artifacts: artifacts.clone(),
        deployer: deployer.clone(),
        executor: kubernetes.map_or_else(
            || build::Executor::Local(local_containment(config.containment)),
            build::Executor::Kubernetes,
        ),
    };
    // Workspaces of builds that were running when a previous opusd stopped are removed by the
    // scheduler's start, once it has ended what they left running.
    std::fs::create_dir_all(&context.work_dir).map_err(data_dir_error(context.work_dir.clone()))?;
    let scheduler =
        scheduler::Scheduler::start(store.clone(), context, config.max_builds, metrics.clone())
            .map_err(|source| ServeError::StoreFailed {
                during: "recover the builds of the previous run",
                source,
            })?;
    Ok((logs, scheduler))
}

/// Flushes the metadata store; a failure is logged (there is nothing left to stop).
/// The containment local builds get: a cgroup each when asked for and the machine allows it
/// (said at start either way, so that a missing cgroup is not a surprise), else the sweep.
fn local_containment(asked: Containment) -> Containment {
    if asked == Containment::Sweep {
        return asked;
    }
    match process_tree::cgroups_available() {
        Ok(dir) => {
            info!(cgroups = %dir.display(), "each build's processes are kept in a cgroup of its own");
            Containment::Cgroup
        }
        Err(why) => {
            tracing::warn!("--build-cgroups: {why}; builds' processes are found in /proc instead");
            Containment::Sweep
        }
    }
}

async fn flush(store: &MetaStore) {
    info!("shutting down: flushing the metadata store");
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "flushing the metadata store failed");
    }
}

/// The error of a data-dir path that could not be used.
fn data_dir_error(path: std::path::PathBuf) -> impl FnOnce(std::io::Error) -> ServeError {
    move |source| ServeError::DataDir { path, source }
}

/// Creates the data directory and opens `<data-dir>/meta`. A lock held by another process is
/// told apart from other failures: only then is another opusd the likely cause.
fn open_store(data_dir: &Path) -> Result<MetaStore, ServeError> {
    std::fs::create_dir_all(data_dir).map_err(data_dir_error(data_dir.to_path_buf()))?;
    let path = data_dir.join("meta");
    MetaStore::open(&path).map_err(|source| {
        // sled reports a held lock as an I/O error with this text, and no kind of its own.
        if source.to_string().contains("could not acquire lock") {
            ServeError::StoreLocked { path, source }
        } else {
            ServeError::Store { path, source }
        }
    })
}

/// Opens the artifact stores, and sweeps versions that never committed (opusd was stopped while
/// storing them) in the background: storing waits for the sweep, serving does not.
fn open_artifacts(config: &Config, store: &MetaStore) -> Result<ArtifactStore, ServeError> {
    let artifacts = ArtifactStore::open(store.clone(), &config.store, &config.extra_stores)
        .map_err(ServeError::Artifacts)?;
    let sweeper = artifacts.clone();
    tokio::spawn(async move {
        match sweeper.remove_orphans().await {
            Ok(report) if !report.versions.is_empty() => {
                info!(
                    count = report.versions.len(),
                    "removed objects of versions that never committed"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not sweep the artifact stores for orphans"),
        }
    });
    Ok(artifacts)
}

/// The site server with its disk cache of remote versions; links name the bound sites port.
fn open_site_server(
    config: &Config,
    metrics: &metrics::Metrics,
) -> Result<Arc<sites::SiteServer>, ServeError> {
    let cache_dir = config.data_dir.join("site-cache");
    let cache = sites::SiteCache::load(&cache_dir, config.site_cache_size, metrics.clone())
        .map_err(data_dir_error(cache_dir))?;
    let server = Arc::new(sites::SiteServer::new(
        &config.domain,
        metrics.clone(),
        cache,
    ));
    server.set_port(config.sites_listen.port());
    Ok(server)
}

/// The kubernetes executor when `--executor kubernetes`: finds the cluster, and deletes the Jobs
/// of builds that were running when opusd stopped (they are failed on start and must not go on).
async fn connect_kubernetes(
    config: &Config,
    store: &MetaStore,
    runners: &runners::Runners,
) -> Result<Option<kubernetes::KubeExecutor>, ServeError> {
    if config.executor != ExecutorKind::Kubernetes {
        return Ok(None);
    }
    let executor = kubernetes::KubeExecutor::connect(
        &config.kubernetes,
        config.listen.port(),
        runners.clone(),
    )
    .await
    .map_err(ServeError::Kubernetes)?;
    if config.store.starts_with("file://") {
        tracing::warn!(
            store = %config.store,
            "build pods upload versions to the artifact store themselves and cannot reach a \
             file:// store on opusd's disk: use --store s3://, gs:// or az:// \
             (opus install --store) unless the pods mount the same folder"
        );
    }
    let left: Vec<(String, u64)> = store
        .builds_in_states(&[BuildState::Running])
        .map_err(|source: StoreError| ServeError::StoreFailed {
            during: "read the builds that were running when opusd stopped",
            source,
        })?
        .into_iter()
        .map(|b| (b.project.to_string(), b.id))
        .collect();
    if !left.is_empty() {
        let cleaner = executor.clone();
        tokio::spawn(async move { cleaner.delete_jobs_of(&left).await });
    }
    info!(namespace = %config.kubernetes.namespace, runner_server = %executor.server_url(), "builds run as Kubernetes Jobs");
    Ok(Some(executor))
}

/// The hook deliverer's retry policy, HTTP client and site links.
fn hook_parts(config: &Config) -> Result<HookParts, ServeError> {
    let policy = config.hook_retry.clone();
    let transport = hooks::HttpTransport::new(policy.timeout).map_err(ServeError::HookClient)?;
    Ok(HookParts {
        policy,
        transport,
        links: hooks::SiteLinks {
            domain: config.domain.clone(),
            port: config.sites_listen.port(),
        },
    })
}

/// Writes `<data-dir>/opusd.json` with the bound API and sites addresses and the process id, so
/// scripts and tests that start opusd on port 0 learn where it listens. Failing to write it is
/// only logged.
fn write_address_file(
    data_dir: &Path,
    api: SocketAddr,
    sites: SocketAddr,
    sites_tls: Option<SocketAddr>,
) {
    let mut info = serde_json::json!({
        "api": api.to_string(),
        "sites": sites.to_string(),
        "pid": std::process::id(),
    });
    if let Some(tls) = sites_tls {
        info["sites_tls"] = serde_json::Value::String(tls.to_string());
    }
    let path = data_dir.join("opusd.json");
    let tmp = data_dir.join("opusd.json.tmp");
    let result = std::fs::write(&tmp, info.to_string()).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the address file");
    }
}

/// The sites' HTTPS: the certificate manager and the TLS listener, bound in [`Daemon::open`].
pub(crate) struct HttpsParts {
    /// Orders, renews and serves the custom domains' certificates.
    pub(crate) certs: Arc<acme::CertManager>,
    /// The bound TLS listener, taken when serving starts.
    listener: std::sync::Mutex<Option<TcpListener>>,
    /// The address it is bound to.
    addr: SocketAddr,
}

impl HttpsParts {
    /// Loads the stored certificates, turns HTTPS on in the site server, binds the TLS listener.
    async fn open(
        config: &crate::config::HttpsConfig,
        daemon: &Config,
        sites: &Arc<sites::SiteServer>,
        cloudflare: Option<Arc<crate::cloudflare::Cloudflare>>,
        artifacts: &ArtifactStore,
    ) -> Result<HttpsParts, ServeError> {
        let state = Arc::new(sites::https::HttpsState::new(
            config.redirect,
            config.hsts_max_age,
        ));
        sites.set_https(state.clone());
        // With Cloudflare, the sites' own wildcard gets its certificate by DNS-01.
        let wildcard = cloudflare
            .as_ref()
            .map(|cf| (format!("*.{}", daemon.domain), cf.clone()));
        let mut certs = acme::CertManager::load(config.clone(), &daemon.data_dir, state, wildcard);
        // Site replicas share a remote store: the certificates go there too.
        if !artifacts.default_store_is_local() {
            certs = certs.with_shared_store(artifacts.clone());
        }
        let certs = Arc::new(certs);
        let bind_error = |source| ServeError::SitesListen {
            addr: config.tls_listen,
            source,
        };
        let listener = TcpListener::bind(config.tls_listen)
            .await
            .map_err(bind_error)?;
        let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
        Ok(HttpsParts {
            certs,
            listener: std::sync::Mutex::new(Some(listener)),
            addr,
        })
    }

    /// Serves sites over TLS and starts the certificate manager, both until `stop`.
    fn start(
        &self,
        sites: Arc<sites::SiteServer>,
        limits: sites::ConnectionLimits,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<std::io::Result<()>> {
        tokio::spawn(
            self.certs
                .clone()
                .run(sites.watch_domains(), stop.child_token()),
        );
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let tls = self.certs.server_config();
        info!(sites_tls = %self.addr, "sites served over HTTPS");
        tokio::spawn(async move {
            match listener {
                Some(l) => sites.run_tls(l, tls, limits, stop.cancelled_owned()).await,
                None => Ok(()),
            }
        })
    }
}
