//! `--public-url`: how the world (GitHub's webhooks, people following a status link) reaches
//! opusd's API listener, which also serves the dashboard. opusd binds 127.0.0.1 by default, so the
//! address it listens on is not one GitHub can call.

use std::fmt;

use super::{ConfigArgs, ConfigError, FileConfig};

/// A checked public base URL: `http` or `https`, a host, no query or fragment; kept without its
/// trailing `/` so that paths join onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    /// Checks `text` as a public base URL; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<PublicUrl, ConfigError> {
        let invalid = |why: &str| ConfigError::Invalid {
            key: "public_url",
            message: format!(
                "{text:?} {why} (for example https://opus.example.com, the address GitHub and browsers reach opusd's API port by)"
            ),
        };
        let url = url::Url::parse(text.trim()).map_err(|e| invalid(&format!("is no URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("is not an http:// or https:// URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("must not have a query or a fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("must not hold credentials"));
        }
        Ok(PublicUrl(url.as_str().trim_end_matches('/').to_owned()))
    }

    /// The URL of `path` (which starts with `/`) under this base.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    /// The dashboard's page of build `number` of `project`: what a commit status links to.
    pub fn build_page(&self, project: &str, number: u64) -> String {
        self.join(&format!("/projects/{project}/builds/{number}"))
    }

    /// The base URL, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `--public-url` / `OPUS_PUBLIC_URL` / `public_url`, checked; none when unset.
pub(super) fn public_url(
    args: &ConfigArgs,
    file: &FileConfig,
) -> Result<Option<PublicUrl>, ConfigError> {
    args.public_url
        .as_deref()
        .or(file.public_url.as_deref())
        .map(PublicUrl::parse)
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_joins_paths_without_a_double_slash() {
        let url = PublicUrl::parse("https://opus.example.com/ci/").expect("valid");
        assert_eq!(url.as_str(), "https://opus.example.com/ci");
        assert_eq!(
            url.join("/hooks/github/web"),
            "https://opus.example.com/ci/hooks/github/web"
        );
        assert_eq!(
            url.build_page("web", 42),
            "https://opus.example.com/ci/projects/web/builds/42"
        );
        let bare = PublicUrl::parse("http://10.0.0.5:7070").expect("valid");
        assert_eq!(bare.join("/x"), "http://10.0.0.5:7070/x");
    }

    #[test]
    fn what_cannot_be_a_public_base_url_is_refused_saying_why() {
        for (text, why) in [
            ("opus.example.com", "is no URL"),
            ("ftp://opus.example.com", "http:// or https://"),
            ("https://opus.example.com/?a=b", "query"),
            ("https://me:pw@opus.example.com", "credentials"),
        ] {
            let err = PublicUrl::parse(text).expect_err(text).to_string();
            assert!(
                err.contains("public_url") && err.contains(why),
                "{text}: {err}"
            );
        }
    }
}
