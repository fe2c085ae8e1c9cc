//! opusd's configuration: one [`Config`], layered defaults < `opusd.toml` < `OPUS_*` environment <
//! flags. Clap reads flags and environment together (each flag has `env = "OPUS_..."`), the file
//! fills what both left unset, and defaults fill the rest.
//!
//! [`Config::resolve`] assembles the parts, each in the module that owns it: the flags (`args`),
//! the file (`file`), the API's token and TLS (`security`), the data directory and stores
//! (`stores`), the executor (`executor`), bounds and timeouts (`tuning`), and the sites' HTTPS
//! (`https`).

mod args;
mod cloudflare;
mod executor;
mod file;
mod github;
mod github_app;
mod https;
mod public_url;
mod security;
mod stores;
#[cfg(test)]
mod tests;
mod tuning;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use opus_core::model::StoreName;
use thiserror::Error;

use crate::hooks::RetryPolicy;
use crate::process_tree::Containment;
use crate::sites::ConnectionLimits;

pub use args::ConfigArgs;
pub use cloudflare::{CLOUDFLARE_API, CloudflareArgs, CloudflareConfig, PublicAddress};
pub use executor::{DEFAULT_BUILD_IMAGE, DEFAULT_KUBERNETES_POLL, ExecutorKind, KubernetesConfig};
pub use file::FileConfig;
pub use github::DEFAULT_GITHUB_API_URL;
pub use https::{AcmeChallenge, DEFAULT_HSTS_MAX_AGE, HttpsArgs, HttpsConfig, LETS_ENCRYPT};
pub use public_url::PublicUrl;
pub use security::{MIN_PUBLIC_TOKEN_LEN, TlsIdentity};
pub use tuning::DEFAULT_SITE_CACHE_SIZE;

/// Why the configuration could not be assembled. Each message names the file or key to fix.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has an unknown or mistyped key.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and the line.
        message: String,
    },
    /// A file a setting names (the token file, a TLS file) could not be read.
    #[error("cannot read the {key} file {path}: {source}")]
    Unreadable {
        /// The setting that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A value that parses but cannot be used.
    #[error("invalid {key}: {message}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The resolved configuration of one opusd.
#[derive(Debug, Clone)]
pub struct Config {
    /// API address.
    pub listen: SocketAddr,
    /// Site server address.
    pub sites_listen: SocketAddr,
    /// Domain for site routing.
    pub domain: String,
    /// Data directory (absolute).
    pub data_dir: PathBuf,
    /// API token, when one is required.
    pub token: Option<String>,
    /// The dashboard's read-only token ([`crate::dashboard`]), when there is one.
    pub viewer_token: Option<String>,
    /// The API's TLS certificate and key, already read.
    pub tls: Option<TlsIdentity>,
    /// Builds at once.
    pub max_builds: usize,
    /// Default artifact store URL.
    pub store: String,
    /// Extra artifact stores, `(name, url)`, their names checked.
    pub extra_stores: Vec<(StoreName, String)>,
    /// Where builds run.
    pub executor: ExecutorKind,
    /// Settings of the kubernetes executor.
    pub kubernetes: KubernetesConfig,
    /// Largest build log, in bytes.
    pub log_limit: u64,
    /// Time running builds get on shutdown.
    pub shutdown_grace: Duration,
    /// How local builds' processes are kept together (`--build-cgroups`).
    pub containment: Containment,
    /// Bound of the site server's disk cache of remote versions, in bytes.
    pub site_cache_size: u64,
    /// How failed hook deliveries are retried, and how long one attempt may take.
    pub hook_retry: RetryPolicy,
    /// Timeouts and the per-address cap of site connections.
    pub site_connections: ConnectionLimits,
    /// HTTPS of the sites (TLS listener, ACME), when `--sites-tls-listen` is set.
    pub https: Option<HttpsConfig>,
    /// How the world reaches the API port (`--public-url`), when set.
    pub public_url: Option<PublicUrl>,
    /// GitHub's REST API (`--github-api-url`), without a trailing `/`.
    pub github_api_url: String,
    /// Cloudflare (DNS routes, DNS-01), when `--cloudflare-token-file` is set.
    pub cloudflare: Option<CloudflareConfig>,
    /// The GitHub App opusd authenticates as (`--github-app-id`, `--github-app-key-file`),
    /// its key already checked.
    pub github_app: Option<crate::github::app::AppKey>,
}

impl Config {
    /// Layers flags and environment over the config file over defaults.
    pub fn resolve(args: ConfigArgs) -> Result<Config, ConfigError> {
        let file = FileConfig::find(args.config.as_deref())?;
        let site_connections = tuning::site_connections(&args, &file)?;
        let data_dir = stores::data_dir(&args, &file)?;
        let token = security::token(&args, &file)?;
        let viewer_token = security::viewer_token(&args, &file, token.as_deref())?;
        let tls = security::tls(&args, &file)?;
        let max_builds = tuning::max_builds(&args, &file)?;
        let executor = executor::executor(&args, &file);
        let kubernetes = executor::kubernetes(&args, &file)?;
        let hook_retry = tuning::hook_retry(&args, &file)?;
        let store = stores::store(&args, &file, &data_dir);
        let extra_stores = stores::extra_stores(&args, &file)?;
        let https = https::https(&args, &file)?;
        Ok(Config {
            listen: listen(&args, &file),
            sites_listen: sites_listen(&args, &file),
            domain: domain(&args, &file),
            data_dir,
            token,
            viewer_token,
            tls,
            max_builds,
            store,
            extra_stores,
            executor,
            kubernetes,
            log_limit: tuning::log_limit(&args, &file),
            shutdown_grace: tuning::shutdown_grace(&args, &file),
            containment: executor::containment(&args, &file),
            site_cache_size: tuning::site_cache_size(&args, &file),
            hook_retry,
            site_connections,
            https,
            public_url: public_url::public_url(&args, &file)?,
            github_api_url: github::github_api_url(&args, &file)?,
            cloudflare: cloudflare::cloudflare(&args, &file)?,
            github_app: github_app::github_app(&args, &file)?,
        })
    }
}

/// The API's address [default: 127.0.0.1:7070].
fn listen(args: &ConfigArgs, file: &FileConfig) -> SocketAddr {
    args.listen
        .or(file.listen)
        .unwrap_or(([127, 0, 0, 1], 7070).into())
}

/// The site server's address [default: 127.0.0.1:7080].
fn sites_listen(args: &ConfigArgs, file: &FileConfig) -> SocketAddr {
    args.sites_listen
        .or(file.sites_listen)
        .unwrap_or(([127, 0, 0, 1], 7080).into())
}

/// The domain sites are routed by [default: localhost].
fn domain(args: &ConfigArgs, file: &FileConfig) -> String {
    args.domain
        .clone()
        .or_else(|| file.domain.clone())
        .unwrap_or_else(|| "localhost".into())
}

/// A duration setting given as a count of `unit`s; zero is refused (a zero wait spins).
fn duration(
    key: &'static str,
    value: Option<u64>,
    unit: fn(u64) -> Duration,
) -> Result<Option<Duration>, ConfigError> {
    match value {
        Some(0) => Err(ConfigError::Invalid {
            key,
            message: "must be at least 1".into(),
        }),
        v => Ok(v.map(unit)),
    }
}
