//! opusd's configuration: one [`Config`], layered defaults < `opusd.toml` < `OPUS_*` environment <
//! flags. Clap reads flags and environment together (each flag has `env = "OPUS_..."`), the file
//! fills what both left unset, and defaults fill the rest.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::hooks::RetryPolicy;
use crate::sites::ConnectionLimits;

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

/// The default bound of the site cache: 1 GiB.
pub const DEFAULT_SITE_CACHE_SIZE: u64 = 1 << 30;

/// The shortest API token opusd accepts when other machines can reach the API: a shorter one can
/// be guessed.
pub const MIN_PUBLIC_TOKEN_LEN: usize = 16;

/// How often the kubernetes executor asks for the state of a build Job, by default.
pub const DEFAULT_KUBERNETES_POLL: Duration = Duration::from_secs(2);

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
}

/// The `opusd.toml` file: the same settings as the flags, in snake_case.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`ConfigArgs::listen`].
    pub listen: Option<SocketAddr>,
    /// See [`ConfigArgs::sites_listen`].
    pub sites_listen: Option<SocketAddr>,
    /// See [`ConfigArgs::domain`].
    pub domain: Option<String>,
    /// See [`ConfigArgs::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`ConfigArgs::token_file`] (a token itself does not belong in a file that may be shared).
    pub token_file: Option<PathBuf>,
    /// See [`ConfigArgs::tls_cert`].
    pub tls_cert: Option<PathBuf>,
    /// See [`ConfigArgs::tls_key`].
    pub tls_key: Option<PathBuf>,
    /// See [`ConfigArgs::max_builds`].
    pub max_builds: Option<usize>,
    /// See [`ConfigArgs::store`].
    pub store: Option<String>,
    /// See [`ConfigArgs::extra_store`]: a table of NAME = "URL".
    pub extra_stores: Option<std::collections::BTreeMap<String, String>>,
    /// See [`ConfigArgs::executor`].
    pub executor: Option<ExecutorKind>,
    /// See [`ConfigArgs::kubernetes_namespace`].
    pub kubernetes_namespace: Option<String>,
    /// See [`ConfigArgs::runner_image`].
    pub runner_image: Option<String>,
    /// See [`ConfigArgs::runner_server_url`].
    pub runner_server_url: Option<String>,
    /// See [`ConfigArgs::build_image`].
    pub build_image: Option<String>,
    /// See [`ConfigArgs::log_limit`].
    pub log_limit: Option<u64>,
    /// See [`ConfigArgs::shutdown_grace`].
    pub shutdown_grace: Option<u64>,
    /// See [`ConfigArgs::site_cache_size`].
    pub site_cache_size: Option<u64>,
    /// See [`ConfigArgs::kubernetes_poll_ms`].
    pub kubernetes_poll_ms: Option<u64>,
    /// See [`ConfigArgs::hook_retry_base_ms`].
    pub hook_retry_base_ms: Option<u64>,
    /// See [`ConfigArgs::hook_retry_cap_ms`].
    pub hook_retry_cap_ms: Option<u64>,
    /// See [`ConfigArgs::hook_give_up_secs`].
    pub hook_give_up_secs: Option<u64>,
    /// See [`ConfigArgs::hook_timeout_ms`].
    pub hook_timeout_ms: Option<u64>,
    /// See [`ConfigArgs::site_header_timeout`].
    pub site_header_timeout: Option<u64>,
    /// See [`ConfigArgs::site_idle_timeout`].
    pub site_idle_timeout: Option<u64>,
    /// See [`ConfigArgs::site_keep_alive_timeout`].
    pub site_keep_alive_timeout: Option<u64>,
    /// See [`ConfigArgs::site_connections_per_ip`].
    pub site_connections_per_ip: Option<usize>,
}

