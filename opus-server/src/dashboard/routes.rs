//! The dashboard's route table, and the span every dashboard request runs in.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use tracing::Instrument;

use super::{Dashboard, actions, assets, pages, session, sse};

/// Every page and action. Paths never collide with gRPC's (`/opus.v1.BuildService/...`).
pub(super) fn routes(d: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(pages::projects::projects))
        .route("/queue", get(pages::queue::queue))
        .route("/events", get(sse::events_stream))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", axum::routing::post(session::logout))
        .route("/assets/{name}", get(assets::serve))
        .route("/projects/{project}", get(pages::project::project))
        .route(
            "/projects/{project}/versions/{version}",
            get(pages::version::version),
        )
        .route(
            "/projects/{project}/trigger",
            get(actions::confirm_trigger).post(actions::trigger),
        )
        .route(
            "/projects/{project}/deploy",
            get(actions::confirm_deploy).post(actions::deploy),
        )
        .route(
            "/projects/{project}/environments/{env}/rollback",
            get(actions::confirm_rollback).post(actions::rollback),
        )
        .route(
            "/projects/{project}/environments/{env}/unpin",
            get(actions::confirm_unpin).post(actions::unpin),
        )
        .route(
            "/projects/{project}/environments/{env}/remove",
            get(actions::confirm_remove).post(actions::remove),
        )
        .route(
            "/projects/{project}/builds/{number}",
            get(pages::build::build),
        )
        .route(
            "/projects/{project}/builds/{number}/log",
            get(sse::log_stream),
        )
        .route(
            "/projects/{project}/builds/{number}/cancel",
            get(actions::confirm_cancel).post(actions::cancel),
        )
        .layer(axum::middleware::from_fn(request_span))
        .with_state(d)
}

/// Runs a request in a `dashboard` span naming its method and path, and logs its status.
async fn request_span(req: Request, next: Next) -> Response {
    let span = tracing::info_span!("dashboard", method = %req.method(), path = %req.uri().path());
    async move {
        let resp = next.run(req).await;
        tracing::debug!(status = resp.status().as_u16(), "answered");
        resp
    }
    .instrument(span)
    .await
}
