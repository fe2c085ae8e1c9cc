//! opusd, the Opus daemon, as a library so that tests can run it in-process.
//!
//! [`serve`] is the seam: `main.rs` parses flags, sets up tracing, binds the listeners and passes a
//! shutdown future; everything else starts here.
//!
//! - [`config`]: the layered [`config::Config`].
//! - [`api`]: the gRPC services, authentication, and the mapping of errors to status codes.
//! - [`hooks`]: the deliverer of events to outgoing hooks, and HMAC signatures.
//! - [`scheduler`]: the build queue and its slots; [`build`]: one build from source to outcome;
//!   [`source`]: git mirrors and local copies; [`executor`]: steps as process groups;
//!   [`logs`]: build log files and live tails.
//! - [`kubernetes`]: the kubernetes executor (a Job per build); [`runners`]: the builds running
//!   elsewhere and their tokens; [`runner`]: `opusd runner`, what a build Job's pod runs.
//! - [`sites`]: the site server ([`sites::SiteServer`]), routing by Host to deployed versions.
//! - [`deploys`]: the [`deploys::Deployer`], which moves environments in the store and the site
//!   table together, and deletes versions (on request and by retention) under the same lock.
//! - [`promotion`]: what follows a build's stored version: site options, automatic deploys and
//!   previews from opus.yml, retention.
//! - [`metrics`]: the Prometheus metrics served at `/metrics`.

pub mod api;
pub mod build;
pub mod config;
pub mod deploys;
pub mod executor;
pub mod hooks;
pub mod kubernetes;
pub mod logs;
pub mod metrics;
pub mod promotion;
pub mod runner;
pub mod runners;
pub mod scheduler;
pub mod sites;
pub mod source;

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use opus_core::artifact::ArtifactStore;
use opus_core::store::MetaStore;
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::info;

use crate::config::Config;

