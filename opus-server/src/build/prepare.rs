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
            b.version = version.clone();
        })
        .map_err(|e| BuildFailure::new(Stage::Source, e))
}

/// The variables opusd gives every build step, whichever executor runs it: `CI`, the `OPUS_*`
/// variables of the build (after its checkout is recorded), and the project's secrets, which win
/// over the rest. opus.yml's own `env` goes under these.
pub(crate) fn build_env(
    store: &MetaStore,
    build: &Build,
) -> Result<BTreeMap<String, String>, BuildFailure> {
    let mut env = BTreeMap::new();
    env.insert("CI".to_owned(), "true".to_owned());
    env.insert("OPUS_PROJECT".to_owned(), build.project.to_string());
    env.insert("OPUS_BUILD".to_owned(), build.number.to_string());
    env.insert("OPUS_VERSION".to_owned(), build.version.clone());
    env.insert("OPUS_COMMIT".to_owned(), build.commit.clone());
    env.insert("OPUS_REF".to_owned(), build.git_ref.clone());
    let secrets = store
        .secrets(build.project.as_str())
        .map_err(|e| BuildFailure::new(Stage::Recipe, FailureKind::Secrets(e)))?;
    env.extend(secrets);
    Ok(env)
}

/// The version a build produces: named by the trigger; a tag's name; or
/// `<branch-slug>-<build number>-<short sha>` (`<branch-slug>-<build number>` for a local source).
fn decide_version(build: &Build, checkout: &Checkout) -> Result<String, BuildFailure> {
    if build.version_pinned {
        return Ok(build.version.clone());
    }
    if checkout.is_tag {
        let tag = build.git_ref.trim_start_matches("refs/tags/");
        return VersionName::new(tag)
            .map(|v| v.to_string())
            .map_err(|source| {
                BuildFailure::new(
                    Stage::Source,
                    FailureKind::TagNotVersion {
                        tag: tag.to_owned(),
                        source,
                    },
                )
            });
    }
    let slug = branch_slug(checkout.branch.as_deref().unwrap_or("commit"));
    let short: String = checkout.commit.chars().take(7).collect();
    let version = if short.is_empty() {
        format!("{slug}-{}", build.number)
    } else {
        format!("{slug}-{}-{short}", build.number)
    };
    VersionName::new(version)
        .map(|v| v.to_string())
        .map_err(|e| BuildFailure::new(Stage::Source, e))
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
}
