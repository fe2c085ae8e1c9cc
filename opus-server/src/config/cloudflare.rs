//! DNS routes and DNS-01 through Cloudflare ([`CloudflareArgs`], [`CloudflareConfig`]): the API
//! token (read once, at start), the zone, the API's URL, and the address records point to.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;

use super::{ConfigArgs, ConfigError, FileConfig};

/// Cloudflare's API v4, the default `--cloudflare-api-url`.
pub const CLOUDFLARE_API: &str = "https://api.cloudflare.com/client/v4";

/// The Cloudflare flags (a block of their own in `opusd --help`'s list).
#[derive(Debug, Clone, Default, Args)]
pub struct CloudflareArgs {
    /// File holding a Cloudflare API token (permission Zone.DNS:Edit on the zone): adding a
    /// domain or deploying an environment then makes its DNS record, and the `--domain`
    /// wildcard gets its certificate by DNS-01.
    #[arg(long, env = "OPUS_CLOUDFLARE_TOKEN_FILE", value_name = "FILE")]
    pub cloudflare_token_file: Option<PathBuf>,
    /// The Cloudflare zone, by id or by name (`acme.com`).
    #[arg(long, env = "OPUS_CLOUDFLARE_ZONE", value_name = "ZONE")]
    pub cloudflare_zone: Option<String>,
    /// Cloudflare's API [default: `https://api.cloudflare.com/client/v4`].
    #[arg(long, env = "OPUS_CLOUDFLARE_API_URL", value_name = "URL")]
    pub cloudflare_api_url: Option<String>,
    /// Where the sites are reached: an IP address (records are A or AAAA) or a host name
    /// (records are CNAME). Without it no route records are made (DNS-01 still works).
    #[arg(long, env = "OPUS_PUBLIC_ADDRESS", value_name = "IP|HOST")]
    pub public_address: Option<String>,
}

/// What opusd's DNS records point to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicAddress {
    /// An IP address: A (IPv4) or AAAA (IPv6) records.
    Ip(IpAddr),
    /// A host name: CNAME records.
    Host(String),
}

impl PublicAddress {
    /// Parses an IP address or a host name (checked as a DNS name).
    pub fn parse(raw: &str) -> Result<PublicAddress, String> {
        let raw = raw.trim();
        if let Ok(ip) = raw.parse::<IpAddr>() {
            return Ok(PublicAddress::Ip(ip));
        }
        let host = raw.trim_end_matches('.').to_ascii_lowercase();
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if host.len() > 253 || !host.contains('.') || !host.split('.').all(valid_label) {
            return Err(format!(
                "{raw:?} is neither an IP address nor a host name such as sites.acme.com"
            ));
        }
        Ok(PublicAddress::Host(host))
    }

    /// The record type (`A`, `AAAA`, `CNAME`) and content of a record pointing here.
    pub fn record(&self) -> (&'static str, String) {
        match self {
            PublicAddress::Ip(IpAddr::V4(ip)) => ("A", ip.to_string()),
            PublicAddress::Ip(IpAddr::V6(ip)) => ("AAAA", ip.to_string()),
            PublicAddress::Host(h) => ("CNAME", h.clone()),
        }
    }
}

/// The resolved Cloudflare settings; present when a token file is given.
#[derive(Clone)]
pub struct CloudflareConfig {
    /// The API token (never logged).
    pub token: String,
    /// The zone, as given: its id or its name.
    pub zone: String,
    /// The API's base URL, without a trailing `/`.
    pub api_url: String,
    /// Where route records point; without it only DNS-01 uses Cloudflare.
    pub public_address: Option<PublicAddress>,
}

impl std::fmt::Debug for CloudflareConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudflareConfig")
            .field("token", &"<redacted>")
            .field("zone", &self.zone)
            .field("api_url", &self.api_url)
            .field("public_address", &self.public_address)
            .finish()
    }
}

