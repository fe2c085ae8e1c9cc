//! What each page shows, one module per page: [`projects`] (all projects at once), [`project`]
//! (one project's builds, versions, environments, releases, hooks), [`build`] (one build with
//! its log and step timings), [`version`] (a version's files and its diff against another),
//! [`queue`] (what runs and what waits). Here: what several pages
//! share.

pub(super) mod build;
pub(super) mod project;
pub(super) mod projects;
pub(super) mod queue;
pub(super) mod version;

/// Rows per page of a paged list.
pub(super) const PER_PAGE: usize = 50;

/// A URL fit to show: the user part (`https://user:token@host/...`, where git credentials
/// live) replaced by `***`.
pub(super) fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Where a hook posts, without what may be secret: the scheme and host only (a Slack webhook's
/// path is its secret).
pub(super) fn hook_target(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(invalid URL)".to_owned();
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}/…")
}

/// The page number of a `?page=` value: from 1.
pub(super) fn page_number(page: Option<usize>) -> usize {
    page.unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show() {
        assert_eq!(
            without_credentials("https://user:s3cret@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(
            without_credentials("https://github.com/o/r@v1"),
            "https://github.com/o/r@v1"
        );
        assert_eq!(without_credentials("/srv/site"), "/srv/site");
        assert_eq!(
            hook_target("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(hook_target("http://u:p@h:8080/x"), "http://h:8080/…");
    }
}