/// The site connection limits: flags over the file over [`ConnectionLimits::default`].
fn site_connections(args: &ConfigArgs, file: &FileConfig) -> Result<ConnectionLimits, ConfigError> {
    let default = ConnectionLimits::default();
    let seconds =
        |key: &'static str, arg: Option<u64>, file: Option<u64>, default: Duration| match arg
            .or(file)
        {
            None => Ok(default),
            Some(0) => Err(ConfigError::Invalid {
                key,
                message: "must be at least 1 second".into(),
            }),
            Some(s) => Ok(Duration::from_secs(s)),
        };
    let per_ip = args
        .site_connections_per_ip
        .or(file.site_connections_per_ip)
        .unwrap_or(default.per_ip);
    if per_ip == 0 {
        return Err(ConfigError::Invalid {
            key: "site_connections_per_ip",
            message: "must be at least 1".into(),
        });
    }
    Ok(ConnectionLimits {
        header_timeout: seconds(
            "site_header_timeout",
            args.site_header_timeout,
            file.site_header_timeout,
            default.header_timeout,
        )?,
        idle_timeout: seconds(
            "site_idle_timeout",
            args.site_idle_timeout,
            file.site_idle_timeout,
            default.idle_timeout,
        )?,
        keep_alive_timeout: seconds(
            "site_keep_alive_timeout",
            args.site_keep_alive_timeout,
            file.site_keep_alive_timeout,
            default.keep_alive_timeout,
        )?,
        per_ip,
    })
}

/// Where builds run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Child processes of opusd.
    Local,
    /// Kubernetes Jobs, in the current kube-context.
    #[value(alias = "k8s")]
    #[serde(alias = "k8s")]
    Kubernetes,
}

impl ExecutorKind {
    /// The name `--executor` takes and `opus status` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Kubernetes => "kubernetes",
        }
    }
}

/// The API's TLS certificate and key (PEM), read while the configuration is resolved, so that an
/// unreadable file stops opusd before anything has started.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The certificate chain, PEM.
    pub cert: Vec<u8>,
    /// The private key, PEM.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    /// The key stays out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert", &format_args!("{} bytes", self.cert.len()))
            .finish_non_exhaustive()
    }
}

/// The service account namespace file of a pod: where opusd runs when it runs in a cluster.
const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The build image when opus.yml names none (kubernetes executor).
pub const DEFAULT_BUILD_IMAGE: &str = "node:20";

/// How builds run as Kubernetes Jobs (used by the kubernetes executor only; always resolved, so
/// that `--help` defaults and validation do not depend on the executor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// The namespace of build Jobs.
    pub namespace: String,
    /// The image providing the `opusd` binary to build pods.
    pub runner_image: String,
    /// The URL build pods reach opusd at; `None`: `http://opusd.<namespace>.svc:<bound API port>`,
    /// decided once the API listener is bound.
    pub runner_server_url: Option<String>,
    /// The build image when opus.yml has no `build.image`.
    pub build_image: String,
    /// How often the state of a build's Job is asked for.
    pub poll: Duration,
}

impl KubernetesConfig {
    /// The URL build pods use, given the port the API listens on.
    pub fn server_url(&self, api_port: u16) -> String {
        match &self.runner_server_url {
            Some(url) => url.clone(),
            None => format!(
                "http://{}.{}.svc:{api_port}",
                opus_core::kubernetes::OPUSD,
                self.namespace
            ),
        }
    }
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
    /// The API's TLS certificate and key, already read.
    pub tls: Option<TlsIdentity>,
    /// Builds at once.
    pub max_builds: usize,
    /// Default artifact store URL.
    pub store: String,
    /// Extra artifact stores, `(name, url)`.
    pub extra_stores: Vec<(String, String)>,
    /// Where builds run.
    pub executor: ExecutorKind,
    /// Settings of the kubernetes executor.
    pub kubernetes: KubernetesConfig,
    /// Largest build log, in bytes.
    pub log_limit: u64,
    /// Time running builds get on shutdown.
    pub shutdown_grace: std::time::Duration,
    /// Bound of the site server's disk cache of remote versions, in bytes.
    pub site_cache_size: u64,
    /// How failed hook deliveries are retried, and how long one attempt may take.
    pub hook_retry: RetryPolicy,
    /// Timeouts and the per-address cap of site connections.
    pub site_connections: ConnectionLimits,
}