/// The Cloudflare settings, or `None` without a token file. A token file that cannot be read,
/// is empty or holds more than one token is refused here, so opusd does not start with it.
pub(super) fn cloudflare(
    args: &ConfigArgs,
    file: &FileConfig,
) -> Result<Option<CloudflareConfig>, ConfigError> {
    let a = &args.cloudflare;
    let token_file = a
        .cloudflare_token_file
        .clone()
        .or_else(|| file.cloudflare_token_file.clone());
    let zone = a
        .cloudflare_zone
        .clone()
        .or_else(|| file.cloudflare_zone.clone());
    let public_address = a
        .public_address
        .clone()
        .or_else(|| file.public_address.clone());
    let Some(path) = token_file else {
        if zone.is_some() || public_address.is_some() {
            return Err(ConfigError::Invalid {
                key: "cloudflare_token_file",
                message: "cloudflare_zone and public_address need a Cloudflare API token: set --cloudflare-token-file".into(),
            });
        }
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Unreadable {
        key: "cloudflare_token_file",
        path: path.clone(),
        source,
    })?;
    let token = text.trim();
    let bad = |why: &str| ConfigError::Invalid {
        key: "cloudflare_token_file",
        message: format!("{} {why}", path.display()),
    };
    if token.is_empty() {
        return Err(bad("is empty; it must hold a Cloudflare API token"));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad(
            "holds more than a Cloudflare API token (spaces, several lines or non-ASCII characters)",
        ));
    }
    let zone = zone.map(|z| z.trim().to_owned()).unwrap_or_default();
    if zone.is_empty() {
        return Err(ConfigError::Invalid {
            key: "cloudflare_zone",
            message: "a Cloudflare token needs its zone: set --cloudflare-zone to the zone's id or name (acme.com)".into(),
        });
    }
    let api_url = a
        .cloudflare_api_url
        .clone()
        .or_else(|| file.cloudflare_api_url.clone())
        .unwrap_or_else(|| CLOUDFLARE_API.to_owned());
    if !api_url.starts_with("https://") && !api_url.starts_with("http://") {
        return Err(ConfigError::Invalid {
            key: "cloudflare_api_url",
            message: format!("{api_url:?} is not an http(s):// URL"),
        });
    }
    let public_address = match public_address {
        Some(raw) => Some(
            PublicAddress::parse(&raw).map_err(|message| ConfigError::Invalid {
                key: "public_address",
                message,
            })?,
        ),
        None => None,
    };
    Ok(Some(CloudflareConfig {
        token: token.to_owned(),
        zone,
        api_url: api_url.trim_end_matches('/').to_owned(),
        public_address,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(
        token: Option<&str>,
        zone: Option<&str>,
        address: Option<&str>,
    ) -> Result<Option<CloudflareConfig>, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        if let Some(t) = token {
            std::fs::write(&path, t).expect("write");
        }
        let args = ConfigArgs {
            cloudflare: CloudflareArgs {
                cloudflare_token_file: Some(path),
                cloudflare_zone: zone.map(str::to_owned),
                cloudflare_api_url: None,
                public_address: address.map(str::to_owned),
            },
            ..Default::default()
        };
        cloudflare(&args, &FileConfig::default())
    }

    #[test]
    fn a_token_zone_and_address_resolve() {
        let c = resolve(Some("abc_DEF-123\n"), Some("acme.com"), Some("203.0.113.7"))
            .expect("valid")
            .expect("on");
        assert_eq!(c.token, "abc_DEF-123");
        assert_eq!(c.api_url, CLOUDFLARE_API);
        assert_eq!(
            c.public_address.as_ref().expect("address").record(),
            ("A", "203.0.113.7".to_owned())
        );
        assert!(
            !format!("{c:?}").contains("abc_DEF"),
            "the token is not logged"
        );
        let host = PublicAddress::parse("Sites.Acme.com.").expect("host");
        assert_eq!(host.record(), ("CNAME", "sites.acme.com".to_owned()));
        assert_eq!(
            PublicAddress::parse("2001:db8::1").expect("v6").record().0,
            "AAAA"
        );
    }

    #[test]
    fn a_bad_token_file_is_refused_at_start() {
        let missing = resolve(None, Some("acme.com"), None).expect_err("missing");
        assert!(
            missing.to_string().contains("cloudflare_token_file"),
            "{missing}"
        );
        let empty = resolve(Some("  \n"), Some("acme.com"), None).expect_err("empty");
        assert!(empty.to_string().contains("is empty"), "{empty}");
        let two = resolve(Some("tok one\ntok two\n"), Some("acme.com"), None).expect_err("two");
        assert!(
            two.to_string().contains("more than a Cloudflare API token"),
            "{two}"
        );
        let no_zone = resolve(Some("tok"), None, None).expect_err("no zone");
        assert!(
            no_zone.to_string().contains("--cloudflare-zone"),
            "{no_zone}"
        );
        let bad_address =
            resolve(Some("tok"), Some("acme.com"), Some("not an address")).expect_err("address");
        assert!(
            bad_address.to_string().contains("public_address"),
            "{bad_address}"
        );
    }

    #[test]
    fn a_zone_without_a_token_is_refused() {
        let args = ConfigArgs {
            cloudflare: CloudflareArgs {
                cloudflare_zone: Some("acme.com".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = cloudflare(&args, &FileConfig::default()).expect_err("refused");
        assert!(err.to_string().contains("--cloudflare-token-file"), "{err}");
    }
}
