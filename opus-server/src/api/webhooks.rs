//! Inbound webhooks on the API port: `POST /hooks/github/<project>` (GitHub's `ping`, `push` and
//! `pull_request`, signed with the project's webhook secret), `POST /hooks/gitlab/<project>`
//! (GitLab's push and merge request hooks, `gitlab`), `POST /hooks/gitea/<project>` (Gitea's
//! and Forgejo's push and pull request, `gitea`) and `POST /hooks/trigger/<project>` (a bearer
//! trigger token, for other CI systems and scripts).
//!
//! Each forge's payload is read into one forge-neutral event (`forge_events`: a push or a pull
//! request event) and acted on by the same code: a pull request's head commit builds into its
//! preview `pr-<number>`; closing it removes that preview. A published release
//! builds its tag when opus.yml has `on: { release: true }` (`releases`).
//!
//! Answers: 202 with the build id when a build is queued; 200 for a ping, a repeated
//! `X-GitHub-Delivery`, a deleted branch, a closed pull request, or an event or action Opus does
//! not handle (saying why); 401 for a missing or
//! wrong signature or token (nothing is queued), and in the same words for a project that does not
//! exist or has no webhook key yet, so that the answers do not tell which projects exist (the log
//! says which it was); 400 for a malformed body; 413 for a body over GitHub's 25 MB cap (not read
//! further).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opus_core::error::StoreError;
use opus_core::model::{EnvName, ProjectName, StoreName, Trigger, branch_slug};
use opus_core::store::{KeyKind, MetaStore};
use serde_json::{Value, json};
use tracing::instrument;

use super::auth::{bearer_token, same_token};
use crate::deploys::Deployer;
use crate::hooks::signature;
use crate::scheduler::{GithubOrigin, Scheduler, TriggerRequest};
use opus_core::forge::{Forge, GithubCommit};

mod forge_events;
mod gitea;
mod gitlab;
mod pull_requests;
mod releases;

use forge_events::{PullRequestEvent, PushEvent};

/// GitHub's own cap on a webhook payload.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

/// What the webhook routes need: the keys and deliveries in the store, the queue, and the deployer
/// (a deleted branch removes its preview).
#[derive(Clone)]
pub(crate) struct Webhooks {
    /// Projects, their webhook keys, and GitHub delivery ids already seen.
    pub(crate) store: MetaStore,
    /// Where triggered builds are queued.
    pub(crate) scheduler: Scheduler,
    /// Removes the preview of a deleted branch.
    pub(crate) deployer: Deployer,
}

/// The webhook routes, with their body limit.
pub(crate) fn router(state: Webhooks) -> axum::Router {
    axum::Router::new()
        .route("/hooks/github/{project}", post(github))
        .route("/hooks/trigger/{project}", post(trigger))
        .route("/hooks/gitlab/{project}", post(gitlab::gitlab))
        .route("/hooks/gitea/{project}", post(gitea::gitea))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn answer(code: StatusCode, body: Value) -> Response {
    (code, Json(body)).into_response()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Why a webhook call is refused; the caller hears only "missing or wrong" (401) for each, the log
/// says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No project has that name.
    UnknownProject,
    /// The project has no key of that kind yet (`opus hook github` or `opus hook trigger` makes
    /// one).
    NoKey,
    /// The signature or token is missing or does not match the key.
    WrongProof,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::UnknownProject => "no project has that name",
            Refusal::NoKey => "the project has no webhook key yet",
            Refusal::WrongProof => "missing or wrong signature or token",
        }
    }
}

/// Checks the proof a webhook call carries against the project's key of `kind`: the project's
/// name when it holds, else the answer: the same 401 (with `message`) whatever the refusal, or a
/// 500 when the store failed.
fn check(
    store: &MetaStore,
    project: &str,
    kind: KeyKind,
    proof_holds: impl FnOnce(&str) -> bool,
    message: &str,
) -> Result<ProjectName, Box<Response>> {
    // A name that is no project name is an unknown project, refused like any other.
    let key = match ProjectName::new(project) {
        Ok(name) => store
            .get_project(&name)
            .and_then(|_| store.project_key(&name, kind))
            .map(|key| (name, key)),
        Err(_) => Err(StoreError::ProjectNotFound(project.to_owned())),
    };
    let refusal = match key {
        Ok((name, Some(key))) if proof_holds(&key) => return Ok(name),
        Ok((_, Some(_))) => Refusal::WrongProof,
        Ok((_, None)) => Refusal::NoKey,
        Err(StoreError::ProjectNotFound(_)) => Refusal::UnknownProject,
        Err(e) => {
            return Err(Box::new(answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": e.to_string() }),
            )));
        }
    };
    tracing::warn!(reason = refusal.reason(), "webhook call refused");
    Err(Box::new(answer(
        StatusCode::UNAUTHORIZED,
        json!({ "error": message }),
    )))
}

/// Queues a build and answers 202 with its number within the project.
fn queue(state: &Webhooks, req: TriggerRequest) -> Response {
    queued(state.scheduler.trigger(req))
}

