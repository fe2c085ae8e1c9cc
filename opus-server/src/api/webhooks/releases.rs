//! GitHub `release` deliveries: a published release builds its tag (`release.tag_name`, version =
//! the tag) when the project's opus.yml says `on: { release: true }`, as the last build of its
//! default branch read it. Every other action, and a project without that trigger, is answered
//! 200 saying why nothing was built.

use axum::http::StatusCode;
use axum::response::Response;
use opus_core::forge::Forge;
use opus_core::model::{ProjectName, StoreName, Trigger};
use serde_json::{Value, json};

use super::{Webhooks, answer, first_delivery, queued};
use crate::scheduler::{GithubOrigin, TriggerRequest};

/// A `release` delivery for `project`.
pub(super) fn release(
    state: &Webhooks,
    project: &ProjectName,
    delivery: &str,
    payload: &Value,
) -> Response {
    let Some(action) = payload["action"].as_str() else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({ "error": "a release event without \"action\"" }),
        );
    };
    if action != "published" {
        return answer(
            StatusCode::OK,
            json!({ "ignored": format!("release action {action:?}: only a published release builds its tag") }),
        );
    }
    let Some(tag) = payload["release"]["tag_name"]
        .as_str()
        .filter(|t| !t.is_empty())
    else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({ "error": "a published release without \"release.tag_name\"" }),
        );
    };
    match state.store.get_triggers(project) {
        Ok(Some(triggers)) if triggers.spec.release => {}
        Ok(_) => {
            let branch = state
                .store
                .get_project(project)
                .map(|p| p.branch)
                .unwrap_or_default();
            return answer(
                StatusCode::OK,
                json!({ "ignored": format!("the opus.yml of {project}'s last build of {branch} has no `on: {{ release: true }}`, so releases do not build") }),
            );
        }
        Err(e) => {
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": e.to_string() }),
            );
        }
    }
    if let Err(answered) = first_delivery(state, project, Forge::Github, delivery) {
        return *answered;
    }
    tracing::info!(tag, "published release: building its tag");
    let response = queued(state.scheduler.trigger_from_github(
        TriggerRequest {
            project: project.clone(),
            git_ref: format!("refs/tags/{tag}"),
            version: None,
            store: StoreName::default_store(),
            trigger: Trigger::Release,
        },
        GithubOrigin::default(),
    ));
    if !response.status().is_success() && !delivery.is_empty() {
        // Let GitHub's redelivery try again.
        let _ = state.store.forget_github_delivery(project, delivery);
    }
    response
}
