//! What the site server adds to a host's answers besides content: `X-Robots-Tag: noindex` on
//! everything that is not production, so previews, staging and version hosts stay out of search
//! engines.
//!
//! Seam for custom domains: a host with no policy gets nothing added, so a custom domain routed
//! to any environment is indexable unless whoever adds it to the table gives it a policy.

use std::collections::HashMap;

use axum::http::HeaderValue;
use axum::response::Response;

use super::{PRODUCTION, SiteKey};

/// The `X-Robots-Tag` value of hosts search engines should not index.
const NOINDEX: HeaderValue = HeaderValue::from_static("noindex");

/// What applies to one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    /// Answers carry `X-Robots-Tag: noindex`.
    pub noindex: bool,
}

impl HostPolicy {
    /// The policy of a version host (`<label>--v--<project>`): never indexed.
    pub(crate) fn version_host() -> HostPolicy {
        HostPolicy { noindex: true }
    }

    /// Adds what this policy says to an answer.
    pub(crate) fn apply(&self, resp: &mut Response) {
        if self.noindex {
            resp.headers_mut().insert("x-robots-tag", NOINDEX);
        }
    }
}

/// The policies of the table's hosts, from the site each one serves: every environment but
/// production is `noindex`.
pub(super) fn of_hosts<'a>(
    hosts: impl Iterator<Item = (&'a String, &'a SiteKey)>,
) -> HashMap<String, HostPolicy> {
    hosts
        .filter(|(_, key)| key.env != PRODUCTION)
        .map(|(host, _)| (host.clone(), HostPolicy { noindex: true }))
        .collect()
}
