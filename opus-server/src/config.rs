//! opusd's configuration: one [`Config`], layered defaults < `opusd.toml` < `OPUS_*` environment <
//! flags. Clap reads flags and environment together (each flag has `env = "OPUS_..."`), the file
//! fills what both left unset, and defaults fill the rest.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};
use thiserror::Error;

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

/// Flags, each also readable from its `OPUS_*` environment variable. Every field is optional so
/// that the config file can fill what the command line leaves out.
#[derive(Debug, Clone, Default, Args)]
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
    /// Domain the site server routes by: <project>.<domain> [default: localhost].
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
    /// Default artifact store URL: file://, s3://, gs://, az:// [default: file://<data-dir>/artifacts].
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
    /// Where builds run: local or kubernetes [default: local].
    #[arg(long, env = "OPUS_EXECUTOR")]
    pub executor: Option<String>,
    /// Largest build log kept, in bytes; the rest is cut with a marker [default: 16777216].
    #[arg(long, env = "OPUS_LOG_LIMIT", value_name = "BYTES")]
    pub log_limit: Option<u64>,
    /// Seconds running builds get to finish on shutdown before they are stopped [default: 10].
    #[arg(long, env = "OPUS_SHUTDOWN_GRACE", value_name = "SECONDS")]
    pub shutdown_grace: Option<u64>,
    /// Bound of the disk cache (<data-dir>/site-cache) that sites in remote stores (s3, gs, az)
    /// are served through, in bytes; 0 keeps nothing [default: 1073741824, 1 GiB].
    #[arg(long, env = "OPUS_SITE_CACHE_SIZE", value_name = "BYTES")]
    pub site_cache_size: Option<u64>,
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
    pub executor: Option<String>,
    /// See [`ConfigArgs::log_limit`].
    pub log_limit: Option<u64>,
    /// See [`ConfigArgs::shutdown_grace`].
    pub shutdown_grace: Option<u64>,
    /// See [`ConfigArgs::site_cache_size`].
    pub site_cache_size: Option<u64>,
}

/// Where builds run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Child processes of opusd.
    Local,
    /// Kubernetes Jobs.
    Kubernetes,
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
    /// TLS certificate and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Builds at once.
    pub max_builds: usize,
    /// Default artifact store URL.
    pub store: String,
    /// Extra artifact stores, `(name, url)`.
    pub extra_stores: Vec<(String, String)>,
    /// Where builds run.
    pub executor: ExecutorKind,
    /// Largest build log, in bytes.
    pub log_limit: u64,
    /// Time running builds get on shutdown.
    pub shutdown_grace: std::time::Duration,
    /// Bound of the site server's disk cache of remote versions, in bytes.
    pub site_cache_size: u64,
}

impl Config {
    /// Layers flags and environment over the config file over defaults.
    pub fn resolve(args: ConfigArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None if Path::new("opusd.toml").is_file() => read_file(Path::new("opusd.toml"))?,
            None => FileConfig::default(),
        };
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
                let t = std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid {
                    key: "token_file",
                    message: format!("cannot read {}: {e}", path.display()),
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
            (Some(c), Some(k)) => Some((c, k)),
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

        let executor = match args
            .executor
            .or(file.executor)
            .as_deref()
            .unwrap_or("local")
        {
            "local" => ExecutorKind::Local,
            "kubernetes" | "k8s" => ExecutorKind::Kubernetes,
            other => {
                return Err(ConfigError::Invalid {
                    key: "executor",
                    message: format!("unknown executor {other:?}; use local or kubernetes"),
                });
            }
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
        })
    }

    /// Refuses an API reachable from other machines without a token.
    pub fn check_security(&self, bound: SocketAddr) -> Result<(), ConfigError> {
        if !bound.ip().is_loopback() && self.token.is_none() {
            return Err(ConfigError::Invalid {
                key: "token",
                message: format!(
                    "the API would listen on {bound}, which other machines can reach, without a token; \
                     set --token or --token-file (or OPUS_TOKEN), or listen on 127.0.0.1"
                ),
            });
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_lists_every_setting() {
        let text = include_str!("../../opusd.example.toml");
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
    fn non_loopback_needs_a_token() {
        let cfg = Config::resolve(ConfigArgs::default()).expect("defaults resolve");
        assert!(cfg.check_security(([127, 0, 0, 1], 1).into()).is_ok());
        assert!(cfg.check_security(([0, 0, 0, 0], 1).into()).is_err());
    }
}
