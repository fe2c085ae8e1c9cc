//! `opusd sites`: a site replica. It runs only the site server, with no metadata store: it
//! follows the site pointers opusd writes into the artifact store (`_opus/sites/`, see
//! [`crate::site_pointers`]) and serves their versions through its own disk cache, so sites scale
//! out over as many replicas as the store can feed.
//!
//! - [`follow::Follower`]: lists the pointers (one listing per poll, only changed ones read),
//!   loads new versions' manifests, and swaps the whole table when anything changed. A store that
//!   cannot be reached leaves the table as it is: the replica keeps serving what it has.
//! - `watch`: with `--api`, a watch on opusd's event stream wakes the follower at once on an
//!   environment's or domain's event; the poll (`--poll-interval`, 1 s) is the fallback.
//!
//! - `certs`: with `--sites-tls-listen`, the certificates opusd shares in the store
//!   (`_opus/certs/`) are followed on the same poll and served over TLS through opusd's own
//!   resolver and accept loop, with opusd's redirects and HSTS. Replicas never order any.
//!
//! Version hosts (`<label>--v--<project>`) are opusd's alone for now.

mod certs;
mod follow;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use opus_core::artifact::pointers::SiteStore;
use opus_core::error::ArtifactError;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use follow::Follower;

use crate::acme::CertResolver;
use crate::config::{DEFAULT_HSTS_MAX_AGE, DEFAULT_SITE_CACHE_SIZE};
use crate::metrics::Metrics;
use crate::sites::https::HttpsState;
use crate::sites::{ConnectionLimits, SiteCache, SiteServer};

/// The flags of `opusd sites`, each also read from its environment variable.
#[derive(Debug, Clone, Args)]
pub struct ReplicaArgs {
    /// The artifact store opusd writes to (its `--store`): `s3://bucket/prefix`, `gs://`,
    /// `az://` or `file://`, settings in the query as for opusd.
    #[arg(long, env = "OPUS_STORE", value_name = "URL")]
    pub store: String,
    /// Address the site server listens on.
    #[arg(
        long,
        env = "OPUS_SITES_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:7080"
    )]
    pub sites_listen: SocketAddr,
    /// Domain the site server routes by (opusd's `--domain`).
    #[arg(
        long,
        env = "OPUS_DOMAIN",
        value_name = "DOMAIN",
        default_value = "localhost"
    )]
    pub domain: String,
    /// Folder of the disk cache of remote files.
    #[arg(
        long,
        env = "OPUS_SITE_CACHE_DIR",
        value_name = "DIR",
        default_value = "opus-site-cache"
    )]
    pub cache_dir: PathBuf,
    /// Bound of the disk cache, in bytes.
    #[arg(long, env = "OPUS_SITE_CACHE_SIZE", value_name = "BYTES", default_value_t = DEFAULT_SITE_CACHE_SIZE)]
    pub site_cache_size: u64,
    /// opusd's API (`http://opusd:7070`): its event stream wakes the replica at once on a change.
    /// Without it the replica polls the store only.
    #[arg(long, env = "OPUS_API", value_name = "URL")]
    pub api: Option<String>,
    /// File holding the API token (with `--api`); `OPUS_TOKEN` gives the token itself.
    #[arg(long, env = "OPUS_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// How often the store is polled, in milliseconds.
    #[arg(
        long,
        env = "OPUS_POLL_INTERVAL_MS",
        value_name = "MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(10..)
    )]
    pub poll_interval_ms: u64,
    /// Address of the sites' HTTPS listener, serving the certificates opusd shares in the
    /// store (`_opus/certs/`; a replica orders none). Without it, sites are plain HTTP only.
    #[arg(long, env = "OPUS_SITES_TLS_LISTEN", value_name = "ADDR")]
    pub sites_tls_listen: Option<SocketAddr>,
    /// Redirect plain HTTP requests of a domain with a certificate to HTTPS (with
    /// `--sites-tls-listen`).
    #[arg(long, env = "OPUS_SITES_HTTPS_REDIRECT", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub sites_https_redirect: bool,
    /// `Strict-Transport-Security: max-age=` of HTTPS site responses, in seconds; 0 sends none.
    #[arg(long, env = "OPUS_SITES_HSTS_MAX_AGE", value_name = "SECONDS", default_value_t = DEFAULT_HSTS_MAX_AGE)]
    pub sites_hsts_max_age: u64,
    /// Write the bound site address here once listening (for scripts and tests that listen on
    /// port 0).
    #[arg(long, value_name = "FILE")]
    pub address_file: Option<PathBuf>,
}