/// The answer to a trigger: 202 with the build's number within the project, or the error.
fn queued(result: Result<opus_core::model::Build, opus_core::CoreError>) -> Response {
    match result {
        Ok(build) => {
            let mut body =
                json!({ "build": build.number, "project": build.project, "ref": build.git_ref });
            if let Some(pr) = &build.pull_request {
                body["pull_request"] = json!(pr.number);
                body["environment"] = json!(pr.environment());
            }
            answer(StatusCode::ACCEPTED, body)
        }
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
    State(state): State<Webhooks>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signed = |secret: &str| {
        header(&headers, "x-hub-signature-256")
            .is_some_and(|sig| signature::verify(secret.as_bytes(), &body, sig))
    };
    let project = match check(
        &state.store,
        &project,
        KeyKind::GithubSecret,
        signed,
        "missing or wrong X-Hub-Signature-256 (check the secret from `opus hook github`)",
    ) {
        Ok(name) => name,
        Err(refused) => return *refused,
    };
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
    remember_installation(&state, &project, &payload);
    match event.as_str() {
        "ping" => return answer(StatusCode::OK, json!({ "ok": true, "zen": payload["zen"] })),
        "push" => {}
        "pull_request" => return pull_request(&state, &project, &delivery, &payload).await,
        "release" => return releases::release(&state, &project, &delivery, &payload),
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
    let push = PushEvent {
        git_ref: git_ref.to_owned(),
        after: payload["after"]
            .as_str()
            .or_else(|| payload["head_commit"]["id"].as_str())
            .map(str::to_owned),
        deleted: payload["deleted"].as_bool() == Some(true),
        repository: payload["repository"]["full_name"]
            .as_str()
            .map(str::to_owned),
    };
    on_push(&state, &project, Forge::Github, &delivery, push).await
}

/// A push (from any forge): builds the pushed branch, or the tag as its version; a deleted
/// branch's preview is removed. Only GitHub's builds carry the commit their statuses go on.
async fn on_push(
    state: &Webhooks,
    project: &ProjectName,
    forge: Forge,
    delivery: &str,
    push: PushEvent,
) -> Response {
    if let Err(answered) = first_delivery(state, project, forge, delivery) {
        return *answered;
    }
    if push.deleted {
        return branch_deleted(state, project, &push.git_ref).await;
    }
    let git_ref = push.git_ref.as_str();
    let (build_ref, version) = match git_ref.strip_prefix("refs/tags/") {
        Some(tag) => (
            push.after.clone().unwrap_or_else(|| tag.to_owned()),
            Some(tag.to_owned()),
        ),
        None => (
            git_ref
                .strip_prefix("refs/heads/")
                .unwrap_or(git_ref)
                .to_owned(),
            None,
        ),
    };
    let origin = GithubOrigin {
        commit: push
            .repository
            .zip(push.after)
            .filter(|_| forge.reports_status())
            .map(|(repository, sha)| GithubCommit { repository, sha }),
        pull_request: None,
    };
    let response = queued(state.scheduler.trigger_from_github(
        TriggerRequest {
            project: project.clone(),
            git_ref: build_ref,
            version,
            store: StoreName::default_store(),
            trigger: forge.trigger(),
        },
        origin,
    ));
    if !response.status().is_success() {
        // Let the forge's redelivery try again.
        forget_delivery(state, project, forge, delivery);
    }
    response
}

/// The key a forge's delivery id is kept under: GitHub's as it is (as before other forges),
/// the others' behind their forge's name, so that two forges' ids never meet.
fn delivery_key(forge: Forge, delivery: &str) -> String {
    match forge {
        Forge::Github => delivery.to_owned(),
        other => format!("{other}:{delivery}"),
    }
}

/// A signed delivery sent by a GitHub App names its installation (`installation.id`): the
/// project's calls and clones then go with that installation's token.
fn remember_installation(state: &Webhooks, project: &ProjectName, payload: &Value) {
    if let Some(id) = payload["installation"]["id"].as_u64()
        && let Err(e) = state.store.set_github_installation(project, id)
    {
        tracing::warn!(error = %e, installation = id, "cannot record the project's GitHub App installation");
    }
}

/// Records a forge's delivery id (none: nothing to record); a repeated one is answered 200 and
/// acted on no more.
fn first_delivery(
    state: &Webhooks,
    project: &ProjectName,
    forge: Forge,
    delivery: &str,
) -> Result<(), Box<Response>> {
    if delivery.is_empty() {
        return Ok(());
    }
    match state
        .store
        .record_github_delivery(project, &delivery_key(forge, delivery))
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(Box::new(answer(
            StatusCode::OK,
            json!({ "ignored": match forge {
                Forge::Github => "a repeated X-GitHub-Delivery".to_owned(),
                other => format!("a repeated delivery {delivery} from {other}"),
            } }),
        ))),
        Err(e) => Err(Box::new(answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }),
        ))),
    }
}

