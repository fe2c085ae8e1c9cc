//! `--github-api-url`: where opusd calls GitHub's REST API: GitHub Enterprise Server's
//! `https://<host>/api/v3`, or a test's fake.

use super::{ConfigArgs, ConfigError, FileConfig, PublicUrl};

/// GitHub's own API.
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

/// `--github-api-url` / `OPUS_GITHUB_API_URL` / `github_api_url`, checked as an http(s) base URL
/// [default: https://api.github.com].
pub(super) fn github_api_url(args: &ConfigArgs, file: &FileConfig) -> Result<String, ConfigError> {
    let text = args
        .github_api_url
        .as_deref()
        .or(file.github_api_url.as_deref())
        .unwrap_or(DEFAULT_GITHUB_API_URL);
    PublicUrl::parse(text)
        .map(|u| u.as_str().to_owned())
        .map_err(|e| match e {
            ConfigError::Invalid { message, .. } => ConfigError::Invalid {
                key: "github_api_url",
                message,
            },
            other => other,
        })
}
