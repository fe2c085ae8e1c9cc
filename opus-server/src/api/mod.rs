//! The API listener: the `opus.v1` gRPC services, `grpc.health.v1`, reflection, and the plain HTTP
//! routes that share the port.
//!
//! Every `opus.v1` service is wrapped in the `auth::Auth` interceptor; health stays open so that
//! load balancers and Kubernetes probes can ask without a token.

mod artifacts;
mod auth;
mod builds;
mod deploys;
mod events;
mod projects;
mod runner;
mod status;
mod system;
mod webhooks;

use std::future::Future;

use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use opus_core::proto;
use opus_core::proto::build_service_server::BuildServiceServer;
use opus_core::proto::deploy_service_server::DeployServiceServer;
use opus_core::proto::event_service_server::EventServiceServer;
use opus_core::proto::project_service_server::ProjectServiceServer;
use opus_core::proto::system_service_server::SystemServiceServer;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::{AppState, ServeError};

pub use status::status;

/// Serves the API on `listener` until `shutdown` completes.
pub(crate) async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let auth = auth::Auth::new(state.config.token.clone());

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ProjectServiceServer<projects::ProjectsApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    // One statement per service, so that adding one is a one-line change.
    let mut routes = Routes::new(health_service);
    routes = routes.add_service(reflection);
    routes = routes.add_service(ProjectServiceServer::with_interceptor(
        projects::ProjectsApi::new(state.clone()),
        auth.interceptor(),
    ));
    routes = routes.add_service(BuildServiceServer::with_interceptor(
        builds::BuildsApi::new(state.clone()),
        auth.interceptor(),
    ));
    routes = routes.add_service(SystemServiceServer::with_interceptor(
        system::SystemApi::new(state.clone()),
        auth.interceptor(),
    ));
    routes = routes.add_service(EventServiceServer::with_interceptor(
        events::EventsApi::new(state.clone()),
        auth.interceptor(),
    ));
    routes = routes.add_service(tonic::service::interceptor::InterceptedService::new(
        // A publish manifest of a large site exceeds gRPC's default 4 MiB message limit.
        proto::artifact_service_server::ArtifactServiceServer::new(artifacts::ArtifactsApi::new(
            state.clone(),
        ))
        .max_decoding_message_size(artifacts::MAX_MESSAGE)
        .max_encoding_message_size(artifacts::MAX_MESSAGE),
        auth.interceptor(),
    ));
    routes = routes.add_service(DeployServiceServer::with_interceptor(
        deploys::DeploysApi::new(state.clone()),
        auth.interceptor(),
    ));
    // Not behind the API token: runners authenticate with their build's own token.
    routes = routes.add_service(proto::runner_service_server::RunnerServiceServer::new(
        runner::RunnerApi::new(state.clone()),
    ));

    let metrics = state.metrics.clone();
    let router = routes
        .into_axum_router()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
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
        .merge(webhooks::router(state.clone()))
        .fallback(not_implemented);

    let mut server = Server::builder().accept_http1(true);
    if let Some((cert, key)) = &state.config.tls {
        let read = |p: &std::path::PathBuf| {
            std::fs::read(p).map_err(|source| ServeError::Tls {
                path: p.clone(),
                source,
            })
        };
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        server = server.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    server
        .add_routes(Routes::from(router))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
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
