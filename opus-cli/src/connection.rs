//! The connection to opusd: one channel, the bearer token on every call, typed clients.

use std::time::Duration;

use opus_core::proto::artifact_service_client::ArtifactServiceClient;
use opus_core::proto::build_service_client::BuildServiceClient;
use opus_core::proto::event_service_client::EventServiceClient;
use opus_core::proto::project_service_client::ProjectServiceClient;
use opus_core::proto::system_service_client::SystemServiceClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::cli::GlobalArgs;
use crate::error::CliError;

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The transport every client uses.
pub type Transport = InterceptedService<Channel, BearerToken>;

/// How much of an answer opusd may send before the CLI acknowledges it.
const RECEIVE_WINDOW: u32 = 16 << 20;

/// A connected client of every opusd service.
pub struct Connection {
    channel: Channel,
    token: BearerToken,
    /// The address, for messages.
    pub server: String,
}

impl Connection {
    /// Connects to `--server`, failing with a message that says which address was tried and how
    /// to start opusd.
    pub async fn open(global: &GlobalArgs) -> Result<Connection, CliError> {
        let server = global.server.trim_end_matches('/').to_owned();
        let mut endpoint = Endpoint::from_shared(server.clone())
            .map_err(|e| CliError::Usage(format!("invalid --server {server:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // HTTP/2's default 64 KiB receive window makes a large answer (the list of 10,000
            // projects is about 3 MB) wait for a window update every 64 KiB.
            .initial_stream_window_size(Some(RECEIVE_WINDOW))
            .initial_connection_window_size(Some(RECEIVE_WINDOW));
        if server.starts_with("https://") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_enabled_roots())
                .map_err(|e| CliError::Usage(format!("TLS setup for {server} failed: {e}")))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| CliError::Unreachable {
                server: server.clone(),
                detail: opus_core::error::innermost_cause(&e),
            })?;
        let token = match &global.token {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                CliError::Usage("the token contains characters a header cannot carry".into())
            })?),
            None => None,
        };
        Ok(Connection {
            channel,
            token: BearerToken(token),
            server,
        })
    }

    fn transport(&self) -> Transport {
        InterceptedService::new(self.channel.clone(), self.token.clone())
    }

    /// The project registry.
    pub fn projects(&self) -> ProjectServiceClient<Transport> {
        ProjectServiceClient::new(self.transport())
    }

    /// Deploys, rollbacks, releases and environments.
    pub fn deploys(
        &self,
    ) -> opus_core::proto::deploy_service_client::DeployServiceClient<Transport> {
        opus_core::proto::deploy_service_client::DeployServiceClient::new(self.transport())
    }

    /// Passwords in front of sites.
    pub fn site_access(
        &self,
    ) -> opus_core::proto::site_access_service_client::SiteAccessServiceClient<Transport> {
        opus_core::proto::site_access_service_client::SiteAccessServiceClient::new(self.transport())
    }

    /// Approvals of builds awaiting approval.
    pub fn approvals(
        &self,
    ) -> opus_core::proto::approval_service_client::ApprovalServiceClient<Transport> {
        opus_core::proto::approval_service_client::ApprovalServiceClient::new(self.transport())
    }

    /// Custom domains and their certificates.
    pub fn domains(
        &self,
    ) -> opus_core::proto::domain_service_client::DomainServiceClient<Transport> {
        opus_core::proto::domain_service_client::DomainServiceClient::new(self.transport())
    }

    /// Stored versions: listing, manifests, archives, publishing, verify. Messages may be large
    /// (the manifest of a site with many files).
    pub fn artifacts(&self) -> ArtifactServiceClient<Transport> {
        ArtifactServiceClient::new(self.transport())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// Builds.
    pub fn builds(&self) -> BuildServiceClient<Transport> {
        BuildServiceClient::new(self.transport())
    }

    /// Server information.
    pub fn system(&self) -> SystemServiceClient<Transport> {
        SystemServiceClient::new(self.transport())
    }

    /// The event stream.
    pub fn events(&self) -> EventServiceClient<Transport> {
        EventServiceClient::new(self.transport())
    }

    /// GitHub: the token and the commit statuses.
    pub fn github(
        &self,
    ) -> opus_core::proto::github_service_client::GithubServiceClient<Transport> {
        opus_core::proto::github_service_client::GithubServiceClient::new(self.transport())
    }

    /// The GitHub App service (`opus github import`).
    pub fn github_app(
        &self,
    ) -> opus_core::proto::github_app_service_client::GithubAppServiceClient<Transport> {
        opus_core::proto::github_app_service_client::GithubAppServiceClient::new(self.transport())
    }
}