/// A GitHub `pull_request` delivery: read, then acted on as every forge's.
async fn pull_request(
    state: &Webhooks,
    project: &ProjectName,
    delivery: &str,
    payload: &Value,
) -> Response {
    match PullRequestEvent::from_github(payload) {
        Ok(event) => on_pull_request(state, project, Forge::Github, delivery, event).await,
        Err(e) => answer(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() })),
    }
}

/// A pull request event (from any forge): builds the head commit into `pr-<number>`, removes
/// that preview when the pull request is closed, or says why the action is ignored. Only
/// GitHub's builds carry the commit their statuses go on.
async fn on_pull_request(
    state: &Webhooks,
    project: &ProjectName,
    forge: Forge,
    delivery: &str,
    event: PullRequestEvent,
) -> Response {
    let response = match event {
        PullRequestEvent::Ignored(why) => {
            tracing::info!(why = %why, %forge, "pull request action ignored");
            return answer(StatusCode::OK, json!({ "ignored": why }));
        }
        PullRequestEvent::Build(pr) => {
            if let Err(answered) = first_delivery(state, project, forge, delivery) {
                return *answered;
            }
            tracing::info!(number = pr.number, action = %pr.action, head = %pr.head_sha, %forge, "pull request build");
            let req = TriggerRequest {
                project: project.clone(),
                git_ref: pr.head_sha.clone(),
                version: None,
                store: StoreName::default_store(),
                trigger: forge.trigger(),
            };
            let origin = GithubOrigin {
                commit: forge.reports_status().then(|| GithubCommit {
                    repository: pr.base_repo.clone(),
                    sha: pr.head_sha.clone(),
                }),
                pull_request: Some(pr),
            };
            queued(state.scheduler.trigger_from_github(req, origin))
        }
        PullRequestEvent::Closed { number } => {
            if let Err(answered) = first_delivery(state, project, forge, delivery) {
                return *answered;
            }
            pull_request_closed(state, project, number).await
        }
    };
    if !response.status().is_success() {
        // Let the forge's redelivery try again.
        forget_delivery(state, project, forge, delivery);
    }
    response
}

/// Forgets a delivery id whose action failed, so that the forge's redelivery is acted on.
fn forget_delivery(state: &Webhooks, project: &ProjectName, forge: Forge, delivery: &str) {
    if !delivery.is_empty() {
        let _ = state
            .store
            .forget_github_delivery(project, &delivery_key(forge, delivery));
    }
}

/// A closed pull request (merged or not): its builds still waiting or running are cancelled and
/// its preview `pr-<number>` is removed; when it never had one, that is said.
async fn pull_request_closed(state: &Webhooks, project: &ProjectName, number: u64) -> Response {
    let cancelled = match state.scheduler.cancel_pull_request(
        project,
        number,
        &format!("pull request #{number} was closed"),
    ) {
        Ok(n) => n,
        Err(e) => {
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": e.to_string() }),
            );
        }
    };
    let name = opus_core::forge::preview_environment(number);
    let env = match EnvName::new(name.clone()) {
        Ok(env) => env,
        Err(e) => {
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": e.to_string() }),
            );
        }
    };
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
        tracing::info!(number, "pull request closed: it had no preview");
        return answer(
            StatusCode::OK,
            json!({
                "closed": number,
                "cancelled_builds": cancelled,
                "nothing_to_do": format!("pull request #{number} has no preview {name} to remove"),
            }),
        );
    }
    match state.deployer.remove_environment(project, &env).await {
        Ok(()) => {
            tracing::info!(number, env = %env, "pull request closed: preview removed");
            answer(
                StatusCode::OK,
                json!({ "closed": number, "cancelled_builds": cancelled, "removed_preview": name }),
            )
        }
        Err(e) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }),
        ),
    }
}

/// A deleted branch: its preview environment (named by the branch slug) stops being served and
/// is removed. Environments that are not previews are never touched; a deleted tag changes
/// nothing.
async fn branch_deleted(state: &Webhooks, project: &ProjectName, git_ref: &str) -> Response {
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        tracing::info!(git_ref, "ref deleted: nothing to remove");
        return answer(StatusCode::OK, json!({ "deleted": git_ref }));
    };
    // A slug is always an environment name; a name that is none has no environment either.
    let Ok(env) = EnvName::new(branch_slug(branch)) else {
        tracing::info!(branch, "branch deleted: it has no preview");
        return answer(StatusCode::OK, json!({ "deleted": git_ref }));
    };
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
            tracing::info!(branch, env = %env, "branch deleted: preview removed");
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
    State(state): State<Webhooks>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let given = header(&headers, "authorization").and_then(bearer_token);
    let project = match check(
        &state.store,
        &project,
        KeyKind::TriggerToken,
        |token| given.is_some_and(|g| same_token(g, token)),
        "missing or wrong bearer token (see `opus hook trigger`)",
    ) {
        Ok(name) => name,
        Err(refused) => return *refused,
    };
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
            store: StoreName::default_store(),
            trigger: Trigger::Webhook,
        },
    )
}
