//! GitLab's webhooks at `POST /hooks/gitlab/<project>`: push, tag push and merge request hooks,
//! authenticated by `X-Gitlab-Token` (GitLab's "Secret token": the project's webhook secret from
//! `opus hook gitlab`, compared in constant time), read from GitLab's documented payloads into
//! the forge-neutral events the GitHub webhook makes too.
//!
//! A merge request builds on `open`, `reopen`, and on `update` when it brings new commits
//! (`object_attributes.oldrev`), leaves draft, or gains a label; `close` and `merge` remove its
//! preview. It is a fork when `source_project_id` is not `target_project_id`. A retried hook
//! carries the same `Idempotency-Key` (else `X-Gitlab-Event-UUID`), acted on once.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use opus_core::forge::{Forge, PullRequest};
use opus_core::store::KeyKind;
use serde_json::{Value, json};
use tracing::instrument;

use super::forge_events::{MalformedPayload, NO_COMMIT, PullRequestEvent, PushEvent, is_commit_id};
use super::{Webhooks, answer, check, header, on_pull_request, on_push};
use crate::api::auth::same_token;

/// `POST /hooks/gitlab/<project>`.
#[instrument(skip_all, fields(project = %project, event, delivery))]
pub(super) async fn gitlab(
    State(state): State<Webhooks>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let given = header(&headers, "x-gitlab-token");
    let project = match check(
        &state.store,
        &project,
        KeyKind::GithubSecret,
        |secret| given.is_some_and(|g| same_token(g, secret)),
        "missing or wrong X-Gitlab-Token (set the webhook's secret token to the secret from `opus hook gitlab`)",
    ) {
        Ok(name) => name,
        Err(refused) => return *refused,
    };
    let delivery = header(&headers, "idempotency-key")
        .or_else(|| header(&headers, "x-gitlab-event-uuid"))
        .unwrap_or("")
        .to_owned();
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({ "error": "the body is not a JSON object" }),
            );
        }
    };
    let kind = payload["object_kind"].as_str().unwrap_or_default();
    tracing::Span::current().record("event", kind);
    tracing::Span::current().record("delivery", delivery.as_str());
    match kind {
        "push" | "tag_push" => match push(&payload) {
            Ok(push) => on_push(&state, &project, Forge::Gitlab, &delivery, push).await,
            Err(e) => answer(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() })),
        },
        "merge_request" => match merge_request(&payload) {
            Ok(event) => on_pull_request(&state, &project, Forge::Gitlab, &delivery, event).await,
            Err(e) => answer(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() })),
        },
        other => answer(
            StatusCode::OK,
            json!({ "ignored": format!("Opus does not handle GitLab {other:?} hooks: it acts on push, tag_push and merge_request") }),
        ),
    }
}

/// Reads a push or tag push hook (`ref`, `after`, `checkout_sha`,
/// `project.path_with_namespace`); `after` all zeros is a deleted ref.
fn push(payload: &Value) -> Result<PushEvent, MalformedPayload> {
    let git_ref = payload["ref"].as_str().ok_or(MalformedPayload {
        event: "push",
        field: "\"ref\"",
    })?;
    let after = payload["after"].as_str().filter(|sha| *sha != NO_COMMIT);
    let deleted = payload["after"].as_str() == Some(NO_COMMIT);
    let after = payload["checkout_sha"]
        .as_str()
        .filter(|_| !deleted)
        .or(after)
        .map(str::to_owned);
    Ok(PushEvent {
        git_ref: git_ref.to_owned(),
        after,
        deleted,
        repository: payload["project"]["path_with_namespace"]
            .as_str()
            .map(str::to_owned),
    })
}

/// A merge request hook's missing field.
fn missing(field: &'static str) -> MalformedPayload {
    MalformedPayload {
        event: "merge_request",
        field,
    }
}

