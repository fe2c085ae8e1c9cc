//! GitHub's `pull_request` event (and Gitea's, which has GitHub's shape): which actions build the head commit into the preview
//! `pr-<number>`, which remove that preview, and which are ignored (with the reason in the
//! answer). Whether a pull request may build at all is decided later, by the base branch's
//! opus.yml, when its build starts (`build::pull_request`).

use opus_core::forge::PullRequest;
use serde_json::Value;

use super::forge_events::{MalformedPayload, PullRequestEvent, is_commit_id};

/// The actions that build the head commit.
const BUILDING: [&str; 5] = [
    "opened",
    "synchronize",
    "reopened",
    "ready_for_review",
    "labeled",
];

impl PullRequestEvent {
    /// Reads a `pull_request` payload as GitHub documents it (`action`, `number`,
    /// `pull_request.head.sha`, `pull_request.head.repo.full_name`, `pull_request.base.ref`...).
    pub(super) fn from_github(payload: &Value) -> Result<PullRequestEvent, MalformedPayload> {
        let action = payload["action"]
            .as_str()
            .ok_or(MalformedPayload::pull_request("\"action\""))?;
        let number = payload["number"]
            .as_u64()
            .or_else(|| payload["pull_request"]["number"].as_u64())
            .ok_or(MalformedPayload::pull_request("\"number\""))?;
        if action == "closed" {
            return Ok(PullRequestEvent::Closed { number });
        }
        if !BUILDING.contains(&action) {
            return Ok(PullRequestEvent::Ignored(format!(
                "Opus does not act on pull_request action {action:?}: it builds on {} and removes the preview on closed",
                BUILDING.join(", ")
            )));
        }
        let pr = &payload["pull_request"];
        let text = |v: &Value, field: &'static str| {
            v.as_str()
                .map(str::to_owned)
                .ok_or(MalformedPayload::pull_request(field))
        };
        let head_sha = text(&pr["head"]["sha"], "\"pull_request.head.sha\"")?;
        if !is_commit_id(&head_sha) {
            return Err(MalformedPayload::pull_request(
                "a commit id in \"pull_request.head.sha\"",
            ));
        }
        let base_repo = text(
            &pr["base"]["repo"]["full_name"],
            "\"pull_request.base.repo.full_name\"",
        )
        .or_else(|_| {
            text(
                &payload["repository"]["full_name"],
                "\"repository.full_name\"",
            )
        })?;
        let labels = pr["labels"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .filter_map(|l| l["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(PullRequestEvent::Build(PullRequest {
            number,
            action: action.to_owned(),
            head_sha,
            head_ref: pr["head"]["ref"].as_str().unwrap_or_default().to_owned(),
            // A fork that was deleted has `"repo": null`: no repository, so never the base.
            head_repo: pr["head"]["repo"]["full_name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            base_repo,
            base_ref: text(&pr["base"]["ref"], "\"pull_request.base.ref\"")?,
            draft: pr["draft"].as_bool().unwrap_or(false),
            labels,
            added_label: payload["label"]["name"].as_str().map(str::to_owned),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(action: &str) -> Value {
        json!({
            "action": action,
            "number": 12,
            "pull_request": {
                "number": 12,
                "draft": false,
                "labels": [{ "name": "preview" }],
                "head": {
                    "sha": "0123456789abcdef0123456789abcdef01234567",
                    "ref": "feature",
                    "repo": { "full_name": "mallory/web" }
                },
                "base": { "ref": "main", "repo": { "full_name": "acme/web" } }
            },
            "repository": { "full_name": "acme/web" },
            "label": { "name": "preview" }
        })
    }

    #[test]
    fn building_actions_read_the_documented_fields() {
        let PullRequestEvent::Build(pr) =
            PullRequestEvent::from_github(&payload("synchronize")).expect("parsed")
        else {
            panic!("a build");
        };
        assert_eq!(pr.number, 12);
        assert_eq!(pr.head_sha, "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(
            (pr.head_repo.as_str(), pr.base_repo.as_str()),
            ("mallory/web", "acme/web")
        );
        assert!(pr.is_fork());
        assert_eq!(pr.base_ref, "main");
        assert_eq!(pr.labels, ["preview"]);
        assert_eq!(pr.added_label.as_deref(), Some("preview"));
    }

    #[test]
    fn closed_and_unknown_actions() {
        assert_eq!(
            PullRequestEvent::from_github(&payload("closed")).expect("parsed"),
            PullRequestEvent::Closed { number: 12 }
        );
        let PullRequestEvent::Ignored(why) =
            PullRequestEvent::from_github(&payload("assigned")).expect("parsed")
        else {
            panic!("ignored");
        };
        assert!(why.contains("\"assigned\""), "{why}");
    }

    #[test]
    fn a_deleted_fork_has_no_head_repository_and_missing_fields_are_named() {
        let mut p = payload("opened");
        p["pull_request"]["head"]["repo"] = Value::Null;
        let PullRequestEvent::Build(pr) = PullRequestEvent::from_github(&p).expect("parsed") else {
            panic!("a build");
        };
        assert!(pr.is_fork());
        p["pull_request"]["head"]["sha"] = json!("not a sha");
        let err = PullRequestEvent::from_github(&p)
            .expect_err("bad sha")
            .to_string();
        assert!(err.contains("pull_request.head.sha"), "{err}");
        let err = PullRequestEvent::from_github(&json!({ "action": "opened" }))
            .expect_err("no number")
            .to_string();
        assert!(err.contains("number"), "{err}");
    }
}
