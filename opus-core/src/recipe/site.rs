//! opus.yml's `site:` block: redirect and header rules written in the recipe instead of (or as
//! well as) `_redirects` and `_headers` files in the output.
//!
//! ```yaml
//! site:
//!   redirects:
//!     - /old /new 301
//!     - /blog/* /posts/:splat
//!   headers:
//!     /*:
//!       X-Frame-Options: DENY
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::site_rules::{RuleError, SiteRules};

/// The `site:` block, checked when opus.yml is read: a malformed rule fails the build's recipe
/// step, naming the rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSiteSpec")]
pub struct SiteSpec {
    /// The rules, in the stored form.
    pub rules: SiteRules,
}

/// `site:` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSiteSpec {
    /// `_redirects` lines.
    #[serde(default)]
    redirects: Vec<String>,
    /// Path pattern -> header name -> value.
    #[serde(default)]
    headers: BTreeMap<String, BTreeMap<String, String>>,
}

impl TryFrom<RawSiteSpec> for SiteSpec {
    type Error = RuleError;

    fn try_from(raw: RawSiteSpec) -> Result<SiteSpec, RuleError> {
        Ok(SiteSpec {
            rules: SiteRules::from_spec(&raw.redirects, &raw.headers)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_rules_read_from_yaml_and_bad_ones_name_the_rule() {
        let spec: SiteSpec = serde_yaml_ng::from_str(
            "redirects:\n  - /old /new 302\nheaders:\n  /*:\n    X-Frame-Options: DENY\n",
        )
        .expect("reads");
        assert_eq!(spec.rules.redirects[0].status, 302);
        assert_eq!(spec.rules.headers[0].path, "/*");

        let e = serde_yaml_ng::from_str::<SiteSpec>("redirects:\n  - /a /b 302\n  - /a /a 301\n")
            .expect_err("loops");
        assert!(
            e.to_string()
                .contains("opus.yml site.redirects line 2: \"/a\" redirects to itself"),
            "{e}"
        );
        let e = serde_yaml_ng::from_str::<SiteSpec>("redirect: []\n").expect_err("typo");
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
