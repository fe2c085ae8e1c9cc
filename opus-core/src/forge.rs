//! What a build knows of the forge it was triggered from ([`Forge`]: GitHub, GitLab, Gitea or
//! Forgejo): the pull request (enough to
//! decide, from the base branch's opus.yml, whether it may run ([`crate::recipe::PullRequestsSpec`]),
//! where its preview goes (environment `pr-<number>`), and whether it gets secrets: a fork never
//! does), the commit its statuses go on ([`GithubCommit`]), and the record of each status sent
//! ([`StatusDelivery`]).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::hook::DeliveryState;
use crate::model::Trigger;

/// A forge whose webhooks trigger builds: the seam between what every forge gets (builds of
/// pushes, pull request previews) and what only some do yet (commit statuses, Deployments and
/// comments: GitHub only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forge {
    /// GitHub (and GitHub Enterprise Server): `/hooks/github/<project>`.
    Github,
    /// GitLab: `/hooks/gitlab/<project>`, push and merge request hooks.
    Gitlab,
    /// Gitea and Forgejo (the same payloads): `/hooks/gitea/<project>`.
    Gitea,
}

impl Forge {
    /// Every forge, in the order the CLI lists them.
    pub const ALL: [Forge; 3] = [Forge::Github, Forge::Gitlab, Forge::Gitea];

    /// Its lowercase name: the webhook path's segment and the stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::Github => "github",
            Forge::Gitlab => "gitlab",
            Forge::Gitea => "gitea",
        }
    }

    /// The forge named `name` (`github`, `gitlab`, `gitea`, or `forgejo` for Gitea's fork);
    /// an empty name is GitHub, as before other forges existed.
    pub fn from_name(name: &str) -> Option<Forge> {
        match name {
            "" | "github" => Some(Forge::Github),
            "gitlab" => Some(Forge::Gitlab),
            "gitea" | "forgejo" => Some(Forge::Gitea),
            _ => None,
        }
    }

    /// The path of `project`'s webhook on the API port: `/hooks/<forge>/<project>`.
    pub fn hook_path(self, project: &str) -> String {
        format!("/hooks/{}/{project}", self.as_str())
    }

    /// What a build this forge triggered records as its trigger.
    pub fn trigger(self) -> Trigger {
        match self {
            Forge::Github => Trigger::Github,
            Forge::Gitlab => Trigger::Gitlab,
            Forge::Gitea => Trigger::Gitea,
        }
    }

    /// Whether opusd reports back to this forge (commit statuses, Deployments, comments):
    /// GitHub only, for now; the others get builds and previews.
    pub fn reports_status(self) -> bool {
        matches!(self, Forge::Github)
    }
}

impl std::fmt::Display for Forge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The GitHub commit a GitHub-triggered build reports its status on: the pushed commit, or a
/// pull request's head commit in its base repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GithubCommit {
    /// `owner/name` (`repository.full_name`).
    pub repository: String,
    /// The commit id.
    pub sha: String,
}

/// One commit status opusd sends to GitHub (`POST /repos/{repository}/statuses/{sha}`), made from
/// the build event it describes, and how its delivery went: the GitHub outbox's record, listed
/// by `opus github deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDelivery {
    /// The event it comes from: its key in the outbox, and its place in the order of sending.
    pub event_seq: u64,
    /// The project.
    pub project: String,
    /// The build's number within its project.
    pub build: u64,
    /// Where the status goes.
    pub commit: GithubCommit,
    /// `pending`, `success`, `failure` or `error`.
    pub state: String,
    /// GitHub's one line (at most 140 characters).
    pub description: String,
    /// The build's page, when opusd has a `--public-url`.
    pub target_url: Option<String>,
    /// Where the delivery stands.
    pub delivery: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// The last HTTP status (0: no answer).
    pub last_status: u16,
    /// The last error, for people.
    pub last_error: String,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<SystemTime>,
    /// When it was first attempted.
    pub created_at: SystemTime,
    /// When it last changed.
    pub updated_at: SystemTime,
    /// For a deploy, rollback or removal of an environment: the GitHub Deployment calls it
    /// makes (then `state` names the call in flight or the last one made). None for a commit
    /// status.
    #[serde(default)]
    pub deployment: Option<DeploymentCalls>,
}

/// A GitHub Deployment opusd created (`POST /repos/{repository}/deployments`): the id its later
/// statuses name, kept per environment so that the next deploy or the removal can mark it
/// inactive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GithubDeployment {
    /// The id GitHub gave it.
    pub id: u64,
    /// The commit deployed (its repository is where the statuses go).
    pub commit: GithubCommit,
    /// The environment's name.
    pub environment: String,
}

