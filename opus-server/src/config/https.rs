//! HTTPS of the sites: the TLS listener and the ACME CA its certificates come from
//! ([`HttpsArgs`], [`HttpsConfig`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::{ConfigArgs, ConfigError, FileConfig};

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The HTTPS flags (a block of their own in `opusd --help`'s list).
#[derive(Debug, Clone, Default, Args)]
// clap's help text, printed as written (a URL is shown, not linked).
#[allow(
    rustdoc::invalid_html_tags,
    rustdoc::broken_intra_doc_links,
    rustdoc::bare_urls
)]
pub struct HttpsArgs {
    /// Address of the sites' HTTPS listener (`:443` in production); custom domains get
    /// certificates from the ACME CA. Without it, sites are plain HTTP only.
    #[arg(long, env = "OPUS_SITES_TLS_LISTEN", value_name = "ADDR")]
    pub sites_tls_listen: Option<SocketAddr>,
    /// The ACME CA's directory URL [default: Let's Encrypt production,
    /// https://acme-v02.api.letsencrypt.org/directory].
    #[arg(long, env = "OPUS_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: Option<String>,
    /// Contact e-mail given to the ACME CA (expiry notices).
    #[arg(long, env = "OPUS_ACME_EMAIL", value_name = "EMAIL")]
    pub acme_email: Option<String>,
    /// Root certificate (PEM) the ACME CA's own HTTPS is trusted by: a private CA such as
    /// step-ca, or pebble in tests [default: the system's roots].
    #[arg(long, env = "OPUS_ACME_CA_FILE", value_name = "FILE")]
    pub acme_ca_file: Option<PathBuf>,
    /// Redirect plain HTTP requests of a domain with a certificate to HTTPS [default: true].
    #[arg(long, env = "OPUS_SITES_HTTPS_REDIRECT", value_name = "BOOL")]
    pub sites_https_redirect: Option<bool>,
    /// How the CA checks that opusd serves a domain: http-01 on the HTTP site listener (which
    /// the CA reaches on port 80), or tls-alpn-01 on the HTTPS one (port 443) [default: http-01].
    #[arg(long, env = "OPUS_ACME_CHALLENGE", value_enum, value_name = "KIND")]
    pub acme_challenge: Option<AcmeChallenge>,
    /// `Strict-Transport-Security: max-age=` of HTTPS site responses, in seconds; 0 sends none
    /// [default: 31536000, one year, without includeSubDomains or preload].
    #[arg(long, env = "OPUS_SITES_HSTS_MAX_AGE", value_name = "SECONDS")]
    pub sites_hsts_max_age: Option<u64>,
    /// Seconds a DNS-01 TXT record is given to reach the zone's DNS servers before the CA is
    /// told to look [default: 10].
    #[arg(long, env = "OPUS_ACME_DNS_PROPAGATION_SECS", value_name = "SECONDS")]
    pub acme_dns_propagation_secs: Option<u64>,
}

/// The ACME challenge opusd answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum AcmeChallenge {
    /// `http-01`: a file under `/.well-known/acme-challenge/` on the HTTP listener.
    #[value(name = "http-01")]
    #[serde(rename = "http-01")]
    Http01,
    /// `tls-alpn-01`: a certificate for the `acme-tls/1` protocol on the TLS listener.
    #[value(name = "tls-alpn-01")]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

/// The resolved HTTPS settings; present when `--sites-tls-listen` is set.
#[derive(Debug, Clone)]
pub struct HttpsConfig {
    /// The TLS listener's address.
    pub tls_listen: SocketAddr,
    /// The ACME directory URL.
    pub acme_directory: String,
    /// The contact e-mail, if any.
    pub acme_email: Option<String>,
    /// The root the CA's HTTPS is trusted by, if not the system's.
    pub acme_ca_file: Option<PathBuf>,
    /// Whether certified hosts' plain HTTP requests are redirected to HTTPS.
    pub redirect: bool,
    /// The challenge opusd answers.
    pub challenge: AcmeChallenge,
    /// The HSTS max-age of HTTPS responses, in seconds (0: no header).
    pub hsts_max_age: u64,
    /// The wait between publishing a DNS-01 TXT record and telling the CA to look.
    pub dns_propagation: std::time::Duration,
}

/// The default HSTS max-age: one year, what browsers' preload lists ask for at least, and
/// Netlify's value. Without includeSubDomains: names under a custom domain may be served by
/// something else over plain HTTP.
pub const DEFAULT_HSTS_MAX_AGE: u64 = 31_536_000;

/// The HTTPS settings, or `None` without a TLS listener.
pub(super) fn https(
    args: &ConfigArgs,
    file: &FileConfig,
) -> Result<Option<HttpsConfig>, ConfigError> {
    let a = &args.https;
    let Some(tls_listen) = a.sites_tls_listen.or(file.sites_tls_listen) else {
        return Ok(None);
    };
    let acme_directory = a
        .acme_directory
        .clone()
        .or_else(|| file.acme_directory.clone())
        .unwrap_or_else(|| LETS_ENCRYPT.to_owned());
    if !acme_directory.starts_with("https://") {
        return Err(ConfigError::Invalid {
            key: "acme_directory",
            message: format!(
                "{acme_directory:?} is not an https:// URL (ACME is spoken over HTTPS only)"
            ),
        });
    }
    let acme_ca_file = a.acme_ca_file.clone().or_else(|| file.acme_ca_file.clone());
    if let Some(path) = &acme_ca_file {
        std::fs::read(path).map_err(|source| ConfigError::Unreadable {
            key: "acme_ca_file",
            path: path.clone(),
            source,
        })?;
    }
    Ok(Some(HttpsConfig {
        tls_listen,
        acme_directory,
        acme_email: a.acme_email.clone().or_else(|| file.acme_email.clone()),
        acme_ca_file,
        redirect: a
            .sites_https_redirect
            .or(file.sites_https_redirect)
            .unwrap_or(true),
        challenge: a
            .acme_challenge
            .or(file.acme_challenge)
            .unwrap_or(AcmeChallenge::Http01),
        hsts_max_age: a
            .sites_hsts_max_age
            .or(file.sites_hsts_max_age)
            .unwrap_or(DEFAULT_HSTS_MAX_AGE),
        dns_propagation: std::time::Duration::from_secs(
            a.acme_dns_propagation_secs
                .or(file.acme_dns_propagation_secs)
                .unwrap_or(10),
        ),
    }))
}
