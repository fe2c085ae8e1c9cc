//! `opus.v1.GithubService`: the token opusd calls GitHub with (write-only, like secrets: never
//! returned, never logged) and the commit statuses of the outbox.

use opus_core::proto::{self, github_service_server::GithubService};
use opus_core::store::MetaStore;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::status;

/// Implements the GitHub RPCs over the store.
pub(crate) struct GithubApi {
    /// Where the token and the outbox's records are.
    store: MetaStore,
    /// The API the token is for (`--github-api-url`), said back to the user.
    api_url: String,
}

impl GithubApi {
    pub(crate) fn new(store: MetaStore, api_url: String) -> Self {
        GithubApi { store, api_url }
    }
}

/// Checks a token as given: one word of visible characters, not empty.
fn check_token(token: &str) -> Result<&str, Status> {
    let token = token.trim();
    if token.is_empty() {
        return Err(Status::invalid_argument(
            "the GitHub token is empty (the file `opus github connect --token-file` names holds nothing)",
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Status::invalid_argument(
            "the GitHub token must be one word: the file holds more than a token",
        ));
    }
    Ok(token)
}

#[tonic::async_trait]
impl GithubService for GithubApi {
    #[instrument(skip_all)]
    async fn connect_github(
        &self,
        req: Request<proto::ConnectGithubRequest>,
    ) -> Result<Response<proto::ConnectGithubResponse>, Status> {
        let req = req.into_inner();
        let token = check_token(&req.token)?;
        self.store.set_github_token(token).map_err(status)?;
        tracing::info!(api = %self.api_url, "GitHub token stored");
        Ok(Response::new(proto::ConnectGithubResponse {
            api_url: self.api_url.clone(),
        }))
    }

    #[instrument(skip_all)]
    async fn list_github_deliveries(
        &self,
        req: Request<proto::ListGithubDeliveriesRequest>,
    ) -> Result<Response<proto::ListGithubDeliveriesResponse>, Status> {
        let limit = req.into_inner().limit as usize;
        let deliveries = self
            .store
            .list_github_statuses(limit)
            .map_err(status)?
            .iter()
            .map(proto::GithubDelivery::from)
            .collect();
        Ok(Response::new(proto::ListGithubDeliveriesResponse {
            deliveries,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_one_word() {
        assert_eq!(check_token(" ghp_abc\n").expect("valid"), "ghp_abc");
        assert_eq!(
            check_token("\n").expect_err("empty").code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            check_token("ghp_abc\nsecond line")
                .expect_err("two words")
                .code(),
            tonic::Code::InvalidArgument
        );
    }
}