/// The GitHub Deployment calls one environment event makes, in order: create a deployment of
/// the record's commit (when `create`), its `in_progress` then `success` statuses, then
/// `inactive` for the deployment it supersedes or removes (`previous`). Stored after every call
/// with the outbox record, so a restart goes on from the call that was not answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentCalls {
    /// The environment (`production`, `pr-7`...).
    pub environment: String,
    /// Whether a deployment is created (false: the version did not come from GitHub, or the
    /// environment was removed; only `previous` is marked inactive).
    pub create: bool,
    /// Whether GitHub is told the environment goes away (`transient_environment`): previews.
    pub transient: bool,
    /// The site's URL (`environment_url` of the `success` status).
    pub environment_url: Option<String>,
    /// The id GitHub gave the created deployment, once it answered.
    pub created: Option<u64>,
    /// The deployment the environment showed before, marked inactive last.
    pub previous: Option<GithubDeployment>,
    /// How many of the calls GitHub accepted.
    pub done: u32,
    /// For a preview of a pull request whose base opus.yml asks for it
    /// (`pull_requests.comment`): its comment, made or edited last.
    #[serde(default)]
    pub comment: Option<PrComment>,
}

/// The one comment opusd keeps on a pull request: created on its first preview, edited in place
/// on the next ones (its id is kept per pull request in the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrComment {
    /// The pull request's number.
    pub number: u64,
    /// The comment's id, when GitHub has given one (then it is edited, not created).
    pub id: Option<u64>,
    /// The version the preview shows, compared with production's in the comment.
    pub version: String,
}

/// The pull request a build builds: its number, the head commit and where that commit comes
/// from, and the base branch whose opus.yml decides whether it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// The pull request's number in its repository.
    pub number: u64,
    /// The webhook action that queued the build (`opened`, `synchronize`, `reopened`,
    /// `ready_for_review`, `labeled`).
    pub action: String,
    /// The head commit (`pull_request.head.sha`): what is built.
    pub head_sha: String,
    /// The head branch's name (`pull_request.head.ref`), for the log.
    pub head_ref: String,
    /// The repository the head lives in (`pull_request.head.repo.full_name`; empty when that
    /// repository was deleted).
    pub head_repo: String,
    /// The base repository (`pull_request.base.repo.full_name`).
    pub base_repo: String,
    /// The base branch (`pull_request.base.ref`): its opus.yml, not the head's, decides whether
    /// the pull request builds, so a fork cannot allow itself.
    pub base_ref: String,
    /// Whether the pull request is a draft.
    #[serde(default)]
    pub draft: bool,
    /// The names of its labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// With action `labeled`: the label just added.
    #[serde(default)]
    pub added_label: Option<String>,
}

impl PullRequest {
    /// Whether the head commit comes from another repository than the base (a fork): such a
    /// build runs code nobody with access to the project reviewed, so it never gets secrets.
    pub fn is_fork(&self) -> bool {
        self.head_repo != self.base_repo
    }

    /// The preview environment of the pull request: `pr-<number>`.
    pub fn environment(&self) -> String {
        preview_environment(self.number)
    }
}

/// The preview environment of pull request `number`: `pr-<number>`.
pub fn preview_environment(number: u64) -> String {
    format!("pr-{number}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forges_by_name_path_and_trigger() {
        assert_eq!(Forge::from_name(""), Some(Forge::Github));
        assert_eq!(Forge::from_name("forgejo"), Some(Forge::Gitea));
        assert_eq!(Forge::from_name("bitbucket"), None);
        for forge in Forge::ALL {
            assert_eq!(Forge::from_name(forge.as_str()), Some(forge));
            assert_eq!(forge.trigger().as_str(), forge.as_str());
        }
        assert_eq!(Forge::Gitlab.hook_path("web"), "/hooks/gitlab/web");
        assert!(Forge::Github.reports_status());
        assert!(!Forge::Gitea.reports_status());
    }

    #[test]
    fn a_fork_is_a_head_from_another_repository() {
        let mut pr = PullRequest {
            number: 7,
            action: "opened".into(),
            head_sha: "a".repeat(40),
            head_ref: "feature".into(),
            head_repo: "acme/web".into(),
            base_repo: "acme/web".into(),
            base_ref: "main".into(),
            draft: false,
            labels: Vec::new(),
            added_label: None,
        };
        assert!(!pr.is_fork());
        assert_eq!(pr.environment(), "pr-7");
        pr.head_repo = "mallory/web".into();
        assert!(pr.is_fork());
        // A deleted fork has no head repository: still not the base.
        pr.head_repo = String::new();
        assert!(pr.is_fork());
    }
}