impl Config {
    /// Layers flags and environment over the config file over defaults.
    pub fn resolve(args: ConfigArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None if Path::new("opusd.toml").is_file() => read_file(Path::new("opusd.toml"))?,
            None => FileConfig::default(),
        };
        let site_connections = site_connections(&args, &file)?;
        let cwd = std::env::current_dir().map_err(|e| ConfigError::Invalid {
            key: "data_dir",
            message: format!("cannot read the current directory: {e}"),
        })?;
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("opus-data"));
        let data_dir = if data_dir.is_absolute() {
            data_dir
        } else {
            cwd.join(data_dir)
        };

        let token = match (args.token, args.token_file.or(file.token_file)) {
            (Some(t), _) => Some(t),
            (None, Some(path)) => {
                let t =
                    std::fs::read_to_string(&path).map_err(|source| ConfigError::Unreadable {
                        key: "token_file",
                        path: path.clone(),
                        source,
                    })?;
                Some(t.trim().to_owned())
            }
            (None, None) => None,
        };
        if token.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::Invalid {
                key: "token",
                message: "the token is empty".into(),
            });
        }

        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsIdentity {
                cert: read_setting_file("tls_cert", &cert)?,
                key: read_setting_file("tls_key", &key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    key: "tls_cert",
                    message: "tls_cert and tls_key go together; give both or neither".into(),
                });
            }
        };

        let max_builds = args.max_builds.or(file.max_builds).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        if max_builds == 0 {
            return Err(ConfigError::Invalid {
                key: "max_builds",
                message: "must be at least 1".into(),
            });
        }

        let executor = args
            .executor
            .or(file.executor)
            .unwrap_or(ExecutorKind::Local);

        let kubernetes = resolve_kubernetes(
            args.kubernetes_namespace.or(file.kubernetes_namespace),
            args.runner_image.or(file.runner_image),
            args.runner_server_url.or(file.runner_server_url),
            args.build_image.or(file.build_image),
            duration(
                "kubernetes_poll_ms",
                args.kubernetes_poll_ms.or(file.kubernetes_poll_ms),
                Duration::from_millis,
            )?
            .unwrap_or(DEFAULT_KUBERNETES_POLL),
        )?;

        let defaults = RetryPolicy::default();
        let hook_retry = RetryPolicy {
            base: duration(
                "hook_retry_base_ms",
                args.hook_retry_base_ms.or(file.hook_retry_base_ms),
                Duration::from_millis,
            )?
            .unwrap_or(defaults.base),
            cap: duration(
                "hook_retry_cap_ms",
                args.hook_retry_cap_ms.or(file.hook_retry_cap_ms),
                Duration::from_millis,
            )?
            .unwrap_or(defaults.cap),
            give_up_after: args
                .hook_give_up_secs
                .or(file.hook_give_up_secs)
                .map_or(defaults.give_up_after, Duration::from_secs),
            timeout: duration(
                "hook_timeout_ms",
                args.hook_timeout_ms.or(file.hook_timeout_ms),
                Duration::from_millis,
            )?
            .unwrap_or(defaults.timeout),
        };

        let store = args
            .store
            .or(file.store)
            .unwrap_or_else(|| format!("file://{}", data_dir.join("artifacts").display()));

        let extra_stores = if args.extra_store.is_empty() {
            file.extra_stores.unwrap_or_default().into_iter().collect()
        } else {
            let mut out = Vec::new();
            for item in &args.extra_store {
                let Some((name, url)) = item.split_once('=') else {
                    return Err(ConfigError::Invalid {
                        key: "extra_store",
                        message: format!(
                            "{item:?} is not NAME=URL (for example backup=s3://bucket/opus)"
                        ),
                    });
                };
                out.push((name.trim().to_owned(), url.trim().to_owned()));
            }
            out
        };
        for (name, url) in &extra_stores {
            if opus_core::model::EnvName::new(name.as_str()).is_err() || name == "default" {
                return Err(ConfigError::Invalid {
                    key: "extra_store",
                    message: format!(
                        "store name {name:?} must be lowercase letters, digits and '-', and not \"default\""
                    ),
                });
            }
            if url.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "extra_store",
                    message: format!("store {name:?} has no URL"),
                });
            }
        }

        Ok(Config {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or(([127, 0, 0, 1], 7070).into()),
            sites_listen: args
                .sites_listen
                .or(file.sites_listen)
                .unwrap_or(([127, 0, 0, 1], 7080).into()),
            domain: args
                .domain
                .or(file.domain)
                .unwrap_or_else(|| "localhost".into()),
            data_dir,
            token,
            tls,
            max_builds,
            store,
            extra_stores,
            executor,
            kubernetes,
            log_limit: args
                .log_limit
                .or(file.log_limit)
                .unwrap_or(16 * 1024 * 1024),
            shutdown_grace: std::time::Duration::from_secs(
                args.shutdown_grace.or(file.shutdown_grace).unwrap_or(10),
            ),
            site_cache_size: args
                .site_cache_size
                .or(file.site_cache_size)
                .unwrap_or(DEFAULT_SITE_CACHE_SIZE),
            hook_retry,
            site_connections,
        })
    }

    /// Refuses an API reachable from other machines without a token, or with one short enough
    /// to guess.
    pub fn check_security(&self, bound: SocketAddr) -> Result<(), ConfigError> {
        if bound.ip().is_loopback() {
            return Ok(());
        }
        match &self.token {
            None => Err(ConfigError::Invalid {
                key: "token",
                message: format!(
                    "the API would listen on {bound}, which other machines can reach, without a token; \
                     set --token or --token-file (or OPUS_TOKEN), or listen on 127.0.0.1"
                ),
            }),
            Some(token) if token.chars().count() < MIN_PUBLIC_TOKEN_LEN => {
                Err(ConfigError::Invalid {
                    key: "token",
                    message: format!(
                        "the API would listen on {bound}, which other machines can reach, with a token of \
                         {} characters, short enough to guess; use one of at least {MIN_PUBLIC_TOKEN_LEN} \
                         (make one with `openssl rand -hex 32`), or listen on 127.0.0.1",
                        token.chars().count()
                    ),
                })
            }
            Some(_) => Ok(()),
        }
    }
}

