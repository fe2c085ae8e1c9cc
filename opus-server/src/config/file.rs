//! The `opusd.toml` file: [`FileConfig`], and finding and reading it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ConfigError, ExecutorKind};

/// The `opusd.toml` file: the same settings as the flags, in snake_case.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`super::ConfigArgs::listen`].
    pub listen: Option<SocketAddr>,
    /// See [`super::ConfigArgs::sites_listen`].
    pub sites_listen: Option<SocketAddr>,
    /// See [`super::ConfigArgs::domain`].
    pub domain: Option<String>,
    /// See [`super::ConfigArgs::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`super::ConfigArgs::token_file`] (a token itself does not belong in a file that may be shared).
    pub token_file: Option<PathBuf>,
    /// See [`super::ConfigArgs::viewer_token_file`] (like the token, the file, not the value).
    pub viewer_token_file: Option<PathBuf>,
    /// See [`super::ConfigArgs::tls_cert`].
    pub tls_cert: Option<PathBuf>,
    /// See [`super::ConfigArgs::tls_key`].
    pub tls_key: Option<PathBuf>,
    /// See [`super::ConfigArgs::max_builds`].
    pub max_builds: Option<usize>,
    /// See [`super::ConfigArgs::store`].
    pub store: Option<String>,
    /// See [`super::ConfigArgs::extra_store`]: a table of NAME = "URL".
    pub extra_stores: Option<std::collections::BTreeMap<String, String>>,
    /// See [`super::ConfigArgs::executor`].
    pub executor: Option<ExecutorKind>,
    /// See [`super::ConfigArgs::kubernetes_namespace`].
    pub kubernetes_namespace: Option<String>,
    /// See [`super::ConfigArgs::runner_image`].
    pub runner_image: Option<String>,
    /// See [`super::ConfigArgs::runner_server_url`].
    pub runner_server_url: Option<String>,
    /// See [`super::ConfigArgs::build_image`].
    pub build_image: Option<String>,
    /// See [`super::ConfigArgs::log_limit`].
    pub log_limit: Option<u64>,
    /// See [`super::ConfigArgs::shutdown_grace`].
    pub shutdown_grace: Option<u64>,
    /// See [`super::ConfigArgs::build_cgroups`].
    pub build_cgroups: Option<bool>,
    /// See [`super::ConfigArgs::site_cache_size`].
    pub site_cache_size: Option<u64>,
    /// See [`super::ConfigArgs::kubernetes_poll_ms`].
    pub kubernetes_poll_ms: Option<u64>,
    /// See [`super::ConfigArgs::hook_retry_base_ms`].
    pub hook_retry_base_ms: Option<u64>,
    /// See [`super::ConfigArgs::hook_retry_cap_ms`].
    pub hook_retry_cap_ms: Option<u64>,
    /// See [`super::ConfigArgs::hook_give_up_secs`].
    pub hook_give_up_secs: Option<u64>,
    /// See [`super::ConfigArgs::hook_timeout_ms`].
    pub hook_timeout_ms: Option<u64>,
    /// See [`super::ConfigArgs::site_header_timeout`].
    pub site_header_timeout: Option<u64>,
    /// See [`super::ConfigArgs::site_idle_timeout`].
    pub site_idle_timeout: Option<u64>,
    /// See [`super::ConfigArgs::site_keep_alive_timeout`].
    pub site_keep_alive_timeout: Option<u64>,
    /// See [`super::ConfigArgs::site_connections_per_ip`].
    pub site_connections_per_ip: Option<usize>,
    /// See [`super::HttpsArgs::sites_tls_listen`].
    pub sites_tls_listen: Option<SocketAddr>,
    /// See [`super::HttpsArgs::acme_directory`].
    pub acme_directory: Option<String>,
    /// See [`super::HttpsArgs::acme_email`].
    pub acme_email: Option<String>,
    /// See [`super::HttpsArgs::acme_ca_file`].
    pub acme_ca_file: Option<PathBuf>,
    /// See [`super::HttpsArgs::sites_https_redirect`].
    pub sites_https_redirect: Option<bool>,
    /// See [`super::HttpsArgs::acme_challenge`].
    pub acme_challenge: Option<super::AcmeChallenge>,
    /// See [`super::HttpsArgs::sites_hsts_max_age`].
    pub sites_hsts_max_age: Option<u64>,
    /// See [`super::HttpsArgs::acme_dns_propagation_secs`].
    pub acme_dns_propagation_secs: Option<u64>,
    /// See [`super::ConfigArgs::public_url`].
    pub public_url: Option<String>,
    /// See [`super::ConfigArgs::github_api_url`].
    pub github_api_url: Option<String>,
    /// See [`super::CloudflareArgs::cloudflare_token_file`].
    pub cloudflare_token_file: Option<PathBuf>,
    /// See [`super::CloudflareArgs::cloudflare_zone`].
    pub cloudflare_zone: Option<String>,
    /// See [`super::CloudflareArgs::cloudflare_api_url`].
    pub cloudflare_api_url: Option<String>,
    /// See [`super::CloudflareArgs::public_address`].
    pub public_address: Option<String>,
    /// See [`super::ConfigArgs::github_app_id`].
    pub github_app_id: Option<u64>,
    /// See [`super::ConfigArgs::github_app_key_file`].
    pub github_app_key_file: Option<PathBuf>,
}

impl FileConfig {
    /// The file `--config` names, else `./opusd.toml` when present, else no file (all unset).
    pub(super) fn find(config: Option<&Path>) -> Result<FileConfig, ConfigError> {
        match config {
            Some(path) => read_file(path),
            None if Path::new("opusd.toml").is_file() => read_file(Path::new("opusd.toml")),
            None => Ok(FileConfig::default()),
        }
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
    })
}
