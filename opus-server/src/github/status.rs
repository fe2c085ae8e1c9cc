//! Which commit status a build event makes: `pending` when queued, then `success`, `failure` or
//! `error` with GitHub's one-line description ("built 1.0.3 in 12 s", "step 2 failed: exit 1")
//! and a link to the build's page.

use std::time::SystemTime;

use opus_core::forge::{GithubCommit, StatusDelivery};
use opus_core::hook::DeliveryState;
use opus_core::model::{Build, BuildState, Event, EventKind};

use crate::config::PublicUrl;

/// GitHub's limit on a status's description.
const DESCRIPTION_MAX: usize = 140;

/// What a status says, before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Status {
    /// Where it goes.
    pub commit: GithubCommit,
    /// `pending`, `success`, `failure` or `error`.
    pub state: &'static str,
    /// One line.
    pub description: String,
    /// The build's page.
    pub target_url: Option<String>,
}

impl Status {
    /// A fresh outbox record of this status for event `seq` of build `number` of `project`.
    pub(super) fn record(self, seq: u64, project: &str, number: u64) -> StatusDelivery {
        let now = SystemTime::now();
        StatusDelivery {
            event_seq: seq,
            project: project.to_owned(),
            build: number,
            commit: self.commit,
            state: self.state.to_owned(),
            description: self.description,
            target_url: self.target_url,
            delivery: DeliveryState::Pending,
            attempts: 0,
            last_status: 0,
            last_error: String::new(),
            next_attempt_at: None,
            created_at: now,
            updated_at: now,
            deployment: None,
        }
    }
}

/// The state of a build event, when it is one.
pub(super) fn build_state(event: &Event) -> Option<BuildState> {
    match event.kind {
        EventKind::Build(state) => Some(state),
        _ => None,
    }
}

/// The status `event` (a state change of `build`) makes on GitHub: none for a build GitHub did
/// not trigger, and none for `running` (the commit is pending since the build was queued).
pub(super) fn status_for(
    event: &Event,
    build: &Build,
    public_url: Option<&PublicUrl>,
) -> Option<Status> {
    let commit = build.github.clone()?;
    let state = build_state(event)?;
    let reason = event.payload["reason"].as_str().unwrap_or_default();
    let (state, description) = match state {
        BuildState::Queued => ("pending", "queued".to_owned()),
        BuildState::Running => return None,
        BuildState::Succeeded => {
            let version = event.payload["version"].as_str().unwrap_or_default();
            let took = build
                .started_at
                .zip(build.finished_at)
                .and_then(|(s, f)| f.duration_since(s).ok())
                .map(|d| format!(" in {} s", d.as_secs()))
                .unwrap_or_default();
            ("success", format!("built {version}{took}"))
        }
        BuildState::Failed => ("failure", one_line(reason, "failed")),
        BuildState::Cancelled => ("error", one_line(reason, "cancelled")),
        BuildState::AwaitingApproval => ("pending", one_line(reason, "awaiting approval")),
    };
    Some(Status {
        commit,
        state,
        description,
        target_url: public_url.map(|u| u.build_page(build.project.as_str(), build.number)),
    })
}

/// The first line of `reason` (or `fallback`), cut to GitHub's 140 characters.
fn one_line(reason: &str, fallback: &str) -> String {
    let line = reason.lines().next().unwrap_or_default().trim();
    let line = if line.is_empty() { fallback } else { line };
    if line.chars().count() <= DESCRIPTION_MAX {
        return line.to_owned();
    }
    let cut: String = line.chars().take(DESCRIPTION_MAX - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use opus_core::model::{ProjectName, StoreName, Trigger};
    use serde_json::json;

    fn build(github: bool) -> Build {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        Build {
            id: 9,
            project: ProjectName::new("web").expect("name"),
            state: BuildState::Succeeded,
            git_ref: "main".into(),
            commit: String::new(),
            version: None,
            version_pinned: false,
            reason: String::new(),
            trigger: Trigger::Github,
            store: StoreName::default_store(),
            branch: None,
            is_tag: false,
            queued_at: start,
            started_at: Some(start),
            finished_at: Some(start + Duration::from_millis(12_400)),
            number: 4,
            pull_request: None,
            github: github.then(|| GithubCommit {
                repository: "acme/web".into(),
                sha: "c".repeat(40),
            }),
        }
    }

    fn event(state: BuildState, payload: serde_json::Value) -> Event {
        Event {
            seq: 1,
            time: SystemTime::now(),
            kind: EventKind::Build(state),
            project: "web".into(),
            payload,
        }
    }

    #[test]
    fn queued_is_pending_and_success_says_the_version_and_time() {
        let url = PublicUrl::parse("https://opus.example.com").expect("url");
        let b = build(true);
        let queued =
            status_for(&event(BuildState::Queued, json!({})), &b, Some(&url)).expect("a status");
        assert_eq!(
            (queued.state, queued.description.as_str()),
            ("pending", "queued")
        );
        assert_eq!(
            queued.target_url.as_deref(),
            Some("https://opus.example.com/projects/web/builds/4")
        );
        let done = status_for(
            &event(BuildState::Succeeded, json!({ "version": "1.0.3" })),
            &b,
            None,
        )
        .expect("a status");
        assert_eq!(
            (done.state, done.description.as_str()),
            ("success", "built 1.0.3 in 12 s")
        );
        assert_eq!(done.target_url, None);
        assert!(status_for(&event(BuildState::Running, json!({})), &b, None).is_none());
    }

    #[test]
    fn failures_say_their_first_line_within_githubs_limit() {
        let b = build(true);
        let failed = status_for(
            &event(
                BuildState::Failed,
                json!({ "reason": "step 2 failed: exit 1\nmore detail" }),
            ),
            &b,
            None,
        )
        .expect("a status");
        assert_eq!(
            (failed.state, failed.description.as_str()),
            ("failure", "step 2 failed: exit 1")
        );
        let long = "x".repeat(300);
        let cancelled = status_for(
            &event(BuildState::Cancelled, json!({ "reason": long })),
            &b,
            None,
        )
        .expect("a status");
        assert_eq!(cancelled.state, "error");
        assert_eq!(cancelled.description.chars().count(), 140);
    }

    #[test]
    fn builds_github_did_not_trigger_send_nothing() {
        assert!(status_for(&event(BuildState::Queued, json!({})), &build(false), None).is_none());
    }
}