/// Why a site replica could not start or stopped.
#[derive(Debug, Error)]
pub enum ReplicaError {
    /// The store URL is unusable.
    #[error("--store: {0}")]
    Store(#[source] ArtifactError),
    /// The disk cache's folder cannot be used.
    #[error("cannot use the site cache folder {dir}: {source}")]
    Cache {
        /// The folder.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The token file cannot be read.
    #[error("cannot read the token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `--api` is unusable.
    #[error("--api {url:?}: {detail}")]
    Api {
        /// The URL.
        url: String,
        /// What is wrong.
        detail: String,
    },
    /// The site listener cannot be bound.
    #[error("cannot listen on {addr} (try --sites-listen): {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The address file cannot be written.
    #[error("cannot write the address file {path}: {source}")]
    AddressFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The site server failed.
    #[error("the site server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Runs a site replica until `shutdown` completes.
#[tracing::instrument(name = "sites", skip_all, fields(store = %redacted(&args.store)))]
pub async fn run(
    args: ReplicaArgs,
    token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ReplicaError> {
    let store = SiteStore::open(&args.store).map_err(ReplicaError::Store)?;
    let token = match (&args.token_file, token.filter(|t| !t.is_empty())) {
        (_, Some(t)) => Some(t),
        (Some(path), None) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| ReplicaError::TokenFile {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    let metrics = Metrics::new();
    let cache = SiteCache::load(&args.cache_dir, args.site_cache_size, metrics.clone()).map_err(
        |source| ReplicaError::Cache {
            dir: args.cache_dir.clone(),
            source,
        },
    )?;
    let sites = Arc::new(SiteServer::new(&args.domain, metrics, cache));
    let watcher = match &args.api {
        Some(url) => Some(watch::Watcher::new(url, token.as_deref())?),
        None => None,
    };
    let listener = TcpListener::bind(args.sites_listen)
        .await
        .map_err(|source| ReplicaError::Listen {
            addr: args.sites_listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(ReplicaError::Serve)?;
    let tls = match args.sites_tls_listen {
        Some(addr) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ReplicaError::Listen { addr, source })?;
            let https = Arc::new(HttpsState::new(
                args.sites_https_redirect,
                args.sites_hsts_max_age,
            ));
            sites.set_https(https.clone());
            let resolver = Arc::new(CertResolver::default());
            Some((listener, resolver, https))
        }
        None => None,
    };
    let mut addresses = bound.to_string();
    if let Some((listener, _, _)) = &tls {
        let addr = listener.local_addr().map_err(ReplicaError::Serve)?;
        addresses.push_str(&format!("\n{addr}"));
    }
    if let Some(path) = &args.address_file {
        // Written whole under another name, then renamed: a reader never sees half of it.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, &addresses)
            .and_then(|()| std::fs::rename(&partial, path))
            .map_err(|source| ReplicaError::AddressFile {
                path: path.clone(),
                source,
            })?;
    }

    let stop = CancellationToken::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut follower = Follower::new(store, sites.clone());
    if let Some((_, resolver, https)) = &tls {
        follower = follower.with_certs(certs::CertFollower::new(resolver.clone(), https.clone()));
    }
    let following = tokio::spawn(follower.run(
        Duration::from_millis(args.poll_interval_ms),
        wake.clone(),
        stop.clone(),
    ));
    if let Some(w) = watcher {
        tokio::spawn(w.run(wake, stop.clone()));
    }
    tracing::info!(sites = %addresses.replace('\n', ", "), domain = %args.domain, api = args.api.as_deref().unwrap_or("none"), "site replica started");
    // Both listeners stop on the one shutdown.
    let stopping = CancellationToken::new();
    tokio::spawn({
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            stopping.cancel();
        }
    });
    let served_tls = tls.map(|(listener, resolver, _)| {
        tokio::spawn(sites.clone().run_tls(
            listener,
            resolver.server_config(),
            ConnectionLimits::default(),
            stopping.clone().cancelled_owned(),
        ))
    });
    let mut served = sites
        .run(
            listener,
            ConnectionLimits::default(),
            stopping.clone().cancelled_owned(),
        )
        .await;
    stopping.cancel();
    if let Some(task) = served_tls {
        let tls_served = task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        served = served.and(tls_served);
    }
    stop.cancel();
    let _ = following.await;
    tracing::info!("site replica stopped");
    served.map_err(ReplicaError::Serve)
}

/// The store URL without its query (which may carry settings best kept out of logs).
fn redacted(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}
