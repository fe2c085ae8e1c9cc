//! opus.yml's `pull_requests:` section: whether pull requests get preview builds, and which ones
//! (drafts, a label, forks). It is read from the base branch's opus.yml, never the pull request's
//! own, so a pull request cannot allow itself.

use serde::Deserialize;

use crate::forge::PullRequest;

/// `pull_requests: { previews: true, drafts: false, label: preview, forks: false, comment: false }`. Absent, no
/// pull request builds; present, `previews` is on unless it says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullRequestsSpec {
    /// Whether pull requests build into their preview environment `pr-<number>`.
    #[serde(default = "on")]
    pub previews: bool,
    /// Whether draft pull requests build too (off: a draft builds once marked ready for review).
    #[serde(default)]
    pub drafts: bool,
    /// When set, only pull requests carrying this label build.
    #[serde(default)]
    pub label: Option<String>,
    /// Whether pull requests from forks build at all; they never get the project's secrets.
    #[serde(default)]
    pub forks: bool,
    /// Whether opusd keeps one comment on each GitHub pull request it previews (edited in place
    /// on every new preview): the preview's URL and the files changed against production.
    #[serde(default)]
    pub comment: bool,
}

fn on() -> bool {
    true
}

impl Default for PullRequestsSpec {
    /// No section: pull requests do not build.
    fn default() -> Self {
        PullRequestsSpec {
            previews: false,
            drafts: false,
            label: None,
            forks: false,
            comment: false,
        }
    }
}

impl PullRequestsSpec {
    /// What a repository without opus.yml gets (package.json detected): previews for pull
    /// requests from the repository itself, as for its branches.
    pub fn detected() -> Self {
        PullRequestsSpec {
            previews: true,
            ..PullRequestsSpec::default()
        }
    }

    /// Checks what types alone cannot: a label is a non-empty single line.
    pub(super) fn validate(&self) -> Result<(), String> {
        if let Some(label) = &self.label
            && (label.trim().is_empty() || label.chars().any(char::is_control))
        {
            return Err(format!(
                "pull_requests.label: {label:?} must be a label's name (not empty, one line)"
            ));
        }
        Ok(())
    }

    /// Why `pr` does not build by this policy, or `None` when it does.
    pub fn refusal(&self, pr: &PullRequest) -> Option<String> {
        if !self.previews {
            return Some(
                "opus.yml of the base branch does not turn on pull request previews (add `pull_requests: { previews: true }`)"
                    .into(),
            );
        }
        if pr.is_fork() && !self.forks {
            let from = if pr.head_repo.is_empty() {
                "a deleted repository"
            } else {
                pr.head_repo.as_str()
            };
            return Some(format!(
                "the pull request comes from a fork ({from}); `pull_requests.forks: true` in the base branch's opus.yml builds forks (with no secrets)"
            ));
        }
        if pr.draft && !self.drafts {
            return Some(
                "the pull request is a draft; it builds when marked ready for review (or with `pull_requests.drafts: true`)"
                    .into(),
            );
        }
        if pr.action == "ready_for_review" && self.drafts {
            return Some("drafts are built already: this commit was built as a draft".into());
        }
        if let Some(label) = &self.label {
            if !pr.labels.iter().any(|l| l == label) {
                return Some(format!(
                    "the pull request does not carry the label {label:?} (pull_requests.label)"
                ));
            }
            if pr.action == "labeled" && pr.added_label.as_deref() != Some(label.as_str()) {
                return Some(format!(
                    "the label added is not {label:?}: nothing changed for the preview"
                ));
            }
        } else if pr.action == "labeled" {
            return Some("labels do not matter: opus.yml sets no pull_requests.label".into());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::parse;

    fn pr(action: &str) -> PullRequest {
        PullRequest {
            number: 3,
            action: action.into(),
            head_sha: "b".repeat(40),
            head_ref: "feature".into(),
            head_repo: "acme/web".into(),
            base_repo: "acme/web".into(),
            base_ref: "main".into(),
            draft: false,
            labels: Vec::new(),
            added_label: None,
        }
    }

    const BUILD: &str = "build:\n  steps: [\"true\"]\n";

    fn spec(extra: &str) -> PullRequestsSpec {
        parse(&format!("{BUILD}{extra}"))
            .expect("valid opus.yml")
            .pull_requests
    }

    #[test]
    fn absent_means_no_pull_request_builds_and_present_means_previews() {
        assert!(spec("").refusal(&pr("opened")).is_some());
        assert_eq!(spec("pull_requests: {}\n").refusal(&pr("opened")), None);
        assert!(
            spec("pull_requests: { previews: false }\n")
                .refusal(&pr("opened"))
                .is_some()
        );
    }

    #[test]
    fn forks_are_refused_unless_allowed() {
        let mut fork = pr("opened");
        fork.head_repo = "mallory/web".into();
        let refused = spec("pull_requests: {}\n").refusal(&fork).expect("refused");
        assert!(refused.contains("mallory/web"), "{refused}");
        assert_eq!(
            spec("pull_requests: { forks: true }\n").refusal(&fork),
            None
        );
    }

    #[test]
    fn drafts_wait_for_ready_for_review_unless_built() {
        let mut draft = pr("opened");
        draft.draft = true;
        let skip = spec("pull_requests: {}\n");
        assert!(skip.refusal(&draft).is_some());
        assert_eq!(skip.refusal(&pr("ready_for_review")), None);
        let build = spec("pull_requests: { drafts: true }\n");
        assert_eq!(build.refusal(&draft), None);
        assert!(build.refusal(&pr("ready_for_review")).is_some());
    }

    #[test]
    fn a_label_gates_and_only_adding_that_label_builds() {
        let s = spec("pull_requests: { label: preview }\n");
        assert!(s.refusal(&pr("opened")).is_some());
        let mut labeled = pr("labeled");
        labeled.labels = vec!["preview".into(), "bug".into()];
        labeled.added_label = Some("bug".into());
        assert!(s.refusal(&labeled).is_some());
        labeled.added_label = Some("preview".into());
        assert_eq!(s.refusal(&labeled), None);
        let mut sync = pr("synchronize");
        sync.labels = vec!["preview".into()];
        assert_eq!(s.refusal(&sync), None);
        assert!(spec("pull_requests: {}\n").refusal(&labeled).is_some());
    }

    #[test]
    fn the_comment_is_off_unless_asked_for() {
        assert!(!spec("pull_requests: {}\n").comment);
        assert!(spec("pull_requests: { comment: true }\n").comment);
    }

    #[test]
    fn malformed_sections_name_the_line_and_field() {
        let err = parse(&format!("{BUILD}pull_requests:\n  drafts: maybe\n"))
            .expect_err("not a bool")
            .to_string();
        assert!(err.contains("drafts"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        let err = parse(&format!("{BUILD}pull_requests:\n  fork: true\n"))
            .expect_err("unknown field")
            .to_string();
        assert!(err.contains("fork") && err.contains("forks"), "{err}");
        let err = parse(&format!("{BUILD}pull_requests: {{ label: \"\" }}\n"))
            .expect_err("empty label")
            .to_string();
        assert!(err.contains("pull_requests.label"), "{err}");
    }
}
