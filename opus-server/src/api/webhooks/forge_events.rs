//! What a forge's delivery asks of Opus, whichever forge sent it: each forge's parser
//! (`pull_requests` for GitHub, `gitlab`, `gitea`) reads its own payload into these, and one
//! piece of code acts on them (builds, previews, their removal).

use opus_core::forge::PullRequest;

/// What a pull request (GitLab: merge request) delivery asks of Opus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PullRequestEvent {
    /// Build the head commit into the preview `pr-<number>` (opened, new commits, reopened,
    /// ready for review, a label added).
    Build(PullRequest),
    /// The pull request was closed (merged or not): its preview goes.
    Closed {
        /// The pull request's number (GitLab: the merge request's `iid`).
        number: u64,
    },
    /// An action Opus does not act on, and why.
    Ignored(String),
}

/// A push of a branch or tag (or its deletion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PushEvent {
    /// The full ref (`refs/heads/main`, `refs/tags/1.0.3`).
    pub git_ref: String,
    /// The commit the ref names now, when the payload says.
    pub after: Option<String>,
    /// Whether the ref was deleted (its preview goes).
    pub deleted: bool,
    /// The repository's `owner/name` on the forge, when the payload says (where GitHub's
    /// statuses go).
    pub repository: Option<String>,
}

/// The commit id every forge sends for "no commit" (a deleted or created ref's other side).
pub(super) const NO_COMMIT: &str = "0000000000000000000000000000000000000000";

/// Why a payload cannot be read: its event and the field that is missing or of the wrong type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {event} event without {field}")]
pub(super) struct MalformedPayload {
    /// The event (`pull_request`, `merge_request`, `push`).
    pub event: &'static str,
    /// The field, quoted as it is named in the payload.
    pub field: &'static str,
}

impl MalformedPayload {
    /// A `pull_request` payload without `field`.
    pub(super) fn pull_request(field: &'static str) -> MalformedPayload {
        MalformedPayload {
            event: "pull_request",
            field,
        }
    }
}

/// Whether `sha` looks like a commit id (at least 7 hex digits).
pub(super) fn is_commit_id(sha: &str) -> bool {
    sha.len() >= 7 && sha.chars().all(|c| c.is_ascii_hexdigit())
}
