//! The local executor: the source is checked out into the build's workspace and the steps run
//! here, with the project's cache folders moved in for them and back out after.

use std::collections::BTreeMap;
use std::path::Path;

use opus_core::model::{Build, Project};
use tokio_util::sync::CancellationToken;

use super::BuildContext;
use super::executor::Produced;
use super::failure::{BuildFailure, FailureKind, Stage};
use super::job::{Job, run_job};
use super::steps::LogSink;
use crate::logs::BuildLog;
use crate::process_tree::Containment;
use crate::source::Checkout;

/// Checks the project's source out at the build's ref into `workspace`.
pub(super) async fn source(
    ctx: &BuildContext,
    project: &Project,
    build: &Build,
    workspace: &Path,
    log: &BuildLog,
    cancel: &CancellationToken,
) -> Result<Checkout, BuildFailure> {
    log.opus(
        "source",
        &format!("fetching {} at {}", project.source.display(), build.git_ref),
    );
    let checkout = tokio::select! {
        r = ctx.sources.checkout(project, &build.git_ref, workspace) => r,
        () = cancel.cancelled() => return Err(BuildFailure::new(Stage::Source, FailureKind::Cancelled)),
    };
    let checkout = checkout.map_err(|e| BuildFailure::new(Stage::Source, e))?;
    if !checkout.commit.is_empty() {
        log.opus("source", &format!("checked out {}", checkout.commit));
    }
    Ok(checkout)
}

/// Runs `job` in `workspace`, with the recipe's cache folders restored before and kept after.
#[allow(clippy::too_many_arguments)]
pub(super) async fn execute(
    ctx: &BuildContext,
    containment: Containment,
    build: &Build,
    job: &Job,
    env: &BTreeMap<String, String>,
    workspace: &Path,
    log: &BuildLog,
    cancel: &CancellationToken,
) -> Result<Option<Produced>, BuildFailure> {
    let cache_root = ctx.cache_dir.join(build.project.as_str());
    restore_cache(&cache_root, workspace, &job.cache, log).await;
    let ran = run_job(job, workspace, env, log, cancel, containment).await;
    save_cache(&cache_root, workspace, &job.cache, log).await;
    Ok(ran?.map(Produced::Folder))
}

/// Moves cached folders into the workspace (a rename: no copying).
pub(super) async fn restore_cache<L: LogSink>(
    cache_root: &Path,
    workspace: &Path,
    folders: &[String],
    log: &L,
) {
    for folder in folders {
        let cached = cache_root.join(folder);
        let target = workspace.join(folder);
        if tokio::fs::metadata(&cached).await.is_err() || tokio::fs::metadata(&target).await.is_ok()
        {
            continue;
        }
        if let Some(parent) = target.parent() {
            let _ = tokio::fs::create_dir_all(parent).await;
        }
        match tokio::fs::rename(&cached, &target).await {
            Ok(()) => log.opus("cache", &format!("restored {folder}")),
            Err(e) => log.opus("cache", &format!("cannot restore {folder}: {e}")),
        }
    }
}

/// Moves the workspace's cache folders back for the next build.
pub(super) async fn save_cache<L: LogSink>(
    cache_root: &Path,
    workspace: &Path,
    folders: &[String],
    log: &L,
) {
    for folder in folders {
        let source = workspace.join(folder);
        if tokio::fs::metadata(&source).await.is_err() {
            continue;
        }
        let cached = cache_root.join(folder);
        let _ = tokio::fs::remove_dir_all(&cached).await;
        if let Some(parent) = cached.parent() {
            let _ = tokio::fs::create_dir_all(parent).await;
        }
        if let Err(e) = tokio::fs::rename(&source, &cached).await {
            log.opus("cache", &format!("cannot keep {folder}: {e}"));
        }
    }
}
