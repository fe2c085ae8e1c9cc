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

pub mod api;
pub mod build;
pub mod config;
pub mod executor;
pub mod hooks;
pub mod logs;
pub mod scheduler;
pub mod source;

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

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
}

/// Writes `<data-dir>/opusd.json` with the bound API address and the process id, so scripts and
/// tests that start opusd on port 0 learn where it listens. Failing to write it is only logged.
fn write_address_file(data_dir: &std::path::Path, api: std::net::SocketAddr) {
    let info = serde_json::json!({ "api": api.to_string(), "pid": std::process::id() });
    let path = data_dir.join("opusd.json");
    let tmp = data_dir.join("opusd.json.tmp");
    let result = std::fs::write(&tmp, info.to_string()).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the address file");
    }
}

/// Runs opusd on an already-bound API listener until `shutdown` completes, then stops accepting,
/// lets in-flight calls finish and flushes the store.
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

    let data_dir = config.data_dir.clone();
    let io = |path: std::path::PathBuf| move |source| ServeError::DataDir { path, source };
    let logs = logs::LogHub::new(data_dir.join("logs"), config.log_limit)
        .map_err(io(data_dir.join("logs")))?;
    let context = build::BuildContext {
        work_dir: data_dir.join("work"),
        cache_dir: data_dir.join("cache"),
        logs: logs.clone(),
        sources: source::SourceFetcher::new(data_dir.join("git")),
        store_names: vec!["default".to_owned()],
    };
    // Workspaces of builds that were running when a previous opusd stopped.
    let _ = std::fs::remove_dir_all(&context.work_dir);
    std::fs::create_dir_all(&context.work_dir).map_err(io(context.work_dir.clone()))?;
    let scheduler = scheduler::Scheduler::start(store.clone(), context, config.max_builds)
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
        config: Arc::new(config),
        started_at: SystemTime::now(),
        scheduler: scheduler.clone(),
        logs,
        hook_transport: hook_transport.clone(),
        site_links: site_links.clone(),
    };
    let deliverer = hooks::Deliverer::start(store.clone(), hook_transport, policy, site_links);
    info!(api = %bound, data_dir = %state.config.data_dir.display(), "opusd started");

    write_address_file(&state.config.data_dir, bound);
    let served = api::run(listener, state.clone(), shutdown).await;
    deliverer.stop();
    served?;

    info!("shutting down: no new builds start");
    scheduler.shutdown(grace).await;

    info!("shutting down: flushing the metadata store");
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "flushing the metadata store failed");
    }
    info!("opusd stopped");
    Ok(())
}
