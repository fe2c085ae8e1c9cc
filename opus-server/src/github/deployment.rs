//! Which GitHub Deployment calls an environment event makes: a deploy or rollback of a version
//! GitHub built creates a deployment of its commit with `in_progress` then `success` statuses
//! (`environment_url` = the site), and marks the deployment the environment showed before
//! `inactive`; a deploy of another version, or the environment's removal, only marks it inactive.
//! A pull request's preview whose base opus.yml asks for it (`pull_requests.comment`) then gets
//! its one comment made or edited (`comment`).

use std::time::SystemTime;

use opus_core::forge::{DeploymentCalls, GithubDeployment, PrComment, StatusDelivery};
use opus_core::hook::DeliveryState;
use opus_core::model::{Event, EventKind, ProjectName, VersionName};
use opus_core::store::MetaStore;

/// One call of a [`DeploymentCalls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// `POST /repos/{repository}/deployments`.
    Create,
    /// `POST /repos/{repository}/deployments/{id}/statuses` with `state`, on the created
    /// deployment (`in_progress`, `success`) or on the one superseded (`inactive`).
    Status {
        /// The deployment it names.
        on: Target,
        /// GitHub's deployment state.
        state: &'static str,
    },
    /// The pull request's comment: `POST .../issues/{number}/comments` the first time, `PATCH
    /// .../issues/comments/{id}` after.
    Comment,
}

/// Which deployment a status names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// The one this record created.
    Created,
    /// The one the environment showed before.
    Previous,
}

impl Step {
    /// How the step shows in `opus github deliveries` (the record's `state`).
    pub(super) fn name(&self) -> &'static str {
        match self {
            Step::Create => "deployment",
            Step::Status { state, .. } => state,
            Step::Comment => "comment",
        }
    }
}

/// The calls of `calls`, in order.
pub(super) fn steps(calls: &DeploymentCalls) -> Vec<Step> {
    let mut out = Vec::new();
    if calls.create {
        out.push(Step::Create);
        for state in ["in_progress", "success"] {
            out.push(Step::Status {
                on: Target::Created,
                state,
            });
        }
    }
    if calls.previous.is_some() {
        out.push(Step::Status {
            on: Target::Previous,
            state: "inactive",
        });
    }
    if calls.create && calls.comment.is_some() {
        out.push(Step::Comment);
    }
    out
}

/// The next call of `calls` not made yet; none when all were.
pub(super) fn next_step(calls: &DeploymentCalls) -> Option<Step> {
    steps(calls).into_iter().nth(calls.done as usize)
}

/// The outbox record of the Deployment calls `event` makes; none when it makes none (not an
/// environment event, or nothing of it concerns GitHub). `site_url` gives an environment's URL.
pub(super) fn record_for(
    store: &MetaStore,
    event: &Event,
    site_url: impl Fn(&str, &str) -> String,
) -> Option<StatusDelivery> {
    let deploys = matches!(
        event.kind,
        EventKind::EnvironmentDeployed | EventKind::EnvironmentRolledBack
    );
    if !deploys && event.kind != EventKind::EnvironmentRemoved {
        return None;
    }
    let project = event.project.as_str();
    let env = event.payload["env"].as_str()?;
    let previous = store.github_deployment(project, env).ok().flatten();
    let built = if deploys {
        built_by(store, event)
    } else {
        None
    };
    let comment = built
        .as_ref()
        .and_then(|(_, build, version)| pr_comment(store, project, env, build, version));
    let (commit, build, description, create) = match built {
        Some((commit, build, version)) => {
            (commit, build.number, format!("{version} to {env}"), true)
        }
        None => {
            let previous = previous.as_ref()?;
            let why = if deploys { "superseded" } else { "removed" };
            (previous.commit.clone(), 0, format!("{env} {why}"), false)
        }
    };
    let calls = DeploymentCalls {
        environment: env.to_owned(),
        create,
        transient: event.payload["preview"].as_bool().unwrap_or(false),
        environment_url: create.then(|| site_url(project, env)),
        created: None,
        previous,
        done: 0,
        comment,
    };
    let state = next_step(&calls)?.name().to_owned();
    let now = SystemTime::now();
    Some(StatusDelivery {
        event_seq: event.seq,
        project: project.to_owned(),
        build,
        commit,
        state,
        description,
        target_url: None,
        delivery: DeliveryState::Pending,
        attempts: 0,
        last_status: 0,
        last_error: String::new(),
        next_attempt_at: None,
        created_at: now,
        updated_at: now,
        deployment: Some(calls),
    })
}

