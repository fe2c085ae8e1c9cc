//! opusd, the Opus daemon, as a library so that tests can run it in-process.
//!
//! [`serve`] is the seam: `main.rs` parses flags, sets up tracing, binds the API listener and
//! passes a shutdown future; everything else starts here.
//!
//! - [`daemon`]: the [`Daemon`], opened from a config ([`Daemon::open`]) and run on bound
//!   [`Listeners`] until shutdown ([`Daemon::run`]).
//! - [`config`]: the layered [`config::Config`].
//! - [`api`]: the gRPC services, authentication, and the mapping of errors to status codes.
//! - [`hooks`]: the deliverer of events to outgoing hooks, and HMAC signatures.
//! - [`github`]: commit statuses of GitHub-triggered builds, through a durable outbox.
//! - [`scheduler`]: the build queue and its slots; [`build`]: one build from source to outcome;
//!   [`source`]: git mirrors and local copies; [`build::steps`]: steps as process groups;
//!   [`logs`]: build log files and live tails.
//! - [`kubernetes`]: the kubernetes executor (a Job per build); [`runners`]: the builds running
//!   elsewhere and their tokens; [`runner`]: `opusd runner`, what a build Job's pod runs.
//! - [`sites`]: the site server ([`sites::SiteServer`]), routing by Host to deployed versions.
//! - [`acme`]: automatic HTTPS of custom domains (ACME orders, renewals, the TLS resolver).
//! - [`site_pointers`]: writes what each environment serves into the artifact store for site
//!   replicas; [`site_replica`]: `opusd sites`, a site server that follows those pointers.
//! - [`domains`]: the [`domains::DomainRouter`], custom domains in the store and the site table.
//! - [`deploys`]: the [`deploys::Deployer`], which moves environments in the store and the site
//!   table together, and deletes versions (on request and by retention) under the same lock.
//! - [`promotion`]: what follows a build's stored version: automatic deploys and
//!   previews from opus.yml, retention.
//! - [`metrics`]: the Prometheus metrics served at `/metrics`.
//! - [`dashboard`]: the web dashboard on the API listener at `/`.
//! - [`version`]: which build this opusd is (version and git commit).

pub mod acme;
pub mod api;
pub mod approval;
pub mod build;
pub mod checks;
pub mod cloudflare;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod deploys;
pub mod domains;
pub mod github;
pub mod health;
pub mod hooks;
pub mod kubernetes;
pub mod logs;
pub mod metrics;
pub mod output_lines;
pub mod preview_expiry;
pub mod process_tree;
pub mod promotion;
pub mod runner;
pub mod runners;
pub mod scheduler;
pub mod site_pointers;
pub mod site_replica;
pub mod sites;
pub mod source;
pub mod triggers;
pub mod verify;
pub mod version;
pub mod version_loader;

use std::future::Future;

use thiserror::Error;
use tokio::net::TcpListener;

use crate::config::Config;
pub use crate::daemon::{Daemon, Listeners};

/// Why opusd could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The dashboard could not be set up.
    #[error(transparent)]
    Dashboard(#[from] dashboard::DashboardError),
    /// The address a listener is bound to could not be read back.
    #[error("cannot read the address of a bound listener: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// The data directory could not be prepared.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another process holds the metadata store's lock.
    #[error(
        "the metadata store in {path} is in use by another process (is another opusd using this data directory?): {source}"
    )]
    StoreLocked {
        /// The directory.
        path: std::path::PathBuf,
        /// The store's error.
        source: opus_core::error::StoreError,
    },
    /// The metadata store could not be opened (damaged, unreadable).
    #[error("cannot open the metadata store in {path}: {source}")]
    Store {
        /// The directory.
        path: std::path::PathBuf,
        /// The store's error.
        source: opus_core::error::StoreError,
    },
    /// The open metadata store failed while opusd started.
    #[error("cannot {during}: the metadata store failed: {source}")]
    StoreFailed {
        /// What opusd was doing.
        during: &'static str,
        /// The store's error.
        source: opus_core::error::StoreError,
    },
    /// An artifact store could not be set up (a bad URL, an unwritable folder).
    #[error("cannot open the artifact store: {0}")]
    Artifacts(#[source] opus_core::error::ArtifactError),
    /// The TLS certificate or key was read but cannot be used (not PEM, or not a pair).
    #[error("the TLS certificate or key cannot be used: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The reflection service could not load the API descriptors (a build defect).
    #[error("gRPC reflection setup failed: {0}")]
    Reflection(#[source] tonic_reflection::server::Error),
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
    HookClient(#[source] reqwest::Error),
    /// The gRPC server failed.
    #[error("API server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The Cloudflare API client could not be built (TLS setup).
    #[error("cannot set up the Cloudflare API client: {0}")]
    Cloudflare(#[source] cloudflare::CloudflareError),
}

/// Runs opusd on an already-bound API listener (and the sites listener it binds from
/// `config.sites_listen`) until `shutdown` completes, then stops accepting, lets in-flight calls
/// finish, stops the scheduler and flushes the store. The same happens when the API or the site
/// server fails.
pub async fn serve(
    listener: TcpListener,
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listeners = Listeners::with_api(listener, config.sites_listen).await?;
    (config.listen, config.sites_listen) = listeners.addresses()?;
    Daemon::open(config).await?.run(listeners, shutdown).await
}