/// Why opusd could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The data directory could not be prepared.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The metadata store could not be opened (another opusd holds it, or it is damaged).
    #[error(
        "cannot open the metadata store in {path}: {source} (is another opusd using this data directory?)"
    )]
    Store {
        /// The directory.
        path: std::path::PathBuf,
        /// The store's error.
        source: opus_core::error::StoreError,
    },
    /// An artifact store could not be set up (a bad URL, an unwritable folder).
    #[error("cannot open the artifact store: {0}")]
    Artifacts(#[source] opus_core::error::ArtifactError),
    /// TLS files could not be read.
    #[error("cannot read TLS file {path}: {source}")]
    Tls {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The reflection service could not load the API descriptors (a build defect).
    #[error("gRPC reflection setup failed: {0}")]
    Reflection(String),
    /// The sites listener could not be bound.
    #[error(
        "cannot listen for sites on {addr}: {source} (is another opusd running? try --sites-listen)"
    )]
    SitesListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The deployed sites could not be loaded.
    #[error("cannot load the deployed sites: {0}")]
    Sites(#[source] opus_core::CoreError),
    /// The kubernetes executor has no Kubernetes context to create Jobs in.
    #[error("--executor kubernetes: {0}")]
    Kubernetes(#[source] opus_core::kubernetes::KubeError),
    /// The HTTP client of the hook deliverer could not be built (TLS setup).
    #[error("cannot set up the hook deliverer's HTTP client: {0}")]
    HookClient(String),
    /// The gRPC server failed.
    #[error("API server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// What every service shares: the store, the configuration, and when the daemon started.
#[derive(Clone)]
pub struct AppState {
    /// The metadata store.
    pub store: MetaStore,
    /// The artifact stores (versions: files, archives, manifests).
    pub artifacts: ArtifactStore,
    /// Deploys and rollbacks: the store and the site table together.
    pub deployer: deploys::Deployer,
    /// The Prometheus metrics.
    pub metrics: metrics::Metrics,
    /// The resolved configuration.
    pub config: Arc<Config>,
    /// When this opusd started (for uptime).
    pub started_at: SystemTime,
    /// The build queue.
    pub scheduler: scheduler::Scheduler,
    /// Build logs.
    pub logs: logs::LogHub,
    /// The HTTP client hooks are posted with (`TestHook` uses it directly).
    pub hook_transport: hooks::HttpTransport,
    /// How hook messages link to deployed sites.
    pub site_links: hooks::SiteLinks,
    /// Builds running elsewhere (Kubernetes Jobs) and their tokens, for `RunnerService`.
    pub runners: runners::Runners,
}

/// Writes `<data-dir>/opusd.json` with the bound API and sites addresses and the process id, so
/// scripts and tests that start opusd on port 0 learn where it listens. Failing to write it is
/// only logged.
fn write_address_file(
    data_dir: &std::path::Path,
    api: std::net::SocketAddr,
    sites: std::net::SocketAddr,
) {
    let info = serde_json::json!({
        "api": api.to_string(),
        "sites": sites.to_string(),
        "pid": std::process::id(),
    });
    let path = data_dir.join("opusd.json");
    let tmp = data_dir.join("opusd.json.tmp");
    let result = std::fs::write(&tmp, info.to_string()).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the address file");
    }
}

/// Runs opusd on an already-bound API listener (and the sites listener it binds from
/// `config.sites_listen`) until `shutdown` completes, then stops accepting, lets in-flight calls
/// finish and flushes the store.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    config.check_security(bound)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let meta_path = config.data_dir.join("meta");
    let store = MetaStore::open(&meta_path).map_err(|source| ServeError::Store {
        path: meta_path.clone(),
        source,
    })?;

    let artifacts = ArtifactStore::open(store.clone(), &config.store, &config.extra_stores)
        .map_err(ServeError::Artifacts)?;
    // Versions that never committed (opusd was stopped while storing them) are removed in the
    // background; storing waits for the sweep, serving does not.
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

    let metrics = metrics::Metrics::new();
    let cache_dir = config.data_dir.join("site-cache");
    let site_cache = sites::SiteCache::load(&cache_dir, config.site_cache_size, metrics.clone())
        .map_err(|source| ServeError::DataDir {
            path: cache_dir,
            source,
        })?;
    let site_server = Arc::new(sites::SiteServer::new(
        &config.domain,
        metrics.clone(),
        site_cache,
    ));
    let deployer = deploys::Deployer::new(
        store.clone(),
        artifacts.clone(),
        site_server.clone(),
        metrics.clone(),
    );
    deployer.load_all().await.map_err(ServeError::Sites)?;
    let sites_listener = TcpListener::bind(config.sites_listen)
        .await
        .map_err(|source| ServeError::SitesListen {
            addr: config.sites_listen,
            source,
        })?;
    let sites_bound = sites_listener
        .local_addr()
        .map_err(|source| ServeError::SitesListen {
            addr: config.sites_listen,
            source,
        })?;
    site_server.set_port(sites_bound.port());

    let runners = runners::Runners::default();
    let kubernetes = match config.executor {
        config::ExecutorKind::Local => None,
        config::ExecutorKind::Kubernetes => {
            let k = kubernetes::KubeExecutor::connect(
                &config.kubernetes,
                bound.port(),
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
            // Builds that were running when opusd stopped are failed below ("opusd restarted");
            // their Jobs must not go on.
            let left: Vec<(String, u64)> = store
                .builds_in_states(&[opus_core::model::BuildState::Running])
                .map_err(|source| ServeError::Store {
                    path: meta_path.clone(),
                    source,
                })?
                .into_iter()
                .map(|b| (b.project.to_string(), b.id))
                .collect();
            if !left.is_empty() {
                let cleaner = k.clone();
                tokio::spawn(async move { cleaner.delete_jobs_of(&left).await });
            }
            info!(namespace = %config.kubernetes.namespace, runner_server = %k.server_url(), "builds run as Kubernetes Jobs");
            Some(k)
        }
    };

    let data_dir = config.data_dir.clone();
    let io = |path: std::path::PathBuf| move |source| ServeError::DataDir { path, source };
    let logs = logs::LogHub::new(data_dir.join("logs"), config.log_limit)
        .map_err(io(data_dir.join("logs")))?;
    let context = build::BuildContext {
        work_dir: data_dir.join("work"),
        cache_dir: data_dir.join("cache"),
        logs: logs.clone(),
        sources: source::SourceFetcher::new(data_dir.join("git")),
        store_names: artifacts
            .stores()
            .into_iter()
            .map(|(name, _)| name)
            .collect(),
        artifacts: artifacts.clone(),
        deployer: deployer.clone(),
        kubernetes,
    };
    // Workspaces of builds that were running when a previous opusd stopped.
    let _ = std::fs::remove_dir_all(&context.work_dir);
    std::fs::create_dir_all(&context.work_dir).map_err(io(context.work_dir.clone()))?;
    let scheduler =
        scheduler::Scheduler::start(store.clone(), context, config.max_builds, metrics.clone())
            .map_err(|source| ServeError::Store {
                path: meta_path.clone(),
                source,
            })?;
    let grace = config.shutdown_grace;

    let policy = hooks::RetryPolicy::from_env();
    let hook_transport = hooks::HttpTransport::new(policy.timeout)
        .map_err(|e| ServeError::HookClient(e.to_string()))?;
    let site_links = hooks::SiteLinks {
        domain: config.domain.clone(),
        port: config.sites_listen.port(),
    };
    let state = AppState {
        store: store.clone(),
        artifacts,
        deployer,
        metrics,
        config: Arc::new(config),
        started_at: SystemTime::now(),
        scheduler: scheduler.clone(),
        logs,
        hook_transport: hook_transport.clone(),
        site_links: site_links.clone(),
        runners,
    };

    // One shutdown signal for both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let sites_task = tokio::spawn(site_server.run(sites_listener, stopped(stop_rx.clone())));

    let deliverer = hooks::Deliverer::start(store.clone(), hook_transport, policy, site_links);
    write_address_file(&state.config.data_dir, bound, sites_bound);
    info!(api = %bound, sites = %sites_bound, data_dir = %state.config.data_dir.display(), "opusd started");

    let api_result = api::run(listener, state.clone(), stopped(stop_rx)).await;
    match sites_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the site server failed"),
        Err(e) => tracing::error!(error = %e, "the site server task failed"),
    }
    deliverer.stop();
    api_result?;

    info!("shutting down: no new builds start");
    scheduler.shutdown(grace).await;

    info!("shutting down: flushing the metadata store");
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "flushing the metadata store failed");
    }
    info!("opusd stopped");
    Ok(())
}