/// Reads a merge request hook as GitLab documents it (`object_attributes.action`, `.iid`,
/// `.last_commit.id`, `.source_branch`, `.target_branch`, `.source_project_id`,
/// `.target_project_id`, `.draft`, `oldrev`; `labels`, `changes`), with its action named as
/// GitHub's are (`opened`, `synchronize`...), which the pull request rules of opus.yml speak.
fn merge_request(payload: &Value) -> Result<PullRequestEvent, MalformedPayload> {
    let attrs = &payload["object_attributes"];
    let action = attrs["action"]
        .as_str()
        .ok_or(missing("\"object_attributes.action\""))?;
    let number = attrs["iid"]
        .as_u64()
        .ok_or(missing("\"object_attributes.iid\""))?;
    let labels: Vec<String> = payload["labels"]
        .as_array()
        .or_else(|| attrs["labels"].as_array())
        .map(|ls| {
            ls.iter()
                .filter_map(|l| l["title"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut added_label = None;
    let action = match action {
        "open" => "opened",
        "reopen" => "reopened",
        "close" | "merge" => return Ok(PullRequestEvent::Closed { number }),
        "update" if attrs["oldrev"].as_str().is_some_and(is_commit_id) => "synchronize",
        "update" if left_draft(&payload["changes"]) => "ready_for_review",
        "update" => match label_added(&payload["changes"]) {
            Some(label) => {
                added_label = Some(label);
                "labeled"
            }
            None => {
                return Ok(PullRequestEvent::Ignored(
                    "a merge request update with no new commits (no oldrev), no label added and still a draft or never one: nothing to build".into(),
                ));
            }
        },
        other => {
            return Ok(PullRequestEvent::Ignored(format!(
                "Opus does not act on merge request action {other:?}: it builds on open, reopen and update with new commits, and removes the preview on close and merge"
            )));
        }
    };
    let head_sha = attrs["last_commit"]["id"]
        .as_str()
        .ok_or(missing("\"object_attributes.last_commit.id\""))?;
    if !is_commit_id(head_sha) {
        return Err(missing(
            "a commit id in \"object_attributes.last_commit.id\"",
        ));
    }
    let source = attrs["source_project_id"]
        .as_u64()
        .ok_or(missing("\"object_attributes.source_project_id\""))?;
    let target = attrs["target_project_id"]
        .as_u64()
        .ok_or(missing("\"object_attributes.target_project_id\""))?;
    // The fork test is the projects' ids; their paths, when given, are what the log shows.
    let name = |side: &str, id: u64| {
        attrs[side]["path_with_namespace"]
            .as_str()
            .map_or_else(|| format!("project {id}"), str::to_owned)
    };
    let base_repo = name("target", target);
    let head_repo = if source == target {
        base_repo.clone()
    } else {
        let head = name("source", source);
        // Two projects never share a path; should a payload say so, the ids still decide.
        if head == base_repo {
            format!("project {source}")
        } else {
            head
        }
    };
    let text = |field: &str, named: &'static str| {
        attrs[field]
            .as_str()
            .map(str::to_owned)
            .ok_or(missing(named))
    };
    Ok(PullRequestEvent::Build(PullRequest {
        number,
        action: action.to_owned(),
        head_sha: head_sha.to_owned(),
        head_ref: text("source_branch", "\"object_attributes.source_branch\"")?,
        head_repo,
        base_repo,
        base_ref: text("target_branch", "\"object_attributes.target_branch\"")?,
        draft: attrs["draft"]
            .as_bool()
            .or_else(|| attrs["work_in_progress"].as_bool())
            .unwrap_or(false),
        labels,
        added_label,
    }))
}

/// Whether `changes` says the merge request stopped being a draft.
fn left_draft(changes: &Value) -> bool {
    changes["draft"]["previous"].as_bool() == Some(true)
        && changes["draft"]["current"].as_bool() == Some(false)
}

/// The first label in `changes.labels.current` that was not in `.previous`.
fn label_added(changes: &Value) -> Option<String> {
    let titles = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|ls| {
                ls.iter()
                    .filter_map(|l| l["title"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = titles(&changes["labels"]["previous"]);
    titles(&changes["labels"]["current"])
        .into_iter()
        .find(|l| !before.contains(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7";

    /// A merge request hook in GitLab's documented shape.
    fn hook(action: &str, source: u64) -> Value {
        json!({
            "object_kind": "merge_request",
            "event_type": "merge_request",
            "project": { "id": 1, "path_with_namespace": "acme/web" },
            "object_attributes": {
                "iid": 12,
                "action": action,
                "source_branch": "feature",
                "target_branch": "main",
                "source_project_id": source,
                "target_project_id": 1,
                "source": { "path_with_namespace": if source == 1 { "acme/web" } else { "mallory/web" } },
                "target": { "path_with_namespace": "acme/web" },
                "draft": false,
                "last_commit": { "id": SHA },
                "oldrev": "0123456789abcdef0123456789abcdef01234567"
            },
            "labels": [{ "title": "preview" }],
            "changes": {}
        })
    }

    #[test]
    fn open_builds_the_last_commit_and_forks_are_other_projects() {
        let PullRequestEvent::Build(pr) = merge_request(&hook("open", 1)).expect("parsed") else {
            panic!("a build");
        };
        assert_eq!(
            (pr.number, pr.action.as_str(), pr.head_sha.as_str()),
            (12, "opened", SHA)
        );
        assert_eq!(
            (pr.head_ref.as_str(), pr.base_ref.as_str()),
            ("feature", "main")
        );
        assert!(!pr.is_fork());
        assert_eq!(pr.labels, ["preview"]);
        let PullRequestEvent::Build(fork) = merge_request(&hook("reopen", 9)).expect("parsed")
        else {
            panic!("a build");
        };
        assert!(fork.is_fork());
        assert_eq!(fork.head_repo, "mallory/web");
        assert_eq!(fork.action, "reopened");
    }

    #[test]
    fn updates_build_only_with_new_commits_a_label_or_leaving_draft() {
        let PullRequestEvent::Build(pr) = merge_request(&hook("update", 1)).expect("parsed") else {
            panic!("a build");
        };
        assert_eq!(pr.action, "synchronize");
        let mut h = hook("update", 1);
        h["object_attributes"]
            .as_object_mut()
            .expect("object")
            .remove("oldrev");
        assert!(matches!(
            merge_request(&h).expect("parsed"),
            PullRequestEvent::Ignored(why) if why.contains("no new commits")
        ));
        h["changes"] = json!({ "labels": { "previous": [], "current": [{ "title": "preview" }] } });
        let PullRequestEvent::Build(pr) = merge_request(&h).expect("parsed") else {
            panic!("a build");
        };
        assert_eq!(
            (pr.action.as_str(), pr.added_label.as_deref()),
            ("labeled", Some("preview"))
        );
        h["changes"] = json!({ "draft": { "previous": true, "current": false } });
        let PullRequestEvent::Build(pr) = merge_request(&h).expect("parsed") else {
            panic!("a build");
        };
        assert_eq!(pr.action, "ready_for_review");
    }

    #[test]
    fn close_and_merge_remove_other_actions_are_ignored_bad_fields_named() {
        for action in ["close", "merge"] {
            assert_eq!(
                merge_request(&hook(action, 1)).expect("parsed"),
                PullRequestEvent::Closed { number: 12 }
            );
        }
        assert!(matches!(
            merge_request(&hook("approved", 1)).expect("parsed"),
            PullRequestEvent::Ignored(why) if why.contains("\"approved\"")
        ));
        let mut h = hook("open", 1);
        h["object_attributes"]["last_commit"]["id"] = json!("nope");
        let err = merge_request(&h).expect_err("bad sha").to_string();
        assert!(err.contains("last_commit.id"), "{err}");
        let err = merge_request(&json!({ "object_attributes": { "action": "open" } }))
            .expect_err("no iid")
            .to_string();
        assert!(err.contains("iid"), "{err}");
    }

    #[test]
    fn pushes_and_deleted_refs() {
        let p = push(&json!({
            "object_kind": "push",
            "ref": "refs/heads/main",
            "before": NO_COMMIT,
            "after": SHA,
            "checkout_sha": SHA,
            "project": { "path_with_namespace": "acme/web" }
        }))
        .expect("parsed");
        assert_eq!(
            (p.git_ref.as_str(), p.after.as_deref(), p.deleted),
            ("refs/heads/main", Some(SHA), false)
        );
        assert_eq!(p.repository.as_deref(), Some("acme/web"));
        let gone = push(&json!({
            "object_kind": "push",
            "ref": "refs/heads/feature",
            "before": SHA,
            "after": NO_COMMIT,
            "checkout_sha": null
        }))
        .expect("parsed");
        assert!(gone.deleted);
        assert_eq!(gone.after, None);
        assert!(push(&json!({ "object_kind": "push" })).is_err());
    }
}