/// Reads a file a setting names, whole.
fn read_setting_file(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Unreadable {
        key,
        path: path.to_path_buf(),
        source,
    })
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

/// The kubernetes executor's settings: the namespace from the setting, else the pod's own
/// namespace, else `opus`; images and URL checked for what Kubernetes would refuse later.
fn resolve_kubernetes(
    namespace: Option<String>,
    runner_image: Option<String>,
    runner_server_url: Option<String>,
    build_image: Option<String>,
    poll: Duration,
) -> Result<KubernetesConfig, ConfigError> {
    let namespace = match namespace {
        Some(ns) => ns.trim().to_owned(),
        None => std::fs::read_to_string(POD_NAMESPACE_FILE)
            .ok()
            .map(|ns| ns.trim().to_owned())
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| opus_core::kubernetes::DEFAULT_NAMESPACE.to_owned()),
    };
    opus_core::kubernetes::validate_namespace(&namespace).map_err(|e| ConfigError::Invalid {
        key: "kubernetes_namespace",
        message: e.to_string(),
    })?;
    let image = |key: &'static str, value: Option<String>, default: String| {
        let value = value.map(|v| v.trim().to_owned()).unwrap_or(default);
        if value.is_empty() || value.chars().any(char::is_whitespace) {
            return Err(ConfigError::Invalid {
                key,
                message: format!("{value:?} is not an image reference (for example node:20)"),
            });
        }
        Ok(value)
    };
    let runner_image = image(
        "runner_image",
        runner_image,
        opus_core::kubernetes::default_image(),
    )?;
    let build_image = image("build_image", build_image, DEFAULT_BUILD_IMAGE.to_owned())?;
    let runner_server_url = match runner_server_url
        .map(|u| u.trim().trim_end_matches('/').to_owned())
    {
        Some(url) => {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
                return Err(ConfigError::Invalid {
                    key: "runner_server_url",
                    message: format!(
                        "{url:?} is not an http:// or https:// URL (for example http://opusd.opus.svc:7070)"
                    ),
                });
            }
            Some(url)
        }
        None => None,
    };
    Ok(KubernetesConfig {
        namespace,
        runner_image,
        runner_server_url,
        build_image,
        poll,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_lists_every_setting() {
        let text = include_str!("../../../opusd.example.toml");
        let parsed: FileConfig = toml::from_str(text).expect("opusd.example.toml parses");
        let json = serde_json::to_value(&parsed).expect("serializes");
        let obj = json.as_object().expect("an object");
        let missing: Vec<_> = obj
            .iter()
            .filter(|(_, v)| v.is_null())
            .map(|(k, _)| k.clone())
            .collect();
        assert!(missing.is_empty(), "opusd.example.toml lacks {missing:?}");
    }

    #[test]
    fn a_malformed_file_names_file_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("opusd.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nmax_bulds = 3\n").expect("write");
        let err = Config::resolve(ConfigArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .expect_err("unknown key");
        let msg = err.to_string();
        assert!(
            msg.contains("opusd.toml") && msg.contains("max_bulds"),
            "{msg}"
        );

        std::fs::write(&path, "max_builds = \"four\"\n").expect("write");
        let msg = Config::resolve(ConfigArgs {
            config: Some(path),
            ..Default::default()
        })
        .expect_err("wrong type")
        .to_string();
        assert!(
            msg.contains("max_builds") && msg.contains("line 1"),
            "{msg}"
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("opusd.toml");
        std::fs::write(&path, "max_builds = 3\ndomain = \"example.org\"\n").expect("write");
        let cfg = Config::resolve(ConfigArgs {
            config: Some(path),
            max_builds: Some(7),
            ..Default::default()
        })
        .expect("resolves");
        assert_eq!(cfg.max_builds, 7);
        assert_eq!(cfg.domain, "example.org");
    }

    #[test]
    fn the_site_cache_size_comes_from_flags_the_file_or_the_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("opusd.toml");
        std::fs::write(&path, "domain = \"example.org\"\n").expect("write");
        let cfg = Config::resolve(ConfigArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .expect("resolves");
        assert_eq!(cfg.site_cache_size, 1 << 30, "1 GiB by default");
        std::fs::write(&path, "site_cache_size = 5000\n").expect("write");
        let file = ConfigArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        assert_eq!(
            Config::resolve(file.clone()).expect("file").site_cache_size,
            5000
        );
        let flag = ConfigArgs {
            site_cache_size: Some(7),
            ..file
        };
        assert_eq!(Config::resolve(flag).expect("flag").site_cache_size, 7);
        std::fs::write(&path, "site_cache_size = \"1GiB\"\n").expect("write");
        let msg = Config::resolve(ConfigArgs {
            config: Some(path),
            ..Default::default()
        })
        .expect_err("a size is a number of bytes")
        .to_string();
        assert!(msg.contains("site_cache_size"), "{msg}");
    }

    #[test]
    fn extra_stores_come_from_flags_or_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("opusd.toml");
        std::fs::write(&path, "[extra_stores]\nbackup = \"s3://bucket/opus\"\n").expect("write");
        let cfg = Config::resolve(ConfigArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .expect("file");
        assert_eq!(
            cfg.extra_stores,
            [("backup".to_owned(), "s3://bucket/opus".to_owned())]
        );
        let cfg = Config::resolve(ConfigArgs {
            config: Some(path.clone()),
            extra_store: vec!["cdn=gs://b".into()],
            ..Default::default()
        })
        .expect("flags");
        assert_eq!(cfg.extra_stores, [("cdn".to_owned(), "gs://b".to_owned())]);
        for bad in ["nourl", "default=file:///x", "Bad=s3://b", "x="] {
            let err = Config::resolve(ConfigArgs {
                config: Some(path.clone()),
                extra_store: vec![bad.into()],
                ..Default::default()
            })
            .expect_err("invalid");
            assert!(err.to_string().contains("extra_store"), "{bad}: {err}");
        }
    }

    #[test]
    fn kubernetes_settings_have_defaults_and_are_checked() {
        let cfg = Config::resolve(ConfigArgs::default()).expect("defaults resolve");
        let k = &cfg.kubernetes;
        if !Path::new(POD_NAMESPACE_FILE).exists() {
            assert_eq!(k.namespace, "opus");
            assert_eq!(k.server_url(7070), "http://opusd.opus.svc:7070");
        }
        assert_eq!(k.runner_image, opus_core::kubernetes::default_image());
        assert_eq!(k.build_image, "node:20");

        let cfg = Config::resolve(ConfigArgs {
            executor: Some(ExecutorKind::Kubernetes),
            kubernetes_namespace: Some("ci".into()),
            runner_server_url: Some("https://opus.example.org/".into()),
            build_image: Some("node:22-bookworm".into()),
            ..Default::default()
        })
        .expect("resolves");
        assert_eq!(cfg.executor, ExecutorKind::Kubernetes);
        assert_eq!(cfg.kubernetes.namespace, "ci");
        assert_eq!(cfg.kubernetes.server_url(1), "https://opus.example.org");
        assert_eq!(cfg.kubernetes.build_image, "node:22-bookworm");

        for (args, key) in [
            (
                ConfigArgs {
                    kubernetes_namespace: Some("Not_A_Label".into()),
                    ..Default::default()
                },
                "kubernetes_namespace",
            ),
            (
                ConfigArgs {
                    runner_server_url: Some("opusd:7070".into()),
                    ..Default::default()
                },
                "runner_server_url",
            ),
            (
                ConfigArgs {
                    runner_image: Some("two words".into()),
                    ..Default::default()
                },
                "runner_image",
            ),
        ] {
            let err = Config::resolve(args).expect_err("invalid");
            assert!(
                err.to_string().starts_with(&format!("invalid {key}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let cfg = Config::resolve(ConfigArgs::default()).expect("defaults resolve");
        assert!(cfg.check_security(([127, 0, 0, 1], 1).into()).is_ok());
        assert!(cfg.check_security(([0, 0, 0, 0], 1).into()).is_err());
    }

    #[test]
    fn non_loopback_refuses_a_short_token_and_says_how_to_make_one() {
        let with = |token: &str| {
            Config::resolve(ConfigArgs {
                token: Some(token.into()),
                ..Default::default()
            })
            .expect("resolves")
        };
        let short = with("fifteen-chars-x");
        assert!(short.check_security(([127, 0, 0, 1], 1).into()).is_ok());
        let msg = short
            .check_security(([0, 0, 0, 0], 1).into())
            .expect_err("too short beyond loopback")
            .to_string();
        assert!(
            msg.contains("15 characters") && msg.contains("openssl rand -hex 32"),
            "{msg}"
        );
        assert!(
            with("sixteen-chars-xx")
                .check_security(([0, 0, 0, 0], 1).into())
                .is_ok()
        );
    }

    #[test]
    fn an_unreadable_tls_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("tls.key");
        std::fs::write(&key, "key").expect("write");
        let missing = dir.path().join("no-such.crt");
        let msg = Config::resolve(ConfigArgs {
            tls_cert: Some(missing.clone()),
            tls_key: Some(key.clone()),
            ..Default::default()
        })
        .expect_err("unreadable")
        .to_string();
        assert!(
            msg.contains("tls_cert") && msg.contains(&missing.display().to_string()),
            "{msg}"
        );
        std::fs::write(&missing, "cert").expect("write");
        let cfg = Config::resolve(ConfigArgs {
            tls_cert: Some(missing),
            tls_key: Some(key),
            ..Default::default()
        })
        .expect("readable");
        let tls = cfg.tls.expect("TLS is on");
        assert_eq!(
            (tls.cert.as_slice(), tls.key.as_slice()),
            (&b"cert"[..], &b"key"[..])
        );
    }

    #[test]
    fn tuning_settings_come_from_flags_or_the_file_and_zero_is_refused() {
        let cfg = Config::resolve(ConfigArgs::default()).expect("defaults");
        assert_eq!(cfg.hook_retry, RetryPolicy::default());
        assert_eq!(cfg.kubernetes.poll, DEFAULT_KUBERNETES_POLL);

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("opusd.toml");
        std::fs::write(
            &path,
            "hook_retry_base_ms = 50\nhook_retry_cap_ms = 200\nhook_give_up_secs = 9\n\
             hook_timeout_ms = 2000\nkubernetes_poll_ms = 70\nexecutor = \"k8s\"\n",
        )
        .expect("write");
        let file = ConfigArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let cfg = Config::resolve(file.clone()).expect("file");
        assert_eq!(
            cfg.hook_retry,
            RetryPolicy {
                base: Duration::from_millis(50),
                cap: Duration::from_millis(200),
                give_up_after: Duration::from_secs(9),
                timeout: Duration::from_millis(2000),
            }
        );
        assert_eq!(cfg.kubernetes.poll, Duration::from_millis(70));
        assert_eq!(cfg.executor, ExecutorKind::Kubernetes);

        let cfg = Config::resolve(ConfigArgs {
            hook_timeout_ms: Some(5),
            kubernetes_poll_ms: Some(6),
            ..file.clone()
        })
        .expect("flags");
        assert_eq!(cfg.hook_retry.timeout, Duration::from_millis(5));
        assert_eq!(cfg.kubernetes.poll, Duration::from_millis(6));

        let msg = Config::resolve(ConfigArgs {
            hook_retry_base_ms: Some(0),
            ..file
        })
        .expect_err("zero")
        .to_string();
        assert_eq!(msg, "invalid hook_retry_base_ms: must be at least 1");

        std::fs::write(&path, "executor = \"docker\"\n").expect("write");
        let msg = Config::resolve(ConfigArgs {
            config: Some(path),
            ..Default::default()
        })
        .expect_err("unknown executor")
        .to_string();
        assert!(
            msg.contains("docker") && msg.contains("kubernetes"),
            "{msg}"
        );
    }
}
