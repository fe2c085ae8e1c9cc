//! Custom domains: a host name a project's environment is served at besides its
//! `<env>--<project>.<domain>` host (`opus domain add web www.acme.com`).
//!
//! [`DomainName`] is a host name checked once: lowercase, without a trailing dot, a real DNS name
//! (not an IP address, not `localhost`, no wildcard). Whether it falls under opusd's own
//! `--domain` is opusd's check ([`DomainName::is_under`]), since only opusd knows that domain.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// The longest host name DNS carries (RFC 1035, without the trailing dot).
const MAX_HOST: usize = 253;
/// The longest label.
const MAX_LABEL: usize = 63;

/// A validated custom domain: a fully qualified host name, lowercase, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainName(String);

impl DomainName {
    /// Checks `raw` (any case, one trailing dot allowed): at least two labels of letters,
    /// digits and `-` (not at either end), 63 characters a label and 253 in all, a top-level
    /// label that is not all digits (so no IPv4 address), and not `localhost` or a host under it.
    pub fn new(raw: &str) -> Result<DomainName, ModelError> {
        let invalid = |why: &str| {
            Err(ModelError::Invalid(format!(
                "invalid domain {raw:?}: {why} (give a host name such as www.example.com)"
            )))
        };
        let host = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        if host.is_empty() {
            return invalid("it is empty");
        }
        if host.parse::<std::net::IpAddr>().is_ok() || host.contains(':') {
            return invalid("an IP address is not a domain; sites are routed by host name");
        }
        if host.contains('*') {
            return invalid("wildcards are not custom domains");
        }
        if host.len() > MAX_HOST {
            return invalid("longer than 253 characters");
        }
        let labels: Vec<&str> = host.split('.').collect();
        for label in &labels {
            if label.is_empty() {
                return invalid("it has an empty label (two dots in a row, or a leading dot)");
            }
            if label.len() > MAX_LABEL {
                return invalid("a label is longer than 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return invalid("only letters, digits, '-' and '.' may appear in a host name");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return invalid("a label may not start or end with '-'");
            }
        }
        let Some(top) = labels.last() else {
            return invalid("it is empty");
        };
        if *top == "localhost" {
            return invalid("localhost and its subdomains reach only this machine");
        }
        if labels.len() < 2 {
            return invalid("a custom domain needs at least two labels");
        }
        if top.bytes().all(|b| b.is_ascii_digit()) {
            return invalid("the last label is all digits, which looks like an IP address");
        }
        Ok(DomainName(host))
    }

    /// The host name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this host is `domain` itself or a host under it (`web.sites.example.com` under
    /// `sites.example.com`): such hosts belong to opusd's own naming, not to custom domains.
    pub fn is_under(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.0 == domain
            || self
                .0
                .strip_suffix(domain.as_str())
                .is_some_and(|rest| rest.ends_with('.'))
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DomainName {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, ModelError> {
        DomainName::new(&s)
    }
}

impl From<DomainName> for String {
    fn from(d: DomainName) -> String {
        d.0
    }
}

/// A custom domain as stored: which project's environment it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainRecord {
    /// The host name.
    pub host: DomainName,
    /// The project that owns it.
    pub project: String,
    /// The environment it serves.
    pub env: String,
    /// When it was added.
    pub added_at: SystemTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_normalised() {
        let d = DomainName::new("WWW.Acme.com.").expect("valid");
        assert_eq!(d.as_str(), "www.acme.com");
        assert!(DomainName::new("a-b.example.co.uk").is_ok());
        assert!(DomainName::new("xn--bcher-kva.example").is_ok());
    }

    #[test]
    fn bad_host_names_are_refused_with_the_reason() {
        for (raw, why) in [
            ("", "empty"),
            ("localhost", "localhost"),
            ("web.localhost", "localhost"),
            ("127.0.0.1", "IP address"),
            ("::1", "IP address"),
            ("[::1]", "IP address"),
            ("10.0.0.300", "all digits"),
            ("*.acme.com", "wildcards"),
            ("acme", "two labels"),
            ("www..acme.com", "empty label"),
            (".acme.com", "empty label"),
            ("-www.acme.com", "start or end"),
            ("www-.acme.com", "start or end"),
            ("www_x.acme.com", "only letters"),
            ("www.acme.com/path", "only letters"),
            ("ww w.acme.com", "only letters"),
        ] {
            let e = DomainName::new(raw).expect_err(raw).to_string();
            assert!(e.contains(why), "{raw:?}: {e}");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(DomainName::new(&long).is_err());
        let too_long = format!("{}com", "abcdefghi.".repeat(26));
        assert!(
            DomainName::new(&too_long)
                .expect_err("long")
                .to_string()
                .contains("253")
        );
    }

    #[test]
    fn hosts_under_the_sites_domain_are_recognised() {
        let d = DomainName::new("web.sites.example.com").expect("valid");
        assert!(d.is_under("sites.example.com"));
        assert!(d.is_under("Example.com."));
        assert!(d.is_under("web.sites.example.com"));
        assert!(!d.is_under("ample.com"));
        assert!(!d.is_under("other.com"));
    }
}
