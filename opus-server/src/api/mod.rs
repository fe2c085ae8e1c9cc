//! The API listener: the `opus.v1` gRPC services, `grpc.health.v1`, reflection, and the plain HTTP
//! routes that share the port.
//!
//! Every `opus.v1` service is wrapped in the `auth::Auth` interceptor; health stays open so that
//! load balancers and Kubernetes probes can ask without a token.

mod approvals;
mod artifacts;
pub(crate) mod auth;
mod builds;
mod deploys;
mod domains;
mod events;
mod github;
mod github_app;
mod projects;
mod runner;
mod site_access;
mod status;
mod system;
mod webhooks;

use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use opus_core::proto;
use opus_core::proto::build_service_server::BuildServiceServer;
use opus_core::proto::deploy_service_server::DeployServiceServer;
use opus_core::proto::event_service_server::EventServiceServer;
use opus_core::proto::project_service_server::ProjectServiceServer;
use opus_core::proto::system_service_server::SystemServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::{Daemon, ServeError};

pub use status::status;

/// Serves the API and the dashboard on `listener` until `stop` is cancelled. Each service is
/// given the parts of the `daemon` it uses.
pub(crate) async fn run(
    listener: TcpListener,
    daemon: &Daemon,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let mut server = Server::builder().accept_http1(true);
    if let Some(tls) = &daemon.config.tls {
        let identity = Identity::from_pem(&tls.cert, &tls.key);
        server = server
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(ServeError::Tls)?;
    }
    let router = grpc_routes(daemon)
        .await?
        .into_axum_router()
        .merge(http_routes(daemon))
        .merge(dashboard_routes(daemon, stop.clone())?)
        .fallback(not_implemented);
    server
        .add_routes(Routes::from(router))
        .serve_with_incoming_shutdown(incoming(listener), stop.cancelled_owned())
        .await?;
    Ok(())
}

/// Health, reflection, and the `opus.v1` services, each behind the API token except the runner
/// service (runners authenticate with their build's own token).
async fn grpc_routes(d: &Daemon) -> Result<Routes, ServeError> {
    let auth = auth::Auth::new(d.config.token.clone());
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ProjectServiceServer<projects::ProjectsApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(ServeError::Reflection)?;

    // One statement per service, so that adding one is a one-line change.
    let mut routes = Routes::new(health_service);
    routes = routes.add_service(reflection);
    routes = routes.add_service(ProjectServiceServer::with_interceptor(
        projects::ProjectsApi::new(
            d.store.clone(),
            d.deployer.clone(),
            d.scheduler.clone(),
            d.hooks.transport.clone(),
            d.hooks.links.clone(),
        )
        .with_public_url(d.config.public_url.clone()),
        auth.interceptor(),
    ));
    routes = routes.add_service(BuildServiceServer::with_interceptor(
        builds::BuildsApi::new(d.store.clone(), d.scheduler.clone(), d.logs.clone()),
        auth.interceptor(),
    ));
    routes = routes.add_service(SystemServiceServer::with_interceptor(
        system::SystemApi::new(
            d.store.clone(),
            d.scheduler.clone(),
            d.config.clone(),
            d.started_at,
            d.health.clone(),
        ),
        auth.interceptor(),
    ));
    routes = routes.add_service(EventServiceServer::with_interceptor(
        events::EventsApi::new(d.store.clone()),
        auth.interceptor(),
    ));
    routes = routes.add_service(tonic::service::interceptor::InterceptedService::new(
        // A publish manifest of a large site exceeds gRPC's default 4 MiB message limit.
        proto::artifact_service_server::ArtifactServiceServer::new(artifacts::ArtifactsApi::new(
            d.store.clone(),
            d.artifacts.clone(),
            &d.config.data_dir,
            d.deployer.sites().clone(),
        ))
        .max_decoding_message_size(artifacts::MAX_MESSAGE)
        .max_encoding_message_size(artifacts::MAX_MESSAGE),
        auth.interceptor(),
    ));
    routes = routes.add_service(
        proto::site_access_service_server::SiteAccessServiceServer::with_interceptor(
            site_access::SiteAccessApi::new(d.deployer.clone()),
            auth.interceptor(),
        ),
    );
    routes = routes.add_service(DeployServiceServer::with_interceptor(
        deploys::DeploysApi::new(d.store.clone(), d.deployer.clone()),
        auth.interceptor(),
    ));
    routes = routes.add_service(
        proto::domain_service_server::DomainServiceServer::with_interceptor(
            domains::DomainsApi::new(d.domains.clone(), d.https.as_ref().map(|h| h.certs.clone())),
            auth.interceptor(),
        ),
    );
    routes = routes.add_service(
        proto::github_service_server::GithubServiceServer::with_interceptor(
            github::GithubApi::new(d.store.clone(), d.config.github_api_url.clone()),
            auth.interceptor(),
        ),
    );
    routes = routes.add_service(
        proto::approval_service_server::ApprovalServiceServer::with_interceptor(
            approvals::ApprovalsApi::new(
                d.store.clone(),
                d.deployer.clone(),
                crate::approval::Approvals::new(
                    d.store.clone(),
                    d.deployer.clone(),
                    d.logs.clone(),
                ),
            ),
            auth.interceptor(),
        ),
    );
    routes = routes.add_service(
        proto::github_app_service_server::GithubAppServiceServer::with_interceptor(
            github_app::GithubAppApi::new(d.store.clone(), d.github_app.clone()),
            auth.interceptor(),
        ),
    );
    routes = routes.add_service(proto::runner_service_server::RunnerServiceServer::new(
        runner::RunnerApi::new(d.runners.clone(), d.git_credentials.clone()),
    ));
    Ok(routes)
}

