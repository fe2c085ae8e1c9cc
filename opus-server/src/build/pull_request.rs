//! The gate in front of a pull request's build: whether it may run, decided by the opus.yml of
//! its base branch (`pull_requests:`), never by the pull request's own (a fork could otherwise
//! allow itself), and what its log says about it (the head, the preview, no secrets for a fork).
//! It also records whether the base asks for the pull request's comment (`pull_requests.comment`),
//! which the GitHub outbox reads when the preview is deployed.
//!
//! A refused pull request ends its build as cancelled with the reason ("skipped: ..."), before any
//! of its code is checked out.

use std::path::Path;

use opus_core::forge::PullRequest;
use opus_core::model::{Build, Project, Source};
use opus_core::recipe;
use opus_core::store::MetaStore;

use super::BuildContext;
use super::failure::{BuildFailure, FailureKind, Stage};
use crate::logs::BuildLog;

/// Lets the build of `pr` run when the base branch's opus.yml builds it; else a
/// [`FailureKind::Skipped`] saying why. `scratch` (made and removed here) holds the base's recipe
/// files.
pub(crate) async fn admit(
    ctx: &BuildContext,
    store: &MetaStore,
    project: &Project,
    build: &Build,
    pr: &PullRequest,
    scratch: &Path,
    log: &BuildLog,
) -> Result<(), BuildFailure> {
    let skip = |why: String| BuildFailure::new(Stage::Source, FailureKind::Skipped(why));
    let from = if pr.is_fork() {
        format!("{}:{}", pr.head_repo, pr.head_ref)
    } else {
        pr.head_ref.clone()
    };
    log.opus(
        "pull request",
        &format!(
            "#{} ({}) from {from} into {}: head {}",
            pr.number,
            pr.action,
            pr.base_ref,
            short(&pr.head_sha)
        ),
    );
    let Source::Git(url) = &project.source else {
        return Err(skip(format!(
            "project {} builds a folder, not a git repository, so it has no pull requests",
            build.project
        )));
    };
    let base = ctx
        .sources
        .resolve_git(project, url, &pr.base_ref)
        .await
        .map_err(|e| BuildFailure::new(Stage::Source, e))?;
    let _ = tokio::fs::remove_dir_all(scratch).await;
    tokio::fs::create_dir_all(scratch).await.map_err(|source| {
        BuildFailure::new(
            Stage::Start,
            FailureKind::Workspace {
                path: scratch.to_path_buf(),
                source,
            },
        )
    })?;
    let read = ctx
        .sources
        .read_recipe(project, &base.commit, scratch)
        .await
        .map_err(|e| BuildFailure::new(Stage::Source, e));
    let policy = read.map(|()| recipe::discover(scratch));
    let _ = tokio::fs::remove_dir_all(scratch).await;
    let policy = match policy? {
        Ok((spec, _)) => spec.pull_requests,
        Err(e) => {
            return Err(skip(format!(
                "the base branch {} has no usable recipe to decide on pull requests: {e}",
                pr.base_ref
            )));
        }
    };
    if let Some(why) = policy.refusal(pr) {
        return Err(skip(why));
    }
    // Only GitHub's pull requests get the comment, as their statuses; the base decides, as for
    // everything else about the pull request.
    if build.github.is_some()
        && let Err(e) =
            store.set_github_comment_wanted(build.project.as_str(), pr.number, policy.comment)
    {
        tracing::warn!(error = %e, "cannot record whether the pull request wants its comment");
    }
    log.opus(
        "pull request",
        &format!(
            "building into preview {} (opus.yml of {} at {})",
            pr.environment(),
            pr.base_ref,
            short(&base.commit)
        ),
    );
    if pr.is_fork() {
        log.opus(
            "secrets",
            "a pull request from a fork: built with no secrets (none of the project's secrets is set)",
        );
    }
    Ok(())
}

/// The first 7 characters of a commit id.
fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}
