//! Inbound webhooks on the API port: `POST /hooks/github/<project>` (GitHub's `ping` and `push`,
//! signed with the project's webhook secret) and `POST /hooks/trigger/<project>` (a bearer trigger
//! token, for other CI systems and scripts).
//!
//! Answers: 202 with the build id when a build is queued; 200 for a ping, a repeated
//! `X-GitHub-Delivery`, a deleted branch, or an event Opus does not handle; 401 for a missing or
//! wrong signature or token (nothing is queued); 400 for a malformed body; 404 for an unknown
//! project; 413 for a body over GitHub's 25 MB cap (not read further).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opus_core::error::StoreError;
use opus_core::model::branch_slug;
use opus_core::store::KeyKind;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tracing::instrument;

use crate::AppState;
use crate::hooks::signature;
use crate::scheduler::TriggerRequest;

/// GitHub's own cap on a webhook payload.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

/// The webhook routes, with their body limit.
pub(crate) fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/hooks/github/{project}", post(github))
        .route("/hooks/trigger/{project}", post(trigger))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn answer(code: StatusCode, body: Value) -> Response {
    (code, Json(body)).into_response()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The key of `kind` of `project`, or the answer to give: 404 unknown project, 401 no key yet.
fn project_key(state: &AppState, project: &str, kind: KeyKind) -> Result<String, Box<Response>> {
    if state.store.get_project(project).is_err() {
        return Err(Box::new(answer(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("no project named {project:?}") }),
        )));
    }
    match state.store.project_key(project, kind) {
        Ok(Some(k)) => Ok(k),
        Ok(None) => Err(Box::new(answer(
            StatusCode::UNAUTHORIZED,
            json!({ "error": "this project has no webhook key yet (run `opus hook github` or `opus hook trigger`)" }),
        ))),
        Err(e) => Err(Box::new(answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }),
        ))),
    }
}

/// Queues a build and answers 202 with its number within the project.
fn queue(state: &AppState, req: TriggerRequest) -> Response {
    match state.scheduler.trigger(req) {
        Ok(build) => answer(
            StatusCode::ACCEPTED,
            json!({ "build": build.number, "project": build.project, "ref": build.git_ref }),
        ),
        Err(e) => {
            let status = crate::api::status(e);
            let code = match status.code() {
                tonic::Code::NotFound => StatusCode::NOT_FOUND,
                tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
                    StatusCode::BAD_REQUEST
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            answer(code, json!({ "error": status.message() }))
        }
    }
}

#[instrument(skip_all, fields(project = %project, event, delivery))]
async fn github(
    State(state): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let secret = match project_key(&state, &project, KeyKind::GithubSecret) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let valid = header(&headers, "x-hub-signature-256")
        .is_some_and(|sig| signature::verify(secret.as_bytes(), &body, sig));
    if !valid {
        tracing::warn!("GitHub webhook with a missing or wrong signature");
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({ "error": "missing or wrong X-Hub-Signature-256 (check the secret from `opus hook github`)" }),
        );
    }
    let event = header(&headers, "x-github-event").unwrap_or("").to_owned();
    let delivery = header(&headers, "x-github-delivery")
        .unwrap_or("")
        .to_owned();
    tracing::Span::current().record("event", event.as_str());
    tracing::Span::current().record("delivery", delivery.as_str());
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({ "error": "the body is not a JSON object (set the content type to application/json)" }),
            );
        }
    };
    match event.as_str() {
        "ping" => return answer(StatusCode::OK, json!({ "ok": true, "zen": payload["zen"] })),
        "push" => {}
        other => {
            return answer(
                StatusCode::OK,
                json!({ "ignored": format!("Opus does not handle {other:?} events") }),
            );
        }
    }
    let Some(git_ref) = payload["ref"].as_str() else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({ "error": "a push event without \"ref\"" }),
        );
    };
    if !delivery.is_empty() {
        match state.store.record_github_delivery(&project, &delivery) {
            Ok(true) => {}
            Ok(false) => {
                return answer(
                    StatusCode::OK,
                    json!({ "ignored": "a repeated X-GitHub-Delivery" }),
                );
            }
            Err(e) => {
                return answer(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": e.to_string() }),
                );
            }
        }
    }
    if payload["deleted"].as_bool() == Some(true) {
        return branch_deleted(&state, &project, git_ref).await;
    }
    let (build_ref, version) = match git_ref.strip_prefix("refs/tags/") {
        Some(tag) => {
            let commit = payload["head_commit"]["id"]
                .as_str()
                .or_else(|| payload["after"].as_str())
                .unwrap_or(tag);
            (commit.to_owned(), Some(tag.to_owned()))
        }
        None => (
            git_ref
                .strip_prefix("refs/heads/")
                .unwrap_or(git_ref)
                .to_owned(),
            None,
        ),
    };
    let response = queue(
        &state,
        TriggerRequest {
            project: project.clone(),
            git_ref: build_ref,
            version,
            store: String::new(),
            trigger: "github".into(),
        },
    );
    if !response.status().is_success() && !delivery.is_empty() {
        // Let GitHub's redelivery try again.
        let _ = state.store.forget_github_delivery(&project, &delivery);
    }
    response
}

/// A deleted branch: its preview environment (named by the branch slug) stops being served and
/// is removed. Environments that are not previews are never touched; a deleted tag changes
/// nothing.
async fn branch_deleted(state: &AppState, project: &str, git_ref: &str) -> Response {
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        tracing::info!(git_ref, "ref deleted: nothing to remove");
        return answer(StatusCode::OK, json!({ "deleted": git_ref }));
    };
    let env = branch_slug(branch);
    let preview = match state.store.environment(project, &env) {
        Ok(record) => record.preview,
        Err(StoreError::EnvironmentNotFound { .. }) => false,
        Err(e) => {
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": e.to_string() }),
            );
        }
    };
    if !preview {
        tracing::info!(branch, "branch deleted: it has no preview");
        return answer(StatusCode::OK, json!({ "deleted": git_ref }));
    }
    match state.deployer.remove_environment(project, &env).await {
        Ok(()) => {
            tracing::info!(branch, env, "branch deleted: preview removed");
            answer(
                StatusCode::OK,
                json!({ "deleted": git_ref, "removed_preview": env }),
            )
        }
        Err(e) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }),
        ),
    }
}

#[instrument(skip_all, fields(project = %project))]
async fn trigger(
    State(state): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match project_key(&state, &project, KeyKind::TriggerToken) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let given = header(&headers, "authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({ "error": "missing or wrong bearer token (see `opus hook trigger`)" }),
        );
    }
    let payload: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": "the body must be empty or a JSON object {\"ref\": ..., \"version\": ...}" }),
                );
            }
        }
    };
    let field = |k: &str| -> Result<Option<String>, Box<Response>> {
        match &payload[k] {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            _ => Err(Box::new(answer(
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("\"{k}\" must be a string") }),
            ))),
        }
    };
    let (git_ref, version) = match (field("ref"), field("version")) {
        (Ok(r), Ok(v)) => (r, v),
        (Err(e), _) | (_, Err(e)) => return *e,
    };
    queue(
        &state,
        TriggerRequest {
            project,
            git_ref: git_ref.unwrap_or_default(),
            version,
            store: String::new(),
            trigger: "webhook".into(),
        },
    )
}
