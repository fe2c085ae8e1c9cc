//! Certificates and the ACME account on disk, under `<data-dir>/acme`:
//!
//! - `account-<hash of the directory URL>.json`: the account's credentials (its key), one per
//!   ACME directory, mode 0600.
//! - `certs/<host>.pem`: the private key and the certificate chain of one host, in one file
//!   written to a temporary name and renamed, so a crash (even SIGKILL mid-renewal) leaves the
//!   old pair or the new one, never a key of one with the chain of the other. Mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use super::AcmeError;

/// A certificate ready to serve, with what `opus domain list` shows of it.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// The chain and signing key, for the TLS resolver.
    pub key: Arc<CertifiedKey>,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl LoadedCert {
    /// Parses a key PEM and a chain PEM (leaf first).
    pub fn parse(key_pem: &str, chain_pem: &str) -> Result<LoadedCert, AcmeError> {
        let bad = |why: String| AcmeError::BadCertificate(why);
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("the chain does not parse: {e}")))?;
        let leaf = chain
            .first()
            .ok_or_else(|| bad("the chain holds no certificate".into()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| bad(format!("the certificate does not parse: {e}")))?;
        let time = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
        let not_before = time(cert.validity().not_before.timestamp());
        let not_after = time(cert.validity().not_after.timestamp());
        let issuer = cert.issuer().to_string();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| bad(format!("the private key does not parse: {e}")))?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| bad(format!("the private key cannot sign: {e}")))?;
        let key = CertifiedKey::new(chain, signer);
        key.keys_match()
            .map_err(|e| bad(format!("the key is not the certificate's: {e}")))?;
        Ok(LoadedCert {
            key: Arc::new(key),
            issuer,
            not_before,
            not_after,
        })
    }

    /// When to renew: two thirds into the certificate's life.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life * 2 / 3
    }
}

/// The `<data-dir>/acme` folder.
#[derive(Debug, Clone)]
pub struct AcmeFiles {
    dir: PathBuf,
}

impl AcmeFiles {
    /// The folder `dir` (created when first written).
    pub fn new(dir: PathBuf) -> AcmeFiles {
        AcmeFiles { dir }
    }

    fn cert_path(&self, host: &str) -> PathBuf {
        self.dir.join("certs").join(format!("{host}.pem"))
    }

    fn account_path(&self, directory: &str) -> PathBuf {
        let hash = hex::encode(&Sha256::digest(directory.as_bytes())[..8]);
        self.dir.join(format!("account-{hash}.json"))
    }

    /// The stored account credentials for `directory`, if any.
    pub fn read_account(&self, directory: &str) -> Result<Option<String>, AcmeError> {
        read_optional(&self.account_path(directory))
    }

    /// Stores the account credentials for `directory`.
    pub fn write_account(&self, directory: &str, json: &str) -> Result<(), AcmeError> {
        write_private(&self.account_path(directory), json.as_bytes())
    }

    /// The stored certificate of `host`, if any: `Ok(None)` when there is none, an error when
    /// the file is damaged (it is ordered again then).
    pub fn read_cert(&self, host: &str) -> Result<Option<LoadedCert>, AcmeError> {
        let Some(text) = read_optional(&self.cert_path(host))? else {
            return Ok(None);
        };
        LoadedCert::parse(&text, &text).map(Some)
    }

    /// Stores `host`'s key and chain (one atomic rename).
    pub fn write_cert(&self, host: &str, key_pem: &str, chain_pem: &str) -> Result<(), AcmeError> {
        let mut text = String::with_capacity(key_pem.len() + chain_pem.len() + 1);
        text.push_str(key_pem);
        if !key_pem.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(chain_pem);
        write_private(&self.cert_path(host), text.as_bytes())
    }

    /// Deletes `host`'s certificate (its domain was removed).
    pub fn remove_cert(&self, host: &str) {
        let path = self.cert_path(host);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a certificate");
            }
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, AcmeError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AcmeError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `data` to `path` readable by the owner only: a temporary file, synced, then renamed.
fn write_private(path: &Path, data: &[u8]) -> Result<(), AcmeError> {
    let io = |source| AcmeError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
