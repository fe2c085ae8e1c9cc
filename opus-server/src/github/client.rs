//! Calls to GitHub's REST API, made with octocrab (its base URI is `--github-api-url`), and how
//! an answer is judged: delivered, retried (after GitHub's own `Retry-After` or
//! `x-ratelimit-reset` when it gives one), or refused for good.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use octocrab::Octocrab;
use serde_json::json;

use super::status::Status;

/// Why no call could be made.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    /// octocrab refused the base URI or the client could not be built.
    #[error("cannot make a GitHub client for {api}: {source}")]
    Client {
        /// The API's base URL.
        api: String,
        /// octocrab's error.
        #[source]
        source: octocrab::Error,
    },
}

/// What one attempt got, judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx.
    Delivered(u16),
    /// Worth another attempt (5xx, 429, a rate-limited 403, no answer), not before `at_least`
    /// when GitHub said how long to wait.
    Retry {
        /// The HTTP status (0: no answer).
        status: u16,
        /// Why, for people.
        error: String,
        /// GitHub's own wait (`Retry-After`, or until `x-ratelimit-reset`).
        at_least: Option<Duration>,
    },
    /// A refusal that another attempt will not change (401, 404, 422...).
    Refused(u16, String),
}

/// A GitHub API client with a token.
pub struct Client {
    octocrab: Octocrab,
    api: String,
}

impl Client {
    /// A client of the API at `api` (no trailing `/`) with `token`; each call gives up after
    /// `timeout`.
    pub fn new(api: &str, token: &str, timeout: Duration) -> Result<Client, GithubError> {
        let fail = |source| GithubError::Client {
            api: api.to_owned(),
            source,
        };
        let octocrab = Octocrab::builder()
            .base_uri(api)
            .map_err(fail)?
            .personal_token(token.to_owned())
            .set_connect_timeout(Some(timeout))
            .set_read_timeout(Some(timeout))
            .set_write_timeout(Some(timeout))
            .build()
            .map_err(fail)?;
        Ok(Client {
            octocrab,
            api: api.to_owned(),
        })
    }

    /// `POST /repos/{owner}/{repo}/statuses/{sha}` with context `opus/<project>`.
    pub(super) async fn create_status(&self, project: &str, status: &Status) -> Verdict {
        let mut body = json!({
            "state": status.state,
            "description": status.description,
            "context": format!("opus/{project}"),
        });
        if let Some(url) = &status.target_url {
            body["target_url"] = json!(url);
        }
        let url = format!(
            "{}/repos/{}/statuses/{}",
            self.api, status.commit.repository, status.commit.sha
        );
        self.post(url, &body).await.0
    }

    /// `POST /repos/{repository}/deployments` of `sha` to `environment`: no merge of the base
    /// into it, no required contexts (opusd deploys what it built), transient for previews.
    /// Answers the deployment's id with a delivered verdict.
    pub(super) async fn create_deployment(
        &self,
        repository: &str,
        sha: &str,
        environment: &str,
        transient: bool,
    ) -> (Verdict, Option<u64>) {
        let body = json!({
            "ref": sha,
            "environment": environment,
            "auto_merge": false,
            "required_contexts": [],
            "transient_environment": transient,
            "production_environment": environment == opus_core::model::PRODUCTION,
            "description": format!("opus deploys {environment}"),
        });
        let url = format!("{}/repos/{repository}/deployments", self.api);
        let (verdict, answer) = self.post(url, &body).await;
        deployment_id(verdict, answer.as_ref())
    }

    /// `POST /repos/{repository}/deployments/{id}/statuses` with `state`, and the site's URL
    /// when given.
    pub(super) async fn create_deployment_status(
        &self,
        repository: &str,
        id: u64,
        state: &str,
        environment_url: Option<&str>,
    ) -> Verdict {
        let mut body = json!({ "state": state });
        if let Some(url) = environment_url {
            body["environment_url"] = json!(url);
        }
        let url = format!("{}/repos/{repository}/deployments/{id}/statuses", self.api);
        self.post(url, &body).await.0
    }

    /// `POST /repos/{repository}/issues/{number}/comments`: a pull request's comment (a pull
    /// request is an issue to this API). Answers the comment's id with a delivered verdict.
    pub(super) async fn create_pr_comment(
        &self,
        repository: &str,
        number: u64,
        body: &str,
    ) -> (Verdict, Option<u64>) {
        let url = format!("{}/repos/{repository}/issues/{number}/comments", self.api);
        let (verdict, answer) = self.post(url, &json!({ "body": body })).await;
        match (verdict, answer.as_ref().and_then(|a| a["id"].as_u64())) {
            (Verdict::Delivered(code), None) => (
                Verdict::Refused(code, format!("HTTP {code}: no comment id in the answer")),
                None,
            ),
            (verdict, id) => (verdict, id),
        }
    }