/// The GitHub commit, build and version name of the version a deploy event deploys, when
/// GitHub triggered the build that made it.
fn built_by(
    store: &MetaStore,
    event: &Event,
) -> Option<(
    opus_core::forge::GithubCommit,
    opus_core::model::Build,
    String,
)> {
    let project = ProjectName::new(event.project.as_str()).ok()?;
    let version = VersionName::new(event.payload["version"].as_str()?).ok()?;
    let record = store.get_version(&project, &version).ok()??;
    let build = store.get_build(record.build_id).ok()?;
    let commit = build.github.clone()?;
    Some((commit, build, version.as_str().to_owned()))
}

/// The comment a deploy to `env` makes: when `build` is of a pull request whose preview `env`
/// is, and its base branch's opus.yml asked for the comment; with the id of the comment made
/// before, which is then edited.
fn pr_comment(
    store: &MetaStore,
    project: &str,
    env: &str,
    build: &opus_core::model::Build,
    version: &str,
) -> Option<PrComment> {
    let pr = build.pull_request.as_ref()?;
    if pr.environment() != env || !store.github_comment_wanted(project, pr.number).ok()? {
        return None;
    }
    Some(PrComment {
        number: pr.number,
        id: store.github_comment(project, pr.number).ok().flatten(),
        version: version.to_owned(),
    })
}

/// The deployment a status step names.
pub(super) fn target(record: &StatusDelivery, on: Target) -> Option<GithubDeployment> {
    let calls = record.deployment.as_ref()?;
    match on {
        Target::Created => calls.created.map(|id| GithubDeployment {
            id,
            commit: record.commit.clone(),
            environment: calls.environment.clone(),
        }),
        Target::Previous => calls.previous.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opus_core::forge::GithubCommit;

    fn calls(create: bool, previous: bool) -> DeploymentCalls {
        DeploymentCalls {
            environment: "pr-7".into(),
            create,
            transient: true,
            environment_url: None,
            created: None,
            previous: previous.then(|| GithubDeployment {
                id: 3,
                commit: GithubCommit {
                    repository: "acme/web".into(),
                    sha: "a".repeat(40),
                },
                environment: "pr-7".into(),
            }),
            done: 0,
            comment: None,
        }
    }

    #[test]
    fn a_deploy_creates_reports_then_retires_what_it_supersedes() {
        let names = |c: &DeploymentCalls| -> Vec<&'static str> {
            steps(c).iter().map(Step::name).collect()
        };
        assert_eq!(
            names(&calls(true, true)),
            ["deployment", "in_progress", "success", "inactive"]
        );
        assert_eq!(
            names(&calls(true, false)),
            ["deployment", "in_progress", "success"]
        );
        assert_eq!(names(&calls(false, true)), ["inactive"]);
        let mut commented = calls(true, true);
        commented.comment = Some(PrComment {
            number: 7,
            id: None,
            version: "pr-7-1-abc1234".into(),
        });
        assert_eq!(
            names(&commented),
            [
                "deployment",
                "in_progress",
                "success",
                "inactive",
                "comment"
            ]
        );
        let mut c = calls(true, true);
        c.done = 3;
        assert_eq!(
            next_step(&c),
            Some(Step::Status {
                on: Target::Previous,
                state: "inactive"
            })
        );
        c.done = 4;
        assert_eq!(next_step(&c), None);
    }

    #[test]
    fn a_status_names_the_created_deployment_only_once_github_gave_its_id() {
        let mut record = StatusDelivery {
            event_seq: 9,
            project: "web".into(),
            build: 2,
            commit: GithubCommit {
                repository: "acme/web".into(),
                sha: "b".repeat(40),
            },
            state: "deployment".into(),
            description: String::new(),
            target_url: None,
            delivery: DeliveryState::Pending,
            attempts: 0,
            last_status: 0,
            last_error: String::new(),
            next_attempt_at: None,
            created_at: SystemTime::now(),
            updated_at: SystemTime::now(),
            deployment: Some(calls(true, true)),
        };
        assert_eq!(target(&record, Target::Created), None);
        assert_eq!(target(&record, Target::Previous).map(|d| d.id), Some(3));
        if let Some(c) = record.deployment.as_mut() {
            c.created = Some(1001);
        }
        let created = target(&record, Target::Created).expect("the created one");
        assert_eq!((created.id, created.commit.sha), (1001, "b".repeat(40)));
        record.deployment = None;
        assert_eq!(target(&record, Target::Previous), None);
    }
}
