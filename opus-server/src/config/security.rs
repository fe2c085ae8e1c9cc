//! Who may use the API: the token, the TLS identity, and the check that refuses an API other
//! machines can reach without a token long enough.

use std::net::SocketAddr;
use std::path::Path;

use super::{Config, ConfigArgs, ConfigError, FileConfig};

/// The shortest API token opusd accepts when other machines can reach the API: a shorter one can
/// be guessed.
pub const MIN_PUBLIC_TOKEN_LEN: usize = 16;

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

/// The API token: `--token`, else the token file of the flags or the file (trimmed); empty is
/// refused.
pub(super) fn token(args: &ConfigArgs, file: &FileConfig) -> Result<Option<String>, ConfigError> {
    let token_file = args.token_file.as_ref().or(file.token_file.as_ref());
    let token = match (&args.token, token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => {
            let t = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
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
    Ok(token)
}

/// The dashboard's read-only token: `--viewer-token`, else the viewer token file of the flags or
/// the file (trimmed). Refused when empty, when it equals the API token (it would then grant
/// everything), or when there is no API token (without one, nobody logs in).
pub(super) fn viewer_token(
    args: &ConfigArgs,
    file: &FileConfig,
    token: Option<&str>,
) -> Result<Option<String>, ConfigError> {
    let token_file = args
        .viewer_token_file
        .as_ref()
        .or(file.viewer_token_file.as_ref());
    let viewer = match (&args.viewer_token, token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => {
            let t = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
                key: "viewer_token_file",
                path: path.clone(),
                source,
            })?;
            Some(t.trim().to_owned())
        }
        (None, None) => None,
    };
    let invalid = |message: &str| ConfigError::Invalid {
        key: "viewer_token",
        message: message.into(),
    };
    match (viewer.as_deref(), token) {
        (Some(""), _) => Err(invalid("the viewer token is empty")),
        (Some(_), None) => Err(invalid(
            "a viewer token needs an API token too (--token or --token-file): without one the \
             dashboard asks nobody to log in",
        )),
        (Some(v), Some(t)) if v == t => Err(invalid(
            "the viewer token is the API token; give the viewer a token of its own",
        )),
        _ => Ok(viewer),
    }
}

/// The API's TLS identity, read now: both files or neither.
pub(super) fn tls(
    args: &ConfigArgs,
    file: &FileConfig,
) -> Result<Option<TlsIdentity>, ConfigError> {
    match (
        args.tls_cert.as_ref().or(file.tls_cert.as_ref()),
        args.tls_key.as_ref().or(file.tls_key.as_ref()),
    ) {
        (Some(cert), Some(key)) => Ok(Some(TlsIdentity {
            cert: read_setting_file("tls_cert", cert)?,
            key: read_setting_file("tls_key", key)?,
        })),
        (None, None) => Ok(None),
        _ => Err(ConfigError::Invalid {
            key: "tls_cert",
            message: "tls_cert and tls_key go together; give both or neither".into(),
        }),
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

impl Config {
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