    /// `PATCH /repos/{repository}/issues/comments/{id}`: edits the pull request's comment in
    /// place.
    pub(super) async fn update_pr_comment(&self, repository: &str, id: u64, body: &str) -> Verdict {
        let url = format!("{}/repos/{repository}/issues/comments/{id}", self.api);
        match self
            .octocrab
            ._patch(url, Some(&json!({ "body": body })))
            .await
        {
            Ok(resp) => {
                let header = |name: &str| {
                    resp.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                judge(
                    resp.status().as_u16(),
                    header("retry-after").as_deref(),
                    header("x-ratelimit-remaining").as_deref(),
                    header("x-ratelimit-reset").as_deref(),
                    SystemTime::now(),
                )
            }
            Err(e) => Verdict::Retry {
                status: 0,
                error: error_chain(&e),
                at_least: None,
            },
        }
    }

    /// Posts `body` to `url`; the judged answer, and its JSON body when delivered.
    async fn post(
        &self,
        url: String,
        body: &serde_json::Value,
    ) -> (Verdict, Option<serde_json::Value>) {
        match self.octocrab._post(url, Some(body)).await {
            Ok(resp) => {
                let header = |name: &str| {
                    resp.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let verdict = judge(
                    resp.status().as_u16(),
                    header("retry-after").as_deref(),
                    header("x-ratelimit-remaining").as_deref(),
                    header("x-ratelimit-reset").as_deref(),
                    SystemTime::now(),
                );
                if !matches!(verdict, Verdict::Delivered(_)) {
                    return (verdict, None);
                }
                let answer = self
                    .octocrab
                    .body_to_string(resp)
                    .await
                    .ok()
                    .and_then(|text| serde_json::from_str(&text).ok());
                (verdict, answer)
            }
            Err(e) => (
                Verdict::Retry {
                    status: 0,
                    error: error_chain(&e),
                    at_least: None,
                },
                None,
            ),
        }
    }
}

/// Judges an answer by its status and GitHub's rate-limit headers: 403 and 429 are rate limits
/// when `x-ratelimit-remaining` is 0 or a `Retry-After` is given (GitHub's secondary limits), and
/// then the wait GitHub names is honoured.
pub fn judge(
    status: u16,
    retry_after: Option<&str>,
    remaining: Option<&str>,
    reset: Option<&str>,
    now: SystemTime,
) -> Verdict {
    let retry_after = retry_after
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let until_reset = (remaining.map(str::trim) == Some("0"))
        .then(|| reset.and_then(|s| s.trim().parse::<u64>().ok()))
        .flatten()
        .map(|reset| {
            let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            Duration::from_secs(reset.saturating_sub(now))
        });
    let limited = retry_after.or(until_reset);
    match status {
        200..=299 => Verdict::Delivered(status),
        403 | 429 if limited.is_some() => Verdict::Retry {
            status,
            error: format!(
                "HTTP {status}: rate limited; waiting {} s as GitHub asks",
                limited.unwrap_or_default().as_secs()
            ),
            at_least: limited,
        },
        408 | 429 | 500.. => Verdict::Retry {
            status,
            error: format!("HTTP {status}; retrying"),
            at_least: retry_after,
        },
        _ => Verdict::Refused(status, format!("HTTP {status}: refused; not retried")),
    }
}

/// The id of the deployment an accepted `POST .../deployments` created; an answer without one
/// (GitHub's 202 "auto-merged", which `auto_merge: false` should prevent) is refused: no
/// status could name it.
fn deployment_id(verdict: Verdict, answer: Option<&serde_json::Value>) -> (Verdict, Option<u64>) {
    match verdict {
        Verdict::Delivered(code) => match answer.and_then(|a| a["id"].as_u64()) {
            Some(id) => (Verdict::Delivered(code), Some(id)),
            None => (
                Verdict::Refused(code, format!("HTTP {code}: no deployment id in the answer")),
                None,
            ),
        },
        other => (other, None),
    }
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn success_server_errors_and_refusals() {
        assert_eq!(judge(201, None, None, None, at(0)), Verdict::Delivered(201));
        assert!(matches!(
            judge(500, None, None, None, at(0)),
            Verdict::Retry {
                status: 500,
                at_least: None,
                ..
            }
        ));
        assert!(matches!(
            judge(422, None, None, None, at(0)),
            Verdict::Refused(422, _)
        ));
        // A 403 that is no rate limit (no permission) is not retried.
        assert!(matches!(
            judge(403, None, Some("4999"), Some("2000"), at(1000)),
            Verdict::Refused(403, _)
        ));
    }

    #[test]
    fn a_created_deployment_needs_an_id() {
        let answer = json!({ "id": 1001, "environment": "pr-7" });
        assert_eq!(
            deployment_id(Verdict::Delivered(201), Some(&answer)),
            (Verdict::Delivered(201), Some(1001))
        );
        let merged = json!({ "message": "Auto-merged master into topic-branch on deployment." });
        assert!(matches!(
            deployment_id(Verdict::Delivered(202), Some(&merged)),
            (Verdict::Refused(202, _), None)
        ));
        assert!(matches!(
            deployment_id(Verdict::Delivered(201), None),
            (Verdict::Refused(201, _), None)
        ));
        let retry = Verdict::Retry {
            status: 502,
            error: "HTTP 502; retrying".into(),
            at_least: None,
        };
        assert_eq!(deployment_id(retry.clone(), None), (retry, None));
    }

    #[test]
    fn rate_limits_wait_as_long_as_github_says() {
        assert_eq!(
            judge(403, None, Some("0"), Some("1030"), at(1000)),
            Verdict::Retry {
                status: 403,
                error: "HTTP 403: rate limited; waiting 30 s as GitHub asks".into(),
                at_least: Some(Duration::from_secs(30)),
            }
        );
        assert!(matches!(
            judge(429, Some("7"), None, None, at(0)),
            Verdict::Retry { at_least: Some(d), .. } if d == Duration::from_secs(7)
        ));
        // A reset already past waits for nothing more than the backoff.
        assert!(matches!(
            judge(403, None, Some("0"), Some("900"), at(1000)),
            Verdict::Retry { at_least: Some(d), .. } if d.is_zero()
        ));
    }
}
