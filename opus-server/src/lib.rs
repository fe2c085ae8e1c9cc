//! opusd, the Opus daemon, as a library so that tests can run it in-process.
//!
//! [`serve`] is the seam: `main.rs` parses flags, sets up tracing, binds the listeners and passes a
//! shutdown future; everything else starts here.
//!
//! - [`config`]: the layered [`config::Config`].
//! - [`api`]: the gRPC services, authentication, and the mapping of errors to status codes.

pub mod api;
pub mod config;

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
    /// The resolved configuration.
    pub config: Arc<Config>,
    /// When this opusd started (for uptime).
    pub started_at: SystemTime,
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

    write_address_file(&config.data_dir, bound);

    let artifacts = ArtifactStore::open(
        store.clone(),
        &config.store,
        &config.extra_stores,
        &config.data_dir.join("uploads"),
    )
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

    let state = AppState {
        store: store.clone(),
        artifacts,
        config: Arc::new(config),
        started_at: SystemTime::now(),
    };
    info!(api = %bound, data_dir = %state.config.data_dir.display(), "opusd started");

    api::run(listener, state.clone(), shutdown).await?;

    info!("shutting down: flushing the metadata store");
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "flushing the metadata store failed");
    }
    info!("opusd stopped");
    Ok(())
}
