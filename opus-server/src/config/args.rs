//! The flags of opusd's configuration: clap's [`ConfigArgs`], each flag also read from its
//! `OPUS_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::ExecutorKind;

/// Flags, each also readable from its `OPUS_*` environment variable. Every field is optional so
/// that the config file can fill what the command line leaves out.
#[derive(Debug, Clone, Default, Args)]
// These doc comments are clap's `opusd --help`, printed as written: `<placeholder>` and
// `[default: ...]` are that text's conventions, not HTML or intra-doc links.
#[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
pub struct ConfigArgs {
    /// Config file (TOML); without it, ./opusd.toml is read when present.
    #[arg(long, env = "OPUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the gRPC API (and webhooks, /healthz, /metrics) [default: 127.0.0.1:7070].
    #[arg(long, env = "OPUS_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of the site server [default: 127.0.0.1:7080].
    #[arg(long, env = "OPUS_SITES_LISTEN", value_name = "ADDR")]
    pub sites_listen: Option<SocketAddr>,
    /// Domain the site server routes by: `<project>.<domain>` [default: localhost].
    #[arg(long, env = "OPUS_DOMAIN")]
    pub domain: Option<String>,
    /// Data directory: metadata, git mirrors, workspaces, logs [default: ./opus-data].
    #[arg(long, env = "OPUS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// API token clients must send as `authorization: Bearer <token>`.
    #[arg(
        long,
        env = "OPUS_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// File holding the API token.
    #[arg(long, env = "OPUS_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Read-only token of the dashboard: who logs in with it sees everything and acts on nothing.
    #[arg(
        long,
        env = "OPUS_VIEWER_TOKEN",
        hide_env_values = true,
        conflicts_with = "viewer_token_file"
    )]
    pub viewer_token: Option<String>,
    /// File holding the dashboard's read-only token.
    #[arg(long, env = "OPUS_VIEWER_TOKEN_FILE", value_name = "FILE")]
    pub viewer_token_file: Option<PathBuf>,
    /// TLS certificate (PEM) for the API.
    #[arg(long, env = "OPUS_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the API.
    #[arg(long, env = "OPUS_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Builds running at once [default: number of CPUs].
    #[arg(long, env = "OPUS_MAX_BUILDS", value_name = "N")]
    pub max_builds: Option<usize>,
    /// Default artifact store URL: file://, s3://, gs://, az:// (default: `file://<data-dir>/artifacts`).
    #[arg(long, env = "OPUS_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Another artifact store builds may name (`opus trigger ... FILE-STORE`), as NAME=URL; repeatable.
    #[arg(
        long = "extra-store",
        env = "OPUS_EXTRA_STORE",
        value_name = "NAME=URL",
        value_delimiter = ','
    )]
    pub extra_store: Vec<String>,
    /// Where builds run: local (child processes) or kubernetes (a Job per build, in the current
    /// kube-context) [default: local].
    #[arg(long, env = "OPUS_EXECUTOR", value_enum)]
    pub executor: Option<ExecutorKind>,
    /// Namespace of build Jobs (kubernetes executor) [default: the pod's namespace when opusd runs
    /// in a cluster, else opus].
    #[arg(long, env = "OPUS_KUBERNETES_NAMESPACE", value_name = "NAMESPACE")]
    pub kubernetes_namespace: Option<String>,
    /// Image whose /usr/local/bin/opusd is copied into build pods (kubernetes executor)
    /// (default: `ghcr.io/opus-ci/opusd:<version>`, the image `opus install` uses).
    #[arg(long, env = "OPUS_RUNNER_IMAGE", value_name = "IMAGE")]
    pub runner_image: Option<String>,
    /// URL at which build pods reach this opusd's API (kubernetes executor)
    /// (default: `http://opusd.<namespace>.svc:<API port>`, the Service `opus install` creates).
    #[arg(long, env = "OPUS_RUNNER_SERVER_URL", value_name = "URL")]
    pub runner_server_url: Option<String>,
    /// Image builds run in when opus.yml has no build.image (kubernetes executor) [default: node:20].
    #[arg(long, env = "OPUS_BUILD_IMAGE", value_name = "IMAGE")]
    pub build_image: Option<String>,
    /// Largest build log kept, in bytes; the rest is cut with a marker [default: 16777216].
    #[arg(long, env = "OPUS_LOG_LIMIT", value_name = "BYTES")]
    pub log_limit: Option<u64>,
    /// Seconds running builds get to finish on shutdown before they are stopped [default: 10].
    #[arg(long, env = "OPUS_SHUTDOWN_GRACE", value_name = "SECONDS")]
    pub shutdown_grace: Option<u64>,
    /// Keep each local build's processes in a cgroup (v2) of its own, which even a process that
    /// clears its environment and detaches cannot leave; each step then waits 10-15 ms on the
    /// kernel, unless cgroup2 is mounted with favordynmods. Without it, they are found in /proc.
    #[arg(long, env = "OPUS_BUILD_CGROUPS")]
    pub build_cgroups: bool,
    /// Bound of the disk cache (`<data-dir>/site-cache`) that sites in remote stores (s3, gs, az)
    /// are served through, in bytes; 0 keeps nothing [default: 1073741824, 1 GiB].
    #[arg(long, env = "OPUS_SITE_CACHE_SIZE", value_name = "BYTES")]
    pub site_cache_size: Option<u64>,
    /// How often the kubernetes executor asks for the state of a build's Job, in milliseconds
    /// [default: 2000].
    #[arg(long, env = "OPUS_KUBERNETES_POLL_MS", value_name = "MS")]
    pub kubernetes_poll_ms: Option<u64>,
    /// Wait after a hook delivery's first failed attempt, in milliseconds; it doubles after each
    /// further one [default: 5000].
    #[arg(long, env = "OPUS_HOOK_RETRY_BASE_MS", value_name = "MS")]
    pub hook_retry_base_ms: Option<u64>,
    /// Longest wait between two attempts of a hook delivery, in milliseconds [default: 3600000].
    #[arg(long, env = "OPUS_HOOK_RETRY_CAP_MS", value_name = "MS")]
    pub hook_retry_cap_ms: Option<u64>,
    /// Seconds after its first attempt that a hook delivery stops being retried (it is then
    /// failed) [default: 259200, 3 days].
    #[arg(long, env = "OPUS_HOOK_GIVE_UP_SECS", value_name = "SECONDS")]
    pub hook_give_up_secs: Option<u64>,
    /// How long one attempt of a hook delivery may take, in milliseconds [default: 10000].
    #[arg(long, env = "OPUS_HOOK_TIMEOUT_MS", value_name = "MS")]
    pub hook_timeout_ms: Option<u64>,
    /// Seconds a site request's head (request line and headers) may take from its first byte, or
    /// a new site connection may stay silent [default: 10].
    #[arg(long, env = "OPUS_SITE_HEADER_TIMEOUT", value_name = "SECONDS")]
    pub site_header_timeout: Option<u64>,
    /// Seconds a site request may go without a byte read or written (a stalled download)
    /// [default: 60].
    #[arg(long, env = "OPUS_SITE_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub site_idle_timeout: Option<u64>,
    /// Seconds a kept-alive site connection may wait for its next request [default: 30].
    #[arg(long, env = "OPUS_SITE_KEEP_ALIVE_TIMEOUT", value_name = "SECONDS")]
    pub site_keep_alive_timeout: Option<u64>,
    /// Site connections one client IP address may hold at once; more are answered 503
    /// [default: 256].
    #[arg(long, env = "OPUS_SITE_CONNECTIONS_PER_IP", value_name = "N")]
    pub site_connections_per_ip: Option<usize>,
    /// The sites' HTTPS: TLS listener and ACME.
    #[command(flatten)]
    pub https: super::HttpsArgs,
    /// The URL the world reaches this opusd's API port (and dashboard) by, e.g.
    /// `https://opus.example.com`: the payload URL `opus hook github` prints, and the links of
    /// commit statuses [default: none; the CLI's own server address].
    #[arg(long, env = "OPUS_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// GitHub's REST API, where commit statuses go (GitHub Enterprise Server:
    /// `https://<host>/api/v3`) [default: `https://api.github.com`].
    #[arg(long, env = "OPUS_GITHUB_API_URL", value_name = "URL")]
    pub github_api_url: Option<String>,
    /// DNS routes and DNS-01 through Cloudflare.
    #[command(flatten)]
    pub cloudflare: super::CloudflareArgs,
    /// Id of the GitHub App opusd authenticates as (its settings page shows it); with
    /// --github-app-key-file, opusd calls GitHub and clones with each installation's token.
    #[arg(long, env = "OPUS_GITHUB_APP_ID", value_name = "ID")]
    pub github_app_id: Option<u64>,
    /// The GitHub App's private key (the PEM file its settings page generates).
    #[arg(long, env = "OPUS_GITHUB_APP_KEY_FILE", value_name = "FILE")]
    pub github_app_key_file: Option<PathBuf>,
}
