//! Preparing a build once its source is fetched: the version it produces (recorded on the build
//! with what the checkout found) and the variables its steps get.

use std::collections::BTreeMap;
use std::path::Path;

use opus_core::model::{Build, VersionName, branch_slug};
use opus_core::store::MetaStore;

use super::failure::{BuildFailure, FailureKind, Stage};
use crate::source::Checkout;

/// Records on the build what its checkout found: commit, branch, whether it is a tag, and the
/// version it will produce ([`decide_version`]).
pub(crate) fn record_checkout(
    store: &MetaStore,
    build: &Build,
    checkout: &Checkout,
) -> Result<Build, BuildFailure> {
    let version = decide_version(build, checkout)?;
    store
        .update_build(build.id, |b| {
            b.commit = checkout.commit.clone();
            b.branch = checkout.branch.clone();
            b.is_tag = checkout.is_tag;
            b.version = Some(version.clone());
        })
        .map_err(|e| BuildFailure::new(Stage::Source, e))
}

/// The variables opusd gives every build step, whichever executor runs it: `CI`, the `OPUS_*`
/// variables of the build (after its checkout is recorded, with `OPUS_PULL_REQUEST` for a pull
/// request), and the project's secrets, which win over the rest (none for a fork's pull
/// request). opus.yml's own `env` goes under these.
pub(crate) fn build_env(
    store: &MetaStore,
    build: &Build,
) -> Result<BTreeMap<String, String>, BuildFailure> {
    let mut env = BTreeMap::new();
    env.insert("CI".to_owned(), "true".to_owned());
    env.insert("OPUS_PROJECT".to_owned(), build.project.to_string());
    env.insert("OPUS_BUILD".to_owned(), build.number.to_string());
    env.insert(
        "OPUS_VERSION".to_owned(),
        build
            .version
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    );
    env.insert("OPUS_COMMIT".to_owned(), build.commit.clone());
    env.insert("OPUS_REF".to_owned(), build.git_ref.clone());
    if let Some(pr) = &build.pull_request {
        env.insert("OPUS_PULL_REQUEST".to_owned(), pr.number.to_string());
        if pr.is_fork() {
            // Code from a fork is nobody's reviewed code: it never sees the project's secrets.
            return Ok(env);
        }
    }
    let secrets = store
        .secrets(&build.project)
        .map_err(|e| BuildFailure::new(Stage::Recipe, FailureKind::Secrets(e)))?;
    env.extend(secrets);
    Ok(env)
}

/// The version a build produces: named by the trigger; a tag's name; or
/// `<branch-slug>-<build number>-<short sha>` (`<branch-slug>-<build number>` for a local source);
/// a pull request's head commit: `pr-<number>-<build number>-<short sha>`.
fn decide_version(build: &Build, checkout: &Checkout) -> Result<VersionName, BuildFailure> {
    if build.version_pinned
        && let Some(version) = &build.version
    {
        return Ok(version.clone());
    }
    if checkout.is_tag {
        let tag = build.git_ref.trim_start_matches("refs/tags/");
        return VersionName::new(tag).map_err(|source| {
            BuildFailure::new(
                Stage::Source,
                FailureKind::TagNotVersion {
                    tag: tag.to_owned(),
                    source,
                },
            )
        });
    }
    // A pull request's head is a commit; its version is named by the preview it goes to.
    let named_by = match (&checkout.branch, &build.pull_request) {
        (Some(branch), _) => branch.clone(),
        (None, Some(pr)) => pr.environment(),
        (None, None) => "commit".to_owned(),
    };
    let slug = branch_slug(&named_by);
    let short: String = checkout.commit.chars().take(7).collect();
    let version = if short.is_empty() {
        format!("{slug}-{}", build.number)
    } else {
        format!("{slug}-{}-{short}", build.number)
    };
    VersionName::new(version).map_err(|e| BuildFailure::new(Stage::Source, e))
}

/// The version a build stores: decided by [`record_checkout`], so a build past its checkout has
/// one; a build without one fails at `stage` rather than storing under a made-up name.
pub(crate) fn decided_version(build: &Build, stage: Stage) -> Result<&VersionName, BuildFailure> {
    build
        .version
        .as_ref()
        .ok_or_else(|| BuildFailure::new(stage, FailureKind::VersionUndecided))
}

/// Creates `dir` empty: a new folder, or an emptied one when a folder of that name is left over.
pub(crate) async fn fresh_dir(dir: &Path) -> std::io::Result<()> {
    match tokio::fs::create_dir(dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            tokio::fs::remove_dir_all(dir).await?;
            tokio::fs::create_dir_all(dir).await
        }
        Err(_) => tokio::fs::create_dir_all(dir).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_workspace_starts_empty_even_over_a_leftover() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The work folder itself may be gone: it is created.
        let workspace = dir.path().join("work").join("7");
        fresh_dir(&workspace).await.expect("created");
        std::fs::create_dir(workspace.join("dist")).expect("mkdir");
        std::fs::write(workspace.join("dist").join("old.html"), "old").expect("write");
        fresh_dir(&workspace).await.expect("emptied");
        assert_eq!(std::fs::read_dir(&workspace).expect("read").count(), 0);
    }

    #[test]
    fn a_build_without_a_decided_version_fails_at_the_stage_asking() {
        let mut build = Build {
            id: 1,
            number: 1,
            project: opus_core::model::ProjectName::new("web").expect("name"),
            state: opus_core::model::BuildState::Running,
            git_ref: "main".into(),
            commit: String::new(),
            version: None,
            version_pinned: false,
            reason: String::new(),
            trigger: opus_core::model::Trigger::Cli,
            store: opus_core::model::StoreName::default_store(),
            branch: None,
            is_tag: false,
            queued_at: std::time::SystemTime::now(),
            started_at: None,
            finished_at: None,
            pull_request: None,
            github: None,
        };
        let failure = decided_version(&build, Stage::Store).expect_err("undecided");
        assert_eq!(failure.stage, Stage::Store);
        assert!(matches!(*failure.kind, FailureKind::VersionUndecided));
        build.version = Some(VersionName::new("main-1").expect("version"));
        assert_eq!(
            decided_version(&build, Stage::Store)
                .expect("decided")
                .as_str(),
            "main-1"
        );
    }
}