/// The plain HTTP routes on the API port: `/healthz`, `/metrics` and the inbound webhooks.
fn http_routes(d: &Daemon) -> axum::Router {
    let metrics = d.metrics.clone();
    let health = d.health.clone();
    axum::Router::new()
        .route(
            "/healthz",
            axum::routing::get(move || crate::health::healthz(health.clone())),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .merge(webhooks::router(webhooks::Webhooks {
            store: d.store.clone(),
            scheduler: d.scheduler.clone(),
            deployer: d.deployer.clone(),
        }))
}

/// The web dashboard ([`crate::dashboard`]) at `/`.
fn dashboard_routes(d: &Daemon, stop: CancellationToken) -> Result<axum::Router, ServeError> {
    Ok(crate::dashboard::router(
        crate::dashboard::DashboardParts {
            store: d.store.clone(),
            scheduler: d.scheduler.clone(),
            deployer: d.deployer.clone(),
            logs: d.logs.clone(),
            token: d.config.token.clone(),
            viewer_token: d.config.viewer_token.clone(),
            tls: d.config.tls.is_some(),
            stopping: stop,
        },
    )?)
}

/// The accepted connections of the API listener, with `TCP_NODELAY` set: without it a streamed
/// message (a `WatchEvents` event, a log line) can wait for the client's delayed ACK (Nagle's
/// algorithm), which costs tens of milliseconds per message on an otherwise idle connection.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Answers calls to services this opusd does not serve yet (gRPC `Unimplemented`, with a message)
/// and unknown HTTP paths (404).
async fn not_implemented(req: axum::extract::Request) -> axum::response::Response {
    let is_grpc = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if !is_grpc {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    let message = format!(
        "{} is not implemented by this opusd {} yet",
        req.uri().path().trim_start_matches('/'),
        env!("CARGO_PKG_VERSION")
    );
    let mut resp = StatusCode::OK.into_response();
    let headers = resp.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from_static("12"));
    if let Ok(v) = HeaderValue::from_str(&message) {
        headers.insert("grpc-message", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    /// Streamed answers must not wait for the client's delayed ACK.
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut accepted = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let stream = accepted
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(stream.nodelay().expect("nodelay"));
    }
}
