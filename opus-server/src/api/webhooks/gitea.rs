//! Gitea's and Forgejo's webhooks at `POST /hooks/gitea/<project>`: `push`, `delete` and
//! `pull_request`, signed with the project's webhook secret (HMAC-SHA256 of the body, bare hex in
//! `X-Gitea-Signature`, or `X-Forgejo-Signature`), read into the forge-neutral events the GitHub
//! webhook makes too. Their payloads have GitHub's shape (`number`, `action`,
//! `pull_request.head.sha`...), so GitHub's reader reads them once Gitea's action names
//! (`synchronized`) are GitHub's (`synchronize`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use opus_core::forge::Forge;
use opus_core::store::KeyKind;
use serde_json::{Value, json};
use tracing::instrument;

use super::forge_events::{MalformedPayload, PullRequestEvent, PushEvent};
use super::{Webhooks, answer, check, header, on_pull_request, on_push};
use crate::hooks::signature;

/// Gitea's pull request actions that build the head commit, and the name GitHub gives each.
const BUILDING: [(&str, &str); 5] = [
    ("opened", "opened"),
    ("reopened", "reopened"),
    ("synchronized", "synchronize"),
    ("synchronize", "synchronize"),
    ("ready_for_review", "ready_for_review"),
];

/// A header of Gitea's, or of Forgejo's (`X-Forgejo-...`) when Gitea's is absent.
fn either<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    header(headers, &format!("x-gitea-{name}"))
        .or_else(|| header(headers, &format!("x-forgejo-{name}")))
}

/// `POST /hooks/gitea/<project>`.
#[instrument(skip_all, fields(project = %project, event, delivery))]
pub(super) async fn gitea(
    State(state): State<Webhooks>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let given = either(&headers, "signature");
    let project = match check(
        &state.store,
        &project,
        KeyKind::GithubSecret,
        |secret| given.is_some_and(|sig| signature::verify_hex(secret.as_bytes(), &body, sig)),
        "missing or wrong X-Gitea-Signature (set the webhook's secret to the secret from `opus hook gitea`)",
    ) {
        Ok(name) => name,
        Err(refused) => return *refused,
    };
    let event = either(&headers, "event").unwrap_or_default().to_owned();
    let delivery = either(&headers, "delivery").unwrap_or_default().to_owned();
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
    let read = match event.as_str() {
        "push" => push(&payload).map(Some),
        "delete" => Ok(deleted(&payload)),
        "pull_request" | "pull_request_sync" => {
            return match pull_request(&payload) {
                Ok(pr) => on_pull_request(&state, &project, Forge::Gitea, &delivery, pr).await,
                Err(e) => answer(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() })),
            };
        }
        other => {
            return answer(
                StatusCode::OK,
                json!({ "ignored": format!("Opus does not handle Gitea {other:?} events: it acts on push, delete and pull_request") }),
            );
        }
    };
    match read {
        Ok(Some(push)) => on_push(&state, &project, Forge::Gitea, &delivery, push).await,
        Ok(None) => answer(
            StatusCode::OK,
            json!({ "ignored": "a deleted tag: nothing to remove" }),
        ),
        Err(e) => answer(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() })),
    }
}

/// Reads a `push` (`ref`, `after`, `repository.full_name`, as GitHub's).
fn push(payload: &Value) -> Result<PushEvent, MalformedPayload> {
    let git_ref = payload["ref"].as_str().ok_or(MalformedPayload {
        event: "push",
        field: "\"ref\"",
    })?;
    let after = payload["after"].as_str();
    let deleted = after == Some(super::forge_events::NO_COMMIT);
    Ok(PushEvent {
        git_ref: git_ref.to_owned(),
        deleted,
        after: after.filter(|_| !deleted).map(str::to_owned),
        repository: payload["repository"]["full_name"]
            .as_str()
            .map(str::to_owned),
    })
}

/// Reads a `delete` (`ref` is the bare name, `ref_type` `branch` or `tag`): a deleted branch as a
/// push deleting it; none for a tag.
fn deleted(payload: &Value) -> Option<PushEvent> {
    if payload["ref_type"].as_str() != Some("branch") {
        return None;
    }
    let name = payload["ref"].as_str()?;
    Some(PushEvent {
        git_ref: format!("refs/heads/{}", name.trim_start_matches("refs/heads/")),
        after: None,
        deleted: true,
        repository: None,
    })
}

/// Reads a `pull_request` with Gitea's action names.
fn pull_request(payload: &Value) -> Result<PullRequestEvent, MalformedPayload> {
    let action = payload["action"]
        .as_str()
        .ok_or(MalformedPayload::pull_request("\"action\""))?;
    let github_action = match BUILDING.iter().find(|(gitea, _)| *gitea == action) {
        Some((_, github)) => *github,
        None if action == "closed" => "closed",
        None => {
            return Ok(PullRequestEvent::Ignored(format!(
                "Opus does not act on Gitea pull_request action {action:?}: it builds on opened, reopened and synchronized, and removes the preview on closed"
            )));
        }
    };
    let mut payload = payload.clone();
    payload["action"] = json!(github_action);
    PullRequestEvent::from_github(&payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn pr(action: &str) -> Value {
        json!({
            "action": action,
            "number": 5,
            "pull_request": {
                "number": 5,
                "head": { "sha": SHA, "ref": "feature", "repo": { "full_name": "acme/web" } },
                "base": { "ref": "main", "repo": { "full_name": "acme/web" } },
                "labels": [],
                "merged": action == "closed"
            },
            "repository": { "full_name": "acme/web" }
        })
    }

    #[test]
    fn gitea_actions_become_githubs() {
        let PullRequestEvent::Build(p) = pull_request(&pr("synchronized")).expect("parsed") else {
            panic!("a build");
        };
        assert_eq!(
            (p.action.as_str(), p.head_sha.as_str()),
            ("synchronize", SHA)
        );
        assert!(!p.is_fork());
        assert_eq!(
            pull_request(&pr("closed")).expect("parsed"),
            PullRequestEvent::Closed { number: 5 }
        );
        assert!(matches!(
            pull_request(&pr("label_updated")).expect("parsed"),
            PullRequestEvent::Ignored(why) if why.contains("\"label_updated\"")
        ));
        assert!(pull_request(&json!({ "number": 5 })).is_err());
    }

    #[test]
    fn pushes_and_deleted_branches() {
        let p = push(&json!({ "ref": "refs/heads/main", "after": SHA, "repository": { "full_name": "acme/web" } }))
            .expect("parsed");
        assert_eq!((p.after.as_deref(), p.deleted), (Some(SHA), false));
        let gone = deleted(&json!({ "ref": "feature", "ref_type": "branch" })).expect("a branch");
        assert_eq!(
            (gone.git_ref.as_str(), gone.deleted),
            ("refs/heads/feature", true)
        );
        assert_eq!(deleted(&json!({ "ref": "1.0", "ref_type": "tag" })), None);
        assert!(push(&json!({})).is_err());
        let zeros =
            push(&json!({ "ref": "refs/heads/x", "after": super::super::forge_events::NO_COMMIT }))
                .expect("parsed");
        assert!(zeros.deleted);
        // No `after` is no deletion: the branch builds at its head.
        let bare = push(&json!({ "ref": "refs/heads/x" })).expect("parsed");
        assert_eq!((bare.deleted, bare.after), (false, None));
    }
}
